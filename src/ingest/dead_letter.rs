//! Invalid messages to the dead-letter topic, with headers naming the reason,
//! where they came from and their size, before their offsets are committed.
//! A message larger than any topic takes is sent truncated (see
//! [`super::batch::DEAD_LETTER_MAX_BYTES`]), so no message stops the consumer.

use std::time::Duration;

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::metrics::{Metrics, UNKNOWN_TYPE};

use super::batch::DeadLetter;

/// The dead-letter topic's producer.
pub(super) struct DeadLetters {
    /// None in the in-memory benchmark pipeline: invalid messages are counted and dropped.
    producer: Option<FutureProducer>,
    topic: String,
    metrics: Metrics,
}

impl DeadLetters {
    pub fn new(producer: Option<FutureProducer>, topic: String, metrics: Metrics) -> DeadLetters {
        DeadLetters {
            producer,
            topic,
            metrics,
        }
    }

    /// Delivers every message of `dead`; those not delivered stay in it.
    pub async fn send(&self, dead: &mut Vec<DeadLetter>) -> anyhow::Result<()> {
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
            *dead = failed;
            anyhow::bail!("{n} dead letters not delivered");
        }
        Ok(())
    }
}
