//! The consumer's processing without Kafka, for benchmarks.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::Settings;
use crate::metrics::Metrics;
use crate::store::Writes;

use super::batch::Batch;
use super::dead_letter::DeadLetters;
use super::kafka::ConsumerState;
use super::reader::Incoming;
use super::reader::{Filters, Reader};
use super::writer::{Flushed, InFlight, Writer};

/// decode → validate → filter → aggregate → store, exactly as
/// [`super::Ingest`] does it, fed from memory. Benchmarks use it to measure
/// what one replica can do in front of a real cluster; invalid messages are
/// counted and dropped (there is no dead-letter topic).
pub struct Pipeline {
    reader: Reader,
    writer: InFlight,
    batch: Batch,
    max_batch: usize,
    interval: Duration,
    /// When the last write started.
    last_write: Instant,
    waited: Duration,
}

fn written(f: Flushed) -> anyhow::Result<()> {
    match f {
        Flushed::Done(..) => Ok(()),
        Flushed::Retry(_) => anyhow::bail!("the store refused the flush"),
    }
}

impl Pipeline {
    /// A pipeline writing to `store`.
    pub fn new(settings: Arc<Settings>, store: Arc<dyn Writes>, metrics: Metrics) -> Pipeline {
        let profiles = crate::scoring::profiles(&settings.scoring);
        let filters = if store.durable() {
            Filters::Saved
        } else {
            Filters::Unsaved
        };
        let dead_letters = DeadLetters::new(None, String::new(), metrics.clone());
        let layout = store.layout();
        let writer = Writer::new(
            store,
            metrics.clone(),
            profiles,
            dead_letters,
            ConsumerState::new(crate::dependency::Dependency::new("kafka", metrics.clone())),
        )
        .laid_out(layout);
        Pipeline {
            reader: Reader::new(&settings, metrics, filters),
            writer: InFlight::new(writer),
            batch: Batch::default(),
            max_batch: settings.ingest.max_batch_events,
            interval: settings.ingest.flush_interval,
            last_write: Instant::now(),
            waited: Duration::ZERO,
        }
    }

    /// Reads one message (see [`Pipeline::read_all`]).
    pub async fn read(&mut self, m: Incoming<'_>) -> anyhow::Result<()> {
        self.read_all(&[m]).await
    }

    /// Reads messages, as the consumer reads what it has fetched. As in the
    /// consumer, a write starts every `ingest.flush_interval` (or as soon
    /// as the batch is full, see `Batch::full`) and the next batch is
    /// read meanwhile; a write that comes due while the last one is in
    /// progress starts when it ends, and this waits for it only when the
    /// batch is full.
    pub async fn read_all(&mut self, msgs: &[Incoming<'_>]) -> anyhow::Result<()> {
        self.reader.read_all(msgs, &mut self.batch);
        let full = self.batch.full(self.max_batch);
        if let Some(f) = self.writer.poll(&mut self.batch) {
            written(f)?;
        }
        if !full && (self.writer.busy() || self.last_write.elapsed() < self.interval) {
            return Ok(());
        }
        if self.writer.busy() {
            let started = Instant::now();
            if let Some(f) = self.writer.wait(&mut self.batch).await {
                written(f)?;
            }
            self.waited += started.elapsed();
        }
        self.reader.seal(&mut self.batch);
        self.writer.start(&mut self.batch);
        self.last_write = Instant::now();
        Ok(())
    }

    /// Time [`Pipeline::read_all`] spent waiting for a write to finish.
    pub fn waited(&self) -> Duration {
        self.waited
    }

    /// Writes everything read to the store (one attempt per batch).
    pub async fn flush(&mut self) -> anyhow::Result<()> {
        if let Some(f) = self.writer.wait(&mut self.batch).await {
            written(f)?;
        }
        if self.batch.messages > 0 {
            self.reader.seal(&mut self.batch);
            self.writer.start(&mut self.batch);
            if let Some(f) = self.writer.wait(&mut self.batch).await {
                written(f)?;
            }
        }
        Ok(())
    }
}

/// The reading step alone (decode → validate → filter into a batch), fed
/// from memory: the allocation micro-benchmark counts what it allocates per
/// event. Nothing is written; [`Reading::end_batch`] seals and drops the
/// batch as a flush would, keeping its buffers.
pub struct Reading {
    reader: Reader,
    batch: Batch,
}

impl Reading {
    /// A reader with `settings`, saving filter deltas as with a durable store.
    pub fn new(settings: &Settings) -> Reading {
        Reading {
            reader: Reader::new(settings, Metrics::new(), Filters::Saved),
            batch: Batch::default(),
        }
    }

    /// Reads messages into the batch, as the consumer reads what it has
    /// fetched.
    pub fn read_all(&mut self, msgs: &[Incoming<'_>]) {
        self.reader.read_all(msgs, &mut self.batch);
    }

    /// Messages in the batch.
    pub fn messages(&self) -> usize {
        self.batch.messages
    }

    /// Ends the batch as a flush does (the filters' deltas taken), then
    /// empties it.
    pub fn end_batch(&mut self) {
        self.reader.seal(&mut self.batch);
        self.batch.clear();
    }
}
