//! The module's memory allocator (wasm32 only, feature `bump-allocator`, on
//! by default): a bump allocator.
//!
//! ABI v1 starts every decision from the module's initial state (a new
//! instance, or one reset to it), so nothing allocated ever needs to outlive
//! it: handing out memory by moving a pointer, and taking
//! back only the most recent allocation, is all a decision needs. Compared
//! with the default allocator (dlmalloc) it costs a few instructions per
//! allocation instead of hundreds, and it serves the first 64 KiB from an
//! arena inside the module's initial memory, so a typical decision never
//! grows its memory (which the host must then undo).
//!
//! Memory is taken from the arena, then from `memory.grow`; a decision that
//! allocates more than the host's memory limit in total traps (a deny).
//! Policies that need an allocator that reuses freed memory can turn this
//! one off (`default-features = false`) and bring their own.

#[cfg(target_arch = "wasm32")]
use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
#[cfg(target_arch = "wasm32")]
use std::ptr;

const WASM_PAGE: usize = 64 * 1024;
const ARENA_BYTES: usize = 64 * 1024;

/// The arena: zero-initialised (`.bss`), so it adds no bytes to the module.
#[cfg(target_arch = "wasm32")]
#[repr(C, align(16))]
struct Arena([u8; ARENA_BYTES]);

#[cfg(target_arch = "wasm32")]
static mut ARENA: Arena = Arena([0; ARENA_BYTES]);

/// The allocator's state: the next free byte and the end of the region it
/// is carving (0 and 0 until the first allocation), and the highest address
/// ever handed out (memory above it is still zero).
pub struct Bump {
    next: Cell<usize>,
    end: Cell<usize>,
    top: Cell<usize>,
}

// SAFETY: wasm32-unknown-unknown without the atomics feature is
// single-threaded; the SDK does not support threads (ABI v1 forbids shared
// memory).
unsafe impl Sync for Bump {}

impl Bump {
    pub const fn new() -> Self {
        Bump {
            next: Cell::new(0),
            end: Cell::new(0),
            top: Cell::new(0),
        }
    }

    /// The start of a free, `align`-aligned block of `size` bytes, moving the
    /// region to new pages when the current one is too small; `None` when
    /// memory cannot grow.
    #[cfg(target_arch = "wasm32")]
    fn carve(&self, size: usize, align: usize) -> Option<usize> {
        self.carve_with(size, align, arena_start, grow)
    }

    /// [`Self::carve`] with the arena's address and `memory.grow` given (so
    /// that the arithmetic is tested natively).
    fn carve_with(
        &self,
        size: usize,
        align: usize,
        arena: impl FnOnce() -> usize,
        grow: impl FnOnce(usize) -> usize,
    ) -> Option<usize> {
        if self.end.get() == 0 {
            let arena = arena();
            self.next.set(arena);
            self.end.set(arena + ARENA_BYTES);
        }
        let start = self.next.get().checked_add(align - 1)? & !(align - 1);
        let end = start.checked_add(size)?;
        if end <= self.end.get() {
            self.next.set(end);
            self.top.set(self.top.get().max(end));
            return Some(start);
        }
        // A new region from fresh pages: at least 64 KiB, at least the block.
        let pages = size.checked_add(align)?.div_ceil(WASM_PAGE).max(1);
        let previous = grow(pages);
        if previous == usize::MAX {
            return None;
        }
        let region = previous.checked_mul(WASM_PAGE)?;
        let region_end = region.checked_add(pages.checked_mul(WASM_PAGE)?)?;
        // Contiguous with the current region (the usual case once past the
        // arena): keep carving from where we were.
        let from = if region == self.end.get() {
            self.next.get()
        } else {
            region
        };
        self.end.set(region_end);
        self.next.set(from);
        let start = from.checked_add(align - 1)? & !(align - 1);
        let end = start.checked_add(size)?;
        if end > region_end {
            return None;
        }
        self.next.set(end);
        self.top.set(self.top.get().max(end));
        Some(start)
    }

    /// Takes back the block at `start` of `size` bytes if it is the most
    /// recent one.
    fn give_back(&self, start: usize, size: usize) {
        if start + size == self.next.get() {
            self.next.set(start);
        }
    }

    /// Grows or shrinks the most recent block in place; whether it could.
    fn resize_in_place(&self, start: usize, size: usize, new_size: usize) -> bool {
        if start + size == self.next.get()
            && let Some(end) = start.checked_add(new_size)
            && end <= self.end.get()
        {
            self.next.set(end);
            self.top.set(self.top.get().max(end));
            return true;
        }
        false
    }

    /// Whether a block at `start` may hold bytes written before (below the
    /// highest address ever handed out when it was carved).
    fn maybe_dirty(start: usize, top_before: usize) -> bool {
        start < top_before
    }
}

#[cfg(target_arch = "wasm32")]
fn arena_start() -> usize {
    (&raw mut ARENA).addr()
}

#[cfg(target_arch = "wasm32")]
fn grow(pages: usize) -> usize {
    core::arch::wasm32::memory_grow(0, pages)
}

impl Default for Bump {
    fn default() -> Self {
        Bump::new()
    }
}

// SAFETY: blocks are carved from memory nobody else uses (the arena, or
// pages returned by `memory.grow`), never overlap, and are aligned as asked.
#[cfg(target_arch = "wasm32")]
unsafe impl GlobalAlloc for Bump {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match self.carve(layout.size(), layout.align()) {
            Some(start) => start as *mut u8,
            None => ptr::null_mut(),
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let top = self.top.get();
        let block = unsafe { self.alloc(layout) };
        // The arena and grown pages start zeroed (addresses only increase),
        // but a block below the old top may reuse bytes given back by
        // `dealloc` or `realloc`.
        if !block.is_null() && Bump::maybe_dirty(block.addr(), top) {
            // SAFETY: the block is valid for `layout.size()` bytes.
            unsafe { ptr::write_bytes(block, 0, layout.size()) };
        }
        block
    }

    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        self.give_back(block.addr(), layout.size());
    }

    unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if self.resize_in_place(block.addr(), layout.size(), new_size) || new_size <= layout.size() {
            return block;
        }
        // SAFETY: `layout.align()` is a valid alignment and `new_size` is
        // non-zero (it is larger than the old size).
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        let moved = unsafe { self.alloc(new_layout) };
        if !moved.is_null() {
            // SAFETY: both blocks are valid for the old size and distinct.
            unsafe { ptr::copy_nonoverlapping(block, moved, layout.size()) };
        }
        moved
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARENA_AT: usize = 1 << 20;
    /// Memory ends right after the arena, as in a module.
    const MEMORY_PAGES: usize = (ARENA_AT + ARENA_BYTES) / WASM_PAGE;

    /// A bump allocator over simulated memory: returns blocks as (start, size).
    struct Sim {
        bump: Bump,
        pages: std::cell::Cell<usize>,
        max_pages: usize,
    }

    impl Sim {
        fn new(max_pages: usize) -> Self {
            Sim {
                bump: Bump::new(),
                pages: std::cell::Cell::new(MEMORY_PAGES),
                max_pages,
            }
        }

        fn alloc(&self, size: usize, align: usize) -> Option<usize> {
            self.bump.carve_with(
                size,
                align,
                || ARENA_AT,
                |n| {
                    let before = self.pages.get();
                    if before + n > self.max_pages {
                        return usize::MAX;
                    }
                    self.pages.set(before + n);
                    before
                },
            )
        }
    }

    #[test]
    fn blocks_are_aligned_disjoint_and_inside_memory() {
        let sim = Sim::new(256);
        let mut blocks: Vec<(usize, usize)> = Vec::new();
        for i in 0..2_000usize {
            let size = (i * 37) % 3_000 + 1;
            let align = 1 << (i % 5);
            let start = sim.alloc(size, align).expect("memory left");
            assert!(start.is_multiple_of(align));
            assert!(start >= ARENA_AT && start + size <= sim.pages.get() * WASM_PAGE);
            blocks.push((start, size));
        }
        blocks.sort();
        for pair in blocks.windows(2) {
            assert!(pair[0].0 + pair[0].1 <= pair[1].0, "{pair:?} overlap");
        }
        // The arena first, then contiguous growth: little is wasted.
        let used: usize = blocks.iter().map(|b| b.1).sum();
        let span = blocks[blocks.len() - 1].0 + blocks[blocks.len() - 1].1 - ARENA_AT;
        assert!(span < used + used / 4, "{span} bytes spanned for {used}");
    }

    #[test]
    fn a_block_larger_than_the_arena_grows_memory() {
        let sim = Sim::new(256);
        let small = sim.alloc(10, 1).expect("arena");
        let big = sim.alloc(3 * WASM_PAGE + 5, 8).expect("grown");
        // Grown pages follow the arena: the block continues from the arena.
        assert!(big >= small + 10 && big.is_multiple_of(8));
        assert!(big + 3 * WASM_PAGE + 5 <= sim.pages.get() * WASM_PAGE);
        assert!(sim.pages.get() > MEMORY_PAGES);
    }

    #[test]
    fn out_of_memory_is_none_not_overlap() {
        let sim = Sim::new(MEMORY_PAGES + 2);
        assert!(sim.alloc(ARENA_BYTES, 1).is_some());
        assert!(sim.alloc(WASM_PAGE, 1).is_some());
        assert!(sim.alloc(WASM_PAGE, 1).is_some());
        assert_eq!(sim.alloc(WASM_PAGE, 1), None);
        assert_eq!(sim.alloc(usize::MAX - 8, 16), None);
    }

    #[test]
    fn only_the_most_recent_block_is_reused_and_then_zeroed() {
        let sim = Sim::new(256);
        let a = sim.alloc(100, 1).expect("a");
        let b = sim.alloc(50, 1).expect("b");
        let top = sim.bump.top.get();
        // Giving back `a` (not the most recent) does nothing.
        sim.bump.give_back(a, 100);
        let c = sim.alloc(10, 1).expect("c");
        assert_eq!(c, b + 50);
        assert!(!Bump::maybe_dirty(c, top));
        // Giving back the most recent block reuses its bytes: those may be dirty.
        sim.bump.give_back(c, 10);
        let top = sim.bump.top.get();
        let d = sim.alloc(10, 1).expect("d");
        assert_eq!(d, c);
        assert!(Bump::maybe_dirty(d, top));
        // In-place growth moves the top, so a later reuse is known dirty.
        assert!(sim.bump.resize_in_place(d, 10, 4_000));
        assert!(!sim.bump.resize_in_place(a, 100, 200));
        sim.bump.give_back(d, 4_000);
        let top = sim.bump.top.get();
        let e = sim.alloc(3_000, 1).expect("e");
        assert!(Bump::maybe_dirty(e, top));
        assert_eq!(top, d + 4_000);
    }
}
