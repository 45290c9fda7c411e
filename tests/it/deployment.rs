//! The deployment files name only settings that exist, with values the
//! service accepts: checked against the real `Settings` type, not a copy.

use popularity::config::{ConfigError, Settings};

/// Every `POPULARITY__…` variable these files set, with its literal value
/// when the file gives one (`NAME=value`, `NAME: value`, or `- name: NAME`
/// followed by `value: …`); `None` for values from Secrets or the downward API.
fn variables(text: &str) -> Vec<(String, Option<String>)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        let Some(at) = line.find("POPULARITY__") else {
            continue;
        };
        let rest = &line[at..];
        let end = rest
            .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(rest.len());
        let name = rest[..end].to_string();
        let after = rest[end..].trim_start();
        let unquote = |v: &str| v.trim().trim_matches('"').trim_matches('\'').to_string();
        let value = if let Some(v) = after.strip_prefix('=') {
            Some(unquote(v))
        } else if line.starts_with("- name:") {
            lines
                .get(i + 1)
                .and_then(|next| next.trim().strip_prefix("value:"))
                .map(unquote)
        } else {
            after
                .strip_prefix(':')
                .map(unquote)
                .filter(|v| !v.is_empty())
        };
        out.push((name, value));
    }
    out
}

fn unknown_key(e: &ConfigError) -> bool {
    e.to_string().contains("unknown")
}

const FILES: &[&str] = &[
    "deploy/kubernetes/base/kustomization.yaml",
    "deploy/kubernetes/base/consumer-deployment.yaml",
    "deploy/kubernetes/base/api-deployment.yaml",
    "deploy/kubernetes/overlays/dev/kustomization.yaml",
    "deploy/kubernetes/overlays/production/kustomization.yaml",
    "deploy/kubernetes/overlays/production-sentinel/kustomization.yaml",
    "docker-compose.yml",
    "deploy/compose/sentinel.yml",
];

#[test]
fn deployment_files_name_only_settings_that_exist() {
    let root = crate::helpers::CHECKOUT;
    let config = std::path::Path::new(root).join("deploy/kubernetes/base/popularity.toml");
    Settings::load(Some(&config), std::iter::empty())
        .unwrap_or_else(|e| panic!("deploy/kubernetes/base/popularity.toml: {e}"));
    let mut checked = 0;
    for file in FILES {
        let text = std::fs::read_to_string(format!("{root}/{file}")).unwrap();
        let found = variables(&text);
        // Values that only go together (a list of Sentinels with their
        // mode) are checked together as well.
        let together: Vec<(String, String)> = found
            .iter()
            .filter_map(|(n, v)| Some((n.clone(), v.clone()?)))
            .collect();
        if let Err(e) = Settings::load(Some(&config), together) {
            panic!("{file}: its variables together: {e}");
        }
        for (name, value) in found {
            let result = Settings::load(
                Some(&config),
                [(name.clone(), value.clone().unwrap_or_default())],
            );
            match (&value, result) {
                (Some(v), Err(e)) if !name.starts_with("POPULARITY__STORE__REDIS_URL") => {
                    panic!("{file}: {name}={v}: {e}")
                }
                (None, Err(e)) if unknown_key(&e) => panic!("{file}: {name}: {e}"),
                _ => checked += 1,
            }
        }
    }
    assert!(checked >= 10, "only {checked} variables found");
}

#[test]
fn a_variable_or_key_that_names_no_setting_is_caught() {
    let found = variables("      - name: POPULARITY__STORE__REDIS_HOST\n        value: redis\n");
    assert_eq!(
        found,
        [("POPULARITY__STORE__REDIS_HOST".into(), Some("redis".into()))]
    );
    let e = Settings::load(
        None,
        [("POPULARITY__STORE__REDIS_HOST".into(), "redis".into())],
    )
    .unwrap_err();
    assert!(unknown_key(&e), "{e}");
}
