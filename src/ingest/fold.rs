//! The writer's fold, pure: a batch's counted events, what is
//! known of their articles and the fences of their groups, folded into one
//! [`Aggregate`]. No I/O: the writer reads what is missing first.
//!
//! [`route`] decides where each event goes (its article's groups, from the
//! event or the article's metadata) and which groups the batch touches;
//! [`fold`] then sums, per group, only the events above that group's fence
//! (see [`crate::fence`]) and names the fences the write must check and
//! advance.

use ahash::HashMap as AHashMap;

use crate::event::EventType;
use crate::fence::FenceBook;
use crate::scoring::{destinations, Aggregate, Profiles};
use crate::store::{Fence, Layout, Unit};

use super::batch::{Counted, PartitionRead};
use super::lifecycle::Known;
use super::places::{Place, Places};

/// Where one place's events of a batch go.
struct Route<'a> {
    article_id: &'a str,
    /// (unit, member), as [`destinations`] gives them in the store's units.
    entries: Vec<(Unit, String)>,
    /// The number of each entry's unit in [`Routes::units`].
    groups: Vec<usize>,
}

/// Where every counted event of a batch goes.
pub(super) struct Routes<'a> {
    places: Vec<Route<'a>>,
    /// Every unit the batch touches.
    pub units: Vec<Unit>,
    /// Per interned place, its number in `places`; [`WITHDRAWN`] for an
    /// unpublished article, [`UNPLACED`] for a place no event of the batch has.
    place_of: Vec<u32>,
    /// Per event type, the events of withdrawn articles (not counted).
    pub withdrawn: [u64; EventType::COUNT],
}

const UNPLACED: u32 = u32::MAX;
const WITHDRAWN: u32 = u32::MAX - 1;

/// Routes each distinct place of `counted` once: folding then allocates
/// nothing per event and hashes no group or partition name.
pub(super) fn route<'a>(
    counted: &[Counted],
    places: &'a Places,
    layout: Layout,
    known: impl Fn(&str) -> Known<'a>,
) -> Routes<'a> {
    let mut group_of: AHashMap<Unit, usize> = AHashMap::default();
    let mut p = Routes {
        places: Vec::new(),
        units: Vec::new(),
        place_of: vec![UNPLACED; places.len()],
        withdrawn: [0; EventType::COUNT],
    };
    for c in counted {
        let interned = c.place as usize;
        if p.place_of[interned] == UNPLACED {
            let Place { article_id, .. } = places.get(c.place);
            // The catalogue alone says where an article is ranked (DESIGN
            // §12): an event's own section and tags never create or reach a
            // group, so nobody who can send events can name one. An article
            // not yet published is ranked overall only (and listed nowhere
            // until it is); publishing it files its score under its section
            // and tags.
            let (site, section, tags) = match known(article_id) {
                Known::Withdrawn => {
                    p.place_of[interned] = WITHDRAWN;
                    p.withdrawn[c.kind.index()] += 1;
                    continue;
                }
                Known::Live {
                    site,
                    section,
                    tags,
                } => (site, section, tags),
                Known::Unknown => (None, None, &[][..]),
            };
            let entries = layout.place(destinations(article_id, site, section, tags));
            let numbers = entries
                .iter()
                .map(|(g, _)| {
                    *group_of.entry(g.clone()).or_insert_with(|| {
                        p.units.push(g.clone());
                        p.units.len() - 1
                    })
                })
                .collect();
            p.places.push(Route {
                article_id,
                entries,
                groups: numbers,
            });
            p.place_of[interned] = (p.places.len() - 1) as u32;
        } else if p.place_of[interned] == WITHDRAWN {
            p.withdrawn[c.kind.index()] += 1;
        }
    }
    p
}

/// Folds the placed events into an aggregate at `reference_ms`: each group
/// gets the events above its fence, and a fence per partition it got
/// events of. `fences` must know every unit of the routes.
pub(super) fn fold(
    routes: &Routes<'_>,
    counted: &[Counted],
    sources: &[PartitionRead],
    fences: &FenceBook,
    profiles: Profiles,
    reference_ms: i64,
) -> Aggregate {
    let Routes {
        places,
        units: groups,
        place_of,
        ..
    } = routes;
    let ns = sources.len();
    let fence_of: Vec<Vec<Option<i64>>> = groups
        .iter()
        .map(|g| sources.iter().map(|p| fences.get(g, p.id.name())).collect())
        .collect();
    // The newest fence per partition: an event past it is new to every
    // group (the usual case) and is summed per place; others are checked
    // group by group.
    let mut newest: Vec<Option<i64>> = vec![None; ns];
    for row in &fence_of {
        for (n, f) in newest.iter_mut().zip(row) {
            *n = (*n).max(*f);
        }
    }
    let np = profiles.len();
    let mut agg = Aggregate::new(profiles, reference_ms);
    let mut touched = vec![false; groups.len() * ns];
    let mut sums = vec![0.0; places.len() * np];
    let mut counts = vec![([0u64; EventType::COUNT], 0usize); places.len()];
    let mut read_from = vec![false; places.len() * ns];
    let mut incs = vec![0.0; np];
    for c in counted {
        let pi = place_of[c.place as usize];
        if pi >= WITHDRAWN {
            continue;
        }
        let (pi, si) = (pi as usize, c.source as usize);
        if newest[si].is_none_or(|f| c.offset > f) {
            agg.increments(c.kind, c.at_ms, c.units, &mut incs);
            sums[pi * np..(pi + 1) * np]
                .iter_mut()
                .zip(&incs)
                .for_each(|(a, b)| *a += b);
            counts[pi].0[c.kind.index()] += 1;
            counts[pi].1 += 1;
            read_from[pi * ns + si] = true;
        } else {
            let place = &places[pi];
            agg.add_placed(
                c.kind,
                place.article_id,
                &place.entries,
                c.at_ms,
                c.units,
                |k| {
                    let gi = place.groups[k];
                    let admit = fence_of[gi][si].is_none_or(|f| c.offset > f);
                    touched[gi * ns + si] |= admit;
                    admit
                },
            );
        }
    }
    for (pi, place) in places.iter().enumerate() {
        let (by_kind, n) = counts[pi];
        if n > 0 {
            let incs = &sums[pi * np..(pi + 1) * np];
            agg.add_summed(place.article_id, &place.entries, incs, by_kind, n);
        }
        for si in (0..ns).filter(|si| read_from[pi * ns + si]) {
            for &gi in &place.groups {
                touched[gi * ns + si] = true;
            }
        }
    }
    for (gi, group) in groups.iter().enumerate() {
        for (si, p) in sources.iter().enumerate() {
            if !touched[gi * ns + si] {
                continue;
            }
            let new = p.highest.expect("a partition with counted events was read");
            agg.fence(
                group.clone(),
                Fence {
                    new,
                    source: p.id.name().to_string(),
                    expected: fence_of[gi][si],
                },
            );
        }
    }
    agg
}
