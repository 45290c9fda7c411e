//! When an alert is raised (DESIGN §14): every `alerts.interval` the
//! rising list of the network and of each site is read, and each article
//! at or above `alerts.threshold` is recorded once per `alerts.cooldown`
//! across every replica (the store's claim, [`AlertLog`], decides which
//! replica); the one that recorded it posts it to the webhooks. The API's
//! streams follow what is recorded ([`crate::api::alerts`]).

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::{Alert, Webhooks};
use crate::api::rising::rising_of;
use crate::api::{rfc3339, ApiError, ApiState};
use crate::config::AlertSettings;
use crate::store::AlertLog;

/// Starts the evaluator of this replica until `shutdown`: it reads lists
/// through `state` and claims alerts in `log`.
pub fn spawn(
    state: ApiState,
    log: Arc<dyn AlertLog>,
    settings: AlertSettings,
    webhooks: Webhooks,
    shutdown: CancellationToken,
) {
    let (st, stop) = (state, shutdown);
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
            match evaluate(&st, log.as_ref(), &settings, &webhooks).await {
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
    log: &dyn AlertLog,
    settings: &AlertSettings,
    webhooks: &Webhooks,
) -> Result<(), ApiError> {
    let cooldown_ms = settings.cooldown.as_millis() as i64;
    for (name, site) in scopes(state) {
        let list = rising_of(state, site.as_deref(), 100).await?;
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
            if log.record_alert(&key, cooldown_ms, &json).await? {
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
