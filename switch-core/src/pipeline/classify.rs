//! Classify: find each frame's network from its port and VLAN tag, and drop what is
//! malformed before any table sees it.

use super::{Batch, Ctx, Next};
use crate::stats::DropReason;
use crate::tables::topology::NOT_MEMBER;
use crate::wire::{arp, ethernet, read_u16, vlan, Error, EtherType, Ipv4Packet, Ipv6Packet};

const ETHERTYPE: usize = 12;
const SRC_MAC: usize = 6;

/// Checks the L3 header the EtherType announces, so that malformed frames are dropped
/// at the edge. Other EtherTypes are switched as they are.
#[inline]
pub(super) fn check_l3(ethertype: u16, l3: &[u8]) -> Option<DropReason> {
    match EtherType(ethertype) {
        EtherType::ARP if l3.len() < arp::PACKET_LEN => Some(DropReason::ArpTruncated),
        EtherType::IPV4 => match Ipv4Packet::new_checked(l3) {
            Ok(_) => None,
            Err(Error::Truncated) => Some(DropReason::Ipv4Truncated),
            Err(_) => Some(DropReason::Ipv4BadHeader),
        },
        EtherType::IPV6 => match Ipv6Packet::new_checked(l3) {
            Ok(_) => None,
            Err(Error::Truncated) => Some(DropReason::Ipv6Truncated),
            Err(_) => Some(DropReason::Ipv6BadHeader),
        },
        _ => None,
    }
}

pub(super) fn run(batch: &mut Batch, ctx: &mut Ctx<'_>) {
    let Some(port) = ctx.tables.topology.port(ctx.in_port) else {
        for m in &mut batch.meta[..batch.len] {
            m.next = Next::Drop(DropReason::NoPort);
        }
        return;
    };
    for i in 0..batch.len {
        let d = batch.desc[i];
        let b = ctx.umem.data(d.addr, d.len);
        let m = &mut batch.meta[i];
        m.next = Next::L2;
        m.tagged = false;
        m.routed = false;
        m.tunnel = false;
        m.peer = crate::tables::fdb::LOCAL;
        if b.len() < ethernet::HEADER_LEN {
            m.next = Next::Drop(DropReason::Runt);
            continue;
        }
        let src_group_or_zero = b[SRC_MAC] & 1 != 0 || b[SRC_MAC..SRC_MAC + 6] == [0; 6];
        if src_group_or_zero {
            m.next = Next::Drop(DropReason::SourceMulticast);
            continue;
        }
        let outer = read_u16(b, ETHERTYPE);
        let (network, ethertype, l3) = if outer == EtherType::VLAN.0 {
            if b.len() < ethernet::HEADER_LEN + vlan::TAG_LEN {
                m.next = Next::Drop(DropReason::VlanTruncated);
                continue;
            }
            let vid = read_u16(b, ethernet::HEADER_LEN) & 0x0fff;
            let inner = read_u16(b, ethernet::HEADER_LEN + 2);
            if inner == EtherType::VLAN.0 || inner == EtherType::QINQ.0 {
                m.next = Next::Drop(DropReason::VlanUnsupported);
                continue;
            }
            m.tagged = true;
            // VID 0 is a priority tag: the frame belongs to the untagged network.
            let net = if vid == 0 {
                port.untagged
            } else {
                port.vid_to_network.get(vid as usize).copied().unwrap_or(NOT_MEMBER)
            };
            if net == NOT_MEMBER {
                m.next = Next::Drop(DropReason::VlanNotAllowed);
                continue;
            }
            (net, inner, &b[ethernet::HEADER_LEN + vlan::TAG_LEN..])
        } else if outer == EtherType::QINQ.0 {
            m.next = Next::Drop(DropReason::VlanUnsupported);
            continue;
        } else {
            if port.untagged == NOT_MEMBER {
                m.next = Next::Drop(DropReason::UntaggedNotAllowed);
                continue;
            }
            (port.untagged, outer, &b[ethernet::HEADER_LEN..])
        };
        if let Some(r) = check_l3(ethertype, l3) {
            m.next = Next::Drop(r);
            continue;
        }
        m.network = network;
    }
}
