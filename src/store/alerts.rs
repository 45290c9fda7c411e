//! Recorded alerts (DESIGN §14): a claim per alert shared by every
//! replica ([`AlertLog`], the evaluator's), and the most recent ones for
//! the replicas' alert streams ([`AlertReads`], the API's).

use async_trait::async_trait;

use super::StoreError;

/// Most recent alerts kept for the replicas' alert streams.
pub const RECENT_ALERTS: usize = 100;

/// Where alerts are claimed and kept.
#[async_trait]
pub trait AlertLog: Send + Sync + 'static {
    /// Records an alert unless one was recorded under `key` within the
    /// last `cooldown_ms`: true when this call recorded it (the claim is
    /// shared by every replica), then `alert` joins the most recent ones.
    async fn record_alert(
        &self,
        key: &str,
        cooldown_ms: i64,
        alert: &str,
    ) -> Result<bool, StoreError>;
}

/// Where the recorded alerts are read.
#[async_trait]
pub trait AlertReads: Send + Sync + 'static {
    /// The most recent alerts recorded, newest first, at most `limit`.
    async fn recent_alerts(&self, limit: usize) -> Result<Vec<String>, StoreError>;
}
