use super::*;
use crate::event::fields::MAX_SUMMARY_CHARS;
use crate::event::{ArticleMeta, Behaviour, EventType};

const NOW: i64 = 1_694_494_080_000; // 2023-09-12T04:48:00Z

fn info(encoding: Encoding) -> MessageInfo<'static> {
    MessageInfo {
        encoding,
        key: None,
        timestamp_ms: None,
        lifecycle_topic: false,
        now_ms: NOW,
    }
}

fn json(text: &str) -> Result<Event<'_>, Invalid> {
    decode(text.as_bytes(), &info(Encoding::Json))
}

fn behaviour(text: &str) -> Behaviour<'_> {
    match json(text).unwrap() {
        Event::Behaviour(b) => b,
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_page_view_decodes_with_normalised_section_and_tags() {
    let b = behaviour(
        r#"{"type":"page_view","event_id":"e-1","article_id":"a-123","occurred_at":"2023-09-12T04:48:00Z",
            "visitor_id":"v-9","section":"Special Updates","tags":["International","international"," U.S. "],
            "user_agent":"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/120.0 Safari/537.36","extra":1}"#,
    );
    assert_eq!(
        b,
        Behaviour {
            kind: EventType::PageView,
            event_id: Some("e-1".into()),
            article_id: "a-123".into(),
            occurred_at_ms: NOW,
            visitor_id: Some("v-9".into()),
            section: Some("special-updates".into()),
            tags: smallvec::smallvec!["international".into(), "u-s".into()],
            engaged_seconds: 0.0,
            bot: false,
        }
    );
}

#[test]
fn behaviour_events_decode_without_allocating_in_json_and_protobuf() {
    use crate::allocations::made_by;
    use crate::event::proto;
    use prost::Message as _;
    const UA: &str =
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/120.0 Safari/537.36";
    // Events as producers send them: slugs, a browser, a few tags.
    let views: Vec<(String, Vec<u8>)> = (0..1_000)
        .map(|i| {
            let kind = EventType::ALL[i % 3];
            let json = format!(
                r#"{{"type":"{}","event_id":"e-{i}","article_id":"a-{}","occurred_at":{},"visitor_id":"v-{}","section":"news","tags":["budget","council"],"user_agent":"{UA}","engaged_seconds":12.5}}"#,
                kind.as_str(),
                i % 97,
                NOW - i as i64,
                i % 13
            );
            let b = proto::Behaviour {
                event_id: format!("e-{i}"),
                article_id: format!("a-{}", i % 97),
                occurred_at_ms: NOW - i as i64,
                visitor_id: format!("v-{}", i % 13),
                section: "news".into(),
                tags: vec!["budget".into(), "council".into()],
                user_agent: UA.into(),
                bot: false,
                site: String::new(),
            };
            let pb = proto::Event::behaviour(kind, b, "mastodon", 12.5).encode_to_vec();
            (json, pb)
        })
        .collect();
    let d = Decoder::new(64 * 1024, 300_000);
    for encoding in [Encoding::Json, Encoding::Protobuf] {
        let payload = |(json, pb): &(String, Vec<u8>)| match encoding {
            Encoding::Json => json.as_bytes().to_vec(),
            Encoding::Protobuf => pb.clone(),
        };
        let payloads: Vec<Vec<u8>> = views.iter().map(payload).collect();
        // The user agent's verdict is remembered at the first event.
        assert!(d.decode(&payloads[0], &info(encoding)).is_ok());
        let (decoded, made) = made_by(|| {
            payloads
                .iter()
                .filter(|p| matches!(d.decode(p, &info(encoding)), Ok(Event::Behaviour(_))))
                .count()
        });
        assert_eq!(decoded, 1_000, "{encoding:?}");
        println!("{encoding:?}: {made} allocations for 1,000 events");
        assert!(
            made <= 100,
            "{encoding:?}: {made} allocations for 1,000 events"
        );
    }
}

#[test]
fn timestamps_are_rfc3339_or_epoch_millis() {
    let a = behaviour(r#"{"type":"share","article_id":"a","occurred_at":1694494080000}"#);
    let b =
        behaviour(r#"{"type":"share","article_id":"a","occurred_at":"2023-09-12T06:48:00+02:00"}"#);
    assert_eq!(a.occurred_at_ms, NOW);
    assert_eq!(b.occurred_at_ms, NOW);
    let c =
        behaviour(r#"{"type":"share","article_id":"a","occurred_at":"2023-09-12T04:47:59.250Z"}"#);
    assert_eq!(c.occurred_at_ms, NOW - 750);
}

#[test]
fn a_missing_time_falls_back_to_the_message_timestamp() {
    let mut i = info(Encoding::Json);
    i.timestamp_ms = Some(NOW - 5);
    match decode(br#"{"type":"page_view","article_id":"a"}"#, &i).unwrap() {
        Event::Behaviour(b) => assert_eq!(b.occurred_at_ms, NOW - 5),
        e => panic!("{e:?}"),
    }
    assert_eq!(
        json(r#"{"type":"page_view","article_id":"a"}"#).unwrap_err(),
        Invalid::MissingField("occurred_at")
    );
}

#[test]
fn crawlers_are_flagged_as_bots() {
    let b = behaviour(
        r#"{"type":"page_view","article_id":"a","occurred_at":1694494080000,
            "user_agent":"Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"}"#,
    );
    assert!(b.bot);
    let b = behaviour(
        r#"{"type":"page_view","article_id":"a","occurred_at":1694494080000,"bot":true}"#,
    );
    assert!(b.bot);
}

#[test]
fn invalid_messages_name_their_reason() {
    let cases: &[(&str, &str)] = &[
        ("{not json", "malformed"),
        (
            r#"{"type":"click","article_id":"a","occurred_at":1}"#,
            "unknown_type",
        ),
        (r#"{"article_id":"a","occurred_at":1}"#, "missing_field"),
        (
            r#"{"type":"page_view","occurred_at":1694494080000}"#,
            "missing_field",
        ),
        (
            r#"{"type":"page_view","article_id":"","occurred_at":1694494080000}"#,
            "missing_field",
        ),
        (
            r#"{"type":"page_view","article_id":"a","occurred_at":"yesterday"}"#,
            "invalid_field",
        ),
        (
            r#"{"type":"page_view","article_id":"a","occurred_at":1.5}"#,
            "invalid_field",
        ),
        (
            r#"{"type":"page_view","article_id":"a","occurred_at":-4}"#,
            "invalid_field",
        ),
        (
            r#"{"type":"page_view","article_id":"a","occurred_at":1694494500001}"#,
            "future_timestamp",
        ),
        (
            r#"{"type":"engagement","article_id":"a","occurred_at":1694494080000}"#,
            "missing_field",
        ),
        (
            r#"{"type":"engagement","article_id":"a","occurred_at":1694494080000,"engaged_seconds":-1}"#,
            "invalid_field",
        ),
        (
            r#"{"type":"page_view","article_id":"a","occurred_at":1694494080000,"tags":"x"}"#,
            "malformed",
        ),
        ("", "malformed"),
    ];
    for (text, code) in cases {
        let e = json(text).unwrap_err();
        assert_eq!(e.code(), *code, "{text}: {e}");
        assert!(e.to_string().starts_with(code), "{e}");
    }
    let big = format!(
        r#"{{"type":"page_view","article_id":"a","occurred_at":1694494080000,"pad":"{}"}}"#,
        "x".repeat(70_000)
    );
    assert_eq!(json(&big).unwrap_err().code(), "oversized");
    let too_long_id = format!(
        r#"{{"type":"share","article_id":"{}","occurred_at":1}}"#,
        "a".repeat(300)
    );
    assert_eq!(json(&too_long_id).unwrap_err().code(), "invalid_field");
}

#[test]
fn error_messages_clip_the_values_they_repeat() {
    let long_text = format!("\"{}\"", "9".repeat(5_000));
    for (occurred_at, engaged) in [
        ("1e300", "3"),
        ("1694494080000", "-1e300"),
        (long_text.as_str(), "3"),
    ] {
        let text = format!(
            r#"{{"type":"engagement","article_id":"a","occurred_at":{occurred_at},"engaged_seconds":{engaged}}}"#
        );
        let e = json(&text).unwrap_err().to_string();
        assert!(
            e.len() < 200 && e.contains('…'),
            "{occurred_at:.20} {engaged}: {e}"
        );
    }
}

#[test]
fn links_must_be_http_urls_and_texts_have_bounds() {
    let published = |extra: &str| {
        json(&format!(
            r#"{{"type":"article_published","article_id":"a","published_at":1,{extra}}}"#
        ))
        .map(|_| ())
    };
    for bad in [
        r#""url":"javascript:alert(1)""#,
        r#""image_url":"data:image/png;base64,AAAA""#,
        r#""image_url":"https://""#,
        r#""url":"ftp://example.com/a""#,
        r#""url":"https://exa mple.com/""#,
    ] {
        let e = published(bad).unwrap_err();
        assert_eq!(e.code(), "invalid_field", "{bad}");
        assert!(e.to_string().contains("http(s) URL"), "{bad}: {e}");
    }
    let long = format!(r#""summary":"{}""#, "é".repeat(MAX_SUMMARY_CHARS + 1));
    assert!(published(&long)
        .unwrap_err()
        .to_string()
        .contains("1000 characters"));
    let fine = format!(
        r#""summary":"{}","image_url":"HTTP://cdn.example.com/a.jpg?w=200""#,
        "é".repeat(MAX_SUMMARY_CHARS)
    );
    assert!(published(&fine).is_ok());
}

#[test]
fn lifecycle_events_decode() {
    let e = json(
        r#"{"type":"article_published","article_id":"a-123","title":"Kim Jong Un Arrives in Russia",
            "url":"https://example.com/news/a-123","section":"News","tags":["International"],
            "published_at":"2023-09-12T04:48:00Z","author":"Associated Press",
            "summary":"North Korea may have tens of millions of artillery shells.",
            "image_url":"https://example.com/img/a-123.jpg"}"#,
    )
    .unwrap();
    assert_eq!(
        e,
        Event::Published(ArticleMeta {
            site: None,
            excluded: false,
            article_id: "a-123".into(),
            title: Some("Kim Jong Un Arrives in Russia".into()),
            url: Some("https://example.com/news/a-123".into()),
            section: Some("news".into()),
            tags: vec!["international".into()],
            names: crate::event::Names {
                section: Some("News".into()),
                tags: vec!["International".into()],
            },
            published_at_ms: Some(NOW),
            author: Some("Associated Press".into()),
            summary: Some("North Korea may have tens of millions of artillery shells.".into()),
            image_url: Some("https://example.com/img/a-123.jpg".into()),
        })
    );
    assert_eq!(
        json(r#"{"type":"article_unpublished","article_id":"a-1"}"#).unwrap(),
        Event::Unpublished {
            article_id: "a-1".into()
        }
    );
    let mut i = info(Encoding::Json);
    i.lifecycle_topic = true;
    i.key = Some(b"a-7");
    assert_eq!(
        decode(b"", &i).unwrap(),
        Event::Unpublished {
            article_id: "a-7".into()
        }
    );
}

#[test]
fn json_that_is_not_utf8_is_malformed_and_says_where() {
    // A byte that cannot start a character, in a string and outside one.
    for (bytes, at) in [
        (
            &b"{\"type\":\"page_view\",\"article_id\":\"a-\xff\"}"[..],
            36,
        ),
        (&b"{\"type\":\"page_view\"\xc3}"[..], 19),
    ] {
        let bad = decode(bytes, &info(Encoding::Json)).unwrap_err();
        assert_eq!(bad.code(), "malformed");
        let text = bad.to_string();
        assert!(text.contains("not UTF-8"), "{text}");
        assert!(text.contains(&format!("index {at}")), "{text}");
    }
    // Text in any script is UTF-8, and decodes.
    let b = behaviour(
        r#"{"type":"page_view","article_id":"é-漢","occurred_at":1694494080000,"section":"Économie"}"#,
    );
    assert_eq!(
        (&*b.article_id, b.section.as_deref()),
        ("é-漢", Some("économie"))
    );
}

#[test]
fn protobuf_decodes_to_the_same_events_as_json() {
    let msg = proto::Event {
        payload: Some(proto::event::Payload::Engagement(proto::Engagement {
            event: Some(proto::Behaviour {
                site: String::new(),
                event_id: "e-3".into(),
                article_id: "a-123".into(),
                occurred_at_ms: NOW,
                visitor_id: "v-9".into(),
                section: "News".into(),
                tags: vec!["Politics".into()],
                user_agent: String::new(),
                bot: false,
            }),
            engaged_seconds: 15.0,
        })),
    };
    let bytes = msg.encode_to_vec();
    let from_proto = decode(&bytes, &info(Encoding::Protobuf)).unwrap();
    let from_json = json(
        r#"{"type":"engagement","event_id":"e-3","article_id":"a-123","occurred_at":1694494080000,
            "visitor_id":"v-9","section":"News","tags":["Politics"],"engaged_seconds":15}"#,
    )
    .unwrap();
    assert_eq!(from_proto, from_json);
    let bad = decode(&[0xff, 0xff, 0xff], &info(Encoding::Protobuf)).unwrap_err();
    assert_eq!(bad.code(), "malformed");
    let empty = proto::Event { payload: None }.encode_to_vec();
    let empty_kind = decode(&empty, &info(Encoding::Protobuf));
    // An Event with no payload encodes to zero bytes: an empty message.
    assert_eq!(empty_kind.unwrap_err().code(), "malformed");
}

#[test]
fn messages_framed_by_a_schema_registry_decode_as_what_they_carry() {
    use crate::event::framing::frame;
    let text = r#"{"type":"page_view","event_id":"e-1","article_id":"a-1","occurred_at":1694494080000,"visitor_id":"v-1"}"#;
    let framed = frame(42, None, text.as_bytes());
    let plain = json(text).unwrap();
    assert_eq!(decode(&framed, &info(Encoding::Json)).unwrap(), plain);
    let msg = proto::Event {
        payload: Some(proto::event::Payload::PageView(proto::PageView {
            event: Some(proto::Behaviour {
                event_id: "e-1".into(),
                article_id: "a-1".into(),
                occurred_at_ms: 1_694_494_080_000,
                visitor_id: "v-1".into(),
                ..Default::default()
            }),
        })),
    }
    .encode_to_vec();
    for indexes in [&[0][..], &[1]] {
        let framed = frame(43, Some(indexes), &msg);
        let plain = json(text).unwrap();
        assert_eq!(
            decode(&framed, &info(Encoding::Protobuf)).unwrap(),
            plain,
            "{indexes:?}"
        );
    }
    // Before, the zero byte made it malformed JSON.
    let short = decode(&[0, 0, 1], &info(Encoding::Json)).unwrap_err();
    assert_eq!(
        short.to_string(),
        "malformed: a schema registry frame shorter than its 5-byte header"
    );
}

#[test]
fn content_type_headers_select_the_encoding() {
    assert_eq!(
        Encoding::from_content_type(b"application/json; charset=utf-8"),
        Some(Encoding::Json)
    );
    assert_eq!(
        Encoding::from_content_type(b"application/x-protobuf"),
        Some(Encoding::Protobuf)
    );
    assert_eq!(Encoding::from_content_type(b"text/plain"), None);
}
