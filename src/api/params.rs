//! Query parameters of the API routes, as types: each route's parameters are
//! one struct that rejects unknown names, each value a type that checks its
//! bounds while it is parsed, and the OpenAPI parameters are generated from
//! the same types — so the bounds the document declares are the ones the
//! code enforces.

use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use serde::de::{self, DeserializeOwned, Deserializer, Visitor};
use serde::Deserialize;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::RefOr;
use utoipa::{IntoParams, PartialSchema, ToSchema};

use super::ApiError;
use crate::event::slug;
use crate::store::Cursor;

/// Largest `limit` accepted.
pub const MAX_LIMIT: usize = 100;
/// Largest `offset` accepted.
pub const MAX_OFFSET: usize = 10_000;
/// Longest section or tag name accepted, in characters.
pub const MAX_NAME_CHARS: usize = 200;

/// How many items a list has: 1 to [`MAX_LIMIT`], 10 by default.
pub(super) type Limit = Bounded<1, MAX_LIMIT, 10>;
/// How many articles a page of the News Index has: 20 by default.
pub(super) type IndexLimit = Bounded<1, MAX_LIMIT, 20>;
/// How many items of a list to skip: up to [`MAX_OFFSET`].
pub(super) type Offset = Bounded<0, MAX_OFFSET, 0>;

/// `GET /v1/rankings/{profile}`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct RankingParams {
    /// Only this site's list (its id); absent: the whole network.
    #[param(inline)]
    pub site: Option<Name>,
    /// Only this section (normalised to a slug); with `tag`, the tag's articles in it.
    #[param(inline)]
    pub section: Option<Name>,
    /// Only this tag (normalised to a slug).
    #[param(inline)]
    pub tag: Option<Name>,
    /// How many articles.
    #[serde(default)]
    #[param(inline)]
    pub limit: Limit,
    /// How many to skip.
    #[serde(default)]
    #[param(inline)]
    pub offset: Offset,
    /// Only articles published this recently, e.g. 48h; rounded up to one
    /// of 15m, 30m, 1h, 2h, 3h, 6h, 12h, 1d, 2d, 3d, 7d, 14d, 30d.
    #[param(inline)]
    pub published_within: Option<Within>,
}

/// `GET /v1/stream/rankings/{profile}`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct StreamParams {
    /// Only this site's list (its id); absent: the whole network.
    #[param(inline)]
    pub site: Option<Name>,
    /// Only this section (normalised to a slug); with `tag`, the tag's articles in it.
    #[param(inline)]
    pub section: Option<Name>,
    /// Only this tag (normalised to a slug).
    #[param(inline)]
    pub tag: Option<Name>,
    /// How many articles.
    #[serde(default)]
    #[param(inline)]
    pub limit: Limit,
    /// Only articles published this recently, e.g. 12h; rounded up as in
    /// the rankings route.
    #[param(inline)]
    pub published_within: Option<Within>,
}

/// `GET /v1/rising`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct RisingParams {
    /// Only this site's articles (its id); absent: the whole network.
    #[param(inline)]
    pub site: Option<Name>,
    /// Only this section (normalised to a slug); with `tag`, the tag's articles in it.
    #[param(inline)]
    pub section: Option<Name>,
    /// Only this tag (normalised to a slug).
    #[param(inline)]
    pub tag: Option<Name>,
    /// How many articles.
    #[serde(default)]
    #[param(inline)]
    pub limit: Limit,
    /// How many to skip.
    #[serde(default)]
    #[param(inline)]
    pub offset: Offset,
}

/// `GET /v1/stream/rising`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct RisingStreamParams {
    /// Only this site's articles (its id); absent: the whole network.
    #[param(inline)]
    pub site: Option<Name>,
    /// Only this section (normalised to a slug); with `tag`, the tag's articles in it.
    #[param(inline)]
    pub section: Option<Name>,
    /// Only this tag (normalised to a slug).
    #[param(inline)]
    pub tag: Option<Name>,
    /// How many articles.
    #[serde(default)]
    #[param(inline)]
    pub limit: Limit,
}

/// `GET /v1/stream/alerts`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct AlertParams {
    /// Only alerts of this site (its id); absent: every alert, the
    /// network's and each site's.
    #[param(inline)]
    pub site: Option<Name>,
}

/// `GET /v1/rankings/{profile}/tags`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct TagParams {
    /// Only this site's list (its id); absent: the whole network.
    #[param(inline)]
    pub site: Option<Name>,
    /// How many tags.
    #[serde(default)]
    #[param(inline)]
    pub limit: Limit,
    /// How many to skip.
    #[serde(default)]
    #[param(inline)]
    pub offset: Offset,
}

/// `GET /v1/articles/{id}`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct ArticleParams {
    /// The article's site (its id): required when the network has several.
    #[param(inline)]
    pub site: Option<Name>,
}

/// `GET /v1/index`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct IndexParams {
    /// Only this site's list (its id); absent: the whole network.
    #[param(inline)]
    pub site: Option<Name>,
    /// Only this section (normalised to a slug).
    #[param(inline)]
    pub section: Option<Name>,
    /// How many articles.
    #[serde(default)]
    #[param(inline)]
    pub limit: IndexLimit,
    /// Only articles strictly older than this: a `next_before` cursor, an
    /// RFC 3339 time or epoch milliseconds.
    #[param(inline)]
    pub before: Option<Before>,
}

/// Every parameter a cached route takes, parsed as the routes parse it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AnyParams {
    site: Option<Name>,
    section: Option<Name>,
    tag: Option<Name>,
    limit: Option<Bounded<1, MAX_LIMIT, 10>>,
    offset: Option<Offset>,
    published_within: Option<Within>,
    before: Option<Before>,
}

/// The query `raw` as the response cache keys it: its parameters parsed
/// (names as slugs, `published_within` as its window, a cursor as its
/// parts) and written in one order, each value quoted, so the spellings of
/// one query are one key and no value can pose as another parameter. None
/// when no route accepts it (unknown or repeated names, invalid values).
pub(super) fn canonical_query(raw: &str) -> Option<String> {
    let p: AnyParams = Strict::parse(raw).ok()?;
    fn name(n: &Option<Name>) -> Option<&str> {
        n.as_ref().map(|n| n.0.as_str())
    }
    Some(format!(
        "site={:?}&section={:?}&tag={:?}&limit={:?}&offset={:?}&within={:?}&before={:?}",
        name(&p.site),
        name(&p.section),
        name(&p.tag),
        p.limit.map(|l| l.0),
        p.offset.map(|o| o.0),
        p.published_within.map(|w| w.0.as_secs()),
        p.before.map(|b| (b.0.published_at_ms, b.0.article_id)),
    ))
}

/// A route that takes no parameters: any is a 400 naming it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NoParams {}

/// A route's query parameters, checked: `Strict(params)`. Any problem is a
/// 400 naming the parameter (`limit must be between 1 and 100`, `unknown
/// field …`). Cached answers are found before any handler runs
/// ([`super::cache::Answer`]), so only a miss parses the query.
pub(super) struct Strict<T>(pub T);

impl<T: DeserializeOwned> Strict<T> {
    /// The parameters of the query string `raw` (without `?`), checked.
    fn parse(raw: &str) -> Result<T, ApiError> {
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(raw.as_bytes()));
        serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            ApiError::InvalidParameter(match path.as_str() {
                "" | "." => format!("invalid query: {}", e.inner()),
                _ => format!("{path} {}", e.inner()),
            })
        })
    }
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Strict<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        Strict::parse(parts.uri.query().unwrap_or_default()).map(Strict)
    }
}

/// Deserialises a query value from its text with `parse`, whose error says
/// what the value must be.
fn from_text<'de, D, T>(
    d: D,
    expecting: &'static str,
    parse: fn(&str) -> Result<T, String>,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
{
    struct Text<T>(&'static str, fn(&str) -> Result<T, String>);
    impl<T> Visitor<'_> for Text<T> {
        type Value = T;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str(self.0)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
            (self.1)(v).map_err(E::custom)
        }
    }
    d.deserialize_str(Text(expecting, parse))
}

/// A whole number in `MIN..=MAX`, `DEFAULT` when absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Bounded<const MIN: usize, const MAX: usize, const DEFAULT: usize>(pub usize);

impl<const MIN: usize, const MAX: usize, const DEFAULT: usize> Default
    for Bounded<MIN, MAX, DEFAULT>
{
    fn default() -> Self {
        Bounded(DEFAULT)
    }
}

impl<'de, const MIN: usize, const MAX: usize, const DEFAULT: usize> Deserialize<'de>
    for Bounded<MIN, MAX, DEFAULT>
{
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_text(d, "a whole number", |v| {
            v.parse::<usize>()
                .ok()
                .filter(|n| (MIN..=MAX).contains(n))
                .map(Bounded)
                .ok_or_else(|| format!("must be between {MIN} and {MAX}"))
        })
    }
}

impl<const MIN: usize, const MAX: usize, const DEFAULT: usize> PartialSchema
    for Bounded<MIN, MAX, DEFAULT>
{
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .minimum(Some(MIN as f64))
            .maximum(Some(MAX as f64))
            .default(Some(DEFAULT.into()))
            .into()
    }
}

impl<const MIN: usize, const MAX: usize, const DEFAULT: usize> ToSchema
    for Bounded<MIN, MAX, DEFAULT>
{
}

/// A section or tag, as its slug (DESIGN §2): 1 to [`MAX_NAME_CHARS`]
/// characters as given. A name with no letter or digit has an empty slug,
/// which no article has: its lists are empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Name(pub String);

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_text(d, "a name", |v| {
            let n = v.chars().count();
            if n == 0 || n > MAX_NAME_CHARS {
                return Err(format!(
                    "must be a name of 1 to {MAX_NAME_CHARS} characters"
                ));
            }
            Ok(Name(slug(v)))
        })
    }
}

impl PartialSchema for Name {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(Some(1))
            .max_length(Some(MAX_NAME_CHARS))
            .examples([serde_json::json!("business")])
            .into()
    }
}

impl ToSchema for Name {}

/// A positive duration: a whole number and a unit, `s`, `m`, `h` or `d`
/// (`48h`, `30m`, `7d`), rounded up to the first of [`WINDOWS`] that holds
/// it (the last for anything longer): every window is one list, so the
/// lists a client can make the service compute and stream are few.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Within(pub Duration);

/// The windows `published_within` is rounded up to, in seconds: 15 and 30
/// minutes, 1, 2, 3, 6 and 12 hours, 1, 2, 3, 7, 14 and 30 days.
pub const WINDOWS: [u64; 13] = [
    900, 1_800, 3_600, 7_200, 10_800, 21_600, 43_200, 86_400, 172_800, 259_200, 604_800, 1_209_600,
    2_592_000,
];

impl Within {
    /// `seconds` rounded up to a window.
    fn rounded(seconds: u64) -> Within {
        let w = WINDOWS
            .iter()
            .copied()
            .find(|w| *w >= seconds)
            .unwrap_or(WINDOWS[WINDOWS.len() - 1]);
        Within(Duration::from_secs(w))
    }
}

/// What [`Within`] accepts, as the document declares it.
const WITHIN_PATTERN: &str = "^[1-9][0-9]{0,8}[smhd]$";

impl<'de> Deserialize<'de> for Within {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_text(d, "a duration", |v| {
            let bad = || "must be a positive duration such as 48h, 30m or 7d".to_string();
            let unit = v.chars().last().ok_or_else(bad)?;
            let digits = &v[..v.len() - unit.len_utf8()];
            let seconds = match unit {
                's' => 1,
                'm' => 60,
                'h' => 3_600,
                'd' => 86_400,
                _ => return Err(bad()),
            };
            let plain = (1..=9).contains(&digits.len())
                && !digits.starts_with('0')
                && digits.bytes().all(|b| b.is_ascii_digit());
            if !plain {
                return Err(bad());
            }
            let n: u64 = digits.parse().map_err(|_| bad())?;
            Ok(Within::rounded(n.saturating_mul(seconds)))
        })
    }
}

impl PartialSchema for Within {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(WITHIN_PATTERN))
            .examples([serde_json::json!("48h")])
            .into()
    }
}

impl ToSchema for Within {}

/// A position in the News Index: a `next_before` cursor, an RFC 3339 time
/// or epoch milliseconds (then only strictly older articles follow).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Before(pub Cursor);

impl<'de> Deserialize<'de> for Before {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_text(d, "a position", |v| {
            parse_before(v).map(Before).ok_or_else(|| {
                "must be a next_before cursor, an RFC 3339 time or epoch milliseconds".to_string()
            })
        })
    }
}

impl PartialSchema for Before {
    fn schema() -> RefOr<Schema> {
        // Epoch milliseconds or a cursor (`<ms>.<article id>`); RFC 3339
        // times are accepted too, but not declared: a pattern for them
        // would also admit impossible dates.
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(BEFORE_PATTERN))
            .examples([serde_json::json!("1796222717718")])
            .into()
    }
}

/// The declared forms of [`Before`].
const BEFORE_PATTERN: &str = "^-?[0-9]{1,15}(\\.[^\\x00-\\x1f\\x7f-\\x9f]+)?$";

impl ToSchema for Before {}

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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse<T: DeserializeOwned>(q: &str) -> Result<T, String> {
        Strict::<T>::parse(q).map_err(|e| e.to_string())
    }

    #[test]
    fn values_are_checked_while_parsed_and_defaults_fill_the_rest() {
        let p: RankingParams = parse("section=World%20News&limit=5").unwrap();
        assert_eq!(p.section, Some(Name("world-news".into())));
        assert_eq!((p.limit.0, p.offset.0, p.tag), (5, 0, None));
        let p: IndexParams = parse("").unwrap();
        assert_eq!(p.limit.0, 20);
        for (q, want) in [
            ("limit=0", "limit must be between 1 and 100"),
            ("limit=ten", "limit must be between 1 and 100"),
            ("offset=10001", "offset must be between 0 and 10000"),
            ("section=", "section must be a name of 1 to 200"),
            ("published_within=0s", "published_within must be a positive"),
            (
                "published_within=1hour",
                "published_within must be a positive",
            ),
            ("limt=5", "unknown field `limt`"),
            ("limit=1&limit=2", "duplicate field `limit`"),
        ] {
            let e = parse::<RankingParams>(q).unwrap_err();
            assert!(e.contains(want), "{q}: {e}");
        }
    }
}
