//! Produces [`crate::newsroom`] traffic to Kafka at a fixed rate or as fast
//! as the cluster takes it, for a duration or a count. Used by
//! `popularity loadgen` and the demo.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::stream::{FuturesUnordered, StreamExt};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio_util::sync::CancellationToken;

use crate::newsroom::Newsroom;
use popularity::config::KafkaSettings;

/// Deliveries awaited at once before producing more.
const IN_FLIGHT: usize = 20_000;

/// How much to send.
#[derive(Debug, Clone, Copy, Default)]
pub struct Limits {
    /// Messages per second; `None` for as fast as possible.
    pub rate: Option<f64>,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Stop after this many messages.
    pub count: Option<u64>,
    /// Print progress to stderr every second.
    pub progress: bool,
    /// Time the messages by this clock rather than the wall clock.
    pub clock: Option<EventClock>,
}

/// A clock that advances with the messages made, not with the wall clock:
/// a backlog produced in a second can span minutes of its events' time, as
/// one left by an outage does. Both the events' times and the messages'
/// Kafka timestamps (by which a consumer judges them) follow it.
#[derive(Debug, Clone, Copy)]
pub struct EventClock {
    /// The time of the newsroom's first message (ms since the epoch).
    pub start_ms: i64,
    /// Messages per second of this clock.
    pub per_second: f64,
}

impl EventClock {
    /// The time of message number `n` (counted from 0).
    pub fn at(&self, n: u64) -> i64 {
        self.start_ms + (n as f64 * 1_000.0 / self.per_second) as i64
    }
}

/// What was sent.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Sent {
    /// Messages acknowledged by the cluster.
    pub delivered: u64,
    /// Messages the cluster refused.
    pub failed: u64,
    /// Wall time taken.
    pub elapsed: Duration,
}

/// A producer tuned for throughput: batched, lz4-compressed.
pub fn producer(kafka: &KafkaSettings) -> anyhow::Result<FutureProducer> {
    let defaults = [
        ("linger.ms", "20"),
        ("batch.num.messages", "10000"),
        ("compression.type", "lz4"),
        ("queue.buffering.max.messages", "500000"),
    ];
    popularity::ingest::client_config(kafka, &defaults, true)
        .create()
        .context("creating the producer")
}

/// Sends newsroom traffic until a limit is reached or `stop` is cancelled.
pub async fn run(
    producer: &FutureProducer,
    kafka: &KafkaSettings,
    newsroom: &mut Newsroom,
    limits: Limits,
    stop: &CancellationToken,
) -> Sent {
    let started = Instant::now();
    let mut sent = Sent::default();
    let mut in_flight = FuturesUnordered::new();
    let mut next_report = started + Duration::from_secs(1);
    let mut reported = 0;
    loop {
        let n = newsroom.produced();
        if stop.is_cancelled()
            || limits.count.is_some_and(|c| n >= c)
            || limits.duration.is_some_and(|d| started.elapsed() >= d)
        {
            break;
        }
        if let Some(rate) = limits.rate.filter(|r| *r > 0.0) {
            let due = started + Duration::from_secs_f64(n as f64 / rate);
            let now = Instant::now();
            if due > now {
                tokio::select! {
                    _ = tokio::time::sleep(due - now) => {}
                    _ = stop.cancelled() => break,
                }
            }
        }
        let now_ms = match limits.clock {
            Some(clock) => clock.at(n),
            None => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0),
        };
        let m = newsroom.next(now_ms);
        let topic = m.topic_in(&kafka.topics);
        let headers = m.content_type.map(|ct| {
            OwnedHeaders::new().insert(Header {
                key: "content-type",
                value: Some(ct),
            })
        });
        loop {
            let mut record = FutureRecord::to(topic).key(&m.key).payload(&m.payload);
            if let Some(h) = &headers {
                record = record.headers(h.clone());
            }
            if limits.clock.is_some() {
                record = record.timestamp(now_ms);
            }
            match producer.send_result(record) {
                Ok(delivery) => {
                    in_flight.push(delivery);
                    break;
                }
                // The local queue is full: wait for deliveries, then retry.
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    match in_flight.next().await {
                        Some(r) => count(Some(r), &mut sent),
                        None => tokio::time::sleep(Duration::from_millis(10)).await,
                    }
                }
                Err(_) => {
                    sent.failed += 1;
                    break;
                }
            }
        }
        while in_flight.len() >= IN_FLIGHT {
            count(in_flight.next().await, &mut sent);
        }
        if limits.progress && Instant::now() >= next_report {
            while let Some(r) = futures::FutureExt::now_or_never(in_flight.next()).flatten() {
                count(Some(r), &mut sent);
            }
            let rate = sent.delivered - reported;
            reported = sent.delivered;
            eprintln!(
                "loadgen: {} delivered ({rate}/s), {} failed, {:.0}s",
                sent.delivered,
                sent.failed,
                started.elapsed().as_secs_f64()
            );
            next_report += Duration::from_secs(1);
        }
    }
    while let Some(r) = in_flight.next().await {
        count(Some(r), &mut sent);
    }
    sent.elapsed = started.elapsed();
    sent
}

/// Tallies one delivery report (the outer error: the report was lost).
fn count<T, E, C>(r: Option<Result<Result<T, E>, C>>, sent: &mut Sent) {
    match r {
        Some(Ok(Ok(_))) => sent.delivered += 1,
        Some(_) => sent.failed += 1,
        None => {}
    }
}
