//! The Redis store: the layout of DESIGN §4, on any topology ([`link`]).
//!
//! Each flush is one `EVALSHA` of `apply.lua` per group of keys (one hash
//! tag, so one Cluster slot), all sent at once. Reads fetch a ranking and
//! its landmark in one `MULTI`/`EXEC`, so they are consistent with any
//! concurrent rebase. In cluster mode every group is split into shards by
//! member ([`Group::shard_for`]); reads merge the shards ([`shards`]).

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use redis::{Cmd, FromRedisValue, Script, Value};

mod keys;
mod link;
mod scripts;
mod shards;

use super::{
    Applied, ArticleState, Cursor, Exclusion, FilterWrite, Page, SavedFilter, Store, StoreError,
    FENCE_PREFIX,
};
use crate::config::StoreSettings;
use crate::event::{ArticleMeta, EventType, PerType};
use crate::now_ms;
use crate::scoring::{Aggregate, Group, Profiles};
use keys::Keys;
use link::{Link, Part};

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
    /// Shards per group (1 unless in cluster mode).
    shards: u16,
    /// `store.group_ttl`, in milliseconds.
    group_ttl_ms: u64,
    /// Replicas that must hold every write before it counts as done.
    wait_replicas: usize,
}

/// The fields of an article's hash that [`article_state`] reads, in its order.
const ARTICLE_FIELDS: [&str; 10] = [
    "site",
    "title",
    "url",
    "section",
    "tags",
    "published_at",
    "author",
    "summary",
    "image_url",
    "withdrawn",
];

/// Article `id` as its hash's [`ARTICLE_FIELDS`] (`HMGET`) give it: none
/// set, unknown; `withdrawn` set, withdrawn.
fn article_state(id: &str, fields: Vec<Option<String>>) -> Result<ArticleState, StoreError> {
    if fields.iter().all(Option::is_none) {
        return Ok(ArticleState::Unknown);
    }
    let Ok([site, title, url, section, tags, published_at, author, summary, image_url, withdrawn]) =
        <[Option<String>; 10]>::try_from(fields)
    else {
        return Err(StoreError::Corrupt(format!(
            "HMGET of article {id:?} gave another number of fields"
        )));
    };
    if withdrawn.is_some() {
        return Ok(ArticleState::Withdrawn);
    }
    Ok(ArticleState::Live(Box::new(ArticleMeta {
        article_id: id.to_string(),
        site,
        title,
        url,
        section,
        tags: tags
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default(),
        published_at_ms: published_at.and_then(|v| v.parse().ok()),
        author,
        summary,
        image_url,
        excluded: false,
    })))
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
            shards: settings.effective_shards(),
            group_ttl_ms: settings.group_ttl.as_millis() as u64,
            wait_replicas: settings.wait_replicas,
        })
    }

    /// Sends `parts` (see [`Link::send`]).
    async fn send(&self, parts: Vec<Part>) -> Result<Vec<Vec<Value>>, StoreError> {
        self.link.send(parts).await.map_err(unavailable)
    }

    /// Returns once `wait_replicas` replicas hold what this process wrote
    /// (DESIGN §4): after every write, and after reading the fences a write
    /// will rely on, which may come from a write not yet replicated.
    async fn settle(&self) -> Result<(), StoreError> {
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
impl Store for RedisStore {
    fn durable(&self) -> bool {
        true
    }

    fn shards(&self) -> u16 {
        self.shards
    }

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
        self.settle().await?;
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
        self.settle().await?;
        let mut refused = Vec::new();
        for (w, mut r) in writes.iter().zip(replies) {
            if parse::<i64>(r.pop().unwrap_or(Value::Nil))? == 2 {
                refused.push(w.source.clone());
            }
        }
        Ok(refused)
    }

    async fn apply(&self, batch: &Aggregate) -> Result<Applied, StoreError> {
        if batch.groups.is_empty() {
            return Ok(Applied::default());
        }
        // Loaded on every flush: a restarted Redis has an empty script cache.
        self.link
            .load(&self.apply_script)
            .await
            .map_err(unavailable)?;
        let groups: Vec<&Group> = batch.groups.keys().collect();
        let parts: Vec<Part> = groups
            .iter()
            .map(|g| Part::one(self.invocation(batch, g)))
            .collect();
        let replies = self.send(parts).await?;
        self.settle().await?;
        let mut applied = Applied::default();
        for (group, mut reply) in groups.into_iter().zip(replies) {
            match reply.pop().unwrap_or(Value::Nil) {
                Value::Int(_) => {}
                Value::Array(v) => {
                    tracing::info!(?group, reply = ?v, "fence conflict");
                    applied.conflicts.push(group.clone());
                }
                other => {
                    return Err(StoreError::Corrupt(format!(
                        "unexpected script reply {other:?}"
                    )))
                }
            }
        }
        Ok(applied)
    }

    async fn fences(&self, groups: &[Group]) -> Result<Vec<HashMap<String, i64>>, StoreError> {
        if groups.is_empty() {
            return Ok(Vec::new());
        }
        let metas = self
            .hashes(groups.iter().map(|g| self.keys.meta(g)))
            .await?;
        self.settle().await?;
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

    async fn top(
        &self,
        group: &Group,
        profile: usize,
        offset: usize,
        limit: usize,
        at_ms: i64,
    ) -> Result<Page, StoreError> {
        self.merged_top(group, profile, offset, limit, at_ms).await
    }

    async fn publish(&self, articles: &[ArticleMeta]) -> Result<(), StoreError> {
        if articles.is_empty() {
            return Ok(());
        }
        // The previous metadata, to move the article out of its old index and rankings.
        let ids: Vec<String> = articles.iter().map(|a| a.article_id.clone()).collect();
        let previous: Vec<Option<ArticleMeta>> = self
            .articles(&ids)
            .await?
            .into_iter()
            .map(ArticleState::live)
            .collect();
        let ttl = self.metadata_ttl.as_secs().max(1) as i64;
        let horizon = now_ms() - self.metadata_ttl.as_millis() as i64;
        let max = self.max_members as isize;
        let mut parts = Vec::new();
        let mut index = Part::default();
        for (a, before) in articles.iter().zip(&previous) {
            let id = &a.article_id;
            let key = self.keys.article(id);
            let tags = serde_json::to_string(&a.tags).expect("tags serialise");
            let fields: Vec<(&str, String)> = [
                ("site", a.site.clone()),
                ("title", a.title.clone()),
                ("url", a.url.clone()),
                ("section", a.section.clone()),
                ("tags", Some(tags)),
                ("published_at", a.published_at_ms.map(|v| v.to_string())),
                ("author", a.author.clone()),
                ("summary", a.summary.clone()),
                ("image_url", a.image_url.clone()),
            ]
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k, v)))
            .collect();
            // A republication replaces every field (and a withdrawal): nothing lingers.
            let mut meta = Part::atomic();
            meta.add(redis::cmd("DEL").arg(&key).clone())
                .add(redis::cmd("HSET").arg(&key).arg(&fields).clone())
                .add(redis::cmd("EXPIRE").arg(&key).arg(ttl).clone());
            parts.push(meta);
            let site = a.site.as_deref();
            let old_section = before.as_ref().and_then(|m| m.section.clone());
            if old_section.is_some() && old_section != a.section {
                for site in [None, site] {
                    index.add(
                        redis::cmd("ZREM")
                            .arg(self.keys.index(site, old_section.as_deref()))
                            .arg(id)
                            .clone(),
                    );
                }
            }
            if let Some(ms) = a.published_at_ms {
                let targets = super::index_lists(site, a.section.as_deref())
                    .into_iter()
                    .map(|(site, s)| self.keys.index(site.as_deref(), s.as_deref()));
                for ix in targets {
                    index
                        .add(redis::cmd("ZADD").arg(&ix).arg(ms).arg(id).clone())
                        .add(
                            redis::cmd("ZREMRANGEBYSCORE")
                                .arg(&ix)
                                .arg("-inf")
                                .arg(format!("({horizon}"))
                                .clone(),
                        )
                        .add(
                            redis::cmd("ZREMRANGEBYRANK")
                                .arg(&ix)
                                .arg(0)
                                .arg(-(max + 1))
                                .clone(),
                        );
                }
            }
        }
        // Every index key is in the {idx} slot.
        parts.push(index);
        if self.relocations(articles, &previous, &mut parts).await? {
            self.link
                .load(&self.place_script)
                .await
                .map_err(unavailable)?;
        }
        self.send(parts).await?;
        self.settle().await
    }

    async fn unpublish(&self, ids: &[String]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let states = self.articles(ids).await?;
        let ttl = self.metadata_ttl.as_secs().max(1) as i64;
        let mut parts = Vec::new();
        let mut index = Part::default();
        for (id, state) in ids.iter().zip(states) {
            let meta = state.live().unwrap_or_default();
            let mut groups = vec![Group::All];
            groups.extend(super::article_groups(Some(&meta)));
            parts.extend(groups.iter().map(|g| self.removal(g, id)));
            let all = Group::All.shard_for(id, self.shards);
            let mut counts = Part::default();
            for kind in EventType::ALL {
                counts.add(
                    redis::cmd("ZREM")
                        .arg(self.keys.count(&all, kind))
                        .arg(id)
                        .clone(),
                );
            }
            parts.push(counts);
            for (site, s) in super::index_lists(meta.site.as_deref(), meta.section.as_deref()) {
                index.add(
                    redis::cmd("ZREM")
                        .arg(self.keys.index(site.as_deref(), s.as_deref()))
                        .arg(id)
                        .clone(),
                );
            }
            let key = self.keys.article(id);
            let mut withdrawn = Part::atomic();
            withdrawn
                .add(redis::cmd("DEL").arg(&key).clone())
                .add(redis::cmd("HSET").arg(&key).arg("withdrawn").arg(1).clone())
                .add(redis::cmd("EXPIRE").arg(&key).arg(ttl).clone());
            parts.push(withdrawn);
        }
        parts.push(index);
        self.send(parts).await?;
        self.settle().await
    }

    async fn articles(&self, ids: &[String]) -> Result<Vec<ArticleState>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        // Only the fields read, without their names: half the values an
        // HGETALL returns, and no map to build (DESIGN §4's article hash).
        let mut parts: Vec<Part> = ids
            .iter()
            .map(|id| {
                Part::one(
                    redis::cmd("HMGET")
                        .arg(self.keys.article(id))
                        .arg(&ARTICLE_FIELDS[..])
                        .clone(),
                )
            })
            .collect();
        parts.push(Part::one(
            redis::cmd("HMGET")
                .arg(self.keys.exclusions())
                .arg(ids)
                .clone(),
        ));
        let mut replies = self.send(parts).await?;
        let excluded: Vec<Option<String>> = parse(
            replies
                .pop()
                .and_then(|mut r| r.pop())
                .unwrap_or(Value::Nil),
        )?;
        ids.iter()
            .zip(replies)
            .zip(excluded)
            .map(|((id, mut r), excluded)| {
                let fields: Vec<Option<String>> = parse(r.pop().unwrap_or(Value::Nil))?;
                let mut state = article_state(id, fields)?;
                if let ArticleState::Live(m) = &mut state {
                    m.excluded = excluded.is_some();
                }
                Ok(state)
            })
            .collect()
    }

    async fn index(
        &self,
        site: Option<&str>,
        section: Option<&str>,
        before: Option<&Cursor>,
        limit: usize,
    ) -> Result<Vec<Cursor>, StoreError> {
        let key = self.keys.index(site, section);
        let one = |cmd: &Cmd| self.link.one(cmd.clone());
        let rows: Vec<(String, f64)> = parse(
            match before {
                None => {
                    one(redis::cmd("ZREVRANGE")
                        .arg(&key)
                        .arg(0)
                        .arg(limit as isize - 1)
                        .arg("WITHSCORES"))
                    .await
                }
                Some(c) => {
                    // Members as old as the cursor sort by id: skip those at
                    // or above it, so pages neither repeat nor miss an article.
                    let ms = c.published_at_ms;
                    let ties = one(redis::cmd("ZCOUNT").arg(&key).arg(ms).arg(ms))
                        .await
                        .map_err(unavailable)?;
                    one(redis::cmd("ZREVRANGEBYSCORE")
                        .arg(&key)
                        .arg(ms)
                        .arg("-inf")
                        .arg("WITHSCORES")
                        .arg("LIMIT")
                        .arg(0)
                        .arg(limit + parse::<usize>(ties)?))
                    .await
                }
            }
            .map_err(unavailable)?,
        )?;
        Ok(rows
            .into_iter()
            .map(|(article_id, ms)| Cursor {
                published_at_ms: ms as i64,
                article_id,
            })
            .filter(|c| before.is_none_or(|b| c.is_after(b)))
            .take(limit)
            .collect())
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
        let all = Group::All.shard_for(id, self.shards);
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

    async fn set_exclusion(&self, key: &str, by: Option<&Exclusion>) -> Result<(), StoreError> {
        let hash = self.keys.exclusions();
        let cmd = match by {
            Some(e) => redis::cmd("HSET")
                .arg(&hash)
                .arg(key)
                .arg(serde_json::to_string(e).expect("an exclusion serialises"))
                .clone(),
            None => redis::cmd("HDEL").arg(&hash).arg(key).clone(),
        };
        self.send(vec![Part::one(cmd)]).await?;
        self.settle().await
    }

    async fn exclusions(&self) -> Result<Vec<(String, Exclusion)>, StoreError> {
        let mut replies = self
            .send(vec![Part::one(
                redis::cmd("HGETALL").arg(self.keys.exclusions()).clone(),
            )])
            .await?;
        let all: Vec<(String, String)> = parse(
            replies
                .pop()
                .and_then(|mut r| r.pop())
                .unwrap_or(Value::Nil),
        )?;
        all.into_iter()
            .map(|(k, v)| {
                serde_json::from_str(&v)
                    .map(|e| (k, e))
                    .map_err(|e| StoreError::Corrupt(format!("exclusion: {e}")))
            })
            .collect()
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
