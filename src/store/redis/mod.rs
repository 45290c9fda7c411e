//! The Redis store: the layout of DESIGN §4.
//!
//! Each flush is one `EVALSHA` of `apply.lua` per group of keys (one hash
//! tag, so one Cluster slot), all pipelined in one round trip. Reads fetch a
//! ranking and its landmark in one `MULTI`/`EXEC`, so they are consistent
//! with any concurrent rebase.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Script};

mod keys;
mod scripts;

use super::{
    Applied, ArticleState, Cursor, FilterWrite, Page, SavedFilter, Scored, Store, StoreError,
    FENCE_PREFIX,
};
use crate::event::{ArticleMeta, EventType, PerType};
use crate::now_ms;
use crate::scoring::{decayed, Aggregate, Group, Profiles};
use keys::Keys;

/// A Redis-backed store.
#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
    keys: Keys,
    profiles: Profiles,
    max_members: usize,
    metadata_ttl: Duration,
    apply_script: Script,
    place_script: Script,
    filter_script: Script,
}

fn unavailable(e: redis::RedisError) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

impl RedisStore {
    /// Connects to `url` (`redis://` or `rediss://`).
    pub async fn connect(
        url: &str,
        key_prefix: &str,
        profiles: Profiles,
        max_members: usize,
        metadata_ttl: Duration,
    ) -> Result<RedisStore, StoreError> {
        let client = redis::Client::open(url).map_err(unavailable)?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_response_timeout(Some(Duration::from_secs(10)))
            .set_number_of_retries(2);
        let conn = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(unavailable)?;
        Ok(RedisStore {
            conn,
            keys: Keys::new(key_prefix),
            profiles,
            max_members,
            metadata_ttl,
            apply_script: Script::new(include_str!("../apply.lua")),
            place_script: Script::new(include_str!("../place.lua")),
            filter_script: Script::new(include_str!("../filter.lua")),
        })
    }

    /// Score (decayed to `at_ms`) and 1-based rank of each of `members` in
    /// `group`, per profile, read atomically in one round trip.
    async fn positions(
        &self,
        group: &Group,
        members: &[&str],
        at_ms: i64,
    ) -> Result<Vec<Vec<Option<(f64, usize)>>>, StoreError> {
        let mut pipe = redis::pipe();
        pipe.atomic().hgetall(self.keys.meta(group));
        let keys: Vec<String> = self
            .profiles
            .iter()
            .map(|p| self.keys.ranking(group, &p.name))
            .collect();
        for member in members {
            for key in &keys {
                pipe.zscore(key, member).zrevrank(key, member);
            }
        }
        let mut conn = self.conn.clone();
        let values: Vec<redis::Value> = pipe.query_async(&mut conn).await.map_err(unavailable)?;
        let corrupt = |e: redis::ParsingError| StoreError::Corrupt(e.to_string());
        let mut it = values.into_iter();
        let meta: HashMap<String, String> =
            redis::from_redis_value(it.next().unwrap_or(redis::Value::Nil)).map_err(corrupt)?;
        let landmarks: Vec<Option<i64>> = self
            .profiles
            .iter()
            .map(|p| {
                meta.get(&format!("landmark:{}", p.name))
                    .and_then(|l| l.parse::<i64>().ok())
            })
            .collect();
        let mut out = Vec::with_capacity(members.len());
        for _ in members {
            let mut row = Vec::with_capacity(self.profiles.len());
            for (p, landmark) in self.profiles.iter().zip(&landmarks) {
                let score: Option<f64> =
                    redis::from_redis_value(it.next().unwrap_or(redis::Value::Nil))
                        .map_err(corrupt)?;
                let rank: Option<usize> =
                    redis::from_redis_value(it.next().unwrap_or(redis::Value::Nil))
                        .map_err(corrupt)?;
                row.push(match (score, rank, landmark) {
                    (Some(v), Some(r), Some(l)) => {
                        Some((decayed(v, *l, at_ms, p.half_life_ms), r + 1))
                    }
                    _ => None,
                });
            }
            out.push(row);
        }
        Ok(out)
    }

    /// `HGETALL` of every key, in one pipeline.
    async fn hashes(
        &self,
        keys: impl Iterator<Item = String>,
    ) -> Result<Vec<HashMap<String, String>>, StoreError> {
        let mut pipe = redis::pipe();
        for key in keys {
            pipe.hgetall(key);
        }
        let mut conn = self.conn.clone();
        pipe.query_async(&mut conn).await.map_err(unavailable)
    }
}

#[async_trait]
impl Store for RedisStore {
    fn durable(&self) -> bool {
        true
    }

    async fn load_filters(&self, sources: &[String]) -> Result<Vec<SavedFilter>, StoreError> {
        let mut pipe = redis::pipe();
        for s in sources {
            pipe.atomic()
                .hgetall(self.keys.filter_meta(s))
                .lrange(self.keys.filter_log(s), 0, -1);
        }
        let mut conn = self.conn.clone();
        let replies: Vec<(HashMap<String, String>, Vec<Vec<u8>>)> =
            pipe.query_async(&mut conn).await.map_err(unavailable)?;
        Ok(replies
            .into_iter()
            .map(
                |(meta, deltas)| match meta.get("fence").map(|f| f.parse::<i64>()) {
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
                },
            )
            .collect())
    }

    async fn save_filters(&self, writes: &[FilterWrite]) -> Result<Vec<String>, StoreError> {
        if writes.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.conn.clone();
        self.filter_script
            .prepare_invoke()
            .load_async(&mut conn)
            .await
            .map_err(unavailable)?;
        let invocations: Vec<_> = writes
            .iter()
            .map(|w| {
                let mut inv = self.filter_script.prepare_invoke();
                inv.key(self.keys.filter_meta(&w.source))
                    .key(self.keys.filter_log(&w.source))
                    .arg(w.expected.map(|e| e.to_string()).unwrap_or_default())
                    .arg(w.new)
                    .arg(&w.seed)
                    .arg(if w.delta.snapshot { "1" } else { "0" })
                    .arg(&w.delta.bytes[..]);
                inv
            })
            .collect();
        let mut pipe = redis::pipe();
        for inv in &invocations {
            pipe.invoke_script(inv);
        }
        let replies: Vec<i64> = pipe.query_async(&mut conn).await.map_err(unavailable)?;
        Ok(writes
            .iter()
            .zip(replies)
            .filter(|(_, r)| *r == 2)
            .map(|(w, _)| w.source.clone())
            .collect())
    }

    async fn apply(&self, batch: &Aggregate) -> Result<Applied, StoreError> {
        if batch.groups.is_empty() {
            return Ok(Applied::default());
        }
        let mut conn = self.conn.clone();
        // Loaded on every flush: a restarted Redis has an empty script cache.
        self.apply_script
            .prepare_invoke()
            .load_async(&mut conn)
            .await
            .map_err(unavailable)?;
        let groups: Vec<&Group> = batch.groups.keys().collect();
        let invocations: Vec<_> = groups.iter().map(|g| self.invocation(batch, g)).collect();
        let mut pipe = redis::pipe();
        for inv in &invocations {
            pipe.invoke_script(inv);
        }
        let replies: Vec<redis::Value> = pipe.query_async(&mut conn).await.map_err(unavailable)?;
        let mut applied = Applied::default();
        for (group, reply) in groups.into_iter().zip(replies) {
            match reply {
                redis::Value::Int(_) => {}
                redis::Value::Array(v) => {
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
        let p = &self.profiles[profile];
        let mut conn = self.conn.clone();
        let stop = offset.saturating_add(limit).saturating_sub(1);
        let (landmark, items): (Option<String>, Vec<(String, f64)>) = redis::pipe()
            .atomic()
            .hget(self.keys.meta(group), format!("landmark:{}", p.name))
            .zrevrange_withscores(
                self.keys.ranking(group, &p.name),
                offset as isize,
                stop as isize,
            )
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        let Some(landmark) = landmark else {
            return Ok(Page::default());
        };
        let l: i64 = landmark
            .parse()
            .map_err(|_| StoreError::Corrupt(format!("landmark {landmark:?} is not an integer")))?;
        Ok(Page {
            items: items
                .into_iter()
                .map(|(member, v)| Scored {
                    member,
                    score: decayed(v, l, at_ms, p.half_life_ms),
                })
                .collect(),
        })
    }

    async fn publish(&self, articles: &[ArticleMeta]) -> Result<(), StoreError> {
        if articles.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn.clone();
        // The previous metadata, to move the article out of its old index and rankings.
        let ids: Vec<String> = articles.iter().map(|a| a.article_id.clone()).collect();
        let previous: Vec<Option<ArticleMeta>> = self
            .articles(&ids)
            .await?
            .into_iter()
            .map(ArticleState::live)
            .collect();
        let old: Vec<Option<String>> = previous
            .iter()
            .map(|m| m.as_ref().and_then(|m| m.section.clone()))
            .collect();
        let ttl = self.metadata_ttl.as_secs().max(1) as i64;
        let horizon = now_ms() - self.metadata_ttl.as_millis() as i64;
        let max = self.max_members as isize;
        let mut pipe = redis::pipe();
        for (a, old_section) in articles.iter().zip(old) {
            let id = &a.article_id;
            let key = self.keys.article(id);
            let tags = serde_json::to_string(&a.tags).expect("tags serialise");
            let fields: Vec<(&str, String)> = [
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
            pipe.del(&key).ignore();
            pipe.hset_multiple(&key, &fields).ignore();
            pipe.expire(&key, ttl).ignore();
            if old_section.is_some() && old_section != a.section {
                pipe.zrem(self.keys.index(old_section.as_deref()), id)
                    .ignore();
            }
            if let Some(ms) = a.published_at_ms {
                let mut targets = vec![self.keys.index(None)];
                targets.extend(a.section.as_deref().map(|s| self.keys.index(Some(s))));
                for ix in targets {
                    pipe.zadd(&ix, id, ms).ignore();
                    pipe.zrembyscore(&ix, "-inf", format!("({horizon}"))
                        .ignore();
                    pipe.zremrangebyrank(&ix, 0, -(max + 1)).ignore();
                }
            }
        }
        if self.relocations(articles, &previous, &mut pipe).await? {
            self.place_script
                .prepare_invoke()
                .load_async(&mut conn)
                .await
                .map_err(unavailable)?;
        }
        pipe.query_async::<()>(&mut conn).await.map_err(unavailable)
    }

    async fn unpublish(&self, ids: &[String]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let states = self.articles(ids).await?;
        let ttl = self.metadata_ttl.as_secs().max(1) as i64;
        let mut pipe = redis::pipe();
        for (id, state) in ids.iter().zip(states) {
            let meta = state.live().unwrap_or_default();
            let mut groups = vec![Group::All];
            groups.extend(meta.section.iter().map(|s| Group::Section(s.clone())));
            groups.extend(meta.tags.iter().map(|t| Group::Tag(t.clone())));
            for g in &groups {
                for p in self.profiles.iter() {
                    pipe.zrem(self.keys.ranking(g, &p.name), id).ignore();
                }
            }
            for kind in EventType::ALL {
                pipe.zrem(self.keys.count(kind), id).ignore();
            }
            pipe.zrem(self.keys.index(None), id).ignore();
            if let Some(s) = &meta.section {
                pipe.zrem(self.keys.index(Some(s)), id).ignore();
            }
            let key = self.keys.article(id);
            pipe.del(&key).ignore();
            pipe.hset(&key, "withdrawn", 1).ignore();
            pipe.expire(&key, ttl).ignore();
        }
        let mut conn = self.conn.clone();
        pipe.query_async::<()>(&mut conn).await.map_err(unavailable)
    }

    async fn articles(&self, ids: &[String]) -> Result<Vec<ArticleState>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let maps = self
            .hashes(ids.iter().map(|id| self.keys.article(id)))
            .await?;
        Ok(ids
            .iter()
            .zip(maps)
            .map(|(id, mut m)| {
                if m.is_empty() {
                    return ArticleState::Unknown;
                }
                if m.contains_key("withdrawn") {
                    return ArticleState::Withdrawn;
                }
                ArticleState::Live(Box::new(ArticleMeta {
                    article_id: id.clone(),
                    title: m.remove("title"),
                    url: m.remove("url"),
                    section: m.remove("section"),
                    tags: m
                        .get("tags")
                        .and_then(|t| serde_json::from_str(t).ok())
                        .unwrap_or_default(),
                    published_at_ms: m.get("published_at").and_then(|v| v.parse().ok()),
                    author: m.remove("author"),
                    summary: m.remove("summary"),
                    image_url: m.remove("image_url"),
                }))
            })
            .collect())
    }

    async fn index(
        &self,
        section: Option<&str>,
        before: Option<&Cursor>,
        limit: usize,
    ) -> Result<Vec<Cursor>, StoreError> {
        let key = self.keys.index(section);
        let mut conn = self.conn.clone();
        let rows: Vec<(String, f64)> = match before {
            None => conn
                .zrevrange_withscores(&key, 0, limit as isize - 1)
                .await
                .map_err(unavailable)?,
            Some(c) => {
                // Members as old as the cursor sort by id: skip those at or
                // above it, so pages neither repeat nor miss an article.
                let ms = c.published_at_ms;
                let ties: usize = conn.zcount(&key, ms, ms).await.map_err(unavailable)?;
                redis::cmd("ZREVRANGEBYSCORE")
                    .arg(&key)
                    .arg(ms)
                    .arg("-inf")
                    .arg("WITHSCORES")
                    .arg("LIMIT")
                    .arg(0)
                    .arg(limit + ties)
                    .query_async(&mut conn)
                    .await
                    .map_err(unavailable)?
            }
        };
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
        let mut pipe = redis::pipe();
        for kind in EventType::ALL {
            pipe.zscore(self.keys.count(kind), id);
        }
        let mut conn = self.conn.clone();
        let v: Vec<Option<f64>> = pipe.query_async(&mut conn).await.map_err(unavailable)?;
        let mut out = [0u64; EventType::COUNT];
        for (o, c) in out.iter_mut().zip(v) {
            *o = c.unwrap_or(0.0) as u64;
        }
        Ok(out)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map(|_| ())
            .map_err(unavailable)
    }
}
