//! A store not reached yet: the service starts without it (DESIGN §15).
//! [`connect_in_background`] retries the backend with a capped backoff;
//! until it answers, every operation fails as unavailable and readiness
//! names the store; from then on each operation is the backend's.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use super::{
    AlertLog, AlertReads, Applied, ArticleReads, ArticleState, Catalogue, Connection, Cursor,
    Editorial, Exclusion, FilterLog, FilterWrite, Page, ProfileId, RankingReads, RankingWrites,
    SavedFilter, Store, StoreError,
};
use super::{Layout, Unit};
use crate::config::Settings;
use crate::dependency::{Backoff, Dependency};
use crate::event::{ArticleMeta, PerType};
use crate::scoring::{Aggregate, Group};
use std::ops::Range;

/// The store once it is connected.
pub struct Pending {
    durable: bool,
    connected: OnceLock<Arc<dyn Store>>,
    ready: tokio::sync::Notify,
}

impl Pending {
    /// The backend, once connected.
    pub fn get(&self) -> Option<&Arc<dyn Store>> {
        self.connected.get()
    }

    /// Waits until the backend is connected.
    pub async fn connected(&self) -> Arc<dyn Store> {
        loop {
            let notified = self.ready.notified();
            if let Some(s) = self.get() {
                return s.clone();
            }
            notified.await;
        }
    }

    fn inner(&self) -> Result<&Arc<dyn Store>, StoreError> {
        self.get()
            .ok_or_else(|| StoreError::Unavailable("not connected yet".into()))
    }
}

/// A store whose backend is connected by a task that retries until it
/// answers (or `shutdown`), reporting to `dependency`.
pub fn connect_in_background(
    settings: Arc<Settings>,
    dependency: Dependency,
    shutdown: CancellationToken,
) -> Arc<Pending> {
    let pending = Arc::new(Pending {
        durable: settings.store.backend == crate::config::Backend::Redis,
        connected: OnceLock::new(),
        ready: tokio::sync::Notify::new(),
    });
    let p = pending.clone();
    tokio::spawn(async move {
        let mut backoff = Backoff::default();
        loop {
            match super::connect(&settings).await {
                Ok(store) => {
                    let _ = p.connected.set(store);
                    p.ready.notify_waiters();
                    dependency.reached();
                    return;
                }
                Err(e) => dependency.failed(&e.to_string()),
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff.next_wait()) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    });
    pending
}

#[async_trait]
impl Connection for Pending {
    fn durable(&self) -> bool {
        self.durable
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.inner()?.ping().await
    }
}

#[async_trait]
impl RankingWrites for Pending {
    fn layout(&self) -> Layout {
        self.get().map_or(Layout::WHOLE, |s| s.layout())
    }

    async fn apply(&self, batch: &Aggregate) -> Result<Applied, StoreError> {
        self.inner()?.apply(batch).await
    }

    async fn fences(&self, groups: &[Unit]) -> Result<Vec<HashMap<String, i64>>, StoreError> {
        self.inner()?.fences(groups).await
    }
}

#[async_trait]
impl RankingReads for Pending {
    async fn top(
        &self,
        group: &Group,
        profile: ProfileId,
        range: Range<usize>,
        at_ms: i64,
    ) -> Result<Page, StoreError> {
        self.inner()?.top(group, profile, range, at_ms).await
    }

    async fn scores(
        &self,
        group: &Group,
        profile: ProfileId,
        members: &[String],
        at_ms: i64,
    ) -> Result<Vec<Option<f64>>, StoreError> {
        self.inner()?.scores(group, profile, members, at_ms).await
    }

    async fn position(
        &self,
        group: &Group,
        member: &str,
        at_ms: i64,
    ) -> Result<Vec<Option<(f64, usize)>>, StoreError> {
        self.inner()?.position(group, member, at_ms).await
    }

    async fn counts(&self, id: &str) -> Result<PerType<u64>, StoreError> {
        self.inner()?.counts(id).await
    }
}

#[async_trait]
impl FilterLog for Pending {
    async fn load_filters(&self, sources: &[String]) -> Result<Vec<SavedFilter>, StoreError> {
        self.inner()?.load_filters(sources).await
    }

    async fn save_filters(&self, writes: &[FilterWrite]) -> Result<Vec<String>, StoreError> {
        self.inner()?.save_filters(writes).await
    }
}

#[async_trait]
impl Catalogue for Pending {
    async fn publish(&self, articles: &[ArticleMeta]) -> Result<(), StoreError> {
        self.inner()?.publish(articles).await
    }

    async fn unpublish(&self, ids: &[String]) -> Result<(), StoreError> {
        self.inner()?.unpublish(ids).await
    }
}

#[async_trait]
impl ArticleReads for Pending {
    async fn articles(&self, ids: &[String]) -> Result<Vec<ArticleState>, StoreError> {
        self.inner()?.articles(ids).await
    }

    async fn index(
        &self,
        site: Option<&str>,
        section: Option<&str>,
        before: Option<&Cursor>,
        limit: usize,
    ) -> Result<Vec<Cursor>, StoreError> {
        self.inner()?.index(site, section, before, limit).await
    }

    async fn exclusions(&self) -> Result<Vec<(String, Exclusion)>, StoreError> {
        self.inner()?.exclusions().await
    }

    async fn names(&self, keys: &[String]) -> Result<Vec<Option<String>>, StoreError> {
        self.inner()?.names(keys).await
    }
}

#[async_trait]
impl Editorial for Pending {
    async fn set_exclusion(&self, key: &str, by: Option<&Exclusion>) -> Result<(), StoreError> {
        self.inner()?.set_exclusion(key, by).await
    }
}

#[async_trait]
impl AlertLog for Pending {
    async fn record_alert(
        &self,
        key: &str,
        cooldown_ms: i64,
        alert: &str,
    ) -> Result<bool, StoreError> {
        self.inner()?.record_alert(key, cooldown_ms, alert).await
    }
}

#[async_trait]
impl AlertReads for Pending {
    async fn recent_alerts(&self, limit: usize) -> Result<Vec<String>, StoreError> {
        self.inner()?.recent_alerts(limit).await
    }
}
