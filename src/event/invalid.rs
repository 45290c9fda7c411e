//! Why a message was rejected, and how a sent value is shown in the reason.

/// Most characters of a sent value an error message repeats.
const MAX_SHOWN_CHARS: usize = 40;

/// `value` as an error message shows it: at most [`MAX_SHOWN_CHARS`]
/// characters, then `…` (a number such as `1e300` is not echoed as 300
/// digits, a text not in full).
pub(super) fn shown(value: impl std::fmt::Display) -> String {
    let text = value.to_string();
    match text.char_indices().nth(MAX_SHOWN_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

/// Why a message was rejected. [`Invalid::code`] is a bounded label; the
/// `Display` form (`code: detail`) is what the dead-letter header carries.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Invalid {
    /// Larger than `ingest.max_message_bytes`.
    #[error("oversized: message of {size} bytes exceeds the limit of {max} bytes")]
    Oversized {
        /// Payload size.
        size: usize,
        /// Configured limit.
        max: usize,
    },
    /// Not decodable in its encoding.
    #[error("malformed: {0}")]
    Malformed(String),
    /// A `type` that is none of the five known ones.
    #[error("unknown_type: {0:?} is not one of page_view, share, engagement, article_published, article_unpublished")]
    UnknownType(String),
    /// A required field is absent or empty.
    #[error("missing_field: {0} is required")]
    MissingField(&'static str),
    /// A field has a value outside its domain.
    #[error("invalid_field: {field}: {message}")]
    InvalidField {
        /// The field.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
    /// Names no site in a network of several, or a site not configured.
    #[error("unknown_site: {0}")]
    UnknownSite(crate::site::UnknownSite),
    /// Further in the future than `ingest.max_clock_skew`.
    #[error("future_timestamp: {field} is {ahead_ms} ms in the future, more than the allowed clock skew")]
    FutureTimestamp {
        /// The field.
        field: &'static str,
        /// How far ahead of now.
        ahead_ms: i64,
    },
}

impl Invalid {
    /// Every code, for metric label initialisation.
    pub const CODES: [&'static str; 7] = [
        "oversized",
        "malformed",
        "unknown_type",
        "missing_field",
        "invalid_field",
        "future_timestamp",
        "unknown_site",
    ];

    /// A short, bounded name of the reason.
    pub fn code(&self) -> &'static str {
        match self {
            Invalid::Oversized { .. } => "oversized",
            Invalid::Malformed(_) => "malformed",
            Invalid::UnknownType(_) => "unknown_type",
            Invalid::MissingField(_) => "missing_field",
            Invalid::InvalidField { .. } => "invalid_field",
            Invalid::FutureTimestamp { .. } => "future_timestamp",
            Invalid::UnknownSite(_) => "unknown_site",
        }
    }
}
