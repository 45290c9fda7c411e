//! A synthetic newsroom: articles published over time in sections with tags,
//! Zipf-distributed readership whose favourites drift, returning visitors,
//! shares, engagement, bots, duplicates and a few malformed messages.
//!
//! Pure generation, no I/O: [`Newsroom::next`] returns the next message to
//! produce. The demo and `popularity loadgen` send them to Kafka.

use prost::Message as _;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Zipf};
use serde_json::json;

use popularity::config::TopicSettings;
use popularity::event::decode::MessageInfo;
use popularity::event::{proto, Encoding, EventType};
use popularity::ingest::Incoming;

mod catalog;
mod copy;

pub use catalog::{display_name, DEMO_SITES, DEMO_SITE_NAMES, SECTIONS};

const BROWSER: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36";
const CRAWLER: &str = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";

/// Wire encoding of generated behaviour events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum WireFormat {
    /// JSON objects.
    Json,
    /// `popularity.v1.Event` with `content-type: application/x-protobuf`.
    Protobuf,
}

/// The shape of the traffic.
#[derive(Debug, Clone)]
pub struct Shape {
    /// Articles published at the start.
    pub articles: usize,
    /// Zipf exponent of article popularity.
    pub zipf_exponent: f64,
    /// Popularity ranks that change places per 1,000 events.
    pub drift_per_1000: usize,
    /// A new article is published every this many events (0: never).
    pub publish_every: usize,
    /// A story takes off every this many events (0: never): an article
    /// from the less read half jumps to the top of the readership, as
    /// news breaking on social media makes it.
    pub surge_every: usize,
    /// Distinct visitors (returning visitors are drawn from this pool).
    pub visitors: usize,
    /// Fraction of behaviour events that are shares.
    pub shares: f64,
    /// Fraction that are engagement.
    pub engagement: f64,
    /// Fraction sent by crawlers.
    pub bots: f64,
    /// Fraction that repeat a recent event (same visitor, article, type).
    pub duplicates: f64,
    /// Fraction of malformed messages.
    pub invalid: f64,
    /// Encoding of behaviour events.
    pub format: WireFormat,
    /// Random seed.
    pub seed: u64,
    /// Events happened up to this long before they are sent (client delay).
    pub time_jitter_ms: i64,
    /// The network's sites and the share of articles each publishes; empty:
    /// one site, and messages name none.
    pub sites: &'static [(&'static str, f64)],
}

impl Default for Shape {
    fn default() -> Self {
        Shape {
            articles: 200,
            zipf_exponent: 1.1,
            drift_per_1000: 5,
            publish_every: 500,
            surge_every: 0,
            visitors: 50_000,
            shares: 0.04,
            engagement: 0.15,
            bots: 0.02,
            duplicates: 0.02,
            invalid: 0.001,
            format: WireFormat::Json,
            seed: 1,
            time_jitter_ms: 2_000,
            sites: &[],
        }
    }
}

/// Which topic a message goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topic {
    /// Behaviour events.
    Events,
    /// Article lifecycle.
    Articles,
}

/// One message to produce.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// Destination.
    pub topic: Topic,
    /// Kafka key (the article id).
    pub key: String,
    /// Payload.
    pub payload: Vec<u8>,
    /// `content-type` header, when not JSON.
    pub content_type: Option<&'static str>,
}

impl Outgoing {
    /// The name of its topic among `topics`.
    pub fn topic_in<'a>(&self, topics: &'a TopicSettings) -> &'a str {
        match self.topic {
            Topic::Events => &topics.events,
            Topic::Articles => &topics.articles,
        }
    }

    /// How a consumer of `topics` reads this message from `partition` at
    /// `offset`, with the Kafka timestamp `timestamp_ms`.
    pub fn incoming<'a>(
        &'a self,
        topics: &'a TopicSettings,
        partition: i32,
        offset: i64,
        timestamp_ms: Option<i64>,
    ) -> Incoming<'a> {
        Incoming {
            topic: self.topic_in(topics),
            partition,
            offset,
            key: Some(self.key.as_bytes()),
            payload: &self.payload,
            content_type: self.content_type.map(str::as_bytes),
            timestamp_ms,
        }
    }

    /// How a consumer sees this message at `now_ms` (the Kafka timestamp
    /// taken as `now_ms` too).
    pub fn info(&self, now_ms: i64) -> MessageInfo<'_> {
        MessageInfo {
            encoding: if self.content_type.is_some() {
                Encoding::Protobuf
            } else {
                Encoding::Json
            },
            key: Some(self.key.as_bytes()),
            timestamp_ms: Some(now_ms),
            lifecycle_topic: self.topic == Topic::Articles,
            now_ms,
        }
    }
}

struct Article {
    id: String,
    site: Option<&'static str>,
    section: usize,
    tags: Vec<&'static str>,
}

/// One generated behaviour event, serialised straight to JSON (building a
/// `serde_json::Value` per event made the generator slower than the service).
#[derive(Debug, Clone, serde::Serialize)]
struct Generated {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    site: Option<&'static str>,
    event_id: String,
    article_id: String,
    occurred_at: i64,
    visitor_id: String,
    user_agent: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    section: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tags: Option<Vec<&'static str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    network: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    engaged_seconds: Option<u32>,
}

/// The generator.
pub struct Newsroom {
    /// Headlines used so far.
    headlines: copy::Headlines,
    shape: Shape,
    rng: StdRng,
    articles: Vec<Article>,
    /// Popularity order: `order[rank]` is an index into `articles`.
    order: Vec<usize>,
    zipf: Zipf<f64>,
    zipf_n: usize,
    produced: u64,
    last: Option<Generated>,
    backlog: Vec<Outgoing>,
}

impl Newsroom {
    /// A newsroom whose first articles were published over the 48 hours before `now_ms`.
    pub fn new(shape: Shape, now_ms: i64) -> Newsroom {
        let mut n = Newsroom {
            rng: StdRng::seed_from_u64(shape.seed),
            articles: Vec::new(),
            order: Vec::new(),
            zipf: Zipf::new(1.0, 1.0).expect("valid Zipf"),
            zipf_n: 0,
            produced: 0,
            last: None,
            backlog: Vec::new(),
            headlines: copy::Headlines::default(),
            shape,
        };
        for _ in 0..n.shape.articles.max(1) {
            let at = now_ms - n.rng.random_range(0..24 * 3_600_000);
            let m = n.publish(at);
            n.backlog.push(m);
        }
        // Publish oldest first so the index reads naturally.
        n.backlog.reverse();
        n
    }

    /// Number of messages returned so far.
    pub fn produced(&self) -> u64 {
        self.produced
    }

    fn publish(&mut self, at_ms: i64) -> Outgoing {
        let idx = self.articles.len();
        let section = self.rng.random_range(0..SECTIONS.len());
        let pool = SECTIONS[section].1;
        let mut tags: Vec<&'static str> = (0..self.rng.random_range(1..=2))
            .map(|_| pool[self.rng.random_range(0..pool.len())])
            .collect();
        tags.dedup();
        let id = format!("a-{}", 1000 + idx);
        let site = self.pick_site();
        let title = self.headlines.next(&mut self.rng, section, idx);
        let mut payload = json!({
            "type": "article_published",
            "article_id": id,
            "title": title,
            "url": format!("https://news.example.com/{}/{id}", SECTIONS[section].0),
            // Published by name, as a newsroom's CMS sends them.
            "section": display_name(SECTIONS[section].0),
            "tags": tags.iter().map(|t| display_name(t)).collect::<Vec<_>>(),
            "published_at": at_ms,
            "author": "Newsroom Desk",
            "summary": copy::summary(&mut self.rng),
        });
        if let Some(site) = site {
            payload["site"] = json!(site);
            payload["url"] = json!(format!(
                "https://{site}.example.com/{}/{id}",
                SECTIONS[section].0
            ));
        }
        self.articles.push(Article {
            id: id.clone(),
            site,
            section,
            tags,
        });
        // A new article enters somewhere in the top third: news breaks.
        let rank = self.rng.random_range(0..=self.order.len() / 3);
        self.order.insert(rank, idx);
        Outgoing {
            topic: Topic::Articles,
            key: id,
            payload: payload.to_string().into_bytes(),
            content_type: None,
        }
    }

    /// A site for a new article, by the sites' shares; `None` without sites.
    fn pick_site(&mut self) -> Option<&'static str> {
        let sites = self.shape.sites;
        let total: f64 = sites.iter().map(|(_, w)| w).sum();
        let mut roll = self.rng.random::<f64>() * total;
        for (site, w) in sites {
            if roll < *w {
                return Some(site);
            }
            roll -= w;
        }
        sites.last().map(|(s, _)| *s)
    }

    /// The site of the first article published, if sites are set.
    pub fn first_site(&self) -> Option<&'static str> {
        self.articles.first().and_then(|a| a.site)
    }

    /// The next message at wall-clock time `now_ms`.
    pub fn next(&mut self, now_ms: i64) -> Outgoing {
        self.produced += 1;
        if let Some(m) = self.backlog.pop() {
            return m;
        }
        let every = self.shape.publish_every as u64;
        if every > 0 && self.produced.is_multiple_of(every) {
            return self.publish(now_ms);
        }
        if self
            .rng
            .random_bool(self.shape.drift_per_1000.min(1000) as f64 / 1000.0)
            && self.order.len() > 1
        {
            let a = self.rng.random_range(0..self.order.len());
            let b = self.rng.random_range(0..self.order.len());
            self.order.swap(a, b);
        }
        let surge = self.shape.surge_every as u64;
        if surge > 0 && self.produced.is_multiple_of(surge) && self.order.len() > 3 {
            let from = self
                .rng
                .random_range(self.order.len() / 2..self.order.len());
            let article = self.order.remove(from);
            self.order.insert(0, article);
        }
        if self.rng.random_bool(self.shape.invalid.clamp(0.0, 1.0)) {
            return self.malformed();
        }
        let event = match &self.last {
            Some(last) if self.rng.random_bool(self.shape.duplicates.clamp(0.0, 1.0)) => {
                let mut e = last.clone();
                e.occurred_at = now_ms;
                e
            }
            _ => self.behaviour(now_ms),
        };
        self.last = Some(event.clone());
        let key = event.article_id.clone();
        let (payload, content_type) = match self.shape.format {
            WireFormat::Json => (
                serde_json::to_vec(&event).expect("a generated event serialises"),
                None,
            ),
            WireFormat::Protobuf => (
                to_proto(&event).encode_to_vec(),
                Some("application/x-protobuf"),
            ),
        };
        Outgoing {
            topic: Topic::Events,
            key,
            payload,
            content_type,
        }
    }

    fn behaviour(&mut self, now_ms: i64) -> Generated {
        let n = self.order.len();
        if self.zipf_n != n {
            let s = self.shape.zipf_exponent.max(0.01);
            self.zipf = Zipf::new(n as f64, s).expect("valid Zipf");
            self.zipf_n = n;
        }
        let rank = (self.zipf.sample(&mut self.rng) as usize).clamp(1, n) - 1;
        let a = &self.articles[self.order[rank]];
        let visitor = self.rng.random_range(0..self.shape.visitors.max(1));
        let roll: f64 = self.rng.random();
        let bot = self.rng.random_bool(self.shape.bots.clamp(0.0, 1.0));
        let mut e = Generated {
            kind: "page_view",
            site: a.site,
            event_id: format!("e-{}", self.produced),
            article_id: a.id.clone(),
            occurred_at: now_ms - self.rng.random_range(0..=self.shape.time_jitter_ms),
            visitor_id: format!("v-{visitor}"),
            user_agent: if bot { CRAWLER } else { BROWSER },
            section: None,
            tags: None,
            network: None,
            engaged_seconds: None,
        };
        // Most producers leave section and tags to the article's metadata.
        if self.rng.random_bool(0.3) {
            e.section = Some(SECTIONS[a.section].0);
            e.tags = Some(a.tags.clone());
        }
        if roll < self.shape.shares {
            e.kind = "share";
            e.network = Some(["whatsapp", "facebook", "x", "email"][self.rng.random_range(0..4)]);
        } else if roll < self.shape.shares + self.shape.engagement {
            e.kind = "engagement";
            e.engaged_seconds = Some(self.rng.random_range(5..300));
        }
        e
    }

    fn malformed(&mut self) -> Outgoing {
        let payload: Vec<u8> = match self.rng.random_range(0..4) {
            0 => b"{\"type\":\"page_view\",\"article_id\":".to_vec(),
            1 => br#"{"type":"click","article_id":"a-1000","occurred_at":1}"#.to_vec(),
            2 => br#"{"type":"page_view","occurred_at":1}"#.to_vec(),
            _ => br#"{"type":"engagement","article_id":"a-1000","occurred_at":1,"engaged_seconds":-5}"#.to_vec(),
        };
        Outgoing {
            topic: Topic::Events,
            key: "malformed".to_string(),
            payload,
            content_type: None,
        }
    }
}

/// The protobuf form of a generated behaviour event.
fn to_proto(e: &Generated) -> proto::Event {
    let b = proto::Behaviour {
        event_id: e.event_id.clone(),
        article_id: e.article_id.clone(),
        occurred_at_ms: e.occurred_at,
        visitor_id: e.visitor_id.clone(),
        section: e.section.unwrap_or_default().to_string(),
        tags: e.tags.iter().flatten().map(|t| t.to_string()).collect(),
        user_agent: e.user_agent.to_string(),
        bot: false,
        site: e.site.unwrap_or_default().to_string(),
    };
    let kind = EventType::from_name(e.kind).unwrap_or(EventType::PageView);
    proto::Event::behaviour(
        kind,
        b,
        e.network.unwrap_or_default(),
        e.engaged_seconds.unwrap_or_default().into(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use popularity::event::decode::Decoder;
    use popularity::event::Event;
    use std::collections::HashMap;

    #[test]
    fn a_story_from_the_less_read_half_takes_off_every_surge_every_events() {
        let shape = Shape {
            articles: 100,
            surge_every: 5_100,
            publish_every: 0,
            drift_per_1000: 0,
            invalid: 0.0,
            ..Shape::default()
        };
        let mut n = Newsroom::new(shape, 1_700_000_000_000);
        let count = |n: &mut Newsroom, events: usize| {
            let mut by: HashMap<String, usize> = HashMap::new();
            for _ in 0..events {
                let m = n.next(1_700_000_000_000);
                if m.topic == Topic::Events {
                    *by.entry(m.key).or_default() += 1;
                }
            }
            by
        };
        // Messages 1-100 are the articles, 101-5,099 events; the surge
        // comes with message 5,100.
        let before = count(&mut n, 5_099);
        let after = count(&mut n, 5_000);
        let (top, read) = after.iter().max_by_key(|(_, c)| **c).unwrap();
        let was = before.get(top).copied().unwrap_or(0);
        assert!(
            was * 5 < *read,
            "{top} took off from {was} to {read} events"
        );
    }

    #[test]
    fn headlines_never_repeat_and_read_as_sentences() {
        let mut n = Newsroom::new(
            Shape {
                articles: 3_000,
                ..Shape::default()
            },
            1_700_000_000_000,
        );
        let mut titles = std::collections::HashSet::new();
        for m in n.backlog.drain(..) {
            let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
            let t = v["title"].as_str().unwrap().to_string();
            assert!(t.chars().next().unwrap().is_uppercase(), "{t}");
            assert!(titles.insert(t.clone()), "repeated: {t}");
        }
        assert_eq!(titles.len(), 3_000);
    }

    fn decode_all(
        shape: Shape,
    ) -> (
        usize,
        usize,
        usize,
        std::collections::HashMap<String, usize>,
    ) {
        let now = 1_700_000_000_000;
        let mut n = Newsroom::new(shape, now);
        let d = Decoder::new(65_536, 300_000);
        let (mut published, mut invalid, mut behaviour) = (0, 0, 0);
        let mut views = std::collections::HashMap::new();
        for _ in 0..20_000 {
            let m = n.next(now);
            let info = m.info(now);
            match d.decode(&m.payload, &info) {
                Ok(Event::Published(_)) => published += 1,
                Ok(Event::Behaviour(b)) => {
                    behaviour += 1;
                    *views.entry(b.article_id.into_owned()).or_insert(0) += 1;
                }
                Ok(_) => {}
                Err(_) => invalid += 1,
            };
        }
        (published, invalid, behaviour, views)
    }

    #[test]
    fn traffic_is_valid_but_for_the_malformed_fraction_and_skewed() {
        for format in [WireFormat::Json, WireFormat::Protobuf] {
            let shape = Shape {
                invalid: 0.01,
                format,
                ..Shape::default()
            };
            let (published, invalid, behaviour, views) = decode_all(shape);
            assert!((200..260).contains(&published), "{published}");
            assert!(
                (100..=320).contains(&invalid),
                "{invalid} invalid of 20,000 at 1%"
            );
            assert_eq!(published + invalid + behaviour, 20_000);
            let mut counts: Vec<usize> = views.values().copied().collect();
            counts.sort_unstable_by(|a, b| b.cmp(a));
            // Zipf: the favourite gets far more than the median article.
            assert!(
                counts[0] > 10 * counts[counts.len() / 2],
                "{:?}",
                &counts[..5]
            );
        }
    }
}
