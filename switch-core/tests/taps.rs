//! The operator's taps on a real worker: a trace records each stage's decision for the
//! next packets, a capture copies a port's frames in both directions, and both stop by
//! themselves or when told.

use std::sync::Arc;
use switch_core::debug::Stage;
use switch_core::pipeline::Next;
use switch_core::port::{MemoryPort, Port};
use switch_core::stats::DropReason;
use switch_core::tables::{
    Learner, NetworkId, NetworkSpec, Parts, PortId, PortMode, PortSpec, Publisher, TablesReader, Topology,
};
use switch_core::worker::{Clock, IdlePolicy, Worker, WorkerConfig, WorkerQueues};
use switch_core::xsk::{HugepagePolicy, Umem, UmemConfig};

fn frame(dst: [u8; 6], src: [u8; 6], len: usize) -> Vec<u8> {
    let mut f = vec![0u8; len];
    f[0..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&src);
    f[12..14].copy_from_slice(&0x88b5u16.to_be_bytes());
    f
}

#[test]
fn trace_and_capture_see_what_the_worker_does() {
    let nets = [NetworkSpec { id: NetworkId(0), name: "n".into(), ageing_s: 300, gateway: None }];
    let port = |id: u16, name: &str| PortSpec {
        id: PortId(id),
        name: name.into(),
        mode: PortMode::Access { network: NetworkId(0) },
        static_macs: vec![],
    };
    let topo = Arc::new(Topology::new(&nets, &[port(0, "a"), port(1, "b")], 4).unwrap());
    let learner = Learner::new(64);
    let publisher = Publisher::new(Parts::l2(topo, Arc::new(learner.build())));
    let queues = WorkerQueues::new(64);
    let taps = queues.taps.clone();
    let umem = Umem::new(&UmemConfig { frames: 512, frame_size: 4096, hugepages: HugepagePolicy::Off }).unwrap();
    let cfg = WorkerConfig { id: 0, core: None, idle: IdlePolicy::Poll, max_ports: 4, pending: 16 };
    let mut w = Worker::new(cfg, umem, TablesReader::new(publisher.handle()), queues, Clock::new());
    let (ma, mb) = ([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
    // From a: a unicast to b (unknown yet: flooded to b) and a runt.
    let mut a = MemoryPort::new("a");
    a.push_rx(&frame(mb, ma, 60));
    a.push_rx(&[0xff; 10]);
    a.push_rx(&frame(mb, ma, 70));
    w.add_port(PortId(0), Port::Memory(a));
    w.add_port(PortId(1), Port::Memory(MemoryPort::new("b")));

    taps.trace.start(2);
    taps.capture.start(PortId(1));
    w.poll_once(0);
    let t1 = taps.trace.pop().expect("first packet traced");
    assert_eq!(t1.port, PortId(0));
    assert_eq!(t1.len, 60);
    assert_eq!(&t1.head[..6], &mb);
    let steps: Vec<_> = t1.steps().iter().map(|s| (s.stage, s.next)).collect();
    assert_eq!(steps, [(Stage::Classify, Next::L2), (Stage::L2, Next::Flood)]);
    let t2 = taps.trace.pop().expect("second packet traced");
    assert_eq!(t2.steps()[0].next, Next::Drop(DropReason::Runt));
    assert!(taps.trace.pop().is_none(), "only the two asked for");
    assert!(!taps.trace.active());

    // Port b's capture saw the two flooded frames leave, with their bytes.
    let c1 = taps.capture.pop().expect("captured");
    assert!(c1.tx);
    assert_eq!(c1.orig_len, 60);
    assert_eq!(&c1.data[..12], &frame(mb, ma, 60)[..12]);
    assert_eq!(taps.capture.pop().map(|c| c.orig_len), Some(70));
    assert!(taps.capture.pop().is_none());

    // Stopped, it records nothing more.
    taps.capture.stop();
    if let Some(Port::Memory(p)) = w.port_mut(PortId(0)) {
        p.push_rx(&frame(mb, ma, 80));
    }
    w.poll_once(0);
    assert!(taps.capture.pop().is_none());
    assert_eq!(w.stats().ports[1].tx_packets.get(), 3, "and forwarding went on");
}
