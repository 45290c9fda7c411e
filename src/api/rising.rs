//! `GET /v1/rising`: what is taking off now (DESIGN §14), per site or for
//! the network, a section, a tag. The candidates are the top
//! [`CANDIDATES`] of the short profile's ranking of the scope (an article
//! below them sees too little now to be taking off); each gets its long
//! profile's score in one `ZMSCORE` per shard, and the formula of
//! [`crate::rising`].

use axum::extract::State;
use axum::Json;

use super::model::{ErrorBody, RisingArticle, RisingResponse};
use super::params::{RisingParams, Strict};
use super::rankings::{ranked, Scope};
use super::{rfc3339, ApiError, ApiState};
use crate::now_ms;
use crate::scoring::Group;

/// How many of the short profile's top articles are considered.
pub const CANDIDATES: usize = 500;

/// What a rising request asks for, checked.
#[derive(Debug, Clone)]
pub(crate) struct RisingQuery {
    pub(super) scope: Scope,
    pub(super) limit: usize,
    pub(super) offset: usize,
}

impl RisingQuery {
    /// The same for every request that asks for the same list.
    pub(super) fn key(&self) -> String {
        format!(
            "rising|{:?}|{:?}|{}|{}",
            self.scope.group,
            self.scope.also_in_section(),
            self.limit,
            self.offset
        )
    }
}

/// Articles taking off: rising > 0, highest first.
#[utoipa::path(get, path = "/v1/rising", tag = "rankings",
    params(RisingParams),
    responses(
        (status = 200, description = "The rising list", body = RisingResponse),
        (status = 400, description = "Invalid parameter", body = ErrorBody),
        (status = 404, description = "Unknown site", body = ErrorBody),
        (status = 503, description = "Store unavailable", body = ErrorBody),
    ))]
pub(super) async fn rising(
    State(state): State<ApiState>,
    Strict(p): Strict<RisingParams>,
) -> Result<Json<RisingResponse>, ApiError> {
    let q = RisingQuery {
        scope: Scope::new(&state, p.site, p.section, p.tag)?,
        limit: p.limit.0,
        offset: p.offset.0,
    };
    compute_rising(&state, q).await.map(Json)
}

/// The first `limit` items of the rising list of the network (`site`
/// none) or of a site: what the alert evaluator reads.
pub(crate) async fn rising_of(
    st: &ApiState,
    site: Option<&str>,
    limit: usize,
) -> Result<RisingResponse, ApiError> {
    let query = RisingQuery {
        scope: Scope {
            group: Group::All.of_site(site),
            site: site.map(str::to_string),
            section: None,
            tag: None,
        },
        limit,
        offset: 0,
    };
    compute_rising(st, query).await
}

/// The rising list a query asks for, decayed to now, with metadata.
pub(super) async fn compute_rising(
    st: &ApiState,
    q: RisingQuery,
) -> Result<RisingResponse, ApiError> {
    let at = now_ms();
    let r = st.rising;
    let group = &q.scope.group;
    let top = st.store.top(group, r.short, 0..CANDIDATES, at).await?;
    let ids: Vec<String> = top.items.iter().map(|s| s.member.clone()).collect();
    let long = st.store.scores(group, r.long, &ids, at).await?;
    let mut rising: Vec<(String, f64, crate::rising::Rise)> = top
        .items
        .into_iter()
        .zip(long)
        .map(|(s, long)| {
            let rise = r.of(s.score, long);
            (s.member, s.score, rise)
        })
        .filter(|(_, _, rise)| rise.rising > 0.0)
        .collect();
    rising.sort_by(|a, b| b.2.rising.total_cmp(&a.2.rising).then(a.0.cmp(&b.0)));
    let ids: Vec<String> = rising.iter().map(|(id, ..)| id.clone()).collect();
    let metas = st.store.articles(&ids).await?;
    let section = q.scope.also_in_section();
    let items = rising
        .into_iter()
        .zip(metas)
        .filter_map(|((id, score, rise), m)| {
            let m = m.live().filter(|m| st.listed(m))?;
            let placed = section.is_none_or(|want| m.section.as_deref() == Some(want));
            placed.then_some((id, score, rise, m))
        })
        .enumerate()
        .skip(q.offset)
        .take(q.limit)
        .map(|(i, (id, score, rise, m))| RisingArticle {
            article: ranked(st, i + 1, &id, score, m),
            rising: rise.rising,
            rate_short: rise.rate_short,
            rate_long: rise.rate_long,
        })
        .collect();
    let (section_name, tag_name) =
        super::rankings::scope_names(st, q.scope.section.as_deref(), q.scope.tag.as_deref())
            .await?;
    Ok(RisingResponse {
        short_profile: st.profiles[r.short.0].name.clone(),
        long_profile: st.profiles[r.long.0].name.clone(),
        site: q.scope.site,
        section: q.scope.section,
        tag: q.scope.tag,
        section_name,
        tag_name,
        generated_at: rfc3339(at),
        items,
    })
}
