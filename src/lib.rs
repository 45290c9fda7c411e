//! popularity: what are people reading right now?
//!
//! Page views, shares and engagement arrive on Kafka; time-decayed scores
//! live in Redis sorted sets; websites ask for top-N lists over HTTP.
//!
//! The modules follow an event through the service:
//!
//! - [`config`]: layered, validated settings (defaults < file < environment).
//! - [`event`]: the event model, JSON/protobuf decoding, validation, and the
//!   bot / stale / duplicate filters.
//! - [`site`]: the network's sites and how an article's key names its site.
//! - [`rising`]: what is taking off: the formula over two profiles' scores.
//! - [`scoring`]: forward-decay math and per-flush aggregation; pure, no I/O.
//! - [`store`]: the [`store::Store`] trait with its `redis` and `memory` backends.
//! - [`fence`]: the fence protocol that makes counting effectively once.
//! - [`ingest`]: the Kafka consumer loop: read, flush to the store, commit;
//!   invalid messages to the dead-letter topic.
//! - [`alerts`]: what an alert says and its signed, retried webhooks.
//! - [`api`]: the HTTP routes, the response cache and error mapping.
//! - [`server`]: the HTTP server's bounds on connections and slow clients.
//! - [`peer`]: a request's client address, behind trusted proxies or not.
//! - [`metrics`]: every Prometheus metric, named in one place.
//! - [`dependency`]: Kafka and the store seen as up or down, logged once per change.
//! - [`shutdown`]: SIGTERM/SIGINT to one cancellation token.
//! - [`logging`]: text or JSON logs to standard error, the access log.
//! - [`telemetry`]: spans of requests and flushes sent as OpenTelemetry traces.
//! - [`app`]: builds the parts for a role and runs them.
//! - [`devbroker`]: librdkafka's mock cluster as a local Kafka-protocol broker.
//! - [`newsroom`], [`loadgen`], [`demo`]: synthetic traffic, producing it, and
//!   the zero-dependency demo.
//! - [`redis_server`]: a local `redis-server` for the benchmark and tests.
//! - [`bench`]: the one-run benchmark against the limits and a naive baseline.
#![warn(missing_docs)]

pub mod alerts;
pub mod api;
pub mod app;
pub mod bench;
pub mod collector;
pub mod config;
pub mod demo;
pub mod dependency;
pub mod devbroker;
pub mod event;
pub mod fence;
pub mod http;
pub mod ingest;
pub mod loadgen;
pub mod logging;
pub mod metrics;
pub mod newsroom;
pub mod peer;
pub mod redis_server;
pub mod rising;
pub mod scoring;
pub mod server;
pub mod shutdown;
pub mod site;
pub mod store;
pub mod telemetry;

/// Wall-clock time, epoch milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
