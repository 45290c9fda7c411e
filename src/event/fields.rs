//! The rules of single fields, shared by every encoding: ids, tags, texts
//! and links, with their bounds.

use std::borrow::Cow;

use super::raw::RawTags;
use super::{slug_of, Invalid, Tags, Text};

/// Longest accepted article, event or visitor id, in characters.
pub const MAX_ID_CHARS: usize = 256;
/// Most tags accepted on one event.
pub const MAX_TAGS: usize = 32;
/// Longest headline or byline, in characters.
pub const MAX_TITLE_CHARS: usize = 500;
/// Longest summary, in characters.
pub const MAX_SUMMARY_CHARS: usize = 1_000;
/// Longest URL, in bytes.
pub const MAX_URL_BYTES: usize = 2_048;
/// Longest section or tag slug, in bytes: every slug can become part of a
/// Redis key name, so its length is bounded where it is written, not only
/// where it is read.
pub const MAX_SLUG_BYTES: usize = 64;

/// A text field: empty is absent, longer than `max` characters is invalid.
pub(super) fn text(
    field: &'static str,
    value: Option<Cow<'_, str>>,
    max: usize,
) -> Result<Option<String>, Invalid> {
    match value.filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) if v.chars().count() > max => Err(Invalid::InvalidField {
            field,
            message: format!("longer than {max} characters"),
        }),
        Some(v) => Ok(Some(v.into_owned())),
    }
}

/// A link shown to readers: an absolute `http` or `https` URL, so that a
/// `javascript:` or `data:` URL never reaches a page.
pub(super) fn web_url(
    field: &'static str,
    value: Option<Cow<'_, str>>,
) -> Result<Option<String>, Invalid> {
    let Some(url) = text(field, value, MAX_URL_BYTES)? else {
        return Ok(None);
    };
    let lower = url.to_ascii_lowercase();
    let rest = lower
        .strip_prefix("https://")
        .or_else(|| lower.strip_prefix("http://"));
    let host_ok = rest.is_some_and(|r| {
        let host = r.split(['/', '?', '#']).next().unwrap_or("");
        !host.is_empty() && !host.contains(char::is_whitespace)
    });
    if !host_ok || url.len() > MAX_URL_BYTES || url.chars().any(char::is_control) {
        return Err(Invalid::InvalidField {
            field,
            message: "must be an http(s) URL".to_string(),
        });
    }
    Ok(Some(url))
}

/// An article id given outside an event (a route's path), checked by the
/// rules of an event's: what no event can carry, no route takes.
pub fn check_article_id(id: &str) -> Result<(), Invalid> {
    check_id("article_id", Some(Text::Borrowed(id))).map(|_| ())
}

pub(super) fn check_id<'a>(
    field: &'static str,
    value: Option<Text<'a>>,
) -> Result<Text<'a>, Invalid> {
    optional_id(field, value)?.ok_or(Invalid::MissingField(field))
}

pub(super) fn optional_id<'a>(
    field: &'static str,
    value: Option<Text<'a>>,
) -> Result<Option<Text<'a>>, Invalid> {
    let Some(v) = value.filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    // Printable ASCII, as producers send ids, is a byte per character and
    // hides nothing: one pass over the bytes, without a branch per byte.
    let printable = v
        .bytes()
        .fold(true, |ok, b| ok & (b.wrapping_sub(b' ') < 0x5f));
    // Anything else (other scripts, or a control byte) goes by character.
    let (chars, hidden) = if printable {
        (v.len(), false)
    } else {
        let hidden = v.chars().any(|c| c.is_control() || is_invisible(c));
        (v.chars().count(), hidden)
    };
    if chars > MAX_ID_CHARS {
        return Err(Invalid::InvalidField {
            field,
            message: format!("longer than {MAX_ID_CHARS} characters"),
        });
    }
    if hidden {
        return Err(Invalid::InvalidField {
            field,
            message: "contains control, bidirectional or zero-width characters".to_string(),
        });
    }
    Ok(Some(v))
}

/// A character that changes how text around it is shown without showing
/// itself: bidirectional controls (which can reverse what a headline or id
/// seems to say) and zero-width ones. Section and tag slugs never hold one
/// (a slug keeps letters and digits only).
pub fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{061C}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}')
}

/// A section: its slug, absent when the slug is empty.
pub(super) fn section(raw: Option<Text<'_>>) -> Result<Option<Text<'_>>, Invalid> {
    raw.map(|s| bounded_slug("section", s))
        .transpose()
        .map(|s| s.filter(|s| !s.is_empty()))
}

/// Longest display name of a section or tag, in characters.
pub const MAX_NAME_CHARS: usize = 64;

/// The name a section or tag is shown with: its text without control or
/// invisible characters, runs of spaces as one, at most
/// [`MAX_NAME_CHARS`] characters.
pub(super) fn display_name(field: &'static str, name: &str) -> Result<String, Invalid> {
    let clean: String = name
        .chars()
        .filter(|c| c.is_whitespace() || (!c.is_control() && !is_invisible(*c)))
        .collect();
    let shown = clean.split_whitespace().collect::<Vec<_>>().join(" ");
    let n = shown.chars().count();
    if n > MAX_NAME_CHARS {
        return Err(Invalid::InvalidField {
            field,
            message: format!(
                "its name is {n} characters long, at most {MAX_NAME_CHARS} are accepted"
            ),
        });
    }
    Ok(shown)
}

/// A section's slug and name, absent when the slug is empty.
pub(super) fn named_section(raw: Option<Text<'_>>) -> Result<Option<(String, String)>, Invalid> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    let name = display_name("section", &raw)?;
    Ok(section(Some(raw))?.map(|slug| (slug.into_owned(), name)))
}

/// Tags' slugs and names (the first name of a repeated slug), by the rules of [`tags`].
pub(super) fn named_tags(raw: Option<RawTags<'_>>) -> Result<Vec<(String, String)>, Invalid> {
    let raw = raw.unwrap_or_default().0;
    check_tag_count(raw.len())?;
    let mut out: Vec<(String, String)> = Vec::new();
    for t in raw {
        let name = display_name("tags", &t)?;
        let s = bounded_slug("tags", t)?;
        if !s.is_empty() && !out.iter().any(|(o, _)| *o == *s) {
            out.push((s.into_owned(), name));
        }
    }
    Ok(out)
}

fn check_tag_count(n: usize) -> Result<(), Invalid> {
    if n > MAX_TAGS {
        return Err(Invalid::InvalidField {
            field: "tags",
            message: format!("{n} tags, at most {MAX_TAGS} are accepted"),
        });
    }
    Ok(())
}

/// The slug of `name`, at most [`MAX_SLUG_BYTES`] long.
fn bounded_slug<'a>(field: &'static str, name: Text<'a>) -> Result<Text<'a>, Invalid> {
    let s = slug_of(name);
    if s.len() > MAX_SLUG_BYTES {
        return Err(Invalid::InvalidField {
            field,
            message: format!(
                "its slug is {} bytes long, at most {MAX_SLUG_BYTES} are accepted",
                s.len()
            ),
        });
    }
    Ok(s)
}

pub(super) fn tags(raw: Option<RawTags<'_>>) -> Result<Tags<'_>, Invalid> {
    let raw = raw.unwrap_or_default().0;
    check_tag_count(raw.len())?;
    let mut out = Tags::new();
    for t in raw {
        let s = bounded_slug("tags", t)?;
        if !s.is_empty() && !out.contains(&s) {
            out.push(s);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_keep_what_was_published_without_what_hides_or_breaks_text() {
        let raw =
            |v: &[&'static str]| Some(RawTags(v.iter().map(|t| Text::Borrowed(*t)).collect()));
        assert_eq!(
            named_section(Some(Text::Borrowed("  Special\tUpdates "))).unwrap(),
            Some(("special-updates".to_string(), "Special Updates".to_string()))
        );
        assert_eq!(
            named_section(Some(Text::Borrowed("!!"))).unwrap(),
            None,
            "no slug, no section"
        );
        assert_eq!(
            named_tags(raw(&[
                "International",
                "INTERNATIONAL",
                "Ne\u{200B}ws",
                "  "
            ]))
            .unwrap(),
            vec![
                ("international".to_string(), "International".to_string()),
                ("ne-ws".to_string(), "News".to_string()),
            ],
            "the first name of a slug; invisible characters dropped"
        );
        let long = "A".repeat(MAX_NAME_CHARS + 1);
        let e = display_name("section", &long).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid_field: section: its name is 65 characters long, at most 64 are accepted"
        );
    }

    #[test]
    fn ids_with_bidirectional_or_zero_width_characters_are_invalid_and_slugs_drop_them() {
        for id in [
            "a\u{202E}gnp.exe",
            "a\u{200B}b",
            "\u{FEFF}a",
            "a\u{2067}b",
            "a\u{061C}",
        ] {
            let e = optional_id("article_id", Some(Text::Borrowed(id))).unwrap_err();
            assert_eq!(
                e.to_string(),
                "invalid_field: article_id: contains control, bidirectional or zero-width characters"
            );
        }
        assert!(optional_id("article_id", Some(Text::Borrowed("a-1 é"))).is_ok());
        // ASCII controls, in ASCII ids and in others.
        for id in ["a\tb", "a\u{7f}", "\u{0}", "é\nb"] {
            let e = optional_id("visitor_id", Some(Text::Borrowed(id))).unwrap_err();
            assert!(e.to_string().contains("contains control"), "{id:?}: {e}");
        }
        // The bound is in characters, ASCII or not.
        for c in ["a", "é", "漢"] {
            let most = c.repeat(MAX_ID_CHARS);
            assert!(optional_id("visitor_id", Some(Text::Borrowed(&most))).is_ok());
            let over = c.repeat(MAX_ID_CHARS + 1);
            let e = optional_id("visitor_id", Some(Text::Borrowed(&over))).unwrap_err();
            assert!(e.to_string().contains("longer than"), "{c}: {e}");
        }
        let s = section(Some(Text::Borrowed("Ne\u{202E}ws\u{200B}")))
            .unwrap()
            .unwrap();
        assert!(!s.chars().any(is_invisible), "{s:?}");
    }
}
