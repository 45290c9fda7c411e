//! Most Popular, Popular Reads and Popular Tags: `/v1/rankings…`.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::Json;

use super::articles::article_view;
use super::model::*;
use super::params::{NoParams, RankingParams, Strict, TagParams};
use super::{profile_id, rfc3339, ApiError, ApiState};
use crate::event::ArticleMeta;
use crate::now_ms;
use crate::scoring::Group;
use crate::store::ProfileId;
use crate::store::{name_key, NameOf};

/// The configured ranking profiles.
#[utoipa::path(get, path = "/v1/rankings", tag = "rankings",
    responses(
        (status = 200, description = "Profiles", body = ProfilesResponse),
        (status = 400, description = "A query parameter (this route takes none)", body = ErrorBody),
    ))]
pub(super) async fn list_profiles(
    State(state): State<ApiState>,
    _: Strict<NoParams>,
) -> Json<ProfilesResponse> {
    Json(ProfilesResponse {
        profiles: state
            .profiles
            .iter()
            .map(|p| ProfileView {
                name: p.name.clone(),
                half_life_seconds: p.half_life_ms / 1000.0,
                weights: p.weights,
            })
            .collect(),
    })
}

/// The network's sites: `site=` of every list takes one of their ids.
#[utoipa::path(get, path = "/v1/sites", tag = "rankings",
    responses(
        (status = 200, description = "Sites", body = SitesResponse),
        (status = 400, description = "A query parameter (this route takes none)", body = ErrorBody),
    ))]
pub(super) async fn list_sites(
    State(state): State<ApiState>,
    _: Strict<NoParams>,
) -> Json<SitesResponse> {
    Json(SitesResponse {
        sites: state
            .sites
            .all()
            .iter()
            .map(|s| SiteView {
                id: s.id.clone(),
                name: s.name.clone(),
            })
            .collect(),
    })
}

/// Most Popular / Popular Reads: articles by decayed score.
#[utoipa::path(get, path = "/v1/rankings/{profile}", tag = "rankings",
    params(("profile" = String, Path, description = "Ranking profile, e.g. trending"), RankingParams),
    responses(
        (status = 200, description = "The ranking", body = RankingResponse),
        (status = 400, description = "Invalid parameter", body = ErrorBody),
        (status = 404, description = "Unknown profile or site", body = ErrorBody),
        (status = 503, description = "Store unavailable", body = ErrorBody),
    ))]
pub(super) async fn ranking(
    State(state): State<ApiState>,
    Path(profile): Path<String>,
    Strict(p): Strict<RankingParams>,
) -> Result<Json<RankingResponse>, ApiError> {
    let mut q = RankingQuery::new(&state, profile, p.site, p.section, p.tag, p.limit.0)?;
    q.offset = p.offset.0;
    q.within = p.published_within.map(|w| w.0);
    compute_ranking(&state, q).await.map(Json)
}

/// Which articles a list is of: a site's or the network's, a section's,
/// a tag's, or a tag's within a section; and the group whose rankings
/// hold them.
#[derive(Debug, Clone)]
pub(crate) struct Scope {
    pub(super) group: Group,
    pub(super) site: Option<String>,
    pub(super) section: Option<String>,
    pub(super) tag: Option<String>,
}

impl Scope {
    /// The scope of a request's parameters; an unknown site is a 404.
    pub(super) fn new(
        state: &ApiState,
        site: Option<super::params::Name>,
        section: Option<super::params::Name>,
        tag: Option<super::params::Name>,
    ) -> Result<Scope, ApiError> {
        let site = state.site_scope(site.map(|n| n.0))?;
        let (section, tag) = (section.map(|s| s.0), tag.map(|t| t.0));
        // Both: the tag's ranking, keeping the section's articles.
        let group = match (&section, &tag) {
            (_, Some(t)) => Group::Tag(t.clone()),
            (Some(s), None) => Group::Section(s.clone()),
            (None, None) => Group::All,
        }
        .of_site(site.as_deref());
        Ok(Scope {
            group,
            site,
            section,
            tag,
        })
    }

    /// The section an article must be in besides the group: with both a
    /// tag and a section, the section.
    pub(super) fn also_in_section(&self) -> Option<&str> {
        self.tag.as_ref().and(self.section.as_deref())
    }
}

/// What a rankings request asks for, checked.
#[derive(Debug, Clone)]
pub(crate) struct RankingQuery {
    profile: String,
    id: ProfileId,
    group: Group,
    site: Option<String>,
    section: Option<String>,
    tag: Option<String>,
    pub(super) limit: usize,
    pub(super) offset: usize,
    pub(super) within: Option<Duration>,
}

impl RankingQuery {
    /// The first `limit` of `profile`'s ranking of the section, the tag
    /// (of the tag's articles in the section, when both are given) or
    /// everything.
    pub(super) fn new(
        state: &ApiState,
        profile: String,
        site: Option<super::params::Name>,
        section: Option<super::params::Name>,
        tag: Option<super::params::Name>,
        limit: usize,
    ) -> Result<RankingQuery, ApiError> {
        let id = profile_id(state, &profile)?;
        let Scope {
            group,
            site,
            section,
            tag,
        } = Scope::new(state, site, section, tag)?;
        Ok(RankingQuery {
            profile,
            id,
            group,
            site,
            section,
            tag,
            limit,
            offset: 0,
            within: None,
        })
    }

    /// The same for every request that asks for the same list.
    pub(super) fn key(&self) -> String {
        format!(
            "r|{}|{:?}|{}|{}|{}",
            self.profile,
            self.group,
            self.limit,
            self.offset,
            self.within.map(|d| d.as_millis()).unwrap_or(0)
        )
    }
}

/// The ranking a query asks for, decayed to now, with metadata.
pub(super) async fn compute_ranking(
    st: &ApiState,
    q: RankingQuery,
) -> Result<RankingResponse, ApiError> {
    let at = now_ms();
    let (p, offset, limit) = (q.id, q.offset, q.limit);
    let in_section = q.tag.is_some() && q.section.is_some();
    // The usual request (the first page, no other condition) reads one
    // page; when that page holds an article that is not listed (never
    // published, or excluded), the ranking is scanned instead.
    let first = match (q.within, in_section, offset) {
        (None, false, 0) => {
            let page = st.store.top(&q.group, p, 0..limit, at).await?;
            let ids: Vec<String> = page.items.iter().map(|s| s.member.clone()).collect();
            let metas = st.store.articles(&ids).await?;
            let listed: Option<Vec<RankedArticle>> = page
                .items
                .into_iter()
                .zip(metas)
                .enumerate()
                .map(|(i, (s, m))| {
                    let m = m.live().filter(|m| st.listed(m))?;
                    Some(ranked(st, i + 1, &s.member, s.score, m))
                })
                .collect();
            listed
        }
        _ => None,
    };
    let items = match first {
        Some(items) => items,
        None => filtered(st, &q, at, q.within).await?,
    };
    let (section_name, tag_name) = scope_names(st, q.section.as_deref(), q.tag.as_deref()).await?;
    Ok(RankingResponse {
        profile: q.profile,
        site: q.site,
        section: q.section,
        tag: q.tag,
        section_name,
        tag_name,
        published_within_seconds: q.within.map(|w| w.as_secs()),
        generated_at: rfc3339(at),
        items,
    })
}

/// How far down a ranking a read that skips articles looks for `want`
/// (`offset + limit`) of them (DESIGN §13): four times as many, at least
/// [`MIN_SCAN`]; and, when a filter keeps only some articles
/// (`published_within`, a tag within a section), at most [`MAX_SCAN`]. A
/// read's Redis work is then bounded by its `limit` and `offset` whatever
/// the filter keeps: `published_within=15m&limit=10` examines 400 ranks,
/// not the whole ranking, when nothing that recent is popular. Without a
/// filter only unlisted articles are skipped, few, and a page deep in the
/// ranking is still found.
pub(crate) fn scan_budget(want: usize, filtered: bool) -> usize {
    let budget = (want * 4).max(MIN_SCAN);
    if filtered {
        budget.min(MAX_SCAN)
    } else {
        budget
    }
}

/// The fewest ranks a read that skips articles examines.
pub(crate) const MIN_SCAN: usize = 400;
/// The most ranks a filtered read examines: a filtered list is of the
/// qualifying articles among the ranking's top 2,000.
pub(crate) const MAX_SCAN: usize = 2_000;

/// The ranking restricted to the articles that qualify: published within
/// `within` of `at` when given, and in the query's section when a tag and
/// a section are both asked for. Scans the ranking in pages until
/// `offset + limit` qualify, it ends, or [`scan_budget`] ranks were
/// examined; ranks count qualifying articles only. A filtered page is
/// short when fewer articles qualify among the top of the ranking: a list
/// of what is popular, not an archive search.
async fn filtered(
    st: &ApiState,
    q: &RankingQuery,
    at: i64,
    within: Option<Duration>,
) -> Result<Vec<RankedArticle>, ApiError> {
    let since = within.map(|w| at - w.as_millis() as i64);
    let section = q.tag.as_ref().and(q.section.as_deref());
    let want = q.offset + q.limit;
    let budget = scan_budget(want, since.is_some() || section.is_some());
    let page_size = (want * 4).clamp(100, 1000);
    let mut out = Vec::new();
    let mut qualifying = 0;
    let mut start = 0;
    while start < budget {
        let page_size = page_size.min(budget - start);
        let page = st
            .store
            .top(&q.group, q.id, start..start + page_size, at)
            .await?;
        let n = page.items.len();
        let ids: Vec<String> = page.items.iter().map(|s| s.member.clone()).collect();
        let metas = st.store.articles(&ids).await?;
        for (s, m) in page.items.into_iter().zip(metas) {
            // Only published articles are listed (DESIGN §12).
            let Some(m) = m.live().filter(|m| st.listed(m)) else {
                continue;
            };
            let fresh = since.is_none_or(|since| m.published_at_ms.is_some_and(|p| p >= since));
            let placed = section.is_none_or(|want| m.section.as_deref() == Some(want));
            if !(fresh && placed) {
                continue;
            }
            qualifying += 1;
            if qualifying > q.offset {
                out.push(ranked(st, qualifying, &s.member, s.score, m));
                if out.len() == q.limit {
                    return Ok(out);
                }
            }
        }
        if n < page_size {
            return Ok(out);
        }
        start += n;
    }
    Ok(out)
}

pub(super) fn ranked(
    st: &ApiState,
    rank: usize,
    key: &str,
    score: f64,
    meta: ArticleMeta,
) -> RankedArticle {
    RankedArticle {
        rank,
        score,
        article: article_view(&st.sites, key, Some(meta)),
    }
}

/// Popular Tags: tags by the decayed score of their articles' events.
#[utoipa::path(get, path = "/v1/rankings/{profile}/tags", tag = "rankings",
    params(("profile" = String, Path, description = "Ranking profile"), TagParams),
    responses(
        (status = 200, description = "The tags", body = TagsResponse),
        (status = 400, description = "Invalid parameter", body = ErrorBody),
        (status = 404, description = "Unknown profile or site", body = ErrorBody),
        (status = 503, description = "Store unavailable", body = ErrorBody),
    ))]
pub(super) async fn popular_tags(
    State(state): State<ApiState>,
    Path(profile): Path<String>,
    Strict(params): Strict<TagParams>,
) -> Result<Json<TagsResponse>, ApiError> {
    let p = profile_id(&state, &profile)?;
    let site = state.site_scope(params.site.map(|n| n.0))?;
    let (limit, offset) = (params.limit.0, params.offset.0);
    let at = now_ms();
    let group = Group::Tags.of_site(site.as_deref());
    let page = state
        .store
        .top(&group, p, offset..offset + limit, at)
        .await?;
    let keys: Vec<String> = page
        .items
        .iter()
        .map(|s| name_key(NameOf::Tag, &s.member))
        .collect();
    let names = state.store.names(&keys).await?;
    Ok(Json(TagsResponse {
        profile,
        site,
        generated_at: rfc3339(at),
        items: page
            .items
            .into_iter()
            .zip(names)
            .enumerate()
            .map(|(i, (s, name))| RankedTag {
                rank: offset + i + 1,
                tag: s.member,
                name,
                score: s.score,
            })
            .collect(),
    }))
}

/// The names a list's section and tag were published with, when it has them.
pub(super) async fn scope_names(
    st: &ApiState,
    section: Option<&str>,
    tag: Option<&str>,
) -> Result<(Option<String>, Option<String>), ApiError> {
    let keys: Vec<String> = [
        section.map(|s| name_key(NameOf::Section, s)),
        tag.map(|t| name_key(NameOf::Tag, t)),
    ]
    .into_iter()
    .flatten()
    .collect();
    if keys.is_empty() {
        return Ok((None, None));
    }
    let mut names = st.store.names(&keys).await?.into_iter();
    let section = section.and_then(|_| names.next().flatten());
    let tag = tag.and_then(|_| names.next().flatten());
    Ok((section, tag))
}
