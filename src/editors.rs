//! The editors' API (DESIGN §12): hide an article from every list without
//! unpublishing it, and show it again.
//!
//! `PUT`, `DELETE` and `GET /v1/admin/sites/{site}/exclusions/{article_id}`
//! and `GET /v1/admin/sites/{site}/exclusions`, each with `Authorization:
//! Bearer <token>`. Tokens are configured as the SHA-256 of their text
//! (`admin.tokens`), so the configuration holds no secret; with none the
//! routes answer 404, as if they did not exist. A missing or unknown token
//! is a 401, a token limited to other sites a 403. Every change is logged
//! with the token's name. An exclusion is seen by every list within one
//! cache TTL: lists read it with the article's metadata.
//!
//! Served on the operators' listener only ([`crate::api::operators_router`]).
//! The one HTTP route that writes to the store: it holds [`Editorial`],
//! and reads through the API's state, which holds no write interface.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::api::{rfc3339, ApiError, ApiState};
use crate::config::AdminToken;
use crate::store::{Editorial, Exclusion};

/// What the editors' routes hold.
#[derive(Clone)]
struct Editors {
    /// Lists and exclusions are read through the API's state.
    api: ApiState,
    /// Where exclusions are written.
    editorial: Arc<dyn Editorial>,
    admins: Arc<Admins>,
}

/// The editors' routes, answering 404 when no token is configured.
pub fn routes(api: ApiState, editorial: Arc<dyn Editorial>, tokens: &[AdminToken]) -> Router {
    Router::new()
        .route("/v1/admin/sites/{site}/exclusions", get(list))
        .route(
            "/v1/admin/sites/{site}/exclusions/{article_id}",
            get(show).put(exclude).delete(include),
        )
        .with_state(Editors {
            api,
            editorial,
            admins: Arc::new(Admins::new(tokens)),
        })
}

/// The holders of admin tokens.
#[derive(Debug, Clone, Default)]
pub struct Admins {
    tokens: Vec<AdminToken>,
}

impl Admins {
    /// From validated settings.
    pub fn new(tokens: &[AdminToken]) -> Admins {
        Admins {
            tokens: tokens
                .iter()
                .map(|t| AdminToken {
                    sha256: t.sha256.to_ascii_lowercase(),
                    ..t.clone()
                })
                .collect(),
        }
    }

    /// The name of the holder of the request's bearer token, if it may
    /// act on `site`.
    fn authorize(&self, headers: &HeaderMap, site: &str) -> Result<String, Refusal> {
        if self.tokens.is_empty() {
            return Err(Refusal::Off);
        }
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(Refusal::Unauthenticated)?;
        let digest = hex(&Sha256::digest(token.as_bytes()));
        // Every configured digest is compared, so the time taken does not
        // tell which one matched.
        let mut holder = None;
        for t in &self.tokens {
            if constant_time_eq(t.sha256.as_bytes(), digest.as_bytes()) {
                holder = Some(t);
            }
        }
        let holder = holder.ok_or(Refusal::Unauthenticated)?;
        if !holder.sites.is_empty() && !holder.sites.iter().any(|s| s == site) {
            return Err(Refusal::Forbidden(holder.name.clone()));
        }
        Ok(holder.name.clone())
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Why an admin request is refused.
enum Refusal {
    /// No token is configured: the admin API does not exist.
    Off,
    /// No token, or not one of the configured ones.
    Unauthenticated,
    /// The token's holder may not act on this site.
    Forbidden(String),
    /// Anything an API route can fail with.
    Api(ApiError),
}

impl From<ApiError> for Refusal {
    fn from(e: ApiError) -> Refusal {
        Refusal::Api(e)
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let (status, code, message) = match self {
            Refusal::Off => (
                StatusCode::NOT_FOUND,
                "not_found",
                "no such route".to_string(),
            ),
            Refusal::Unauthenticated => (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "send Authorization: Bearer <an admin token>".to_string(),
            ),
            Refusal::Forbidden(name) => (
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("the token of {name:?} may not act on this site"),
            ),
            Refusal::Api(e) => return e.into_response(),
        };
        let mut r = (
            status,
            Json(json!({"error": {"code": code, "message": message}})),
        )
            .into_response();
        if status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        r
    }
}

/// One exclusion, as the admin API shows it.
#[derive(Debug, Serialize)]
struct ExclusionView {
    site: String,
    article_id: String,
    by: String,
    at: String,
}

/// Checks the caller and the site, and gives the holder's name.
fn admit(state: &Editors, headers: &HeaderMap, site: &str) -> Result<String, Refusal> {
    let name = state.admins.authorize(headers, site)?;
    if state.api.sites.get(site).is_none() {
        return Err(ApiError::NotFound(format!("unknown site {site:?}")).into());
    }
    Ok(name)
}

fn checked_id(id: &str) -> Result<(), Refusal> {
    crate::event::fields::check_article_id(id)
        .map_err(|e| ApiError::InvalidParameter(e.to_string()).into())
}

fn view(state: &Editors, key: &str, e: Exclusion) -> ExclusionView {
    let (site, id) = state.api.sites.split(key);
    ExclusionView {
        site: site.to_string(),
        article_id: id.to_string(),
        by: e.by,
        at: rfc3339(e.at_ms),
    }
}

/// Every exclusion of the network, by article key.
async fn exclusions(state: &Editors) -> Result<Vec<(String, Exclusion)>, Refusal> {
    Ok(state.api.store.exclusions().await.map_err(ApiError::from)?)
}

async fn list(
    State(state): State<Editors>,
    Path(site): Path<String>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, Refusal> {
    admit(&state, &headers, &site)?;
    let mut items: Vec<ExclusionView> = exclusions(&state)
        .await?
        .into_iter()
        .map(|(k, e)| view(&state, &k, e))
        .filter(|v| v.site == site)
        .collect();
    items.sort_by(|a, b| a.article_id.cmp(&b.article_id));
    Ok(Json(json!({ "site": site, "items": items })))
}

async fn show(
    State(state): State<Editors>,
    Path((site, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<ExclusionView>, Refusal> {
    admit(&state, &headers, &site)?;
    checked_id(&id)?;
    let key = state.api.sites.key(&site, &id);
    let found = exclusions(&state)
        .await?
        .into_iter()
        .find(|(k, _)| *k == key);
    match found {
        Some((k, e)) => Ok(Json(view(&state, &k, e))),
        None => {
            Err(ApiError::NotFound(format!("article {id:?} of {site:?} is not excluded")).into())
        }
    }
}

async fn exclude(
    State(state): State<Editors>,
    Path((site, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<ExclusionView>, Refusal> {
    let name = admit(&state, &headers, &site)?;
    checked_id(&id)?;
    let key = state.api.sites.key(&site, &id);
    let e = Exclusion {
        by: name.clone(),
        at_ms: crate::now_ms(),
    };
    state
        .editorial
        .set_exclusion(&key, Some(&e))
        .await
        .map_err(ApiError::from)?;
    tracing::info!(admin = %name, site = %site, article_id = %id, "article excluded from every list");
    Ok(Json(view(&state, &key, e)))
}

async fn include(
    State(state): State<Editors>,
    Path((site, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<StatusCode, Refusal> {
    let name = admit(&state, &headers, &site)?;
    checked_id(&id)?;
    let key = state.api.sites.key(&site, &id);
    state
        .editorial
        .set_exclusion(&key, None)
        .await
        .map_err(ApiError::from)?;
    tracing::info!(admin = %name, site = %site, article_id = %id, "article shown again in lists");
    Ok(StatusCode::NO_CONTENT)
}
