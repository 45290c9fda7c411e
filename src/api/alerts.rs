//! Alerts on the API's side (DESIGN §14): every `alerts.interval` the
//! rising list of the network and of each site is read, and each article
//! at or above `alerts.threshold` is recorded once per `alerts.cooldown`
//! across every replica (the store's claim decides which replica); the one
//! that recorded it posts it to the webhooks. Every replica follows the
//! recorded alerts (the store keeps the latest) and pushes them to its
//! `GET /v1/stream/alerts` readers.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::rankings::Scope;
use super::rising::{compute_rising, RisingQuery};
use super::{rfc3339, ApiState};
use crate::alerts::{Alert, Webhooks};
use crate::config::AlertSettings;
use crate::scoring::Group;
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

/// Starts the evaluator and the feed of this replica until `shutdown`.
pub fn spawn(
    state: ApiState,
    settings: AlertSettings,
    webhooks: Webhooks,
    shutdown: CancellationToken,
) {
    let (st, stop) = (state.clone(), shutdown.clone());
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(settings.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Logged once per change, not each interval, while the store is down.
        let mut failing = false;
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => {}
            }
            match evaluate(&st, &settings, &webhooks).await {
                Err(e) if !failing => {
                    failing = true;
                    tracing::warn!(error = %e, "alerts: the rising lists could not be read; trying again each interval");
                }
                Ok(()) if failing => {
                    failing = false;
                    tracing::info!("alerts: the rising lists are read again");
                }
                _ => {}
            }
        }
    });
    tokio::spawn(follow(state, shutdown));
}

/// The scopes alerts are made in: the network and, in a network of
/// several sites, each site.
fn scopes(state: &ApiState) -> Vec<(String, Option<String>)> {
    let mut out = vec![("network".to_string(), None)];
    for site in state.sites.all() {
        if let Some(id) = state.sites.scope(Some(&site.id)) {
            out.push((id.to_string(), Some(id.to_string())));
        }
    }
    out
}

/// One round: every scope's rising list against the threshold.
async fn evaluate(
    state: &ApiState,
    settings: &AlertSettings,
    webhooks: &Webhooks,
) -> Result<(), super::ApiError> {
    let cooldown_ms = settings.cooldown.as_millis() as i64;
    for (name, site) in scopes(state) {
        let query = RisingQuery {
            scope: Scope {
                group: Group::All.of_site(site.as_deref()),
                site: site.clone(),
                section: None,
                tag: None,
            },
            limit: 100,
            offset: 0,
        };
        let list = compute_rising(state, query).await?;
        let at_ms = crate::now_ms();
        for item in list.items.iter().filter(|i| i.rising >= settings.threshold) {
            let a = &item.article.article;
            let key = format!("{name}|{}|{}", a.site, a.article_id);
            let alert = Alert {
                id: blake3::hash(format!("{key}|{at_ms}").as_bytes()).to_hex()[..32].to_string(),
                scope: name.clone(),
                site: a.site.clone(),
                article_id: a.article_id.clone(),
                title: a.title.clone(),
                url: a.url.clone(),
                rising: item.rising,
                rate_short: item.rate_short,
                rate_long: item.rate_long,
                at: rfc3339(at_ms),
                text: text(
                    state,
                    &name,
                    a.title.as_deref(),
                    a.url.as_deref(),
                    item.rate_short,
                    item.rate_long,
                ),
            };
            let json = serde_json::to_string(&alert).expect("an alert serialises");
            if state
                .alert_log
                .record_alert(&key, cooldown_ms, &json)
                .await?
            {
                state.metrics.alerts.inc();
                tracing::info!(scope = %name, article = %a.article_id, rising = item.rising, "alert");
                webhooks.send(&alert);
            }
        }
    }
    Ok(())
}

/// A chat line: where, what, how fast; Slack's control characters escaped.
fn text(
    state: &ApiState,
    scope: &str,
    title: Option<&str>,
    url: Option<&str>,
    now: f64,
    usual: f64,
) -> String {
    let escape = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    let place = match state.sites.get(scope) {
        Some(site) if scope != "network" => site.name.clone(),
        _ => "the network".to_string(),
    };
    let title = escape(title.unwrap_or("An article"));
    let link = url.map(|u| format!(" {}", escape(u))).unwrap_or_default();
    format!(
        "Taking off on {}: \"{title}\": {:.0} weighted events an hour now, {:.0} usually.{link}",
        escape(&place),
        now * 3600.0,
        usual * 3600.0
    )
}

/// Follows the alerts the store records (by any replica) and publishes
/// the new ones to this replica's streams, once each.
async fn follow(state: ApiState, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    let mut seen: VecDeque<String> = VecDeque::new();
    let mut first = true;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        let Ok(recent) = state.alert_log.recent_alerts(RECENT_ALERTS).await else {
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
