//! Articles in memory: metadata, the News Index, names and exclusions,
//! and moving an article's scores when its section or tags change.

use std::collections::HashMap;
use std::time::Instant;

use async_trait::async_trait;

use super::sorted_set::SortedSet;
use super::{GroupState, MemoryStore, State};
use crate::event::ArticleMeta;
use crate::scoring::{to_landmark, Group};
use crate::store::{
    ArticleReads, ArticleState, Catalogue, Cursor, Editorial, Exclusion, StoreError,
};

impl MemoryStore {
    /// Moves an article's scores between section and tag rankings after its
    /// metadata changed, as `place.lua` does in Redis.
    fn relocate(&self, state: &mut State, a: &ArticleMeta, before: Option<&ArticleMeta>, at: i64) {
        let (left, entered) = crate::store::moves(before, a);
        let id = &a.article_id;
        for g in &left {
            if let Some(gs) = state.groups.get_mut(g) {
                gs.rankings.iter_mut().for_each(|r| r.remove(id));
            }
        }
        let overall: Vec<Option<f64>> = match state.groups.get(&Group::All) {
            None => return,
            Some(all) => self
                .profiles
                .iter()
                .enumerate()
                .map(|(p, profile)| {
                    let l = all.landmarks[p]?;
                    let (v, _) = all.rankings[p].position(id)?;
                    Some(crate::scoring::decayed(v, l, at, profile.half_life_ms))
                })
                .collect(),
        };
        let n = self.profiles.len();
        let tags = crate::store::tag_moves(&left, &entered);
        let sets = entered.into_iter().map(|g| (g, id.clone(), 1.0, false));
        let adds = tags.into_iter().map(|(g, t, sign)| (g, t, sign, true));
        for (g, member, sign, add) in sets.chain(adds) {
            let gs = state.groups.entry(g).or_insert_with(|| GroupState {
                landmarks: vec![None; n],
                rankings: (0..n).map(|_| SortedSet::default()).collect(),
                fences: HashMap::new(),
            });
            for (p, profile) in self.profiles.iter().enumerate() {
                let Some(score) = overall[p] else { continue };
                let l = *gs.landmarks[p].get_or_insert(at);
                let v = to_landmark(sign * score, at, l, profile.half_life_ms);
                let r = &mut gs.rankings[p];
                if add {
                    let now = r.position(&member).map_or(0.0, |(s, _)| s) + v;
                    // What rounding leaves of a score taken away is no score.
                    if now <= v.abs() * 1e-9 {
                        r.remove(&member);
                    } else {
                        r.set(&member, now);
                    }
                } else {
                    r.set(&member, v);
                }
                r.trim(self.max_members);
            }
        }
    }
}

#[async_trait]
impl Catalogue for MemoryStore {
    async fn publish(&self, articles: &[ArticleMeta]) -> Result<(), StoreError> {
        let now = Instant::now();
        let expires = now + self.metadata_ttl;
        let at = crate::now_ms();
        let mut state = self.state.write();
        state.names.extend(crate::store::name_fields(articles));
        for a in articles {
            let id = &a.article_id;
            let before = state
                .articles
                .get(id)
                .filter(|(_, e)| *e > now)
                .map(|(m, _)| m.clone());
            self.relocate(&mut state, a, before.as_ref(), at);
            let old_section = state.articles.get(id).and_then(|(m, _)| m.section.clone());
            if old_section.is_some() && old_section != a.section {
                for site in [None, a.site.clone()] {
                    if let Some(ix) = state.index.get_mut(&(site, old_section.clone())) {
                        ix.remove(id);
                    }
                }
            }
            if let Some(ms) = a.published_at_ms {
                let targets = crate::store::index_lists(a.site.as_deref(), a.section.as_deref());
                // The index keeps what was published within the metadata
                // TTL, as the Redis store does.
                let horizon = at - self.metadata_ttl.as_millis() as i64;
                for t in targets {
                    let ix = state.index.entry(t).or_default();
                    ix.set(id, ms as f64);
                    ix.drop_below(horizon as f64);
                    ix.trim(self.max_members);
                }
            }
            state.withdrawn.remove(id);
            state.articles.insert(id.clone(), (a.clone(), expires));
        }
        Ok(())
    }

    async fn unpublish(&self, ids: &[String]) -> Result<(), StoreError> {
        let now = Instant::now();
        let mut guard = self.state.write();
        let state = &mut *guard;
        for id in ids {
            let meta = state
                .articles
                .remove(id)
                .filter(|(_, expires)| *expires > now)
                .map(|(m, _)| m)
                .unwrap_or_default();
            let mut groups = vec![Group::All];
            groups.extend(crate::store::article_groups(Some(&meta)));
            for g in groups {
                if let Some(gs) = state.groups.get_mut(&g) {
                    gs.rankings.iter_mut().for_each(|r| r.remove(id));
                }
            }
            state.counts.iter_mut().for_each(|c| c.remove(id));
            for key in crate::store::index_lists(meta.site.as_deref(), meta.section.as_deref()) {
                if let Some(ix) = state.index.get_mut(&key) {
                    ix.remove(id);
                }
            }
            state.withdrawn.insert(id.clone(), now + self.metadata_ttl);
        }
        Ok(())
    }
}

#[async_trait]
impl ArticleReads for MemoryStore {
    async fn articles(&self, ids: &[String]) -> Result<Vec<ArticleState>, StoreError> {
        let now = Instant::now();
        let state = self.state.read();
        Ok(ids
            .iter()
            .map(|id| {
                if state.withdrawn.get(id).is_some_and(|e| *e > now) {
                    return ArticleState::Withdrawn;
                }
                match state.articles.get(id) {
                    Some((a, expires)) if *expires > now => {
                        ArticleState::Live(Box::new(ArticleMeta {
                            excluded: state.exclusions.contains_key(id),
                            ..a.clone()
                        }))
                    }
                    _ => ArticleState::Unknown,
                }
            })
            .collect())
    }

    async fn index(
        &self,
        site: Option<&str>,
        section: Option<&str>,
        before: Option<&Cursor>,
        limit: usize,
    ) -> Result<Vec<Cursor>, StoreError> {
        let state = self.state.read();
        let list = (site.map(str::to_string), section.map(str::to_string));
        let Some(ix) = state.index.get(&list) else {
            return Ok(Vec::new());
        };
        Ok(ix
            .rev_range(0, usize::MAX)
            .map(|(m, s)| Cursor {
                published_at_ms: s as i64,
                article_id: m.to_string(),
            })
            .filter(|c| before.is_none_or(|b| c.is_after(b)))
            .take(limit)
            .collect())
    }

    async fn names(&self, keys: &[String]) -> Result<Vec<Option<String>>, StoreError> {
        let state = self.state.read();
        Ok(keys.iter().map(|k| state.names.get(k).cloned()).collect())
    }

    async fn exclusions(&self) -> Result<Vec<(String, Exclusion)>, StoreError> {
        let state = self.state.read();
        Ok(state
            .exclusions
            .iter()
            .map(|(k, e)| (k.clone(), e.clone()))
            .collect())
    }
}

#[async_trait]
impl Editorial for MemoryStore {
    async fn set_exclusion(&self, key: &str, by: Option<&Exclusion>) -> Result<(), StoreError> {
        let mut state = self.state.write();
        match by {
            Some(e) => state.exclusions.insert(key.to_string(), e.clone()),
            None => state.exclusions.remove(key),
        };
        Ok(())
    }
}
