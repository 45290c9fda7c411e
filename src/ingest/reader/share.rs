//! One read's messages, decoded and judged by share: the partitions are
//! dealt round-robin to `ingest.decode_threads` threads, each judging its
//! partitions' events in order (so that each filter's verdicts are those
//! of reading one message at a time), sixteen decoded before they are
//! judged so that their filters' lookups overlap.

use crate::event::decode::{Decoder, MessageInfo};
use crate::event::filter::{Facts, Key, Verdict};
use crate::event::{Encoding, Event, Text};
use crate::now_ms;

use super::{Incoming, Outcome, Partition};

/// One thread's share of the partitions read together: those at positions
/// `index`, `index + of`, `index + 2 × of`, …
#[derive(Debug, Clone, Copy)]
pub(super) struct Share {
    pub index: usize,
    pub of: usize,
}

impl Share {
    /// True when the partition at `position` is in this share.
    fn holds(self, position: usize) -> bool {
        position % self.of == self.index
    }
}

/// Decodes and judges the messages of one share of the partitions.
pub(super) struct Judge<'r, 'm> {
    pub decoder: &'r Decoder,
    pub articles_topic: &'r str,
    pub msgs: &'r [Incoming<'m>],
    /// Each message's position among the batch's partitions and the filters.
    pub parts: &'r [(u16, usize)],
}

/// Messages decoded before their events are judged, together: their
/// duplicate filters' lookups are made first, one after another, so that
/// their cache misses overlap (see [`Filter::warm`]).
const JUDGED_TOGETHER: usize = 16;

/// One message of a share, decoded. A behaviour event keeps what its
/// filter reads and its outcome needs (96 bytes, where the whole event
/// takes 224: each is moved in and out of the list judged together).
enum Decoded<'m> {
    /// Its outcome, known without its filter.
    Done(Outcome<'m>),
    /// A behaviour event for its partition's filter to judge at
    /// `reference`, with its triple's name.
    Judge {
        part: usize,
        facts: Facts,
        article_id: Text<'m>,
        reference: i64,
        key: Option<Key>,
    },
}

const _: () = assert!(std::mem::size_of::<Decoded<'static>>() <= 96);

impl<'m> Judge<'_, 'm> {
    /// The outcomes, in order, of the messages of the partitions in
    /// `share`, whose filters are in `filters`, indexed like the reader's
    /// partitions. Each partition's events are judged in order, as read
    /// one at a time.
    pub fn share(
        &self,
        mut filters: Vec<Option<&mut Partition>>,
        share: Share,
    ) -> Vec<Outcome<'m>> {
        let mut out = Vec::with_capacity(self.msgs.len());
        let mut decoded = smallvec::SmallVec::<[Decoded<'m>; JUDGED_TOGETHER]>::new();
        for (m, (_, part)) in self.msgs.iter().zip(self.parts) {
            if !share.holds(*part) {
                continue;
            }
            // The time the message is judged at: when it was produced, so
            // that a replay judges it the same way (for the rare message
            // without a timestamp, the partition's clock, which the events
            // before it move: they are judged first; the wall clock for a
            // first one).
            let produced = m.timestamp_ms.filter(|t| *t >= 0);
            if produced.is_none() {
                judge_all(&mut decoded, &mut filters, &mut out);
            }
            let p = filters[*part].as_deref().expect("the share's filter");
            let reference = produced.or_else(|| p.filter.clock()).unwrap_or_else(now_ms);
            decoded.push(self.decode(m, *part, p, reference));
            if decoded.len() == JUDGED_TOGETHER {
                judge_all(&mut decoded, &mut filters, &mut out);
            }
        }
        judge_all(&mut decoded, &mut filters, &mut out);
        out
    }

    fn decode(&self, m: &Incoming<'m>, part: usize, p: &Partition, reference: i64) -> Decoded<'m> {
        if p.covered.is_some_and(|c| m.offset <= c) {
            return Decoded::Done(Outcome::Covered);
        }
        let info = MessageInfo {
            encoding: Encoding::of(m.payload, || m.content_type),
            key: m.key,
            timestamp_ms: m.timestamp_ms,
            lifecycle_topic: m.topic == self.articles_topic,
            now_ms: reference,
        };
        Decoded::Done(match self.decoder.decode(m.payload, &info) {
            Err(invalid) => Outcome::Invalid(invalid),
            Ok(Event::Behaviour(event)) => {
                return Decoded::Judge {
                    part,
                    key: p.filter.key_of(&event),
                    facts: Facts::of(&event),
                    article_id: event.article_id,
                    reference,
                }
            }
            Ok(Event::Published(a)) => Outcome::Lifecycle(Box::new(Event::Published(a))),
            Ok(Event::Unpublished { article_id }) => {
                Outcome::Lifecycle(Box::new(Event::Unpublished { article_id }))
            }
        })
    }
}

/// Judges the `decoded` events in order, their lookups made first, and
/// puts every outcome into `out`.
fn judge_all<'m>(
    decoded: &mut smallvec::SmallVec<[Decoded<'m>; JUDGED_TOGETHER]>,
    filters: &mut [Option<&mut Partition>],
    out: &mut Vec<Outcome<'m>>,
) {
    for d in decoded.iter() {
        if let Decoded::Judge {
            part, key: Some(k), ..
        } = d
        {
            let p = filters[*part].as_deref().expect("the share's filter");
            p.filter.warm(*k);
        }
    }
    out.extend(decoded.drain(..).map(|d| match d {
        Decoded::Done(outcome) => outcome,
        Decoded::Judge {
            part,
            facts,
            article_id,
            reference,
            key,
        } => {
            let p = filters[part].as_deref_mut().expect("the share's filter");
            match p.filter.judge_named(facts, reference, key) {
                Verdict::Count(units) => Outcome::Counted {
                    article_id,
                    at_ms: facts.occurred_at_ms,
                    kind: facts.kind,
                    units,
                },
                v => Outcome::Filtered(facts.kind, v),
            }
        }
    }));
}

/// The pool of the threads that decode beside the caller's, when there
/// are to be `n` in all (none for one, or when the threads cannot be
/// started: then the caller's alone, which reads the same).
pub(super) fn decode_threads(n: usize) -> Option<rayon::ThreadPool> {
    if n <= 1 {
        return None;
    }
    rayon::ThreadPoolBuilder::new()
        .num_threads(n - 1)
        .thread_name(|i| format!("decode-{i}"))
        .build()
        .inspect_err(|e| {
            tracing::error!(error = %e, threads = n, "decoding threads not started; decoding on one")
        })
        .ok()
}
