//! The duplicate filter's unit tests: verdicts, windows and lateness,
//! what is held, and restores from the saved state.

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
            if i % 500 == 499 && f.changed.kept {
                f.delta();
            }
        }
        // Ten events a minute, kept while an event that is not stale
        // can still fall into their window (90 minutes), plus one
        // sweep's slack and one batch.
        assert!(f.tracked() <= 90 * 10 * 2 + 1024 + 500, "{}", f.tracked());
        assert!(f.changed.windows.len() <= 500);
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
    // Whatever the sweeps leave, the windows held stay within the table,
    // whose memory is an entry and a control byte per bucket.
    let entry = std::mem::size_of::<(Key, Seen)>() + 1;
    assert_eq!(entry, 41);
    assert!(f.tracked() <= f.seen.capacity(), "{}", f.tracked());
    // Swept at twice what the last sweep left: 90 minutes of windows and
    // the ones changed since the last delta.
    assert!(f.tracked() <= 2 * (90 * 60 + 1_001), "{}", f.tracked());
    assert!(f.bytes() >= f.tracked() * entry, "{}", f.bytes());
    // With the changed windows' last forms, 40 bytes each.
    assert!(
        f.bytes() <= 16_384 * entry + 2 * 1_001 * (entry - 1),
        "{}",
        f.bytes()
    );
}

#[test]
fn level_traffic_keeps_its_table_at_the_size_its_windows_need() {
    // One new window every `spacing` of clock for 28 to 69 hours: L =
    // 90 min / spacing windows are within the window and lateness. A
    // table rebuilt in place must be at most half full, so the smallest
    // table for L windows has B buckets, the first power of two with
    // L ≤ (7/8 · B) / 2; once the windows level off the table stays at
    // that size. (Grown whenever it ran out of room between sweeps, the
    // table doubled after 14 and 49 hours of level traffic.)
    for (spacing_ms, buckets) in [(1_000i64, 16_384usize), (2_500, 8_192)] {
        let live = (90 * MIN / spacing_ms) as usize;
        assert!(live * 16 <= buckets * 7 && live * 32 > buckets * 7);
        let mut f = filters();
        let mut sizes = Vec::new();
        for i in 0..100_000i64 {
            let at = NOW + i * spacing_ms;
            f.judge(&ev(EventType::PageView, &format!("v{i}"), "a", at, 0.0), at);
            if i % 1_000 == 0 {
                f.delta();
            }
            if i % 5_000 == 0 {
                sizes.push(f.seen.allocation_size());
            }
        }
        let table = buckets * std::mem::size_of::<(Key, Seen)>() + buckets + 16;
        assert!(
            sizes[3..].iter().all(|s| *s == table),
            "{spacing_ms} ms: {sizes:?}"
        );
        assert!(f.tracked() >= live, "{}", f.tracked());
    }
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
fn a_window_changed_several_times_between_deltas_is_saved_once_in_its_last_form() {
    let seed = random_seed();
    let mut live = Filter::new(LIMITS, seed);
    let read = |secs| ev(EventType::Engagement, "k", "a", NOW, secs);
    let mut saved = Vec::new();
    // Three deltas: the window opened, then engaged twice more, then a
    // new window for k after the old one ended, engaged again.
    for (round, events) in [
        vec![(read(100.0), NOW), (read(200.0), NOW)],
        vec![(read(300.0), NOW), (read(400.0), NOW)],
        vec![
            (
                ev(EventType::Engagement, "k", "a", NOW + 40 * MIN, 500.0),
                NOW + 40 * MIN,
            ),
            (
                ev(EventType::Engagement, "k", "a", NOW + 40 * MIN, 600.0),
                NOW + 40 * MIN,
            ),
        ],
    ]
    .into_iter()
    .enumerate()
    {
        for (e, r) in &events {
            assert_eq!(live.judge(e, *r), Verdict::Count(e.engaged_seconds));
        }
        let d = live.delta();
        assert!(!d.snapshot);
        // One entry: the window, however often it changed.
        assert_eq!(
            d.bytes.len(),
            saved::HEADER_BYTES + saved::ENTRY_BYTES,
            "round {round}"
        );
        saved.push(d.bytes);
        // What was saved holds the window's last form: restored, it takes
        // exactly what is left under the cap of its engaged seconds.
        let mut restored = Filter::restore(LIMITS, seed, &saved).unwrap();
        let (e, r) = events.last().unwrap();
        let held: f64 = events.iter().map(|(e, _)| e.engaged_seconds).sum::<f64>()
            + if round == 1 { 300.0 } else { 0.0 };
        let more = ev(EventType::Engagement, "k", "a", e.occurred_at_ms, 3600.0);
        assert_eq!(
            restored.judge(&more, *r),
            Verdict::Count(MAX_ENGAGED_SECONDS_PER_WINDOW - held)
        );
    }
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
