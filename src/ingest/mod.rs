//! The consumer: Kafka → decode → validate → filter → aggregate → store → commit.
//!
//! Delivery guarantee: at-least-once. Offsets are committed only after the
//! store acknowledged the flush holding every message up to them, and after
//! every invalid message among them was acknowledged by the dead-letter
//! topic. A crash between the store's acknowledgement and the commit replays
//! that flush (see DESIGN §4 for the fences that will make this exact).
//!
//! With the `memory` store the process holds the only copy of the state, so
//! the consumer commits nothing, joins no group and reads every partition of
//! both topics from the beginning: Kafka is the durable log.

mod kafka;

pub use kafka::ConsumerState;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use crate::now_ms;

use crate::config::{Backend, Settings};
use crate::event::decode::{Decoder, MessageInfo};
use crate::event::filter::{Filters, Verdict};
use crate::event::{ArticleMeta, Behaviour, Encoding, Event, EventType, Invalid};
use crate::metrics::{Metrics, UNKNOWN_TYPE};
use crate::scoring::{Aggregate, Profiles};
use crate::store::{ArticleState, Store};

/// How long a consumer keeps article metadata it looked up or saw published.
const METADATA_CACHE_TTL: Duration = Duration::from_secs(30);
/// Most articles in the consumer's metadata cache.
const METADATA_CACHE_MAX: usize = 100_000;
/// First and longest wait between retries of a failed flush.
const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// A running consumer, built and ready to run.
pub struct Ingest {
    consumer: StreamConsumer<kafka::Context>,
    worker: Worker,
}

/// Everything the consumer loop changes, apart from the consumer itself
/// (messages borrow the consumer while they are read).
struct Worker {
    producer: FutureProducer,
    store: Arc<dyn Store>,
    metrics: Metrics,
    settings: Arc<Settings>,
    profiles: Profiles,
    decoder: Decoder,
    filters: Filters,
    commits: bool,
    meta_cache: HashMap<String, (Instant, Known)>,
}

/// What the consumer knows of an article, for events that lack its section or tags.
enum Known {
    /// No metadata: ranked overall only.
    Unknown,
    /// Published in this section with these tags.
    Live(Option<String>, Vec<String>),
    /// Unpublished: its events are not counted.
    Withdrawn,
}

impl From<ArticleState> for Known {
    fn from(s: ArticleState) -> Known {
        match s {
            ArticleState::Unknown => Known::Unknown,
            ArticleState::Live(a) => Known::Live(a.section, a.tags),
            ArticleState::Withdrawn => Known::Withdrawn,
        }
    }
}

/// An invalid message on its way to the dead-letter topic.
struct DeadLetter {
    key: Option<Vec<u8>>,
    payload: Vec<u8>,
    reason: String,
    topic: String,
    partition: i32,
    offset: i64,
}

/// A counted behaviour event waiting for the flush.
struct Counted {
    kind: EventType,
    article_id: String,
    section: Option<String>,
    tags: Vec<String>,
    at_ms: i64,
    units: f64,
}

/// Everything read since the last flush.
#[derive(Default)]
struct Pending {
    messages: usize,
    counted: Vec<Counted>,
    lifecycle: Vec<Event>,
    dead: Vec<DeadLetter>,
    /// Highest offset read per (topic, partition).
    offsets: HashMap<(String, i32), i64>,
}

impl Ingest {
    /// Creates the clients and subscribes (or, with the memory store, assigns
    /// every partition from the beginning). Nothing is read until [`Ingest::run`].
    pub fn build(
        settings: Arc<Settings>,
        store: Arc<dyn Store>,
        metrics: Metrics,
        profiles: Profiles,
        state: ConsumerState,
    ) -> anyhow::Result<Ingest> {
        let commits = settings.store.backend == Backend::Redis;
        let topics = [
            settings.kafka.topics.events.as_str(),
            settings.kafka.topics.articles.as_str(),
        ];
        let context = kafka::Context {
            metrics: metrics.clone(),
            state: state.clone(),
        };
        let consumer: StreamConsumer<kafka::Context> =
            kafka::consumer_config(&settings.kafka, commits)
                .create_with_context(context)
                .context("creating the Kafka consumer")?;
        if commits {
            consumer.subscribe(&topics).context("subscribing")?;
        } else {
            let metadata = consumer
                .fetch_metadata(None, Duration::from_secs(10))
                .context("fetching topic metadata")?;
            let mut tpl = TopicPartitionList::new();
            for topic in metadata
                .topics()
                .iter()
                .filter(|t| topics.contains(&t.name()))
            {
                for p in topic.partitions() {
                    tpl.add_partition_offset(topic.name(), p.id(), Offset::Beginning)?;
                }
            }
            anyhow::ensure!(tpl.count() > 0, "none of the topics {topics:?} exists");
            consumer.assign(&tpl).context("assigning partitions")?;
            state.set_assigned(
                tpl.elements()
                    .iter()
                    .map(|e| (e.topic().to_string(), e.partition())),
            );
            metrics.partitions_assigned.set(tpl.count() as i64);
        }
        let producer: FutureProducer = kafka::producer_config(&settings.kafka)
            .create()
            .context("creating the dead-letter producer")?;
        let ingest = &settings.ingest;
        let worker = Worker {
            producer,
            store,
            metrics,
            decoder: Decoder::new(
                ingest.max_message_bytes,
                ingest.max_clock_skew.as_millis() as i64,
            ),
            filters: Filters::new(
                ingest.max_event_age.as_millis() as i64,
                ingest.dedupe_window.as_millis() as i64,
            ),
            settings,
            profiles,
            commits,
            meta_cache: HashMap::new(),
        };
        Ok(Ingest { consumer, worker })
    }

    /// Consumes until `shutdown`, then flushes, commits and leaves the group.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Ingest {
            consumer,
            mut worker,
        } = self;
        let mut pending = Pending::default();
        let mut tick = tokio::time::interval(worker.settings.ingest.flush_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let max_batch = worker.settings.ingest.max_batch_events;
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {
                    if pending.messages > 0 {
                        worker.flush(&consumer, &mut pending, &shutdown).await;
                    }
                }
                msg = consumer.recv() => match msg {
                    Ok(m) => {
                        worker.read(&m, &mut pending);
                        drop(m);
                        if pending.messages >= max_batch {
                            worker.flush(&consumer, &mut pending, &shutdown).await;
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "Kafka consumer error"),
                },
            }
        }
        if pending.messages > 0 {
            // Shutting down: one last flush, not retried forever.
            let done = CancellationToken::new();
            let deadline = Duration::from_secs(10);
            let _ =
                tokio::time::timeout(deadline, worker.flush(&consumer, &mut pending, &done)).await;
        }
        consumer.unsubscribe();
        tracing::info!("consumer stopped");
        Ok(())
    }
}

impl Worker {
    /// Decodes one message into `pending`.
    fn read(&mut self, m: &BorrowedMessage<'_>, pending: &mut Pending) {
        let topic = m.topic();
        pending.messages += 1;
        let key = (topic.to_string(), m.partition());
        let offset = m.offset();
        pending
            .offsets
            .entry(key)
            .and_modify(|o| *o = (*o).max(offset))
            .or_insert(offset);
        let lifecycle_topic = topic == self.settings.kafka.topics.articles;
        let encoding = m
            .headers()
            .and_then(|hs| {
                hs.iter()
                    .find(|h| h.key.eq_ignore_ascii_case("content-type"))
                    .and_then(|h| h.value.and_then(Encoding::from_content_type))
            })
            .unwrap_or(Encoding::Json);
        let now = now_ms();
        let info = MessageInfo {
            encoding,
            key: m.key(),
            timestamp_ms: m.timestamp().to_millis(),
            lifecycle_topic,
            now_ms: now,
        };
        let payload = m.payload().unwrap_or_default();
        match self.decoder.decode(payload, &info) {
            Err(invalid) => {
                self.count_invalid(&invalid);
                pending.dead.push(DeadLetter {
                    key: m.key().map(<[u8]>::to_vec),
                    payload: payload.to_vec(),
                    reason: invalid.to_string(),
                    topic: topic.to_string(),
                    partition: m.partition(),
                    offset,
                });
            }
            Ok(Event::Behaviour(b)) => {
                let verdict = self.filters.judge(&b, now);
                match verdict {
                    Verdict::Count(units) => pending.counted.push(counted(b, units)),
                    v => self
                        .metrics
                        .events
                        .with_label_values(&[b.kind.as_str(), v.outcome()])
                        .inc(),
                }
            }
            Ok(e) => pending.lifecycle.push(e),
        }
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

    /// Writes `pending` and commits it, retrying with backoff until it
    /// succeeds or `stop` is cancelled (then `pending` is kept).
    async fn flush(
        &mut self,
        consumer: &StreamConsumer<kafka::Context>,
        pending: &mut Pending,
        stop: &CancellationToken,
    ) {
        let started = Instant::now();
        let mut backoff = RETRY_MIN;
        loop {
            match self.try_flush(consumer, pending).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), retry_in = ?backoff, "flush failed");
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(RETRY_MAX);
                }
            }
        }
        self.metrics
            .flush_duration
            .observe(started.elapsed().as_secs_f64());
        self.metrics.flush_size.observe(pending.messages as f64);
        *pending = Pending::default();
    }

    async fn try_flush(
        &mut self,
        consumer: &StreamConsumer<kafka::Context>,
        pending: &mut Pending,
    ) -> anyhow::Result<()> {
        // 1. Invalid messages reach the dead-letter topic before their offsets are committed.
        self.send_dead_letters(pending).await?;
        // 2. Article lifecycle, so events of this flush see fresh metadata.
        self.apply_lifecycle(pending).await?;
        // 3. Scores.
        let (aggregate, withdrawn) = self.aggregate(pending).await?;
        if !aggregate.is_empty() {
            let m = &self.metrics;
            m.time_store("apply", self.store.apply(&aggregate)).await?;
            let applied = now_ms();
            let h = m.event_to_visible.local();
            for c in &pending.counted {
                h.observe(((applied - c.at_ms) as f64 / 1000.0).max(0.0));
            }
            h.flush();
        }
        let m = &self.metrics;
        for kind in EventType::ALL {
            let applied = aggregate.counted(kind);
            m.events
                .with_label_values(&[kind.as_str(), "applied"])
                .inc_by(applied);
            m.events
                .with_label_values(&[kind.as_str(), "unpublished"])
                .inc_by(withdrawn[kind.index()]);
        }
        pending.counted.clear();
        // 4. Offsets, as a resume hint for the next owner of each partition.
        if self.commits && !pending.offsets.is_empty() {
            let mut tpl = TopicPartitionList::new();
            for ((topic, partition), offset) in &pending.offsets {
                tpl.add_partition_offset(topic, *partition, Offset::Offset(offset + 1))?;
            }
            if let Err(e) = consumer.commit(&tpl, CommitMode::Async) {
                // Not fatal: the store holds the data; the next commit covers these offsets.
                tracing::warn!(error = %e, "offset commit failed");
            }
        }
        Ok(())
    }

    async fn send_dead_letters(&mut self, pending: &mut Pending) -> anyhow::Result<()> {
        if pending.dead.is_empty() {
            return Ok(());
        }
        let topic = &self.settings.kafka.topics.dead_letter;
        let sends = pending.dead.iter().map(|d| {
            let partition = d.partition.to_string();
            let offset = d.offset.to_string();
            let headers = OwnedHeaders::new()
                .insert(Header {
                    key: "x-error",
                    value: Some(d.reason.as_str()),
                })
                .insert(Header {
                    key: "x-source-topic",
                    value: Some(d.topic.as_str()),
                })
                .insert(Header {
                    key: "x-source-partition",
                    value: Some(partition.as_str()),
                })
                .insert(Header {
                    key: "x-source-offset",
                    value: Some(offset.as_str()),
                });
            let mut record = FutureRecord::<[u8], [u8]>::to(topic)
                .payload(&d.payload)
                .headers(headers);
            if let Some(k) = &d.key {
                record = record.key(k);
            }
            self.producer.send(record, Duration::from_secs(30))
        });
        let results = futures::future::join_all(sends).await;
        let mut failed = Vec::new();
        for (d, r) in std::mem::take(&mut pending.dead).into_iter().zip(results) {
            match r {
                Ok(_) => self
                    .metrics
                    .events
                    .with_label_values(&[UNKNOWN_TYPE, "dead_lettered"])
                    .inc(),
                Err((e, _)) => {
                    tracing::warn!(error = %e, "dead-letter delivery failed");
                    failed.push(d);
                }
            }
        }
        if !failed.is_empty() {
            let n = failed.len();
            pending.dead = failed;
            anyhow::bail!("{n} dead letters not delivered");
        }
        Ok(())
    }

    async fn apply_lifecycle(&mut self, pending: &mut Pending) -> anyhow::Result<()> {
        if pending.lifecycle.is_empty() {
            return Ok(());
        }
        // The last event per article wins.
        let mut last: HashMap<&str, &Event> = HashMap::new();
        for e in &pending.lifecycle {
            match e {
                Event::Published(a) => last.insert(&a.article_id, e),
                Event::Unpublished { article_id } => last.insert(article_id, e),
                Event::Behaviour(_) => None,
            };
        }
        let mut published: Vec<ArticleMeta> = Vec::new();
        let mut removed: Vec<String> = Vec::new();
        for e in last.values() {
            match e {
                Event::Published(a) => published.push(a.clone()),
                Event::Unpublished { article_id } => removed.push(article_id.clone()),
                Event::Behaviour(_) => {}
            }
        }
        let m = &self.metrics;
        m.time_store("publish", self.store.publish(&published))
            .await?;
        m.time_store("unpublish", self.store.unpublish(&removed))
            .await?;
        let now = Instant::now();
        for a in published {
            self.meta_cache
                .insert(a.article_id.clone(), (now, ArticleState::Live(a).into()));
        }
        for id in removed {
            self.meta_cache.insert(id, (now, Known::Withdrawn));
        }
        pending.lifecycle.clear();
        Ok(())
    }

    /// Fills in sections and tags from metadata, then folds the counted events.
    /// Also returns, per event type, how many events were of withdrawn articles.
    async fn aggregate(&mut self, pending: &Pending) -> anyhow::Result<(Aggregate, [u64; 3])> {
        let now = Instant::now();
        if self.meta_cache.len() > METADATA_CACHE_MAX {
            self.meta_cache.clear();
        }
        // Every event's article is looked up (cached): a withdrawn article's
        // events are not counted even when they carry section and tags.
        let mut missing: Vec<String> = pending
            .counted
            .iter()
            .filter(|c| {
                self.meta_cache
                    .get(&c.article_id)
                    .is_none_or(|(at, _)| now.duration_since(*at) > METADATA_CACHE_TTL)
            })
            .map(|c| c.article_id.clone())
            .collect();
        missing.sort_unstable();
        missing.dedup();
        if !missing.is_empty() {
            let found = self
                .metrics
                .time_store("articles", self.store.articles(&missing))
                .await?;
            for (id, state) in missing.into_iter().zip(found) {
                self.meta_cache.insert(id, (now, state.into()));
            }
        }
        let mut agg = Aggregate::new(self.profiles.clone(), now_ms());
        let mut withdrawn = [0u64; 3];
        for c in &pending.counted {
            let (known_section, known_tags) = match self.meta_cache.get(&c.article_id) {
                Some((_, Known::Withdrawn)) => {
                    withdrawn[c.kind.index()] += 1;
                    continue;
                }
                Some((_, Known::Live(s, t))) => (s.as_deref(), t.as_slice()),
                _ => (None, &[][..]),
            };
            let section = c.section.as_deref().or(known_section);
            let tags = if c.tags.is_empty() {
                known_tags
            } else {
                &c.tags
            };
            agg.add(c.kind, &c.article_id, section, tags, c.at_ms, c.units);
        }
        Ok((agg, withdrawn))
    }
}

fn counted(b: Behaviour, units: f64) -> Counted {
    Counted {
        kind: b.kind,
        article_id: b.article_id,
        section: b.section,
        tags: b.tags,
        at_ms: b.occurred_at_ms,
        units,
    }
}
