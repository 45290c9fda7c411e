//! The Redis store: the layout of DESIGN §4, on any topology ([`link`]).
//!
//! Each flush is one `EVALSHA` of `apply.lua` per group of keys (one hash
//! tag, so one Cluster slot), all sent at once. Reads fetch a ranking and
//! its landmark in one `MULTI`/`EXEC`, so they are consistent with any
//! concurrent rebase. In cluster mode every group is split into shards by
//! member (its [`Layout`]'s units); reads merge the shards ([`shards`]).
//! The article catalogue (metadata, the News Index, exclusions) is
//! [`articles`]'s.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use redis::{Cmd, FromRedisValue, Script, Value};

mod articles;
mod keys;
mod landmarks;
mod link;
mod scripts;
mod shards;

use super::{
    AlertLog, AlertReads, Applied, Connection, FilterLog, FilterWrite, Page, ProfileId,
    RankingReads, RankingWrites, SavedFilter, StoreError,
};
use crate::config::StoreSettings;
use crate::event::{EventType, PerType};
use crate::scoring::{Aggregate, Group, Profiles};
use crate::store::{Layout, Unit};
use keys::Keys;
use keys::FENCE_PREFIX;
use landmarks::Landmarks;
use link::{Link, Part};
use std::ops::Range;

/// A Redis-backed store.
#[derive(Clone)]
pub struct RedisStore {
    link: Link,
    keys: Keys,
    profiles: Profiles,
    max_members: usize,
    metadata_ttl: Duration,
    apply_script: Script,
    place_script: Script,
    filter_script: Script,
    /// Groups split in shards by member in cluster mode, else whole.
    layout: Layout,
    /// `store.group_ttl`, in milliseconds.
    group_ttl_ms: u64,
    /// Replicas that must hold every write before it counts as done.
    wait_replicas: usize,
    /// The rankings' landmarks as this process last saw them.
    landmarks: Landmarks,
}

/// Times a flush's unit is computed again after another process moved
/// its landmarks in between (a rebase, every few days per profile).
const LANDMARK_ATTEMPTS: usize = 3;

/// What `apply.lua` answered for one unit.
enum ApplyReply {
    Applied,
    /// A fence differs from what the writer expected: the reply as is.
    Conflict(Vec<String>),
    /// A landmark differs from what the writer expected: the stored ones,
    /// one per profile.
    Landmarks(Vec<Option<i64>>),
}

impl ApplyReply {
    fn read(reply: Value) -> Result<ApplyReply, StoreError> {
        let v: Vec<String> = match reply {
            Value::Int(_) => return Ok(ApplyReply::Applied),
            array @ Value::Array(_) => parse(array)?,
            other => {
                return Err(StoreError::Corrupt(format!(
                    "unexpected script reply {other:?}"
                )))
            }
        };
        match v.split_first() {
            Some((tag, stored)) if tag == "landmark" => stored
                .iter()
                .map(|l| match l.as_str() {
                    "" => Ok(None),
                    l => l
                        .parse()
                        .map(Some)
                        .map_err(|_| StoreError::Corrupt(format!("landmark {l:?}"))),
                })
                .collect::<Result<_, _>>()
                .map(ApplyReply::Landmarks),
            _ => Ok(ApplyReply::Conflict(v)),
        }
    }
}

fn unavailable(e: redis::RedisError) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// `v` read as `T`, or the store holds something this version cannot read.
fn parse<T: FromRedisValue>(v: Value) -> Result<T, StoreError> {
    redis::from_redis_value(v).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// The call of `script` on `keys`; its arguments follow.
fn evalsha(script: &Script, keys: &[String]) -> Cmd {
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(script.get_hash()).arg(keys.len()).arg(keys);
    cmd
}

impl RedisStore {
    /// Connects as `settings` say (standalone, Sentinel or Cluster).
    pub async fn connect(
        settings: &StoreSettings,
        profiles: Profiles,
        max_members: usize,
        metadata_ttl: Duration,
    ) -> Result<RedisStore, StoreError> {
        Ok(RedisStore {
            link: Link::open(settings).await.map_err(unavailable)?,
            keys: Keys::new(&settings.key_prefix),
            profiles,
            max_members,
            metadata_ttl,
            apply_script: Script::new(include_str!("../apply.lua")),
            place_script: Script::new(include_str!("../place.lua")),
            filter_script: Script::new(include_str!("../filter.lua")),
            layout: Layout::split(settings.effective_shards()),
            group_ttl_ms: settings.group_ttl.as_millis() as u64,
            wait_replicas: settings.wait_replicas,
            landmarks: Landmarks::default(),
        })
    }

    /// Sends `parts` (see [`Link::send`]).
    async fn send(&self, parts: Vec<Part>) -> Result<Vec<Vec<Value>>, StoreError> {
        self.link.send(parts).await.map_err(unavailable)
    }

    /// Returns once `wait_replicas` replicas hold what this process wrote
    /// (DESIGN §4): after every write, and after reading the fences a write
    /// will rely on, which may come from a write not yet replicated.
    async fn replicated(&self) -> Result<(), StoreError> {
        if self.wait_replicas == 0 {
            return Ok(());
        }
        self.link
            .wait(self.wait_replicas)
            .await
            .map_err(unavailable)
    }

    /// `HGETALL` of every key, at once.
    async fn hashes(
        &self,
        keys: impl Iterator<Item = String>,
    ) -> Result<Vec<HashMap<String, String>>, StoreError> {
        let parts: Vec<Part> = keys
            .map(|k| Part::one(redis::cmd("HGETALL").arg(k).clone()))
            .collect();
        self.send(parts)
            .await?
            .into_iter()
            .map(|mut r| parse(r.pop().unwrap_or(Value::Nil)))
            .collect()
    }
}

#[async_trait]
impl Connection for RedisStore {
    fn durable(&self) -> bool {
        true
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.link.ping().await.map_err(|e| {
            if self.link.replicated() && link::failover(&e) {
                StoreError::NoMaster(e.to_string())
            } else {
                unavailable(e)
            }
        })
    }
}

#[async_trait]
impl RankingWrites for RedisStore {
    fn layout(&self) -> Layout {
        self.layout
    }

    async fn apply(&self, batch: &Aggregate) -> Result<Applied, StoreError> {
        self.layout
            .check(batch.groups.keys().chain(batch.fences.keys()))?;
        if batch.groups.is_empty() {
            return Ok(Applied::default());
        }
        // Loaded on every flush: a restarted Redis has an empty script cache.
        self.link
            .load(&self.apply_script)
            .await
            .map_err(unavailable)?;
        // Each unit is computed against the landmarks last seen; one whose
        // landmarks another process moved is computed again with the ones
        // the script told back.
        let mut pending: Vec<&Unit> = batch.groups.keys().collect();
        let mut applied = Applied::default();
        for _ in 0..LANDMARK_ATTEMPTS {
            let (parts, after): (Vec<Part>, Vec<Vec<i64>>) = pending
                .iter()
                .map(|g| {
                    let known = self.landmarks.known(g, self.profiles.len());
                    let (cmd, after) = self.invocation(batch, g, &known);
                    (Part::one(cmd), after)
                })
                .unzip();
            let replies = self.send(parts).await?;
            self.replicated().await?;
            let mut stale = Vec::new();
            for ((group, after), mut reply) in pending.into_iter().zip(after).zip(replies) {
                match ApplyReply::read(reply.pop().unwrap_or(Value::Nil))? {
                    ApplyReply::Applied => self
                        .landmarks
                        .set(group, after.into_iter().map(Some).collect()),
                    ApplyReply::Conflict(v) => {
                        tracing::info!(?group, reply = ?v, "fence conflict");
                        applied.conflicts.push(group.clone());
                    }
                    ApplyReply::Landmarks(stored) => {
                        self.landmarks.set(group, stored);
                        stale.push(group);
                    }
                }
            }
            if stale.is_empty() {
                return Ok(applied);
            }
            pending = stale;
        }
        Err(StoreError::Unavailable(format!(
            "the landmarks of {} groups moved under {LANDMARK_ATTEMPTS} writes in a row",
            pending.len()
        )))
    }

    async fn fences(&self, groups: &[Unit]) -> Result<Vec<HashMap<String, i64>>, StoreError> {
        if groups.is_empty() {
            return Ok(Vec::new());
        }
        let metas = self
            .hashes(groups.iter().map(|g| self.keys.meta(g)))
            .await?;
        self.replicated().await?;
        Ok(metas
            .into_iter()
            .map(|m| {
                m.into_iter()
                    .filter_map(|(k, v)| {
                        let source = k.strip_prefix(FENCE_PREFIX)?.to_string();
                        Some((source, v.parse().ok()?))
                    })
                    .collect()
            })
            .collect())
    }
}

#[async_trait]
impl RankingReads for RedisStore {
    async fn top(
        &self,
        group: &Group,
        profile: ProfileId,
        range: Range<usize>,
        at_ms: i64,
    ) -> Result<Page, StoreError> {
        self.merged_top(group, profile.0, range.start, range.len(), at_ms)
            .await
    }

    async fn scores(
        &self,
        group: &Group,
        profile: ProfileId,
        members: &[String],
        at_ms: i64,
    ) -> Result<Vec<Option<f64>>, StoreError> {
        self.member_scores(group, profile.0, members, at_ms).await
    }

    async fn position(
        &self,
        group: &Group,
        member: &str,
        at_ms: i64,
    ) -> Result<Vec<Option<(f64, usize)>>, StoreError> {
        let rows = self.positions(group, &[member], at_ms).await?;
        Ok(rows.into_iter().next().unwrap_or_default())
    }

    async fn counts(&self, id: &str) -> Result<PerType<u64>, StoreError> {
        let all = self.layout.unit(&Group::All, id);
        let mut part = Part::default();
        for kind in EventType::ALL {
            part.add(
                redis::cmd("ZSCORE")
                    .arg(self.keys.count(&all, kind))
                    .arg(id)
                    .clone(),
            );
        }
        let mut replies = self.send(vec![part]).await?;
        let mut out = [0u64; EventType::COUNT];
        for (o, v) in out.iter_mut().zip(replies.pop().unwrap_or_default()) {
            *o = parse::<Option<f64>>(v)?.unwrap_or(0.0) as u64;
        }
        Ok(out)
    }
}

#[async_trait]
impl FilterLog for RedisStore {
    async fn load_filters(&self, sources: &[String]) -> Result<Vec<SavedFilter>, StoreError> {
        let parts: Vec<Part> = sources
            .iter()
            .map(|s| {
                let mut p = Part::atomic();
                p.add(redis::cmd("HGETALL").arg(self.keys.filter_meta(s)).clone())
                    .add(
                        redis::cmd("LRANGE")
                            .arg(self.keys.filter_log(s))
                            .arg(0)
                            .arg(-1)
                            .clone(),
                    );
                p
            })
            .collect();
        let replies = self.send(parts).await?;
        self.replicated().await?;
        replies
            .into_iter()
            .map(|r| {
                let mut it = r.into_iter();
                let meta: HashMap<String, String> = parse(it.next().unwrap_or(Value::Nil))?;
                let deltas: Vec<Vec<u8>> = parse(it.next().unwrap_or(Value::Nil))?;
                Ok(match meta.get("fence").map(|f| f.parse::<i64>()) {
                    Some(Err(_)) => SavedFilter {
                        unreadable: true,
                        ..SavedFilter::default()
                    },
                    fence => SavedFilter {
                        fence: fence.and_then(Result::ok),
                        seed: meta.get("seed").cloned(),
                        deltas,
                        unreadable: false,
                    },
                })
            })
            .collect()
    }

    async fn save_filters(&self, writes: &[FilterWrite]) -> Result<Vec<String>, StoreError> {
        if writes.is_empty() {
            return Ok(Vec::new());
        }
        self.link
            .load(&self.filter_script)
            .await
            .map_err(unavailable)?;
        let parts: Vec<Part> = writes
            .iter()
            .map(|w| {
                let mut cmd = evalsha(
                    &self.filter_script,
                    &[
                        self.keys.filter_meta(&w.source),
                        self.keys.filter_log(&w.source),
                    ],
                );
                cmd.arg(w.expected.map(|e| e.to_string()).unwrap_or_default())
                    .arg(w.new)
                    .arg(&w.seed)
                    .arg(if w.delta.snapshot { "1" } else { "0" })
                    .arg(&w.delta.bytes[..]);
                Part::one(cmd)
            })
            .collect();
        let replies = self.send(parts).await?;
        self.replicated().await?;
        let mut refused = Vec::new();
        for (w, mut r) in writes.iter().zip(replies) {
            if parse::<i64>(r.pop().unwrap_or(Value::Nil))? == 2 {
                refused.push(w.source.clone());
            }
        }
        Ok(refused)
    }
}

#[async_trait]
impl AlertLog for RedisStore {
    async fn record_alert(
        &self,
        key: &str,
        cooldown_ms: i64,
        alert: &str,
    ) -> Result<bool, StoreError> {
        let claim = redis::cmd("SET")
            .arg(self.keys.alert_claim(key))
            .arg(1)
            .arg("NX")
            .arg("PX")
            .arg(cooldown_ms.max(1))
            .clone();
        let mut replies = self.send(vec![Part::one(claim)]).await?;
        let claimed = !matches!(
            replies.pop().and_then(|mut r| r.pop()),
            None | Some(Value::Nil)
        );
        if claimed {
            let list = self.keys.recent_alerts();
            let mut part = Part::atomic();
            part.add(redis::cmd("LPUSH").arg(&list).arg(alert).clone())
                .add(
                    redis::cmd("LTRIM")
                        .arg(&list)
                        .arg(0)
                        .arg(super::RECENT_ALERTS - 1)
                        .clone(),
                )
                .add(
                    redis::cmd("PEXPIRE")
                        .arg(&list)
                        .arg(cooldown_ms.max(1))
                        .clone(),
                );
            self.send(vec![part]).await?;
        }
        Ok(claimed)
    }
}

#[async_trait]
impl AlertReads for RedisStore {
    async fn recent_alerts(&self, limit: usize) -> Result<Vec<String>, StoreError> {
        let cmd = redis::cmd("LRANGE")
            .arg(self.keys.recent_alerts())
            .arg(0)
            .arg(limit.saturating_sub(1))
            .clone();
        let mut replies = self.send(vec![Part::one(cmd)]).await?;
        parse(
            replies
                .pop()
                .and_then(|mut r| r.pop())
                .unwrap_or(Value::Nil),
        )
    }
}
