//! Messages framed by a Schema Registry's serializers (DESIGN §15), on both
//! topics, counted as the JSON or protobuf they carry.

use prost::Message as _;
use serde_json::json;

use crate::fixtures::*;
use crate::helpers::*;

/// What the Confluent serializers write: magic byte 0, the schema id
/// big-endian, for protobuf the message indexes (`[0]` as the single byte
/// 0, otherwise a zigzag varint count and zigzag varint indexes), then the
/// message.
fn confluent_frame(schema_id: u32, protobuf_indexes: Option<&[i32]>, body: &[u8]) -> Vec<u8> {
    fn varint(mut v: u64, out: &mut Vec<u8>) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
    let zigzag = |v: i32| ((v << 1) ^ (v >> 31)) as u32 as u64;
    let mut out = vec![0u8];
    out.extend_from_slice(&schema_id.to_be_bytes());
    match protobuf_indexes {
        None => {}
        Some([0]) => out.push(0),
        Some(ix) => {
            varint(zigzag(ix.len() as i32), &mut out);
            for i in ix {
                varint(zigzag(*i), &mut out);
            }
        }
    }
    out.extend_from_slice(body);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn framed_json_and_protobuf_on_both_topics_are_counted_as_what_they_carry() {
    let kafka = Kafka::start(2);
    let redis = redis_server();
    let app = spawn_app(settings(&kafka, Some(&redis))).await;
    let now = now_ms();
    // The article, framed by the JSON Schema serializer.
    let article = json!({"type":"article_published","article_id":"framed","title":"Framed",
        "section":"news","published_at":now - HOUR});
    let framed = confluent_frame(1001, None, article.to_string().as_bytes());
    kafka.send(&kafka.articles, "framed", &framed, None).await;
    // The topics are read apart: only a published article is listed.
    wait_published(&app, &["framed"]).await;

    let mut counted = Vec::new();
    for i in 0..30 {
        let at = now - (30 - i) * MIN;
        let e = json!({"type":"page_view","article_id":"framed","visitor_id":format!("v{i}"),
            "occurred_at":at,"section":"news"});
        counted.push((at, 1.0));
        match i % 3 {
            0 => {
                let body = confluent_frame(1002, None, e.to_string().as_bytes());
                kafka.send(&kafka.events, "framed", &body, None).await;
            }
            1 => {
                // The first message of its schema, and another one's index.
                let ix: &[i32] = if i % 2 == 0 { &[0] } else { &[1] };
                let body = confluent_frame(1003, Some(ix), &to_proto(&e).encode_to_vec());
                kafka
                    .send(
                        &kafka.events,
                        "framed",
                        &body,
                        Some("application/x-protobuf"),
                    )
                    .await;
            }
            _ => kafka.send_json(&kafka.events, "framed", &e).await,
        }
    }
    // A frame cut inside its header is dead-lettered as malformed.
    kafka.send(&kafka.events, "framed", &[0, 0, 3], None).await;
    let applied = "popularity_events_total{outcome=\"applied\",type=\"page_view\"}";
    app.wait_metric(applied, 30.0).await;
    check_ranking(&app, "/v1/rankings/trending", "article_id", |at| {
        vec![("framed".to_string(), direct_score(&counted, at, TRENDING_H))]
    })
    .await;
    let (_, body) = app.get("/v1/articles/framed").await;
    assert_eq!(body["title"], "Framed", "{body}");
    assert_eq!(body["counts"]["page_view"], 30, "{body}");
    let dead = read_dead_letters(&kafka, 1).await;
    assert!(
        dead[0]
            .1
            .contains("schema registry frame shorter than its 5-byte header"),
        "{dead:?}"
    );
    app.stop().await;
}
