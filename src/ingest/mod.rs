//! The consumer: Kafka → decode → validate → filter → aggregate → store → commit.
//!
//! Delivery guarantee: effectively once, by the fence protocol of
//! [`crate::fence`]: every group of rankings keeps, per Kafka partition, the
//! last offset applied to it, checked and advanced in the same atomic write
//! as the increments; each partition's duplicate filter is saved with a
//! fence of its own once every group holds its batch, and restored by the
//! partition's next owner. So a crash, restart, rebalance or zombie never
//! applies an event twice, and whether an event counts never depends on
//! when that happened. Offsets are committed only after the store
//! acknowledged everything up to them (and invalid messages reached the
//! dead-letter topic), so nothing is lost.
//!
//! An event's way, one file per step:
//!
//! 1. [`consumer`]: the clients built and the group joined; then
//!    [`drive`], the loop as phases: what woke it (a message, a tick, a
//!    finished write, a revocation, shutdown), where it stands (consuming,
//!    or waiting for the store), one function deciding the next action, and
//!    one drain-then-commit for hand-overs and shutdown.
//! 2. [`reader`]: decode → validate → filter into the [`batch`], each
//!    partition ([`partition::PartitionId`]) with its duplicate filter.
//! 3. [`writer`]: one batch to the store, each step called once and handing
//!    data to the next: [`dead_letter`]s; the [`catalog`] brought up to
//!    date and the events routed to their groups (in the store's units of
//!    atomic writing); their fences read ([`crate::fence::FenceBook::read`]);
//!    the pure [`fold`] of events, routes and fences into an aggregate; the
//!    fenced apply ([`crate::fence::FenceBook::write`]); the filters'
//!    deltas. It returns what the loop should do next.
//!
//! With a store that is not durable (the `memory` store) the process holds
//! the only copy of the state, so the consumer commits nothing, joins no
//! group and reads every partition of both topics from the beginning: Kafka
//! is the durable log.

mod batch;
mod catalog;
mod consumer;
mod dead_letter;
mod drive;
mod fold;
mod kafka;
mod partition;
mod pipeline;
mod places;
mod reader;
mod rebuild;
mod writer;

pub use consumer::Ingest;
pub use kafka::{client_config, ConsumerState};
pub use partition::PartitionId;
pub use pipeline::{Pipeline, Reading};
pub use reader::Incoming;
