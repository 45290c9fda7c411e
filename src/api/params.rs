//! Query parameters of the API routes, parsed and bounded.

use std::collections::HashMap;
use std::time::Duration;

use super::ApiError;
use crate::event::slug;

/// Query parameters, checked strictly: unknown names are rejected so typos
/// do not silently return the default list.
pub(super) struct Params {
    map: HashMap<String, String>,
}

impl Params {
    /// The parameters of a request that accepts only `allowed`.
    pub(super) fn new(map: HashMap<String, String>, allowed: &[&str]) -> Result<Params, ApiError> {
        let mut unknown: Vec<&str> = map
            .keys()
            .map(String::as_str)
            .filter(|k| !allowed.contains(k))
            .collect();
        if !unknown.is_empty() {
            unknown.sort_unstable();
            return Err(ApiError::InvalidParameter(format!(
                "unknown parameter {}; accepted: {}",
                unknown.join(", "),
                allowed.join(", ")
            )));
        }
        Ok(Params { map })
    }

    /// The raw value of `name`, if given.
    pub(super) fn raw(&self, name: &str) -> Option<&str> {
        self.map.get(name).map(String::as_str)
    }

    /// `name` as a number in `min..=max`, or `default` when absent.
    pub(super) fn number(
        &self,
        name: &str,
        default: usize,
        min: usize,
        max: usize,
    ) -> Result<usize, ApiError> {
        match self.map.get(name) {
            None => Ok(default),
            Some(v) => v
                .parse::<usize>()
                .ok()
                .filter(|n| (min..=max).contains(n))
                .ok_or_else(|| {
                    ApiError::InvalidParameter(format!("{name} must be between {min} and {max}"))
                }),
        }
    }

    /// `name` as a section or tag slug.
    pub(super) fn name(&self, name: &str) -> Result<Option<String>, ApiError> {
        match self.map.get(name) {
            None => Ok(None),
            Some(v) => {
                let s = slug(v);
                if s.is_empty() || v.len() > 200 {
                    return Err(ApiError::InvalidParameter(format!(
                        "{name} must be a non-empty name of at most 200 bytes"
                    )));
                }
                Ok(Some(s))
            }
        }
    }

    /// `name` as a positive humantime duration.
    pub(super) fn duration(&self, name: &str) -> Result<Option<Duration>, ApiError> {
        match self.map.get(name) {
            None => Ok(None),
            Some(v) => humantime::parse_duration(v)
                .ok()
                .filter(|d| !d.is_zero())
                .map(Some)
                .ok_or_else(|| {
                    ApiError::InvalidParameter(format!(
                        "{name} must be a positive duration such as 48h or 30m"
                    ))
                }),
        }
    }
}
