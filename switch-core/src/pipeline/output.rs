//! Output: frames to their ports' queues, with VLAN tags made to fit each port, copies
//! for floods, and fragments of IPv4 packets too big for their next hop.

use super::fragment::{self, MAX_FRAGMENTS};
use super::{Batch, Ctx, Meta, Next, BATCH_SIZE};
use crate::port::Desc;
use crate::stats::DropReason;
use crate::tables::topology::{NOT_MEMBER, UNTAGGED};
use crate::tables::{NetworkId, PortId};
use crate::wire::EtherType;
use crate::xsk::port_segment;

/// Frames queued beyond a port's [`BATCH_SIZE`], for all ports together.
const SPILL: usize = 4 * BATCH_SIZE;

/// Frames gathered per output port during one batch.
///
/// Each input frame yields at most one frame per output port, except when it leaves in
/// fragments, so a queue mostly holds at most [`BATCH_SIZE`]: the vectors are allocated
/// once, at that capacity. What goes beyond (fragments) waits in a spill queue shared
/// by all ports, drained after them; when that is full too, frames are dropped as
/// `tx_ring_full`. Nothing allocates after `new`.
#[derive(Debug)]
pub struct Outputs {
    queues: Box<[Vec<Desc>]>,
    /// Largest frame each port sends.
    max_frame: Box<[u32]>,
    /// Ports with something queued, in the order they were first used.
    dirty: Vec<PortId>,
    /// Frames for ports whose queue was full, in the order they came.
    spill: Vec<(PortId, Desc)>,
    /// One port's spilled frames, gathered for its send.
    spilled: Vec<Desc>,
}

impl Outputs {
    /// Queues for `max_ports` ports.
    pub fn new(max_ports: usize) -> Outputs {
        Outputs {
            queues: (0..max_ports).map(|_| Vec::with_capacity(BATCH_SIZE)).collect(),
            max_frame: vec![0; max_ports].into_boxed_slice(),
            dirty: Vec::with_capacity(max_ports),
            spill: Vec::with_capacity(SPILL),
            spilled: Vec::with_capacity(SPILL),
        }
    }

    /// The largest frame `port` sends.
    #[inline]
    pub fn max_frame(&self, port: PortId) -> u32 {
        self.max_frame.get(port.0 as usize).copied().unwrap_or(0)
    }

    /// Sets the largest frame `port` sends; bigger ones are dropped as `TooBig`.
    pub fn set_max_frame(&mut self, port: PortId, bytes: u32) {
        self.max_frame[port.0 as usize] = bytes;
    }

    /// Queues `d` on `port`; false (the caller frees and counts it) if there is no
    /// room left.
    #[inline(always)]
    fn push(&mut self, port: PortId, d: Desc) -> bool {
        let q = &mut self.queues[port.0 as usize];
        if q.len() >= BATCH_SIZE {
            return self.spill(port, d);
        }
        if q.is_empty() {
            self.dirty.push(port);
        }
        q.push(d);
        true
    }

    #[cold]
    #[inline(never)]
    fn spill(&mut self, port: PortId, d: Desc) -> bool {
        if self.spill.len() < SPILL {
            self.spill.push((port, d));
            true
        } else {
            false
        }
    }

    /// Hands each non-empty queue to `send`, then empties them; a port with spilled
    /// frames gets a second send with those.
    #[inline]
    pub fn drain(&mut self, mut send: impl FnMut(PortId, &[Desc])) {
        for p in self.dirty.drain(..) {
            let q = &mut self.queues[p.0 as usize];
            send(p, q);
            q.clear();
        }
        while let Some(&(port, _)) = self.spill.first() {
            // Cold: only fragments spill.
            let spilled = &mut self.spilled;
            self.spill.retain(|&(p, d)| {
                if p == port {
                    spilled.push(d);
                }
                p != port
            });
            send(port, spilled);
            spilled.clear();
        }
    }
}

/// The largest IP packet `port` sends in `network`: its largest frame less the
/// Ethernet header and the tag the port puts on the network's frames.
#[inline]
pub(super) fn ip_mtu(ctx: &Ctx<'_>, out: &Outputs, port: PortId, network: NetworkId) -> u32 {
    let tag =
        ctx.tables.topology.port(port).and_then(|e| e.egress.get(network.0 as usize).copied()).unwrap_or(NOT_MEMBER);
    out.max_frame(port).saturating_sub(14 + if tag == UNTAGGED || tag == NOT_MEMBER { 0 } else { 4 })
}

/// The segment to take frames from for copies that leave by `port`: the port's own
/// (so that its send need not copy again), or the worker's if it has none.
#[inline]
fn copy_segment(ctx: &Ctx<'_>, port: PortId) -> u32 {
    let seg = port_segment(port.0);
    if ctx.umem.has_segment(seg) {
        seg
    } else {
        0
    }
}

/// Makes the frame's tag fit `egress` (UNTAGGED or a VLAN id); returns the new
/// descriptor, or None if there is no headroom to push a tag.
#[inline(always)]
fn fit_tag(ctx: &mut Ctx<'_>, mut d: Desc, tagged: bool, egress: u16) -> Option<Desc> {
    match (tagged, egress) {
        (false, UNTAGGED) => {}
        (true, UNTAGGED) => {
            // Pop: move the MACs 4 bytes on, over the tag.
            ctx.umem.data_mut(d.addr, 16).copy_within(0..12, 4);
            d.addr += 4;
            d.len -= 4;
        }
        (false, vid) => {
            // Push: move the MACs 4 bytes back, into the headroom.
            if d.addr & u64::from(ctx.umem.frame_size() - 1) < 4 {
                return None;
            }
            d.addr -= 4;
            d.len += 4;
            let b = ctx.umem.data_mut(d.addr, 16);
            b.copy_within(4..16, 0);
            b[12..14].copy_from_slice(&EtherType::VLAN.0.to_be_bytes());
            b[14..16].copy_from_slice(&vid.to_be_bytes());
        }
        (true, vid) => {
            // Rewrite the VID, keeping the priority bits.
            let b = ctx.umem.data_mut(d.addr, 16);
            let tci = u16::from_be_bytes([b[14], b[15]]) & 0xf000 | vid;
            b[14..16].copy_from_slice(&tci.to_be_bytes());
        }
    }
    Some(d)
}

/// `port`'s tag for `network`: `UNTAGGED`, a VLAN id, or `NOT_MEMBER`.
#[inline(always)]
fn egress_of(ctx: &Ctx<'_>, port: PortId, network: u16) -> u16 {
    ctx.tables.topology.port(port).and_then(|p| p.egress.get(network as usize).copied()).unwrap_or(NOT_MEMBER)
}

#[inline(always)]
fn emit(ctx: &mut Ctx<'_>, out: &mut Outputs, port: PortId, d: Desc, network: u16, tagged: bool) -> bool {
    let egress = egress_of(ctx, port, network);
    let max_frame = out.max_frame[port.0 as usize];
    emit_to(ctx, out, port, d, tagged, egress, max_frame)
}

/// Queues `d` on `port`, whose tag for the frame's network is `egress` and whose
/// largest frame is `max_frame`; false if it was dropped (counted).
#[inline(always)]
fn emit_to(
    ctx: &mut Ctx<'_>,
    out: &mut Outputs,
    port: PortId,
    d: Desc,
    tagged: bool,
    egress: u16,
    max_frame: u32,
) -> bool {
    if egress == NOT_MEMBER {
        ctx.stats.drop(DropReason::NoPort);
        ctx.umem.free(d.addr);
        return false;
    }
    match fit_tag(ctx, d, tagged, egress) {
        Some(d) if d.len > max_frame => {
            ctx.stats.drop(DropReason::TooBig);
            ctx.umem.free(d.addr);
            false
        }
        Some(d) if out.push(port, d) => true,
        Some(d) => {
            ctx.stats.drop(DropReason::TxRingFull);
            ctx.umem.free(d.addr);
            false
        }
        None => {
            ctx.stats.drop(DropReason::VlanTruncated);
            ctx.umem.free(d.addr);
            false
        }
    }
}

/// Where a flood sends one frame: a port of the network, or a remote node.
#[derive(Debug, Clone, Copy)]
enum Target {
    Port(PortId),
    Peer(u16),
}

/// Where a flood of `m`'s network goes: every port of the network but the one it came
/// from (a routed packet: every port of its egress network), then every remote node
/// that carries the network unless it came from one (split horizon).
#[inline(always)]
fn flood_targets<'t>(ctx: &Ctx<'t>, m: Meta) -> impl Iterator<Item = Target> + 't {
    let tables = ctx.tables;
    let members = tables.topology.network(NetworkId(m.network)).map_or(&[][..], |n| &n.flood[..]);
    // A routed packet may go back out of the port it came in on.
    let skip = if m.routed { None } else { Some(ctx.in_port) };
    let remote = match tables.tunnel.l2_of(NetworkId(m.network)) {
        Some(v) if !m.tunnel => &v.peers[..],
        _ => &[],
    };
    members
        .iter()
        .filter(move |&&p| Some(p) != skip)
        .map(|&p| Target::Port(p))
        .chain(remote.iter().map(|&peer| Target::Peer(peer)))
}

/// The segment a flood copy for `t` is made in.
#[inline(always)]
fn target_segment(ctx: &Ctx<'_>, t: Target) -> u32 {
    let uplink = ctx.tables.tunnel.local.as_ref().map_or(PortId(0), |l| l.uplink);
    copy_segment(ctx, if let Target::Port(p) = t { p } else { uplink })
}

/// Floods `d` to every [`flood_targets`]. One pass: each target gets a copy made from
/// the untouched original when the next target is found, and the original itself goes
/// to the last, so that no copy is made of a frame already edited (a tag pushed or
/// popped in place).
#[inline(never)]
fn flood(ctx: &mut Ctx<'_>, out: &mut Outputs, d: Desc, m: Meta) {
    let mut last = None;
    for t in flood_targets(ctx, m) {
        if let Some(prev) = last.replace(t) {
            // Into the segment of the port the copy leaves by, so that its send need
            // not copy again.
            match ctx.umem.clone_into(target_segment(ctx, prev), d.addr, d.len) {
                Some(addr) => flood_to(ctx, out, Desc { addr, len: d.len }, m, prev),
                None => ctx.stats.drop(DropReason::FloodNoFrame),
            }
        }
    }
    match last {
        Some(t) => flood_to(ctx, out, d, m, t),
        None => no_flood_target(ctx, d),
    }
}

/// A network with one port: nowhere to flood. Counted, so that every frame is either
/// sent or counted.
#[cold]
fn no_flood_target(ctx: &mut Ctx<'_>, d: Desc) {
    ctx.stats.drop(DropReason::FloodNoTarget);
    ctx.umem.free(d.addr);
}

/// Most targets a [`FloodPlan`] holds; a flood to more goes the general way.
const PLAN_TARGETS: usize = 16;

/// One target of a [`FloodPlan`], with what sending to it needs.
#[derive(Debug, Clone, Copy)]
struct Planned {
    target: Target,
    /// Segment its copies are made in.
    seg: u32,
    /// For a port: its tag for the network (`UNTAGGED`, a VLAN id or `NOT_MEMBER`).
    egress: u16,
    /// For a port: the largest frame it sends.
    max_frame: u32,
}

/// A batch's flood targets, worked out at its first flood and used for every flood
/// after it that goes the same way (same network, routed or not, from a remote node
/// or not). A batch of floods (an ARP burst, unknown unicast to a host that stays
/// silent) mostly floods one network, and per packet this leaves the copies and the
/// queueing: a batch of 64 unknown-unicast floods to two ports takes 39,929
/// instructions with it, 50,096 without (perf/RESULTS.md). Valid for one batch:
/// tables and ports change between batches.
struct FloodPlan {
    /// Network, routed and tunnel bits of the floods it serves, or `NO_PLAN`.
    key: u32,
    /// Targets in use, or `PLAN_TARGETS + 1` if the floods have more.
    n: usize,
    targets: [Planned; PLAN_TARGETS],
}

const NO_PLAN: u32 = u32::MAX;

impl FloodPlan {
    fn new() -> FloodPlan {
        let none = Planned { target: Target::Port(PortId(0)), seg: 0, egress: NOT_MEMBER, max_frame: 0 };
        FloodPlan { key: NO_PLAN, n: 0, targets: [none; PLAN_TARGETS] }
    }

    #[inline(always)]
    fn key(m: Meta) -> u32 {
        u32::from(m.network) | u32::from(m.routed) << 16 | u32::from(m.tunnel) << 17
    }

    /// Works out the targets of `m`'s floods.
    #[inline(never)]
    fn make(&mut self, ctx: &Ctx<'_>, out: &Outputs, m: Meta) {
        self.key = FloodPlan::key(m);
        self.n = 0;
        for t in flood_targets(ctx, m) {
            if self.n == PLAN_TARGETS {
                self.n += 1;
                return;
            }
            let (egress, max_frame) = match t {
                Target::Port(p) => (egress_of(ctx, p, m.network), out.max_frame(p)),
                Target::Peer(_) => (NOT_MEMBER, 0),
            };
            self.targets[self.n] = Planned { target: t, seg: target_segment(ctx, t), egress, max_frame };
            self.n += 1;
        }
    }
}

/// Floods `d` as [`flood`] does, by the batch's plan.
#[inline(always)]
fn flood_by_plan(ctx: &mut Ctx<'_>, out: &mut Outputs, plan: &mut FloodPlan, d: Desc, m: Meta) {
    if plan.key != FloodPlan::key(m) {
        plan.make(ctx, out, m);
    }
    let Some((last, copies)) = plan.targets.get(..plan.n).and_then(|t| t.split_last()) else {
        return if plan.n == 0 { no_flood_target(ctx, d) } else { flood(ctx, out, d, m) };
    };
    for t in copies {
        match ctx.umem.clone_into(t.seg, d.addr, d.len) {
            Some(addr) => flood_planned(ctx, out, Desc { addr, len: d.len }, m, t),
            None => ctx.stats.drop(DropReason::FloodNoFrame),
        }
    }
    flood_planned(ctx, out, d, m, last);
}

/// Sends one of a planned flood's frames to `t`, counting it as flooded if it leaves.
#[inline(always)]
fn flood_planned(ctx: &mut Ctx<'_>, out: &mut Outputs, f: Desc, m: Meta, t: &Planned) {
    let port = match t.target {
        Target::Port(p) => emit_to(ctx, out, p, f, m.tagged, t.egress, t.max_frame).then_some(p),
        Target::Peer(peer) => to_vtep(ctx, out, f, m, peer),
    };
    if let Some(p) = port {
        ctx.stats.ports[p.0 as usize].tx_flood.add(1);
    }
}

/// Sends one of a flood's frames to `t`, counting it as flooded if it leaves.
#[inline(always)]
fn flood_to(ctx: &mut Ctx<'_>, out: &mut Outputs, f: Desc, m: Meta, t: Target) {
    let port = match t {
        Target::Port(p) => emit(ctx, out, p, f, m.network, m.tagged).then_some(p),
        Target::Peer(peer) => to_vtep(ctx, out, f, m, peer),
    };
    if let Some(p) = port {
        ctx.stats.ports[p.0 as usize].tx_flood.add(1);
    }
}

/// Encapsulates a stretched network's frame in its VNI to remote node `peer` and
/// queues it on the uplink; returns the uplink, or None if dropped (counted).
#[inline]
fn to_vtep(ctx: &mut Ctx<'_>, out: &mut Outputs, d: Desc, m: Meta, peer: u16) -> Option<PortId> {
    let tunnel = &*ctx.tables.tunnel;
    let (Some(local), Some(v), Some(p)) =
        (tunnel.local.as_ref(), tunnel.l2_of(NetworkId(m.network)), tunnel.peer(peer))
    else {
        ctx.stats.drop(DropReason::NoPort);
        ctx.umem.free(d.addr);
        return None;
    };
    let sent = match fit_tag(ctx, d, m.tagged, UNTAGGED) {
        None => Err((d, DropReason::VlanTruncated)),
        Some(mut f) => match super::tunnel::encap_frame(ctx, &mut f, p, v.vni) {
            Ok(()) if f.len > out.max_frame(local.uplink) => Err((f, DropReason::TooBig)),
            Ok(()) => Ok(f),
            Err(r) => Err((f, r)),
        },
    };
    match sent {
        Ok(f) if out.push(local.uplink, f) => {
            ctx.stats.l3.to_peers.add(1);
            Some(local.uplink)
        }
        Ok(f) => {
            ctx.stats.drop(DropReason::TxRingFull);
            ctx.umem.free(f.addr);
            None
        }
        Err((f, r)) => {
            ctx.stats.drop(r);
            ctx.umem.free(f.addr);
            None
        }
    }
}

/// Sends the routed IPv4 packet `d` on port `p` in fragments that fit its MTU. Out of
/// line and cold: the common path stays small.
#[cold]
#[inline(never)]
fn to_port_in_fragments(ctx: &mut Ctx<'_>, out: &mut Outputs, d: Desc, m: Meta, p: PortId) {
    let mtu = ip_mtu(ctx, out, p, NetworkId(m.network));
    let mut rest = [Desc::default(); MAX_FRAGMENTS - 1];
    let mut first = d;
    match fragment::split(ctx.umem, &mut first, m.l2_len(), mtu, copy_segment(ctx, p), &mut rest) {
        Ok(n) => {
            ctx.stats.l3.fragments.add(n as u64 + 1);
            for f in std::iter::once(first).chain(rest[..n].iter().copied()) {
                emit(ctx, out, p, f, m.network, m.tagged);
            }
        }
        Err(r) => one(ctx, out, d, Meta { next: Next::Drop(r), ..m }),
    }
}

/// Sends the routed IPv4 packet `d` to remote node `i` in fragments that fit the
/// tunnel's MTU, each encapsulated on its own.
#[cold]
#[inline(never)]
fn to_peer_in_fragments(ctx: &mut Ctx<'_>, out: &mut Outputs, d: Desc, m: Meta, i: u16) {
    let tunnel = &*ctx.tables.tunnel;
    let (Some(local), Some(peer)) = (tunnel.local.as_ref(), tunnel.peer(i)) else {
        return one(ctx, out, d, Meta { next: Next::Drop(DropReason::NoRoute), ..m });
    };
    let l2 = m.l2_len();
    let mut rest = [Desc::default(); MAX_FRAGMENTS - 1];
    let mut first = d;
    match fragment::split(ctx.umem, &mut first, l2, peer.mtu, copy_segment(ctx, local.uplink), &mut rest) {
        Ok(n) => {
            ctx.stats.l3.fragments.add(n as u64 + 1);
            for mut f in std::iter::once(first).chain(rest[..n].iter().copied()) {
                let next = super::tunnel::encap(ctx, &mut f, l2, local, peer, false);
                if let Next::Raw(_) = next {
                    ctx.stats.l3.to_peers.add(1);
                }
                one(ctx, out, f, Meta { next, ..m });
            }
        }
        Err(r) => one(ctx, out, d, Meta { next: Next::Drop(r), ..m }),
    }
}

pub(super) fn run(batch: &mut Batch, ctx: &mut Ctx<'_>, out: &mut Outputs) {
    let mut plan = FloodPlan::new();
    // The last (port, network) a packet went to, with the port's tag for the network
    // and its largest frame: a batch's packets mostly go where the one before went.
    let mut last = (PortId(u16::MAX), u16::MAX, NOT_MEMBER, 0);
    for i in 0..batch.len.min(BATCH_SIZE) {
        let (d, m) = (batch.desc[i], batch.meta[i]);
        match m.next {
            // The common cases (switched or routed to one port, flooded) inline, the
            // rest in `one`.
            Next::Port(p) => {
                if (p, m.network) != (last.0, last.1) {
                    last = (p, m.network, egress_of(ctx, p, m.network), out.max_frame(p));
                }
                emit_to(ctx, out, p, d, m.tagged, last.2, last.3);
            }
            Next::Flood => flood_by_plan(ctx, out, &mut plan, d, m),
            _ => one(ctx, out, d, m),
        }
    }
}

/// Sends, floods, frees or counts one packet by its `next`.
#[inline]
pub(super) fn one(ctx: &mut Ctx<'_>, out: &mut Outputs, d: Desc, m: Meta) {
    match m.next {
        Next::Drop(r) => {
            ctx.stats.drop(r);
            ctx.umem.free(d.addr);
        }
        Next::Port(p) => {
            emit(ctx, out, p, d, m.network, m.tagged);
        }
        Next::Raw(p) => {
            if d.len > out.max_frame[p.0 as usize] {
                ctx.stats.drop(DropReason::TooBig);
                ctx.umem.free(d.addr);
            } else if !out.push(p, d) {
                ctx.stats.drop(DropReason::TxRingFull);
                ctx.umem.free(d.addr);
            }
        }
        Next::Fragment(p) => to_port_in_fragments(ctx, out, d, m, p),
        Next::FragmentToPeer(i) => to_peer_in_fragments(ctx, out, d, m, i),
        Next::Vtep(peer) => {
            to_vtep(ctx, out, d, m, peer);
        }
        Next::Flood => flood(ctx, out, d, m),
        Next::Consumed => {
            ctx.stats.l3.neigh_consumed.add(1);
            ctx.umem.free(d.addr);
        }
        Next::Parked => {}
        Next::L2 | Next::L3 => {
            // Every stage resolves its packets; reaching here is a bug, but never a crash.
            debug_assert!(false, "packet left the pipeline unresolved");
            ctx.umem.free(d.addr);
        }
    }
}
