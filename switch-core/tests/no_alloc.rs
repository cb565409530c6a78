//! Once started, the worker loop allocates nothing: a counting global allocator watches
//! thousands of poll loops that learn, switch, flood, tag and drop.
//!
//! This file holds one test on purpose: the allocator is global to the test binary.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use switch_core::port::{MemoryPort, Port};
use switch_core::tables::{
    Learner, NetworkId, NetworkSpec, Parts, PortId, PortMode, PortSpec, Publisher, TablesReader, Topology,
};
use switch_core::wire::VlanId;
use switch_core::worker::{Clock, IdlePolicy, Worker, WorkerConfig, WorkerQueues};
use switch_core::xsk::{HugepagePolicy, Umem, UmemConfig};

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as ours.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as ours.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn frame(dst: [u8; 6], src: [u8; 6], len: usize) -> Vec<u8> {
    let mut f = vec![0u8; len];
    f[0..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&src);
    f[12..14].copy_from_slice(&0x88b5u16.to_be_bytes());
    f
}

#[test]
fn worker_loop_allocates_nothing_once_started() {
    let nets = [NetworkSpec { id: NetworkId(0), name: "n".into(), ageing_s: 300, gateway: None }];
    let ports = [
        PortSpec {
            id: PortId(0),
            name: "a".into(),
            mode: PortMode::Access { network: NetworkId(0) },
            static_macs: vec![],
        },
        PortSpec {
            id: PortId(1),
            name: "b".into(),
            mode: PortMode::Access { network: NetworkId(0) },
            static_macs: vec![],
        },
        PortSpec {
            id: PortId(2),
            name: "t".into(),
            mode: PortMode::Trunk { vlans: vec![(VlanId::new(10).unwrap(), NetworkId(0))], native: None },
            static_macs: vec![],
        },
    ];
    let topo = Arc::new(Topology::new(&nets, &ports, 8).unwrap());
    let mut learner = Learner::new(64);
    let mut publisher = Publisher::new(Parts::l2(topo.clone(), Arc::new(learner.build())));
    let queues = WorkerQueues::new(64);
    let learn = queues.learn.clone();
    let umem = Umem::new(&UmemConfig { frames: 1024, frame_size: 4096, hugepages: HugepagePolicy::Off }).unwrap();
    let cfg = WorkerConfig { id: 0, core: None, idle: IdlePolicy::Poll, max_ports: 8, pending: 64 };
    let mut w = Worker::new(cfg, umem, TablesReader::new(publisher.handle()), queues.clone(), Clock::new());
    let (ma, mb, mc) = ([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2], [2, 0, 0, 0, 0, 3]);
    // Port a: unicast to b (switched once learned), broadcast (flooded to b and the
    // trunk, tag pushed), unknown unicast (flooded), and a runt (dropped).
    let a = vec![frame(mb, ma, 60), frame([0xff; 6], ma, 60), frame([2, 9, 9, 9, 9, 9], ma, 1000), vec![0xff; 10]];
    w.add_port(PortId(0), Port::Memory(MemoryPort::replaying("a", a)));
    w.add_port(PortId(1), Port::Memory(MemoryPort::replaying("b", vec![frame(ma, mb, 64)])));
    let mut tagged = frame(ma, mc, 64);
    tagged.splice(12..12, [0x81, 0x00, 0x00, 10]);
    w.add_port(PortId(2), Port::Memory(MemoryPort::replaying("t", vec![tagged])));

    // Start-up: the first loops learn every MAC; control publishes; the worker takes
    // the new snapshot.
    for _ in 0..4 {
        w.poll_once(0);
        if learner.drain(&learn, 0) {
            publisher.publish(Parts::l2(topo.clone(), Arc::new(learner.build())));
        }
    }
    w.poll_once(0);
    assert_eq!(learner.learned_len(), 3);

    COUNTING.store(true, Ordering::SeqCst);
    let mut packets = 0;
    for i in 0..5_000 {
        packets += w.poll_once(i / 1000);
    }
    COUNTING.store(false, Ordering::SeqCst);

    assert_eq!(ALLOCS.load(Ordering::SeqCst), 0, "the worker loop allocated");
    assert!(packets > 100_000, "it did work: {packets} packets");
    let s = w.stats();
    assert!(s.ports[2].tx_flood.get() > 0 && s.ports[1].tx_packets.get() > 0);
    assert!(s.drops(switch_core::stats::DropReason::Runt) > 0);
    let acct = w.account();
    assert!(acct.balanced(), "{acct}");
}
