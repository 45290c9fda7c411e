//! Loading the settings: built-in defaults, then a file, then the
//! environment, then validation; each failure names its key.

use std::path::Path;

use super::{env, invalid, ConfigError, Settings, DEFAULTS_TOML};

impl Settings {
    /// Loads defaults, then `file` if given, then `POPULARITY__…` variables
    /// from `env`, and validates the result.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Settings, ConfigError> {
        use config::{Config, Environment, File, FileFormat};

        let mut builder =
            Config::builder().add_source(File::from_str(DEFAULTS_TOML, FileFormat::Toml));
        if let Some(path) = file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| ConfigError::Source(format!("cannot read {}: {e}", path.display())))?;
            builder = builder.add_source(File::from_str(&text, FileFormat::Toml));
        }
        let mut env = env::Variables::split(env);
        builder = builder.add_source(
            Environment::with_prefix("popularity")
                .prefix_separator("__")
                .separator("__")
                .source(Some(std::mem::take(&mut env.plain))),
        );
        let merged = builder
            .build()
            .map_err(|e| ConfigError::Source(e.to_string()))?;
        let mut settings: Settings = serde_path_to_error::deserialize(merged).map_err(|e| {
            let key = e.path().to_string();
            let message = e.inner().to_string();
            invalid(key, strip_key_suffix(&message))
        })?;
        env.merge_into(&mut settings);
        settings.validate()?;
        Ok(settings)
    }

    /// Loads from the process environment.
    pub fn from_env(file: Option<&Path>) -> Result<Settings, ConfigError> {
        Settings::load(file, std::env::vars())
    }

    /// The built-in defaults alone.
    pub fn defaults() -> Settings {
        Settings::load(None, std::iter::empty()).expect("built-in defaults are valid")
    }
}

/// serde messages from `config` sometimes repeat the key; the key is reported separately.
fn strip_key_suffix(message: &str) -> String {
    match message.find(" for key `") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}
