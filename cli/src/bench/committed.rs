//! What a consumer group has committed, read from the brokers: row (t)
//! knows that a backlog is drained when the service's group has committed
//! every message the topics hold, without asking the service. Polling its
//! `/metrics` every 10 ms for that cost the service 8.6% of its CPU while
//! it drained (a Prometheus scrapes every 15 s or more).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use popularity::config::KafkaSettings;

/// How long one request to the brokers may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// A client of the brokers that reads one group's commits on some topics.
/// It never joins the group.
pub(super) struct Committed {
    consumer: Arc<BaseConsumer>,
    partitions: TopicPartitionList,
}

impl Committed {
    /// Reads `group`'s commits on every partition of `topics`.
    pub fn new(kafka: &KafkaSettings, group: &str, topics: &[&str]) -> anyhow::Result<Committed> {
        let defaults = [("group.id", group), ("enable.auto.commit", "false")];
        let consumer: BaseConsumer = popularity::ingest::client_config(kafka, &defaults, false)
            .create()
            .context("creating a client to read the group's commits")?;
        let mut partitions = TopicPartitionList::new();
        for topic in topics {
            let metadata = consumer.fetch_metadata(Some(topic), TIMEOUT)?;
            for t in metadata.topics() {
                for p in t.partitions() {
                    partitions.add_partition(topic, p.id());
                }
            }
        }
        anyhow::ensure!(partitions.count() > 0, "no partitions in {topics:?}");
        Ok(Committed {
            consumer: Arc::new(consumer),
            partitions,
        })
    }

    /// Messages the topics hold: their partitions' high watermarks, summed.
    pub async fn held(&self) -> anyhow::Result<i64> {
        let (consumer, partitions) = (self.consumer.clone(), self.partitions.clone());
        tokio::task::spawn_blocking(move || {
            partitions.elements().iter().try_fold(0, |sum, p| {
                let (_, high) = consumer.fetch_watermarks(p.topic(), p.partition(), TIMEOUT)?;
                anyhow::Ok(sum + high)
            })
        })
        .await?
    }

    /// What the group has committed: its offsets on the partitions, summed
    /// (a partition it has committed nothing on counts 0).
    pub async fn committed(&self) -> anyhow::Result<i64> {
        let (consumer, partitions) = (self.consumer.clone(), self.partitions.clone());
        tokio::task::spawn_blocking(move || {
            let done = consumer.committed_offsets(partitions, TIMEOUT)?;
            anyhow::Ok(
                done.elements()
                    .iter()
                    .map(|p| match p.offset() {
                        Offset::Offset(o) => o,
                        _ => 0,
                    })
                    .sum(),
            )
        })
        .await?
    }
}
