//! Validation of a decoded message: the rules of each event type, the site
//! it belongs to and the key of its article, times against the clock. The
//! rules of single fields are [`super::fields`]'s.

use super::decode::{Decoder, MessageInfo};
use super::fields::{
    check_id, named_section, named_tags, optional_id, section, tags, text, web_url,
    MAX_SUMMARY_CHARS, MAX_TITLE_CHARS,
};
use super::invalid::Invalid;
use super::raw::Raw;
use super::{ArticleMeta, Behaviour, Event, EventType, Names, Text};

impl Decoder {
    /// The key of article `id` on the site `named`, checked.
    pub(super) fn key<'a>(
        &self,
        named: Option<&str>,
        id: Text<'a>,
    ) -> Result<(Text<'a>, Option<String>), Invalid> {
        let site = self.sites.resolve(named).map_err(Invalid::UnknownSite)?;
        if !self.sites.is_network() {
            return Ok((id, None));
        }
        Ok((
            Text::Owned(self.sites.key(&site.id, &id)),
            Some(site.id.clone()),
        ))
    }

    pub(super) fn validate<'a>(
        &self,
        raw: Raw<'a>,
        info: &MessageInfo<'_>,
    ) -> Result<Event<'a>, Invalid> {
        let kind = raw.kind.as_deref().ok_or(Invalid::MissingField("type"))?;
        let behaviour = match (EventType::from_name(kind), kind) {
            (Some(k), _) => k,
            (None, "article_published") => return self.published(raw, info).map(Event::Published),
            (None, "article_unpublished") => {
                let id = check_id("article_id", raw.article_id)?;
                return Ok(Event::Unpublished {
                    article_id: self.key(raw.site.as_deref(), id)?.0.into_owned(),
                });
            }
            (None, other) => return Err(Invalid::UnknownType(other.to_string())),
        };
        let (article_id, _) =
            self.key(raw.site.as_deref(), check_id("article_id", raw.article_id)?)?;
        let occurred_at_ms = match raw.occurred_at {
            Some(t) => t.millis("occurred_at")?,
            None => info
                .timestamp_ms
                .ok_or(Invalid::MissingField("occurred_at"))?,
        };
        self.check_skew("occurred_at", occurred_at_ms, info.now_ms)?;
        let engaged_seconds = match behaviour {
            EventType::Engagement => {
                let s = raw
                    .engaged_seconds
                    .ok_or(Invalid::MissingField("engaged_seconds"))?;
                if !s.is_finite() || s < 0.0 {
                    return Err(Invalid::InvalidField {
                        field: "engaged_seconds",
                        message: format!(
                            "{} must be a finite number >= 0",
                            super::invalid::shown(s)
                        ),
                    });
                }
                s
            }
            _ => 0.0,
        };
        let bot = raw.bot.unwrap_or(false)
            || raw
                .user_agent
                .as_deref()
                .is_some_and(|ua| self.is_bot_agent(ua));
        Ok(Event::Behaviour(Behaviour {
            kind: behaviour,
            event_id: optional_id("event_id", raw.event_id)?,
            article_id,
            occurred_at_ms,
            visitor_id: optional_id("visitor_id", raw.visitor_id)?,
            section: section(raw.section)?,
            tags: tags(raw.tags)?,
            engaged_seconds,
            bot,
        }))
    }

    fn published(&self, raw: Raw<'_>, info: &MessageInfo<'_>) -> Result<ArticleMeta, Invalid> {
        // Without a publication time the message's own time stands in, so
        // every published article has a place in the News Index.
        let published_at_ms = match raw.published_at {
            Some(t) => Some(t.millis("published_at")?),
            None => info.timestamp_ms,
        };
        if let Some(ms) = published_at_ms {
            self.check_skew("published_at", ms, info.now_ms)?;
        }
        let (article_id, site) =
            self.key(raw.site.as_deref(), check_id("article_id", raw.article_id)?)?;
        let section = named_section(raw.section)?;
        let tags = named_tags(raw.tags)?;
        Ok(ArticleMeta {
            article_id: article_id.into_owned(),
            site,
            title: text("title", raw.title, MAX_TITLE_CHARS)?,
            url: web_url("url", raw.url)?,
            names: Names {
                section: section.as_ref().map(|(_, name)| name.clone()),
                tags: tags.iter().map(|(_, name)| name.clone()).collect(),
            },
            section: section.map(|(slug, _)| slug),
            tags: tags.into_iter().map(|(slug, _)| slug).collect(),
            published_at_ms,
            author: text("author", raw.author, MAX_TITLE_CHARS)?,
            summary: text("summary", raw.summary, MAX_SUMMARY_CHARS)?,
            image_url: web_url("image_url", raw.image_url)?,
            excluded: false,
        })
    }

    fn check_skew(&self, field: &'static str, ms: i64, now_ms: i64) -> Result<(), Invalid> {
        let ahead_ms = ms.saturating_sub(now_ms);
        if ahead_ms > self.max_skew_ms {
            return Err(Invalid::FutureTimestamp { field, ahead_ms });
        }
        Ok(())
    }
}
