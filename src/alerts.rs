//! Alerts (DESIGN §14): when one is raised ([`evaluator`]), and its
//! delivery to webhooks:
//! a JSON POST with an `Idempotency-Key` and an `X-Popularity-Signature:
//! sha256=<hex>` HMAC of the body under the webhook's secret, retried with
//! backoff a bounded number of times, never to a loopback or private
//! address unless `alerts.allow_private_targets`. Deliveries run on their
//! own tasks: a receiver that never answers holds nothing else up.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;

pub use crate::api::model::Alert;
use crate::config::WebhookSettings;
use crate::metrics::Metrics;

pub mod evaluator;

/// Attempts of one delivery, the first included.
pub const ATTEMPTS: u32 = 4;
/// Wait before the second attempt; doubled before each next one.
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// Longest wait for a receiver's answer.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// Whether `host` (a URL's host: a name or an address, IPv6 in brackets)
/// is loopback, private, link-local or unspecified.
pub fn private_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.eq_ignore_ascii_case("localhost") || host.to_ascii_lowercase().ends_with(".localhost") {
        return true;
    }
    host.parse::<IpAddr>().is_ok_and(private_address)
}

fn private_address(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64 // 100.64/10
        }
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || v6.is_unspecified()
                || (v6.segments()[0] & 0xfe00) == 0xfc00 // unique local
                || (v6.segments()[0] & 0xffc0) == 0xfe80 // link local
                || v6.to_ipv4_mapped().is_some_and(|v4| private_address(IpAddr::V4(v4)))
        }
    }
}

/// `sha256=<hex>` of `body` under `secret`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

/// The configured webhooks and how to reach them.
#[derive(Clone)]
pub struct Webhooks {
    client: reqwest::Client,
    hooks: Arc<[WebhookSettings]>,
    allow_private: bool,
    metrics: Metrics,
}

impl Webhooks {
    /// Delivery to `hooks`.
    pub fn new(hooks: &[WebhookSettings], allow_private: bool, metrics: Metrics) -> Webhooks {
        let client = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("a TLS backend is available");
        Webhooks {
            client,
            hooks: hooks.into(),
            allow_private,
            metrics,
        }
    }

    /// Sends `alert` to every webhook, each on a task of its own.
    pub fn send(&self, alert: &Alert) {
        let body: axum::body::Bytes = serde_json::to_vec(alert)
            .expect("an alert serialises")
            .into();
        for hook in self.hooks.iter() {
            let (me, hook, body, id) = (self.clone(), hook.clone(), body.clone(), alert.id.clone());
            tokio::spawn(async move { me.deliver(&hook, &id, body).await });
        }
    }

    async fn deliver(&self, hook: &WebhookSettings, id: &str, body: axum::body::Bytes) {
        let outcome = |o: &str| self.metrics.alert_deliveries.with_label_values(&[o]).inc();
        if !self.allow_private && self.resolves_private(&hook.url).await {
            tracing::warn!(url = %crate::config::redacted(&hook.url), "alert webhook refused: it resolves to a private address");
            return outcome("refused");
        }
        let signature = signature(&hook.secret.0, &body);
        let mut wait = FIRST_BACKOFF;
        for attempt in 1..=ATTEMPTS {
            let sent = self
                .client
                .post(&hook.url)
                .header("content-type", "application/json")
                .header("idempotency-key", id)
                .header("x-popularity-signature", &signature)
                .body(body.clone())
                .send()
                .await;
            match sent {
                Ok(r) if r.status().is_success() => return outcome("delivered"),
                Ok(r) => {
                    tracing::warn!(status = %r.status(), attempt, "alert webhook answered an error")
                }
                Err(e) => {
                    tracing::warn!(error = %e.without_url(), attempt, "alert webhook unreachable")
                }
            }
            if attempt < ATTEMPTS {
                outcome("retried");
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
        }
        outcome("failed");
    }

    /// Whether the URL's host is, or resolves to, a private address.
    async fn resolves_private(&self, url: &str) -> bool {
        let Ok(url) = reqwest::Url::parse(url) else {
            return true;
        };
        let Some(host) = url.host_str().map(str::to_string) else {
            return true;
        };
        if private_host(&host) {
            return true;
        }
        let port = url.port_or_known_default().unwrap_or(443);
        let found = tokio::net::lookup_host(format!("{host}:{port}")).await;
        // Unresolvable: the attempts will say so.
        found.is_ok_and(|mut addrs| addrs.any(|a| private_address(a.ip())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_hosts_are_known_and_public_ones_are_not() {
        for h in [
            "localhost",
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "[::1]",
            "[fd00::1]",
            "[fe80::1]",
            "[::ffff:10.0.0.1]",
            "api.localhost",
        ] {
            assert!(private_host(h), "{h}");
        }
        for h in ["hooks.slack.com", "8.8.8.8", "[2606:4700::1111]"] {
            assert!(!private_host(h), "{h}");
        }
    }

    #[test]
    fn the_signature_is_the_hmac_sha256_of_the_body() {
        // RFC 4231, test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
