//! The arguments of the Lua scripts: one flush's increments for
//! `apply.lua`, and an article's moves between rankings for `place.lua`.

use redis::Cmd;

use super::keys::FENCE_PREFIX;
use crate::event::{ArticleMeta, EventType};
use crate::now_ms;
use crate::scoring::{
    growth, plan_landmark, Aggregate, Group, REBASE_AFTER_HALF_LIVES, SCORE_FLOOR,
};
use crate::store::StoreError;
use crate::store::Unit;

use super::link::Part;
use super::{evalsha, RedisStore};

impl RedisStore {
    /// Adds to `parts` the moves of each article between section and tag
    /// rankings after its metadata changed from `previous` (see
    /// [`crate::store::moves`]). The overall scores that entered groups take
    /// are read first, for every article at once. Returns whether `parts`
    /// invoke `place.lua`.
    pub(super) async fn relocations(
        &self,
        articles: &[ArticleMeta],
        previous: &[Option<ArticleMeta>],
        parts: &mut Vec<Part>,
    ) -> Result<bool, StoreError> {
        let moves: Vec<(Vec<Group>, Vec<Group>)> = articles
            .iter()
            .zip(previous)
            .map(|(a, before)| crate::store::moves(before.as_ref(), a))
            .collect();
        let tags: Vec<Vec<(Group, String, f64)>> = moves
            .iter()
            .map(|(left, entered)| crate::store::tag_moves(left, entered))
            .collect();
        let moving = |i: usize| !moves[i].1.is_empty() || !tags[i].is_empty();
        let entering: Vec<&str> = articles
            .iter()
            .enumerate()
            .filter(|(i, _)| moving(*i))
            .map(|(_, a)| a.article_id.as_str())
            .collect();
        let at = now_ms();
        let mut overall = if entering.is_empty() {
            Vec::new()
        } else {
            self.positions(&Group::All, &entering, at).await?
        }
        .into_iter();
        let mut placed = false;
        for (i, (a, (left, entered))) in articles.iter().zip(&moves).enumerate() {
            let id = &a.article_id;
            parts.extend(left.iter().map(|g| self.removal(g, id)));
            if !moving(i) {
                continue;
            }
            let scores = overall.next().expect("a position per entering article");
            if scores.iter().all(Option::is_none) {
                // No score to carry into the new groups.
                continue;
            }
            let sets = entered.iter().map(|g| (g, id.as_str(), 1.0, "set"));
            let adds = tags[i]
                .iter()
                .map(|(g, t, sign)| (g, t.as_str(), *sign, "add"));
            for (g, member, sign, mode) in sets.chain(adds) {
                let g = self.layout.unit(g, member);
                let mut keys = vec![self.keys.meta(&g)];
                keys.extend(self.profiles.iter().map(|p| self.keys.ranking(&g, &p.name)));
                let mut inv = evalsha(&self.place_script, &keys);
                inv.arg(member)
                    .arg(at)
                    .arg(self.max_members)
                    .arg(self.profiles.len());
                for (p, o) in self.profiles.iter().zip(&scores) {
                    inv.arg(&p.name)
                        .arg(p.half_life_ms)
                        .arg(o.map(|(s, _)| (sign * s).to_string()).unwrap_or_default());
                }
                inv.arg(self.group_ttl_ms).arg(mode);
                parts.push(Part::one(inv));
                placed = true;
            }
        }
        Ok(placed)
    }

    /// Removes `id` from every profile's ranking of `group` (of the shard
    /// that holds it).
    pub(super) fn removal(&self, group: &Group, id: &str) -> Part {
        let g = self.layout.unit(group, id);
        let mut part = Part::default();
        for p in self.profiles.iter() {
            part.add(
                redis::cmd("ZREM")
                    .arg(self.keys.ranking(&g, &p.name))
                    .arg(id)
                    .clone(),
            );
        }
        part
    }

    /// The call of `apply.lua` for `group`'s share of `batch`, given what
    /// is known of its landmarks, with the landmarks it expects to leave:
    /// its increments are computed against them ([`plan_landmark`]). The
    /// all-time counts go with the overall ranking, in cluster mode with
    /// the shard that ranks the article.
    pub(super) fn invocation(
        &self,
        batch: &Aggregate,
        group: &Unit,
        known: &[Option<i64>],
    ) -> (Cmd, Vec<i64>) {
        let counts: Vec<_> = match group.part() {
            _ if *group.group() != Group::All => Vec::new(),
            None => batch.counts.iter().collect(),
            Some(_) => batch
                .counts
                .iter()
                .filter(|(article, _)| self.layout.unit(&Group::All, article) == *group)
                .collect(),
        };
        let mut keys = vec![self.keys.meta(group)];
        keys.extend(
            self.profiles
                .iter()
                .map(|p| self.keys.ranking(group, &p.name)),
        );
        if !counts.is_empty() {
            keys.extend(EventType::ALL.iter().map(|k| self.keys.count(group, *k)));
        }
        let mut inv = evalsha(&self.apply_script, &keys);
        let fences = batch.fences.get(group).map(Vec::as_slice).unwrap_or(&[]);
        inv.arg(batch.reference_ms)
            .arg(self.max_members)
            .arg(SCORE_FLOOR)
            .arg(REBASE_AFTER_HALF_LIVES)
            .arg(self.profiles.len())
            .arg(fences.len());
        let r = batch.reference_ms;
        let after: Vec<i64> = self
            .profiles
            .iter()
            .zip(known)
            .map(|(p, l)| plan_landmark(*l, r, p.half_life_ms).landmark())
            .collect();
        for (p, l) in self.profiles.iter().zip(&after) {
            inv.arg(&p.name).arg(p.half_life_ms).arg(*l);
        }
        // Each profile's factor from the reference time to its landmark
        // ([`crate::scoring::to_landmark`]), once for every member.
        let factors: Vec<f64> = self
            .profiles
            .iter()
            .zip(&after)
            .map(|(p, l)| growth(r, *l, p.half_life_ms))
            .collect();
        for f in fences {
            inv.arg(format!("{FENCE_PREFIX}{}", f.source))
                .arg(f.expected.map(|e| e.to_string()).unwrap_or_default())
                .arg(f.new);
        }
        let members = &batch.groups[group];
        inv.arg(members.len());
        for (member, incs) in members {
            inv.arg(member);
            for (v, factor) in incs.iter().zip(&factors) {
                inv.arg(v * factor);
            }
        }
        inv.arg(counts.len());
        for (article, c) in counts {
            inv.arg(article);
            for n in c {
                inv.arg(*n);
            }
        }
        inv.arg(self.group_ttl_ms);
        (inv, after)
    }
}
