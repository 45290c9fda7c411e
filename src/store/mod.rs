//! Where scores and articles live: one interface per concern, two
//! backends that give the same answers.
//!
//! - [`RankingWrites`] and [`RankingReads`] ([`rankings`]): the consumer's
//!   fenced flushes, the API's pages and scores.
//! - [`Catalogue`], [`ArticleReads`] and [`Editorial`] ([`articles`]):
//!   articles' metadata and lifecycle, the News Index, names, exclusions.
//! - [`FilterLog`] ([`filters`]): the duplicate filters' saved state.
//! - [`AlertLog`] and [`AlertReads`] ([`alerts`]): alert claims and the
//!   recent alerts.
//!
//! [`connect`] returns the whole backend as a [`Store`]; each part of the
//! service keeps only the interfaces it uses: the API [`Reads`] (nothing it
//! holds can write), the consumer [`Writes`], the editors' API
//! [`Editorial`], the alert evaluator [`AlertLog`].
//!
//! - `redis::RedisStore`: the layout of DESIGN §4, one Lua script call per
//!   group per flush, pipelined across groups.
//! - `memory::MemoryStore`: the same semantics in process, for `demo` and
//!   single-node installs.
//!
//! Both keep, per (group, profile), a landmark and forward-decayed values
//! (see [`crate::scoring`]), order members by value then member name (as a
//! Redis sorted set does), trim to `max_members` dropping the lowest, and drop
//! members below [`crate::scoring::SCORE_FLOOR`] when they rebase.

pub mod alerts;
pub mod articles;
pub mod filters;
mod memory;
pub mod pending;
pub mod rankings;
mod redis;

use std::sync::Arc;

use async_trait::async_trait;

pub use alerts::{AlertLog, AlertReads, RECENT_ALERTS};
pub(crate) use articles::name_fields;
pub use articles::{
    article_groups, index_lists, moves, name_key, tag_moves, ArticleReads, ArticleState, Catalogue,
    Cursor, Editorial, Exclusion, IndexList, NameOf,
};
pub use filters::{FilterLog, FilterWrite, SavedFilter};
pub use rankings::{
    Applied, Fence, Layout, Page, ProfileId, RankingReads, RankingWrites, Scored, Unit,
};

use crate::config::Backend;

/// The store `settings` describe, connected (the scoring settings give
/// its profiles and bound). The one way app, benchmark and tests build one.
pub async fn connect(settings: &crate::config::Settings) -> Result<Arc<dyn Store>, StoreError> {
    let profiles = crate::scoring::profiles(&settings.scoring);
    let max_members = settings.scoring.max_members;
    let s = &settings.store;
    Ok(match s.backend {
        Backend::Redis => {
            Arc::new(redis::RedisStore::connect(s, profiles, max_members, s.metadata_ttl).await?)
        }
        Backend::Memory => Arc::new(memory::MemoryStore::new(
            profiles,
            max_members,
            s.metadata_ttl,
        )),
    })
}

/// A store failure. None of these are the caller's fault; they are retried.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend could not be reached or refused the operation.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Sentinel or Cluster mode, and no master serves (some of) the keys:
    /// a failover is under way, or failed.
    #[error("store has no master: {0}")]
    NoMaster(String),
    /// The backend answered something this version cannot read.
    #[error("unexpected store data: {0}")]
    Corrupt(String),
}

/// The backend itself: whether what it holds outlives the process, and
/// whether it answers.
#[async_trait]
pub trait Connection: Send + Sync + 'static {
    /// True when what this store holds outlives the process and is shared
    /// by every replica. Then the consumer joins its group, commits offsets
    /// and saves its duplicate filter; otherwise it keeps nothing between
    /// starts and rebuilds the state from the topics' retained history.
    fn durable(&self) -> bool;

    /// Checks that the backend answers.
    async fn ping(&self) -> Result<(), StoreError>;
}

/// What readers of lists use (the API): rankings, articles and recorded
/// alerts, read only.
pub trait Reads: RankingReads + ArticleReads + AlertReads + Connection {}
impl<T: RankingReads + ArticleReads + AlertReads + Connection + ?Sized> Reads for T {}

/// What the consumer uses: fenced ranking writes, the articles topic's
/// lifecycle (and the metadata it folds events with), its duplicate
/// filters' log.
pub trait Writes: RankingWrites + Catalogue + ArticleReads + FilterLog + Connection {}
impl<T: RankingWrites + Catalogue + ArticleReads + FilterLog + Connection + ?Sized> Writes for T {}

/// A whole backend, every interface; what [`connect`] returns.
pub trait Store: Reads + Writes + Editorial + AlertLog {}
impl<T: Reads + Writes + Editorial + AlertLog + ?Sized> Store for T {}
