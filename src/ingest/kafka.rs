//! Kafka clients: consumer and dead-letter producer configuration, and the
//! consumer context that reports rebalances, assignment and lag.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance};
use rdkafka::statistics::Statistics;
use rdkafka::ClientConfig;

use crate::config::KafkaSettings;
use crate::metrics::Metrics;

/// Consumer configuration. Offsets are never stored or committed
/// automatically: the consumer commits exactly what the store acknowledged
/// (with automatic offset storing, a dropped consumer can commit messages it
/// never processed).
pub fn consumer_config(kafka: &KafkaSettings, group: bool) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &kafka.brokers)
        .set("group.id", &kafka.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("statistics.interval.ms", "5000");
    if group {
        // Eager assignors re-deliver thousands of messages per rebalance.
        c.set("partition.assignment.strategy", "cooperative-sticky");
    }
    for (k, v) in &kafka.properties {
        c.set(k, v);
    }
    c
}

/// Dead-letter producer configuration: acknowledged by all replicas,
/// idempotent, compressed.
pub fn producer_config(kafka: &KafkaSettings) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &kafka.brokers)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("compression.type", "lz4")
        .set("linger.ms", "5");
    for (k, v) in &kafka.properties {
        if !k.starts_with("group.") && !k.starts_with("partition.assignment") {
            c.set(k, v);
        }
    }
    c
}

/// State shared between the consumer's callbacks and the rest of the service.
#[derive(Clone, Default)]
pub struct ConsumerState {
    assigned: Arc<Mutex<HashSet<(String, i32)>>>,
    has_assignment: Arc<AtomicBool>,
    generation: Arc<AtomicU64>,
    store_ok: Arc<AtomicBool>,
}

impl ConsumerState {
    /// Changes whenever the assignment changes: cached fences are then stale.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// False while flushes to the store are failing.
    pub fn store_ok(&self) -> bool {
        self.store_ok.load(Ordering::Relaxed)
    }

    /// Records whether the last flush reached the store.
    pub fn set_store_ok(&self, ok: bool) {
        self.store_ok.store(ok, Ordering::Relaxed);
    }

    /// True once the consumer holds at least one partition.
    pub fn is_assigned(&self) -> bool {
        self.has_assignment.load(Ordering::Relaxed)
    }

    /// Records a static assignment (no group).
    pub fn set_assigned(&self, partitions: impl IntoIterator<Item = (String, i32)>) {
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
}

impl ClientContext for Context {
    fn stats(&self, stats: Statistics) {
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

impl ConsumerContext for Context {
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        self.metrics.rebalances.inc();
        self.state.generation.fetch_add(1, Ordering::AcqRel);
        let mut assigned = self.state.assigned.lock();
        match rebalance {
            Rebalance::Assign(tpl) => {
                for e in tpl.elements() {
                    assigned.insert((e.topic().to_string(), e.partition()));
                }
            }
            Rebalance::Revoke(tpl) => {
                for e in tpl.elements() {
                    assigned.remove(&(e.topic().to_string(), e.partition()));
                    let _ = self
                        .metrics
                        .consumer_lag
                        .remove_label_values(&[e.topic(), &e.partition().to_string()]);
                }
            }
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance error"),
        }
        self.metrics.partitions_assigned.set(assigned.len() as i64);
        self.state
            .has_assignment
            .store(!assigned.is_empty(), Ordering::Relaxed);
        tracing::info!(partitions = assigned.len(), "assignment changed");
    }
}
