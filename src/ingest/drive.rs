//! The consumer loop, as phases: what woke it ([`Wake`]), where it stands
//! ([`Phase`]), and one function, [`Loop::on`], deciding what to do next.
//! "Drain, then commit" is written once ([`Loop::drain`]) and serves both
//! a hand-over of revoked partitions and shutdown.

use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt as _, StreamExt as _};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::{Offset, TopicPartitionList};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::metrics::{Metrics, StoreOperation};
use crate::store::Writes;

use super::batch::{Batch, Commit};
use super::kafka::{self, ConsumerState, ErrorLog, Revocation};
use super::partition::PartitionId;
use super::reader::Reader;
use super::writer::{Flushed, InFlight, Written};

/// Most messages read in a row before the consumer loop looks at its timers
/// and signals again.
const DRAIN_MAX: usize = 1024;
/// Wait before reading saved filters again after the store failed.
const RESTORE_RETRY: Duration = Duration::from_secs(1);
/// How often the lag is measured while paused, and the rebuild's position
/// looked at while idle (the pace of librdkafka's statistics).
const LAG_EVERY: Duration = Duration::from_secs(5);

pub(super) type KafkaConsumer = StreamConsumer<kafka::Context>;

/// Where the loop stands between two wake-ups.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    /// Reading, one write possibly in flight.
    Consuming {
        /// A flush came due while the writer was busy: it starts as soon as
        /// that write finishes, not a tick later.
        flush_owed: bool,
    },
    /// The last write failed: every partition is paused (so memory stays
    /// bounded; polling goes on, so the group keeps this member) and the
    /// batch is written again at `retry`.
    WaitingForStore { retry: Instant },
}

/// What woke the loop.
enum Wake {
    /// The service is stopping.
    Shutdown,
    /// The group took partitions away: drain them and hand them over.
    Revoked,
    /// Partitions were assigned, or restoring their filters is due again.
    Restore,
    /// The write in flight finished.
    Written(Box<Written>),
    /// Waiting for the store is over.
    RetryDue,
    /// `ingest.flush_interval` passed.
    Tick,
    /// Time to measure the lag while paused, or the rebuild's position.
    LagTick,
    /// Messages were read into the batch.
    Read,
}

/// What to do after a wake-up.
#[derive(Debug, PartialEq)]
enum Next {
    /// Wait for the next wake-up.
    Wait,
    /// Seal the batch and write it (or owe the write, if one is in flight).
    Flush,
    /// Leave the loop and drain for shutdown.
    Stop,
}

/// Why the loop drains what it read.
enum Drain {
    /// Revoked partitions are handed over once what was read is committed;
    /// if the store fails, what was read from them is dropped instead (it
    /// was not committed: their next owner reads it again).
    HandOver(Revocation),
    /// Shutdown: retried until `deadline`.
    Shutdown { deadline: Instant },
}

/// The consumer loop and everything it holds.
pub(super) struct Loop {
    pub consumer: Arc<KafkaConsumer>,
    pub reader: Reader,
    pub store: Arc<dyn Writes>,
    pub state: ConsumerState,
    pub metrics: Metrics,
    /// Whether offsets are committed (a durable store).
    pub commits: bool,
    /// Assigned partitions whose filters are not restored yet (paused).
    pub restoring: Vec<PartitionId>,
    /// When restoring filters is tried again after the store failed.
    pub restore_retry: Option<Instant>,
    /// Every partition is paused while the store is failing.
    pub paused: bool,
    /// What was read and not written yet.
    pub batch: Batch,
    /// The writer, idle or writing the batch before this one.
    pub writing: InFlight,
    /// `ingest.max_batch_events`.
    pub max_batch: usize,
    /// `ingest.flush_interval`.
    pub flush_interval: Duration,
    /// `ingest.shutdown_deadline`.
    pub shutdown_deadline: Duration,
    phase: Phase,
    kafka_errors: ErrorLog,
}

impl Loop {
    /// A loop that has read nothing yet.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        consumer: Arc<KafkaConsumer>,
        reader: Reader,
        store: Arc<dyn Writes>,
        state: ConsumerState,
        metrics: Metrics,
        writing: InFlight,
        settings: &crate::config::IngestSettings,
    ) -> Loop {
        Loop {
            commits: store.durable(),
            consumer,
            reader,
            store,
            state,
            metrics,
            restoring: Vec::new(),
            restore_retry: None,
            paused: false,
            batch: Batch::default(),
            writing,
            max_batch: settings.max_batch_events,
            flush_interval: settings.flush_interval,
            shutdown_deadline: settings.shutdown_deadline,
            phase: Phase::Consuming { flush_owed: false },
            kafka_errors: ErrorLog::default(),
        }
    }

    /// Consumes until `shutdown`, then drains (within
    /// `ingest.shutdown_deadline`), commits and leaves the group.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(self.flush_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut lag_tick = tokio::time::interval(LAG_EVERY);
        lag_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let wake = self.wait(&shutdown, &mut tick, &mut lag_tick).await;
            match self.on(wake).await {
                Next::Wait => {}
                Next::Flush => self.flush(),
                Next::Stop => break,
            }
        }
        let deadline = Instant::now() + self.shutdown_deadline;
        self.drain(Drain::Shutdown { deadline }).await;
        // A revocation that arrived meanwhile was covered by the drain above.
        self.state.set_closing();
        if let Some(r) = self.state.take_revocation() {
            kafka::complete_revocation(&self.consumer, &r);
        }
        self.consumer.unsubscribe();
        tracing::info!("consumer stopped");
    }

    /// Waits for the next thing to act on; messages are read into the
    /// batch here (they borrow the consumer).
    async fn wait(
        &mut self,
        shutdown: &CancellationToken,
        tick: &mut tokio::time::Interval,
        lag_tick: &mut tokio::time::Interval,
    ) -> Wake {
        // A full batch waits for the write before it: batches are written in
        // order, so fences only ever move forward.
        let full = self.batch.full(self.max_batch) && self.writing.busy();
        let retry = match self.phase {
            Phase::WaitingForStore { retry } => Some(retry),
            Phase::Consuming { .. } => None,
        };
        let idle_rebuild =
            self.state.rebuilding() && self.batch.messages == 0 && !self.writing.busy();
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => Wake::Shutdown,
            _ = self.state.revoked() => Wake::Revoked,
            _ = self.state.assigned() => Wake::Restore,
            _ = sleep_until(self.restore_retry) => Wake::Restore,
            done = self.writing.finished() => Wake::Written(Box::new(done)),
            _ = sleep_until(retry) => Wake::RetryDue,
            _ = tick.tick() => Wake::Tick,
            _ = lag_tick.tick(), if self.paused || idle_rebuild => Wake::LagTick,
            msg = self.consumer.recv(), if !full => {
                // Then whatever else is already fetched, without going
                // round the loop for each message, read together (on
                // `ingest.decode_threads` threads). One stream for
                // them all: each `recv` takes and frees a waker's slot.
                let mut next = Some(msg);
                let mut drained = 0;
                let mut fetched = Vec::new();
                let mut stream = self.consumer.stream();
                while let Some(msg) = next.take() {
                    match msg {
                        Ok(m) => fetched.push(m),
                        Err(e) => self.kafka_errors.report(&e),
                    }
                    drained += 1;
                    if drained < DRAIN_MAX && self.batch.messages + fetched.len() < self.max_batch {
                        next = stream.next().now_or_never().flatten();
                    }
                }
                self.reader.read_fetched(&fetched, &mut self.batch);
                Wake::Read
            }
        }
    }

    /// Acts on `wake` and decides what comes next.
    async fn on(&mut self, wake: Wake) -> Next {
        let waiting = matches!(self.phase, Phase::WaitingForStore { .. });
        let owed = matches!(self.phase, Phase::Consuming { flush_owed: true });
        match wake {
            Wake::Shutdown => Next::Stop,
            Wake::Revoked => {
                if let Some(r) = self.state.take_revocation() {
                    self.drain(Drain::HandOver(r)).await;
                }
                Next::Wait
            }
            Wake::Restore => {
                self.restore_retry = self.restore().await;
                Next::Wait
            }
            Wake::Written(done) => {
                let flushed = self.writing.collect(*done, &mut self.batch);
                let failed = self.after_write(flushed, CommitMode::Async).is_some();
                flush_if(!failed && (owed || self.batch.full(self.max_batch)))
            }
            Wake::RetryDue => {
                self.phase = Phase::Consuming { flush_owed: false };
                if self.batch.messages == 0 && self.paused {
                    self.set_paused(false);
                }
                Next::Flush
            }
            Wake::Tick => flush_if(!waiting && self.batch.messages > 0),
            Wake::LagTick => {
                if self.paused {
                    let (consumer, metrics) = (self.consumer.clone(), self.metrics.clone());
                    let commits = self.commits;
                    tokio::task::spawn_blocking(move || {
                        kafka::paused_lag(consumer.as_ref(), commits, &metrics)
                    });
                } else {
                    self.rebuilt_to_position();
                }
                Next::Wait
            }
            Wake::Read => flush_if(!waiting && self.batch.full(self.max_batch)),
        }
    }

    /// Starts writing the batch, or owes the write while one is in flight.
    fn flush(&mut self) {
        if self.writing.busy() {
            self.phase = Phase::Consuming { flush_owed: true };
        } else if self.batch.messages > 0 {
            self.phase = Phase::Consuming { flush_owed: false };
            self.reader.seal(&mut self.batch);
            self.writing.start(&mut self.batch);
        }
    }

    /// Drain, then commit: finishes the write in flight, writes what was
    /// read and commits it synchronously, so that the group sees the final
    /// offsets; then hands revoked partitions over, or, at shutdown, tries
    /// again until the deadline.
    async fn drain(&mut self, why: Drain) {
        if let Some(f) = self.writing.wait(&mut self.batch).await {
            self.after_write(f, CommitMode::Sync);
        }
        self.reader.seal(&mut self.batch);
        while self.batch.messages > 0 {
            let flushed = self.writing.writer().flush(&mut self.batch).await;
            let Some(retry) = self.after_write(flushed, CommitMode::Sync) else {
                break;
            };
            match &why {
                Drain::HandOver(r) => {
                    self.batch.forget(&r.partitions);
                    break;
                }
                Drain::Shutdown { deadline } if retry < *deadline => {
                    tokio::time::sleep_until(retry).await
                }
                Drain::Shutdown { .. } => {
                    tracing::error!(
                        messages = self.batch.messages,
                        "store still failing at the shutdown deadline; these messages were \
                         not committed and will be read again"
                    );
                    break;
                }
            }
        }
        if let Drain::HandOver(revocation) = why {
            self.reader.forget(&revocation.partitions);
            self.take_assigned();
            self.restoring
                .retain(|p| !revocation.partitions.contains(p));
            kafka::complete_revocation(&self.consumer, &revocation);
            if self.batch.messages == 0 {
                // Nothing left to write: the remaining partitions read again.
                if self.paused {
                    self.set_paused(false);
                }
                self.phase = Phase::Consuming { flush_owed: false };
            }
        }
    }

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

    /// Acts on a write's outcome: commits and resumes, or pauses and waits
    /// for the store. Returns when to try again, if the write failed.
    fn after_write(&mut self, f: Flushed, mode: CommitMode) -> Option<Instant> {
        match f {
            Flushed::Done(commits, refused, span) => {
                span.in_scope(|| self.commit(&commits, mode));
                self.state.rebuilt_to(&commits, &self.metrics);
                self.reader.force_snapshot(&refused);
                if self.paused {
                    self.set_paused(false);
                }
                if let Phase::WaitingForStore { .. } = self.phase {
                    self.phase = Phase::Consuming { flush_owed: false };
                }
                None
            }
            Flushed::Retry(retry) => {
                if !self.paused {
                    self.set_paused(true);
                }
                self.phase = Phase::WaitingForStore { retry };
                Some(retry)
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
            .time_store(
                StoreOperation::LoadFilters,
                self.store.load_filters(&sources),
            )
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
}

/// `Flush` when `due`.
fn flush_if(due: bool) -> Next {
    if due {
        Next::Flush
    } else {
        Next::Wait
    }
}

/// Sleeps until `t`; never when there is none.
async fn sleep_until(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}
