use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::read;
use crate::event::raw::Raw;

/// What serde_json makes of `text`, shown.
fn by_serde(text: &str) -> Result<String, String> {
    serde_json::from_str::<Raw<'_>>(text)
        .map(|r| format!("{r:?}"))
        .map_err(|e| e.to_string())
}

/// Messages as producers send them: every field of every type, nulls,
/// fields of their own, white space as pretty printers leave it.
const REALISTIC: &[&str] = &[
    r#"{"type":"page_view","event_id":"e-1","article_id":"a-17","occurred_at":1694494080000,"visitor_id":"v-3","user_agent":"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36"}"#,
    r#"{"type":"share","site":"north","event_id":"e-2","article_id":"a-1","occurred_at":1694494080001,"visitor_id":"v-9","user_agent":"Googlebot/2.1","section":"world","tags":["climate","europe"],"network":"whatsapp"}"#,
    r#"{"type":"engagement","article_id":"a-2","occurred_at":"2023-09-12T04:48:00.250Z","visitor_id":"v-1","engaged_seconds":42,"bot":false}"#,
    r#"{"type":"page_view","article_id":"a-3","visitor_id":null,"tags":[],"bot":true,"section":null,"engaged_seconds":null,"occurred_at":null}"#,
    "{\n  \"type\": \"page_view\",\n  \"article_id\": \"a-4\",\n  \"tags\" : [ \"x\" , \"y\" ],\n  \"extra\": 0,\n  \"flag\": true,\n  \"none\": null\n}\n",
    r#"{"type":"article_published","site":"north","article_id":"a-5","title":"Grüße aus Köln — 東京","url":"https://example.com/a-5","section":"Local News","tags":["Köln"],"published_at":"2023-09-12T04:48:00Z","author":"A. Writer","summary":"Short.","image_url":"https://example.com/a-5.jpg"}"#,
    r#"{"type":"article_published","article_id":"a-6","title":"T","url":"https://example.com/a-6","published_at":1694494080000}"#,
    r#"{"type":"article_unpublished","article_id":"a-7"}"#,
    r#"{"article_id":"a-8","type":"click","occurred_at":0}"#,
    r#"{"type":"page_view","tags":null}"#,
    r#"{}"#,
    " \t{ } \r\n",
];

#[test]
fn what_producers_send_is_read_as_serde_json_reads_it() {
    for text in REALISTIC {
        let fast = read(text).unwrap_or_else(|| panic!("declined: {text}"));
        assert_eq!(Ok(format!("{fast:?}")), by_serde(text), "{text}");
    }
    // And borrowed, as serde_json borrows it.
    let raw = read(REALISTIC[1]).expect("read");
    assert!(matches!(
        raw.article_id,
        Some(std::borrow::Cow::Borrowed("a-1"))
    ));
    assert_eq!(raw.tags.expect("tags").0.len(), 2);
}

#[test]
fn what_serde_json_reads_otherwise_or_refuses_is_declined() {
    let declined = [
        // Escapes: serde_json unescapes them (and owns the text).
        r#"{"type":"page\u005fview","article_id":"a"}"#,
        r#"{"type":"page_view","article_id":"a\"b"}"#,
        r#"{"typ\u0065":"page_view"}"#,
        // Values of other shapes.
        r#"{"type":"page_view","extra":{"nested":[1,2]}}"#,
        r#"{"type":"page_view","extra":[1]}"#,
        r#"{"type":"engagement","engaged_seconds":12.5}"#,
        r#"{"type":"engagement","engaged_seconds":1e3}"#,
        r#"{"occurred_at":-5}"#,
        r#"{"occurred_at":0123}"#,
        r#"{"occurred_at":1234567890123456789}"#,
        r#"{"occurred_at":true}"#,
        r#"{"bot":"yes"}"#,
        r#"{"bot":1}"#,
        r#"{"type":5}"#,
        r#"{"tags":"a"}"#,
        r#"{"tags":["a",null]}"#,
        r#"{"tags":["a",]}"#,
        // Not one flat object.
        r#"{"type":"page_view","type":"share"}"#,
        r#"{"type":"page_view",}"#,
        r#"{"type":"page_view"} x"#,
        r#"{"type":"page_view"}{}"#,
        r#"["page_view","s","e","a"]"#,
        "\u{feff}{\"type\":\"page_view\"}",
        "{\"type\":\"page\tview\"}",
        r#"{"type":"page_view""#,
        r#"{"type" "page_view"}"#,
        r#"{"type":tru}"#,
        "",
    ];
    for text in declined {
        assert!(read(text).is_none(), "read: {text}");
    }
    // Some of them are valid JSON that serde_json reads: the reason to decline.
    assert!(by_serde(declined[0]).is_ok() && by_serde(declined[3]).is_ok());
    assert!(
        by_serde(declined[17]).is_err(),
        "a field given twice is refused"
    );
}

/// Cuts and byte changes of the realistic messages, and random ones: where
/// this reader reads one, serde_json reads the same.
#[test]
fn cut_and_changed_messages_are_read_as_serde_json_reads_them_or_declined() {
    const BYTES: &[u8] = b"\"\\{}[],: 019.e-ntfa\x01\x1f\x7f";
    let mut rng = StdRng::seed_from_u64(29);
    let (mut tried, mut read_fast, mut agreed_refusals) = (0, 0, 0);
    let mut check = |bytes: Vec<u8>| {
        let Ok(text) = String::from_utf8(bytes) else {
            return; // the decoder refuses what is not UTF-8 before reading it
        };
        tried += 1;
        match read(&text) {
            Some(fast) => {
                read_fast += 1;
                assert_eq!(Ok(format!("{fast:?}")), by_serde(&text), "{text:?}");
            }
            None => agreed_refusals += usize::from(by_serde(&text).is_err()),
        };
    };
    for text in REALISTIC {
        let b = text.as_bytes();
        for cut in 0..b.len() {
            check(b[..cut].to_vec());
        }
        for at in 0..b.len() {
            for &x in BYTES {
                let mut changed = b.to_vec();
                changed[at] = x;
                check(changed);
                let mut inserted = b.to_vec();
                inserted.insert(at, x);
                check(inserted);
            }
            let mut removed = b.to_vec();
            removed.remove(at);
            check(removed);
        }
        for _ in 0..2_000 {
            let mut changed = b.to_vec();
            for _ in 0..rng.random_range(1..4) {
                let at = rng.random_range(0..changed.len());
                changed[at] = BYTES[rng.random_range(0..BYTES.len())];
            }
            check(changed);
        }
    }
    // The checks saw both sides: many changed messages read here, many
    // refused by both.
    assert!(tried > 50_000, "{tried}");
    assert!(read_fast > 5_000, "{read_fast}");
    assert!(agreed_refusals > 5_000, "{agreed_refusals}");
}

#[test]
fn the_end_of_a_string_is_found_at_every_offset() {
    for len in 0..40 {
        for special in ["\"", "\\", "\u{1}", "\u{1f}"] {
            let text = format!("{}{special}é\"", "é".repeat(len / 2) + &"a".repeat(len % 2));
            let expected = text.find(special).expect("there");
            assert_eq!(super::special(text.as_bytes()), Some(expected), "{text:?}");
        }
        let plain = "\u{7f}ü ~".repeat(len);
        assert_eq!(super::special(plain.as_bytes()), None, "{plain:?}");
    }
}
