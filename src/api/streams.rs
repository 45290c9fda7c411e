//! `GET /v1/stream/rankings/{profile}` and `GET /v1/stream/rising`: a
//! ranking, or the rising list, as Server-Sent Events.
//!
//! Every distinct query has one poller task, shared by all its subscribers:
//! each tick it computes the list once and, when the order or the members
//! changed, publishes a new frame through a `watch` channel. 10,000 readers
//! of the same list cost one computation per tick, not 10,000. A frame's id
//! only grows (it is the process's change counter, seeded from the clock),
//! so a client that reconnects with `Last-Event-ID` of the current frame is
//! not sent it again. At most `api.max_streams` are open at once (then 503);
//! every stream ends when the server shuts down.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use std::net::IpAddr;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse as _, Response};
use futures::{Stream, StreamExt as _};
use parking_lot::Mutex;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use super::params::{AlertParams, RisingStreamParams, StreamParams, Strict};
use super::rankings::{compute_ranking, RankingQuery, Scope};
use super::rising::{compute_rising, RisingQuery};
use super::{ApiError, ApiState};
use crate::peer::{PeerAddr, Peers};

/// How often between comment lines that keep idle connections open.
pub const HEARTBEAT: Duration = Duration::from_secs(15);

/// A list a stream follows.
#[derive(Debug, Clone)]
pub(crate) enum Listing {
    /// A ranking (`event: ranking`).
    Ranking(RankingQuery),
    /// The rising list (`event: rising`).
    Rising(RisingQuery),
}

impl Listing {
    /// The same for every stream of the same list.
    fn key(&self) -> String {
        match self {
            Listing::Ranking(q) => q.key(),
            Listing::Rising(q) => q.key(),
        }
    }

    /// The name of its events.
    fn event(&self) -> &'static str {
        match self {
            Listing::Ranking(_) => "ranking",
            Listing::Rising(_) => "rising",
        }
    }

    /// The list now: its members in order, and its JSON.
    async fn compute(&self, state: &ApiState) -> Result<(Vec<String>, String), ApiError> {
        fn json(v: &impl serde::Serialize) -> String {
            serde_json::to_string(v).expect("JSON serialises")
        }
        Ok(match self {
            Listing::Ranking(q) => {
                let list = compute_ranking(state, q.clone()).await?;
                let members = list
                    .items
                    .iter()
                    .map(|i| i.article.article_id.clone())
                    .collect();
                (members, json(&list))
            }
            Listing::Rising(q) => {
                let list = compute_rising(state, q.clone()).await?;
                let members = list
                    .items
                    .iter()
                    .map(|i| i.article.article.article_id.clone())
                    .collect();
                (members, json(&list))
            }
        })
    }
}

/// One published state of a list.
#[derive(Debug)]
struct Frame {
    id: u64,
    /// The ranking response, as JSON.
    data: String,
}

/// The open streams of this replica and the pollers behind them.
pub struct Streams {
    pollers: Mutex<HashMap<String, watch::Receiver<Option<Arc<Frame>>>>>,
    permits: Arc<Semaphore>,
    /// Open streams per client address, and how many one may hold.
    per_client: Arc<Mutex<HashMap<IpAddr, usize>>>,
    max_per_client: usize,
    /// Whose `X-Forwarded-For` names the client.
    peers: Peers,
    tick: Duration,
    ids: Arc<AtomicU64>,
    closing: CancellationToken,
}

impl Streams {
    /// At most `max_streams` open at once, `max_per_client` of them from
    /// one client address; lists recomputed every `tick`.
    pub fn new(max_streams: usize, max_per_client: usize, peers: Peers, tick: Duration) -> Streams {
        Streams {
            pollers: Mutex::new(HashMap::new()),
            permits: Arc::new(Semaphore::new(max_streams)),
            per_client: Arc::new(Mutex::new(HashMap::new())),
            max_per_client,
            peers,
            tick,
            ids: Arc::new(AtomicU64::new(crate::now_ms().max(0) as u64)),
            closing: CancellationToken::new(),
        }
    }

    /// Takes a place for one more stream of `client`, or refuses it.
    fn admit_client(&self, client: Option<IpAddr>) -> Result<Option<ClientSlot>, ApiError> {
        let Some(ip) = client else { return Ok(None) };
        let mut open = self.per_client.lock();
        let n = open.entry(ip).or_insert(0);
        if *n >= self.max_per_client {
            return Err(ApiError::TooMany(format!(
                "{} streams are open from this address, the most one may hold; close one first",
                self.max_per_client
            )));
        }
        *n += 1;
        Ok(Some(ClientSlot {
            ip,
            open: self.per_client.clone(),
        }))
    }

    /// A place for one more stream of `client` on this replica, held as
    /// long as the stream; refused past either bound or at shutdown.
    fn admit(
        &self,
        client: Option<IpAddr>,
    ) -> Result<(OwnedSemaphorePermit, Option<ClientSlot>), ApiError> {
        if self.closing.is_cancelled() {
            return Err(ApiError::Overloaded("the server is shutting down".into()));
        }
        let slot = self.admit_client(client)?;
        let permit = self.permits.clone().try_acquire_owned().map_err(|_| {
            ApiError::Overloaded("too many open streams on this replica; try again shortly".into())
        })?;
        Ok((permit, slot))
    }

    /// Ends every stream (at shutdown) and refuses new ones.
    pub fn close(&self) {
        self.closing.cancel();
    }

    /// The frames of `query`'s list, starting its poller if none runs.
    fn subscribe(&self, state: &ApiState, query: Listing) -> watch::Receiver<Option<Arc<Frame>>> {
        let key = query.key();
        let mut pollers = self.pollers.lock();
        if let Some(rx) = pollers.get(&key) {
            return rx.clone();
        }
        let (tx, rx) = watch::channel(None);
        pollers.insert(key.clone(), rx.clone());
        let poll = Poller {
            state: state.clone(),
            query,
            key,
            tx,
            tick: self.tick,
            ids: self.ids.clone(),
            closing: self.closing.clone(),
        };
        tokio::spawn(poll.run());
        rx
    }
}

/// One stream's place among its client's; given back when the stream ends.
struct ClientSlot {
    ip: IpAddr,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut open = self.open.lock();
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// Recomputes one list every tick while anyone listens.
struct Poller {
    state: ApiState,
    query: Listing,
    key: String,
    tx: watch::Sender<Option<Arc<Frame>>>,
    tick: Duration,
    ids: Arc<AtomicU64>,
    closing: CancellationToken,
}

impl Poller {
    async fn run(self) {
        let mut tick = tokio::time::interval(self.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut shown: Option<Vec<String>> = None;
        loop {
            tokio::select! {
                _ = self.closing.cancelled() => break,
                _ = tick.tick() => {}
            }
            {
                // The map holds one receiver: with no other, nobody listens.
                let mut pollers = self.state.streams.pollers.lock();
                if self.tx.receiver_count() <= 1 {
                    pollers.remove(&self.key);
                    break;
                }
            }
            let (members, data) = match self.query.compute(&self.state).await {
                Ok(list) => list,
                Err(e) => {
                    tracing::warn!(error = %e, "a streamed list could not be computed; trying again next tick");
                    continue;
                }
            };
            if shown.as_ref() == Some(&members) {
                continue;
            }
            let frame = Frame {
                id: self.ids.fetch_add(1, Ordering::Relaxed) + 1,
                data,
            };
            shown = Some(members);
            self.tx.send_replace(Some(Arc::new(frame)));
        }
    }
}

/// Most Popular / Popular Reads as Server-Sent Events: `event: ranking`
/// with the JSON of the rankings route, at connect and whenever the list's
/// order or members change; comment heartbeats every 15 s.
#[utoipa::path(get, path = "/v1/stream/rankings/{profile}", tag = "rankings",
    params(
        ("profile" = String, Path, description = "Ranking profile, e.g. trending"),
        StreamParams,
        ("Last-Event-ID" = Option<String>, Header, description = "The id of the last event received; the same list is not sent again"),
    ),
    responses(
        (status = 200, description = "text/event-stream: each `ranking` event's data is a RankingResponse", content_type = "text/event-stream", body = super::model::RankingEvent),
        (status = 400, description = "Invalid parameter", body = super::model::ErrorBody),
        (status = 404, description = "Unknown profile or site", body = super::model::ErrorBody),
        (status = 429, description = "Too many open streams from this address", body = super::model::ErrorBody),
        (status = 503, description = "Too many open streams", body = super::model::ErrorBody),
    ))]
pub(super) async fn stream_ranking(
    State(state): State<ApiState>,
    Path(profile): Path<String>,
    Strict(p): Strict<StreamParams>,
    PeerAddr(peer): PeerAddr,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let mut q = RankingQuery::new(&state, profile, p.site, p.section, p.tag, p.limit.0)?;
    q.within = p.published_within.map(|w| w.0);
    let client = state.streams.peers.address(peer, &headers);
    Ok(stream(&state, Listing::Ranking(q), last_event_id(&headers), client)?.into_response())
}

/// What is taking off (`GET /v1/rising`) as Server-Sent Events: `event:
/// rising` with the JSON of the rising route, at connect and whenever the
/// list's order or members change; the same bounds as the rankings stream.
#[utoipa::path(get, path = "/v1/stream/rising", tag = "rankings",
    params(
        RisingStreamParams,
        ("Last-Event-ID" = Option<String>, Header, description = "The id of the last event received; the same list is not sent again"),
    ),
    responses(
        (status = 200, description = "text/event-stream: each `rising` event's data is a RisingResponse", content_type = "text/event-stream", body = super::model::RisingEvent),
        (status = 400, description = "Invalid parameter", body = super::model::ErrorBody),
        (status = 404, description = "Unknown site", body = super::model::ErrorBody),
        (status = 429, description = "Too many open streams from this address", body = super::model::ErrorBody),
        (status = 503, description = "Too many open streams", body = super::model::ErrorBody),
    ))]
pub(super) async fn stream_rising(
    State(state): State<ApiState>,
    Strict(p): Strict<RisingStreamParams>,
    PeerAddr(peer): PeerAddr,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let q = RisingQuery {
        scope: Scope::new(&state, p.site, p.section, p.tag)?,
        limit: p.limit.0,
        offset: 0,
    };
    let client = state.streams.peers.address(peer, &headers);
    Ok(stream(&state, Listing::Rising(q), last_event_id(&headers), client)?.into_response())
}

/// The `Last-Event-ID` a reconnecting client sends.
fn last_event_id(headers: &HeaderMap) -> Option<u64> {
    headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// The SSE response for `query`: the list at connect (unless the client's
/// `Last-Event-ID` is already the current frame), then every change.
fn stream(
    state: &ApiState,
    query: Listing,
    last_event_id: Option<u64>,
    client: Option<IpAddr>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let streams = &state.streams;
    // The permit and the client's slot live as long as the stream.
    let held = streams.admit(client)?;
    let event = query.event();
    let rx = streams.subscribe(state, query);
    let frames = futures::stream::unfold(
        (rx, last_event_id, held),
        move |(mut rx, mut last, held): (
            _,
            Option<u64>,
            (OwnedSemaphorePermit, Option<ClientSlot>),
        )| async move {
            loop {
                let current = rx.borrow_and_update().clone();
                if let Some(frame) = current.filter(|f| last != Some(f.id)) {
                    last = Some(frame.id);
                    let sse = Event::default()
                        .event(event)
                        .id(frame.id.to_string())
                        .data(frame.data.clone());
                    return Some((Ok(sse), (rx, last, held)));
                }
                rx.changed().await.ok()?;
            }
        },
    )
    .take_until(streams.closing.clone().cancelled_owned());
    Ok(Sse::new(frames).keep_alive(KeepAlive::new().interval(HEARTBEAT).text("heartbeat")))
}

/// Alerts as Server-Sent Events (DESIGN §14): `event: alert` with an
/// alert's JSON, once for each alert recorded (by any replica) while the
/// stream is open; comment heartbeats every 15 s; the same bounds as the
/// other streams.
#[utoipa::path(get, path = "/v1/stream/alerts", tag = "rankings",
    params(AlertParams),
    responses(
        (status = 200, description = "text/event-stream: each `alert` event's data is an Alert", content_type = "text/event-stream", body = super::model::Alert),
        (status = 400, description = "Invalid parameter", body = super::model::ErrorBody),
        (status = 404, description = "Unknown site", body = super::model::ErrorBody),
        (status = 429, description = "Too many open streams from this address", body = super::model::ErrorBody),
        (status = 503, description = "Too many open streams", body = super::model::ErrorBody),
    ))]
pub(super) async fn stream_alerts(
    State(state): State<ApiState>,
    Strict(p): Strict<AlertParams>,
    PeerAddr(peer): PeerAddr,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let site = match p.site {
        Some(s) => Some(
            state
                .sites
                .get(&s.0)
                .map(|site| site.id.clone())
                .ok_or_else(|| ApiError::NotFound(format!("unknown site {:?}", s.0)))?,
        ),
        None => None,
    };
    let client = state.streams.peers.address(peer, &headers);
    let held = state.streams.admit(client)?;
    let rx = state.alert_feed.subscribe();
    let frames = futures::stream::unfold((rx, held), move |(mut rx, held)| {
        let site = site.clone();
        async move {
            loop {
                match rx.recv().await {
                    Ok(item) if site.as_ref().is_none_or(|s| *s == item.scope) => {
                        let event = Event::default()
                            .event("alert")
                            .id(item.id.clone())
                            .data(item.json.clone());
                        return Some((Ok::<_, Infallible>(event), (rx, held)));
                    }
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(_) => return None,
                }
            }
        }
    })
    .take_until(state.streams.closing.clone().cancelled_owned());
    Ok(Sse::new(frames)
        .keep_alive(KeepAlive::new().interval(HEARTBEAT).text("heartbeat"))
        .into_response())
}
