//! A global allocator that counts, per thread, the allocations made, the
//! bytes allocated and the bytes live; a test binary installs it with
//! `#[global_allocator] static ALLOCATOR: PerThread = PerThread;`. The
//! processes of one test that share a scheduler thread are counted exactly,
//! whatever other tests run at the same time.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

pub struct PerThread;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
    static ALLOCATED: Cell<usize> = const { Cell::new(0) };
    static LIVE: Cell<isize> = const { Cell::new(0) };
}

// SAFETY: every call is forwarded to the system allocator unchanged; the
// counters are only arithmetic on the sizes given, in thread-locals without
// destructors (which never allocate).
unsafe impl GlobalAlloc for PerThread {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        let _ = ALLOCATED.try_with(|a| a.set(a.get() + layout.size()));
        let _ = LIVE.try_with(|l| l.set(l.get() + layout.size() as isize));
        // SAFETY: forwarded from the caller.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let _ = LIVE.try_with(|l| l.set(l.get() - layout.size() as isize));
        // SAFETY: forwarded from the caller.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        let _ = ALLOCATED.try_with(|a| a.set(a.get() + new_size));
        let _ = LIVE.try_with(|l| l.set(l.get() + new_size as isize - layout.size() as isize));
        // SAFETY: forwarded from the caller.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Allocations (and reallocations) made on this thread.
pub fn allocations() -> usize {
    ALLOCATIONS.with(Cell::get)
}

/// Bytes allocated on this thread.
pub fn allocated() -> usize {
    ALLOCATED.with(Cell::get)
}

/// Bytes allocated on this thread less those freed on it.
pub fn live() -> isize {
    LIVE.with(Cell::get)
}
