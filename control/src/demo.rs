//! `podswitchd --demo`: three pods on one network, pinged through the switch, then
//! everything removed. A new user's first command.

use crate::config::Config;
use crate::daemon::Daemon;
use crate::netns::{pod_veth, NetNs};
use anyhow::{bail, Result};
use std::time::Duration;

struct Pod {
    ns: NetNs,
    v4: String,
    v6: String,
}

/// Runs the demo; fails if a ping fails.
pub fn run(core: Option<usize>) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    #[allow(unsafe_code)]
    if unsafe { libc::geteuid() } != 0 {
        bail!("the demo creates network namespaces and loads XDP programs: run it as root");
    }
    let ncpu = std::thread::available_parallelism().map_or(1, |n| n.get());
    let core = core.unwrap_or(ncpu - 1);

    println!("podswitch demo: three pods on one network, switched by podswitchd on CPU {core}\n");
    let node = NetNs::new("psdemo-node")?;
    let mut pods = Vec::new();
    for (i, name) in ["a", "b", "c"].iter().enumerate() {
        let ns = NetNs::new(&format!("psdemo-{name}"))?;
        pod_veth(Some(&node), &format!("pod-{name}"), &ns, "eth0", 1)?;
        let v4 = format!("198.18.0.{}", i + 1);
        let v6 = format!("2001:db8::{}", i + 1);
        ns.ip(&["addr", "add", &format!("{v4}/24"), "dev", "eth0"])?;
        ns.ip(&["addr", "add", &format!("{v6}/64"), "dev", "eth0", "nodad"])?;
        println!("  pod {name}: namespace {}, eth0 {v4} {v6}", ns.name());
        pods.push(Pod { ns, v4, v6 });
    }
    // The switch runs in the node's namespace, where the pods' veths end.
    node.enter()?;
    // The demo's state and socket live only as long as the demo.
    let dir = std::env::temp_dir().join(format!("podswitch-demo-{}", std::process::id()));
    let state = dir.display().to_string();
    let socket = dir.join("podswitchd.sock").display().to_string();
    let cfg = Config::parse(&format!(
        r#"
        state_dir = "{state}"
        control_socket = "{socket}"
        [dataplane]
        cores = [{core}]
        idle = "backoff"
        ring_size = 512
        [[networks]]
        name = "demo"
        [[ports]]
        name = "pod-a"
        network = "demo"
        [[ports]]
        name = "pod-b"
        network = "demo"
        [[ports]]
        name = "pod-c"
        network = "demo"
        "#
    ))?;
    let daemon = Daemon::start(&cfg)?;
    println!("\n  podswitchd is up: 1 worker, 3 AF_XDP ports, network \"demo\"\n");
    std::thread::sleep(Duration::from_millis(100));

    let mut failed = 0;
    for (from, to) in [(0, 1), (0, 2), (1, 2)] {
        for (fam, dst) in [("IPv4", &pods[to].v4), ("IPv6", &pods[to].v6)] {
            let out = pods[from].ns.exec("ping", &["-c", "3", "-i", "0.2", "-W", "1", dst])?;
            let text = String::from_utf8_lossy(&out.stdout);
            let summary = text.lines().find(|l| l.contains("packet loss")).unwrap_or("no answer").trim();
            let ok = out.status.success();
            failed += usize::from(!ok);
            let names = ["a", "b", "c"];
            println!("  ping {fam} {} -> {}: {summary} {}", names[from], names[to], if ok { "" } else { "FAILED" });
        }
    }

    let view = daemon.view().clone();
    println!("\n  port     rx pkts  tx pkts  flooded");
    for p in &view.ports() {
        let c = &view.workers[0].ports[p.id as usize];
        println!("  {:<8} {:>7}  {:>7}  {:>7}", p.name, c.rx_packets.get(), c.tx_packets.get(), c.tx_flood.get());
    }
    println!("  MAC addresses learned: {}", view.tables.load().fdb.len());
    let report = daemon.stop();
    let _ = std::fs::remove_dir_all(&dir);
    println!("\n  stopped: {report}");
    drop(pods);
    drop(node);
    println!("  namespaces and veths removed");
    if failed > 0 {
        bail!("{failed} ping run(s) failed");
    }
    println!("\nAll pings answered. Next: write a config (see README) and run `podswitchd --config FILE`.");
    Ok(())
}
