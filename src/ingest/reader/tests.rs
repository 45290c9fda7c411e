//! The reader judges a share's events together, their lookups first
//! (`JUDGED_TOGETHER`): the verdicts must be those of reading the
//! messages one at a time.

use std::collections::HashMap;

use super::*;
use crate::config::Settings;
use crate::event::decode::{Decoder, MessageInfo};
use crate::now_ms;
use crate::site::Sites;

const MIN: i64 = 60_000;

/// One message: its partition, payload and Kafka timestamp.
struct Sent {
    partition: i32,
    payload: Vec<u8>,
    timestamp_ms: Option<i64>,
}

/// Three partitions' traffic, hours ago: returning visitors (duplicates
/// within the window), engagement, bots, invalid messages, times out of
/// order, and every seventh message without a timestamp, judged at its
/// partition's clock. Such a message follows one that moved the clock 7
/// minutes on, and its event is 2 minutes ahead of that clock: judged at
/// the clock from before the move it would be 9 minutes in the future,
/// and invalid.
fn traffic(now: i64) -> Vec<Sent> {
    let base = now - 6 * 60 * MIN;
    let mut sent = Vec::new();
    for i in 0..600i64 {
        let partition = (i % 3) as i32;
        let n = i / 3;
        let late = (n * 7919) % 45;
        let at = base - 40 * MIN + n * 5_000 - late * MIN / 3;
        let visitor = (n * 31) % 11;
        let article = (n * 17) % 5;
        let (payload, timestamp_ms) = match n % 7 {
            0 if n > 0 => (
                format!(
                    r#"{{"type":"page_view","article_id":"a{article}","visitor_id":"v{visitor}","occurred_at":{}}}"#,
                    base + (n - 1) * MIN + 2 * MIN
                ),
                None,
            ),
            6 => (
                format!(
                    r#"{{"type":"page_view","article_id":"a{article}","visitor_id":"v{visitor}","occurred_at":{}}}"#,
                    base + n * MIN - MIN
                ),
                Some(base + n * MIN),
            ),
            3 => (
                format!(
                    r#"{{"type":"engagement","article_id":"a{article}","visitor_id":"v{visitor}","occurred_at":{at},"engaged_seconds":{}}}"#,
                    400 + n * 13 % 900
                ),
                Some(at + MIN),
            ),
            4 if n % 4 == 0 => (
                format!(
                    r#"{{"type":"share","article_id":"a{article}","occurred_at":{at},"bot":true}}"#
                ),
                Some(at),
            ),
            5 if n % 5 == 0 => ("{not json".to_string(), Some(at)),
            _ => (
                format!(
                    r#"{{"type":"page_view","article_id":"a{article}","visitor_id":"v{visitor}","occurred_at":{at}}}"#
                ),
                Some(at + MIN / 2),
            ),
        };
        sent.push(Sent {
            partition,
            payload: payload.into_bytes(),
            timestamp_ms,
        });
    }
    sent
}

#[test]
fn events_judged_together_get_the_verdicts_of_one_at_a_time() {
    // On one decoding thread (the default), and with the partitions shared
    // out to two and three.
    for threads in [1, 2, 3] {
        let mut settings = Settings::defaults();
        settings.ingest.decode_threads = threads;
        judged_together_as_one_at_a_time(&settings);
    }
}

fn judged_together_as_one_at_a_time(settings: &Settings) {
    let now = now_ms();
    let sent = traffic(now);
    let mut offsets: HashMap<i32, i64> = HashMap::new();
    let msgs: Vec<Incoming<'_>> = sent
        .iter()
        .map(|s| {
            let offset = offsets.entry(s.partition).or_default();
            *offset += 1;
            Incoming {
                topic: "events",
                partition: s.partition,
                offset: *offset,
                key: None,
                payload: &s.payload,
                content_type: None,
                timestamp_ms: s.timestamp_ms,
            }
        })
        .collect();

    let mut reader = Reader::new(settings, Metrics::new(), Filters::Saved);
    let ways = settings.ingest.decode_threads;
    assert_eq!(reader.ways(), ways);
    let mut batch = Batch::default();
    reader.read_all(&msgs, &mut batch);
    let counted: Vec<(i32, i64, u64)> = batch
        .counted
        .iter()
        .map(|c| {
            let p = &batch.partitions[c.source as usize];
            (p.id.partition(), c.offset, c.units.to_bits())
        })
        .collect();
    let dead: Vec<(i32, i64, String)> = batch
        .dead
        .iter()
        .map(|d| (d.partition, d.offset, d.reason.clone()))
        .collect();

    // One message at a time, each partition's filter judging in order.
    let ingest = &settings.ingest;
    let decoder = Decoder::new(
        ingest.max_message_bytes,
        ingest.max_clock_skew.as_millis() as i64,
    )
    .with_sites(Sites::from_settings(settings));
    let limits = reader.limits;
    let mut filters: HashMap<i32, Filter> = HashMap::new();
    let (mut want_counted, mut want_dead) = (Vec::new(), Vec::new());
    let mut want_filtered: HashMap<(&str, &str), u64> = HashMap::new();
    for m in &msgs {
        let f = filters
            .entry(m.partition)
            .or_insert_with(|| Filter::new(limits, filter::random_seed()));
        let reference = m
            .timestamp_ms
            .or_else(|| f.clock())
            .expect("each partition's first message has a timestamp");
        let info = MessageInfo {
            encoding: Encoding::Json,
            key: None,
            timestamp_ms: m.timestamp_ms,
            lifecycle_topic: false,
            now_ms: reference,
        };
        match decoder.decode(m.payload, &info) {
            Err(e) => want_dead.push((m.partition, m.offset, e.to_string())),
            Ok(Event::Behaviour(b)) => match f.judge(&b, reference) {
                Verdict::Count(units) => {
                    want_counted.push((m.partition, m.offset, units.to_bits()))
                }
                v => {
                    *want_filtered
                        .entry((b.kind.as_str(), v.outcome().as_str()))
                        .or_default() += 1
                }
            },
            Ok(other) => panic!("only behaviour events are sent: {other:?}"),
        }
    }
    // The traffic has duplicates, bots and invalid messages besides what
    // counts, and the followers of a moved clock count.
    assert!(
        (200..500).contains(&want_counted.len()),
        "{}",
        want_counted.len()
    );
    assert!(!want_dead.is_empty());
    assert!(
        want_dead.iter().all(|d| d.2.starts_with("malformed")),
        "{want_dead:?}"
    );
    assert_eq!(
        differences(&counted, &want_counted),
        "",
        "{ways} threads: counted"
    );
    assert_eq!(
        differences(&dead, &want_dead),
        "",
        "{ways} threads: dead-lettered"
    );
    // What was not counted is in `events_total` by type and reason (added
    // once per read), as judged one at a time.
    assert!(want_filtered[&("page_view", "duplicate")] > 0);
    assert!(want_filtered[&("share", "bot")] > 0);
    for kind in EventType::ALL {
        for outcome in [
            metrics::Outcome::Bot,
            metrics::Outcome::Stale,
            metrics::Outcome::Duplicate,
        ] {
            let key = (kind.as_str(), outcome.as_str());
            assert_eq!(
                reader
                    .metrics
                    .events
                    .with_label_values(&[key.0, key.1])
                    .get(),
                want_filtered.get(&key).copied().unwrap_or(0),
                "{ways} threads: {key:?}"
            );
        }
    }
}

/// What one list has and the other has not, both ways (empty when they
/// hold the same).
fn differences<T: Ord + Clone + std::fmt::Debug>(got: &[T], want: &[T]) -> String {
    use std::collections::BTreeSet;
    let (got, want): (BTreeSet<T>, BTreeSet<T>) = (
        got.iter().cloned().collect(),
        want.iter().cloned().collect(),
    );
    let extra: Vec<_> = got.difference(&want).take(5).collect();
    let missing: Vec<_> = want.difference(&got).take(5).collect();
    if extra.is_empty() && missing.is_empty() {
        String::new()
    } else {
        format!("extra {extra:?}, missing {missing:?}")
    }
}
