//! Where the batch's events happened, interned: each distinct (article,
//! section, tags) an event named is stored once, and a counted event holds
//! its number. Reading an event of a known place allocates nothing; the
//! writer places each of them once per batch, not once per event.
//!
//! The table outlives the batch it was filled by (a place seen in one batch
//! is seen in the next), up to [`MAX_PLACES`], past which it starts again.

use std::borrow::Cow;
use std::hash::{BuildHasher, Hash, Hasher};

use hashbrown::HashTable;

/// Most places kept between batches.
const MAX_PLACES: usize = 100_000;

/// Most distinct places in one batch. A write's script for a group makes
/// one `ZINCRBY` per member and profile in one atomic call, during which
/// Redis serves nothing else; this bounds how long that call can take,
/// however many events a batch holds (it was bounded by the batch's 50,000
/// events when a batch was written every 50,000).
pub(super) const MAX_PLACES_PER_BATCH: usize = 50_000;

/// An article with the section and tags its events named (empty when they
/// named none: the article's metadata decides at write time).
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Place {
    pub article_id: Box<str>,
    pub section: Option<Box<str>>,
    pub tags: Vec<String>,
}

/// The interning table.
#[derive(Default)]
pub(super) struct Places {
    /// Numbers into `list`, by the hash of their place.
    table: HashTable<u32>,
    list: Vec<Place>,
    hasher: ahash::RandomState,
    /// Per place, the batch that last named it.
    named_in: Vec<u32>,
    /// The batch being read, and how many distinct places it named.
    batch: u32,
    distinct: usize,
}

impl Places {
    /// The number of the place named by an event, added if new.
    pub fn intern(
        &mut self,
        article_id: &str,
        section: Option<&str>,
        tags: &[Cow<'_, str>],
    ) -> u32 {
        let hash = self.hash(article_id, section, tags.iter().map(|t| &**t));
        let list = &self.list;
        let found = self.table.find(hash, |&i| {
            let p = &list[i as usize];
            *p.article_id == *article_id
                && p.section.as_deref() == section
                && p.tags.len() == tags.len()
                && p.tags.iter().zip(tags).all(|(a, b)| a == b)
        });
        if let Some(&i) = found {
            let named = &mut self.named_in[i as usize];
            if *named != self.batch {
                *named = self.batch;
                self.distinct += 1;
            }
            return i;
        }
        let i = u32::try_from(self.list.len()).expect("fewer places than u32::MAX");
        self.named_in.push(self.batch);
        self.distinct += 1;
        self.list.push(Place {
            article_id: article_id.into(),
            section: section.map(Into::into),
            tags: tags.iter().map(|t| t.to_string()).collect(),
        });
        let (hasher, list) = (&self.hasher, &self.list);
        self.table.insert_unique(hash, i, |&j| {
            let p = &list[j as usize];
            Self::hash_with(
                hasher,
                &p.article_id,
                p.section.as_deref(),
                p.tags.iter().map(String::as_str),
            )
        });
        i
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
            self.named_in.clear();
        }
    }

    fn hash<'t>(
        &self,
        article_id: &str,
        section: Option<&str>,
        tags: impl Iterator<Item = &'t str>,
    ) -> u64 {
        Self::hash_with(&self.hasher, article_id, section, tags)
    }

    fn hash_with<'t>(
        hasher: &ahash::RandomState,
        article_id: &str,
        section: Option<&str>,
        tags: impl Iterator<Item = &'t str>,
    ) -> u64 {
        let mut h = hasher.build_hasher();
        article_id.hash(&mut h);
        section.hash(&mut h);
        for t in tags {
            t.hash(&mut h);
        }
        h.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_place_gets_the_same_number_and_a_different_one_another() {
        let mut p = Places::default();
        let t = |v: &[&'static str]| v.iter().map(|s| Cow::Borrowed(*s)).collect::<Vec<_>>();
        let a = p.intern("a", Some("news"), &t(&["x", "y"]));
        assert_eq!(p.intern("a", Some("news"), &t(&["x", "y"])), a);
        let others = [
            p.intern("a", None, &t(&["x", "y"])),
            p.intern("a", Some("news"), &t(&["x"])),
            p.intern("a", Some("news"), &t(&["y", "x"])),
            p.intern("a", Some("news"), &t(&["xy"])),
            p.intern("b", Some("news"), &t(&["x", "y"])),
        ];
        let mut all = vec![a];
        all.extend(others);
        let mut distinct = all.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), all.len(), "{all:?}");
        assert_eq!(p.len(), 6);
        assert_eq!(p.distinct(), 6);
        p.next_batch();
        assert_eq!(p.distinct(), 0);
        p.intern("a", Some("news"), &t(&["x", "y"]));
        p.intern("a", Some("news"), &t(&["x", "y"]));
        p.intern("new", None, &[]);
        assert_eq!(p.distinct(), 2, "a known place and a new one, each once");
        assert_eq!(
            p.get(a),
            &Place {
                article_id: "a".into(),
                section: Some("news".into()),
                tags: vec!["x".into(), "y".into()],
            }
        );
    }
}
