//! Step one of the write path: decode → validate → filter, one message at a
//! time, into the [`Batch`] being read.
//!
//! Each partition has its own duplicate [`Filter`].
//! With a durable store the filter is restored from the store when the
//! partition is assigned (the consumer keeps the partition paused until
//! then), messages the saved state already covers are skipped, and
//! [`Reader::seal`] attaches each partition's delta to the batch so that it
//! is saved once the batch is applied (DESIGN §4).

use crate::config::Settings;
use crate::event::decode::{Decoder, MessageInfo};
use crate::event::filter::{self, Corrupt, Filter, Limits, Verdict};
use crate::event::{Encoding, Event, Invalid};
use crate::metrics::{Metrics, UNKNOWN_TYPE};
use crate::now_ms;
use crate::store::{FilterWrite, SavedFilter};

use super::batch::{find, Batch, Counted, DeadLetter, Incoming};

/// One partition's filter.
struct Partition {
    topic: String,
    partition: i32,
    filter: Filter,
    /// Every message up to this offset is applied: skip it.
    covered: Option<i64>,
    /// The saved state's fence, as this reader last wrote or read it.
    saved: Option<i64>,
    /// Save the whole state with the next batch (the saved one is unusable).
    snapshot: bool,
}

/// Decodes, validates and filters messages.
pub(super) struct Reader {
    decoder: Decoder,
    limits: Limits,
    metrics: Metrics,
    /// The article-lifecycle topic.
    articles_topic: String,
    /// Save filter deltas with each batch (a durable store).
    durable: bool,
    /// Partitions are restored before they are read (the consumer does
    /// this on assignment; the in-memory pipeline starts from nothing).
    restores: bool,
    partitions: Vec<Partition>,
}

impl Reader {
    pub fn new(settings: &Settings, metrics: Metrics, durable: bool, restores: bool) -> Reader {
        let ingest = &settings.ingest;
        Reader {
            decoder: Decoder::new(
                ingest.max_message_bytes,
                ingest.max_clock_skew.as_millis() as i64,
            ),
            limits: Limits {
                max_age_ms: ingest.max_event_age.as_millis() as i64,
                window_ms: ingest.dedupe_window.as_millis() as i64,
            },
            metrics,
            articles_topic: settings.kafka.topics.articles.clone(),
            durable,
            restores,
            partitions: Vec::new(),
        }
    }

    /// Takes over a partition from its saved state. A state that cannot be
    /// read is logged and replaced: the partition starts with an empty
    /// filter (still skipping what the saved fence covers, which every group
    /// holds) and saves a snapshot with its next batch.
    pub fn restore(&mut self, topic: &str, partition: i32, saved: SavedFilter) {
        let seed = saved.seed.as_deref().and_then(filter::decode_seed);
        let restored = match (saved.unreadable, seed) {
            (true, _) => Err(Corrupt("unreadable fence")),
            (false, None) if saved.seed.is_some() => Err(Corrupt("seed")),
            (false, seed) => Filter::restore(
                self.limits,
                seed.unwrap_or_else(filter::random_seed),
                &saved.deltas,
            ),
        };
        let (filter, snapshot) = match restored {
            Ok(f) => (f, false),
            Err(e) => {
                tracing::error!(error = %e, topic, partition, "saved duplicate filter unreadable; starting empty and saving a new one");
                (Filter::new(self.limits, filter::random_seed()), true)
            }
        };
        self.forget(&[(topic.to_string(), partition)]);
        self.partitions.push(Partition {
            topic: topic.to_string(),
            partition,
            filter,
            covered: saved.fence,
            saved: saved.fence,
            snapshot,
        });
    }

    /// The next batch saves the whole state of these partitions
    /// (`topic/partition`): their saved state refused a delta.
    pub fn force_snapshot(&mut self, sources: &[String]) {
        for p in &mut self.partitions {
            if sources
                .iter()
                .any(|s| *s == format!("{}/{}", p.topic, p.partition))
            {
                p.snapshot = true;
            }
        }
    }

    /// Forgets the filters of partitions this consumer no longer owns.
    pub fn forget(&mut self, partitions: &[(String, i32)]) {
        self.partitions.retain(|p| {
            !partitions
                .iter()
                .any(|(t, n)| *t == p.topic && *n == p.partition)
        });
    }

    fn partition(&mut self, topic: &str, partition: i32) -> &mut Partition {
        let i = match find(&self.partitions, topic, partition, |p| {
            (&p.topic, p.partition)
        }) {
            Some(i) => i,
            None => {
                if self.restores {
                    tracing::error!(
                        topic,
                        partition,
                        "a partition was read before its duplicate filter was restored"
                    );
                }
                self.partitions.push(Partition {
                    topic: topic.to_string(),
                    partition,
                    filter: if self.durable {
                        Filter::new(self.limits, filter::random_seed())
                    } else {
                        Filter::unsaved(self.limits)
                    },
                    covered: None,
                    saved: None,
                    snapshot: false,
                });
                self.partitions.len() - 1
            }
        };
        &mut self.partitions[i]
    }

    /// Decodes one message into `batch`.
    pub fn read(&mut self, m: Incoming<'_>, batch: &mut Batch) {
        let topic = m.topic;
        batch.messages += 1;
        let offset = m.offset;
        let source = batch.note(topic, m.partition, offset);
        let lifecycle_topic = topic == self.articles_topic;
        let p = self.partition(topic, m.partition);
        if p.covered.is_some_and(|c| offset <= c) {
            return;
        }
        // The time the message is judged at: when it was produced, so that
        // a replay judges it the same way (for the rare message without a
        // timestamp, the partition's clock; the wall clock for a first one).
        let reference = m
            .timestamp_ms
            .filter(|t| *t >= 0)
            .or_else(|| p.filter.clock())
            .unwrap_or_else(now_ms);
        let info = MessageInfo {
            encoding: m
                .content_type
                .and_then(Encoding::from_content_type)
                .unwrap_or(Encoding::Json),
            key: m.key,
            timestamp_ms: m.timestamp_ms,
            lifecycle_topic,
            now_ms: reference,
        };
        match self.decoder.decode(m.payload, &info) {
            Err(invalid) => {
                self.count_invalid(&invalid);
                batch.dead.push(DeadLetter {
                    key: m.key.map(<[u8]>::to_vec),
                    payload: m.payload.to_vec(),
                    reason: invalid.to_string(),
                    topic: topic.to_string(),
                    partition: m.partition,
                    offset,
                });
            }
            Ok(Event::Behaviour(b)) => {
                let verdict = self
                    .partition(topic, m.partition)
                    .filter
                    .judge(&b, reference);
                match verdict {
                    Verdict::Count(units) => {
                        let place =
                            batch
                                .places
                                .intern(&b.article_id, b.section.as_deref(), &b.tags);
                        batch.counted.push(Counted {
                            offset,
                            at_ms: b.occurred_at_ms,
                            units,
                            place,
                            source,
                            kind: b.kind,
                        });
                    }
                    v => self
                        .metrics
                        .events
                        .with_label_values(&[b.kind.as_str(), v.outcome()])
                        .inc(),
                }
            }
            Ok(Event::Published(a)) => batch.lifecycle.push(Event::Published(a)),
            Ok(Event::Unpublished { article_id }) => {
                batch.lifecycle.push(Event::Unpublished { article_id })
            }
        }
    }

    /// Ends a batch: with a durable store, attaches the delta of every
    /// partition it read, to be saved once it is applied.
    pub fn seal(&mut self, batch: &mut Batch) {
        if !self.durable {
            return;
        }
        let mut writes = Vec::new();
        for (read, highest) in batch.read_partitions() {
            let Some(i) = find(&self.partitions, &read.topic, read.partition, |p| {
                (&p.topic, p.partition)
            }) else {
                continue;
            };
            let p = &mut self.partitions[i];
            if p.saved.is_some_and(|s| s >= highest) {
                continue;
            }
            writes.push(FilterWrite {
                source: read.source.to_string(),
                expected: p.saved,
                new: highest,
                seed: filter::encode_seed(&p.filter.seed()),
                delta: if std::mem::take(&mut p.snapshot) {
                    p.filter.snapshot()
                } else {
                    p.filter.delta()
                },
            });
            p.saved = Some(highest);
        }
        batch.filters.extend(writes);
    }

    fn count_invalid(&self, invalid: &Invalid) {
        self.metrics
            .invalid
            .with_label_values(&[invalid.code()])
            .inc();
        self.metrics
            .events
            .with_label_values(&[UNKNOWN_TYPE, "invalid"])
            .inc();
    }
}
