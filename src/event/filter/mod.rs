//! The filters that decide whether a valid behaviour event counts
//! (DESIGN §2, §8): bots, stale events and duplicates are counted by outcome
//! but not scored.
//!
//! Deduplication keeps state per (visitor, article, type) for
//! `dedupe_window` of event time, counted from the first counted event.
//! A repeat is a duplicate when it falls within that window **and** the
//! partition's clock has not passed the window's end by more than
//! `dedupe_lateness`; later than that it counts as a first event (DESIGN
//! §2). A window ends `dedupe_window` after its first event, or after the
//! clock when that event was counted if it came later: dating events in
//! the past does not shorten a window. Events keyed by article id land on
//! one partition, so there is one [`Filter`] per partition and one
//! consumer at a time owns it.
//!
//! Invariants, which make the state durable (DESIGN §4):
//!
//! - A verdict depends only on the filter's state and the message: the
//!   event, and the message's reference time (its Kafka timestamp; for a
//!   message without one, the partition's clock). Replaying a partition's
//!   messages from a saved state gives the same verdicts.
//! - Staleness is judged against the partition's clock (the latest
//!   reference time seen), which only moves forward; so a window can be
//!   forgotten once it can no longer make a duplicate: its end is more
//!   than `min(dedupe_lateness, max_event_age)` behind the clock (past
//!   its lateness, or no event that is not stale can fall into it).
//!   Forgetting it changes no verdict, whenever it happens, once the saved
//!   state knows the window's last form (changed windows wait for the
//!   next delta): the held state levels off at what `dedupe_window +
//!   dedupe_lateness` of traffic leaves.
//! - [`Filter::delta`] encodes what changed since the last delta, and
//!   [`Filter::restore`] rebuilds the state from the deltas in order.

use std::hash::{BuildHasherDefault, Hasher};

use crate::metrics::Outcome;

use super::{Behaviour, EventType};
use pages::Pages;

mod pages;
mod saved;

pub use saved::{decode_seed, encode_seed, Corrupt, Delta};

/// Most engaged seconds counted per visitor and article within one window.
pub const MAX_ENGAGED_SECONDS_PER_WINDOW: f64 = 3600.0;

/// What happens to a valid behaviour event.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Verdict {
    /// Counted, with this many units (1 for a view or share, seconds for engagement).
    Count(f64),
    /// From a crawler or flagged as a bot.
    Bot,
    /// Older than `max_event_age`.
    Stale,
    /// Same visitor, article and type within the window (or engagement over its cap).
    Duplicate,
}

/// What judging an event reads of it once its triple is named
/// ([`Filter::key_of`]): a reader holding events to judge together keeps
/// these instead of the whole event.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Facts {
    /// [`Behaviour::kind`].
    pub kind: EventType,
    /// [`Behaviour::occurred_at_ms`].
    pub occurred_at_ms: i64,
    /// [`Behaviour::engaged_seconds`].
    pub engaged_seconds: f64,
    /// [`Behaviour::bot`].
    pub bot: bool,
}

impl Facts {
    /// The facts of `e`.
    pub fn of(e: &Behaviour<'_>) -> Facts {
        Facts {
            kind: e.kind,
            occurred_at_ms: e.occurred_at_ms,
            engaged_seconds: e.engaged_seconds,
            bot: e.bot,
        }
    }
}

impl Verdict {
    /// Outcome label for metrics.
    pub fn outcome(&self) -> Outcome {
        match self {
            Verdict::Count(_) => Outcome::Applied,
            Verdict::Bot => Outcome::Bot,
            Verdict::Stale => Outcome::Stale,
            Verdict::Duplicate => Outcome::Duplicate,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Seen {
    first_ms: i64,
    engaged_seconds: f64,
    /// Whole seconds by which the window's end is held past `first_ms +
    /// dedupe_window`: how far the partition's clock was past the first
    /// event's time when it was counted (0 for an event on time). A window
    /// counted late ends a `dedupe_window` of clock after it was counted,
    /// so dating events in the past does not shorten it.
    held_s: u32,
    /// Where the window's last form waits in [`Filter`]'s `changed`, plus
    /// one (0: nowhere). A mark left from an earlier delta is told apart
    /// by the key found there ([`Changed::holds`]), so taking a delta
    /// clears every mark without touching the table.
    mark: u32,
}

impl Seen {
    /// A window opened by an event at `first_ms`, counted at `clock_ms`.
    fn opened(first_ms: i64, engaged_seconds: f64, clock_ms: i64) -> Seen {
        let late_ms = clock_ms.saturating_sub(first_ms).max(0);
        Seen {
            first_ms,
            engaged_seconds,
            held_s: u32::try_from((late_ms + 999) / 1_000).unwrap_or(u32::MAX),
            mark: 0,
        }
    }

    /// The window's end on the partition's clock: `dedupe_window` after
    /// its first event, or after the clock when that event was counted if
    /// it was later.
    fn end_ms(&self, window_ms: i64) -> i64 {
        self.first_ms
            .saturating_add(window_ms)
            .saturating_add(i64::from(self.held_s) * 1_000)
    }
}

/// The windows changed since the last delta, each in its last form, in
/// the order they first changed: a delta is written from this list alone,
/// not by looking each window up again in a table that is cold by then.
#[derive(Debug)]
struct Changed {
    /// Whether changes are kept for [`Filter::delta`] (a saved filter).
    kept: bool,
    windows: Vec<(Key, Seen)>,
}

impl Changed {
    /// Where `seen`'s mark points in `windows` (past the end for none).
    fn place(seen: &Seen) -> usize {
        (seen.mark as usize).wrapping_sub(1)
    }

    /// Whether `seen`, the window of `key`, waits here.
    fn holds(&self, key: &Key, seen: &Seen) -> bool {
        matches!(self.windows.get(Changed::place(seen)), Some((k, _)) if k == key)
    }

    /// Records `seen`'s form now as the window's last, marking it, when
    /// changes are kept.
    fn record(&mut self, key: Key, seen: &mut Seen) {
        if !self.kept {
            return;
        }
        match self.windows.get_mut(Changed::place(seen)) {
            Some((k, last)) if *k == key => *last = *seen,
            _ => {
                // At most one entry per event of a batch, which
                // `ingest.max_batch_events` bounds far below u32::MAX.
                seen.mark = u32::try_from(self.windows.len() + 1).unwrap_or(0);
                self.windows.push((key, *seen));
            }
        }
    }
}

/// The limits a filter applies.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Events older than this (against the partition clock) are stale.
    pub max_age_ms: i64,
    /// Same visitor, article and type within this much event time are duplicates.
    pub window_ms: i64,
    /// ... while the partition's clock is at most this far past the
    /// window's end; later, a repeat counts as a first event.
    pub lateness_ms: i64,
}

/// The keys of the two hashes that name a (type, visitor, article) triple.
/// Random per partition, and saved with its state so that the next owner
/// names triples the same way.
pub type Seed = [u64; 8];

/// A new random [`Seed`].
pub fn random_seed() -> Seed {
    rand::random()
}

/// A (type, visitor, article) triple's name: two 64-bit hashes (as a pair,
/// not a `u128`, so that an entry of the table is 40 bytes, not 48).
pub type Key = (u64, u64);

/// Hashes a [`Key`] by folding its halves: they are already keyed hashes,
/// random to anyone without the partition's seed, so hashing them again
/// would only cost time.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = self.0.rotate_left(32) ^ v;
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
}

/// The filters of one partition, with their state.
#[derive(Debug)]
pub struct Filter {
    limits: Limits,
    /// Keyed by a 128-bit hash of (type, visitor, article): nothing is
    /// allocated per event and an entry takes about 40 bytes instead of a
    /// string each. Two independent, randomly keyed hashes make two
    /// different triples share a key with a probability of about n²/2¹²⁹
    /// (1e-25 for ten million windows). Large tables are mapped for
    /// themselves, so that an outgrown one goes back to the kernel.
    seen: hashbrown::HashMap<Key, Seen, BuildHasherDefault<KeyHasher>, Pages>,
    seed: Seed,
    keys: (ahash::RandomState, ahash::RandomState),
    /// The latest reference time seen: staleness is judged against it.
    clock_ms: i64,
    /// Windows changed since the last delta.
    changed: Changed,
    /// Entries in the deltas written since the last full snapshot.
    logged: usize,
    /// Windows held at which the table is swept: twice what the last
    /// sweep left, so that what is held stays within twice the windows
    /// within the horizon.
    sweep_at: usize,
}

impl Filter {
    /// An empty filter naming triples with `seed`, whose changes are kept
    /// for [`Filter::delta`].
    pub fn new(limits: Limits, seed: Seed) -> Filter {
        Filter::with(limits, seed, true)
    }

    /// An empty filter that is never saved (the memory store rebuilds its
    /// state from the topics): it keeps no record of changes.
    pub fn unsaved(limits: Limits) -> Filter {
        Filter::with(limits, random_seed(), false)
    }

    fn with(limits: Limits, seed: Seed, saved: bool) -> Filter {
        let s = seed;
        Filter {
            limits,
            seen: hashbrown::HashMap::with_hasher_in(Default::default(), Pages),
            seed,
            keys: (
                ahash::RandomState::with_seeds(s[0], s[1], s[2], s[3]),
                ahash::RandomState::with_seeds(s[4], s[5], s[6], s[7]),
            ),
            clock_ms: i64::MIN,
            changed: Changed {
                kept: saved,
                windows: Vec::new(),
            },
            logged: 0,
            sweep_at: 1024,
        }
    }

    /// The seed this filter names triples with.
    pub fn seed(&self) -> Seed {
        self.seed
    }

    /// Decides whether `e` counts, given the message's reference time, and
    /// remembers it for later duplicates when it does.
    pub fn judge(&mut self, e: &Behaviour<'_>, reference_ms: i64) -> Verdict {
        let key = self.key_of(e);
        self.judge_named(Facts::of(e), reference_ms, key)
    }

    /// The name of `e`'s (type, visitor, article) triple, when judging it
    /// may look the table up (a visitor, not a bot, a window); it depends
    /// on the event and the seed alone.
    pub fn key_of(&self, e: &Behaviour<'_>) -> Option<Key> {
        let visitor = e.visitor_id.as_deref()?;
        if e.bot || self.limits.window_ms <= 0 {
            return None;
        }
        let triple = (e.kind.index(), visitor, &*e.article_id);
        Some((self.keys.0.hash_one(triple), self.keys.1.hash_one(triple)))
    }

    /// Looks `key` up and forgets the answer: what the table holds for it
    /// is then in the cache. Events read together are looked up this way
    /// first, one after another, so that their cache misses overlap, where
    /// judged one at a time each waits for its own. Changes nothing.
    pub fn warm(&self, key: Key) {
        std::hint::black_box(self.seen.get(&key));
    }

    /// [`Filter::judge`] with `e`'s [`Filter::key_of`] given, from what
    /// judging reads of the event besides its triple.
    pub fn judge_named(&mut self, e: Facts, reference_ms: i64, key: Option<Key>) -> Verdict {
        self.clock_ms = self.clock_ms.max(reference_ms);
        if e.bot {
            return Verdict::Bot;
        }
        if self.clock_ms.saturating_sub(e.occurred_at_ms) > self.limits.max_age_ms {
            return Verdict::Stale;
        }
        let units = match e.kind {
            EventType::Engagement => e.engaged_seconds.min(MAX_ENGAGED_SECONDS_PER_WINDOW),
            _ => 1.0,
        };
        // No visitor, or no window: nothing to remember.
        let Some(key) = key else {
            return Verdict::Count(units);
        };
        let window = self.limits.window_ms;
        let fresh = Seen::opened(e.occurred_at_ms, units, self.clock_ms);
        let changed = &mut self.changed;
        let verdict = match self.seen.get_mut(&key) {
            Some(seen)
                if (e.occurred_at_ms - seen.first_ms).abs() < window
                    && self.clock_ms.saturating_sub(seen.end_ms(window))
                        <= self.limits.lateness_ms =>
            {
                match e.kind {
                    EventType::Engagement => {
                        let room = MAX_ENGAGED_SECONDS_PER_WINDOW - seen.engaged_seconds;
                        let take = units.min(room);
                        if take <= 0.0 && units > 0.0 {
                            Verdict::Duplicate
                        } else {
                            seen.engaged_seconds += take;
                            changed.record(key, seen);
                            Verdict::Count(take)
                        }
                    }
                    _ => Verdict::Duplicate,
                }
            }
            Some(seen) => {
                *seen = Seen {
                    mark: seen.mark,
                    ..fresh
                };
                changed.record(key, seen);
                Verdict::Count(units)
            }
            None => {
                self.make_room();
                let mut fresh = fresh;
                self.changed.record(key, &mut fresh);
                self.seen.insert(key, fresh);
                Verdict::Count(units)
            }
        };
        if self.seen.len() >= self.sweep_at {
            self.sweep();
        }
        verdict
    }

    /// Number of (visitor, article, type) windows held.
    pub fn tracked(&self) -> usize {
        self.seen.len()
    }

    /// Bytes of memory the filter holds: its table as allocated (an entry
    /// and a control byte per bucket) and its list of changed keys.
    pub fn bytes(&self) -> usize {
        self.seen.allocation_size()
            + self.changed.windows.capacity() * std::mem::size_of::<(Key, Seen)>()
    }

    /// Windows that end before this can make no duplicate any more: their
    /// end is more than `lateness` behind the clock, or no event that is
    /// not stale can fall into them (a window ends at least `dedupe_window`
    /// after its first event).
    fn horizon(&self) -> i64 {
        self.clock_ms
            .saturating_sub(self.limits.lateness_ms.min(self.limits.max_age_ms))
    }

    /// Makes room for one more window without growing the table when a
    /// sweep can: a table out of room before what it holds reaches
    /// `sweep_at` (its free buckets used up by windows and by the marks
    /// removed windows leave) is swept first, then rebuilt in place when
    /// the windows left fill at most half of it, or into one twice the
    /// size otherwise (hashbrown's rule). So the table doubles only when
    /// the windows within the horizon fill half of it, and once they level
    /// off it keeps its memory: no fresh pages are taken for it.
    fn make_room(&mut self) {
        if self.seen.len() < self.seen.capacity() {
            return;
        }
        self.sweep();
        self.seen.reserve(1);
    }

    /// Forgets windows past the horizon. Changes no verdict (see the
    /// module). A window changed since the last delta is kept until the
    /// delta is taken: the saved state must learn of the change, or a
    /// restore would bring back the window's earlier form.
    fn sweep(&mut self) {
        let (horizon, window) = (self.horizon(), self.limits.window_ms);
        let changed = &self.changed;
        self.seen
            .retain(|k, s| s.end_ms(window) >= horizon || changed.holds(k, s));
        self.sweep_at = (self.seen.len() * 2).max(1024);
    }

    /// The partition's clock: the latest reference time seen.
    pub fn clock(&self) -> Option<i64> {
        (self.clock_ms != i64::MIN).then_some(self.clock_ms)
    }
}

#[cfg(test)]
mod tests;
