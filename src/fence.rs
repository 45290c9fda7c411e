//! The fence protocol, in one place (DESIGN §4). Effectively-once counting
//! rests on these rules; the writer ([`crate::ingest`]) follows them through
//! [`FenceBook`], and every store checks them inside its atomic write
//! (`store/apply.lua`, `MemoryStore::apply`, `store/filter.lua`).
//!
//! 1. A group's fence for a partition (`fence:<topic>/<partition>` in its
//!    meta) is the highest offset of that partition whose events the group
//!    holds. It moves only forward, and only inside the same atomic write as
//!    the increments it stands for.
//! 2. A write names, per group, the fence it expects for every partition it
//!    carries events of, and the new value (the highest offset of that
//!    partition in the batch). The store applies the group only if every
//!    expected fence matches; otherwise it writes nothing to that group and
//!    reports a conflict.
//! 3. The writer knows fences by reading them (once per group after each
//!    assignment change) and by its own acknowledged writes. It folds into a
//!    group only the events above that group's fence.
//! 4. A conflict means another writer (the partition's new owner, or this
//!    one before a lost reply) applied some of these events: the writer
//!    forgets that group's fences, reads them again and retries; what the
//!    other applied is then skipped.
//! 5. An unknown outcome (the connection dropped after the write was sent)
//!    forgets every fence: the store's fences tell what was applied.
//! 6. Each partition's duplicate-filter state has a fence of its own, saved
//!    only once every group holds the batch. A consumer that takes the
//!    partition over restores that state, skips the messages at or below its
//!    fence and judges the rest exactly as before, since verdicts depend only
//!    on the state and the messages ([`crate::event::filter`]); so whether an
//!    event counts never depends on when consumers crashed.
//!
//! Kafka's committed offsets are only a hint of where to resume: reading
//! again from an older offset applies nothing twice.

use std::collections::HashMap;

use ahash::HashMap as AHashMap;

use crate::metrics::{Metrics, StoreOperation};
use crate::scoring::Aggregate;
use crate::store::{Applied, Fence, RankingWrites, StoreError, Unit};

/// The fences the fold is given, as data: per unit, per partition, the
/// fence (`None`: none yet), in the orders [`FenceBook::read`] was asked.
pub type Fences = Vec<Vec<Option<i64>>>;

/// The fences a writer knows, per unit: `topic/partition` → offset.
///
/// The writer calls it twice per flush: [`FenceBook::read`] before the
/// fold (which is given the [`Fences`] as data) and [`FenceBook::write`]
/// for the fenced apply; every rule above is followed inside these two.
#[derive(Debug, Default)]
pub struct FenceBook {
    /// The assignment generation they were read under.
    generation: u64,
    known: AHashMap<Unit, HashMap<String, i64>>,
}

impl FenceBook {
    /// The fences of every unit of `units` for every partition of
    /// `sources` (`topic/partition`), under the assignment `generation`:
    /// after a new assignment the book forgets them all (rule 3), then it
    /// reads from the store those it does not know.
    pub async fn read(
        &mut self,
        store: &dyn RankingWrites,
        metrics: &Metrics,
        units: &[Unit],
        sources: &[&str],
        generation: u64,
    ) -> Result<Fences, StoreError> {
        self.sync(generation);
        let missing = self.missing(units);
        if !missing.is_empty() {
            let read = metrics
                .time_store(StoreOperation::Fences, store.fences(&missing))
                .await?;
            self.learn(missing, read);
        }
        Ok(units
            .iter()
            .map(|u| sources.iter().map(|s| self.get(u, s)).collect())
            .collect())
    }

    /// Applies `aggregate` (whose fences the fold took from this book) and
    /// records the outcome: applied units advance, refused ones are read
    /// again next time (rules 1, 4); an unknown outcome forgets every fence
    /// (rule 5).
    pub async fn write(
        &mut self,
        store: &dyn RankingWrites,
        metrics: &Metrics,
        aggregate: &Aggregate,
    ) -> Result<Applied, StoreError> {
        match metrics
            .time_store(StoreOperation::Apply, store.apply(aggregate))
            .await
        {
            Ok(applied) => {
                self.applied(&aggregate.fences, &applied.conflicts);
                Ok(applied)
            }
            Err(e) => {
                self.forget_all();
                Err(e)
            }
        }
    }

    /// Forgets everything when the assignment changed since the fences were
    /// read: another consumer may have written meanwhile (rule 3).
    fn sync(&mut self, generation: u64) {
        if generation != self.generation {
            self.known.clear();
            self.generation = generation;
        }
    }

    /// The groups among `groups` whose fences must be read first.
    fn missing(&self, groups: &[Unit]) -> Vec<Unit> {
        groups
            .iter()
            .filter(|g| !self.known.contains_key(*g))
            .cloned()
            .collect()
    }

    /// Records fences read from the store.
    fn learn(&mut self, groups: Vec<Unit>, read: Vec<HashMap<String, i64>>) {
        self.known.extend(groups.into_iter().zip(read));
    }

    /// The fence of `source` in `group`, if any.
    fn get(&self, group: &Unit, source: &str) -> Option<i64> {
        self.known.get(group).and_then(|f| f.get(source)).copied()
    }

    /// After an acknowledged write: the fences of applied groups advance,
    /// those of refused groups are forgotten (rules 1, 4).
    fn applied(&mut self, written: &AHashMap<Unit, Vec<Fence>>, conflicts: &[Unit]) {
        for (group, fences) in written {
            if conflicts.contains(group) {
                self.known.remove(group);
            } else {
                let known = self.known.entry(group.clone()).or_default();
                for f in fences {
                    known.insert(f.source.clone(), f.new);
                }
            }
        }
    }

    /// After a write whose outcome is unknown (rule 5).
    fn forget_all(&mut self) {
        self.known.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scoring::Group;

    fn unit(group: Group) -> Unit {
        Unit::whole(&group)
    }

    fn fence(source: &str, expected: Option<i64>, new: i64) -> Fence {
        Fence {
            source: source.into(),
            expected,
            new,
        }
    }

    #[test]
    fn applied_groups_advance_refused_ones_are_read_again() {
        let mut book = FenceBook::default();
        let groups = vec![unit(Group::All), unit(Group::Tags)];
        assert_eq!(book.missing(&groups), groups);
        book.learn(groups.clone(), vec![HashMap::new(), HashMap::new()]);
        assert!(book.missing(&groups).is_empty());
        let written: AHashMap<Unit, Vec<Fence>> = [
            (unit(Group::All), vec![fence("e/0", None, 10)]),
            (unit(Group::Tags), vec![fence("e/0", None, 10)]),
        ]
        .into_iter()
        .collect();
        book.applied(&written, &[unit(Group::Tags)]);
        assert_eq!(book.get(&unit(Group::All), "e/0"), Some(10));
        assert_eq!(book.missing(&groups), vec![unit(Group::Tags)]);
        book.forget_all();
        assert_eq!(book.missing(&groups), groups);
    }

    #[test]
    fn a_new_assignment_forgets_every_fence() {
        let mut book = FenceBook::default();
        book.learn(
            vec![unit(Group::All)],
            vec![[("e/0".to_string(), 5)].into()],
        );
        book.sync(0);
        assert_eq!(book.get(&unit(Group::All), "e/0"), Some(5));
        book.sync(1);
        assert_eq!(book.get(&unit(Group::All), "e/0"), None);
    }
}
