//! The packet pipeline: stages that each loop over a batch and write every packet's
//! next step, then an output stage that gathers frames per port.
//!
//! ```text
//! rx burst ─▶ classify ─▶ l2 ──────────────▶ output ─▶ per-port tx bursts (the worker sends them)
//!             (network,    (learn,  │         ▲ (VLAN tag edit,
//!              sanity)      lookup) │         │  flood copies, IPv4 fragments)
//!                       to a gateway└─▶ l3 ───┘
//!                                     ▲ (ARP/ND/echo answers, route, neighbour,
//!                                     │  TTL, MTU, ICMP errors; parks packets
//!                                     │  whose next hop is resolving; VXLAN
//!                                     │  encapsulation to remote nodes)
//! uplink rx burst ─▶ tunnel ──────────┘
//!                    (underlay checks, VXLAN decapsulation; frames of networks
//!                     stretched across nodes go to l2, learned behind their peer,
//!                     and output replicates floods to the peers of their VNI)
//! ```
//!
//! Stages never return errors per packet: a dropped packet gets `Next::Drop(reason)` and
//! its counter moves in the output stage. Nothing here allocates, locks, logs or makes
//! a syscall.

mod classify;
mod control;
mod fragment;
mod l2;
mod l3;
mod output;
mod tunnel;

pub use control::{emit, release, IcmpLimiter, Pending};
pub use l2::{FdbCache, LearnDedup};
pub use l3::Adjacencies;
pub use output::Outputs;

use crate::port::Desc;
use crate::stats::{DropReason, WorkerStats};
use crate::tables::{fdb, LearnEvent, NeighEvent, PortId, Tables};
use crate::xsk::Umem;
use crossbeam_queue::ArrayQueue;

/// Packets per batch.
pub const BATCH_SIZE: usize = 64;

/// What happens to a packet next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Next {
    /// Classified; on to the L2 stage.
    #[default]
    L2,
    /// Send on this port.
    Port(PortId),
    /// Send on this port in IPv4 fragments that fit its MTU (routed, without DF, too
    /// big for it).
    Fragment(PortId),
    /// Send to this remote node in IPv4 fragments that fit the tunnel's MTU, each
    /// encapsulated (routed, without DF, too big for it).
    FragmentToPeer(u16),
    /// Send on this port as it is, outside any network (to a remote node, on the
    /// uplink).
    Raw(PortId),
    /// Encapsulate in its network's VNI and send to this remote node (a network
    /// stretched across nodes).
    Vtep(u16),
    /// Send on every port of its network but the one it came from (routed packets:
    /// every port of the egress network), and to every remote node that carries the
    /// network, unless it came from one.
    Flood,
    /// For a gateway: route it, or answer it.
    L3,
    /// Taken by the switch (an answer to its own request): freed, not counted as a drop.
    Consumed,
    /// Parked until its next hop resolves: the pending queue owns the frame now.
    Parked,
    /// Drop, counting the reason.
    Drop(DropReason),
}

/// Per-packet state carried between stages.
#[derive(Debug, Clone, Copy)]
pub struct Meta {
    /// Network (bridge domain) id.
    pub network: u16,
    /// The frame carries an 802.1Q tag.
    pub tagged: bool,
    /// Routed by the switch: `network` is the egress network now.
    pub routed: bool,
    /// Came from a remote node (decapsulated, or routed in over the underlay):
    /// `network` is the tunnel's network, and nothing is answered back in place.
    pub tunnel: bool,
    /// The remote node a decapsulated frame came from (`fdb::LOCAL` if none): where
    /// L2 learns its source MAC.
    pub peer: u16,
    /// The next step.
    pub next: Next,
}

impl Meta {
    /// Bytes of Ethernet header (and tag) in front of the L3 header.
    #[inline]
    pub(super) fn l2_len(&self) -> usize {
        if self.tagged {
            18
        } else {
            14
        }
    }
}

impl Default for Meta {
    fn default() -> Self {
        Meta { network: 0, tagged: false, routed: false, tunnel: false, peer: fdb::LOCAL, next: Next::L2 }
    }
}

/// Up to [`BATCH_SIZE`] frames from one input port.
#[derive(Debug)]
pub struct Batch {
    /// Frames.
    pub desc: [Desc; BATCH_SIZE],
    /// Their state.
    pub meta: [Meta; BATCH_SIZE],
    /// How many are valid.
    pub len: usize,
}

impl Default for Batch {
    fn default() -> Self {
        Batch { desc: [Desc::default(); BATCH_SIZE], meta: [Meta::default(); BATCH_SIZE], len: 0 }
    }
}

/// What the stages need besides the batch.
pub struct Ctx<'a> {
    /// The worker's frames.
    pub umem: &'a mut Umem,
    /// The snapshot for this batch.
    pub tables: &'a Tables,
    /// The worker's counters.
    pub stats: &'a WorkerStats,
    /// Where the batch came in.
    pub in_port: PortId,
    /// Seconds on the daemon's clock, read once per poll loop.
    pub now_s: u32,
    /// Learn events to control.
    pub learn: &'a ArrayQueue<LearnEvent>,
    /// Events already sent for this generation.
    pub dedup: &'a mut LearnDedup,
    /// FDB lookups of this generation.
    pub fdb_cache: &'a mut FdbCache,
    /// Routed destinations' adjacencies, for this generation and these ports.
    pub adjacencies: &'a mut Adjacencies,
    /// Neighbour misses and answers to control.
    pub neigh: &'a ArrayQueue<NeighEvent>,
    /// Packets waiting for their next hop.
    pub pending: &'a mut Pending,
    /// ICMP error budget.
    pub icmp: &'a mut IcmpLimiter,
}

/// Runs the batch through every stage; frames to send end up in `out`.
#[inline]
pub fn process(batch: &mut Batch, ctx: &mut Ctx<'_>, out: &mut Outputs) {
    if is_uplink(ctx) {
        let (to_l2, mut to_l3) = tunnel::receive(batch, ctx);
        if to_l2 {
            to_l3 |= l2::run(batch, ctx);
        }
        if to_l3 {
            l3::run(batch, ctx, out);
        }
    } else {
        classify::run(batch, ctx);
        if l2::run(batch, ctx) {
            l3::run(batch, ctx, out);
        }
    }
    output::run(batch, ctx, out);
}

/// True if the batch came in on the uplink.
#[inline]
fn is_uplink(ctx: &Ctx<'_>) -> bool {
    ctx.tables.tunnel.local.as_ref().is_some_and(|t| t.uplink == ctx.in_port)
}

/// [`process`], recording each stage's decision for the first packets that `trace`
/// still wants. Used only while a trace runs.
pub fn process_traced(batch: &mut Batch, ctx: &mut Ctx<'_>, out: &mut Outputs, trace: &crate::debug::Trace) {
    use crate::debug::{Stage, TracedPacket};
    let n = trace.claim(batch.len);
    let mut recs = [TracedPacket::new(PortId(0), &[]); BATCH_SIZE];
    for (i, r) in recs.iter_mut().enumerate().take(n) {
        let d = batch.desc[i];
        *r = TracedPacket::new(ctx.in_port, ctx.umem.data(d.addr, d.len));
    }
    let mut routed = [false; BATCH_SIZE];
    let to_l3 = if is_uplink(ctx) {
        let (to_l2, mut to_l3) = tunnel::receive(batch, ctx);
        let mut switched = [false; BATCH_SIZE];
        for (i, r) in recs.iter_mut().enumerate().take(n) {
            r.step(Stage::Tunnel, &batch.meta[i]);
            switched[i] = batch.meta[i].next == Next::L2;
        }
        if to_l2 {
            to_l3 |= l2::run(batch, ctx);
            for (i, r) in recs.iter_mut().enumerate().take(n) {
                if switched[i] {
                    r.step(Stage::L2, &batch.meta[i]);
                }
            }
        }
        for (i, m) in batch.meta.iter().enumerate().take(n) {
            routed[i] = m.next == Next::L3;
        }
        to_l3
    } else {
        classify::run(batch, ctx);
        for (i, r) in recs.iter_mut().enumerate().take(n) {
            r.step(Stage::Classify, &batch.meta[i]);
        }
        let to_l3 = l2::run(batch, ctx);
        for (i, r) in recs.iter_mut().enumerate().take(n) {
            r.step(Stage::L2, &batch.meta[i]);
            routed[i] = batch.meta[i].next == Next::L3;
        }
        to_l3
    };
    if to_l3 {
        l3::run(batch, ctx, out);
        for (i, r) in recs.iter_mut().enumerate().take(n) {
            if routed[i] {
                r.step(Stage::L3, &batch.meta[i]);
            }
        }
    }
    output::run(batch, ctx, out);
    for r in &recs[..n] {
        trace.push(*r);
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_l3;
#[cfg(test)]
mod tests_tunnel;
