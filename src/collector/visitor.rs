//! The daily visitor of an event that names none (DESIGN §10): a keyed hash
//! of (UTC day, site host, client address, user agent). The same reader is
//! the same visitor within a day, and cannot be followed across days or
//! sites; the address itself is never kept.

use std::net::IpAddr;

/// Derives visitor ids with one secret key.
pub struct Visitors {
    key: [u8; 32],
}

impl Visitors {
    /// With the key derived from `secret`, or a random one.
    pub fn new(secret: Option<&str>) -> Visitors {
        let key = match secret {
            Some(s) => blake3::derive_key("popularity 2026 collector visitor", s.as_bytes()),
            None => rand::random(),
        };
        Visitors { key }
    }

    /// The visitor id for a reader of `host` on the UTC day of `now_ms`.
    pub fn id(&self, now_ms: i64, host: &str, client: IpAddr, user_agent: &str) -> String {
        let day = now_ms.div_euclid(86_400_000);
        let mut h = blake3::Hasher::new_keyed(&self.key);
        for part in [
            day.to_string().as_bytes(),
            host.to_ascii_lowercase().as_bytes(),
            client.to_string().as_bytes(),
            user_agent.as_bytes(),
        ] {
            // Length-prefixed, so that no two tuples hash the same input.
            h.update(&(part.len() as u64).to_le_bytes());
            h.update(part);
        }
        let digest = h.finalize();
        let mut id = String::with_capacity(34);
        id.push_str("h-");
        for b in &digest.as_bytes()[..16] {
            id.push_str(&format!("{b:02x}"));
        }
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400_000;

    #[test]
    fn a_reader_is_one_visitor_within_a_day_and_another_the_next() {
        let v = Visitors::new(Some("a secret of sixteen+"));
        let ip: IpAddr = "203.0.113.9".parse().unwrap();
        let noon = 20_000 * DAY + DAY / 2;
        let a = v.id(noon, "news.example.com", ip, "Firefox");
        assert_eq!(a, v.id(noon + 3_600_000, "NEWS.example.com", ip, "Firefox"));
        assert_ne!(a, v.id(noon + DAY, "news.example.com", ip, "Firefox"));
        assert_ne!(a, v.id(noon, "other.example.com", ip, "Firefox"));
        assert_ne!(a, v.id(noon, "news.example.com", ip, "Chrome"));
        assert_ne!(
            a,
            v.id(
                noon,
                "news.example.com",
                "203.0.113.10".parse().unwrap(),
                "Firefox"
            )
        );
        assert!(!a.contains("203"), "{a}");
        assert_eq!(a.len(), 34);
        // Replicas sharing the secret agree; another secret does not.
        assert_eq!(
            a,
            Visitors::new(Some("a secret of sixteen+")).id(noon, "news.example.com", ip, "Firefox")
        );
        assert_ne!(
            a,
            Visitors::new(Some("another secret, 16+")).id(noon, "news.example.com", ip, "Firefox")
        );
    }
}
