//! The service's dependencies (Kafka, the store) seen as up or down, and the
//! librdkafka context that reports Kafka's: a dependency that goes down is
//! logged once and once more when it comes back, not once per attempt
//! (DESIGN §15); readiness names what is down.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::statistics::Statistics;

use crate::metrics::Metrics;

/// One dependency: down (and why) or up. Clones share the state.
#[derive(Clone)]
pub struct Dependency {
    name: &'static str,
    /// Why it is down; None while it is up.
    down: Arc<Mutex<Option<String>>>,
    metrics: Metrics,
    /// Log lines about it, by kind: when each was last logged and how many
    /// were folded since (shared by every client of the dependency).
    folded: Arc<Mutex<HashMap<String, (Instant, u64)>>>,
}

impl Dependency {
    /// `name` ("kafka", "store"), up until it is reported down.
    pub fn new(name: &'static str, metrics: Metrics) -> Dependency {
        metrics.dependency_up.with_label_values(&[name]).set(1);
        Dependency {
            name,
            down: Arc::new(Mutex::new(None)),
            metrics,
            folded: Arc::default(),
        }
    }

    /// Reports a failure to reach it; logged when it was up.
    pub fn failed(&self, why: &str) {
        let mut down = self.down.lock();
        if down.is_none() {
            tracing::warn!(
                dependency = self.name,
                reason = why,
                "{} is down; retrying",
                self.name
            );
            self.metrics
                .dependency_up
                .with_label_values(&[self.name])
                .set(0);
        }
        *down = Some(why.to_string());
    }

    /// Reports that it answered; logged when it was down.
    pub fn reached(&self) {
        if self.down.lock().take().is_some() {
            tracing::info!(dependency = self.name, "{} is up", self.name);
            self.metrics
                .dependency_up
                .with_label_values(&[self.name])
                .set(1);
        }
    }

    /// Why it is down, while it is.
    pub fn problem(&self) -> Option<String> {
        self.down.lock().clone()
    }
}

/// Retries with a capped exponential backoff: 250 ms, doubled up to 10 s.
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff {
            next: Duration::from_millis(250),
        }
    }
}

impl Backoff {
    /// The wait before the next attempt.
    pub fn next_wait(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(Duration::from_secs(10));
        wait
    }
}

/// How long a kind of librdkafka log line is folded after it was logged.
const FOLD_FOR: Duration = Duration::from_secs(60);

/// librdkafka's logs and errors with each kind (facility, or error code)
/// logged at most once per [`FOLD_FOR`], the next one saying how many were
/// folded; "all brokers down" and a broker seen up drive [`Dependency`]
/// `kafka`.
pub struct KafkaLink {
    /// Kafka, as this client sees it.
    pub kafka: Dependency,
}

impl KafkaLink {
    /// A client's view of `kafka`.
    pub fn new(kafka: Dependency) -> KafkaLink {
        KafkaLink { kafka }
    }

    /// Some(folded since the last one) when a line of `kind` is to be logged.
    fn admit(&self, kind: &str) -> Option<u64> {
        let mut folded = self.kafka.folded.lock();
        let now = Instant::now();
        match folded.get_mut(kind) {
            Some((at, n)) if now.duration_since(*at) < FOLD_FOR => {
                *n += 1;
                None
            }
            Some((at, n)) => {
                let was = *n;
                (*at, *n) = (now, 0);
                Some(was)
            }
            None => {
                folded.insert(kind.to_string(), (now, 0));
                Some(0)
            }
        }
    }
}

impl ClientContext for KafkaLink {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        let serious = matches!(
            level,
            RDKafkaLogLevel::Emerg
                | RDKafkaLogLevel::Alert
                | RDKafkaLogLevel::Critical
                | RDKafkaLogLevel::Error
        );
        if !serious && !matches!(level, RDKafkaLogLevel::Warning) {
            tracing::debug!(target: "librdkafka", facility = fac, "{message}");
            return;
        }
        let Some(folded) = self.admit(fac) else {
            return;
        };
        if serious {
            tracing::error!(target: "librdkafka", facility = fac, folded, "{message}");
        } else {
            tracing::warn!(target: "librdkafka", facility = fac, folded, "{message}");
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown) {
            self.kafka.failed("no broker reachable");
            return;
        }
        let kind = format!("{:?}", error.rdkafka_error_code());
        if let Some(folded) = self.admit(&kind) {
            tracing::warn!(target: "librdkafka", folded, "{error}: {reason}");
        }
    }

    fn stats(&self, stats: Statistics) {
        self.seen(&stats);
    }
}

impl rdkafka::consumer::ConsumerContext for KafkaLink {}

impl KafkaLink {
    /// Kafka is up when a broker of the cluster (not a bootstrap address) is.
    pub fn seen(&self, stats: &Statistics) {
        if stats
            .brokers
            .values()
            .any(|b| b.nodeid >= 0 && b.state == "UP")
        {
            self.kafka.reached();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dependency_is_logged_and_exported_once_per_change_of_state() {
        let m = Metrics::new();
        let d = Dependency::new("store", m.clone());
        d.failed("connection refused");
        assert_eq!(d.problem().as_deref(), Some("connection refused"));
        assert!(m
            .render()
            .contains("popularity_dependency_up{dependency=\"store\"} 0"));
        d.failed("timed out");
        assert_eq!(d.problem().as_deref(), Some("timed out"));
        d.reached();
        assert_eq!(d.problem(), None);
        assert!(m
            .render()
            .contains("popularity_dependency_up{dependency=\"store\"} 1"));
    }

    #[test]
    fn a_kind_of_log_line_is_folded_for_a_minute() {
        let link = KafkaLink::new(Dependency::new("kafka", Metrics::new()));
        assert_eq!(link.admit("FAIL"), Some(0));
        for _ in 0..100 {
            assert_eq!(link.admit("FAIL"), None);
        }
        assert_eq!(link.admit("CONNECT"), Some(0), "another kind is its own");
        let other_client = KafkaLink::new(link.kafka.clone());
        assert_eq!(other_client.admit("FAIL"), None, "folded across clients");
        link.kafka.folded.lock().get_mut("FAIL").unwrap().0 -= FOLD_FOR;
        assert_eq!(
            link.admit("FAIL"),
            Some(101),
            "the next says how many were folded"
        );
    }

    #[test]
    fn backoff_doubles_up_to_ten_seconds() {
        let mut b = Backoff::default();
        let waits: Vec<u64> = (0..8).map(|_| b.next_wait().as_millis() as u64).collect();
        assert_eq!(waits, [250, 500, 1000, 2000, 4000, 8000, 10000, 10000]);
    }
}
