//! The consumer's processing without Kafka, for benchmarks.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::Settings;
use crate::metrics::Metrics;
use crate::store::Store;

use super::batch::{Batch, Incoming};
use super::dead_letter::DeadLetters;
use super::kafka::ConsumerState;
use super::reader::Reader;
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
    pub fn new(settings: Arc<Settings>, store: Arc<dyn Store>, metrics: Metrics) -> Pipeline {
        let profiles = crate::scoring::profiles(&settings.scoring);
        let durable = store.durable();
        let dead_letters = DeadLetters::new(None, String::new(), metrics.clone());
        let writer = Writer::new(
            store,
            metrics.clone(),
            profiles,
            dead_letters,
            ConsumerState::default(),
        );
        Pipeline {
            reader: Reader::new(&settings, metrics, durable, false),
            writer: InFlight::new(writer),
            batch: Batch::default(),
            max_batch: settings.ingest.max_batch_events,
            waited: Duration::ZERO,
        }
    }

    /// Reads one message. As in the consumer, a batch of
    /// `ingest.max_batch_events` starts its write and the next batch is read
    /// meanwhile; this waits only when that one is full too.
    pub async fn read(&mut self, m: Incoming<'_>) -> anyhow::Result<()> {
        self.reader.read(m, &mut self.batch);
        if self.batch.messages.is_multiple_of(64) || self.batch.messages >= self.max_batch {
            if let Some(f) = self.writer.poll(&mut self.batch) {
                written(f)?;
            }
        }
        if self.batch.messages >= self.max_batch {
            if self.writer.busy() {
                let started = Instant::now();
                if let Some(f) = self.writer.wait(&mut self.batch).await {
                    written(f)?;
                }
                self.waited += started.elapsed();
            }
            self.reader.seal(&mut self.batch);
            self.writer.start(&mut self.batch);
        }
        Ok(())
    }

    /// Time [`Pipeline::read`] spent waiting for a write to finish.
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
