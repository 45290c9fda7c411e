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
    /// Changed since the last [`Filter::delta`].
    dirty: bool,
}

impl Seen {
    /// A window opened by an event at `first_ms`, counted at `clock_ms`.
    fn opened(first_ms: i64, engaged_seconds: f64, clock_ms: i64, dirty: bool) -> Seen {
        let late_ms = clock_ms.saturating_sub(first_ms).max(0);
        Seen {
            first_ms,
            engaged_seconds,
            held_s: u32::try_from((late_ms + 999) / 1_000).unwrap_or(u32::MAX),
            dirty,
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
type Key = (u64, u64);

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
    /// (1e-25 for ten million windows).
    seen: hashbrown::HashMap<Key, Seen, BuildHasherDefault<KeyHasher>>,
    seed: Seed,
    keys: (ahash::RandomState, ahash::RandomState),
    /// The latest reference time seen: staleness is judged against it.
    clock_ms: i64,
    /// Keys changed since the last delta.
    changed: Vec<Key>,
    /// Entries in the deltas written since the last full snapshot.
    logged: usize,
    sweep_at: usize,
    /// Whether changes are kept for [`Filter::delta`] (a saved filter).
    saved: bool,
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
            seen: hashbrown::HashMap::default(),
            seed,
            keys: (
                ahash::RandomState::with_seeds(s[0], s[1], s[2], s[3]),
                ahash::RandomState::with_seeds(s[4], s[5], s[6], s[7]),
            ),
            clock_ms: i64::MIN,
            changed: Vec::new(),
            logged: 0,
            sweep_at: 1024,
            saved,
        }
    }

    /// The seed this filter names triples with.
    pub fn seed(&self) -> Seed {
        self.seed
    }

    /// Decides whether `e` counts, given the message's reference time, and
    /// remembers it for later duplicates when it does.
    pub fn judge(&mut self, e: &Behaviour<'_>, reference_ms: i64) -> Verdict {
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
        let Some(visitor) = &e.visitor_id else {
            return Verdict::Count(units);
        };
        let window = self.limits.window_ms;
        if window <= 0 {
            return Verdict::Count(units);
        }
        let triple = (e.kind.index(), &**visitor, &*e.article_id);
        let key: Key = (self.keys.0.hash_one(triple), self.keys.1.hash_one(triple));
        let tracked = self.saved;
        let fresh = Seen::opened(e.occurred_at_ms, units, self.clock_ms, tracked);
        let (verdict, changed) = match self.seen.get_mut(&key) {
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
                            (Verdict::Duplicate, false)
                        } else {
                            seen.engaged_seconds += take;
                            let was = std::mem::replace(&mut seen.dirty, tracked);
                            (Verdict::Count(take), tracked && !was)
                        }
                    }
                    _ => (Verdict::Duplicate, false),
                }
            }
            Some(seen) => {
                let was = seen.dirty;
                *seen = fresh;
                (Verdict::Count(units), tracked && !was)
            }
            None => {
                self.seen.insert(key, fresh);
                (Verdict::Count(units), tracked)
            }
        };
        if changed {
            self.changed.push(key);
        }
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
        self.seen.allocation_size() + self.changed.capacity() * std::mem::size_of::<Key>()
    }

    /// Windows that end before this can make no duplicate any more: their
    /// end is more than `lateness` behind the clock, or no event that is
    /// not stale can fall into them (a window ends at least `dedupe_window`
    /// after its first event).
    fn horizon(&self) -> i64 {
        self.clock_ms
            .saturating_sub(self.limits.lateness_ms.min(self.limits.max_age_ms))
    }

    /// Forgets windows past the horizon. Changes no verdict (see the
    /// module). A window changed since the last delta is kept until the
    /// delta is taken: the saved state must learn of the change, or a
    /// restore would bring back the window's earlier form.
    fn sweep(&mut self) {
        let (horizon, window) = (self.horizon(), self.limits.window_ms);
        self.seen
            .retain(|_, s| s.dirty || s.end_ms(window) >= horizon);
        self.sweep_at = (self.seen.len() * 2).max(1024);
    }

    /// The partition's clock: the latest reference time seen.
    pub fn clock(&self) -> Option<i64> {
        (self.clock_ms != i64::MIN).then_some(self.clock_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;
    const NOW: i64 = 1_000 * MIN;

    fn ev(kind: EventType, visitor: &str, article: &str, at: i64, secs: f64) -> Behaviour<'static> {
        Behaviour {
            kind,
            event_id: None,
            article_id: article.to_string().into(),
            occurred_at_ms: at,
            visitor_id: Some(visitor.to_string().into()),
            section: None,
            tags: Default::default(),
            engaged_seconds: secs,
            bot: false,
        }
    }

    const LIMITS: Limits = Limits {
        max_age_ms: 7 * 24 * 60 * MIN,
        window_ms: 30 * MIN,
        lateness_ms: 60 * MIN,
    };

    fn filters() -> Filter {
        Filter::new(LIMITS, random_seed())
    }

    #[test]
    fn a_second_view_within_the_window_is_a_duplicate() {
        let mut f = filters();
        let v = |at| ev(EventType::PageView, "v", "a", at, 0.0);
        assert_eq!(f.judge(&v(NOW - 40 * MIN), NOW), Verdict::Count(1.0));
        assert_eq!(f.judge(&v(NOW - 20 * MIN), NOW), Verdict::Duplicate);
        // 30 minutes after the first counted view a new window starts.
        assert_eq!(f.judge(&v(NOW - 10 * MIN), NOW), Verdict::Count(1.0));
        assert_eq!(f.judge(&v(NOW), NOW), Verdict::Duplicate);
    }

    #[test]
    fn type_visitor_and_article_each_separate_windows() {
        let mut f = filters();
        assert_eq!(
            f.judge(&ev(EventType::PageView, "v", "a", NOW, 0.0), NOW),
            Verdict::Count(1.0)
        );
        assert_eq!(
            f.judge(&ev(EventType::Share, "v", "a", NOW, 0.0), NOW),
            Verdict::Count(1.0)
        );
        assert_eq!(
            f.judge(&ev(EventType::PageView, "w", "a", NOW, 0.0), NOW),
            Verdict::Count(1.0)
        );
        assert_eq!(
            f.judge(&ev(EventType::PageView, "v", "b", NOW, 0.0), NOW),
            Verdict::Count(1.0)
        );
        assert_eq!(
            f.judge(&ev(EventType::Share, "v", "a", NOW, 0.0), NOW),
            Verdict::Duplicate
        );
    }

    #[test]
    fn events_without_a_visitor_are_never_duplicates() {
        let mut f = filters();
        let mut e = ev(EventType::PageView, "", "a", NOW, 0.0);
        e.visitor_id = None;
        assert_eq!(f.judge(&e, NOW), Verdict::Count(1.0));
        assert_eq!(f.judge(&e, NOW), Verdict::Count(1.0));
    }

    #[test]
    fn engagement_is_summed_and_capped_per_window() {
        let mut f = filters();
        let e = |at, s| ev(EventType::Engagement, "v", "a", at, s);
        assert_eq!(
            f.judge(&e(NOW - 29 * MIN, 3000.0), NOW),
            Verdict::Count(3000.0)
        );
        assert_eq!(
            f.judge(&e(NOW - 28 * MIN, 500.0), NOW),
            Verdict::Count(500.0)
        );
        assert_eq!(
            f.judge(&e(NOW - 27 * MIN, 500.0), NOW),
            Verdict::Count(100.0)
        );
        assert_eq!(f.judge(&e(NOW - 26 * MIN, 1.0), NOW), Verdict::Duplicate);
        // A new window.
        assert_eq!(
            f.judge(&e(NOW + MIN, 5000.0), NOW + MIN),
            Verdict::Count(3600.0)
        );
    }

    #[test]
    fn bots_and_stale_events_are_not_counted_nor_remembered() {
        let mut f = filters();
        let mut b = ev(EventType::PageView, "v", "a", NOW, 0.0);
        b.bot = true;
        assert_eq!(f.judge(&b, NOW), Verdict::Bot);
        let old = ev(
            EventType::PageView,
            "v",
            "a",
            NOW - 7 * 24 * 60 * MIN - 1,
            0.0,
        );
        assert_eq!(f.judge(&old, NOW), Verdict::Stale);
        assert_eq!(
            f.judge(&ev(EventType::PageView, "v", "a", NOW, 0.0), NOW),
            Verdict::Count(1.0)
        );
    }

    #[test]
    fn old_windows_are_forgotten_so_memory_stays_bounded() {
        let limits = Limits {
            max_age_ms: 60 * MIN,
            window_ms: 30 * MIN,
            lateness_ms: 7 * 24 * 60 * MIN,
        };
        // Unsaved, and saved with a delta every 500 events (a batch).
        for mut f in [Filter::unsaved(limits), Filter::new(limits, random_seed())] {
            for i in 0..100_000i64 {
                let at = NOW + i * MIN / 10;
                assert_eq!(
                    f.judge(&ev(EventType::PageView, &format!("v{i}"), "a", at, 0.0), at),
                    Verdict::Count(1.0)
                );
                if i % 500 == 499 && f.saved {
                    f.delta();
                }
            }
            // Ten events a minute, kept while an event that is not stale
            // can still fall into their window (90 minutes), plus one
            // sweep's slack and one batch.
            assert!(f.tracked() <= 90 * 10 * 2 + 1024 + 500, "{}", f.tracked());
            assert!(f.changed.len() <= 500);
        }
    }

    #[test]
    fn a_late_repeat_is_a_duplicate_until_the_clock_is_lateness_past_its_window() {
        let mut f = filters();
        let late = NOW - 3 * 60 * MIN;
        let v = |visitor: &str, at| ev(EventType::PageView, visitor, "a", at, 0.0);
        assert_eq!(f.judge(&v("late", late), late), Verdict::Count(1.0));
        // Many newer events, enough to sweep several times, while the clock
        // stays within the lateness of the window's end (late + 30 min + 60 min).
        let edge = late + 30 * MIN + 60 * MIN;
        for i in 0..20_000 {
            f.judge(&v(&format!("v{i}"), edge - 20_000 + i), edge - 20_000 + i);
        }
        assert_eq!(f.judge(&v("late", late + 1_000), edge), Verdict::Duplicate);
        // One millisecond later on the partition's clock the window is past
        // its lateness: the same repeat counts as a first event, and its
        // own repeat is a duplicate again.
        assert_eq!(
            f.judge(&v("late", late + 2_000), edge + 1),
            Verdict::Count(1.0)
        );
        assert_eq!(
            f.judge(&v("late", late + 3_000), edge + 1),
            Verdict::Duplicate
        );
    }

    #[test]
    fn a_view_dated_in_the_past_holds_its_window_for_the_window_and_lateness_of_clock() {
        // A client dates its views three hours back, more than window +
        // lateness (90 min) behind the partition's clock: its repeats are
        // duplicates for 30 + 60 minutes of clock after the first one was
        // counted, as an honest reader's would be, not counted every time.
        let mut f = filters();
        let dated = NOW - 3 * 60 * MIN;
        let v = |at| ev(EventType::PageView, "dated", "a", at, 0.0);
        assert_eq!(f.judge(&v(dated), NOW), Verdict::Count(1.0));
        let mut counted = 0;
        for i in 0..90 {
            let clock = NOW + i * MIN;
            if f.judge(&v(dated + 1_000 + i * 10_000), clock) != Verdict::Duplicate {
                counted += 1;
            }
        }
        assert_eq!(counted, 0, "repeats of a dated view counted");
        let edge = NOW + 30 * MIN + 60 * MIN;
        assert_eq!(f.judge(&v(dated + 2_000), edge), Verdict::Duplicate);
        // Past that, one more counts and holds its own window.
        assert_eq!(
            f.judge(&v(dated + 3_000), edge + 1_000),
            Verdict::Count(1.0)
        );
        assert_eq!(f.judge(&v(dated + 4_000), edge + 1_000), Verdict::Duplicate);
        // The same holds after a restore from the saved state.
        let mut restored = Filter::restore(LIMITS, f.seed(), &[f.snapshot().bytes]).unwrap();
        assert_eq!(
            restored.judge(&v(dated + 5_000), edge + 30 * MIN),
            Verdict::Duplicate
        );
    }

    #[test]
    fn a_state_saved_before_windows_were_held_is_read_as_held_zero() {
        // Format 1: header (version, clock, count), then key, first time,
        // engaged seconds.
        let mut f = filters();
        let at = NOW - 10 * MIN;
        f.judge(&ev(EventType::PageView, "v", "a", at, 0.0), at);
        let key = *f.seen.keys().next().unwrap();
        let mut v1 = vec![1u8];
        v1.extend_from_slice(&at.to_le_bytes());
        v1.extend_from_slice(&1u32.to_le_bytes());
        // The key as a 128-bit little-endian number: low half first.
        v1.extend_from_slice(&key.1.to_le_bytes());
        v1.extend_from_slice(&key.0.to_le_bytes());
        v1.extend_from_slice(&at.to_le_bytes());
        v1.extend_from_slice(&1.0f64.to_le_bytes());
        let mut restored = Filter::restore(LIMITS, f.seed(), &[v1]).unwrap();
        let repeat = ev(EventType::PageView, "v", "a", at + MIN, 0.0);
        assert_eq!(restored.judge(&repeat, NOW), Verdict::Duplicate);
        assert_eq!(restored.seen[&key].held_s, 0);
    }

    #[test]
    fn the_windows_held_level_off_at_the_window_and_lateness_of_traffic() {
        // A new visitor per event, one event a second of clock for ten
        // hours: only the last window + lateness (90 min) of windows, plus
        // the sweep's slack, is held; a filter without lateness would hold
        // all 36,000.
        let mut f = filters();
        let mut capacity = Vec::new();
        for i in 0..36_000i64 {
            let at = NOW + i * 1_000;
            f.judge(&ev(EventType::PageView, &format!("v{i}"), "a", at, 0.0), at);
            if i % 1_000 == 0 {
                f.delta();
            }
            if i % 3_600 == 0 {
                capacity.push(f.seen.allocation_size());
            }
        }
        // Once the windows level off (after 90 minutes) the table is not
        // reallocated any more (sweeps leave room that later windows take,
        // rehashed in place), so no fresh memory is taken for it: 16,384
        // buckets of 41 bytes for the 5,400 windows of 90 minutes and the
        // sweep's slack.
        assert!(
            capacity[3..].iter().all(|c| *c == capacity[3]),
            "{capacity:?}"
        );
        assert!(capacity[3] <= 16_384 * 41 + 64, "{capacity:?}");
        f.delta();
        f.judge(
            &ev(EventType::PageView, "w", "a", NOW + 36_000_000, 0.0),
            NOW + 36_000_000,
        );
        assert!(f.tracked() <= 2 * 90 * 60 + 1024 + 1_001, "{}", f.tracked());
        // The memory that takes: an entry and a control byte per bucket, a
        // bucket per held window at least; the table keeps the size it grew
        // to, which is that of the most windows ever held (the bound above).
        let entry = std::mem::size_of::<(Key, Seen)>() + 1;
        assert_eq!(entry, 41);
        assert!(f.bytes() >= f.tracked() * entry, "{}", f.bytes());
        let most = 2 * 90 * 60 + 1024 + 1_001;
        assert!(
            f.bytes() <= (most * 8 / 7usize).next_power_of_two() * entry + 2 * 1_001 * 16,
            "{}",
            f.bytes()
        );
    }

    /// A stream of one partition that looks real: repeat visitors, times
    /// out of order over two hours, engagement, bots.
    fn stream(n: usize, visitors: usize, seed: u64) -> Vec<(Behaviour<'static>, i64)> {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        (0..n)
            .map(|i| {
                let kind = EventType::ALL[rng.random_range(0..3)];
                let visitor = format!("v{}", rng.random_range(0..visitors));
                let article = format!("a{}", rng.random_range(0..10));
                let reference = NOW + i as i64 * 1_000;
                let at = reference - rng.random_range(0..2 * 60 * MIN);
                let mut e = ev(
                    kind,
                    &visitor,
                    &article,
                    at,
                    rng.random_range(0..900) as f64,
                );
                e.bot = rng.random_bool(0.01);
                (e, reference)
            })
            .collect()
    }

    #[test]
    fn a_filter_restored_from_its_deltas_gives_the_verdicts_of_one_that_never_stopped() {
        // Few enough readers that windows end and start again, so that the
        // deltas outgrow the state and snapshots replace them.
        let events = stream(40_000, 100, 7);
        let mut whole = filters();
        let want: Vec<Verdict> = events.iter().map(|(e, r)| whole.judge(e, *r)).collect();
        assert!(want.contains(&Verdict::Duplicate) && want.contains(&Verdict::Bot));
        let seed = whole.seed();
        // Deltas after every 100 events, restarted from them at four points.
        let mut saved: Vec<Vec<u8>> = Vec::new();
        let mut f = Filter::new(LIMITS, seed);
        let mut got = Vec::new();
        let mut snapshots = 0;
        for (i, (e, r)) in events.iter().enumerate() {
            got.push(f.judge(e, *r));
            if i % 100 == 99 {
                let d = f.delta();
                if d.snapshot {
                    snapshots += 1;
                    saved.clear();
                }
                saved.push(d.bytes);
            }
            if [2_999, 7_499, 11_999, 16_999, 31_099].contains(&i) {
                f = Filter::restore(LIMITS, seed, &saved).unwrap();
            }
        }
        assert!(snapshots > 0, "no snapshot was taken");
        assert_eq!(got, want);
    }

    #[test]
    fn a_window_changed_and_then_past_the_horizon_is_saved_before_it_is_forgotten() {
        let limits = Limits {
            max_age_ms: 60 * MIN,
            window_ms: 30 * MIN,
            lateness_ms: 7 * 24 * 60 * MIN,
        };
        let seed = random_seed();
        let mut live = Filter::new(limits, seed);
        let v = |visitor: &str, at| ev(EventType::PageView, visitor, "a", at, 0.0);
        assert_eq!(live.judge(&v("k", NOW), NOW), Verdict::Count(1.0));
        let mut saved = vec![live.delta().bytes];
        // A late view 45 minutes earlier starts a new window for k ...
        assert_eq!(
            live.judge(&v("k", NOW - 45 * MIN), NOW),
            Verdict::Count(1.0)
        );
        // ... which falls behind the horizon as the clock moves on, with
        // enough other readers to sweep.
        for i in 0..1_100 {
            live.judge(&v(&format!("o{i}"), NOW + 50 * MIN), NOW + 50 * MIN);
        }
        saved.push(live.delta().bytes);
        let mut restored = Filter::restore(limits, seed, &saved).unwrap();
        let late = v("k", NOW + 10 * MIN);
        assert_eq!(
            restored.judge(&late, NOW + 50 * MIN),
            live.judge(&late, NOW + 50 * MIN)
        );
    }

    #[test]
    fn seeds_and_saved_states_read_back_or_fail_clearly() {
        let seed = random_seed();
        assert_eq!(decode_seed(&encode_seed(&seed)), Some(seed));
        assert_eq!(decode_seed("zz"), None);
        assert!(Filter::restore(LIMITS, seed, &[vec![9, 0, 0]]).is_err());
        let mut f = filters();
        f.judge(&ev(EventType::Share, "v", "a", NOW, 0.0), NOW);
        let mut d = f.delta().bytes;
        d.pop();
        assert!(Filter::restore(LIMITS, seed, &[d]).is_err());
    }
}
