//! Every metric the service exports (DESIGN §6), named in one place.
//!
//! Prefix `popularity_`, base units, `_total` counters, bounded labels only:
//! event types, outcomes, reasons, routes, status codes, topics and partition
//! numbers — never article ids.

use prometheus::core::Collector;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::event::{EventType, Invalid};

/// glibc's figures are read at most this often: `mallinfo2` walks every
/// arena's free lists while it holds the arena's lock, stopping the C
/// libraries' allocations meanwhile (scraped every 10 ms, it took 5% of a
/// consumer's CPU in docs/benchmarks.md's row (t)).
const LIBC_HEAP_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Label value of the `type` label for messages that never decoded.
pub const UNKNOWN_TYPE: &str = "unknown";

/// Generates a label enum whose values are declared once, with `ALL` and
/// `as_str`.
macro_rules! label_values {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $text:literal,)+ }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name {
            $($(#[$vdoc])* $variant,)+
        }

        impl $name {
            /// Every value, in the order declared.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The label value.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }
    };
}

label_values! {
    /// The `outcome` label of `events_total`.
    Outcome {
        /// Counted in the overall ranking.
        Applied = "applied",
        /// Same visitor, article and type within the window.
        Duplicate = "duplicate",
        /// Sent by a crawler.
        Bot = "bot",
        /// Older than `ingest.max_event_age`.
        Stale = "stale",
        /// Of a withdrawn article.
        Unpublished = "unpublished",
        /// Failed decoding or validation.
        Invalid = "invalid",
        /// Sent to the dead-letter topic.
        DeadLettered = "dead_lettered",
    }
}

label_values! {
    /// The `operation` label of the `store_*` metrics.
    StoreOperation {
        /// A flush's fenced increments.
        Apply = "apply",
        /// Articles published.
        Publish = "publish",
        /// Articles withdrawn.
        Unpublish = "unpublish",
        /// Articles' metadata read.
        Articles = "articles",
        /// Fences read.
        Fences = "fences",
        /// Duplicate filters' deltas saved.
        Filters = "filters",
        /// Duplicate filters restored.
        LoadFilters = "load_filters",
    }
}

/// The service's metrics and the registry that exports them.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Events by type and outcome.
    pub events: IntCounterVec,
    /// Invalid messages by reason.
    pub invalid: IntCounterVec,
    /// Flush duration, seconds.
    pub flush_duration: Histogram,
    /// Messages per flush.
    pub flush_size: Histogram,
    /// Messages the consumer read from Kafka, before decoding.
    pub messages_read: IntCounter,
    /// Store operation duration by operation, seconds.
    pub store_duration: HistogramVec,
    /// Store errors by operation.
    pub store_errors: IntCounterVec,
    /// Consumer lag per topic and partition, messages.
    pub consumer_lag: IntGaugeVec,
    /// Partitions currently assigned to this consumer.
    pub partitions_assigned: IntGauge,
    /// 1 while a dependency (`kafka`, `store`) answers, 0 while it is down.
    pub dependency_up: IntGaugeVec,
    /// Messages the memory store still has to read before it is rebuilt.
    pub rebuild_remaining: IntGauge,
    /// Rebalances seen by this consumer.
    pub rebalances: IntCounter,
    /// Partitions paused because the store is failing.
    pub partitions_paused: IntGauge,
    /// (visitor, article, type) windows the duplicate filters hold.
    pub dedupe_windows: IntGauge,
    /// Bytes the duplicate filters' tables take.
    pub dedupe_bytes: IntGauge,
    /// Bytes of the heap's live allocations, when the binary counts them
    /// ([`crate::heap::Counting`]); set when the metrics are rendered.
    heap_bytes: Option<IntGauge>,
    /// What C libraries hold in glibc's malloc, in use and taken from the
    /// kernel, beside a counted heap; set when the metrics are rendered, at
    /// most every [`LIBC_HEAP_EVERY`] (when last read: `libc_heap_read`).
    libc_heap_bytes: Option<IntGaugeVec>,
    libc_heap_read: std::sync::Arc<parking_lot::Mutex<Option<std::time::Instant>>>,
    /// Flush attempts that failed and were retried.
    pub store_retries: IntCounter,
    /// Group writes refused because another consumer had moved a fence.
    pub fence_conflicts: IntCounter,
    /// Time from an event's own timestamp to its being applied, seconds.
    pub event_to_visible: Histogram,
    /// HTTP requests by route and status.
    pub http_requests: IntCounterVec,
    /// HTTP request duration by route, seconds.
    pub http_duration: HistogramVec,
    /// Connections closed at once because `api.max_connections` were open.
    pub http_connections_refused: IntCounter,
    /// Alerts this replica recorded (claimed for their cooldown).
    pub alerts: IntCounter,
    /// Alert webhook deliveries by outcome (delivered, retried, failed, refused).
    pub alert_deliveries: IntCounterVec,
    /// Response cache lookups by result (hit, miss).
    pub cache: IntCounterVec,
    /// Collector: events acknowledged by Kafka.
    pub collector_events: IntCounter,
    /// Collector: requests refused, by reason.
    pub collector_rejected: IntCounterVec,
    /// Collector: events from crawler user agents, dropped.
    pub collector_bots: IntCounter,
    /// Collector: time from a request's first send to Kafka's last
    /// acknowledgement, seconds.
    pub collector_produce: Histogram,
    /// Collector: events Kafka did not acknowledge in time, or refused.
    pub collector_kafka_errors: IntCounter,
}

/// Reasons of `collector_rejected_total`.
pub const COLLECTOR_REASONS: [&str; 9] = [
    "invalid_event",
    "too_many_events",
    "payload_too_large",
    "body_timeout",
    "unsupported_media_type",
    "origin_not_allowed",
    "rate_limited",
    "site_quota",
    "unavailable",
];

/// Registers `metric` and returns it: every metric of the service goes
/// through here, so a name clash fails at start.
fn register<M: Collector + Clone + 'static>(
    registry: &Registry,
    metric: prometheus::Result<M>,
) -> M {
    let m = metric.expect("valid metric");
    registry
        .register(Box::new(m.clone()))
        .expect("unique metric");
    m
}

fn opts(name: &str, help: &str) -> Opts {
    Opts::new(name, help).namespace("popularity")
}

fn histogram_opts(name: &str, help: &str, buckets: Vec<f64>) -> HistogramOpts {
    HistogramOpts::from(opts(name, help)).buckets(buckets)
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(registry, IntCounterVec::new(opts(name, help), labels))
}

fn plain_counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    register(registry, IntCounter::with_opts(opts(name, help)))
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    register(registry, IntGauge::with_opts(opts(name, help)))
}

fn histogram(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: Vec<f64>,
) -> HistogramVec {
    register(
        registry,
        HistogramVec::new(histogram_opts(name, help, buckets), labels),
    )
}

fn plain_histogram(registry: &Registry, name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    register(
        registry,
        Histogram::with_opts(histogram_opts(name, help, buckets)),
    )
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric registered (and the label sets
    /// that are known in advance initialised at zero, so dashboards see them).
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let latency = vec![
            0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
            2.5, 5.0, 10.0,
        ];
        let events = counter(
            &registry,
            "events_total",
            "Events by type and outcome (applied, duplicate, bot, stale, unpublished, invalid, dead_lettered).",
            &["type", "outcome"],
        );
        for t in EventType::ALL.iter().map(|t| t.as_str()) {
            for o in &Outcome::ALL[..6] {
                events.with_label_values(&[t, o.as_str()]);
            }
        }
        for o in [Outcome::Invalid, Outcome::DeadLettered] {
            events.with_label_values(&[UNKNOWN_TYPE, o.as_str()]);
        }
        let invalid = counter(
            &registry,
            "invalid_messages_total",
            "Messages that failed decoding or validation, by reason.",
            &["reason"],
        );
        for r in Invalid::CODES {
            invalid.with_label_values(&[r]);
        }
        let flush_duration = plain_histogram(
            &registry,
            "flush_duration_seconds",
            "Time to write one flush to the store and commit it.",
            latency.clone(),
        );
        let flush_size = plain_histogram(
            &registry,
            "flush_messages",
            "Messages per flush.",
            prometheus::exponential_buckets(1.0, 4.0, 10).expect("buckets"),
        );
        let store_duration = histogram(
            &registry,
            "store_operation_duration_seconds",
            "Store operation duration by operation.",
            &["operation"],
            latency.clone(),
        );
        let store_errors = counter(
            &registry,
            "store_errors_total",
            "Store operations that failed, by operation.",
            &["operation"],
        );
        for op in StoreOperation::ALL {
            store_duration.with_label_values(&[op.as_str()]);
            store_errors.with_label_values(&[op.as_str()]);
        }
        let consumer_lag = register(
            &registry,
            IntGaugeVec::new(
                opts("consumer_lag", "Messages not yet committed, per partition."),
                &["topic", "partition"],
            ),
        );
        let partitions_assigned = gauge(
            &registry,
            "partitions_assigned",
            "Partitions assigned to this consumer.",
        );
        let dependency_up = register(
            &registry,
            IntGaugeVec::new(
                opts(
                    "dependency_up",
                    "1 while a dependency (kafka, store) answers, 0 while it is down.",
                ),
                &["dependency"],
            ),
        );
        let rebuild_remaining = gauge(
            &registry,
            "rebuild_remaining_messages",
            "Messages the memory store still has to read before it is rebuilt (0 when it is, or durable).",
        );
        let rebalances = plain_counter(
            &registry,
            "rebalances_total",
            "Consumer group rebalances seen.",
        );
        let messages_read = plain_counter(
            &registry,
            "messages_read_total",
            "Messages the consumer read from Kafka (both topics), before decoding.",
        );
        let partitions_paused = gauge(
            &registry,
            "partitions_paused",
            "Partitions paused while the store is failing.",
        );
        let dedupe_windows = gauge(
            &registry,
            "dedupe_windows",
            "(visitor, article, type) windows held by this consumer's duplicate filters.",
        );
        let dedupe_bytes = gauge(
            &registry,
            "dedupe_bytes",
            "Bytes of memory this consumer's duplicate filters hold (their tables as allocated).",
        );
        let heap_bytes = crate::heap::live_bytes().is_some().then(|| {
            gauge(
                &registry,
                "heap_bytes",
                "Bytes of the process's live heap allocations, as requested, and of the duplicate filters' large tables mapped apart (not what the allocator keeps; C libraries' own allocations not included).",
            )
        });
        let libc_heap_bytes = (heap_bytes.is_some() && crate::heap::libc_heap().is_some()).then(|| {
            register(
                &registry,
                IntGaugeVec::new(
                    opts(
                        "libc_heap_bytes",
                        "Bytes C libraries (librdkafka, OpenSSL) hold in glibc's malloc: in_use, and held (taken from the kernel).",
                    ),
                    &["state"],
                ),
            )
        });
        let store_retries = plain_counter(
            &registry,
            "store_retries_total",
            "Flush attempts that failed and were retried.",
        );
        let fence_conflicts = plain_counter(
            &registry,
            "fence_conflicts_total",
            "Group writes refused because another consumer had moved a fence.",
        );
        let event_to_visible = plain_histogram(
            &registry,
            "event_to_visible_seconds",
            "Time from an event's own timestamp to its being applied to the store.",
            vec![
                0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0,
            ],
        );
        let http_requests = counter(
            &registry,
            "http_requests_total",
            "HTTP requests by route and status.",
            &["route", "status"],
        );
        let http_duration = histogram(
            &registry,
            "http_request_duration_seconds",
            "HTTP request duration by route.",
            &["route"],
            latency,
        );
        let http_connections_refused = plain_counter(
            &registry,
            "http_connections_refused_total",
            "Connections closed at once because api.max_connections were open.",
        );
        let alerts = plain_counter(
            &registry,
            "alerts_total",
            "Alerts this replica recorded (an article taking off in a scope, once per cooldown).",
        );
        let alert_deliveries = counter(
            &registry,
            "alert_deliveries_total",
            "Alert webhook deliveries by outcome (delivered, retried, failed, refused).",
            &["outcome"],
        );
        for o in ["delivered", "retried", "failed", "refused"] {
            alert_deliveries.with_label_values(&[o]);
        }
        let cache = counter(
            &registry,
            "cache_requests_total",
            "Response cache lookups by result (hit, miss).",
            &["result"],
        );
        cache.with_label_values(&["hit"]);
        cache.with_label_values(&["miss"]);
        let collector_events = plain_counter(
            &registry,
            "collector_events_total",
            "Collector: events acknowledged by Kafka.",
        );
        let collector_rejected = counter(
            &registry,
            "collector_rejected_total",
            "Collector: requests refused, by reason.",
            &["reason"],
        );
        for r in COLLECTOR_REASONS {
            collector_rejected.with_label_values(&[r]);
        }
        let collector_bots = plain_counter(
            &registry,
            "collector_bot_events_total",
            "Collector: events from crawler user agents, dropped.",
        );
        let collector_produce = plain_histogram(
            &registry,
            "collector_produce_seconds",
            "Collector: time for Kafka to acknowledge a request's events.",
            vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ],
        );
        let collector_kafka_errors = plain_counter(
            &registry,
            "collector_kafka_errors_total",
            "Collector: events Kafka did not acknowledge in time, or refused.",
        );
        let build = register(
            &registry,
            IntGaugeVec::new(
                opts("build_info", "Build information; always 1."),
                &["version"],
            ),
        );
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        #[cfg(target_os = "linux")]
        registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("unique metric");
        Metrics {
            registry,
            events,
            invalid,
            flush_duration,
            flush_size,
            messages_read,
            store_duration,
            store_errors,
            consumer_lag,
            partitions_assigned,
            dependency_up,
            rebuild_remaining,
            rebalances,
            partitions_paused,
            dedupe_windows,
            dedupe_bytes,
            heap_bytes,
            libc_heap_bytes,
            libc_heap_read: Default::default(),
            store_retries,
            fence_conflicts,
            event_to_visible,
            http_requests,
            http_duration,
            http_connections_refused,
            alerts,
            alert_deliveries,
            cache,
            collector_events,
            collector_rejected,
            collector_bots,
            collector_produce,
            collector_kafka_errors,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        if let (Some(gauge), Some(live)) = (&self.heap_bytes, crate::heap::live_bytes()) {
            gauge.set(live as i64);
        }
        if let Some(gauge) = &self.libc_heap_bytes {
            let mut read = self.libc_heap_read.lock();
            if read.is_none_or(|at| at.elapsed() >= LIBC_HEAP_EVERY) {
                *read = Some(std::time::Instant::now());
                if let Some((in_use, held)) = crate::heap::libc_heap() {
                    gauge.with_label_values(&["in_use"]).set(in_use as i64);
                    gauge.with_label_values(&["held"]).set(held as i64);
                }
            }
        }
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding cannot fail");
        String::from_utf8(buf).expect("exposition is UTF-8")
    }

    /// Times a store operation, counting it as an error when it fails.
    pub async fn time_store<T, E>(
        &self,
        operation: StoreOperation,
        f: impl std::future::Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        let timer = self
            .store_duration
            .with_label_values(&[operation.as_str()])
            .start_timer();
        let result = f.await;
        timer.observe_duration();
        if result.is_err() {
            self.store_errors
                .with_label_values(&[operation.as_str()])
                .inc();
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_names_every_contract_metric() {
        let m = Metrics::new();
        m.events
            .with_label_values(&["page_view", "applied"])
            .inc_by(3);
        let text = m.render();
        for name in [
            "popularity_events_total",
            "popularity_invalid_messages_total",
            "popularity_flush_duration_seconds",
            "popularity_flush_messages",
            "popularity_store_operation_duration_seconds",
            "popularity_store_errors_total",
            "popularity_partitions_assigned",
            "popularity_rebalances_total",
            "popularity_messages_read_total",
            "popularity_event_to_visible_seconds",
            "popularity_cache_requests_total",
            "popularity_build_info",
        ] {
            assert!(text.contains(name), "{name} missing");
        }
        assert!(text.contains("popularity_events_total{outcome=\"applied\",type=\"page_view\"} 3"));
    }
}
