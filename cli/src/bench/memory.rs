//! Row (g): memory of the service and of Redis as distinct articles grow.

use std::process::{Command, Stdio};
use std::sync::Arc;

use anyhow::Context as _;

use crate::redis_server::RedisServer;
use popularity::config::Settings;
use popularity::ingest::{Incoming, Pipeline};
use popularity::metrics::Metrics;
use popularity::now_ms;

use super::{mib, store, BenchOptions, Row};

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
pub(super) fn rss_of(status: &str) -> u64 {
    std::fs::read_to_string(status)
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// Rows (g), measured in a child process of its own.
pub(super) fn memory_rows(
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

/// (g): one page view for each of `max` distinct articles, through the
/// pipeline; memory after 10k, 100k and 1M.
pub(super) async fn memory(
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
