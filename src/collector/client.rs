//! Who is asking ([`crate::peer`]) and its share of the per-address rate
//! limit.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::time::Duration;

use axum::http::HeaderMap;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::config::CollectorSettings;
use crate::peer::Peers;

/// Where requests come from, and how fast each address may send.
pub struct Clients {
    peers: Peers,
    limiter: DefaultKeyedRateLimiter<IpAddr>,
}

impl Clients {
    /// From validated settings.
    pub fn new(s: &CollectorSettings) -> Clients {
        let rate = NonZeroU32::new(s.requests_per_second_per_ip).expect("validated");
        let burst = NonZeroU32::new(s.burst).expect("validated");
        Clients {
            peers: Peers::new(&s.trusted_proxies),
            limiter: RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst)),
        }
    }

    /// The client of a request from `peer` ([`Peers::address`]).
    pub fn address(&self, peer: Option<SocketAddr>, headers: &HeaderMap) -> Option<IpAddr> {
        self.peers.address(peer, headers)
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
