//! The in-process response cache: identical queries within the TTL get the
//! same response, computed by one request while the others wait for it (no
//! thundering herd on the store).

use std::future::Future;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;

use crate::metrics::Metrics;

/// Most answers held at once: distinct queries beyond it push out the least
/// used ones, so arbitrary parameters (a `before=` cursor per request) cannot
/// grow the cache within one TTL.
pub const MAX_ENTRIES: u64 = 10_000;

/// A cached answer: the JSON body and its entity tag.
#[derive(Debug)]
pub struct Cached {
    /// The serialised response body.
    pub body: Bytes,
    /// Strong entity tag of the body, quoted.
    pub etag: String,
    /// The same, ready to send as a header.
    pub etag_header: axum::http::HeaderValue,
}

impl Cached {
    /// Wraps a serialised body and computes its ETag.
    pub fn new(body: Vec<u8>) -> Cached {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        body.hash(&mut h);
        let etag = format!("\"{:016x}\"", h.finish());
        Cached {
            etag_header: axum::http::HeaderValue::from_str(&etag).expect("hex is a valid header"),
            etag,
            body: Bytes::from(body),
        }
    }
}

/// The in-process response cache: answers live for `api.cache_ttl`, at most
/// [`MAX_ENTRIES`] of them, and concurrent misses of one key compute it once
/// (moka's single-flight `try_get_with`); errors are not cached.
pub struct Cache {
    /// None when the TTL is zero: every request computes.
    entries: Option<moka::future::Cache<String, Arc<Cached>>>,
    // The two series, resolved once: a label lookup per request costs a
    // hash and a lock.
    hits: prometheus::IntCounter,
    misses: prometheus::IntCounter,
}

impl Cache {
    /// A cache whose entries live for `ttl` (zero disables it).
    pub fn new(ttl: Duration, metrics: Metrics) -> Cache {
        let entries = (!ttl.is_zero()).then(|| {
            moka::future::Cache::builder()
                .max_capacity(MAX_ENTRIES)
                .time_to_live(ttl)
                .build()
        });
        Cache {
            entries,
            hits: metrics.cache.with_label_values(&["hit"]),
            misses: metrics.cache.with_label_values(&["miss"]),
        }
    }

    /// The cached answer for `key`, or the one `compute` gives (shared with
    /// every concurrent request for the same key). A hit copies nothing: the
    /// key is copied only when the answer is computed.
    pub async fn get_or_compute<E, F, Fut>(
        &self,
        key: &str,
        compute: F,
    ) -> Result<Arc<Cached>, Arc<E>>
    where
        E: Send + Sync + 'static,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Cached, E>>,
    {
        let Some(entries) = &self.entries else {
            self.misses.inc();
            return compute().await.map(Arc::new).map_err(Arc::new);
        };
        if let Some(value) = entries.get(key).await {
            self.hits.inc();
            return Ok(value);
        }
        let computed = AtomicBool::new(false);
        let value = entries
            .try_get_with(key.to_owned(), async {
                computed.store(true, Ordering::Relaxed);
                compute().await.map(Arc::new)
            })
            .await;
        if computed.load(Ordering::Relaxed) {
            self.misses.inc();
        } else {
            self.hits.inc();
        }
        value
    }

    /// Answers held now (after pending evictions ran).
    pub async fn entries(&self) -> u64 {
        match &self.entries {
            Some(e) => {
                e.run_pending_tasks().await;
                e.entry_count()
            }
            None => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn concurrent_identical_requests_compute_once() {
        let m = Metrics::new();
        let cache = Arc::new(Cache::new(Duration::from_secs(60), m.clone()));
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
                            Ok::<_, ()>(Cached::new(b"body".to_vec()))
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
    async fn entries_expire_and_errors_are_not_cached() {
        let cache = Cache::new(Duration::from_millis(30), Metrics::new());
        let r: Result<_, Arc<&str>> = cache.get_or_compute("k", || async { Err("down") }).await;
        assert_eq!(*r.unwrap_err(), "down");
        let a = cache
            .get_or_compute("k", || async { Ok::<_, ()>(Cached::new(b"1".to_vec())) })
            .await
            .unwrap();
        assert_eq!(&a.body[..], b"1");
        let b = cache
            .get_or_compute("k", || async { Ok::<_, ()>(Cached::new(b"2".to_vec())) })
            .await
            .unwrap();
        assert_eq!(&b.body[..], b"1");
        tokio::time::sleep(Duration::from_millis(40)).await;
        let c = cache
            .get_or_compute("k", || async { Ok::<_, ()>(Cached::new(b"3".to_vec())) })
            .await
            .unwrap();
        assert_eq!(&c.body[..], b"3");
        assert_ne!(a.etag, c.etag);
    }

    #[tokio::test]
    async fn distinct_queries_beyond_the_bound_do_not_grow_the_cache() {
        let cache = Cache::new(Duration::from_secs(600), Metrics::new());
        for i in 0..(MAX_ENTRIES * 2) {
            cache
                .get_or_compute(&format!("before={i}"), || async {
                    Ok::<_, ()>(Cached::new(b"[]".to_vec()))
                })
                .await
                .unwrap();
        }
        let held = cache.entries().await;
        assert!(held <= MAX_ENTRIES, "{held} answers held");
    }
}
