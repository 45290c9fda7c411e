//! Kafka clients: consumer and dead-letter producer configuration, the
//! consumer context that reports rebalances, assignment and lag, and the
//! consumer's errors as they reach the log.

use super::partition::PartitionId;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{
    BaseConsumer, Consumer, ConsumerContext, RebalanceProtocol, StreamConsumer,
};
use rdkafka::error::KafkaError;
use rdkafka::statistics::Statistics;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::ClientConfig;
use rdkafka::TopicPartitionList;

use crate::config::KafkaSettings;
use crate::dependency::{Dependency, KafkaLink};
use crate::metrics::Metrics;

/// A client of `kafka.brokers` with `defaults`, then the operator's
/// `kafka.properties` on top (for a producer, without the consumer-only ones).
pub fn client_config(
    kafka: &KafkaSettings,
    defaults: &[(&str, &str)],
    producer: bool,
) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &kafka.brokers);
    for (k, v) in defaults {
        c.set(*k, *v);
    }
    for (k, v) in &kafka.properties {
        let skip = if producer {
            k.starts_with("group.")
                || k.starts_with("partition.assignment")
                || CONSUMER_ONLY.contains(&k.as_str())
        } else {
            PRODUCER_ONLY.contains(&k.as_str())
        };
        if !skip {
            c.set(k, v);
        }
    }
    c
}

/// Properties of consumers alone besides `group.*` and
/// `partition.assignment.*`: a producer is not given them (librdkafka would
/// warn that it ignores them).
const CONSUMER_ONLY: [&str; 9] = [
    "session.timeout.ms",
    "heartbeat.interval.ms",
    "max.poll.interval.ms",
    "auto.offset.reset",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "fetch.wait.max.ms",
    "fetch.min.bytes",
    "isolation.level",
];

/// Properties of producers alone: a consumer is not given them (librdkafka
/// would warn that it ignores them).
const PRODUCER_ONLY: [&str; 8] = [
    "acks",
    "compression.type",
    "delivery.timeout.ms",
    "enable.idempotence",
    "linger.ms",
    "message.timeout.ms",
    "queue.buffering.max.ms",
    "request.required.acks",
];

/// Consumer configuration. Offsets are never stored or committed
/// automatically: the consumer commits exactly what the store acknowledged
/// (with automatic offset storing, a dropped consumer can commit messages it
/// never processed).
pub fn consumer_config(kafka: &KafkaSettings, group: bool) -> ClientConfig {
    let mut defaults = vec![
        ("group.id", kafka.group_id.as_str()),
        ("enable.auto.commit", "false"),
        ("enable.auto.offset.store", "false"),
        ("auto.offset.reset", "earliest"),
        ("statistics.interval.ms", "5000"),
        // librdkafka's default (1 s) stalls a partition whose prefetch queue
        // filled, even after the consumer drained it: end-to-end throughput
        // went from 119 to 255 k/s with 10 ms.
        ("fetch.queue.backoff.ms", "10"),
        // A fetch that finds nothing new waits at most this long: 100 ms
        // instead of 500 halved event-to-visible latency at 50 k/s (p50
        // 423→206 ms, p99 986→492 ms).
        ("fetch.wait.max.ms", "100"),
    ];
    if group {
        // Eager assignors re-deliver thousands of messages per rebalance.
        defaults.push(("partition.assignment.strategy", "cooperative-sticky"));
    }
    client_config(kafka, &defaults, false)
}

/// The lag of every partition `consumer` is assigned, from the brokers'
/// high watermarks (asked now) and what was committed (`commits`) or read
/// so far: while partitions are paused, librdkafka's statistics keep the
/// watermarks of their last fetch, and the lag would freeze (DESIGN §13).
/// Blocks on the brokers: call it off the async threads.
pub fn paused_lag(consumer: &impl Consumer<Context>, commits: bool, metrics: &Metrics) {
    let timeout = Duration::from_secs(2);
    let Ok(assignment) = consumer.assignment() else {
        return;
    };
    let done = if commits {
        consumer.committed(timeout).ok()
    } else {
        consumer.position().ok()
    };
    for e in assignment.elements() {
        let (topic, partition) = (e.topic(), e.partition());
        let Ok((_, high)) = consumer.fetch_watermarks(topic, partition, timeout) else {
            continue;
        };
        let at = done
            .as_ref()
            .and_then(|d| d.find_partition(topic, partition))
            .and_then(|p| p.offset().to_raw())
            .filter(|o| *o >= 0);
        let lag = match at {
            Some(o) => high - o,
            // Nothing committed yet: everything up to the watermark waits
            // (the low watermark is not asked: an upper bound is the point).
            None => high,
        };
        metrics
            .consumer_lag
            .with_label_values(&[topic, &partition.to_string()])
            .set(lag.max(0));
    }
}

/// Dead-letter producer configuration: acknowledged by all replicas,
/// idempotent, compressed; a dead letter not acknowledged within 30 s
/// fails its flush (which is retried) instead of holding it for
/// librdkafka's default of five minutes.
pub fn producer_config(kafka: &KafkaSettings) -> ClientConfig {
    let defaults = [
        ("statistics.interval.ms", "5000"),
        ("message.timeout.ms", "30000"),
        ("acks", "all"),
        ("enable.idempotence", "true"),
        ("compression.type", "lz4"),
        ("linger.ms", "5"),
    ];
    client_config(kafka, &defaults, true)
}

/// State shared between the consumer's callbacks and the rest of the service.
#[derive(Clone)]
pub struct ConsumerState {
    /// Kafka, up or down, as the consumer's clients see it.
    pub kafka: Dependency,
    /// The memory store's rebuild from the topics, while it runs.
    pub(super) rebuild: Arc<Mutex<Option<super::rebuild::Rebuild>>>,
    assigned: Arc<Mutex<HashSet<PartitionId>>>,
    has_assignment: Arc<AtomicBool>,
    generation: Arc<AtomicU64>,
    /// Why the last flush failed; None once one succeeds.
    flush_problem: Arc<Mutex<Option<String>>>,
    /// Every partition is paused (flushes failing): librdkafka's statistics
    /// no longer see the high watermarks move, so the lag is measured by
    /// the consumer loop instead.
    paused: Arc<AtomicBool>,
    revoking: Arc<Mutex<Option<Revocation>>>,
    revoke_signal: Arc<tokio::sync::Notify>,
    closing: Arc<AtomicBool>,
    /// Pause newly assigned partitions until their duplicate filters are restored.
    restores: Arc<AtomicBool>,
    to_restore: Arc<Mutex<Vec<PartitionId>>>,
    restore_signal: Arc<tokio::sync::Notify>,
}

impl ConsumerState {
    /// The state of a consumer not started yet, whose clients report
    /// Kafka's state to `kafka`.
    pub fn new(kafka: Dependency) -> ConsumerState {
        ConsumerState {
            kafka,
            rebuild: Arc::default(),
            assigned: Arc::default(),
            has_assignment: Arc::default(),
            generation: Arc::default(),
            flush_problem: Arc::default(),
            paused: Arc::default(),
            revoking: Arc::default(),
            revoke_signal: Arc::default(),
            closing: Arc::default(),
            restores: Arc::default(),
            to_restore: Arc::default(),
            restore_signal: Arc::default(),
        }
    }

    /// Changes whenever the assignment changes: cached fences are then stale.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Why flushes are failing (the store, the dead-letter topic), while
    /// they are: readiness reports it.
    pub fn flush_problem(&self) -> Option<String> {
        self.flush_problem.lock().clone()
    }

    /// Records the outcome of the last flush: None when it was written.
    pub fn set_flush_problem(&self, problem: Option<String>) {
        *self.flush_problem.lock() = problem;
    }

    /// Records whether every partition is paused.
    pub fn set_paused(&self, paused: bool) {
        self.paused.store(paused, Ordering::Relaxed);
    }

    /// True once the consumer holds at least one partition.
    pub fn is_assigned(&self) -> bool {
        self.has_assignment.load(Ordering::Relaxed)
    }

    /// Records a static assignment (no group).
    pub fn set_assigned(&self, partitions: impl IntoIterator<Item = PartitionId>) {
        let mut a = self.assigned.lock();
        a.extend(partitions);
        self.has_assignment.store(!a.is_empty(), Ordering::Relaxed);
    }
}

/// The consumer's librdkafka context.
pub struct Context {
    /// Where metrics go.
    pub metrics: Metrics,
    /// Assignment, shared with readiness.
    pub state: ConsumerState,
    /// Kafka's state and librdkafka's folded logs.
    pub link: KafkaLink,
}

impl ClientContext for Context {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        self.link.log(level, fac, message)
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.link.error(error, reason)
    }

    fn stats(&self, stats: Statistics) {
        self.link.seen(&stats);
        if self.state.paused.load(Ordering::Relaxed) {
            return; // stale while paused: see `paused_lag`
        }
        for (topic, t) in &stats.topics {
            for (id, p) in &t.partitions {
                if *id < 0 || !p.desired {
                    continue;
                }
                let done = if p.committed_offset >= 0 {
                    p.committed_offset
                } else {
                    p.app_offset
                };
                if done >= 0 && p.hi_offset >= 0 {
                    self.metrics
                        .consumer_lag
                        .with_label_values(&[topic, &id.to_string()])
                        .set((p.hi_offset - done).max(0));
                }
            }
        }
    }
}

impl Context {
    /// Bookkeeping after the assignment changed: fences go stale, metrics and
    /// readiness follow.
    fn record(&self, added: &[PartitionId], removed: &[PartitionId]) {
        self.metrics.rebalances.inc();
        self.state.generation.fetch_add(1, Ordering::AcqRel);
        let mut assigned = self.state.assigned.lock();
        assigned.extend(added.iter().cloned());
        for id in removed {
            assigned.remove(id);
            let _ = self
                .metrics
                .consumer_lag
                .remove_label_values(&[id.topic(), &id.partition().to_string()]);
        }
        self.metrics.partitions_assigned.set(assigned.len() as i64);
        self.state
            .has_assignment
            .store(!assigned.is_empty(), Ordering::Relaxed);
        tracing::info!(partitions = assigned.len(), "assignment changed");
    }
}

/// Partitions the group took away, waiting for the consumer loop to flush
/// and commit what it read from them before it hands them over.
#[derive(Debug, Clone)]
pub struct Revocation {
    /// The partitions.
    pub partitions: Vec<PartitionId>,
    cooperative: bool,
}

impl ConsumerState {
    /// A revocation waiting to be completed, if any.
    pub fn take_revocation(&self) -> Option<Revocation> {
        self.revoking.lock().take()
    }

    /// From now on revocations complete at once: the loop has flushed for
    /// the last time and is leaving the group.
    pub fn set_closing(&self) {
        self.closing.store(true, Ordering::Release);
    }

    /// Resolves when a revocation is waiting.
    pub async fn revoked(&self) {
        self.revoke_signal.notified().await
    }

    /// From now on, newly assigned partitions are paused until the consumer
    /// loop restored their duplicate filters ([`ConsumerState::take_assigned`]).
    pub fn set_restores(&self) {
        self.restores.store(true, Ordering::Release);
    }

    /// Partitions assigned and paused since the last call, to be restored.
    pub fn take_assigned(&self) -> Vec<PartitionId> {
        std::mem::take(&mut *self.to_restore.lock())
    }

    /// Resolves when partitions are waiting to be restored.
    pub async fn assigned(&self) {
        self.restore_signal.notified().await
    }
}

/// Hands revoked partitions over (after the loop flushed and committed).
pub fn complete_revocation(consumer: &StreamConsumer<Context>, r: &Revocation) {
    let mut tpl = TopicPartitionList::new();
    for id in &r.partitions {
        tpl.add_partition(id.topic(), id.partition());
    }
    let result = if r.cooperative {
        consumer.incremental_unassign(&tpl)
    } else {
        consumer.unassign()
    };
    if let Err(e) = result {
        tracing::warn!(error = %e, "handing over revoked partitions failed");
    }
    consumer.context().record(&[], &r.partitions);
}

/// The partitions of `tpl`.
pub(super) fn elements(tpl: &TopicPartitionList) -> Vec<PartitionId> {
    tpl.elements()
        .iter()
        .map(|e| PartitionId::new(e.topic(), e.partition()))
        .collect()
}

impl ConsumerContext for Context {
    /// Assignments take effect at once. Revocations are deferred to the
    /// consumer loop, which flushes and commits what it read from the
    /// revoked partitions and then hands them over
    /// ([`complete_revocation`]); the group waits for that.
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let result = if cooperative {
                    consumer.incremental_assign(tpl)
                } else {
                    consumer.assign(tpl)
                };
                if let Err(e) = result {
                    tracing::error!(error = %e, "taking assigned partitions failed");
                }
                if self.state.restores.load(Ordering::Acquire) && tpl.count() > 0 {
                    // Nothing of these is fetched before their filters are restored.
                    if let Err(e) = consumer.pause(tpl) {
                        tracing::error!(error = %e, "pausing assigned partitions failed");
                    }
                    self.state.to_restore.lock().extend(elements(tpl));
                    self.state.restore_signal.notify_one();
                }
                self.record(&elements(tpl), &[]);
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS
                if self.state.closing.load(Ordering::Acquire) =>
            {
                let result = if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                };
                if let Err(e) = result {
                    tracing::warn!(error = %e, "giving up partitions failed");
                }
                self.record(&[], &elements(tpl));
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                *self.state.revoking.lock() = Some(Revocation {
                    partitions: elements(tpl),
                    cooperative,
                });
                self.state.revoke_signal.notify_one();
            }
            other => {
                tracing::warn!(error = ?other, "rebalance error; giving up the assignment");
                let removed: Vec<_> = self.state.assigned.lock().iter().cloned().collect();
                let _ = consumer.unassign();
                self.record(&[], &removed);
            }
        }
    }
}

/// Kafka's errors as they reach the log: the first at once, then at most one
/// line every 10 s with how many came meanwhile. librdkafka queues one error
/// per broker and per attempt while a cluster is unreachable, which would
/// otherwise be thousands of identical lines.
#[derive(Default)]
pub(super) struct ErrorLog {
    last: Option<tokio::time::Instant>,
    suppressed: u64,
}

impl ErrorLog {
    const EVERY: Duration = Duration::from_secs(10);

    pub fn report(&mut self, e: &rdkafka::error::KafkaError) {
        let now = tokio::time::Instant::now();
        if self.last.is_some_and(|t| now - t < Self::EVERY) {
            self.suppressed += 1;
            return;
        }
        tracing::warn!(error = %e, more_since_last = self.suppressed, "Kafka consumer error");
        self.last = Some(now);
        self.suppressed = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_client_gets_the_operators_properties_that_are_its_own() {
        let mut k = crate::config::Settings::defaults().kafka;
        for (key, value) in [
            ("session.timeout.ms", "6000"),
            ("group.instance.id", "m1"),
            ("linger.ms", "7"),
            ("security.protocol", "ssl"),
        ] {
            k.properties.insert(key.into(), value.into());
        }
        let producer = producer_config(&k);
        assert_eq!(producer.get("session.timeout.ms"), None);
        assert_eq!(producer.get("group.instance.id"), None);
        assert_eq!(producer.get("linger.ms"), Some("7"));
        assert_eq!(producer.get("security.protocol"), Some("ssl"));
        let consumer = consumer_config(&k, true);
        assert_eq!(consumer.get("session.timeout.ms"), Some("6000"));
        assert_eq!(consumer.get("group.instance.id"), Some("m1"));
        assert_eq!(consumer.get("linger.ms"), None);
        assert_eq!(consumer.get("security.protocol"), Some("ssl"));
    }
}
