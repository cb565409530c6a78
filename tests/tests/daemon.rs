//! The daemon as a user meets it: the demo, the attach modes, and refusals that say
//! what to do.

use podswitch_tests::node::podswitchd_path;
use podswitch_tests::{root_or_skip, worker_core, Node};
use std::process::Command;

#[test]
fn demo_pings_between_its_pods_and_cleans_up() {
    if !root_or_skip() {
        return;
    }
    let before = Command::new("ip").args(["netns", "list"]).output().unwrap().stdout;
    let out =
        Command::new(podswitchd_path()).args(["--demo", "--demo-core", &worker_core().to_string()]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "demo failed:\n{text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(text.matches("0% packet loss").count(), 6, "{text}");
    assert!(text.contains("MAC addresses learned: 3"), "{text}");
    assert!(text.contains("0 awaiting tx completion") && !text.contains("UNBALANCED"), "{text}");
    let after = Command::new("ip").args(["netns", "list"]).output().unwrap().stdout;
    let leftover: Vec<_> =
        String::from_utf8_lossy(&after).lines().filter(|l| l.starts_with("psdemo")).map(String::from).collect();
    let was: Vec<_> =
        String::from_utf8_lossy(&before).lines().filter(|l| l.starts_with("psdemo")).map(String::from).collect();
    assert_eq!(leftover, was, "the demo left namespaces behind");
}

#[test]
fn generic_xdp_mode_forwards_too() {
    if !root_or_skip() {
        return;
    }
    let mut node = Node::new("ps-gen").unwrap();
    let a = node.pod("pod0", Some("198.18.4.1"), Some("2001:db8:4::1"), 1500, 1).unwrap();
    let _b = node.pod("pod1", Some("198.18.4.2"), Some("2001:db8:4::2"), 1500, 1).unwrap();
    node.start(&format!(
        "[dataplane]\ncores = [{}]\nidle = \"backoff\"\nring_size = 512\nhugepages = \"off\"\nxdp_mode = \"generic\"\n\
         [[networks]]\nname = \"n\"\n[[ports]]\nname = \"pod0\"\nnetwork = \"n\"\n[[ports]]\nname = \"pod1\"\nnetwork = \"n\"\n",
        worker_core()
    ))
    .unwrap();
    let out = node.ns.exec("ip", &["-d", "link", "show", "dev", "pod0"]).unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("xdpgeneric"), "attached in generic mode");
    assert!(a.ping("198.18.4.2", 3).unwrap());
    assert!(a.ping("2001:db8:4::2", 3).unwrap());
}

#[test]
fn a_port_whose_receive_runs_in_a_napi_thread_gets_a_warning() {
    if !root_or_skip() {
        return;
    }
    let mut node = Node::new("ps-napi").unwrap();
    let a = node.pod("pod0", Some("198.18.4.9"), None, 1500, 1).unwrap();
    let _b = node.pod("pod1", Some("198.18.4.10"), None, 1500, 1).unwrap();
    // GRO gives the veth a NAPI; threaded, it runs in a kernel thread of its own.
    node.ns.run("ethtool", &["-K", "pod0", "gro", "on"]).unwrap();
    node.ns.run("sh", &["-c", "echo 1 > /sys/class/net/pod0/threaded"]).unwrap();
    node.start(&format!(
        "[dataplane]\ncores = [{}]\nidle = \"backoff\"\nring_size = 512\nhugepages = \"off\"\n\
         [[networks]]\nname = \"n\"\n[[ports]]\nname = \"pod0\"\nnetwork = \"n\"\n[[ports]]\nname = \"pod1\"\nnetwork = \"n\"\n",
        worker_core()
    ))
    .unwrap();
    assert!(a.ping("198.18.4.10", 3).unwrap(), "it still forwards");
    let log = node.log_text();
    let warned =
        |port: &str| log.lines().any(|l| l.contains("threaded NAPI") && l.contains(&format!("ifname=\"{port}\"")));
    assert!(warned("pod0"), "the threaded port is named:\n{log}");
    assert!(!warned("pod1"), "only that one:\n{log}");
    assert!(log.contains("echo 0 > /sys/class/net/pod0/threaded"), "with the fix:\n{log}");
}

#[test]
fn too_few_queues_and_missing_interfaces_are_refused_with_advice() {
    if !root_or_skip() {
        return;
    }
    let mut node = Node::new("ps-refuse").unwrap();
    let _a = node.pod("pod0", None, None, 1500, 1).unwrap();
    let cfg = |ports: &str| {
        format!("[dataplane]\ncores = [0, 1]\nidle = \"backoff\"\nring_size = 512\nhugepages = \"off\"\n[[networks]]\nname = \"n\"\n{ports}")
    };
    let err = node.start(&cfg("[[ports]]\nname = \"pod0\"\nnetwork = \"n\"\n")).unwrap_err().to_string();
    assert!(err.contains("has 1 receive queue(s) but there are 2 workers") && err.contains("numrxqueues 2"), "{err}");
    let err = node.start(&cfg("[[ports]]\nname = \"nope0\"\nnetwork = \"n\"\n")).unwrap_err().to_string();
    assert!(err.contains("\"nope0\" does not exist") && err.contains("create it first"), "{err}");
    // Nothing was attached by the refused starts.
    let out = node.ns.exec("ip", &["-d", "link", "show", "dev", "pod0"]).unwrap();
    assert!(!String::from_utf8_lossy(&out.stdout).contains("xdp"));
}

#[test]
fn bad_config_files_get_a_precise_error_and_exit_non_zero() {
    // No root needed: the daemon stops at the configuration.
    let dir = std::env::temp_dir().join(format!("ps-badcfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (text, want) in [
        ("[dataplane]\ncores = [0]\nring_sise = 512\n", "unknown field `ring_sise`"),
        ("[dataplane]\ncores = [0]\n[[ports]]\nname = \"a\"\nnetwork = \"nope\"\n", "network \"nope\" is not defined"),
        ("this is not toml", "expected"),
    ] {
        let path = dir.join("bad.toml");
        std::fs::write(&path, text).unwrap();
        let out = Command::new(podswitchd_path()).arg("--config").arg(&path).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "accepted:\n{text}");
        assert!(err.contains(want) && err.contains("bad.toml"), "for:\n{text}\ngot:\n{err}");
    }
    let out = Command::new(podswitchd_path()).args(["--config", "/nonexistent/podswitch.toml"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read /nonexistent/podswitch.toml"));
    let _ = std::fs::remove_dir_all(&dir);
}
