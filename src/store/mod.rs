//! Where scores live: one trait, two backends that give the same answers.
//!
//! - [`redis::RedisStore`]: the layout of DESIGN §4, one Lua script call per
//!   group per flush, pipelined across groups.
//! - [`memory::MemoryStore`]: the same semantics in process, for `demo` and
//!   single-node installs.
//!
//! Both keep, per (group, profile), a landmark and forward-decayed values
//! (see [`crate::scoring`]), order members by value then member name (as a
//! Redis sorted set does), trim to `max_members` dropping the lowest, and drop
//! members below [`crate::scoring::SCORE_FLOOR`] when they rebase.

mod memory;
pub mod pending;
mod redis;

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;

use crate::config::Backend;
use crate::event::{ArticleMeta, PerType};
use crate::scoring::{Aggregate, Group};

/// The store `settings` describe, connected (the scoring settings give
/// its profiles and bound). The one way app, benchmark and tests build one.
pub async fn connect(settings: &crate::config::Settings) -> Result<Arc<dyn Store>, StoreError> {
    let profiles = crate::scoring::profiles(&settings.scoring);
    let max_members = settings.scoring.max_members;
    let s = &settings.store;
    Ok(match s.backend {
        Backend::Redis => {
            Arc::new(redis::RedisStore::connect(s, profiles, max_members, s.metadata_ttl).await?)
        }
        Backend::Memory => Arc::new(memory::MemoryStore::new(
            profiles,
            max_members,
            s.metadata_ttl,
        )),
    })
}

/// A store failure. None of these are the caller's fault; they are retried.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend could not be reached or refused the operation.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Sentinel or Cluster mode, and no master serves (some of) the keys:
    /// a failover is under way, or failed.
    #[error("store has no master: {0}")]
    NoMaster(String),
    /// The backend answered something this version cannot read.
    #[error("unexpected store data: {0}")]
    Corrupt(String),
}

/// The outcome of [`Store::apply`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Applied {
    /// Groups not written because a fence differed from the expected value
    /// (another consumer applied those offsets): re-read and retry them.
    pub conflicts: Vec<Group>,
}

/// The prefix of fence fields in a group's meta hash.
pub(crate) const FENCE_PREFIX: &str = "fence:";

/// A member of a ranking with its decayed score.
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    /// Article id, or tag name in the tags ranking.
    pub member: String,
    /// Decayed score at the time asked for.
    pub score: f64,
}

/// What a ranking holds, as one consistent read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Page {
    /// Members, highest score first, ties broken by member name descending.
    pub items: Vec<Scored>,
}

/// The saved duplicate-filter state of one partition (DESIGN §4).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SavedFilter {
    /// The last offset whose verdicts the state holds: every message up to
    /// it is applied to every group.
    pub fence: Option<i64>,
    /// The seed the state names triples with ([`crate::event::filter::encode_seed`]).
    pub seed: Option<String>,
    /// The deltas since the last snapshot, oldest first.
    pub deltas: Vec<Vec<u8>>,
    /// The saved fence could not be read: start empty and save a snapshot.
    pub unreadable: bool,
}

/// One partition's filter delta, saved after its batch was applied.
#[derive(Debug, Clone, PartialEq)]
pub struct FilterWrite {
    /// `topic/partition`.
    pub source: String,
    /// The fence the writer believes is stored.
    pub expected: Option<i64>,
    /// The highest offset of the batch.
    pub new: i64,
    /// The seed of the state.
    pub seed: String,
    /// What changed (or the whole state).
    pub delta: crate::event::filter::Delta,
}

/// The operations every backend provides.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// True when what this store holds outlives the process and is shared
    /// by every replica. Then the consumer joins its group, commits offsets
    /// and saves its duplicate filter; otherwise it keeps nothing between
    /// starts and rebuilds the state from the topics' retained history.
    fn durable(&self) -> bool;

    /// Shards per group: writes name the shard of each member
    /// ([`Group::shard_for`]); reads name groups and get every shard merged.
    fn shards(&self) -> u16 {
        1
    }

    /// The saved duplicate-filter state of each partition `topic/partition`.
    async fn load_filters(&self, sources: &[String]) -> Result<Vec<SavedFilter>, StoreError>;

    /// Saves filter deltas, in order (`store/filter.lua` states the rules).
    /// Returns the sources whose delta could not apply, because the saved
    /// state is older than where the delta starts or was named with another
    /// seed: nothing was saved for those, and their next write must be a
    /// snapshot.
    async fn save_filters(&self, writes: &[FilterWrite]) -> Result<Vec<String>, StoreError>;

    /// Applies one flush's increments and counts atomically per group,
    /// each group only if its fences are as the batch expects (see
    /// [`crate::scoring::Fence`]). Groups refused for that are returned.
    async fn apply(&self, batch: &Aggregate) -> Result<Applied, StoreError>;

    /// The fences of each group: `topic/partition` → last applied offset.
    async fn fences(&self, groups: &[Group]) -> Result<Vec<HashMap<String, i64>>, StoreError>;

    /// Members `offset..offset+limit` of `group` under profile number
    /// `profile`, with scores decayed to `at_ms`.
    async fn top(
        &self,
        group: &Group,
        profile: usize,
        offset: usize,
        limit: usize,
        at_ms: i64,
    ) -> Result<Page, StoreError>;

    /// Upserts article metadata (it expires after the configured TTL) and
    /// places each article in the News Index of its section, moving it when
    /// its section changed; a republished article is live again. When its
    /// section or tags change, it leaves the rankings of the old ones and
    /// enters those of the new ones with its overall score (see [`moves`]).
    async fn publish(&self, articles: &[ArticleMeta]) -> Result<(), StoreError>;

    /// Withdraws articles: removes them from every article ranking they are
    /// known to be in (overall, their section, their tags), from the index
    /// and the counts, forgets their metadata, and remembers the withdrawal
    /// (for the metadata TTL) so that late events do not bring them back.
    async fn unpublish(&self, ids: &[String]) -> Result<(), StoreError>;

    /// What is known of each id.
    async fn articles(&self, ids: &[String]) -> Result<Vec<ArticleState>, StoreError>;

    /// The News Index of `site` (`None`: the network) and `section`: ids and
    /// publication times, newest first (ties by id descending), strictly
    /// after `before` in that order, at most `limit`.
    async fn index(
        &self,
        site: Option<&str>,
        section: Option<&str>,
        before: Option<&Cursor>,
        limit: usize,
    ) -> Result<Vec<Cursor>, StoreError>;

    /// Scores (decayed to `at_ms`) of `members` in `group` under profile
    /// number `profile`, in their order; `None` where one is not ranked.
    async fn scores(
        &self,
        group: &Group,
        profile: usize,
        members: &[String],
        at_ms: i64,
    ) -> Result<Vec<Option<f64>>, StoreError>;

    /// Score (decayed to `at_ms`) and 1-based rank of `member` in `group`,
    /// per profile; `None` where it is not ranked.
    async fn position(
        &self,
        group: &Group,
        member: &str,
        at_ms: i64,
    ) -> Result<Vec<Option<(f64, usize)>>, StoreError>;

    /// All-time counted events of an article, per [`crate::event::EventType::index`].
    async fn counts(&self, id: &str) -> Result<PerType<u64>, StoreError>;

    /// Hides the article of `key` from every list (`Some`: who and when),
    /// or shows it again (`None`). Its events still count.
    async fn set_exclusion(&self, key: &str, by: Option<&Exclusion>) -> Result<(), StoreError>;

    /// Every exclusion: article key and who made it.
    async fn exclusions(&self) -> Result<Vec<(String, Exclusion)>, StoreError>;

    /// The names sections and tags were last published with, for keys made
    /// by [`name_key`]; `None` where none is known.
    async fn names(&self, keys: &[String]) -> Result<Vec<Option<String>>, StoreError>;

    /// Records an alert (DESIGN §14) unless one was recorded under `key`
    /// within the last `cooldown_ms`: true when this call recorded it (the
    /// claim is shared by every replica), then `alert` joins the most
    /// recent ones.
    async fn record_alert(
        &self,
        key: &str,
        cooldown_ms: i64,
        alert: &str,
    ) -> Result<bool, StoreError>;

    /// The most recent alerts recorded, newest first, at most `limit`.
    async fn recent_alerts(&self, limit: usize) -> Result<Vec<String>, StoreError>;

    /// Checks that the backend answers.
    async fn ping(&self) -> Result<(), StoreError>;
}

/// What a section or tag is looked up by in [`Store::names`]: `s:<slug>` or `t:<slug>`.
pub fn name_key(kind: NameOf, slug: &str) -> String {
    match kind {
        NameOf::Section => format!("s:{slug}"),
        NameOf::Tag => format!("t:{slug}"),
    }
}

/// Whose name [`name_key`] names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameOf {
    /// A section.
    Section,
    /// A tag.
    Tag,
}

/// The (key, name) pairs a publication of `articles` records, the last
/// publication's name winning.
pub(crate) fn name_fields(articles: &[ArticleMeta]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for a in articles {
        if let (Some(slug), Some(name)) = (&a.section, &a.names.section) {
            out.push((name_key(NameOf::Section, slug), name.clone()));
        }
        for (slug, name) in a.tags.iter().zip(&a.names.tags) {
            out.push((name_key(NameOf::Tag, slug), name.clone()));
        }
    }
    out
}

/// Most recent alerts kept for the replicas' alert streams.
pub const RECENT_ALERTS: usize = 100;

/// An editor's decision to hide an article from every list.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Exclusion {
    /// The name of the admin token that made it.
    pub by: String,
    /// When, epoch milliseconds.
    pub at_ms: i64,
}

/// What the store knows of an article.
#[derive(Debug, Clone, PartialEq)]
pub enum ArticleState {
    /// Never published, or its metadata expired.
    Unknown,
    /// Published, with its metadata (boxed: most states read are small).
    Live(Box<ArticleMeta>),
    /// Unpublished: its events are not counted.
    Withdrawn,
}

impl ArticleState {
    /// The metadata of a live article.
    pub fn live(self) -> Option<ArticleMeta> {
        match self {
            ArticleState::Live(m) => Some(*m),
            _ => None,
        }
    }
}

/// A position in the News Index: publication time, then article id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// Publication time, epoch milliseconds.
    pub published_at_ms: i64,
    /// Article id.
    pub article_id: String,
}

impl Cursor {
    /// The opaque text form used as `next_before`: `<ms>.<id>`.
    pub fn encode(&self) -> String {
        format!("{}.{}", self.published_at_ms, self.article_id)
    }

    /// Parses [`Cursor::encode`]'s form.
    pub fn decode(s: &str) -> Option<Cursor> {
        let (ms, id) = s.split_once('.')?;
        Some(Cursor {
            published_at_ms: ms.parse().ok()?,
            article_id: id.to_string(),
        })
        .filter(|c| !c.article_id.is_empty())
    }

    /// True when `self` comes strictly after `c` in the index order (older,
    /// or as old with a smaller id).
    pub fn is_after(&self, c: &Cursor) -> bool {
        (self.published_at_ms, &self.article_id) < (c.published_at_ms, &c.article_id)
    }
}

/// The groups an article with this metadata is ranked in besides the
/// network's [`Group::All`]: its section's and tags', and in a network its
/// site's of each (its site's overall ranking included).
pub fn article_groups(meta: Option<&ArticleMeta>) -> Vec<Group> {
    let Some(m) = meta else { return Vec::new() };
    let network: Vec<Group> = m
        .section
        .iter()
        .map(|s| Group::Section(s.clone()))
        .chain(m.tags.iter().map(|t| Group::Tag(t.clone())))
        .collect();
    let Some(site) = m.site.as_deref() else {
        return network;
    };
    let of_site: Vec<Group> = std::iter::once(Group::All)
        .chain(network.iter().cloned())
        .map(|g| g.of_site(Some(site)))
        .collect();
    network.into_iter().chain(of_site).collect()
}

/// A News Index list: the network's or one site's, overall or of one section.
pub type IndexList = (Option<String>, Option<String>);

/// The News Index lists an article with this site and section is in: the
/// network's and its section's, and in a network its site's of each.
pub fn index_lists(site: Option<&str>, section: Option<&str>) -> Vec<IndexList> {
    let sections = || std::iter::once(None).chain(section.map(|s| Some(s.to_string())));
    std::iter::once(None)
        .chain(site.map(|s| Some(s.to_string())))
        .flat_map(|site| sections().map(move |s| (site.clone(), s)))
        .collect()
}

/// Groups an article leaves and enters when its metadata changes from `old`
/// to `new`. Entered groups take the article's overall score: all its
/// readership, now filed under its new section and tags.
pub fn moves(old: Option<&ArticleMeta>, new: &ArticleMeta) -> (Vec<Group>, Vec<Group>) {
    let before = article_groups(old);
    let after = article_groups(Some(new));
    let left = before
        .iter()
        .filter(|g| !after.contains(g))
        .cloned()
        .collect();
    let entered = after.into_iter().filter(|g| !before.contains(g)).collect();
    (left, entered)
}

/// What Popular Tags gain when an article moves from `left` and `entered`
/// groups: for each tag ranking it entered, its tags ranking (the
/// network's or its site's) gains the article's overall score under that
/// tag (`+1`), and loses it for each it left (`-1`). Every event counted in
/// a tag's ranking was counted under the tag in Popular Tags, so both stay
/// the formula of DESIGN §3 when events came before the article's metadata.
pub fn tag_moves(left: &[Group], entered: &[Group]) -> Vec<(Group, String, f64)> {
    let tag = |g: &Group| match g {
        Group::Tag(t) => Some((Group::Tags, t.clone())),
        Group::Site(site, inner) => match &**inner {
            Group::Tag(t) => Some((Group::Tags.of_site(Some(site)), t.clone())),
            _ => None,
        },
        _ => None,
    };
    let gained = entered.iter().filter_map(tag).map(|(g, t)| (g, t, 1.0));
    let lost = left.iter().filter_map(tag).map(|(g, t)| (g, t, -1.0));
    gained.chain(lost).collect()
}

/// The key group (Redis Cluster hash tag) of a group of rankings.
pub(crate) fn group_tag(group: &Group) -> String {
    match group {
        Group::All => "{all}".to_string(),
        Group::Section(s) => format!("{{s:{s}}}"),
        Group::Tag(t) => format!("{{t:{t}}}"),
        Group::Tags => "{tags}".to_string(),
        // `{s:news@btv}`: slugs hold no `@`, so no two groups share a tag.
        Group::Site(site, g) => {
            let base = group_tag(g);
            format!("{}@{site}}}", &base[..base.len() - 1])
        }
        Group::Shard(g, k) => {
            let base = group_tag(g);
            format!("{}#{k}}}", &base[..base.len() - 1])
        }
    }
}
