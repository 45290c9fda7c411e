//! Row (u): memory that levels off. The service (a child process, as in
//! row (t)) takes the load generator's traffic at a fixed rate for
//! `--soak-seconds` with a short `dedupe_window` and `dedupe_lateness`
//! (60 s each), on a dev broker of its own; every 30 s its RSS, Redis's
//! `used_memory` and the windows its duplicate filters hold
//! (`popularity_dedupe_windows`) are sampled. Held state must level off:
//! the row compares the last third of the samples with the middle third,
//! and gives the bytes per held window (what the soak added, in the process
//! and in Redis, over the windows held at the end: an upper bound, since
//! rankings and caches grow with it).

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::devbroker::DevBroker;
use crate::loadgen::{self, Limits};
use crate::newsroom::{Newsroom, Shape};
use crate::redis_server::RedisServer;
use popularity::now_ms;

use super::steady::Service;
use super::{info_number, mib, redis_info, BenchOptions, Row};

/// Between two samples.
const EVERY: Duration = Duration::from_secs(30);

/// One sample: RSS of the service, Redis's `used_memory`, windows held.
#[derive(Debug, Clone, Copy)]
struct Sample {
    rss: u64,
    redis: u64,
    windows: f64,
}

/// Row (u).
pub(super) async fn rows(
    options: &BenchOptions,
    redis: &RedisServer,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    // Redis holds only the soak's keys: its memory is the soak's.
    redis.flush_all()?;
    let topics = ["soak.events", "soak.articles", "soak.dlq"];
    let broker = DevBroker::start(&topics, 12)?;
    let settings = super::settings_for(&broker, redis, (topics[0], topics[1], topics[2]));
    let group = format!("bench-soak-{}", now_ms());
    let prefix = format!("soak{}", now_ms() % 100_000);
    let window = [
        ("POPULARITY__INGEST__DEDUPE_WINDOW", "60s"),
        ("POPULARITY__INGEST__DEDUPE_LATENESS", "60s"),
    ];
    let service = Service::start(&settings, &group, &prefix, &window)?;
    let sample = |service: &Service| {
        let rss = super::memory::rss_of(&format!("/proc/{}/status", service.pid()));
        let used = redis_info(&redis.url, "memory")
            .ok()
            .and_then(|i| info_number(&i, "used_memory"))
            .unwrap_or(0.0) as u64;
        (rss, used)
    };
    // Up and idle, before any traffic.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (rss0, redis0) = sample(&service);
    let seconds = options.soak_seconds;
    let rate = options.soak_rate;
    let kafka = settings.kafka.clone();
    let stop = CancellationToken::new();
    let generator = tokio::spawn({
        let stop = stop.clone();
        async move {
            let producer = loadgen::producer(&kafka)?;
            let mut newsroom = Newsroom::new(Shape::default(), now_ms());
            let limits = Limits {
                rate: Some(rate),
                duration: Some(Duration::from_secs(seconds)),
                ..Limits::default()
            };
            anyhow::Ok(loadgen::run(&producer, &kafka, &mut newsroom, limits, &stop).await)
        }
    });
    let mut samples = Vec::new();
    let mut tick = tokio::time::interval(EVERY);
    tick.tick().await;
    while !generator.is_finished() {
        tick.tick().await;
        let (rss, used) = sample(&service);
        let windows = service
            .metric("popularity_dedupe_windows")
            .await
            .unwrap_or(0.0);
        eprintln!(
            "bench: (u) {:>4}s: service RSS {}, Redis {}, {windows:.0} windows held",
            samples.len() as u64 * EVERY.as_secs() + EVERY.as_secs(),
            mib(rss),
            mib(used)
        );
        samples.push(Sample {
            rss,
            redis: used,
            windows,
        });
    }
    let sent = generator.await??;
    stop.cancel();
    if samples.len() < 3 {
        anyhow::bail!("row (u) needs at least 3 samples: give --soak-seconds ≥ 90");
    }
    let third = samples.len() / 3;
    let mean = |s: &[Sample], f: fn(&Sample) -> f64| s.iter().map(f).sum::<f64>() / s.len() as f64;
    let (middle, last) = (
        &samples[third..2 * third],
        &samples[samples.len() - third..],
    );
    let growth = |f: fn(&Sample) -> f64| 100.0 * (mean(last, f) / mean(middle, f).max(1.0) - 1.0);
    let end = samples[samples.len() - 1];
    let per_window = |grown: f64| grown / end.windows.max(1.0);
    let list = |f: fn(&Sample) -> String| samples.iter().map(f).collect::<Vec<_>>().join(", ");
    rows.push(Row {
        id: "u",
        what: format!(
            "soak: {} events at {rate:.0}/s for {seconds} s, dedupe_window and dedupe_lateness 60 s; every 30 s: service RSS MiB [{}], Redis MiB [{}], windows held [{}]",
            sent.delivered,
            list(|s| format!("{:.0}", s.rss as f64 / 1048576.0)),
            list(|s| format!("{:.1}", s.redis as f64 / 1048576.0)),
            list(|s| format!("{:.0}", s.windows)),
        ),
        value: format!(
            "last third vs middle third: RSS {:+.1}%, Redis {:+.1}%, windows {:+.1}%; per held window at most {:.0} bytes in the process, {:.0} in Redis",
            growth(|s| s.rss as f64),
            growth(|s| s.redis as f64),
            growth(|s| s.windows),
            per_window(end.rss.saturating_sub(rss0) as f64),
            per_window(end.redis.saturating_sub(redis0) as f64),
        ),
        target: "levels off (within ±5%)".into(),
    });
    drop(service);
    Ok(())
}
