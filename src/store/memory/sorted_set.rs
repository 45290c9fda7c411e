//! A sorted set with the semantics the memory store needs of Redis's:
//! members by score (ties by member, as `ZREVRANGE` orders them), increments,
//! ranks and ranges.

use std::cmp::Ordering;
use std::collections::{BTreeSet, HashMap};

/// A score ordered like a Redis sorted set orders scores.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Score(f64);

impl Eq for Score {}
impl PartialOrd for Score {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Score {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// A sorted set with Redis's order: by score, then by member bytes.
#[derive(Debug, Default)]
pub(crate) struct SortedSet {
    scores: HashMap<String, f64>,
    order: BTreeSet<(Score, String)>,
}

impl SortedSet {
    /// ZINCRBY.
    pub(crate) fn incr(&mut self, member: &str, by: f64) {
        let old = self.scores.get(member).copied();
        if let Some(old) = old {
            self.order.remove(&(Score(old), member.to_string()));
        }
        let new = old.unwrap_or(0.0) + by;
        self.scores.insert(member.to_string(), new);
        self.order.insert((Score(new), member.to_string()));
    }

    /// ZUNIONSTORE key 1 key WEIGHTS factor, then ZREMRANGEBYSCORE -inf (floor.
    pub(super) fn scale_and_drop_below(&mut self, factor: f64, floor: f64) {
        let scores = std::mem::take(&mut self.scores);
        self.order.clear();
        for (m, v) in scores {
            let v = v * factor;
            if v >= floor {
                self.order.insert((Score(v), m.clone()));
                self.scores.insert(m, v);
            }
        }
    }

    /// ZREMRANGEBYSCORE -inf (floor.
    pub(super) fn drop_below(&mut self, floor: f64) {
        while let Some((s, m)) = self.order.first().cloned() {
            if s.0 >= floor {
                break;
            }
            self.order.pop_first();
            self.scores.remove(&m);
        }
    }

    /// Keeps the `max` highest (ZREMRANGEBYRANK 0 -(max+1)).
    pub(crate) fn trim(&mut self, max: usize) {
        while self.order.len() > max {
            if let Some((_, m)) = self.order.pop_first() {
                self.scores.remove(&m);
            }
        }
    }

    /// ZADD (replacing the score).
    pub(super) fn set(&mut self, member: &str, score: f64) {
        self.remove(member);
        self.scores.insert(member.to_string(), score);
        self.order.insert((Score(score), member.to_string()));
    }

    /// ZREM.
    pub(super) fn remove(&mut self, member: &str) {
        if let Some(old) = self.scores.remove(member) {
            self.order.remove(&(Score(old), member.to_string()));
        }
    }

    /// ZSCORE and 1-based ZREVRANK.
    pub(super) fn position(&self, member: &str) -> Option<(f64, usize)> {
        let score = *self.scores.get(member)?;
        let above = self
            .order
            .range((Score(score), member.to_string())..)
            .count();
        Some((score, above))
    }

    /// ZREVRANGE offset offset+limit-1 WITHSCORES.
    pub(super) fn rev_range(
        &self,
        offset: usize,
        limit: usize,
    ) -> impl Iterator<Item = (&str, f64)> {
        self.order
            .iter()
            .rev()
            .skip(offset)
            .take(limit)
            .map(|(s, m)| (m.as_str(), s.0))
    }
}
