//! The four AF_XDP rings, as single-producer/single-consumer queues shared with the
//! kernel through an mmap'd region.
//!
//! Both kinds cache the other side's index locally and touch the shared atomics only
//! when the cache runs dry: a burst costs one acquire load and one release store, not
//! one per descriptor (the shape of xdpilone's `ring.rs` and libbpf's `xsk.h`).

use crate::sys::Mapping;
use core::sync::atomic::{AtomicU32, Ordering};

/// The parts of one mapped ring.
#[derive(Debug)]
struct Shared<T> {
    producer: *const AtomicU32,
    consumer: *const AtomicU32,
    flags: *const AtomicU32,
    descs: *mut T,
    mask: u32,
    size: u32,
    _map: Mapping,
}

impl<T: Copy> Shared<T> {
    /// # Safety
    /// `map` must be the mapping of an AF_XDP ring of `size` entries of `T` (a power of
    /// two), with the kernel's producer, consumer, flags and descriptor offsets
    /// `off`, as returned by `XDP_MMAP_OFFSETS` for this ring.
    unsafe fn new(map: Mapping, off: &libc::xdp_ring_offset, size: u32) -> Shared<T> {
        let base = map.as_ptr();
        // SAFETY: the caller guarantees the offsets lie inside the mapping and are the
        // kernel's, suitably aligned for u32 indices and T descriptors.
        unsafe {
            Shared {
                producer: base.add(off.producer as usize).cast(),
                consumer: base.add(off.consumer as usize).cast(),
                flags: base.add(off.flags as usize).cast(),
                descs: base.add(off.desc as usize).cast(),
                mask: size - 1,
                size,
                _map: map,
            }
        }
    }

    #[inline]
    fn producer(&self) -> &AtomicU32 {
        // SAFETY: points into the mapping owned by `self._map`, valid for `self`'s life;
        // the kernel accesses it only atomically.
        unsafe { &*self.producer }
    }

    #[inline]
    fn consumer(&self) -> &AtomicU32 {
        // SAFETY: as for `producer`.
        unsafe { &*self.consumer }
    }

    #[inline]
    fn flags(&self) -> &AtomicU32 {
        // SAFETY: as for `producer`.
        unsafe { &*self.flags }
    }

    #[inline]
    fn slot(&self, idx: u32) -> *mut T {
        // SAFETY: `idx & mask` < size, and the descriptor array holds `size` entries.
        unsafe { self.descs.add((idx & self.mask) as usize) }
    }
}

/// A ring this process produces into (fill, tx).
///
/// Thread-safety: owned by one worker; the kernel is the only other party.
#[derive(Debug)]
pub struct ProducerRing<T> {
    ring: Shared<T>,
    cached_prod: u32,
    /// The consumer index plus the ring size: producing up to here is safe.
    cached_cons: u32,
}

// SAFETY: the raw pointers point into a mapping owned by the ring; the ring is used by
// one thread at a time (it is not Sync), so moving it to the worker thread is sound.
unsafe impl<T: Send> Send for ProducerRing<T> {}

impl<T: Copy> ProducerRing<T> {
    /// # Safety
    /// As for the ring's `Shared::new`: `map` and `off` must describe this ring.
    pub(crate) unsafe fn new(map: Mapping, off: &libc::xdp_ring_offset, size: u32) -> Self {
        // SAFETY: forwarded from the caller.
        let ring = unsafe { Shared::new(map, off, size) };
        // Relaxed: nothing has been produced yet, and the kernel starts both indices at
        // zero; the first `free` refreshes with acquire anyway.
        let cached_prod = ring.producer().load(Ordering::Relaxed);
        let cached_cons = ring.consumer().load(Ordering::Relaxed) + size;
        ProducerRing { ring, cached_prod, cached_cons }
    }

    /// Free slots, refreshing from the kernel's consumer index only if fewer than
    /// `want` are known to be free.
    #[inline]
    pub fn free(&mut self, want: u32) -> u32 {
        let free = self.cached_cons.wrapping_sub(self.cached_prod);
        if free >= want {
            return free;
        }
        // Acquire: pairs with the kernel's release of the consumer index, so the slots
        // it has consumed are really done with before we overwrite them.
        self.cached_cons = self.ring.consumer().load(Ordering::Acquire).wrapping_add(self.ring.size);
        self.cached_cons.wrapping_sub(self.cached_prod)
    }

    /// Reserves up to `n` slots; returns how many. Fill them with [`write`](Self::write)
    /// (indices 0..returned) and publish them with [`submit`](Self::submit).
    #[inline]
    pub fn reserve(&mut self, n: u32) -> u32 {
        n.min(self.free(n))
    }

    /// Writes reserved slot `i` (0-based from the first reserved).
    #[inline]
    pub fn write(&mut self, i: u32, value: T) {
        // SAFETY: the slot is reserved (between the kernel's consumer and our producer
        // index), so the kernel does not read it until `submit` publishes it.
        unsafe { self.ring.slot(self.cached_prod.wrapping_add(i)).write(value) }
    }

    /// Publishes `n` written slots to the kernel.
    #[inline]
    pub fn submit(&mut self, n: u32) {
        self.cached_prod = self.cached_prod.wrapping_add(n);
        // Release: the descriptor writes above must be visible before the kernel sees
        // the new producer index (it loads it with acquire).
        self.ring.producer().store(self.cached_prod, Ordering::Release);
    }

    /// Entries submitted that the kernel has not consumed yet.
    pub fn pending(&self) -> u32 {
        // Acquire, as in `free`; this is for accounting, not the hot path.
        self.cached_prod.wrapping_sub(self.ring.consumer().load(Ordering::Acquire))
    }

    /// The kernel asks to be woken (`XDP_RING_NEED_WAKEUP`).
    #[inline]
    pub fn needs_wakeup(&self) -> bool {
        // Relaxed: a stale flag costs one needless or one delayed syscall, never
        // correctness; libbpf reads it the same way.
        self.ring.flags().load(Ordering::Relaxed) & libc::XDP_RING_NEED_WAKEUP != 0
    }

    /// Ring size.
    pub fn size(&self) -> u32 {
        self.ring.size
    }
}

/// A ring this process consumes from (rx, completion).
///
/// Thread-safety: owned by one worker; the kernel is the only other party.
#[derive(Debug)]
pub struct ConsumerRing<T> {
    ring: Shared<T>,
    cached_prod: u32,
    cached_cons: u32,
}

// SAFETY: as for ProducerRing.
unsafe impl<T: Send> Send for ConsumerRing<T> {}

impl<T: Copy> ConsumerRing<T> {
    /// # Safety
    /// As for the ring's `Shared::new`: `map` and `off` must describe this ring.
    pub(crate) unsafe fn new(map: Mapping, off: &libc::xdp_ring_offset, size: u32) -> Self {
        // SAFETY: forwarded from the caller.
        let ring = unsafe { Shared::new(map, off, size) };
        // Relaxed: initial indices, both zero until the socket is bound.
        let cached_cons = ring.consumer().load(Ordering::Relaxed);
        ConsumerRing { ring, cached_prod: cached_cons, cached_cons }
    }

    /// Up to `max` entries ready to read; refreshes from the kernel's producer index
    /// only when the cache holds fewer than `max`.
    #[inline]
    pub fn peek(&mut self, max: u32) -> u32 {
        let mut avail = self.cached_prod.wrapping_sub(self.cached_cons);
        if avail < max {
            // Acquire: pairs with the kernel's release of the producer index, so the
            // descriptors it wrote are visible before we read them.
            self.cached_prod = self.ring.producer().load(Ordering::Acquire);
            avail = self.cached_prod.wrapping_sub(self.cached_cons);
        }
        avail.min(max)
    }

    /// Reads peeked entry `i` (0-based from the first unread).
    #[inline]
    pub fn read(&self, i: u32) -> T {
        // SAFETY: the entry is between our consumer index and the producer index we
        // loaded with acquire, so the kernel wrote it and will not touch it until we
        // release it.
        unsafe { self.ring.slot(self.cached_cons.wrapping_add(i)).read() }
    }

    /// Hands `n` read entries back to the kernel.
    #[inline]
    pub fn release(&mut self, n: u32) {
        self.cached_cons = self.cached_cons.wrapping_add(n);
        // Release: our reads of the entries must complete before the kernel may
        // overwrite them.
        self.ring.consumer().store(self.cached_cons, Ordering::Release);
    }

    /// Ring size.
    pub fn size(&self) -> u32 {
        self.ring.size
    }
}
