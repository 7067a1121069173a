//! A global allocator that counts the live heap and its peak, so a target can assert that a
//! parse allocates no more than a bound proportional to its input.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Counts the bytes held and the most held since the last [`Meter::start`].
pub struct Meter {
    live: AtomicUsize,
    peak: AtomicUsize,
}

impl Meter {
    /// A meter with nothing counted.
    pub const fn new() -> Meter {
        Meter {
            live: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
        }
    }

    /// Starts a measurement: the peak is reset to what is held now.
    pub fn start(&self) -> usize {
        let now = self.live.load(Ordering::Relaxed);
        self.peak.store(now, Ordering::Relaxed);
        now
    }

    /// The most held above `base` (what [`Meter::start`] returned) since then.
    pub fn peak_since(&self, base: usize) -> usize {
        self.peak.load(Ordering::Relaxed).saturating_sub(base)
    }

    fn add(&self, n: usize) {
        let live = self.live.fetch_add(n, Ordering::Relaxed) + n;
        self.peak.fetch_max(live, Ordering::Relaxed);
    }

    fn sub(&self, n: usize) {
        self.live.fetch_sub(n, Ordering::Relaxed);
    }
}

impl Default for Meter {
    fn default() -> Meter {
        Meter::new()
    }
}

// SAFETY: every call is passed on to the system allocator unchanged; the meter only counts.
unsafe impl GlobalAlloc for Meter {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract is the system allocator's.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            self.add(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as for alloc.
        unsafe { System.dealloc(ptr, layout) };
        self.sub(layout.size());
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for alloc.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            self.add(layout.size());
        }
        p
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as for alloc.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            // The old block is held until the new one is filled: count both at the peak.
            self.add(new_size);
            self.sub(layout.size());
        }
        p
    }
}

/// The heap a parse of `len` input bytes may take at its peak: 32 bytes per input byte and
/// 64 KiB. The densest result is a CSV of minimal rows (`1,2026-10` and a newline, 10 bytes)
/// where each row is a 128-byte `UsageRow` in a vector that doubles: about 26 bytes per byte.
pub fn parse_bound(len: usize) -> usize {
    32 * len + 64 * 1024
}
