//! A request's events made ready for the `events` topic: each one completed
//! as DESIGN §10 says (the request's user agent, a daily visitor when it
//! names none, the receive time when its own is missing or out of bounds)
//! and then validated by the consumer's own [`Decoder`], on the very bytes
//! that will be produced: what the collector accepts, the consumer counts.

use std::net::IpAddr;

use serde_json::{Map, Value};

use super::visitor::Visitors;
use crate::event::decode::{Decoder, MessageInfo};
use crate::event::{Behaviour, Event, EventType};
use crate::event::{Encoding, Invalid};
use crate::site::Sites;

/// One event, ready to produce.
#[derive(Debug)]
pub struct Prepared {
    /// The site it belongs to.
    pub site: String,
    /// The message key: the article's key ([`crate::site::Sites::key`]).
    pub article_id: String,
    /// The message, JSON.
    pub payload: Vec<u8>,
}

/// The events of one request: those to produce, and how many came from
/// crawlers (dropped).
#[derive(Debug, Default)]
pub struct Batch {
    /// To produce, in request order.
    pub events: Vec<Prepared>,
    /// Dropped as crawler traffic.
    pub bots: usize,
    /// Every site the request's events name, crawlers' included: the page
    /// that sent them must be one of each ([`super::gate`]).
    pub sites: Vec<String>,
}

/// Why a request's events were refused: nothing of it is produced.
#[derive(Debug, PartialEq)]
pub enum Refused {
    /// The body is not a JSON object or array of objects.
    NotJson(String),
    /// An empty array.
    Empty,
    /// More events than `collector.max_events_per_request`.
    TooMany {
        /// Events in the request.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// Event number `index` (0-based) is invalid.
    Event {
        /// Its position in the request, from 0.
        index: usize,
        /// What is wrong with it.
        reason: String,
    },
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::NotJson(e) => write!(
                f,
                "the body must be a JSON event or an array of events: {e}"
            ),
            Refused::Empty => f.write_str("the array holds no events"),
            Refused::TooMany { count, max } => {
                write!(f, "{count} events in one request; at most {max}")
            }
            Refused::Event { index, reason } => write!(f, "event {index}: {reason}"),
        }
    }
}

/// What the request tells about its events.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// Receive time, epoch milliseconds.
    pub now_ms: i64,
    /// The site the reader is on (the page's host).
    pub host: &'a str,
    /// The reader's address, if known; never stored.
    pub client: Option<IpAddr>,
    /// The request's `User-Agent`.
    pub user_agent: &'a str,
}

/// The rules the events are completed and checked with.
pub struct Rules<'a> {
    /// The consumer's decoder.
    pub decoder: &'a Decoder,
    /// The network's sites: each event names one, or there is only one.
    pub sites: &'a Sites,
    /// Most engaged seconds one event may report (more counts as this).
    pub max_engaged_seconds: f64,
    /// Daily visitor ids.
    pub visitors: &'a Visitors,
    /// Oldest event time kept (older ones get the receive time).
    pub max_age_ms: i64,
    /// Most events in one request.
    pub max_events: usize,
}

/// The events of `body`, completed and validated; all or nothing.
pub fn prepare(body: &[u8], req: &Request<'_>, rules: &Rules<'_>) -> Result<Batch, Refused> {
    let value: Value = serde_json::from_slice(body).map_err(|e| Refused::NotJson(e.to_string()))?;
    let items = match value {
        Value::Array(items) => items,
        one @ Value::Object(_) => vec![one],
        _ => return Err(Refused::NotJson("neither an object nor an array".into())),
    };
    if items.is_empty() {
        return Err(Refused::Empty);
    }
    if items.len() > rules.max_events {
        return Err(Refused::TooMany {
            count: items.len(),
            max: rules.max_events,
        });
    }
    let mut out = Batch::default();
    for (index, item) in items.into_iter().enumerate() {
        let refuse = |reason: String| Refused::Event { index, reason };
        let Value::Object(event) = item else {
            return Err(refuse("must be a JSON object".into()));
        };
        let (site, prepared) = one(event, req, rules).map_err(refuse)?;
        if !out.sites.contains(&site) {
            out.sites.push(site);
        }
        match prepared {
            Some(p) => out.events.push(p),
            None => out.bots += 1,
        }
    }
    Ok(out)
}

/// One event's site, and the event completed and validated (`None` for
/// crawler traffic).
fn one(
    mut event: Map<String, Value>,
    req: &Request<'_>,
    rules: &Rules<'_>,
) -> Result<(String, Option<Prepared>), String> {
    let kind = event
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if matches!(kind, "article_published" | "article_unpublished") {
        return Err(format!(
            "{kind} is not accepted here: article metadata comes from the articles topic"
        ));
    }
    if req.user_agent.is_empty() {
        // Every browser names itself: a request that does not is a script's.
        event.remove("user_agent");
        event.insert("bot".into(), true.into());
    } else {
        event.insert("user_agent".into(), req.user_agent.into());
    }
    // What a browser says of its reader, section and tags is not believed
    // (DESIGN §12): the reader is the server's daily visitor, so the
    // duplicate filter holds whatever is sent, and an article's section
    // and tags come from its metadata.
    for field in ["visitor_id", "section", "tags"] {
        event.remove(field);
    }
    let client = req
        .client
        .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
    let visitor = rules
        .visitors
        .id(req.now_ms, req.host, client, req.user_agent);
    event.insert("visitor_id".into(), visitor.into());
    let named = event.get("site").and_then(Value::as_str);
    let site = rules
        .sites
        .resolve(named)
        .map_err(|e| format!("unknown_site: {e}"))?
        .id
        .clone();
    if let Some(seconds) = event.get("engaged_seconds").and_then(Value::as_f64) {
        if seconds > rules.max_engaged_seconds {
            event.insert("engaged_seconds".into(), rules.max_engaged_seconds.into());
        }
    }
    // Absent, or RFC 3339 text before 1970 (out of bounds like any old
    // time): the receive time.
    let before_1970 = |v: &Value| {
        v.as_str().is_some_and(|t| {
            time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
                .is_ok_and(|t| t.unix_timestamp_nanos() < 1_000_000)
        })
    };
    if event
        .get("occurred_at")
        .is_none_or(|v| v.is_null() || before_1970(v))
    {
        event.insert("occurred_at".into(), req.now_ms.into());
    }
    let mut payload = serde_json::to_vec(&event).expect("a JSON map serialises");
    let mut decoded = decode(rules.decoder, &payload, req.now_ms);
    // A time out of bounds (a retry queue's old event, a wrong clock)
    // becomes the receive time rather than a refusal.
    let out_of_bounds = match &decoded {
        Err(Invalid::FutureTimestamp { .. }) => true,
        Ok(Some(b)) => b.occurred_at_ms < req.now_ms - rules.max_age_ms,
        _ => false,
    };
    if out_of_bounds {
        event.insert("occurred_at".into(), req.now_ms.into());
        payload = serde_json::to_vec(&event).expect("a JSON map serialises");
        decoded = decode(rules.decoder, &payload, req.now_ms);
    }
    match decoded.map_err(|e| e.to_string())? {
        Some(b) if b.bot => Ok((site, None)),
        Some(b) => Ok((
            site.clone(),
            Some(Prepared {
                site,
                article_id: b.article_id.into_owned(),
                payload,
            }),
        )),
        None => Err(format!(
            "type must be one of {}",
            EventType::ALL.map(|t| t.as_str()).join(", ")
        )),
    }
}

/// A payload decoded as the consumer will: its behaviour event (owning its
/// texts, so the payload can be rebuilt), or `None` for any other type.
fn decode(
    decoder: &Decoder,
    payload: &[u8],
    now_ms: i64,
) -> Result<Option<Behaviour<'static>>, Invalid> {
    let event = decoder.decode(
        payload,
        &MessageInfo {
            encoding: Encoding::Json,
            key: None,
            timestamp_ms: Some(now_ms),
            lifecycle_topic: false,
            now_ms,
        },
    )?;
    Ok(match event {
        Event::Behaviour(b) => Some(b.into_owned()),
        _ => None,
    })
}
