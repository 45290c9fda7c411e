//! Rows (a), (b), (e), (f) and (h): one backlog through the dev broker,
//! consumed bare, by the service end to end and by the Python peer; then
//! freshness under a paced load, and the API under `wrk`.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use crate::loadgen::{self, Limits};
use crate::newsroom::{Newsroom, Shape};
use crate::redis_server::RedisServer;
use popularity::app::{App, Role};
use popularity::config::Settings;
use popularity::metrics::Metrics;
use popularity::now_ms;

use super::{fmt_rate, mib, print_store_times, rate, BenchOptions, Row};

/// Rows (a), (b), (e) and (f): one broker run and one service.
pub(super) async fn broker_rows(
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
        what: "end to end, steady state (10% of the backlog read to 90% applied)".into(),
        value: fmt_rate(b_steady),
        target: format!("≥ 80% of (a): {:.0}%", 100.0 * b_steady / a),
    });
    eprintln!("bench: (b) {}, steady {}", fmt_rate(b), fmt_rate(b_steady));
    // (h) the peer a user would write instead, on the same backlog.
    if let Some((steady, all, _)) = peer(settings, redis, "(h)")? {
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

    // (f) the API: cache hits on this service, misses on a replica without cache.
    super::api::rows(options, settings, api, rows).await?;
    shutdown.cancel();
    let _ = server.await;
    drop(producer);
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

fn flushed(metrics: &Metrics) -> f64 {
    metrics.flush_size.get_sample_sum()
}

/// Throughput of the service draining what is on the topics, end to end:
/// from its first message read (the group join is not throughput) to the
/// last one applied; and in steady state, from 10% of the backlog read to
/// 90% of it applied. (A flush covers everything read since the last one,
/// so what is applied moves in steps a flush interval or a write apart:
/// the reading side starts the window, the writing side ends it.)
pub(super) async fn end_to_end(metrics: &Metrics, n: u64) -> anyhow::Result<(f64, f64)> {
    let deadline = Instant::now() + Duration::from_secs(600);
    let n = n as f64;
    let mut first: Option<Instant> = None;
    let mut read10: Option<Instant> = None;
    let mut applied90: Option<Instant> = None;
    let mut report = Instant::now();
    loop {
        let (read, done) = (metrics.messages_read.get() as f64, flushed(metrics));
        if report.elapsed() >= Duration::from_millis(500) {
            report = Instant::now();
            eprintln!("bench: (b) {read} read, {done} of {n} messages flushed");
        }
        if read > 0.0 && first.is_none() {
            first = Some(Instant::now());
        }
        if read >= n * 0.1 && read10.is_none() {
            read10 = Some(Instant::now());
        }
        if done >= n * 0.9 && applied90.is_none() {
            applied90 = Some(Instant::now());
        }
        if done >= n {
            let (t0, t10, t90) = (
                first.expect("set above"),
                read10.expect("set above"),
                applied90.expect("set above"),
            );
            eprintln!(
                "bench: (b) {} flushes, {:.2}s in flushes",
                metrics.flush_duration.get_sample_count(),
                metrics.flush_duration.get_sample_sum()
            );
            print_store_times("(b)", metrics);
            return Ok((rate(n, t0.elapsed()), rate(0.8 * n, t90 - t10)));
        }
        if Instant::now() > deadline {
            bail!("the service flushed {done} of {n} messages in 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The Python peer (`bench/peer.py`) on the events topic from the start,
/// as `bench/run.sh` sets it up in `POPULARITY_BENCH_PEER`: its rate while
/// 10% to 90% of what it read were applied, over its whole run (3 s of
/// final idleness excluded), and the messages it read. `None` when it is
/// not set up; `row` names who asks, in the message that says so.
pub(super) fn peer(
    settings: &Settings,
    redis: &RedisServer,
    row: &str,
) -> anyhow::Result<Option<(f64, f64, f64)>> {
    let Ok(command) = std::env::var("POPULARITY_BENCH_PEER") else {
        eprintln!(
            "bench: {row} peer skipped: POPULARITY_BENCH_PEER is not set (bench/run.sh sets it)"
        );
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
    let v: Vec<f64> = text
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    match v[..] {
        [steady, whole, read] => Ok(Some((steady, whole, read))),
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
