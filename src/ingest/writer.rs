//! Step three of the write path: one batch to the store, in this order —
//! dead letters, article lifecycle, metadata of the batch's articles, the
//! fences of its groups, the fold, the fenced apply, then the duplicate
//! filters' deltas — and what should happen next (commit, or retry at a
//! time). The writer never touches the Kafka consumer: the consumer loop
//! commits, pauses and resumes on what it returns.
//!
//! [`InFlight`] runs one write at a time in a task of its own, so that the
//! next batch is read meanwhile; a batch that failed goes back in front of
//! what was read since.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt as _;
use tracing::Instrument as _;

use crate::event::EventType;
use crate::fence::FenceBook;
use crate::metrics::{Metrics, Outcome, StoreOperation};
use crate::now_ms;
use crate::scoring::{Aggregate, Group, Profiles};
use crate::store::{Layout, StoreError, Writes};

use super::batch::{Batch, Commit};
use super::catalog::Catalog;
use super::dead_letter::DeadLetters;
use super::fold;
use super::kafka::ConsumerState;

/// First and longest wait between retries of a failed flush.
const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);
/// Immediate retries of a write refused by its fences.
const CONFLICT_RETRIES: usize = 3;

/// What the consumer loop does after a write.
#[derive(Debug)]
pub(super) enum Flushed {
    /// Everything was applied: commit these offsets, resume if paused; the
    /// filters of these partitions (`topic/partition`) refused their delta
    /// and must save a snapshot next (their offsets are not committed).
    /// The commit is made in the span given, a child of the flush's.
    Done(Vec<Commit>, Vec<String>, tracing::Span),
    /// Nothing more can be done now: pause, and try again at this time.
    Retry(tokio::time::Instant),
}

/// Why a flush attempt failed.
#[derive(Debug, thiserror::Error)]
enum FlushError {
    /// The store failed or its answer is unknown.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Some groups or filters were refused: another writer moved their fences.
    #[error("{0} groups or filters refused by their fences")]
    Conflict(usize),
    /// Dead letters were not delivered.
    #[error("dead-letter topic: {0:#}")]
    DeadLetter(anyhow::Error),
}

/// Writes batches to the store.
pub(super) struct Writer {
    store: Arc<dyn Writes>,
    metrics: Metrics,
    profiles: Profiles,
    dead_letters: DeadLetters,
    catalog: Catalog,
    fences: FenceBook,
    state: ConsumerState,
    /// The store's units of atomic writing, asked once it is connected.
    layout: Layout,
    backoff: Duration,
}

impl Writer {
    pub fn new(
        store: Arc<dyn Writes>,
        metrics: Metrics,
        profiles: Profiles,
        dead_letters: DeadLetters,
        state: ConsumerState,
    ) -> Writer {
        Writer {
            store,
            metrics,
            profiles,
            dead_letters,
            catalog: Catalog::default(),
            fences: FenceBook::default(),
            state,
            layout: Layout::WHOLE,
            backoff: RETRY_MIN,
        }
    }

    /// The same writer, writing in the units of `layout` (the store's
    /// [`crate::store::RankingWrites::layout`], asked once it is connected).
    pub fn laid_out(mut self, layout: Layout) -> Writer {
        self.layout = layout;
        self
    }

    /// From now on, does not dead-letter again what came from one of `sent`.
    pub fn remember_dead_letters(
        &mut self,
        sent: std::collections::HashSet<super::dead_letter::Origin>,
    ) {
        self.dead_letters.remember(sent);
    }

    /// One attempt to write `batch` (with immediate retries of fence
    /// conflicts), in the span of its flush. On success the batch is emptied.
    pub async fn flush(&mut self, batch: &mut Batch) -> Flushed {
        let span = batch
            .trace
            .take()
            .unwrap_or_else(|| crate::telemetry::flush_span(batch.messages, batch.counted.len()));
        self.attempt(batch).instrument(span).await
    }

    async fn attempt(&mut self, batch: &mut Batch) -> Flushed {
        let started = Instant::now();
        let mut refused = Vec::new();
        let mut result = self.try_flush(batch, &mut refused).await;
        // Refused writes re-read the fences and go again at once: another
        // writer applied some of these events, the rest must still be applied.
        for _ in 0..CONFLICT_RETRIES {
            match &result {
                Err(FlushError::Conflict(_)) => result = self.try_flush(batch, &mut refused).await,
                _ => break,
            }
        }
        match result {
            Ok(()) => {
                self.metrics
                    .flush_duration
                    .observe(started.elapsed().as_secs_f64());
                self.metrics.flush_size.observe(batch.messages as f64);
                // A partition whose filter was not saved resumes, after a
                // crash, from its last commit, where the saved state can
                // still be rebuilt from.
                let commit = tracing::debug_span!(
                    target: crate::telemetry::SPANS,
                    "commit",
                    messages = batch.messages as i64,
                    events = batch.counted.len() as i64
                );
                let commits = batch
                    .commits()
                    .into_iter()
                    .filter(|(id, _)| !refused.iter().any(|r| r == id.name()))
                    .collect();
                batch.clear();
                self.backoff = RETRY_MIN;
                self.state.set_flush_problem(None);
                Flushed::Done(commits, refused, commit)
            }
            Err(e) => {
                let wait = self.backoff;
                self.backoff = (self.backoff * 2).min(RETRY_MAX);
                self.metrics.store_retries.inc();
                // Not ready until a flush succeeds: with the reason, clipped.
                let reason: String = e.to_string().chars().take(300).collect();
                self.state.set_flush_problem(Some(reason));
                tracing::warn!(error = %e, retry_in = ?wait, pending = batch.messages, "flush failed; partitions paused");
                Flushed::Retry(tokio::time::Instant::now() + wait)
            }
        }
    }

    async fn try_flush(
        &mut self,
        batch: &mut Batch,
        refused: &mut Vec<String>,
    ) -> Result<(), FlushError> {
        let store = &*self.store;
        let m = &self.metrics;
        // 1. Invalid messages reach the dead-letter topic before their offsets are committed.
        self.dead_letters
            .send(&mut batch.dead)
            .await
            .map_err(FlushError::DeadLetter)?;
        // 2. The catalogue (the lifecycle first, so events of this batch see
        // fresh metadata), and where each event goes.
        let routes = (self.catalog)
            .route(
                store,
                m,
                self.layout,
                &mut batch.lifecycle,
                &batch.counted,
                &batch.places,
            )
            .await?;
        // 3. The fences of the units routed to, for the partitions read.
        let sources: Vec<&str> = batch.partitions.iter().map(|p| p.id.name()).collect();
        let generation = self.state.generation();
        let fences = (self.fences)
            .read(store, m, &routes.units, &sources, generation)
            .await?;
        // 4. The fold, pure, and the fenced write.
        let aggregate = tracing::debug_span!(
            target: crate::telemetry::SPANS,
            "fold",
            events = batch.counted.len() as i64
        )
        .in_scope(|| {
            fold::fold(
                &routes,
                &batch.counted,
                &batch.partitions,
                &fences,
                self.profiles.clone(),
                now_ms(),
            )
        });
        if !aggregate.is_empty() {
            let writing = tracing::debug_span!(
                target: crate::telemetry::SPANS,
                "write",
                events = aggregate.events as i64,
                groups = aggregate.groups.len() as i64
            );
            let writing = self.fences.write(store, m, &aggregate).instrument(writing);
            let applied = writing.await?;
            if !applied.conflicts.iter().any(|u| *u.group() == Group::All) {
                self.observe_applied(&aggregate, batch);
            }
            if !applied.conflicts.is_empty() {
                m.fence_conflicts.inc_by(applied.conflicts.len() as u64);
                return Err(FlushError::Conflict(applied.conflicts.len()));
            }
        }
        for kind in EventType::ALL {
            m.events
                .with_label_values(&[kind.as_str(), Outcome::Unpublished.as_str()])
                .inc_by(routes.withdrawn[kind.index()]);
        }
        // 5. The duplicate filters, now that every group holds the batch.
        self.save_filters(batch, refused).await
    }

    /// Saves the batch's filter deltas; those refused by their saved
    /// state's fence join `refused` (they save a snapshot next).
    async fn save_filters(
        &self,
        batch: &mut Batch,
        refused: &mut Vec<String>,
    ) -> Result<(), FlushError> {
        if batch.filters.is_empty() {
            return Ok(());
        }
        let m = &self.metrics;
        let not_saved = m
            .time_store(
                StoreOperation::Filters,
                self.store.save_filters(&batch.filters),
            )
            .await?;
        if !not_saved.is_empty() {
            tracing::warn!(
                partitions = ?not_saved,
                "saved duplicate filter behind this batch's delta (the store lost writes, \
                 or another consumer wrote); saving a snapshot next"
            );
            m.fence_conflicts.inc_by(not_saved.len() as u64);
            refused.extend(not_saved);
        }
        batch.filters.clear();
        Ok(())
    }

    /// Counts the events newly applied to the overall ranking, and their
    /// event-to-visible latency.
    fn observe_applied(&self, aggregate: &Aggregate, batch: &Batch) {
        for kind in EventType::ALL {
            self.metrics
                .events
                .with_label_values(&[kind.as_str(), Outcome::Applied.as_str()])
                .inc_by(aggregate.counted(kind));
        }
        let applied_at = now_ms();
        let h = self.metrics.event_to_visible.local();
        for c in &batch.counted {
            h.observe(((applied_at - c.at_ms) as f64 / 1000.0).max(0.0));
        }
        h.flush();
    }
}

/// The result of writing one batch: the writer, the batch (emptied when it
/// was written) and what to do next.
pub(super) type Written = (Box<Writer>, Batch, Flushed);

/// The writer, idle or writing one batch in a task of its own (so that
/// aggregation and the store's round trips proceed on another core) while
/// the next batch is read.
pub(super) enum InFlight {
    /// With the last batch written, emptied: its buffers are reused, so a
    /// batch does not grow (and fault in) fresh memory every time.
    Idle(Box<Writer>, Box<Batch>),
    Busy(tokio::task::JoinHandle<Written>),
    /// Only while switching between the two.
    Gone,
}

/// The outcome of a write task; a panic in it is the consumer's panic.
fn joined(r: Result<Written, tokio::task::JoinError>) -> Written {
    r.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}

impl InFlight {
    pub fn new(writer: Writer) -> InFlight {
        InFlight::Idle(Box::new(writer), Box::default())
    }

    pub fn busy(&self) -> bool {
        matches!(self, InFlight::Busy(_))
    }

    /// Starts writing `batch` (which becomes empty); the writer must be idle.
    pub fn start(&mut self, batch: &mut Batch) {
        let InFlight::Idle(mut writer, spare) = std::mem::replace(self, InFlight::Gone) else {
            panic!("a write started while another is in progress");
        };
        let mut batch = std::mem::replace(batch, *spare);
        *self = InFlight::Busy(tokio::spawn(async move {
            let next = writer.flush(&mut batch).await;
            (writer, batch, next)
        }));
    }

    /// Resolves when the write in progress finishes; never if idle.
    pub async fn finished(&mut self) -> Written {
        match self {
            InFlight::Busy(write) => joined(write.await),
            _ => std::future::pending().await,
        }
    }

    /// Takes the result of a finished write. A batch that was not written
    /// goes back in front of what was read since, to be written with it.
    pub fn collect(&mut self, (writer, mut done, next): Written, batch: &mut Batch) -> Flushed {
        if matches!(next, Flushed::Retry(_)) {
            done.absorb(std::mem::take(batch));
            *batch = done;
            *self = InFlight::Idle(writer, Box::default());
        } else {
            *self = InFlight::Idle(writer, Box::new(done));
        }
        next
    }

    /// Settles the write in progress if it has finished, without waiting.
    pub fn poll(&mut self, batch: &mut Batch) -> Option<Flushed> {
        let InFlight::Busy(write) = self else {
            return None;
        };
        let done = write.now_or_never()?;
        Some(self.collect(joined(done), batch))
    }

    /// Waits for the write in progress, if any.
    pub async fn wait(&mut self, batch: &mut Batch) -> Option<Flushed> {
        if !self.busy() {
            return None;
        }
        let done = self.finished().await;
        Some(self.collect(done, batch))
    }

    /// The idle writer (after [`InFlight::wait`]).
    pub fn writer(&mut self) -> &mut Writer {
        match self {
            InFlight::Idle(w, _) => w,
            _ => panic!("the writer is writing"),
        }
    }
}
