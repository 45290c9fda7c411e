//! Row (u): memory that levels off. The service (a child process, as in
//! row (t)) takes the load generator's traffic at a fixed rate for
//! `--soak-seconds` with a short `dedupe_window` and `dedupe_lateness`
//! (60 s each), on a dev broker of its own; every 30 s its RSS, its heap's
//! live allocations (`popularity_heap_bytes`: RSS less that is what the
//! allocator keeps) and what its duplicate filters' tables hold
//! (`popularity_dedupe_bytes`), Redis's
//! `used_memory` and its keys' bytes by kind (the filters' saved state, the
//! articles' metadata, the rankings and the rest), and the windows the
//! filters hold (`popularity_dedupe_windows`) are sampled. Held state must
//! level off: the row compares the last third of the samples with the
//! middle third, and gives the bytes per held window (in the filters'
//! tables and in Redis's filter keys, and the upper bounds of everything
//! the soak added over the windows held at the end). The newsroom
//! publishes an article every `--soak-publish-every` messages: its
//! catalogue, and so the rankings' members and the articles' metadata,
//! grows with it until `scoring.max_members` and `store.metadata_ttl`
//! bound them.

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

/// One sample: RSS of the service, Redis's `used_memory`, windows held,
/// and what Redis's keys of each kind take.
#[derive(Debug, Clone, Copy)]
struct Sample {
    rss: u64,
    redis: u64,
    windows: f64,
    /// What the duplicate filters' tables hold (`popularity_dedupe_bytes`).
    filters: f64,
    /// The heap's live allocations (`popularity_heap_bytes`), the tables
    /// among them.
    heap: f64,
    /// What C libraries (librdkafka) hold in glibc's malloc: in use, and
    /// taken from the kernel (`popularity_libc_heap_bytes`).
    libc: f64,
    libc_held: f64,
    keys: Kinds,
}

impl Sample {
    /// The service's and Redis's memory now, and what holds it.
    async fn take(service: &Service, redis: &RedisServer, prefix: &str) -> anyhow::Result<Sample> {
        let m = service.scrape().await.unwrap_or_default();
        Ok(Sample {
            rss: super::memory::rss_of(&format!("/proc/{}/status", service.pid())),
            redis: redis_used(redis),
            windows: m.or_zero("popularity_dedupe_windows"),
            filters: m.or_zero("popularity_dedupe_bytes"),
            heap: m.or_zero("popularity_heap_bytes"),
            libc: m.or_zero("popularity_libc_heap_bytes{state=\"in_use\"}"),
            libc_held: m.or_zero("popularity_libc_heap_bytes{state=\"held\"}"),
            keys: kinds(&redis.url, prefix)?,
        })
    }

    /// The service's RSS less what its filters' tables hold.
    fn rss_less_filters(&self) -> f64 {
        self.rss as f64 - self.filters
    }

    /// The heap's live allocations less the filters' tables: what the
    /// service's other structures hold.
    fn heap_less_filters(&self) -> f64 {
        self.heap - self.filters
    }

    /// RSS less the heap's live allocations: what the allocator keeps for
    /// reuse, and librdkafka's own memory.
    fn rss_less_heap(&self) -> f64 {
        self.rss as f64 - self.heap
    }

    /// RSS less the heap's live allocations and what glibc's malloc took
    /// from the kernel: what mimalloc keeps for reuse, the threads' stacks
    /// and the program's own pages.
    fn rss_less_heaps(&self) -> f64 {
        self.rss_less_heap() - self.libc_held
    }
}

/// Bytes Redis's keys take (`MEMORY USAGE`), by what they hold (DESIGN §4's
/// key layout): the duplicate filters' saved state, the articles'
/// metadata, and the rest (rankings, counts, indexes, names).
#[derive(Debug, Clone, Copy, Default)]
struct Kinds {
    filters: u64,
    articles: u64,
    rankings: u64,
}

/// Every key under `prefix`, measured: a few hundred keys and one per article.
fn kinds(url: &str, prefix: &str) -> anyhow::Result<Kinds> {
    use redis::Commands;
    let mut c = redis::Client::open(url)?.get_connection()?;
    let keys = c
        .scan_match::<_, String>(format!("{prefix}:*"))?
        .collect::<Result<Vec<_>, _>>()?;
    let mut k = Kinds::default();
    for chunk in keys.chunks(1_000) {
        let mut p = redis::pipe();
        for key in chunk {
            p.cmd("MEMORY").arg("USAGE").arg(key).arg("SAMPLES").arg(0);
        }
        let sizes: Vec<Option<u64>> = p.query(&mut c)?;
        for (key, size) in chunk.iter().zip(sizes) {
            let rest = &key[prefix.len()..];
            let kind = if rest.starts_with(":{d:") {
                &mut k.filters
            } else if rest.starts_with(":article:") {
                &mut k.articles
            } else {
                &mut k.rankings
            };
            *kind += size.unwrap_or(0);
        }
    }
    Ok(k)
}

/// Redis's `used_memory`.
fn redis_used(redis: &RedisServer) -> u64 {
    redis_info(&redis.url, "memory")
        .ok()
        .and_then(|i| info_number(&i, "used_memory"))
        .unwrap_or(0.0) as u64
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
    // Up and idle, before any traffic.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle = Sample::take(&service, redis, &prefix).await?;
    let kafka = settings.kafka.clone();
    let stop = CancellationToken::new();
    let (rate, seconds) = (options.soak_rate, options.soak_seconds);
    let shape = Shape {
        publish_every: options.soak_publish_every,
        ..Shape::default()
    };
    let generator = tokio::spawn({
        let stop = stop.clone();
        async move {
            let producer = loadgen::producer(&kafka)?;
            let mut newsroom = Newsroom::new(shape, now_ms());
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
        let s = Sample::take(&service, redis, &prefix).await?;
        eprintln!(
            "bench: (u) {:>4}s: service RSS {} (heap {}, filters {}, glibc {} in use of {}), Redis {} (filters {}, articles {}, rankings {}), {:.0} windows held",
            (samples.len() as u64 + 1) * EVERY.as_secs(),
            mib(s.rss),
            mib(s.heap as u64),
            mib(s.filters as u64),
            mib(s.libc as u64),
            mib(s.libc_held as u64),
            mib(s.redis),
            mib(s.keys.filters),
            mib(s.keys.articles),
            mib(s.keys.rankings),
            s.windows,
        );
        samples.push(s);
    }
    let sent = generator.await??;
    stop.cancel();
    drop(service);
    if samples.len() < 3 {
        anyhow::bail!("row (u) needs at least 3 samples: give --soak-seconds ≥ 90");
    }
    let what = format!(
        "soak: {} events at {rate:.0}/s for {seconds} s, an article published every {} messages, dedupe_window and dedupe_lateness 60 s",
        sent.delivered, options.soak_publish_every,
    );
    rows.push(row(what, &idle, &samples));
    Ok(())
}

/// The row of a soak that started from `idle` and took `samples`: the last
/// third of the samples against the middle third.
fn row(what: String, idle: &Sample, samples: &[Sample]) -> Row {
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
    fn in_mib(b: f64, decimals: usize) -> String {
        format!("{:.*}", decimals, b / 1048576.0)
    }
    Row {
        id: "u",
        what: format!(
            "{what}; every 30 s: service RSS MiB [{}] (less the filters' tables [{}]; the heap's live allocations less the tables [{}]; RSS less the heap [{}]; glibc's malloc in use [{}] and taken [{}]; RSS less both heaps [{}]), Redis MiB [{}] (the filters' keys [{}], articles' [{}], rankings' and the rest [{}]), windows held [{}]",
            list(|s| in_mib(s.rss as f64, 0)),
            list(|s| in_mib(s.rss_less_filters(), 0)),
            list(|s| in_mib(s.heap_less_filters(), 1)),
            list(|s| in_mib(s.rss_less_heap(), 0)),
            list(|s| in_mib(s.libc, 1)),
            list(|s| in_mib(s.libc_held, 1)),
            list(|s| in_mib(s.rss_less_heaps(), 0)),
            list(|s| in_mib(s.redis as f64, 1)),
            list(|s| in_mib(s.keys.filters as f64, 1)),
            list(|s| in_mib(s.keys.articles as f64, 1)),
            list(|s| in_mib(s.keys.rankings as f64, 1)),
            list(|s| format!("{:.0}", s.windows)),
        ),
        value: format!(
            "last third vs middle third: RSS {:+.1}% (less the filters' tables {:+.1}%; the heap less the tables {:+.1}%; RSS less the heap {:+.1}%; glibc's malloc in use {:+.1}%, taken {:+.1}%; RSS less both heaps {:+.1}%), Redis {:+.1}% (the filters' keys {:+.1}%, articles' {:+.1}%, rankings' {:+.1}%), windows {:+.1}%; per held window {:.0} bytes in the filters' tables (at most {:.0} in all the process grew), {:.0} in Redis's filter keys ({:.0} in all Redis grew)",
            growth(|s| s.rss as f64),
            growth(Sample::rss_less_filters),
            growth(Sample::heap_less_filters),
            growth(Sample::rss_less_heap),
            growth(|s| s.libc),
            growth(|s| s.libc_held),
            growth(Sample::rss_less_heaps),
            growth(|s| s.redis as f64),
            growth(|s| s.keys.filters as f64),
            growth(|s| s.keys.articles as f64),
            growth(|s| s.keys.rankings as f64),
            growth(|s| s.windows),
            per_window(end.filters),
            per_window(end.rss.saturating_sub(idle.rss) as f64),
            per_window(end.keys.filters as f64),
            per_window(end.redis.saturating_sub(idle.redis) as f64),
        ),
        target: "levels off (within ±5%)".into(),
    }
}
