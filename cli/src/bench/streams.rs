//! Row (s): Server-Sent Event streams held by one API replica. A child
//! `popularity serve --role api` (so that its memory is its own) reads a
//! Redis the bench writes to directly; 1,000 then 10,000 subscribers hold
//! `/v1/stream/rankings/trending` open, and each change of the list's
//! leader, applied to the store by the bench, is timed until every
//! subscriber has it.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::Row;
use crate::redis_server::RedisServer;
use popularity::config::Settings;
use popularity::event::{ArticleMeta, EventType};
use popularity::now_ms;
use popularity::scoring::Aggregate;
use popularity::store::Store;

/// Leader changes timed per subscriber count.
const CHANGES: usize = 5;
const PATH: &str = "/v1/stream/rankings/trending?limit=10";

/// The API replica under test, ended when dropped.
struct Replica {
    child: Child,
    addr: String,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Replica {
    fn start(settings: &Settings, max_streams: usize) -> anyhow::Result<Replica> {
        let port = crate::redis_server::free_port()?;
        let child = Command::new(std::env::current_exe()?)
            .args(["serve", "--role", "api"])
            .env("POPULARITY__STORE__BACKEND", "redis")
            .env("POPULARITY__STORE__REDIS_URL", &settings.store.redis_url)
            .env("POPULARITY__STORE__KEY_PREFIX", &settings.store.key_prefix)
            .env("POPULARITY__KAFKA__BROKERS", &settings.kafka.brokers)
            .env("POPULARITY__API__LISTEN", format!("127.0.0.1:{port}"))
            .env("POPULARITY__API__ADMIN_LISTEN", "127.0.0.1:0")
            .env("POPULARITY__API__MAX_STREAMS", max_streams.to_string())
            // Every stream comes from the bench's one address.
            .env(
                "POPULARITY__API__MAX_STREAMS_PER_CLIENT",
                max_streams.to_string(),
            )
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting the API replica")?;
        let mut replica = Replica {
            child,
            addr: format!("127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(&replica.addr).is_err() {
            if let Some(status) = replica.child.try_wait()? {
                bail!("the API replica exited with {status}");
            }
            if Instant::now() > deadline {
                bail!("the API replica did not listen on {}", replica.addr);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(replica)
    }

    fn rss_bytes(&self) -> u64 {
        super::memory::rss_of(&format!("/proc/{}/status", self.child.id()))
    }
}

/// One subscriber: reports (subscriber, leader, arrival) for every frame.
async fn subscribe(
    addr: String,
    id: usize,
    frames: mpsc::UnboundedSender<(usize, String, Instant)>,
) -> anyhow::Result<()> {
    let mut s = TcpStream::connect(&addr).await?;
    // HTTP/1.0: the body is the event stream itself, not chunked.
    let req = format!("GET {PATH} HTTP/1.0\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n");
    s.write_all(req.as_bytes()).await?;
    let mut buf = Vec::with_capacity(16 * 1024);
    let mut chunk = [0u8; 8192];
    loop {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        while let Some(end) = find(&buf, b"\n\n") {
            let event = &buf[..end];
            if let Some(leader) = leader(event) {
                let _ = frames.send((id, leader, Instant::now()));
            }
            buf.drain(..end + 2);
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The first article id of a `ranking` event's data.
fn leader(event: &[u8]) -> Option<String> {
    const KEY: &[u8] = b"\"article_id\":\"";
    let at = find(event, KEY)? + KEY.len();
    let len = event[at..].iter().position(|&b| b == b'"')?;
    Some(String::from_utf8_lossy(&event[at..at + len]).into_owned())
}

/// Makes `id` the leader of trending by a margin no other article has.
async fn crown(store: &dyn Store, settings: &Settings, id: &str, views: f64) -> anyhow::Result<()> {
    let now = now_ms();
    let meta = ArticleMeta {
        article_id: id.into(),
        title: Some(format!("Story {id}")),
        url: Some(format!("https://news.example.com/{id}")),
        section: Some("news".into()),
        published_at_ms: Some(now - 600_000),
        summary: Some("A story that suddenly everyone reads.".into()),
        ..ArticleMeta::default()
    };
    store.publish(&[meta]).await?;
    let mut batch = Aggregate::new(popularity::scoring::profiles(&settings.scoring), now);
    batch.add(EventType::PageView, id, Some("news"), &[], now, views);
    store.apply(&batch).await?;
    Ok(())
}

/// Rows (s) for 1,000 and 10,000 subscribers.
pub(super) async fn rows(
    settings: &Settings,
    redis: &RedisServer,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    let mut settings = settings.clone();
    settings.store.key_prefix = format!("benchstreams{}", now_ms() % 100_000);
    let store = popularity::store::connect(&settings).await?;
    for i in 0..10 {
        crown(&*store, &settings, &format!("seed-{i}"), 10.0 + i as f64).await?;
    }
    let mut views = 1_000.0;
    for n in [1_000usize, 10_000] {
        let replica = Replica::start(&settings, n + 100)?;
        // Let the replica settle before its idle memory is read.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let idle = replica.rss_bytes();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let opened = Instant::now();
        let mut clients = tokio::task::JoinSet::new();
        for id in 0..n {
            clients.spawn(subscribe(replica.addr.clone(), id, tx.clone()));
        }
        drop(tx);
        let mut leaders: HashMap<usize, String> = HashMap::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while leaders.len() < n {
            let Ok(Some((id, leader, _))) =
                tokio::time::timeout_at(deadline.into(), rx.recv()).await
            else {
                bail!("only {} of {n} streams got their first list", leaders.len());
            };
            leaders.insert(id, leader);
        }
        let all_open = opened.elapsed();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let held = replica.rss_bytes();
        let before = redis_commands(redis)?;
        let quiet = Instant::now();
        tokio::time::sleep(Duration::from_secs(3)).await;
        let idle_commands =
            (redis_commands(redis)? - before) as f64 / quiet.elapsed().as_secs_f64();

        let mut latencies = Vec::with_capacity(n * CHANGES);
        for change in 0..CHANGES {
            // Changes land at different points of the replica's 1 s tick.
            tokio::time::sleep(Duration::from_millis(100 + 370 * change as u64 % 1000)).await;
            let id = format!("lead-{n}-{change}");
            views *= 2.0;
            crown(&*store, &settings, &id, views).await?;
            let applied = Instant::now();
            let mut pending: usize = n;
            let mut seen = vec![false; n];
            let deadline = applied + Duration::from_secs(30);
            while pending > 0 {
                let Ok(Some((sub, leader, at))) =
                    tokio::time::timeout_at(deadline.into(), rx.recv()).await
                else {
                    bail!("{pending} of {n} streams never showed leader {id}");
                };
                if leader == id && !seen[sub] {
                    seen[sub] = true;
                    pending -= 1;
                    latencies.push(at.saturating_duration_since(applied));
                }
            }
        }
        clients.abort_all();
        latencies.sort_unstable();
        let q = |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize];
        let per_stream = held.saturating_sub(idle) as f64 / n as f64;
        eprintln!(
            "bench: (s) {n} streams open in {:.2}s; replica RSS {} idle, {} held; Redis {idle_commands:.1} commands/s while held",
            all_open.as_secs_f64(),
            super::mib(idle),
            super::mib(held)
        );
        rows.push(Row {
            id: "s",
            what: format!(
                "streams: {n} subscribers of one list on one API replica, {CHANGES} leader changes"
            ),
            value: format!(
                "all {n} held; {:.1} KiB per stream; applied → pushed p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms; Redis {idle_commands:.1} commands/s while held",
                per_stream / 1024.0,
                q(0.5).as_secs_f64() * 1e3,
                q(0.99).as_secs_f64() * 1e3,
                q(1.0).as_secs_f64() * 1e3,
            ),
            target: "every subscriber updated; one read per tick".into(),
        });
    }
    Ok(())
}

/// Commands Redis has processed since it started.
fn redis_commands(redis: &RedisServer) -> anyhow::Result<u64> {
    let info = super::redis_info(&redis.url, "stats")?;
    super::info_number(&info, "total_commands_processed")
        .map(|n| n as u64)
        .context("INFO stats has no total_commands_processed")
}
