//! The JSON bodies of the API, as types: handlers build them and the
//! OpenAPI document (`/openapi.json`) is generated from them.

use serde::Serialize;
use utoipa::ToSchema;

use crate::config::WeightSettings;

/// `GET /v1/rankings`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"profiles": [{"name": "trending", "half_life_seconds": 7200.0, "weights": {"page_view": 1.0, "share": 5.0, "engaged_second": 0.05}}]}))]
pub struct ProfilesResponse {
    /// Configured ranking profiles, in configuration order.
    pub profiles: Vec<ProfileView>,
}

/// `GET /v1/sites`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"sites": [{"id": "jakarta-globe", "name": "Jakarta Globe"}, {"id": "btv", "name": "BTV"}]}))]
pub struct SitesResponse {
    /// The network's sites, in configuration order (one, `default`, when
    /// none is configured).
    pub sites: Vec<SiteView>,
}

/// One site of the network.
#[derive(Debug, Serialize, ToSchema)]
pub struct SiteView {
    /// Its id, as `site=` takes it.
    pub id: String,
    /// Its name.
    pub name: String,
}

/// One ranking profile.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProfileView {
    /// Name used in URLs.
    pub name: String,
    /// Time for a score to halve.
    pub half_life_seconds: f64,
    /// Weight per event type.
    #[schema(value_type = Weights)]
    pub weights: WeightSettings,
}

/// Weights of one profile.
#[derive(Debug, Serialize, ToSchema)]
#[allow(dead_code)]
pub struct Weights {
    /// Weight of one page view.
    pub page_view: f64,
    /// Weight of one share.
    pub share: f64,
    /// Weight of one engaged second.
    pub engaged_second: f64,
}

/// `GET /v1/rankings/{profile}`: Most Popular / Popular Reads.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"profile": "trending", "site": null, "section": "news", "tag": null, "section_name": "News", "tag_name": null, "published_within_seconds": null, "generated_at": "2023-09-12T05:00:00Z", "items": [{"rank": 1, "site": "default", "article_id": "a-123", "score": 42.7, "title": "Kim Jong Un Arrives in Russia", "url": "https://example.com/news/a-123", "section": "news", "tags": ["international"], "section_name": "News", "tag_names": ["International"], "published_at": "2023-09-12T04:48:00Z", "author": "Associated Press", "summary": "North Korea may have tens of millions of artillery shells.", "image_url": "https://example.com/img/a-123.jpg"}]}))]
pub struct RankingResponse {
    /// The profile asked for.
    pub profile: String,
    /// The site asked for; null: the whole network.
    pub site: Option<String>,
    /// Section filter (a slug), if any.
    pub section: Option<String>,
    /// Tag filter (a slug), if any.
    pub tag: Option<String>,
    /// The section's name as published ("Special Updates"), if known.
    pub section_name: Option<String>,
    /// The tag's name as published ("International"), if known.
    pub tag_name: Option<String>,
    /// The publication window applied, in seconds: `published_within`
    /// rounded up to one of a fixed set of windows; null without one.
    pub published_within_seconds: Option<u64>,
    /// Time the scores are decayed to (RFC 3339).
    pub generated_at: String,
    /// Highest score first.
    pub items: Vec<RankedArticle>,
}

/// One event of `GET /v1/stream/rankings/{profile}`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"event": "ranking", "id": "7", "data": "{\"profile\":\"trending\",\"items\":[…]}"}))]
pub struct RankingEvent {
    /// Always `ranking`.
    #[schema(pattern = "^ranking$")]
    pub event: String,
    /// Increasing; send it back as `Last-Event-ID` when reconnecting.
    #[schema(pattern = "^[0-9]+$")]
    pub id: String,
    /// A [`RankingResponse`], as JSON text.
    #[schema(content_media_type = "application/json")]
    pub data: String,
}

/// One article of a ranking; metadata fields are null when unknown.
#[derive(Debug, Serialize, ToSchema)]
pub struct RankedArticle {
    /// 1-based position in the ranking (after `offset`).
    pub rank: usize,
    /// Decayed score at `generated_at`.
    pub score: f64,
    /// The article, as every list shows it.
    #[serde(flatten)]
    pub article: ArticleView,
}

/// `GET /v1/rising`: what is taking off (DESIGN §14).
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"short_profile": "trending", "long_profile": "weekly", "site": null, "section": null, "tag": null, "section_name": null, "tag_name": null, "generated_at": "2023-09-12T05:00:00Z", "items": [{"rank": 1, "site": "default", "article_id": "a-123", "score": 42.7, "title": "Kim Jong Un Arrives in Russia", "url": "https://example.com/news/a-123", "section": "news", "tags": ["international"], "section_name": "News", "tag_names": ["International"], "published_at": "2023-09-12T04:48:00Z", "author": "Associated Press", "summary": "North Korea may have tens of millions of artillery shells.", "image_url": "https://example.com/img/a-123.jpg", "rising": 6.2, "rate_short": 30.1, "rate_long": 4.2}]}))]
pub struct RisingResponse {
    /// The profile whose rate is "now" (`rising.short`).
    pub short_profile: String,
    /// The profile whose rate is "usual" (`rising.long`).
    pub long_profile: String,
    /// The site asked for; null: the whole network.
    pub site: Option<String>,
    /// Section filter (a slug), if any.
    pub section: Option<String>,
    /// Tag filter (a slug), if any.
    pub tag: Option<String>,
    /// The section's name as published ("Special Updates"), if known.
    pub section_name: Option<String>,
    /// The tag's name as published ("International"), if known.
    pub tag_name: Option<String>,
    /// Time the scores are decayed to (RFC 3339).
    pub generated_at: String,
    /// Highest rising score first; only articles with rising > 0.
    pub items: Vec<RisingArticle>,
}

/// One article of the rising list: a ranked article (its `score` is the
/// short profile's) with its rise.
#[derive(Debug, Serialize, ToSchema)]
pub struct RisingArticle {
    /// The article, ranked by rising score.
    #[serde(flatten)]
    pub article: RankedArticle,
    /// `(rate_short − rate_long)² / max(rate_long, rising.floor)`.
    pub rising: f64,
    /// Weighted events per second as the short profile sees them.
    pub rate_short: f64,
    /// Weighted events per second as the long profile sees them.
    pub rate_long: f64,
}

/// One event of `GET /v1/stream/rising`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"event": "rising", "id": "3", "data": "{\"short_profile\":\"trending\",\"items\":[…]}"}))]
pub struct RisingEvent {
    /// Always `rising`.
    #[schema(pattern = "^rising$")]
    pub event: String,
    /// Increasing; send it back as `Last-Event-ID` when reconnecting.
    #[schema(pattern = "^[0-9]+$")]
    pub id: String,
    /// A [`RisingResponse`], as JSON text.
    #[schema(content_media_type = "application/json")]
    pub data: String,
}

/// `GET /v1/rankings/{profile}/tags`: Popular Tags.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"profile": "trending", "site": null, "generated_at": "2023-09-12T05:00:00Z", "items": [{"rank": 1, "tag": "international", "name": "International", "score": 120.5}]}))]
pub struct TagsResponse {
    /// The profile asked for.
    pub profile: String,
    /// The site asked for; null: the whole network (a tag's score sums
    /// over its sites).
    pub site: Option<String>,
    /// Time the scores are decayed to (RFC 3339).
    pub generated_at: String,
    /// Highest score first.
    pub items: Vec<RankedTag>,
}

/// One tag of the Popular Tags ranking.
#[derive(Debug, Serialize, ToSchema)]
pub struct RankedTag {
    /// 1-based position.
    pub rank: usize,
    /// Tag slug.
    pub tag: String,
    /// The name it was last published with, if known.
    pub name: Option<String>,
    /// Decayed score at `generated_at`: the sum over the events of the tag's articles.
    pub score: f64,
}

/// An article's metadata; fields are null when unknown.
#[derive(Debug, Serialize, ToSchema)]
pub struct ArticleView {
    /// The site that published it.
    pub site: String,
    /// Article id (on its site).
    pub article_id: String,
    /// Headline.
    pub title: Option<String>,
    /// Canonical URL.
    pub url: Option<String>,
    /// Section slug.
    pub section: Option<String>,
    /// Tag slugs.
    pub tags: Option<Vec<String>>,
    /// The section's name as published, if known.
    pub section_name: Option<String>,
    /// The name each tag was published with, in the order of `tags`.
    pub tag_names: Option<Vec<String>>,
    /// Publication time (RFC 3339).
    pub published_at: Option<String>,
    /// Byline.
    pub author: Option<String>,
    /// One or two sentences for lists.
    pub summary: Option<String>,
    /// http(s) URL of the article's picture.
    pub image_url: Option<String>,
}

/// `GET /v1/index`: News Index.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"site": null, "section": "news", "section_name": "News", "generated_at": "2023-09-12T05:00:00Z", "items": [{"site": "default", "article_id": "a-123", "title": "Kim Jong Un Arrives in Russia", "url": "https://example.com/news/a-123", "section": "news", "tags": ["international"], "section_name": "News", "tag_names": ["International"], "published_at": "2023-09-12T04:48:00Z", "author": "Associated Press", "summary": "North Korea may have tens of millions of artillery shells.", "image_url": "https://example.com/img/a-123.jpg"}], "next_before": "1694494080000.a-123"}))]
pub struct IndexResponse {
    /// The site asked for; null: the whole network.
    pub site: Option<String>,
    /// Section filter, if any.
    pub section: Option<String>,
    /// The section's name as published, if known.
    pub section_name: Option<String>,
    /// Time of the answer (RFC 3339).
    pub generated_at: String,
    /// Newest first.
    pub items: Vec<ArticleView>,
    /// Pass as `before` for the next page; null on the last page.
    pub next_before: Option<String>,
}

/// `GET /v1/articles/{id}`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"site": "default", "article_id": "a-123", "title": "Kim Jong Un Arrives in Russia", "url": "https://example.com/news/a-123", "section": "news", "tags": ["international"], "section_name": "News", "tag_names": ["International"], "published_at": "2023-09-12T04:48:00Z", "author": "Associated Press", "summary": "North Korea may have tens of millions of artillery shells.", "image_url": "https://example.com/img/a-123.jpg", "generated_at": "2023-09-12T05:00:00Z", "profiles": [{"profile": "trending", "score": 42.7, "rank_overall": 1, "rank_in_section": 1}], "counts": {"page_view": 1520, "share": 31, "engagement": 880}}))]
pub struct ArticleResponse {
    /// Metadata.
    #[serde(flatten)]
    pub article: ArticleView,
    /// Time the scores are decayed to (RFC 3339).
    pub generated_at: String,
    /// Score and ranks per profile.
    pub profiles: Vec<ArticleScore>,
    /// All-time counted events per type.
    pub counts: Counts,
}

/// An article's standing under one profile.
#[derive(Debug, Serialize, ToSchema)]
pub struct ArticleScore {
    /// Profile name.
    pub profile: String,
    /// Decayed score (0 when unranked).
    pub score: f64,
    /// 1-based rank among all articles of its site, null when unranked.
    pub rank_overall: Option<usize>,
    /// 1-based rank in its section, null when unranked or without section.
    pub rank_in_section: Option<usize>,
}

/// All-time counted events.
#[derive(Debug, Serialize, ToSchema)]
pub struct Counts {
    /// Page views.
    pub page_view: u64,
    /// Shares.
    pub share: u64,
    /// Engagement events.
    pub engagement: u64,
}

pub use crate::http::{ErrorBody, ErrorDetail};

/// `/healthz`: the process serves HTTP.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"status": "ok"}))]
#[allow(dead_code)]
pub struct Health {
    /// Always `ok`.
    pub status: String,
}

/// `/readyz`: ready, or not and why.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"status": "not_ready", "reasons": ["rebuilding the memory store: 1200 of 20005 messages read"]}))]
#[allow(dead_code)]
pub struct Readiness {
    /// `ready` or `not_ready`.
    pub status: String,
    /// What is missing, when not ready.
    pub reasons: Option<Vec<String>>,
}

/// One alert: an article taking off in a scope.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(example = json!({"id": "network|default|a-123|2023-09-12T05:00:00Z", "scope": "network", "site": "default", "article_id": "a-123", "title": "Kim Jong Un Arrives in Russia", "url": "https://example.com/news/a-123", "rising": 6.2, "rate_short": 30.1, "rate_long": 4.2, "at": "2023-09-12T05:00:00Z", "text": "Taking off: Kim Jong Un Arrives in Russia (6.2× its usual rate)"}))]
pub struct Alert {
    /// Its id, also the webhooks' `Idempotency-Key`.
    pub id: String,
    /// Where it took off: `network`, or a site's id.
    pub scope: String,
    /// The site that published the article.
    pub site: String,
    /// The article's id on its site.
    pub article_id: String,
    /// Its headline.
    pub title: Option<String>,
    /// Its URL.
    pub url: Option<String>,
    /// Its rising score when the alert was made.
    pub rising: f64,
    /// Weighted events per second, short profile.
    pub rate_short: f64,
    /// Weighted events per second, long profile.
    pub rate_long: f64,
    /// When (RFC 3339).
    pub at: String,
    /// A sentence for a chat channel (Slack's incoming webhooks show it).
    pub text: String,
}
