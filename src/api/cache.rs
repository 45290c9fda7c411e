//! The in-process response cache: identical queries within the TTL get the
//! same response, computed by one request while the others wait for it (no
//! thundering herd on the store).

use std::collections::HashMap;
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use parking_lot::Mutex;
use tokio::sync::OnceCell;

use crate::metrics::Metrics;

/// Most entries kept before expired ones are swept.
const SWEEP_ABOVE: usize = 10_000;

/// A rendered response body with its entity tag.
#[derive(Debug)]
pub struct Cached {
    /// JSON body.
    pub body: Bytes,
    /// Strong entity tag of the body, quoted.
    pub etag: String,
    /// The same, ready to send.
    pub etag_header: axum::http::HeaderValue,
}

impl Cached {
    /// Wraps a body, computing its entity tag.
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

struct Slot {
    created: Instant,
    value: OnceCell<Arc<Cached>>,
}

/// The cache. A TTL of zero disables it.
pub struct Cache {
    ttl: Duration,
    slots: Mutex<HashMap<String, Arc<Slot>>>,
    metrics: Metrics,
}

impl Cache {
    /// A cache whose entries live `ttl`.
    pub fn new(ttl: Duration, metrics: Metrics) -> Cache {
        Cache {
            ttl,
            slots: Mutex::new(HashMap::new()),
            metrics,
        }
    }

    /// The response for `key`: cached, being computed by another request, or
    /// computed now by `compute`. Errors are not cached.
    pub async fn get_or_compute<E, F, Fut>(&self, key: String, compute: F) -> Result<Arc<Cached>, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Cached, E>>,
    {
        if self.ttl.is_zero() {
            self.metrics.cache.with_label_values(&["miss"]).inc();
            return compute().await.map(Arc::new);
        }
        let slot = {
            let mut slots = self.slots.lock();
            let now = Instant::now();
            match slots.get(&key) {
                Some(s) if now.duration_since(s.created) < self.ttl => s.clone(),
                _ => {
                    if slots.len() >= SWEEP_ABOVE {
                        slots.retain(|_, s| now.duration_since(s.created) < self.ttl);
                    }
                    let s = Arc::new(Slot {
                        created: now,
                        value: OnceCell::new(),
                    });
                    slots.insert(key, s.clone());
                    s
                }
            }
        };
        let mut computed = false;
        let value = slot
            .value
            .get_or_try_init(|| {
                computed = true;
                async { compute().await.map(Arc::new) }
            })
            .await?;
        let result = if computed { "miss" } else { "hit" };
        self.metrics.cache.with_label_values(&[result]).inc();
        Ok(value.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn concurrent_identical_requests_compute_once() {
        let cache = Arc::new(Cache::new(Duration::from_secs(60), Metrics::new()));
        let calls = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..50)
            .map(|_| {
                let cache = cache.clone();
                let calls = calls.clone();
                tokio::spawn(async move {
                    cache
                        .get_or_compute("k".into(), || async {
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
        let m = &cache.metrics;
        assert_eq!(m.cache.with_label_values(&["miss"]).get(), 1);
        assert_eq!(m.cache.with_label_values(&["hit"]).get(), 49);
    }

    #[tokio::test]
    async fn entries_expire_and_errors_are_not_cached() {
        let cache = Cache::new(Duration::from_millis(30), Metrics::new());
        let r: Result<_, &str> = cache
            .get_or_compute("k".into(), || async { Err("down") })
            .await;
        assert_eq!(r.unwrap_err(), "down");
        let a = cache
            .get_or_compute("k".into(), || async {
                Ok::<_, ()>(Cached::new(b"1".to_vec()))
            })
            .await
            .unwrap();
        assert_eq!(&a.body[..], b"1");
        let b = cache
            .get_or_compute("k".into(), || async {
                Ok::<_, ()>(Cached::new(b"2".to_vec()))
            })
            .await
            .unwrap();
        assert_eq!(&b.body[..], b"1");
        tokio::time::sleep(Duration::from_millis(40)).await;
        let c = cache
            .get_or_compute("k".into(), || async {
                Ok::<_, ()>(Cached::new(b"3".to_vec()))
            })
            .await
            .unwrap();
        assert_eq!(&c.body[..], b"3");
        assert_ne!(a.etag, c.etag);
    }
}
