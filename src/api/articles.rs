//! Article pages: `/v1/articles/{id}`, and the view of an article that
//! every list shares.

use axum::extract::{Path, State};
use axum::Json;

use super::model::*;
use super::params::{ArticleParams, Strict};
use super::{rfc3339, ApiError, ApiState};
use crate::event::{ArticleMeta, EventType};
use crate::now_ms;
use crate::scoring::Group;
use crate::site::Sites;
use crate::store::ArticleState;

/// The article of `key` ([`crate::site::Sites::key`]) as lists show it;
/// metadata fields are null when unknown.
pub(super) fn article_view(sites: &Sites, key: &str, meta: Option<ArticleMeta>) -> ArticleView {
    // Unknown metadata has no tags, which is not the same as none.
    let known = meta.is_some();
    let m = meta.unwrap_or_default();
    let (site, article_id) = sites.split(key);
    // Published before names were kept: none rather than a shorter list.
    let named = known && m.names.tags.len() == m.tags.len();
    ArticleView {
        site: site.to_string(),
        article_id: article_id.to_string(),
        title: m.title,
        url: m.url,
        section: m.section,
        tags: known.then_some(m.tags),
        section_name: m.names.section,
        tag_names: named.then_some(m.names.tags),
        published_at: m.published_at_ms.map(rfc3339),
        author: m.author,
        summary: m.summary,
        image_url: m.image_url,
    }
}

/// An article: metadata, score and ranks per profile, all-time counts.
#[utoipa::path(get, path = "/v1/articles/{id}", tag = "articles",
    params(("id" = String, Path, description = "Article id", min_length = 1, max_length = 256), ArticleParams),
    responses(
        (status = 200, description = "The article", body = ArticleResponse),
        (status = 400, description = "Invalid id", body = ErrorBody),
        (status = 404, description = "Unknown or unpublished article", body = ErrorBody),
        (status = 503, description = "Store unavailable", body = ErrorBody),
    ))]
pub(super) async fn article(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    Strict(params): Strict<ArticleParams>,
) -> Result<Json<ArticleResponse>, ApiError> {
    // Only what the document declares (1 to 256 characters): any other id
    // is simply not an article (404).
    if id.is_empty() || id.chars().count() > crate::event::fields::MAX_ID_CHARS {
        return Err(ApiError::InvalidParameter(
            "article id is empty or too long".to_string(),
        ));
    }
    let site = match state.site_scope(params.site.map(|n| n.0))? {
        Some(site) => site,
        None if state.sites.is_network() => {
            return Err(ApiError::InvalidParameter(
                "site is required: this network has several sites".to_string(),
            ))
        }
        None => crate::site::DEFAULT_SITE.to_string(),
    };
    let id = state.sites.key(&site, &id);
    let site_of = |g: Group| g.of_site(state.sites.scope(Some(&site)));
    let at = now_ms();
    let meta = match state.store.articles(std::slice::from_ref(&id)).await?.pop() {
        Some(ArticleState::Withdrawn) => {
            return Err(ApiError::NotFound(format!(
                "article {id:?} was unpublished"
            )))
        }
        Some(ArticleState::Live(m)) => Some(*m),
        _ => None,
    };
    // Ranks among the articles of its own site.
    let overall = state.store.position(&site_of(Group::All), &id, at).await?;
    let in_section = match meta.as_ref().and_then(|m| m.section.clone()) {
        Some(s) => {
            state
                .store
                .position(&site_of(Group::Section(s)), &id, at)
                .await?
        }
        None => vec![None; state.profiles.len()],
    };
    let counts = state.store.counts(&id).await?;
    if meta.is_none() && overall.iter().all(Option::is_none) && counts == [0; EventType::COUNT] {
        return Err(ApiError::NotFound(format!("unknown article {id:?}")));
    }
    let profiles = state
        .profiles
        .iter()
        .zip(overall.iter().zip(&in_section))
        .map(|(p, (o, s))| ArticleScore {
            profile: p.name.clone(),
            score: o.map_or(0.0, |(v, _)| v),
            rank_overall: o.map(|(_, r)| r),
            rank_in_section: s.map(|(_, r)| r),
        })
        .collect();
    let count = |k: EventType| counts[k.index()];
    Ok(Json(ArticleResponse {
        article: article_view(&state.sites, &id, meta),
        generated_at: rfc3339(at),
        profiles,
        counts: Counts {
            page_view: count(EventType::PageView),
            share: count(EventType::Share),
            engagement: count(EventType::Engagement),
        },
    }))
}
