//! Ports: where frames enter and leave a worker, in bursts.
//!
//! A port is an enum, not a trait object, so a burst costs one match, not a virtual
//! call, and the compiler can inline each kind's loop. Frames are named by their
//! address in the worker's [`Umem`]; a port copies bytes only where its kind must: the
//! in-memory port between test buffers and frames, an AF_XDP port a frame of another
//! UMEM segment into its own.

mod memory;
mod xsk;

pub use memory::MemoryPort;
pub use xsk::XskPort;

use crate::xsk::Umem;

/// A frame in the worker's UMEM: where its bytes start and how many there are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Desc {
    /// Address of the first byte: UMEM segment and offset in it (see `xsk::frame_addr`).
    pub addr: u64,
    /// Length in bytes.
    pub len: u32,
}

/// What a port holds that is not in the worker's free pool (for accounting).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Held {
    /// Frames given to the kernel to receive into (fill ring and rx ring).
    pub rx: u32,
    /// Frames sent and not yet completed.
    pub tx: u32,
}

/// What a tx burst queued.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sent {
    /// Frames.
    pub packets: u32,
    /// Their bytes.
    pub bytes: u64,
}

/// One port of one worker.
#[derive(Debug)]
pub enum Port {
    /// An AF_XDP socket on an interface queue.
    Xsk(XskPort),
    /// Frames in memory (tests and benchmarks).
    Memory(MemoryPort),
}

impl Port {
    /// Receives up to `out.len()` frames into `out`; returns how many.
    #[inline]
    pub fn rx_burst(&mut self, umem: &mut Umem, out: &mut [Desc]) -> usize {
        match self {
            Port::Xsk(p) => p.rx_burst(umem, out),
            Port::Memory(p) => p.rx_burst(umem, out),
        }
    }

    /// Sends `descs`; returns what was accepted. Frames not accepted are returned to
    /// their pools by the port (the caller counts them as dropped).
    #[inline]
    pub fn tx_burst(&mut self, umem: &mut Umem, descs: &[Desc]) -> Sent {
        match self {
            Port::Xsk(p) => p.tx_burst(umem, descs),
            Port::Memory(p) => p.tx_burst(umem, descs),
        }
    }

    /// Reclaims completed sends and tops up receive buffers.
    #[inline]
    pub fn housekeep(&mut self, umem: &mut Umem) {
        match self {
            Port::Xsk(p) => p.housekeep(umem),
            Port::Memory(_) => {}
        }
    }

    /// Largest frame the port can send, in bytes.
    pub fn max_frame(&self) -> u32 {
        match self {
            Port::Xsk(p) => p.max_frame(),
            Port::Memory(p) => p.max_frame(),
        }
    }

    /// The kernel's counters for the port's socket (AF_XDP ports only). A syscall: call
    /// it rarely (the worker does once a second).
    pub fn kernel_stats(&self) -> Option<crate::xsk::XskStatistics> {
        match self {
            Port::Xsk(p) => p.socket().statistics().ok(),
            Port::Memory(_) => None,
        }
    }

    /// The UMEM segment whose frames its rings hold (an AF_XDP port's own), or None.
    pub fn segment(&self) -> Option<u32> {
        match self {
            Port::Xsk(p) => Some(p.segment()),
            Port::Memory(_) => None,
        }
    }

    /// Frames this port holds outside the pool.
    pub fn held(&self) -> Held {
        match self {
            Port::Xsk(p) => p.held(),
            Port::Memory(_) => Held::default(),
        }
    }

    /// Name for logs.
    pub fn name(&self) -> &str {
        match self {
            Port::Xsk(p) => p.name(),
            Port::Memory(p) => p.name(),
        }
    }
}
