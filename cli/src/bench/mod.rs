//! `popularity bench`: one run on this machine against its own
//! `redis-server` and dev broker, measuring the service against the limits
//! of its parts and against a naive design, and printing one table.
//!
//! Rows: (a) the broker limit (consume only), (b) end to end, (c) the
//! pipeline without the broker (JSON, protobuf), (d) a naive consumer,
//! (e) freshness at half of (b), (f) the API with `wrk` (cache hits and
//! misses), (g) memory as distinct articles grow, (h) the Python peer a
//! user would write instead, (k) the store on a local Redis Cluster beside
//! standalone, (r) Redis's work per 1,000 events by offered rate and
//! newsroom size, (s) Server-Sent Event streams held by one API replica,
//! (n) what a network of sites costs in writes and reads, (t) CPU per
//! event in steady state, beside kcat and the Python peer, (u) a soak at a
//! fixed rate whose memory must level off.
//! One file per family of rows (`broker`: a, b, e, h; `api`: f; `pipeline`: c, d;
//! `memory`: g; `cluster`: k; `redis_work`: r; `streams`: s; `sites`: n; `steady`: t; `soak`: u); this one holds the options,
//! the table and what the rows share.

mod api;
mod broker;
mod cluster;
mod committed;
mod memory;
mod pipeline;
mod redis_work;
mod sites;
mod soak;
mod steady;
mod streams;

use std::sync::Arc;
use std::time::Duration;

use crate::devbroker::DevBroker;
use crate::redis_server::{Persistence, RedisServer};
use popularity::config::{Backend, Settings};
use popularity::metrics::Metrics;
use popularity::now_ms;
use popularity::store::Store;

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
    /// Messages measured in steady state by row (t), after its warm-up.
    #[arg(long, default_value_t = 2_000_000)]
    pub steady_events: u64,
    /// Seconds of the soak of row (u).
    #[arg(long, default_value_t = 600)]
    pub soak_seconds: u64,
    /// Messages per second of the soak of row (u).
    #[arg(long, default_value_t = 8_000.0)]
    pub soak_rate: f64,
    /// The soak's newsroom publishes an article every this many messages
    /// (0: never; the load generator's default is 500).
    #[arg(long, default_value_t = 500)]
    pub soak_publish_every: usize,
    /// Rows to run, e.g. `cd` (default: every row). Rows a, b, e and f share
    /// one broker run: asking for any of them runs all four.
    #[arg(long, default_value = "abcdefghknrstu")]
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

pub(super) fn rate(n: f64, d: Duration) -> f64 {
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
    s.api.admin_listen = "127.0.0.1:0".to_string();
    s
}

pub(super) fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0))
}

pub(super) async fn store(settings: &Settings) -> anyhow::Result<Arc<dyn Store>> {
    Ok(popularity::store::connect(settings).await?)
}

/// One section of a server's `INFO`.
pub(super) fn redis_info(url: &str, section: &str) -> anyhow::Result<String> {
    let mut c = redis::Client::open(url)?.get_connection()?;
    Ok(redis::cmd("INFO").arg(section).query(&mut c)?)
}

/// The number after `field:` in an `INFO` text, or after `field:calls=` in
/// `INFO commandstats` (give `cmdstat_<name>:calls=`).
pub(super) fn info_number(info: &str, field: &str) -> Option<f64> {
    info.lines()
        .find_map(|l| l.strip_prefix(field))
        .map(|v| v.strip_prefix(':').unwrap_or(v))
        .and_then(|v| v.split(',').next()?.trim().parse().ok())
}

/// Resets a server's `INFO` statistics (`CONFIG RESETSTAT`).
pub(super) fn reset_stats(url: &str) -> anyhow::Result<()> {
    let mut c = redis::Client::open(url)?.get_connection()?;
    redis::cmd("CONFIG").arg("RESETSTAT").query::<()>(&mut c)?;
    Ok(())
}

/// Prints, per store operation, how many calls a row made and their time.
pub(super) fn print_store_times(row: &str, metrics: &Metrics) {
    for op in popularity::metrics::StoreOperation::ALL {
        let op = op.as_str();
        let h = metrics.store_duration.with_label_values(&[op]);
        eprintln!(
            "bench: {row} store {op}: {} calls, {:.2}s",
            h.get_sample_count(),
            h.get_sample_sum()
        );
    }
}

/// Runs every row and prints the table to stdout (progress to stderr).
pub async fn run(options: BenchOptions) -> anyhow::Result<()> {
    if let Some(url) = &options.memory_only {
        let mut s = Settings::defaults();
        s.store.redis_url = url.clone();
        s.store.key_prefix = "benchmem".to_string();
        for (articles, rss, used) in memory::memory(&s, url, options.max_articles).await? {
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
        broker::broker_rows(&options, &settings, &redis, &mut rows).await?;
    }
    let mut c_json = None;
    if want("c") {
        c_json = Some(pipeline::pipeline_rows(&options, &settings, &redis, &mut rows).await?);
    }
    if want("d") {
        pipeline::naive_row(&options, &settings, &redis, c_json, &mut rows).await?;
    }
    if want("g") {
        memory::memory_rows(&options, &redis, &mut rows)?;
    }
    if want("k") {
        cluster::rows(&options, &redis, &mut rows).await?;
    }
    if want("r") {
        redis_work::rows(&settings, &redis, &mut rows).await?;
    }
    if want("t") {
        steady::rows(&options, &redis, &mut rows).await?;
    }
    if want("u") {
        soak::rows(&options, &redis, &mut rows).await?;
    }
    if want("s") {
        streams::rows(&settings, &redis, &mut rows).await?;
    }
    if want("n") {
        sites::rows(&settings, &redis, options.seconds, &mut rows).await?;
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
