//! End-to-end tests: real `redis-server`, real Kafka-protocol broker, the
//! service on port 0. Expected scores come from the formula of DESIGN §3,
//! computed here from the events the test produced. One file per feature;
//! `helpers` starts the real parts, `fixtures` holds shared test data,
//! `kit` produces realistic traffic, runs consumers and gives the verdict.

// The process counts its heap as the binary does, so that the service in
// it exports what the binary exports (`popularity_heap_bytes`).
#[global_allocator]
static ALLOCATOR: popularity::heap::Counting<std::alloc::System> =
    popularity::heap::Counting(std::alloc::System);

mod alerts;
mod api;
mod binary;
mod browser;
mod collector;
mod dead_letters;
mod deployment;
mod edge;
mod failover;
mod faults;
mod fixtures;
mod framing;
mod helpers;
mod integrity;
mod kit;
mod lifecycle;
mod names;
mod operations;
mod rankings;
mod rising;
mod sites;
mod startup;
mod store_contract;
mod streams;
mod tansu;
mod telemetry;
mod topic_log;
mod tracker;
mod webdriver;
mod widget;
