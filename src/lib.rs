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
//! - [`scoring`]: forward-decay math and per-flush aggregation; pure, no I/O.
//! - [`store`]: the [`store::Store`] trait with its `redis` and `memory` backends.
//! - [`ingest`]: the Kafka consumer loop: read, flush to the store, commit;
//!   invalid messages to the dead-letter topic.
//! - [`api`]: the HTTP routes, the response cache and error mapping.
//! - [`metrics`]: every Prometheus metric, named in one place.
//! - [`shutdown`]: SIGTERM/SIGINT to one cancellation token.
//! - [`app`]: builds the parts for a role and runs them.
//! - [`devbroker`]: librdkafka's mock cluster as a local Kafka-protocol broker.
#![warn(missing_docs)]

pub mod api;
pub mod app;
pub mod config;
pub mod devbroker;
pub mod event;
pub mod ingest;
pub mod metrics;
pub mod scoring;
pub mod shutdown;
pub mod store;
