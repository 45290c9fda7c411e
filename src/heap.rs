//! What the process's heap holds. The binary wraps its allocator in
//! [`Counting`], which keeps the bytes of the allocations alive now (as
//! requested, not as the allocator rounds them), and of the tables mapped
//! apart from it ([`count_mapped`]), so that the service's
//! memory can be told apart: what its structures hold
//! (`popularity_heap_bytes`) against what the allocator keeps from the
//! kernel (RSS less that, less what C libraries such as librdkafka hold in
//! glibc's malloc, [`libc_heap`]).
//!
//! The count is split over cache-line-sized shards, one per thread (a
//! thread's shard is chosen once), so that threads allocating at once do
//! not write to the same line; the total is their sum, whichever thread
//! frees what another allocated.

use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicUsize, Ordering::Relaxed};

const SHARDS: usize = 16;

#[repr(align(64))]
struct Shard(AtomicIsize);

static LIVE: [Shard; SHARDS] = [const { Shard(AtomicIsize::new(0)) }; SHARDS];
static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);
/// Bytes mapped from the kernel apart from the allocator (the duplicate
/// filters' large tables): few, large and rarely changed, so one counter.
static MAPPED: AtomicIsize = AtomicIsize::new(0);
static IN_USE: AtomicBool = AtomicBool::new(false);

thread_local! {
    static SHARD: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// Adds `delta` bytes to this thread's shard.
fn add(delta: isize) {
    // During a thread's teardown its slot may be gone: shard 0 then.
    let i = SHARD
        .try_with(|s| {
            if s.get() == usize::MAX {
                s.set(NEXT_SHARD.fetch_add(1, Relaxed) % SHARDS);
            }
            s.get()
        })
        .unwrap_or(0);
    LIVE[i].0.fetch_add(delta, Relaxed);
    if !IN_USE.load(Relaxed) {
        IN_USE.store(true, Relaxed);
    }
}

/// Adds `delta` bytes mapped (or, negative, unmapped) apart from the
/// allocator for a structure that holds them as its heap would.
pub fn count_mapped(delta: isize) {
    MAPPED.fetch_add(delta, Relaxed);
}

/// Bytes of the allocations alive now, and of what is mapped apart from
/// the allocator, when the process's allocator is a [`Counting`] one
/// (None otherwise: nothing was counted).
pub fn live_bytes() -> Option<u64> {
    if !IN_USE.load(Relaxed) {
        return None;
    }
    Some((allocated() + MAPPED.load(Relaxed)).max(0) as u64)
}

/// Bytes of the allocations alive now, as [`Counting`] counted them.
fn allocated() -> isize {
    LIVE.iter().map(|s| s.0.load(Relaxed)).sum()
}

/// What glibc's malloc holds, in bytes: `(in use, taken from the kernel)`
/// over every arena and its mmapped chunks. In a binary whose allocator is
/// [`Counting`] this is what C libraries (librdkafka, OpenSSL) allocate.
pub fn libc_heap() -> Option<(u64, u64)> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallinfo2 only reads malloc's statistics, under its locks.
        let m = unsafe { libc::mallinfo2() };
        Some(((m.uordblks + m.hblkhd) as u64, (m.arena + m.hblkhd) as u64))
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    None
}

/// An allocator that counts the bytes alive in what it allocates, on top
/// of `A`, which does the allocating.
pub struct Counting<A>(pub A);

// SAFETY: every call is passed to `A` unchanged; only the count is added.
unsafe impl<A: GlobalAlloc> GlobalAlloc for Counting<A> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { self.0.alloc(layout) };
        if !p.is_null() {
            add(layout.size() as isize);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { self.0.alloc_zeroed(layout) };
        if !p.is_null() {
            add(layout.size() as isize);
        }
        p
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { self.0.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            add(new_size as isize - layout.size() as isize);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { self.0.dealloc(ptr, layout) };
        add(-(layout.size() as isize));
    }
}

#[cfg(test)]
mod tests {
    use std::alloc::System;

    use super::*;

    /// The tests' own allocator is not a counting one, so what is counted
    /// here is only what these calls allocate (the tests run at once, so
    /// one test makes every call).
    #[test]
    fn live_bytes_follow_allocations_reallocations_and_frees_on_any_thread() {
        let a = Counting(System);
        let before = allocated();
        let small = Layout::from_size_align(24, 8).unwrap();
        let big = Layout::from_size_align(3 << 20, 64).unwrap();
        let (p, q) = unsafe { (a.alloc(small), a.alloc_zeroed(big)) };
        assert!(!p.is_null() && !q.is_null());
        assert_eq!(allocated(), before + 24 + (3 << 20));
        assert!(
            live_bytes().is_some(),
            "counted once a Counting allocator is used"
        );
        let p = unsafe { a.realloc(p, small, 1_000) };
        assert_eq!(allocated(), before + 1_000 + (3 << 20));
        // Freed by another thread than the one that allocated.
        let q = q as usize;
        std::thread::spawn(move || unsafe { Counting(System).dealloc(q as *mut u8, big) })
            .join()
            .unwrap();
        assert_eq!(allocated(), before + 1_000);
        unsafe { a.dealloc(p, Layout::from_size_align(1_000, 8).unwrap()) };
        assert_eq!(allocated(), before);
    }

    /// The tests' allocator is glibc's: what they hold is in its figures.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn glibc_figures_hold_what_is_allocated_there() {
        // Kept visibly alive: an optimised build drops an unread vector.
        let held = std::hint::black_box(vec![1u8; 8 << 20]);
        let (in_use, taken) = libc_heap().unwrap();
        assert!(in_use >= 8 << 20, "{in_use}");
        assert!(taken >= in_use, "{taken} < {in_use}");
        drop(held);
    }
}
