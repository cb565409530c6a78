//! The tunnel stage: what the uplink receives from remote nodes, and how routed
//! packets leave for them.
//!
//! In: the uplink's XDP program steers to the switch only VXLAN to this node's VTEP
//! (tunnel mode) or IP to its pod CIDRs (direct mode). This stage checks the outer
//! headers again (the program is a filter, not a validator), strips them in place by
//! moving the descriptor past them, and hands the inner packet to L3 in the tunnel's
//! network, or, in the VNI of a network stretched across nodes, the inner frame to
//! L2 in that network, from the peer whose underlay address sent it. Accepted: zero and non-zero outer UDP checksums (a non-zero one must
//! verify), IPv4 and IPv6 underlays. Dropped and counted: fragments, truncation, VXLAN
//! flags other than the I flag alone, other VNIs, inner frames not for this node's
//! VTEP MAC, inner frames that are not IP (L3 overlay), tagged or from an unknown
//! peer (L2 overlay).
//!
//! Out: [`encap`] writes the peer's prebuilt outer headers into the frame's headroom
//! (copy, then lengths, the IPv4 checksum from the template's partial sum, and a
//! UDP source port hashed from the inner flow so that the underlay's ECMP and the
//! peer's RSS spread the flows).

use super::classify::check_l3;
use super::{Batch, Ctx, Next};
use crate::port::Desc;
use crate::stats::DropReason;
use crate::tables::{PeerEntry, TunnelMode, TunnelSpec};
use crate::wire::{checksum, read_u16, vxlan, Error, EtherType, IpProtocol, Ipv4Packet, Ipv6Packet};

/// Source ports of encapsulated packets: the dynamic range (RFC 7348 section 5).
const SPORT_BASE: u16 = 49152;

/// Runs the batch from the uplink through the underlay checks and decapsulation.
/// Returns whether some frame goes on to L2, and whether some packet goes on to L3.
pub(super) fn receive(batch: &mut Batch, ctx: &mut Ctx<'_>) -> (bool, bool) {
    let tables = ctx.tables;
    let Some(local) = tables.tunnel.local.as_ref() else {
        for m in &mut batch.meta[..batch.len] {
            m.next = Next::Drop(DropReason::NoPort);
        }
        return (false, false);
    };
    let (mut l2, mut l3) = (false, false);
    for i in 0..batch.len {
        let m = &mut batch.meta[i];
        *m = super::Meta { network: local.network.0, tunnel: true, ..Default::default() };
        match inner(ctx, &batch.desc[i], local) {
            Ok(Inner { skip, len, stretched }) => {
                let d = &mut batch.desc[i];
                d.addr += skip as u64;
                d.len = len as u32;
                if let Some((network, peer)) = stretched {
                    m.network = network;
                    m.peer = peer;
                    m.next = Next::L2;
                    l2 = true;
                } else {
                    m.next = Next::L3;
                    l3 = true;
                }
                ctx.stats.l3.from_peers.add(1);
            }
            Err(r) => m.next = Next::Drop(r),
        }
    }
    (l2, l3)
}

/// Where the inner Ethernet frame is in a frame from the uplink.
struct Inner {
    /// Bytes before it.
    skip: usize,
    /// Its length.
    len: usize,
    /// For a stretched network's frame: (network, the peer that sent it).
    stretched: Option<(u16, u16)>,
}

/// Where the inner Ethernet frame starts in `d` and how long it is, or why the frame
/// is dropped. In direct mode the frame itself is the inner frame.
#[inline]
fn inner(ctx: &Ctx<'_>, d: &Desc, local: &TunnelSpec) -> Result<Inner, DropReason> {
    let b = ctx.umem.data(d.addr, d.len);
    if b.len() < 14 {
        return Err(DropReason::Runt);
    }
    let ethertype = read_u16(b, 12);
    let (udp_at, udp_end, src, dst) = match EtherType(ethertype) {
        EtherType::IPV4 => {
            let ip = Ipv4Packet::new_checked(&b[14..]).map_err(|e| match e {
                Error::Truncated => DropReason::Ipv4Truncated,
                _ => DropReason::Ipv4BadHeader,
            })?;
            if local.mode == TunnelMode::Direct {
                return Ok(Inner { skip: 0, len: b.len(), stretched: None });
            }
            let ipb = &b[14..];
            if local.local4.is_none_or(|a| ipb[16..20] != a.octets()) || ipb[9] != IpProtocol::UDP.0 {
                return Err(DropReason::UnderlayNotOurs);
            }
            if read_u16(ipb, 6) & 0x3fff != 0 {
                return Err(DropReason::VxlanFragment);
            }
            if !ip.verify_checksum() {
                return Err(DropReason::Ipv4BadChecksum);
            }
            let ihl = usize::from(ipb[0] & 0x0f) * 4;
            let total = usize::from(read_u16(ipb, 2));
            let (s, t) = (&ipb[12..16], &ipb[16..20]);
            (14 + ihl, 14 + total, ip4(s), ip4(t))
        }
        EtherType::IPV6 => {
            Ipv6Packet::new_checked(&b[14..]).map_err(|e| match e {
                Error::Truncated => DropReason::Ipv6Truncated,
                _ => DropReason::Ipv6BadHeader,
            })?;
            if local.mode == TunnelMode::Direct {
                return Ok(Inner { skip: 0, len: b.len(), stretched: None });
            }
            let ipb = &b[14..];
            if local.local6.is_none_or(|a| ipb[24..40] != a.octets()) || ipb[6] != IpProtocol::UDP.0 {
                return Err(DropReason::UnderlayNotOurs);
            }
            let payload = usize::from(read_u16(ipb, 4));
            (54, 54 + payload, ip6(&ipb[8..24]), ip6(&ipb[24..40]))
        }
        _ => return Err(DropReason::UnderlayUnsupported),
    };
    let udp = &b[udp_at..udp_end];
    if udp.len() < 8 {
        return Err(DropReason::VxlanTruncated);
    }
    if read_u16(udp, 2) != local.udp_port {
        return Err(DropReason::UnderlayNotOurs);
    }
    let udp_len = usize::from(read_u16(udp, 4));
    if udp_len < 8 + vxlan::HEADER_LEN + 14 || udp_len > udp.len() {
        return Err(DropReason::VxlanTruncated);
    }
    let udp = &udp[..udp_len];
    if read_u16(udp, 6) != 0 && !checksum::verify_l4(src, dst, IpProtocol::UDP.0, udp) {
        return Err(DropReason::VxlanBadChecksum);
    }
    let vx = vxlan::VxlanPacket::new_unchecked(&udp[8..]);
    if !vx.is_plain() {
        return Err(DropReason::VxlanBadFlags);
    }
    let frame = vx.payload();
    let skip = udp_at + 8 + vxlan::HEADER_LEN;
    if vx.vni() != local.vni {
        let tunnel = &ctx.tables.tunnel;
        let stretched = tunnel.l2_by_vni(vx.vni()).ok_or(DropReason::VxlanWrongVni)?;
        let peer = tunnel.peer_at(&src).ok_or(DropReason::VxlanUnknownPeer)?;
        check_stretched(frame)?;
        return Ok(Inner { skip, len: frame.len(), stretched: Some((stretched.network.0, peer)) });
    }
    if frame[0..6] != local.vtep_mac.0 {
        return Err(DropReason::VxlanInnerMac);
    }
    let ethertype = read_u16(frame, 12);
    if ethertype != EtherType::IPV4.0 && ethertype != EtherType::IPV6.0 {
        return Err(DropReason::VxlanInnerUnsupported);
    }
    if let Some(r) = check_l3(ethertype, &frame[14..]) {
        return Err(r);
    }
    Ok(Inner { skip, len: frame.len(), stretched: None })
}

/// What classify checks of a local port's frame, for a stretched network's frame
/// from a remote node; VXLAN carries frames untagged (the VNI is the network).
#[inline]
fn check_stretched(frame: &[u8]) -> Result<(), DropReason> {
    if frame[6] & 1 != 0 || frame[6..12] == [0; 6] {
        return Err(DropReason::SourceMulticast);
    }
    let ethertype = read_u16(frame, 12);
    if ethertype == EtherType::VLAN.0 || ethertype == EtherType::QINQ.0 {
        return Err(DropReason::VxlanInnerUnsupported);
    }
    check_l3(ethertype, &frame[14..]).map_or(Ok(()), Err)
}

#[inline]
fn ip4(b: &[u8]) -> std::net::IpAddr {
    std::net::IpAddr::from([b[0], b[1], b[2], b[3]])
}

#[inline]
fn ip6(b: &[u8]) -> std::net::IpAddr {
    let mut a = [0u8; 16];
    a.copy_from_slice(b);
    std::net::IpAddr::from(a)
}

/// A hash of the inner flow (addresses, protocol, and ports unless it is a fragment)
/// that picks the outer UDP source port.
#[inline]
fn flow_port(ip: &[u8], v6: bool) -> u16 {
    let (addrs, proto, l4) =
        if v6 { (&ip[8..40], ip[6], 40) } else { (&ip[12..20], ip[9], usize::from(ip[0] & 0x0f) * 4) };
    let mut h: u64 = u64::from(proto);
    for c in addrs.chunks_exact(4) {
        h = (h ^ u64::from(u32::from_ne_bytes([c[0], c[1], c[2], c[3]]))).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
    // Fragments hash by addresses only, like Linux's flow dissector, so that every
    // piece of a packet takes the same outer port.
    let whole = v6 || read_u16(ip, 6) & 0x3fff == 0;
    if whole && (proto == IpProtocol::UDP.0 || proto == IpProtocol::TCP.0) && ip.len() >= l4 + 4 {
        let ports = u32::from_ne_bytes([ip[l4], ip[l4 + 1], ip[l4 + 2], ip[l4 + 3]]);
        h = (h ^ u64::from(ports)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
    SPORT_BASE | ((h >> 50) as u16 & 0x3fff)
}

/// Sends the routed packet (its L3 header at `l2`, TTL already decremented) to
/// `peer`: in VXLAN mode inside outer headers written into the headroom, in direct
/// mode with the underlay next hop's MACs. Any 802.1Q tag is left behind.
#[inline]
pub(super) fn encap(
    ctx: &mut Ctx<'_>,
    d: &mut Desc,
    l2: usize,
    local: &TunnelSpec,
    peer: &PeerEntry,
    v6: bool,
) -> Next {
    let Some(h) = peer.header.as_ref() else {
        return Next::Drop(DropReason::PeerUnresolved);
    };
    // The inner Ethernet header ends where the L3 header starts.
    let inner = l2 - 14;
    if local.mode == TunnelMode::Direct {
        let b = ctx.umem.data_mut(d.addr, d.len);
        b[inner..inner + 12].copy_from_slice(&h[..12]);
        d.addr += inner as u64;
        d.len -= inner as u32;
        return Next::Raw(local.uplink);
    }
    let b = ctx.umem.data_mut(d.addr, d.len);
    let sport = flow_port(&b[l2..], v6);
    b[inner..inner + 6].copy_from_slice(&peer.spec.vtep_mac.0);
    b[inner + 6..inner + 12].copy_from_slice(&local.vtep_mac.0);
    d.addr += inner as u64;
    d.len -= inner as u32;
    match push_outer(ctx, d, peer, h, sport, None) {
        Ok(()) => Next::Raw(local.uplink),
        Err(r) => Next::Drop(r),
    }
}

/// Encapsulates the untagged Ethernet frame `d` of a stretched network as it is, in
/// `vni`, to `peer`; on success `d` is the frame to send on the uplink.
#[inline]
pub(super) fn encap_frame(ctx: &mut Ctx<'_>, d: &mut Desc, peer: &PeerEntry, vni: u32) -> Result<(), DropReason> {
    let h = peer.header.as_ref().ok_or(DropReason::PeerUnresolved)?;
    let b = ctx.umem.data(d.addr, d.len);
    let ethertype = read_u16(b, 12);
    let sport = if ethertype == EtherType::IPV4.0 || ethertype == EtherType::IPV6.0 {
        flow_port(&b[14..], ethertype == EtherType::IPV6.0)
    } else {
        let mut m = [0u8; 8];
        m.copy_from_slice(&b[4..12]);
        SPORT_BASE | ((u64::from_ne_bytes(m).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 50) as u16 & 0x3fff)
    };
    push_outer(ctx, d, peer, h, sport, Some(vni))
}

/// Writes `peer`'s outer headers `h` in front of the inner Ethernet frame `d` (into
/// its headroom), with lengths, checksums, the UDP source port `sport`, and `vni`
/// over the template's (the L3 overlay's); `d` becomes the whole frame.
#[inline]
fn push_outer(
    ctx: &mut Ctx<'_>,
    d: &mut Desc,
    peer: &PeerEntry,
    h: &[u8],
    sport: u16,
    vni: Option<u32>,
) -> Result<(), DropReason> {
    let outer = usize::from(peer.outer_len);
    if d.addr & u64::from(ctx.umem.frame_size() - 1) < outer as u64 {
        return Err(DropReason::EncapNoRoom);
    }
    d.addr -= outer as u64;
    d.len += outer as u32;
    let b = ctx.umem.data_mut(d.addr, d.len);
    b[..outer].copy_from_slice(&h[..outer]);
    if let Some(vni) = vni {
        // Three bytes before the VXLAN header's last, reserved one.
        b[outer - 4..outer - 1].copy_from_slice(&vni.to_be_bytes()[1..]);
    }
    let ip_len = b.len() - 14;
    if peer.spec.underlay.is_ipv4() {
        b[16..18].copy_from_slice(&(ip_len as u16).to_be_bytes());
        let c = !checksum::fold(peer.ip_sum + ip_len as u32);
        b[24..26].copy_from_slice(&c.to_be_bytes());
        b[34..36].copy_from_slice(&sport.to_be_bytes());
        b[38..40].copy_from_slice(&((ip_len - 20) as u16).to_be_bytes());
        // UDP checksum zero: allowed over IPv4 (RFC 7348), as Linux and OVS send.
    } else {
        let udp_len = (ip_len - 40) as u16;
        b[18..20].copy_from_slice(&udp_len.to_be_bytes());
        b[54..56].copy_from_slice(&sport.to_be_bytes());
        b[58..60].copy_from_slice(&udp_len.to_be_bytes());
        // IPv6 needs a real checksum: receivers refuse zero unless told otherwise
        // (Linux's udp6zerocsumrx is off by default, RFC 6935).
        let c = checksum::l4(ip6(&b[22..38]), ip6(&b[38..54]), IpProtocol::UDP.0, &b[54..]);
        let c = if c == 0 { 0xffff } else { c };
        b[60..62].copy_from_slice(&c.to_be_bytes());
    }
    Ok(())
}
