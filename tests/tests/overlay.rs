//! Across nodes: two namespaces, each a node with its own podswitchd and pod, joined
//! by a veth underlay that the kernel owns (node addresses 198.19.0.1 and .2,
//! 2001:db8:ff::1 and ::2). Pods reach each other through VXLAN over an IPv4 and over
//! an IPv6 underlay, and in direct-routing mode; a kernel `vxlan` node interoperates;
//! malformed VXLAN is counted; the node keeps its own traffic with the switch stopped;
//! packets too big for the tunnel get fragmentation needed with the tunnel's MTU, or
//! without DF go in fragments. Three
//! nodes on a bridged underlay share networks stretched as L2 VNIs.

use podswitch_tests::raw::RawSocket;
use podswitch_tests::{root_or_skip, udp_exact, worker_core, NetNs, Node, Pod};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::time::Duration;

/// Node `i` (1 or 2): its letter, pod CIDRs, underlay addresses.
fn letter(i: u8) -> char {
    (b'a' + i - 1) as char
}

fn underlay_addr(i: u8, v6: bool) -> String {
    if v6 {
        format!("2001:db8:ff::{i}")
    } else {
        format!("198.19.0.{i}")
    }
}

/// The underlay: veth `ua` in node 1, `ub` in node 2, with both node addresses, up.
/// Checksums are filled in by the sender (AF_XDP on the other end carries bytes).
fn underlay(a: &NetNs, b: &NetNs) {
    a.ip(&["link", "add", "ua", "type", "veth", "peer", "name", "ub", "netns", b.name()]).unwrap();
    for (ns, ifname, i) in [(a, "ua", 1u8), (b, "ub", 2u8)] {
        ns.run("ethtool", &["-K", ifname, "tx", "off"]).unwrap();
        ns.run("sysctl", &["-qw", &format!("net.ipv6.conf.{ifname}.accept_dad=0")]).unwrap();
        ns.ip(&["addr", "add", &format!("{}/24", underlay_addr(i, false)), "dev", ifname]).unwrap();
        ns.ip(&["addr", "add", &format!("{}/64", underlay_addr(i, true)), "dev", ifname, "nodad"]).unwrap();
        ns.ip(&["link", "set", ifname, "up"]).unwrap();
    }
}

/// Node `i`'s config: network "pods" with its gateway, port `p<letter>`, the uplink,
/// and the other node as a peer reached over `peer_v6` (an IPv6 underlay) or IPv4.
fn config(i: u8, mode: &str, peer_v6: bool, peer_vtep_mac: Option<&str>) -> String {
    let j = 3 - i;
    let (x, y) = (letter(i), letter(j));
    let vtep = peer_vtep_mac.map(|m| format!("vtep_mac = \"{m}\"\n")).unwrap_or_default();
    format!(
        "[dataplane]\ncores = [{core}]\nidle = \"backoff\"\nring_size = 512\nhugepages = \"off\"\n\
         [node]\nname = \"{x}\"\npod_cidrs = [\"198.18.{i}.0/24\", \"2001:db8:{i}::/64\"]\n\
         underlay = [\"{u4}\", \"{u6}\"]\n\
         [uplink]\ninterface = \"u{x}\"\nmode = \"{mode}\"\nnetwork = \"pods\"\n\
         [[networks]]\nname = \"pods\"\ngateway = [\"198.18.{i}.1/24\", \"2001:db8:{i}::1/64\"]\n\
         [[ports]]\nname = \"p{x}\"\nnetwork = \"pods\"\n\
         [[peers]]\nname = \"{y}\"\nunderlay = [\"{peer}\"]\n{vtep}pod_cidrs = [\"198.18.{j}.0/24\", \"2001:db8:{j}::/64\"]\n",
        core = worker_core(),
        u4 = underlay_addr(i, false),
        u6 = underlay_addr(i, true),
        peer = underlay_addr(j, peer_v6),
    )
}

/// Node `i`'s pod: 198.18.i.10 and 2001:db8:i::10, default routes via the gateway.
fn pod(node: &Node, i: u8, mtu: u32) -> Pod {
    let p = node
        .pod(&format!("p{}", letter(i)), Some(&format!("198.18.{i}.10")), Some(&format!("2001:db8:{i}::10")), mtu, 1)
        .unwrap();
    p.ns.ip(&["route", "add", "default", "via", &format!("198.18.{i}.1")]).unwrap();
    p.ns.ip(&["-6", "route", "add", "default", "via", &format!("2001:db8:{i}::1")]).unwrap();
    p
}

/// Two nodes running podswitchd in `mode`, reaching each other over `v6` or IPv4.
fn two_nodes(mode: &str, v6: bool, mtu: u32) -> (Node, Node, Pod, Pod) {
    let mut a = Node::new("ps-ova").unwrap();
    let mut b = Node::new("ps-ovb").unwrap();
    underlay(&a.ns, &b.ns);
    let pa = pod(&a, 1, mtu);
    let pb = pod(&b, 2, mtu);
    a.start(&config(1, mode, v6, None)).unwrap();
    b.start(&config(2, mode, v6, None)).unwrap();
    (a, b, pa, pb)
}

/// Pings until the first answer (the underlay next hops resolve in the background),
/// at most 5 s; true if answered.
fn ping_until(p: &Pod, dst: &str) -> bool {
    (0..10).any(|_| p.ns.exec("ping", &["-c", "1", "-W", "0.5", "-q", dst]).is_ok_and(|o| o.status.success()))
}

#[test]
fn pods_on_two_nodes_talk_over_vxlan_and_direct_routing() {
    if !root_or_skip() {
        return;
    }
    // (mode, IPv6 underlay, pod MTU): the MTU is what the tunnel leaves of 1500.
    for (mode, v6, mtu) in [("vxlan", false, 1450), ("vxlan", true, 1430), ("direct", false, 1500)] {
        let what = format!("{mode} over IPv{}", if v6 { 6 } else { 4 });
        let (a, b, pa, pb) = two_nodes(mode, v6, mtu);
        for (from, to) in [(&pa, &pb), (&pb, &pa)] {
            for dst in [to.v4.as_ref().unwrap(), to.v6.as_ref().unwrap()] {
                assert!(ping_until(from, dst), "{what}: {} -> {dst}", from.port);
                assert!(from.ping(dst, 3).unwrap(), "{what}: {} -> {dst}", from.port);
            }
        }
        udp_exact(&pa, &pb, pb.v4.as_ref().unwrap(), mtu as usize - 28, 10_000);
        udp_exact(&pb, &pa, pa.v6.as_ref().unwrap(), mtu as usize - 48, 10_000);
        for n in [&a, &b] {
            let m = n.metrics().unwrap();
            assert!(m.sum("podswitch_tunnel_tx_total", &[]) >= 10_000, "{what}: tunnel tx counter");
            assert!(m.sum("podswitch_tunnel_rx_total", &[]) >= 10_000, "{what}: tunnel rx counter");
        }
        let fib = a.ctl_ok(&["fib"]).unwrap();
        assert!(fib.contains("198.18.2.0/24") && fib.contains(&format!("b ({})", underlay_addr(2, v6))), "{fib}");
    }
}

/// Node `a`'s own addresses on the uplink answer ping and TCP from node `b`.
fn node_answers(a: &NetNs, b: &NetNs, when: &str) {
    for dst in [underlay_addr(1, false), underlay_addr(1, true)] {
        let out = b.exec("ping", &["-c", "2", "-i", "0.2", "-W", "2", "-q", &dst]).unwrap();
        assert!(out.status.success(), "{when}: ping {dst} from the other node");
    }
    let listener = a.within(|| TcpListener::bind("198.19.0.1:7000")).unwrap().unwrap();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).unwrap();
        s.write_all(&buf).unwrap();
    });
    let got = b
        .within(|| {
            let mut c = TcpStream::connect_timeout(&"198.19.0.1:7000".parse().unwrap(), Duration::from_secs(3))?;
            c.set_read_timeout(Some(Duration::from_secs(3)))?;
            c.write_all(b"hello")?;
            let mut buf = [0u8; 5];
            c.read_exact(&mut buf)?;
            Ok::<_, std::io::Error>(buf)
        })
        .unwrap()
        .unwrap();
    assert_eq!(&got, b"hello", "{when}: TCP echo through the node's address");
    server.join().unwrap();
}

/// The node's own address on the uplink answers ping and TCP from the other node,
/// with the switch running and after it stopped.
#[test]
fn the_node_keeps_its_own_traffic_on_the_uplink() {
    if !root_or_skip() {
        return;
    }
    let (mut a, b, _pa, _pb) = two_nodes("vxlan", false, 1450);
    node_answers(&a.ns, &b.ns, "switch running");
    let (status, log) = a.stop().unwrap();
    assert!(status.success(), "{log}");
    node_answers(&a.ns, &b.ns, "switch stopped");
}

#[test]
fn too_big_for_the_tunnel_gets_fragmentation_needed_with_mtu_1450_or_fragments() {
    if !root_or_skip() {
        return;
    }
    // Pods at 1500: a 1451-byte packet leaves the pod, and the switch says 1450.
    let (a, _b, pa, pb) = two_nodes("vxlan", false, 1500);
    let dst = pb.v4.clone().unwrap();
    assert!(ping_until(&pa, &dst));
    // Without DF the switch sends it in two fragments, each in VXLAN of its own, and
    // the remote pod reassembles it (first, before the pod learns the path MTU).
    let out = pa.ns.exec("ping", &["-c", "2", "-W", "2", "-M", "dont", "-s", "1472", &dst]).unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("2 received"), "a 1500-byte ping without DF passes in fragments:\n{text}");
    assert!(a.metrics().unwrap().sum("podswitch_l3_fragments_total", &[]) >= 4);
    let out = pa.ns.exec("ping", &["-c", "1", "-W", "2", "-M", "do", "-s", "1423", &dst]).unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success(), "a 1451-byte DF ping must not pass:\n{text}");
    assert!(text.contains("mtu = 1450") || text.contains("mtu=1450"), "fragmentation needed, MTU 1450:\n{text}");
    // 1450 bytes fit (once the pod learned the path MTU, so does everything up to it).
    let out = pa.ns.exec("ping", &["-c", "1", "-W", "2", "-M", "do", "-s", "1422", &dst]).unwrap();
    assert!(out.status.success(), "a 1450-byte DF ping passes");
    assert!(a.metrics().unwrap().drops("frag_needed") >= 1);
}

/// VXLAN to the node's VTEP that is malformed: counted by reason, never forwarded, and
/// good traffic still flows.
#[test]
fn malformed_vxlan_is_counted_and_dropped() {
    if !root_or_skip() {
        return;
    }
    let (a, b, pa, pb) = two_nodes("vxlan", false, 1450);
    assert!(ping_until(&pb, pa.v4.as_ref().unwrap()));
    let a_vtep = control::overlay::vtep_mac_of("a").0;
    // An inner IPv4/UDP frame for pod a, valid except where a case breaks it.
    let inner = {
        let mut f = Vec::new();
        etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 0xbb], a_vtep)
            .ipv4([198, 18, 2, 10], [198, 18, 1, 10], 64)
            .udp(4000, 5000)
            .write(&mut f, b"payload")
            .unwrap();
        f
    };
    let vx = |flags: u8, vni: u32, inner: &[u8]| {
        let mut p = vec![flags, 0, 0, 0];
        p.extend_from_slice(&vni.to_be_bytes()[1..]);
        p.push(0);
        p.extend_from_slice(inner);
        p
    };
    let sock = b.ns.within(|| UdpSocket::bind("198.19.0.2:0")).unwrap().unwrap();
    let send = |p: &[u8]| {
        sock.send_to(p, "198.19.0.1:4789").unwrap();
    };
    let before = a.metrics().unwrap();
    send(&vx(0x08, 99, &inner)); // wrong VNI
    send(&vx(0x0c, 1, &inner)); // an extension's flag
    send(&vx(0x00, 1, &inner)); // no I flag
    send(&vx(0x08, 1, &inner[..10])); // inner frame cut short
    send(&[0x08, 0, 0]); // VXLAN header cut short
                         // Truncated outer headers: IPv4 whose total length claims more than the frame has.
    let raw = RawSocket::open(&b.ns, "ub").unwrap();
    let ua_mac: [u8; 6] = {
        let out = a.ns.exec("cat", &["/sys/class/net/ua/address"]).unwrap();
        podswitch_tests::raw::mac(String::from_utf8_lossy(&out.stdout).trim())
    };
    let mut f = Vec::new();
    etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 0xbb], ua_mac)
        .ipv4([198, 19, 0, 2], [198, 19, 0, 1], 64)
        .udp(50000, 4789)
        .write(&mut f, &vx(0x08, 1, &inner))
        .unwrap();
    f.truncate(60);
    raw.send(&f).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let after = a.metrics().unwrap();
    let moved = |r: &str| after.drops(r) - before.drops(r);
    assert_eq!(moved("vxlan_wrong_vni"), 1);
    assert_eq!(moved("vxlan_bad_flags"), 2);
    assert_eq!(moved("vxlan_truncated"), 2);
    assert_eq!(moved("ipv4_truncated"), 1);
    assert_eq!(after.port("pa", "tx_packets"), before.port("pa", "tx_packets"), "nothing reached the pod");
    assert!(pb.ping(pa.v4.as_ref().unwrap(), 2).unwrap(), "good traffic still flows");
}

/// One node runs podswitchd; the other is plain Linux: a `vxlan` device (VNI 1, port
/// 4789) and routes, with a pod behind a veth. They talk both ways, IPv4 and IPv6, and
/// what podswitchd sends on the wire has the right VNI, checksums and varied outer
/// source ports.
#[test]
fn interoperates_with_a_linux_vxlan_node() {
    if !root_or_skip() {
        return;
    }
    const KERNEL_VTEP: &str = "02:00:00:00:0b:02";
    let mut a = Node::new("ps-ovk").unwrap();
    let b = NetNs::new("ps-ovk-lx").unwrap();
    underlay(&a.ns, &b);
    let pa = pod(&a, 1, 1450);
    a.start(&config(1, "vxlan", false, Some(KERNEL_VTEP))).unwrap();

    // The Linux node: vx0, routes to node a's pod CIDRs through a's VTEP, and a pod on
    // a veth behind 198.18.2.1 / 2001:db8:2::1.
    let a_vtep = control::overlay::vtep_mac_of("a").to_string();
    perf::host::add_kernel_vtep(&b, KERNEL_VTEP, "198.19.0.2", "ub").unwrap();
    for args in [
        &["neigh", "add", "198.18.1.254", "lladdr", &a_vtep, "dev", "vx0", "nud", "permanent"][..],
        &["-6", "neigh", "add", "2001:db8:1::fffe", "lladdr", &a_vtep, "dev", "vx0", "nud", "permanent"],
        &["route", "add", "198.18.1.0/24", "via", "198.18.1.254", "dev", "vx0", "onlink"],
        &["-6", "route", "add", "2001:db8:1::/64", "via", "2001:db8:1::fffe", "dev", "vx0", "onlink"],
    ] {
        b.ip(args).unwrap();
    }
    b.run("bridge", &["fdb", "append", &a_vtep, "dev", "vx0", "dst", "198.19.0.1"]).unwrap();
    b.run("sysctl", &["-qw", "net.ipv4.ip_forward=1"]).unwrap();
    b.run("sysctl", &["-qw", "net.ipv6.conf.all.forwarding=1"]).unwrap();
    let kpod = NetNs::new("ps-ovk-pod").unwrap();
    b.ip(&["link", "add", "kb", "type", "veth", "peer", "name", "eth0", "netns", kpod.name()]).unwrap();
    for args in [
        &["addr", "add", "198.18.2.1/24", "dev", "kb"][..],
        &["addr", "add", "2001:db8:2::1/64", "dev", "kb", "nodad"],
        &["link", "set", "kb", "up"],
    ] {
        b.ip(args).unwrap();
    }
    for args in [
        &["addr", "add", "198.18.2.20/24", "dev", "eth0"][..],
        &["addr", "add", "2001:db8:2::20/64", "dev", "eth0", "nodad"],
        &["link", "set", "eth0", "mtu", "1450"],
        &["link", "set", "eth0", "up"],
        &["route", "add", "default", "via", "198.18.2.1"],
        &["-6", "route", "add", "default", "via", "2001:db8:2::1"],
    ] {
        kpod.ip(args).unwrap();
    }

    let capture = RawSocket::open(&b, "ub").unwrap();
    let ping = |ns: &NetNs, dst: &str| -> bool {
        (0..10).any(|_| ns.exec("ping", &["-c", "1", "-W", "0.5", "-q", dst]).is_ok_and(|o| o.status.success()))
    };
    for dst in ["198.18.2.20", "2001:db8:2::20"] {
        assert!(ping(&pa.ns, dst), "podswitch pod -> Linux pod {dst}");
    }
    for dst in ["198.18.1.10", "2001:db8:1::10"] {
        assert!(ping(&kpod, dst), "Linux pod -> podswitch pod {dst}");
    }
    // Several flows, so that the outer source ports can differ.
    let tx = pa.ns.within(|| UdpSocket::bind("0.0.0.0:0")).unwrap().unwrap();
    for port in 9000..9016 {
        tx.send_to(b"flow", format!("198.18.2.20:{port}")).unwrap();
    }
    let frames = capture.recv_matching(Duration::from_millis(500), |f| {
        f.len() > 50 && f[12..14] == [0x08, 0x00] && f[14 + 9] == 17 && f[26..30] == [198, 19, 0, 1]
    });
    let mut sports = std::collections::BTreeSet::new();
    for f in &frames {
        let ihl = usize::from(f[14] & 0xf) * 4;
        assert_eq!(switch_core::wire::checksum::checksum(&f[14..14 + ihl]), 0, "outer IPv4 checksum");
        let udp = &f[14 + ihl..];
        assert_eq!(&udp[2..4], &4789u16.to_be_bytes());
        assert_eq!(&udp[6..8], &[0, 0], "UDP checksum zero over IPv4");
        assert_eq!(&udp[8..16], &[0x08, 0, 0, 0, 0, 0, 1, 0], "VXLAN header, VNI 1");
        sports.insert(u16::from_be_bytes([udp[0], udp[1]]));
    }
    assert!(frames.len() >= 16, "captured {} of podswitch's VXLAN frames", frames.len());
    assert!(sports.len() >= 4, "16 flows left from {} outer source port(s)", sports.len());
    let m = a.metrics().unwrap();
    assert!(m.sum("podswitch_tunnel_rx_total", &[]) >= 2, "the Linux node's VXLAN was decapsulated");
    assert_eq!(m.drops("vxlan_inner_mac"), 0);
    a.stop().unwrap();
}

/// The underlay of three nodes: a Linux bridge in a namespace of its own, with a veth
/// to each node (`u<letter>` in node i, address 198.19.0.i/24).
fn bridged_underlay(nodes: &[&NetNs]) -> NetNs {
    let ul = NetNs::new("ps-ov3-ul").unwrap();
    ul.ip(&["link", "add", "br0", "type", "bridge"]).unwrap();
    ul.ip(&["link", "set", "br0", "up"]).unwrap();
    for (k, ns) in nodes.iter().enumerate() {
        let i = k as u8 + 1;
        let (side, ifname) = (format!("s{}", letter(i)), format!("u{}", letter(i)));
        ul.ip(&["link", "add", &side, "type", "veth", "peer", "name", &ifname, "netns", ns.name()]).unwrap();
        ul.ip(&["link", "set", &side, "master", "br0"]).unwrap();
        ul.ip(&["link", "set", &side, "up"]).unwrap();
        ns.run("ethtool", &["-K", &ifname, "tx", "off"]).unwrap();
        ns.ip(&["addr", "add", &format!("{}/24", underlay_addr(i, false)), "dev", &ifname]).unwrap();
        ns.ip(&["link", "set", &ifname, "up"]).unwrap();
    }
    ul
}

/// Node `i` of three: network "blue" stretched as VNI 100 over all three nodes,
/// "red" as VNI 200 over nodes 1 and 2 only, a pod port in each network it has.
fn stretched_config(i: u8) -> String {
    let x = letter(i);
    let red = i <= 2;
    let mut c = format!(
        "[dataplane]\ncores = [{core}]\nidle = \"backoff\"\nring_size = 512\nhugepages = \"off\"\n\
         [node]\nname = \"{x}\"\nunderlay = [\"{u4}\"]\n\
         [uplink]\ninterface = \"u{x}\"\nnetwork = \"pods\"\n\
         [[networks]]\nname = \"pods\"\ngateway = [\"198.18.{i}.1/24\"]\n\
         [[networks]]\nname = \"blue\"\nvni = 100\n\
         [[ports]]\nname = \"b{x}\"\nnetwork = \"blue\"\n",
        core = worker_core(),
        u4 = underlay_addr(i, false),
    );
    if red {
        c += &format!("[[networks]]\nname = \"red\"\nvni = 200\n[[ports]]\nname = \"r{x}\"\nnetwork = \"red\"\n");
    }
    for j in (1..=3u8).filter(|j| *j != i) {
        let vnis = if red && j <= 2 { "[100, 200]" } else { "[100]" };
        c += &format!(
            "[[peers]]\nname = \"{y}\"\nunderlay = [\"{u}\"]\nvnis = {vnis}\n",
            y = letter(j),
            u = underlay_addr(j, false)
        );
    }
    c
}

/// A broadcast ARP request from `pod` (its MAC, and `sender` as its address) for
/// `target`, sent on the pod's eth0.
fn send_arp_request(pod: &Pod, sender: [u8; 4], target: [u8; 4]) {
    let src = podswitch_tests::raw::mac(&pod.mac);
    let mut arp = vec![0, 1, 8, 0, 6, 4, 0, 1];
    arp.extend_from_slice(&src);
    arp.extend_from_slice(&sender);
    arp.extend_from_slice(&[0; 6]);
    arp.extend_from_slice(&target);
    let frame = podswitch_tests::raw::frame([0xff; 6], src, 0x0806, &arp);
    RawSocket::open(&pod.ns, "eth0").unwrap().send(&frame).unwrap();
}

/// Frames of an ARP request for `target` (the test's marker).
fn arp_for(target: [u8; 4]) -> impl Fn(&[u8]) -> bool {
    move |f: &[u8]| f.len() >= 42 && f[12..14] == [0x08, 0x06] && f[38..42] == target
}

#[test]
fn an_l2_vni_stretched_over_three_nodes_floods_to_its_pods_only_and_learns() {
    if !root_or_skip() {
        return;
    }
    let mut nodes: Vec<Node> = (1..=3).map(|i| Node::new(&format!("ps-ov3{}", letter(i))).unwrap()).collect();
    let _underlay = bridged_underlay(&nodes.iter().map(|n| &n.ns).collect::<Vec<_>>());
    let blue: Vec<Pod> = (1..=3u8)
        .map(|i| {
            nodes[usize::from(i) - 1].pod(&format!("b{}", letter(i)), Some(&format!("198.18.100.{i}")), None, 1450, 1)
        })
        .collect::<Result<_, _>>()
        .unwrap();
    let red: Vec<Pod> = (1..=2u8)
        .map(|i| {
            nodes[usize::from(i) - 1].pod(&format!("r{}", letter(i)), Some(&format!("198.18.200.{i}")), None, 1450, 1)
        })
        .collect::<Result<_, _>>()
        .unwrap();
    for (k, n) in nodes.iter_mut().enumerate() {
        n.start(&stretched_config(k as u8 + 1)).unwrap();
    }
    // Pods of a VNI reach each other on every node (this also waits for the underlay
    // next hops to resolve).
    for (from, to) in [(0, 1), (0, 2), (1, 2)] {
        let dst = blue[to].v4.clone().unwrap();
        assert!(ping_until(&blue[from], &dst), "blue {} -> {dst}", blue[from].port);
    }
    assert!(ping_until(&red[0], red[1].v4.as_ref().unwrap()), "red a -> red b");

    // One ARP broadcast from blue a reaches blue b and c once each, and no red pod.
    let watch = |p: &Pod| RawSocket::open(&p.ns, "eth0").unwrap();
    let (wb, wc, wra, wrb) = (watch(&blue[1]), watch(&blue[2]), watch(&red[0]), watch(&red[1]));
    let before_c = nodes[2].metrics().unwrap();
    send_arp_request(&blue[0], [198, 18, 100, 1], [198, 18, 100, 99]);
    let seen = |w: &RawSocket| w.recv_matching(Duration::from_millis(400), arp_for([198, 18, 100, 99])).len();
    assert_eq!(seen(&wb), 1, "blue b (node b)");
    assert_eq!(seen(&wc), 1, "blue c (node c)");
    assert_eq!(seen(&wra), 0, "red a: same node, other network");
    assert_eq!(seen(&wrb), 0, "red b: other VNI");
    // Red's broadcast: to red b; node c, which does not carry VNI 200, never gets it.
    send_arp_request(&red[0], [198, 18, 200, 1], [198, 18, 200, 99]);
    assert_eq!(wrb.recv_matching(Duration::from_millis(400), arp_for([198, 18, 200, 99])).len(), 1, "red b");
    assert_eq!(seen(&wc), 0, "blue c sees no red broadcast");
    let after_c = nodes[2].metrics().unwrap();
    assert_eq!(after_c.drops("vxlan_wrong_vni"), before_c.drops("vxlan_wrong_vni"), "node c got no VNI 200");

    // Learned: node a knows where b's and c's pods are, behind which peer.
    let fdb = nodes[0].ctl_ok(&["fdb"]).unwrap();
    for (pod, peer) in [(&blue[1], "b"), (&blue[2], "c")] {
        let line = fdb.lines().find(|l| l.contains(&pod.mac)).unwrap_or_else(|| panic!("{} in:\n{fdb}", pod.mac));
        assert!(line.contains(&format!("(peer {peer})")), "{line}");
    }
    // ... so unicast between a and b reaches b byte-exact, and c sees none of it.
    let b_mac = podswitch_tests::raw::mac(&blue[1].mac);
    udp_exact(&blue[0], &blue[1], blue[1].v4.as_ref().unwrap(), 1400, 2_000);
    let leaked = wc.recv_matching(Duration::from_millis(300), |f| f[0..6] == b_mac);
    assert!(leaked.is_empty(), "{} frames for blue b flooded to blue c", leaked.len());
    let m = nodes[0].metrics().unwrap();
    assert!(m.sum("podswitch_tunnel_tx_total", &[]) >= 2_000);
}

/// Peers through the API: node a starts without any, learns b through `podswitchctl
/// peer put`, keeps it across a restart, refuses bad peers without changing anything,
/// and forgets b on delete.
#[test]
fn peers_are_managed_through_the_api_and_persist() {
    if !root_or_skip() {
        return;
    }
    let mut a = Node::new("ps-ovp").unwrap();
    let mut b = Node::new("ps-ovpb").unwrap();
    underlay(&a.ns, &b.ns);
    let pa = pod(&a, 1, 1450);
    let pb = pod(&b, 2, 1450);
    let a_config = config(1, "vxlan", false, None);
    let a_config = a_config.split("[[peers]]").next().unwrap().to_string();
    a.start(&a_config).unwrap();
    b.start(&config(2, "vxlan", false, None)).unwrap();
    let dst = pb.v4.clone().unwrap();
    assert!(!pa.ping_once(&dst).unwrap(), "no peer yet: no route");

    let put_b = [
        "peer",
        "put",
        "b",
        "--underlay",
        "198.19.0.2",
        "--pod-cidr",
        "198.18.2.0/24",
        "--pod-cidr",
        "2001:db8:2::/64",
    ];
    a.ctl_ok(&put_b).unwrap();
    let again = a.ctl_ok(&[&["--json"][..], &put_b[..]].concat()).unwrap();
    assert!(again.contains("\"changed\": false"), "the same put twice changes nothing: {again}");
    for dst in [pb.v4.as_ref().unwrap(), pb.v6.as_ref().unwrap()] {
        assert!(ping_until(&pa, dst), "a -> {dst} through the peer put over the API");
    }
    let list = a.ctl_ok(&["peer", "list"]).unwrap();
    assert!(list.contains("198.18.2.0/24") && !list.contains("resolving"), "{list}");

    // Bad peers: refused, each with its reason, and the state stays as it was.
    let before = a.ctl_ok(&["--json", "peer", "list"]).unwrap();
    for (args, why) in [
        (&["peer", "put", "c", "--underlay", "198.19.0.3", "--pod-cidr", "198.18.1.0/25"][..], "overlaps"),
        (&["peer", "put", "c", "--underlay", "198.19.0.3", "--pod-cidr", "198.18.2.128/25"][..], "peer \"b\"'s"),
        (&["peer", "put", "c", "--underlay", "198.19.0.3"][..], "pod_cidrs and vnis are empty"),
        (&["peer", "put", "c", "--underlay", "198.19.0.3", "--vni", "16777216"][..], "24 bits"),
        (&["peer", "put", "c", "--underlay", "198.19.0.3", "--vni", "100"][..], "no network is stretched"),
        (&["peer", "put", "c", "--underlay", "nope", "--pod-cidr", "198.18.3.0/24"][..], "not an IP address"),
        (
            &[
                "peer",
                "put",
                "c",
                "--underlay",
                "198.19.0.3",
                "--pod-cidr",
                "198.18.3.0/24",
                "--vtep-mac",
                "01:00:5e:00:00:01",
            ][..],
            "unicast",
        ),
    ] {
        let out = a.ctl(args).unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(why), "{args:?}: {err}");
    }
    assert_eq!(a.ctl_ok(&["--json", "peer", "list"]).unwrap(), before, "refusals change nothing");

    // The peer survives a restart of the daemon (not in its config file).
    let (status, log) = a.stop().unwrap();
    assert!(status.success(), "{log}");
    a.start(&a_config).unwrap();
    assert!(ping_until(&pa, &dst), "after a restart, the peer is back from the saved state");

    a.ctl_ok(&["peer", "delete", "b"]).unwrap();
    assert!(!pa.ping_once(&dst).unwrap(), "the peer is gone: no route");
    assert!(!a.ctl_ok(&["fib"]).unwrap().contains("198.18.2.0/24"));
}
