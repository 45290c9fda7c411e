//! How a message's payload is encoded: JSON or protobuf, as its
//! `content-type` header names it.

use serde::Deserialize;

/// How a message's payload is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// One JSON object (DESIGN §2).
    #[default]
    Json,
    /// One `popularity.v1.Event`.
    Protobuf,
}

impl Encoding {
    /// The encoding named by a `content-type` header, if it names one.
    pub fn from_content_type(value: &[u8]) -> Option<Encoding> {
        // Read for every message: compared in place, nothing allocated.
        let essence = value.split(|b| *b == b';').next()?.trim_ascii();
        let is = |name: &str| essence.eq_ignore_ascii_case(name.as_bytes());
        if is("application/json") {
            Some(Encoding::Json)
        } else if is("application/x-protobuf")
            || is("application/protobuf")
            || is("application/vnd.google.protobuf")
        {
            Some(Encoding::Protobuf)
        } else {
            None
        }
    }
}
