//! Row (n): what a network of sites costs (DESIGN §11). Network lists are
//! written with every flush (each event's increments go to the network's
//! groups and to its site's), so this measures Redis's work per 1,000
//! events and the API's read latency (cache off) with no sites configured,
//! one site and five, on one standalone server and on a 3-primary cluster,
//! in the same run: the ratios are what to read, the machine being shared.

use tokio_util::sync::CancellationToken;

use super::api::{wrk, Load};
use super::redis_work::{case, Work};
use super::{fmt_rate, Row};
use crate::newsroom::Shape;
use crate::redis_server::{RedisCluster, RedisServer};
use popularity::app::{App, Role};
use popularity::config::{RedisMode, Settings, SiteSettings};
use popularity::now_ms;

/// One configured site.
const ONE: &[(&str, f64)] = &[("alpha", 1.0)];
/// Five sites of different sizes.
const FIVE: &[(&str, f64)] = &[
    ("alpha", 0.4),
    ("bravo", 0.25),
    ("charlie", 0.15),
    ("delta", 0.12),
    ("echo", 0.08),
];
/// Live articles of the newsroom.
const ARTICLES: usize = 5_000;
/// Offered rate, events per second.
const RATE: f64 = 100_000.0;

/// Row (n): no sites, one, five; standalone, then cluster.
pub(super) async fn rows(
    settings: &Settings,
    redis: &RedisServer,
    seconds: u64,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    eprintln!("bench: (n) starting a 3-primary cluster");
    let cluster = RedisCluster::start(3, 0)?;
    let primaries: Vec<String> = cluster
        .primaries()?
        .into_iter()
        .map(|(i, _)| cluster.nodes[i].url.clone())
        .collect();
    for (topology, mode, url, urls) in [
        (
            "standalone",
            RedisMode::Standalone,
            redis.url.clone(),
            vec![redis.url.clone()],
        ),
        (
            "cluster",
            RedisMode::Cluster,
            cluster.url.clone(),
            primaries,
        ),
    ] {
        let mut cells = Vec::new();
        let mut baseline: Option<(Work, Load)> = None;
        for (label, sites) in [("no sites", &[][..]), ("1 site", ONE), ("5 sites", FIVE)] {
            let mut s = settings.clone();
            s.store.redis_mode = mode;
            s.store.redis_url = url.clone();
            s.store.key_prefix = format!("benchn{}", now_ms() % 100_000);
            s.sites = sites
                .iter()
                .map(|(id, _)| SiteSettings {
                    id: id.to_string(),
                    name: id.to_string(),
                    origins: Vec::new(),
                    events_per_second: None,
                })
                .collect();
            let shape = Shape {
                articles: ARTICLES,
                sites,
                ..Shape::default()
            };
            let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
            let w = case(&s, &urls, shape, RATE).await?;
            // The network's list, and the biggest site's.
            let network = reads(&s, "/v1/rankings/trending?limit=10", seconds).await?;
            let site = match sites.first() {
                Some((id, _)) => {
                    let path = format!("/v1/rankings/trending?limit=10&site={id}");
                    Some(reads(&s, &path, seconds).await?)
                }
                None => None,
            };
            let per = |x: f64| 1000.0 * x / w.events as f64;
            eprintln!(
                "bench: (n) {topology}, {label}: {} events at {}; per 1,000: {:.2} scripts, {:.0} ZINCRBY, \
                 {:.2} ms Redis CPU; network list p50 {:.2} ms p99 {:.2} ms{}",
                w.events,
                fmt_rate(w.achieved),
                per(w.scripts),
                per(w.zincrby),
                per(w.cpu_s * 1e3),
                network.p50_ms,
                network.p99_ms,
                site.as_ref()
                    .map(|l| format!("; site list p50 {:.2} ms p99 {:.2} ms", l.p50_ms, l.p99_ms))
                    .unwrap_or_default(),
            );
            let ratio = baseline
                .as_ref()
                .map(|(b, _)| {
                    format!(
                        " ({:.2} × the ZINCRBY of no sites)",
                        per(w.zincrby) / (1000.0 * b.zincrby / b.events as f64)
                    )
                })
                .unwrap_or_default();
            cells.push(format!(
                "{label}: {:.2} scripts, {:.0} ZINCRBY{ratio}, {:.2} ms CPU per 1,000; reads p50/p99 {:.2}/{:.2} ms{}",
                per(w.scripts),
                per(w.zincrby),
                per(w.cpu_s * 1e3),
                network.p50_ms,
                network.p99_ms,
                site.as_ref()
                    .map(|l| format!(", one site's {:.2}/{:.2} ms", l.p50_ms, l.p99_ms))
                    .unwrap_or_default(),
            ));
            if baseline.is_none() {
                baseline = Some((w, network));
            }
        }
        rows.push(Row {
            id: "n",
            what: format!(
                "sites, {topology}: Redis work per 1,000 events ({ARTICLES} articles, {} offered) and list reads (cache off)",
                fmt_rate(RATE)
            ),
            value: cells.join(" · "),
            target: "network lists exact; writes do not grow with the number of sites".into(),
        });
    }
    Ok(())
}

/// `wrk` on `path` of an API replica on `settings`' store, cache off.
async fn reads(settings: &Settings, path: &str, seconds: u64) -> anyhow::Result<Load> {
    let mut s = settings.clone();
    s.api.cache_ttl = std::time::Duration::ZERO;
    let app = App::build(s, Role::Api).await?;
    let addr = app.local_addr();
    let stop = CancellationToken::new();
    let server = tokio::spawn(app.run(stop.clone()));
    let load = wrk(&format!("http://{addr}{path}"), seconds, &[]);
    stop.cancel();
    let _ = server.await;
    load
}
