//! Tunnel tests over in-memory ports: routes to remote nodes leave VXLAN-encapsulated
//! (or plainly routed) on the uplink with headers a receiver accepts, what the uplink
//! receives is checked, decapsulated and routed to the pod, and every malformed
//! frame is counted.

use super::tests::{access, Rig};
use crate::stats::DropReason;
use crate::tables::{
    Gateway, NeighKey, NetworkId, NetworkSpec, PeerSpec, PortId, PortMode, PortSpec, RouteSpec, RouteTarget, Tunnel,
    TunnelMode, TunnelSpec,
};
use crate::wire::{checksum, EthernetAddress};
use etherparse::{Icmpv4Type, NetSlice, PacketBuilder, SlicedPacket, TransportSlice};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

const GW: EthernetAddress = EthernetAddress([0x02, 0xaa, 0, 0, 0, 1]);
const POD: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0, 0x0a]);
const UPLINK: EthernetAddress = EthernetAddress([0x02, 0xee, 0, 0, 0, 1]);
const ROUTER: EthernetAddress = EthernetAddress([0x02, 0xee, 0, 0, 0, 2]);
const VTEP: EthernetAddress = EthernetAddress([0x02, 0xcc, 0, 0, 0, 1]);
const PEER_VTEP: EthernetAddress = EthernetAddress([0x02, 0xcc, 0, 0, 0, 2]);
const LOCAL4: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 1);
const PEER4: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 2);
const LOCAL6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xff, 0, 0, 0, 0, 1);
const PEER6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xff, 0, 0, 0, 0, 2);
const VNI: u32 = 42;

/// This node's end: the uplink is port 1, both underlay families, VNI 42 for the L3
/// overlay, network 0 routes what comes in.
fn local_end(mode: TunnelMode) -> TunnelSpec {
    TunnelSpec {
        uplink: PortId(1),
        mode,
        uplink_mac: UPLINK,
        uplink_mtu: 1500,
        vtep_mac: VTEP,
        local4: Some(LOCAL4),
        local6: Some(LOCAL6),
        udp_port: 4789,
        vni: VNI,
        network: NetworkId(0),
    }
}

/// Pods on network 0 (198.18.1.0/24, 2001:db8:1::/64) behind port 0, with the pod
/// 198.18.1.10 / 2001:db8:1::10 resolved; the uplink is port 1; the peer owns
/// 198.18.2.0/24 and 2001:db8:2::/64 and is reached over `underlay`.
fn rig(mode: TunnelMode, underlay: IpAddr, resolved: bool) -> Rig {
    let net = NetworkSpec {
        id: NetworkId(0),
        name: "pods".into(),
        ageing_s: 300,
        gateway: Some(Gateway {
            mac: GW,
            v4: Some((Ipv4Addr::new(198, 18, 1, 1), 24)),
            v6: Some(("2001:db8:1::1".parse().unwrap(), 64)),
            router_advertisements: false,
        }),
    };
    let uplink = PortSpec { id: PortId(1), name: "uplink".into(), mode: PortMode::Uplink, static_macs: vec![] };
    let routes = [
        RouteSpec { prefix: "198.18.2.0/24".parse().unwrap(), target: RouteTarget::Peer(0) },
        RouteSpec { prefix: "2001:db8:2::/64".parse().unwrap(), target: RouteTarget::Peer(0) },
    ];
    let mut r = Rig::with(&[net], &[access(0, 0), uplink], &routes);
    r.resolver.set_statics(&[
        (NeighKey::new(NetworkId(0), "198.18.1.10".parse().unwrap()), POD),
        (NeighKey::new(NetworkId(0), "2001:db8:1::10".parse().unwrap()), POD),
    ]);
    let local = local_end(mode);
    let peer = PeerSpec { name: "b".into(), underlay, vtep_mac: PEER_VTEP, next_hop: resolved.then_some(ROUTER) };
    r.set_tunnel(Tunnel::new(local, &[peer]).unwrap());
    r
}

fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7) as u8).collect()
}

fn udp4(src: &str, dst: &str, ttl: u8, len: usize, smac: EthernetAddress, dmac: EthernetAddress) -> Vec<u8> {
    let mut f = Vec::new();
    let a = |s: &str| s.parse::<Ipv4Addr>().unwrap().octets();
    PacketBuilder::ethernet2(smac.0, dmac.0)
        .ipv4(a(src), a(dst), ttl)
        .udp(4000, 5000)
        .write(&mut f, &payload(len))
        .unwrap();
    f
}

fn udp6(src: &str, dst: &str, hop: u8, len: usize, smac: EthernetAddress, dmac: EthernetAddress) -> Vec<u8> {
    let mut f = Vec::new();
    let a = |s: &str| s.parse::<Ipv6Addr>().unwrap().octets();
    PacketBuilder::ethernet2(smac.0, dmac.0)
        .ipv6(a(src), a(dst), hop)
        .udp(4000, 5000)
        .write(&mut f, &payload(len))
        .unwrap();
    f
}

/// `inner` in VXLAN from the peer to this node, the way a kernel `vxlan` device sends
/// it (`udp_csum`: a real UDP checksum instead of zero).
fn vxlan(inner: &[u8], underlay: IpAddr, vni: u32, udp_csum: bool) -> Vec<u8> {
    let from = if underlay.is_ipv4() { IpAddr::V4(PEER4) } else { IpAddr::V6(PEER6) };
    let mut f = vxlan_from(inner, from, vni);
    if underlay.is_ipv4() && !udp_csum {
        f[40..42].fill(0);
    }
    f
}

/// Checks the outer headers of an encapsulated frame and returns (UDP source port,
/// the inner frame).
fn outer(f: &[u8], underlay: IpAddr) -> (u16, Vec<u8>) {
    assert_eq!(&f[0..6], &ROUTER.0, "to the underlay next hop");
    assert_eq!(&f[6..12], &UPLINK.0, "from the uplink");
    let s = SlicedPacket::from_ethernet(f).unwrap();
    let Some(TransportSlice::Udp(udp)) = &s.transport else { panic!("not UDP") };
    assert_eq!(udp.destination_port(), 4789);
    assert!(udp.source_port() >= 49152, "source port from the dynamic range");
    match &s.net {
        Some(NetSlice::Ipv4(ip)) => {
            assert!(underlay.is_ipv4());
            let h = ip.header();
            assert_eq!((h.source_addr(), h.destination_addr()), (LOCAL4, PEER4));
            assert_eq!(h.ttl(), 64);
            assert!(h.dont_fragment());
            assert_eq!(checksum::checksum(h.slice()), 0, "outer IPv4 checksum");
            assert_eq!(usize::from(h.total_len()), f.len() - 14);
            assert_eq!(udp.checksum(), 0, "zero UDP checksum over IPv4");
        }
        Some(NetSlice::Ipv6(ip)) => {
            assert!(underlay.is_ipv6());
            let h = ip.header();
            assert_eq!((h.source_addr(), h.destination_addr()), (LOCAL6, PEER6));
            assert_eq!(h.hop_limit(), 64);
            assert!(checksum::verify_l4(LOCAL6.into(), PEER6.into(), 17, udp.slice()), "UDP checksum over IPv6");
            assert_ne!(udp.checksum(), 0);
        }
        _ => panic!("not IP"),
    }
    assert_eq!(usize::from(udp.length()), udp.slice().len());
    let vx = udp.payload();
    assert_eq!(&vx[..8], &[0x08, 0, 0, 0, 0, 0, VNI as u8, 0], "VXLAN header");
    let inner = vx[8..].to_vec();
    assert_eq!(&inner[0..6], &PEER_VTEP.0, "inner destination: the peer's VTEP MAC");
    assert_eq!(&inner[6..12], &VTEP.0, "inner source: this node's VTEP MAC");
    (udp.source_port(), inner)
}

#[test]
fn pod_to_remote_pod_leaves_encapsulated_over_either_underlay() {
    for underlay in [IpAddr::V4(PEER4), IpAddr::V6(PEER6)] {
        let mut r = rig(TunnelMode::Vxlan, underlay, true);
        let p4 = udp4("198.18.1.10", "198.18.2.20", 64, 100, POD, GW);
        r.send(0, &p4);
        let p6 = udp6("2001:db8:1::10", "2001:db8:2::20", 64, 100, POD, GW);
        r.send(0, &p6);
        let out = r.sent(1);
        assert_eq!(out.len(), 2, "{underlay}: both on the uplink");
        let (_, inner4) = outer(&out[0], underlay);
        assert_eq!(inner4[14 + 8], 63, "inner TTL decremented");
        assert_eq!(checksum::checksum(&inner4[14..34]), 0, "inner checksum updated");
        assert_eq!(&inner4[14 + 12..], &p4[14 + 12..], "addresses and payload unchanged");
        let (_, inner6) = outer(&out[1], underlay);
        assert_eq!(inner6[14 + 7], 63, "hop limit decremented");
        assert_eq!(&inner6[14 + 8..], &p6[14 + 8..]);
        let s = r.worker.stats();
        assert_eq!(s.l3.to_peers.get(), 2);
        assert!(r.worker.account().balanced());
    }
}

#[test]
fn flows_get_different_source_ports_and_a_flow_keeps_its_own() {
    let mut r = rig(TunnelMode::Vxlan, IpAddr::V4(PEER4), true);
    let mut ports = std::collections::BTreeSet::new();
    for i in 0..32u8 {
        let f = udp4(&format!("198.18.1.{}", 10 + i), "198.18.2.20", 64, 20, POD, GW);
        r.send(0, &f);
        r.send(0, &f);
        let out = r.sent(1);
        let (a, b) = (outer(&out[0], IpAddr::V4(PEER4)).0, outer(&out[1], IpAddr::V4(PEER4)).0);
        assert_eq!(a, b, "one flow, one port");
        ports.insert(a);
    }
    assert!(ports.len() > 20, "32 flows spread over {} ports only", ports.len());
}

#[test]
fn vxlan_from_the_peer_is_decapsulated_and_routed_to_the_pod() {
    for (underlay, csum) in [(IpAddr::V4(PEER4), false), (IpAddr::V4(PEER4), true), (IpAddr::V6(PEER6), true)] {
        let mut r = rig(TunnelMode::Vxlan, underlay, true);
        let inner = udp4("198.18.2.20", "198.18.1.10", 63, 200, PEER_VTEP, VTEP);
        r.send(1, &vxlan(&inner, underlay, VNI, csum));
        let inner6 = udp6("2001:db8:2::20", "2001:db8:1::10", 63, 200, PEER_VTEP, VTEP);
        r.send(1, &vxlan(&inner6, underlay, VNI, csum));
        let out = r.sent(0);
        assert_eq!(out.len(), 2, "{underlay} checksum {csum}: both to the pod");
        assert_eq!(&out[0][0..6], &POD.0);
        assert_eq!(&out[0][6..12], &GW.0, "from the gateway");
        assert_eq!(out[0][14 + 8], 62);
        assert_eq!(&out[0][14 + 12..], &inner[14 + 12..]);
        assert_eq!(out[1][14 + 7], 62);
        assert_eq!(&out[1][14 + 8..], &inner6[14 + 8..]);
        assert_eq!(r.worker.stats().l3.from_peers.get(), 2);
        assert!(r.worker.account().balanced());
    }
}

#[test]
fn malformed_underlay_frames_are_counted_and_dropped() {
    let v4 = IpAddr::V4(PEER4);
    let mut r = rig(TunnelMode::Vxlan, v4, true);
    let inner = udp4("198.18.2.20", "198.18.1.10", 63, 64, PEER_VTEP, VTEP);
    let good = vxlan(&inner, v4, VNI, false);
    let cases: Vec<(Vec<u8>, DropReason)> = vec![
        (vxlan(&inner, v4, VNI + 1, false), DropReason::VxlanWrongVni),
        (
            {
                let mut f = good.clone();
                f[42] = 0x0c; // I and a GPE bit
                f
            },
            DropReason::VxlanBadFlags,
        ),
        (
            {
                let mut f = good.clone();
                f[42] = 0;
                f
            },
            DropReason::VxlanBadFlags,
        ),
        (
            {
                let mut f = good.clone();
                f[40..42].copy_from_slice(&0x1234u16.to_be_bytes());
                f
            },
            DropReason::VxlanBadChecksum,
        ),
        (good[..40].to_vec(), DropReason::Ipv4Truncated),
        (
            {
                // Outer lengths cut down to a VXLAN header with no inner frame.
                let mut f = good[..14 + 20 + 8 + 8 + 6].to_vec();
                let total = (f.len() - 14) as u16;
                f[16..18].copy_from_slice(&total.to_be_bytes());
                f[24..26].fill(0);
                let c = checksum::checksum(&f[14..34]);
                f[24..26].copy_from_slice(&c.to_be_bytes());
                f[38..40].copy_from_slice(&(total - 20).to_be_bytes());
                f
            },
            DropReason::VxlanTruncated,
        ),
        (
            {
                let mut f = good.clone();
                f[14 + 6] = 0x20; // more fragments
                f[24..26].fill(0);
                let c = checksum::checksum(&f[14..34]);
                f[24..26].copy_from_slice(&c.to_be_bytes());
                f
            },
            DropReason::VxlanFragment,
        ),
        (vxlan(&udp4("198.18.2.20", "198.18.1.10", 63, 64, PEER_VTEP, POD), v4, VNI, false), DropReason::VxlanInnerMac),
        (
            {
                let mut f = good.clone();
                f[50 + 12..50 + 14].copy_from_slice(&[0x08, 0x06]); // ARP inside
                f
            },
            DropReason::VxlanInnerUnsupported,
        ),
        (
            {
                let mut f = good.clone();
                f[36..38].copy_from_slice(&4790u16.to_be_bytes());
                f
            },
            DropReason::UnderlayNotOurs,
        ),
        (
            {
                let mut f = good.clone();
                f[12..14].copy_from_slice(&[0x88, 0xb5]);
                f
            },
            DropReason::UnderlayUnsupported,
        ),
    ];
    for (f, reason) in cases {
        let before = r.drops(reason);
        r.send(1, &f);
        assert!(r.sent(0).is_empty(), "{reason:?} was forwarded");
        assert_eq!(r.drops(reason), before + 1, "{reason:?} not counted");
    }
    // And the good one still goes.
    r.send(1, &good);
    assert_eq!(r.sent(0).len(), 1);
    assert!(r.worker.account().balanced());
}

/// A 1,451-byte DF packet does not fit the 1,450 bytes VXLAN leaves of a 1,500-byte
/// underlay: fragmentation needed, MTU 1450, back to the pod; IPv6 gets packet too big
/// with 1430 over an IPv6 underlay.
#[test]
fn too_big_for_the_tunnel_gets_frag_needed_with_the_tunnel_mtu() {
    let mut r = rig(TunnelMode::Vxlan, IpAddr::V4(PEER4), true);
    let big = udp4("198.18.1.10", "198.18.2.20", 64, 1451 - 28, POD, GW);
    assert_eq!(big.len() - 14, 1451);
    r.send(0, &big);
    assert!(r.sent(1).is_empty());
    let back = r.sent(0);
    assert_eq!(back.len(), 1);
    let s = SlicedPacket::from_ethernet(&back[0]).unwrap();
    let Some(TransportSlice::Icmpv4(icmp)) = &s.transport else { panic!("not ICMP") };
    assert_eq!(
        icmp.icmp_type(),
        Icmpv4Type::DestinationUnreachable(etherparse::icmpv4::DestUnreachableHeader::FragmentationNeeded {
            next_hop_mtu: 1450
        })
    );
    let fits = udp4("198.18.1.10", "198.18.2.20", 64, 1450 - 28, POD, GW);
    r.send(0, &fits);
    let out = r.sent(1);
    assert_eq!(out.len(), 1, "1450 bytes fit");
    assert_eq!(out[0].len(), 1450 + 50 + 14 - 14 + 14, "a full 1500-byte outer packet plus Ethernet");

    let mut r = rig(TunnelMode::Vxlan, IpAddr::V6(PEER6), true);
    r.send(0, &udp6("2001:db8:1::10", "2001:db8:2::20", 64, 1431 - 48, POD, GW));
    let back = r.sent(0);
    let s = SlicedPacket::from_ethernet(&back[0]).unwrap();
    let Some(TransportSlice::Icmpv6(icmp)) = &s.transport else { panic!("not ICMPv6") };
    assert_eq!(icmp.icmp_type(), etherparse::Icmpv6Type::PacketTooBig { mtu: 1430 });
}

/// Without DF, the same packet goes in fragments of the tunnel's MTU, each in VXLAN
/// of its own, all with one outer source port.
#[test]
fn too_big_for_the_tunnel_without_df_goes_in_encapsulated_fragments() {
    for underlay in [IpAddr::V4(PEER4), IpAddr::V6(PEER6)] {
        let mut r = rig(TunnelMode::Vxlan, underlay, true);
        let big = super::tests_l3::without_df(udp4("198.18.1.10", "198.18.2.20", 64, 2000 - 28, POD, GW));
        r.send(0, &big);
        let out = r.sent(1);
        assert_eq!(out.len(), 2, "{underlay}");
        let (ports, inner): (Vec<_>, Vec<_>) = out.iter().map(|f| outer(f, underlay)).unzip();
        assert_eq!(ports[0], ports[1], "one outer source port for the packet's fragments");
        let mtu = if underlay.is_ipv4() { 1450 } else { 1430 };
        assert!(inner.iter().all(|f| f.len() - 14 <= mtu), "{underlay}: fit the tunnel");
        assert_eq!(super::tests_l3::reassemble(&inner), [big[34..].to_vec()]);
        let s = r.worker.stats();
        assert_eq!((s.l3.fragments.get(), s.l3.to_peers.get()), (2, 2));
        assert!(r.worker.account().balanced());
    }
}

#[test]
fn an_unresolved_peer_drops_and_counts() {
    let mut r = rig(TunnelMode::Vxlan, IpAddr::V4(PEER4), false);
    r.send(0, &udp4("198.18.1.10", "198.18.2.20", 64, 20, POD, GW));
    assert!(r.sent(1).is_empty());
    assert_eq!(r.drops(DropReason::PeerUnresolved), 1);
}

/// A packet from the remote node whose TTL runs out here gets its time exceeded
/// back through the tunnel, from this node's gateway.
#[test]
fn errors_about_tunnelled_packets_go_back_through_the_tunnel() {
    let mut r = rig(TunnelMode::Vxlan, IpAddr::V4(PEER4), true);
    let inner = udp4("198.18.2.20", "198.18.1.10", 1, 30, PEER_VTEP, VTEP);
    r.send(1, &vxlan(&inner, IpAddr::V4(PEER4), VNI, false));
    assert!(r.sent(0).is_empty());
    let out = r.sent(1);
    assert_eq!(out.len(), 1, "the error, encapsulated");
    let (_, err) = outer(&out[0], IpAddr::V4(PEER4));
    let s = SlicedPacket::from_ethernet(&err).unwrap();
    let Some(NetSlice::Ipv4(ip)) = &s.net else { panic!() };
    assert_eq!(ip.header().source_addr(), Ipv4Addr::new(198, 18, 1, 1));
    assert_eq!(ip.header().destination_addr(), Ipv4Addr::new(198, 18, 2, 20));
    let Some(TransportSlice::Icmpv4(icmp)) = &s.transport else { panic!() };
    assert!(matches!(icmp.icmp_type(), Icmpv4Type::TimeExceeded(_)));
    // Its gateway does not answer echo for remote nodes.
    let mut ping = Vec::new();
    PacketBuilder::ethernet2(PEER_VTEP.0, VTEP.0)
        .ipv4([198, 18, 2, 20], [198, 18, 1, 1], 64)
        .icmpv4_echo_request(1, 1)
        .write(&mut ping, &[0; 8])
        .unwrap();
    r.send(1, &vxlan(&ping, IpAddr::V4(PEER4), VNI, false));
    assert!(r.sent(1).is_empty() && r.sent(0).is_empty());
    assert_eq!(r.drops(DropReason::GatewayUnsupported), 1);
    assert!(r.worker.account().balanced());
}

#[test]
fn direct_mode_routes_over_the_underlay_without_encapsulation() {
    let mut r = rig(TunnelMode::Direct, IpAddr::V4(PEER4), true);
    let p = udp4("198.18.1.10", "198.18.2.20", 64, 100, POD, GW);
    r.send(0, &p);
    let out = r.sent(1);
    assert_eq!(out.len(), 1);
    assert_eq!(&out[0][0..6], &ROUTER.0);
    assert_eq!(&out[0][6..12], &UPLINK.0);
    assert_eq!(out[0].len(), p.len(), "no encapsulation");
    assert_eq!(out[0][14 + 8], 63);
    // In: plain IP to a local pod, from the underlay.
    r.send(1, &udp4("198.18.2.20", "198.18.1.10", 63, 100, ROUTER, UPLINK));
    let got = r.sent(0);
    assert_eq!(got.len(), 1);
    assert_eq!(&got[0][0..6], &POD.0);
    assert_eq!(got[0][14 + 8], 62);
    // 1500 bytes fit in direct mode (no overhead).
    r.send(0, &udp4("198.18.1.10", "198.18.2.20", 64, 1500 - 28, POD, GW));
    assert_eq!(r.sent(1).len(), 1);
}

// ---- A network stretched across nodes (the L2 overlay) ----

const L2_VNI: u32 = 100;
const PEER_C6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xff, 0, 0, 0, 0, 3);

/// [`rig`]'s node, plus network 1 ("blue", no gateway) with pods on ports 2 and 3,
/// stretched as VNI 100 to peer b (over IPv4) and peer c (over IPv6); network 2 is
/// local only, with a pod on port 4.
fn stretched_rig() -> Rig {
    let pods = NetworkSpec {
        id: NetworkId(0),
        name: "pods".into(),
        ageing_s: 300,
        gateway: Some(Gateway {
            mac: GW,
            v4: Some((Ipv4Addr::new(198, 18, 1, 1), 24)),
            v6: None,
            router_advertisements: false,
        }),
    };
    let plain =
        |id: u16, name: &str| NetworkSpec { id: NetworkId(id), name: name.into(), ageing_s: 300, gateway: None };
    let uplink = PortSpec { id: PortId(1), name: "uplink".into(), mode: PortMode::Uplink, static_macs: vec![] };
    let ports = [access(0, 0), uplink, access(2, 1), access(3, 1), access(4, 2)];
    let mut r = Rig::with(&[pods, plain(1, "blue"), plain(2, "red")], &ports, &[]);
    let local = local_end(TunnelMode::Vxlan);
    let peer = |name: &str, underlay: IpAddr| PeerSpec {
        name: name.into(),
        underlay,
        vtep_mac: PEER_VTEP,
        next_hop: Some(ROUTER),
    };
    let tunnel = Tunnel::new(local, &[peer("b", IpAddr::V4(PEER4)), peer("c", IpAddr::V6(PEER_C6))]).unwrap();
    let blue = crate::tables::L2Vni { vni: L2_VNI, network: NetworkId(1), peers: [0, 1].into() };
    r.set_tunnel(tunnel.with_l2(vec![blue]).unwrap());
    r
}

/// `inner` in VXLAN VNI `vni` from `from` (an IPv4 or IPv6 underlay address).
fn vxlan_from(inner: &[u8], from: IpAddr, vni: u32) -> Vec<u8> {
    let mut body = vec![0x08, 0, 0, 0];
    body.extend_from_slice(&vni.to_be_bytes()[1..]);
    body.push(0);
    body.extend_from_slice(inner);
    let mut f = Vec::new();
    let b = PacketBuilder::ethernet2(ROUTER.0, UPLINK.0);
    match from {
        IpAddr::V4(a) => b.ipv4(a.octets(), LOCAL4.octets(), 64).udp(51000, 4789).write(&mut f, &body).unwrap(),
        IpAddr::V6(a) => b.ipv6(a.octets(), LOCAL6.octets(), 64).udp(51000, 4789).write(&mut f, &body).unwrap(),
    }
    f
}

/// (outer destination address, VNI, inner frame) of a frame the uplink sent, with
/// the outer checksums checked.
fn l2_outer(f: &[u8]) -> (IpAddr, u32, Vec<u8>) {
    let s = SlicedPacket::from_ethernet(f).unwrap();
    let Some(TransportSlice::Udp(udp)) = &s.transport else { panic!("not UDP") };
    assert_eq!(udp.destination_port(), 4789);
    let dst = match &s.net {
        Some(NetSlice::Ipv4(ip)) => {
            assert_eq!(checksum::checksum(ip.header().slice()), 0, "outer IPv4 checksum");
            IpAddr::V4(ip.header().destination_addr())
        }
        Some(NetSlice::Ipv6(ip)) => {
            let d = ip.header().destination_addr();
            assert!(checksum::verify_l4(LOCAL6.into(), d.into(), 17, udp.slice()), "UDP checksum over IPv6");
            IpAddr::V6(d)
        }
        _ => panic!("not IP"),
    };
    let vx = udp.payload();
    assert_eq!(&vx[..4], &[0x08, 0, 0, 0]);
    (dst, u32::from_be_bytes([0, vx[4], vx[5], vx[6]]), vx[8..].to_vec())
}

#[test]
fn a_broadcast_in_a_stretched_network_reaches_its_pods_and_every_peer_of_its_vni() {
    let mut r = stretched_rig();
    let bcast = super::tests::frame(EthernetAddress::BROADCAST, super::tests::mac(2), 80);
    r.send(2, &bcast);
    assert_eq!(r.sent(3), vec![bcast.clone()], "the other local pod of the network");
    assert!(r.sent(0).is_empty() && r.sent(4).is_empty(), "no other network");
    let mut out: Vec<_> = r.sent(1).iter().map(|f| l2_outer(f)).collect();
    out.sort_by_key(|o| o.0);
    assert_eq!(out.len(), 2, "one copy per peer of the VNI");
    assert_eq!(out[0].0, IpAddr::V4(PEER4));
    assert_eq!(out[1].0, IpAddr::V6(PEER_C6));
    for (_, vni, inner) in &out {
        assert_eq!(*vni, L2_VNI);
        assert_eq!(inner, &bcast, "the frame as it was");
    }
    assert_eq!(r.worker.stats().l3.to_peers.get(), 2);
    assert!(r.worker.account().balanced());
}

#[test]
fn remote_macs_are_learned_from_their_peer_and_stop_the_flooding() {
    let mut r = stretched_rig();
    let remote = EthernetAddress([0x02, 0, 0, 0, 0xc0, 1]);
    let local = super::tests::mac(2);
    // From pod R behind peer c: to the local pods, never back to a peer.
    let hello = super::tests::frame(EthernetAddress::BROADCAST, remote, 80);
    r.send(1, &vxlan_from(&hello, IpAddr::V6(PEER_C6), L2_VNI));
    assert_eq!(r.sent(2), vec![hello.clone()]);
    assert_eq!(r.sent(3), vec![hello.clone()]);
    assert!(r.sent(1).is_empty() && r.sent(4).is_empty(), "split horizon, and no other network");
    let e = r.learner.build().lookup(NetworkId(1), remote).unwrap();
    assert_eq!((e.port, e.peer), (PortId(1), 1), "learned behind peer c");
    // The answer goes to peer c alone.
    let answer = super::tests::frame(remote, local, 120);
    r.send(2, &answer);
    let out = r.sent(1);
    assert_eq!(out.len(), 1, "unicast to one peer");
    assert_eq!(l2_outer(&out[0]), (IpAddr::V6(PEER_C6), L2_VNI, answer.clone()));
    assert!(r.sent(3).is_empty(), "no flooding once learned");
    // Peer b sending to R (which lives behind c) is not sent back into the tunnel.
    let stray = super::tests::frame(remote, EthernetAddress([0x02, 0, 0, 0, 0xb0, 1]), 80);
    r.send(1, &vxlan_from(&stray, IpAddr::V4(PEER4), L2_VNI));
    assert!(r.sent(1).is_empty());
    assert_eq!(r.drops(DropReason::SamePort), 1);
    // R moves behind peer b.
    r.send(1, &vxlan_from(&super::tests::frame(local, remote, 80), IpAddr::V4(PEER4), L2_VNI));
    assert_eq!(r.sent(2).len(), 1);
    r.send(2, &answer);
    assert_eq!(l2_outer(&r.sent(1)[0]).0, IpAddr::V4(PEER4));
    assert!(r.worker.account().balanced());
}

#[test]
fn stretched_frames_from_strangers_tagged_or_in_unknown_vnis_are_counted_and_dropped() {
    let mut r = stretched_rig();
    let f = super::tests::frame(EthernetAddress::BROADCAST, EthernetAddress([2, 0, 0, 0, 0xc0, 1]), 80);
    r.send(1, &vxlan_from(&f, IpAddr::V4(Ipv4Addr::new(198, 19, 0, 77)), L2_VNI));
    assert_eq!(r.drops(DropReason::VxlanUnknownPeer), 1);
    r.send(1, &vxlan_from(&f, IpAddr::V4(PEER4), L2_VNI + 1));
    assert_eq!(r.drops(DropReason::VxlanWrongVni), 1);
    let mut tagged = f.clone();
    tagged.splice(12..12, [0x81, 0x00, 0x00, 0x05]);
    r.send(1, &vxlan_from(&tagged, IpAddr::V4(PEER4), L2_VNI));
    assert_eq!(r.drops(DropReason::VxlanInnerUnsupported), 1);
    let mut group_src = f.clone();
    group_src[6] = 0x01;
    r.send(1, &vxlan_from(&group_src, IpAddr::V4(PEER4), L2_VNI));
    assert_eq!(r.drops(DropReason::SourceMulticast), 1);
    for p in [0, 1, 2, 3, 4] {
        assert!(r.sent(p).is_empty(), "port {p}");
    }
    assert!(r.worker.account().balanced());
}
