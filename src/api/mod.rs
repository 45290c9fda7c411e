//! The HTTP API (DESIGN §5): rankings, popular tags, health and metrics.
//!
//! [`router`] builds the whole application from its state, so handlers are
//! tested without a socket. Ranking answers go through the [`cache::Cache`]
//! and carry `Cache-Control` and `ETag`.

mod assets;
pub mod cache;
pub mod error;
pub mod model;
mod params;
pub mod streams;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use serde_json::json;

use self::cache::{Cache, Cached};
pub use self::error::ApiError;
use self::model::*;
use self::params::Params;
use crate::event::ArticleMeta;
use crate::event::EventType;
use crate::ingest::ConsumerState;
use crate::metrics::Metrics;
use crate::now_ms;
use crate::scoring::{Group, Profiles};
use crate::store::{ArticleState, Cursor, Store};

/// Largest `limit` accepted.
pub const MAX_LIMIT: usize = 100;
/// Largest `offset` accepted.
pub const MAX_OFFSET: usize = 10_000;

/// What every handler shares.
#[derive(Clone)]
pub struct ApiState {
    /// Where scores are read.
    pub store: Arc<dyn Store>,
    /// Configured ranking profiles.
    pub profiles: Profiles,
    /// Metrics registry.
    pub metrics: Metrics,
    /// Response cache.
    pub cache: Arc<Cache>,
    /// `Cache-Control` of cached answers: `public, max-age=<cache_ttl>`.
    pub cache_control: HeaderValue,
    /// The consumer's assignment, when this process consumes (for `/readyz`).
    pub consumer: Option<ConsumerState>,
    /// Open Server-Sent Event streams and their shared pollers.
    pub streams: Arc<streams::Streams>,
    /// Origins allowed to call from browsers (`api.cors_allowed_origins`).
    pub cors_allowed_origins: Vec<String>,
}

/// Longest a request may take before it is answered 503 (streams excepted:
/// they last as long as their reader).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest request body accepted; 413 beyond.
pub const MAX_REQUEST_BODY_BYTES: usize = 64 * 1024;

/// The application: every route, with request metrics, CORS, gzip (not for
/// streams), a body limit and, except for streams, a timeout.
pub fn router(state: ApiState) -> Router {
    use tower_http::{
        compression::CompressionLayer, limit::RequestBodyLimitLayer, timeout::TimeoutLayer,
    };
    let streams = Router::new().route("/v1/stream/rankings/{profile}", get(stream_ranking));
    Router::new()
        .route("/v1/rankings", get(list_profiles))
        .route("/v1/rankings/{profile}", get(ranking))
        .route("/v1/rankings/{profile}/tags", get(popular_tags))
        .route("/v1/index", get(news_index))
        .route("/v1/articles/{id}", get(article))
        .route("/openapi.json", get(openapi))
        .merge(assets::routes())
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(|| async { ApiError::NotFound("no such route".to_string()) })
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            REQUEST_TIMEOUT,
        ))
        .merge(streams)
        .layer(middleware::from_fn_with_state(state.clone(), record))
        .layer(CompressionLayer::new())
        .layer(RequestBodyLimitLayer::new(MAX_REQUEST_BODY_BYTES))
        .layer(cors(&state.cors_allowed_origins))
        .with_state(state)
}

/// Cross-origin access for browsers on the allowed origins (or any, with
/// `*`): GET of every route, and the headers the widget and the stream send.
/// Preflights are answered here, before any handler or the store.
fn cors(origins: &[String]) -> tower_http::cors::CorsLayer {
    use tower_http::cors::{AllowOrigin, CorsLayer};
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([axum::http::Method::GET, axum::http::Method::POST])
        .allow_headers([
            header::CONTENT_TYPE,
            header::IF_NONE_MATCH,
            header::HeaderName::from_static("last-event-id"),
        ])
        .expose_headers([header::ETAG])
        .max_age(Duration::from_secs(3600))
}

async fn record(State(state): State<ApiState>, req: Request, next: Next) -> Response {
    // The matched route template (bounded), never the raw path.
    let matched = req.extensions().get::<MatchedPath>().cloned();
    let route = matched.as_ref().map_or("unmatched", MatchedPath::as_str);
    let started = Instant::now();
    let response = next.run(req).await;
    let m = &state.metrics;
    m.http_duration
        .with_label_values(&[route])
        .observe(started.elapsed().as_secs_f64());
    m.http_requests
        .with_label_values(&[route, response.status().as_str()])
        .inc();
    response
}

fn rfc3339(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

fn profile_index(state: &ApiState, name: &str) -> Result<usize, ApiError> {
    state
        .profiles
        .iter()
        .position(|p| p.name == name)
        .ok_or_else(|| ApiError::NotFound(format!("unknown ranking profile {name:?}")))
}

/// Answers from the cache with `Cache-Control`, `ETag` and `304 Not Modified`.
async fn cached<T, F, Fut>(
    state: &ApiState,
    key: String,
    headers: &HeaderMap,
    compute: F,
) -> Result<Response, ApiError>
where
    T: Serialize,
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<T, ApiError>>,
{
    let value = state
        .cache
        .get_or_compute(key, || async {
            let v = compute().await?;
            Ok::<_, ApiError>(Cached::new(
                serde_json::to_vec(&v).expect("JSON serialises"),
            ))
        })
        .await?;
    Ok(conditional(
        headers,
        &value,
        state.cache_control.clone(),
        "application/json",
    ))
}

/// `value` with `Cache-Control` and its `ETag`, or `304 Not Modified` when
/// the client's `If-None-Match` already names it.
fn conditional(
    headers: &HeaderMap,
    value: &Cached,
    cache_control: HeaderValue,
    content_type: &'static str,
) -> Response {
    let mut h = HeaderMap::with_capacity(3);
    h.insert(header::CACHE_CONTROL, cache_control);
    h.insert(header::ETAG, value.etag_header.clone());
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim() == value.etag || t.trim() == "*")
        });
    if matches {
        return (StatusCode::NOT_MODIFIED, h).into_response();
    }
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    (h, value.body.clone()).into_response()
}

/// The configured ranking profiles.
#[utoipa::path(get, path = "/v1/rankings", tag = "rankings",
    responses((status = 200, description = "Profiles", body = ProfilesResponse)))]
async fn list_profiles(
    State(state): State<ApiState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let st = state.clone();
    cached(
        &state,
        "profiles".to_string(),
        &headers,
        move || async move {
            Ok(ProfilesResponse {
                profiles: st
                    .profiles
                    .iter()
                    .map(|p| ProfileView {
                        name: p.name.clone(),
                        half_life_seconds: p.half_life_ms / 1000.0,
                        weights: p.weights,
                    })
                    .collect(),
            })
        },
    )
    .await
}

/// The OpenAPI document, with the same caching headers as the answers.
async fn openapi(State(state): State<ApiState>, headers: HeaderMap) -> Result<Response, ApiError> {
    cached(&state, "openapi".to_string(), &headers, || async {
        Ok(<ApiDoc as utoipa::OpenApi>::openapi())
    })
    .await
}

fn article_view(article_id: String, meta: Option<ArticleMeta>) -> ArticleView {
    match meta {
        Some(m) => ArticleView {
            article_id,
            title: m.title,
            url: m.url,
            section: m.section,
            tags: Some(m.tags),
            published_at: m.published_at_ms.map(rfc3339),
            author: m.author,
            summary: m.summary,
            image_url: m.image_url,
        },
        None => ArticleView {
            article_id,
            title: None,
            url: None,
            section: None,
            tags: None,
            published_at: None,
            author: None,
            summary: None,
            image_url: None,
        },
    }
}

fn ranked(rank: usize, article_id: String, score: f64, meta: Option<ArticleMeta>) -> RankedArticle {
    let v = article_view(article_id, meta);
    RankedArticle {
        rank,
        article_id: v.article_id,
        score,
        title: v.title,
        url: v.url,
        section: v.section,
        tags: v.tags,
        published_at: v.published_at,
        author: v.author,
        summary: v.summary,
        image_url: v.image_url,
    }
}

/// Most Popular / Popular Reads: articles by decayed score.
#[utoipa::path(get, path = "/v1/rankings/{profile}", tag = "rankings",
    params(
        ("profile" = String, Path, description = "Ranking profile, e.g. trending"),
        ("section" = Option<String>, Query, description = "Only this section (normalised to a slug)"),
        ("tag" = Option<String>, Query, description = "Only this tag; at most one of section and tag"),
        ("limit" = Option<usize>, Query, description = "1 to 100, default 10"),
        ("offset" = Option<usize>, Query, description = "0 to 10000, default 0"),
        ("published_within" = Option<String>, Query, description = "Only articles published this recently, e.g. 48h"),
    ),
    responses(
        (status = 200, description = "The ranking", body = RankingResponse),
        (status = 400, description = "Invalid parameter", body = ErrorBody),
        (status = 404, description = "Unknown profile", body = ErrorBody),
        (status = 503, description = "Store unavailable", body = ErrorBody),
    ))]
async fn ranking(
    State(state): State<ApiState>,
    Path(profile): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let params = Params::new(
        query,
        &["section", "tag", "limit", "offset", "published_within"],
    )?;
    let q = RankingQuery::parse(&state, profile, &params)?;
    let st = state.clone();
    cached(&state, q.key(), &headers, move || async move {
        compute_ranking(&st, q).await
    })
    .await
}

/// Most Popular / Popular Reads as Server-Sent Events: `event: ranking`
/// with the JSON of the rankings route, at connect and whenever the list's
/// order or members change; comment heartbeats every 15 s.
#[utoipa::path(get, path = "/v1/stream/rankings/{profile}", tag = "rankings",
    params(
        ("profile" = String, Path, description = "Ranking profile, e.g. trending"),
        ("section" = Option<String>, Query, description = "Only this section (normalised to a slug)"),
        ("tag" = Option<String>, Query, description = "Only this tag (normalised to a slug)"),
        ("limit" = Option<usize>, Query, description = "1 to 100, default 10"),
        ("Last-Event-ID" = Option<String>, Header, description = "The id of the last event received; the same list is not sent again"),
    ),
    responses(
        (status = 200, description = "text/event-stream of RankingResponse", content_type = "text/event-stream", body = String),
        (status = 400, description = "Invalid parameter", body = ErrorBody),
        (status = 404, description = "Unknown profile", body = ErrorBody),
        (status = 503, description = "Too many open streams", body = ErrorBody),
    ))]
async fn stream_ranking(
    State(state): State<ApiState>,
    Path(profile): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let params = Params::new(query, &["section", "tag", "limit"])?;
    let q = RankingQuery::parse(&state, profile, &params)?;
    let last = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok());
    Ok(streams::stream(&state, q, last)?.into_response())
}

/// What a rankings request asks for, checked.
#[derive(Debug, Clone)]
pub(crate) struct RankingQuery {
    profile: String,
    index: usize,
    group: Group,
    section: Option<String>,
    tag: Option<String>,
    limit: usize,
    offset: usize,
    within: Option<Duration>,
}

impl RankingQuery {
    fn parse(state: &ApiState, profile: String, params: &Params) -> Result<RankingQuery, ApiError> {
        let index = profile_index(state, &profile)?;
        let section = params.name("section")?;
        let tag = params.name("tag")?;
        let group = match (&section, &tag) {
            (Some(_), Some(_)) => {
                return Err(ApiError::InvalidParameter(
                    "give at most one of section and tag".to_string(),
                ))
            }
            (Some(s), None) => Group::Section(s.clone()),
            (None, Some(t)) => Group::Tag(t.clone()),
            (None, None) => Group::All,
        };
        Ok(RankingQuery {
            profile,
            index,
            group,
            section,
            tag,
            limit: params.number("limit", 10, 1, MAX_LIMIT)?,
            offset: params.number("offset", 0, 0, MAX_OFFSET)?,
            within: params.duration("published_within")?,
        })
    }

    /// The same for every request that asks for the same list.
    fn key(&self) -> String {
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
async fn compute_ranking(st: &ApiState, q: RankingQuery) -> Result<RankingResponse, ApiError> {
    let at = now_ms();
    let (p, offset, limit) = (q.index, q.offset, q.limit);
    let items = match q.within {
        None => {
            let page = st.store.top(&q.group, p, offset, limit, at).await?;
            let ids: Vec<String> = page.items.iter().map(|s| s.member.clone()).collect();
            let metas = st.store.articles(&ids).await?;
            page.items
                .into_iter()
                .zip(metas)
                .enumerate()
                .map(|(i, (s, m))| ranked(offset + i + 1, s.member, s.score, m.live()))
                .collect()
        }
        Some(within) => recent(st, &q.group, p, offset, limit, at, within).await?,
    };
    Ok(RankingResponse {
        profile: q.profile,
        section: q.section,
        tag: q.tag,
        generated_at: rfc3339(at),
        items,
    })
}

/// The ranking restricted to articles published within `within` of `at`:
/// scans the ranking in pages until `offset + limit` qualify or it ends, so
/// a page is never short while enough articles exist.
async fn recent(
    st: &ApiState,
    group: &Group,
    profile: usize,
    offset: usize,
    limit: usize,
    at: i64,
    within: Duration,
) -> Result<Vec<RankedArticle>, ApiError> {
    let since = at - within.as_millis() as i64;
    let want = offset + limit;
    let page_size = (want * 4).clamp(100, 1000);
    let mut out = Vec::new();
    let mut qualifying = 0;
    let mut start = 0;
    loop {
        let page = st.store.top(group, profile, start, page_size, at).await?;
        let n = page.items.len();
        let ids: Vec<String> = page.items.iter().map(|s| s.member.clone()).collect();
        let metas = st.store.articles(&ids).await?;
        for (s, m) in page.items.into_iter().zip(metas) {
            let m = m.live();
            let fresh = m
                .as_ref()
                .and_then(|m| m.published_at_ms)
                .is_some_and(|p| p >= since);
            if !fresh {
                continue;
            }
            qualifying += 1;
            if qualifying > offset {
                out.push(ranked(qualifying, s.member, s.score, m));
                if out.len() == limit {
                    return Ok(out);
                }
            }
        }
        if n < page_size {
            return Ok(out);
        }
        start += n;
    }
}

/// Popular Tags: tags by the decayed score of their articles' events.
#[utoipa::path(get, path = "/v1/rankings/{profile}/tags", tag = "rankings",
    params(
        ("profile" = String, Path, description = "Ranking profile"),
        ("limit" = Option<usize>, Query, description = "1 to 100, default 10"),
        ("offset" = Option<usize>, Query, description = "0 to 10000, default 0"),
    ),
    responses(
        (status = 200, description = "The tags", body = TagsResponse),
        (status = 400, description = "Invalid parameter", body = ErrorBody),
        (status = 404, description = "Unknown profile", body = ErrorBody),
        (status = 503, description = "Store unavailable", body = ErrorBody),
    ))]
async fn popular_tags(
    State(state): State<ApiState>,
    Path(profile): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let p = profile_index(&state, &profile)?;
    let params = Params::new(query, &["limit", "offset"])?;
    let limit = params.number("limit", 10, 1, MAX_LIMIT)?;
    let offset = params.number("offset", 0, 0, MAX_OFFSET)?;
    let key = format!("t|{profile}|{limit}|{offset}");
    let st = state.clone();
    cached(&state, key, &headers, move || async move {
        let at = now_ms();
        let page = st.store.top(&Group::Tags, p, offset, limit, at).await?;
        Ok(TagsResponse {
            profile,
            generated_at: rfc3339(at),
            items: page
                .items
                .into_iter()
                .enumerate()
                .map(|(i, s)| RankedTag {
                    rank: offset + i + 1,
                    tag: s.member,
                    score: s.score,
                })
                .collect(),
        })
    })
    .await
}

/// News Index: the latest published articles, newest first.
#[utoipa::path(get, path = "/v1/index", tag = "index",
    params(
        ("section" = Option<String>, Query, description = "Only this section"),
        ("limit" = Option<usize>, Query, description = "1 to 100, default 20"),
        ("before" = Option<String>, Query, description = "A next_before cursor, an RFC 3339 time or epoch milliseconds"),
    ),
    responses(
        (status = 200, description = "A page of the index", body = IndexResponse),
        (status = 400, description = "Invalid parameter", body = ErrorBody),
        (status = 503, description = "Store unavailable", body = ErrorBody),
    ))]
async fn news_index(
    State(state): State<ApiState>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let params = Params::new(query, &["section", "limit", "before"])?;
    let limit = params.number("limit", 20, 1, MAX_LIMIT)?;
    let section = params.name("section")?;
    let before = match params.raw("before") {
        None => None,
        Some(b) => Some(parse_before(b).ok_or_else(|| {
            ApiError::InvalidParameter(
                "before must be a next_before cursor, an RFC 3339 time or epoch milliseconds"
                    .to_string(),
            )
        })?),
    };
    let key = format!("i|{section:?}|{limit}|{before:?}");
    let st = state.clone();
    cached(&state, key, &headers, move || async move {
        let at = now_ms();
        // One more than asked tells whether another page exists.
        let mut rows = st
            .store
            .index(section.as_deref(), before.as_ref(), limit + 1)
            .await?;
        let more = rows.len() > limit;
        rows.truncate(limit);
        let ids: Vec<String> = rows.iter().map(|c| c.article_id.clone()).collect();
        let metas = st.store.articles(&ids).await?;
        let items = rows
            .iter()
            .zip(metas)
            .map(|(c, m)| ArticleView {
                published_at: Some(rfc3339(c.published_at_ms)),
                ..article_view(c.article_id.clone(), m.live())
            })
            .collect();
        Ok(IndexResponse {
            section,
            generated_at: rfc3339(at),
            items,
            next_before: rows.last().filter(|_| more).map(Cursor::encode),
        })
    })
    .await
}

/// A `before` parameter: a cursor, an RFC 3339 time, or epoch milliseconds.
fn parse_before(s: &str) -> Option<Cursor> {
    if let Some(c) = Cursor::decode(s) {
        return Some(c);
    }
    let ms = s.parse::<i64>().ok().or_else(|| {
        time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
            .ok()
            .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
    })?;
    // An empty id sorts before every id: only strictly older articles follow.
    Some(Cursor {
        published_at_ms: ms,
        article_id: String::new(),
    })
}

/// An article: metadata, score and ranks per profile, all-time counts.
#[utoipa::path(get, path = "/v1/articles/{id}", tag = "articles",
    params(("id" = String, Path, description = "Article id")),
    responses(
        (status = 200, description = "The article", body = ArticleResponse),
        (status = 400, description = "Invalid id", body = ErrorBody),
        (status = 404, description = "Unknown or unpublished article", body = ErrorBody),
        (status = 503, description = "Store unavailable", body = ErrorBody),
    ))]
async fn article(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if id.is_empty() || id.len() > crate::event::fields::MAX_ID_BYTES {
        return Err(ApiError::InvalidParameter(
            "article id is empty or too long".to_string(),
        ));
    }
    let key = format!("a|{id}");
    let st = state.clone();
    cached(&state, key, &headers, move || async move {
        let at = now_ms();
        let meta = match st.store.articles(std::slice::from_ref(&id)).await?.pop() {
            Some(ArticleState::Withdrawn) => {
                return Err(ApiError::NotFound(format!(
                    "article {id:?} was unpublished"
                )))
            }
            Some(ArticleState::Live(m)) => Some(*m),
            _ => None,
        };
        let overall = st.store.position(&Group::All, &id, at).await?;
        let in_section = match meta.as_ref().and_then(|m| m.section.clone()) {
            Some(s) => st.store.position(&Group::Section(s), &id, at).await?,
            None => vec![None; st.profiles.len()],
        };
        let counts = st.store.counts(&id).await?;
        if meta.is_none() && overall.iter().all(Option::is_none) && counts == [0; EventType::COUNT]
        {
            return Err(ApiError::NotFound(format!("unknown article {id:?}")));
        }
        let profiles = st
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
        Ok(ArticleResponse {
            article: article_view(id, meta),
            generated_at: rfc3339(at),
            profiles,
            counts: Counts {
                page_view: count(EventType::PageView),
                share: count(EventType::Share),
                engagement: count(EventType::Engagement),
            },
        })
    })
    .await
}

/// The OpenAPI 3 document of this API, generated from the handlers and types.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "popularity",
        description = "What are people reading right now: rankings, tags, News Index and article pages."
    ),
    paths(
        list_profiles,
        ranking,
        stream_ranking,
        popular_tags,
        news_index,
        article
    ),
    components(schemas(Weights))
)]
pub struct ApiDoc;

async fn readyz(State(state): State<ApiState>) -> Response {
    let mut problems = Vec::new();
    if let Err(e) = state.store.ping().await {
        tracing::warn!(error = %e, "readiness: store unreachable");
        problems.push("store unreachable");
    }
    if let Some(c) = &state.consumer {
        if !c.is_assigned() {
            problems.push("consumer has no partitions assigned");
        }
        if !c.store_ok() {
            problems.push("consumer cannot write to the store");
        }
    }
    if problems.is_empty() {
        (StatusCode::OK, Json(json!({"status": "ready"}))).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "not_ready", "reasons": problems})),
        )
            .into_response()
    }
}

async fn metrics(State(state): State<ApiState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}
