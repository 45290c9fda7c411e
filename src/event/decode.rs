//! Decoding one Kafka message into an [`Event`]: its encoding, its size,
//! tombstones; [`super::validate`] checks what it says.
//!
//! Every way a message can be wrong has an [`Invalid`] reason; the consumer
//! sends such messages to the dead-letter topic with that reason, so nothing
//! is dropped silently.

use prost::Message as _;

use super::crawlers::Crawlers;
use super::encoding::Encoding;
use super::fields::check_id;
use super::framing::{unframe, SeenSchemas};
use super::invalid::Invalid;
use super::raw::Raw;
use super::{proto, Event, Text};
use crate::site::Sites;

/// Decodes and validates messages. Built once per consumer: it holds the
/// compiled crawler patterns.
pub struct Decoder {
    crawlers: Crawlers,
    max_bytes: usize,
    pub(super) max_skew_ms: i64,
    pub(super) sites: Sites,
    /// Schema ids of framed messages seen (each logged once).
    schemas: SeenSchemas,
}

/// What the decoder needs to know about one message besides its payload.
#[derive(Debug, Clone, Copy)]
pub struct MessageInfo<'a> {
    /// Encoding to use (from the header, else the topic's setting).
    pub encoding: Encoding,
    /// The message key, if any.
    pub key: Option<&'a [u8]>,
    /// The Kafka timestamp of the message, used when the event has no time.
    pub timestamp_ms: Option<i64>,
    /// The article-lifecycle topic: an empty payload with a key is a tombstone.
    pub lifecycle_topic: bool,
    /// Wall-clock time now, for the clock-skew check.
    pub now_ms: i64,
}

/// Decodes one message with a default [`Decoder`] (convenience for tests).
pub fn decode<'a>(payload: &'a [u8], info: &MessageInfo<'_>) -> Result<Event<'a>, Invalid> {
    Decoder::new(64 * 1024, 300_000).decode(payload, info)
}

impl Decoder {
    /// A decoder enforcing `max_bytes` and `max_skew_ms`.
    pub fn new(max_bytes: usize, max_skew_ms: i64) -> Decoder {
        Decoder {
            crawlers: Crawlers::default(),
            max_bytes,
            max_skew_ms,
            sites: Sites::single(Vec::new(), 1),
            schemas: SeenSchemas::default(),
        }
    }

    /// The same decoder for the network `sites`: every event resolves to
    /// one of them, and its article id becomes its key there.
    pub fn with_sites(mut self, sites: Sites) -> Decoder {
        self.sites = sites;
        self
    }

    /// True when `user_agent` is a known crawler.
    pub fn is_bot_agent(&self, user_agent: &str) -> bool {
        self.crawlers.judge(user_agent)
    }

    /// Decodes and validates one message. A JSON behaviour event borrows
    /// its texts from `payload`.
    pub fn decode<'a>(
        &self,
        payload: &'a [u8],
        info: &MessageInfo<'_>,
    ) -> Result<Event<'a>, Invalid> {
        if payload.len() > self.max_bytes {
            return Err(Invalid::Oversized {
                size: payload.len(),
                max: self.max_bytes,
            });
        }
        if payload.is_empty() {
            // A tombstone on the compacted lifecycle topic withdraws the article.
            if info.lifecycle_topic {
                if let Some(key) = info.key.filter(|k| !k.is_empty()) {
                    let id = std::str::from_utf8(key).map_err(|_| {
                        Invalid::Malformed("tombstone key is not UTF-8".to_string())
                    })?;
                    // In a network the key names the site: `<site>:<id>`.
                    let (site, id) = match id.split_once(':') {
                        Some((site, id)) if self.sites.is_network() => (Some(site), id),
                        _ => (None, id),
                    };
                    let id = check_id("article_id", Some(Text::Borrowed(id)))?;
                    return Ok(Event::Unpublished {
                        article_id: self.key(site, id)?.0.into_owned(),
                    });
                }
            }
            return Err(Invalid::Malformed("empty message".to_string()));
        }
        let (payload, schema) = unframe(payload, info.encoding)?;
        if let Some(id) = schema {
            self.schemas.note(id);
        }
        let raw = match info.encoding {
            // Checked as UTF-8 once, whole: serde_json then reads its
            // strings without checking each again.
            Encoding::Json => std::str::from_utf8(payload)
                .map_err(|e| Invalid::Malformed(format!("invalid JSON: not UTF-8: {e}")))
                .and_then(|text| match super::flat::read(text) {
                    // What producers send, read in one pass; serde_json
                    // reads the rest and names what is wrong.
                    Some(raw) => Ok(raw),
                    None => serde_json::from_str::<Raw<'_>>(text)
                        .map_err(|e| Invalid::Malformed(format!("invalid JSON: {e}"))),
                })?,
            // Behaviour events borrow their texts; the rest is prost's.
            Encoding::Protobuf => match super::wire::behaviour(payload) {
                Some(raw) => raw,
                None => Raw::from_proto(
                    proto::Event::decode(payload)
                        .map_err(|e| Invalid::Malformed(format!("invalid protobuf: {e}")))?,
                )?,
            },
        };
        self.validate(raw, info)
    }
}

#[cfg(test)]
mod tests;
