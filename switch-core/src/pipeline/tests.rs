//! Pipeline tests over in-memory ports: a real worker, real tables, no kernel.

use crate::port::{MemoryPort, Port};
use crate::stats::DropReason;
use crate::tables::{
    Learner, NeighConfig, NeighEvent, NetworkId, NetworkSpec, Parts, PortId, PortMode, PortSpec, Publisher, Resolver,
    RouteSpec, Routes, TablesReader, Topology, Tunnel,
};
use crate::wire::{EtherType, EthernetAddress, VlanId};
use crate::worker::{Clock, IdlePolicy, Worker, WorkerConfig, WorkerQueues};
use crate::xsk::{HugepagePolicy, Umem, UmemConfig};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(super) struct Rig {
    pub worker: Worker,
    publisher: Publisher,
    pub(super) learner: Learner,
    queues: WorkerQueues,
    topo: Arc<Topology>,
    routes: Arc<Routes>,
    tunnel: Arc<Tunnel>,
    pub resolver: Resolver,
    t0: Instant,
    pub now_s: u32,
}

pub(super) fn mac(i: u8) -> EthernetAddress {
    EthernetAddress([0x02, 0, 0, 0, 0, i])
}

pub(super) fn access(id: u16, net: u16) -> PortSpec {
    PortSpec {
        id: PortId(id),
        name: format!("p{id}"),
        mode: PortMode::Access { network: NetworkId(net) },
        static_macs: vec![],
    }
}

pub(super) fn trunk(id: u16, vlans: &[(u16, u16)], native: Option<u16>) -> PortSpec {
    PortSpec {
        id: PortId(id),
        name: format!("t{id}"),
        mode: PortMode::Trunk {
            vlans: vlans.iter().map(|(v, n)| (VlanId::new(*v).unwrap(), NetworkId(*n))).collect(),
            native: native.map(NetworkId),
        },
        static_macs: vec![],
    }
}

/// Port ids of a [`Rig`] are below this.
const MAX_PORTS: usize = 32;

impl Rig {
    pub(super) fn new(networks: u16, ports: &[PortSpec]) -> Rig {
        let nets: Vec<_> = (0..networks)
            .map(|i| NetworkSpec { id: NetworkId(i), name: format!("n{i}"), ageing_s: 300, gateway: None })
            .collect();
        Rig::with(&nets, ports, &[])
    }

    /// Networks with gateways (or not), ports and routes; every port's MTU 1500.
    pub(super) fn with(nets: &[NetworkSpec], ports: &[PortSpec], routes: &[RouteSpec]) -> Rig {
        let topo = Arc::new(Topology::new(nets, ports, MAX_PORTS as u16).unwrap());
        let routes = Arc::new(Routes::build(&topo, routes).unwrap());
        let mut learner = Learner::new(1024);
        learner.sync_topology(&topo);
        let resolver = Resolver::new(NeighConfig::default());
        let publisher = Publisher::new(Parts {
            topology: topo.clone(),
            fdb: Arc::new(learner.build()),
            routes: routes.clone(),
            neigh: Arc::new(resolver.build()),
            tunnel: Arc::new(Tunnel::empty()),
        });
        let queues = WorkerQueues::new(1024);
        let umem = Umem::new(&UmemConfig { frames: 512, frame_size: 4096, hugepages: HugepagePolicy::Off }).unwrap();
        let cfg = WorkerConfig { id: 0, core: None, idle: IdlePolicy::Poll, max_ports: MAX_PORTS, pending: 64 };
        let mut worker = Worker::new(cfg, umem, TablesReader::new(publisher.handle()), queues.clone(), Clock::new());
        for p in ports {
            worker.add_port(p.id, Port::Memory(MemoryPort::new(&p.name).with_max_frame(1514)));
        }
        let tunnel = Arc::new(Tunnel::empty());
        Rig { worker, publisher, learner, queues, topo, routes, tunnel, resolver, t0: Instant::now(), now_s: 0 }
    }

    pub(super) fn mem(&mut self, port: u16) -> &mut MemoryPort {
        match self.worker.port_mut(PortId(port)).unwrap() {
            Port::Memory(m) => m,
            _ => unreachable!(),
        }
    }

    /// Receives `frame` on `port`, runs the worker once, and lets control learn.
    pub(super) fn send(&mut self, port: u16, frame: &[u8]) {
        self.mem(port).push_rx(frame);
        self.worker.poll_once(self.now_s);
        self.control();
    }

    /// One control tick (learning, ageing, neighbours), then one worker loop to act on
    /// what it published or asked for.
    pub(super) fn control(&mut self) {
        let now = self.t0 + Duration::from_secs(u64::from(self.now_s));
        let mut changed = self.learner.drain(&self.queues.learn, self.now_s, &self.topo);
        changed |= self.learner.age(self.now_s, &self.topo);
        while let Some(ev) = self.queues.neigh.pop() {
            match ev {
                NeighEvent::Miss(k) => {
                    if let Some(e) = self.resolver.miss(k, now) {
                        self.queues.emit.push(e).unwrap();
                    }
                }
                NeighEvent::Seen(k, mac) => changed |= self.resolver.seen(k, mac, now),
            }
        }
        let mut emits = Vec::new();
        changed |= self.resolver.tick(now, &mut emits);
        for e in emits {
            self.queues.emit.push(e).unwrap();
        }
        if changed {
            self.publish();
        }
        if changed || !self.queues.emit.is_empty() {
            self.worker.poll_once(self.now_s);
        }
    }

    fn publish(&mut self) {
        self.publisher.publish(Parts {
            topology: self.topo.clone(),
            fdb: Arc::new(self.learner.build()),
            routes: self.routes.clone(),
            neigh: Arc::new(self.resolver.build()),
            tunnel: self.tunnel.clone(),
        });
    }

    /// Publishes new routes (connected ones stay), as control does on a change.
    pub(super) fn set_routes(&mut self, routes: &[RouteSpec]) {
        self.routes = Arc::new(Routes::build(&self.topo, routes).unwrap());
        self.publish();
    }

    /// Publishes a new tunnel table.
    pub(super) fn set_tunnel(&mut self, tunnel: Tunnel) {
        self.tunnel = Arc::new(tunnel);
        self.publish();
    }

    pub(super) fn sent(&mut self, port: u16) -> Vec<Vec<u8>> {
        self.mem(port).take_sent()
    }

    pub(super) fn drops(&self, r: DropReason) -> u64 {
        self.worker.stats().drops(r)
    }
}

/// An Ethernet frame with an IPv4/UDP-shaped payload of `len` bytes total.
pub(super) fn frame(dst: EthernetAddress, src: EthernetAddress, len: usize) -> Vec<u8> {
    let mut f = vec![0u8; len.max(14)];
    f[0..6].copy_from_slice(&dst.0);
    f[6..12].copy_from_slice(&src.0);
    f[12..14].copy_from_slice(&0x88b5u16.to_be_bytes()); // local experimental EtherType
    for (i, b) in f[14..].iter_mut().enumerate() {
        *b = i as u8;
    }
    f
}

fn tagged(dst: EthernetAddress, src: EthernetAddress, vid: u16, len: usize) -> Vec<u8> {
    let mut f = frame(dst, src, len);
    let mut t = f[..12].to_vec();
    t.extend_from_slice(&EtherType::VLAN.0.to_be_bytes());
    t.extend_from_slice(&vid.to_be_bytes());
    t.extend_from_slice(&f.split_off(12));
    t
}

#[test]
fn unknown_unicast_floods_in_its_network_then_is_switched() {
    let mut r = Rig::new(2, &[access(0, 0), access(1, 0), access(2, 0), access(3, 1)]);
    let f = frame(mac(2), mac(1), 60);
    r.send(0, &f);
    assert_eq!(r.sent(1), vec![f.clone()], "flooded to port 1");
    assert_eq!(r.sent(2), vec![f.clone()], "flooded to port 2");
    assert!(r.sent(3).is_empty(), "never to another network");
    assert!(r.sent(0).is_empty(), "never back out of the ingress port");
    assert_eq!(r.worker.stats().ports[1].tx_flood.get(), 1);

    // The reply is switched to port 0 only: mac(1) was learned there.
    let reply = frame(mac(1), mac(2), 60);
    r.send(2, &reply);
    assert_eq!(r.sent(0), vec![reply]);
    assert!(r.sent(1).is_empty());
    // And now mac(2) is known behind port 2.
    r.send(0, &f);
    assert_eq!(r.sent(2), vec![f]);
    assert!(r.sent(1).is_empty());
    assert_eq!(r.worker.stats().ports[1].tx_flood.get(), 1, "no more flooding");
}

#[test]
fn broadcast_reaches_every_other_port_of_its_network_only() {
    let mut r = Rig::new(2, &[access(0, 0), access(1, 0), access(2, 1), access(3, 1)]);
    let b = frame(EthernetAddress::BROADCAST, mac(1), 42);
    r.send(0, &b);
    assert_eq!(r.sent(1), vec![b]);
    assert!(r.sent(2).is_empty() && r.sent(3).is_empty());
}

#[test]
fn destination_on_the_ingress_port_is_filtered() {
    let mut r = Rig::new(1, &[access(0, 0), access(1, 0)]);
    r.send(0, &frame(EthernetAddress::BROADCAST, mac(5), 60)); // learn mac(5) on port 0
    r.sent(1);
    r.send(0, &frame(mac(5), mac(6), 60));
    assert!(r.sent(1).is_empty());
    assert_eq!(r.drops(DropReason::SamePort), 1);
}

#[test]
fn moved_mac_follows_its_new_port_and_aged_entry_floods_again() {
    let mut r = Rig::new(1, &[access(0, 0), access(1, 0), access(2, 0)]);
    r.send(0, &frame(EthernetAddress::BROADCAST, mac(7), 60));
    r.send(2, &frame(mac(7), mac(8), 60));
    assert_eq!(r.sent(0).len(), 1);
    assert_eq!(r.sent(1).len(), 1, "only the broadcast");
    // mac(7) moves to port 1.
    r.send(1, &frame(EthernetAddress::BROADCAST, mac(7), 60));
    r.sent(0);
    r.sent(2);
    r.send(2, &frame(mac(7), mac(8), 60));
    assert_eq!(r.sent(1).len(), 1);
    assert!(r.sent(0).is_empty());
    // 300 s of silence later it has aged out: flooded again.
    r.now_s = 301;
    r.control();
    r.send(2, &frame(mac(7), mac(8), 60));
    assert_eq!(r.sent(0).len(), 1);
    assert_eq!(r.sent(1).len(), 1);
}

#[test]
fn trunk_tags_untags_and_isolates_vlans() {
    // net 0 = VLAN 100 on the trunk, net 1 = VLAN 200.
    let mut r = Rig::new(2, &[access(0, 0), access(1, 1), trunk(2, &[(100, 0), (200, 1)], None)]);
    let f = frame(EthernetAddress::BROADCAST, mac(1), 60);
    r.send(0, &f);
    assert_eq!(r.sent(2), vec![tagged(EthernetAddress::BROADCAST, mac(1), 100, 60)], "tag pushed");
    assert!(r.sent(1).is_empty(), "VLAN 200's port gets nothing");

    let t = tagged(EthernetAddress::BROADCAST, mac(9), 200, 60);
    r.send(2, &t);
    assert_eq!(r.sent(1), vec![frame(EthernetAddress::BROADCAST, mac(9), 60)], "tag popped");
    assert!(r.sent(0).is_empty());

    r.send(2, &tagged(EthernetAddress::BROADCAST, mac(9), 300, 60));
    assert_eq!(r.drops(DropReason::VlanNotAllowed), 1);
    r.send(2, &frame(EthernetAddress::BROADCAST, mac(9), 60));
    assert_eq!(r.drops(DropReason::UntaggedNotAllowed), 1);
    r.send(0, &tagged(EthernetAddress::BROADCAST, mac(1), 100, 60));
    assert_eq!(r.drops(DropReason::VlanNotAllowed), 2, "tagged frame on an access port");
}

#[test]
fn trunk_to_trunk_rewrites_the_vlan_id() {
    let mut r = Rig::new(1, &[trunk(0, &[(100, 0)], None), trunk(1, &[(300, 0)], None)]);
    let mut t = tagged(EthernetAddress::BROADCAST, mac(1), 100, 60);
    t[14] |= 0xa0; // PCP 5 survives the rewrite
    r.send(0, &t);
    let mut want = tagged(EthernetAddress::BROADCAST, mac(1), 300, 60);
    want[14] |= 0xa0;
    assert_eq!(r.sent(1), vec![want]);
}

#[test]
fn malformed_frames_are_counted_by_reason_and_forwarding_goes_on() {
    let mut r = Rig::new(1, &[access(0, 0), access(1, 0)]);
    let bc = EthernetAddress::BROADCAST;
    let with_type = |et: u16, l3: &[u8]| {
        let mut f = frame(bc, mac(1), 14);
        f[12..14].copy_from_slice(&et.to_be_bytes());
        f.extend_from_slice(l3);
        f
    };
    r.send(0, &[0xff; 10]);
    let mut ipv4 = vec![0x45, 0, 0, 200, 0, 0, 0, 0, 64, 17, 0, 0, 198, 18, 0, 1, 198, 18, 0, 2];
    r.send(0, &with_type(0x0800, &ipv4)); // total length 200, 20 bytes present
    ipv4[0] = 0x43; // IHL 3
    ipv4[3] = 20;
    r.send(0, &with_type(0x0800, &ipv4));
    r.send(0, &with_type(0x86dd, &[0x60, 0, 0, 0, 0, 8, 17, 64])); // IPv6 header cut short
    r.send(0, &with_type(0x0806, &[0, 1, 8, 0, 6, 4])); // ARP cut short
    r.send(0, &with_type(0x8100, &[0x00])); // VLAN tag cut short
    r.send(0, &with_type(0x88a8, &[0, 100, 0x81, 0, 0, 200, 8, 0])); // QinQ
    r.send(0, &frame(bc, EthernetAddress([0x01, 0, 0x5e, 0, 0, 1]), 60)); // multicast source
    assert!(r.sent(1).is_empty(), "nothing malformed got through");
    for (reason, n) in [
        (DropReason::Runt, 1),
        (DropReason::Ipv4Truncated, 1),
        (DropReason::Ipv4BadHeader, 1),
        (DropReason::Ipv6Truncated, 1),
        (DropReason::ArpTruncated, 1),
        (DropReason::VlanTruncated, 1),
        (DropReason::VlanUnsupported, 1),
        (DropReason::SourceMulticast, 1),
    ] {
        assert_eq!(r.drops(reason), n, "{reason:?}");
    }
    let good = frame(bc, mac(1), 60);
    r.send(0, &good);
    assert_eq!(r.sent(1), vec![good]);
    let acct = r.worker.account();
    assert!(acct.balanced() && acct.free == acct.total, "{acct}");
}

#[test]
fn oversized_frames_are_dropped_as_too_big() {
    let mut r = Rig::new(1, &[access(0, 0), access(1, 0)]);
    // The rig's ports carry 1514-byte frames: a full frame fits an access port, but not
    // a trunk once the tag is pushed.
    let mut r2 = Rig::new(1, &[access(0, 0), trunk(1, &[(5, 0)], None)]);
    r2.send(0, &frame(EthernetAddress::BROADCAST, mac(1), 1514));
    assert_eq!(r2.drops(DropReason::TooBig), 1);
    r.send(0, &frame(EthernetAddress::BROADCAST, mac(1), 1514));
    assert_eq!(r.sent(1).len(), 1);
    r.send(0, &frame(EthernetAddress::BROADCAST, mac(1), 1515));
    assert_eq!(r.drops(DropReason::TooBig), 1);
}

#[test]
fn every_frame_is_accounted_for_after_floods() {
    let ports: Vec<_> = (0..8).map(|i| access(i, 0)).collect();
    let mut r = Rig::new(1, &ports);
    for i in 0..200u8 {
        r.send(u16::from(i % 8), &frame(EthernetAddress::BROADCAST, mac(i), 100));
    }
    for p in 0..8 {
        assert_eq!(r.sent(p).len(), 175, "each port gets the 200 - 25 broadcasts it did not send");
    }
    let a = r.worker.account();
    assert!(a.balanced() && a.free == a.total, "{a}");
}

#[test]
fn floods_of_one_batch_each_go_by_their_own_network_and_tag() {
    // One batch from a trunk: floods of two networks, interleaved, so that each packet
    // finds the batch's flood targets worked out for the other network.
    let mut r = Rig::new(
        2,
        &[trunk(0, &[(100, 0), (200, 1)], None), access(1, 0), access(2, 1), trunk(3, &[(100, 0), (200, 1)], None)],
    );
    let bc = EthernetAddress::BROADCAST;
    let batch = [
        tagged(bc, mac(1), 100, 60),
        tagged(bc, mac(2), 200, 61),
        tagged(bc, mac(3), 100, 62),
        tagged(mac(9), mac(4), 200, 63), // unknown unicast
        tagged(mac(9), mac(5), 200, 64),
    ];
    for f in &batch {
        r.mem(0).push_rx(f);
    }
    r.worker.poll_once(0);
    assert_eq!(r.worker.stats().packets.get(), 5, "one batch");
    let untag = |f: &Vec<u8>| [&f[..12], &f[16..]].concat();
    let retag = |f: &Vec<u8>| f.clone();
    assert_eq!(r.sent(1), [&batch[0], &batch[2]].map(untag), "network 0, tag popped");
    assert_eq!(r.sent(2), [&batch[1], &batch[3], &batch[4]].map(untag), "network 1, tag popped");
    assert_eq!(r.sent(3), batch.iter().map(retag).collect::<Vec<_>>(), "both networks, each in its VLAN");
    assert!(r.sent(0).is_empty());
    assert_eq!(r.worker.stats().ports[3].tx_flood.get(), 5);
    let a = r.worker.account();
    assert!(a.balanced() && a.free == a.total, "{a}");
}

#[test]
fn a_flood_to_more_ports_than_a_plan_holds_reaches_them_all() {
    let ports: Vec<_> = (0..MAX_PORTS as u16).map(|i| access(i, 0)).collect();
    let mut r = Rig::new(1, &ports);
    let frames: Vec<_> = (0..4).map(|i| frame(EthernetAddress::BROADCAST, mac(i), 60 + usize::from(i))).collect();
    for f in &frames {
        r.mem(5).push_rx(f);
    }
    r.worker.poll_once(0);
    for p in 0..MAX_PORTS as u16 {
        let want = if p == 5 { vec![] } else { frames.clone() };
        assert_eq!(r.sent(p), want, "port {p}");
    }
    let a = r.worker.account();
    assert!(a.balanced() && a.free == a.total, "{a}");
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    /// A frame that is mostly garbage but often has a header a parser will look at:
    /// an EtherType from the interesting set, sometimes a VLAN tag, random lengths.
    fn frame_bytes() -> impl Strategy<Value = Vec<u8>> {
        let ethertypes = prop::sample::select(vec![0x0800u16, 0x86dd, 0x0806, 0x8100, 0x88a8, 0x88b5, 0x0000]);
        (prop::collection::vec(any::<u8>(), 0..300), ethertypes, any::<bool>(), 0u8..4).prop_map(
            |(mut b, et, tag, src)| {
                if b.len() >= 14 {
                    b[6..12].copy_from_slice(&[2, 0, 0, 0, 0, src]);
                    b[12..14].copy_from_slice(&et.to_be_bytes());
                    if tag && b.len() >= 18 {
                        b[12..14].copy_from_slice(&0x8100u16.to_be_bytes());
                        b[14..16].copy_from_slice(&100u16.to_be_bytes());
                        b[16..18].copy_from_slice(&et.to_be_bytes());
                    }
                }
                b
            },
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn any_bytes_are_forwarded_or_counted_never_a_crash(
            frames in prop::collection::vec((frame_bytes(), 0u16..3), 1..40)
        ) {
            let mut r = Rig::new(2, &[access(0, 0), access(1, 0), trunk(2, &[(100, 0)], Some(1))]);
            for (f, port) in &frames {
                r.send(*port, f);
            }
            let s = r.worker.stats();
            let drops: u64 = DropReason::ALL.iter().map(|d| s.drops(*d)).sum();
            let sent: u64 = (0..3).map(|p| r.sent(p).len() as u64).sum();
            prop_assert_eq!(s.packets.get(), frames.len() as u64);
            // Each frame is dropped, sent once, or flooded to up to two ports.
            prop_assert!(drops + sent >= frames.len() as u64);
            prop_assert!(sent <= 2 * frames.len() as u64);
            let a = r.worker.account();
            prop_assert!(a.balanced() && a.free == a.total, "{}", a);
        }
    }
}
