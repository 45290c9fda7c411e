//! Where a filter's table lives. A table grows by doubling: the larger
//! one is allocated, the windows move, the smaller one is freed. Freed to
//! the process's allocator, the old table stays in the process (the
//! allocator keeps freed memory for later allocations of the size, and
//! none comes once every partition's table has passed it), so the
//! process's memory less the tables would grow by what the tables were
//! on their way to their size. A table of [`MAPPED_FROM`] or more is
//! therefore mapped from the kernel for itself and unmapped when freed:
//! the memory of an outgrown table goes back at once.

use std::alloc::Layout;
use std::ptr::NonNull;

use allocator_api2::alloc::{AllocError, Allocator, Global};

/// Tables at least this large are mapped for themselves (64 pages: a
/// mapping's two system calls are nothing beside filling such a table).
pub const MAPPED_FROM: usize = 256 * 1024;

/// The kernel's mappings are aligned to pages, at least this.
const PAGE: usize = 4096;

/// Tables this large ask for the kernel's transparent huge pages (where it
/// gives them only on request): a lookup lands on a random entry, and with
/// 4 KiB pages each would also miss the TLB (the process's allocator asks
/// for huge pages for its own large blocks too).
#[cfg(target_os = "linux")]
const HUGE_PAGE: usize = 2 << 20;

/// Allocates the tables of [`MAPPED_FROM`] or more with `mmap` and frees
/// them with `munmap`; smaller ones come from the process's allocator.
#[derive(Debug, Clone, Copy, Default)]
pub struct Pages;

fn mapped(layout: Layout) -> bool {
    layout.size() >= MAPPED_FROM && layout.align() <= PAGE
}

// SAFETY: a block is mapped (or not) by its layout alone, which
// `deallocate` is given unchanged, so it is given back the way it came;
// `mmap` returns page-aligned, zeroed, exclusively owned memory of the
// size asked, valid until `munmap`.
unsafe impl Allocator for Pages {
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        if !mapped(layout) {
            return Global.allocate(layout);
        }
        // SAFETY: an anonymous private mapping with no address asked for
        // touches no existing memory.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                layout.size(),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(AllocError);
        }
        #[cfg(target_os = "linux")]
        if layout.size() >= HUGE_PAGE {
            // SAFETY: advice on the mapping just made, which is ours. A
            // kernel without transparent huge pages refuses it: no harm.
            unsafe { libc::madvise(p, layout.size(), libc::MADV_HUGEPAGE) };
        }
        let p = NonNull::new(p.cast::<u8>()).ok_or(AllocError)?;
        crate::heap::count_mapped(layout.size() as isize);
        Ok(NonNull::slice_from_raw_parts(p, layout.size()))
    }

    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        if !mapped(layout) {
            // SAFETY: allocated by `Global` with this layout (see `allocate`).
            return unsafe { Global.deallocate(ptr, layout) };
        }
        // SAFETY: mapped by `allocate` with this size, and no longer used.
        // munmap of a whole mapping fails only for an address that is not
        // one, which the caller's contract rules out.
        unsafe { libc::munmap(ptr.as_ptr().cast(), layout.size()) };
        crate::heap::count_mapped(-(layout.size() as isize));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether the kernel has the page at `p` mapped.
    fn is_mapped(p: *mut u8) -> bool {
        let mut residency = 0u8;
        // SAFETY: mincore only reads the process's page tables; it fails
        // with ENOMEM for an address that is not mapped.
        unsafe { libc::mincore(p.cast(), PAGE, &mut residency) == 0 }
    }

    /// The flags the kernel shows for the mapping that holds `p`
    /// (`VmFlags` in /proc/self/smaps).
    #[cfg(target_os = "linux")]
    fn flags_of_mapping_at(p: *mut u8) -> String {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let holds = |line: &str| {
            let range = line.split(' ').next()?;
            let (from, to) = range.split_once('-')?;
            let from = usize::from_str_radix(from, 16).ok()?;
            let to = usize::from_str_radix(to, 16).ok()?;
            Some((from..to).contains(&(p as usize)))
        };
        let mut inside = false;
        for line in smaps.lines() {
            if let Some(h) = holds(line) {
                inside = h;
            } else if let (true, Some(flags)) = (inside, line.strip_prefix("VmFlags:")) {
                return flags.trim().to_string();
            }
        }
        panic!("no mapping holds {p:?}")
    }

    #[test]
    fn large_tables_are_mapped_for_themselves_and_given_back_when_freed() {
        let layout = Layout::from_size_align(4 << 20, 16).unwrap();
        let block = Pages.allocate(layout).unwrap();
        let p = block.as_ptr().cast::<u8>();
        assert_eq!(block.len(), 4 << 20);
        assert_eq!(p as usize % PAGE, 0, "a mapping of its own starts a page");
        // SAFETY: the block is ours, 4 MiB long.
        unsafe {
            assert_eq!(*p.add((4 << 20) - 1), 0, "fresh mappings are zeroed");
            p.add(12345).write(7);
            assert_eq!(*p.add(12345), 7);
        }
        assert!(is_mapped(p) && is_mapped(p.wrapping_add((4 << 20) - PAGE)));
        #[cfg(target_os = "linux")]
        assert!(
            flags_of_mapping_at(p).split(' ').any(|f| f == "hg"),
            "a table of 2 MiB or more asks for huge pages: {}",
            flags_of_mapping_at(p)
        );
        // SAFETY: allocated above with this layout.
        unsafe { Pages.deallocate(block.cast(), layout) };
        for offset in [0, 1 << 20, (4 << 20) - PAGE] {
            assert!(
                !is_mapped(p.wrapping_add(offset)),
                "an outgrown table's memory goes back to the kernel (page at +{offset})"
            );
        }
    }

    #[test]
    fn small_tables_come_from_the_allocator() {
        let layout = Layout::from_size_align(MAPPED_FROM - 16, 16).unwrap();
        let block = Pages.allocate(layout).unwrap();
        let p = block.as_ptr().cast::<u8>();
        // SAFETY: the block is ours.
        unsafe { p.write(1) };
        // SAFETY: allocated above with this layout.
        unsafe { Pages.deallocate(block.cast(), layout) };
        assert!(!mapped(layout));
        assert!(mapped(Layout::from_size_align(MAPPED_FROM, 16).unwrap()));
        assert!(!mapped(
            Layout::from_size_align(MAPPED_FROM, 2 * PAGE).unwrap()
        ));
    }
}
