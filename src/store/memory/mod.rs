//! The in-process store: the semantics of the Redis layout, without Redis.
//!
//! Its state lives in the process, so the consumer rebuilds it from the
//! topics' retained history at every start (see [`crate::ingest`]).

mod articles;
mod sorted_set;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use parking_lot::RwLock;

use self::sorted_set::SortedSet;
use super::Layout;
use super::{
    AlertLog, AlertReads, Applied, Connection, FilterLog, FilterWrite, Page, ProfileId,
    RankingReads, RankingWrites, SavedFilter, Scored, StoreError, Unit,
};
use crate::event::{ArticleMeta, EventType, PerType};
use crate::scoring::{
    growth, plan_landmark, Aggregate, Group, LandmarkPlan, Profiles, SCORE_FLOOR,
};
use std::ops::Range;

#[derive(Debug, Default)]
struct GroupState {
    landmarks: Vec<Option<i64>>,
    rankings: Vec<SortedSet>,
    fences: HashMap<String, i64>,
}

#[derive(Debug, Default)]
struct State {
    groups: HashMap<Group, GroupState>,
    counts: PerType<SortedSet>,
    articles: HashMap<String, (ArticleMeta, Instant)>,
    /// News Index per section (`None`: every section), scored by publication time.
    index: HashMap<super::IndexList, SortedSet>,
    withdrawn: HashMap<String, Instant>,
    /// Articles editors hid.
    exclusions: HashMap<String, super::Exclusion>,
    /// Section and tag names by [`super::name_key`].
    names: HashMap<String, String>,
    /// Saved duplicate filters per partition.
    filters: HashMap<String, SavedFilter>,
}

/// The in-process store.
pub struct MemoryStore {
    profiles: Profiles,
    max_members: usize,
    metadata_ttl: Duration,
    state: RwLock<State>,
    alerts: parking_lot::Mutex<Alerts>,
}

/// Alert claims (key → until, epoch ms) and the most recent alerts.
#[derive(Debug, Default)]
struct Alerts {
    claims: HashMap<String, i64>,
    recent: std::collections::VecDeque<String>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new(profiles: Profiles, max_members: usize, metadata_ttl: Duration) -> MemoryStore {
        MemoryStore {
            profiles,
            max_members,
            metadata_ttl,
            state: RwLock::new(State::default()),
            alerts: parking_lot::Mutex::new(Alerts::default()),
        }
    }
}

#[async_trait]
impl Connection for MemoryStore {
    fn durable(&self) -> bool {
        false
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

#[async_trait]
impl RankingWrites for MemoryStore {
    async fn apply(&self, batch: &Aggregate) -> Result<Applied, StoreError> {
        Layout::WHOLE.check(batch.groups.keys().chain(batch.fences.keys()))?;
        let r = batch.reference_ms;
        let n = self.profiles.len();
        let mut applied = Applied::default();
        let mut state = self.state.write();
        // Every group is one unit here (the default layout).
        for (unit, members) in &batch.groups {
            let g = state
                .groups
                .entry(unit.group().clone())
                .or_insert_with(|| GroupState {
                    landmarks: vec![None; n],
                    rankings: (0..n).map(|_| SortedSet::default()).collect(),
                    fences: HashMap::new(),
                });
            let fences = batch.fences.get(unit).map(Vec::as_slice).unwrap_or(&[]);
            if fences
                .iter()
                .any(|f| g.fences.get(&f.source).copied() != f.expected)
            {
                applied.conflicts.push(unit.clone());
                continue;
            }
            for f in fences {
                g.fences.insert(f.source.clone(), f.new);
            }
            for (p, profile) in self.profiles.iter().enumerate() {
                let h = profile.half_life_ms;
                let plan = plan_landmark(g.landmarks[p], r, h);
                if let LandmarkPlan::Rebase { factor, .. } = plan {
                    g.rankings[p].scale_and_drop_below(factor, SCORE_FLOOR);
                }
                let l = plan.landmark();
                g.landmarks[p] = Some(l);
                let ranking = &mut g.rankings[p];
                // `to_landmark`'s factor, once for every member.
                let factor = growth(r, l, h);
                for (member, incs) in members {
                    ranking.incr(member, incs[p] * factor);
                }
                ranking.trim(self.max_members);
            }
        }
        // Counts travel with the overall group, as in Redis.
        let all = Unit::whole(&Group::All);
        if batch.groups.contains_key(&all) && !applied.conflicts.contains(&all) {
            for (article, counts) in &batch.counts {
                for (i, c) in counts.iter().enumerate() {
                    if *c > 0 {
                        state.counts[i].incr(article, *c as f64);
                    }
                }
            }
            for set in state.counts.iter_mut() {
                set.trim(self.max_members);
            }
        }
        Ok(applied)
    }

    async fn fences(&self, units: &[Unit]) -> Result<Vec<HashMap<String, i64>>, StoreError> {
        let state = self.state.read();
        Ok(units
            .iter()
            .map(|u| {
                state
                    .groups
                    .get(u.group())
                    .map(|s| s.fences.clone())
                    .unwrap_or_default()
            })
            .collect())
    }
}

#[async_trait]
impl RankingReads for MemoryStore {
    async fn top(
        &self,
        group: &Group,
        profile: ProfileId,
        range: Range<usize>,
        at_ms: i64,
    ) -> Result<Page, StoreError> {
        let (profile, offset, limit) = (profile.0, range.start, range.len());
        let state = self.state.read();
        let Some(g) = state.groups.get(group) else {
            return Ok(Page::default());
        };
        let (Some(l), Some(ranking)) = (g.landmarks[profile], g.rankings.get(profile)) else {
            return Ok(Page::default());
        };
        let h = self.profiles[profile].half_life_ms;
        Ok(Page {
            items: ranking
                .rev_range(offset, limit)
                .map(|(m, v)| Scored {
                    member: m.to_string(),
                    score: crate::scoring::decayed(v, l, at_ms, h),
                })
                .collect(),
        })
    }

    async fn scores(
        &self,
        group: &Group,
        profile: ProfileId,
        members: &[String],
        at_ms: i64,
    ) -> Result<Vec<Option<f64>>, StoreError> {
        let profile = profile.0;
        let state = self.state.read();
        let h = self.profiles[profile].half_life_ms;
        let found = state
            .groups
            .get(group)
            .and_then(|g| Some((g.landmarks[profile]?, &g.rankings[profile])));
        Ok(members
            .iter()
            .map(|m| {
                let (l, ranking) = found?;
                let (v, _) = ranking.position(m)?;
                Some(crate::scoring::decayed(v, l, at_ms, h))
            })
            .collect())
    }

    async fn position(
        &self,
        group: &Group,
        member: &str,
        at_ms: i64,
    ) -> Result<Vec<Option<(f64, usize)>>, StoreError> {
        let state = self.state.read();
        let n = self.profiles.len();
        let Some(g) = state.groups.get(group) else {
            return Ok(vec![None; n]);
        };
        Ok((0..n)
            .map(|p| {
                let l = g.landmarks[p]?;
                let (v, rank) = g.rankings[p].position(member)?;
                let h = self.profiles[p].half_life_ms;
                Some((crate::scoring::decayed(v, l, at_ms, h), rank))
            })
            .collect())
    }

    async fn counts(&self, id: &str) -> Result<PerType<u64>, StoreError> {
        let state = self.state.read();
        let mut out = [0u64; EventType::COUNT];
        for (i, c) in state.counts.iter().enumerate() {
            out[i] = c.position(id).map_or(0, |(v, _)| v as u64);
        }
        Ok(out)
    }
}

#[async_trait]
impl FilterLog for MemoryStore {
    async fn load_filters(&self, sources: &[String]) -> Result<Vec<SavedFilter>, StoreError> {
        let state = self.state.read();
        Ok(sources
            .iter()
            .map(|s| state.filters.get(s).cloned().unwrap_or_default())
            .collect())
    }

    async fn save_filters(&self, writes: &[FilterWrite]) -> Result<Vec<String>, StoreError> {
        let mut state = self.state.write();
        let mut conflicts = Vec::new();
        for w in writes {
            let saved = state.filters.entry(w.source.clone()).or_default();
            if saved.fence.is_some_and(|f| f >= w.new) {
                continue;
            }
            if w.delta.snapshot {
                saved.deltas.clear();
                saved.seed = Some(w.seed.clone());
            } else {
                let behind = saved.fence.unwrap_or(-1) < w.expected.unwrap_or(-1);
                let other_seed = saved.seed.as_ref().is_some_and(|s| *s != w.seed);
                if behind || other_seed {
                    conflicts.push(w.source.clone());
                    continue;
                }
                saved.seed.get_or_insert_with(|| w.seed.clone());
            }
            saved.deltas.push(w.delta.bytes.clone());
            saved.fence = Some(w.new);
        }
        Ok(conflicts)
    }
}

#[async_trait]
impl AlertLog for MemoryStore {
    async fn record_alert(
        &self,
        key: &str,
        cooldown_ms: i64,
        alert: &str,
    ) -> Result<bool, StoreError> {
        let now = crate::now_ms();
        let mut alerts = self.alerts.lock();
        alerts.claims.retain(|_, until| *until > now);
        if alerts.claims.contains_key(key) {
            return Ok(false);
        }
        alerts.claims.insert(key.to_string(), now + cooldown_ms);
        alerts.recent.push_front(alert.to_string());
        alerts.recent.truncate(super::RECENT_ALERTS);
        Ok(true)
    }
}

#[async_trait]
impl AlertReads for MemoryStore {
    async fn recent_alerts(&self, limit: usize) -> Result<Vec<String>, StoreError> {
        Ok(self
            .alerts
            .lock()
            .recent
            .iter()
            .take(limit)
            .cloned()
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorted_sets_order_and_trim_like_redis() {
        let mut s = SortedSet::default();
        s.incr("b", 1.0);
        s.incr("a", 1.0);
        s.incr("c", 2.0);
        s.incr("d", 0.5);
        let order: Vec<_> = s.rev_range(0, 10).map(|(m, _)| m.to_string()).collect();
        // Equal scores: higher member name first, as ZREVRANGE does.
        assert_eq!(order, ["c", "b", "a", "d"]);
        s.trim(2);
        let kept: Vec<_> = s
            .rev_range(0, 10)
            .map(|(m, v)| (m.to_string(), v))
            .collect();
        assert_eq!(kept, [("c".to_string(), 2.0), ("b".to_string(), 1.0)]);
        s.scale_and_drop_below(0.5, 0.75);
        let kept: Vec<_> = s
            .rev_range(0, 10)
            .map(|(m, v)| (m.to_string(), v))
            .collect();
        assert_eq!(kept, [("c".to_string(), 1.0)]);
    }
}
