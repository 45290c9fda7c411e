//! The environment form of the settings: `POPULARITY__SECTION__KEY`, read
//! by `config`, except two kinds that it cannot read and that are merged
//! after deserialisation: librdkafka properties, whose names hold dots, and
//! lists, which are comma separated.

use super::Settings;

/// Environment form of `kafka.properties.*`: underscores after it stand for
/// dots (`POPULARITY__KAFKA__PROPERTIES__SECURITY_PROTOCOL` → `security.protocol`).
pub(super) const PROPERTIES_ENV: &str = "POPULARITY__KAFKA__PROPERTIES__";

/// Where a list setting lives.
type ListField = fn(&mut Settings) -> &mut Vec<String>;

/// The lists, in environment form: values separated by commas.
const LISTS: [(&str, ListField); 2] = [
    ("POPULARITY__API__CORS_ALLOWED_ORIGINS", |s| {
        &mut s.api.cors_allowed_origins
    }),
    ("POPULARITY__COLLECTOR__TRUSTED_PROXIES", |s| {
        &mut s.collector.trusted_proxies
    }),
];

/// The `POPULARITY__` variables of an environment, sorted by who reads them.
pub(super) struct Variables {
    /// What `config` reads.
    pub plain: config::Map<String, String>,
    properties: Vec<(String, String)>,
    lists: Vec<(usize, String)>,
}

impl Variables {
    /// Keeps the `POPULARITY__` variables of `env`, sorted.
    pub fn split(env: impl IntoIterator<Item = (String, String)>) -> Variables {
        let mut v = Variables {
            plain: config::Map::new(),
            properties: Vec::new(),
            lists: Vec::new(),
        };
        for (k, value) in env
            .into_iter()
            .filter(|(k, _)| k.starts_with("POPULARITY__"))
        {
            if k.starts_with(PROPERTIES_ENV) {
                v.properties.push((k, value));
            } else if let Some(i) = LISTS.iter().position(|(name, _)| *name == k) {
                v.lists.push((i, value));
            } else {
                v.plain.insert(k, value);
            }
        }
        v
    }

    /// Sets what `config` did not read.
    pub fn merge_into(self, settings: &mut Settings) {
        for (i, v) in self.lists {
            *(LISTS[i].1)(settings) = v
                .split(',')
                .map(str::trim)
                .filter(|o| !o.is_empty())
                .map(str::to_string)
                .collect();
        }
        for (k, v) in self.properties {
            let name = k[PROPERTIES_ENV.len()..]
                .to_ascii_lowercase()
                .replace('_', ".");
            settings.kafka.properties.insert(name, v);
        }
    }
}
