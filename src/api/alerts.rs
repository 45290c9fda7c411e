//! Alerts on the API's side (DESIGN §14): every replica follows the alerts
//! recorded by any replica's evaluator ([`crate::alerts::evaluator`]; the
//! store keeps the latest) and pushes the new ones to its
//! `GET /v1/stream/alerts` readers. Nothing here writes.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::ApiState;
use crate::store::RECENT_ALERTS;

/// One recorded alert as the streams send it: its scope and its JSON.
#[derive(Debug)]
pub struct FeedItem {
    /// `network` or a site's id.
    pub scope: String,
    /// The alert's id.
    pub id: String,
    /// The alert, as JSON.
    pub json: String,
}

/// The replica's feed of recorded alerts.
pub type Feed = broadcast::Sender<Arc<FeedItem>>;

/// A feed nobody listens to yet.
pub fn feed() -> Feed {
    broadcast::channel(RECENT_ALERTS).0
}

/// Follows the alerts the store records (by any replica) and publishes
/// the new ones to this replica's streams, once each.
pub async fn follow(state: ApiState, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    let mut seen: VecDeque<String> = VecDeque::new();
    let mut first = true;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        let Ok(recent) = state.store.recent_alerts(RECENT_ALERTS).await else {
            continue;
        };
        // Oldest first; what was recorded before this replica started is
        // not news.
        for json in recent.into_iter().rev() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&json) else {
                continue;
            };
            let id = v["id"].as_str().unwrap_or_default().to_string();
            if seen.contains(&id) {
                continue;
            }
            seen.push_back(id.clone());
            if seen.len() > 2 * RECENT_ALERTS {
                seen.pop_front();
            }
            if !first {
                let scope = v["scope"].as_str().unwrap_or_default().to_string();
                let _ = state
                    .alert_feed
                    .send(Arc::new(FeedItem { scope, id, json }));
            }
        }
        first = false;
    }
}
