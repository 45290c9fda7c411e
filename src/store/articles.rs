//! Articles: their metadata and lifecycle (published, withdrawn), the
//! News Index, the names of sections and tags, and editors' exclusions.
//! The consumer publishes and withdraws ([`Catalogue`]), the API reads
//! ([`ArticleReads`]) and editors exclude ([`Editorial`]).

use async_trait::async_trait;

use super::StoreError;
use crate::event::ArticleMeta;
use crate::scoring::Group;

/// The consumer's side: what the `articles` topic says.
#[async_trait]
pub trait Catalogue: Send + Sync + 'static {
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
}

/// The readers' side.
#[async_trait]
pub trait ArticleReads: Send + Sync + 'static {
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

    /// The names sections and tags were last published with, for keys made
    /// by [`name_key`]; `None` where none is known.
    async fn names(&self, keys: &[String]) -> Result<Vec<Option<String>>, StoreError>;

    /// Every exclusion: article key and who made it.
    async fn exclusions(&self) -> Result<Vec<(String, Exclusion)>, StoreError>;
}

/// The editors' side.
#[async_trait]
pub trait Editorial: Send + Sync + 'static {
    /// Hides the article of `key` from every list (`Some`: who and when),
    /// or shows it again (`None`). Its events still count.
    async fn set_exclusion(&self, key: &str, by: Option<&Exclusion>) -> Result<(), StoreError>;
}

/// What a section or tag is looked up by in [`ArticleReads::names`]: `s:<slug>` or `t:<slug>`.
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
