//! The article catalogue in Redis: article metadata (`pop:article:<key>`),
//! publications and withdrawals with the News Index and the moves between
//! rankings they cause, and editors' exclusions. The rankings themselves
//! are written and read in [`super`].

use redis::{Cmd, Value};

use super::link::Part;
use super::{parse, unavailable, RedisStore};
use crate::event::{ArticleMeta, EventType, Names};
use crate::now_ms;
use crate::scoring::Group;
use crate::store::{
    ArticleReads, ArticleState, Catalogue, Cursor, Editorial, Exclusion, StoreError,
};
use async_trait::async_trait;

/// The fields of an article's hash that [`article_state`] reads, in its order.
const ARTICLE_FIELDS: [&str; 12] = [
    "site",
    "title",
    "url",
    "section",
    "tags",
    "section_name",
    "tag_names",
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
    let Ok(
        [site, title, url, section, tags, section_name, tag_names, published_at, author, summary, image_url, withdrawn],
    ) = <[Option<String>; 12]>::try_from(fields)
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
        names: Names {
            section: section_name,
            tags: tag_names
                .and_then(|t| serde_json::from_str(&t).ok())
                .unwrap_or_default(),
        },
        published_at_ms: published_at.and_then(|v| v.parse().ok()),
        author,
        summary,
        image_url,
        excluded: false,
    })))
}

#[async_trait]
impl Catalogue for RedisStore {
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
            let tag_names = serde_json::to_string(&a.names.tags).expect("names serialise");
            let fields: Vec<(&str, String)> = [
                ("site", a.site.clone()),
                ("title", a.title.clone()),
                ("url", a.url.clone()),
                ("section", a.section.clone()),
                ("tags", Some(tags)),
                ("section_name", a.names.section.clone()),
                ("tag_names", Some(tag_names)),
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
                let targets = crate::store::index_lists(site, a.section.as_deref())
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
        let names = crate::store::name_fields(articles);
        if !names.is_empty() {
            parts.push(Part::one(
                redis::cmd("HSET")
                    .arg(self.keys.names())
                    .arg(&names)
                    .clone(),
            ));
        }
        if self.relocations(articles, &previous, &mut parts).await? {
            self.link
                .load(&self.place_script)
                .await
                .map_err(unavailable)?;
        }
        self.send(parts).await?;
        self.replicated().await
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
            groups.extend(crate::store::article_groups(Some(&meta)));
            parts.extend(groups.iter().map(|g| self.removal(g, id)));
            let all = self.layout.unit(&Group::All, id);
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
            for (site, s) in
                crate::store::index_lists(meta.site.as_deref(), meta.section.as_deref())
            {
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
        self.replicated().await
    }
}

#[async_trait]
impl ArticleReads for RedisStore {
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

    /// The names of `slugs` ([`crate::store::name_key`]), in their order.
    async fn names(&self, slugs: &[String]) -> Result<Vec<Option<String>>, StoreError> {
        if slugs.is_empty() {
            return Ok(Vec::new());
        }
        let mut replies = self
            .send(vec![Part::one(
                redis::cmd("HMGET")
                    .arg(self.keys.names())
                    .arg(slugs)
                    .clone(),
            )])
            .await?;
        parse(
            replies
                .pop()
                .and_then(|mut r| r.pop())
                .unwrap_or(Value::Nil),
        )
    }
}

#[async_trait]
impl Editorial for RedisStore {
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
        self.replicated().await
    }
}
