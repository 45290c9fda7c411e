//! The rankings: written by the consumer in fenced, atomic flushes; read
//! by the API, one consistent page or a few members' scores at a time.

use std::collections::HashMap;
use std::ops::Range;

use async_trait::async_trait;

use super::StoreError;
use crate::scoring::{Aggregate, Group};

/// Where increments are written atomically, with their fences: a group
/// of rankings, or the part of one that a backend keeps a member in (Redis
/// Cluster splits a group over slots, DESIGN §4). Only a backend's
/// [`Layout`] makes one; the consumer keys its fold and fences on units
/// without looking inside, and reads name groups.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Unit {
    group: Group,
    part: Option<u16>,
}

impl Unit {
    /// `group`, whole: its unit in a store that does not split groups.
    pub fn whole(group: &Group) -> Unit {
        Layout::WHOLE.unit(group, "")
    }

    /// The group this unit is (part of).
    pub fn group(&self) -> &Group {
        &self.group
    }

    /// Which part of its group, when the backend splits groups.
    pub(crate) fn part(&self) -> Option<u16> {
        self.part
    }
}

/// How a backend splits groups into [`Unit`]s: a member's unit is fixed
/// (every process and version agrees), so its increments and fences always
/// meet in one atomic write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    parts: u16,
}

impl Layout {
    /// Every group is one unit.
    pub const WHOLE: Layout = Layout { parts: 1 };

    /// Groups split in `parts` by member (1 or less: whole).
    pub(crate) fn split(parts: u16) -> Layout {
        Layout {
            parts: parts.max(1),
        }
    }

    /// The unit of `group` that holds `member`.
    pub fn unit(&self, group: &Group, member: &str) -> Unit {
        Unit {
            group: group.clone(),
            part: self.part(member),
        }
    }

    /// Each (group, member) of `destinations` in the unit of its group
    /// that holds the member.
    pub fn place(&self, destinations: Vec<(Group, String)>) -> Vec<(Unit, String)> {
        destinations
            .into_iter()
            .map(|(group, member)| {
                let part = self.part(&member);
                (Unit { group, part }, member)
            })
            .collect()
    }

    /// Which part holds `member`, when groups are split.
    fn part(&self, member: &str) -> Option<u16> {
        (self.parts > 1).then(|| part_of(member, self.parts))
    }

    /// Every unit of `group`, in order.
    pub fn units(&self, group: &Group) -> Vec<Unit> {
        if self.parts <= 1 {
            return vec![Unit {
                group: group.clone(),
                part: None,
            }];
        }
        (0..self.parts)
            .map(|k| Unit {
                group: group.clone(),
                part: Some(k),
            })
            .collect()
    }

    /// How many units a group is.
    pub fn parts(&self) -> u16 {
        self.parts
    }

    /// Refuses `units` unless each could be one of this layout's (every
    /// backend's `apply` asks before writing): a write laid out for another
    /// layout (whole groups sent to a store that
    /// splits them, or the reverse) would put a member's increments and
    /// fences where its reads and other writers never look.
    pub(crate) fn check<'a>(
        &self,
        units: impl IntoIterator<Item = &'a Unit>,
    ) -> Result<(), StoreError> {
        for u in units {
            let fits = match u.part {
                None => self.parts <= 1,
                Some(k) => self.parts > 1 && k < self.parts,
            };
            if !fits {
                return Err(StoreError::Corrupt(format!(
                    "a write laid out in other units than the store's ({:?} part {:?}, the store splits groups in {})",
                    u.group, u.part, self.parts
                )));
            }
        }
        Ok(())
    }
}

/// The part of `member` among `parts`: FNV-1a of its bytes, so every
/// process and version agrees.
fn part_of(member: &str, parts: u16) -> u16 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in member.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % u64::from(parts.max(1))) as u16
}

/// One partition's fence in one unit, as a write checks and advances it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    /// `topic/partition`.
    pub source: String,
    /// The value the writer believes is stored (`None`: no fence yet).
    pub expected: Option<i64>,
    /// The value after this write: the highest offset of the batch.
    pub new: i64,
}

/// One of the configured ranking profiles (`scoring.profiles`), by its
/// place in that list: what every ranking read names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProfileId(pub usize);

/// The outcome of [`RankingWrites::apply`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Applied {
    /// Units not written because a fence differed from the expected value
    /// (another consumer applied those offsets): re-read and retry them.
    pub conflicts: Vec<Unit>,
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
    /// How this backend splits groups into units of atomic writing.
    fn layout(&self) -> Layout {
        Layout::WHOLE
    }

    /// Applies one flush's increments and counts atomically per unit,
    /// each unit only if its fences are as the batch expects (see
    /// [`crate::fence`]). Units refused for that are returned.
    async fn apply(&self, batch: &Aggregate) -> Result<Applied, StoreError>;

    /// The fences of each unit: `topic/partition` → last applied offset.
    async fn fences(&self, units: &[Unit]) -> Result<Vec<HashMap<String, i64>>, StoreError>;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_split_layout_puts_each_member_in_one_stable_part_of_each_group() {
        let split = Layout::split(8);
        for (g, m) in crate::scoring::destinations("a-1", None, Some("news"), &["red".into()]) {
            // The tags ranking's members are tags: split by the tag.
            let unit = split.unit(&g, &m);
            assert_eq!(unit.group(), &g);
            assert_eq!(unit.part(), Some(part_of(&m, 8)));
            assert!(split.units(&g).contains(&unit));
            assert_eq!(
                split.place(vec![(g.clone(), m.clone())]),
                [(unit, m.clone())]
            );
            assert_eq!(Layout::WHOLE.unit(&g, &m).part(), None);
        }
        // FNV-1a, fixed: every process and version places a member alike.
        assert_eq!(part_of("a-1", 8), 6);
        let spread: std::collections::HashSet<u16> =
            (0..200).map(|i| part_of(&format!("art-{i}"), 8)).collect();
        assert_eq!(spread.len(), 8, "200 members reach every part");
        assert_eq!(Layout::split(1), Layout::WHOLE);
    }

    #[test]
    fn a_store_refuses_units_of_another_layout() {
        let split = Layout::split(8);
        let whole = Unit::whole(&Group::All);
        let part = split.unit(&Group::All, "a-1");
        assert!(Layout::WHOLE.check([&whole]).is_ok());
        assert!(split.check([&part]).is_ok());
        let e = split.check([&whole]).unwrap_err().to_string();
        assert!(e.contains("splits groups in 8"), "{e}");
        assert!(Layout::WHOLE.check([&part]).is_err());
        assert!(Layout::split(4)
            .check([&Unit {
                group: Group::All,
                part: Some(7)
            }])
            .is_err());
    }
}
