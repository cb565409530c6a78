//! Routing tests over in-memory ports: gateways answer, packets are routed once their
//! next hop resolves, errors go back to the sender, and every frame is accounted for.

use super::tests::{access, mac, trunk, Rig};
use crate::stats::DropReason;
use crate::tables::{Gateway, NeighKey, NeighState, NetworkId, NetworkSpec, PortSpec, RouteSpec, RouteTarget};
use crate::wire::{checksum, EthernetAddress};
use crate::wire::{ArpOperation, ArpPacket, ArpRepr};
use etherparse::{Icmpv4Type, Icmpv6Type, NetSlice, PacketBuilder, SlicedPacket, TransportSlice};
use std::net::{Ipv4Addr, Ipv6Addr};

const GW_A: EthernetAddress = EthernetAddress([0x02, 0xaa, 0, 0, 0, 1]);
const GW_B: EthernetAddress = EthernetAddress([0x02, 0xbb, 0, 0, 0, 2]);
const POD_A: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0, 0x0a]);
const POD_B: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0, 0x0b]);

fn a4(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn a6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

fn net(id: u16, gw: EthernetAddress, third: u8) -> NetworkSpec {
    NetworkSpec {
        id: NetworkId(id),
        name: format!("n{id}"),
        ageing_s: 300,
        gateway: Some(Gateway {
            mac: gw,
            v4: Some((Ipv4Addr::new(198, 18, third, 1), 24)),
            v6: Some((Ipv6Addr::new(0x2001, 0xdb8, u16::from(third), 0, 0, 0, 0, 1), 64)),
            router_advertisements: true,
        }),
    }
}

/// Network 0 (198.18.1.0/24, 2001:db8:1::/64) on port 0, network 1 (198.18.2.0/24,
/// 2001:db8:2::/64) on port 1, with extra `ports` and `routes`.
fn rig(ports: &[PortSpec], routes: &[RouteSpec]) -> Rig {
    let mut all = vec![access(0, 0), access(1, 1)];
    all.extend_from_slice(ports);
    Rig::with(&[net(0, GW_A, 1), net(1, GW_B, 2)], &all, routes)
}

fn udp4(src_mac: EthernetAddress, dst_mac: EthernetAddress, src: &str, dst: &str, ttl: u8, len: usize) -> Vec<u8> {
    let mut f = Vec::new();
    let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
    PacketBuilder::ethernet2(src_mac.0, dst_mac.0)
        .ipv4(a4(src).octets(), a4(dst).octets(), ttl)
        .udp(4000, 5000)
        .write(&mut f, &payload)
        .unwrap();
    f
}

fn udp6(src_mac: EthernetAddress, dst_mac: EthernetAddress, src: &str, dst: &str, hop: u8, len: usize) -> Vec<u8> {
    let mut f = Vec::new();
    let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
    PacketBuilder::ethernet2(src_mac.0, dst_mac.0)
        .ipv6(a6(src).octets(), a6(dst).octets(), hop)
        .udp(4000, 5000)
        .write(&mut f, &payload)
        .unwrap();
    f
}

fn arp(op: ArpOperation, sha: EthernetAddress, spa: &str, tha: EthernetAddress, tpa: &str) -> Vec<u8> {
    let dst = if op == ArpOperation::Request { EthernetAddress::BROADCAST } else { tha };
    let mut f = vec![0u8; 42];
    f[0..6].copy_from_slice(&dst.0);
    f[6..12].copy_from_slice(&sha.0);
    f[12..14].copy_from_slice(&[0x08, 0x06]);
    let repr = ArpRepr {
        operation: op,
        source_hardware_addr: sha,
        source_protocol_addr: a4(spa),
        target_hardware_addr: tha,
        target_protocol_addr: a4(tpa),
    };
    repr.emit(&mut ArpPacket::new_unchecked(&mut f[14..]));
    f
}

fn arp_of(f: &[u8]) -> ArpRepr {
    assert_eq!(&f[12..14], &[0x08, 0x06], "not ARP");
    ArpRepr::parse(&ArpPacket::new_checked(&f[14..]).unwrap()).unwrap()
}

/// An ICMPv6 message in an Ethernet/IPv6 frame with hop limit 255 (as NDP needs).
fn icmp6_frame(
    dst_mac: [u8; 6],
    src_mac: EthernetAddress,
    src: &Ipv6Addr,
    dst: &Ipv6Addr,
    msg: &crate::wire::Icmpv6Repr<'_>,
) -> Vec<u8> {
    let mut icmp = vec![0u8; msg.buffer_len()];
    msg.emit(&mut icmp, src, dst);
    let mut f = Vec::new();
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac.0);
    f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
    f.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
    f.extend_from_slice(&[58, 255]);
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&dst.octets());
    f.extend_from_slice(&icmp);
    f
}

/// A neighbour advertisement from `mac` for `target`, to `to` (a gateway).
fn na(mac: EthernetAddress, target: &str, dst_mac: EthernetAddress, to: &str) -> Vec<u8> {
    let msg = crate::wire::Icmpv6Repr::NeighborAdvert { flags: 0x60, target: a6(target), target_lladdr: Some(mac) };
    icmp6_frame(dst_mac.0, mac, &a6(target), &a6(to), &msg)
}

fn ipv4_header_ok(f: &[u8]) -> bool {
    let ihl = usize::from(f[14] & 0xf) * 4;
    checksum::checksum(&f[14..14 + ihl]) == 0
}

/// Pod A sends to 198.18.2.20 before anyone knows it: the packet is parked, an ARP
/// request goes out on network 1; the answer releases it, routed.
#[test]
fn routed_ipv4_waits_for_arp_then_goes_with_ttl_and_macs_rewritten() {
    let mut r = rig(&[], &[]);
    let p = udp4(POD_A, GW_A, "198.18.1.10", "198.18.2.20", 64, 100);
    r.send(0, &p);
    assert_eq!(r.worker.parked(), 1);
    let req = r.sent(1);
    assert_eq!(req.len(), 1, "one ARP request on network 1");
    let a = arp_of(&req[0]);
    assert_eq!(a.operation, ArpOperation::Request);
    assert_eq!(a.source_hardware_addr, GW_B);
    assert_eq!(a.source_protocol_addr, a4("198.18.2.1"));
    assert_eq!(a.target_protocol_addr, a4("198.18.2.20"));
    assert_eq!(&req[0][0..6], &[0xff; 6]);
    assert!(r.sent(0).is_empty());

    // The answer (to the gateway MAC) is consumed; the parked packet goes.
    r.send(1, &arp(ArpOperation::Reply, POD_B, "198.18.2.20", GW_B, "198.18.2.1"));
    let out = r.sent(1);
    assert_eq!(out.len(), 1, "the parked packet, released");
    let f = &out[0];
    assert_eq!(&f[0..6], &POD_B.0);
    assert_eq!(&f[6..12], &GW_B.0);
    assert_eq!(f[14 + 8], 63, "TTL decremented");
    assert!(ipv4_header_ok(f), "checksum updated");
    assert_eq!(f[14 + 9], p[14 + 9]);
    assert_eq!(&f[14 + 12..], &p[14 + 12..], "addresses and payload unchanged");
    let s = r.worker.stats();
    assert_eq!(s.l3.parked.get(), 1);
    assert_eq!(s.l3.released.get(), 1);
    assert_eq!(r.worker.parked(), 0);

    // Now known: the next packet is routed at once, and the reply the other way too
    // (pod A is known from... nothing yet: its own resolution).
    r.send(0, &p);
    assert_eq!(r.sent(1).len(), 1);
    assert_eq!(s.l3.routed.get(), 2);
    let a = r.worker.account();
    assert!(a.balanced(), "{a}");
}

#[test]
fn checksum_is_rewritten_correctly_not_just_anyhow() {
    let mut r = rig(&[], &[]);
    r.send(1, &arp(ArpOperation::Reply, POD_B, "198.18.2.20", GW_B, "198.18.2.1"));
    let p = udp4(POD_A, GW_A, "198.18.1.10", "198.18.2.20", 17, 10);
    r.send(0, &p);
    let f = &r.sent(1)[0];
    let mut expect = p.clone();
    expect[0..6].copy_from_slice(&POD_B.0);
    expect[6..12].copy_from_slice(&GW_B.0);
    expect[14 + 8] = 16;
    expect[24..26].fill(0);
    let c = checksum::checksum(&expect[14..34]);
    expect[24..26].copy_from_slice(&c.to_be_bytes());
    assert_eq!(f, &expect);
}

#[test]
fn routed_ipv6_waits_for_neighbour_discovery_then_goes() {
    let mut r = rig(&[], &[]);
    let p = udp6(POD_A, GW_A, "2001:db8:1::10", "2001:db8:2::20", 64, 100);
    r.send(0, &p);
    let ns = r.sent(1);
    assert_eq!(ns.len(), 1);
    assert_eq!(&ns[0][0..6], &[0x33, 0x33, 0xff, 0, 0, 0x20], "to the solicited-node group");
    let s = SlicedPacket::from_ethernet(&ns[0]).unwrap();
    let Some(NetSlice::Ipv6(ip)) = &s.net else { panic!() };
    assert_eq!(ip.header().destination_addr(), a6("ff02::1:ff00:20"));
    assert_eq!(ip.header().hop_limit(), 255);
    let Some(TransportSlice::Icmpv6(icmp)) = &s.transport else { panic!() };
    assert!(matches!(icmp.icmp_type(), Icmpv6Type::Unknown { type_u8: 135, .. }), "{:?}", icmp.icmp_type());
    assert!(checksum::verify_l4(
        ip.header().source_addr().into(),
        ip.header().destination_addr().into(),
        58,
        &ns[0][54..]
    ));

    r.send(1, &na(POD_B, "2001:db8:2::20", GW_B, "2001:db8:2::1"));
    let out = r.sent(1);
    assert_eq!(out.len(), 1);
    assert_eq!(&out[0][0..12], &[POD_B.0, GW_B.0].concat()[..]);
    assert_eq!(out[0][14 + 7], 63, "hop limit decremented");
    assert_eq!(&out[0][14 + 8..], &p[14 + 8..]);
}

#[test]
fn gateway_answers_arp_and_learns_the_asker() {
    let mut r = rig(&[], &[]);
    r.send(0, &arp(ArpOperation::Request, POD_A, "198.18.1.10", EthernetAddress([0; 6]), "198.18.1.1"));
    let out = r.sent(0);
    assert_eq!(out.len(), 1);
    assert!(r.sent(1).is_empty(), "requests for the gateway are not flooded");
    let a = arp_of(&out[0]);
    assert_eq!(a.operation, ArpOperation::Reply);
    assert_eq!(a.source_hardware_addr, GW_A);
    assert_eq!(a.source_protocol_addr, a4("198.18.1.1"));
    assert_eq!(a.target_hardware_addr, POD_A);
    assert_eq!(a.target_protocol_addr, a4("198.18.1.10"));
    assert_eq!(&out[0][0..12], &[POD_A.0, GW_A.0].concat()[..]);
    let k = NeighKey::v4(NetworkId(0), a4("198.18.1.10"));
    assert_eq!(r.resolver.build().lookup(k), Some(NeighState::Reachable(POD_A)));

    // A request for another pod is switched (flooded), not answered.
    r.send(0, &arp(ArpOperation::Request, POD_A, "198.18.1.10", EthernetAddress([0; 6]), "198.18.1.11"));
    assert!(r.sent(0).is_empty());
    assert_eq!(r.drops(DropReason::FloodNoTarget), 1, "network 0 has no other port here");
}

#[test]
fn gateway_answers_neighbour_solicitation_router_solicitation_and_echo() {
    let mut r = rig(&[], &[]);
    // NS for the gateway's global address, from a pod with its source link-layer option.
    let ns = crate::wire::Icmpv6Repr::NeighborSolicit { target: a6("2001:db8:1::1"), source_lladdr: Some(POD_A) };
    let (src, dst) = (a6("2001:db8:1::10"), a6("ff02::1:ff00:1"));
    r.send(0, &icmp6_frame([0x33, 0x33, 0xff, 0, 0, 1], POD_A, &src, &dst, &ns));
    let out = r.sent(0);
    assert_eq!(out.len(), 1);
    let s = SlicedPacket::from_ethernet(&out[0]).unwrap();
    let Some(NetSlice::Ipv6(ip)) = &s.net else { panic!() };
    assert_eq!(ip.header().source_addr(), a6("2001:db8:1::1"));
    assert_eq!(ip.header().destination_addr(), src);
    let msg = crate::wire::Icmpv6Repr::parse(&out[0][54..], &a6("2001:db8:1::1"), &src, 255).unwrap();
    assert_eq!(
        msg,
        crate::wire::Icmpv6Repr::NeighborAdvert { flags: 0xe0, target: a6("2001:db8:1::1"), target_lladdr: Some(GW_A) }
    );
    assert_eq!(
        r.resolver.build().lookup(NeighKey::v6(NetworkId(0), src)),
        Some(NeighState::Reachable(POD_A)),
        "the solicitor is learned"
    );

    // Router solicitation → advertisement from the link-local address, with the prefix.
    let rs = crate::wire::Icmpv6Repr::RouterSolicit { source_lladdr: Some(POD_A) };
    let (src, dst) = (a6("fe80::10"), a6("ff02::2"));
    r.send(0, &icmp6_frame([0x33, 0x33, 0, 0, 0, 2], POD_A, &src, &dst, &rs));
    let out = r.sent(0);
    assert_eq!(out.len(), 1);
    let ll = a6("fe80::aa:ff:fe00:1");
    match crate::wire::Icmpv6Repr::parse(&out[0][54..], &ll, &src, 255).unwrap() {
        crate::wire::Icmpv6Repr::RouterAdvert { lifetime_s, prefix: Some(p), source_lladdr, .. } => {
            assert_eq!(lifetime_s, 1800);
            assert_eq!((p.prefix, p.len, p.flags), (a6("2001:db8:1::"), 64, 0xc0));
            assert_eq!(source_lladdr, Some(GW_A));
        }
        other => panic!("not an RA: {other:?}"),
    }

    // Echo to the gateway, both families.
    let mut e4 = Vec::new();
    PacketBuilder::ethernet2(POD_A.0, GW_A.0)
        .ipv4([198, 18, 1, 10], [198, 18, 1, 1], 5)
        .icmpv4_echo_request(7, 1)
        .write(&mut e4, b"hello")
        .unwrap();
    r.send(0, &e4);
    let out = r.sent(0);
    let s = SlicedPacket::from_ethernet(&out[0]).unwrap();
    let Some(NetSlice::Ipv4(ip)) = &s.net else { panic!() };
    assert_eq!(ip.header().source(), [198, 18, 1, 1]);
    assert_eq!(ip.header().destination(), [198, 18, 1, 10]);
    assert!(ipv4_header_ok(&out[0]));
    let Some(TransportSlice::Icmpv4(icmp)) = &s.transport else { panic!() };
    assert!(matches!(icmp.icmp_type(), Icmpv4Type::EchoReply(h) if h.id == 7 && h.seq == 1));
    assert_eq!(checksum::checksum(icmp.slice()), 0);
    assert_eq!(icmp.payload(), b"hello");

    let mut e6 = Vec::new();
    PacketBuilder::ethernet2(POD_A.0, GW_A.0)
        .ipv6(a6("2001:db8:1::10").octets(), a6("2001:db8:1::1").octets(), 5)
        .icmpv6_echo_request(9, 2)
        .write(&mut e6, b"hello6")
        .unwrap();
    r.send(0, &e6);
    let out = r.sent(0);
    let reply = crate::wire::Icmpv6Repr::parse(&out[0][54..], &a6("2001:db8:1::1"), &a6("2001:db8:1::10"), 64);
    assert_eq!(reply, Ok(crate::wire::Icmpv6Repr::EchoReply { ident: 9, seq_no: 2, data: b"hello6" }));
    assert_eq!(r.worker.stats().l3.echo_replies.get(), 2);

    // The other network's gateway answers too, from its own address, through gateway A.
    let mut e4 = Vec::new();
    PacketBuilder::ethernet2(POD_A.0, GW_A.0)
        .ipv4([198, 18, 1, 10], [198, 18, 2, 1], 5)
        .icmpv4_echo_request(7, 2)
        .write(&mut e4, b"other")
        .unwrap();
    r.send(0, &e4);
    let out = r.sent(0);
    let (src, dst, ty, _) = icmp4_of(&out[0]);
    assert_eq!((src, dst), (a4("198.18.2.1"), a4("198.18.1.10")));
    assert!(matches!(ty, Icmpv4Type::EchoReply(_)));
    let mut e6 = Vec::new();
    PacketBuilder::ethernet2(POD_A.0, GW_A.0)
        .ipv6(a6("2001:db8:1::10").octets(), a6("2001:db8:2::1").octets(), 5)
        .icmpv6_echo_request(9, 3)
        .write(&mut e6, b"other6")
        .unwrap();
    r.send(0, &e6);
    let (src, _, ty, _) = icmp6_of(&r.sent(0)[0]);
    assert_eq!(src, a6("2001:db8:2::1"));
    assert!(matches!(ty, Icmpv6Type::EchoReply(_)));
    assert!(r.sent(1).is_empty(), "nothing asked on network b");
}

fn icmp4_of(f: &[u8]) -> (Ipv4Addr, Ipv4Addr, Icmpv4Type, Vec<u8>) {
    assert!(ipv4_header_ok(f));
    let s = SlicedPacket::from_ethernet(f).unwrap();
    let Some(NetSlice::Ipv4(ip)) = &s.net else { panic!("not IPv4") };
    let Some(TransportSlice::Icmpv4(icmp)) = &s.transport else { panic!("not ICMP") };
    assert_eq!(checksum::checksum(icmp.slice()), 0, "ICMP checksum");
    (ip.header().source_addr(), ip.header().destination_addr(), icmp.icmp_type(), icmp.payload().to_vec())
}

fn icmp6_of(f: &[u8]) -> (Ipv6Addr, Ipv6Addr, Icmpv6Type, Vec<u8>) {
    let s = SlicedPacket::from_ethernet(f).unwrap();
    let Some(NetSlice::Ipv6(ip)) = &s.net else { panic!("not IPv6") };
    let Some(TransportSlice::Icmpv6(icmp)) = &s.transport else { panic!("not ICMPv6") };
    let (src, dst) = (ip.header().source_addr(), ip.header().destination_addr());
    assert!(checksum::verify_l4(src.into(), dst.into(), 58, icmp.slice()), "ICMPv6 checksum");
    (src, dst, icmp.icmp_type(), icmp.payload().to_vec())
}

#[test]
fn ttl_one_gets_time_exceeded_quoting_the_packet() {
    use etherparse::icmpv4::TimeExceededCode;
    let mut r = rig(&[], &[]);
    let p = udp4(POD_A, GW_A, "198.18.1.10", "198.18.2.20", 1, 40);
    r.send(0, &p);
    let out = r.sent(0);
    assert_eq!(out.len(), 1);
    assert_eq!(&out[0][0..12], &[POD_A.0, GW_A.0].concat()[..], "back to the sender, from the gateway");
    let (src, dst, ty, quoted) = icmp4_of(&out[0]);
    assert_eq!((src, dst), (a4("198.18.1.1"), a4("198.18.1.10")));
    assert_eq!(ty, Icmpv4Type::TimeExceeded(TimeExceededCode::TtlExceededInTransit));
    assert_eq!(quoted, p[14..], "the whole packet fits in 576 bytes");
    assert_eq!(r.drops(DropReason::TtlExceeded), 1);
    assert_eq!(r.worker.stats().l3.icmp_errors.get(), 1);

    // IPv6: hop limit 1.
    let p = udp6(POD_A, GW_A, "2001:db8:1::10", "2001:db8:2::20", 1, 40);
    r.send(0, &p);
    let (src, dst, ty, quoted) = icmp6_of(&r.sent(0)[0]);
    assert_eq!((src, dst), (a6("2001:db8:1::1"), a6("2001:db8:1::10")));
    assert!(matches!(ty, Icmpv6Type::TimeExceeded(_)));
    assert_eq!(quoted, p[14..]);
}

#[test]
fn unrouted_destinations_get_unreachable_and_drop_routes_drop() {
    use etherparse::icmpv4::DestUnreachableHeader;
    use etherparse::icmpv6::DestUnreachableCode;
    let drop = RouteSpec { prefix: "198.19.0.0/16".parse().unwrap(), target: RouteTarget::Drop };
    let mut r = rig(&[], &[drop]);
    r.send(0, &udp4(POD_A, GW_A, "198.18.1.10", "198.18.9.9", 64, 10));
    let (_, _, ty, _) = icmp4_of(&r.sent(0)[0]);
    assert_eq!(ty, Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::Network));
    r.send(0, &udp6(POD_A, GW_A, "2001:db8:1::10", "2001:db8:9::9", 64, 10));
    let (_, _, ty, _) = icmp6_of(&r.sent(0)[0]);
    assert_eq!(ty, Icmpv6Type::DestinationUnreachable(DestUnreachableCode::NoRoute));
    assert_eq!(r.drops(DropReason::NoRoute), 2);

    r.send(0, &udp4(POD_A, GW_A, "198.18.1.10", "198.19.1.1", 64, 10));
    assert!(r.sent(0).is_empty() && r.sent(1).is_empty());
    assert_eq!(r.drops(DropReason::RouteDrop), 1);

    // Never an error about an error.
    let mut p = Vec::new();
    PacketBuilder::ethernet2(POD_A.0, GW_A.0)
        .ipv4([198, 18, 1, 10], [198, 18, 9, 9], 64)
        .icmpv4(Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::Port))
        .write(&mut p, &[0; 28])
        .unwrap();
    r.send(0, &p);
    assert!(r.sent(0).is_empty());
    assert_eq!(r.drops(DropReason::NoRoute), 3);
}

#[test]
fn too_big_for_the_next_hop_gets_frag_needed_or_packet_too_big_with_the_mtu() {
    use etherparse::icmpv4::DestUnreachableHeader;
    let mut r = rig(&[], &[]);
    r.send(1, &arp(ArpOperation::Reply, POD_B, "198.18.2.20", GW_B, "198.18.2.1"));
    r.send(1, &na(POD_B, "2001:db8:2::20", GW_B, "2001:db8:2::1"));
    // 1501 bytes of IP: one more than port 1 carries.
    let mut p = udp4(POD_A, GW_A, "198.18.1.10", "198.18.2.20", 64, 1501 - 28);
    p[14 + 6] |= 0x40; // DF
    p[24..26].fill(0);
    let c = checksum::checksum(&p[14..34]);
    p[24..26].copy_from_slice(&c.to_be_bytes());
    r.send(0, &p);
    assert!(r.sent(1).is_empty());
    let (_, _, ty, quoted) = icmp4_of(&r.sent(0)[0]);
    assert_eq!(
        ty,
        Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::FragmentationNeeded { next_hop_mtu: 1500 })
    );
    assert_eq!(quoted.len(), 576 - 28, "quoted up to 576 bytes in all");
    assert_eq!(quoted[..], p[14..14 + 548]);

    // Exactly the MTU goes.
    r.send(0, &udp4(POD_A, GW_A, "198.18.1.10", "198.18.2.20", 64, 1500 - 28));
    assert_eq!(r.sent(1).len(), 1);

    let p = udp6(POD_A, GW_A, "2001:db8:1::10", "2001:db8:2::20", 64, 1501 - 48);
    r.send(0, &p);
    let (_, _, ty, quoted) = icmp6_of(&r.sent(0)[0]);
    assert_eq!(ty, Icmpv6Type::PacketTooBig { mtu: 1500 });
    assert_eq!(quoted.len(), 1280 - 48);
    assert_eq!(r.drops(DropReason::FragNeeded), 2);
}

/// Clears DF (etherparse sets it) and fixes the header checksum.
pub(super) fn without_df(mut f: Vec<u8>) -> Vec<u8> {
    f[14 + 6] &= !0x40;
    f[24..26].fill(0);
    let c = checksum::checksum(&f[14..34]);
    f[24..26].copy_from_slice(&c.to_be_bytes());
    f
}

/// Reassembles IPv4 fragments (etherparse's defragmenter, not ours) and returns the
/// payloads of the packets they rebuild.
pub(super) fn reassemble(frames: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut pool = etherparse::defrag::IpDefragPool::<(), ()>::new();
    let mut whole = Vec::new();
    for f in frames {
        let s = SlicedPacket::from_ethernet(f).unwrap();
        let Some(NetSlice::Ipv4(ip)) = &s.net else { panic!("not IPv4") };
        assert_eq!(checksum::checksum(ip.header().slice()), 0, "fragment header checksum");
        assert!(!ip.header().dont_fragment());
        if let Some(p) = pool.process_sliced_packet(&s, (), ()).unwrap() {
            whole.push(p.payload);
        }
    }
    whole
}

/// IPv4 without DF, larger than the next hop's MTU, leaves in fragments (as a Linux or
/// VPP router sends it) that rebuild it byte for byte; a whole batch of them gets
/// through, more than one port's output queue holds.
#[test]
fn too_big_without_df_leaves_in_fragments() {
    let mut r = rig(&[], &[]);
    r.send(1, &arp(ArpOperation::Reply, POD_B, "198.18.2.20", GW_B, "198.18.2.1"));
    let p = without_df(udp4(POD_A, GW_A, "198.18.1.10", "198.18.2.20", 64, 3000 - 28));
    r.send(0, &p);
    let out = r.sent(1);
    assert_eq!(out.len(), 3, "3000 bytes of IP in 1480-byte pieces: 1480, 1480, 40");
    for f in &out {
        assert_eq!((&f[0..6], &f[6..12]), (&POD_B.0[..], &GW_B.0[..]), "MACs rewritten");
        assert!(f.len() <= 1514, "fits port 1");
        assert_eq!(f[14 + 8], 63, "TTL decremented");
    }
    assert_eq!(reassemble(&out), [p[34..].to_vec()]);
    let s = r.worker.stats();
    assert_eq!((s.l3.fragments.get(), s.l3.routed.get()), (3, 1));

    for i in 0..64u8 {
        let mut q = udp4(POD_A, GW_A, "198.18.1.10", "198.18.2.20", 64, 2000 - 28);
        q[14 + 4] = i; // identification
        q[24..26].fill(0);
        let c = checksum::checksum(&q[14..34]);
        q[24..26].copy_from_slice(&c.to_be_bytes());
        r.mem(0).push_rx(&without_df(q));
    }
    r.worker.poll_once(r.now_s);
    let out = r.sent(1);
    assert_eq!(out.len(), 128, "two fragments each, none lost to a full queue");
    assert_eq!(reassemble(&out).len(), 64);
    assert_eq!(r.drops(DropReason::FragNeeded) + r.drops(DropReason::TxRingFull), 0);
    assert!(r.worker.account().balanced());
}

#[test]
fn unresolvable_next_hop_queue_is_bounded_retried_then_fails_with_host_unreachable() {
    use etherparse::icmpv4::DestUnreachableHeader;
    let mut r = rig(&[], &[]);
    // 16 can wait (a quarter of the rig's 64 per next hop); the rest are dropped and
    // counted.
    for i in 0..100u8 {
        let mut p = udp4(POD_A, GW_A, "198.18.1.10", "198.18.2.99", 64, 10);
        p[14 + 28] = i;
        r.mem(0).push_rx(&p);
    }
    r.worker.poll_once(r.now_s);
    r.control();
    assert_eq!(r.worker.parked(), 16);
    assert_eq!(r.drops(DropReason::NeighQueueFull), 84);
    // Another next hop still gets its share.
    r.send(0, &udp4(POD_A, GW_A, "198.18.1.10", "198.18.2.98", 64, 10));
    assert_eq!(r.worker.parked(), 17);
    assert_eq!(r.sent(1).len(), 2, "one request per next hop, not one per packet");
    // Retries, one a second, then failure.
    for s in 1..=2 {
        r.now_s = s;
        r.control();
        assert_eq!(r.sent(1).len(), 2, "retries at {s} s");
    }
    r.now_s = 3;
    r.control();
    assert_eq!(r.worker.parked(), 0);
    let errors = r.sent(0);
    assert_eq!(errors.len(), 17, "every parked packet gets host unreachable");
    let (_, _, ty, quoted) = icmp4_of(&errors[5]);
    assert_eq!(ty, Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::Host));
    assert_eq!(quoted[28], 5, "in arrival order");
    assert_eq!(r.drops(DropReason::NeighFailed), 17);
    assert_eq!(r.resolver.stats.failed, 2);
    // While failed, new packets are refused at once; after the hold, resolution restarts.
    r.send(0, &udp4(POD_A, GW_A, "198.18.1.10", "198.18.2.99", 64, 10));
    assert_eq!(r.sent(0).len(), 1);
    r.now_s = 6;
    r.control();
    r.send(0, &udp4(POD_A, GW_A, "198.18.1.10", "198.18.2.99", 64, 10));
    assert_eq!(r.worker.parked(), 1);
    assert_eq!(r.sent(1).len(), 1, "a new request");
    assert_eq!(r.worker.stats().l3.solicits.get(), 7);
    let a = r.worker.account();
    assert!(a.balanced(), "{a}");
}

#[test]
fn icmp_errors_are_rate_limited_per_second() {
    let mut r = rig(&[], &[]);
    let p = udp4(POD_A, GW_A, "198.18.1.10", "198.18.2.20", 1, 10);
    for _ in 0..1500 {
        r.mem(0).push_rx(&p);
    }
    for _ in 0..30 {
        r.worker.poll_once(0);
    }
    let s = r.worker.stats();
    assert_eq!(s.l3.icmp_errors.get(), 1000);
    assert_eq!(s.l3.icmp_rate_limited.get(), 500);
    assert_eq!(r.drops(DropReason::TtlExceeded), 1500);
    r.mem(0).push_rx(&p);
    r.worker.poll_once(1);
    assert_eq!(s.l3.icmp_errors.get(), 1001, "a new second, a new budget");
}

#[test]
fn routes_via_a_next_hop_and_between_vlans_on_one_trunk() {
    // Port 2 is a trunk carrying network 0 as VLAN 10 and network 1 as VLAN 20.
    let via = RouteSpec {
        prefix: "198.19.0.0/16".parse().unwrap(),
        target: RouteTarget::Via("198.18.2.254".parse().unwrap()),
    };
    let mut r = rig(&[trunk(2, &[(10, 0), (20, 1)], None)], &[via]);
    let router = mac(0x77);
    // The next hop lives behind the trunk, on VLAN 20.
    let mut reply = arp(ArpOperation::Reply, router, "198.18.2.254", GW_B, "198.18.2.1");
    reply.splice(12..12, [0x81, 0x00, 0x00, 20]);
    r.send(2, &reply);
    // From VLAN 10 on the trunk to 198.19.5.5: routed back out of the trunk on VLAN 20.
    let mut p = udp4(POD_A, GW_A, "198.18.1.10", "198.19.5.5", 64, 10);
    p.splice(12..12, [0x81, 0x00, 0x00, 10]);
    r.send(2, &p);
    let out = r.sent(2);
    assert_eq!(out.len(), 1);
    assert_eq!(&out[0][0..12], &[router.0, GW_B.0].concat()[..]);
    assert_eq!(&out[0][12..16], &[0x81, 0x00, 0x00, 20], "retagged for the egress network");
    assert_eq!(out[0][18 + 8], 63);
    // And to an access port of network 1 from the trunk: the tag is popped.
    r.send(1, &arp(ArpOperation::Reply, POD_B, "198.18.2.20", GW_B, "198.18.2.1"));
    let mut p = udp4(POD_A, GW_A, "198.18.1.10", "198.18.2.20", 64, 10);
    p.splice(12..12, [0x81, 0x00, 0x00, 10]);
    r.send(2, &p);
    let out = r.sent(1);
    assert_eq!(out.len(), 1);
    assert_eq!(&out[0][12..14], &[0x08, 0x00]);
}

#[test]
fn a_route_change_under_traffic_loses_nothing() {
    let via = |ip: &str| RouteSpec {
        prefix: "198.19.0.0/16".parse().unwrap(),
        target: RouteTarget::Via(ip.parse().unwrap()),
    };
    // Two routers on network 1: R1 behind port 1, R2 behind port 2.
    let mut r = rig(&[access(2, 1)], &[via("198.18.2.101")]);
    let (r1, r2) = (mac(0x51), mac(0x52));
    r.send(1, &arp(ArpOperation::Reply, r1, "198.18.2.101", GW_B, "198.18.2.1"));
    r.send(2, &arp(ArpOperation::Reply, r2, "198.18.2.102", GW_B, "198.18.2.1"));
    let p = udp4(POD_A, GW_A, "198.18.1.10", "198.19.0.7", 64, 10);
    let (mut to_r1, mut to_r2) = (0, 0);
    for round in 0..40 {
        for _ in 0..64 {
            r.mem(0).push_rx(&p);
        }
        // Switch routers every 10 rounds, between two polls, as control publishes.
        if round % 10 == 5 {
            r.set_routes(&[via(if round % 20 == 5 { "198.18.2.102" } else { "198.18.2.101" })]);
        }
        r.worker.poll_once(r.now_s);
        for f in r.sent(1) {
            assert_eq!(&f[0..6], &r1.0);
            to_r1 += 1;
        }
        for f in r.sent(2) {
            assert_eq!(&f[0..6], &r2.0);
            to_r2 += 1;
        }
    }
    assert_eq!(to_r1 + to_r2, 40 * 64, "every packet went to one router or the other");
    assert!(to_r1 >= 64 * 10 && to_r2 >= 64 * 10, "{to_r1} {to_r2}");
    let s = r.worker.stats();
    assert_eq!(crate::stats::DropReason::ALL.iter().map(|d| s.drops(*d)).sum::<u64>(), 0);
}

/// The worker keeps routed destinations' adjacencies across batches: a packet still
/// follows its neighbour when its MAC changes, its MAC when it moves to another port,
/// and its port's MTU when the port comes back with another.
#[test]
fn a_cached_next_hop_follows_neighbour_fdb_and_port_changes() {
    use crate::port::{MemoryPort, Port};
    use crate::tables::PortId;
    let mut r = rig(&[access(2, 1)], &[]);
    r.send(1, &arp(ArpOperation::Reply, POD_B, "198.18.2.20", GW_B, "198.18.2.1"));
    let p = udp4(POD_A, GW_A, "198.18.1.10", "198.18.2.20", 64, 972);
    for _ in 0..2 {
        r.send(0, &p);
        let out = r.sent(1);
        assert_eq!(out.len(), 1);
        assert_eq!(&out[0][0..6], &POD_B.0);
    }

    // The pod moves to port 2 (its ARP reply teaches the FDB).
    r.send(2, &arp(ArpOperation::Reply, POD_B, "198.18.2.20", GW_B, "198.18.2.1"));
    r.send(0, &p);
    assert!(r.sent(1).is_empty(), "not to the port it left");
    assert_eq!(r.sent(2).len(), 1);

    // Another host takes the address.
    let other = mac(0x77);
    r.send(2, &arp(ArpOperation::Reply, other, "198.18.2.20", GW_B, "198.18.2.1"));
    r.send(0, &p);
    let out = r.sent(2);
    assert_eq!(out.len(), 1);
    assert_eq!(&out[0][0..6], &other.0);

    // Port 2 comes back with a 1,000-byte MTU: the 1,000-byte DF packet still fits,
    // 1,001 bytes get fragmentation needed with the new MTU.
    drop(r.worker.remove_port(PortId(2)));
    r.worker.add_port(PortId(2), Port::Memory(MemoryPort::new("p2").with_max_frame(1014)));
    r.send(0, &p);
    assert_eq!(r.sent(2).len(), 1);
    r.send(0, &udp4(POD_A, GW_A, "198.18.1.10", "198.18.2.20", 64, 973));
    assert!(r.sent(2).is_empty());
    let (_, _, ty, _) = icmp4_of(&r.sent(0)[0]);
    assert_eq!(
        ty,
        Icmpv4Type::DestinationUnreachable(etherparse::icmpv4::DestUnreachableHeader::FragmentationNeeded {
            next_hop_mtu: 1000
        })
    );
}

/// Batch after batch of 64 destinations, each behind a MAC of its own: every packet
/// reaches its own host, whatever the destinations share slots of the cache with.
#[test]
fn many_destinations_each_reach_their_own_neighbour() {
    let mut r = rig(&[], &[]);
    for h in 0..64u8 {
        r.send(1, &arp(ArpOperation::Reply, mac(h), &format!("198.18.2.{}", 10 + h), GW_B, "198.18.2.1"));
    }
    for round in 0..3 {
        for h in 0..64u8 {
            r.mem(0).push_rx(&udp4(POD_A, GW_A, "198.18.1.10", &format!("198.18.2.{}", 10 + h), 64, 10));
        }
        r.worker.poll_once(r.now_s);
        let out = r.sent(1);
        assert_eq!(out.len(), 64, "round {round}");
        for f in &out {
            let host = f[14 + 19] - 10;
            assert_eq!(&f[0..6], &mac(host).0, "round {round}: 198.18.2.{}", f[14 + 19]);
            assert!(ipv4_header_ok(f));
        }
    }
    assert_eq!(r.worker.stats().l3.routed.get(), 3 * 64);
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    /// Frames aimed at a gateway: its MAC or a multicast, ARP/IPv4/IPv6 EtherTypes,
    /// mostly valid-looking headers with random bytes after them.
    fn frame_bytes() -> impl Strategy<Value = Vec<u8>> {
        let ethertypes = prop::sample::select(vec![0x0800u16, 0x86dd, 0x0806, 0x8100]);
        let dst = prop::sample::select(vec![GW_A.0, [0xff; 6], [0x33, 0x33, 0xff, 0, 0, 1], [0x33, 0x33, 0, 0, 0, 2]]);
        (prop::collection::vec(any::<u8>(), 0..200), ethertypes, dst, any::<u8>(), any::<u8>()).prop_map(
            |(mut b, et, dst, ttl, proto)| {
                let mut f = dst.to_vec();
                f.extend_from_slice(&POD_A.0);
                f.extend_from_slice(&et.to_be_bytes());
                if et == 0x8100 {
                    f.extend_from_slice(&[0, 10, 0x08, 0x00]);
                }
                if b.len() >= 40 {
                    match et {
                        0x0800 => {
                            b[0] = 0x45;
                            let len = b.len() as u16;
                            b[2..4].copy_from_slice(&len.to_be_bytes());
                            b[8] = ttl % 3;
                            b[9] = [1, 17, 6][proto as usize % 3];
                            b[10..12].fill(0);
                            let c = checksum::checksum(&b[..20]);
                            b[10..12].copy_from_slice(&c.to_be_bytes());
                        }
                        0x86dd => {
                            b[0] = 0x60;
                            let len = (b.len() - 40) as u16;
                            b[4..6].copy_from_slice(&len.to_be_bytes());
                            b[6] = [58, 17][proto as usize % 2];
                            b[7] = if ttl > 128 { 255 } else { ttl % 3 };
                        }
                        0x0806 => b[0..8].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1 + proto % 2]),
                        _ => {}
                    }
                }
                f.extend_from_slice(&b);
                f
            },
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]
        #[test]
        fn anything_sent_to_a_gateway_is_answered_routed_or_counted(
            frames in prop::collection::vec((frame_bytes(), 0u16..3), 1..40)
        ) {
            let mut r = rig(&[trunk(2, &[(10, 0), (20, 1)], None)], &[]);
            for (f, port) in &frames {
                r.send(*port, f);
            }
            r.now_s = 10;
            r.control();
            let a = r.worker.account();
            prop_assert!(a.balanced(), "{}", a);
            prop_assert_eq!(r.worker.stats().packets.get(), frames.len() as u64);
        }
    }
}
