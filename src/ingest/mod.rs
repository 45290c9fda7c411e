//! The consumer: Kafka → decode → validate → filter → aggregate → store → commit.
//!
//! Delivery guarantee: effectively once. Every group of rankings keeps, per
//! Kafka partition, a fence: the last offset applied to it, checked and
//! advanced in the same atomic write as the increments (DESIGN §4). The
//! consumer reads a group's fences before its first write after an
//! assignment change, skips events at or below them, and when a write is
//! refused (another consumer moved the fence) or its outcome is unknown (the
//! connection dropped after the script was sent), it re-reads the fences and
//! tries again. So a crash, restart, rebalance or zombie never applies an
//! event twice, and since offsets are committed only after the store
//! acknowledged everything up to them (and invalid messages reached the
//! dead-letter topic), nothing is lost. Commits are a resume hint; fences are
//! the truth.
//!
//! Batches are written in order, one at a time, by a task of their own
//! while the next batch is read: a full batch waits for the write before
//! it. A batch that failed goes back in front of what was read since.
//!
//! When the store fails, the pending flush is kept and retried with capped
//! exponential backoff while the partitions are paused (memory stays
//! bounded and the consumer stays in its group); nothing is committed.
//!
//! With the `memory` store the process holds the only copy of the state, so
//! the consumer commits nothing, joins no group and reads every partition of
//! both topics from the beginning: Kafka is the durable log.

mod kafka;

pub use kafka::{client_config, ConsumerState};

use std::collections::{HashMap, HashSet};

use ahash::HashMap as AHashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::FutureExt as _;
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
use crate::scoring::{placement, Aggregate, Fence, Group, Profiles};
use crate::store::{ArticleState, Store};

/// How long a consumer keeps article metadata it looked up or saw published.
const METADATA_CACHE_TTL: Duration = Duration::from_secs(30);
/// Most articles in the consumer's metadata cache.
const METADATA_CACHE_MAX: usize = 100_000;
/// Most messages read in a row before the consumer loop looks at its timers
/// and signals again.
const DRAIN_MAX: usize = 1024;
/// First and longest wait between retries of a failed flush.
const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// A running consumer, built and ready to run.
pub struct Ingest {
    consumer: Arc<StreamConsumer<kafka::Context>>,
    reader: Reader,
    worker: Worker,
}

/// Decodes, validates and filters messages into a [`Pending`] batch. Kept
/// apart from the [`Worker`] so that the next batch is read while the
/// previous one is being written.
struct Reader {
    decoder: Decoder,
    filters: Filters,
    metrics: Metrics,
    /// The article-lifecycle topic.
    articles_topic: String,
}

/// Writes batches: metadata, fences, the store and offset commits.
struct Worker {
    /// The dead-letter producer (none in the in-memory benchmark pipeline).
    producer: Option<FutureProducer>,
    store: Arc<dyn Store>,
    metrics: Metrics,
    settings: Arc<Settings>,
    profiles: Profiles,
    commits: bool,
    meta_cache: AHashMap<String, (Instant, Known)>,
    /// Fences as last read or written, per group: `topic/partition` → offset.
    fences: AHashMap<Group, HashMap<String, i64>>,
    /// The assignment generation the fences were read under.
    fence_generation: u64,
    state: ConsumerState,
    /// Partitions paused while the store is failing.
    paused: bool,
    backoff: Duration,
    /// Asynchronous while running, synchronous for the last flush.
    commit_mode: CommitMode,
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

/// The consumer's processing without Kafka: decode → validate → filter →
/// aggregate → store, exactly as [`Ingest`] does it, fed from memory.
/// Benchmarks use it to measure what one replica can do in front of a real
/// cluster; invalid messages are counted and dropped (there is no
/// dead-letter topic).
pub struct Pipeline {
    reader: Reader,
    writer: Writer,
    pending: Pending,
    max_batch: usize,
    waited: Duration,
}

impl Pipeline {
    /// A pipeline writing to `store`.
    pub fn new(settings: Arc<Settings>, store: Arc<dyn Store>, metrics: Metrics) -> Pipeline {
        let profiles = crate::scoring::profiles(&settings.scoring);
        let state = ConsumerState::default();
        let max_batch = settings.ingest.max_batch_events;
        Pipeline {
            reader: Reader::new(&settings, metrics.clone()),
            writer: Writer::Idle(
                Box::new(Worker::new(
                    settings, store, metrics, profiles, state, None, false,
                )),
                Pending::default(),
            ),
            pending: Pending::default(),
            max_batch,
            waited: Duration::ZERO,
        }
    }

    /// Reads one message. As in the consumer, a batch of
    /// `ingest.max_batch_events` starts its write and the next batch is read
    /// meanwhile; this waits only when that one is full too.
    pub async fn read(&mut self, m: Incoming<'_>) -> anyhow::Result<()> {
        self.reader.read(m, &mut self.pending);
        if self.pending.messages.is_multiple_of(64) || self.pending.messages >= self.max_batch {
            self.writer.poll(&mut self.pending)?;
        }
        if self.pending.messages >= self.max_batch {
            if self.writer.busy() {
                let started = Instant::now();
                self.writer.finish(&mut self.pending).await?;
                self.waited += started.elapsed();
            }
            self.writer.start(&mut self.pending, None);
        }
        Ok(())
    }

    /// Time [`Pipeline::read`] spent waiting for a write to finish.
    pub fn waited(&self) -> Duration {
        self.waited
    }

    /// Writes everything read to the store (one attempt per batch).
    pub async fn flush(&mut self) -> anyhow::Result<()> {
        self.writer.finish(&mut self.pending).await?;
        if self.pending.messages > 0 {
            self.writer.start(&mut self.pending, None);
            self.writer.finish(&mut self.pending).await?;
        }
        Ok(())
    }
}

/// The result of writing one batch: the worker, the batch (emptied when it
/// was written) and when to try again if it was not.
type Written = (Box<Worker>, Pending, Option<tokio::time::Instant>);

/// The worker, idle or writing one batch (in a task of its own, so that
/// aggregation and the store's round trips proceed on another core) while
/// the next batch is read.
enum Writer {
    /// With the last batch written, emptied: its buffers are reused, so a
    /// batch does not grow (and fault in) fresh memory every time.
    Idle(Box<Worker>, Pending),
    Busy(tokio::task::JoinHandle<Written>),
    /// Only while switching between the two.
    Gone,
}

/// The outcome of a write task; a panic in it is the consumer's panic.
fn joined(r: Result<Written, tokio::task::JoinError>) -> Written {
    r.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}

impl Writer {
    fn busy(&self) -> bool {
        matches!(self, Writer::Busy(_))
    }

    /// Starts writing `pending` (which becomes empty); the worker must be idle.
    fn start(
        &mut self,
        pending: &mut Pending,
        consumer: Option<Arc<StreamConsumer<kafka::Context>>>,
    ) {
        let Writer::Idle(mut worker, spare) = std::mem::replace(self, Writer::Gone) else {
            panic!("a write started while another is in progress");
        };
        let mut batch = std::mem::replace(pending, spare);
        let write = tokio::spawn(async move {
            let retry = worker.flush(consumer.as_deref(), &mut batch).await;
            (worker, batch, retry)
        });
        *self = Writer::Busy(write);
    }

    /// Takes the result of a finished write. A batch that was not written
    /// goes back in front of what was read since, to be written with it.
    fn settle(
        &mut self,
        (worker, mut batch, retry): Written,
        pending: &mut Pending,
    ) -> Option<tokio::time::Instant> {
        if retry.is_some() {
            batch.absorb(std::mem::take(pending));
            *pending = batch;
            *self = Writer::Idle(worker, Pending::default());
        } else {
            *self = Writer::Idle(worker, batch);
        }
        retry
    }

    /// Settles the write in progress if it has finished, without waiting.
    /// Returns an error if it failed.
    fn poll(&mut self, pending: &mut Pending) -> anyhow::Result<()> {
        if let Writer::Busy(write) = self {
            if let Some(done) = write.now_or_never() {
                if self.settle(joined(done), pending).is_some() {
                    anyhow::bail!("the store refused the flush");
                }
            }
        }
        Ok(())
    }

    /// Waits for the write in progress, if any, and returns when to retry
    /// if it failed.
    async fn wait(&mut self, pending: &mut Pending) -> Option<tokio::time::Instant> {
        match self {
            Writer::Busy(write) => {
                let done = joined(write.await);
                self.settle(done, pending)
            }
            _ => None,
        }
    }

    /// Waits for the write in progress; an error if it failed.
    async fn finish(&mut self, pending: &mut Pending) -> anyhow::Result<()> {
        match self.wait(pending).await {
            None => Ok(()),
            Some(_) => anyhow::bail!("the store refused the flush"),
        }
    }

    /// The idle worker (after [`Writer::wait`]).
    fn worker(&mut self) -> &mut Worker {
        match self {
            Writer::Idle(w, _) => w,
            _ => panic!("the worker is writing"),
        }
    }
}

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
    /// Value of the `content-type` header, if any.
    pub content_type: Option<&'a [u8]>,
    /// Kafka timestamp, epoch milliseconds.
    pub timestamp_ms: Option<i64>,
}

impl<'a> Incoming<'a> {
    fn from_kafka(m: &'a BorrowedMessage<'a>) -> Incoming<'a> {
        Incoming {
            topic: m.topic(),
            partition: m.partition(),
            offset: m.offset(),
            key: m.key(),
            payload: m.payload().unwrap_or_default(),
            content_type: m.headers().and_then(|hs| {
                hs.iter()
                    .find(|h| h.key.eq_ignore_ascii_case("content-type"))
                    .and_then(|h| h.value)
            }),
            timestamp_ms: m.timestamp().to_millis(),
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
    /// `topic/partition` it came from.
    source: Arc<str>,
    offset: i64,
    kind: EventType,
    article_id: String,
    section: Option<String>,
    tags: Vec<String>,
    at_ms: i64,
    units: f64,
}

/// A partition read from since the last flush.
struct PartitionRead {
    topic: String,
    partition: i32,
    /// `topic/partition`, the fence name.
    source: Arc<str>,
    /// Highest offset read.
    highest: Option<i64>,
}

/// Everything read since the last flush.
#[derive(Default)]
struct Pending {
    messages: usize,
    counted: Vec<Counted>,
    lifecycle: Vec<Event>,
    dead: Vec<DeadLetter>,
    /// The partitions this consumer reads, found by a linear scan: a
    /// consumer holds a few dozen at most, and nothing is allocated per message.
    partitions: Vec<PartitionRead>,
}

impl Pending {
    /// Forgets what was flushed, keeping the partition names.
    /// Its buffers keep their capacity for the next batch.
    fn clear(&mut self) {
        self.partitions.iter_mut().for_each(|p| p.highest = None);
        self.messages = 0;
        self.counted.clear();
        self.lifecycle.clear();
        self.dead.clear();
    }

    /// Appends what was read after this batch.
    fn absorb(&mut self, later: Pending) {
        self.messages += later.messages;
        self.counted.extend(later.counted);
        self.lifecycle.extend(later.lifecycle);
        self.dead.extend(later.dead);
        for p in later.partitions {
            if let Some(highest) = p.highest {
                self.note(&p.topic, p.partition, highest);
            }
        }
    }

    /// Records offset `offset` of `topic/partition` and returns its name.
    fn note(&mut self, topic: &str, partition: i32, offset: i64) -> &Arc<str> {
        let i = match self
            .partitions
            .iter()
            .position(|p| p.partition == partition && p.topic == topic)
        {
            Some(i) => i,
            None => {
                self.partitions.push(PartitionRead {
                    topic: topic.to_string(),
                    partition,
                    source: format!("{topic}/{partition}").into(),
                    highest: None,
                });
                self.partitions.len() - 1
            }
        };
        let p = &mut self.partitions[i];
        p.highest = Some(p.highest.map_or(offset, |h| h.max(offset)));
        &p.source
    }

    /// Partitions read since the last flush, with their highest offset.
    fn read_partitions(&self) -> impl Iterator<Item = (&PartitionRead, i64)> {
        self.partitions
            .iter()
            .filter_map(|p| p.highest.map(|h| (p, h)))
    }

    /// Drops what was read from `partitions` (their new owner reads it again).
    fn forget(&mut self, partitions: &[(String, i32)]) {
        let revoked = |topic: &str, partition: i32| {
            partitions
                .iter()
                .any(|(t, p)| t == topic && *p == partition)
        };
        let gone: HashSet<Arc<str>> = self
            .partitions
            .iter()
            .filter(|p| revoked(&p.topic, p.partition))
            .map(|p| p.source.clone())
            .collect();
        let before = self.counted.len() + self.dead.len();
        self.counted.retain(|c| !gone.contains(&c.source));
        self.dead.retain(|d| !revoked(&d.topic, d.partition));
        self.partitions.retain(|p| !revoked(&p.topic, p.partition));
        let dropped = before - self.counted.len() - self.dead.len();
        self.messages = self.messages.saturating_sub(dropped);
    }
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
        state.set_store_ok(true);
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
        let reader = Reader::new(&settings, metrics.clone());
        let worker = Worker::new(
            settings,
            store,
            metrics,
            profiles,
            state,
            Some(producer),
            commits,
        );
        Ok(Ingest {
            consumer: Arc::new(consumer),
            reader,
            worker,
        })
    }

    /// Consumes until `shutdown`, then flushes (within
    /// `ingest.shutdown_deadline`), commits and leaves the group.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Ingest {
            consumer,
            mut reader,
            worker,
        } = self;
        let state = worker.state.clone();
        let settings = worker.settings.clone();
        let mut pending = Pending::default();
        let mut tick = tokio::time::interval(settings.ingest.flush_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let max_batch = settings.ingest.max_batch_events;
        // One batch is written while the next is read; a full batch waits
        // for the write before it (batches are written in order, so fences
        // only ever move forward).
        let mut writer = Writer::Idle(Box::new(worker), Pending::default());
        // Set while the store is failing: the next attempt is not before then.
        let mut retry_at: Option<tokio::time::Instant> = None;
        // A flush came due while the writer was busy.
        let mut owed = false;
        loop {
            let retry = async {
                match retry_at {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            };
            let full = pending.messages >= max_batch && writer.busy();
            let writing = async {
                match &mut writer {
                    Writer::Busy(write) => joined(write.await),
                    _ => std::future::pending().await,
                }
            };
            let due = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                _ = state.revoked() => {
                    retry_at = writer.wait(&mut pending).await;
                    writer.worker().hand_over(&consumer, &mut pending).await;
                    false
                }
                done = writing => {
                    retry_at = writer.settle(done, &mut pending);
                    retry_at.is_none() && (owed || pending.messages >= max_batch)
                }
                _ = retry => true,
                _ = tick.tick() => retry_at.is_none() && pending.messages > 0,
                msg = consumer.recv(), if !full => {
                    // Then whatever else is already fetched, without going
                    // round the loop for each message.
                    let mut next = Some(msg);
                    let mut drained = 0;
                    while let Some(msg) = next.take() {
                        match msg {
                            Ok(m) => reader.read(Incoming::from_kafka(&m), &mut pending),
                            Err(e) => tracing::warn!(error = %e, "Kafka consumer error"),
                        }
                        drained += 1;
                        if drained < DRAIN_MAX && pending.messages < max_batch {
                            next = consumer.recv().now_or_never();
                        }
                    }
                    retry_at.is_none() && pending.messages >= max_batch
                }
            };
            if due && writer.busy() {
                // A tick while the previous batch is still being written:
                // this one goes as soon as that finishes, not a tick later.
                owed = true;
            } else if due && pending.messages > 0 {
                owed = false;
                retry_at = None;
                writer.start(&mut pending, Some(consumer.clone()));
            }
        }
        // Shutting down: stop fetching, finish the write in progress, flush
        // what was read, commit synchronously so the group sees the final
        // offsets, leave.
        writer.wait(&mut pending).await;
        let worker = writer.worker();
        worker.commit_mode = CommitMode::Sync;
        let deadline = tokio::time::Instant::now() + worker.settings.ingest.shutdown_deadline;
        while pending.messages > 0 {
            match worker.flush(Some(&consumer), &mut pending).await {
                None => break,
                Some(t) if t < deadline => tokio::time::sleep_until(t).await,
                Some(_) => {
                    tracing::error!(
                        messages = pending.messages,
                        "store still failing at the shutdown deadline; these messages were \
                         not committed and will be read again"
                    );
                    break;
                }
            }
        }
        // A revocation that arrived meanwhile was covered by the flush above.
        state.set_closing();
        if let Some(r) = state.take_revocation() {
            kafka::complete_revocation(&consumer, &r);
        }
        consumer.unsubscribe();
        drop(consumer);
        tracing::info!("consumer stopped");
        Ok(())
    }
}

impl Worker {
    fn new(
        settings: Arc<Settings>,
        store: Arc<dyn Store>,
        metrics: Metrics,
        profiles: Profiles,
        state: ConsumerState,
        producer: Option<FutureProducer>,
        commits: bool,
    ) -> Worker {
        Worker {
            producer,
            store,
            metrics,
            settings,
            profiles,
            commits,
            meta_cache: AHashMap::default(),
            fences: AHashMap::default(),
            fence_generation: 0,
            state,
            paused: false,
            backoff: RETRY_MIN,
            commit_mode: CommitMode::Async,
        }
    }
}

impl Reader {
    fn new(settings: &Settings, metrics: Metrics) -> Reader {
        let ingest = &settings.ingest;
        Reader {
            decoder: Decoder::new(
                ingest.max_message_bytes,
                ingest.max_clock_skew.as_millis() as i64,
            ),
            filters: Filters::new(
                ingest.max_event_age.as_millis() as i64,
                ingest.dedupe_window.as_millis() as i64,
            ),
            metrics,
            articles_topic: settings.kafka.topics.articles.clone(),
        }
    }

    /// Decodes one message into `pending`.
    fn read(&mut self, m: Incoming<'_>, pending: &mut Pending) {
        let topic = m.topic;
        pending.messages += 1;
        let offset = m.offset;
        let source = pending.note(topic, m.partition, offset).clone();
        let lifecycle_topic = topic == self.articles_topic;
        let encoding = m
            .content_type
            .and_then(Encoding::from_content_type)
            .unwrap_or(Encoding::Json);
        let now = now_ms();
        let info = MessageInfo {
            encoding,
            key: m.key,
            timestamp_ms: m.timestamp_ms,
            lifecycle_topic,
            now_ms: now,
        };
        let payload = m.payload;
        match self.decoder.decode(payload, &info) {
            Err(invalid) => {
                self.count_invalid(&invalid);
                pending.dead.push(DeadLetter {
                    key: m.key.map(<[u8]>::to_vec),
                    payload: payload.to_vec(),
                    reason: invalid.to_string(),
                    topic: topic.to_string(),
                    partition: m.partition,
                    offset,
                });
            }
            Ok(Event::Behaviour(b)) => {
                let verdict = self.filters.judge(&b, now);
                match verdict {
                    Verdict::Count(units) => {
                        pending.counted.push(counted(b, units, source, offset));
                    }
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
}

impl Worker {
    /// Completes a revocation: flushes and commits synchronously what was
    /// read, then hands the partitions over. If the store is failing, what
    /// was read from the revoked partitions is dropped instead: it was not
    /// committed, so their next owner reads it again.
    async fn hand_over(
        &mut self,
        consumer: &StreamConsumer<kafka::Context>,
        pending: &mut Pending,
    ) {
        let Some(revocation) = self.state.take_revocation() else {
            return;
        };
        if pending.messages > 0 {
            let mode = std::mem::replace(&mut self.commit_mode, CommitMode::Sync);
            let failed = self.flush(Some(consumer), pending).await.is_some();
            self.commit_mode = mode;
            if failed {
                pending.forget(&revocation.partitions);
            }
        }
        kafka::complete_revocation(consumer, &revocation);
    }

    /// One attempt to write `pending` and commit it. Returns when to try
    /// again after a failure (the partitions are then paused), or `None`
    /// once everything pending is applied and committed.
    async fn flush(
        &mut self,
        consumer: Option<&StreamConsumer<kafka::Context>>,
        pending: &mut Pending,
    ) -> Option<tokio::time::Instant> {
        let started = Instant::now();
        let mut result = self.try_flush(consumer, pending).await;
        // Refused writes re-read the fences and go again at once: another
        // consumer applied some of these events, the rest must still be applied.
        for _ in 0..3 {
            match &result {
                Err(FlushError::Conflict(_)) => result = self.try_flush(consumer, pending).await,
                _ => break,
            }
        }
        match result {
            Ok(()) => {
                self.metrics
                    .flush_duration
                    .observe(started.elapsed().as_secs_f64());
                self.metrics.flush_size.observe(pending.messages as f64);
                pending.clear();
                self.backoff = RETRY_MIN;
                self.state.set_store_ok(true);
                if self.paused {
                    self.set_paused(consumer, false);
                }
                None
            }
            Err(e) => {
                let wait = self.backoff;
                self.backoff = (self.backoff * 2).min(RETRY_MAX);
                self.metrics.store_retries.inc();
                if matches!(e, FlushError::Store(_)) {
                    self.state.set_store_ok(false);
                }
                tracing::warn!(error = %e, retry_in = ?wait, pending = pending.messages, "flush failed; partitions paused");
                // Paused partitions stop fetching, so memory stays bounded;
                // polling goes on, so the group keeps this member.
                self.set_paused(consumer, true);
                Some(tokio::time::Instant::now() + wait)
            }
        }
    }

    fn set_paused(&mut self, consumer: Option<&StreamConsumer<kafka::Context>>, paused: bool) {
        let Some(Ok(assignment)) = consumer.map(|c| c.assignment()) else {
            return;
        };
        let consumer = consumer.expect("an assignment comes from a consumer");
        let result = if paused {
            consumer.pause(&assignment)
        } else {
            consumer.resume(&assignment)
        };
        match result {
            Ok(()) => {
                self.paused = paused;
                let n = if paused { assignment.count() as i64 } else { 0 };
                self.metrics.partitions_paused.set(n);
            }
            Err(e) => tracing::warn!(error = %e, paused, "pausing or resuming partitions failed"),
        }
    }

    async fn try_flush(
        &mut self,
        consumer: Option<&StreamConsumer<kafka::Context>>,
        pending: &mut Pending,
    ) -> Result<(), FlushError> {
        // 1. Invalid messages reach the dead-letter topic before their offsets are committed.
        self.send_dead_letters(pending)
            .await
            .map_err(FlushError::DeadLetter)?;
        // 2. Article lifecycle, so events of this flush see fresh metadata.
        self.apply_lifecycle(pending).await?;
        // 3. Scores, fenced per group and partition.
        let (aggregate, withdrawn) = self.aggregate(pending).await?;
        if !aggregate.is_empty() {
            let outcome = self
                .metrics
                .time_store("apply", self.store.apply(&aggregate))
                .await;
            let applied = match outcome {
                Ok(a) => a,
                Err(e) => {
                    // Unknown outcome (the reply may have been lost): the
                    // fences in the store tell what was applied.
                    self.fences.clear();
                    return Err(e.into());
                }
            };
            for (group, fences) in &aggregate.fences {
                if applied.conflicts.contains(group) {
                    self.fences.remove(group);
                } else {
                    let known = self.fences.entry(group.clone()).or_default();
                    for f in fences {
                        known.insert(f.source.clone(), f.new);
                    }
                }
            }
            if !applied.conflicts.contains(&Group::All) {
                self.observe_applied(&aggregate, pending);
            }
            if !applied.conflicts.is_empty() {
                self.metrics
                    .fence_conflicts
                    .inc_by(applied.conflicts.len() as u64);
                return Err(FlushError::Conflict(applied.conflicts.len()));
            }
        }
        for kind in EventType::ALL {
            self.metrics
                .events
                .with_label_values(&[kind.as_str(), "unpublished"])
                .inc_by(withdrawn[kind.index()]);
        }
        // 4. Offsets, as a resume hint for the next owner of each partition.
        if let Some(consumer) = consumer.filter(|_| self.commits) {
            let mut tpl = TopicPartitionList::new();
            for (p, offset) in pending.read_partitions() {
                tpl.add_partition_offset(&p.topic, p.partition, Offset::Offset(offset + 1))
                    .map_err(|e| FlushError::Kafka(e.to_string()))?;
            }
            if tpl.count() == 0 {
                return Ok(());
            }
            if let Err(e) = consumer.commit(&tpl, self.commit_mode) {
                // Not fatal: the store holds the data; the next commit covers these offsets.
                tracing::warn!(error = %e, "offset commit failed");
            }
        }
        Ok(())
    }

    /// Counts the events newly applied to the overall ranking, and their
    /// event-to-visible latency.
    fn observe_applied(&self, aggregate: &Aggregate, pending: &Pending) {
        for kind in EventType::ALL {
            self.metrics
                .events
                .with_label_values(&[kind.as_str(), "applied"])
                .inc_by(aggregate.counted(kind));
        }
        let applied_at = now_ms();
        let h = self.metrics.event_to_visible.local();
        for c in &pending.counted {
            h.observe(((applied_at - c.at_ms) as f64 / 1000.0).max(0.0));
        }
        h.flush();
    }

    async fn send_dead_letters(&mut self, pending: &mut Pending) -> anyhow::Result<()> {
        if pending.dead.is_empty() {
            return Ok(());
        }
        let topic = &self.settings.kafka.topics.dead_letter;
        let Some(producer) = &self.producer else {
            // The in-memory pipeline has no dead-letter topic: count and drop.
            pending.dead.clear();
            return Ok(());
        };
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
            producer.send(record, Duration::from_secs(30))
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

    async fn apply_lifecycle(&mut self, pending: &mut Pending) -> Result<(), FlushError> {
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

    /// Fills in sections and tags from metadata, reads the fences of the
    /// groups it has not seen since the last assignment change, then folds
    /// in every counted event each group does not hold yet. Also returns,
    /// per event type, how many events were of withdrawn articles.
    async fn aggregate(&mut self, pending: &Pending) -> Result<(Aggregate, [u64; 3]), FlushError> {
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
        let generation = self.state.generation();
        if generation != self.fence_generation {
            self.fences.clear();
            self.fence_generation = generation;
        }
        // Each distinct (article, section, tags) is placed once per flush,
        // and each distinct group numbered: adding an event then allocates
        // nothing and hashes no group or partition name.
        type PlaceKey<'a> = (&'a str, Option<&'a str>, &'a [String]);
        let mut place_of: AHashMap<PlaceKey<'_>, usize> = AHashMap::default();
        let mut places: Vec<Placed<'_>> = Vec::new();
        let mut group_of: AHashMap<Group, usize> = AHashMap::default();
        let mut groups: Vec<Group> = Vec::new();
        let sources = &pending.partitions;
        let mut events = Vec::with_capacity(pending.counted.len());
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
            let key = (c.article_id.as_str(), section, tags);
            let place = *place_of.entry(key).or_insert_with(|| {
                let entries = placement(&c.article_id, section, tags);
                let numbers = entries
                    .iter()
                    .map(|(g, _)| {
                        *group_of.entry(g.clone()).or_insert_with(|| {
                            groups.push(g.clone());
                            groups.len() - 1
                        })
                    })
                    .collect();
                places.push(Placed {
                    article_id: &c.article_id,
                    entries,
                    groups: numbers,
                });
                places.len() - 1
            });
            events.push((c, place, source_index(sources, &c.source)));
        }
        let unknown: Vec<Group> = groups
            .iter()
            .filter(|g| !self.fences.contains_key(*g))
            .cloned()
            .collect();
        if !unknown.is_empty() {
            let read = self
                .metrics
                .time_store("fences", self.store.fences(&unknown))
                .await?;
            self.fences.extend(unknown.into_iter().zip(read));
        }
        // Fences per group and partition, and the newest per partition: an
        // event past it is new to every group (the usual case), and is
        // summed per place; others are checked group by group.
        let fence_of: Vec<Vec<Option<i64>>> = groups
            .iter()
            .map(|g| {
                let known = self.fences.get(g);
                sources
                    .iter()
                    .map(|p| known.and_then(|f| f.get(&*p.source)).copied())
                    .collect()
            })
            .collect();
        let ns = sources.len();
        let mut newest: Vec<Option<i64>> = vec![None; ns];
        for row in &fence_of {
            for (n, f) in newest.iter_mut().zip(row) {
                *n = (*n).max(*f);
            }
        }
        let np = self.profiles.len();
        let mut agg = Aggregate::new(self.profiles.clone(), now_ms());
        let mut touched = vec![false; groups.len() * ns];
        let mut sums = vec![0.0; places.len() * np];
        let mut counts = vec![([0u64; 3], 0usize); places.len()];
        let mut read_from = vec![false; places.len() * ns];
        let mut incs = vec![0.0; np];
        for (c, pi, si) in events {
            if newest[si].is_none_or(|f| c.offset > f) {
                agg.increments(c.kind, c.at_ms, c.units, &mut incs);
                sums[pi * np..(pi + 1) * np]
                    .iter_mut()
                    .zip(&incs)
                    .for_each(|(a, b)| *a += b);
                counts[pi].0[c.kind.index()] += 1;
                counts[pi].1 += 1;
                read_from[pi * ns + si] = true;
            } else {
                let place = &places[pi];
                agg.add_placed(
                    c.kind,
                    &c.article_id,
                    &place.entries,
                    c.at_ms,
                    c.units,
                    |k| {
                        let gi = place.groups[k];
                        let admit = fence_of[gi][si].is_none_or(|f| c.offset > f);
                        touched[gi * ns + si] |= admit;
                        admit
                    },
                );
            }
        }
        for (pi, place) in places.iter().enumerate() {
            let (by_kind, n) = counts[pi];
            if n > 0 {
                let incs = &sums[pi * np..(pi + 1) * np];
                agg.add_summed(place.article_id, &place.entries, incs, by_kind, n);
            }
            for si in (0..ns).filter(|si| read_from[pi * ns + si]) {
                for &gi in &place.groups {
                    touched[gi * ns + si] = true;
                }
            }
        }
        for (gi, group) in groups.iter().enumerate() {
            for (si, p) in sources.iter().enumerate() {
                if !touched[gi * ns + si] {
                    continue;
                }
                let new = p.highest.expect("a partition with counted events was read");
                agg.fence(
                    group.clone(),
                    Fence {
                        new,
                        source: p.source.to_string(),
                        expected: fence_of[gi][si],
                    },
                );
            }
        }
        Ok((agg, withdrawn))
    }
}

/// Where one article's events of a flush go.
struct Placed<'a> {
    article_id: &'a str,
    /// (group, member), as [`placement`] gives them.
    entries: Vec<(Group, String)>,
    /// The number of each entry's group in this flush.
    groups: Vec<usize>,
}

/// The position of partition `source` among those read.
fn source_index(partitions: &[PartitionRead], source: &Arc<str>) -> usize {
    partitions
        .iter()
        .position(|p| Arc::ptr_eq(&p.source, source))
        .or_else(|| partitions.iter().position(|p| p.source == *source))
        .expect("every counted event's partition is noted")
}

/// Why a flush attempt failed.
#[derive(Debug, thiserror::Error)]
enum FlushError {
    /// The store failed or its answer is unknown.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// Some groups were refused: another consumer moved their fences.
    #[error("{0} groups refused by their fences")]
    Conflict(usize),
    /// Dead letters were not delivered.
    #[error("dead-letter topic: {0:#}")]
    DeadLetter(anyhow::Error),
    /// Kafka refused an offset list.
    #[error("kafka: {0}")]
    Kafka(String),
}

fn counted(b: Behaviour, units: f64, source: Arc<str>, offset: i64) -> Counted {
    Counted {
        source,
        offset,
        kind: b.kind,
        article_id: b.article_id,
        section: b.section,
        tags: b.tags,
        at_ms: b.occurred_at_ms,
        units,
    }
}
