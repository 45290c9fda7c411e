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
//! with [`to_landmark`].

use std::sync::Arc;

use ahash::HashMap;

use crate::config::{ScoringSettings, WeightSettings};
use crate::event::{EventType, PerType};
use crate::store::{Fence, Layout, Unit};

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

/// A group of rankings: the lists of one scope (every article, a section,
/// a tag, the tags), in the network or one of its sites.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Group {
    /// Every article.
    All,
    /// Articles of one section.
    Section(String),
    /// Articles carrying one tag.
    Tag(String),
    /// Tags themselves, ranked by the events of their articles.
    Tags,
    /// The group restricted to one site of a network (DESIGN §11): the
    /// group itself is the network's. Never holds a `Site`.
    Site(String, Box<Group>),
}

impl Group {
    /// This network group restricted to `site`; itself for `None`.
    pub fn of_site(self, site: Option<&str>) -> Group {
        match site {
            Some(site) => Group::Site(site.to_string(), Box::new(self)),
            None => self,
        }
    }
}

/// The increments of one flush, relative to a reference time, per group,
/// member and profile, plus the counted events per article and type.
#[derive(Debug, Clone)]
pub struct Aggregate {
    /// Reference time R of every increment.
    pub reference_ms: i64,
    /// Increments: unit → member → one value per profile.
    pub groups: HashMap<Unit, HashMap<String, Vec<f64>>>,
    /// Counted events: article → per [`EventType::index`].
    pub counts: HashMap<String, PerType<u64>>,
    /// Number of events folded in.
    pub events: usize,
    /// Fences to check and advance, per unit (see [`Fence`]).
    pub fences: HashMap<Unit, Vec<Fence>>,
    /// Per-profile increments of the event being added (reused).
    scratch: Vec<f64>,
    profiles: Profiles,
    /// The store's units ([`Aggregate::add`] places events in them).
    layout: Layout,
}

/// Where an event of an article lands: each group with the member it bumps
/// there (the article, or the tag in the tags ranking). Computed once per
/// article and flush, so adding an event allocates nothing.
/// In a network, `site` names the article's site: every group is then
/// written twice, the network's and the site's, so that both lists are
/// one sorted set each and exact (Popular Tags sums a tag over sites).
pub fn destinations(
    article_id: &str,
    site: Option<&str>,
    section: Option<&str>,
    tags: &[String],
) -> Vec<(Group, String)> {
    let mut out = Vec::with_capacity(2 * (2 + 2 * tags.len()));
    out.push((Group::All, article_id.to_string()));
    if let Some(s) = section {
        out.push((Group::Section(s.to_string()), article_id.to_string()));
    }
    for t in tags {
        out.push((Group::Tag(t.clone()), article_id.to_string()));
        out.push((Group::Tags, t.clone()));
    }
    if let Some(site) = site {
        for i in 0..out.len() {
            let (g, member) = out[i].clone();
            out.push((g.of_site(Some(site)), member));
        }
    }
    out
}

impl Aggregate {
    /// An empty aggregate with reference time `reference_ms`.
    pub fn new(profiles: Profiles, reference_ms: i64) -> Aggregate {
        Aggregate {
            reference_ms,
            groups: HashMap::default(),
            counts: HashMap::default(),
            events: 0,
            fences: HashMap::default(),
            scratch: Vec::new(),
            profiles,
            layout: Layout::WHOLE,
        }
    }

    /// The same aggregate placing the events [`Aggregate::add`] takes in
    /// the units of `layout` (a store's [`crate::store::RankingWrites::layout`]).
    pub fn laid_out(mut self, layout: Layout) -> Aggregate {
        self.layout = layout;
        self
    }

    /// Folds in one counted event: `units` views, shares or engaged seconds.
    pub fn add(
        &mut self,
        kind: EventType,
        article_id: &str,
        section: Option<&str>,
        tags: &[String],
        at_ms: i64,
        units: f64,
    ) {
        let place = self
            .layout
            .place(destinations(article_id, None, section, tags));
        self.add_placed(kind, article_id, &place, at_ms, units, |_| true);
    }

    /// Adds one event at a precomputed [`destinations`], in the groups whose
    /// entry `admit` accepts, asked with the entry's position in `place`
    /// (the others already hold the event: see [`Fence`]). All-time counts
    /// go with [`Group::All`].
    pub fn add_placed(
        &mut self,
        kind: EventType,
        article_id: &str,
        place: &[(Unit, String)],
        at_ms: i64,
        units: f64,
        mut admit: impl FnMut(usize) -> bool,
    ) {
        let mut incs = std::mem::take(&mut self.scratch);
        incs.resize(self.profiles.len(), 0.0);
        self.increments(kind, at_ms, units, &mut incs);
        let mut counted = false;
        for (k, (group, member)) in place.iter().enumerate() {
            if !admit(k) {
                continue;
            }
            counted |= *group.group() == Group::All;
            self.credit(group, member, &incs);
        }
        self.scratch = incs;
        if counted {
            let mut by_kind = [0; EventType::COUNT];
            by_kind[kind.index()] = 1;
            self.count(article_id, by_kind);
        }
        self.events += 1;
    }

    /// The increments of one event, one per profile, relative to the
    /// reference time.
    pub fn increments(&self, kind: EventType, at_ms: i64, units: f64, out: &mut [f64]) {
        for (o, p) in out.iter_mut().zip(self.profiles.iter()) {
            *o = p.weights.of(kind) * units * growth(at_ms, self.reference_ms, p.half_life_ms);
        }
    }

    /// Adds `events` events of one article, summed beforehand: `incs` (one
    /// per profile, from [`Aggregate::increments`]) to every group of
    /// `place`, and `counts` per event type to the all-time counts. The same
    /// as adding each event with [`Aggregate::add_placed`] admitting every
    /// group, up to the order of floating-point additions.
    pub fn add_summed(
        &mut self,
        article_id: &str,
        place: &[(Unit, String)],
        incs: &[f64],
        counts: PerType<u64>,
        events: usize,
    ) {
        for (group, member) in place {
            self.credit(group, member, incs);
        }
        if place.iter().any(|(u, _)| *u.group() == Group::All) {
            self.count(article_id, counts);
        }
        self.events += events;
    }

    /// Adds `incs` (one per profile) to `member` of `group`.
    fn credit(&mut self, group: &Unit, member: &str, incs: &[f64]) {
        let members = match self.groups.get_mut(group) {
            Some(m) => m,
            None => self.groups.entry(group.clone()).or_default(),
        };
        match members.get_mut(member) {
            Some(v) => v.iter_mut().zip(incs).for_each(|(a, b)| *a += b),
            None => {
                members.insert(member.to_string(), incs.to_vec());
            }
        }
    }

    /// Adds events per type to an article's all-time counts.
    fn count(&mut self, article_id: &str, by_kind: PerType<u64>) {
        match self.counts.get_mut(article_id) {
            Some(c) => c.iter_mut().zip(by_kind).for_each(|(c, n)| *c += n),
            None => {
                self.counts.insert(article_id.to_string(), by_kind);
            }
        }
    }

    /// Requires the store to find `fence` on `group` before applying, and to
    /// advance it in the same atomic write.
    pub fn fence(&mut self, group: Unit, fence: Fence) {
        self.fences.entry(group).or_default().push(fence);
    }

    /// Events of `kind` folded in (into the overall ranking).
    pub fn counted(&self, kind: EventType) -> u64 {
        self.counts.values().map(|c| c[kind.index()]).sum()
    }

    /// True when nothing was folded in.
    pub fn is_empty(&self) -> bool {
        self.events == 0
    }

    /// The profiles the increments are for.
    pub fn profiles(&self) -> &Profiles {
        &self.profiles
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
