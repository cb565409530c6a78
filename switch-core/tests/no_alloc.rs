//! Once started, the worker loop allocates nothing: a counting global allocator watches
//! thousands of poll loops that learn, switch, flood, tag and drop.
//!
//! The allocator is global to the test binary: it counts only on the thread that asks
//! (a thread-local flag), and the tests take `SERIAL` so that their counts never mix.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use switch_core::port::{MemoryPort, Port};
use switch_core::tables::{
    Learner, NetworkId, NetworkSpec, Parts, PortId, PortMode, PortSpec, Publisher, TablesReader, Topology,
};
use switch_core::wire::VlanId;
use switch_core::worker::{Clock, IdlePolicy, Worker, WorkerConfig, WorkerQueues};
use switch_core::xsk::{HugepagePolicy, Umem, UmemConfig};

struct Counting;

thread_local! {
    // Only the test thread's allocations count (libtest's own threads allocate too).
    // A const-initialised Cell needs no allocation to reach, so the allocator may read it.
    static COUNTING: core::cell::Cell<bool> = const { core::cell::Cell::new(false) };
}
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

fn counting() -> bool {
    COUNTING.try_with(|c| c.get()).unwrap_or(false)
}

// SAFETY: forwards to the system allocator unchanged; only counts.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if counting() {
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
        if counting() {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as ours.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs 5,000 poll loops over five seconds of the worker's clock, counting this
/// thread's allocations; returns the packets received and the allocations.
fn poll_counting(w: &mut Worker) -> (usize, usize) {
    ALLOCS.store(0, Ordering::SeqCst);
    COUNTING.with(|c| c.set(true));
    let mut packets = 0;
    for i in 0..5_000 {
        packets += w.poll_once(i / 1000);
    }
    COUNTING.with(|c| c.set(false));
    (packets, ALLOCS.load(Ordering::SeqCst))
}

fn frame(dst: [u8; 6], src: [u8; 6], len: usize) -> Vec<u8> {
    let mut f = vec![0u8; len];
    f[0..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&src);
    f[12..14].copy_from_slice(&0x88b5u16.to_be_bytes());
    f
}

#[test]
fn worker_loop_allocates_nothing_once_started() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
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
        if learner.drain(&learn, 0, &topo) {
            publisher.publish(Parts::l2(topo.clone(), Arc::new(learner.build())));
        }
    }
    w.poll_once(0);
    assert_eq!(learner.learned_len(), 3);

    let (packets, allocs) = poll_counting(&mut w);
    assert_eq!(allocs, 0, "the worker loop allocated");
    assert!(packets > 100_000, "it did work: {packets} packets");
    let s = w.stats();
    assert!(s.ports[2].tx_flood.get() > 0 && s.ports[1].tx_packets.get() > 0);
    assert!(s.drops(switch_core::stats::DropReason::Runt) > 0);
    let acct = w.account();
    assert!(acct.balanced(), "{acct}");
}

fn udp4(src_mac: [u8; 6], dst_mac: [u8; 6], src: [u8; 4], dst: [u8; 4], ttl: u8) -> Vec<u8> {
    sized_udp4(src_mac, dst_mac, src, dst, ttl, 32, true)
}

fn sized_udp4(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: [u8; 4],
    dst: [u8; 4],
    ttl: u8,
    len: usize,
    df: bool,
) -> Vec<u8> {
    let mut ip = etherparse::Ipv4Header::new(0, ttl, etherparse::IpNumber::UDP, src, dst).unwrap();
    ip.dont_fragment = df;
    let mut f = Vec::new();
    etherparse::PacketBuilder::ethernet2(src_mac, dst_mac)
        .ip(etherparse::IpHeaders::Ipv4(ip, Default::default()))
        .udp(1, 2)
        .write(&mut f, &vec![7; len])
        .unwrap();
    f
}

#[test]
fn routing_loop_allocates_nothing_once_started() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    use std::net::Ipv4Addr;
    use switch_core::tables::{Gateway, NeighKey, Resolver, Routes};
    let (gw_a, gw_b) = ([2, 0xaa, 0, 0, 0, 1], [2, 0xbb, 0, 0, 0, 1]);
    let gw = |mac: [u8; 6], n: u8| Gateway {
        mac: switch_core::wire::EthernetAddress(mac),
        v4: Some((Ipv4Addr::new(198, 18, n, 1), 24)),
        v6: None,
        router_advertisements: false,
    };
    let nets = [
        NetworkSpec { id: NetworkId(0), name: "a".into(), ageing_s: 300, gateway: Some(gw(gw_a, 1)) },
        NetworkSpec { id: NetworkId(1), name: "b".into(), ageing_s: 300, gateway: Some(gw(gw_b, 2)) },
    ];
    let (ma, mb) = ([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
    let port = |id: u16, net: u16, mac: [u8; 6]| PortSpec {
        id: PortId(id),
        name: format!("p{id}"),
        mode: PortMode::Access { network: NetworkId(net) },
        static_macs: vec![switch_core::wire::EthernetAddress(mac)],
    };
    let topo = Arc::new(Topology::new(&nets, &[port(0, 0, ma), port(1, 1, mb)], 8).unwrap());
    let mut learner = Learner::new(64);
    learner.sync_topology(&topo);
    let mut resolver = Resolver::new(Default::default());
    resolver
        .set_static(NeighKey::v4(NetworkId(0), Ipv4Addr::new(198, 18, 1, 10)), switch_core::wire::EthernetAddress(ma));
    resolver
        .set_static(NeighKey::v4(NetworkId(1), Ipv4Addr::new(198, 18, 2, 20)), switch_core::wire::EthernetAddress(mb));
    let publisher = Publisher::new(Parts {
        topology: topo.clone(),
        fdb: Arc::new(learner.build()),
        routes: Arc::new(Routes::build(&topo, &[]).unwrap()),
        neigh: Arc::new(resolver.build()),
        tunnel: Arc::new(switch_core::tables::Tunnel::empty()),
    });
    let queues = WorkerQueues::new(64);
    let umem = Umem::new(&UmemConfig { frames: 1024, frame_size: 4096, hugepages: HugepagePolicy::Off }).unwrap();
    let cfg = WorkerConfig { id: 0, core: None, idle: IdlePolicy::Poll, max_ports: 8, pending: 64 };
    let mut w = Worker::new(cfg, umem, TablesReader::new(publisher.handle()), queues.clone(), Clock::new());
    // Routed both ways, TTL 1 (time exceeded), no route (unreachable), an echo to the
    // gateway, and packets without DF too big for port 1 (three fragments each; a
    // third of a batch, more than port 1's queue holds).
    let mut echo = Vec::new();
    etherparse::PacketBuilder::ethernet2(ma, gw_a)
        .ipv4([198, 18, 1, 10], [198, 18, 1, 1], 64)
        .icmpv4_echo_request(1, 1)
        .write(&mut echo, &[1; 16])
        .unwrap();
    let a = vec![
        udp4(ma, gw_a, [198, 18, 1, 10], [198, 18, 2, 20], 64),
        udp4(ma, gw_a, [198, 18, 1, 10], [198, 18, 2, 20], 1),
        udp4(ma, gw_a, [198, 18, 1, 10], [10, 9, 9, 9], 64),
        echo,
        sized_udp4(ma, gw_a, [198, 18, 1, 10], [198, 18, 2, 20], 64, 1200, false),
        sized_udp4(ma, gw_a, [198, 18, 1, 10], [198, 18, 2, 20], 64, 1200, false),
    ];
    w.add_port(PortId(0), Port::Memory(MemoryPort::replaying("p0", a)));
    let b = vec![udp4(mb, gw_b, [198, 18, 2, 20], [198, 18, 1, 10], 64)];
    w.add_port(PortId(1), Port::Memory(MemoryPort::replaying("p1", b).with_max_frame(514)));
    w.poll_once(0);

    let (packets, allocs) = poll_counting(&mut w);
    assert_eq!(allocs, 0, "the routing loop allocated");
    assert!(packets > 100_000, "it did work: {packets} packets");
    let s = w.stats();
    assert!(s.l3.routed.get() > 50_000, "routed {}", s.l3.routed.get());
    assert!(s.l3.icmp_errors.get() > 0 && s.l3.echo_replies.get() > 0);
    assert!(s.l3.fragments.get() > 50_000, "fragments {}", s.l3.fragments.get());
    let drops = |r| s.drops[r as usize].get();
    use switch_core::stats::DropReason::{FragNeeded, FragNoFrame, TxRingFull};
    assert_eq!((drops(FragNeeded), drops(FragNoFrame), drops(TxRingFull)), (0, 0, 0));
    let acct = w.account();
    assert!(acct.balanced(), "{acct}");
}
