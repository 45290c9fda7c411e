//! Behaviour events in protobuf, read from the payload without copying:
//! their texts borrow from it as a JSON event's do, so decoding one
//! allocates nothing. Only the form producers write is read here: a
//! `page_view`, `share` or `engagement` whose message and `event` field
//! each appear once. Anything else (article messages, a payload that sets
//! the `oneof` twice, a malformed or non-UTF-8 field) returns `None` and is
//! decoded by prost, whose verdict, and error message, stands: a payload
//! read here gives exactly what prost's decoding gives (tested against it).

use super::raw::{BehaviourFields, Raw};
use super::Text;

/// Protobuf wire types (the low three bits of a field's key).
const VARINT: u8 = 0;
const I64: u8 = 1;
const LEN: u8 = 2;
const I32: u8 = 5;

/// `payload`'s behaviour event, its texts borrowed, or `None` when prost
/// must decode it.
pub(super) fn behaviour(payload: &[u8]) -> Option<Raw<'_>> {
    let mut event = Wire(payload);
    let mut found = None;
    while let Some((field, wire)) = event.key()? {
        match (field, wire) {
            (1..=3, LEN) if found.is_none() => found = Some((field, event.bytes()?)),
            // Set twice (prost merges or replaces), an article, a wrong type.
            (1..=5, _) => return None,
            _ => event.skip(wire)?,
        }
    }
    let (field, body) = found?;
    let mut message = Wire(body);
    let mut inner = None;
    let mut engaged_seconds = 0.0;
    while let Some((f, wire)) = message.key()? {
        match (f, wire) {
            (1, LEN) if inner.is_none() => inner = Some(message.bytes()?),
            (1, _) => return None,
            // A share's network: not kept, but prost refuses it if not UTF-8.
            (2, LEN) if field == 2 => {
                message.text()?;
            }
            (2, I64) if field == 3 => {
                engaged_seconds = f64::from_le_bytes(message.take(8)?.try_into().ok()?);
            }
            (2, _) if field != 1 => return None,
            _ => message.skip(wire)?,
        }
    }
    let fields = match inner {
        Some(b) => fields(b)?,
        None => BehaviourFields::default(),
    };
    Some(match field {
        1 => Raw::behaviour("page_view", fields),
        2 => Raw::behaviour("share", fields),
        _ => Raw {
            engaged_seconds: Some(engaged_seconds),
            ..Raw::behaviour("engagement", fields)
        },
    })
}

/// The fields of a `Behaviour` message: a scalar or text given twice is the
/// last one (as prost reads it), tags are appended.
fn fields(body: &[u8]) -> Option<BehaviourFields<'_>> {
    let mut b = BehaviourFields::default();
    let mut w = Wire(body);
    while let Some((field, wire)) = w.key()? {
        match (field, wire) {
            (1, LEN) => b.event_id = Text::Borrowed(w.text()?),
            (2, LEN) => b.article_id = Text::Borrowed(w.text()?),
            (3, VARINT) => b.occurred_at_ms = w.varint()? as i64,
            (4, LEN) => b.visitor_id = Text::Borrowed(w.text()?),
            (5, LEN) => b.section = Text::Borrowed(w.text()?),
            (6, LEN) => b.tags.push(Text::Borrowed(w.text()?)),
            (7, LEN) => b.user_agent = Text::Borrowed(w.text()?),
            (8, VARINT) => b.bot = w.varint()? != 0,
            (9, LEN) => b.site = Text::Borrowed(w.text()?),
            (1..=9, _) => return None,
            _ => w.skip(wire)?,
        }
    }
    Some(b)
}

/// What is left of a message to read.
struct Wire<'a>(&'a [u8]);

impl<'a> Wire<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.0.len() {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    /// A base-128 varint of at most ten bytes, the tenth at most 1.
    fn varint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for i in 0..10 {
            let b = *self.take(1)?.first()?;
            if i == 9 && b > 1 {
                return None;
            }
            v |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                return Some(v);
            }
        }
        None
    }

    /// The next field's number and wire type; `Some(None)` at the end.
    fn key(&mut self) -> Option<Option<(u32, u8)>> {
        if self.0.is_empty() {
            return Some(None);
        }
        let key = u32::try_from(self.varint()?).ok()?;
        let field = key >> 3;
        (field > 0).then_some(Some((field, (key & 7) as u8)))
    }

    /// A length-delimited field's bytes.
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = usize::try_from(self.varint()?).ok()?;
        self.take(n)
    }

    /// A length-delimited field as UTF-8 text.
    fn text(&mut self) -> Option<&'a str> {
        std::str::from_utf8(self.bytes()?).ok()
    }

    /// Skips a field of an unknown number (groups are left to prost).
    fn skip(&mut self, wire: u8) -> Option<()> {
        match wire {
            VARINT => self.varint().map(drop),
            I64 => self.take(8).map(drop),
            LEN => self.bytes().map(drop),
            I32 => self.take(4).map(drop),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use prost::Message as _;
    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::event::proto;
    use crate::event::EventType;

    /// What prost's decoding makes of `payload`, as text.
    fn by_prost(payload: &[u8]) -> String {
        match proto::Event::decode(payload) {
            Ok(e) => format!("{:?}", Raw::from_proto(e)),
            Err(e) => format!("prost error {e}"),
        }
    }

    fn random_behaviour(rng: &mut rand::rngs::StdRng) -> proto::Behaviour {
        let text = |rng: &mut rand::rngs::StdRng| {
            let n = rng.random_range(0..6);
            (0..n)
                .map(|_| ['a', 'é', '-', '"', '\u{0}', '漢'][rng.random_range(0..6)])
                .collect::<String>()
        };
        proto::Behaviour {
            event_id: text(rng),
            article_id: text(rng),
            occurred_at_ms: [0, 1, -5, i64::MAX, 1_700_000_000_000][rng.random_range(0..5)],
            visitor_id: text(rng),
            section: text(rng),
            tags: (0..rng.random_range(0..6)).map(|_| text(rng)).collect(),
            user_agent: text(rng),
            bot: rng.random_bool(0.3),
            site: text(rng),
        }
    }

    #[test]
    fn a_behaviour_read_here_is_what_prost_reads() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(20261206);
        let mut read_here = 0;
        for i in 0..20_000 {
            let kind = EventType::ALL[rng.random_range(0..3)];
            let e = proto::Event::behaviour(
                kind,
                random_behaviour(&mut rng),
                "mastodon",
                [0.0, 12.5, -1.0, f64::MAX][rng.random_range(0..4)],
            );
            let mut payload = e.encode_to_vec();
            // Some payloads bent: cut short, a byte changed, a second
            // message appended (prost merges), an unknown field added.
            match i % 6 {
                1 => payload.truncate(rng.random_range(0..payload.len().max(1))),
                2 if !payload.is_empty() => {
                    let at = rng.random_range(0..payload.len());
                    payload[at] = rng.random();
                }
                3 => payload.extend(
                    proto::Event::behaviour(kind, random_behaviour(&mut rng), "", 1.0)
                        .encode_to_vec(),
                ),
                4 => payload.extend([0x98, 0x06, 0x2a]), // field 99, varint 42
                _ => {}
            }
            let want = by_prost(&payload);
            if let Some(raw) = behaviour(&payload) {
                read_here += 1;
                let got = format!("{:?}", Ok::<_, ()>(raw));
                assert_eq!(got, want, "{payload:?}");
            };
        }
        // The plain messages and the ones with an unknown field at least.
        assert!(read_here > 20_000 / 3, "{read_here}");
    }

    #[test]
    fn article_messages_and_odd_forms_are_left_to_prost() {
        let published = proto::Event {
            payload: Some(proto::event::Payload::ArticlePublished(
                proto::ArticlePublished {
                    article_id: "a".into(),
                    ..Default::default()
                },
            )),
        };
        assert!(behaviour(&published.encode_to_vec()).is_none());
        assert!(
            behaviour(&[]).is_none(),
            "no payload: prost names the error"
        );
        // A group (wire type 3) in a behaviour message.
        assert!(behaviour(&[0x0a, 0x02, 0x0a, 0x00, 0x0b]).is_none());
        // Invalid UTF-8 in a text field.
        assert!(behaviour(&[0x0a, 0x04, 0x0a, 0x02, 0x12, 0x00, 0xff]).is_none());
    }
}
