//! Step one of the write path: decode → validate → filter into the
//! [`Batch`] being read, for what the consumer has fetched at once, on
//! `ingest.decode_threads` threads ([`Reader::read_all`], each taking a
//! share of the partitions: [`share`]). A JSON event's texts stay borrowed
//! from its message until the batch interns its place, so reading an event
//! allocates nothing.
//!
//! Each partition has its own duplicate [`Filter`].
//! With a durable store the filter is restored from the store when the
//! partition is assigned (the consumer keeps the partition paused until
//! then), messages the saved state already covers are skipped, and
//! [`Reader::seal`] attaches each partition's delta to the batch so that it
//! is saved once the batch is applied (DESIGN §4).

use rdkafka::message::{BorrowedMessage, Headers, Message};

use crate::config::Settings;
use crate::event::decode::Decoder;
use crate::event::filter::{self, Corrupt, Filter, Limits, Verdict};
use crate::event::{Encoding, Event, EventType, Invalid, PerType, Text};
use crate::metrics::{self, Metrics, UNKNOWN_TYPE};
use crate::store::{FilterWrite, SavedFilter};

use super::batch::{find, Batch, Counted, DeadLetter, DEAD_LETTER_MAX_BYTES};
use super::partition::PartitionId;

mod share;

use share::{decode_threads, Judge, Share};

/// Fewest messages on each side of the split for decoding on several
/// threads: below it, handing a side over costs more than it saves.
const PARALLEL_MIN: usize = 64;

/// How many messages ahead of the one read its payload is asked for.
/// librdkafka's fetch thread wrote the payloads, most of them long enough
/// before they are read to have left the caches: read in turn, each
/// message's first byte waited for memory in turn (4% of the service's
/// CPU per event, at one instruction). Asked for ahead, the waits overlap.
const PREFETCH_AHEAD: usize = 8;

/// Most bytes of a payload asked for ahead: what an event takes (a
/// larger message is read in order, which the hardware sees coming).
const PREFETCH_BYTES: usize = 512;

/// Asks for the first [`PREFETCH_BYTES`] of `bytes` to be brought into
/// the caches, without waiting for them. A hint: it reads nothing and
/// cannot fault.
fn prefetch(bytes: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    for line in bytes[..bytes.len().min(PREFETCH_BYTES)].chunks(64) {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        // SAFETY: SSE, which `_mm_prefetch` needs, is part of x86_64; a
        // prefetch dereferences nothing, and the address is `bytes`'s.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(line.as_ptr().cast()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = bytes;
}

/// One value per side of the split, inline for up to 8 sides.
type PerSide<T> = smallvec::SmallVec<[T; 8]>;

/// One message as the pipeline reads it: from Kafka, or from memory in
/// benchmarks.
#[derive(Debug, Clone, Copy)]
pub struct Incoming<'a> {
    /// Topic it was read from.
    pub topic: &'a str,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Key, if any.
    pub key: Option<&'a [u8]>,
    /// Payload (empty for a tombstone).
    pub payload: &'a [u8],
    /// Value of the `content-type` header, if any (read from Kafka only
    /// when it decides the encoding: [`Encoding::header_decides`]).
    pub content_type: Option<&'a [u8]>,
    /// Kafka timestamp, epoch milliseconds.
    pub timestamp_ms: Option<i64>,
}

impl<'a> Incoming<'a> {
    /// The fields of a Kafka message, borrowed.
    fn from_kafka(m: &'a BorrowedMessage<'a>) -> Incoming<'a> {
        let payload = m.payload().unwrap_or_default();
        Incoming {
            topic: m.topic(),
            partition: m.partition(),
            offset: m.offset(),
            key: m.key(),
            payload,
            // Only when it decides the encoding: librdkafka parses a
            // message's headers on first access (a buffer allocated and
            // freed even for none), 7% of the service's CPU per event.
            content_type: Encoding::header_decides(payload)
                .then(|| m.headers())
                .flatten()
                .and_then(|hs| {
                    hs.iter()
                        .find(|h| h.key.eq_ignore_ascii_case("content-type"))
                        .and_then(|h| h.value)
                }),
            timestamp_ms: m.timestamp().to_millis(),
        }
    }
}

/// What became of one message. Kept small (48 bytes; a whole event takes
/// 224): a read makes one per message and moves it twice.
enum Outcome<'a> {
    /// Applied before: the partition's saved state covers it.
    Covered,
    Invalid(Invalid),
    /// Counts, with these units: what the batch keeps of the event (its
    /// section and tags come from the catalogue, never from the event).
    Counted {
        article_id: Text<'a>,
        at_ms: i64,
        kind: EventType,
        units: f64,
    },
    /// Valid, and not counted for this reason.
    Filtered(EventType, Verdict),
    /// An article's publication or withdrawal (rare: boxed).
    Lifecycle(Box<Event<'static>>),
}

const _: () = assert!(std::mem::size_of::<Outcome<'static>>() <= 48);

/// The valid events of one read that were not counted, by type and
/// reason: added to `events_total` once per read, not per event (a
/// labelled counter's lookup hashes its labels and takes a lock).
#[derive(Default)]
struct Filtered(PerType<[u64; Filtered::REASONS.len()]>);

impl Filtered {
    const REASONS: [Verdict; 3] = [Verdict::Bot, Verdict::Stale, Verdict::Duplicate];

    fn note(&mut self, kind: EventType, verdict: Verdict) {
        if let Some(r) = Filtered::REASONS.iter().position(|v| *v == verdict) {
            self.0[kind.index()][r] += 1;
        }
    }

    fn add_to(&self, metrics: &Metrics) {
        for (kind, counts) in EventType::ALL.iter().zip(&self.0) {
            for (verdict, n) in Filtered::REASONS.iter().zip(counts) {
                if *n > 0 {
                    metrics
                        .events
                        .with_label_values(&[kind.as_str(), verdict.outcome().as_str()])
                        .inc_by(*n);
                }
            }
        }
    }
}

/// One partition's filter.
struct Partition {
    id: PartitionId,
    filter: Filter,
    /// Every message up to this offset is applied: skip it.
    covered: Option<i64>,
    /// The saved state's fence, as this reader last wrote or read it.
    saved: Option<i64>,
    /// Save the whole state with the next batch (the saved one is unusable).
    snapshot: bool,
}

/// Where the reader's duplicate filters live besides the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Filters {
    /// Nowhere: the memory store rebuilds them from the topics.
    Unsaved,
    /// Saved with each batch; a partition's filter starts empty when first
    /// read (the in-process pipeline, the benchmark).
    Saved,
    /// Saved with each batch, and restored when the partition is assigned,
    /// before it is read (the consumer with a durable store).
    SavedAndRestored,
}

impl Filters {
    /// The consumer's: saved and restored with a durable store.
    pub fn of_consumer(durable: bool) -> Filters {
        if durable {
            Filters::SavedAndRestored
        } else {
            Filters::Unsaved
        }
    }
}

/// Decodes, validates and filters messages.
pub(super) struct Reader {
    decoder: Decoder,
    limits: Limits,
    metrics: Metrics,
    /// The article-lifecycle topic.
    articles_topic: String,
    /// Whether filter deltas are saved, and restored before a partition is read.
    filters: Filters,
    partitions: Vec<Partition>,
    /// Scratch of [`Reader::read_all`]: each message's partition, in the
    /// batch and among `partitions`.
    parts: Vec<(u16, usize)>,
    /// The threads that decode beside the caller's (`ingest.decode_threads`
    /// less one); none with one.
    threads: Option<rayon::ThreadPool>,
}

impl Reader {
    pub fn new(settings: &Settings, metrics: Metrics, filters: Filters) -> Reader {
        let ingest = &settings.ingest;
        Reader {
            decoder: Decoder::new(
                ingest.max_message_bytes,
                ingest.max_clock_skew.as_millis() as i64,
            )
            .with_sites(crate::site::Sites::from_settings(settings)),
            limits: Limits {
                max_age_ms: ingest.max_event_age.as_millis() as i64,
                window_ms: ingest.dedupe_window.as_millis() as i64,
                lateness_ms: ingest.dedupe_lateness.as_millis() as i64,
            },
            metrics,
            articles_topic: settings.kafka.topics.articles.clone(),
            filters,
            partitions: Vec::new(),
            parts: Vec::new(),
            threads: decode_threads(ingest.decode_threads),
        }
    }

    /// Takes over a partition from its saved state. A state that cannot be
    /// read is logged and replaced: the partition starts with an empty
    /// filter (still skipping what the saved fence covers, which every group
    /// holds) and saves a snapshot with its next batch.
    pub fn restore(&mut self, id: &PartitionId, saved: SavedFilter) {
        let (topic, partition) = (id.topic(), id.partition());
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
        self.forget(std::slice::from_ref(id));
        self.partitions.push(Partition {
            id: id.clone(),
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
            if sources.iter().any(|s| s == p.id.name()) {
                p.snapshot = true;
            }
        }
    }

    /// Forgets the filters of partitions this consumer no longer owns.
    pub fn forget(&mut self, partitions: &[PartitionId]) {
        self.partitions.retain(|p| !partitions.contains(&p.id));
    }

    /// The threads a read decodes on: the caller's and the pool's.
    fn ways(&self) -> usize {
        self.threads
            .as_ref()
            .map_or(1, |t| t.current_num_threads() + 1)
    }

    /// The position of a partition's filter, made if it has none yet.
    fn partition(&mut self, topic: &str, partition: i32) -> usize {
        if let Some(i) = find(&self.partitions, topic, partition, |p| &p.id) {
            return i;
        }
        if self.filters == Filters::SavedAndRestored {
            tracing::error!(
                topic,
                partition,
                "a partition was read before its duplicate filter was restored"
            );
        }
        self.partitions.push(Partition {
            id: PartitionId::new(topic, partition),
            filter: if self.filters != Filters::Unsaved {
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

    /// Reads what the consumer fetched at once into `batch`, in order (see
    /// [`Reader::read_all`]).
    pub fn read_fetched(&mut self, fetched: &[BorrowedMessage<'_>], batch: &mut Batch) {
        let incoming: Vec<_> = fetched
            .iter()
            .enumerate()
            .map(|(i, m)| {
                if let Some(ahead) = fetched.get(i + PREFETCH_AHEAD) {
                    prefetch(ahead.payload().unwrap_or_default());
                }
                Incoming::from_kafka(m)
            })
            .collect();
        self.read_all(&incoming, batch);
    }

    /// Reads messages into `batch`, in order. Decoding and filtering run on
    /// `ingest.decode_threads` threads (the caller's and the reader's pool)
    /// when every side of the split has enough messages: partitions are
    /// dealt round-robin to the sides, and each partition's messages are
    /// judged in order by one thread, so its filter's verdicts are those of
    /// reading one message at a time.
    pub fn read_all(&mut self, msgs: &[Incoming<'_>], batch: &mut Batch) {
        self.metrics.messages_read.inc_by(msgs.len() as u64);
        // 1. Each message's partition, in the batch and among the filters.
        // Per-side tables stay inline for up to 8 threads; `parts` is kept
        // between calls: a call allocates little beyond a list per side.
        let ways = self.ways();
        let mut sides: PerSide<usize> = smallvec::smallvec![0; ways];
        let mut parts = std::mem::take(&mut self.parts);
        parts.clear();
        for m in msgs {
            batch.messages += 1;
            let source = batch.note(m.topic, m.partition, m.offset);
            let part = self.partition(m.topic, m.partition);
            sides[part % ways] += 1;
            parts.push((source, part));
        }
        let ways = if sides.iter().all(|n| *n >= PARALLEL_MIN) {
            ways
        } else {
            1
        };
        // 2. Decoded and judged, each side by a thread of its own.
        let judge = &Judge {
            decoder: &self.decoder,
            articles_topic: &self.articles_topic,
            msgs,
            parts: &parts,
        };
        let n = self.partitions.len();
        let mut filters: PerSide<Vec<Option<&mut Partition>>> =
            (0..ways).map(|_| Vec::with_capacity(n)).collect();
        for (i, p) in self.partitions.iter_mut().enumerate() {
            let mut p = Some(p);
            for (side, f) in filters.iter_mut().enumerate() {
                f.push(if side == i % ways { p.take() } else { None });
            }
        }
        let mut outcomes: PerSide<Vec<Outcome<'_>>> = (0..ways).map(|_| Vec::new()).collect();
        match &self.threads {
            Some(threads) if ways > 1 => threads.in_place_scope(|s| {
                let mut sides = filters.into_iter().zip(outcomes.iter_mut()).enumerate();
                let (_, (here, out_here)) = sides.next().expect("several sides");
                for (side, (f, out)) in sides {
                    let share = Share {
                        index: side,
                        of: ways,
                    };
                    s.spawn(move |_| *out = judge.share(f, share));
                }
                *out_here = judge.share(here, Share { index: 0, of: ways });
            }),
            _ => {
                let only = filters.into_iter().next().expect("one side");
                outcomes[0] = judge.share(only, Share { index: 0, of: 1 });
            }
        }
        // 3. Into the batch, in the order read.
        let mut outcomes: PerSide<_> = outcomes.into_iter().map(Vec::into_iter).collect();
        let mut filtered = Filtered::default();
        for (m, &(source, part)) in msgs.iter().zip(&parts) {
            let outcome = outcomes[part % ways]
                .next()
                .expect("one outcome per message");
            self.take(m, source, outcome, batch, &mut filtered);
        }
        filtered.add_to(&self.metrics);
        self.parts = parts;
    }

    /// Puts one message's outcome into `batch`.
    fn take(
        &self,
        m: &Incoming<'_>,
        source: u16,
        outcome: Outcome<'_>,
        batch: &mut Batch,
        filtered: &mut Filtered,
    ) {
        match outcome {
            Outcome::Covered => {}
            Outcome::Invalid(invalid) => {
                self.count_invalid(&invalid);
                let kept = m.payload.len().min(DEAD_LETTER_MAX_BYTES);
                batch.dead.push(DeadLetter {
                    key: m
                        .key
                        .map(|k| k[..k.len().min(DEAD_LETTER_MAX_BYTES)].to_vec()),
                    payload: m.payload[..kept].to_vec(),
                    original_size: m.payload.len(),
                    reason: invalid.to_string(),
                    topic: m.topic.to_string(),
                    partition: m.partition,
                    offset: m.offset,
                });
            }
            Outcome::Counted {
                article_id,
                at_ms,
                kind,
                units,
            } => {
                // Only the article: its section and tags come from the
                // catalogue when the batch is placed, never from the event.
                let place = batch.places.intern(&article_id);
                batch.counted.push(Counted {
                    offset: m.offset,
                    at_ms,
                    units,
                    place,
                    source,
                    kind,
                });
            }
            Outcome::Filtered(kind, verdict) => filtered.note(kind, verdict),
            Outcome::Lifecycle(e) => batch.lifecycle.push(*e),
        }
    }

    /// Ends a batch: with a durable store, attaches the delta of every
    /// partition it read, to be saved once it is applied. Its flush starts
    /// here, with this as its `read` span (messages are decoded as they
    /// arrive, before the batch they go in is known).
    pub fn seal(&mut self, batch: &mut Batch) {
        let (messages, events) = (batch.messages, batch.counted.len());
        let _read = (messages > 0).then(|| {
            let flush = crate::telemetry::flush_span(messages, events);
            let read = tracing::debug_span!(
                target: crate::telemetry::SPANS,
                parent: &flush,
                "read",
                messages = messages as i64,
                events = events as i64
            );
            batch.trace = Some(flush);
            read.entered()
        });
        let held: usize = self.partitions.iter().map(|p| p.filter.tracked()).sum();
        self.metrics.dedupe_windows.set(held as i64);
        let bytes: usize = self.partitions.iter().map(|p| p.filter.bytes()).sum();
        self.metrics.dedupe_bytes.set(bytes as i64);
        if self.filters == Filters::Unsaved {
            return;
        }
        let mut writes = Vec::new();
        for read in &batch.partitions {
            let Some(highest) = read.highest else {
                continue;
            };
            let Some(i) = find(
                &self.partitions,
                read.id.topic(),
                read.id.partition(),
                |p| &p.id,
            ) else {
                continue;
            };
            let p = &mut self.partitions[i];
            if p.saved.is_some_and(|s| s >= highest) {
                continue;
            }
            writes.push(FilterWrite {
                source: read.id.name().to_string(),
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
            .with_label_values(&[UNKNOWN_TYPE, metrics::Outcome::Invalid.as_str()])
            .inc();
    }
}

#[cfg(test)]
mod tests;
