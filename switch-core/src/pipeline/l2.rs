//! L2: learn source addresses, look up destinations.

use super::{Batch, Ctx, Next};
use crate::stats::DropReason;
use crate::tables::{fdb, FdbEntry, LearnEvent, NetworkId};
use crate::wire::EthernetAddress;

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
    fn first_time(&mut self, key: u64, port: u16) -> bool {
        let tag = (key ^ (u64::from(port) << 32)).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
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

pub(super) fn run(batch: &mut Batch, ctx: &mut Ctx<'_>) {
    let fdb = &*ctx.tables.fdb;
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

        // A repeated source was touched or reported for the packet before it.
        match src_memo.lookup(fdb, net, src) {
            (_, true) => {}
            (Some(e), false) if e.port == ctx.in_port => fdb.touch(e, ctx.now_s),
            (Some(e), false) if e.is_static() => {}
            (_, false) => {
                if ctx.dedup.first_time(fdb::key(net, src), ctx.in_port.0) {
                    let ev = LearnEvent { network: net, mac: src, port: ctx.in_port };
                    if ctx.learn.push(ev).is_ok() {
                        ctx.stats.learn_events.add(1);
                    } else {
                        ctx.stats.learn_queue_full.add(1);
                    }
                }
            }
        }

        batch.meta[i].next = if dst.is_multicast() {
            Next::Flood
        } else {
            match dst_memo.lookup(fdb, net, dst).0 {
                Some(e) if e.port == ctx.in_port => Next::Drop(DropReason::SamePort),
                Some(e) => Next::Port(e.port),
                None => Next::Flood,
            }
        };
    }
}
