//! The filters that decide whether a valid behaviour event counts
//! (DESIGN §2, §8): bots, stale events and duplicates are counted by outcome
//! but not scored.
//!
//! Deduplication keeps state per (visitor, article, type) for `dedupe_window`
//! of event time, counted from the first counted event. Events keyed by
//! article id land on one partition, so one consumer sees all of an article's
//! events and the state needs no sharing between replicas.

use ahash::HashMap;

use super::{Behaviour, EventType};

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
    pub fn outcome(&self) -> &'static str {
        match self {
            Verdict::Count(_) => "applied",
            Verdict::Bot => "bot",
            Verdict::Stale => "stale",
            Verdict::Duplicate => "duplicate",
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Seen {
    first_ms: i64,
    engaged_seconds: f64,
}

/// Bot, staleness and duplicate filters with their state.
#[derive(Debug)]
pub struct Filters {
    max_age_ms: i64,
    window_ms: i64,
    /// Keyed by a 128-bit hash of (type, visitor, article): nothing is
    /// allocated per event and an entry takes about 40 bytes instead of a
    /// string each. Two independent, randomly keyed hashes make two
    /// different triples share a key with a probability of about n²/2¹²⁹
    /// (1e-25 for ten million windows).
    seen: HashMap<u128, Seen>,
    keys: (ahash::RandomState, ahash::RandomState),
    newest_ms: i64,
    sweep_at: usize,
}

impl Filters {
    /// Filters with the given event age limit and dedupe window.
    pub fn new(max_age_ms: i64, window_ms: i64) -> Filters {
        Filters {
            max_age_ms,
            window_ms,
            seen: HashMap::default(),
            keys: (ahash::RandomState::new(), ahash::RandomState::new()),
            newest_ms: i64::MIN,
            sweep_at: 1024,
        }
    }

    /// Decides whether `e` counts, given the wall clock `now_ms`, and
    /// remembers it for later duplicates when it does.
    pub fn judge(&mut self, e: &Behaviour, now_ms: i64) -> Verdict {
        if e.bot {
            return Verdict::Bot;
        }
        if now_ms.saturating_sub(e.occurred_at_ms) > self.max_age_ms {
            return Verdict::Stale;
        }
        let units = match e.kind {
            EventType::Engagement => e.engaged_seconds.min(MAX_ENGAGED_SECONDS_PER_WINDOW),
            _ => 1.0,
        };
        let Some(visitor) = &e.visitor_id else {
            return Verdict::Count(units);
        };
        if self.window_ms <= 0 {
            return Verdict::Count(units);
        }
        self.newest_ms = self.newest_ms.max(e.occurred_at_ms);
        let triple = (e.kind.index(), visitor.as_str(), e.article_id.as_str());
        let key = (u128::from(self.keys.0.hash_one(triple)) << 64)
            | u128::from(self.keys.1.hash_one(triple));
        let window = self.window_ms;
        let verdict = match self.seen.get_mut(&key) {
            Some(seen) if (e.occurred_at_ms - seen.first_ms).abs() < window => match e.kind {
                EventType::Engagement => {
                    let room = MAX_ENGAGED_SECONDS_PER_WINDOW - seen.engaged_seconds;
                    let take = units.min(room);
                    if take <= 0.0 && units > 0.0 {
                        Verdict::Duplicate
                    } else {
                        seen.engaged_seconds += take;
                        Verdict::Count(take)
                    }
                }
                _ => Verdict::Duplicate,
            },
            Some(seen) => {
                *seen = Seen {
                    first_ms: e.occurred_at_ms,
                    engaged_seconds: units,
                };
                Verdict::Count(units)
            }
            None => {
                self.seen.insert(
                    key,
                    Seen {
                        first_ms: e.occurred_at_ms,
                        engaged_seconds: units,
                    },
                );
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

    /// Forgets windows that no event can fall into any more: older than one
    /// window before the newest event plus the accepted age.
    fn sweep(&mut self) {
        let horizon = self
            .newest_ms
            .saturating_sub(self.window_ms.saturating_mul(2));
        self.seen.retain(|_, s| s.first_ms >= horizon);
        self.sweep_at = (self.seen.len() * 2).max(1024);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;
    const NOW: i64 = 1_000 * MIN;

    fn ev(kind: EventType, visitor: &str, article: &str, at: i64, secs: f64) -> Behaviour {
        Behaviour {
            kind,
            event_id: None,
            article_id: article.into(),
            occurred_at_ms: at,
            visitor_id: Some(visitor.into()),
            section: None,
            tags: vec![],
            engaged_seconds: secs,
            bot: false,
        }
    }

    fn filters() -> Filters {
        Filters::new(7 * 24 * 60 * MIN, 30 * MIN)
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
        let mut f = filters();
        for i in 0..100_000i64 {
            let at = NOW - 7 * 24 * 60 * MIN + i * MIN / 10;
            assert_eq!(
                f.judge(&ev(EventType::PageView, &format!("v{i}"), "a", at, 0.0), at),
                Verdict::Count(1.0)
            );
        }
        // Six events a minute, kept for at most two windows (60 minutes) plus one sweep's slack.
        assert!(f.tracked() <= 2 * 60 * 10 * 2 + 1024, "{}", f.tracked());
    }
}
