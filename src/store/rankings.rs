//! The rankings: written by the consumer in fenced, atomic flushes; read
//! by the API, one consistent page or a few members' scores at a time.

use std::collections::HashMap;
use std::ops::Range;

use async_trait::async_trait;

use super::StoreError;
use crate::scoring::{Aggregate, Group};

/// One of the configured ranking profiles (`scoring.profiles`), by its
/// place in that list: what every ranking read names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProfileId(pub usize);

/// The outcome of [`RankingWrites::apply`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Applied {
    /// Groups not written because a fence differed from the expected value
    /// (another consumer applied those offsets): re-read and retry them.
    pub conflicts: Vec<Group>,
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

/// The consumer's side of the rankings: fenced increments and the fences.
#[async_trait]
pub trait RankingWrites: Send + Sync + 'static {
    /// Shards per group: writes name the shard of each member
    /// ([`Group::shard_for`]); reads name groups and get every shard merged.
    fn shards(&self) -> u16 {
        1
    }

    /// Applies one flush's increments and counts atomically per group,
    /// each group only if its fences are as the batch expects (see
    /// [`crate::fence`]). Groups refused for that are returned.
    async fn apply(&self, batch: &Aggregate) -> Result<Applied, StoreError>;

    /// The fences of each group: `topic/partition` → last applied offset.
    async fn fences(&self, groups: &[Group]) -> Result<Vec<HashMap<String, i64>>, StoreError>;
}

/// The readers' side of the rankings.
#[async_trait]
pub trait RankingReads: Send + Sync + 'static {
    /// Members at the places `range` (0 is the top) of `group` under
    /// `profile`, with scores decayed to `at_ms`.
    async fn top(
        &self,
        group: &Group,
        profile: ProfileId,
        range: Range<usize>,
        at_ms: i64,
    ) -> Result<Page, StoreError>;

    /// Scores (decayed to `at_ms`) of `members` in `group` under
    /// `profile`, in their order; `None` where one is not ranked.
    async fn scores(
        &self,
        group: &Group,
        profile: ProfileId,
        members: &[String],
        at_ms: i64,
    ) -> Result<Vec<Option<f64>>, StoreError>;

    /// Score (decayed to `at_ms`) and 1-based rank of `member` in `group`,
    /// per profile; `None` where it is not ranked.
    async fn position(
        &self,
        group: &Group,
        member: &str,
        at_ms: i64,
    ) -> Result<Vec<Option<(f64, usize)>>, StoreError>;

    /// All-time counted events of an article, per [`crate::event::EventType::index`].
    async fn counts(&self, id: &str) -> Result<crate::event::PerType<u64>, StoreError>;
}
