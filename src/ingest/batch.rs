//! What the reader hands the writer: everything read since the last flush,
//! as data (the reader fills it, the writer empties it, the loop bounds it).

use crate::event::{Event, EventType};
use crate::store::FilterWrite;

use super::partition::PartitionId;
use super::places::{Places, MAX_PLACES_PER_BATCH};

/// An invalid message on its way to the dead-letter topic.
pub(super) struct DeadLetter {
    pub key: Option<Vec<u8>>,
    /// The message's first [`DEAD_LETTER_MAX_BYTES`] bytes: a message too
    /// large for any topic must not stop the consumer (DESIGN §13).
    pub payload: Vec<u8>,
    /// The message's size as read.
    pub original_size: usize,
    pub reason: String,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

/// Most bytes of a message kept in its dead letter: well under Kafka's
/// default limit of a message (1 MB), so any dead-letter topic takes it.
/// An invalid message larger than this is dead-lettered truncated, its
/// size in the `x-original-size` header.
pub(super) const DEAD_LETTER_MAX_BYTES: usize = 256 * 1024;

/// A counted behaviour event waiting for the flush: 32 bytes, its texts
/// interned in the batch's [`Places`].
#[derive(Debug, Clone, Copy)]
pub(super) struct Counted {
    pub offset: i64,
    pub at_ms: i64,
    pub units: f64,
    /// Its number in [`Batch::places`].
    pub place: u32,
    /// The position of its partition in [`Batch::partitions`].
    pub source: u16,
    pub kind: EventType,
}

/// A partition read from since the last flush.
pub(super) struct PartitionRead {
    pub id: PartitionId,
    /// Highest offset read.
    pub highest: Option<i64>,
    /// Messages read from it.
    pub messages: usize,
}

/// An offset to commit once its batch is written: the next one to read.
pub(super) type Commit = (PartitionId, i64);

/// Everything read since the last flush.
#[derive(Default)]
pub(super) struct Batch {
    pub messages: usize,
    pub counted: Vec<Counted>,
    /// The places `counted` refers to (and others, of earlier batches).
    pub places: Places,
    pub lifecycle: Vec<Event<'static>>,
    pub dead: Vec<DeadLetter>,
    /// The duplicate filters' deltas of the partitions read, in order,
    /// saved once everything before them is applied.
    pub filters: Vec<FilterWrite>,
    /// The partitions this consumer reads, found by a linear scan: a
    /// consumer holds a few dozen at most, and nothing is allocated per message.
    pub partitions: Vec<PartitionRead>,
    /// The span of its flush, from when it was sealed until its commit.
    pub trace: Option<tracing::Span>,
}

impl Batch {
    /// Forgets what was flushed, keeping the partition names.
    /// Its buffers keep their capacity for the next batch.
    pub fn clear(&mut self) {
        self.partitions.iter_mut().for_each(|p| {
            p.highest = None;
            p.messages = 0;
        });
        self.messages = 0;
        self.counted.clear();
        self.places.next_batch();
        self.lifecycle.clear();
        self.dead.clear();
        self.filters.clear();
    }

    /// Whether the batch is due for a write whatever the time: it holds
    /// `max_messages`, or as many distinct places as one write should take.
    pub fn full(&self, max_messages: usize) -> bool {
        self.messages >= max_messages || self.places.distinct() >= MAX_PLACES_PER_BATCH
    }

    /// Appends what was read after this batch.
    pub fn absorb(&mut self, later: Batch) {
        self.messages += later.messages;
        self.lifecycle.extend(later.lifecycle);
        self.dead.extend(later.dead);
        self.filters.extend(later.filters);
        // Later's partitions and places, renumbered as this batch's.
        let sources: Vec<u16> = later
            .partitions
            .iter()
            .map(|p| {
                let i = self.position(p.id.topic(), p.id.partition());
                if let Some(highest) = p.highest {
                    let mine = &mut self.partitions[i];
                    mine.highest = Some(mine.highest.map_or(highest, |h| h.max(highest)));
                    mine.messages += p.messages;
                }
                i as u16
            })
            .collect();
        let mut places = vec![u32::MAX; later.places.len()];
        for c in later.counted {
            let place = &mut places[c.place as usize];
            if *place == u32::MAX {
                *place = self.places.intern(&later.places.get(c.place).article_id);
            }
            self.counted.push(Counted {
                place: *place,
                source: sources[c.source as usize],
                ..c
            });
        }
    }

    /// Records a message at `offset` of `topic/partition` and returns the
    /// partition's position.
    pub fn note(&mut self, topic: &str, partition: i32, offset: i64) -> u16 {
        let i = self.position(topic, partition);
        let p = &mut self.partitions[i];
        p.highest = Some(p.highest.map_or(offset, |h| h.max(offset)));
        p.messages += 1;
        u16::try_from(i).expect("a consumer reads fewer than 65,536 partitions")
    }

    /// The position of `topic/partition` in `partitions`, added if new.
    fn position(&mut self, topic: &str, partition: i32) -> usize {
        match find(&self.partitions, topic, partition, |p| &p.id) {
            Some(i) => i,
            None => {
                self.partitions.push(PartitionRead {
                    id: PartitionId::new(topic, partition),
                    highest: None,
                    messages: 0,
                });
                self.partitions.len() - 1
            }
        }
    }

    /// Partitions read since the last flush, with their highest offset.
    pub fn read_partitions(&self) -> impl Iterator<Item = (&PartitionRead, i64)> {
        self.partitions
            .iter()
            .filter_map(|p| p.highest.map(|h| (p, h)))
    }

    /// The offsets to commit once this batch is written.
    pub fn commits(&self) -> Vec<Commit> {
        self.read_partitions()
            .map(|(p, h)| (p.id.clone(), h + 1))
            .collect()
    }

    /// Drops what was read from `partitions` (their new owner reads it again).
    pub fn forget(&mut self, partitions: &[PartitionId]) {
        let revoked =
            |topic: &str, partition: i32| partitions.iter().any(|p| p.is(topic, partition));
        // Each partition's new position, or none if it goes.
        let mut kept = 0;
        let moved: Vec<Option<u16>> = self
            .partitions
            .iter()
            .map(|p| {
                (!partitions.contains(&p.id)).then(|| {
                    kept += 1;
                    kept - 1
                })
            })
            .collect();
        self.counted.retain_mut(|c| match moved[c.source as usize] {
            Some(i) => {
                c.source = i;
                true
            }
            None => false,
        });
        self.dead.retain(|d| !revoked(&d.topic, d.partition));
        self.filters.retain(|f| {
            !self
                .partitions
                .iter()
                .any(|p| partitions.contains(&p.id) && p.id.name() == f.source)
        });
        let dropped: usize = self
            .partitions
            .iter()
            .filter(|p| partitions.contains(&p.id))
            .map(|p| p.messages)
            .sum();
        self.partitions.retain(|p| !partitions.contains(&p.id));
        self.messages = self.messages.saturating_sub(dropped);
    }
}

/// The position of `topic/partition` in `list`, by a linear scan: a consumer
/// holds a few dozen partitions at most, and nothing is allocated per message.
pub(super) fn find<T>(
    list: &[T],
    topic: &str,
    partition: i32,
    id: impl Fn(&T) -> &PartitionId,
) -> Option<usize> {
    list.iter().position(|x| id(x).is(topic, partition))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_full_at_its_message_bound_or_at_as_many_places_as_one_write_takes() {
        let mut b = Batch {
            messages: 9,
            ..Batch::default()
        };
        assert!(!b.full(10));
        b.messages = 10;
        assert!(b.full(10));
        b.messages = 1;
        // The same place again and again is one place.
        for _ in 0..MAX_PLACES_PER_BATCH {
            b.places.intern("a");
        }
        assert!(!b.full(usize::MAX));
        for i in 1..MAX_PLACES_PER_BATCH {
            b.places.intern(&format!("a-{i}"));
        }
        assert!(b.full(usize::MAX));
        // The next batch counts again, with the places still known.
        b.clear();
        assert!(!b.full(usize::MAX));
        b.places.intern("a-1");
        assert_eq!(b.places.distinct(), 1);
    }
}
