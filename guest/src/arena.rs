//! A bump allocator over a static arena, for the wasm32 build only.
//!
//! The host runs every decision in a fresh instance, so nothing a policy allocates
//! needs to outlive the call: freeing is pointless, and growing the linear memory is
//! the expensive part of instantiation (a grown page must be mapped, then reset for
//! the next instance). The arena lives in the module's static data, inside its initial
//! memory, so a decision never grows memory; only a request larger than what is left
//! falls back to `memory.grow`, bounded by the host's memory limit.

use core::alloc::{GlobalAlloc, Layout};
use core::cell::UnsafeCell;

/// Bytes reserved in the module's initial memory. A decision of the reference policy
/// allocates a few hundred bytes (its facts' strings); 16 KiB leaves ample room for
/// long repo names and scope lists before the fallback is needed, and keeps the whole
/// memory (stack, data, arena) in one 64 KiB page: one page to reset per decision.
const ARENA_BYTES: usize = 16 * 1024;
const PAGE: usize = 64 * 1024;

/// The allocator; install it with `#[global_allocator]`.
#[derive(Debug)]
pub struct Arena {
    state: UnsafeCell<State>,
}

#[derive(Debug)]
struct State {
    bytes: [u8; ARENA_BYTES],
    used: usize,
    /// End of the most recent allocation made outside the arena, and where the grown
    /// region ends: a bump region in pages obtained from `memory.grow`.
    grown_next: usize,
    grown_end: usize,
}

// SAFETY: a component instance is single-threaded; the wasm32 target this module is
// compiled for has no threads, so the cell is never shared across threads.
unsafe impl Sync for Arena {}

impl Arena {
    /// An empty arena.
    pub const fn new() -> Arena {
        Arena {
            state: UnsafeCell::new(State {
                bytes: [0; ARENA_BYTES],
                used: 0,
                grown_next: 0,
                grown_end: 0,
            }),
        }
    }
}

impl Default for Arena {
    fn default() -> Self {
        Arena::new()
    }
}

fn align_up(addr: usize, align: usize) -> Option<usize> {
    addr.checked_add(align - 1).map(|a| a & !(align - 1))
}

unsafe impl GlobalAlloc for Arena {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: single-threaded (see the Sync impl); no other reference is live.
        let state = unsafe { &mut *self.state.get() };
        let base = state.bytes.as_mut_ptr() as usize;
        if let Some(start) = align_up(base + state.used, layout.align()) {
            if let Some(end) = start.checked_add(layout.size()) {
                if end <= base + ARENA_BYTES {
                    state.used = end - base;
                    return start as *mut u8;
                }
            }
        }
        // Fallback: bump inside pages taken from memory.grow.
        let fits = |state: &State| {
            align_up(state.grown_next, layout.align())
                .and_then(|s| s.checked_add(layout.size()).map(|e| (s, e)))
                .filter(|&(_, e)| e <= state.grown_end)
        };
        if let Some((start, end)) = fits(state) {
            state.grown_next = end;
            return start as *mut u8;
        }
        let pages = (layout.size() + layout.align()).div_ceil(PAGE);
        let previous = core::arch::wasm32::memory_grow(0, pages);
        if previous == usize::MAX {
            return core::ptr::null_mut();
        }
        state.grown_next = previous * PAGE;
        state.grown_end = state.grown_next + pages * PAGE;
        match fits(state) {
            Some((start, end)) => {
                state.grown_next = end;
                start as *mut u8
            }
            None => core::ptr::null_mut(),
        }
    }

    unsafe fn dealloc(&self, _ptr: *mut u8, _layout: Layout) {
        // Nothing: the instance is dropped after the decision.
    }
}
