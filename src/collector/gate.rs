//! Which pages may send a site's events, and how many (DESIGN §12): each
//! event's site must own the page that sent the request (its `Origin`, else
//! its `Referer`'s origin, or this service's own pages), and have room in
//! its quota of events per second, shared by all its readers.

use std::num::NonZeroU32;
use std::time::Duration;

use axum::http::{header, HeaderMap};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use super::events::Batch;
use crate::site::Sites;

/// Why a request's events are refused at the gate.
#[derive(Debug, PartialEq)]
pub enum Refusal {
    /// The page is not one of the site's: the message names both.
    Origin(String),
    /// The site's quota is spent: its id, and how long until there is room.
    Quota(String, Duration),
}

/// The sites' origins and quotas.
pub struct Gate {
    sites: Sites,
    /// Per site (in [`Sites::all`]'s order), its quota of events.
    quotas: Vec<DefaultDirectRateLimiter>,
}

impl Gate {
    /// The gate of `sites`, each with a full quota.
    pub fn new(sites: &Sites) -> Gate {
        let quotas = sites
            .all()
            .iter()
            .map(|s| {
                let rate = NonZeroU32::new(s.events_per_second).expect("validated");
                RateLimiter::direct(Quota::per_second(rate))
            })
            .collect();
        Gate {
            sites: sites.clone(),
            quotas,
        }
    }

    /// Admits `batch`, sent with `headers`, or says why not. Every site the
    /// request names must own its page (crawlers' events included, though
    /// they are dropped); its events to produce count in its quota.
    pub fn admit(&self, headers: &HeaderMap, batch: &Batch) -> Result<(), Refusal> {
        let page = page_origin(headers);
        let index = |id: &str| {
            self.sites
                .all()
                .iter()
                .position(|s| s.id == id)
                .expect("events name configured sites")
        };
        for id in &batch.sites {
            let site = &self.sites.all()[index(id)];
            let allowed = site.origins.iter().any(|o| o == "*")
                || page.as_deref().is_some_and(|p| {
                    site.origins.iter().any(|o| o.eq_ignore_ascii_case(p))
                        || same_origin(p, headers)
                });
            if !allowed {
                return Err(Refusal::Origin(match &page {
                    Some(p) => format!("{p} is not an origin of site {:?}", site.id),
                    None => format!(
                        "the request names no page (Origin or Referer) of site {:?}",
                        site.id
                    ),
                }));
            }
        }
        let mut per_site = vec![0u32; self.sites.all().len()];
        for e in &batch.events {
            per_site[index(&e.site)] += 1;
        }
        for (i, n) in per_site.iter().enumerate().filter(|(_, n)| **n > 0) {
            let site = &self.sites.all()[i];
            let n = NonZeroU32::new(*n).expect("filtered");
            match self.quotas[i].check_n(n) {
                Ok(Ok(())) => {}
                Ok(Err(not_until)) => {
                    let wait = not_until.wait_time_from(DefaultClock::default().now());
                    return Err(Refusal::Quota(site.id.clone(), wait));
                }
                // More events in one request than a second's quota.
                Err(_) => return Err(Refusal::Quota(site.id.clone(), Duration::from_secs(1))),
            }
        }
        Ok(())
    }
}

/// The origin (`scheme://host[:port]`) of the page that sent a request:
/// its `Origin`, else its `Referer`'s.
fn page_origin(headers: &HeaderMap) -> Option<String> {
    if let Some(o) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        // A sandboxed frame or a privacy redirect sends `null`: no page.
        return (o != "null").then(|| o.to_ascii_lowercase());
    }
    let referer = headers
        .get(header::REFERER)
        .and_then(|v| v.to_str().ok())?
        .parse::<axum::http::Uri>()
        .ok()?;
    let scheme = referer.scheme_str()?;
    let authority = referer.authority()?;
    Some(format!("{scheme}://{}", authority.as_str().rsplit('@').next()?).to_ascii_lowercase())
}

/// True when `origin` is this service's own (the request's `Host`): a page
/// it served itself (the demo's article pages), which names its site.
fn same_origin(origin: &str, headers: &HeaderMap) -> bool {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let authority = origin.split_once("://").map_or("", |(_, a)| a);
    !host.is_empty() && authority == host
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collector::events::Prepared;

    fn batch(sites: &[&str]) -> Batch {
        let mut named: Vec<String> = sites.iter().map(|s| s.to_string()).collect();
        named.dedup();
        Batch {
            events: sites
                .iter()
                .map(|s| Prepared {
                    site: s.to_string(),
                    article_id: "a".into(),
                    payload: Vec::new(),
                })
                .collect(),
            bots: 0,
            sites: named,
        }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    fn gate(quota: u32) -> Gate {
        let mut s = crate::config::Settings::defaults();
        s.collector.events_per_second_per_site = quota;
        for id in ["a", "b"] {
            s.sites.push(crate::config::SiteSettings {
                id: id.into(),
                name: id.into(),
                origins: vec![format!("https://{id}.example")],
                events_per_second: None,
            });
        }
        Gate::new(&Sites::from_settings(&s))
    }

    #[test]
    fn a_site_admits_its_own_pages_by_origin_or_referer_and_this_services_own() {
        let g = gate(100);
        let b = batch(&["a"]);
        assert_eq!(
            g.admit(&headers(&[("origin", "https://A.example")]), &b),
            Ok(())
        );
        assert_eq!(
            g.admit(&headers(&[("referer", "https://u:p@a.example/x?y")]), &b),
            Ok(())
        );
        let own = headers(&[
            ("origin", "http://127.0.0.1:8080"),
            ("host", "127.0.0.1:8080"),
        ]);
        assert_eq!(g.admit(&own, &b), Ok(()));
        for h in [
            headers(&[("origin", "https://b.example")]),
            headers(&[("origin", "null"), ("referer", "https://a.example/")]),
            headers(&[("referer", "https://a.example.evil/")]),
            headers(&[]),
        ] {
            assert!(matches!(g.admit(&h, &b), Err(Refusal::Origin(_))), "{h:?}");
        }
        // A request with events of two sites needs a page of both.
        let both = batch(&["a", "b"]);
        let refused = g.admit(&headers(&[("origin", "https://a.example")]), &both);
        assert_eq!(
            refused,
            Err(Refusal::Origin(
                "https://a.example is not an origin of site \"b\"".into()
            ))
        );
    }

    #[test]
    fn a_crawlers_events_are_refused_from_another_sites_page_too() {
        let g = gate(100);
        let crawler = Batch {
            events: Vec::new(),
            bots: 1,
            sites: vec!["a".into()],
        };
        let refused = g.admit(&headers(&[("origin", "https://evil.example")]), &crawler);
        assert!(matches!(refused, Err(Refusal::Origin(_))), "{refused:?}");
    }

    #[test]
    fn a_sites_quota_is_shared_by_its_readers_and_not_by_other_sites() {
        let g = gate(10);
        let a = headers(&[("origin", "https://a.example")]);
        assert_eq!(g.admit(&a, &batch(&["a"; 10])), Ok(()));
        assert!(matches!(g.admit(&a, &batch(&["a"])), Err(Refusal::Quota(s, _)) if s == "a"));
        let b = headers(&[("origin", "https://b.example")]);
        assert_eq!(g.admit(&b, &batch(&["b"; 10])), Ok(()));
        // More than a second's quota at once never fits.
        assert!(matches!(
            g.admit(&b, &batch(&["b"; 11])),
            Err(Refusal::Quota(..))
        ));
    }
}
