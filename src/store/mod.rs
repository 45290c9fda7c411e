//! Where scores live: one trait, two backends that give the same answers.
//!
//! - [`redis::RedisStore`]: the layout of DESIGN §4, one Lua script call per
//!   group per flush, pipelined across groups.
//! - [`memory::MemoryStore`]: the same semantics in process, for `demo` and
//!   single-node installs.
//!
//! Both keep, per (group, profile), a landmark and forward-decayed values
//! (see [`crate::scoring`]), order members by value then member name (as a
//! Redis sorted set does), trim to `max_members` dropping the lowest, and drop
//! members below [`crate::scoring::SCORE_FLOOR`] when they rebase.

pub mod memory;
pub mod redis;

use async_trait::async_trait;

use crate::event::ArticleMeta;
use crate::scoring::{Aggregate, Group};

/// A store failure. None of these are the caller's fault; they are retried.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend could not be reached or refused the operation.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The backend answered something this version cannot read.
    #[error("unexpected store data: {0}")]
    Corrupt(String),
}

/// A member of a ranking with its decayed score.
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    /// Article id, or tag name in the tags ranking.
    pub member: String,
    /// Decayed score at the time asked for.
    pub score: f64,
}

/// What a ranking holds, as one consistent read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Page {
    /// Members, highest score first, ties broken by member name descending.
    pub items: Vec<Scored>,
}

/// The operations every backend provides.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Applies one flush's increments and counts atomically per group.
    async fn apply(&self, batch: &Aggregate) -> Result<(), StoreError>;

    /// Members `offset..offset+limit` of `group` under profile number
    /// `profile`, with scores decayed to `at_ms`.
    async fn top(
        &self,
        group: &Group,
        profile: usize,
        offset: usize,
        limit: usize,
        at_ms: i64,
    ) -> Result<Page, StoreError>;

    /// Upserts article metadata (it expires after the configured TTL).
    async fn put_articles(&self, articles: &[ArticleMeta]) -> Result<(), StoreError>;

    /// Forgets the metadata of withdrawn articles.
    async fn remove_articles(&self, ids: &[String]) -> Result<(), StoreError>;

    /// Metadata of each id, `None` where unknown or expired.
    async fn articles(&self, ids: &[String]) -> Result<Vec<Option<ArticleMeta>>, StoreError>;

    /// Checks that the backend answers.
    async fn ping(&self) -> Result<(), StoreError>;
}

/// The key group (Redis Cluster hash tag) of a group of rankings.
pub fn group_tag(group: &Group) -> String {
    match group {
        Group::All => "{all}".to_string(),
        Group::Section(s) => format!("{{s:{s}}}"),
        Group::Tag(t) => format!("{{t:{t}}}"),
        Group::Tags => "{tags}".to_string(),
    }
}
