//! For the unit tests: the process's allocator, counting the allocations
//! each thread makes, so that a test can say how many a piece of code
//! made (tests run on threads of their own).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

struct Counting;

thread_local! {
    static MADE: Cell<u64> = const { Cell::new(0) };
}

fn count() {
    // Not during the thread's own teardown, when its counter is gone.
    let _ = MADE.try_with(|n| n.set(n.get() + 1));
}

// SAFETY: every call is passed to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

/// Allocations (and reallocations) `f` made on this thread.
pub fn made_by<T>(f: impl FnOnce() -> T) -> (T, u64) {
    let before = MADE.with(Cell::get);
    let out = f();
    (out, MADE.with(Cell::get) - before)
}
