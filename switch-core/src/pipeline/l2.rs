//! L2: learn source addresses, look up destinations.

use super::{Batch, Ctx, Next};
use crate::stats::DropReason;
use crate::tables::topology::NO_GATEWAY;
use crate::tables::{fdb, FdbEntry, Gateway, LearnEvent, NetworkId};
use crate::wire::{icmpv6, EtherType, EthernetAddress, IpProtocol};
use std::net::Ipv6Addr;

const DEDUP_SLOTS: usize = 256;

/// Remembers which learn events this worker already sent for the current tables
/// generation, so that a burst from a new MAC sends one event, not one per packet.
/// Cleared when a new snapshot arrives (which may or may not contain the entry).
#[derive(Debug)]
pub struct LearnDedup {
    slots: [u64; DEDUP_SLOTS],
}

impl Default for LearnDedup {
    fn default() -> Self {
        LearnDedup { slots: [0; DEDUP_SLOTS] }
    }
}

impl LearnDedup {
    /// Forgets everything (a new generation).
    pub fn clear(&mut self) {
        self.slots = [0; DEDUP_SLOTS];
    }

    /// True if the event is new (and remembers it).
    #[inline]
    pub(super) fn first_time(&mut self, key: u64, port: u16, peer: u16) -> bool {
        let whence = u64::from(port) << 32 | u64::from(peer) << 16;
        let tag = (key ^ whence).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let slot = &mut self.slots[(tag >> 56) as usize % DEDUP_SLOTS];
        if *slot == tag {
            return false;
        }
        *slot = tag;
        true
    }
}

/// The last lookup of a batch: packets of one flow come in runs, so the next packet
/// often asks the same question. Valid for one batch (one snapshot).
struct Memo {
    key: u64,
    entry: Option<FdbEntry>,
}

impl Memo {
    const EMPTY: Memo = Memo { key: u64::MAX, entry: None };

    #[inline]
    fn lookup(&mut self, fdb: &crate::tables::Fdb, net: NetworkId, mac: EthernetAddress) -> (Option<FdbEntry>, bool) {
        let key = fdb::key(net, mac);
        if key == self.key {
            return (self.entry, true);
        }
        self.key = key;
        self.entry = fdb.lookup(net, mac);
        (self.entry, false)
    }
}

/// True if a multicast frame is addressed to the gateway `gw`: an ARP request for its
/// IPv4 address, a neighbour solicitation for one of its IPv6 addresses, or a router
/// solicitation when it advertises. `l3` is where the L3 header starts.
#[inline]
fn for_gateway(b: &[u8], l3: usize, gw: &Gateway) -> bool {
    let ethertype = u16::from_be_bytes([b[l3 - 2], b[l3 - 1]]);
    if ethertype == EtherType::ARP.0 {
        // Classify checked the ARP length.
        let a = &b[l3..];
        return a[6..8] == [0, 1] && gw.v4.is_some_and(|(ip, _)| a[24..28] == ip.octets());
    }
    if ethertype != EtherType::IPV6.0 || b.len() < l3 + 48 || b[l3 + 6] != IpProtocol::ICMPV6.0 {
        return false;
    }
    match b[l3 + 40] {
        icmpv6::ty::NEIGHBOR_SOLICIT if b.len() >= l3 + 64 => {
            let mut t = [0u8; 16];
            t.copy_from_slice(&b[l3 + 48..l3 + 64]);
            gw.owns6(&Ipv6Addr::from(t))
        }
        icmpv6::ty::ROUTER_SOLICIT => gw.router_advertisements && gw.v6.is_some(),
        _ => false,
    }
}

/// Returns true if some packet goes on to L3.
pub(super) fn run(batch: &mut Batch, ctx: &mut Ctx<'_>) -> bool {
    let mut l3 = false;
    let tables = ctx.tables;
    let fdb = &*tables.fdb;
    let (mut src_memo, mut dst_memo) = (Memo::EMPTY, Memo::EMPTY);
    for i in 0..batch.len {
        if batch.meta[i].next != Next::L2 {
            continue;
        }
        let d = batch.desc[i];
        let b = ctx.umem.data(d.addr, d.len);
        let dst = EthernetAddress::from_bytes(&b[0..6]);
        let src = EthernetAddress::from_bytes(&b[6..12]);
        let net = NetworkId(batch.meta[i].network);
        let (from_peer, remote) = (batch.meta[i].peer, batch.meta[i].tunnel);

        // A repeated source was touched or reported for the packet before it. (A run
        // of frames from the uplink comes from one peer often enough that the memo,
        // keyed on the MAC alone, stays right: a MAC behind two peers at once is a
        // move either way.)
        match src_memo.lookup(fdb, net, src) {
            (_, true) => {}
            (Some(e), false) if e.port == ctx.in_port && e.peer == from_peer => fdb.touch(e, ctx.now_s),
            (Some(e), false) if e.is_static() => {}
            (_, false) => {
                if ctx.dedup.first_time(fdb::key(net, src), ctx.in_port.0, from_peer) {
                    let ev = LearnEvent { network: net, mac: src, port: ctx.in_port, peer: from_peer };
                    if ctx.learn.push(ev).is_ok() {
                        ctx.stats.learn_events.add(1);
                    } else {
                        ctx.stats.learn_queue_full.add(1);
                    }
                }
            }
        }

        let network = tables.topology.network(net);
        let gw_mac = network.map_or(NO_GATEWAY, |n| n.gw_mac);
        // Frames from remote nodes are switched only: control gives no stretched
        // network a gateway.
        if gw_mac != NO_GATEWAY && !remote {
            let l3_at = if batch.meta[i].tagged { 18 } else { 14 };
            let to_gw = dst.to_u64() == gw_mac
                || (dst.is_multicast()
                    && network.and_then(|n| n.spec.gateway.as_ref()).is_some_and(|g| for_gateway(b, l3_at, g)));
            if to_gw {
                batch.meta[i].next = Next::L3;
                l3 = true;
                continue;
            }
        }

        batch.meta[i].next = if dst.is_multicast() {
            Next::Flood
        } else {
            match dst_memo.lookup(fdb, net, dst).0 {
                // Split horizon: what came from a remote node never goes back to one.
                Some(e) if e.is_remote() && remote => Next::Drop(DropReason::SamePort),
                Some(e) if e.is_remote() => Next::Vtep(e.peer),
                Some(e) if e.port == ctx.in_port => Next::Drop(DropReason::SamePort),
                Some(e) => Next::Port(e.port),
                None => Next::Flood,
            }
        };
    }
    l3
}
