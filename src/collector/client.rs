//! Who is asking: the client's address (from `X-Forwarded-For` only behind
//! a trusted proxy) and its share of the per-address rate limit.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::time::Duration;

use axum::http::HeaderMap;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use ipnet::IpNet;

use crate::config::CollectorSettings;

/// Where requests come from, and how fast each address may send.
pub struct Clients {
    trusted: Vec<IpNet>,
    limiter: DefaultKeyedRateLimiter<IpAddr>,
}

impl Clients {
    /// From validated settings.
    pub fn new(s: &CollectorSettings) -> Clients {
        let trusted = s
            .trusted_proxies
            .iter()
            .filter_map(|c| {
                c.parse::<IpNet>()
                    .or_else(|_| c.parse::<IpAddr>().map(IpNet::from))
                    .ok()
            })
            .collect();
        let rate = NonZeroU32::new(s.requests_per_second_per_ip).expect("validated");
        let burst = NonZeroU32::new(s.burst).expect("validated");
        Clients {
            trusted,
            limiter: RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst)),
        }
    }

    /// The client of a request from `peer`: the peer itself, or, when the
    /// peer is a trusted proxy, the last address of `X-Forwarded-For` that
    /// is not a trusted proxy.
    pub fn address(&self, peer: Option<SocketAddr>, headers: &HeaderMap) -> Option<IpAddr> {
        let peer = peer?.ip();
        if !self.is_trusted(peer) {
            return Some(peer);
        }
        let forwarded = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|a| a.trim().parse::<IpAddr>().ok())
            .collect::<Vec<_>>();
        Some(
            forwarded
                .into_iter()
                .rev()
                .find(|a| !self.is_trusted(*a))
                .unwrap_or(peer),
        )
    }

    fn is_trusted(&self, a: IpAddr) -> bool {
        self.trusted.iter().any(|n| n.contains(&a))
    }

    /// `Err(wait)` when `client` is over its rate.
    pub fn admit(&self, client: IpAddr) -> Result<(), Duration> {
        self.limiter
            .check_key(&client)
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }

    /// Forgets addresses that are back to a full burst, so that the table
    /// holds only recent clients.
    pub fn forget_idle(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clients(trusted: &[&str], rate: u32, burst: u32) -> Clients {
        let mut s = crate::config::Settings::defaults().collector;
        s.trusted_proxies = trusted.iter().map(|t| t.to_string()).collect();
        s.requests_per_second_per_ip = rate;
        s.burst = burst;
        Clients::new(&s)
    }

    #[test]
    fn forwarded_addresses_count_only_from_trusted_proxies() {
        let c = clients(&["10.0.0.0/8"], 1, 1);
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "203.0.113.9, 10.1.2.3".parse().unwrap());
        let proxy: SocketAddr = "10.0.0.5:4000".parse().unwrap();
        let stranger: SocketAddr = "198.51.100.7:4000".parse().unwrap();
        assert_eq!(c.address(Some(proxy), &h), "203.0.113.9".parse().ok());
        assert_eq!(c.address(Some(stranger), &h), "198.51.100.7".parse().ok());
        assert_eq!(
            c.address(Some(proxy), &HeaderMap::new()),
            "10.0.0.5".parse().ok()
        );
    }

    #[test]
    fn each_address_has_its_own_burst() {
        let c = clients(&[], 1, 3);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..3 {
            assert!(c.admit(a).is_ok());
        }
        let wait = c.admit(a).unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        assert!(c.admit(b).is_ok());
    }
}
