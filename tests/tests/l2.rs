//! L2 switching end to end: pods in namespaces, the real podswitchd, AF_XDP on veths.

use podswitch_tests::raw::{frame, mac, RawSocket, TEST_ETHERTYPE};
use podswitch_tests::{root_or_skip, worker_core, Node, Pod};
use std::time::Duration;

fn config(networks: &[(&str, u32)], ports: &[(&str, &str)]) -> String {
    let mut c =
        format!("[dataplane]\ncores = [{}]\nidle = \"backoff\"\nring_size = 512\nhugepages = \"off\"\n", worker_core());
    for (n, ageing) in networks {
        c += &format!("[[networks]]\nname = \"{n}\"\nageing_s = {ageing}\n");
    }
    for (p, n) in ports {
        c += &format!("[[ports]]\nname = \"{p}\"\nnetwork = \"{n}\"\n");
    }
    c
}

fn pods(node: &Node, n: usize, mtu: u32) -> Vec<Pod> {
    (0..n)
        .map(|i| {
            let v4 = format!("198.18.0.{}", i + 1);
            let v6 = format!("2001:db8::{}", i + 1);
            node.pod(&format!("pod{i}"), Some(&v4), Some(&v6), mtu, 1).unwrap()
        })
        .collect()
}

#[test]
fn two_and_three_pods_ping_each_other_over_ipv4_and_ipv6() {
    if !root_or_skip() {
        return;
    }
    for n in [2, 3] {
        let mut node = Node::new("ps-ping").unwrap();
        let pods = pods(&node, n, 1500);
        let ports: Vec<_> = (0..n).map(|i| (format!("pod{i}"), "net")).collect();
        let ports: Vec<_> = ports.iter().map(|(p, n)| (p.as_str(), *n)).collect();
        node.start(&config(&[("net", 300)], &ports)).unwrap();
        for a in 0..n {
            for b in 0..n {
                if a == b {
                    continue;
                }
                for dst in [pods[b].v4.as_ref().unwrap(), pods[b].v6.as_ref().unwrap()] {
                    assert!(pods[a].ping(dst, 3).unwrap(), "pod{a} -> {dst} ({n} pods)");
                }
            }
        }
        let m = node.metrics().unwrap();
        for i in 0..n {
            assert!(m.port(&format!("pod{i}"), "rx_packets") >= 6, "counters move");
        }
    }
}

#[test]
fn ten_thousand_udp_datagrams_of_mixed_sizes_arrive_byte_exact() {
    if !root_or_skip() {
        return;
    }
    // 3506 is the largest MTU native XDP allows on a veth peer.
    let mtu = 3506;
    let mut node = Node::new("ps-udp").unwrap();
    let pods = pods(&node, 2, mtu);
    node.start(&config(&[("net", 300)], &[("pod0", "net"), ("pod1", "net")])).unwrap();
    // Resolve neighbours first so no datagram waits on ARP/ND.
    assert!(pods[0].ping(pods[1].v4.as_ref().unwrap(), 1).unwrap());
    assert!(pods[0].ping(pods[1].v6.as_ref().unwrap(), 1).unwrap());
    podswitch_tests::udp_exact(&pods[0], &pods[1], pods[1].v4.as_ref().unwrap(), mtu as usize - 28, 10_000);
    podswitch_tests::udp_exact(&pods[1], &pods[0], pods[0].v6.as_ref().unwrap(), mtu as usize - 48, 10_000);
    let m = node.metrics().unwrap();
    assert!(m.port("pod1", "tx_packets") >= 10_000);
    // The kernel's own socket counters are exported for every port and worker.
    for c in ["rx_dropped", "rx_ring_full", "rx_fill_ring_empty", "rx_invalid_descs", "tx_invalid_descs"] {
        for p in ["pod0", "pod1"] {
            assert_eq!(m.count(&format!("podswitch_port_xsk_{c}_total"), &[("port", p)]), 1, "{c} of {p}");
        }
    }
    assert_eq!(m.sum("podswitch_port_xsk_rx_invalid_descs_total", &[]), 0);
    assert!(m.port("pod1", "tx_bytes") >= 10_000 * 60);
    assert_eq!(m.drops("too_big"), 0);
}

/// A gratuitous-ARP-style broadcast from `src_mac`/`ip`.
fn arp_broadcast(src_mac: [u8; 6], ip: [u8; 4], target: [u8; 4]) -> Vec<u8> {
    let mut arp = vec![0, 1, 8, 0, 6, 4, 0, 1];
    arp.extend_from_slice(&src_mac);
    arp.extend_from_slice(&ip);
    arp.extend_from_slice(&[0; 6]);
    arp.extend_from_slice(&target);
    frame([0xff; 6], src_mac, 0x0806, &arp)
}

#[test]
fn broadcast_reaches_its_network_and_no_other() {
    if !root_or_skip() {
        return;
    }
    let mut node = Node::new("ps-bcast").unwrap();
    let p: Vec<Pod> = (0..4).map(|i| node.pod(&format!("pod{i}"), None, None, 1500, 1).unwrap()).collect();
    node.start(&config(
        &[("red", 300), ("blue", 300)],
        &[("pod0", "red"), ("pod1", "red"), ("pod2", "red"), ("pod3", "blue")],
    ))
    .unwrap();
    let socks: Vec<_> = p.iter().map(|p| RawSocket::open(&p.ns, "eth0").unwrap()).collect();
    let src = [0x02, 0xaa, 0, 0, 0, 1];
    let f = arp_broadcast(src, [198, 18, 0, 1], [198, 18, 0, 99]);
    socks[0].send(&f).unwrap();
    let is_ours = |x: &[u8]| x.len() >= 42 && x[12..14] == [8, 6] && x[6..12] == src;
    for (i, s) in socks.iter().enumerate().skip(1) {
        let got = s.recv_matching(Duration::from_millis(500), is_ours);
        let want = usize::from(i != 3);
        assert_eq!(got.len(), want, "pod{i} received {} copies", got.len());
        if want == 1 {
            assert_eq!(got[0][..42], f[..], "the ARP arrives unchanged");
        }
    }
    assert_eq!(node.metrics().unwrap().port("pod3", "tx_packets"), 0, "blue saw nothing from red");
}

#[test]
fn unknown_unicast_floods_until_learned_and_again_after_ageing() {
    if !root_or_skip() {
        return;
    }
    let mut node = Node::new("ps-flood").unwrap();
    let p: Vec<Pod> = (0..3).map(|i| node.pod(&format!("pod{i}"), None, None, 1500, 1).unwrap()).collect();
    node.start(&config(&[("net", 2)], &[("pod0", "net"), ("pod1", "net"), ("pod2", "net")])).unwrap();
    let s: Vec<_> = p.iter().map(|p| RawSocket::open(&p.ns, "eth0").unwrap()).collect();
    let (ma, mx) = ([0x02, 0xaa, 0, 0, 0, 1], [0x02, 0xbb, 0, 0, 0, 2]);
    let to_x = frame(mx, ma, TEST_ETHERTYPE, &[1; 46]);
    let ours = |f: &[u8]| f.len() >= 14 && f[12..14] == TEST_ETHERTYPE.to_be_bytes() && f[0..6] == mx;
    let copies = |s: &RawSocket| s.recv_matching(Duration::from_millis(400), ours).len();

    // Unknown: both other ports get it.
    s[0].send(&to_x).unwrap();
    assert_eq!((copies(&s[1]), copies(&s[2])), (1, 1), "flooded while unknown");
    let flood_before = node.metrics().unwrap().port("pod1", "tx_flood_packets");
    assert!(flood_before >= 1);

    // mx speaks from pod2 and is learned there.
    s[2].send(&frame(ma, mx, TEST_ETHERTYPE, &[2; 46])).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    for _ in 0..3 {
        s[0].send(&to_x).unwrap();
    }
    assert_eq!((copies(&s[1]), copies(&s[2])), (0, 3), "switched to pod2 only");
    let m = node.metrics().unwrap();
    assert_eq!(m.port("pod1", "tx_flood_packets"), flood_before, "pod1 got no more floods");
    assert!(m.sum("podswitch_fdb_entries", &[]) >= 2);

    // Ageing is 2 s: after 4 s of silence from mx it is flooded again.
    std::thread::sleep(Duration::from_secs(4));
    s[0].send(&to_x).unwrap();
    assert_eq!((copies(&s[1]), copies(&s[2])), (1, 1), "flooded again after ageing");
}

const TRUNK: &str = "vlans = [{ vid = 100, network = \"red\" }, { vid = 200, network = \"blue\" }]";

#[test]
fn trunk_carries_two_vlans_isolated_from_each_other() {
    if !root_or_skip() {
        return;
    }
    // Two switches joined by a trunk (VLAN 100 = red, 200 = blue), a red and a blue
    // pod on each, all four in one IPv4 subnet: only VLAN isolation keeps red and blue
    // apart. (This kernel has neither 8021q nor VLAN-aware bridges, so the far end of
    // the trunk is another podswitch; a sniffer port checks the tags on the wire.)
    let mut a = Node::new("ps-trunka").unwrap();
    let mut b = Node::new("ps-trunkb").unwrap();
    let red_a = a.pod("red", Some("198.18.1.1"), None, 1500, 1).unwrap();
    let blue_a = a.pod("blue", Some("198.18.1.2"), None, 1500, 1).unwrap();
    let red_b = b.pod("red", Some("198.18.1.11"), None, 1500, 1).unwrap();
    let blue_b = b.pod("blue", Some("198.18.1.12"), None, 1500, 1).unwrap();
    let sniff = a.pod("sniff", None, None, 1500, 1).unwrap();
    // The trunk: a veth from node a to node b.
    podswitch_tests::pod_veth(Some(&a.ns), "trunk", &b.ns, "trunk", 1).unwrap();
    b.ns.run("sysctl", &["-qw", "net.ipv6.conf.trunk.disable_ipv6=1"]).unwrap();
    for (node, sniffer) in [(&mut a, true), (&mut b, false)] {
        let mut cfg = config(&[("red", 300), ("blue", 300)], &[("red", "red"), ("blue", "blue")]);
        cfg += &format!("[[ports]]\nname = \"trunk\"\n{TRUNK}\n");
        if sniffer {
            cfg += &format!("[[ports]]\nname = \"sniff\"\n{TRUNK}\n");
        }
        node.start(&cfg).unwrap();
    }

    assert!(red_a.ping("198.18.1.11", 3).unwrap(), "red reaches red across the trunk");
    assert!(blue_b.ping("198.18.1.2", 3).unwrap(), "blue reaches blue across the trunk");
    assert!(!red_a.ping_once("198.18.1.12").unwrap(), "red must not reach the remote blue");
    assert!(!red_b.ping_once("198.18.1.2").unwrap(), "red must not reach the local blue");
    assert!(!blue_a.ping_once("198.18.1.1").unwrap(), "blue must not reach red");

    // On the wire: a broadcast from red leaves the trunk ports tagged 100, blue's 200.
    let s = podswitch_tests::raw::RawSocket::open(&sniff.ns, "eth0").unwrap();
    let src = [0x02, 0xcc, 0, 0, 0, 1];
    let sender = podswitch_tests::raw::RawSocket::open(&red_a.ns, "eth0").unwrap();
    sender.send(&frame([0xff; 6], src, TEST_ETHERTYPE, &[7; 46])).unwrap();
    let got = s.recv_matching(Duration::from_millis(500), |f| f.len() >= 18 && f[6..12] == src);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0][12..18], [0x81, 0x00, 0x00, 100, 0x88, 0xb5], "802.1Q tag with VID 100");
    // And a frame the sniffer sends tagged 200 arrives untagged at blue only.
    let rx_blue = podswitch_tests::raw::RawSocket::open(&blue_a.ns, "eth0").unwrap();
    let rx_red = podswitch_tests::raw::RawSocket::open(&red_a.ns, "eth0").unwrap();
    let mut tagged = frame([0xff; 6], [0x02, 0xdd, 0, 0, 0, 1], 0x8100, &[0x00, 200]);
    tagged.extend_from_slice(&TEST_ETHERTYPE.to_be_bytes());
    tagged.extend_from_slice(&[9; 46]);
    s.send(&tagged).unwrap();
    let ours = |f: &[u8]| f.len() >= 14 && f[6..12] == [0x02, 0xdd, 0, 0, 0, 1];
    let at_blue = rx_blue.recv_matching(Duration::from_millis(400), ours);
    assert_eq!(at_blue.len(), 1);
    assert_eq!(at_blue[0][12..14], TEST_ETHERTYPE.to_be_bytes(), "tag removed");
    assert!(rx_red.recv_matching(Duration::from_millis(200), ours).is_empty(), "red got VLAN 200's frame");
    let m = a.metrics().unwrap();
    assert!(m.port("trunk", "rx_packets") >= 6 && m.port("trunk", "tx_packets") >= 6);
}

#[test]
fn malformed_frames_are_counted_by_reason_and_forwarding_continues() {
    if !root_or_skip() {
        return;
    }
    let mut node = Node::new("ps-bad").unwrap();
    let p = pods(&node, 2, 1500);
    node.start(&config(&[("net", 300)], &[("pod0", "net"), ("pod1", "net")])).unwrap();
    let s = RawSocket::open(&p[0].ns, "eth0").unwrap();
    let src = mac(&p[0].mac);
    let bc = [0xff; 6];
    let ipv4 = |ver_ihl: u8, total: u16| {
        let mut h = vec![ver_ihl, 0];
        h.extend_from_slice(&total.to_be_bytes());
        h.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0, 198, 18, 0, 1, 198, 18, 0, 2]);
        h.extend_from_slice(&[0; 26]);
        h
    };
    let bad: Vec<(Vec<u8>, &str)> = vec![
        (frame(bc, src, 0x8100, &[0x00]), "vlan_truncated"),
        (frame(bc, src, 0x0800, &ipv4(0x45, 1400)), "ipv4_truncated"),
        (frame(bc, src, 0x0800, &ipv4(0x43, 46)), "ipv4_bad_header"),
        (frame(bc, src, 0x0800, &ipv4(0x65, 46)), "ipv4_bad_header"),
        (frame(bc, src, 0x86dd, &[0x60, 0, 0, 0, 0x05, 0xdc, 17, 64]), "ipv6_truncated"),
        (frame(bc, src, 0x0806, &[0, 1, 8, 0, 6, 4, 0, 1]), "arp_truncated"),
        (frame(bc, src, 0x88a8, &[0, 100, 0x81, 0, 0, 200, 8, 0]), "vlan_unsupported"),
        (frame(bc, [0x01, 0, 0x5e, 0, 0, 1], TEST_ETHERTYPE, &[0; 46]), "source_multicast"),
    ];
    let before = node.metrics().unwrap();
    for (f, _) in &bad {
        for _ in 0..5 {
            s.send(f).unwrap();
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    let after = node.metrics().unwrap();
    let mut want = std::collections::HashMap::new();
    for (_, r) in &bad {
        *want.entry(*r).or_insert(0) += 5;
    }
    for (r, n) in want {
        assert_eq!(after.drops(r) - before.drops(r), n, "{r}");
    }
    assert!(p[0].ping(p[1].v4.as_ref().unwrap(), 3).unwrap(), "still forwarding");
    assert!(p[1].ping(p[0].v6.as_ref().unwrap(), 3).unwrap(), "still forwarding");
}

#[test]
fn stopped_daemon_leaves_no_xdp_program_and_accounts_for_every_frame() {
    if !root_or_skip() {
        return;
    }
    let mut node = Node::new("ps-stop").unwrap();
    let p = pods(&node, 2, 1500);
    node.start(&config(&[("net", 300)], &[("pod0", "net"), ("pod1", "net")])).unwrap();
    let show = |node: &Node, dev: &str| {
        let out = node.ns.exec("ip", &["-d", "link", "show", "dev", dev]).unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    assert!(show(&node, "pod0").contains("xdp"), "attached while running:\n{}", show(&node, "pod0"));
    assert!(p[0].ping(p[1].v4.as_ref().unwrap(), 3).unwrap());
    let (status, log) = node.stop().unwrap();
    assert!(status.success(), "clean exit on SIGTERM:\n{log}");
    for dev in ["pod0", "pod1"] {
        assert!(!show(&node, dev).contains("xdp"), "XDP left on {dev}:\n{}", show(&node, dev));
    }
    assert!(log.contains("XDP detached from: pod0, pod1"), "{log}");
    let acct = log.lines().find(|l| l.contains("worker 0:")).expect("frame accounting in the log");
    assert!(!acct.contains("UNBALANCED"), "{acct}");
    assert!(acct.contains(" 0 awaiting tx completion"), "{acct}");
    // The pods can still be reached by nothing: their port has no switch behind it.
    assert!(!p[0].ping_once(p[1].v4.as_ref().unwrap()).unwrap());
}
