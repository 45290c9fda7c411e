//! Rows (c) and (d): the pipeline from memory (decode → filter →
//! aggregate → Redis) without the broker, and the naive consumer beside it.

use std::collections::HashMap;

use std::sync::Arc;
use std::time::Instant;

use crate::newsroom::{Newsroom, Outgoing, Shape, WireFormat};
use crate::redis_server::RedisServer;
use popularity::config::Settings;
use popularity::event::decode::Decoder;
use popularity::event::Event;
use popularity::ingest::Pipeline;
use popularity::metrics::Metrics;
use popularity::now_ms;
use popularity::scoring::{growth, Profiles};

use super::{fmt_rate, print_store_times, rate, store, BenchOptions, Row};

/// Messages read together, as the consumer reads at most this many of what
/// it has fetched at once.
const CHUNK: usize = 1024;

/// Rows (c), JSON then protobuf; returns the JSON rate.
pub(super) async fn pipeline_rows(
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
pub(super) async fn naive_row(
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
    // In chunks, as the consumer reads what it has fetched.
    for chunk in messages.chunks(CHUNK) {
        let incoming: Vec<_> = chunk
            .iter()
            .map(|(m, p)| {
                let offset = offsets[*p as usize];
                offsets[*p as usize] += 1;
                m.incoming(&settings.kafka.topics, *p, offset, None)
            })
            .collect();
        pipe.read_all(&incoming).await?;
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

/// (d): what a tutorial consumer does: decode, look up the article when the
/// event lacks its section, then one `ZINCRBY` round trip per ranking.
async fn naive(settings: &Settings, n: usize) -> anyhow::Result<f64> {
    let messages = encoded(n, WireFormat::Json, 5);
    let profiles: Profiles = popularity::scoring::profiles(&settings.scoring);
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
                let (section, tags): (Option<String>, Vec<String>) = if b.section.is_some() {
                    (
                        b.section.as_deref().map(str::to_string),
                        b.tags.iter().map(|t| t.to_string()).collect(),
                    )
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
                let article_id = b.article_id.to_string();
                let mut keys = vec![("all".to_string(), article_id.clone())];
                if let Some(s) = &section {
                    keys.push((format!("s:{s}"), article_id.clone()));
                }
                for t in &tags {
                    keys.push((format!("t:{t}"), article_id.clone()));
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
