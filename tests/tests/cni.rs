//! The CNI plugin driven as a runtime drives it (environment and stdin), against a real
//! podswitchd: ADD gives pods working interfaces and addresses, CHECK, DEL (twice, and
//! after a daemon restart), VERSION, STATUS, and errors in the spec's JSON.

use podswitch_tests::{root_or_skip, worker_core, NetNs, Node};
use serde_json::Value;
use std::io::Write;
use std::process::{Command, Stdio};

fn dataplane() -> String {
    format!("[dataplane]\ncores = [{}]\nidle = \"backoff\"\nring_size = 512\nhugepages = \"off\"\n", worker_core())
}

/// Runs the plugin in the node's namespace; returns (exit code, stdout as JSON or Null).
fn cni(node: &Node, cmd: &str, container: &str, netns: &str, conf: &str) -> (i32, Value) {
    cni_args(node, cmd, container, netns, conf, "")
}

/// [`cni`] with CNI_ARGS.
fn cni_args(node: &Node, cmd: &str, container: &str, netns: &str, conf: &str, args: &str) -> (i32, Value) {
    cni_env(node, cmd, container, netns, conf, &[("CNI_ARGS", args)])
}

/// [`cni`] with more environment (set last, so it overrides).
fn cni_env(node: &Node, cmd: &str, container: &str, netns: &str, conf: &str, env: &[(&str, &str)]) -> (i32, Value) {
    let plugin = podswitch_tests::podswitchd_path().with_file_name("podswitch");
    let mut child = Command::new("ip")
        .args(["netns", "exec", node.ns.name()])
        .arg(plugin)
        .env("CNI_COMMAND", cmd)
        .env("CNI_CONTAINERID", container)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/opt/cni/bin:/usr/lib/cni")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(conf.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let v = if text.trim().is_empty() { Value::Null } else { serde_json::from_str(&text).expect(&text) };
    (out.status.code().unwrap_or(-1), v)
}

fn conf(node: &Node, version: &str, extra: &str) -> String {
    format!(
        r#"{{"cniVersion":"{version}","name":"k8s-pod-network","type":"podswitch","socket":"{}","network":"pods"{extra}}}"#,
        node.socket.display()
    )
}

fn links(node: &Node) -> String {
    String::from_utf8_lossy(&node.ns.exec("ip", &["-br", "link"]).unwrap().stdout).into_owned()
}

#[test]
fn add_check_del_through_the_plugin() {
    if !root_or_skip() {
        return;
    }
    let mut node = Node::new("ps-cni").unwrap();
    node.start(&dataplane()).unwrap();
    node.ctl_ok(&["network", "put", "pods", "--gateway", "198.18.6.1/24", "--gateway", "2001:db8:6::1/64"]).unwrap();
    let (pa, pb) = (NetNs::new("ps-cni-a").unwrap(), NetNs::new("ps-cni-b").unwrap());
    let path = |ns: &NetNs| format!("/run/netns/{}", ns.name());
    let c = conf(&node, "1.0.0", "");

    let (rc, ra) = cni(&node, "ADD", "ctr-a", &path(&pa), &c);
    assert_eq!(rc, 0, "{ra}");
    let (rc, rb) = cni(&node, "ADD", "ctr-b", &path(&pb), &c);
    assert_eq!(rc, 0, "{rb}");
    assert_eq!(ra["cniVersion"], "1.0.0");
    assert_eq!(ra["ips"][0]["address"], "198.18.6.2/24");
    assert_eq!(ra["ips"][0]["gateway"], "198.18.6.1");
    assert_eq!(ra["ips"][1]["address"], "2001:db8:6::2/64");
    assert_eq!(rb["ips"][0]["address"], "198.18.6.3/24");
    assert_eq!(ra["interfaces"][1]["name"], "eth0");
    assert_eq!(ra["interfaces"][1]["sandbox"], path(&pa));
    assert!(ra["ips"][0].get("version").is_none(), "1.0 results carry no IP version");
    let k = pa.exec("ethtool", &["-k", "eth0"]).unwrap();
    let k = String::from_utf8_lossy(&k.stdout);
    for off in ["tx-checksumming: off", "tcp-segmentation-offload: off", "generic-segmentation-offload: off"] {
        assert!(k.contains(off), "the pod's offloads AF_XDP cannot carry are off: {off}\n{k}");
    }
    let host_end = ra["interfaces"][0]["name"].as_str().unwrap();
    let v6 = node.ns.exec("sysctl", &["-n", &format!("net.ipv6.conf.{host_end}.disable_ipv6")]).unwrap();
    assert_eq!(String::from_utf8_lossy(&v6.stdout).trim(), "1", "the switch end has no IPv6 of its own");

    let ping = |ns: &NetNs, dst: &str| {
        ns.exec("ping", &["-c", "2", "-i", "0.2", "-W", "2", "-q", dst]).unwrap().status.success()
    };
    assert!(ping(&pa, "198.18.6.3"), "pod to pod over IPv4");
    assert!(ping(&pa, "2001:db8:6::3"), "pod to pod over IPv6");
    assert!(ping(&pb, "198.18.6.1"), "pod to its gateway");

    assert_eq!(cni(&node, "CHECK", "ctr-a", &path(&pa), &c).0, 0);
    pa.ip(&["addr", "del", "198.18.6.2/24", "dev", "eth0"]).unwrap();
    let (rc, e) = cni(&node, "CHECK", "ctr-a", &path(&pa), &c);
    assert!(rc != 0 && e["msg"].as_str().unwrap().contains("198.18.6.2/24"), "{e}");

    // DEL twice, and a DEL after the daemon restarted.
    assert_eq!(cni(&node, "DEL", "ctr-a", &path(&pa), &c).0, 0);
    assert_eq!(cni(&node, "DEL", "ctr-a", "", &c).0, 0, "DEL again, without a netns");
    node.stop().unwrap();
    node.start(&dataplane()).unwrap();
    assert_eq!(cni(&node, "DEL", "ctr-b", &path(&pb), &c).0, 0);
    let pods = node.ctl_ok(&["--json", "pod", "list"]).unwrap();
    assert!(!pods.contains("ctr-"), "no attachment left: {pods}");
    assert!(!links(&node).contains("ps"), "no veth left:\n{}", links(&node));

    // A freed address is handed out again, in the 0.4.0 shape when asked.
    let (rc, r4) = cni(&node, "ADD", "ctr-c", &path(&pa), &conf(&node, "0.4.0", ""));
    assert_eq!(rc, 0, "{r4}");
    assert_eq!(
        (r4["ips"][0]["address"].as_str(), r4["ips"][0]["version"].as_str()),
        (Some("198.18.6.2/24"), Some("4"))
    );
    // The interface already gone (the pod's namespace was torn down first): DEL still
    // detaches and answers success.
    let host = r4["interfaces"][0]["name"].as_str().unwrap();
    node.ns.ip(&["link", "del", host]).unwrap();
    assert_eq!(cni(&node, "DEL", "ctr-c", &path(&pa), &c).0, 0);
    let pods = node.ctl_ok(&["--json", "pod", "list"]).unwrap();
    assert!(!pods.contains("ctr-c"), "{pods}");
}

#[test]
fn version_status_and_errors_answer_in_the_specs_json() {
    if !root_or_skip() {
        return;
    }
    let mut node = Node::new("ps-cnie").unwrap();
    let pa = NetNs::new("ps-cnie-a").unwrap();
    let path = format!("/run/netns/{}", pa.name());
    let (rc, v) = cni(&node, "VERSION", "", "", r#"{"cniVersion":"1.1.0"}"#);
    assert_eq!(rc, 0);
    assert!(v["supportedVersions"].as_array().unwrap().iter().any(|s| s == "1.1.0"), "{v}");

    // The daemon is down: STATUS says not available, ADD says try again.
    let c = conf(&node, "1.1.0", "");
    let (rc, e) = cni(&node, "STATUS", "", "", &c);
    assert_eq!((rc, e["code"].as_u64()), (1, Some(50)), "{e}");
    let (rc, e) = cni(&node, "ADD", "ctr-x", &path, &c);
    assert_eq!((rc, e["code"].as_u64()), (1, Some(11)), "{e}");

    node.start(&dataplane()).unwrap();
    node.ctl_ok(&["network", "put", "pods", "--gateway", "198.18.7.1/24"]).unwrap();
    assert_eq!(cni(&node, "STATUS", "", "", &c).0, 0);
    for (text, want) in [
        ("{not json".to_string(), 6),
        (conf(&node, "9.9.9", ""), 1),
        (conf(&node, "1.0.0", r#","mode":"tap""#), 7),
        (conf(&node, "1.0.0", r#","ipam":{"subnet":"198.18.7.0/24"}"#), 7),
        (conf(&node, "1.0.0", r#","ipam":{"type":"no-such-ipam"}"#), 7),
        (conf(&node, "1.0.0", r#","mtu":9000"#), 7),
        (conf(&node, "1.0.0", "").replace(&node.socket.display().to_string(), ""), 7),
    ] {
        let (rc, e) = cni(&node, "ADD", "ctr-x", &path, &text);
        assert_eq!((rc, e["code"].as_u64()), (1, Some(want)), "{text}: {e}");
        assert!(e["msg"].as_str().is_some_and(|m| !m.is_empty()));
    }
    // A network the daemon does not have: refused, and nothing is left behind.
    let (rc, e) = cni(&node, "ADD", "ctr-x", &path, &conf(&node, "1.0.0", "").replace("\"pods\"", "\"nope\""));
    assert_eq!((rc, e["code"].as_u64()), (1, Some(7)), "{e}");
    assert!(e["details"].as_str().unwrap_or("").contains("\"nope\""), "{e}");
    assert!(!links(&node).contains("ps"), "the failed ADD left nothing:\n{}", links(&node));
    let eth = pa.exec("ip", &["link", "show", "eth0"]).unwrap();
    assert!(!eth.status.success(), "no eth0 in the pod after a failed ADD");
}

#[test]
fn twenty_concurrent_adds_get_distinct_addresses_and_dels_release_them() {
    if !root_or_skip() {
        return;
    }
    let mut node = Node::new("ps-cnic").unwrap();
    node.start(&dataplane()).unwrap();
    node.ctl_ok(&["network", "put", "pods", "--gateway", "198.18.8.1/24"]).unwrap();
    let pods: Vec<NetNs> = (0..20).map(|i| NetNs::new(&format!("ps-cnic{i}")).unwrap()).collect();
    let c = conf(&node, "1.1.0", "");
    let node = std::sync::Arc::new(node);
    let run_all = |cmd: &'static str| -> Vec<(i32, Value)> {
        let handles: Vec<_> = pods
            .iter()
            .enumerate()
            .map(|(i, ns)| {
                let (node, c, path) = (node.clone(), c.clone(), format!("/run/netns/{}", ns.name()));
                std::thread::spawn(move || cni(&node, cmd, &format!("ctr-{i}"), &path, &c))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    };
    let added = run_all("ADD");
    let mut addrs: Vec<String> = added
        .iter()
        .map(|(rc, r)| {
            assert_eq!(*rc, 0, "{r}");
            r["ips"][0]["address"].as_str().unwrap().to_string()
        })
        .collect();
    addrs.sort();
    addrs.dedup();
    assert_eq!(addrs.len(), 20, "every pod its own address");
    assert!(pods[0].exec("ping", &["-c", "1", "-W", "2", "-q", "198.18.8.1"]).unwrap().status.success());
    assert!(run_all("DEL").iter().all(|(rc, _)| *rc == 0));
    let left = node.ctl_ok(&["--json", "pod", "list"]).unwrap();
    assert!(!left.contains("ctr-"), "{left}");
    assert!(!links(&node).contains("ps"), "{}", links(&node));
}

#[test]
fn gc_keeps_the_valid_attachments_and_removes_the_rest() {
    if !root_or_skip() {
        return;
    }
    let mut node = Node::new("ps-cnigc").unwrap();
    node.start(&dataplane()).unwrap();
    node.ctl_ok(&["network", "put", "pods", "--gateway", "198.18.10.1/24"]).unwrap();
    let pods: Vec<NetNs> = (0..3).map(|i| NetNs::new(&format!("ps-cnigc{i}")).unwrap()).collect();
    let path = |i: usize| format!("/run/netns/{}", pods[i].name());
    let c = conf(&node, "1.1.0", "");
    // A MAC asked through runtimeConfig (any case), CNI_ARGS in containerd's order and
    // in another, with keys the plugin does not know.
    let with_mac = conf(&node, "1.1.0", r#","runtimeConfig":{"Mac":"02:00:c6:12:0a:63","PortMappings":[]}"#);
    let args = [
        "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=gc-0",
        "K8S_POD_NAME=web-1;Vendor=x;IgnoreUnknown=true",
        "",
    ];
    for i in 0..3 {
        let conf = if i == 0 { &with_mac } else { &c };
        let (rc, r) = cni_args(&node, "ADD", &format!("gc-{i}"), &path(i), conf, args[i]);
        assert_eq!(rc, 0, "{r}");
    }
    let mac = pods[0].exec("cat", &["/sys/class/net/eth0/address"]).unwrap();
    assert_eq!(String::from_utf8_lossy(&mac.stdout).trim(), "02:00:c6:12:0a:63");
    let (rc, e) = cni_args(&node, "ADD", "gc-x", &path(0), &c, "Vendor=x");
    assert_eq!((rc, e["code"].as_u64()), (1, Some(4)), "unknown CNI_ARGS without IgnoreUnknown: {e}");

    // GC needs 1.1.0 and its list; with a list of two, the third goes.
    let (rc, e) = cni(&node, "GC", "", "", &conf(&node, "1.0.0", r#","cni.dev/valid-attachments":[]"#));
    assert_eq!((rc, e["code"].as_u64()), (1, Some(1)), "{e}");
    let (rc, e) = cni(&node, "GC", "", "", &c);
    assert_eq!((rc, e["code"].as_u64()), (1, Some(7)), "{e}");
    let keep = r#","cni.dev/valid-attachments":[{"containerID":"gc-0","ifname":"eth0"},{"containerID":"gc-2","ifname":"eth0"}]"#;
    let (rc, e) = cni(&node, "GC", "", "", &conf(&node, "1.1.0", keep));
    assert_eq!(rc, 0, "{e}");
    let left = node.ctl_ok(&["--json", "pod", "list"]).unwrap();
    assert!(left.contains("gc-0") && left.contains("gc-2") && !left.contains("gc-1"), "{left}");
    let l = links(&node);
    assert_eq!(l.lines().filter(|l| l.starts_with("ps")).count(), 2, "gc-1's veth is gone:\n{l}");
    let gone = pods[1].exec("ip", &["link", "show", "eth0"]).unwrap();
    assert!(!gone.status.success(), "and with it the pod's end");
    assert!(
        pods[0].exec("ping", &["-c", "1", "-W", "2", "-q", "198.18.10.1"]).unwrap().status.success(),
        "kept pods still forward"
    );

    // GC again changes nothing; the kept pods are DELeted normally.
    assert_eq!(cni(&node, "GC", "", "", &conf(&node, "1.1.0", keep)).0, 0);
    for i in [0, 2] {
        assert_eq!(cni(&node, "DEL", &format!("gc-{i}"), &path(i), &c).0, 0);
    }
    assert!(!links(&node).contains("ps"), "{}", links(&node));
}

#[test]
fn delegated_ipam_hands_out_the_addresses_and_gets_them_back() {
    if !root_or_skip() {
        return;
    }
    let mut node = Node::new("ps-cniipam").unwrap();
    node.start(&dataplane()).unwrap();
    node.ctl_ok(&["network", "put", "pods", "--gateway", "198.18.11.1/24"]).unwrap();
    let pods: Vec<NetNs> = (0..2).map(|i| NetNs::new(&format!("ps-cniipam{i}")).unwrap()).collect();
    let path = |i: usize| format!("/run/netns/{}", pods[i].name());
    let data = node.state_dir.join("ipam");
    let ipam = |subnet: &str| {
        format!(
            r#","ipam":{{"type":"host-local","ranges":[[{{"subnet":"{subnet}","rangeStart":"{}100","rangeEnd":"{}110"}}]],"dataDir":"{}"}}"#,
            &subnet[..subnet.len() - 4],
            &subnet[..subnet.len() - 4],
            data.display()
        )
    };
    let c = conf(&node, "1.0.0", &ipam("198.18.11.0/24"));
    let leases = || -> Vec<String> {
        std::fs::read_dir(data.join("k8s-pod-network"))
            .map(|d| {
                d.filter_map(|e| e.ok()?.file_name().into_string().ok()).filter(|n| n.starts_with("198.")).collect()
            })
            .unwrap_or_default()
    };

    let (rc, r) = cni(&node, "ADD", "ipam-0", &path(0), &c);
    assert_eq!(rc, 0, "{r}");
    assert_eq!(r["ips"][0]["address"], "198.18.11.100/24", "host-local's first address: {r}");
    assert_eq!(r["ips"][0]["gateway"], "198.18.11.1", "the switch is the gateway");
    assert_eq!(leases(), vec!["198.18.11.100".to_string()]);
    let list = node.ctl_ok(&["--json", "pod", "list"]).unwrap();
    assert!(list.contains("198.18.11.100/24"), "the daemon keeps the lease's address: {list}");
    assert!(pods[0].exec("ping", &["-c", "1", "-W", "2", "-q", "198.18.11.1"]).unwrap().status.success());
    assert_eq!(cni(&node, "CHECK", "ipam-0", &path(0), &c).0, 0);

    // A range outside the network's subnet: the daemon refuses, the lease is given back
    // and nothing is left in the pod or the node.
    let wrong = conf(&node, "1.0.0", &ipam("198.18.12.0/24"));
    let (rc, e) = cni(&node, "ADD", "ipam-1", &path(1), &wrong);
    assert_eq!((rc, e["code"].as_u64()), (1, Some(7)), "{e}");
    assert!(e["details"].as_str().unwrap_or("").contains("198.18.12.100/24"), "{e}");
    assert_eq!(leases(), vec!["198.18.11.100".to_string()], "the refused lease was released");
    assert!(!pods[1].exec("ip", &["link", "show", "eth0"]).unwrap().status.success());

    // DEL gives the lease back; the next pod gets it again.
    assert_eq!(cni(&node, "DEL", "ipam-0", &path(0), &c).0, 0);
    assert!(leases().is_empty(), "{:?}", leases());
    assert_eq!(cni(&node, "DEL", "ipam-0", "", &c).0, 0, "DEL again: host-local's DEL is idempotent too");
    let (rc, r) = cni(&node, "ADD", "ipam-1", &path(1), &c);
    assert_eq!((rc, r["ips"][0]["address"].as_str()), (0, Some("198.18.11.100/24")), "{r}");
    assert_eq!(cni(&node, "DEL", "ipam-1", &path(1), &c).0, 0);
    assert!(!links(&node).contains("ps"), "{}", links(&node));
}

#[test]
fn vhostuser_pods_get_a_socket_of_their_own_that_outlives_a_restart() {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    if !root_or_skip() {
        return;
    }
    let mut node = Node::new("ps-cnivh").unwrap();
    let dir = node.state_dir.with_extension("vh");
    let _ = std::fs::remove_dir_all(&dir);
    let config = format!("vhost_user_dir = \"{}\"\n{}", dir.display(), dataplane());
    node.start(&config).unwrap();
    node.ctl_ok(&["network", "put", "pods", "--gateway", "198.18.13.1/24", "--gateway", "2001:db8:13::1/64"]).unwrap();
    let pod = NetNs::new("ps-cnivh-a").unwrap();
    let path = format!("/run/netns/{}", pod.name());
    let c = conf(&node, "1.1.0", r#","mode":"vhostuser","vhostuser":{"uid":1234,"gid":5678}"#);

    let (rc, r) = cni(&node, "ADD", "vh-0", &path, &c);
    assert_eq!(rc, 0, "{r}");
    let socket = r["interfaces"][0]["socketPath"].as_str().unwrap().to_string();
    assert!(socket.starts_with(&dir.display().to_string()) && socket.len() < 108, "{socket}");
    assert_eq!(r["ips"][0]["address"], "198.18.13.2/24");
    assert_eq!(r["ips"][1]["address"], "2001:db8:13::2/64");
    assert_eq!(r["routes"][0]["gw"], "198.18.13.1");
    let meta = std::fs::metadata(&socket).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!((meta.uid(), meta.gid(), meta.mode() & 0o777), (1234, 5678, 0o600), "the pod's user owns it");
    let parent = std::fs::metadata(std::path::Path::new(&socket).parent().unwrap()).unwrap();
    assert_eq!((parent.uid(), parent.mode() & 0o777), (1234, 0o700), "a directory of its own");
    std::os::unix::net::UnixStream::connect(&socket).expect("the daemon listens on it");
    assert!(!pod.exec("ip", &["link", "show", "eth0"]).unwrap().status.success(), "no kernel interface in the pod");
    assert!(node.ctl_ok(&["pod", "list"]).unwrap().contains(&socket));
    assert_eq!(cni(&node, "CHECK", "vh-0", &path, &c).0, 0);
    let (rc, e) = cni(&node, "ADD", "vh-1", &path, &conf(&node, "1.0.0", r#","mode":"vhostuser""#));
    assert_eq!((rc, e["code"].as_u64()), (1, Some(1)), "socketPath needs 1.1.0: {e}");

    // A restart serves the socket again, from the state.
    node.stop().unwrap();
    assert!(!std::path::Path::new(&socket).exists(), "a stopped daemon leaves no socket behind");
    node.start(&config).unwrap();
    std::os::unix::net::UnixStream::connect(&socket).expect("served again after the restart");
    assert_eq!(cni(&node, "CHECK", "vh-0", &path, &c).0, 0);

    assert_eq!(cni(&node, "DEL", "vh-0", &path, &c).0, 0);
    assert!(!std::path::Path::new(&socket).parent().unwrap().exists(), "DEL removes the pod's directory");
    assert!(!node.ctl_ok(&["--json", "pod", "list"]).unwrap().contains("vh-0"));
    assert_eq!(cni(&node, "DEL", "vh-0", "", &c).0, 0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn gc_gives_a_stale_pods_lease_back_to_its_ipam_plugin() {
    if !root_or_skip() {
        return;
    }
    let mut node = Node::new("ps-cnigci").unwrap();
    node.start(&dataplane()).unwrap();
    node.ctl_ok(&["network", "put", "pods", "--gateway", "198.18.14.1/24"]).unwrap();
    let pod = NetNs::new("ps-cnigci-a").unwrap();
    // Debian's IPAM plugins (1.1.1) speak CNI up to 1.0.0 and GC is 1.1.0: a minimal
    // IPAM plugin of the test's own stands in, one lease, every call written down.
    let dir = node.state_dir.with_extension("ipam");
    std::fs::create_dir_all(&dir).unwrap();
    let calls = dir.join("calls");
    let plugin = dir.join("rec-ipam");
    std::fs::write(
        &plugin,
        format!(
            "#!/bin/sh\ncat >/dev/null\necho \"$CNI_COMMAND $CNI_CONTAINERID $CNI_IFNAME\" >> {}\n\
             [ \"$CNI_COMMAND\" = ADD ] && echo '{{\"cniVersion\":\"1.1.0\",\"ips\":[{{\"address\":\"198.18.14.50/24\"}}]}}'\n\
             exit 0\n",
            calls.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&plugin, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path_env = format!("{}:/usr/lib/cni", dir.display());
    let env = [("CNI_PATH", path_env.as_str())];
    let c = conf(&node, "1.1.0", r#","ipam":{"type":"rec-ipam"}"#);

    let (rc, r) = cni_env(&node, "ADD", "gci-0", &format!("/run/netns/{}", pod.name()), &c, &env);
    assert_eq!((rc, r["ips"][0]["address"].as_str()), (0, Some("198.18.14.50/24")), "{r}");
    let gc = conf(&node, "1.1.0", r#","ipam":{"type":"rec-ipam"},"cni.dev/valid-attachments":[]"#);
    let (rc, e) = cni_env(&node, "GC", "", "", &gc, &env);
    assert_eq!(rc, 0, "{e}");
    let log = std::fs::read_to_string(&calls).unwrap();
    assert_eq!(
        log.lines().collect::<Vec<_>>(),
        ["ADD gci-0 eth0", "DEL gci-0 eth0"],
        "the stale pod's lease, by its own ids"
    );
    assert!(!node.ctl_ok(&["--json", "pod", "list"]).unwrap().contains("gci-0"));
    assert!(!links(&node).contains("ps"), "{}", links(&node));
    let _ = std::fs::remove_dir_all(&dir);
}
