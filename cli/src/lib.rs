//! What the `popularity` binary carries besides the service (the
//! `popularity` library): tools to try it, feed it and measure it, none of
//! which the service itself links.
//!
//! - [`demo`]: the whole service end to end with no Kafka or Redis.
//! - [`devbroker`]: librdkafka's mock cluster as a local Kafka-protocol broker.
//! - [`newsroom`]: a synthetic network of sites and its readers' traffic;
//!   [`loadgen`] produces it to Kafka.
//! - [`redis_server`]: local `redis-server` processes (standalone, Cluster,
//!   Sentinels) for the benchmark and the tests.
//! - [`bench`]: the one-run benchmark against the limits and a naive baseline.
#![warn(missing_docs)]

pub mod bench;
pub mod demo;
pub mod devbroker;
pub mod loadgen;
pub mod newsroom;
pub mod redis_server;
