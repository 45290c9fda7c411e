//! The writer's fold, pure: a batch's counted events, where the catalogue
//! routed them ([`Routes`]) and the fences of their units ([`Fences`]),
//! folded into one [`Aggregate`]. No I/O, and no call back into the steps
//! before it: it is given everything as data.
//!
//! [`fold`] sums, per unit, only the events above that unit's fence (see
//! [`crate::fence`]) and names the fences the write must check and advance.

use crate::event::EventType;
use crate::fence::Fences;
use crate::scoring::{Aggregate, Profiles};
use crate::store::{Fence, Unit};

use super::batch::{Counted, PartitionRead};
use super::catalog::{Routes, WITHDRAWN};

/// Folds the routed events into an aggregate at `reference_ms`: each unit
/// gets the events above its fence, and a fence per partition it got
/// events of. `fences` holds, per unit of `routes` and partition of
/// `sources` (in their orders), the fence read or last written.
pub(super) fn fold(
    routes: &Routes<'_>,
    counted: &[Counted],
    sources: &[PartitionRead],
    fence_of: &Fences,
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
    // An event past its partition's newest fence is new to every unit (the
    // usual case) and is summed per place; others are checked unit by unit.
    let newest = newest(fence_of, ns);
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
    fence_touched(&mut agg, groups, sources, fence_of, &touched);
    agg
}

/// The newest fence of each of `ns` partitions over every unit.
fn newest(fence_of: &Fences, ns: usize) -> Vec<Option<i64>> {
    let mut newest: Vec<Option<i64>> = vec![None; ns];
    for row in fence_of {
        for (n, f) in newest.iter_mut().zip(row) {
            *n = (*n).max(*f);
        }
    }
    newest
}

/// Names, for each unit and partition `touched` marks (unit-major), the
/// fence the write checks (as read) and advances (to the partition's
/// highest offset in the batch).
fn fence_touched(
    agg: &mut Aggregate,
    units: &[Unit],
    sources: &[PartitionRead],
    fence_of: &Fences,
    touched: &[bool],
) {
    let ns = sources.len();
    for (gi, unit) in units.iter().enumerate() {
        for (si, p) in sources.iter().enumerate() {
            if !touched[gi * ns + si] {
                continue;
            }
            let new = p.highest.expect("a partition with counted events was read");
            agg.fence(
                unit.clone(),
                Fence {
                    new,
                    source: p.id.name().to_string(),
                    expected: fence_of[gi][si],
                },
            );
        }
    }
}
