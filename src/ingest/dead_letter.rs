//! Invalid messages to the dead-letter topic, with headers naming the reason,
//! where they came from and their size, before their offsets are committed.
//! A message larger than any topic takes is sent truncated (see
//! [`super::batch::DEAD_LETTER_MAX_BYTES`]), so no message stops the consumer.
//! A service that reads its topics again from the beginning at each start
//! (the memory store) first reads what the dead-letter topic already holds
//! ([`already_sent`]), so that each invalid message is sent there once.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::message::{Headers as _, Message as _};
use rdkafka::{Offset, TopicPartitionList};

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::dependency::KafkaLink;
use crate::metrics::{Metrics, Outcome, UNKNOWN_TYPE};

use super::batch::DeadLetter;
use crate::config::KafkaSettings;

/// Where a dead letter came from: its topic, partition and offset.
pub(crate) type Origin = (String, i32, i64);

/// Most origins remembered from the dead-letter topic at start.
const MAX_REMEMBERED: usize = 1_000_000;
/// Longest a start spends reading the dead-letter topic.
const READ_FOR: Duration = Duration::from_secs(60);

/// The dead-letter topic's producer.
pub(super) struct DeadLetters {
    /// None in the in-memory benchmark pipeline: invalid messages are counted and dropped.
    producer: Option<FutureProducer<KafkaLink>>,
    topic: String,
    metrics: Metrics,
    /// Origins the topic held at start: not sent again.
    sent: HashSet<Origin>,
}

impl DeadLetters {
    pub fn new(
        producer: Option<FutureProducer<KafkaLink>>,
        topic: String,
        metrics: Metrics,
    ) -> DeadLetters {
        DeadLetters {
            producer,
            topic,
            metrics,
            sent: HashSet::new(),
        }
    }

    /// From now on, does not send again what came from one of `sent`.
    pub fn remember(&mut self, sent: HashSet<Origin>) {
        self.sent = sent;
    }

    /// Delivers every message of `dead`; those not delivered stay in it.
    pub async fn send(&self, dead: &mut Vec<DeadLetter>) -> anyhow::Result<()> {
        if !self.sent.is_empty() {
            dead.retain(|d| {
                let origin = (d.topic.clone(), d.partition, d.offset);
                !self.sent.contains(&origin)
            });
        }
        if dead.is_empty() {
            return Ok(());
        }
        let Some(producer) = &self.producer else {
            dead.clear();
            return Ok(());
        };
        let sends = dead.iter().map(|d| {
            let partition = d.partition.to_string();
            let offset = d.offset.to_string();
            let size = d.original_size.to_string();
            let headers = [
                ("x-error", d.reason.as_str()),
                ("x-source-topic", d.topic.as_str()),
                ("x-source-partition", partition.as_str()),
                ("x-source-offset", offset.as_str()),
                ("x-original-size", size.as_str()),
            ]
            .into_iter()
            .fold(OwnedHeaders::new(), |hs, (key, value)| {
                hs.insert(Header {
                    key,
                    value: Some(value),
                })
            });
            let mut record = FutureRecord::<[u8], [u8]>::to(&self.topic)
                .payload(&d.payload)
                .headers(headers);
            if let Some(k) = &d.key {
                record = record.key(k);
            }
            producer.send(record, Duration::from_secs(30))
        });
        let results = futures::future::join_all(sends).await;
        let mut failed = Vec::new();
        for (d, r) in std::mem::take(dead).into_iter().zip(results) {
            match r {
                Ok(_) => self
                    .metrics
                    .events
                    .with_label_values(&[UNKNOWN_TYPE, Outcome::DeadLettered.as_str()])
                    .inc(),
                Err((e, _)) => {
                    tracing::warn!(error = %e, "dead-letter delivery failed");
                    failed.push(d);
                }
            }
        }
        if !failed.is_empty() {
            let n = failed.len();
            *dead = failed;
            anyhow::bail!("{n} dead letters not delivered");
        }
        Ok(())
    }
}

/// The origins of the dead letters `kafka`'s dead-letter topic holds (its
/// `x-source-*` headers), read from the beginning up to its end as it is
/// now: at most [`MAX_REMEMBERED`] of them, for at most [`READ_FOR`] (what
/// is not read in time may be sent again, never lost). Blocks.
pub(super) fn already_sent(
    kafka: &KafkaSettings,
    link: KafkaLink,
) -> anyhow::Result<HashSet<Origin>> {
    let topic = kafka.topics.dead_letter.as_str();
    let consumer: BaseConsumer<KafkaLink> = super::kafka::client_config(
        kafka,
        &[
            ("group.id", kafka.group_id.as_str()),
            ("enable.auto.commit", "false"),
            ("enable.partition.eof", "false"),
        ],
        false,
    )
    .create_with_context(link)
    .context("creating the dead-letter topic's reader")?;
    let timeout = Duration::from_secs(10);
    let metadata = consumer
        .fetch_metadata(Some(topic), timeout)
        .context("reading the dead-letter topic's metadata")?;
    let mut tpl = TopicPartitionList::new();
    let mut ends = Vec::new();
    for p in metadata.topics().iter().flat_map(|t| t.partitions()) {
        let (low, high) = consumer
            .fetch_watermarks(topic, p.id(), timeout)
            .context("reading the dead-letter topic's watermarks")?;
        if high > low {
            tpl.add_partition_offset(topic, p.id(), Offset::Offset(low))?;
            ends.push((p.id(), high));
        }
    }
    let mut sent = HashSet::new();
    if ends.is_empty() {
        return Ok(sent);
    }
    consumer.assign(&tpl)?;
    let deadline = Instant::now() + READ_FOR;
    while !ends.is_empty() && Instant::now() < deadline && sent.len() < MAX_REMEMBERED {
        let Some(m) = consumer.poll(Duration::from_millis(500)) else {
            continue;
        };
        let m = m.context("reading the dead-letter topic")?;
        if let Some(origin) = origin_of(&m) {
            sent.insert(origin);
        }
        let (partition, next) = (m.partition(), m.offset() + 1);
        ends.retain(|(p, end)| !(*p == partition && next >= *end));
    }
    if !ends.is_empty() {
        tracing::warn!(
            remembered = sent.len(),
            "the dead-letter topic was not read to its end; some invalid messages may be dead-lettered again"
        );
    }
    Ok(sent)
}

/// Where a dead letter came from, by its headers.
fn origin_of(m: &impl rdkafka::message::Message) -> Option<Origin> {
    let headers = m.headers()?;
    let mut origin = (None, None, None);
    for h in headers.iter() {
        let value = std::str::from_utf8(h.value?).ok()?;
        match h.key {
            "x-source-topic" => origin.0 = Some(value.to_string()),
            "x-source-partition" => origin.1 = value.parse().ok(),
            "x-source-offset" => origin.2 = value.parse().ok(),
            _ => {}
        }
    }
    Some((origin.0?, origin.1?, origin.2?))
}
