//! Routing end to end: pods on two networks behind their gateways, the node through
//! the host port, ICMP errors, and next hops that never answer. Every test runs with
//! IPv4 only, IPv6 only and both.

use podswitch_tests::{root_or_skip, worker_core, Node, Pod};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    V4,
    V6,
    Both,
}

const FAMILIES: [Family; 3] = [Family::V4, Family::V6, Family::Both];

impl Family {
    fn v4(self) -> bool {
        self != Family::V6
    }
    fn v6(self) -> bool {
        self != Family::V4
    }
}

/// Addresses of host `h` on network `n` (198.18.n.h, 2001:db8:n::h) in the family.
fn addrs(f: Family, n: u8, h: u8) -> (Option<String>, Option<String>) {
    (f.v4().then(|| format!("198.18.{n}.{h}")), f.v6().then(|| format!("2001:db8:{n}::{h:x}")))
}

/// The gateway list of network `n` in TOML.
fn gateway(f: Family, n: u8) -> String {
    let (v4, v6) = addrs(f, n, 1);
    let mut g = Vec::new();
    if let Some(a) = v4 {
        g.push(format!("\"{a}/24\""));
    }
    if let Some(a) = v6 {
        g.push(format!("\"{a}/64\""));
    }
    format!("[{}]", g.join(", "))
}

fn dataplane(extra: &str) -> String {
    format!(
        "[dataplane]\ncores = [{}]\nidle = \"backoff\"\nring_size = 512\nhugepages = \"off\"\n{extra}\n",
        worker_core()
    )
}

/// Networks "a" (198.18.1.0/24) and "b" (198.18.2.0/24) with gateways, one pod each.
fn two_networks(f: Family, extra: &str) -> String {
    format!(
        "{}[[networks]]\nname = \"a\"\ngateway = {}\n[[networks]]\nname = \"b\"\ngateway = {}\n\
         [[ports]]\nname = \"pa\"\nnetwork = \"a\"\n[[ports]]\nname = \"pb\"\nnetwork = \"b\"\n",
        dataplane(extra),
        gateway(f, 1),
        gateway(f, 2)
    )
}

/// A pod at host 10 (network 1) or 20 (network 2) with its default routes through the
/// gateway.
fn pod(node: &Node, port: &str, f: Family, n: u8, mtu: u32) -> Pod {
    let (v4, v6) = addrs(f, n, if n == 1 { 10 } else { 20 });
    let p = node.pod(port, v4.as_deref(), v6.as_deref(), mtu, 1).unwrap();
    let (g4, g6) = addrs(f, n, 1);
    if let Some(g) = g4 {
        p.ns.ip(&["route", "add", "default", "via", &g]).unwrap();
    }
    if let Some(g) = g6 {
        p.ns.ip(&["-6", "route", "add", "default", "via", &g]).unwrap();
    }
    p
}

fn dsts(p: &Pod) -> Vec<String> {
    p.v4.iter().chain(p.v6.iter()).cloned().collect()
}

fn output(p: &Pod, cmd: &str, args: &[&str]) -> String {
    let out = p.ns.exec(cmd, args).unwrap();
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[test]
fn pods_on_two_networks_reach_each_other_through_the_gateway() {
    if !root_or_skip() {
        return;
    }
    for f in FAMILIES {
        let mut node = Node::new("ps-l3").unwrap();
        let a = pod(&node, "pa", f, 1, 1500);
        let b = pod(&node, "pb", f, 2, 1500);
        node.start(&two_networks(f, "")).unwrap();
        for (from, to) in [(&a, &b), (&b, &a)] {
            for dst in dsts(to) {
                assert!(from.ping(&dst, 3).unwrap(), "{f:?}: {} -> {dst}", from.port);
            }
        }
        // tracepath: the gateway is the one hop between them.
        let (g4, g6) = addrs(f, 1, 1);
        for (dst, gw) in dsts(&b).iter().zip(g4.iter().chain(g6.iter())) {
            let text = output(&a, "tracepath", &["-n", "-m", "4", dst]);
            let hop1 = text.lines().find(|l| l.trim_start().starts_with("1:")).unwrap_or("");
            assert!(hop1.contains(gw.as_str()), "{f:?}: hop 1 is the gateway {gw}:\n{text}");
            assert!(text.contains("reached"), "{f:?}: reached {dst}:\n{text}");
            assert!(text.contains("hops 2"), "{f:?}: two hops:\n{text}");
        }
        let m = node.metrics().unwrap();
        let families = usize::from(f.v4()) + usize::from(f.v6());
        assert!(m.sum("podswitch_l3_routed_total", &[]) >= 12 * families as u64, "routed counter moves");
        assert!(m.sum("podswitch_l3_icmp_errors_total", &[]) >= 1, "tracepath got time exceeded");
        assert_eq!(m.drops("neigh_failed"), 0);
    }
}

/// Echoes one line over TCP: `listen` side accepts once and echoes what it reads.
fn tcp_echo(server: &podswitch_tests::NetNs, client: &podswitch_tests::NetNs, addr: &str) {
    let bind = if addr.contains(':') { "[::]:7000" } else { "0.0.0.0:7000" };
    let listener = server.within(move || TcpListener::bind(bind)).unwrap().unwrap();
    let t = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).unwrap();
        s.write_all(&buf[..n]).unwrap();
    });
    let target = if addr.contains(':') { format!("[{addr}]:7000") } else { format!("{addr}:7000") };
    let mut c = client
        .within(move || TcpStream::connect_timeout(&target.parse().unwrap(), Duration::from_secs(5)))
        .unwrap()
        .unwrap_or_else(|e| panic!("TCP connect to {addr}: {e}"));
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.write_all(b"hello through podswitch").unwrap();
    let mut buf = [0u8; 64];
    let n = c.read(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"hello through podswitch", "TCP echo via {addr}");
    t.join().unwrap();
}

#[test]
fn the_node_and_pods_reach_each_other_through_the_host_port() {
    if !root_or_skip() {
        return;
    }
    for f in FAMILIES {
        let mut node = Node::new("ps-host").unwrap();
        let a = pod(&node, "pa", f, 1, 1500);
        let (h4, h6) = addrs(f, 255, 2);
        let host_addrs: Vec<String> =
            h4.iter().map(|a| format!("\"{a}/24\"")).chain(h6.iter().map(|a| format!("\"{a}/64\""))).collect();
        let cidrs: Vec<String> = f
            .v4()
            .then(|| "\"198.18.0.0/16\"".to_string())
            .into_iter()
            .chain(f.v6().then(|| "\"2001:db8::/32\"".to_string()))
            .collect();
        let config = format!(
            "{}[node]\npod_cidrs = [{}]\n[host_port]\nname = \"psw0\"\nnetwork = \"host\"\naddresses = [{}]\n\
             [[networks]]\nname = \"a\"\ngateway = {}\n[[networks]]\nname = \"host\"\ngateway = {}\n\
             [[ports]]\nname = \"pa\"\nnetwork = \"a\"\n",
            dataplane(""),
            cidrs.join(", "),
            host_addrs.join(", "),
            gateway(f, 1),
            gateway(f, 255)
        );
        node.start(&config).unwrap();
        for dst in dsts(&a) {
            let out = node.ns.exec("ping", &["-c", "3", "-i", "0.2", "-W", "2", "-q", &dst]).unwrap();
            assert!(out.status.success(), "{f:?}: node -> {dst}: {}", String::from_utf8_lossy(&out.stdout));
            tcp_echo(&a.ns, &node.ns, &dst);
        }
        for dst in h4.iter().chain(h6.iter()) {
            assert!(a.ping(dst, 3).unwrap(), "{f:?}: pod -> node {dst}");
            tcp_echo(&node.ns, &a.ns, dst);
        }
        let (_, log) = node.stop().unwrap();
        assert!(log.contains("host port up"), "{log}");
        let gone = node.ns.exec("ip", &["link", "show", "psw0"]).unwrap();
        assert!(!gone.status.success(), "the host port is removed on stop");
    }
}

#[test]
fn errors_come_back_from_the_gateway() {
    if !root_or_skip() {
        return;
    }
    for f in FAMILIES {
        let mut node = Node::new("ps-icmp").unwrap();
        let a = pod(&node, "pa", f, 1, 3000);
        let b = pod(&node, "pb", f, 2, 1400);
        node.start(&two_networks(f, "")).unwrap();
        let (g4, g6) = addrs(f, 1, 1);
        if let (Some(gw), Some(dst)) = (&g4, &b.v4) {
            let t = output(&a, "ping", &["-c", "1", "-W", "2", "-t", "1", dst]);
            assert!(t.contains(&format!("From {gw}")) && t.contains("Time to live exceeded"), "{t}");
            let t = output(&a, "ping", &["-c", "1", "-W", "2", "198.19.9.9"]);
            assert!(t.contains("Destination Net Unreachable"), "{t}");
            // Without DF the gateway fragments it, and b's reassembled answer comes
            // back (b's own kernel fragments that to its 1400-byte MTU). First, before
            // a's kernel learns the path MTU and fragments by itself.
            let t = output(&a, "ping", &["-c", "2", "-W", "2", "-M", "dont", "-s", "1500", dst]);
            assert!(t.contains("2 received"), "{t}");
            let t = output(&a, "ping", &["-c", "1", "-W", "2", "-M", "do", "-s", "1500", dst]);
            assert!(t.contains("Frag needed and DF set (mtu = 1400)"), "{t}");
            assert!(a.ping(dst, 1).unwrap(), "small packets still go");
        }
        if let (Some(gw), Some(dst)) = (&g6, &b.v6) {
            let t = output(&a, "ping", &["-c", "1", "-W", "2", "-t", "1", dst]);
            assert!(t.contains(&format!("From {gw}")) && t.contains("Time exceeded: Hop limit"), "{t}");
            let t = output(&a, "ping", &["-c", "1", "-W", "2", "2001:db8:99::1"]);
            assert!(t.contains("Destination unreachable: No route"), "{t}");
            let t = output(&a, "ping", &["-c", "1", "-W", "2", "-s", "1500", dst]);
            assert!(t.contains("Packet too big: mtu=1400"), "{t}");
            // a's kernel learned the path MTU and fragments the next one itself.
            let t = output(&a, "ping", &["-c", "2", "-W", "2", "-s", "1500", dst]);
            assert!(t.contains("2 received"), "{t}");
        }
        let m = node.metrics().unwrap();
        assert!(m.drops("ttl_exceeded") >= 1 && m.drops("no_route") >= 1 && m.drops("frag_needed") >= 1);
        assert!(m.sum("podswitch_l3_icmp_errors_total", &[]) >= 3);
        if f.v4() {
            assert!(m.sum("podswitch_l3_fragments_total", &[]) >= 4, "two pings in two fragments each");
        }
        assert_eq!(m.drops("frag_no_frame"), 0);
    }
}

fn wait_for(node: &Node, what: &str, mut ok: impl FnMut(&podswitch_tests::metrics::Metrics) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let m = node.metrics().unwrap();
        if ok(&m) {
            return;
        }
        if Instant::now() > deadline {
            let interesting: Vec<_> = node
                .metrics_text()
                .unwrap()
                .lines()
                .filter(|l| !l.starts_with('#') && (l.contains("neigh") || l.contains("l3_")) && !l.ends_with(" 0"))
                .map(String::from)
                .collect();
            panic!("timed out waiting for {what}:\n{}", interesting.join("\n"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn unresolvable_next_hops_are_queued_within_bounds_retried_and_expire() {
    if !root_or_skip() {
        return;
    }
    for f in FAMILIES {
        let mut node = Node::new("ps-neigh").unwrap();
        let a = pod(&node, "pa", f, 1, 1500);
        let b = pod(&node, "pb", f, 2, 1500);
        let extra = "pending_packets = 8\nneighbour_retry_ms = 300\nneighbour_reachable_s = 2\n";
        node.start(&two_networks(f, extra)).unwrap();
        let families = u64::from(f.v4()) + u64::from(f.v6());

        // 50 datagrams at once to an address nobody has: 2 wait (a next hop's share of
        // the 8), 48 are refused.
        let (n4, n6) = addrs(f, 2, 99);
        for dst in n4.iter().chain(n6.iter()) {
            let (bind, to) =
                if dst.contains(':') { ("[::]:0", format!("[{dst}]:9")) } else { ("0.0.0.0:0", format!("{dst}:9")) };
            a.ns.within(move || {
                let s = UdpSocket::bind(bind).unwrap();
                for _ in 0..50 {
                    let _ = s.send_to(b"anyone?", &to);
                }
            })
            .unwrap();
        }
        wait_for(&node, "the resolutions to fail", |m| m.sum("podswitch_neigh_failed_total", &[]) == families);
        let m = node.metrics().unwrap();
        assert_eq!(m.drops("neigh_queue_full"), 48 * families, "a next hop holds 2 of the 8");
        assert_eq!(m.drops("neigh_failed"), 2 * families, "the waiting ones fail with an error");
        assert!(m.sum("podswitch_neigh_requests_total", &[]) >= 3 * families, "three requests each");
        // ping shows the gateway's host unreachable.
        for dst in n4.iter().chain(n6.iter()) {
            let t = output(&a, "ping", &["-c", "1", "-W", "5", dst]);
            let expect = if dst.contains(':') {
                "Destination unreachable: Address unreachable"
            } else {
                "Destination Host Unreachable"
            };
            assert!(t.contains(expect), "{t}");
        }

        // A neighbour that stops answering is probed, then removed.
        for dst in dsts(&b) {
            assert!(a.ping(&dst, 1).unwrap());
        }
        b.ns.ip(&["link", "set", "eth0", "down"]).unwrap();
        wait_for(&node, "the silent neighbour to expire", |m| m.sum("podswitch_neigh_expired_total", &[]) >= families);
    }
}
