//! The memory store's rebuild from the topics' history (DESIGN §15): how
//! far it is, for readiness, the log and `popularity_rebuild_remaining_messages`.

use super::partition::PartitionId;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::kafka::ConsumerState;
use crate::metrics::Metrics;

/// The memory store's rebuild from the topics' history: where each
/// partition's history began and ended when it was assigned.
pub(super) struct Rebuild {
    /// (low, high watermark, next offset applied) per partition.
    partitions: HashMap<PartitionId, (i64, i64, i64)>,
    total: u64,
    started: Instant,
    logged: Instant,
}

impl Rebuild {
    fn remaining(&self) -> u64 {
        self.partitions
            .values()
            .map(|(low, high, next)| (high - next.max(low)).max(0) as u64)
            .sum()
    }
}

/// How often the rebuild's progress is logged.
const REBUILD_LOG_EVERY: Duration = Duration::from_secs(10);

impl ConsumerState {
    /// Starts tracking the memory store's rebuild: each partition's
    /// (low, high) watermarks when it was assigned.
    pub fn start_rebuild(&self, partitions: &[(PartitionId, i64, i64)], metrics: &Metrics) {
        let now = Instant::now();
        let r = Rebuild {
            partitions: partitions
                .iter()
                .map(|(id, low, high)| (id.clone(), (*low, *high, *low)))
                .collect(),
            total: partitions
                .iter()
                .map(|(_, l, h)| (h - l).max(0) as u64)
                .sum(),
            started: now,
            logged: now,
        };
        tracing::info!(
            messages = r.total,
            "rebuilding the memory store from the topics"
        );
        metrics.rebuild_remaining.set(r.total as i64);
        *self.rebuild.lock() = Some(r);
        self.rebuilt_to(&[], metrics);
    }

    /// Records a flush written up to `commits` (partition, next offset).
    pub fn rebuilt_to(&self, commits: &[(PartitionId, i64)], metrics: &Metrics) {
        let mut guard = self.rebuild.lock();
        let Some(r) = guard.as_mut() else {
            return;
        };
        for (id, next) in commits {
            if let Some(p) = r.partitions.get_mut(id) {
                p.2 = p.2.max(*next);
            }
        }
        let remaining = r.remaining();
        metrics.rebuild_remaining.set(remaining as i64);
        if remaining == 0 {
            tracing::info!(
                messages = r.total,
                seconds = r.started.elapsed().as_secs_f64(),
                "memory store rebuilt"
            );
            *guard = None;
        } else if r.logged.elapsed() >= REBUILD_LOG_EVERY {
            r.logged = Instant::now();
            tracing::info!(
                read = r.total - remaining,
                of = r.total,
                "rebuilding the memory store"
            );
        }
    }

    /// True while the memory store's rebuild runs.
    pub fn rebuilding(&self) -> bool {
        self.rebuild.lock().is_some()
    }

    /// The rebuild's progress, while it runs: readiness reports it.
    pub fn rebuild_problem(&self) -> Option<String> {
        let r = self.rebuild.lock();
        let r = r.as_ref()?;
        Some(format!(
            "rebuilding the memory store: {} of {} messages read",
            r.total - r.remaining(),
            r.total
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(topic: &str, partition: i32) -> PartitionId {
        PartitionId::new(topic, partition)
    }

    #[test]
    fn the_rebuild_counts_down_to_ready_from_each_partitions_history() {
        let metrics = Metrics::new();
        let state =
            ConsumerState::new(crate::dependency::Dependency::new("kafka", metrics.clone()));
        assert_eq!(state.rebuild_problem(), None, "no rebuild, nothing to say");
        // events/0 holds 100..200 (older data dropped), events/1 nothing,
        // articles/0 holds 0..5.
        state.start_rebuild(
            &[
                (p("events", 0), 100, 200),
                (p("events", 1), 0, 0),
                (p("articles", 0), 0, 5),
            ],
            &metrics,
        );
        assert_eq!(
            state.rebuild_problem().as_deref(),
            Some("rebuilding the memory store: 0 of 105 messages read")
        );
        state.rebuilt_to(&[(p("events", 0), 150), (p("articles", 0), 5)], &metrics);
        assert_eq!(
            state.rebuild_problem().as_deref(),
            Some("rebuilding the memory store: 55 of 105 messages read")
        );
        assert_eq!(metrics.rebuild_remaining.get(), 50);
        // A later flush of fewer offsets does not go back; a position past
        // the watermark (control records) completes it.
        state.rebuilt_to(&[(p("events", 0), 120), (p("other", 0), 9)], &metrics);
        assert_eq!(metrics.rebuild_remaining.get(), 50);
        state.rebuilt_to(&[(p("events", 0), 201)], &metrics);
        assert_eq!(state.rebuild_problem(), None);
        assert!(!state.rebuilding());
        assert_eq!(metrics.rebuild_remaining.get(), 0);
    }
}
