//! The in-process response cache: identical requests within the TTL get the
//! same answer, computed by one request while the others wait for it (no
//! thundering herd on the store). A hit is answered before routing
//! ([`Hits`], at the edge of the application); what it does not hold is
//! computed and kept in front of the cached routes' handlers ([`Answer`]).

use std::borrow::Cow;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::convert::Infallible;
use std::future::Ready;
use std::task::{Context, Poll};

use axum::extract::{MatchedPath, Request};
use axum::http::{header, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use futures::future::{BoxFuture, Either};
use quick_cache::sync::{EntryAction, EntryResult};
use tower::{Layer, Service};

use crate::http::representation::{Asked, Cached};
use crate::metrics::Metrics;

/// Most answers held at once: distinct queries beyond it push out the least
/// used ones, so arbitrary parameters (a `before=` cursor per request) cannot
/// grow the cache within one TTL. Their bytes are bounded too
/// (`api.cache_max_bytes`).
pub const MAX_ENTRIES: u64 = 10_000;

/// What one answer costs the cache's byte bound: its key, its body and (at
/// most as large each) its brotli, zstd and gzip copies, and the
/// bookkeeping around them; at
/// least a [`MAX_ENTRIES`]th of the bound, so that neither bound is passed.
#[derive(Clone)]
struct Weight {
    least: u64,
}

impl quick_cache::Weighter<String, (Instant, Arc<Cached>)> for Weight {
    fn weight(&self, key: &String, (_, value): &(Instant, Arc<Cached>)) -> u64 {
        let bytes = key.len() + 4 * value.body.len() + 256;
        (bytes as u64).max(self.least)
    }
}

/// Answers the cache's hits before routing: a GET whose path and query
/// the cache holds a fresh answer for is answered from it (with
/// `Cache-Control` and `ETag`, or a `304`), and counted in the request
/// metrics under the route that computed it; everything else goes to
/// `inner`, the router, where [`Answer`] computes and keeps what is missing.
#[derive(Clone)]
pub struct Hits<S> {
    cache: Option<Arc<Cache>>,
    metrics: Arc<Metrics>,
    inner: S,
}

impl<S> Hits<S> {
    /// `inner` behind `cache` (none: every request goes to `inner`).
    pub fn new(inner: S, cache: Option<Arc<Cache>>, metrics: Arc<Metrics>) -> Hits<S> {
        Hits {
            cache,
            metrics,
            inner,
        }
    }
}

impl<S> Service<Request> for Hits<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<Ready<Result<Response, Infallible>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let started = Instant::now();
        let cache = self.cache.as_ref().filter(|_| req.method() == Method::GET);
        let fresh = |c: &'_ Arc<Cache>| c.fresh(req.uri(), started);
        let Some((cache, hit)) = cache.and_then(|c| Some((c, fresh(c)?))) else {
            return Either::Right(self.inner.call(req));
        };
        let response = hit.respond(&Asked::of(req.headers()), &cache.cache_control);
        let route = hit.route.as_ref().map_or("unmatched", MatchedPath::as_str);
        super::observe(
            &self.metrics,
            req.method(),
            route,
            response.status(),
            started,
        );
        Either::Left(std::future::ready(Ok(response)))
    }
}

/// What the cache keeps a request's answer under: its path and its query
/// as parsed (DESIGN §13), so that the spellings of one query (parameters
/// in another order, `published_within=3601s` and `2h`, `section=World`
/// and `world`) share one answer. None: a query no route accepts, which is
/// not cached (its route answers 400).
fn cache_key(uri: &Uri) -> Option<Cow<'_, str>> {
    match uri.query() {
        None | Some("") => Some(Cow::Borrowed(uri.path())),
        Some(q) => {
            let canonical = super::params::canonical_query(q)?;
            Some(Cow::Owned(format!("{}?{canonical}", uri.path())))
        }
    }
}

/// A cache key: a path without a query as the request holds it, or the
/// key of a path and query (see [`cache_key`]) as [`Spellings`] keeps it.
#[derive(Debug, PartialEq)]
enum Key<'u> {
    Path(&'u str),
    Query(Arc<str>),
}

impl std::ops::Deref for Key<'_> {
    type Target = str;

    fn deref(&self) -> &str {
        match self {
            Key::Path(p) => p,
            Key::Query(k) => k,
        }
    }
}

/// The key of each path and query asked lately, as sent: parsing a query
/// into its key (`serde_urlencoded` and a `format!`) was a seventh of a
/// hit's instructions, and a page asks in one spelling thousands of times.
/// What the key of a spelling is never changes, so a remembered one is
/// exact. Bounded in entries and bytes like the answers: spellings longer
/// than [`MAX_SPELLING_BYTES`] are parsed every time.
type Spellings = quick_cache::sync::Cache<Box<str>, Option<Arc<str>>, SpellingWeight>;

/// Longest path and query whose key is remembered, in bytes.
const MAX_SPELLING_BYTES: usize = 512;
/// What the remembered keys may weigh in all, in bytes.
const SPELLINGS_BYTES: u64 = 2 << 20;

#[derive(Clone)]
struct SpellingWeight;

impl quick_cache::Weighter<Box<str>, Option<Arc<str>>> for SpellingWeight {
    fn weight(&self, spelling: &Box<str>, key: &Option<Arc<str>>) -> u64 {
        (spelling.len() + key.as_ref().map_or(0, |k| k.len()) + 64) as u64
    }
}

/// Puts the cache in front of a route's handler: see [`Answer`].
#[derive(Clone)]
pub struct AnswerLayer(pub Arc<Cache>);

impl<S> Layer<S> for AnswerLayer {
    type Service = Answer<S>;

    fn layer(&self, inner: S) -> Answer<S> {
        Answer {
            cache: self.0.clone(),
            inner,
        }
    }
}

/// Answers a GET of a cached route that [`Hits`] did not find: from the
/// handler `inner`, whose `200` is kept for the TTL under the path and
/// query as sent (while concurrent requests for it wait for it, and find
/// it); anything else it answers (a 400, a 404, a 503) is passed on and
/// not kept. Either way the answer carries `Cache-Control` and `ETag`, and
/// is a `304` when the client's `If-None-Match` names it. Other methods go
/// straight to the handler.
#[derive(Clone)]
pub struct Answer<S> {
    cache: Arc<Cache>,
    inner: S,
}

impl<S> Service<Request> for Answer<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        // The handler that became ready above; a clone waits in its place.
        let clone = self.inner.clone();
        let mut handler = std::mem::replace(&mut self.inner, clone);
        if req.method() != Method::GET {
            return Box::pin(handler.call(req));
        }
        Box::pin(miss(self.cache.clone(), handler, req))
    }
}

/// A request the cache had no fresh answer for: computed by `handler`
/// unless a concurrent request for the same key is computing it already.
async fn miss<S>(cache: Arc<Cache>, mut handler: S, req: Request) -> Result<Response, Infallible>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    // The URI's bytes are shared with the request: the key copies nothing
    // unless the answer is computed.
    let uri = req.uri().clone();
    let Some(key) = cache.key(&uri) else {
        return handler.call(req).await;
    };
    let asked = Asked::of(req.headers());
    let route = req.extensions().get::<MatchedPath>().cloned();
    let computed = cache
        .get_or_compute(&key, || async move {
            let Ok(response) = handler.call(req).await;
            if response.status() != StatusCode::OK {
                return Err(response);
            }
            let (parts, body) = response.into_parts();
            let content_type = parts.headers.get(header::CONTENT_TYPE).cloned();
            match axum::body::to_bytes(body, usize::MAX).await {
                Ok(body) => {
                    let content_type =
                        content_type.unwrap_or(HeaderValue::from_static("application/json"));
                    let mut answer = Cached::new(body, content_type);
                    answer.route = route;
                    Ok(answer)
                }
                Err(e) => {
                    tracing::error!(error = %e, "reading an answer to cache it");
                    Err(StatusCode::INTERNAL_SERVER_ERROR.into_response())
                }
            }
        })
        .await;
    Ok(match computed {
        Ok(value) => value.respond(&asked, &cache.cache_control),
        Err(response) => response,
    })
}

/// Answers held, each with the instant it expires.
type Entries = quick_cache::sync::Cache<String, (Instant, Arc<Cached>), Weight>;

/// The in-process response cache: answers live for `api.cache_ttl`, at most
/// [`MAX_ENTRIES`] of them, and concurrent misses of one key compute it once
/// (quick_cache's placeholder: the others wait for it); errors are not
/// cached. A hit is one lookup under a read lock that readers on different
/// cores do not share (its `sharded-lock`): moka, before it, counted every
/// read for its admission policy, which was 7% of a hit's throughput here.
pub struct Cache {
    /// None when the TTL is zero: every request computes.
    entries: Option<Entries>,
    /// The keys of the spellings asked lately.
    spellings: Spellings,
    ttl: Duration,
    /// `Cache-Control` of its answers: `public, max-age=<ttl>`.
    cache_control: HeaderValue,
    // The two series, resolved once: a label lookup per request costs a
    // hash and a lock.
    hits: prometheus::IntCounter,
    misses: prometheus::IntCounter,
}

impl Cache {
    /// A cache whose entries live for `ttl` (zero disables it), holding at
    /// most `max_bytes` of them.
    pub fn new(ttl: Duration, max_bytes: u64, metrics: Metrics) -> Cache {
        let weight = Weight {
            least: max_bytes / MAX_ENTRIES,
        };
        Cache {
            entries: (!ttl.is_zero())
                .then(|| Entries::with_weighter(MAX_ENTRIES as usize, max_bytes, weight)),
            spellings: Spellings::with_weighter(
                MAX_ENTRIES as usize,
                SPELLINGS_BYTES,
                SpellingWeight,
            ),
            ttl,
            cache_control: HeaderValue::from_str(&format!("public, max-age={}", ttl.as_secs()))
                .expect("digits are a valid header"),
            hits: metrics.cache.with_label_values(&["hit"]),
            misses: metrics.cache.with_label_values(&["miss"]),
        }
    }

    /// What the answer to `uri` is kept under (see [`cache_key`]): None for
    /// a query no route accepts. Remembered per spelling.
    fn key<'u>(&self, uri: &'u Uri) -> Option<Key<'u>> {
        let Some(spelling) = uri.path_and_query().filter(|_| uri.query().is_some()) else {
            return Some(Key::Path(uri.path()));
        };
        let spelling = spelling.as_str();
        if spelling.len() > MAX_SPELLING_BYTES {
            return cache_key(uri).map(|k| Key::Query(k.into()));
        }
        if let Some(known) = self.spellings.get(spelling) {
            return known.map(Key::Query);
        }
        let key: Option<Arc<str>> = cache_key(uri).map(|k| k.into());
        self.spellings.insert(spelling.into(), key.clone());
        key.map(Key::Query)
    }

    /// The answer held for `uri`, if it is still fresh at `now`: a hit,
    /// counted.
    pub fn fresh(&self, uri: &Uri, now: Instant) -> Option<Arc<Cached>> {
        let entries = self.entries.as_ref()?;
        let (expires, value) = entries.get(&*self.key(uri)?)?;
        (expires > now).then(|| {
            self.hits.inc();
            value
        })
    }

    /// The cached answer for `key`, or the one `compute` gives (shared with
    /// every concurrent request for the same key; an error is this
    /// request's alone, and the next waiter computes). A hit copies nothing:
    /// the key is copied only when the answer is computed.
    pub async fn get_or_compute<E, F, Fut>(&self, key: &str, compute: F) -> Result<Arc<Cached>, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Cached, E>>,
    {
        let Some(entries) = &self.entries else {
            self.misses.inc();
            return compute().await.map(Arc::new);
        };
        // Requests reach here when the lookup before routing (`Hits`) found
        // no fresh answer: one computes, the others wait for it, and one
        // that finds an answer stored since is a hit.
        let guard = match entries
            .entry_async(key, |_, (expires, value)| {
                if *expires > Instant::now() {
                    EntryAction::Retain(value.clone())
                } else {
                    EntryAction::ReplaceWithGuard
                }
            })
            .await
        {
            EntryResult::Retained(value) => {
                self.hits.inc();
                return Ok(value);
            }
            EntryResult::Vacant(guard) | EntryResult::Replaced(guard, _) => guard,
            EntryResult::Removed(..) | EntryResult::Timeout => {
                unreachable!("the callback never removes, and waiting has no timeout")
            }
        };
        self.misses.inc();
        // An error drops the guard: the next waiter computes in its turn.
        let value = Arc::new(compute().await?);
        let _ = guard.insert((Instant::now() + self.ttl, value.clone()));
        Ok(value)
    }

    /// Answers held now (expired ones until they are pushed out or replaced).
    pub fn entries(&self) -> u64 {
        self.entries.as_ref().map_or(0, |e| e.len() as u64)
    }

    /// What the answers held weigh against `api.cache_max_bytes`.
    pub fn weight(&self) -> u64 {
        self.entries.as_ref().map_or(0, |e| e.weight())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Bytes;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const TEST_BYTES: u64 = 64 << 20;

    fn text(body: &'static [u8]) -> Cached {
        Cached::new(
            Bytes::from_static(body),
            HeaderValue::from_static("text/plain"),
        )
    }

    #[tokio::test]
    async fn concurrent_identical_requests_compute_once() {
        let m = Metrics::new();
        let cache = Arc::new(Cache::new(Duration::from_secs(60), TEST_BYTES, m.clone()));
        let calls = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..50)
            .map(|_| {
                let cache = cache.clone();
                let calls = calls.clone();
                tokio::spawn(async move {
                    cache
                        .get_or_compute("k", || async {
                            calls.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            Ok::<_, ()>(text(b"body"))
                        })
                        .await
                        .unwrap()
                })
            })
            .collect();
        for t in tasks {
            assert_eq!(&t.await.unwrap().body[..], b"body");
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(m.cache.with_label_values(&["miss"]).get(), 1);
        assert_eq!(m.cache.with_label_values(&["hit"]).get(), 49);
    }

    #[tokio::test]
    async fn a_failed_computation_passes_the_turn_to_one_waiter() {
        let cache = Arc::new(Cache::new(
            Duration::from_secs(60),
            TEST_BYTES,
            Metrics::new(),
        ));
        let calls = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let (cache, calls) = (cache.clone(), calls.clone());
                tokio::spawn(async move {
                    cache
                        .get_or_compute("k", || async {
                            let n = calls.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(30)).await;
                            match n {
                                0 => Err("down"),
                                _ => Ok(text(b"up")),
                            }
                        })
                        .await
                })
            })
            .collect();
        let mut errors = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(v) => assert_eq!(&v.body[..], b"up"),
                Err(e) => {
                    assert_eq!(e, "down");
                    errors += 1;
                }
            }
        }
        assert_eq!((errors, calls.load(Ordering::SeqCst)), (1, 2));
    }

    #[tokio::test]
    async fn entries_expire_and_errors_are_not_cached() {
        let cache = Cache::new(Duration::from_millis(30), TEST_BYTES, Metrics::new());
        let r: Result<_, &str> = cache.get_or_compute("k", || async { Err("down") }).await;
        assert_eq!(r.unwrap_err(), "down");
        let a = cache
            .get_or_compute("k", || async { Ok::<_, ()>(text(b"1")) })
            .await
            .unwrap();
        assert_eq!(&a.body[..], b"1");
        let b = cache
            .get_or_compute("k", || async { Ok::<_, ()>(text(b"2")) })
            .await
            .unwrap();
        assert_eq!(&b.body[..], b"1");
        tokio::time::sleep(Duration::from_millis(40)).await;
        let c = cache
            .get_or_compute("k", || async { Ok::<_, ()>(text(b"3")) })
            .await
            .unwrap();
        assert_eq!(&c.body[..], b"3");
        assert_ne!(a.etag, c.etag);
    }

    #[tokio::test]
    async fn distinct_queries_beyond_the_bound_do_not_grow_the_cache() {
        let cache = Cache::new(Duration::from_secs(600), TEST_BYTES, Metrics::new());
        for i in 0..(MAX_ENTRIES * 2) {
            cache
                .get_or_compute(&format!("before={i}"), || async {
                    Ok::<_, ()>(text(b"[]"))
                })
                .await
                .unwrap();
        }
        let held = cache.entries();
        assert!(held <= MAX_ENTRIES, "{held} answers held");
    }

    #[tokio::test]
    async fn large_answers_are_held_within_the_byte_bound() {
        let max = 4 << 20;
        let cache = Cache::new(Duration::from_secs(600), max, Metrics::new());
        static BODY: [u8; 100_000] = [b'x'; 100_000];
        for i in 0..200 {
            cache
                .get_or_compute(&format!("k{i}"), || async { Ok::<_, ()>(text(&BODY)) })
                .await
                .unwrap();
        }
        let (held, weight) = (cache.entries(), cache.weight());
        assert!(weight <= max, "{weight} bytes held, bound {max}");
        // Each weighs its body and three compressed copies: 400 kB.
        assert!((5..=10).contains(&held), "{held} answers of 400 kB held");
    }

    #[test]
    fn a_remembered_spelling_gives_the_key_its_query_parses_to() {
        let cache = Cache::new(Duration::from_secs(60), TEST_BYTES, Metrics::new());
        let long = format!("/v1/index?before=1.{}", "x".repeat(MAX_SPELLING_BYTES));
        let asked = [
            "/v1/rankings/trending?section=World&published_within=3601s&limit=5",
            "/v1/rankings/trending?limit=5&published_within=2h&section=world",
            "/v1/rankings/trending?limit=0",
            "/v1/rankings/trending?junk=1",
            "/v1/index?before=1.x%26limit%3D5",
            "/v1/index?",
            "/v1/index",
            &long,
        ];
        // Asked twice: the second answer is the remembered one.
        for _ in 0..2 {
            for spelling in asked {
                let uri = spelling.parse::<Uri>().unwrap();
                let parsed = cache_key(&uri).map(|k| k.into_owned());
                let key = cache.key(&uri).map(|k| k.to_string());
                assert_eq!(key, parsed, "{spelling}");
            }
        }
        // Every spelling with a query is remembered, refused ones too
        // (as None), but not the one past the bound.
        assert_eq!(cache.spellings.len(), 6);
        assert_eq!(
            cache.spellings.get("/v1/rankings/trending?junk=1"),
            Some(None)
        );
        assert_eq!(cache.spellings.get(long.as_str()), None);
    }

    #[test]
    fn spellings_beyond_the_bound_do_not_grow_what_is_remembered() {
        let cache = Cache::new(Duration::from_secs(60), TEST_BYTES, Metrics::new());
        let pad = "x".repeat(MAX_SPELLING_BYTES - 40);
        for i in 0..(MAX_ENTRIES * 2) {
            let spelling = format!("/v1/index?before={i}.{pad}");
            let uri = spelling.parse::<Uri>().unwrap();
            assert!(cache.key(&uri).is_some());
        }
        let (held, weight) = (cache.spellings.len() as u64, cache.spellings.weight());
        assert!(held <= MAX_ENTRIES, "{held} spellings held");
        assert!(weight <= SPELLINGS_BYTES, "{weight} bytes held");
        assert!(held > 100, "{held} spellings held: the bound is not all");
    }

    #[test]
    fn spellings_of_one_query_share_a_key_and_unaccepted_queries_have_none() {
        let key = |q: &str| cache_key(&q.parse::<Uri>().unwrap()).map(|k| k.into_owned());
        let one = key("/v1/rankings/trending?section=World&published_within=3601s&limit=5");
        assert!(one.is_some());
        for other in [
            "/v1/rankings/trending?limit=5&published_within=2h&section=world",
            "/v1/rankings/trending?section=WORLD&limit=5&published_within=7200s",
        ] {
            assert_eq!(key(other), one, "{other}");
        }
        assert_ne!(
            key("/v1/rankings/trending?limit=6&section=world&published_within=2h"),
            one
        );
        for refused in [
            "/v1/rankings/trending?junk=1",
            "/v1/rankings/trending?limit=0",
            "/v1/rankings/trending?limit=1&limit=2",
        ] {
            assert_eq!(key(refused), None, "{refused}");
        }
        // A cursor's id cannot pose as other parameters.
        assert_ne!(
            key("/v1/index?before=1.x%26limit%3D5"),
            key("/v1/index?before=1.x&limit=5")
        );
        assert_eq!(key("/v1/index").as_deref(), Some("/v1/index"));
    }
}
