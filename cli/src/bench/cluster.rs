//! Row (k): the store on a local Redis Cluster (3 primaries, a replica
//! each) beside one standalone server, in the same run, on one backlog of
//! its own: ingest end to end, API reads that reach Redis (cache off), and
//! each primary's share of the write scripts (`INFO commandstats`).

use tokio_util::sync::CancellationToken;

use super::api::{cache_misses, Load};
use super::broker::end_to_end;
use super::{fmt_rate, info_number, redis_info, reset_stats, BenchOptions, Row};
use crate::devbroker::DevBroker;
use crate::loadgen::{self, Limits};
use crate::newsroom::{Newsroom, Shape};
use crate::redis_server::{RedisCluster, RedisServer};
use popularity::app::{App, Role};
use popularity::config::{RedisMode, Settings};
use popularity::now_ms;

/// Calls of `EVALSHA` a server answered since its statistics were reset.
fn script_calls(url: &str) -> anyhow::Result<u64> {
    let stats = redis_info(url, "commandstats")?;
    Ok(info_number(&stats, "cmdstat_evalsha:calls=").unwrap_or(0.0) as u64)
}

/// Ingest rate (steady state) of the service on `base`'s store, then
/// `between()` (after ingest, before reads), then its API misses.
async fn measure<T>(
    base: &Settings,
    options: &BenchOptions,
    n: u64,
    label: &str,
    between: impl FnOnce() -> anyhow::Result<T>,
) -> anyhow::Result<(f64, T, Load)> {
    let mut s = base.clone();
    s.kafka.group_id = format!("bench-k-{label}-{}", now_ms());
    s.store.key_prefix = format!("benchk{}", now_ms() % 100_000);
    let app = App::build(s.clone(), Role::All).await?;
    let metrics = app.metrics();
    let stop = CancellationToken::new();
    let server = tokio::spawn(app.run(stop.clone()));
    let (_, steady) = end_to_end(&metrics, n).await?;
    let seen = between()?;
    let reads = cache_misses(&s, options.seconds).await?;
    stop.cancel();
    let _ = server.await;
    Ok((steady, seen, reads))
}

/// Row (k), standalone then cluster.
pub(super) async fn rows(
    options: &BenchOptions,
    redis: &RedisServer,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    let topics = ("k-events", "k-articles", "k-events.dlq");
    let broker = DevBroker::start(&[topics.0, topics.1, topics.2], 12)?;
    let mut base = super::settings_for(&broker, redis, topics);
    let n = options.broker_events;
    let producer = loadgen::producer(&base.kafka)?;
    let mut newsroom = Newsroom::new(Shape::default(), now_ms());
    let limits = Limits {
        count: Some(n),
        ..Limits::default()
    };
    let sent = loadgen::run(
        &producer,
        &base.kafka,
        &mut newsroom,
        limits,
        &CancellationToken::new(),
    )
    .await;
    let n = sent.delivered;
    eprintln!("bench: (k) produced {n} messages; standalone first");
    let (alone, (), alone_reads) = measure(&base, options, n, "standalone", || Ok(())).await?;
    eprintln!("bench: (k) starting a 3-primary cluster with a replica each");
    let cluster = RedisCluster::start(3, 1)?;
    let primaries = cluster.primaries()?;
    for (i, _) in &primaries {
        reset_stats(&cluster.nodes[*i].url)?;
    }
    base.store.redis_mode = RedisMode::Cluster;
    base.store.redis_url = cluster.url.clone();
    // The write scripts each primary ran while the backlog drained (reads
    // call a script too, so they are counted before the API runs).
    let (clustered, calls, cluster_reads) = measure(&base, options, n, "cluster", || {
        primaries
            .iter()
            .map(|(i, _)| script_calls(&cluster.nodes[*i].url))
            .collect::<anyhow::Result<Vec<u64>>>()
    })
    .await?;
    let total: u64 = calls.iter().sum();
    let shares: Vec<f64> = calls
        .iter()
        .map(|c| 100.0 * *c as f64 / total.max(1) as f64)
        .collect();
    let most = shares.iter().cloned().fold(0.0, f64::max);
    let shards = base.store.shards;
    rows.push(Row {
        id: "k",
        what:
            "ingest end to end, steady state: standalone, then a 3-primary cluster (1 replica each)"
                .into(),
        value: format!("{} · {}", fmt_rate(alone), fmt_rate(clustered)),
        target: format!("cluster / standalone: {:.2} ×", clustered / alone),
    });
    rows.push(Row {
        id: "k",
        what: "API reads reaching Redis (cache off), wrk: standalone, then cluster".into(),
        value: format!(
            "{:.0} req/s, p99 {:.2} ms · {:.0} req/s, p99 {:.2} ms",
            alone_reads.rps, alone_reads.p99_ms, cluster_reads.rps, cluster_reads.p99_ms
        ),
        target: "—".into(),
    });
    rows.push(Row {
        id: "k",
        what: format!("write scripts per primary, {shards} shards per group ({total} calls)"),
        value: shares
            .iter()
            .map(|s| format!("{s:.0}%"))
            .collect::<Vec<_>>()
            .join(" / "),
        target: format!(
            "no primary > 50%: {}",
            if most <= 50.0 { "met" } else { "missed" }
        ),
    });
    eprintln!("bench: (k) standalone {alone:.0}/s, cluster {clustered:.0}/s, shares {shares:?}");
    Ok(())
}
