//! Taps for operators: a packet capture on one port, and a trace of the next packets
//! through the pipeline's stages (like VPP's `trace add`).
//!
//! Both are off unless control turns them on; off, each costs the worker one relaxed
//! load per burst. On, the worker copies what it sees into bounded queues that control
//! drains; when a queue is full the record is counted as lost, never waited for.
//! Nothing here allocates after construction.

use crate::pipeline::{Meta, Next};
use crate::tables::PortId;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use crossbeam_queue::ArrayQueue;

/// Bytes kept of each captured frame (longer frames are cut; pcap records both lengths).
pub const SNAP: usize = 2048;
/// Bytes kept of each traced packet's headers.
pub const TRACE_HEAD: usize = 128;
/// Captured frames a worker may have waiting for control.
const CAPTURE_QUEUE: usize = 256;
/// Traced packets a worker may have waiting for control.
const TRACE_QUEUE: usize = 256;

/// One captured frame.
#[derive(Debug, Clone, Copy)]
pub struct CapturedFrame {
    /// Nanoseconds on the daemon's clock.
    pub ts_ns: u64,
    /// Sent (true) or received (false) by the switch.
    pub tx: bool,
    /// The frame's length.
    pub orig_len: u32,
    /// Bytes kept in `data`.
    pub len: u16,
    /// The frame's first bytes.
    pub data: [u8; SNAP],
}

/// A worker's capture tap.
#[derive(Debug)]
pub struct Capture {
    /// Port id + 1 of the captured port; 0 when off.
    port: AtomicU32,
    frames: ArrayQueue<CapturedFrame>,
    lost: AtomicU64,
}

impl Capture {
    fn new() -> Capture {
        Capture { port: AtomicU32::new(0), frames: ArrayQueue::new(CAPTURE_QUEUE), lost: AtomicU64::new(0) }
    }

    /// Starts capturing `port` (stops any other).
    pub fn start(&self, port: PortId) {
        // Relaxed: the worker sees the change within a burst or two; nothing else
        // travels with it.
        self.port.store(u32::from(port.0) + 1, Ordering::Relaxed);
    }

    /// Stops capturing.
    pub fn stop(&self) {
        // Relaxed: as in `start`.
        self.port.store(0, Ordering::Relaxed);
    }

    /// True if `port` is being captured.
    #[inline]
    pub fn on(&self, port: PortId) -> bool {
        // Relaxed: see `start`.
        self.port.load(Ordering::Relaxed) == u32::from(port.0) + 1
    }

    /// Records a frame (called by the worker).
    pub fn record(&self, ts_ns: u64, tx: bool, bytes: &[u8]) {
        let len = bytes.len().min(SNAP);
        let mut f = CapturedFrame { ts_ns, tx, orig_len: bytes.len() as u32, len: len as u16, data: [0; SNAP] };
        f.data[..len].copy_from_slice(&bytes[..len]);
        if self.frames.push(f).is_err() {
            // Relaxed: a counter.
            self.lost.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The next captured frame, if any.
    pub fn pop(&self) -> Option<CapturedFrame> {
        self.frames.pop()
    }

    /// Frames that found the queue full.
    pub fn lost(&self) -> u64 {
        // Relaxed: a counter.
        self.lost.load(Ordering::Relaxed)
    }
}

/// A pipeline stage, as traces name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Stage {
    /// Parse, sanity checks, network.
    #[default]
    Classify,
    /// Learn, look up, forward or flood.
    L2,
    /// Route, answer, resolve.
    L3,
    /// Underlay checks and VXLAN decapsulation (frames from the uplink).
    Tunnel,
}

impl Stage {
    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Classify => "classify",
            Stage::L2 => "l2",
            Stage::L3 => "l3",
            Stage::Tunnel => "tunnel",
        }
    }
}

/// What a stage decided for a packet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Step {
    /// The stage.
    pub stage: Stage,
    /// Its decision.
    pub next: Next,
    /// The packet's network after it (the egress network once routed).
    pub network: u16,
    /// Routed by then.
    pub routed: bool,
}

/// One traced packet: where it came from, its first bytes, and each stage's decision.
#[derive(Debug, Clone, Copy)]
pub struct TracedPacket {
    /// Ingress port.
    pub port: PortId,
    /// Frame length.
    pub len: u32,
    /// Bytes kept in `head`.
    pub head_len: u16,
    /// The frame's first bytes as received.
    pub head: [u8; TRACE_HEAD],
    /// The stages' decisions, in order.
    pub steps: [Step; 3],
    /// How many of `steps` are valid.
    pub n_steps: u8,
}

impl TracedPacket {
    pub(crate) fn new(port: PortId, bytes: &[u8]) -> TracedPacket {
        let n = bytes.len().min(TRACE_HEAD);
        let mut head = [0; TRACE_HEAD];
        head[..n].copy_from_slice(&bytes[..n]);
        TracedPacket {
            port,
            len: bytes.len() as u32,
            head_len: n as u16,
            head,
            steps: [Step::default(); 3],
            n_steps: 0,
        }
    }

    pub(crate) fn step(&mut self, stage: Stage, m: &Meta) {
        if let Some(s) = self.steps.get_mut(self.n_steps as usize) {
            *s = Step { stage, next: m.next, network: m.network, routed: m.routed };
            self.n_steps += 1;
        }
    }

    /// The valid steps.
    pub fn steps(&self) -> &[Step] {
        &self.steps[..self.n_steps as usize]
    }
}

/// A worker's trace tap.
#[derive(Debug)]
pub struct Trace {
    remaining: AtomicU32,
    packets: ArrayQueue<TracedPacket>,
    lost: AtomicU64,
}

impl Trace {
    fn new() -> Trace {
        Trace { remaining: AtomicU32::new(0), packets: ArrayQueue::new(TRACE_QUEUE), lost: AtomicU64::new(0) }
    }

    /// Traces the next `n` packets this worker receives (0 stops).
    pub fn start(&self, n: u32) {
        // Relaxed: the worker sees it within a burst or two.
        self.remaining.store(n, Ordering::Relaxed);
    }

    /// True while packets are still to be traced.
    #[inline]
    pub fn active(&self) -> bool {
        // Relaxed: see `start`.
        self.remaining.load(Ordering::Relaxed) > 0
    }

    /// Claims up to `want` packets to trace (called by the worker).
    pub(crate) fn claim(&self, want: usize) -> usize {
        // A compare-exchange, so that a `start` from control in between is never
        // overwritten with a stale count. Relaxed: nothing else travels with it.
        let mut cur = self.remaining.load(Ordering::Relaxed);
        loop {
            let take = cur.min(want as u32);
            if take == 0 {
                return 0;
            }
            match self.remaining.compare_exchange_weak(cur, cur - take, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return take as usize,
                Err(now) => cur = now,
            }
        }
    }

    pub(crate) fn push(&self, p: TracedPacket) {
        if self.packets.push(p).is_err() {
            // Relaxed: a counter.
            self.lost.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The next traced packet, if any.
    pub fn pop(&self) -> Option<TracedPacket> {
        self.packets.pop()
    }
}

/// A worker's taps.
#[derive(Debug)]
pub struct Taps {
    /// Packet capture.
    pub capture: Capture,
    /// Packet trace.
    pub trace: Trace,
}

impl Taps {
    /// Both off.
    pub fn new() -> Taps {
        Taps { capture: Capture::new(), trace: Trace::new() }
    }
}

impl Default for Taps {
    fn default() -> Self {
        Taps::new()
    }
}
