//! Scores: forward-decayed sums (DESIGN §3), pure and free of I/O.
//!
//! The score of a member at time T is `Σ weight(e) · 2^(−(T − t_e)/H)`. A
//! ranking stores `S = Σ weight · 2^((t_e − L)/H)` for a landmark L instead,
//! so that writes never touch other members and reads multiply by the shared
//! factor `2^((L − T)/H)`. L moves forward ("rebase") before S can overflow;
//! both store backends follow [`plan_landmark`] so they agree exactly.
//!
//! A flush first folds its events into an [`Aggregate`] of increments
//! relative to a reference time R; the store converts them to its landmark
//! with [`to_landmark`]. The lists an article's events reach are its
//! [`Group`]s ([`destinations`], in `group.rs`); the aggregate is in
//! `aggregate.rs`; the decay math is here.

use std::sync::Arc;

use crate::config::{ScoringSettings, WeightSettings};

mod aggregate;
mod group;

pub use aggregate::Aggregate;
pub use group::{destinations, Group};

/// A ranking's landmark moves forward once it is this many half-lives behind
/// the flush being applied: S stays below 2^64 times a decayed score, far
/// from f64 overflow (2^1024), while rebases stay rare.
pub const REBASE_AFTER_HALF_LIVES: f64 = 64.0;

/// At a rebase, members whose decayed score fell below this are dropped.
pub const SCORE_FLOOR: f64 = 1e-6;

/// One ranking profile.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    /// Name in URLs and keys.
    pub name: String,
    /// Half-life in milliseconds.
    pub half_life_ms: f64,
    /// Weights per event type.
    pub weights: WeightSettings,
}

/// The configured profiles, in order; shared by every part of the service.
pub type Profiles = Arc<[Profile]>;

/// Builds the profiles from validated settings.
pub fn profiles(settings: &ScoringSettings) -> Profiles {
    settings
        .profiles
        .iter()
        .map(|p| Profile {
            name: p.name.clone(),
            half_life_ms: p.half_life.as_secs_f64() * 1000.0,
            weights: p.weights,
        })
        .collect()
}

/// `2^((t − l)/h)`: the forward-decay weight of time `t` against landmark `l`.
pub fn growth(t_ms: i64, l_ms: i64, half_life_ms: f64) -> f64 {
    ((t_ms - l_ms) as f64 / half_life_ms).exp2()
}

/// The decayed score at `at_ms` of a stored value `s` kept against landmark `l_ms`.
pub fn decayed(s: f64, l_ms: i64, at_ms: i64, half_life_ms: f64) -> f64 {
    s * growth(l_ms, at_ms, half_life_ms)
}

/// Converts an increment kept against reference `r_ms` to landmark `l_ms`.
pub fn to_landmark(inc: f64, r_ms: i64, l_ms: i64, half_life_ms: f64) -> f64 {
    inc * growth(r_ms, l_ms, half_life_ms)
}

/// What a write at reference time `r_ms` must do to a ranking's landmark.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LandmarkPlan {
    /// Keep the landmark.
    Keep(i64),
    /// The ranking is new: start at the reference time.
    Start(i64),
    /// Move to `to`, multiplying every stored value by `factor` and then
    /// dropping those below [`SCORE_FLOOR`].
    Rebase {
        /// New landmark.
        to: i64,
        /// `2^(−(to − from)/H)`.
        factor: f64,
    },
}

impl LandmarkPlan {
    /// The landmark after the plan.
    pub fn landmark(&self) -> i64 {
        match *self {
            LandmarkPlan::Keep(l) | LandmarkPlan::Start(l) => l,
            LandmarkPlan::Rebase { to, .. } => to,
        }
    }
}

/// Decides the landmark for a write at `r_ms` given the current one.
pub fn plan_landmark(current: Option<i64>, r_ms: i64, half_life_ms: f64) -> LandmarkPlan {
    match current {
        None => LandmarkPlan::Start(r_ms),
        Some(l) if (r_ms - l) as f64 >= REBASE_AFTER_HALF_LIVES * half_life_ms => {
            LandmarkPlan::Rebase {
                to: r_ms,
                factor: growth(l, r_ms, half_life_ms),
            }
        }
        Some(l) => LandmarkPlan::Keep(l),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventType;
    use crate::store::Unit;
    use rand::{Rng, SeedableRng};
    use std::collections::HashMap;

    const HOUR: i64 = 3_600_000;

    fn test_profiles() -> Profiles {
        profiles(&crate::config::Settings::defaults().scoring)
    }

    /// The definition of DESIGN §3, summed directly.
    fn direct(events: &[(i64, f64)], at: i64, h: f64) -> f64 {
        events
            .iter()
            .map(|(t, w)| w * (-((at - t) as f64) / h).exp2())
            .sum()
    }

    /// One ranking kept the way both stores keep it: landmark plus stored values.
    #[derive(Default)]
    struct Ranking {
        landmark: Option<i64>,
        values: HashMap<String, f64>,
    }

    impl Ranking {
        fn apply(&mut self, r: i64, h: f64, incs: &HashMap<String, f64>) {
            let plan = plan_landmark(self.landmark, r, h);
            if let LandmarkPlan::Rebase { factor, .. } = plan {
                self.values.values_mut().for_each(|v| *v *= factor);
                self.values.retain(|_, v| *v >= SCORE_FLOOR);
            }
            let l = plan.landmark();
            self.landmark = Some(l);
            for (m, inc) in incs {
                *self.values.entry(m.clone()).or_default() += to_landmark(*inc, r, l, h);
            }
        }
        fn score(&self, m: &str, at: i64, h: f64) -> f64 {
            decayed(
                self.values.get(m).copied().unwrap_or(0.0),
                self.landmark.unwrap(),
                at,
                h,
            )
        }
    }

    fn relative_error(got: f64, want: f64) -> f64 {
        if want == 0.0 {
            got.abs()
        } else {
            ((got - want) / want).abs()
        }
    }

    #[test]
    fn forward_decay_matches_the_direct_sum_for_random_out_of_order_streams() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for profile in test_profiles().iter() {
            let h = profile.half_life_ms;
            for _ in 0..50 {
                let base = 1_700_000_000_000i64 + rng.random_range(0..1000) * HOUR;
                let mut ranking = Ranking::default();
                let mut truth: HashMap<String, Vec<(i64, f64)>> = HashMap::new();
                let mut now = base;
                for _ in 0..rng.random_range(1..20) {
                    now += rng.random_range(0..6 * HOUR);
                    let mut agg = Aggregate::new(test_profiles(), now);
                    for _ in 0..rng.random_range(1..200) {
                        let article = format!("a{}", rng.random_range(0..10));
                        // Out of order: up to three days late.
                        let t = now - rng.random_range(0..72 * HOUR);
                        let kind = EventType::ALL[rng.random_range(0..3)];
                        let units = if kind == EventType::Engagement {
                            rng.random_range(1.0..300.0)
                        } else {
                            1.0
                        };
                        agg.add(kind, &article, None, &[], t, units);
                        truth
                            .entry(article)
                            .or_default()
                            .push((t, profile.weights.of(kind) * units));
                    }
                    let idx = test_profiles()
                        .iter()
                        .position(|p| p.name == profile.name)
                        .unwrap();
                    let incs = agg.groups[&Unit::whole(&Group::All)]
                        .iter()
                        .map(|(m, v)| (m.clone(), v[idx]))
                        .collect();
                    ranking.apply(now, h, &incs);
                }
                let at = now + rng.random_range(0..24 * HOUR);
                for (m, events) in &truth {
                    let want = direct(events, at, h);
                    let got = ranking.score(m, at, h);
                    assert!(relative_error(got, want) <= 1e-9, "{m}: {got} vs {want}");
                }
            }
        }
    }

    #[test]
    fn rebasing_across_thousands_of_half_lives_stays_exact_and_finite() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let h = 60_000.0; // one-minute half-life: 5,000 half-lives in under four days
        let mut ranking = Ranking::default();
        let mut truth: HashMap<String, Vec<(i64, f64)>> = HashMap::new();
        let start = 1_700_000_000_000i64;
        let mut now = start;
        let mut rebases = 0;
        while now < start + 5_000 * 60_000 {
            now += rng.random_range(1..30) * 60_000;
            let plan = plan_landmark(ranking.landmark, now, h);
            rebases += matches!(plan, LandmarkPlan::Rebase { .. }) as usize;
            let mut incs: HashMap<String, f64> = HashMap::new();
            for _ in 0..rng.random_range(1..20) {
                let m = format!("a{}", rng.random_range(0..20));
                let t = now - rng.random_range(0..10 * 60_000);
                let w: f64 = rng.random_range(0.5..5.0);
                *incs.entry(m.clone()).or_default() += w * growth(t, now, h);
                truth.entry(m).or_default().push((t, w));
            }
            ranking.apply(now, h, &incs);
            assert!(ranking.values.values().all(|v| v.is_finite()));
        }
        assert!(rebases > 50, "only {rebases} rebases");
        for (m, events) in &truth {
            let want = direct(events, now, h);
            let got = ranking.score(m, now, h);
            if want >= 1e-3 {
                assert!(relative_error(got, want) <= 1e-9, "{m}: {got} vs {want}");
            } else {
                // Long-cold members may have been dropped at a rebase.
                assert!(got <= want * (1.0 + 1e-9) + 1e-300, "{m}: {got} vs {want}");
            }
        }
    }

    #[test]
    fn aggregation_spreads_an_event_over_its_groups() {
        let ps = test_profiles();
        let mut agg = Aggregate::new(ps.clone(), 10 * HOUR);
        let tags = vec!["politics".to_string(), "europe".to_string()];
        agg.add(EventType::Share, "a1", Some("news"), &tags, 8 * HOUR, 1.0);
        agg.add(
            EventType::Engagement,
            "a1",
            Some("news"),
            &tags,
            10 * HOUR,
            20.0,
        );
        let all = &agg.groups[&Unit::whole(&Group::All)]["a1"];
        // trending: 5 · 2^(−2h/2h) + 0.05 · 20
        assert!((all[0] - (2.5 + 1.0)).abs() < 1e-12, "{all:?}");
        assert_eq!(
            &agg.groups[&Unit::whole(&Group::Section("news".into()))]["a1"],
            all
        );
        assert_eq!(
            &agg.groups[&Unit::whole(&Group::Tag("europe".into()))]["a1"],
            all
        );
        assert_eq!(&agg.groups[&Unit::whole(&Group::Tags)]["politics"], all);
        assert_eq!(agg.groups.len(), 5);
        assert_eq!(agg.counts["a1"], [0, 1, 1]);
        assert_eq!(agg.events, 2);
    }

    #[test]
    fn landmarks_start_keep_and_rebase() {
        let h = 1000.0;
        assert_eq!(plan_landmark(None, 5, h), LandmarkPlan::Start(5));
        assert_eq!(plan_landmark(Some(0), 63_999, h), LandmarkPlan::Keep(0));
        match plan_landmark(Some(0), 64_000, h) {
            LandmarkPlan::Rebase { to, factor } => {
                assert_eq!(to, 64_000);
                assert_eq!(factor, 2f64.powi(-64));
            }
            p => panic!("{p:?}"),
        }
    }
}
