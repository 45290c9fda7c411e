//! The landmarks this process last wrote or was told, per unit and
//! profile: `apply.lua` adds increments as they are sent, so the writer
//! computes them against the landmark the write will leave (DESIGN §3).
//! A landmark another process moved is told back by the script, which then
//! writes nothing, and the write is computed again.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::store::Unit;

/// Units remembered at most: past it the memory is emptied, and each
/// unit's next write learns its landmarks again at the cost of a second
/// call. Units are groups (sites, sections, tags) and their shards, which
/// the catalogue's producers name.
const MAX_UNITS: usize = 100_000;

/// Per unit, each profile's landmark (`None`: none known).
#[derive(Clone, Default)]
pub(super) struct Landmarks(Arc<Mutex<HashMap<Unit, Vec<Option<i64>>>>>);

impl Landmarks {
    /// What is known of `unit`'s landmarks, one per profile of `profiles`.
    pub fn known(&self, unit: &Unit, profiles: usize) -> Vec<Option<i64>> {
        self.0
            .lock()
            .get(unit)
            .filter(|l| l.len() == profiles)
            .cloned()
            .unwrap_or_else(|| vec![None; profiles])
    }

    /// Remembers `unit`'s landmarks.
    pub fn set(&self, unit: &Unit, landmarks: Vec<Option<i64>>) {
        let mut map = self.0.lock();
        if map.len() >= MAX_UNITS && !map.contains_key(unit) {
            map.clear();
        }
        map.insert(unit.clone(), landmarks);
    }
}
