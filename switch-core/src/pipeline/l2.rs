//! L2: learn source addresses, look up destinations.

use super::{Batch, Ctx, Next};
use crate::stats::DropReason;
use crate::tables::sharded::ShardKey;
use crate::tables::topology::NO_GATEWAY;
use crate::tables::{fdb, Fdb, FdbEntry, Gateway, LearnEvent, NetworkId};
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

/// Slots of [`FdbCache`]: 256 of 24 bytes (6 KiB), beside the adjacencies' 12 KiB
/// and a batch's frames in the L1 cache. A power of two.
const FDB_SLOTS: usize = 256;
const _: () = assert!(FDB_SLOTS.is_power_of_two());
// The slot size FDB_SLOTS is chosen for.
const _: () = assert!(std::mem::size_of::<(u64, Option<FdbEntry>)>() <= 24);

/// The key that marks an empty slot: the broadcast MAC in the last network id (a
/// lookup of that key itself always goes to the table).
const NO_KEY: u64 = u64::MAX;

/// The FDB lookups (hits and misses) a worker made lately, kept across batches and
/// emptied with every new snapshot, direct-mapped by table key (a collision replaces
/// the slot). A lookup in the shared FDB costs a shard's pointer and a hash-table
/// probe; a cached one, one slot. Packets of one flow in a row are served before
/// this, by the batch's [`Memo`] of its last lookup; this serves the many flows that
/// interleave (64 flows in a batch of 64: 29,910 instructions a batch with it, 32,055
/// without; perf/RESULTS.md).
#[derive(Debug)]
pub struct FdbCache(Box<[(u64, Option<FdbEntry>); FDB_SLOTS]>);

impl Default for FdbCache {
    fn default() -> Self {
        FdbCache(Box::new([(NO_KEY, None); FDB_SLOTS]))
    }
}

impl FdbCache {
    /// Forgets every lookup (new tables).
    pub fn clear(&mut self) {
        self.0.fill((NO_KEY, None));
    }

    /// What `fdb` holds for `mac` in `network`, from the cache when it is there.
    #[inline]
    pub(super) fn lookup(&mut self, fdb: &Fdb, network: NetworkId, mac: EthernetAddress) -> Option<FdbEntry> {
        let k = fdb::key(network, mac);
        // The FDB's own one-multiply key hash; its top bits pick the slot.
        let at = (k.shard_hash() >> (64 - FDB_SLOTS.trailing_zeros())) as usize;
        let slot = &mut self.0[at % FDB_SLOTS];
        if slot.0 == k && k != NO_KEY {
            return slot.1;
        }
        *slot = (k, fdb.lookup(network, mac));
        slot.1
    }
}

/// The last lookup of a batch: packets of one flow come in runs, so the next packet
/// often asks the same question. Valid for one batch (one snapshot). Other lookups go
/// to the worker's [`FdbCache`], then the table.
struct Memo {
    key: u64,
    entry: Option<FdbEntry>,
}

impl Memo {
    const EMPTY: Memo = Memo { key: u64::MAX, entry: None };

    #[inline]
    fn lookup(
        &mut self,
        cache: &mut FdbCache,
        fdb: &Fdb,
        net: NetworkId,
        mac: EthernetAddress,
    ) -> (Option<FdbEntry>, bool) {
        let key = fdb::key(net, mac);
        if key == self.key {
            return (self.entry, true);
        }
        self.key = key;
        self.entry = cache.lookup(fdb, net, mac);
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
        match src_memo.lookup(ctx.fdb_cache, fdb, net, src) {
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
            match dst_memo.lookup(ctx.fdb_cache, fdb, net, dst).0 {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::tests::access;
    use crate::tables::topology::{NetworkSpec, PortId, Topology};
    use crate::tables::Learner;

    #[test]
    fn the_fdb_cache_answers_what_the_table_does_misses_included() {
        let nets = [NetworkSpec { id: NetworkId(0), name: "a".into(), ageing_s: 10, gateway: None }];
        let t = Topology::new(&nets, &[access(0, 0), access(1, 0)], 8).unwrap();
        let mut l = Learner::new(1024);
        let mac = |i: u16| EthernetAddress([2, 0, 0, 0, (i >> 8) as u8, i as u8]);
        for i in 0..600 {
            let ev = LearnEvent { network: NetworkId(0), mac: mac(i), port: PortId(i % 2), peer: fdb::LOCAL };
            assert!(l.learn(ev, 0, &t));
        }
        let fdb = l.build();
        let mut c = FdbCache::default();
        // More keys than slots, twice over, each asked twice in a row: hits, misses
        // and replaced slots, every answer the table's.
        for round in 0..2 {
            for i in 0..800 {
                for _ in 0..2 {
                    let got = c.lookup(&fdb, NetworkId(0), mac(i));
                    assert_eq!(got, fdb.lookup(NetworkId(0), mac(i)), "round {round}, MAC {i}");
                    assert_eq!(got.is_some(), i < 600);
                }
            }
        }
        // The same keys against another table, after a clear: its answers.
        l.apply(LearnEvent { network: NetworkId(0), mac: mac(1), port: PortId(0), peer: fdb::LOCAL }, 1);
        let moved = l.build();
        c.clear();
        assert_eq!(c.lookup(&moved, NetworkId(0), mac(1)).map(|e| e.port), Some(PortId(0)));
    }
}
