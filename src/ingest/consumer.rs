//! The consumer: its clients built, the group joined (or, with a memory
//! store, every partition assigned from the beginning), then the loop of
//! [`super::drive`] run until shutdown. It owns the Kafka consumer; the
//! reader and the writer never touch it.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use rdkafka::consumer::Consumer;
use rdkafka::producer::FutureProducer;
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::dependency::{Backoff, KafkaLink};
use crate::metrics::Metrics;
use crate::scoring::Profiles;
use crate::store::pending::Pending;
use crate::store::Writes;

use super::dead_letter::{DeadLetters, Origin};
use super::drive::{KafkaConsumer, Loop};
use super::kafka::{self, ConsumerState};
use super::partition::PartitionId;
use super::reader::{Filters, Reader};
use super::writer::{InFlight, Writer};

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
            reader: Reader::new(&settings, metrics.clone(), Filters::of_consumer(durable)),
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
        // The store is connected: its layout is the one its writes take.
        let writing = InFlight::new(writer.laid_out(store.layout()));
        Loop::new(
            consumer,
            reader,
            store,
            state,
            metrics,
            writing,
            &settings.ingest,
        )
        .run(shutdown)
        .await;
        Ok(())
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
