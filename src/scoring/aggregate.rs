//! One flush's increments, relative to a reference time, per unit of
//! writing, member and profile, with the counted events per article and
//! the fences the write checks and advances.

use ahash::HashMap;

use super::{destinations, growth, Group, Profiles};
use crate::event::{EventType, PerType};
use crate::store::{Fence, Layout, Unit};

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
