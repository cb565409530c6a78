//! Shared set-up for podswitch's benchmarks: a worker over in-memory ports with tables
//! already learned, so a benchmark measures the steady state a user would see.

pub mod compare;
pub mod daemon;
pub mod host;
pub mod pktgen;

use std::sync::Arc;
use switch_core::port::{MemoryPort, Port};
use switch_core::tables::{
    Learner, NetworkId, NetworkSpec, Parts, PortId, PortMode, PortSpec, Publisher, TablesReader, Topology,
};
use switch_core::wire::VlanId;
use switch_core::worker::{Clock, IdlePolicy, Worker, WorkerConfig, WorkerQueues};
use switch_core::xsk::{HugepagePolicy, Umem, UmemConfig};

/// MAC of the sender behind port 0.
pub const SRC: [u8; 6] = [2, 0, 0, 0, 0, 1];
/// MAC learned behind port 1.
pub const KNOWN: [u8; 6] = [2, 0, 0, 0, 0, 2];
/// MAC nobody has.
pub const UNKNOWN: [u8; 6] = [2, 0, 0, 0, 0, 0x99];

/// A binary built next to the running one (`target/<profile>/NAME`).
pub fn sibling_bin(name: &str) -> anyhow::Result<std::path::PathBuf> {
    let exe = std::env::current_exe()?;
    let p = exe.parent().ok_or_else(|| anyhow::anyhow!("no directory for {}", exe.display()))?.join(name);
    if !p.exists() {
        anyhow::bail!("{} not found: `cargo build --release --workspace --bins` first", p.display());
    }
    Ok(p)
}

/// Destination MAC of flow `i` (learned behind port 1).
pub fn flow_dst(i: u8) -> [u8; 6] {
    [2, 0, 0, 1, 0, i]
}

/// Source MAC of flow `i` (behind port 0).
pub fn flow_src(i: u8) -> [u8; 6] {
    [2, 0, 0, 2, 0, i]
}

/// An Ethernet frame of `len` bytes (IPv4/UDP-shaped payload).
pub fn frame(dst: [u8; 6], src: [u8; 6], len: usize) -> Vec<u8> {
    let mut f = vec![0u8; len];
    f[0..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&src);
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let ip = [0x45, 0, 0, (len - 14) as u8, 0, 0, 0x40, 0, 64, 17, 0, 0, 198, 18, 0, 1, 198, 18, 0, 2];
    let ip_len = ((len - 14) as u16).to_be_bytes();
    f[14..34].copy_from_slice(&ip);
    f[16..18].copy_from_slice(&ip_len);
    f
}

/// A worker whose port 0 receives `frames` over and over; port 1 is an access port of
/// the same network that has sent from `KNOWN` (so it is learned); port 2 is a trunk
/// carrying the network as VLAN 10. Every MAC is learned before it returns.
pub fn worker(frames: Vec<Vec<u8>>) -> Worker {
    let nets = [NetworkSpec { id: NetworkId(0), name: "n".into(), ageing_s: 300, gateway: None }];
    let access = |id| PortSpec {
        id: PortId(id),
        name: format!("p{id}"),
        mode: PortMode::Access { network: NetworkId(0) },
        static_macs: vec![],
    };
    let trunk = PortSpec {
        id: PortId(2),
        name: "t".into(),
        mode: PortMode::Trunk { vlans: vec![(VlanId::new(10).expect("valid"), NetworkId(0))], native: None },
        static_macs: vec![],
    };
    let topo = Arc::new(Topology::new(&nets, &[access(0), access(1), trunk], 8).expect("valid topology"));
    let mut learner = Learner::new(1024);
    let mut publisher = Publisher::new(Parts::l2(topo.clone(), Arc::new(learner.build())));
    let queues = WorkerQueues::new(1024);
    let learn = queues.learn.clone();
    let umem =
        Umem::new(&UmemConfig { frames: 4096, frame_size: 4096, hugepages: HugepagePolicy::Auto }).expect("UMEM");
    let cfg = WorkerConfig { id: 0, core: None, idle: IdlePolicy::Poll, max_ports: 8, pending: 64 };
    let mut w = Worker::new(cfg, umem, TablesReader::new(publisher.handle()), queues.clone(), Clock::new());
    w.add_port(PortId(0), Port::Memory(MemoryPort::replaying("p0", frames)));
    let mut p1 = MemoryPort::replaying("p1", vec![]);
    p1.push_rx(&frame(SRC, KNOWN, 64));
    for i in 0..64 {
        p1.push_rx(&frame(SRC, flow_dst(i), 64));
    }
    w.add_port(PortId(1), Port::Memory(p1));
    w.add_port(PortId(2), Port::Memory(MemoryPort::replaying("t", vec![])));
    for _ in 0..4 {
        w.poll_once(0);
        if learner.drain(&learn, 0, &topo) {
            publisher.publish(Parts::l2(topo.clone(), Arc::new(learner.build())));
        }
    }
    w
}

/// MAC of network "a"'s gateway in [`routed_worker`].
pub const GW_A: [u8; 6] = [2, 0xaa, 0, 0, 0, 1];

/// A 64-byte IPv4/UDP frame from `SRC` to the gateway, with a valid header checksum.
pub fn ipv4_frame(src: std::net::Ipv4Addr, dst: std::net::Ipv4Addr) -> Vec<u8> {
    let mut f = frame(GW_A, SRC, 64);
    f[26..30].copy_from_slice(&src.octets());
    f[30..34].copy_from_slice(&dst.octets());
    let c = switch_core::wire::checksum::checksum(&f[14..34]);
    f[24..26].copy_from_slice(&c.to_be_bytes());
    f
}

/// A 64-byte IPv6/UDP frame from `SRC` to the gateway.
pub fn ipv6_frame(src: std::net::Ipv6Addr, dst: std::net::Ipv6Addr) -> Vec<u8> {
    let mut f = vec![0u8; 66];
    f[0..6].copy_from_slice(&GW_A);
    f[6..12].copy_from_slice(&SRC);
    f[12..14].copy_from_slice(&[0x86, 0xdd]);
    f[14..22].copy_from_slice(&[0x60, 0, 0, 0, 0, 12, 17, 64]);
    f[22..38].copy_from_slice(&src.octets());
    f[38..54].copy_from_slice(&dst.octets());
    f[58..60].copy_from_slice(&12u16.to_be_bytes());
    f
}

/// A worker that routes: network "a" (198.18.1.0/24, 2001:db8:1::/64, gateway `GW_A`)
/// on port 0, network "b" (198.18.2.0/24, 2001:db8:2::/64) on port 1 with `KNOWN`
/// answering for 198.18.2.254, 2001:db8:2::fe and hosts 10-73 of both subnets.
/// `routes` go via 198.18.2.254 or 2001:db8:2::fe. Port 0 receives `frames` over and
/// over.
pub fn routed_worker(frames: Vec<Vec<u8>>, routes: &[switch_core::tables::Prefix]) -> Worker {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    use switch_core::tables::{Gateway, NeighKey, Resolver, RouteSpec, RouteTarget, Routes};
    use switch_core::wire::EthernetAddress;
    let gw = |mac: [u8; 6], n: u8| Gateway {
        mac: EthernetAddress(mac),
        v4: Some((Ipv4Addr::new(198, 18, n, 1), 24)),
        v6: Some((Ipv6Addr::new(0x2001, 0xdb8, u16::from(n), 0, 0, 0, 0, 1), 64)),
        router_advertisements: false,
    };
    let nets = [
        NetworkSpec { id: NetworkId(0), name: "a".into(), ageing_s: 300, gateway: Some(gw(GW_A, 1)) },
        NetworkSpec { id: NetworkId(1), name: "b".into(), ageing_s: 300, gateway: Some(gw([2, 0xbb, 0, 0, 0, 1], 2)) },
    ];
    let port = |id: u16, mac: [u8; 6]| PortSpec {
        id: PortId(id),
        name: format!("p{id}"),
        mode: PortMode::Access { network: NetworkId(id) },
        static_macs: vec![EthernetAddress(mac)],
    };
    let topo = Arc::new(Topology::new(&nets, &[port(0, SRC), port(1, KNOWN)], 8).expect("valid topology"));
    let mut learner = Learner::new(1024);
    learner.sync_topology(&topo);
    let mut resolver = Resolver::new(Default::default());
    let b = NetworkId(1);
    let known = EthernetAddress(KNOWN);
    resolver.set_static(NeighKey::v4(b, Ipv4Addr::new(198, 18, 2, 254)), known);
    resolver.set_static(NeighKey::v6(b, Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0xfe)), known);
    for h in 10..74 {
        resolver.set_static(NeighKey::v4(b, Ipv4Addr::new(198, 18, 2, h)), known);
        resolver.set_static(NeighKey::v6(b, Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, u16::from(h))), known);
    }
    let specs: Vec<RouteSpec> = routes
        .iter()
        .map(|p| {
            let via = match p {
                switch_core::tables::Prefix::V4(_) => IpAddr::V4(Ipv4Addr::new(198, 18, 2, 254)),
                switch_core::tables::Prefix::V6(_) => IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0xfe)),
            };
            RouteSpec { prefix: *p, target: RouteTarget::Via(via) }
        })
        .collect();
    let publisher = Publisher::new(Parts {
        topology: topo.clone(),
        fdb: Arc::new(learner.build()),
        routes: Arc::new(Routes::build(&topo, &specs).expect("valid routes")),
        neigh: Arc::new(resolver.build()),
        tunnel: Arc::new(switch_core::tables::Tunnel::empty()),
    });
    let queues = WorkerQueues::new(1024);
    let umem =
        Umem::new(&UmemConfig { frames: 4096, frame_size: 4096, hugepages: HugepagePolicy::Auto }).expect("UMEM");
    let cfg = WorkerConfig { id: 0, core: None, idle: IdlePolicy::Poll, max_ports: 8, pending: 64 };
    let mut w = Worker::new(cfg, umem, TablesReader::new(publisher.handle()), queues, Clock::new());
    w.add_port(PortId(0), Port::Memory(MemoryPort::replaying("p0", frames)));
    w.add_port(PortId(1), Port::Memory(MemoryPort::replaying("p1", vec![])));
    // The publisher may go: the worker holds the snapshot it needs.
    drop(publisher);
    w
}

/// `n` distinct unicast IPv4 prefixes, /16 to /28 (mostly /24, as in Internet tables),
/// from a fixed seed, none inside 198.18.0.0/15 (the networks' own subnets). In-memory
/// benchmark tables only: no packet to them leaves the process.
pub fn random_v4_prefixes(n: usize) -> Vec<switch_core::tables::Prefix> {
    use switch_core::tables::{Ipv4Prefix, Prefix};
    let mut seen = std::collections::HashSet::new();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let len = match x % 10 {
            0 => 16,
            1 => 20,
            2 => 22,
            3 => 28,
            _ => 24,
        } as u8;
        let addr = (x >> 32) as u32 & (u32::MAX << (32 - len));
        // Unicast space only (1-223, not loopback), and not the networks' own.
        let first = addr >> 24;
        let ours = addr >> 17 == u32::from(std::net::Ipv4Addr::new(198, 18, 0, 0)) >> 17;
        if first == 0 || first == 127 || first >= 224 || ours {
            continue;
        }
        let p = Ipv4Prefix::new(addr.into(), len).expect("host bits cleared");
        if seen.insert(p) {
            out.push(Prefix::V4(p));
        }
    }
    out
}

/// This node's VTEP MAC in [`tunnel_worker`].
pub const VTEP: [u8; 6] = [2, 0xcc, 0, 0, 0, 1];
/// The peer's VTEP MAC in [`tunnel_worker`].
pub const PEER_VTEP: [u8; 6] = [2, 0xcc, 0, 0, 0, 2];
/// The uplink's MAC in [`tunnel_worker`].
pub const UPLINK: [u8; 6] = [2, 0xee, 0, 0, 0, 1];

/// A worker with a tunnel: network "a" (198.18.1.0/24, 2001:db8:1::/64, gateway `GW_A`)
/// on port 0 with hosts 10-73 resolved to `SRC`; the uplink on port 1 (VTEP
/// 198.19.0.1 and 2001:db8:ff::1, VNI 1); one peer owning 198.18.2.0/24 and
/// 2001:db8:2::/64, reached over IPv6 if `v6_underlay`, its next hop resolved to
/// `KNOWN`; VXLAN, or direct routing if `direct`. Port `rx` receives `frames` over and
/// over.
pub fn tunnel_worker(frames: Vec<Vec<u8>>, rx: u16, v6_underlay: bool, direct: bool) -> Worker {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    use switch_core::tables::{
        Gateway, NeighKey, PeerSpec, Resolver, RouteSpec, RouteTarget, Routes, Tunnel, TunnelMode, TunnelSpec,
    };
    use switch_core::wire::EthernetAddress;
    let nets = [NetworkSpec {
        id: NetworkId(0),
        name: "a".into(),
        ageing_s: 300,
        gateway: Some(Gateway {
            mac: EthernetAddress(GW_A),
            v4: Some((Ipv4Addr::new(198, 18, 1, 1), 24)),
            v6: Some((Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1), 64)),
            router_advertisements: false,
        }),
    }];
    let ports = [
        PortSpec {
            id: PortId(0),
            name: "p0".into(),
            mode: PortMode::Access { network: NetworkId(0) },
            static_macs: vec![EthernetAddress(SRC)],
        },
        PortSpec { id: PortId(1), name: "uplink".into(), mode: PortMode::Uplink, static_macs: vec![] },
    ];
    let topo = Arc::new(Topology::new(&nets, &ports, 8).expect("valid topology"));
    let mut learner = Learner::new(1024);
    learner.sync_topology(&topo);
    let mut resolver = Resolver::new(Default::default());
    let a = NetworkId(0);
    for h in 10..74 {
        resolver.set_static(NeighKey::v4(a, Ipv4Addr::new(198, 18, 1, h)), EthernetAddress(SRC));
        resolver.set_static(
            NeighKey::v6(a, Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, u16::from(h))),
            EthernetAddress(SRC),
        );
    }
    let specs = [
        RouteSpec { prefix: "198.18.2.0/24".parse().expect("prefix"), target: RouteTarget::Peer(0) },
        RouteSpec { prefix: "2001:db8:2::/64".parse().expect("prefix"), target: RouteTarget::Peer(0) },
    ];
    let local = TunnelSpec {
        uplink: PortId(1),
        mode: if direct { TunnelMode::Direct } else { TunnelMode::Vxlan },
        uplink_mac: EthernetAddress(UPLINK),
        uplink_mtu: 1500,
        vtep_mac: EthernetAddress(VTEP),
        local4: Some(Ipv4Addr::new(198, 19, 0, 1)),
        local6: Some(Ipv6Addr::new(0x2001, 0xdb8, 0xff, 0, 0, 0, 0, 1)),
        udp_port: 4789,
        vni: 1,
        network: a,
    };
    let peer = PeerSpec {
        name: "b".into(),
        underlay: if v6_underlay {
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0xff, 0, 0, 0, 0, 2))
        } else {
            IpAddr::V4(Ipv4Addr::new(198, 19, 0, 2))
        },
        vtep_mac: EthernetAddress(PEER_VTEP),
        next_hop: Some(EthernetAddress(KNOWN)),
    };
    let publisher = Publisher::new(Parts {
        topology: topo.clone(),
        fdb: Arc::new(learner.build()),
        routes: Arc::new(Routes::build(&topo, &specs).expect("valid routes")),
        neigh: Arc::new(resolver.build()),
        tunnel: Arc::new(Tunnel::new(local, &[peer]).expect("valid tunnel")),
    });
    let queues = WorkerQueues::new(1024);
    let umem =
        Umem::new(&UmemConfig { frames: 4096, frame_size: 4096, hugepages: HugepagePolicy::Auto }).expect("UMEM");
    let cfg = WorkerConfig { id: 0, core: None, idle: IdlePolicy::Poll, max_ports: 8, pending: 64 };
    let mut w = Worker::new(cfg, umem, TablesReader::new(publisher.handle()), queues, Clock::new());
    for p in 0..2u16 {
        let replay = if p == rx { frames.clone() } else { vec![] };
        w.add_port(PortId(p), Port::Memory(MemoryPort::replaying(&format!("p{p}"), replay)));
    }
    drop(publisher);
    w
}

/// `inner` (an Ethernet frame for `VTEP`) in VXLAN (VNI 1) from the peer of
/// [`tunnel_worker`] to this node, over IPv6 if `v6`, with a zero UDP checksum over
/// IPv4 and a real one over IPv6, as Linux sends them.
pub fn vxlan_frame(inner: &[u8], v6: bool) -> Vec<u8> {
    use switch_core::wire::checksum;
    let mut f = Vec::new();
    f.extend_from_slice(&UPLINK);
    f.extend_from_slice(&KNOWN);
    let udp_len = 8 + 8 + inner.len();
    let mut udp = vec![0u8; 8];
    udp[0..2].copy_from_slice(&50000u16.to_be_bytes());
    udp[2..4].copy_from_slice(&4789u16.to_be_bytes());
    udp[4..6].copy_from_slice(&(udp_len as u16).to_be_bytes());
    udp.extend_from_slice(&[0x08, 0, 0, 0, 0, 0, 1, 0]);
    udp.extend_from_slice(inner);
    if v6 {
        let (src, dst) = (
            [0x20, 1, 0xd, 0xb8, 0, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
            [0x20, 1, 0xd, 0xb8, 0, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
        );
        f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
        f.extend_from_slice(&(udp_len as u16).to_be_bytes());
        f.extend_from_slice(&[17, 64]);
        f.extend_from_slice(&src);
        f.extend_from_slice(&dst);
        let c = checksum::l4(std::net::Ipv6Addr::from(src).into(), std::net::Ipv6Addr::from(dst).into(), 17, &udp);
        udp[6..8].copy_from_slice(&c.to_be_bytes());
    } else {
        f.extend_from_slice(&[0x08, 0x00]);
        let mut ip = [0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0, 198, 19, 0, 2, 198, 19, 0, 1];
        ip[2..4].copy_from_slice(&((20 + udp_len) as u16).to_be_bytes());
        let c = checksum::checksum(&ip);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        f.extend_from_slice(&ip);
    }
    f.extend_from_slice(&udp);
    f
}

/// The routed bench's cases to connected subnets, by name: one flow (64 frames to one
/// destination), and 64 flows (a destination per frame) in IPv4 and IPv6. Frames go
/// from network a's pod to network b's hosts through the gateway of [`routed_worker`].
pub fn l3_connected_cases() -> Vec<(&'static str, Vec<Vec<u8>>)> {
    use std::net::{Ipv4Addr, Ipv6Addr};
    let src = Ipv4Addr::new(198, 18, 1, 10);
    let src6 = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 10);
    vec![
        ("ipv4_connected_1_flow", vec![ipv4_frame(src, Ipv4Addr::new(198, 18, 2, 10)); 64]),
        ("ipv4_connected_64_flows", (0..64).map(|i| ipv4_frame(src, Ipv4Addr::new(198, 18, 2, 10 + i))).collect()),
        (
            "ipv6_connected_64_flows",
            (0..64).map(|i| ipv6_frame(src6, Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 10 + i))).collect(),
        ),
    ]
}

/// `f` (an IPv4 or IPv6 frame from `ipv4_frame`/`ipv6_frame`) readdressed as the
/// remote pod's packet inside the tunnel: to `VTEP`, from `PEER_VTEP`.
fn inner(mut f: Vec<u8>) -> Vec<u8> {
    f[0..6].copy_from_slice(&VTEP);
    f[6..12].copy_from_slice(&PEER_VTEP);
    f
}

/// The tunnel bench's cases, by name, each a worker ready to poll: 64 flows of 64-byte
/// inner frames encapsulated to the peer or decapsulated from it, over IPv4 and IPv6
/// underlays, beside the same packets routed locally and to and from the peer in
/// direct-routing mode.
pub fn tunnel_cases() -> Vec<(&'static str, Worker)> {
    use std::net::{Ipv4Addr, Ipv6Addr};
    let pod4 = |h: u8| Ipv4Addr::new(198, 18, 1, h);
    let remote4 = |h: u8| Ipv4Addr::new(198, 18, 2, h);
    let pod6 = |h: u8| Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, u16::from(h));
    let remote6 = |h: u8| Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, u16::from(h));
    let to_remote4: Vec<_> = (0..64).map(|i| ipv4_frame(pod4(10), remote4(10 + i))).collect();
    let to_remote6: Vec<_> = (0..64).map(|i| ipv6_frame(pod6(10), remote6(10 + i))).collect();
    let from_remote4 = |v6: bool| -> Vec<_> {
        (0..64).map(|i| vxlan_frame(&inner(ipv4_frame(remote4(10 + i), pod4(10 + i))), v6)).collect()
    };
    let from_remote6 = |v6: bool| -> Vec<_> {
        (0..64).map(|i| vxlan_frame(&inner(ipv6_frame(remote6(10 + i), pod6(10 + i))), v6)).collect()
    };
    vec![
        // The l3 bench's network "b" is 198.18.2.0/24 with hosts 10-73 resolved: the same
        // packets, routed locally.
        ("baseline_routed_ipv4_64_flows", routed_worker(to_remote4.clone(), &[])),
        // The same routes to the peer in direct-routing mode: everything but the outer
        // headers, so the difference is what encapsulation and decapsulation cost.
        ("direct_out_ipv4_64_flows", tunnel_worker(to_remote4.clone(), 0, false, true)),
        (
            "direct_in_ipv4_64_flows",
            tunnel_worker(
                (0..64)
                    .map(|i| {
                        let mut f = ipv4_frame(remote4(10 + i), pod4(10 + i));
                        f[0..6].copy_from_slice(&UPLINK);
                        f
                    })
                    .collect(),
                1,
                false,
                true,
            ),
        ),
        ("encap_ipv4_in_ipv4_64_flows", tunnel_worker(to_remote4.clone(), 0, false, false)),
        ("encap_ipv6_in_ipv4_64_flows", tunnel_worker(to_remote6, 0, false, false)),
        ("encap_ipv4_in_ipv6_64_flows", tunnel_worker(to_remote4, 0, true, false)),
        ("decap_ipv4_in_ipv4_64_flows", tunnel_worker(from_remote4(false), 1, false, false)),
        ("decap_ipv6_in_ipv4_64_flows", tunnel_worker(from_remote6(false), 1, false, false)),
        ("decap_ipv4_in_ipv6_64_flows", tunnel_worker(from_remote4(true), 1, true, false)),
    ]
}

/// After a bench case: true if the worker ran (a case filtered out on the command line
/// did not), and then asserts that it measured what it says: no packet dropped, every
/// packet routed.
pub fn assert_all_routed(name: &str, w: &Worker) -> bool {
    let s = w.stats();
    if s.packets.get() == 0 {
        return false;
    }
    let drops: Vec<_> =
        switch_core::stats::DropReason::ALL.iter().filter(|r| s.drops(**r) > 0).map(|r| r.name()).collect();
    assert!(drops.is_empty(), "{name}: drops {drops:?}");
    assert_eq!(s.l3.routed.get(), s.packets.get(), "{name}: every packet routed");
    true
}
