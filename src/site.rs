//! Sites: the news sites of one network (DESIGN §11).
//!
//! Every event belongs to one site, and an article is identified by
//! (site, article id). Inside the service an article is one string, its
//! *key*: the article id when the network is the single implicit site
//! `default` (so deployments without sites keep their keys), else
//! `<site>:<article id>` (site ids are slugs, so the first `:` ends
//! them). [`Sites::key`] and [`Sites::split`] are the only places that
//! know this form.

use std::sync::Arc;

use crate::config::Settings;

/// The id of the one site of a deployment that configures none.
pub const DEFAULT_SITE: &str = "default";

/// One site of the network.
#[derive(Debug, Clone, PartialEq)]
pub struct Site {
    /// Its id in events, keys and URLs.
    pub id: String,
    /// Its display name.
    pub name: String,
    /// Browser origins whose pages belong to it; `*` allows any.
    pub origins: Vec<String>,
    /// Collector events per second for the whole site.
    pub events_per_second: u32,
}

/// The network's sites, shared by every part of the service.
#[derive(Debug, Clone, PartialEq)]
pub struct Sites {
    list: Arc<[Site]>,
    /// Sites were configured: keys carry their site, and lists exist per
    /// site besides the network's.
    network: bool,
}

/// Why an event's site is not acceptable.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum UnknownSite {
    /// The event names none and the network has several.
    #[error("site is required: this network has several sites")]
    Missing,
    /// The event names a site that is not configured.
    #[error("{0:?} is not a site of this network")]
    NotConfigured(String),
}

impl Sites {
    /// The sites `settings` configure, or the one implicit site.
    pub fn from_settings(settings: &Settings) -> Sites {
        let per_site = settings.collector.events_per_second_per_site;
        if settings.sites.is_empty() {
            return Sites::single(settings.api.cors_allowed_origins.clone(), per_site);
        }
        Sites {
            list: settings
                .sites
                .iter()
                .map(|s| Site {
                    id: s.id.clone(),
                    name: s.name.clone(),
                    origins: s.origins.clone(),
                    events_per_second: s.events_per_second.unwrap_or(per_site),
                })
                .collect(),
            network: true,
        }
    }

    /// The one implicit site, `default`, with these origins.
    pub fn single(origins: Vec<String>, events_per_second: u32) -> Sites {
        Sites {
            list: Arc::from([Site {
                id: DEFAULT_SITE.to_string(),
                name: DEFAULT_SITE.to_string(),
                origins,
                events_per_second,
            }]),
            network: false,
        }
    }

    /// True when sites are configured: lists exist per site and for the
    /// whole network.
    pub fn is_network(&self) -> bool {
        self.network
    }

    /// Every site, in configuration order.
    pub fn all(&self) -> &[Site] {
        &self.list
    }

    /// The site with this id.
    pub fn get(&self, id: &str) -> Option<&Site> {
        self.list.iter().find(|s| s.id == id)
    }

    /// The site an event belongs to: the one it names, or the only one.
    pub fn resolve(&self, named: Option<&str>) -> Result<&Site, UnknownSite> {
        match named.filter(|n| !n.is_empty()) {
            Some(id) => self
                .get(id)
                .ok_or_else(|| UnknownSite::NotConfigured(id.chars().take(64).collect())),
            None if self.list.len() == 1 => Ok(&self.list[0]),
            None => Err(UnknownSite::Missing),
        }
    }

    /// The key of article `article_id` of `site`.
    pub fn key(&self, site: &str, article_id: &str) -> String {
        if self.network {
            format!("{site}:{article_id}")
        } else {
            article_id.to_string()
        }
    }

    /// The site and article id of a key made by [`Sites::key`].
    pub fn split<'k>(&self, key: &'k str) -> (&'k str, &'k str) {
        match key.split_once(':').filter(|_| self.network) {
            Some((site, id)) => (site, id),
            None if self.network => ("", key),
            None => (DEFAULT_SITE, key),
        }
    }

    /// The site scope a list is asked for: `None` is the whole network (in
    /// a single-site deployment, the network is the site).
    pub fn scope<'a>(&self, site: Option<&'a str>) -> Option<&'a str> {
        site.filter(|_| self.network)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn network() -> Sites {
        let mut s = Settings::defaults();
        for (id, name) in [("btv", "BTV"), ("jakarta-globe", "Jakarta Globe")] {
            s.sites.push(crate::config::SiteSettings {
                id: id.into(),
                name: name.into(),
                origins: vec![format!("https://{id}.example")],
                events_per_second: None,
            });
        }
        Sites::from_settings(&s)
    }

    #[test]
    fn without_sites_the_key_is_the_article_id_and_every_event_is_the_default_sites() {
        let s = Sites::from_settings(&Settings::defaults());
        assert!(!s.is_network());
        assert_eq!(s.resolve(None).unwrap().id, "default");
        assert_eq!(s.key("default", "a:1"), "a:1");
        assert_eq!(s.split("a:1"), ("default", "a:1"));
        assert_eq!(s.scope(Some("btv")), None);
    }

    #[test]
    fn in_a_network_the_key_names_the_site_and_an_event_must_name_a_configured_one() {
        let s = network();
        assert!(s.is_network());
        assert_eq!(s.resolve(None), Err(UnknownSite::Missing));
        assert_eq!(
            s.resolve(Some("evil")),
            Err(UnknownSite::NotConfigured("evil".into()))
        );
        assert_eq!(s.resolve(Some("btv")).unwrap().name, "BTV");
        let key = s.key("jakarta-globe", "a:1");
        assert_eq!(key, "jakarta-globe:a:1");
        assert_eq!(s.split(&key), ("jakarta-globe", "a:1"));
        assert_eq!(s.scope(Some("btv")), Some("btv"));
        // Per-site quotas default to the collector's.
        assert_eq!(s.get("btv").unwrap().events_per_second, 1000);
    }
}
