//! Row (r): what Redis does per 1,000 events as the offered rate grows,
//! for a small and a large newsroom. The consumer's processing (the
//! [`Pipeline`]) is fed from memory at a fixed pace, so the rate is what
//! was offered, not what the machine can reach; Redis's script calls,
//! `ZINCRBY`s, commands and CPU time are read from `INFO` around the run.
//!
//! Each case runs twice: with the default cadence (a write every
//! `ingest.flush_interval`, bounded by `ingest.max_batch_events`), and with
//! a write every 50,000 events, the cadence before the bound became a
//! memory bound.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::newsroom::{Newsroom, Outgoing, Shape};
use crate::redis_server::RedisServer;
use popularity::config::Settings;
use popularity::ingest::Pipeline;
use popularity::metrics::Metrics;
use popularity::now_ms;

use super::{fmt_rate, info_number, redis_info, reset_stats, store, Row};

/// Live articles of the two newsrooms.
const NEWSROOMS: [usize; 2] = [2_000, 50_000];
/// Offered rates, events per second.
const RATES: [f64; 3] = [10_000.0, 100_000.0, 1_000_000.0];
/// Seconds of traffic per case.
const SECONDS: f64 = 2.0;
/// Messages read together (the pacing's step).
const CHUNK: usize = 256;

/// What Redis did during one case.
pub(super) struct Work {
    pub events: usize,
    pub achieved: f64,
    pub scripts: f64,
    pub zincrby: f64,
    pub commands: f64,
    pub cpu_s: f64,
}

/// Row (r), every newsroom at every rate, in both cadences.
pub(super) async fn rows(
    settings: &Settings,
    redis: &RedisServer,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    for articles in NEWSROOMS {
        for rate in RATES {
            let mut cells = Vec::new();
            for (cadence, max_batch) in [
                ("interval", settings.ingest.max_batch_events),
                ("every 50,000", 50_000),
            ] {
                redis.flush_all()?;
                let mut s = settings.clone();
                s.ingest.max_batch_events = max_batch;
                s.store.key_prefix = format!("benchr{}", now_ms() % 100_000);
                let shape = Shape {
                    articles,
                    ..Shape::default()
                };
                let w = case(&s, &[redis.url.as_str()], shape, rate).await?;
                let per = |x: f64| 1000.0 * x / w.events as f64;
                eprintln!(
                    "bench: (r) {articles} articles, {} offered, {cadence}: {} events at {}; \
                     per 1,000: {:.2} scripts, {:.0} ZINCRBY, {:.0} commands, {:.2} ms Redis CPU",
                    fmt_rate(rate),
                    w.events,
                    fmt_rate(w.achieved),
                    per(w.scripts),
                    per(w.zincrby),
                    per(w.commands),
                    per(w.cpu_s * 1e3),
                );
                cells.push(format!(
                    "{cadence}: {:.2} scripts, {:.0} ZINCRBY, {:.2} ms CPU (at {})",
                    per(w.scripts),
                    per(w.zincrby),
                    per(w.cpu_s * 1e3),
                    fmt_rate(w.achieved),
                ));
            }
            rows.push(Row {
                id: "r",
                what: format!(
                    "Redis work per 1,000 events, {articles} live articles, {} offered",
                    fmt_rate(rate)
                ),
                value: cells.join(" · "),
                target: "proportional to what changed, not to events".into(),
            });
        }
    }
    Ok(())
}

/// One newsroom of `shape` at one offered rate: its articles published
/// and written first, then `SECONDS` of its traffic at `rate`, measured on
/// the Redis servers at `urls` (every primary of a cluster).
pub(super) async fn case(
    settings: &Settings,
    urls: &[&str],
    shape: Shape,
    rate: f64,
) -> anyhow::Result<Work> {
    let articles = shape.articles;
    let shape = Shape {
        publish_every: 0,
        time_jitter_ms: 0,
        ..shape
    };
    let n = (rate * SECONDS) as usize;
    let mut newsroom = Newsroom::new(shape, now_ms());
    let publications: Vec<_> = (0..articles).map(|_| newsroom.next(now_ms())).collect();
    let traffic: Vec<_> = (0..n).map(|_| newsroom.next(now_ms())).collect();
    let mut pipe = Pipeline::new(
        Arc::new(settings.clone()),
        store(settings).await?,
        Metrics::new(),
    );
    let mut offsets = [0i64; 12];
    feed(&mut pipe, settings, &publications, &mut offsets, None).await?;
    pipe.flush().await?;
    for url in urls {
        reset_stats(url)?;
    }
    let cpu = || -> anyhow::Result<f64> {
        let mut total = 0.0;
        for url in urls {
            let info = redis_info(url, "cpu")?;
            total += info_number(&info, "used_cpu_user").unwrap_or(0.0)
                + info_number(&info, "used_cpu_sys").unwrap_or(0.0);
        }
        Ok(total)
    };
    let cpu_before = cpu()?;
    let started = Instant::now();
    feed(&mut pipe, settings, &traffic, &mut offsets, Some(rate)).await?;
    pipe.flush().await?;
    let elapsed = started.elapsed();
    let cpu_s = cpu()? - cpu_before;
    let mut stats = String::new();
    for url in urls {
        stats.push_str(&redis_info(url, "commandstats")?);
    }
    let calls = |cmd: &str| {
        let prefix = format!("cmdstat_{cmd}:calls=");
        stats
            .lines()
            .filter_map(|l| {
                l.strip_prefix(&prefix)?
                    .split(',')
                    .next()?
                    .parse::<f64>()
                    .ok()
            })
            .sum::<f64>()
    };
    let commands = stats
        .lines()
        .filter_map(|l| {
            l.split_once(":calls=")?
                .1
                .split(',')
                .next()?
                .parse::<f64>()
                .ok()
        })
        .sum::<f64>();
    Ok(Work {
        events: n,
        achieved: n as f64 / elapsed.as_secs_f64(),
        scripts: calls("evalsha") + calls("eval"),
        zincrby: calls("zincrby"),
        commands,
        cpu_s,
    })
}

/// Feeds `msgs` to the pipeline in chunks, never ahead of `rate` (events
/// per second) when there is one.
async fn feed(
    pipe: &mut Pipeline,
    settings: &Settings,
    msgs: &[Outgoing],
    offsets: &mut [i64; 12],
    rate: Option<f64>,
) -> anyhow::Result<()> {
    let started = Instant::now();
    for (i, chunk) in msgs.chunks(CHUNK).enumerate() {
        if let Some(rate) = rate {
            let due = started + Duration::from_secs_f64((i * CHUNK) as f64 / rate);
            tokio::time::sleep_until(due.into()).await;
        }
        // Each on one of 12 partitions by its key, at that partition's next offset.
        let incoming: Vec<_> = chunk
            .iter()
            .map(|m| {
                let p = (PARTITIONS.hash_one(&m.key) % 12) as usize;
                offsets[p] += 1;
                m.incoming(&settings.kafka.topics, p as i32, offsets[p], Some(now_ms()))
            })
            .collect();
        pipe.read_all(&incoming).await?;
    }
    Ok(())
}

/// Spreads the messages over 12 partitions by key, alike in every run.
const PARTITIONS: ahash::RandomState = ahash::RandomState::with_seeds(1, 2, 3, 4);
