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
//! - [`ingest`]: the Kafka consumer: read (decode, validate, filter), fold,
//!   write, commit; invalid messages to the dead-letter topic.
//! - [`scoring`]: forward-decay math and per-flush aggregation; pure, no I/O.
//! - [`fence`]: the fence protocol that makes counting effectively once.
//! - [`store`]: one interface per concern (rankings, articles, filters,
//!   alerts) and the `redis` and `memory` backends.
//! - [`rising`]: what is taking off: the formula over two profiles' scores.
//! - [`alerts`]: when an alert is raised, and its signed, retried webhooks.
//! - [`api`]: the HTTP routes that read (lists, articles, streams, health),
//!   the response cache and error mapping; it holds no write interface.
//! - [`editors`]: the editors' API on the operators' listener (exclusions).
//! - [`collector`]: readers' events over HTTP, checked and produced to Kafka.
//! - [`http`]: what the API and the collector share: representations,
//!   scripts, the error body.
//! - [`server`]: the HTTP server's bounds on connections and slow clients.
//! - [`peer`]: a request's client address, behind trusted proxies or not.
//! - [`metrics`]: every Prometheus metric, named in one place.
//! - [`heap`]: the allocator wrapper that counts the bytes the heap holds.
//! - [`dependency`]: Kafka and the store seen as up or down, logged once per change.
//! - [`shutdown`]: SIGTERM/SIGINT to one cancellation token.
//! - [`logging`]: text or JSON logs to standard error, the access log.
//! - [`telemetry`]: spans of requests and flushes sent as OpenTelemetry traces.
//! - [`app`]: builds the parts for a role and runs them.
//!
//! The tools beside the service (the demo, the dev broker, the synthetic
//! newsroom and load generator, the local Redis launcher, the benchmark)
//! live in the `popularity-cli` package (`cli/`), with the binary.
#![warn(missing_docs)]

pub mod alerts;
#[cfg(test)]
mod allocations;
pub mod api;
pub mod app;
pub mod collector;
pub mod config;
pub mod dependency;
pub mod editors;
pub mod event;
pub mod fence;
pub mod heap;
pub mod http;
pub mod ingest;
pub mod logging;
pub mod metrics;
pub mod peer;
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
