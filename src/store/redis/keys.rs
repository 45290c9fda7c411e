//! The Redis key layout of DESIGN §4: every key name, under one prefix.

use crate::event::EventType;
use crate::scoring::Group;
use crate::store::Unit;

/// The prefix of fence fields in a group's meta hash.
pub(crate) const FENCE_PREFIX: &str = "fence:";

/// The key group (Redis Cluster hash tag) of a group of rankings.
pub(crate) fn group_tag(group: &Group) -> String {
    match group {
        Group::All => "{all}".to_string(),
        Group::Section(s) => format!("{{s:{s}}}"),
        Group::Tag(t) => format!("{{t:{t}}}"),
        Group::Tags => "{tags}".to_string(),
        // `{s:news@btv}`: slugs hold no `@`, so no two groups share a tag.
        Group::Site(site, g) => {
            let base = group_tag(g);
            format!("{}@{site}}}", &base[..base.len() - 1])
        }
    }
}

/// The hash tag of a unit of writing: its group's, and in cluster mode
/// `{all#3}` for part 3 of the group (DESIGN §4).
pub(crate) fn unit_tag(unit: &Unit) -> String {
    let base = group_tag(unit.group());
    match unit.part() {
        None => base,
        Some(k) => format!("{}#{k}}}", &base[..base.len() - 1]),
    }
}

/// Key names under one prefix.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// Keys under `prefix` (`pop` by default).
    pub fn new(prefix: &str) -> Keys {
        Keys {
            prefix: prefix.to_string(),
        }
    }

    /// `pop:{all}:meta`: landmarks (and later fences) of a group.
    pub fn meta(&self, unit: &Unit) -> String {
        format!("{}:{}:meta", self.prefix, unit_tag(unit))
    }

    /// `pop:{all}:r:trending`: one ranking.
    pub fn ranking(&self, unit: &Unit, profile: &str) -> String {
        format!("{}:{}:r:{profile}", self.prefix, unit_tag(unit))
    }

    /// `pop:{all}:count:page_view` (in cluster mode `pop:{all#3}:…`, the
    /// part of [`Group::All`] that ranks the article): all-time counted
    /// events per article.
    pub fn count(&self, all: &Unit, kind: EventType) -> String {
        format!("{}:{}:count:{}", self.prefix, unit_tag(all), kind.as_str())
    }

    /// `pop:{idx}:all` or `pop:{idx}:s:<section>`: the network's News
    /// Index; `…:all@<site>`, `…:s:<section>@<site>`: one site's.
    pub fn index(&self, site: Option<&str>, section: Option<&str>) -> String {
        let list = match section {
            None => format!("{}:{{idx}}:all", self.prefix),
            Some(s) => format!("{}:{{idx}}:s:{s}", self.prefix),
        };
        match site {
            None => list,
            Some(site) => format!("{list}@{site}"),
        }
    }

    /// `pop:{d:<topic>/<partition>}:meta`: a partition's duplicate-filter fence and seed.
    pub fn filter_meta(&self, source: &str) -> String {
        format!("{}:{{d:{source}}}:meta", self.prefix)
    }

    /// `pop:{d:<topic>/<partition>}:log`: its deltas since the last snapshot.
    pub fn filter_log(&self, source: &str) -> String {
        format!("{}:{{d:{source}}}:log", self.prefix)
    }

    /// `pop:exclusions`: the articles editors hid, article key → who and when.
    /// `pop:{alerts}:claim:<key>`: an alert's claim, for its cooldown.
    pub fn alert_claim(&self, key: &str) -> String {
        format!("{}:{{alerts}}:claim:{key}", self.prefix)
    }

    /// `pop:{alerts}:recent`: the most recent alerts, newest first.
    pub fn recent_alerts(&self) -> String {
        format!("{}:{{alerts}}:recent", self.prefix)
    }

    pub fn exclusions(&self) -> String {
        format!("{}:exclusions", self.prefix)
    }

    /// `pop:names`: the names sections and tags were last published with,
    /// `s:<slug>` or `t:<slug>` → name.
    pub fn names(&self) -> String {
        format!("{}:names", self.prefix)
    }

    /// `pop:article:<id>`: article metadata.
    pub fn article(&self, id: &str) -> String {
        format!("{}:article:{id}", self.prefix)
    }
}

#[cfg(test)]
mod tag_tests {
    use super::*;

    #[test]
    fn a_shard_and_a_site_have_hash_tags_of_their_own() {
        let split = crate::store::Layout::split(8);
        let unit = split.unit(&Group::Section("news".into()), "x");
        let part = unit.part().unwrap();
        assert_eq!(unit_tag(&unit), format!("{{s:news#{part}}}"));
        let whole = crate::store::Layout::WHOLE.unit(&Group::Section("news".into()), "x");
        assert_eq!(unit_tag(&whole), "{s:news}");
        assert_eq!(
            group_tag(&Group::Section("news".into()).of_site(Some("btv"))),
            "{s:news@btv}"
        );
    }
}
