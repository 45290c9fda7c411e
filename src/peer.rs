//! Who is asking: a request's client address, the peer's own or, when the
//! peer is a trusted proxy (`collector.trusted_proxies`), the last address
//! of `X-Forwarded-For` that is not one. The collector's rate limit and the
//! API's bound on streams per client both count by it.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::HeaderMap;
use ipnet::IpNet;

/// The socket address of a request's peer, when the server recorded it
/// (not in tests that call the router without a socket).
pub struct PeerAddr(pub Option<SocketAddr>);

impl<S: Send + Sync> FromRequestParts<S> for PeerAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(PeerAddr(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0),
        ))
    }
}

/// The proxies whose `X-Forwarded-For` is believed.
#[derive(Debug, Clone, Default)]
pub struct Peers {
    trusted: Vec<IpNet>,
}

impl Peers {
    /// From validated CIDRs or addresses.
    pub fn new(trusted_proxies: &[String]) -> Peers {
        Peers {
            trusted: trusted_proxies
                .iter()
                .filter_map(|c| {
                    c.parse::<IpNet>()
                        .or_else(|_| c.parse::<IpAddr>().map(IpNet::from))
                        .ok()
                })
                .collect(),
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_addresses_count_only_from_trusted_proxies() {
        let p = Peers::new(&["10.0.0.0/8".to_string()]);
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "203.0.113.9, 10.1.2.3".parse().unwrap());
        let proxy: SocketAddr = "10.0.0.5:4000".parse().unwrap();
        let stranger: SocketAddr = "198.51.100.7:4000".parse().unwrap();
        assert_eq!(p.address(Some(proxy), &h), "203.0.113.9".parse().ok());
        assert_eq!(p.address(Some(stranger), &h), "198.51.100.7".parse().ok());
        assert_eq!(
            p.address(Some(proxy), &HeaderMap::new()),
            "10.0.0.5".parse().ok()
        );
    }
}
