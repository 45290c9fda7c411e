//! The consumer loop: assignment and restore, reading, starting writes,
//! committing, pausing and resuming, revocation and shutdown. It owns the
//! Kafka consumer; the reader and the writer never touch it.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use futures::FutureExt as _;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::producer::FutureProducer;
use rdkafka::{Offset, TopicPartitionList};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::dependency::{Backoff, KafkaLink};
use crate::metrics::Metrics;
use crate::scoring::Profiles;
use crate::store::pending::Pending;
use crate::store::Writes;

use super::batch::{Batch, Commit, Incoming};
use super::dead_letter::{DeadLetters, Origin};
use super::kafka::{self, ConsumerState};
use super::partition::PartitionId;
use super::reader::Reader;
use super::writer::{Flushed, InFlight, Writer};

/// Most messages read in a row before the consumer loop looks at its timers
/// and signals again.
const DRAIN_MAX: usize = 1024;
/// Wait before reading saved filters again after the store failed.
const RESTORE_RETRY: Duration = Duration::from_secs(1);

type KafkaConsumer = StreamConsumer<kafka::Context>;

/// A running consumer, built and ready to run.
pub struct Ingest {
    consumer: Arc<KafkaConsumer>,
    reader: Reader,
    writer: Writer,
    store: Arc<dyn Writes>,
    settings: Arc<Settings>,
    state: ConsumerState,
    metrics: Metrics,
    /// The store when it was not reached at start: nothing is read before it is.
    waiting_for: Option<Arc<Pending>>,
}

impl Ingest {
    /// Creates the clients (which fails only on configuration); nothing is
    /// asked of Kafka or the store before [`Ingest::run`].
    pub fn build(
        settings: Arc<Settings>,
        store: Arc<dyn Writes>,
        metrics: Metrics,
        profiles: Profiles,
        state: ConsumerState,
    ) -> anyhow::Result<Ingest> {
        let durable = store.durable();
        let context = kafka::Context {
            metrics: metrics.clone(),
            state: state.clone(),
            link: KafkaLink::new(state.kafka.clone()),
        };
        if durable {
            state.set_restores();
        }
        let consumer: KafkaConsumer = kafka::consumer_config(&settings.kafka, durable)
            .create_with_context(context)
            .context("creating the Kafka consumer")?;
        let producer: FutureProducer<KafkaLink> = kafka::producer_config(&settings.kafka)
            .create_with_context(KafkaLink::new(state.kafka.clone()))
            .context("creating the dead-letter producer")?;
        let dead_letters = DeadLetters::new(
            Some(producer),
            settings.kafka.topics.dead_letter.clone(),
            metrics.clone(),
        );
        Ok(Ingest {
            consumer: Arc::new(consumer),
            reader: Reader::new(&settings, metrics.clone(), durable, durable),
            writer: Writer::new(
                store.clone(),
                metrics.clone(),
                profiles,
                dead_letters,
                state.clone(),
            ),
            store,
            settings,
            state,
            metrics,
            waiting_for: None,
        })
    }

    /// The same, reading nothing before `store` is connected.
    pub fn after(mut self, store: Arc<Pending>) -> Ingest {
        self.waiting_for = Some(store);
        self
    }

    /// Waits for the store, joins the group (or, when the store is not
    /// durable, assigns every partition from the beginning, retrying while
    /// Kafka cannot be reached), consumes until `shutdown`, then flushes
    /// (within `ingest.shutdown_deadline`), commits and leaves the group.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Ingest {
            consumer,
            reader,
            mut writer,
            store,
            settings,
            state,
            metrics,
            waiting_for,
        } = self;
        if let Some(pending) = waiting_for {
            tokio::select! {
                _ = pending.connected() => {}
                _ = shutdown.cancelled() => return Ok(()),
            }
        }
        let Some(sent) = join(
            &consumer,
            &settings,
            &state,
            &metrics,
            store.durable(),
            &shutdown,
        )
        .await?
        else {
            return Ok(());
        };
        writer.remember_dead_letters(sent);
        let mut l = Loop {
            commits: store.durable(),
            consumer,
            reader,
            store,
            state,
            metrics,
            restoring: Vec::new(),
            paused: false,
        };
        let mut batch = Batch::default();
        let mut tick = tokio::time::interval(settings.ingest.flush_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let max_batch = settings.ingest.max_batch_events;
        // One batch is written while the next is read; a full batch waits
        // for the write before it (batches are written in order, so fences
        // only ever move forward).
        let mut writing = InFlight::new(writer);
        // Set while the store is failing: the next attempt is not before then.
        let mut retry_at: Option<Instant> = None;
        let mut restore_at: Option<Instant> = None;
        // A flush came due while the writer was busy.
        let mut owed = false;
        let mut kafka_errors = ErrorLog::default();
        // While paused, the lag is measured here (librdkafka's statistics
        // stop seeing the watermarks move), at the statistics' pace.
        let mut lag_tick = tokio::time::interval(Duration::from_secs(5));
        lag_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let full = batch.full(max_batch) && writing.busy();
            let due = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                _ = l.state.revoked() => {
                    if let Some(f) = writing.wait(&mut batch).await {
                        retry_at = l.after_write(f, CommitMode::Async);
                    }
                    if let Some(r) = l.hand_over(writing.writer(), &mut batch).await {
                        retry_at = Some(r);
                    } else if batch.messages == 0 {
                        retry_at = None;
                    }
                    false
                }
                _ = l.state.assigned() => {
                    restore_at = l.restore().await;
                    false
                }
                _ = sleep_until(restore_at) => {
                    restore_at = l.restore().await;
                    false
                }
                done = writing.finished() => {
                    let f = writing.settle(done, &mut batch);
                    retry_at = l.after_write(f, CommitMode::Async);
                    retry_at.is_none() && (owed || batch.full(max_batch))
                }
                _ = sleep_until(retry_at) => {
                    retry_at = None;
                    if batch.messages == 0 && l.paused {
                        l.set_paused(false);
                    }
                    true
                }
                _ = tick.tick() => retry_at.is_none() && batch.messages > 0,
                _ = lag_tick.tick(), if l.paused
                    || (l.state.rebuilding() && batch.messages == 0 && !writing.busy()) => {
                    if l.paused {
                        let (consumer, metrics) = (l.consumer.clone(), l.metrics.clone());
                        let commits = l.commits;
                        tokio::task::spawn_blocking(move || {
                            kafka::paused_lag(consumer.as_ref(), commits, &metrics)
                        });
                    } else {
                        l.rebuilt_to_position();
                    }
                    false
                }
                msg = l.consumer.recv(), if !full => {
                    // Then whatever else is already fetched, without going
                    // round the loop for each message, read together (on
                    // the cores' threads when there are enough).
                    let mut next = Some(msg);
                    let mut drained = 0;
                    let mut fetched = Vec::new();
                    while let Some(msg) = next.take() {
                        match msg {
                            Ok(m) => fetched.push(m),
                            Err(e) => kafka_errors.report(&e),
                        }
                        drained += 1;
                        if drained < DRAIN_MAX && batch.messages + fetched.len() < max_batch {
                            next = l.consumer.recv().now_or_never();
                        }
                    }
                    let incoming: Vec<_> = fetched.iter().map(Incoming::from_kafka).collect();
                    l.reader.read_all(&incoming, &mut batch);
                    retry_at.is_none() && batch.full(max_batch)
                }
            };
            if due && writing.busy() {
                // A tick while the previous batch is still being written:
                // this one goes as soon as that finishes, not a tick later.
                owed = true;
            } else if due && batch.messages > 0 {
                owed = false;
                retry_at = None;
                l.reader.seal(&mut batch);
                writing.start(&mut batch);
            }
        }
        // Shutting down: stop fetching, finish the write in progress, flush
        // what was read, commit synchronously so the group sees the final
        // offsets, leave.
        if let Some(f) = writing.wait(&mut batch).await {
            l.after_write(f, CommitMode::Sync);
        }
        let deadline = Instant::now() + settings.ingest.shutdown_deadline;
        l.reader.seal(&mut batch);
        while batch.messages > 0 {
            match l.after_write(writing.writer().flush(&mut batch).await, CommitMode::Sync) {
                None => break,
                Some(t) if t < deadline => tokio::time::sleep_until(t).await,
                Some(_) => {
                    tracing::error!(
                        messages = batch.messages,
                        "store still failing at the shutdown deadline; these messages were \
                         not committed and will be read again"
                    );
                    break;
                }
            }
        }
        // A revocation that arrived meanwhile was covered by the flush above.
        l.state.set_closing();
        if let Some(r) = l.state.take_revocation() {
            kafka::complete_revocation(&l.consumer, &r);
        }
        l.consumer.unsubscribe();
        drop(l);
        tracing::info!("consumer stopped");
        Ok(())
    }
}

/// Sleeps until `t`; never when there is none.
async fn sleep_until(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// Subscribes with a durable store. Otherwise assigns every partition from
/// the beginning and reads which dead letters were sent before (DESIGN §13),
/// retrying with a capped backoff while Kafka cannot be reached; None when
/// `shutdown` came first.
async fn join(
    consumer: &Arc<KafkaConsumer>,
    settings: &Arc<Settings>,
    state: &ConsumerState,
    metrics: &Metrics,
    durable: bool,
    shutdown: &CancellationToken,
) -> anyhow::Result<Option<HashSet<Origin>>> {
    let k = &settings.kafka;
    let topics = [k.topics.events.clone(), k.topics.articles.clone()];
    if durable {
        let topics = topics.each_ref().map(String::as_str);
        consumer.subscribe(&topics).context("subscribing")?;
        return Ok(Some(HashSet::new()));
    }
    let mut backoff = Backoff::default();
    loop {
        let (c, s, st, m) = (
            consumer.clone(),
            settings.clone(),
            state.clone(),
            metrics.clone(),
        );
        let topics = topics.clone();
        let joined = tokio::task::spawn_blocking(move || {
            let topics = topics.each_ref().map(String::as_str);
            assign_from_beginning(&c, &topics, &st, &m)?;
            let sent =
                super::dead_letter::already_sent(&s.kafka, KafkaLink::new(st.kafka.clone()))?;
            tracing::info!(dead_letters = sent.len(), "dead letters already sent");
            anyhow::Ok(sent)
        })
        .await
        .context("joining panicked")?;
        match joined {
            Ok(sent) => {
                state.kafka.reached();
                return Ok(Some(sent));
            }
            Err(e) => state.kafka.failed(&format!("{e:#}")),
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff.next_wait()) => {}
            _ = shutdown.cancelled() => return Ok(None),
        }
    }
}

/// Without a group: every partition of both topics from the beginning.
fn assign_from_beginning(
    consumer: &KafkaConsumer,
    topics: &[&str],
    state: &ConsumerState,
    metrics: &Metrics,
) -> anyhow::Result<()> {
    let metadata = consumer
        .fetch_metadata(None, Duration::from_secs(10))
        .context("fetching topic metadata")?;
    let mut tpl = TopicPartitionList::new();
    let mut history = Vec::new();
    for topic in metadata
        .topics()
        .iter()
        .filter(|t| topics.contains(&t.name()))
    {
        for p in topic.partitions() {
            tpl.add_partition_offset(topic.name(), p.id(), Offset::Beginning)?;
            let (low, high) = consumer
                .fetch_watermarks(topic.name(), p.id(), Duration::from_secs(10))
                .context("reading the topics' watermarks")?;
            history.push((PartitionId::new(topic.name(), p.id()), low, high));
        }
    }
    anyhow::ensure!(tpl.count() > 0, "none of the topics {topics:?} exists");
    state.start_rebuild(&history, metrics);
    consumer.assign(&tpl).context("assigning partitions")?;
    state.set_assigned(super::kafka::elements(&tpl));
    metrics.partitions_assigned.set(tpl.count() as i64);
    Ok(())
}

/// The consumer loop's state besides the batch and the writer.
struct Loop {
    consumer: Arc<KafkaConsumer>,
    reader: Reader,
    store: Arc<dyn Writes>,
    state: ConsumerState,
    metrics: Metrics,
    /// Whether offsets are committed (a durable store).
    commits: bool,
    /// Assigned partitions whose filters are not restored yet (paused).
    restoring: Vec<PartitionId>,
    /// Every partition is paused while the store is failing.
    paused: bool,
}

impl Loop {
    /// With nothing read and not written, the rebuild has applied up to the
    /// consumer's position: this covers what is never delivered, such as a
    /// transaction's control records at the end of a partition.
    fn rebuilt_to_position(&mut self) {
        let Ok(position) = self.consumer.position() else {
            return;
        };
        let read: Vec<Commit> = position
            .elements()
            .iter()
            .filter_map(|e| {
                Some((
                    PartitionId::new(e.topic(), e.partition()),
                    e.offset().to_raw()?,
                ))
            })
            .collect();
        self.state.rebuilt_to(&read, &self.metrics);
    }

    /// Acts on a write's outcome: commits and resumes, or pauses. Returns
    /// when to try again, if the write failed.
    fn after_write(&mut self, f: Flushed, mode: CommitMode) -> Option<Instant> {
        match f {
            Flushed::Done(commits, refused, span) => {
                span.in_scope(|| self.commit(&commits, mode));
                self.state.rebuilt_to(&commits, &self.metrics);
                self.reader.force_snapshot(&refused);
                if self.paused {
                    self.set_paused(false);
                }
                None
            }
            Flushed::Retry(at) => {
                // Paused partitions stop fetching, so memory stays bounded;
                // polling goes on, so the group keeps this member.
                if !self.paused {
                    self.set_paused(true);
                }
                Some(at)
            }
        }
    }

    /// Offsets, as a resume hint for the next owner of each partition.
    fn commit(&self, commits: &[Commit], mode: CommitMode) {
        if !self.commits || commits.is_empty() {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        for (id, next) in commits {
            let at = Offset::Offset(*next);
            if let Err(e) = tpl.add_partition_offset(id.topic(), id.partition(), at) {
                tracing::warn!(error = %e, "offset not committed");
            }
        }
        if let Err(e) = self.consumer.commit(&tpl, mode) {
            // Not fatal: the store holds the data; the next commit covers these offsets.
            tracing::warn!(error = %e, "offset commit failed");
        }
    }

    /// Pauses every assigned partition, or resumes those not waiting for
    /// their filters.
    fn set_paused(&mut self, paused: bool) {
        // Partitions assigned since the last restore stay paused until theirs.
        self.take_assigned();
        let Ok(assignment) = self.consumer.assignment() else {
            return;
        };
        let result = if paused {
            self.consumer.pause(&assignment)
        } else {
            let mut ready = TopicPartitionList::new();
            for e in assignment.elements() {
                if !self
                    .restoring
                    .iter()
                    .any(|r| r.is(e.topic(), e.partition()))
                {
                    ready.add_partition(e.topic(), e.partition());
                }
            }
            self.consumer.resume(&ready)
        };
        match result {
            Ok(()) => {
                self.paused = paused;
                self.state.set_paused(paused);
                let n = if paused { assignment.count() as i64 } else { 0 };
                self.metrics.partitions_paused.set(n);
            }
            Err(e) => tracing::warn!(error = %e, paused, "pausing or resuming partitions failed"),
        }
    }

    /// Moves the partitions assigned (and paused) since the last call into
    /// those waiting for their filters.
    fn take_assigned(&mut self) {
        for tp in self.state.take_assigned() {
            if !self.restoring.contains(&tp) {
                self.restoring.push(tp);
            }
        }
    }

    /// Restores the duplicate filters of newly assigned partitions from the
    /// store and resumes them. Returns when to try again if the store failed.
    async fn restore(&mut self) -> Option<Instant> {
        self.take_assigned();
        if self.restoring.is_empty() {
            return None;
        }
        let sources: Vec<String> = self.restoring.iter().map(|p| p.to_string()).collect();
        let started = std::time::Instant::now();
        let saved = match self
            .metrics
            .time_store("load_filters", self.store.load_filters(&sources))
            .await
        {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "reading saved duplicate filters failed; partitions stay paused");
                return Some(Instant::now() + RESTORE_RETRY);
            }
        };
        let mut ready = TopicPartitionList::new();
        let mut windows = 0;
        for (id, saved) in std::mem::take(&mut self.restoring).into_iter().zip(saved) {
            windows += saved.deltas.iter().map(Vec::len).sum::<usize>();
            self.reader.restore(&id, saved);
            ready.add_partition(id.topic(), id.partition());
        }
        tracing::info!(
            partitions = ready.count(),
            bytes = windows,
            took = ?started.elapsed(),
            "duplicate filters restored"
        );
        if !self.paused {
            if let Err(e) = self.consumer.resume(&ready) {
                tracing::warn!(error = %e, "resuming restored partitions failed");
            }
        }
        None
    }

    /// Completes a revocation: flushes and commits synchronously what was
    /// read, then hands the partitions over. If the store is failing, what
    /// was read from the revoked partitions is dropped instead: it was not
    /// committed, so their next owner reads it again.
    /// Returns when to try again if what is left still waits for the store.
    async fn hand_over(&mut self, writer: &mut Writer, batch: &mut Batch) -> Option<Instant> {
        let revocation = self.state.take_revocation()?;
        let mut retry_at = None;
        if batch.messages > 0 {
            self.reader.seal(batch);
            let f = writer.flush(batch).await;
            retry_at = self.after_write(f, CommitMode::Sync);
            if retry_at.is_some() {
                batch.forget(&revocation.partitions);
            }
        }
        self.reader.forget(&revocation.partitions);
        self.take_assigned();
        self.restoring
            .retain(|tp| !revocation.partitions.contains(tp));
        kafka::complete_revocation(&self.consumer, &revocation);
        if batch.messages == 0 && self.paused {
            // Nothing left to write: the remaining partitions read again.
            self.set_paused(false);
            retry_at = None;
        }
        retry_at
    }
}

/// Kafka's errors as they reach the log: the first at once, then at most one
/// line every 10 s with how many came meanwhile. librdkafka queues one error
/// per broker and per attempt while a cluster is unreachable, which would
/// otherwise be thousands of identical lines.
#[derive(Default)]
struct ErrorLog {
    last: Option<Instant>,
    suppressed: u64,
}

impl ErrorLog {
    const EVERY: Duration = Duration::from_secs(10);

    fn report(&mut self, e: &rdkafka::error::KafkaError) {
        let now = Instant::now();
        if self.last.is_some_and(|t| now - t < Self::EVERY) {
            self.suppressed += 1;
            return;
        }
        tracing::warn!(error = %e, more_since_last = self.suppressed, "Kafka consumer error");
        self.last = Some(now);
        self.suppressed = 0;
    }
}
