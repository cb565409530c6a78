//! Output: frames to their ports' queues, with VLAN tags made to fit each port, and
//! copies for floods.

use super::{Batch, Ctx, Meta, Next, BATCH_SIZE};
use crate::port::Desc;
use crate::stats::DropReason;
use crate::tables::topology::{NOT_MEMBER, UNTAGGED};
use crate::tables::{NetworkId, PortId};
use crate::wire::EtherType;
use crate::xsk::port_segment;

/// Frames gathered per output port during one batch.
///
/// Each input frame yields at most one frame per output port, so a queue never holds
/// more than [`BATCH_SIZE`]; the vectors are allocated once, at that capacity.
#[derive(Debug)]
pub struct Outputs {
    queues: Box<[Vec<Desc>]>,
    /// Largest frame each port sends.
    max_frame: Box<[u32]>,
    /// Ports with something queued, in the order they were first used.
    dirty: Vec<PortId>,
}

impl Outputs {
    /// Queues for `max_ports` ports.
    pub fn new(max_ports: usize) -> Outputs {
        Outputs {
            queues: (0..max_ports).map(|_| Vec::with_capacity(BATCH_SIZE)).collect(),
            max_frame: vec![0; max_ports].into_boxed_slice(),
            dirty: Vec::with_capacity(max_ports),
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

    #[inline]
    fn push(&mut self, port: PortId, d: Desc) {
        let q = &mut self.queues[port.0 as usize];
        if q.is_empty() {
            self.dirty.push(port);
        }
        q.push(d);
    }

    /// Hands each non-empty queue to `send`, then empties them.
    #[inline]
    pub fn drain(&mut self, mut send: impl FnMut(PortId, &[Desc])) {
        for p in self.dirty.drain(..) {
            let q = &mut self.queues[p.0 as usize];
            send(p, q);
            q.clear();
        }
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

#[inline(always)]
fn emit(ctx: &mut Ctx<'_>, out: &mut Outputs, port: PortId, d: Desc, network: u16, tagged: bool) -> bool {
    let egress =
        ctx.tables.topology.port(port).and_then(|p| p.egress.get(network as usize).copied()).unwrap_or(NOT_MEMBER);
    if egress == NOT_MEMBER {
        ctx.stats.drop(DropReason::NoPort);
        ctx.umem.free(d.addr);
        return false;
    }
    match fit_tag(ctx, d, tagged, egress) {
        Some(d) if d.len > out.max_frame[port.0 as usize] => {
            ctx.stats.drop(DropReason::TooBig);
            ctx.umem.free(d.addr);
            false
        }
        Some(d) => {
            out.push(port, d);
            true
        }
        None => {
            ctx.stats.drop(DropReason::VlanTruncated);
            ctx.umem.free(d.addr);
            false
        }
    }
}

/// The frame for a flood's next target, port `to`, `left` targets before the last:
/// copies first, from the untouched original, into `to`'s UMEM segment (so that its
/// send need not copy again); the original goes last. None (counted) when no frame is
/// free for a copy.
#[inline]
fn flood_copy(ctx: &mut Ctx<'_>, d: Desc, left: usize, to: PortId) -> Option<Desc> {
    if left == 0 {
        return Some(d);
    }
    let seg = port_segment(to.0);
    let seg = if ctx.umem.has_segment(seg) { seg } else { 0 };
    let copy = ctx.umem.clone_into(seg, d.addr, d.len).map(|addr| Desc { addr, len: d.len });
    if copy.is_none() {
        ctx.stats.drop(DropReason::FloodNoFrame);
    }
    copy
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
        Ok(f) => {
            out.push(local.uplink, f);
            ctx.stats.l3.to_peers.add(1);
            Some(local.uplink)
        }
        Err((f, r)) => {
            ctx.stats.drop(r);
            ctx.umem.free(f.addr);
            None
        }
    }
}

pub(super) fn run(batch: &mut Batch, ctx: &mut Ctx<'_>, out: &mut Outputs) {
    for i in 0..batch.len {
        one(ctx, out, batch.desc[i], batch.meta[i]);
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
            } else {
                out.push(p, d);
            }
        }
        Next::Vtep(peer) => {
            to_vtep(ctx, out, d, m, peer);
        }
        Next::Flood => {
            let tables = ctx.tables;
            let members = tables.topology.network(NetworkId(m.network)).map_or(&[][..], |n| &n.flood[..]);
            // A routed packet may go back out of the port it came in on.
            let skip = if m.routed { None } else { Some(ctx.in_port) };
            // Split horizon: what a remote node sent, it sent to every node itself.
            let remote = match tables.tunnel.l2_of(NetworkId(m.network)) {
                Some(v) if !m.tunnel => &v.peers[..],
                _ => &[],
            };
            let targets = members.iter().filter(|p| Some(**p) != skip).count() + remote.len();
            let mut left = targets;
            for &p in members.iter().filter(|p| Some(**p) != skip) {
                left -= 1;
                let Some(frame) = flood_copy(ctx, d, left, p) else { continue };
                if emit(ctx, out, p, frame, m.network, m.tagged) {
                    ctx.stats.ports[p.0 as usize].tx_flood.add(1);
                }
            }
            let uplink = tables.tunnel.local.as_ref().map_or(PortId(0), |l| l.uplink);
            for &peer in remote {
                left -= 1;
                let Some(frame) = flood_copy(ctx, d, left, uplink) else { continue };
                if let Some(uplink) = to_vtep(ctx, out, frame, m, peer) {
                    ctx.stats.ports[uplink.0 as usize].tx_flood.add(1);
                }
            }
            if targets == 0 {
                // A network with one port: nowhere to flood. Counted, so that every
                // frame is either sent or counted.
                ctx.stats.drop(DropReason::FloodNoTarget);
                ctx.umem.free(d.addr);
            }
        }
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
