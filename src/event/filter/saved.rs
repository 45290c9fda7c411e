//! The saved form of a [`Filter`]: deltas of what changed since the last
//! one, snapshots of the whole state, and the seed's text form. A restore
//! from the deltas in order gives the state they were taken from.

use super::{Filter, Key, Limits, Seed, Seen};

/// Bytes of one entry in a delta: key, first time, engaged seconds, then
/// (from format 2 on) the seconds its end is held.
pub(super) const ENTRY_BYTES: usize = 16 + 8 + 8 + 4;
/// An entry of format 1, written before windows were held: read as held 0.
const ENTRY_BYTES_V1: usize = 16 + 8 + 8;
/// Version byte, clock, entry count.
pub(super) const HEADER_BYTES: usize = 1 + 8 + 4;
const FORMAT_VERSION: u8 = 2;

/// What changed in a filter, to be saved with the batch it belongs to.
#[derive(Debug, Clone, PartialEq)]
pub struct Delta {
    /// The encoded entries.
    pub bytes: Vec<u8>,
    /// True when `bytes` is the whole state, replacing every earlier delta.
    pub snapshot: bool,
}

/// A saved state that cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("duplicate-filter state: {0}")]
pub struct Corrupt(pub &'static str);

impl Filter {
    /// The whole state, replacing every earlier delta.
    pub fn snapshot(&mut self) -> Delta {
        self.encode(true)
    }

    /// What changed since the last delta, or the whole state once the
    /// deltas written since the last snapshot hold twice as many entries
    /// as the state (so what is saved stays within about three times the
    /// state, and each entry is written a bounded number of times).
    pub fn delta(&mut self) -> Delta {
        let snapshot = self.logged + self.changed.windows.len() > 2 * self.seen.len() + 4096;
        self.encode(snapshot)
    }

    /// The changes since the last delta, or the whole state.
    fn encode(&mut self, snapshot: bool) -> Delta {
        let mut bytes = Vec::new();
        let mut n = 0u32;
        let mut put = |bytes: &mut Vec<u8>, (high, low): Key, s: &Seen| {
            // The 128-bit number high·2⁶⁴ + low, little-endian.
            bytes.extend_from_slice(&low.to_le_bytes());
            bytes.extend_from_slice(&high.to_le_bytes());
            bytes.extend_from_slice(&s.first_ms.to_le_bytes());
            bytes.extend_from_slice(&s.engaged_seconds.to_le_bytes());
            bytes.extend_from_slice(&s.held_s.to_le_bytes());
            n += 1;
        };
        if snapshot {
            self.sweep();
            bytes.reserve(HEADER_BYTES + ENTRY_BYTES * self.seen.len());
            bytes.resize(HEADER_BYTES, 0);
            for (k, s) in self.seen.iter() {
                put(&mut bytes, *k, s);
            }
            // Every mark is left from an earlier delta now.
            self.changed.windows.clear();
            self.logged = n as usize;
        } else {
            bytes.reserve(HEADER_BYTES + ENTRY_BYTES * self.changed.windows.len());
            bytes.resize(HEADER_BYTES, 0);
            for (k, s) in self.changed.windows.drain(..) {
                put(&mut bytes, k, &s);
            }
            // An empty delta still takes a place in the saved log.
            self.logged += (n as usize).max(1);
        }
        bytes[0] = FORMAT_VERSION;
        bytes[1..9].copy_from_slice(&self.clock_ms.to_le_bytes());
        bytes[9..13].copy_from_slice(&n.to_le_bytes());
        Delta { bytes, snapshot }
    }

    /// The filter as the deltas `saved` (oldest first, from the last
    /// snapshot on) left it.
    pub fn restore(limits: Limits, seed: Seed, saved: &[Vec<u8>]) -> Result<Filter, Corrupt> {
        let mut f = Filter::new(limits, seed);
        // Sized once for every saved window (an upper bound: a window
        // changed twice is in two deltas): the table neither rehashes while
        // it is restored nor, at a steady rate, while the partition is read.
        let windows: usize = saved
            .iter()
            .filter_map(|b| Some(b.len().saturating_sub(HEADER_BYTES) / entry_bytes(b)?))
            .sum();
        f.seen.reserve(windows);
        for bytes in saved {
            let Some(entry) = entry_bytes(bytes) else {
                return Err(Corrupt("unknown format"));
            };
            if bytes.len() < HEADER_BYTES {
                return Err(Corrupt("truncated"));
            }
            let int = |at: usize| i64::from_le_bytes(bytes[at..at + 8].try_into().unwrap());
            f.clock_ms = f.clock_ms.max(int(1));
            let n = u32::from_le_bytes(bytes[9..13].try_into().unwrap()) as usize;
            if bytes.len() != HEADER_BYTES + n * entry {
                return Err(Corrupt("truncated"));
            }
            for e in bytes[HEADER_BYTES..].chunks_exact(entry) {
                let key: Key = (
                    u64::from_le_bytes(e[8..16].try_into().unwrap()),
                    u64::from_le_bytes(e[..8].try_into().unwrap()),
                );
                let first_ms = i64::from_le_bytes(e[16..24].try_into().unwrap());
                let engaged_seconds = f64::from_le_bytes(e[24..32].try_into().unwrap());
                let held_s = e
                    .get(32..36)
                    .map_or(0, |h| u32::from_le_bytes(h.try_into().unwrap()));
                f.seen.insert(
                    key,
                    Seen {
                        first_ms,
                        engaged_seconds,
                        held_s,
                        mark: 0,
                    },
                );
            }
            f.logged += n.max(1);
        }
        f.sweep();
        Ok(f)
    }
}

/// The size of an entry of the saved delta `bytes`, by its format; `None`
/// for a format this version does not read.
fn entry_bytes(bytes: &[u8]) -> Option<usize> {
    match bytes.first()? {
        1 => Some(ENTRY_BYTES_V1),
        &FORMAT_VERSION => Some(ENTRY_BYTES),
        _ => None,
    }
}

/// The seed's text form, as saved beside the state.
pub fn encode_seed(seed: &Seed) -> String {
    seed.iter().map(|k| format!("{k:016x}")).collect()
}

/// Parses [`encode_seed`]'s form.
pub fn decode_seed(s: &str) -> Option<Seed> {
    if s.len() != 128 || !s.is_ascii() {
        return None;
    }
    let mut seed = [0u64; 8];
    for (i, k) in seed.iter_mut().enumerate() {
        *k = u64::from_str_radix(&s[16 * i..16 * (i + 1)], 16).ok()?;
    }
    Some(seed)
}
