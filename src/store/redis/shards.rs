//! Reads across the shards of a group (DESIGN §4): each shard's top or
//! positions decayed to the same read time, then merged. Exact, because
//! every member lives in exactly one shard. With one shard these are the
//! plain reads of one group.

use std::collections::HashMap;

use redis::Value;

use super::link::Part;
use super::{parse, RedisStore};
use crate::scoring::{decayed, Group};
use crate::store::Unit;
use crate::store::{Page, Scored, StoreError};

impl RedisStore {
    /// The units a read of `group` covers: its shards, or itself.
    fn shards_of(&self, group: &Group) -> Vec<Unit> {
        self.layout.units(group)
    }

    /// The number of `member`'s shard among [`RedisStore::shards_of`].
    fn shard_index(&self, group: &Group, member: &str) -> usize {
        self.layout.unit(group, member).part().unwrap_or(0) as usize
    }

    /// Members `offset..offset+limit` of `group` (every shard's first
    /// `offset + limit`, merged) under profile number `profile`, decayed to `at_ms`.
    pub(super) async fn merged_top(
        &self,
        group: &Group,
        profile: usize,
        offset: usize,
        limit: usize,
        at_ms: i64,
    ) -> Result<Page, StoreError> {
        let p = &self.profiles[profile];
        let shards = self.shards_of(group);
        let (start, skip) = if shards.len() == 1 {
            (offset, 0)
        } else {
            (0, offset)
        };
        let stop = offset.saturating_add(limit).saturating_sub(1);
        let parts: Vec<Part> = shards
            .iter()
            .map(|g| {
                let mut part = Part::atomic();
                part.add(
                    redis::cmd("HGET")
                        .arg(self.keys.meta(g))
                        .arg(format!("landmark:{}", p.name))
                        .clone(),
                )
                .add(
                    redis::cmd("ZREVRANGE")
                        .arg(self.keys.ranking(g, &p.name))
                        .arg(start)
                        .arg(stop)
                        .arg("WITHSCORES")
                        .clone(),
                );
                part
            })
            .collect();
        let mut items = Vec::new();
        for reply in self.send(parts).await? {
            let mut it = reply.into_iter();
            let landmark: Option<String> = parse(it.next().unwrap_or(Value::Nil))?;
            let rows: Vec<(String, f64)> = parse(it.next().unwrap_or(Value::Nil))?;
            let Some(landmark) = landmark else { continue };
            let l: i64 = landmark.parse().map_err(|_| {
                StoreError::Corrupt(format!("landmark {landmark:?} is not an integer"))
            })?;
            items.extend(rows.into_iter().map(|(member, v)| Scored {
                member,
                score: decayed(v, l, at_ms, p.half_life_ms),
            }));
        }
        if shards.len() > 1 {
            // A sorted set's order: value, then member, both descending.
            items.sort_by(|a, b| {
                b.score
                    .total_cmp(&a.score)
                    .then_with(|| b.member.cmp(&a.member))
            });
            // Each shard keeps `max_members`, so together they hold at least
            // the group's first `max_members`: what one sorted set would keep.
            items.truncate(self.max_members);
        }
        Ok(Page {
            items: items.into_iter().skip(skip).take(limit).collect(),
        })
    }

    /// Score (decayed to `at_ms`) and 1-based rank of each of `members` in
    /// `group`, per profile. A member's shard gives its score and its rank
    /// there; each other shard adds the members it holds above that score.
    /// [`crate::store::Store::scores`]: per shard, its landmark and one
    /// `ZMSCORE` of its members.
    pub(super) async fn member_scores(
        &self,
        group: &Group,
        profile: usize,
        members: &[String],
        at_ms: i64,
    ) -> Result<Vec<Option<f64>>, StoreError> {
        let shards = self.shards_of(group);
        let p = &self.profiles[profile];
        let mut in_shard: Vec<Vec<usize>> = vec![Vec::new(); shards.len()];
        for (i, m) in members.iter().enumerate() {
            let k = if shards.len() == 1 {
                0
            } else {
                self.shard_index(group, m)
            };
            in_shard[k].push(i);
        }
        let asked: Vec<(&Unit, &Vec<usize>)> = shards
            .iter()
            .zip(&in_shard)
            .filter(|(_, ms)| !ms.is_empty())
            .collect();
        let parts: Vec<Part> = asked
            .iter()
            .map(|(g, ms)| {
                let mut zmscore = redis::cmd("ZMSCORE");
                zmscore.arg(self.keys.ranking(g, &p.name));
                for &i in ms.iter() {
                    zmscore.arg(&members[i]);
                }
                let mut part = Part::atomic();
                part.add(
                    redis::cmd("HGET")
                        .arg(self.keys.meta(g))
                        .arg(format!("landmark:{}", p.name))
                        .clone(),
                )
                .add(zmscore);
                part
            })
            .collect();
        let mut out = vec![None; members.len()];
        for (reply, (_, ms)) in self.send(parts).await?.into_iter().zip(&asked) {
            let mut it = reply.into_iter();
            let landmark: Option<i64> = parse(it.next().unwrap_or(Value::Nil))?;
            let stored: Vec<Option<f64>> = parse(it.next().unwrap_or(Value::Nil))?;
            let Some(l) = landmark else {
                continue;
            };
            for (&i, v) in ms.iter().zip(stored) {
                out[i] = v.map(|v| decayed(v, l, at_ms, p.half_life_ms));
            }
        }
        Ok(out)
    }

    pub(super) async fn positions(
        &self,
        group: &Group,
        members: &[&str],
        at_ms: i64,
    ) -> Result<Vec<Vec<Option<(f64, usize)>>>, StoreError> {
        let shards = self.shards_of(group);
        let shard_of: Vec<usize> = members
            .iter()
            .map(|m| {
                if shards.len() == 1 {
                    0
                } else {
                    self.shard_index(group, m)
                }
            })
            .collect();
        let (mut out, landmarks) = self
            .positions_in_own_shard(&shards, members, &shard_of, at_ms)
            .await?;
        if shards.len() == 1 {
            return Ok(out);
        }
        self.add_ranks_in_other_shards(&shards, members, &shard_of, &landmarks, at_ms, &mut out)
            .await?;
        // Past `max_members` one sorted set would not hold the member.
        for row in &mut out {
            for p in row.iter_mut() {
                if p.is_some_and(|(_, rank)| rank > self.max_members) {
                    *p = None;
                }
            }
        }
        Ok(out)
    }

    /// Round 1 of [`RedisStore::positions`]: every shard's landmarks, and
    /// each member's score and rank in its own shard (`shard_of`).
    #[allow(clippy::type_complexity)]
    async fn positions_in_own_shard(
        &self,
        shards: &[Unit],
        members: &[&str],
        shard_of: &[usize],
        at_ms: i64,
    ) -> Result<(Vec<Vec<Option<(f64, usize)>>>, Vec<Vec<Option<i64>>>), StoreError> {
        let mut in_shard: Vec<Vec<usize>> = vec![Vec::new(); shards.len()];
        for (i, k) in shard_of.iter().enumerate() {
            in_shard[*k].push(i);
        }
        let parts: Vec<Part> = shards
            .iter()
            .zip(&in_shard)
            .map(|(g, ms)| {
                let mut part = Part::atomic();
                part.add(redis::cmd("HGETALL").arg(self.keys.meta(g)).clone());
                for &i in ms {
                    for p in self.profiles.iter() {
                        let key = self.keys.ranking(g, &p.name);
                        part.add(redis::cmd("ZSCORE").arg(&key).arg(members[i]).clone())
                            .add(redis::cmd("ZREVRANK").arg(&key).arg(members[i]).clone());
                    }
                }
                part
            })
            .collect();
        let replies = self.send(parts).await?;
        let mut landmarks: Vec<Vec<Option<i64>>> = Vec::with_capacity(shards.len());
        let mut out: Vec<Vec<Option<(f64, usize)>>> =
            vec![vec![None; self.profiles.len()]; members.len()];
        for (reply, ms) in replies.into_iter().zip(&in_shard) {
            let mut it = reply.into_iter();
            let meta: HashMap<String, String> = parse(it.next().unwrap_or(Value::Nil))?;
            let ls: Vec<Option<i64>> = self
                .profiles
                .iter()
                .map(|p| {
                    meta.get(&format!("landmark:{}", p.name))
                        .and_then(|l| l.parse::<i64>().ok())
                })
                .collect();
            for &i in ms {
                for (pi, p) in self.profiles.iter().enumerate() {
                    let score: Option<f64> = parse(it.next().unwrap_or(Value::Nil))?;
                    let rank: Option<usize> = parse(it.next().unwrap_or(Value::Nil))?;
                    out[i][pi] = match (score, rank, ls[pi]) {
                        (Some(v), Some(r), Some(l)) => {
                            Some((decayed(v, l, at_ms, p.half_life_ms), r + 1))
                        }
                        _ => None,
                    };
                }
            }
            landmarks.push(ls);
        }
        Ok((out, landmarks))
    }

    /// Round 2 of [`RedisStore::positions`]: in every other shard, the
    /// members above each score found, added to its rank.
    async fn add_ranks_in_other_shards(
        &self,
        shards: &[Unit],
        members: &[&str],
        shard_of: &[usize],
        landmarks: &[Vec<Option<i64>>],
        at_ms: i64,
        out: &mut [Vec<Option<(f64, usize)>>],
    ) -> Result<(), StoreError> {
        let mut asked = Vec::new();
        let mut parts = Vec::new();
        for (k, g) in shards.iter().enumerate() {
            let mut part = Part::default();
            for (i, _) in members.iter().enumerate() {
                if shard_of[i] == k {
                    continue;
                }
                for (pi, p) in self.profiles.iter().enumerate() {
                    let (Some((score, _)), Some(l)) = (out[i][pi], landmarks[k][pi]) else {
                        continue;
                    };
                    // The score in that shard's stored scale: above it, strictly.
                    let stored = score / decayed(1.0, l, at_ms, p.half_life_ms);
                    part.add(
                        redis::cmd("ZCOUNT")
                            .arg(self.keys.ranking(g, &p.name))
                            .arg(format!("({stored}"))
                            .arg("+inf")
                            .clone(),
                    );
                    asked.push((i, pi));
                }
            }
            parts.push(part);
        }
        let mut asked = asked.into_iter();
        for reply in self.send(parts).await? {
            for v in reply {
                let (i, pi) = asked.next().expect("one reply per count asked");
                let above: usize = parse(v)?;
                if let Some((_, rank)) = &mut out[i][pi] {
                    *rank += above;
                }
            }
        }
        Ok(())
    }
}
