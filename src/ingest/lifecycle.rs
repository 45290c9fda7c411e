//! Articles: publications and withdrawals from the lifecycle topic go to the
//! store, and what the consumer knows of each article (section, tags,
//! withdrawn) is cached for the events that lack it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use ahash::HashMap as AHashMap;

use crate::event::{ArticleMeta, Event};
use crate::metrics::{Metrics, StoreOperation};
use crate::store::{ArticleReads, ArticleState, Catalogue, StoreError};

use super::batch::Counted;
use super::places::Places;

/// How long a consumer keeps article metadata it looked up or saw published.
const METADATA_CACHE_TTL: Duration = Duration::from_secs(30);
/// Most articles in the consumer's metadata cache.
const METADATA_CACHE_MAX: usize = 100_000;

/// What is cached of one article.
enum Entry {
    Unknown,
    /// Site, section, tags.
    Live(Option<String>, Option<String>, Vec<String>),
    Withdrawn,
}

impl From<ArticleState> for Entry {
    fn from(s: ArticleState) -> Entry {
        match s {
            ArticleState::Unknown => Entry::Unknown,
            ArticleState::Live(a) => Entry::Live(a.site, a.section, a.tags),
            ArticleState::Withdrawn => Entry::Withdrawn,
        }
    }
}

/// What the consumer knows of an article, for events that lack its section or tags.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Known<'a> {
    /// No metadata: ranked overall only.
    Unknown,
    /// Published (on this site, in a network) in this section with these tags.
    Live {
        /// Its site, in a network.
        site: Option<&'a str>,
        /// Its section.
        section: Option<&'a str>,
        /// Its tags.
        tags: &'a [String],
    },
    /// Unpublished: its events are not counted.
    Withdrawn,
}

/// The consumer's cache of article metadata.
#[derive(Default)]
pub(super) struct Catalog {
    cache: AHashMap<String, (Instant, Entry)>,
}

impl Catalog {
    /// Brings the catalogue up to date for a batch, in the store and here:
    /// its publications and withdrawals first ([`Catalog::apply`]), then
    /// every article its events name that is not known or is stale
    /// ([`Catalog::look_up`]). The fold then reads [`Catalog::known`].
    pub async fn update<S>(
        &mut self,
        store: &S,
        metrics: &Metrics,
        batch: &mut super::batch::Batch,
    ) -> Result<(), StoreError>
    where
        S: Catalogue + ArticleReads + ?Sized,
    {
        self.apply(store, metrics, &mut batch.lifecycle).await?;
        self.look_up(store, metrics, &batch.counted, &batch.places)
            .await
    }

    /// Applies the batch's lifecycle events (the last per article wins), so
    /// that its behaviour events see fresh metadata.
    async fn apply(
        &mut self,
        store: &(impl Catalogue + ?Sized),
        metrics: &Metrics,
        lifecycle: &mut Vec<Event<'static>>,
    ) -> Result<(), StoreError> {
        if lifecycle.is_empty() {
            return Ok(());
        }
        let mut last: HashMap<&str, &Event> = HashMap::new();
        for e in lifecycle.iter() {
            match e {
                Event::Published(a) => last.insert(&a.article_id, e),
                Event::Unpublished { article_id } => last.insert(article_id, e),
                Event::Behaviour(_) => None,
            };
        }
        let mut published: Vec<ArticleMeta> = Vec::new();
        let mut removed: Vec<String> = Vec::new();
        for e in last.values() {
            match e {
                Event::Published(a) => published.push(a.clone()),
                Event::Unpublished { article_id } => removed.push(article_id.clone()),
                Event::Behaviour(_) => {}
            }
        }
        metrics
            .time_store(StoreOperation::Publish, store.publish(&published))
            .await?;
        metrics
            .time_store(StoreOperation::Unpublish, store.unpublish(&removed))
            .await?;
        let now = Instant::now();
        for a in published {
            self.cache.insert(
                a.article_id.clone(),
                (now, ArticleState::Live(Box::new(a)).into()),
            );
        }
        for id in removed {
            self.cache.insert(id, (now, Entry::Withdrawn));
        }
        lifecycle.clear();
        Ok(())
    }

    /// Looks up, in one store call, every article of `counted` that is not
    /// cached or whose entry is older than the cache's TTL. Every event's
    /// article is looked up: a withdrawn article's events are not counted
    /// even when they carry section and tags.
    async fn look_up(
        &mut self,
        store: &(impl ArticleReads + ?Sized),
        metrics: &Metrics,
        counted: &[Counted],
        places: &Places,
    ) -> Result<(), StoreError> {
        let now = Instant::now();
        if self.cache.len() > METADATA_CACHE_MAX {
            self.cache.clear();
        }
        let mut seen = vec![false; places.len()];
        let mut missing: Vec<String> = Vec::new();
        for c in counted {
            if std::mem::replace(&mut seen[c.place as usize], true) {
                continue;
            }
            let id = &places.get(c.place).article_id;
            // An unknown article is asked again every flush: once it is
            // published its events must reach its section and tags at
            // once, since publishing moved its earlier score there.
            let stale = self.cache.get(&**id).is_none_or(|(at, e)| {
                matches!(e, Entry::Unknown) || now.duration_since(*at) > METADATA_CACHE_TTL
            });
            if stale {
                missing.push(id.to_string());
            }
        }
        missing.sort_unstable();
        missing.dedup();
        if !missing.is_empty() {
            let found = metrics
                .time_store(StoreOperation::Articles, store.articles(&missing))
                .await?;
            for (id, state) in missing.into_iter().zip(found) {
                self.cache.insert(id, (now, state.into()));
            }
        }
        Ok(())
    }

    /// What is known of article `id`.
    pub fn known(&self, id: &str) -> Known<'_> {
        match self.cache.get(id) {
            Some((_, Entry::Withdrawn)) => Known::Withdrawn,
            Some((_, Entry::Live(site, section, tags))) => Known::Live {
                site: site.as_deref(),
                section: section.as_deref(),
                tags,
            },
            _ => Known::Unknown,
        }
    }
}
