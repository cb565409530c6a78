//! Shared set-up for podswitch's benchmarks: a worker over in-memory ports with tables
//! already learned, so a benchmark measures the steady state a user would see.

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
        if learner.drain(&learn, 0) {
            publisher.publish(Parts::l2(topo.clone(), Arc::new(learner.build())));
        }
    }
    w
}
