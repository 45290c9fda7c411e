//! Where the batch's events happened, interned: each distinct article an
//! event named is stored once, and a counted event holds its number (its
//! section and tags come from the catalogue when the batch is placed,
//! never from the event). Reading an event of a known article allocates
//! nothing; the writer places each of them once per batch, not once per
//! event.
//!
//! The table outlives the batch it was filled by (an article seen in one
//! batch is seen in the next), up to [`MAX_PLACES`], past which it starts
//! again.

use hashbrown::HashTable;

/// Most places kept between batches.
const MAX_PLACES: usize = 100_000;

/// Most distinct places in one batch. A write's script for a group makes
/// one `ZINCRBY` per member and profile in one atomic call, during which
/// Redis serves nothing else; this bounds how long that call can take,
/// however many events a batch holds (it was bounded by the batch's 50,000
/// events when a batch was written every 50,000).
pub(super) const MAX_PLACES_PER_BATCH: usize = 50_000;

/// An article that events of the batch named.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Place {
    pub article_id: Box<str>,
}

/// One entry of the table: a place's number, and the batch that last
/// named it, beside it (a counted event's lookup touches the entry and the
/// article's id, nothing else).
#[derive(Clone, Copy)]
struct Slot {
    place: u32,
    named_in: u32,
}

/// The interning table.
#[derive(Default)]
pub(super) struct Places {
    /// Numbers into `list`, by the hash of their article.
    table: HashTable<Slot>,
    list: Vec<Place>,
    hasher: ahash::RandomState,
    /// The batch being read, and how many distinct places it named.
    batch: u32,
    distinct: usize,
}

impl Places {
    /// The number of the place of `article_id`, added if new.
    pub fn intern(&mut self, article_id: &str) -> u32 {
        let hash = self.hasher.hash_one(article_id);
        let (list, batch) = (&self.list, self.batch);
        let found = self
            .table
            .find_mut(hash, |s| *list[s.place as usize].article_id == *article_id);
        if let Some(slot) = found {
            if slot.named_in != batch {
                slot.named_in = batch;
                self.distinct += 1;
            }
            return slot.place;
        }
        let place = u32::try_from(self.list.len()).expect("fewer places than u32::MAX");
        self.distinct += 1;
        self.list.push(Place {
            article_id: article_id.into(),
        });
        let (hasher, list) = (&self.hasher, &self.list);
        self.table.insert_unique(
            hash,
            Slot {
                place,
                named_in: batch,
            },
            |s| hasher.hash_one(&*list[s.place as usize].article_id),
        );
        place
    }

    /// Place number `i`.
    pub fn get(&self, i: u32) -> &Place {
        &self.list[i as usize]
    }

    /// How many places are known.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Distinct places named since [`Places::next_batch`].
    pub fn distinct(&self) -> usize {
        self.distinct
    }

    /// Starts the count of a new batch's places, and starts the table again
    /// when it holds more than it should keep (no event may refer to it then).
    pub fn next_batch(&mut self) {
        self.batch = self.batch.wrapping_add(1);
        self.distinct = 0;
        if self.list.len() > MAX_PLACES {
            self.table.clear();
            self.list.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_article_gets_the_same_number_and_a_different_one_another() {
        let mut p = Places::default();
        let a = p.intern("a");
        assert_eq!(p.intern("a"), a);
        let others = [p.intern("b"), p.intern("ab"), p.intern("A"), p.intern("")];
        let mut all = vec![a];
        all.extend(others);
        let mut distinct = all.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), all.len(), "{all:?}");
        assert_eq!(p.len(), 5);
        assert_eq!(p.distinct(), 5);
        p.next_batch();
        assert_eq!(p.distinct(), 0);
        p.intern("a");
        p.intern("a");
        p.intern("new");
        assert_eq!(p.distinct(), 2, "a known article and a new one, each once");
        assert_eq!(
            p.get(a),
            &Place {
                article_id: "a".into()
            }
        );
        let new = p.intern("new");
        assert_eq!(&*p.get(new).article_id, "new");
    }

    #[test]
    fn past_its_bound_the_table_starts_again_with_the_next_batch() {
        let mut p = Places::default();
        for i in 0..=MAX_PLACES {
            p.intern(&format!("a-{i}"));
        }
        assert_eq!(p.len(), MAX_PLACES + 1);
        p.next_batch();
        assert_eq!(p.len(), 0);
        assert_eq!(p.intern("a-7"), 0, "numbered from the start again");
        assert_eq!(p.distinct(), 1);
    }
}
