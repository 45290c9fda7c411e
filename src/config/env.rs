//! The environment form of the settings: `POPULARITY__SECTION__KEY`, read
//! by `config`, except two kinds that it cannot read and that are merged
//! after deserialisation: librdkafka properties, whose names hold dots, and
//! lists, which are comma separated.

use super::Settings;

/// Environment form of `kafka.properties.*`: underscores after it stand for
/// dots (`POPULARITY__KAFKA__PROPERTIES__SECURITY_PROTOCOL` → `security.protocol`).
pub(super) const PROPERTIES_ENV: &str = "POPULARITY__KAFKA__PROPERTIES__";

/// Environment form of `api.cors_allowed_origins`: origins separated by commas.
const CORS_ORIGINS_ENV: &str = "POPULARITY__API__CORS_ALLOWED_ORIGINS";

/// The `POPULARITY__` variables of an environment, sorted by who reads them.
pub(super) struct Variables {
    /// What `config` reads.
    pub plain: config::Map<String, String>,
    properties: Vec<(String, String)>,
    origins: Option<String>,
}

impl Variables {
    /// Keeps the `POPULARITY__` variables of `env`, sorted.
    pub fn split(env: impl IntoIterator<Item = (String, String)>) -> Variables {
        let mut v = Variables {
            plain: config::Map::new(),
            properties: Vec::new(),
            origins: None,
        };
        for (k, value) in env
            .into_iter()
            .filter(|(k, _)| k.starts_with("POPULARITY__"))
        {
            if k.starts_with(PROPERTIES_ENV) {
                v.properties.push((k, value));
            } else if k == CORS_ORIGINS_ENV {
                v.origins = Some(value);
            } else {
                v.plain.insert(k, value);
            }
        }
        v
    }

    /// Sets what `config` did not read.
    pub fn merge_into(self, settings: &mut Settings) {
        if let Some(v) = self.origins {
            settings.api.cors_allowed_origins = v
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
