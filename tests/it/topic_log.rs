//! A topic read back from its beginning, to tell a broker that lost a
//! record from a consumer that did not count one.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use popularity::event::proto;
use prost::Message as _;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::{Message as _, Offset, TopicPartitionList};

use crate::helpers::*;
use crate::kit::ARTICLES;

/// What the events topic holds.
#[derive(Debug, Default)]
pub struct TopicLog {
    /// Records read (up to each partition's high watermark at the start).
    pub records: u64,
    /// Offsets below a high watermark that no record was read at.
    pub gaps: u64,
    /// Events that count, per article and type, as the log holds them:
    /// not a bot, not a repeat (the kit's repeats carry an id ending in `r`).
    pub counted: Vec<[u64; 3]>,
}

/// Reads every partition of `topic` from offset 0 to its high watermark.
pub fn read_topic(kafka: &Kafka, topic: &str) -> TopicLog {
    let consumer: BaseConsumer = kafka.reader("audit");
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let mut next: HashMap<i32, i64> = HashMap::new();
    let mut high: HashMap<i32, i64> = HashMap::new();
    let mut tpl = TopicPartitionList::new();
    for p in metadata.topics()[0].partitions() {
        let (_, hw) = consumer
            .fetch_watermarks(topic, p.id(), Duration::from_secs(10))
            .unwrap();
        high.insert(p.id(), hw);
        next.insert(p.id(), 0);
        tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut log = TopicLog {
        counted: vec![[0; 3]; ARTICLES],
        ..TopicLog::default()
    };
    // Only against a hang: on a machine busy with other work (a build, a
    // benchmark) reading back 200,000 records once took over 120 s.
    let deadline = Instant::now() + Duration::from_secs(300);
    while next.iter().any(|(p, n)| *n < high[p]) {
        assert!(
            Instant::now() < deadline,
            "{topic} not read back: {next:?} of {high:?}"
        );
        let Some(m) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let m = m.unwrap();
        let (p, offset) = (m.partition(), m.offset());
        if offset >= high[&p] {
            continue;
        }
        let n = next.get_mut(&p).unwrap();
        log.gaps += (offset - *n).max(0) as u64;
        *n = (*n).max(offset + 1);
        log.records += 1;
        let Ok(event) = proto::Event::decode(m.payload().unwrap_or_default()) else {
            continue;
        };
        use proto::event::Payload;
        let (kind, b) = match event.payload {
            Some(Payload::PageView(v)) => (0, v.event),
            Some(Payload::Share(s)) => (1, s.event),
            Some(Payload::Engagement(e)) => (2, e.event),
            _ => continue,
        };
        let Some(b) = b else { continue };
        let repeat = b.event_id.ends_with('r');
        let bot = b.bot || !b.user_agent.is_empty();
        if let (false, false, Ok(a)) = (repeat, bot, b.article_id[1..].parse::<usize>()) {
            log.counted[a][kind] += 1;
        }
    }
    log
}
