//! An answer as the cache keeps it ([`Cached`]) and how it is sent to one
//! request ([`Asked`]): as is or gzipped, with `Cache-Control` and its
//! entity tag, or as `304 Not Modified`. Gzipped once, on the first request
//! that accepts it, and sent so to every other: not compressed again for
//! each request.

use std::io::Write as _;
use std::sync::OnceLock;

use axum::body::{Body, Bytes};
use axum::extract::MatchedPath;
use axum::http::{header, request::Parts, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// Bodies this short are sent as they are (as the compression layer does).
const MIN_GZIP_BYTES: usize = 32;

/// A cached answer: its body, its type and its entity tag.
#[derive(Debug)]
pub struct Cached {
    /// The response body.
    pub body: Bytes,
    /// Its `Content-Type`.
    pub content_type: HeaderValue,
    /// Strong entity tag of the body, quoted, as it is sent and compared.
    pub etag: HeaderValue,
    /// The route template that answered it, for the metrics of its hits.
    pub route: Option<MatchedPath>,
    /// The body gzipped, with an entity tag of its own (another
    /// representation): made by the first request that accepts gzip.
    gzipped: OnceLock<(Bytes, HeaderValue)>,
}

impl Cached {
    /// Wraps a body of `content_type` and computes its ETag.
    pub fn new(body: Bytes, content_type: HeaderValue) -> Cached {
        // A content hash, the same in every build and on every replica
        // (std's hasher may change between Rust releases).
        let etag = format!("\"{}\"", &blake3::hash(&body).to_hex()[..16]);
        Cached {
            etag: HeaderValue::from_str(&etag).expect("hex is a valid header"),
            content_type,
            body,
            route: None,
            gzipped: OnceLock::new(),
        }
    }

    /// This answer as `asked`: gzipped when the request accepts gzip (and
    /// the body is worth it), with `Cache-Control`, its `ETag` and `Vary:
    /// Accept-Encoding`; or `304 Not Modified` when the client's
    /// `If-None-Match` already names that representation.
    pub fn respond(&self, asked: &Asked, cache_control: &HeaderValue) -> Response {
        let negotiable = self.body.len() > MIN_GZIP_BYTES;
        let (body, etag, gzip) = if negotiable && asked.gzip {
            let (body, etag) = self.gzipped();
            (body, etag, true)
        } else {
            (&self.body, &self.etag, false)
        };
        let mut response = if holds(asked.if_none_match.as_ref(), etag) {
            StatusCode::NOT_MODIFIED.into_response()
        } else {
            let mut r = Response::new(Body::from(body.clone()));
            let h = r.headers_mut();
            h.insert(header::CONTENT_TYPE, self.content_type.clone());
            if gzip {
                h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            }
            r
        };
        let h = response.headers_mut();
        h.insert(header::CACHE_CONTROL, cache_control.clone());
        h.insert(header::ETAG, etag.clone());
        if negotiable {
            h.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
        }
        response
    }

    /// The gzipped body and its entity tag (the body's, marked `-gzip`).
    fn gzipped(&self) -> &(Bytes, HeaderValue) {
        self.gzipped.get_or_init(|| {
            let mut gz = flate2::write::GzEncoder::new(
                Vec::with_capacity(self.body.len() / 3),
                flate2::Compression::default(),
            );
            gz.write_all(&self.body)
                .expect("writing to a Vec cannot fail");
            let body = gz.finish().expect("writing to a Vec cannot fail");
            let etag = self.etag.to_str().expect("the ETag is ASCII");
            let etag = format!("{}-gzip\"", &etag[..etag.len() - 1]);
            (
                Bytes::from(body),
                HeaderValue::from_str(&etag).expect("hex is a valid header"),
            )
        })
    }
}

/// What a request asks of a cached answer: the representations it holds
/// (`If-None-Match`) and whether it accepts gzip (`Accept-Encoding`).
#[derive(Debug, Default)]
pub struct Asked {
    if_none_match: Option<HeaderValue>,
    gzip: bool,
}

impl Asked {
    /// What the request with `headers` asks.
    pub fn of(headers: &HeaderMap) -> Asked {
        Asked {
            // Several `If-None-Match` lines are one list.
            if_none_match: join(headers.get_all(header::IF_NONE_MATCH)),
            gzip: accepts_gzip(headers),
        }
    }
}

/// The values of a header's lines as one comma-separated list.
fn join(values: axum::http::header::GetAll<'_, HeaderValue>) -> Option<HeaderValue> {
    let mut it = values.iter();
    let first = it.next()?;
    let mut all = first.as_bytes().to_vec();
    for v in it {
        all.extend_from_slice(b", ");
        all.extend_from_slice(v.as_bytes());
    }
    HeaderValue::from_bytes(&all).ok()
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Asked {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Asked::of(&parts.headers))
    }
}

/// Whether a client whose `If-None-Match` is `if_none_match` already holds
/// `etag`, by the weak comparison RFC 9110 §13.1.2 prescribes for it: `W/`
/// is ignored on both sides (caches and compressing proxies send weak
/// tags), any of a list matches, and `*` matches any.
fn holds(if_none_match: Option<&HeaderValue>, etag: &HeaderValue) -> bool {
    let opaque = |tag: &str| tag.trim().trim_start_matches("W/").to_string();
    let ours = opaque(etag.to_str().unwrap_or_default());
    if_none_match
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == "*" || opaque(t) == ours))
}

/// Whether `Accept-Encoding` names gzip (or `x-gzip`) with a quality above
/// zero.
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| {
            let mut parts = coding.split(';').map(str::trim);
            let name = parts.next().unwrap_or_default();
            let refused = parts.any(|p| {
                p.strip_prefix("q=")
                    .is_some_and(|q| q.parse::<f32>().is_ok_and(|q| q <= 0.0))
            });
            (name.eq_ignore_ascii_case("gzip") || name.eq_ignore_ascii_case("x-gzip")) && !refused
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read as _;

    fn asked(pairs: &[(&'static str, &str)]) -> Asked {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(*name, HeaderValue::from_str(value).unwrap());
        }
        Asked::of(&headers)
    }

    #[test]
    fn if_none_match_compares_weakly_in_lists_across_lines_and_with_any() {
        let tag = HeaderValue::from_static("\"0123456789abcdef\"");
        let holds_with = |lines: &[&str]| {
            let pairs: Vec<(&'static str, &str)> =
                lines.iter().map(|l| ("if-none-match", *l)).collect();
            holds(asked(&pairs).if_none_match.as_ref(), &tag)
        };
        assert!(holds_with(&["\"0123456789abcdef\""]));
        assert!(
            holds_with(&["W/\"0123456789abcdef\""]),
            "a weak tag, as CDNs send it"
        );
        assert!(holds_with(&["\"other\", W/\"0123456789abcdef\""]));
        assert!(
            holds_with(&["\"other\"", "\"0123456789abcdef\""]),
            "two lines"
        );
        assert!(holds_with(&["*"]));
        assert!(!holds_with(&["\"other\""]));
        assert!(!holds_with(&["W/\"0123456789abcde\""]));
        assert!(!holds_with(&[]));
    }

    const STABLE_ETAG: &str = "\"64fb9fe8fe6d0db4\"";

    #[test]
    fn the_etag_is_a_content_hash_stable_across_builds() {
        // The value of every build, so that replicas of two releases agree.
        let c = Cached::new(
            Bytes::from_static(b"{\"items\":[]}"),
            HeaderValue::from_static("application/json"),
        );
        assert_eq!(c.etag, STABLE_ETAG);
    }

    #[test]
    fn gzip_is_accepted_unless_its_quality_is_zero() {
        let gzip = |v| asked(&[("accept-encoding", v)]).gzip;
        assert!(gzip("gzip"));
        assert!(gzip("br, GZIP;q=0.5"));
        assert!(gzip("deflate, x-gzip"));
        assert!(!gzip("gzip;q=0"));
        assert!(!gzip("gzip; q=0.000, br"));
        assert!(!gzip("br, deflate"));
        assert!(!asked(&[]).gzip);
    }

    #[tokio::test]
    async fn a_gzipped_answer_is_its_own_representation_and_revalidates() {
        let json = Bytes::from(format!("{{\"items\":[{}]}}", "\"x\",".repeat(200)));
        let cached = Cached::new(json.clone(), HeaderValue::from_static("application/json"));
        let cc = HeaderValue::from_static("public, max-age=1");

        let plain = cached.respond(&asked(&[]), &cc);
        assert_eq!(plain.headers()["vary"], "accept-encoding");
        assert!(plain.headers().get("content-encoding").is_none());

        let gz = cached.respond(&asked(&[("accept-encoding", "gzip, br")]), &cc);
        assert_eq!(gz.headers()["content-encoding"], "gzip");
        assert_eq!(gz.headers()["vary"], "accept-encoding");
        let etag = gz.headers()["etag"].clone();
        assert_ne!(etag, plain.headers()["etag"]);
        let body = axum::body::to_bytes(gz.into_body(), usize::MAX)
            .await
            .unwrap();
        assert!(body.len() < json.len() / 4, "{} bytes gzipped", body.len());
        let mut unzipped = Vec::new();
        flate2::read::GzDecoder::new(&body[..])
            .read_to_end(&mut unzipped)
            .unwrap();
        assert_eq!(unzipped, json);

        let etag = etag.to_str().unwrap();
        let again = asked(&[("accept-encoding", "gzip"), ("if-none-match", etag)]);
        let gz_304 = cached.respond(&again, &cc);
        assert_eq!(gz_304.status(), StatusCode::NOT_MODIFIED);
        let other = asked(&[("if-none-match", etag)]);
        assert_eq!(
            cached.respond(&other, &cc).status(),
            StatusCode::OK,
            "the gzip tag does not name the plain body"
        );

        let short = Cached::new(Bytes::from_static(b"[]"), HeaderValue::from_static("a/b"));
        let r = short.respond(&asked(&[("accept-encoding", "gzip")]), &cc);
        assert!(r.headers().get("content-encoding").is_none());
        assert!(r.headers().get("vary").is_none());
    }
}
