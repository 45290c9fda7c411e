//! An answer as the cache keeps it ([`Cached`]) and how it is sent to one
//! request ([`Asked`]): as is or compressed (brotli, zstd or gzip, as the
//! request's `Accept-Encoding` prefers), with `Cache-Control` and its
//! entity tag, or as `304 Not Modified`. Each coding is made once, on the
//! first request that asks for it, and sent so to every other: not
//! compressed again for each request.

use std::io::Write as _;
use std::sync::OnceLock;

use axum::body::{Body, Bytes};
use axum::extract::MatchedPath;
use axum::http::{header, request::Parts, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// Bodies this short are sent as they are (as the compression layer does).
const MIN_COMPRESSED_BYTES: usize = 32;

/// A content coding the service compresses with (RFC 9110 §8.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    /// Brotli: the smallest JSON, at quality 5 (made once per answer).
    Br,
    /// Zstandard, level 3.
    Zstd,
    /// Gzip, level 6.
    Gzip,
}

impl Coding {
    /// Ours, in the order preferred when a client weighs them equally.
    const ALL: [Coding; 3] = [Coding::Br, Coding::Zstd, Coding::Gzip];

    /// Its name in `Content-Encoding` and in entity tags.
    pub fn name(self) -> &'static str {
        match self {
            Coding::Br => "br",
            Coding::Zstd => "zstd",
            Coding::Gzip => "gzip",
        }
    }

    /// `body` in this coding.
    pub fn encode(self, body: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(body.len() / 3);
        match self {
            Coding::Br => {
                let mut w = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
                w.write_all(body).expect("writing to a Vec cannot fail");
            }
            Coding::Zstd => {
                out = zstd::bulk::compress(body, 3).expect("compressing in memory cannot fail");
            }
            Coding::Gzip => {
                let mut gz = flate2::write::GzEncoder::new(out, flate2::Compression::default());
                gz.write_all(body).expect("writing to a Vec cannot fail");
                out = gz.finish().expect("writing to a Vec cannot fail");
            }
        }
        out
    }

    fn index(self) -> usize {
        self as usize
    }
}

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
    /// The body in each [`Coding`], with an entity tag of its own (another
    /// representation): made by the first request that asks for it.
    encoded: [OnceLock<(Bytes, HeaderValue)>; 3],
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
            encoded: Default::default(),
        }
    }

    /// This answer as `asked`: in the coding the request prefers (when the
    /// body is worth it), with `Cache-Control`, its `ETag` and `Vary:
    /// Accept-Encoding`; or `304 Not Modified` when the client's
    /// `If-None-Match` already names that representation.
    pub fn respond(&self, asked: &Asked, cache_control: &HeaderValue) -> Response {
        let negotiable = self.body.len() > MIN_COMPRESSED_BYTES;
        let coding = asked.coding.filter(|_| negotiable);
        let (body, etag) = match coding {
            Some(c) => {
                let (body, etag) = self.encoded(c);
                (body, etag)
            }
            None => (&self.body, &self.etag),
        };
        let mut response = if holds(asked.if_none_match.as_ref(), etag) {
            StatusCode::NOT_MODIFIED.into_response()
        } else {
            let mut r = Response::new(Body::from(body.clone()));
            let h = r.headers_mut();
            h.insert(header::CONTENT_TYPE, self.content_type.clone());
            if let Some(c) = coding {
                h.insert(header::CONTENT_ENCODING, HeaderValue::from_static(c.name()));
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

    /// The body in `coding` and its entity tag (the body's, marked with
    /// the coding's name: `"…-br"`).
    fn encoded(&self, coding: Coding) -> &(Bytes, HeaderValue) {
        self.encoded[coding.index()].get_or_init(|| {
            let body = coding.encode(&self.body);
            let etag = self.etag.to_str().expect("the ETag is ASCII");
            let etag = format!("{}-{}\"", &etag[..etag.len() - 1], coding.name());
            (
                Bytes::from(body),
                HeaderValue::from_str(&etag).expect("hex is a valid header"),
            )
        })
    }
}

/// What a request asks of a cached answer: the representations it holds
/// (`If-None-Match`) and the coding it prefers (`Accept-Encoding`).
#[derive(Debug, Default)]
pub struct Asked {
    if_none_match: Option<HeaderValue>,
    coding: Option<Coding>,
}

impl Asked {
    /// What the request with `headers` asks.
    pub fn of(headers: &HeaderMap) -> Asked {
        Asked {
            // Several `If-None-Match` lines are one list.
            if_none_match: join(headers.get_all(header::IF_NONE_MATCH)),
            coding: preferred(headers),
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

/// The coding `Accept-Encoding` weighs highest among ours (RFC 9110
/// §12.5.3): a coding's own quality, else that of `*`, else none; a
/// quality of 0 refuses it; ties go to the order of [`Coding::ALL`].
fn preferred(headers: &HeaderMap) -> Option<Coding> {
    let mut named = [None::<f32>; 3];
    let mut any = None::<f32>;
    for coding in headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
    {
        let mut parts = coding.split(';').map(str::trim);
        let name = parts.next().unwrap_or_default();
        let q = parts
            .find_map(|p| p.strip_prefix("q=").or_else(|| p.strip_prefix("Q=")))
            .map_or(Some(1.0), |q| {
                q.trim()
                    .parse::<f32>()
                    .ok()
                    .filter(|q| (0.0..=1.0).contains(q))
            });
        let Some(q) = q else {
            continue; // an unreadable quality: as if not named
        };
        let ours = Coding::ALL.into_iter().find(|c| {
            name.eq_ignore_ascii_case(c.name())
                || (*c == Coding::Gzip && name.eq_ignore_ascii_case("x-gzip"))
        });
        match ours {
            Some(c) => named[c.index()] = Some(q),
            None if name == "*" => any = Some(q),
            None => {}
        }
    }
    let mut best: Option<(Coding, f32)> = None;
    for c in Coding::ALL {
        let q = named[c.index()].or(any).unwrap_or(0.0);
        if q > 0.0 && best.is_none_or(|(_, b)| q > b) {
            best = Some((c, q));
        }
    }
    best.map(|(c, _)| c)
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
    fn the_coding_is_the_one_the_client_weighs_highest() {
        let pick = |v| asked(&[("accept-encoding", v)]).coding;
        use Coding::*;
        assert_eq!(pick("gzip"), Some(Gzip));
        assert_eq!(pick("deflate, x-gzip"), Some(Gzip));
        assert_eq!(
            pick("gzip, deflate, br, zstd"),
            Some(Br),
            "a browser's: ties go to br"
        );
        assert_eq!(pick("br;q=0.5, GZIP"), Some(Gzip), "quality first");
        assert_eq!(pick("zstd, gzip;q=0.9"), Some(Zstd));
        assert_eq!(pick("br;q=0, zstd;q=0.1"), Some(Zstd));
        assert_eq!(pick("gzip;q=0"), None);
        assert_eq!(pick("gzip; q=0.000, deflate"), None);
        assert_eq!(pick("*"), Some(Br), "anything");
        assert_eq!(
            pick("*;q=0.5, br;q=0"),
            Some(Zstd),
            "* stands for the unnamed"
        );
        assert_eq!(pick("gzip;q=abc"), None, "an unreadable quality");
        assert_eq!(pick("identity"), None);
        assert_eq!(asked(&[]).coding, None);
        assert_eq!(
            asked(&[
                ("accept-encoding", "gzip;q=0.5"),
                ("accept-encoding", "zstd")
            ])
            .coding,
            Some(Zstd),
            "two lines are one list"
        );
    }

    #[tokio::test]
    async fn each_coding_decodes_to_the_body_and_has_a_tag_of_its_own() {
        let json = Bytes::from(format!("{{\"items\":[{}]}}", "\"headline\",".repeat(400)));
        let cached = Cached::new(json.clone(), HeaderValue::from_static("application/json"));
        let cc = HeaderValue::from_static("public, max-age=1");
        let mut tags = vec![cached.etag.clone()];
        for (accept, name) in [("br", "br"), ("zstd", "zstd"), ("gzip", "gzip")] {
            let r = cached.respond(&asked(&[("accept-encoding", accept)]), &cc);
            assert_eq!(r.headers()["content-encoding"], name);
            let etag = r.headers()["etag"].clone();
            assert!(
                etag.to_str().unwrap().ends_with(&format!("-{name}\"")),
                "{etag:?}"
            );
            tags.push(etag.clone());
            let body = axum::body::to_bytes(r.into_body(), usize::MAX)
                .await
                .unwrap();
            assert!(
                body.len() < json.len() / 10,
                "{name}: {} of {} bytes",
                body.len(),
                json.len()
            );
            let mut decoded = Vec::new();
            match name {
                "br" => brotli::Decompressor::new(&body[..], 4096)
                    .read_to_end(&mut decoded)
                    .unwrap(),
                "zstd" => zstd::stream::read::Decoder::new(&body[..])
                    .unwrap()
                    .read_to_end(&mut decoded)
                    .unwrap(),
                _ => flate2::read::GzDecoder::new(&body[..])
                    .read_to_end(&mut decoded)
                    .unwrap(),
            };
            assert_eq!(decoded, json, "{name}");
            let again = asked(&[
                ("accept-encoding", accept),
                ("if-none-match", etag.to_str().unwrap()),
            ]);
            assert_eq!(
                cached.respond(&again, &cc).status(),
                StatusCode::NOT_MODIFIED
            );
        }
        tags.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        tags.dedup();
        assert_eq!(tags.len(), 4, "four representations, four tags");
    }

    #[tokio::test]
    async fn a_gzipped_answer_is_its_own_representation_and_revalidates() {
        let json = Bytes::from(format!("{{\"items\":[{}]}}", "\"x\",".repeat(200)));
        let cached = Cached::new(json.clone(), HeaderValue::from_static("application/json"));
        let cc = HeaderValue::from_static("public, max-age=1");

        let plain = cached.respond(&asked(&[]), &cc);
        assert_eq!(plain.headers()["vary"], "accept-encoding");
        assert!(plain.headers().get("content-encoding").is_none());

        let gz = cached.respond(&asked(&[("accept-encoding", "gzip, deflate")]), &cc);
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
