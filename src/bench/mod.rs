//! `popularity bench`: one run on this machine against its own
//! `redis-server` and dev broker, measuring the service against the limits
//! of its parts and against a naive design, and printing one table.
//!
//! Rows: (a) the broker limit (consume only), (b) end to end, (c) the
//! pipeline without the broker (JSON, protobuf), (d) a naive consumer,
//! (e) freshness at half of (b), (f) the API with `wrk` (cache hits and
//! misses), (g) memory as distinct articles grow, (h) the Python peer a
//! user would write instead, (k) the store on a local Redis Cluster beside
//! standalone, (s) Server-Sent Event streams held by one API replica.

mod cluster;
mod streams;

use std::collections::HashMap;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use crate::app::{App, Role};
use crate::config::{Backend, Settings};
use crate::devbroker::DevBroker;
use crate::event::decode::Decoder;
use crate::event::Event;
use crate::ingest::{Incoming, Pipeline};
use crate::loadgen::{self, Limits};
use crate::metrics::Metrics;
use crate::newsroom::{Newsroom, Outgoing, Shape, Topic, WireFormat};
use crate::now_ms;
use crate::redis_server::{Persistence, RedisServer};
use crate::scoring::{growth, Profiles};
use crate::store::Store;

/// Sizes of a run (the `popularity bench` arguments).
#[derive(Debug, Clone, clap::Args)]
pub struct BenchOptions {
    /// Messages through the broker for rows (a) and (b).
    #[arg(long, default_value_t = 400_000)]
    pub broker_events: u64,
    /// Messages per encoding through the pipeline for row (c).
    #[arg(long, default_value_t = 1_000_000)]
    pub pipeline_events: usize,
    /// Messages for the naive baseline (d).
    #[arg(long, default_value_t = 5_000)]
    pub naive_events: usize,
    /// Largest number of distinct articles for (g).
    #[arg(long, default_value_t = 1_000_000)]
    pub max_articles: usize,
    /// Seconds of load for (e) and each API run of (f).
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Rows to run, e.g. `cd` (default: every row). Rows a, b, e and f share
    /// one broker run: asking for any of them runs all four.
    #[arg(long, default_value = "abcdefghks")]
    pub rows: String,
    /// Internal: run row (g) alone against this Redis URL and print its
    /// figures as `articles rss_bytes used_memory` lines; the parent runs it
    /// in a child process so that the RSS is the pipeline's own.
    #[arg(long, hide = true)]
    pub memory_only: Option<String>,
}

pub(super) struct Row {
    id: &'static str,
    what: String,
    value: String,
    target: String,
}

fn used_memory(url: &str) -> anyhow::Result<u64> {
    let mut c = redis::Client::open(url)?.get_connection()?;
    let info: String = redis::cmd("INFO").arg("memory").query(&mut c)?;
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .context("no used_memory in INFO")
}

fn rss_bytes() -> u64 {
    rss_of("/proc/self/status")
}

/// The resident set of the process whose `/proc/<pid>/status` is `status`.
fn rss_of(status: &str) -> u64 {
    std::fs::read_to_string(status)
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

fn rate(n: f64, d: Duration) -> f64 {
    n / d.as_secs_f64().max(1e-9)
}

pub(super) fn fmt_rate(r: f64) -> String {
    if r >= 1e6 {
        format!("{:.2} M/s", r / 1e6)
    } else if r >= 1e3 {
        format!("{:.1} k/s", r / 1e3)
    } else {
        format!("{r:.0} /s")
    }
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0))
}

pub(super) fn settings_for(
    broker: &DevBroker,
    redis: &RedisServer,
    topics: (&str, &str, &str),
) -> Settings {
    let mut s = Settings::defaults();
    s.kafka.brokers = broker.bootstrap_servers().to_string();
    s.kafka.group_id = format!("bench-{}", now_ms());
    s.kafka.topics.events = topics.0.to_string();
    s.kafka.topics.articles = topics.1.to_string();
    s.kafka.topics.dead_letter = topics.2.to_string();
    s.store.backend = Backend::Redis;
    s.store.redis_url = redis.url.clone();
    s.store.key_prefix = format!("bench{}", now_ms() % 100_000);
    s.api.listen = "127.0.0.1:0".to_string();
    s
}

/// Runs every row and prints the table to stdout (progress to stderr).
pub async fn run(options: BenchOptions) -> anyhow::Result<()> {
    if let Some(url) = &options.memory_only {
        let mut s = Settings::defaults();
        s.store.redis_url = url.clone();
        s.store.key_prefix = "benchmem".to_string();
        for (articles, rss, used) in memory(&s, url, options.max_articles).await? {
            println!("{articles} {rss} {used}");
        }
        return Ok(());
    }
    let machine = format!(
        "{} cores, {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| m.lines().next().map(|l| l
                .split_whitespace()
                .nth(1)
                .unwrap_or("?")
                .to_string()))
            .map(|kb| format!("{} GiB RAM", kb.parse::<u64>().unwrap_or(0) / 1024 / 1024))
            .unwrap_or_default()
    );
    eprintln!("bench: {machine}; starting redis-server and the dev broker");
    let redis = RedisServer::start(Persistence::None)?;
    let topics = ("events", "articles", "events.dlq");
    // Twelve partitions keep each under the dev broker's 5 MiB limit.
    let broker = DevBroker::start(&[topics.0, topics.1, topics.2], 12)?;
    let mut rows = Vec::new();
    let want = |ids: &str| ids.chars().any(|c| options.rows.contains(c));
    let settings = settings_for(&broker, &redis, topics);
    if want("abef") {
        broker_rows(&options, &settings, &redis, &mut rows).await?;
    }
    let mut c_json = None;
    if want("c") {
        c_json = Some(pipeline_rows(&options, &settings, &redis, &mut rows).await?);
    }
    if want("d") {
        naive_row(&options, &settings, &redis, c_json, &mut rows).await?;
    }
    if want("g") {
        memory_rows(&options, &redis, &mut rows)?;
    }
    if want("k") {
        cluster::rows(&options, &redis, &mut rows).await?;
    }
    if want("s") {
        streams::rows(&settings, &redis, &mut rows).await?;
    }

    println!("machine: {machine}");
    println!();
    println!("| row | measure | result | target |");
    println!("|---|---|---|---|");
    for r in &rows {
        println!("| {} | {} | {} | {} |", r.id, r.what, r.value, r.target);
    }
    Ok(())
}

/// Rows (a), (b), (e) and (f): one broker run and one service.
async fn broker_rows(
    options: &BenchOptions,
    settings: &Settings,
    redis: &RedisServer,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    redis.flush_all()?;
    // Traffic for (a) and (b): the newsroom, JSON, produced as fast as possible.
    let producer = loadgen::producer(&settings.kafka)?;
    let mut newsroom = Newsroom::new(Shape::default(), now_ms());
    let stop = CancellationToken::new();
    let limits = Limits {
        count: Some(options.broker_events),
        ..Limits::default()
    };
    let sent = loadgen::run(&producer, &settings.kafka, &mut newsroom, limits, &stop).await;
    eprintln!(
        "bench: produced {} messages in {:.1}s",
        sent.delivered,
        sent.elapsed.as_secs_f64()
    );
    let n = sent.delivered;

    // (a) consume only.
    let started = Instant::now();
    let consumed = consume_only(settings, n)?;
    let a = rate(consumed as f64, started.elapsed());
    rows.push(Row {
        id: "a",
        what: "broker limit: consume only, one rdkafka consumer, no processing".into(),
        value: fmt_rate(a),
        target: "—".into(),
    });
    eprintln!("bench: (a) {}", fmt_rate(a));

    // (b) end to end with default settings.
    let app = App::build(settings.clone(), Role::All).await?;
    let api = app.local_addr();
    let metrics = app.metrics();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(app.run(shutdown.clone()));
    let (b, b_steady) = end_to_end(&metrics, n).await?;
    rows.push(Row {
        id: "b",
        what: "end to end: broker → service → Redis, default settings".into(),
        value: fmt_rate(b),
        target: format!("≥ 80% of (a): {:.0}%", 100.0 * b / a),
    });
    rows.push(Row {
        id: "b",
        what: "end to end, steady state (10% to 90% of the backlog)".into(),
        value: fmt_rate(b_steady),
        target: format!("≥ 80% of (a): {:.0}%", 100.0 * b_steady / a),
    });
    eprintln!("bench: (b) {}, steady {}", fmt_rate(b), fmt_rate(b_steady));
    // (h) the peer a user would write instead, on the same backlog.
    if let Some((steady, all)) = peer(settings, redis)? {
        rows.push(Row {
            id: "h",
            what: "peer: Python, confluent-kafka consume(10000), sums per batch, one ZINCRBY pipeline per batch; steady state".into(),
            value: format!("{} (whole run {})", fmt_rate(steady), fmt_rate(all)),
            target: format!("(b) ≥ 10 × (h): {:.1} ×", b_steady / steady),
        });
        eprintln!("bench: (h) {}", fmt_rate(steady));
    }

    // (e) freshness at half of (b), and at a fixed 50 k/s to compare runs
    // (the generator, the broker, the service and Redis share the cores).
    for (rate, label) in [(b / 2.0, "half of b"), (50_000.0, "fixed")] {
        let (p50, p99) = freshness(&metrics, &producer, settings, rate, options.seconds).await?;
        rows.push(Row {
            id: "e",
            what: format!(
                "freshness: event to visible at {} ({label})",
                fmt_rate(rate)
            ),
            value: format!("p50 {:.0} ms, p99 {:.0} ms", p50 * 1e3, p99 * 1e3),
            target: format!("p99 ≤ 1 s: {}", if p99 <= 1.0 { "met" } else { "missed" }),
        });
        eprintln!(
            "bench: (e) at {}: p50 {p50:.3}s p99 {p99:.3}s",
            fmt_rate(rate)
        );
    }

    // (f) the API, cache hits (this process, 1 s cache) and misses (no cache),
    // and the same server's trivial route as the ceiling of this machine.
    let floor = wrk(&format!("http://{api}/healthz"), options.seconds)?;
    let hits = wrk(
        &format!("http://{api}/v1/rankings/trending?limit=10"),
        options.seconds,
    )?;
    let mut nocache = settings.clone();
    nocache.api.cache_ttl = Duration::ZERO;
    let api2 = App::build(nocache, Role::Api).await?;
    let api2_addr = api2.local_addr();
    let server2 = tokio::spawn(api2.run(shutdown.clone()));
    let misses = wrk(
        &format!("http://{api2_addr}/v1/rankings/trending?limit=10"),
        options.seconds,
    )?;
    let ratio = hits.0.parse::<f64>().unwrap_or(0.0) / floor.0.parse::<f64>().unwrap_or(f64::NAN);
    let hits_target = format!("≥ 0.9 × /healthz, p99 ≤ 5 ms: {ratio:.2} ×");
    for (label, r, target) in [
        (
            "baseline: /healthz, same server and middleware",
            &floor,
            "—",
        ),
        ("cache hits", &hits, hits_target.as_str()),
        ("cache misses (cache off)", &misses, "p99 ≤ 5 ms"),
    ] {
        rows.push(Row {
            id: "f",
            what: format!("API, wrk 2 threads × 32 connections on the same cores, {label}"),
            value: format!("{} req/s, p50 {}, p99 {}", r.0, r.1, r.2),
            target: target.into(),
        });
    }
    shutdown.cancel();
    let _ = server.await;
    let _ = server2.await;
    drop(producer);
    Ok(())
}

/// Rows (c), JSON then protobuf; returns the JSON rate.
async fn pipeline_rows(
    options: &BenchOptions,
    settings: &Settings,
    redis: &RedisServer,
    rows: &mut Vec<Row>,
) -> anyhow::Result<f64> {
    // (c) the pipeline from memory, JSON then protobuf.
    let mut c_json = 0.0;
    for format in [WireFormat::Json, WireFormat::Protobuf] {
        redis.flush_all()?;
        let r = pipeline(settings, options.pipeline_events, format).await?;
        if format == WireFormat::Json {
            c_json = r;
        }
        rows.push(Row {
            id: "c",
            what: format!(
                "pipeline without broker: decode → filter → aggregate → Redis, {:?}",
                format
            )
            .to_lowercase(),
            value: fmt_rate(r),
            target: "≥ 1 M/s (JSON), higher with protobuf".into(),
        });
        eprintln!("bench: (c) {format:?} {}", fmt_rate(r));
    }
    Ok(c_json)
}

/// Row (d), compared with the JSON pipeline rate when it was measured.
async fn naive_row(
    options: &BenchOptions,
    settings: &Settings,
    redis: &RedisServer,
    c_json: Option<f64>,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    // (d) the naive consumer.
    redis.flush_all()?;
    let d = naive(settings, options.naive_events).await?;
    rows.push(Row {
        id: "d",
        what: "naive baseline: same decoding, one ZINCRBY round trip per event per ranking".into(),
        value: fmt_rate(d),
        target: match c_json {
            Some(c) => format!("(c) ≥ 20× (d): {:.0}×", c / d),
            None => "(c) ≥ 20× (d): (c) not run".into(),
        },
    });
    eprintln!("bench: (d) {}", fmt_rate(d));
    Ok(())
}

/// Rows (g), measured in a child process of its own.
fn memory_rows(
    options: &BenchOptions,
    redis: &RedisServer,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    // (g) memory as distinct articles grow, in a child process of its own.
    redis.flush_all()?;
    let out = Command::new(std::env::current_exe()?)
        .args([
            "bench",
            "--memory-only",
            &redis.url,
            "--max-articles",
            &options.max_articles.to_string(),
        ])
        .stderr(Stdio::inherit())
        .output()?;
    anyhow::ensure!(out.status.success(), "the memory run failed");
    let steps: Vec<(usize, u64, u64)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace().map(|v| v.parse::<u64>().ok());
            Some((it.next()?? as usize, it.next()??, it.next()??))
        })
        .collect();
    for (articles, rss, used) in steps {
        rows.push(Row {
            id: "g",
            what: format!("memory after {articles} distinct articles"),
            value: format!("service RSS {}, Redis used_memory {}", mib(rss), mib(used)),
            target: "flat: bounded by max_members".into(),
        });
    }
    Ok(())
}

/// Reads `n` messages from both topics, every partition from the start.
fn consume_only(settings: &Settings, n: u64) -> anyhow::Result<u64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &settings.kafka.brokers)
        .set("group.id", "bench-consume-only")
        .set("enable.auto.commit", "false")
        // As the service's consumer: librdkafka's default of 1 s stalls a
        // partition whose prefetch queue filled.
        .set("fetch.queue.backoff.ms", "10")
        .create()?;
    let metadata = consumer.fetch_metadata(None, Duration::from_secs(10))?;
    let mut tpl = TopicPartitionList::new();
    for t in metadata.topics() {
        if t.name() == settings.kafka.topics.events || t.name() == settings.kafka.topics.articles {
            for p in t.partitions() {
                tpl.add_partition_offset(t.name(), p.id(), Offset::Beginning)?;
            }
        }
    }
    consumer.assign(&tpl)?;
    drop(tpl);
    let mut seen = 0u64;
    let mut bytes = 0usize;
    let deadline = Instant::now() + Duration::from_secs(300);
    while seen < n && Instant::now() < deadline {
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            bytes += m?.payload_len();
            seen += 1;
        }
    }
    eprintln!("bench: (a) read {seen} messages, {}", mib(bytes as u64));
    Ok(seen)
}

/// Prints, per store operation, how many calls a row made and their time.
fn print_store_times(row: &str, metrics: &Metrics) {
    for op in crate::metrics::STORE_OPERATIONS {
        let h = metrics.store_duration.with_label_values(&[op]);
        eprintln!(
            "bench: {row} store {op}: {} calls, {:.2}s",
            h.get_sample_count(),
            h.get_sample_sum()
        );
    }
}

fn flushed(metrics: &Metrics) -> f64 {
    metrics.flush_size.get_sample_sum()
}

/// Throughput of the service draining what is on the topics: measured from
/// its first flush (the group join is not throughput), and in steady state,
/// while the 10% to 90% of the backlog were flushed.
pub(super) async fn end_to_end(metrics: &Metrics, n: u64) -> anyhow::Result<(f64, f64)> {
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut first: Option<(Instant, f64)> = None;
    // (when, how many) at the first poll past 10% and past 90%.
    let mut at10: Option<(Instant, f64)> = None;
    let mut at90: Option<(Instant, f64)> = None;
    let mut report = Instant::now();
    loop {
        let done = flushed(metrics);
        if report.elapsed() >= Duration::from_millis(500) {
            report = Instant::now();
            eprintln!("bench: (b) {done} of {n} messages flushed");
        }
        if done > 0.0 && first.is_none() {
            first = Some((Instant::now(), done));
        }
        if done >= n as f64 * 0.1 && at10.is_none() {
            at10 = Some((Instant::now(), done));
        }
        if done >= n as f64 * 0.9 && at90.is_none() {
            at90 = Some((Instant::now(), done));
        }
        if done >= n as f64 {
            let (t0, d0) = first.expect("set above");
            let ((t10, d10), (t90, d90)) = (at10.expect("set above"), at90.expect("set above"));
            eprintln!(
                "bench: (b) {} flushes, {:.2}s in flushes",
                metrics.flush_duration.get_sample_count(),
                metrics.flush_duration.get_sample_sum()
            );
            print_store_times("(b)", metrics);
            return Ok((rate(done - d0, t0.elapsed()), rate(d90 - d10, t90 - t10)));
        }
        if Instant::now() > deadline {
            bail!("the service flushed {done} of {n} messages in 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Row (h): the Python peer (`bench/peer.py`) on the same backlog (the
/// events topic from the start), as `bench/run.sh` sets it up in
/// `POPULARITY_BENCH_PEER`; its rate while 10% to 90% of what it read were
/// applied, and over its whole run (3 s of final idleness excluded).
fn peer(settings: &Settings, redis: &RedisServer) -> anyhow::Result<Option<(f64, f64)>> {
    let Ok(command) = std::env::var("POPULARITY_BENCH_PEER") else {
        eprintln!("bench: (h) skipped: POPULARITY_BENCH_PEER is not set (bench/run.sh sets it)");
        return Ok(None);
    };
    let mut parts = command.split_whitespace();
    let program = parts.next().context("POPULARITY_BENCH_PEER is empty")?;
    let out = Command::new(program)
        .args(parts)
        .args([
            settings.kafka.brokers.as_str(),
            settings.kafka.topics.events.as_str(),
            redis.url.as_str(),
        ])
        .stderr(Stdio::inherit())
        .output()
        .context("running the Python peer")?;
    if !out.status.success() {
        bail!("the Python peer failed: {}", out.status);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut v = text.split_whitespace().map(|x| x.parse::<f64>());
    match (v.next(), v.next()) {
        (Some(Ok(steady)), Some(Ok(all))) => Ok(Some((steady, all))),
        _ => bail!("the Python peer printed {text:?}"),
    }
}

/// Cumulative bucket counts of the event-to-visible histogram.
fn visible_buckets(metrics: &Metrics) -> Vec<(f64, u64)> {
    use prometheus::core::Collector;
    let mut out = Vec::new();
    for mf in metrics.event_to_visible.collect() {
        for m in mf.get_metric() {
            for b in m.get_histogram().get_bucket() {
                out.push((b.upper_bound(), b.cumulative_count()));
            }
        }
    }
    out
}

/// Quantile from cumulative buckets, interpolated linearly within a bucket
/// (as Prometheus' `histogram_quantile`).
fn quantile(buckets: &[(f64, u64)], q: f64) -> f64 {
    let total = buckets.last().map_or(0, |b| b.1) as f64;
    let rank = q * total;
    let mut prev = (0.0, 0.0);
    for (le, c) in buckets {
        let c = *c as f64;
        if c >= rank {
            let span = c - prev.1;
            let frac = if span > 0.0 {
                (rank - prev.1) / span
            } else {
                1.0
            };
            return prev.0 + (le - prev.0) * frac;
        }
        prev = (*le, c);
    }
    f64::INFINITY
}

async fn freshness(
    metrics: &Metrics,
    producer: &rdkafka::producer::FutureProducer,
    settings: &Settings,
    per_second: f64,
    seconds: u64,
) -> anyhow::Result<(f64, f64)> {
    let before = visible_buckets(metrics);
    let shape = Shape {
        time_jitter_ms: 0,
        duplicates: 0.0,
        bots: 0.0,
        invalid: 0.0,
        seed: 7,
        ..Shape::default()
    };
    let mut newsroom = Newsroom::new(shape, now_ms());
    let limits = Limits {
        rate: Some(per_second),
        duration: Some(Duration::from_secs(seconds)),
        ..Limits::default()
    };
    loadgen::run(
        producer,
        &settings.kafka,
        &mut newsroom,
        limits,
        &CancellationToken::new(),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = visible_buckets(metrics);
    let delta: Vec<(f64, u64)> = after
        .iter()
        .zip(&before)
        .map(|((le, a), (_, b))| (*le, a - b))
        .collect();
    Ok((quantile(&delta, 0.5), quantile(&delta, 0.99)))
}

/// Runs `wrk` for `seconds`; returns requests/s, p50 and p99 as printed.
pub(super) fn wrk(url: &str, seconds: u64) -> anyhow::Result<(String, String, String)> {
    let out = Command::new("wrk")
        .args(["-t2", "-c32", &format!("-d{seconds}s"), "--latency", url])
        .output()
        .context("running wrk (apt-get install -y wrk)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let find = |prefix: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(prefix).map(|v| v.trim().to_string()))
            .unwrap_or_else(|| "?".to_string())
    };
    let rps = find("Requests/sec:");
    let rps = rps.parse::<f64>().map(|r| format!("{r:.0}")).unwrap_or(rps);
    Ok((rps, find("50%"), find("99%")))
}

/// Pre-encoded newsroom traffic, spread over 12 partitions by key.
fn encoded(n: usize, format: WireFormat, seed: u64) -> Vec<(Outgoing, i32)> {
    let shape = Shape {
        format,
        seed,
        time_jitter_ms: 0,
        ..Shape::default()
    };
    let mut newsroom = Newsroom::new(shape, now_ms());
    (0..n)
        .map(|_| {
            let m = newsroom.next(now_ms());
            let p = (m
                .key
                .bytes()
                .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(b as u32))
                % 12) as i32;
            (m, p)
        })
        .collect()
}

/// (c): the consumer's own processing, fed from memory.
async fn pipeline(settings: &Settings, n: usize, format: WireFormat) -> anyhow::Result<f64> {
    let messages = encoded(n, format, 3);
    let store = store(settings).await?;
    let metrics = Metrics::new();
    let mut pipe = Pipeline::new(Arc::new(settings.clone()), store, metrics.clone());
    let mut offsets = [0i64; 12];
    let started = Instant::now();
    for (m, p) in &messages {
        let topic = match m.topic {
            Topic::Events => &settings.kafka.topics.events,
            Topic::Articles => &settings.kafka.topics.articles,
        };
        let offset = offsets[*p as usize];
        offsets[*p as usize] += 1;
        pipe.read(Incoming {
            topic,
            partition: *p,
            offset,
            key: Some(m.key.as_bytes()),
            payload: &m.payload,
            content_type: m.content_type.map(str::as_bytes),
            timestamp_ms: None,
        })
        .await?;
    }
    let t = Instant::now();
    pipe.flush().await?;
    let waited = pipe.waited() + t.elapsed();
    let total = started.elapsed();
    print_store_times(&format!("(c) {format:?}:"), &metrics);
    eprintln!(
        "bench: (c) {format:?}: {:.0}% of the time reading the next batch or aggregating, {:.0}% waiting for a write",
        100.0 * (total - waited).as_secs_f64() / total.as_secs_f64(),
        100.0 * waited.as_secs_f64() / total.as_secs_f64()
    );
    Ok(rate(n as f64, total))
}

async fn store(settings: &Settings) -> anyhow::Result<Arc<dyn Store>> {
    Ok(crate::store::connect(settings).await?)
}

/// (d): what a tutorial consumer does: decode, look up the article when the
/// event lacks its section, then one `ZINCRBY` round trip per ranking.
async fn naive(settings: &Settings, n: usize) -> anyhow::Result<f64> {
    let messages = encoded(n, WireFormat::Json, 5);
    let profiles: Profiles = crate::scoring::profiles(&settings.scoring);
    let client = redis::Client::open(settings.store.redis_url.as_str())?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let decoder = Decoder::new(settings.ingest.max_message_bytes, 300_000);
    let landmark = now_ms();
    let mut sections: HashMap<String, (Option<String>, Vec<String>)> = HashMap::new();
    let started = Instant::now();
    for (m, _) in &messages {
        let info = m.info(now_ms());
        match decoder.decode(&m.payload, &info) {
            Ok(Event::Published(a)) => {
                let key = format!("naive:article:{}", a.article_id);
                redis::cmd("HSET")
                    .arg(&key)
                    .arg("section")
                    .arg(a.section.clone().unwrap_or_default())
                    .arg("tags")
                    .arg(a.tags.join(","))
                    .query_async::<()>(&mut conn)
                    .await?;
                sections.insert(a.article_id, (a.section, a.tags));
            }
            Ok(Event::Behaviour(b)) if !b.bot => {
                let (section, tags) = if b.section.is_some() {
                    (b.section.clone(), b.tags.clone())
                } else {
                    let key = format!("naive:article:{}", b.article_id);
                    let (s, t): (Option<String>, Option<String>) = redis::cmd("HMGET")
                        .arg(&key)
                        .arg("section")
                        .arg("tags")
                        .query_async(&mut conn)
                        .await?;
                    let tags = t
                        .map(|t| {
                            t.split(',')
                                .filter(|x| !x.is_empty())
                                .map(str::to_string)
                                .collect()
                        })
                        .unwrap_or_default();
                    (s.filter(|s| !s.is_empty()), tags)
                };
                let mut keys = vec![("all".to_string(), b.article_id.clone())];
                if let Some(s) = &section {
                    keys.push((format!("s:{s}"), b.article_id.clone()));
                }
                for t in &tags {
                    keys.push((format!("t:{t}"), b.article_id.clone()));
                    keys.push(("tags".to_string(), t.clone()));
                }
                let units = if b.engaged_seconds > 0.0 {
                    b.engaged_seconds
                } else {
                    1.0
                };
                for p in profiles.iter() {
                    let w = p.weights.of(b.kind)
                        * units
                        * growth(b.occurred_at_ms, landmark, p.half_life_ms);
                    for (k, member) in &keys {
                        redis::cmd("ZINCRBY")
                            .arg(format!("naive:{k}:{}", p.name))
                            .arg(w)
                            .arg(member)
                            .query_async::<f64>(&mut conn)
                            .await?;
                    }
                }
            }
            _ => {}
        }
    }
    Ok(rate(n as f64, started.elapsed()))
}

/// (g): one page view for each of `max` distinct articles, through the
/// pipeline; memory after 10k, 100k and 1M.
async fn memory(
    settings: &Settings,
    redis_url: &str,
    max: usize,
) -> anyhow::Result<Vec<(usize, u64, u64)>> {
    let store = store(settings).await?;
    let mut pipe = Pipeline::new(Arc::new(settings.clone()), store, Metrics::new());
    let mut out = Vec::new();
    let mut done = 0usize;
    let mut offset = 0i64;
    let mut step = 10_000usize;
    let now = now_ms();
    while step <= max {
        while done < step {
            // No visitor id: this measures articles, not the per-visitor dedupe state.
            let payload = format!(
                r#"{{"type":"page_view","article_id":"m-{done}","occurred_at":{now},"section":"s{}","tags":["t{}"]}}"#,
                done % 8,
                done % 16
            );
            pipe.read(Incoming {
                topic: &settings.kafka.topics.events,
                partition: 0,
                offset,
                key: None,
                payload: payload.as_bytes(),
                content_type: None,
                timestamp_ms: None,
            })
            .await?;
            offset += 1;
            done += 1;
        }
        pipe.flush().await?;
        let (rss, used) = (rss_bytes(), used_memory(redis_url)?);
        eprintln!(
            "bench: (g) {done} articles: RSS {}, Redis {}",
            mib(rss),
            mib(used)
        );
        out.push((done, rss, used));
        step *= 10;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_within_buckets() {
        let b = [(0.1, 50), (0.2, 90), (1.0, 100), (f64::INFINITY, 100)];
        assert!((quantile(&b, 0.5) - 0.1).abs() < 1e-12);
        assert!((quantile(&b, 0.7) - 0.15).abs() < 1e-12);
        assert!((quantile(&b, 0.99) - 0.92).abs() < 1e-12);
    }
}
