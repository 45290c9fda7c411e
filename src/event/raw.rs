//! The wire form of an event: every field of every event type as sent,
//! borrowed from a JSON payload where it can be, or taken from a protobuf
//! message. [`super::decode`] validates it into an [`super::Event`].

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

use super::invalid::{shown, Invalid};
use super::{proto, Tags, Text};

/// A time as sent: RFC 3339 text or integer epoch milliseconds.
#[derive(Debug)]
pub(super) enum RawTime<'a> {
    Text(Cow<'a, str>),
    Millis(i64),
    Other(String),
}

impl RawTime<'_> {
    pub(super) fn millis(&self, field: &'static str) -> Result<i64, Invalid> {
        let bad = |message: String| Invalid::InvalidField { field, message };
        match self {
            RawTime::Millis(ms) if *ms > 0 => Ok(*ms),
            RawTime::Millis(ms) => Err(bad(format!(
                "{ms} is not a positive epoch-millisecond time"
            ))),
            RawTime::Text(s) => {
                let t =
                    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
                        .map_err(|e| {
                            let s = shown(format!("{s:?}"));
                            bad(format!("{s} is not an RFC 3339 time: {e}"))
                        })?;
                let ms = t.unix_timestamp_nanos() / 1_000_000;
                i64::try_from(ms)
                    .ok()
                    .filter(|ms| *ms > 0)
                    .ok_or_else(|| bad(format!("{} is before 1970", shown(format!("{s:?}")))))
            }
            RawTime::Other(v) => Err(bad(format!(
                "{} is neither RFC 3339 text nor integer epoch milliseconds",
                shown(v)
            ))),
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for RawTime<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawTime<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an RFC 3339 string or integer epoch milliseconds")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(RawTime::Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(RawTime::Text(Cow::Owned(v.to_string())))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(RawTime::Millis(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                // Lazily: a message's time is read for every event.
                Ok(
                    i64::try_from(v)
                        .map_or_else(|_| RawTime::Other(v.to_string()), RawTime::Millis),
                )
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                // `1694494080000.0` is an integer to JSON Schema, and to us.
                let whole = v.fract() == 0.0 && v.abs() < 9.2e18;
                Ok(if whole {
                    RawTime::Millis(v as i64)
                } else {
                    RawTime::Other(v.to_string())
                })
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
                Ok(RawTime::Other(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// A string as sent, borrowed from the payload unless it holds an escape.
/// (serde's own `Cow` borrows only where it is a field's whole type, not
/// inside an `Option` or a list.)
struct Str<'a>(Text<'a>);

impl<'de: 'a, 'a> Deserialize<'de> for Str<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Str<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Owned(v.to_string())))
            }
        }
        d.deserialize_str(V)
    }
}

/// An optional string field, borrowed (see [`Str`]).
fn text<'de: 'a, 'a, D: Deserializer<'de>>(d: D) -> Result<Option<Text<'a>>, D::Error> {
    Ok(Option::<Str<'a>>::deserialize(d)?.map(|s| s.0))
}

/// Tags as sent, each borrowed (see [`Str`]). The visitor names the output's
/// lifetime apart from the input's: a `SmallVec` is invariant over its
/// items, so a `RawTags<'de>` is not a `RawTags<'a>`.
#[derive(Debug, Default)]
pub(super) struct RawTags<'a>(pub(super) Tags<'a>);

impl<'de: 'a, 'a> Deserialize<'de> for RawTags<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = RawTags<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of tags")
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<RawTags<'a>, A::Error> {
                let mut tags = Tags::new();
                while let Some(Str(t)) = seq.next_element()? {
                    tags.push(t);
                }
                Ok(RawTags(tags))
            }
        }
        d.deserialize_seq(V(PhantomData))
    }
}

/// Every field of every event type, borrowed from the payload where it can
/// be; unknown fields are ignored so producers can add their own.
#[derive(Debug, Default, Deserialize)]
pub(super) struct Raw<'a> {
    #[serde(rename = "type", default, borrow, deserialize_with = "text")]
    pub(super) kind: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "text")]
    pub(super) site: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "text")]
    pub(super) event_id: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "text")]
    pub(super) article_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub(super) occurred_at: Option<RawTime<'a>>,
    #[serde(default, borrow, deserialize_with = "text")]
    pub(super) visitor_id: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "text")]
    pub(super) section: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub(super) tags: Option<RawTags<'a>>,
    #[serde(default, borrow, deserialize_with = "text")]
    pub(super) user_agent: Option<Cow<'a, str>>,
    pub(super) bot: Option<bool>,
    pub(super) engaged_seconds: Option<f64>,
    #[serde(default, borrow, deserialize_with = "text")]
    pub(super) title: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "text")]
    pub(super) url: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub(super) published_at: Option<RawTime<'a>>,
    #[serde(default, borrow, deserialize_with = "text")]
    pub(super) author: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "text")]
    pub(super) summary: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "text")]
    pub(super) image_url: Option<Cow<'a, str>>,
}

/// The fields of a protobuf `Behaviour` message, borrowed (read by
/// [`super::wire`]) or owned (decoded by prost); proto3's defaults (empty
/// text, 0) mean "not given".
#[derive(Debug, Default)]
pub(super) struct BehaviourFields<'a> {
    pub(super) event_id: Text<'a>,
    pub(super) article_id: Text<'a>,
    pub(super) occurred_at_ms: i64,
    pub(super) visitor_id: Text<'a>,
    pub(super) section: Text<'a>,
    pub(super) tags: Tags<'a>,
    pub(super) user_agent: Text<'a>,
    pub(super) bot: bool,
    pub(super) site: Text<'a>,
}

impl From<proto::Behaviour> for BehaviourFields<'_> {
    fn from(b: proto::Behaviour) -> Self {
        BehaviourFields {
            event_id: Cow::Owned(b.event_id),
            article_id: Cow::Owned(b.article_id),
            occurred_at_ms: b.occurred_at_ms,
            visitor_id: Cow::Owned(b.visitor_id),
            section: Cow::Owned(b.section),
            tags: b.tags.into_iter().map(Cow::Owned).collect(),
            user_agent: Cow::Owned(b.user_agent),
            bot: b.bot,
            site: Cow::Owned(b.site),
        }
    }
}

/// A proto3 text: empty is not given.
fn given<'a>(v: Cow<'a, str>) -> Option<Cow<'a, str>> {
    (!v.is_empty()).then_some(v)
}

/// A proto3 time: 0 is not given.
fn millis<'a>(v: i64) -> Option<RawTime<'a>> {
    (v != 0).then_some(RawTime::Millis(v))
}

impl<'a> Raw<'a> {
    /// A behaviour event of type `kind` from its protobuf fields.
    pub(super) fn behaviour(kind: &'static str, b: BehaviourFields<'a>) -> Raw<'a> {
        Raw {
            kind: Some(Cow::Borrowed(kind)),
            site: given(b.site),
            event_id: given(b.event_id),
            article_id: given(b.article_id),
            occurred_at: millis(b.occurred_at_ms),
            visitor_id: given(b.visitor_id),
            section: given(b.section),
            tags: Some(RawTags(b.tags)),
            user_agent: given(b.user_agent),
            bot: Some(b.bot),
            ..Raw::default()
        }
    }

    /// An event decoded by prost.
    pub(super) fn from_proto(event: proto::Event) -> Result<Raw<'a>, Invalid> {
        use proto::event::Payload;
        fn s<'a>(v: String) -> Option<Cow<'a, str>> {
            given(Cow::Owned(v))
        }
        fn behaviour<'a>(kind: &'static str, b: Option<proto::Behaviour>) -> Raw<'a> {
            Raw::behaviour(kind, b.unwrap_or_default().into())
        }
        Ok(match event.payload {
            None => return Err(Invalid::MissingField("type")),
            Some(Payload::PageView(p)) => behaviour("page_view", p.event),
            Some(Payload::Share(p)) => behaviour("share", p.event),
            Some(Payload::Engagement(p)) => Raw {
                engaged_seconds: Some(p.engaged_seconds),
                ..behaviour("engagement", p.event)
            },
            Some(Payload::ArticlePublished(p)) => Raw {
                kind: Some(Cow::Borrowed("article_published")),
                site: s(p.site),
                article_id: s(p.article_id),
                title: s(p.title),
                url: s(p.url),
                section: s(p.section),
                tags: Some(RawTags(p.tags.into_iter().map(Cow::Owned).collect())),
                published_at: millis(p.published_at_ms),
                author: s(p.author),
                summary: s(p.summary),
                image_url: s(p.image_url),
                ..Raw::default()
            },
            Some(Payload::ArticleUnpublished(p)) => Raw {
                kind: Some(Cow::Borrowed("article_unpublished")),
                site: s(p.site),
                article_id: s(p.article_id),
                ..Raw::default()
            },
        })
    }
}
