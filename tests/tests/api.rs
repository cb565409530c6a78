//! The gRPC API through `podswitchctl`, as an operator or the CNI plugin meets it: a
//! topology built only through the API forwards, removing a port stops its traffic and
//! frees its frames, every change is idempotent, bad requests change nothing, a crash
//! loses no acknowledged change, and the socket keeps non-root users out.

use podswitch_tests::{root_or_skip, worker_core, Node};
use serde_json::Value;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

fn dataplane() -> String {
    format!("[dataplane]\ncores = [{}]\nidle = \"backoff\"\nring_size = 512\nhugepages = \"off\"\n", worker_core())
}

fn json(node: &Node, args: &[&str]) -> Value {
    let mut a = vec!["--json"];
    a.extend_from_slice(args);
    serde_json::from_str(&node.ctl_ok(&a).unwrap()).unwrap()
}

fn worker_frames(node: &Node) -> Vec<(u64, u64)> {
    let s = json(node, &["stats"]);
    s["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| (w["free_frames"].as_u64().unwrap_or(0), w["umem_frames"].as_u64().unwrap()))
        .collect()
}

fn port_rx(node: &Node, port: &str) -> u64 {
    let s = json(node, &["stats"]);
    s["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == port)
        .map_or(0, |p| p["rx_packets"].as_u64().unwrap_or(0))
}

/// A node whose daemon has pods `pa` (198.18.0.1) and `pb` (198.18.0.2) on network
/// "pods", all put through the API. `gateway` gives the network a gateway.
fn two_pods(name: &str, gateway: Option<&str>) -> (Node, podswitch_tests::Pod, podswitch_tests::Pod) {
    let mut node = Node::new(name).unwrap();
    let a = node.pod("pa", Some("198.18.0.1"), None, 1500, 1).unwrap();
    let b = node.pod("pb", Some("198.18.0.2"), None, 1500, 1).unwrap();
    node.start(&dataplane()).unwrap();
    match gateway {
        Some(g) => node.ctl_ok(&["network", "put", "pods", "--gateway", g]).unwrap(),
        None => node.ctl_ok(&["network", "put", "pods"]).unwrap(),
    };
    node.ctl_ok(&["port", "put", "pa", "--network", "pods"]).unwrap();
    node.ctl_ok(&["port", "put", "pb", "--network", "pods"]).unwrap();
    (node, a, b)
}

/// Waits up to `within` for `f` to hold.
fn eventually(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + within;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}

#[test]
fn topology_built_through_the_api_forwards_and_removal_frees_frames() {
    if !root_or_skip() {
        return;
    }
    let mut node = Node::new("ps-api").unwrap();
    let a = node.pod("pa", Some("198.18.0.1"), Some("2001:db8::1"), 1500, 1).unwrap();
    let b = node.pod("pb", Some("198.18.0.2"), Some("2001:db8::2"), 1500, 1).unwrap();
    node.start(&dataplane()).unwrap();
    assert_eq!(json(&node, &["port", "list"])["ports"].as_array().map_or(0, |p| p.len()), 0);
    let idle = worker_frames(&node);
    assert!(idle.iter().all(|(free, total)| free == total), "no port, every frame free: {idle:?}");

    node.ctl_ok(&["network", "put", "pods"]).unwrap();
    node.ctl_ok(&["port", "put", "pa", "--network", "pods"]).unwrap();
    node.ctl_ok(&["port", "put", "pb", "--network", "pods"]).unwrap();
    let ports = node.ctl_ok(&["port", "list"]).unwrap();
    assert!(ports.lines().filter(|l| l.contains("pods") && l.contains(" yes ")).count() == 2, "{ports}");
    assert!(a.ping(b.v4.as_ref().unwrap(), 3).unwrap(), "IPv4 through API-built ports");
    assert!(a.ping(b.v6.as_ref().unwrap(), 3).unwrap(), "IPv6 through API-built ports");
    assert!(port_rx(&node, "pa") >= 3 && port_rx(&node, "pb") >= 3, "stats --json counters move");
    let fdb = node.ctl_ok(&["fdb"]).unwrap();
    assert!(fdb.contains(&a.mac) && fdb.contains(&b.mac), "{fdb}");
    let m = node.metrics().unwrap();
    assert_eq!(m.sum("podswitch_state_generation", &[]), 3);
    assert_eq!(m.sum("podswitch_ports_attached", &[]), 2);
    assert!(m.sum("podswitch_worker_batch_size_count", &[]) > 0);
    assert_eq!(
        m.sum("podswitch_worker_batch_size_bucket", &[("le", "+Inf")]),
        m.sum("podswitch_worker_batch_size_count", &[])
    );
    assert!(m.sum("podswitch_worker_umem_frames_in_use", &[]) >= 2 * 512, "two ports' fill rings");

    node.ctl_ok(&["port", "delete", "pb"]).unwrap();
    assert!(!a.ping_once(b.v4.as_ref().unwrap()).unwrap(), "a removed port carries nothing");
    let out = node.ns.exec("ip", &["-d", "link", "show", "dev", "pb"]).unwrap();
    assert!(!String::from_utf8_lossy(&out.stdout).contains("prog/xdp"), "the XDP program is detached");
    node.ctl_ok(&["port", "delete", "pa"]).unwrap();
    assert!(
        eventually(Duration::from_secs(2), || worker_frames(&node) == idle),
        "every frame back in the pool after the ports went: {:?} vs {idle:?}",
        worker_frames(&node)
    );
    // And a port can come back under the same name.
    node.ctl_ok(&["port", "put", "pa", "--network", "pods"]).unwrap();
    node.ctl_ok(&["port", "put", "pb", "--network", "pods"]).unwrap();
    assert!(a.ping(b.v4.as_ref().unwrap(), 2).unwrap());
    let (st, log) = node.stop().unwrap();
    assert!(st.success(), "{log}");
    assert!(!log.contains("UNBALANCED"), "{log}");
}

#[test]
fn changes_are_idempotent_and_bad_requests_change_nothing() {
    if !root_or_skip() {
        return;
    }
    let mut node = Node::new("ps-apibad").unwrap();
    let _a = node.pod("pa", None, None, 1500, 1).unwrap();
    let _t = node.pod("tr", None, None, 1500, 1).unwrap();
    node.start(&dataplane()).unwrap();
    let first = node.ctl_ok(&["network", "put", "a", "--gateway", "198.18.1.1/24", "--gateway", "2001:db8:1::1/64"]);
    assert!(first.unwrap().starts_with("ok: generation 1"));
    let again = node.ctl_ok(&["network", "put", "a", "--gateway", "198.18.1.1/24", "--gateway", "2001:db8:1::1/64"]);
    assert_eq!(again.unwrap().trim(), "unchanged: generation 1");
    node.ctl_ok(&["port", "put", "pa", "--network", "a", "--mac", "02:00:00:00:00:0a", "--address", "198.18.1.10"])
        .unwrap();
    let again =
        node.ctl_ok(&["port", "put", "pa", "--network", "a", "--mac", "02:00:00:00:00:0a", "--address", "198.18.1.10"]);
    assert_eq!(again.unwrap().trim(), "unchanged: generation 2");
    node.ctl_ok(&["route", "put", "198.19.0.0/16", "--via", "198.18.1.10"]).unwrap();
    assert_eq!(
        node.ctl_ok(&["route", "put", "198.19.0.0/16", "--via", "198.18.1.10"]).unwrap().trim(),
        "unchanged: generation 3"
    );
    assert_eq!(node.ctl_ok(&["route", "delete", "198.20.0.0/16"]).unwrap().trim(), "unchanged: generation 3");

    let snapshot = |node: &Node| {
        let lists: Vec<String> = [["network", "list"], ["port", "list"], ["route", "list"], ["peer", "list"]]
            .iter()
            .map(|a| node.ctl_ok(&["--json", a[0], a[1]]).unwrap())
            .collect();
        (
            lists,
            std::fs::read(node.state_dir.join("journal")).unwrap(),
            std::fs::read(node.state_dir.join("state.json")).unwrap(),
        )
    };
    let before = snapshot(&node);
    let bad: &[(&[&str], &str)] = &[
        (&["port", "put", "tr", "--network", "nope"], "network \"nope\" is not defined"),
        (&["network", "put", "b", "--gateway", "198.18.1.129/25"], "overlaps network \"a\""),
        (&["network", "put", "c", "--gateway", "2001:db8:1:0:8000::1/80"], "overlaps network \"a\""),
        (&["port", "put", "tr", "--network", "a", "--mac", "02:00:00:00:00"], "\"tr\""),
        (&["port", "put", "tr", "--network", "a", "--mac", "01:00:5e:00:00:01"], "unicast"),
        (&["port", "put", "tr", "--vlan", "4095=a"], "4094"),
        (&["port", "put", "tr", "--vlan", "100=a", "--vlan", "100=a"], "VLAN 100 is mapped twice"),
        (&["port", "put", "nosuch0", "--network", "a"], "\"nosuch0\" does not exist"),
        (&["port", "put", "tr", "--network", "a", "--address", "198.18.1.11"], "exactly one in macs"),
        (
            &["port", "put", "tr", "--network", "a", "--mac", "02:00:00:00:00:0b", "--address", "198.18.9.11"],
            "gateway subnet",
        ),
        (&["route", "put", "198.20.0.0/33", "--drop"], "198.20.0.0/33"),
        (&["route", "put", "198.20.0.0/16", "--via", "198.18.9.1"], "198.18.9.1"),
        (&["network", "delete", "a"], "still has ports [\"pa\"]"),
        (&["network", "put", "d", "--gateway", "198.18.4.1/24", "--gateway-mac", "zz"], "gateway_mac"),
        (&["network", "put", "e", "--vni", "16777216"], "24 bits"),
        (&["network", "put", "e", "--vni", "100"], "no [uplink] to carry it"),
        (&["peer", "put", "n2", "--underlay", "198.19.0.2", "--vni", "16777216"], "24 bits"),
        (&["peer", "put", "n2", "--underlay", "198.19.0.2", "--pod-cidr", "198.18.8.0/24"], "need an [uplink]"),
    ];
    for (args, want) in bad {
        let out = node.ctl(args).unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: expected {want:?} in {err}");
    }
    assert!(snapshot(&node) == before, "refused requests left the state byte-for-byte as it was");
    let out = node.ns.exec("ip", &["-d", "link", "show", "dev", "tr"]).unwrap();
    assert!(!String::from_utf8_lossy(&out.stdout).contains("prog/xdp"), "refused ports were never attached");
    let st = json(&node, &["status"]);
    assert_eq!(st["generation"], 3);
}

#[test]
fn a_crash_loses_no_acknowledged_change_and_pods_come_back() {
    if !root_or_skip() {
        return;
    }
    let (mut node, a, b) = two_pods("ps-crash", Some("198.18.0.254/24"));
    assert!(a.ping(b.v4.as_ref().unwrap(), 1).unwrap());

    // 1000 changes from 4 clients; the daemon is killed while they run.
    let socket = node.socket.clone();
    let ctl = podswitch_tests::podswitchd_path().with_file_name("podswitchctl");
    let pid = node.pid().unwrap();
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1500));
        // SAFETY: kill on the pid of the daemon this test started (not yet reaped).
        #[allow(unsafe_code)]
        unsafe {
            libc::kill(pid as i32, libc::SIGKILL);
        }
    });
    let clients: Vec<_> = (0..4u32)
        .map(|c| {
            let (socket, ctl) = (socket.clone(), ctl.clone());
            std::thread::spawn(move || {
                let mut acked = Vec::new();
                let mut unknown = Vec::new();
                for i in 0..250u32 {
                    let n = c * 250 + i;
                    let prefix = format!("198.19.{}.{}/32", n / 256, n % 256);
                    let out = std::process::Command::new(&ctl)
                        .arg("--socket")
                        .arg(&socket)
                        .args(["route", "put", &prefix, "--drop"])
                        .output()
                        .unwrap();
                    if out.status.success() {
                        acked.push(prefix);
                    } else {
                        // The one in flight when the daemon died may or may not be in.
                        unknown.push(prefix);
                        break;
                    }
                }
                (acked, unknown)
            })
        })
        .collect();
    let mut acked = BTreeSet::new();
    let mut unknown = BTreeSet::new();
    for c in clients {
        let (a, u) = c.join().unwrap();
        acked.extend(a);
        unknown.extend(u);
    }
    killer.join().unwrap();
    node.kill9().ok();
    assert!(acked.len() > 10 && acked.len() < 1000, "the crash came while changes were flowing ({})", acked.len());

    node.start(&dataplane()).unwrap();
    let routes: BTreeSet<String> = json(&node, &["route", "list"])["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["prefix"].as_str().unwrap().to_string())
        .collect();
    let lost: Vec<_> = acked.difference(&routes).collect();
    assert!(lost.is_empty(), "acknowledged changes lost in the crash: {lost:?}");
    let extra: Vec<_> = routes.difference(&acked).filter(|r| !unknown.contains(*r)).collect();
    assert!(extra.is_empty(), "changes nobody made: {extra:?}");
    assert!(node.log_text().contains("state restored"), "{}", node.log_text());
    assert!(a.ping(b.v4.as_ref().unwrap(), 3).unwrap(), "pods' traffic flows again, nothing re-run");
}

#[test]
fn restored_ports_whose_interface_vanished_are_reported_and_come_back() {
    if !root_or_skip() {
        return;
    }
    let (mut node, a, b) = two_pods("ps-gone", None);
    node.stop().unwrap();
    // While the daemon is down, pb's veth goes away.
    drop(b);
    node.start(&dataplane()).unwrap();
    let st = node.ctl_ok(&["status"]).unwrap();
    assert!(st.contains("missing interfaces: pb"), "{st}");
    let ports = node.ctl_ok(&["port", "list"]).unwrap();
    assert!(ports.lines().any(|l| l.starts_with("pb") && l.contains("no:")), "{ports}");
    // It comes back: attached again without any API call.
    let b = node.pod("pb", Some("198.18.0.2"), None, 1500, 1).unwrap();
    assert!(
        eventually(Duration::from_secs(6), || !node.ctl_ok(&["status"]).unwrap().contains("missing")),
        "{}",
        node.log_text()
    );
    assert!(a.ping(b.v4.as_ref().unwrap(), 2).unwrap());
}

#[test]
fn the_socket_refuses_non_root_users() {
    if !root_or_skip() {
        return;
    }
    let mut node = Node::new("ps-perm").unwrap();
    node.start(&dataplane()).unwrap();
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&node.socket).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    let ctl = podswitch_tests::podswitchd_path().with_file_name("podswitchctl");
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&ctl)
        .arg("--socket")
        .arg(&node.socket)
        .arg("status")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("Permission denied") && err.contains("run as root"), "{err}");
    assert!(node.ctl_ok(&["status"]).unwrap().contains("podswitchd"), "root still gets in");
}

#[test]
fn capture_writes_a_pcap_tshark_reads_and_trace_shows_the_stages() {
    if !root_or_skip() {
        return;
    }
    let (node, a, b) = two_pods("ps-debug", None);
    assert!(a.ping(b.v4.as_ref().unwrap(), 1).unwrap(), "ARP settled");

    let pcap = node.state_dir.join("pb.pcap");
    let (socket, file) = (node.socket.clone(), pcap.clone());
    let ctl = podswitch_tests::podswitchd_path().with_file_name("podswitchctl");
    let capture = std::thread::spawn(move || {
        std::process::Command::new(ctl)
            .arg("--socket")
            .arg(&socket)
            .args(["capture", "pb", "-w"])
            .arg(&file)
            .args(["--count", "6", "--duration", "15"])
            .output()
            .unwrap()
    });
    std::thread::sleep(Duration::from_millis(300));
    assert!(a.ping(b.v4.as_ref().unwrap(), 3).unwrap());
    let out = capture.join().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && err.contains("6 frames captured"), "{err}");
    let t = std::process::Command::new("tshark")
        .args(["-r"])
        .arg(&pcap)
        .args(["-Y", "icmp", "-T", "fields", "-e", "ip.src", "-e", "ip.dst", "-e", "icmp.type"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&t.stdout);
    assert!(t.status.success(), "tshark: {}", String::from_utf8_lossy(&t.stderr));
    assert_eq!(
        text.lines().filter(|l| *l == "198.18.0.1\t198.18.0.2\t8").count(),
        3,
        "echo requests sent on pb:\n{text}"
    );
    assert_eq!(
        text.lines().filter(|l| *l == "198.18.0.2\t198.18.0.1\t0").count(),
        3,
        "replies received on pb:\n{text}"
    );

    // Trace: the next two packets, while a ping runs.
    let pinger = {
        let ns = a.ns.name().to_string();
        std::thread::spawn(move || {
            std::process::Command::new("ip")
                .args(["netns", "exec", &ns, "ping", "-c", "4", "-i", "0.3", "-q", "198.18.0.2"])
                .output()
                .unwrap()
        })
    };
    let trace = node.ctl_ok(&["trace", "--count", "2", "--timeout", "10"]).unwrap();
    pinger.join().unwrap();
    assert!(trace.contains("packet 2:"), "{trace}");
    assert!(trace.contains("IPv4 198.18.0.1 > 198.18.0.2 ttl 64 ICMP echo request"), "{trace}");
    assert!(trace.contains("classify  network pods"), "{trace}");
    assert!(trace.contains("l2        send on pb") && trace.contains("l2        send on pa"), "{trace}");
}

#[test]
fn watch_reports_each_accepted_change_once() {
    if !root_or_skip() {
        return;
    }
    let mut node = Node::new("ps-watch").unwrap();
    node.start(&dataplane()).unwrap();
    let ctl = podswitch_tests::podswitchd_path().with_file_name("podswitchctl");
    let watcher = std::process::Command::new(ctl)
        .arg("--socket")
        .arg(&node.socket)
        .args(["--json", "watch", "--count", "3"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    node.ctl_ok(&["network", "put", "a"]).unwrap();
    node.ctl_ok(&["network", "put", "a"]).unwrap(); // unchanged: not reported
    assert_eq!(node.ctl(&["network", "put", "b", "--gateway", "x"]).unwrap().status.code(), Some(1));
    node.ctl_ok(&["route", "put", "198.19.0.0/16", "--drop"]).unwrap();
    node.ctl_ok(&["network", "delete", "a"]).unwrap();
    let out = watcher.wait_with_output().unwrap();
    let changes: Vec<Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let seen: Vec<(u64, &str, &str, &str)> = changes
        .iter()
        .map(|c| {
            (
                c["generation"].as_u64().unwrap(),
                c["op"].as_str().unwrap(),
                c["kind"].as_str().unwrap(),
                c["name"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(seen, [(1, "put", "network", "a"), (2, "put", "route", "198.19.0.0/16"), (3, "delete", "network", "a")]);
}

#[test]
fn pods_get_distinct_addresses_that_survive_a_restart_and_are_freed_on_detach() {
    if !root_or_skip() {
        return;
    }
    let mut node = Node::new("ps-pods").unwrap();
    // Pods without addresses: the daemon hands them out.
    let a = node.pod("pa", None, None, 1500, 1).unwrap();
    let b = node.pod("pb", None, None, 1500, 1).unwrap();
    let c = node.pod("pc", None, None, 1500, 1).unwrap();
    node.start(&dataplane()).unwrap();
    node.ctl_ok(&["network", "put", "pods", "--gateway", "198.18.5.1/24", "--gateway", "2001:db8:5::1/64"]).unwrap();
    let attach = |node: &Node, id: &str, port: &str, mac: &str| -> Value {
        json(node, &["pod", "attach", id, "eth0", "--port", port, "--network", "pods", "--mac", mac])
    };
    let ra = attach(&node, "ctr-a", "pa", &a.mac);
    let rb = attach(&node, "ctr-b", "pb", &b.mac);
    assert_eq!(ra["addresses"], serde_json::json!(["198.18.5.2/24", "2001:db8:5::2/64"]));
    assert_eq!(rb["addresses"], serde_json::json!(["198.18.5.3/24", "2001:db8:5::3/64"]));
    assert_eq!(ra["gateways"], serde_json::json!(["198.18.5.1", "2001:db8:5::1"]));
    let again = attach(&node, "ctr-a", "pa", &a.mac);
    assert_eq!((again["addresses"].clone(), again["changed"].clone()), (ra["addresses"].clone(), Value::Bool(false)));
    let other =
        node.ctl(&["pod", "attach", "ctr-a", "eth0", "--port", "pc", "--network", "pods", "--mac", &c.mac]).unwrap();
    assert_eq!(other.status.code(), Some(1), "one pod, one port");

    // Give the pods their addresses, as the CNI plugin will; they talk through the switch.
    for (pod, r) in [(&a, &ra), (&b, &rb)] {
        let v4 = r["addresses"][0].as_str().unwrap();
        pod.ns.ip(&["addr", "add", v4, "dev", "eth0"]).unwrap();
        pod.ns.ip(&["route", "add", "default", "via", "198.18.5.1"]).unwrap();
    }
    assert!(a.ping("198.18.5.3", 2).unwrap());
    assert!(a.ping("198.18.5.1", 1).unwrap(), "and the gateway answers");

    node.stop().unwrap();
    node.start(&dataplane()).unwrap();
    let pods = json(&node, &["pod", "list"]);
    assert_eq!(pods["pods"].as_array().unwrap().len(), 2, "attachments survive a restart: {pods}");
    assert!(a.ping("198.18.5.3", 2).unwrap());

    assert!(node.ctl_ok(&["pod", "detach", "ctr-a", "eth0"]).unwrap().starts_with("ok"));
    assert!(node.ctl_ok(&["pod", "detach", "ctr-a", "eth0"]).unwrap().starts_with("unchanged"), "detach is idempotent");
    let rc = attach(&node, "ctr-c", "pc", &c.mac);
    assert_eq!(rc["addresses"][0], "198.18.5.2/24", "a freed address is handed out again");
}
