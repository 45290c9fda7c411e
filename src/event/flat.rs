//! A JSON event read in one pass, when it is what producers send: one flat
//! object whose strings hold no escapes, whose numbers are plain
//! non-negative integers, and whose values are of the types [`Raw`] takes.
//! Anything else (an escape, a nested or unknown-typed value, a fraction or
//! exponent, a field given twice, bytes after the object) is declined, and
//! serde_json reads the message instead, so its verdicts and its messages
//! for what is invalid stay the ones given. What this reader accepts it
//! reads as serde_json reads it: `tests` compares the two on realistic,
//! cut and mutated messages.

use std::borrow::Cow;

use super::raw::{Raw, RawTags, RawTime};
use super::Tags;

/// The event in `text`, or None where serde_json must read it.
pub(super) fn read(text: &str) -> Option<Raw<'_>> {
    let mut c = Cursor {
        text,
        bytes: text.as_bytes(),
        at: 0,
    };
    let mut raw = Raw::default();
    let mut seen = 0u32;
    c.expect(b'{')?;
    if c.peek()? == b'}' {
        c.at += 1;
    } else {
        loop {
            let key = c.string()?;
            c.expect(b':')?;
            c.field(key, &mut raw, &mut seen)?;
            match c.next()? {
                b',' => {}
                b'}' => break,
                _ => return None,
            }
        }
    }
    c.skip_space();
    (c.at == c.bytes.len()).then_some(raw)
}

/// A value read in one piece.
enum Value<'a> {
    Str(&'a str),
    /// At most 18 digits: fits an `i64`.
    Int(i64),
    Bool(bool),
    Null,
}

struct Cursor<'a> {
    text: &'a str,
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn skip_space(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.bytes.get(self.at) {
            self.at += 1;
        }
    }

    /// The next byte after white space, not taken.
    fn peek(&mut self) -> Option<u8> {
        self.skip_space();
        self.bytes.get(self.at).copied()
    }

    /// The next byte after white space, taken.
    fn next(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.at += 1;
        Some(b)
    }

    fn expect(&mut self, b: u8) -> Option<()> {
        (self.next()? == b).then_some(())
    }

    /// A string without escapes or control bytes, borrowed.
    fn string(&mut self) -> Option<&'a str> {
        self.expect(b'"')?;
        let start = self.at;
        let end = start + special(&self.bytes[start..])?;
        if self.bytes[end] != b'"' {
            return None;
        }
        self.at = end + 1;
        // Both ends are ASCII bytes of valid UTF-8: character boundaries.
        Some(&self.text[start..end])
    }

    fn value(&mut self) -> Option<Value<'a>> {
        Some(match self.peek()? {
            b'"' => Value::Str(self.string()?),
            b'0'..=b'9' => Value::Int(self.integer()?),
            b't' => self.word(b"true", Value::Bool(true))?,
            b'f' => self.word(b"false", Value::Bool(false))?,
            b'n' => self.word(b"null", Value::Null)?,
            _ => return None,
        })
    }

    fn word(&mut self, word: &[u8], v: Value<'a>) -> Option<Value<'a>> {
        self.bytes[self.at..].starts_with(word).then(|| {
            self.at += word.len();
            v
        })
    }

    /// `0` or a run of digits not starting with one, at most 18. (A
    /// fraction or an exponent after it is declined by what must follow a
    /// value.)
    fn integer(&mut self) -> Option<i64> {
        let digits = self.bytes[self.at..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        if digits > 18 || (self.bytes[self.at] == b'0' && digits > 1) {
            return None;
        }
        let n = self.bytes[self.at..self.at + digits]
            .iter()
            .fold(0i64, |n, d| n * 10 + i64::from(d - b'0'));
        self.at += digits;
        Some(n)
    }

    /// A list of strings.
    fn tags(&mut self) -> Option<Tags<'a>> {
        let mut tags = Tags::new();
        if self.peek()? == b']' {
            self.at += 1;
            return Some(tags);
        }
        loop {
            tags.push(Cow::Borrowed(self.string()?));
            match self.next()? {
                b',' => {}
                b']' => return Some(tags),
                _ => return None,
            }
        }
    }

    /// Reads the value of `key` into `raw`; None where serde_json would
    /// read it otherwise, or refuse it.
    fn field(&mut self, key: &str, raw: &mut Raw<'a>, seen: &mut u32) -> Option<()> {
        let Some(field) = Field::named(key) else {
            // Not a field of ours: skipped, if it is a simple value.
            return self.value().map(drop);
        };
        let bit = 1 << field as u32;
        if *seen & bit != 0 {
            return None; // serde_json: "duplicate field"
        }
        *seen |= bit;
        if let Field::Tags = field {
            raw.tags = match self.peek()? {
                b'[' => {
                    self.at += 1;
                    Some(RawTags(self.tags()?))
                }
                _ => match self.value()? {
                    Value::Null => None,
                    _ => return None,
                },
            };
            return Some(());
        }
        let v = self.value()?;
        let text = |v: Value<'a>| match v {
            Value::Str(s) => Some(Some(Cow::Borrowed(s))),
            Value::Null => Some(None),
            _ => None,
        };
        let time = |v: Value<'a>| match v {
            Value::Str(s) => Some(Some(RawTime::Text(Cow::Borrowed(s)))),
            Value::Int(n) => Some(Some(RawTime::Millis(n))),
            Value::Null => Some(None),
            Value::Bool(_) => None,
        };
        let flag = |v: Value<'a>| match v {
            Value::Bool(b) => Some(Some(b)),
            Value::Null => Some(None),
            _ => None,
        };
        // At most 18 digits: exact as an `f64`, as serde_json converts it.
        let seconds = |v: Value<'a>| match v {
            Value::Int(n) => Some(Some(n as f64)),
            Value::Null => Some(None),
            _ => None,
        };
        match field {
            Field::Type => raw.kind = text(v)?,
            Field::Site => raw.site = text(v)?,
            Field::EventId => raw.event_id = text(v)?,
            Field::ArticleId => raw.article_id = text(v)?,
            Field::OccurredAt => raw.occurred_at = time(v)?,
            Field::VisitorId => raw.visitor_id = text(v)?,
            Field::Section => raw.section = text(v)?,
            Field::Tags => unreachable!("read above"),
            Field::UserAgent => raw.user_agent = text(v)?,
            Field::Bot => raw.bot = flag(v)?,
            Field::EngagedSeconds => raw.engaged_seconds = seconds(v)?,
            Field::Title => raw.title = text(v)?,
            Field::Url => raw.url = text(v)?,
            Field::PublishedAt => raw.published_at = time(v)?,
            Field::Author => raw.author = text(v)?,
            Field::Summary => raw.summary = text(v)?,
            Field::ImageUrl => raw.image_url = text(v)?,
        }
        Some(())
    }
}

/// [`Raw`]'s fields.
#[derive(Clone, Copy)]
enum Field {
    Type,
    Site,
    EventId,
    ArticleId,
    OccurredAt,
    VisitorId,
    Section,
    Tags,
    UserAgent,
    Bot,
    EngagedSeconds,
    Title,
    Url,
    PublishedAt,
    Author,
    Summary,
    ImageUrl,
}

impl Field {
    /// The field named `key` in JSON, as [`Raw`] names them.
    fn named(key: &str) -> Option<Field> {
        Some(match key {
            "type" => Field::Type,
            "site" => Field::Site,
            "event_id" => Field::EventId,
            "article_id" => Field::ArticleId,
            "occurred_at" => Field::OccurredAt,
            "visitor_id" => Field::VisitorId,
            "section" => Field::Section,
            "tags" => Field::Tags,
            "user_agent" => Field::UserAgent,
            "bot" => Field::Bot,
            "engaged_seconds" => Field::EngagedSeconds,
            "title" => Field::Title,
            "url" => Field::Url,
            "published_at" => Field::PublishedAt,
            "author" => Field::Author,
            "summary" => Field::Summary,
            "image_url" => Field::ImageUrl,
            _ => return None,
        })
    }
}

/// Where the first `"`, `\` or control byte of `bytes` is, eight bytes at a
/// time (as serde_json looks for the end of a string).
fn special(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([1; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    fn zero_byte(x: u64) -> u64 {
        x.wrapping_sub(ONES) & !x
    }
    let mut at = 0;
    while let Some(chunk) = bytes.get(at..at + 8) {
        let x = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
        let hits = (zero_byte(x ^ (ONES * u64::from(b'"')))
            | zero_byte(x ^ (ONES * u64::from(b'\\')))
            | (x.wrapping_sub(ONES * 0x20) & !x))
            & HIGH;
        if hits != 0 {
            // The lowest flagged byte is exact (borrows only reach higher ones).
            return Some(at + hits.trailing_zeros() as usize / 8);
        }
        at += 8;
    }
    bytes[at..]
        .iter()
        .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
        .map(|i| at + i)
}

#[cfg(test)]
mod tests;
