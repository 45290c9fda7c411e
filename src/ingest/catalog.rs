//! The catalogue: what the consumer knows of each article, and so where
//! its events go. Publications and withdrawals from the lifecycle topic go
//! to the store; what is known of each article (site, section, tags,
//! withdrawn) is cached; and a batch's events are routed to the groups
//! their article is ranked in ([`Routes`]), in the store's units of atomic
//! writing. The catalogue alone says where an article is ranked (DESIGN
//! §12): an event's own section and tags never reach a group.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use ahash::HashMap as AHashMap;

use crate::event::{ArticleMeta, Event, EventType};
use crate::metrics::{Metrics, StoreOperation};
use crate::scoring::destinations;
use crate::store::{ArticleReads, ArticleState, Catalogue, Layout, StoreError, Unit};

use super::batch::Counted;
use super::places::{Place, Places};

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

/// What the consumer knows of an article.
#[derive(Debug, Clone, PartialEq)]
enum Known<'a> {
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
    /// Where a batch's events go: the catalogue is brought up to date, in
    /// the store and here (the batch's publications and withdrawals first,
    /// [`Catalog::apply`], then every article its events name that is not
    /// known or is stale, [`Catalog::look_up`]), and each event's article
    /// is routed to its groups, in the units of `layout`.
    #[allow(clippy::too_many_arguments)]
    pub async fn route<'a, S>(
        &mut self,
        store: &S,
        metrics: &Metrics,
        layout: Layout,
        lifecycle: &mut Vec<Event<'static>>,
        counted: &[Counted],
        places: &'a Places,
    ) -> Result<Routes<'a>, StoreError>
    where
        S: Catalogue + ArticleReads + ?Sized,
    {
        self.apply(store, metrics, lifecycle).await?;
        self.look_up(store, metrics, counted, places).await?;
        Ok(self.routes(counted, places, layout))
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
    fn known(&self, id: &str) -> Known<'_> {
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

/// Where one place's events of a batch go.
pub(super) struct Route<'a> {
    pub article_id: &'a str,
    /// (unit, member), as [`destinations`] gives them in the store's units.
    pub entries: Vec<(Unit, String)>,
    /// The number of each entry's unit in [`Routes::units`].
    pub groups: Vec<usize>,
}

/// Where every counted event of a batch goes.
pub(super) struct Routes<'a> {
    pub places: Vec<Route<'a>>,
    /// Every unit the batch touches.
    pub units: Vec<Unit>,
    /// Per interned place, its number in `places`; [`WITHDRAWN`] for an
    /// unpublished article, [`UNPLACED`] for a place no event of the batch has.
    pub place_of: Vec<u32>,
    /// Per event type, the events of withdrawn articles (not counted).
    pub withdrawn: [u64; EventType::COUNT],
}

pub(super) const UNPLACED: u32 = u32::MAX;
pub(super) const WITHDRAWN: u32 = u32::MAX - 1;

impl Catalog {
    /// Routes each distinct place of `counted` once: folding then allocates
    /// nothing per event and hashes no group or partition name.
    fn routes<'a>(&self, counted: &[Counted], places: &'a Places, layout: Layout) -> Routes<'a> {
        let mut group_of: AHashMap<Unit, usize> = AHashMap::default();
        let mut p = Routes {
            places: Vec::new(),
            units: Vec::new(),
            place_of: vec![UNPLACED; places.len()],
            withdrawn: [0; EventType::COUNT],
        };
        for c in counted {
            let interned = c.place as usize;
            if p.place_of[interned] == UNPLACED {
                let Place { article_id, .. } = places.get(c.place);
                // The catalogue alone says where an article is ranked (DESIGN
                // §12): an event's own section and tags never create or reach a
                // group, so nobody who can send events can name one. An article
                // not yet published is ranked overall only (and listed nowhere
                // until it is); publishing it files its score under its section
                // and tags.
                let (site, section, tags) = match self.known(article_id) {
                    Known::Withdrawn => {
                        p.place_of[interned] = WITHDRAWN;
                        p.withdrawn[c.kind.index()] += 1;
                        continue;
                    }
                    Known::Live {
                        site,
                        section,
                        tags,
                    } => (site, section, tags),
                    Known::Unknown => (None, None, &[][..]),
                };
                let entries = layout.place(destinations(article_id, site, section, tags));
                let numbers = entries
                    .iter()
                    .map(|(g, _)| {
                        *group_of.entry(g.clone()).or_insert_with(|| {
                            p.units.push(g.clone());
                            p.units.len() - 1
                        })
                    })
                    .collect();
                p.places.push(Route {
                    article_id,
                    entries,
                    groups: numbers,
                });
                p.place_of[interned] = (p.places.len() - 1) as u32;
            } else if p.place_of[interned] == WITHDRAWN {
                p.withdrawn[c.kind.index()] += 1;
            }
        }
        p
    }
}
