//! A bump allocator for the guest.
//!
//! Every call runs in a fresh instance that is thrown away afterwards, so freeing memory is wasted
//! work: allocation is a pointer bump, `dealloc` does nothing, and the pages a call touches stay
//! together (which keeps the host's per-call reset of the sandbox cheap). A call that allocates
//! past the plugin's memory cap fails closed with an out-of-memory error, as with any allocator.

use core::alloc::{GlobalAlloc, Layout};
use core::cell::Cell;

const PAGE: usize = 65536;

pub struct Bump {
    next: Cell<usize>,
    end: Cell<usize>,
}

// SAFETY: a WebAssembly component instance is single-threaded.
unsafe impl Sync for Bump {}

impl Bump {
    pub const fn new() -> Self {
        Bump {
            next: Cell::new(0),
            end: Cell::new(0),
        }
    }
}

unsafe extern "C" {
    static __heap_base: u8;
}

#[inline]
fn align_up(n: usize, align: usize) -> usize {
    (n + align - 1) & !(align - 1)
}

unsafe impl GlobalAlloc for Bump {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if self.end.get() == 0 {
            // First allocation: start at the heap base and use what memory already exists.
            let base = core::ptr::addr_of!(__heap_base) as usize;
            self.next.set(base);
            self.end.set(core::arch::wasm32::memory_size(0) * PAGE);
        }
        let start = align_up(self.next.get(), layout.align());
        let Some(stop) = start.checked_add(layout.size()) else {
            return core::ptr::null_mut();
        };
        if stop > self.end.get() {
            // Grow by at least 1 MiB at a time; memory only ever grows at the end, contiguously.
            let need = stop - self.end.get();
            let pages = align_up(need, PAGE) / PAGE;
            let pages = pages.max(16);
            if core::arch::wasm32::memory_grow(0, pages) == usize::MAX {
                return core::ptr::null_mut();
            }
            self.end.set(self.end.get() + pages * PAGE);
        }
        self.next.set(stop);
        start as *mut u8
    }

    #[inline]
    unsafe fn dealloc(&self, _ptr: *mut u8, _layout: Layout) {}

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // Growing the most recent allocation extends it in place.
        let old_end = ptr as usize + layout.size();
        if old_end == self.next.get() {
            let stop = ptr as usize + new_size;
            if stop <= self.end.get() {
                self.next.set(stop);
                return ptr;
            }
        }
        if new_size <= layout.size() {
            return ptr;
        }
        // SAFETY: the caller guarantees `layout` fits `ptr`; the new layout has the same alignment.
        unsafe {
            let new = self.alloc(Layout::from_size_align_unchecked(new_size, layout.align()));
            if !new.is_null() {
                core::ptr::copy_nonoverlapping(ptr, new, layout.size());
            }
            new
        }
    }
}
