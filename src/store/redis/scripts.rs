//! The arguments of the Lua scripts: one flush's increments for
//! `apply.lua`, and an article's moves between rankings for `place.lua`.

use crate::event::{ArticleMeta, EventType};
use crate::now_ms;
use crate::scoring::{Aggregate, Group, REBASE_AFTER_HALF_LIVES, SCORE_FLOOR};
use crate::store::{StoreError, FENCE_PREFIX};

use super::RedisStore;

impl RedisStore {
    /// Queues on `pipe` the moves of each article between section and tag
    /// rankings after its metadata changed from `previous` (see
    /// [`crate::store::moves`]). The overall scores that entered groups take
    /// are read first, for every article in one round trip. Returns whether
    /// `pipe` invokes `place.lua`.
    pub(super) async fn relocations(
        &self,
        articles: &[ArticleMeta],
        previous: &[Option<ArticleMeta>],
        pipe: &mut redis::Pipeline,
    ) -> Result<bool, StoreError> {
        let moves: Vec<(Vec<Group>, Vec<Group>)> = articles
            .iter()
            .zip(previous)
            .map(|(a, before)| crate::store::moves(before.as_ref(), a))
            .collect();
        let entering: Vec<&str> = articles
            .iter()
            .zip(&moves)
            .filter(|(_, (_, entered))| !entered.is_empty())
            .map(|(a, _)| a.article_id.as_str())
            .collect();
        let at = now_ms();
        let mut overall = if entering.is_empty() {
            Vec::new()
        } else {
            self.positions(&Group::All, &entering, at).await?
        }
        .into_iter();
        let mut placed = false;
        for (a, (left, entered)) in articles.iter().zip(moves) {
            let id = &a.article_id;
            for g in &left {
                for p in self.profiles.iter() {
                    pipe.zrem(self.keys.ranking(g, &p.name), id).ignore();
                }
            }
            if entered.is_empty() {
                continue;
            }
            let scores = overall.next().expect("a position per entering article");
            if scores.iter().all(Option::is_none) {
                // No score to carry into the new groups.
                continue;
            }
            for g in &entered {
                let mut inv = self.place_script.prepare_invoke();
                inv.key(self.keys.meta(g));
                for p in self.profiles.iter() {
                    inv.key(self.keys.ranking(g, &p.name));
                }
                inv.arg(id)
                    .arg(at)
                    .arg(self.max_members)
                    .arg(self.profiles.len());
                for (p, o) in self.profiles.iter().zip(&scores) {
                    inv.arg(&p.name)
                        .arg(p.half_life_ms)
                        .arg(o.map(|(s, _)| s.to_string()).unwrap_or_default());
                }
                pipe.invoke_script(&inv).ignore();
                placed = true;
            }
        }
        Ok(placed)
    }

    /// The call of `apply.lua` for `group`'s share of `batch`.
    pub(super) fn invocation(
        &self,
        batch: &Aggregate,
        group: &Group,
    ) -> redis::ScriptInvocation<'_> {
        let mut inv = self.apply_script.prepare_invoke();
        inv.key(self.keys.meta(group));
        for p in self.profiles.iter() {
            inv.key(self.keys.ranking(group, &p.name));
        }
        let with_counts = *group == Group::All && !batch.counts.is_empty();
        if with_counts {
            for kind in EventType::ALL {
                inv.key(self.keys.count(kind));
            }
        }
        let fences = batch.fences.get(group).map(Vec::as_slice).unwrap_or(&[]);
        inv.arg(batch.reference_ms)
            .arg(self.max_members)
            .arg(SCORE_FLOOR)
            .arg(REBASE_AFTER_HALF_LIVES)
            .arg(self.profiles.len())
            .arg(fences.len());
        for p in self.profiles.iter() {
            inv.arg(&p.name).arg(p.half_life_ms);
        }
        for f in fences {
            inv.arg(format!("{FENCE_PREFIX}{}", f.source))
                .arg(f.expected.map(|e| e.to_string()).unwrap_or_default())
                .arg(f.new);
        }
        let members = &batch.groups[group];
        inv.arg(members.len());
        for (member, incs) in members {
            inv.arg(member);
            for v in incs {
                inv.arg(*v);
            }
        }
        if with_counts {
            inv.arg(batch.counts.len());
            for (article, c) in &batch.counts {
                inv.arg(article);
                for n in c {
                    inv.arg(*n);
                }
            }
        } else {
            inv.arg(0);
        }
        inv
    }
}
