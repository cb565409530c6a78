//! What the worker does besides batches: packets parked for neighbour resolution,
//! packets control asks it to send (ARP requests, neighbour solicitations, router
//! advertisements), and the ICMP error budget.

use super::{l3, output, Ctx, Meta, Next, Outputs};
use crate::port::Desc;
use crate::stats::DropReason;
use crate::tables::{Emit, NeighKey, NeighState, NetworkId, PortId};
use crate::wire::{icmpv6, EthernetAddress};
use crate::xsk::FRAME_HEADROOM;
use std::net::{IpAddr, Ipv6Addr};

/// Seconds a parked packet waits at most. Control fails a resolution after its retries
/// (3 s by default) and the failure releases the packets with an error; this bound only
/// matters if control's answer never comes.
pub const PARK_TIMEOUT_S: u32 = 5;

/// ICMP errors a worker sends per second at most (Linux's `icmp_msgs_per_sec` default).
pub const ICMP_ERRORS_PER_SECOND: u32 = 1000;

/// A packet waiting for its next hop.
#[derive(Debug, Clone, Copy)]
pub(super) struct Parked {
    pub desc: Desc,
    pub meta: Meta,
    pub key: NeighKey,
    pub egress: NetworkId,
    pub port: Option<PortId>,
    pub in_port: PortId,
    pub since_s: u32,
}

/// The bounded queue of parked packets of one worker (allocated once). One next hop
/// may hold a quarter of it at most, so a neighbour that never answers cannot starve
/// the others (Linux bounds its queue per neighbour for the same reason).
#[derive(Debug)]
pub struct Pending {
    items: Vec<Parked>,
    capacity: usize,
    per_key: usize,
}

impl Pending {
    /// Room for `capacity` packets, `capacity / 4` (at least 1) per next hop.
    pub fn new(capacity: usize) -> Pending {
        Pending { items: Vec::with_capacity(capacity), capacity, per_key: capacity.div_ceil(4).max(1) }
    }

    /// Packets waiting.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True if none wait.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// True if another packet for `key` cannot wait (the queue, or its share, is full).
    pub(super) fn refuses(&self, key: NeighKey) -> bool {
        self.items.len() >= self.capacity || self.items.iter().filter(|p| p.key == key).count() >= self.per_key
    }

    pub(super) fn push(&mut self, p: Parked) {
        self.items.push(p);
    }

    /// Frames held, for the worker's frame account.
    pub fn frames(&self) -> u32 {
        self.items.len() as u32
    }

    /// Frees the parked frames of UMEM segment `seg` (its port is being removed);
    /// returns how many. The others keep their order.
    pub fn drop_segment(&mut self, seg: u32, umem: &mut crate::xsk::Umem) -> usize {
        let before = self.items.len();
        self.items.retain(|p| {
            let gone = crate::xsk::segment_of(p.desc.addr) == seg;
            if gone {
                umem.free(p.desc.addr);
            }
            !gone
        });
        before - self.items.len()
    }

    /// Frees every parked frame (the worker is stopping).
    pub fn clear(&mut self, umem: &mut crate::xsk::Umem) {
        for p in self.items.drain(..) {
            umem.free(p.desc.addr);
        }
    }
}

/// A budget of ICMP errors per second, refilled when the second changes.
#[derive(Debug)]
pub struct IcmpLimiter {
    per_second: u32,
    left: u32,
    second: u32,
}

impl IcmpLimiter {
    /// `per_second` errors a second.
    pub fn new(per_second: u32) -> IcmpLimiter {
        IcmpLimiter { per_second, left: per_second, second: 0 }
    }

    /// Takes one error from the budget of second `now_s`; false when spent.
    #[inline]
    pub fn take(&mut self, now_s: u32) -> bool {
        if now_s != self.second {
            self.second = now_s;
            self.left = self.per_second;
        }
        if self.left == 0 {
            return false;
        }
        self.left -= 1;
        true
    }
}

impl Default for IcmpLimiter {
    fn default() -> Self {
        IcmpLimiter::new(ICMP_ERRORS_PER_SECOND)
    }
}

/// Sends what can go now of the parked packets, in arrival order: those whose next hop
/// resolved, errors for those whose next hop failed, drops for those that waited too
/// long. The worker calls it when the tables change and once a second.
pub fn release(ctx: &mut Ctx<'_>, out: &mut Outputs) {
    let mut keep = 0;
    let n = ctx.pending.items.len();
    for i in 0..n {
        let p = ctx.pending.items[i];
        let state = ctx.tables.neigh.lookup(p.key);
        let expired = ctx.now_s.wrapping_sub(p.since_s) >= PARK_TIMEOUT_S;
        if state.is_none() && !expired {
            ctx.pending.items[keep] = p;
            keep += 1;
            continue;
        }
        let (mut d, mut m) = (p.desc, p.meta);
        ctx.in_port = p.in_port;
        m.next = match state {
            Some(NeighState::Reachable(mac)) => {
                ctx.stats.l3.released.add(1);
                l3::finish(ctx, out, &mut d, &mut m, p.egress, p.port, mac, !p.key.is_v4())
            }
            Some(NeighState::Failed) => l3::neigh_failed(ctx, &mut d, &m, !p.key.is_v4()),
            None => Next::Drop(DropReason::NeighTimeout),
        };
        output::one(ctx, out, d, m);
    }
    ctx.pending.items.truncate(keep);
}

/// Builds and queues a packet control asked for.
pub fn emit(ctx: &mut Ctx<'_>, out: &mut Outputs, e: Emit) {
    let tables = ctx.tables;
    let network = match e {
        Emit::Solicit { key, .. } => NetworkId(key.network),
        Emit::RouterAdvert(n) => n,
    };
    let Some(gw) = tables.topology.network(network).and_then(|n| n.spec.gateway.as_ref()) else {
        return;
    };
    let Some(base) = ctx.umem.alloc() else {
        ctx.stats.drop(DropReason::NoFrame);
        return;
    };
    let addr = base + u64::from(FRAME_HEADROOM);
    let mut dst_mac = EthernetAddress::BROADCAST;
    let len = {
        let b = ctx.umem.data_mut(addr, 128);
        b.fill(0);
        b[6..12].copy_from_slice(&gw.mac.0);
        match (e, gw.v4, gw.v6) {
            (Emit::Solicit { key, unicast }, Some((gw4, _)), _) if key.is_v4() => {
                let IpAddr::V4(target) = key.ip() else { unreachable!("is_v4") };
                dst_mac = unicast.unwrap_or(EthernetAddress::BROADCAST);
                b[12..14].copy_from_slice(&[0x08, 0x06]);
                b[14..22].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
                b[22..28].copy_from_slice(&gw.mac.0);
                b[28..32].copy_from_slice(&gw4.octets());
                b[38..42].copy_from_slice(&target.octets());
                60 // the Ethernet minimum, padded with zeros
            }
            (Emit::Solicit { key, unicast }, _, Some((gw6, _))) if !key.is_v4() => {
                let target = Ipv6Addr::from(key.ip);
                let from = if target.is_unicast_link_local() { gw.link_local() } else { gw6 };
                let o = target.octets();
                let to = match unicast {
                    Some(_) => target,
                    None => Ipv6Addr::from([0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, o[13], o[14], o[15]]),
                };
                dst_mac = unicast.unwrap_or(EthernetAddress([0x33, 0x33, 0xff, o[13], o[14], o[15]]));
                let ns = icmpv6::Icmpv6Repr::NeighborSolicit { target, source_lladdr: Some(gw.mac) };
                b[12..14].copy_from_slice(&[0x86, 0xdd]);
                l3::write_ipv6(&mut b[14..], from, to, ns.buffer_len(), 255);
                ns.emit(&mut b[54..], &from, &to);
                54 + ns.buffer_len()
            }
            (Emit::RouterAdvert(_), _, Some(_)) if gw.router_advertisements => {
                let ra = l3::router_advert(gw);
                let (from, to) = (gw.link_local(), Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1));
                dst_mac = EthernetAddress([0x33, 0x33, 0, 0, 0, 1]);
                b[12..14].copy_from_slice(&[0x86, 0xdd]);
                l3::write_ipv6(&mut b[14..], from, to, ra.buffer_len(), 255);
                ra.emit(&mut b[54..], &from, &to);
                ctx.stats.l3.router_adverts.add(1);
                54 + ra.buffer_len()
            }
            _ => 0,
        }
    };
    if len == 0 {
        ctx.umem.free(addr);
        return;
    }
    ctx.umem.data_mut(addr, 6).copy_from_slice(&dst_mac.0);
    if matches!(e, Emit::Solicit { .. }) {
        ctx.stats.l3.solicits.add(1);
    }
    let next = if dst_mac.is_multicast() {
        Next::Flood
    } else {
        match tables.fdb.lookup(network, dst_mac) {
            Some(entry) => Next::Port(entry.port),
            None => Next::Flood,
        }
    };
    let m = Meta { network: network.0, routed: true, next, ..Meta::default() };
    output::one(ctx, out, Desc { addr, len: len as u32 }, m);
}
