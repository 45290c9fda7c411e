//! Events: the model (DESIGN §2), decoding from JSON and protobuf, validation
//! and the filters that decide whether a valid event is counted.
//!
//! A message becomes an [`Event`] through [`decode::decode`], which either
//! returns a valid event or an [`Invalid`] reason that the consumer sends to
//! the dead-letter topic. Valid behaviour events then pass the [`filter`]s
//! (bots, stale, duplicates) before they are scored.

mod crawlers;
pub mod decode;
mod encoding;
pub mod fields;
pub mod filter;
mod flat;
pub mod framing;
mod invalid;
mod raw;
mod validate;
mod wire;

/// The protobuf messages generated from `proto/popularity/v1/events.proto`.
pub mod proto {
    #![allow(missing_docs, clippy::all)]
    include!(concat!(env!("OUT_DIR"), "/popularity.v1.rs"));
}

pub use decode::decode;
pub use encoding::Encoding;
pub use invalid::Invalid;

use std::borrow::Cow;

/// A text field of an event: borrowed from the message's payload where it
/// can be (the usual case), so reading an event allocates nothing.
pub type Text<'a> = Cow<'a, str>;

/// An event's normalised tags: a few, held inline.
pub type Tags<'a> = smallvec::SmallVec<[Text<'a>; 4]>;

impl proto::Event {
    /// A behaviour event of `kind` in protobuf: `behaviour` holds what every
    /// type shares, `network` is a share's, `engaged_seconds` an
    /// engagement's (each ignored for the other types). The one builder of
    /// behaviour messages, for producers, the load generator and the tests.
    pub fn behaviour(
        kind: EventType,
        behaviour: proto::Behaviour,
        network: &str,
        engaged_seconds: f64,
    ) -> proto::Event {
        use proto::event::Payload;
        let event = Some(behaviour);
        let payload = match kind {
            EventType::PageView => Payload::PageView(proto::PageView { event }),
            EventType::Share => Payload::Share(proto::Share {
                event,
                network: network.to_string(),
            }),
            EventType::Engagement => Payload::Engagement(proto::Engagement {
                event,
                engaged_seconds,
            }),
        };
        proto::Event {
            payload: Some(payload),
        }
    }
}

/// The kinds of behaviour that are scored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventType {
    /// One view of an article page.
    PageView,
    /// One share to a social network or messenger.
    Share,
    /// Seconds of active reading.
    Engagement,
}

impl EventType {
    /// How many behaviour types there are.
    pub const COUNT: usize = 3;

    /// Every behaviour type, in the order used by counters.
    pub const ALL: [EventType; EventType::COUNT] =
        [EventType::PageView, EventType::Share, EventType::Engagement];

    /// The wire and label name.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::PageView => "page_view",
            EventType::Share => "share",
            EventType::Engagement => "engagement",
        }
    }

    /// The type named `name` on the wire, if any.
    pub fn from_name(name: &str) -> Option<EventType> {
        EventType::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// Position in [`EventType::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// One value per event type, in the order of [`EventType::ALL`]. Adding an
/// event type is adding it to [`EventType`]; every such table follows.
pub type PerType<T> = [T; EventType::COUNT];

/// A valid behaviour event, borrowing its texts from the message it was
/// read from where it can.
#[derive(Debug, Clone, PartialEq)]
pub struct Behaviour<'a> {
    /// What happened.
    pub kind: EventType,
    /// The producer's id of the event, if it sent one.
    pub event_id: Option<Text<'a>>,
    /// The article it happened to: its key ([`crate::site::Sites::key`]).
    pub article_id: Text<'a>,
    /// When it happened (epoch milliseconds): scores decay from this time.
    pub occurred_at_ms: i64,
    /// Who did it, if known; needed for deduplication.
    pub visitor_id: Option<Text<'a>>,
    /// Normalised section, if the event carried one.
    pub section: Option<Text<'a>>,
    /// Normalised tags (empty when the event carried none).
    pub tags: Tags<'a>,
    /// Engaged seconds (engagement only; 0 otherwise).
    pub engaged_seconds: f64,
    /// The producer flagged it or its user agent is a known crawler.
    pub bot: bool,
}

impl Behaviour<'_> {
    /// The same event owning its texts.
    pub fn into_owned(self) -> Behaviour<'static> {
        let own = |t: Text<'_>| Text::Owned(t.into_owned());
        Behaviour {
            kind: self.kind,
            event_id: self.event_id.map(own),
            article_id: own(self.article_id),
            occurred_at_ms: self.occurred_at_ms,
            visitor_id: self.visitor_id.map(own),
            section: self.section.map(own),
            tags: self.tags.into_iter().map(own).collect(),
            engaged_seconds: self.engaged_seconds,
            bot: self.bot,
        }
    }
}

/// The names an article's section and tags were published with ("Special
/// Updates", "International"), shown next to their slugs.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Names {
    /// The section's name; `None` when the article has no section.
    pub section: Option<String>,
    /// The name of each of the article's tags, in their order.
    pub tags: Vec<String>,
}

/// Metadata of a published article.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ArticleMeta {
    /// The article's key ([`crate::site::Sites::key`]): its id, prefixed
    /// with its site in a network.
    pub article_id: String,
    /// The site that published it; `None` in a single-site deployment.
    pub site: Option<String>,
    /// Headline.
    pub title: Option<String>,
    /// Canonical URL.
    pub url: Option<String>,
    /// Normalised section.
    pub section: Option<String>,
    /// Normalised tags.
    pub tags: Vec<String>,
    /// The names its section and tags were published with (DESIGN §15).
    pub names: Names,
    /// Publication time, epoch milliseconds.
    pub published_at_ms: Option<i64>,
    /// Byline.
    pub author: Option<String>,
    /// One or two sentences for lists.
    pub summary: Option<String>,
    /// http(s) URL of the article's picture.
    pub image_url: Option<String>,
    /// An editor hid it from every list (never part of a publication:
    /// the store sets it when it reads the article).
    pub excluded: bool,
}

/// A valid event of any type; a behaviour event borrows from its message.
#[derive(Debug, Clone, PartialEq)]
pub enum Event<'a> {
    /// page_view, share or engagement.
    Behaviour(Behaviour<'a>),
    /// article_published: upserts metadata.
    Published(ArticleMeta),
    /// article_unpublished.
    Unpublished {
        /// The key of the article withdrawn.
        article_id: String,
    },
}

/// [`slug`] of `name`, borrowed when `name` already is one (as producers
/// usually send it): nothing is allocated then.
pub fn slug_of(name: Text<'_>) -> Text<'_> {
    if is_slug(&name) {
        name
    } else {
        Text::Owned(slug(&name))
    }
}

/// Whether [`slug`] leaves `name` as it is: letters and digits that are
/// already lowercase, in runs joined by single dashes.
fn is_slug(name: &str) -> bool {
    let mut dash = true; // no leading dash
    for c in name.chars() {
        if c == '-' {
            if dash {
                return false;
            }
            dash = true;
        } else if c.is_ascii_lowercase()
            || c.is_ascii_digit()
            || (!c.is_ascii() && c.is_alphanumeric() && c.to_lowercase().eq(std::iter::once(c)))
        {
            dash = false;
        } else {
            return false;
        }
    }
    !dash || name.is_empty()
}

/// Normalises a section or tag name to a lowercase slug:
/// `Special Updates` → `special-updates`. Runs of anything but letters and
/// digits become one `-`; leading and trailing dashes are dropped.
pub fn slug(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut dash = false;
    for c in name.chars() {
        if c.is_alphanumeric() {
            if dash && !out.is_empty() {
                out.push('-');
            }
            dash = false;
            out.extend(c.to_lowercase());
        } else {
            dash = true;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_are_lowercase_and_dashed() {
        assert_eq!(slug("Special Updates"), "special-updates");
        assert_eq!(slug("  News  "), "news");
        assert_eq!(slug("U.S. & World"), "u-s-world");
        assert_eq!(slug("already-slug"), "already-slug");
        assert_eq!(slug("Économie"), "économie");
        assert_eq!(slug("--"), "");
    }

    #[test]
    fn a_name_that_is_already_a_slug_is_borrowed_and_any_other_is_normalised() {
        let names = [
            "news",
            "special-updates",
            "économie",
            "a1-b2",
            "",
            "News",
            "a--b",
            "-a",
            "a-",
            "a b",
            "u.s.",
            "ÉCONOMIE",
            "İstanbul",
            "ǅ",
            "a_b",
            "ß",
            "ﬃ",
            "1-2-3",
            "Z",
            "z9",
            "a~b",
            "ab\u{7f}",
            "@",
            "économie",
        ];
        for name in names {
            let out = slug_of(Text::Borrowed(name));
            assert_eq!(out, slug(name), "{name:?}");
            assert_eq!(
                matches!(out, Text::Borrowed(_)),
                slug(name) == name,
                "{name:?} borrowed only when unchanged"
            );
        }
    }
}
