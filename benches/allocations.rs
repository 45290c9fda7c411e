//! Allocations per event on the reading path (decode → validate → filter
//! into the batch), counted by a wrapper around the binary's allocator.
//!
//! `cargo bench --bench allocations`. The newsroom's traffic is generated
//! first; the first half is read as a warm-up (articles and visitors seen,
//! the filter's table grown, the batch's buffers sized), then every
//! allocation made while the second half is read, in batches of
//! `BATCH` events as the consumer seals them, is counted.

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicU64, Ordering};

use popularity::config::Settings;
use popularity::ingest::Reading;
use popularity_cli::newsroom::{Newsroom, Shape, WireFormat};

/// mimalloc, counting every allocation and reallocation.
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { mimalloc::MiMalloc.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { mimalloc::MiMalloc.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const EVENTS: usize = 400_000;
const BATCH: usize = 50_000;
const NOW: i64 = 1_700_000_000_000;

/// Allocations per message over the second half of the traffic (from
/// the first chunk that starts in it).
fn per_event(format: WireFormat) -> f64 {
    let mut newsroom = Newsroom::new(
        Shape {
            format,
            ..Shape::default()
        },
        NOW,
    );
    // One millisecond of event time per message, as a live stream.
    let messages: Vec<_> = (0..EVENTS)
        .map(|i| (newsroom.next(NOW + i as i64), NOW + i as i64))
        .collect();
    let settings = Settings::defaults();
    let mut reading = Reading::new(&settings);
    let mut counted = 0;
    let mut before = 0;
    // In chunks of 1,024, as the consumer reads what it has fetched (on
    // two threads: a chunk spans the 12 partitions).
    let warm = EVENTS / 2 / 1024;
    for (c, chunk) in messages.chunks(1024).enumerate() {
        if c == warm {
            before = ALLOCATIONS.load(Ordering::Relaxed);
        }
        let incoming: Vec<_> = chunk
            .iter()
            .enumerate()
            .map(|(j, (m, at))| {
                let i = c * 1024 + j;
                m.incoming(&settings.kafka.topics, (i % 12) as i32, i as i64, Some(*at))
            })
            .collect();
        reading.read_all(&incoming);
        if c >= warm {
            counted += chunk.len();
        }
        if reading.messages() >= BATCH {
            reading.end_batch();
        }
    }
    let allocations = ALLOCATIONS.load(Ordering::Relaxed) - before;
    allocations as f64 / counted as f64
}

fn main() {
    // `cargo test --benches` runs this binary with `--bench` absent: keep it quick there.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    for (name, format) in [
        ("JSON", WireFormat::Json),
        ("protobuf", WireFormat::Protobuf),
    ] {
        println!(
            "reading path, {name}: {:.3} allocations per event (target <= 0.05)",
            per_event(format)
        );
    }
}
