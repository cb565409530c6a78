//! The per-core poll loop: rx burst, pipeline, tx bursts, housekeeping, counters.
//!
//! A worker owns its UMEM, one socket on every port, and its counters. After start-up
//! it never blocks, allocates, locks or logs; it may sleep in microsecond steps when
//! idle if its [`IdlePolicy`] says so.

use crate::debug::{Capture, Taps};
use crate::pipeline::{self, Adjacencies, Batch, Ctx, FdbCache, IcmpLimiter, LearnDedup, Outputs, Pending};
use crate::port::{Held, Port};
use crate::stats::{DropReason, WorkerStats};
use crate::tables::{Emit, LearnEvent, NeighEvent, PortId, TablesReader};
use crate::xsk::{port_segment, Segment, Umem};
use core::sync::atomic::{AtomicBool, Ordering};
use crossbeam_queue::ArrayQueue;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a worker does when a loop finds no packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdlePolicy {
    /// Spin: lowest latency, one core at 100%.
    Poll,
    /// After a few empty loops, sleep, doubling from 1 µs up to `max_us`.
    Backoff {
        /// Longest sleep.
        max_us: u32,
    },
}

/// The daemon's clock: seconds since start, for ageing.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    start: Instant,
}

impl Clock {
    /// A clock starting now.
    pub fn new() -> Clock {
        Clock { start: Instant::now() }
    }

    /// Nanoseconds from start to `now`.
    #[inline]
    pub fn nanos(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.start).as_nanos() as u64
    }

    /// The instant the clock started.
    pub fn start(&self) -> Instant {
        self.start
    }

    /// Whole seconds from start to `now`.
    #[inline]
    pub fn secs(&self, now: Instant) -> u32 {
        now.saturating_duration_since(self.start).as_secs() as u32
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

/// How one worker is set up.
#[derive(Debug, Clone, Copy)]
pub struct WorkerConfig {
    /// Index (also the queue id it binds on every port).
    pub id: usize,
    /// CPU to pin to.
    pub core: Option<usize>,
    /// Idle behaviour.
    pub idle: IdlePolicy,
    /// Port ids are below this.
    pub max_ports: usize,
    /// Routed packets that may wait for their next hop to resolve.
    pub pending: usize,
}

/// Control's changes to a worker's ports, applied between batches in order.
// Not boxed: the worker would free the box, and workers leave the allocator alone. The
// queue holds 64 of these.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum PortCommand {
    /// Start polling `Port` as this id (its socket is bound and in the XSKMAP, or will
    /// be), with the UMEM segment its socket registered.
    Add(PortId, Port, Option<Segment>),
    /// Stop polling the port and hand it back (closing a socket blocks, so control
    /// does it, off the worker).
    Remove(PortId),
    /// The port's socket is closed: give its UMEM segment back (with the frames its
    /// rings held) and zero its counters, so the id can name a new port.
    Reclaim(PortId),
}

/// What a worker reports back for each [`PortCommand`].
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum PortDone {
    /// Polling it.
    Added(PortId),
    /// Not polling it any more; the port, if the worker had one with that id.
    Removed(PortId, Option<Port>),
    /// The port's segment, for control to unmap (off the worker), and how many of its
    /// frames were still on the closed socket's rings.
    Reclaimed(PortId, Option<Segment>, u32),
}

/// The queues between a worker and control.
#[derive(Debug, Clone)]
pub struct WorkerQueues {
    /// MACs to learn (worker → control).
    pub learn: Arc<ArrayQueue<LearnEvent>>,
    /// Neighbour misses and answers (worker → control).
    pub neigh: Arc<ArrayQueue<NeighEvent>>,
    /// Packets to send (control → worker).
    pub emit: Arc<ArrayQueue<Emit>>,
    /// Port changes (control → worker).
    pub ports: Arc<ArrayQueue<PortCommand>>,
    /// Their results (worker → control).
    pub done: Arc<ArrayQueue<PortDone>>,
    /// Capture and trace.
    pub taps: Arc<Taps>,
}

impl WorkerQueues {
    /// Queues of `n` entries each.
    pub fn new(n: usize) -> WorkerQueues {
        WorkerQueues {
            learn: Arc::new(ArrayQueue::new(n)),
            neigh: Arc::new(ArrayQueue::new(n)),
            emit: Arc::new(ArrayQueue::new(n)),
            ports: Arc::new(ArrayQueue::new(PORT_COMMANDS)),
            done: Arc::new(ArrayQueue::new(PORT_COMMANDS)),
            taps: Arc::new(Taps::new()),
        }
    }
}

/// Port commands in flight per worker at most (control waits for each answer).
pub const PORT_COMMANDS: usize = 64;

/// Where every frame of a worker's UMEM is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameAccount {
    /// Frames in the UMEM.
    pub total: u32,
    /// In the free pool.
    pub free: u32,
    /// Given to the kernel to receive into.
    pub rx_held: u32,
    /// Sent, not yet completed.
    pub tx_held: u32,
    /// Parked, waiting for a next hop.
    pub parked: u32,
}

impl FrameAccount {
    /// True when free + held adds up to the total: no frame is lost or counted twice.
    pub fn balanced(&self) -> bool {
        self.free + self.rx_held + self.tx_held + self.parked == self.total
    }
}

impl core::fmt::Display for FrameAccount {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "{} frames: {} free, {} with the kernel for receive, {} awaiting tx completion, {} parked{}",
            self.total,
            self.free,
            self.rx_held,
            self.tx_held,
            self.parked,
            if self.balanced() { "" } else { " (UNBALANCED)" }
        )
    }
}

/// Sends every queued output burst, counting what the rings refused.
#[inline]
fn flush(out: &mut Outputs, ports: &mut [Option<Port>], umem: &mut Umem, stats: &WorkerStats, tap: (&Capture, Clock)) {
    out.drain(|p, descs| match ports[p.0 as usize].as_mut() {
        Some(port) => {
            if tap.0.on(p) {
                let ts = tap.1.nanos(Instant::now());
                for d in descs {
                    tap.0.record(ts, true, umem.data(d.addr, d.len));
                }
            }
            let sent = port.tx_burst(umem, descs);
            let pc = &stats.ports[p.0 as usize];
            pc.tx_packets.add(u64::from(sent.packets));
            pc.tx_bytes.add(sent.bytes);
            for _ in sent.packets as usize..descs.len() {
                stats.drop(DropReason::TxRingFull);
            }
        }
        None => {
            for d in descs {
                umem.free(d.addr);
                stats.drop(DropReason::NoPort);
            }
        }
    });
}

/// One poll-mode worker.
#[derive(Debug)]
pub struct Worker {
    cfg: WorkerConfig,
    umem: Umem,
    ports: Box<[Option<Port>]>,
    active: Vec<PortId>,
    batch: Box<Batch>,
    out: Outputs,
    tables: TablesReader,
    stats: Arc<WorkerStats>,
    queues: WorkerQueues,
    dedup: LearnDedup,
    fdb_cache: FdbCache,
    adjacencies: Adjacencies,
    pending: Pending,
    icmp: IcmpLimiter,
    last_release_s: u32,
    clock: Clock,
}

impl Worker {
    /// A worker with no ports yet.
    pub fn new(cfg: WorkerConfig, mut umem: Umem, tables: TablesReader, queues: WorkerQueues, clock: Clock) -> Worker {
        umem.reserve(port_segment(cfg.max_ports as u16) as usize);
        let stats = Arc::new(WorkerStats::new(cfg.id, cfg.max_ports));
        stats.generation.set(tables.tables().generation);
        Worker {
            cfg,
            umem,
            ports: (0..cfg.max_ports).map(|_| None).collect(),
            active: Vec::with_capacity(cfg.max_ports),
            batch: Box::default(),
            out: Outputs::new(cfg.max_ports),
            tables,
            stats,
            queues,
            dedup: LearnDedup::default(),
            fdb_cache: FdbCache::default(),
            adjacencies: Adjacencies::default(),
            pending: Pending::new(cfg.pending),
            icmp: IcmpLimiter::default(),
            last_release_s: 0,
            clock,
        }
    }

    /// Adds `port` as `id`, giving it receive frames. Panics if `id` is out of range
    /// (control validates ids against `max_ports` first).
    pub fn add_port(&mut self, id: PortId, port: Port) {
        self.attach_port(id, port, None);
    }

    /// Adds `port` as `id` with `segment`, the UMEM segment its socket registered (an
    /// AF_XDP port's, as its [`segment`](Port::segment) says).
    pub fn attach_port(&mut self, id: PortId, mut port: Port, segment: Option<Segment>) {
        if let (Some(seg), Some(n)) = (segment, port.segment()) {
            if self.umem.has_segment(n) {
                // The id's last Reclaim never reached us (control gave up waiting):
                // finish it here rather than lose the new port. Rare; the unmap is
                // then a syscall on the worker.
                drop(self.reclaim_port(id));
            }
            self.umem.add_segment(n, seg);
        }
        port.housekeep(&mut self.umem);
        self.out.set_max_frame(id, port.max_frame());
        // Cached adjacencies hold ports' MTUs and the ports that exist.
        self.adjacencies.clear();
        self.ports[id.0 as usize] = Some(port);
        if !self.active.contains(&id) {
            self.active.push(id);
        }
    }

    /// Stops polling port `id` and returns it. Frames on its rings stay out of the
    /// pools until [`reclaim_port`](Self::reclaim_port), after the port is dropped.
    pub fn remove_port(&mut self, id: PortId) -> Option<Port> {
        let port = self.ports.get_mut(id.0 as usize)?.take();
        self.active.retain(|p| *p != id);
        self.adjacencies.clear();
        port
    }

    /// After a removed port was dropped (its socket closed): takes its UMEM segment out
    /// (packets parked from it are dropped, counted as `no_port`), zeroes its counters,
    /// and returns the segment with how many of its frames the socket's rings held.
    pub fn reclaim_port(&mut self, id: PortId) -> (Option<Segment>, u32) {
        if let Some(c) = self.stats.ports.get(id.0 as usize) {
            c.reset();
        }
        let seg = port_segment(id.0);
        for _ in 0..self.pending.drop_segment(seg, &mut self.umem) {
            WorkerStats::drop(&self.stats, DropReason::NoPort);
        }
        match self.umem.remove_segment(seg) {
            Some(s) => {
                let lent = s.frames() - s.free_frames();
                (Some(s), lent)
            }
            None => (None, 0),
        }
    }

    fn port_commands(&mut self) {
        while let Some(cmd) = self.queues.ports.pop() {
            let done = match cmd {
                PortCommand::Add(id, port, seg) => {
                    self.attach_port(id, port, seg);
                    PortDone::Added(id)
                }
                PortCommand::Remove(id) => PortDone::Removed(id, self.remove_port(id)),
                PortCommand::Reclaim(id) => {
                    let (seg, lent) = self.reclaim_port(id);
                    PortDone::Reclaimed(id, seg, lent)
                }
            };
            // Control keeps at most PORT_COMMANDS in flight, so there is room.
            let _ = self.queues.done.push(done);
        }
    }

    /// The port `id`, for tests and statistics.
    pub fn port_mut(&mut self, id: PortId) -> Option<&mut Port> {
        self.ports.get_mut(id.0 as usize).and_then(|p| p.as_mut())
    }

    /// The worker's counters (shared with readers).
    pub fn stats(&self) -> Arc<WorkerStats> {
        self.stats.clone()
    }

    /// The worker's clock.
    pub fn clock(&self) -> Clock {
        self.clock
    }

    /// Where every frame is.
    pub fn account(&self) -> FrameAccount {
        let held = self
            .ports
            .iter()
            .flatten()
            .map(|p| p.held())
            .fold(Held::default(), |a, h| Held { rx: a.rx + h.rx, tx: a.tx + h.tx });
        FrameAccount {
            total: self.umem.frames(),
            free: self.umem.free_frames(),
            rx_held: held.rx,
            tx_held: held.tx,
            parked: self.pending.frames(),
        }
    }

    /// Packets parked for their next hop.
    pub fn parked(&self) -> usize {
        self.pending.len()
    }

    /// One pass over every port; returns the packets received.
    pub fn poll_once(&mut self, now_s: u32) -> usize {
        let refreshed = self.tables.refresh();
        if refreshed {
            self.dedup.clear();
            self.fdb_cache.clear();
            self.adjacencies.clear();
            self.stats.generation.set(self.tables.tables().generation);
        }
        if !self.queues.ports.is_empty() {
            self.port_commands();
        }
        let tables = self.tables.tables();
        // Control's requests, and parked packets when the neighbours may have changed
        // (new tables) or some may have waited too long (a new second).
        let recheck = !self.pending.is_empty() && (refreshed || now_s != self.last_release_s);
        if recheck || !self.queues.emit.is_empty() {
            self.last_release_s = now_s;
            let mut ctx = Ctx {
                umem: &mut self.umem,
                tables,
                stats: &self.stats,
                in_port: PortId(0),
                now_s,
                learn: &self.queues.learn,
                dedup: &mut self.dedup,
                fdb_cache: &mut self.fdb_cache,
                adjacencies: &mut self.adjacencies,
                neigh: &self.queues.neigh,
                pending: &mut self.pending,
                icmp: &mut self.icmp,
            };
            while let Some(e) = self.queues.emit.pop() {
                pipeline::emit(&mut ctx, &mut self.out, e);
            }
            if recheck {
                pipeline::release(&mut ctx, &mut self.out);
            }
            flush(&mut self.out, &mut self.ports, &mut self.umem, &self.stats, (&self.queues.taps.capture, self.clock));
        }
        let mut work = 0;
        for idx in 0..self.active.len() {
            let pid = self.active[idx];
            let Some(port) = self.ports[pid.0 as usize].as_mut() else {
                continue;
            };
            let n = port.rx_burst(&mut self.umem, &mut self.batch.desc);
            if n == 0 {
                continue;
            }
            work += n;
            self.batch.len = n;
            let pc = &self.stats.ports[pid.0 as usize];
            pc.rx_packets.add(n as u64);
            pc.rx_bytes.add(self.batch.desc[..n].iter().map(|d| u64::from(d.len)).sum());
            self.stats.batches.add(1);
            self.stats.batch(n);
            self.stats.packets.add(n as u64);
            let taps = &*self.queues.taps;
            if taps.capture.on(pid) {
                let ts = self.clock.nanos(Instant::now());
                for d in &self.batch.desc[..n] {
                    taps.capture.record(ts, false, self.umem.data(d.addr, d.len));
                }
            }

            let mut ctx = Ctx {
                umem: &mut self.umem,
                tables,
                stats: &self.stats,
                in_port: pid,
                now_s,
                learn: &self.queues.learn,
                dedup: &mut self.dedup,
                fdb_cache: &mut self.fdb_cache,
                adjacencies: &mut self.adjacencies,
                neigh: &self.queues.neigh,
                pending: &mut self.pending,
                icmp: &mut self.icmp,
            };
            if taps.trace.active() {
                pipeline::process_traced(&mut self.batch, &mut ctx, &mut self.out, &taps.trace);
            } else {
                pipeline::process(&mut self.batch, &mut ctx, &mut self.out);
            }
            flush(&mut self.out, &mut self.ports, &mut self.umem, &self.stats, (&self.queues.taps.capture, self.clock));
        }
        for &pid in &self.active {
            if let Some(p) = self.ports[pid.0 as usize].as_mut() {
                p.housekeep(&mut self.umem);
            }
        }
        self.stats.free_frames.set(u64::from(self.umem.free_frames()));
        self.stats.umem_frames.set(u64::from(self.umem.frames()));
        work
    }

    /// Pins the thread, polls until `stop`, then waits (briefly) for sends to complete
    /// and returns where every frame is.
    pub fn run(mut self, stop: &AtomicBool) -> (FrameAccount, Arc<WorkerStats>) {
        if let Some(core) = self.cfg.core {
            if !core_affinity::set_for_current(core_affinity::CoreId { id: core }) {
                tracing::warn!(worker = self.cfg.id, core, "could not pin worker to its core");
            }
        }
        let mut empty = 0u32;
        let mut sleep_us = 1u32;
        let mut last_s = u32::MAX;
        // Relaxed: the flag only has to be seen eventually; no data travels with it.
        while !stop.load(Ordering::Relaxed) {
            let now_s = self.clock.secs(Instant::now());
            if now_s != last_s {
                last_s = now_s;
                self.copy_kernel_stats();
            }
            if self.poll_once(now_s) > 0 {
                self.stats.busy_loops.add(1);
                empty = 0;
                sleep_us = 1;
                continue;
            }
            self.stats.idle_loops.add(1);
            if let IdlePolicy::Backoff { max_us } = self.cfg.idle {
                empty += 1;
                if empty > 64 {
                    std::thread::sleep(Duration::from_micros(u64::from(sleep_us)));
                    sleep_us = (sleep_us * 2).min(max_us.max(1));
                }
            }
        }
        self.drain(Duration::from_millis(200))
    }

    /// Copies each socket's kernel counters into the port's stats (one getsockopt per
    /// port; the run loop calls it once a second).
    pub fn copy_kernel_stats(&self) {
        for (id, p) in self.ports.iter().enumerate() {
            if let Some(k) = p.as_ref().and_then(|p| p.kernel_stats()) {
                let c = &self.stats.ports[id].xsk;
                c.rx_dropped.set(k.rx_dropped);
                c.rx_ring_full.set(k.rx_ring_full);
                c.rx_fill_ring_empty.set(k.rx_fill_ring_empty_descs);
                c.rx_invalid_descs.set(k.rx_invalid_descs);
                c.tx_invalid_descs.set(k.tx_invalid_descs);
            }
        }
    }

    /// Stops receiving and reclaims sends for up to `within`; parked packets are
    /// dropped (counted as timed out).
    pub fn drain(mut self, within: Duration) -> (FrameAccount, Arc<WorkerStats>) {
        for _ in 0..self.pending.len() {
            WorkerStats::drop(&self.stats, DropReason::NeighTimeout);
        }
        self.pending.clear(&mut self.umem);
        let deadline = Instant::now() + within;
        while self.account().tx_held > 0 && Instant::now() < deadline {
            for p in self.ports.iter_mut().flatten() {
                p.housekeep(&mut self.umem);
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        (self.account(), self.stats.clone())
    }
}
