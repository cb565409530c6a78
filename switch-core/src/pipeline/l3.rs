//! L3: what reaches a network's gateway. ARP, neighbour discovery and echo requests for
//! the gateway's addresses are answered in place (the request's frame becomes the
//! answer); everything else is routed: header checks, TTL / hop limit, FIB, neighbour,
//! MTU, then TTL decrement and MAC rewrite. A packet the switch cannot route becomes an
//! ICMP or ICMPv6 error in place, written into the frame's headroom in front of the
//! packet it quotes, so no payload is copied (rate limited per worker, never in answer
//! to an error, a fragment other than the first, or a multicast). An IPv4 packet
//! without DF that is larger than its next hop's MTU is routed as usual and marked
//! `Fragment`: the output stage cuts it (`fragment`).
//!
//! Routes to a remote node (a peer of the tunnel table) go through the same checks,
//! then to the tunnel stage's encapsulation. Packets that came from a remote node are
//! routed like any other, but nothing is answered back in place on the uplink: a
//! gateway address they are sent to does not answer them, and their ICMP errors are
//! routed back to the remote node like any packet.
//!
//! A destination's adjacency (egress network, port, MACs, MTU) is kept in the worker's
//! [`Adjacencies`] cache once resolved, so the next packets to it skip the FIB,
//! neighbour and FDB lookups; the worker empties the cache with every new snapshot and
//! port change.
//!
//! A packet whose next hop is not resolved yet is parked in the worker's
//! [`Pending`](super::Pending) queue, and control is told once; `release` finishes it
//! when the neighbour table changes.

use super::{output, tunnel, Ctx, Meta, Next, Outputs};
use crate::port::Desc;
use crate::stats::DropReason;
use crate::tables::topology::{Gateway, NetworkEntry};
use crate::tables::{Hop, NeighEvent, NeighKey, NeighState, NetworkId, PortId};
use crate::wire::icmpv6::PrefixInfo;
use crate::wire::{checksum, icmp, icmpv6, read_u16, EtherType, EthernetAddress, IpProtocol, Ipv4Packet};
use std::net::{Ipv4Addr, Ipv6Addr};

use super::Batch;

/// Bytes an IPv4 ICMP error may take, from its IP header on (RFC 1812 4.3.2.3).
const ICMP4_MAX: usize = 576;
/// Bytes an ICMPv6 error may take (the IPv6 minimum MTU, RFC 4443 2.4).
const ICMP6_MAX: usize = 1280;
/// TTL / hop limit of packets the switch makes.
const OWN_TTL: u8 = 64;

pub(super) fn run(batch: &mut Batch, ctx: &mut Ctx<'_>, out: &Outputs) {
    for i in 0..batch.len {
        if batch.meta[i].next == Next::L3 {
            one(ctx, out, &mut batch.desc[i], &mut batch.meta[i]);
        }
    }
}

/// Where a routed packet goes: everything `apply` needs, resolved once.
#[derive(Debug, Clone, Copy)]
pub(super) struct Adjacency {
    egress: NetworkId,
    port: Option<PortId>,
    mac: EthernetAddress,
    src: EthernetAddress,
    /// The egress port's MTU (u32::MAX when the port is not known: flooded).
    mtu: u32,
}

/// Slots of [`Adjacencies`]: a power of two. 256 slots of 48 bytes (12 KiB) stay in
/// the L1 cache beside a batch's frames.
const ADJ_SLOTS: usize = 256;

/// The adjacencies of destinations a worker routed lately, kept across batches, so
/// that a packet to one of them skips the FIB, neighbour and FDB lookups (a cache of
/// their result, like Open vSwitch's exact-match cache in front of its classifier).
/// Direct-mapped on a hash of (ingress network, family, destination): a collision
/// replaces the slot, and the next packet to the other destination looks up again.
///
/// Only resolved next hops are kept, and what they hold follows from the tables
/// snapshot and the worker's ports (their MTUs) alone: the worker empties the cache
/// when either changes, so a route, neighbour, FDB or port change takes effect from
/// the next batch, as without it.
#[derive(Debug)]
pub struct Adjacencies {
    slots: Box<[Slot; ADJ_SLOTS]>,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    dst: u128,
    network: u16,
    v6: bool,
    /// None: empty.
    adj: Option<Adjacency>,
}

// The size ADJ_SLOTS is chosen for.
const _: () = assert!(std::mem::size_of::<Slot>() <= 48);

impl Slot {
    const EMPTY: Slot = Slot { dst: 0, network: 0, v6: false, adj: None };
}

impl Default for Adjacencies {
    fn default() -> Self {
        Adjacencies { slots: Box::new([Slot::EMPTY; ADJ_SLOTS]) }
    }
}

impl Adjacencies {
    /// Forgets every adjacency (new tables, or a port added or removed).
    pub fn clear(&mut self) {
        self.slots.fill(Slot::EMPTY);
    }

    #[inline(always)]
    fn slot(network: u16, v6: bool, dst: u128) -> usize {
        let h = (dst as u64) ^ ((dst >> 64) as u64) ^ (u64::from(network) << 48) ^ u64::from(v6);
        (h.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 56) as usize % ADJ_SLOTS
    }

    #[inline]
    fn get(&self, network: u16, v6: bool, dst: u128) -> Option<Adjacency> {
        let s = &self.slots[Self::slot(network, v6, dst)];
        if s.dst == dst && s.network == network && s.v6 == v6 {
            s.adj
        } else {
            None
        }
    }

    #[inline]
    fn put(&mut self, network: u16, v6: bool, dst: u128, adj: Adjacency) {
        self.slots[Self::slot(network, v6, dst)] = Slot { dst, network, v6, adj: Some(adj) };
    }
}

#[inline]
fn v4_at(b: &[u8], at: usize) -> Ipv4Addr {
    let a: [u8; 4] = b[at..at + 4].try_into().expect("a 4-byte range");
    Ipv4Addr::from(a)
}

#[inline]
fn v6_at(b: &[u8], at: usize) -> Ipv6Addr {
    let a: [u8; 16] = b[at..at + 16].try_into().expect("a 16-byte range");
    Ipv6Addr::from(a)
}

fn one(ctx: &mut Ctx<'_>, out: &Outputs, d: &mut Desc, m: &mut Meta) {
    let tables = ctx.tables;
    let net = tables.topology.network(NetworkId(m.network));
    let Some((net, gw)) = net.and_then(|n| n.spec.gateway.as_ref().map(|g| (n, g))) else {
        // l2 only sends frames of networks with a gateway here.
        m.next = Next::Drop(DropReason::L3Unsupported);
        return;
    };
    let l2 = m.l2_len();
    let ethertype = read_u16(ctx.umem.data(d.addr, d.len), l2 - 2);
    m.next = match EtherType(ethertype) {
        EtherType::ARP => arp(ctx, d, m, l2, gw),
        EtherType::IPV4 => ipv4(ctx, out, d, m, l2, net),
        EtherType::IPV6 => ipv6(ctx, out, d, m, l2, gw),
        _ => Next::Drop(DropReason::L3Unsupported),
    };
}

/// Tells control about a neighbour; counts the event if the queue is full.
#[inline]
fn tell(ctx: &Ctx<'_>, ev: NeighEvent) {
    if ctx.neigh.push(ev).is_err() {
        ctx.stats.l3.neigh_events_lost.add(1);
    }
}

/// Writes the Ethernet addresses of an answer: back to the sender, from the gateway.
#[inline]
fn answer_macs(b: &mut [u8], gw: &Gateway) {
    b.copy_within(6..12, 0);
    b[6..12].copy_from_slice(&gw.mac.0);
}

fn arp(ctx: &mut Ctx<'_>, d: &Desc, m: &Meta, l2: usize, gw: &Gateway) -> Next {
    let Some((gw4, _)) = gw.v4 else {
        return Next::Consumed;
    };
    let b = ctx.umem.data_mut(d.addr, d.len);
    // Classify checked that the ARP packet is whole.
    let a = &mut b[l2..l2 + 28];
    if a[0..6] != [0, 1, 8, 0, 6, 4] {
        return Next::Drop(DropReason::ArpUnsupported);
    }
    let op = read_u16(a, 6);
    let sha = EthernetAddress::from_bytes(&a[8..14]);
    let spa = v4_at(a, 14);
    let tpa = v4_at(a, 24);
    let subnet = gw.subnet4();
    // Learn the sender when it is a host of the subnet (not an ARP probe from 0.0.0.0).
    let learn = sha.is_unicast() && !spa.is_unspecified() && subnet.is_some_and(|s| s.contains(spa)) && spa != gw4;
    let next = match op {
        1 if tpa == gw4 => {
            a[6..8].copy_from_slice(&2u16.to_be_bytes());
            a.copy_within(8..18, 18); // sender → target
            a[8..14].copy_from_slice(&gw.mac.0);
            a[14..18].copy_from_slice(&gw4.octets());
            answer_macs(b, gw);
            ctx.stats.l3.arp_replies.add(1);
            Next::Port(ctx.in_port)
        }
        1 | 2 => Next::Consumed,
        _ => Next::Drop(DropReason::ArpUnsupported),
    };
    if learn {
        tell(ctx, NeighEvent::Seen(NeighKey::v4(NetworkId(m.network), spa), sha));
    }
    next
}

fn ipv4(ctx: &mut Ctx<'_>, out: &Outputs, d: &mut Desc, m: &mut Meta, l2: usize, net: &NetworkEntry) -> Next {
    let Some(gw) = net.spec.gateway.as_ref() else {
        return Next::Drop(DropReason::L3Unsupported);
    };
    let b = ctx.umem.data(d.addr, d.len);
    let ip = &b[l2..];
    // Classify checked version, IHL and lengths; routers also check the checksum.
    if !Ipv4Packet::new_unchecked(ip).verify_checksum() {
        return Next::Drop(DropReason::Ipv4BadChecksum);
    }
    let dst = v4_at(ip, 16);
    let Some((gw4, _)) = gw.v4 else {
        return Next::Drop(DropReason::L3Unsupported);
    };
    if dst == gw4 {
        return local4(ctx, d, m, l2, gw4, gw);
    }
    if dst.is_multicast() || dst.is_broadcast() || net.gw_broadcast4 == dst {
        return Next::Drop(DropReason::L3Multicast);
    }
    if ip[8] <= 1 {
        return error4(ctx, d, m, l2, icmp::TYPE_TIME_EXCEEDED, 0, 0, DropReason::TtlExceeded);
    }
    let dst_key = u128::from(u32::from(dst));
    if let Some(adj) = ctx.adjacencies.get(m.network, false, dst_key) {
        return apply(ctx, d, m, &adj, false);
    }
    let (network, port, nh) = match ctx.tables.routes.lookup4(dst) {
        None => return error4(ctx, d, m, l2, icmp::TYPE_DST_UNREACHABLE, 0, 0, DropReason::NoRoute),
        Some(Hop::Drop) => return Next::Drop(DropReason::RouteDrop),
        Some(Hop::Connected { network, port }) => {
            // Another network's gateway address: the switch itself answers.
            let other = ctx.tables.topology.network(network).and_then(|n| n.spec.gateway.as_ref());
            if other.and_then(|g| g.v4).is_some_and(|(a, _)| a == dst) {
                return local4(ctx, d, m, l2, dst, gw);
            }
            (network, port, dst)
        }
        Some(Hop::Via { network, ip: std::net::IpAddr::V4(ip) }) => (network, None, ip),
        Some(Hop::Via { .. }) => return Next::Drop(DropReason::NoRoute),
        Some(Hop::Peer(i)) => return to_peer(ctx, d, m, l2, i, false),
    };
    to_next_hop(ctx, out, d, m, NeighKey::v4(network, nh), port, dst_key)
}

/// Sends a routed packet to its next hop `key` if it is resolved (remembering the
/// adjacency in the worker's cache), answers with an error if resolution failed, or
/// parks it.
#[allow(clippy::too_many_arguments)]
fn to_next_hop(
    ctx: &mut Ctx<'_>,
    out: &Outputs,
    d: &mut Desc,
    m: &mut Meta,
    key: NeighKey,
    port: Option<PortId>,
    dst_key: u128,
) -> Next {
    let (network, v6) = (NetworkId(key.network), !key.is_v4());
    match ctx.tables.neigh.lookup(key) {
        Some(NeighState::Reachable(mac)) => match adjacency(ctx, out, network, port, mac) {
            Some(adj) => {
                ctx.adjacencies.put(m.network, v6, dst_key, adj);
                apply(ctx, d, m, &adj, v6)
            }
            None => Next::Drop(DropReason::NoRoute),
        },
        Some(NeighState::Failed) => neigh_failed(ctx, d, m, v6),
        None => park(ctx, d, m, key, network, port),
    }
}

fn ipv6(ctx: &mut Ctx<'_>, out: &Outputs, d: &mut Desc, m: &mut Meta, l2: usize, gw: &Gateway) -> Next {
    let b = ctx.umem.data(d.addr, d.len);
    let ip = &b[l2..];
    let (src, dst) = (v6_at(ip, 8), v6_at(ip, 24));
    if gw.v6.is_none() {
        return Next::Drop(DropReason::L3Unsupported);
    }
    if dst.is_multicast() || gw.owns6(&dst) {
        return if m.tunnel {
            Next::Drop(if dst.is_multicast() { DropReason::L3Multicast } else { DropReason::GatewayUnsupported })
        } else if ip[6] == IpProtocol::ICMPV6.0 {
            local6(ctx, d, m, l2, gw)
        } else if dst.is_multicast() {
            Next::Drop(DropReason::L3Multicast)
        } else {
            Next::Drop(DropReason::GatewayUnsupported)
        };
    }
    if src.is_unicast_link_local() || dst.is_unicast_link_local() {
        return Next::Drop(DropReason::LinkLocal);
    }
    if ip[7] <= 1 {
        return error6(ctx, d, m, l2, icmpv6::ty::TIME_EXCEEDED, 0, 0, gw, DropReason::TtlExceeded);
    }
    let dst_key = u128::from(dst);
    if let Some(adj) = ctx.adjacencies.get(m.network, true, dst_key) {
        return apply(ctx, d, m, &adj, true);
    }
    let (network, port, nh) = match ctx.tables.routes.lookup6(dst) {
        None => return error6(ctx, d, m, l2, icmpv6::ty::DST_UNREACHABLE, 0, 0, gw, DropReason::NoRoute),
        Some(Hop::Drop) => return Next::Drop(DropReason::RouteDrop),
        Some(Hop::Connected { network, port }) => {
            let other = ctx.tables.topology.network(network).and_then(|n| n.spec.gateway.as_ref());
            if other.and_then(|g| g.v6).is_some_and(|(a, _)| a == dst) {
                if m.tunnel {
                    return Next::Drop(DropReason::GatewayUnsupported);
                }
                return local6_other(ctx, d, l2, dst, gw);
            }
            (network, port, dst)
        }
        Some(Hop::Via { network, ip: std::net::IpAddr::V6(ip) }) => (network, None, ip),
        Some(Hop::Via { .. }) => return Next::Drop(DropReason::NoRoute),
        Some(Hop::Peer(i)) => return to_peer(ctx, d, m, l2, i, true),
    };
    to_next_hop(ctx, out, d, m, NeighKey::v6(network, nh), port, dst_key)
}

/// Parks the packet until `key` resolves (or drops it if it cannot wait); either way
/// control hears of the miss, once per key and tables generation.
fn park(ctx: &mut Ctx<'_>, d: &Desc, m: &Meta, key: NeighKey, egress: NetworkId, port: Option<PortId>) -> Next {
    let folded = (key.ip as u64) ^ ((key.ip >> 64) as u64);
    if ctx.dedup.first_time(folded, key.network ^ 0x8000, 0) {
        tell(ctx, NeighEvent::Miss(key));
    }
    if ctx.pending.refuses(key) {
        return Next::Drop(DropReason::NeighQueueFull);
    }
    ctx.pending.push(super::control::Parked {
        desc: *d,
        meta: *m,
        key,
        egress,
        port,
        in_port: ctx.in_port,
        since_s: ctx.now_s,
    });
    ctx.stats.l3.parked.add(1);
    Next::Parked
}

/// Resolves how to reach `mac` on `egress`: the port (given, or from the FDB; None
/// floods), the gateway MAC to send from and the port's MTU.
#[inline]
fn adjacency(
    ctx: &Ctx<'_>,
    out: &Outputs,
    egress: NetworkId,
    port: Option<PortId>,
    mac: EthernetAddress,
) -> Option<Adjacency> {
    let tables = ctx.tables;
    let egw = tables.topology.network(egress).and_then(|n| n.spec.gateway.as_ref())?;
    let port = port.or_else(|| tables.fdb.lookup(egress, mac).map(|e| e.port));
    let mtu = port.map_or(u32::MAX, |p| output::ip_mtu(ctx, out, p, egress));
    Some(Adjacency { egress, port, mac, src: egw.mac, mtu })
}

/// Sends a routed packet through `adj`: MTU check, TTL / hop limit decrement, MAC
/// rewrite, egress port.
#[inline(always)]
fn apply(ctx: &mut Ctx<'_>, d: &mut Desc, m: &mut Meta, adj: &Adjacency, v6: bool) -> Next {
    let fragment = match hop(ctx, d, m, v6, adj.mtu, Some((adj.mac, adj.src))) {
        Ok(fragment) => fragment,
        Err(next) => return next,
    };
    m.network = adj.egress.0;
    match adj.port {
        Some(p) if fragment => Next::Fragment(p),
        Some(p) => Next::Port(p),
        // Flooded: the MTU is not known (u32::MAX), so never in fragments.
        None => Next::Flood,
    }
}

/// One routed hop's work on the packet, for `mtu`: the size check, the TTL or hop
/// limit decrement, the MAC rewrite if `macs` (to, from) are given, the count. Ok(true)
/// if it must leave in fragments; Err with what happens instead if it is too big.
#[inline(always)]
fn hop(
    ctx: &mut Ctx<'_>,
    d: &mut Desc,
    m: &mut Meta,
    v6: bool,
    mtu: u32,
    macs: Option<(EthernetAddress, EthernetAddress)>,
) -> Result<bool, Next> {
    let l2 = m.l2_len();
    let b = ctx.umem.data_mut(d.addr, d.len);
    let fragment = match fit(b, l2, v6, mtu) {
        Fit::Whole => false,
        Fit::InFragments => true,
        Fit::TooBig => return Err(too_big(ctx, d, m, l2, v6, mtu)),
    };
    decrement_ttl(b, l2, v6);
    if let Some((to, from)) = macs {
        b[0..6].copy_from_slice(&to.0);
        b[6..12].copy_from_slice(&from.0);
    }
    m.routed = true;
    ctx.stats.l3.routed.add(1);
    Ok(fragment)
}

/// How a routed packet fits its next hop's MTU.
enum Fit {
    Whole,
    /// Too big, but IPv4 without DF: the output stage fragments it.
    InFragments,
    /// Too big, and DF or IPv6: see [`too_big`].
    TooBig,
}

/// How the packet in frame `b` (its L3 header at `l2`) fits `mtu`.
#[inline(always)]
fn fit(b: &[u8], l2: usize, v6: bool, mtu: u32) -> Fit {
    let (len, df) = if v6 {
        (40 + u32::from(read_u16(b, l2 + 4)), true)
    } else {
        (u32::from(read_u16(b, l2 + 2)), b[l2 + 6] & 0x40 != 0)
    };
    if len <= mtu {
        Fit::Whole
    } else if !df {
        Fit::InFragments
    } else {
        Fit::TooBig
    }
}

/// A DF or IPv6 packet too big for `mtu`: fragmentation needed or packet too big to its
/// sender, in place (or a drop if none may be sent).
#[cold]
#[inline(never)]
fn too_big(ctx: &mut Ctx<'_>, d: &mut Desc, m: &Meta, l2: usize, v6: bool, mtu: u32) -> Next {
    let tables = ctx.tables;
    let in_gw = tables.topology.network(NetworkId(m.network)).and_then(|n| n.spec.gateway.as_ref());
    match (v6, in_gw) {
        (true, Some(gw)) => error6(ctx, d, m, l2, icmpv6::ty::PACKET_TOO_BIG, 0, mtu, gw, DropReason::FragNeeded),
        (false, Some(_)) => error4(ctx, d, m, l2, icmp::TYPE_DST_UNREACHABLE, 4, mtu as u16, DropReason::FragNeeded),
        (_, None) => Next::Drop(DropReason::FragNeeded),
    }
}

/// Decrements the TTL (with an incremental checksum update) or the hop limit.
#[inline(always)]
fn decrement_ttl(b: &mut [u8], l2: usize, v6: bool) {
    if v6 {
        b[l2 + 7] -= 1;
    } else {
        let ip = &mut b[l2..l2 + 12];
        ip[8] -= 1;
        let check = checksum::ttl_decremented(read_u16(ip, 10));
        ip[10..12].copy_from_slice(&check.to_be_bytes());
    }
}

/// Routes the packet to remote node `i`: MTU (the peer's, after the tunnel's
/// overhead), TTL, then encapsulation.
fn to_peer(ctx: &mut Ctx<'_>, d: &mut Desc, m: &mut Meta, l2: usize, i: u16, v6: bool) -> Next {
    let tables = ctx.tables;
    let (Some(local), Some(peer)) = (tables.tunnel.local.as_ref(), tables.tunnel.peer(i)) else {
        return Next::Drop(DropReason::NoRoute);
    };
    if peer.header.is_none() {
        return Next::Drop(DropReason::PeerUnresolved);
    }
    let fragment = match hop(ctx, d, m, v6, peer.mtu, None) {
        Ok(fragment) => fragment,
        Err(next) => return next,
    };
    if fragment {
        // Counted as sent to the peer per fragment, by the output stage.
        return Next::FragmentToPeer(i);
    }
    ctx.stats.l3.to_peers.add(1);
    tunnel::encap(ctx, d, l2, local, peer, v6)
}

/// For an ICMP error about a packet from a remote node: the peer its sender is
/// behind, if that peer can be sent to now.
#[inline]
fn peer_of(ctx: &Ctx<'_>, sender: std::net::IpAddr) -> Option<u16> {
    let hop = match sender {
        std::net::IpAddr::V4(a) => ctx.tables.routes.lookup4(a),
        std::net::IpAddr::V6(a) => ctx.tables.routes.lookup6(a),
    };
    match hop {
        Some(Hop::Peer(i)) if ctx.tables.tunnel.peer(i).is_some_and(|p| p.header.is_some()) => Some(i),
        _ => None,
    }
}

/// Where an ICMP error about `m`'s packet goes: back out of the ingress port (None),
/// or for a packet from a remote node, through the tunnel to the peer its `sender` is
/// behind (Some); Err if that peer cannot be sent to now.
#[inline]
fn error_route(ctx: &Ctx<'_>, m: &Meta, sender: std::net::IpAddr) -> Result<Option<u16>, ()> {
    if !m.tunnel {
        return Ok(None);
    }
    peer_of(ctx, sender).map(Some).ok_or(())
}

/// Sends a packet the switch made (an ICMP error, its L3 header at `l2`) to remote node
/// `i`, which [`peer_of`] found.
fn error_to_peer(ctx: &mut Ctx<'_>, d: &mut Desc, l2: usize, i: u16, v6: bool) -> Next {
    let tables = ctx.tables;
    match (tables.tunnel.local.as_ref(), tables.tunnel.peer(i)) {
        (Some(local), Some(peer)) => {
            ctx.stats.l3.to_peers.add(1);
            tunnel::encap(ctx, d, l2, local, peer, v6)
        }
        _ => Next::Drop(DropReason::NoRoute),
    }
}

/// Sends a routed packet to `mac` on `egress` (a released parked packet).
#[allow(clippy::too_many_arguments)]
pub(super) fn finish(
    ctx: &mut Ctx<'_>,
    out: &Outputs,
    d: &mut Desc,
    m: &mut Meta,
    egress: NetworkId,
    port: Option<PortId>,
    mac: EthernetAddress,
    v6: bool,
) -> Next {
    match adjacency(ctx, out, egress, port, mac) {
        Some(adj) => apply(ctx, d, m, &adj, v6),
        None => Next::Drop(DropReason::NoRoute),
    }
}

fn local4(ctx: &mut Ctx<'_>, d: &mut Desc, m: &Meta, l2: usize, gw4: Ipv4Addr, gw: &Gateway) -> Next {
    if m.tunnel {
        return Next::Drop(DropReason::GatewayUnsupported);
    }
    let b = ctx.umem.data_mut(d.addr, d.len);
    let ip = &mut b[l2..];
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let total = usize::from(read_u16(ip, 2));
    let proto = ip[9];
    if proto == IpProtocol::UDP.0 {
        // What traceroute to a gateway expects at the last hop.
        return error4(ctx, d, m, l2, icmp::TYPE_DST_UNREACHABLE, 3, 0, DropReason::GatewayUnsupported);
    }
    let is_echo = proto == IpProtocol::ICMP.0 && total >= ihl + icmp::HEADER_LEN && ip[ihl] == icmp::TYPE_ECHO_REQUEST;
    if !is_echo || read_u16(ip, 6) & 0x3fff != 0 || checksum::checksum(&ip[ihl..total]) != 0 {
        return Next::Drop(DropReason::GatewayUnsupported);
    }
    // Echo reply: addresses swapped, own TTL, type 0 (ICMP checksum fixed incrementally).
    ip.copy_within(12..16, 16);
    ip[12..16].copy_from_slice(&gw4.octets());
    ip[8] = OWN_TTL;
    ip[10..12].fill(0);
    let c = checksum::checksum(&ip[..ihl]);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let icmp = &mut ip[ihl..total];
    let old = read_u16(icmp, 0);
    icmp[0] = icmp::TYPE_ECHO_REPLY;
    let c = checksum::update(read_u16(icmp, 2), old, read_u16(icmp, 0));
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    answer_macs(b, gw);
    ctx.stats.l3.echo_replies.add(1);
    Next::Port(ctx.in_port)
}

/// IPv6 to another network's gateway address: echo is answered from that address,
/// anything else is dropped.
fn local6_other(ctx: &mut Ctx<'_>, d: &mut Desc, l2: usize, addr: Ipv6Addr, gw: &Gateway) -> Next {
    let b = ctx.umem.data(d.addr, d.len);
    let ip = &b[l2..];
    let plen = usize::from(read_u16(ip, 4));
    let echo = ip[6] == IpProtocol::ICMPV6.0
        && plen >= 8
        && matches!(
            icmpv6::Icmpv6Repr::parse(&ip[40..40 + plen], &v6_at(ip, 8), &addr, ip[7]),
            Ok(icmpv6::Icmpv6Repr::EchoRequest { .. })
        );
    if !echo {
        return Next::Drop(DropReason::GatewayUnsupported);
    }
    echo6(ctx, d, l2, addr, gw)
}

/// Turns an echo request to `addr` into its reply, in place, back to the sender.
fn echo6(ctx: &mut Ctx<'_>, d: &Desc, l2: usize, addr: Ipv6Addr, gw: &Gateway) -> Next {
    // The pseudo-header sum is unchanged by swapping the addresses, so only the type
    // word changes the checksum.
    let b = ctx.umem.data_mut(d.addr, d.len);
    let ip = &mut b[l2..];
    ip[7] = OWN_TTL;
    ip.copy_within(8..24, 24);
    ip[8..24].copy_from_slice(&addr.octets());
    let old = read_u16(ip, 40);
    ip[40] = icmpv6::ty::ECHO_REPLY;
    let c = checksum::update(read_u16(ip, 42), old, read_u16(ip, 40));
    ip[42..44].copy_from_slice(&c.to_be_bytes());
    answer_macs(b, gw);
    ctx.stats.l3.echo_replies.add(1);
    Next::Port(ctx.in_port)
}

/// ICMPv6 to a gateway address or a multicast group: neighbour discovery and echo.
fn local6(ctx: &mut Ctx<'_>, d: &mut Desc, m: &Meta, l2: usize, gw: &Gateway) -> Next {
    let b = ctx.umem.data(d.addr, d.len);
    let ip = &b[l2..];
    let (src, dst, hop) = (v6_at(ip, 8), v6_at(ip, 24), ip[7]);
    let plen = usize::from(read_u16(ip, 4));
    let msg = &ip[40..40 + plen];
    let Ok(repr) = icmpv6::Icmpv6Repr::parse(msg, &src, &dst, hop) else {
        return Next::Drop(DropReason::NdpInvalid);
    };
    let net = NetworkId(m.network);
    let src_mac = EthernetAddress::from_bytes(&b[6..12]);
    let answer = match repr {
        icmpv6::Icmpv6Repr::NeighborSolicit { target, source_lladdr } if gw.owns6(&target) => {
            if let (false, Some(mac)) = (src.is_unspecified(), source_lladdr) {
                tell(ctx, NeighEvent::Seen(NeighKey::v6(net, src), mac));
            }
            // DAD probes (from ::) are answered to all nodes, without the solicited flag.
            let (to, flags) =
                if src.is_unspecified() { (Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1), 0xa0) } else { (src, 0xe0) };
            let na = icmpv6::Icmpv6Repr::NeighborAdvert { flags, target, target_lladdr: Some(gw.mac) };
            ctx.stats.l3.nd_adverts.add(1);
            Some((target, to, na))
        }
        icmpv6::Icmpv6Repr::NeighborAdvert { target, target_lladdr, .. } => {
            let mac = target_lladdr.unwrap_or(src_mac);
            if mac.is_unicast() && !target.is_multicast() {
                tell(ctx, NeighEvent::Seen(NeighKey::v6(net, target), mac));
            }
            None
        }
        icmpv6::Icmpv6Repr::RouterSolicit { .. } if gw.router_advertisements => {
            let to = if src.is_unspecified() { Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1) } else { src };
            ctx.stats.l3.router_adverts.add(1);
            Some((gw.link_local(), to, router_advert(gw)))
        }
        icmpv6::Icmpv6Repr::EchoRequest { .. } if gw.owns6(&dst) => return echo6(ctx, d, l2, dst, gw),
        _ => return Next::Consumed,
    };
    let Some((from, to, msg)) = answer else {
        return Next::Consumed;
    };
    // The answer replaces the request in the same frame (the frame has room: it is a
    // whole UMEM chunk).
    let len = msg.buffer_len();
    d.len = (l2 + 40 + len) as u32;
    let b = ctx.umem.data_mut(d.addr, d.len);
    write_ipv6(&mut b[l2..], from, to, len, 255);
    msg.emit(&mut b[l2 + 40..], &from, &to);
    if to.is_multicast() {
        let o = to.octets();
        b[0..6].copy_from_slice(&[0x33, 0x33, o[12], o[13], o[14], o[15]]);
    } else {
        b.copy_within(6..12, 0);
    }
    b[6..12].copy_from_slice(&gw.mac.0);
    Next::Port(ctx.in_port)
}

/// The router advertisement of `gw` (which has an IPv6 address).
pub(super) fn router_advert(gw: &Gateway) -> icmpv6::Icmpv6Repr<'static> {
    let prefix = gw.subnet6().map(|s| PrefixInfo {
        prefix: s.addr(),
        len: s.len(),
        // On-link, and autonomous (SLAAC) only where SLAAC works: /64.
        flags: if s.len() == 64 { 0xc0 } else { 0x80 },
        valid_s: 86_400,
        preferred_s: 14_400,
    });
    icmpv6::Icmpv6Repr::RouterAdvert {
        hop_limit: OWN_TTL,
        flags: 0,
        lifetime_s: 1800,
        reachable_ms: 0,
        retrans_ms: 0,
        source_lladdr: Some(gw.mac),
        mtu: None,
        prefix,
    }
}

/// Writes an IPv6 header.
pub(super) fn write_ipv6(ip: &mut [u8], src: Ipv6Addr, dst: Ipv6Addr, payload: usize, hop: u8) {
    ip[0..4].copy_from_slice(&[0x60, 0, 0, 0]);
    ip[4..6].copy_from_slice(&(payload as u16).to_be_bytes());
    ip[6] = IpProtocol::ICMPV6.0;
    ip[7] = hop;
    ip[8..24].copy_from_slice(&src.octets());
    ip[24..40].copy_from_slice(&dst.octets());
}

/// Writes an IPv4 header (no options) with its checksum.
pub(super) fn write_ipv4(ip: &mut [u8], src: Ipv4Addr, dst: Ipv4Addr, payload: usize, proto: u8, tos: u8) {
    ip[0] = 0x45;
    ip[1] = tos;
    ip[2..4].copy_from_slice(&((20 + payload) as u16).to_be_bytes());
    ip[4..8].fill(0);
    ip[8] = OWN_TTL;
    ip[9] = proto;
    ip[10..12].fill(0);
    ip[12..16].copy_from_slice(&src.octets());
    ip[16..20].copy_from_slice(&dst.octets());
    let c = checksum::checksum(&ip[..20]);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
}

/// Moves the frame start `grow` bytes back into the headroom and writes a new L2
/// header there (to the packet's sender, from the gateway, same tag). Returns false if
/// the headroom is too small.
fn prepend_reply_l2(ctx: &mut Ctx<'_>, d: &mut Desc, l2: usize, grow: u64, gw_mac: EthernetAddress) -> bool {
    if d.addr & u64::from(ctx.umem.frame_size() - 1) < grow {
        return false;
    }
    let mut hdr = [0u8; 18];
    hdr[..l2].copy_from_slice(&ctx.umem.data(d.addr, l2 as u32)[..l2]);
    d.addr -= grow;
    d.len += grow as u32;
    let b = ctx.umem.data_mut(d.addr, d.len);
    b[0..6].copy_from_slice(&hdr[6..12]);
    b[6..12].copy_from_slice(&gw_mac.0);
    b[12..l2].copy_from_slice(&hdr[12..l2]);
    true
}

/// Turns the IPv4 packet into an ICMP error to its sender (`param`: the next-hop MTU
/// for "fragmentation needed"). Counts `reason` if an error goes out; otherwise returns
/// a drop for it.
#[allow(clippy::too_many_arguments)]
fn error4(
    ctx: &mut Ctx<'_>,
    d: &mut Desc,
    m: &Meta,
    l2: usize,
    ty: u8,
    code: u8,
    param: u16,
    reason: DropReason,
) -> Next {
    let tables = ctx.tables;
    let Some(gw) = tables.topology.network(NetworkId(m.network)).and_then(|n| n.spec.gateway.as_ref()) else {
        return Next::Drop(reason);
    };
    let Some((gw4, _)) = gw.v4 else {
        return Next::Drop(reason);
    };
    let b = ctx.umem.data(d.addr, d.len);
    let ip = &b[l2..];
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let src = v4_at(ip, 12);
    let dst = v4_at(ip, 16);
    let first_fragment = read_u16(ip, 6) & 0x1fff == 0;
    let is_error = ip[9] == IpProtocol::ICMP.0
        && ip.len() > ihl
        && !matches!(ip[ihl], icmp::TYPE_ECHO_REQUEST | icmp::TYPE_ECHO_REPLY | 13..=18);
    let bad_src = src.is_unspecified() || src.is_multicast() || src.is_broadcast() || src.is_loopback();
    if bad_src || dst.is_multicast() || dst.is_broadcast() || !first_fragment || is_error {
        return Next::Drop(reason);
    }
    let Ok(peer) = error_route(ctx, m, src.into()) else {
        return Next::Drop(reason);
    };
    if !ctx.icmp.take(ctx.now_s) {
        ctx.stats.l3.icmp_rate_limited.add(1);
        return Next::Drop(reason);
    }
    let quote = (usize::from(read_u16(ip, 2)).min(ip.len())).min(ICMP4_MAX - 28);
    d.len = (l2 + quote) as u32;
    if !prepend_reply_l2(ctx, d, l2, 28, gw.mac) {
        return Next::Drop(DropReason::NoFrame);
    }
    let b = ctx.umem.data_mut(d.addr, d.len);
    let msg = &mut b[l2 + 20..];
    msg[0] = ty;
    msg[1] = code;
    msg[2..6].fill(0);
    msg[6..8].copy_from_slice(&param.to_be_bytes());
    let c = checksum::checksum(&msg[..8 + quote]);
    msg[2..4].copy_from_slice(&c.to_be_bytes());
    // Precedence "internetwork control", as Linux sends its ICMP errors.
    write_ipv4(&mut b[l2..], gw4, src, 8 + quote, IpProtocol::ICMP.0, 0xc0);
    ctx.stats.drop(reason);
    ctx.stats.l3.icmp_errors.add(1);
    match peer {
        Some(i) => error_to_peer(ctx, d, l2, i, false),
        None => Next::Port(ctx.in_port),
    }
}

/// Turns the IPv6 packet into an ICMPv6 error to its sender (`param`: MTU for packet
/// too big). Counts `reason` if an error goes out; otherwise returns a drop for it.
#[allow(clippy::too_many_arguments)]
fn error6(
    ctx: &mut Ctx<'_>,
    d: &mut Desc,
    m: &Meta,
    l2: usize,
    ty: u8,
    code: u8,
    param: u32,
    gw: &Gateway,
    reason: DropReason,
) -> Next {
    let Some((gw6, _)) = gw.v6 else {
        return Next::Drop(reason);
    };
    let b = ctx.umem.data(d.addr, d.len);
    let ip = &b[l2..];
    let src = v6_at(ip, 8);
    let dst = v6_at(ip, 24);
    // Never about an ICMPv6 error (types below 128), and about multicast only for too big.
    let is_error = ip[6] == IpProtocol::ICMPV6.0 && ip.len() > 40 && ip[40] < 128;
    if src.is_unspecified()
        || src.is_multicast()
        || is_error
        || (dst.is_multicast() && ty != icmpv6::ty::PACKET_TOO_BIG)
    {
        return Next::Drop(reason);
    }
    let Ok(peer) = error_route(ctx, m, src.into()) else {
        return Next::Drop(reason);
    };
    if !ctx.icmp.take(ctx.now_s) {
        ctx.stats.l3.icmp_rate_limited.add(1);
        return Next::Drop(reason);
    }
    let from = if src.is_unicast_link_local() { gw.link_local() } else { gw6 };
    let quote = (40 + usize::from(read_u16(ip, 4))).min(ip.len()).min(ICMP6_MAX - 48);
    d.len = (l2 + quote) as u32;
    if !prepend_reply_l2(ctx, d, l2, 48, gw.mac) {
        return Next::Drop(DropReason::NoFrame);
    }
    let b = ctx.umem.data_mut(d.addr, d.len);
    write_ipv6(&mut b[l2..], from, src, 8 + quote, OWN_TTL);
    let msg = &mut b[l2 + 40..l2 + 48 + quote];
    msg[0] = ty;
    msg[1] = code;
    msg[2..4].fill(0);
    msg[4..8].copy_from_slice(&param.to_be_bytes());
    let c = checksum::l4(from.into(), src.into(), IpProtocol::ICMPV6.0, msg);
    msg[2..4].copy_from_slice(&c.to_be_bytes());
    ctx.stats.drop(reason);
    ctx.stats.l3.icmp_errors.add(1);
    match peer {
        Some(i) => error_to_peer(ctx, d, l2, i, true),
        None => Next::Port(ctx.in_port),
    }
}

/// The ICMP error for a parked packet whose neighbour failed.
pub(super) fn neigh_failed(ctx: &mut Ctx<'_>, d: &mut Desc, m: &Meta, v6: bool) -> Next {
    let l2 = m.l2_len();
    if v6 {
        let tables = ctx.tables;
        match tables.topology.network(NetworkId(m.network)).and_then(|n| n.spec.gateway.as_ref()) {
            Some(gw) => error6(ctx, d, m, l2, icmpv6::ty::DST_UNREACHABLE, 3, 0, gw, DropReason::NeighFailed),
            None => Next::Drop(DropReason::NeighFailed),
        }
    } else {
        error4(ctx, d, m, l2, icmp::TYPE_DST_UNREACHABLE, 1, 0, DropReason::NeighFailed)
    }
}
