//! The News Index: `/v1/index`, the latest published articles.

use axum::extract::State;
use axum::Json;

use super::articles::article_view;
use super::model::*;
use super::params::{IndexParams, Strict};
use super::{rfc3339, ApiError, ApiState};
use crate::now_ms;
use crate::store::Cursor;

/// News Index: the latest published articles, newest first.
#[utoipa::path(get, path = "/v1/index", tag = "index",
    params(IndexParams),
    responses(
        (status = 200, description = "A page of the index", body = IndexResponse),
        (status = 400, description = "Invalid parameter", body = ErrorBody),
        (status = 404, description = "Unknown site", body = ErrorBody),
        (status = 503, description = "Store unavailable", body = ErrorBody),
    ))]
pub(super) async fn news_index(
    State(state): State<ApiState>,
    Strict(params): Strict<IndexParams>,
) -> Result<Json<IndexResponse>, ApiError> {
    let limit = params.limit.0;
    let site = state.site_scope(params.site.map(|n| n.0))?;
    let section = params.section.map(|s| s.0);
    let before = params.before.map(|b| b.0);
    let at = now_ms();
    // One more than asked tells whether another page exists.
    let mut rows = state
        .store
        .index(
            site.as_deref(),
            section.as_deref(),
            before.as_ref(),
            limit + 1,
        )
        .await?;
    let more = rows.len() > limit;
    rows.truncate(limit);
    let ids: Vec<String> = rows.iter().map(|c| c.article_id.clone()).collect();
    let metas = state.store.articles(&ids).await?;
    // Only what may be listed; the cursor still moves past the rest.
    let items = rows
        .iter()
        .zip(metas)
        .filter_map(|(c, m)| {
            let m = m.live().filter(|m| state.listed(m))?;
            Some(ArticleView {
                published_at: Some(rfc3339(c.published_at_ms)),
                ..article_view(&state.sites, &c.article_id, Some(m))
            })
        })
        .collect();
    let (section_name, _) = super::rankings::scope_names(&state, section.as_deref(), None).await?;
    Ok(Json(IndexResponse {
        site,
        section,
        section_name,
        generated_at: rfc3339(at),
        items,
        next_before: rows.last().filter(|_| more).map(Cursor::encode),
    }))
}
