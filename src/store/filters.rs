//! The duplicate filters' log: each partition's filter state, saved as a
//! snapshot and deltas behind a fence of its own (DESIGN §4, `store/filter.lua`).

use async_trait::async_trait;

use super::StoreError;

/// The saved duplicate-filter state of one partition (DESIGN §4).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SavedFilter {
    /// The last offset whose verdicts the state holds: every message up to
    /// it is applied to every group.
    pub fence: Option<i64>,
    /// The seed the state names triples with ([`crate::event::filter::encode_seed`]).
    pub seed: Option<String>,
    /// The deltas since the last snapshot, oldest first.
    pub deltas: Vec<Vec<u8>>,
    /// The saved fence could not be read: start empty and save a snapshot.
    pub unreadable: bool,
}

/// One partition's filter delta, saved after its batch was applied.
#[derive(Debug, Clone, PartialEq)]
pub struct FilterWrite {
    /// `topic/partition`.
    pub source: String,
    /// The fence the writer believes is stored.
    pub expected: Option<i64>,
    /// The highest offset of the batch.
    pub new: i64,
    /// The seed of the state.
    pub seed: String,
    /// What changed (or the whole state).
    pub delta: crate::event::filter::Delta,
}

/// Where the consumer saves and restores its duplicate filters.
#[async_trait]
pub trait FilterLog: Send + Sync + 'static {
    /// The saved duplicate-filter state of each partition `topic/partition`.
    async fn load_filters(&self, sources: &[String]) -> Result<Vec<SavedFilter>, StoreError>;

    /// Saves filter deltas, in order (`store/filter.lua` states the rules).
    /// Returns the sources whose delta could not apply, because the saved
    /// state is older than where the delta starts or was named with another
    /// seed: nothing was saved for those, and their next write must be a
    /// snapshot.
    async fn save_filters(&self, writes: &[FilterWrite]) -> Result<Vec<String>, StoreError>;
}
