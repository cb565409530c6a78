//! podswitch-pktgen against its own sink, through veths and known devices under test:
//! exact counts at a low rate, injected loss and reordering detected, an RFC 2544
//! search that finds a known rate cap, and a pcap replayed byte for byte.

use perf::pktgen::afxdp::{self, XskLink};
use perf::pktgen::gen::{Generator, RunOpts};
use perf::pktgen::search::{self, Rig, SearchOpts};
use perf::pktgen::sink::Sink;
use perf::pktgen::stream::{signature, Stream, IMIX};
use podswitch_tests::{root_or_skip, NetNs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use switch_core::wire::EthernetAddress;

/// A veth from `a` (`a_if`) to `b` (`b_if`), both up, without IPv6 chatter.
fn veth(a: &NetNs, a_if: &str, b: &NetNs, b_if: &str) {
    for ns in [a, b] {
        ns.run("sysctl", &["-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"]).unwrap();
    }
    a.ip(&["link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns", b.name()]).unwrap();
    a.ip(&["link", "set", a_if, "up"]).unwrap();
    b.ip(&["link", "set", b_if, "up"]).unwrap();
}

/// Generator, DUT and sink namespaces: gen0 ── dut0 [DUT] dut1 ── sink0.
fn three_hops() -> (NetNs, NetNs, NetNs) {
    let (g, d, s) =
        (NetNs::new("ps-pg-gen").unwrap(), NetNs::new("ps-pg-dut").unwrap(), NetNs::new("ps-pg-sink").unwrap());
    veth(&g, "gen0", &d, "dut0");
    veth(&d, "dut1", &s, "sink0");
    (g, d, s)
}

fn stream(flows: u32, sizes: Vec<usize>, v6: bool) -> Stream {
    let (src_ip, dst_ip) = if v6 {
        ("2001:db8::1".parse().unwrap(), "2001:db8::2".parse().unwrap())
    } else {
        ("198.18.0.1".parse().unwrap(), "198.18.0.2".parse().unwrap())
    };
    Stream {
        src_mac: EthernetAddress([2, 0, 0, 0, 0, 1]),
        dst_mac: EthernetAddress([2, 0, 0, 0, 0, 2]),
        src_ip,
        dst_ip,
        src_port: 1024,
        dst_port: 9,
        flows,
        sizes,
        vxlan: None,
    }
}

fn paced(rate_pps: u64, count: u64) -> RunOpts {
    RunOpts { rate_pps, count: Some(count), seconds: 10.0, batch: 64, progress: false, core: None }
}

#[test]
fn the_sink_counts_exactly_what_was_sent_per_flow_with_latency() {
    if !root_or_skip() {
        return;
    }
    for (v6, sizes) in [(false, IMIX.to_vec()), (true, vec![82, 1518, 300])] {
        let (g, s) = (NetNs::new("ps-pg-gen").unwrap(), NetNs::new("ps-pg-sink").unwrap());
        veth(&g, "gen0", &s, "sink0");
        let sink = Sink::attach("sink0", Some(s.name())).unwrap();
        let st = stream(16, sizes, v6);
        let gen = Generator::new(&st).unwrap();
        let sent = gen.run("gen0", Some(g.name()), &paced(50_000, 20_000)).unwrap();
        assert_eq!(sent.frames, 20_000, "the count stops the run");
        assert_eq!(sent.wire_bytes, st.wire_bytes(20_000));
        std::thread::sleep(Duration::from_millis(200));
        let r = sink.read().unwrap();
        assert_eq!((r.signed, r.unique()), (20_000, 20_000), "IPv6: {v6}");
        assert_eq!(r.flows.len(), 16);
        for f in &r.flows {
            assert_eq!((f.packets, f.top, f.missing()), (1250, 1250, 0), "flow {}", f.flow);
            assert_eq!((f.duplicates, f.reordered, f.late), (0, 0, 0), "flow {}", f.flow);
        }
        assert_eq!(r.sum(|f| f.bytes), st.wire_bytes(20_000) - 4 * 20_000, "bytes without FCS");
        let l = &r.latency;
        assert_eq!(l.count, 20_000, "every frame timed");
        assert!(l.min_ns > 0, "a frame takes time to cross");
        assert!(
            l.min_ns <= l.p50_ns && l.p50_ns <= l.p99_ns && l.p99_ns <= l.p999_ns && l.p999_ns <= l.max_ns,
            "{l:?}"
        );
        // At 50 kpps the generator paced itself: 20,000 frames took about 0.4 s.
        assert!(sent.rate_pps < 60_000.0, "paced, not flat out: {}", sent.rate_pps);
    }
}

#[test]
fn the_counting_sinks_count_every_frame_in_xdp_and_at_tc() {
    if !root_or_skip() {
        return;
    }
    for tc in [false, true] {
        let (g, s) = (NetNs::new("ps-pg-gen").unwrap(), NetNs::new("ps-pg-sink").unwrap());
        veth(&g, "gen0", &s, "sink0");
        let sink = if tc {
            // GRO gives the veth the NAPI that frames sent with XDP need; the skbs it
            // builds then reach tc.
            s.run("ethtool", &["-K", "sink0", "gro", "on"]).unwrap();
            Sink::attach_counting_tc("sink0", Some(s.name())).unwrap()
        } else {
            Sink::attach_counting("sink0", Some(s.name())).unwrap()
        };
        let gen = Generator::new(&stream(4, vec![64, 1518], false)).unwrap();
        let sent = gen.run("gen0", Some(g.name()), &paced(50_000, 10_000)).unwrap();
        assert_eq!(sent.frames, 10_000);
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(sink.read().unwrap().frames, 10_000, "tc: {tc}");
        sink.clear().unwrap();
        assert_eq!(sink.read().unwrap().frames, 0);
    }
}

/// A device under test in `ns`: AF_XDP from `rx` to `tx` that drops every 100th
/// signed frame and sends signed frames 500 and 501 in swapped order, until `stop`.
fn lossy_dut(ns: &NetNs, rx: &str, tx: &str, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    let mut rx = XskLink::open(rx, Some(ns.name()), true).unwrap();
    let mut tx = XskLink::open(tx, Some(ns.name()), false).unwrap();
    std::thread::spawn(move || {
        let (mut n, mut held): (u64, Option<Vec<u8>>) = (0, None);
        // Acquire: pairs with the test's Release store.
        while !stop.load(Ordering::Acquire) {
            let mut out: Vec<Vec<u8>> = Vec::new();
            rx.recv(Duration::from_millis(10), |f| {
                if signature(f).is_none() {
                    return;
                }
                let i = n;
                n += 1;
                match i {
                    _ if i % 100 == 99 => {}
                    500 => held = Some(f.to_vec()),
                    501 => {
                        out.push(f.to_vec());
                        out.extend(held.take());
                    }
                    _ => out.push(f.to_vec()),
                }
            });
            let mut sent = 0;
            while sent < out.len() {
                let batch: Vec<&[u8]> = out[sent..].iter().map(Vec::as_slice).collect();
                sent += tx.send(&batch);
            }
        }
        tx.flush(Duration::from_secs(1));
        n
    })
}

#[test]
fn the_sink_detects_loss_and_reordering_behind_a_lossy_dut() {
    if !root_or_skip() {
        return;
    }
    let (g, d, s) = three_hops();
    let sink = Sink::attach("sink0", Some(s.name())).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let dut = lossy_dut(&d, "dut0", "dut1", stop.clone());
    let gen = Generator::new(&stream(1, vec![128], false)).unwrap();
    let sent = gen.run("gen0", Some(g.name()), &paced(20_000, 10_000)).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    // Release: the DUT sees the stop after its last frame.
    stop.store(true, Ordering::Release);
    assert_eq!(dut.join().unwrap(), 10_000, "the DUT saw every frame");
    let r = sink.read().unwrap();
    let f = r.flows[0];
    assert_eq!(sent.frames - r.unique(), 100, "every 100th frame lost");
    assert_eq!(f.missing(), 99, "lost below the highest sequence number (the 100th lost is the last)");
    assert_eq!((f.reordered, f.duplicates, f.late), (1, 0, 0), "one swap");
    assert_eq!(r.latency.count, 9_900);
}

#[test]
fn the_ndr_search_finds_a_rate_capped_devices_limit() {
    if !root_or_skip() {
        return;
    }
    let (g, d, s) = three_hops();
    // The DUT: a Linux bridge whose egress is capped by a token bucket to 24 Mbit/s,
    // 50,000 frames per second of 60 bytes (what tbf counts of a 64-byte frame), with
    // a small queue so that a rate above the cap loses frames within a trial. The
    // bridge's receive work runs on the generator's core; well below its capacity.
    d.ip(&["link", "add", "br0", "type", "bridge"]).unwrap();
    for i in ["dut0", "dut1"] {
        d.ip(&["link", "set", i, "master", "br0"]).unwrap();
    }
    d.ip(&["link", "set", "br0", "up"]).unwrap();
    // GRO gives the veth a NAPI, which it needs to take the generator's XDP frames.
    d.run("ethtool", &["-K", "dut0", "gro", "on"]).unwrap();
    d.run("tc", &["qdisc", "add", "dev", "dut1", "root", "tbf", "rate", "24mbit", "burst", "16kb", "limit", "16kb"])
        .unwrap();
    let sink = Sink::attach("sink0", Some(s.name())).unwrap();
    let gen = Generator::new(&stream(4, vec![64], false)).unwrap();
    let rig = Rig { gen: &gen, tx_dev: "gen0", tx_netns: Some(g.name()), sink: &sink, batch: 64, core: None };
    let opts = SearchOpts { trial_seconds: 1.0, max_pps: Some(200_000), resolution: 0.02, pdr_loss: 0.005, rounds: 1 };
    let mut trials = 0;
    let r = search::search(&rig, &opts, &mut |t| {
        trials += 1;
        eprintln!("offered {} sent {:.0} lost {}", t.offered_pps, t.sent.rate_pps, t.lost);
    })
    .unwrap();
    assert!((42_500.0..=51_500.0).contains(&r.ndr_pps), "NDR {} near the 50,000 cap", r.ndr_pps);
    assert!(r.pdr_pps >= r.ndr_pps && r.pdr_pps <= 55_000.0, "PDR {} at or just above NDR", r.pdr_pps);
    assert!(trials <= 20, "converged in {trials} trials");
    assert_eq!(r.latency.len(), 3, "latency at 10, 50 and 90% of NDR");
    for (_, t) in &r.latency {
        assert_eq!(t.lost, 0, "below NDR nothing is lost");
        assert!(t.latency.count > 0 && t.latency.min_ns <= t.latency.p50_ns && t.latency.p50_ns <= t.latency.max_ns);
    }
}

#[test]
fn a_pcap_replays_byte_exact() {
    if !root_or_skip() {
        return;
    }
    let (g, s) = (NetNs::new("ps-pg-gen").unwrap(), NetNs::new("ps-pg-sink").unwrap());
    veth(&g, "gen0", &s, "sink0");
    // 300 frames of every kind and size: UDP over IPv4 and IPv6, ARP, odd EtherTypes,
    // 60 to 1514 bytes, the payload's bytes varied.
    let mut x: u32 = 12345;
    let frames: Vec<Vec<u8>> = (0..300)
        .map(|i| {
            let len = [60usize, 61, 128, 590, 1000, 1514][i % 6];
            let mut f = vec![0u8; len];
            for b in f.iter_mut() {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                *b = (x >> 16) as u8;
            }
            f[..6].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
            f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
            let ethertype: [u8; 2] = [[0x08, 0x00], [0x86, 0xdd], [0x08, 0x06], [0x88, 0xb5]][i % 4];
            f[12..14].copy_from_slice(&ethertype);
            f[14] = if i % 4 == 0 { 0x45 } else { f[14] };
            f
        })
        .collect();
    let dir = std::env::temp_dir().join(format!("ps-pcap-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("in.pcap");
    afxdp::write_pcap(&file, &frames.iter().map(|f| (Duration::ZERO, f.clone())).collect::<Vec<_>>()).unwrap();
    let read = afxdp::read_pcap(&file).unwrap();
    assert_eq!(read, frames, "the pcap holds the frames");

    let mut capture = XskLink::open("sink0", Some(s.name()), true).unwrap();
    let catcher = std::thread::spawn(move || afxdp::capture(&mut capture, 600, 5.0));
    let mut link = XskLink::open("gen0", Some(g.name()), false).unwrap();
    let sent = afxdp::replay(&mut link, &read, 2, 20_000, 5.0).unwrap();
    assert_eq!(sent.frames, 600);
    let got: Vec<Vec<u8>> = catcher.join().unwrap().into_iter().map(|(_, f)| f).collect();
    let expected: Vec<Vec<u8>> = frames.iter().chain(&frames).cloned().collect();
    assert_eq!(got.len(), expected.len(), "every frame arrived");
    for (i, (a, b)) in got.iter().zip(&expected).enumerate() {
        assert_eq!(a, b, "frame {i} byte for byte, in order");
    }
    let out = dir.join("out.pcap");
    afxdp::write_pcap(&out, &got.iter().map(|f| (Duration::ZERO, f.clone())).collect::<Vec<_>>()).unwrap();
    assert_eq!(afxdp::read_pcap(&out).unwrap(), expected);
    let _ = std::fs::remove_dir_all(&dir);
}
