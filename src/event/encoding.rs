//! How a message's payload is encoded: JSON when it starts with `{`,
//! otherwise as its `content-type` header names it (JSON when none).

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
    /// The encoding of `payload`, whose `content-type` header (read only
    /// when [`Encoding::header_decides`]) is `content_type`.
    pub fn of<'a>(payload: &[u8], content_type: impl FnOnce() -> Option<&'a [u8]>) -> Encoding {
        if Encoding::header_decides(payload) {
            content_type()
                .and_then(Encoding::from_content_type)
                .unwrap_or(Encoding::Json)
        } else {
            Encoding::Json
        }
    }

    /// Whether the header decides `payload`'s encoding: not for a payload
    /// that starts with `{`, which is a JSON object whatever the header
    /// says (no `popularity.v1.Event` starts with that byte: it would open
    /// field 15 as a group, a field and a wire type the message does not
    /// have). Reading a Kafka message's headers costs: librdkafka parses
    /// them on first access, allocating, even for a message that has none.
    pub fn header_decides(payload: &[u8]) -> bool {
        payload.first() != Some(&b'{')
    }

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::proto;
    use prost::Message as _;

    #[test]
    fn a_payload_that_opens_an_object_is_json_whatever_its_header_says() {
        let protobuf = || Some(&b"application/x-protobuf"[..]);
        let json = br#"{"type":"page_view"}"#;
        assert_eq!(Encoding::of(json, protobuf), Encoding::Json);
        assert_eq!(
            Encoding::of(json, || panic!("the header is not read")),
            Encoding::Json
        );
        // Anything else goes by the header, JSON by default.
        assert_eq!(Encoding::of(b"\n\x02\n\x00", protobuf), Encoding::Protobuf);
        assert_eq!(Encoding::of(b" {}", protobuf), Encoding::Protobuf);
        assert_eq!(Encoding::of(b" {}", || None), Encoding::Json);
        assert_eq!(Encoding::of(b"", || Some(b"text/plain")), Encoding::Json);
    }

    #[test]
    fn no_protobuf_event_starts_with_an_opening_brace() {
        use proto::event::Payload;
        let b = || {
            Some(proto::Behaviour {
                event_id: "e-1".into(),
                article_id: "a-1".into(),
                ..Default::default()
            })
        };
        let payloads = [
            Payload::PageView(proto::PageView { event: b() }),
            Payload::Share(proto::Share {
                event: b(),
                network: "x".into(),
            }),
            Payload::Engagement(proto::Engagement {
                event: b(),
                engaged_seconds: 3.0,
            }),
            Payload::ArticlePublished(proto::ArticlePublished {
                article_id: "a-1".into(),
                ..Default::default()
            }),
            Payload::ArticleUnpublished(proto::ArticleUnpublished {
                article_id: "a-1".into(),
                ..Default::default()
            }),
        ];
        for p in payloads {
            let bytes = proto::Event { payload: Some(p) }.encode_to_vec();
            assert!(Encoding::header_decides(&bytes), "{bytes:?}");
            // Field 1 to 5 of `Event`, length-delimited.
            assert!((1..=5).contains(&(bytes[0] >> 3)), "{bytes:?}");
            assert_eq!(bytes[0] & 7, 2, "{bytes:?}");
        }
        // The byte itself: field 15, wire type 3 (start group).
        assert_eq!((b'{' >> 3, b'{' & 7), (15, 3));
    }
}
