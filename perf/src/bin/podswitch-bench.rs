//! `podswitch-bench l2`: pod-to-pod L2 forwarding, podswitchd beside the Linux bridge
//! on the same topology, interleaved rounds, medians.
//!
//! `podswitch-bench vxlan`: pod to pod across two nodes over a VXLAN underlay, two
//! podswitchd nodes beside two Linux nodes (a `vxlan` device and routes each); see
//! [`vx_topo`]. `podswitch-bench vxlan-encap`: node a alone (route and encapsulate),
//! counted on node b's underlay interface, so that each DUT has the DUT core to itself.
//!
//! ```text
//!  [gen ns] gen0 ── dut0 [dut ns: podswitchd | br0] dut1 ── sink0 [sink ns]
//!   podswitch-pktgen send (core 0)                 drops as other-host, counts
//! ```
//!
//! The DUT's forwarding core is CPU 1 (podswitchd's worker; for the bridge, dut0's
//! receive NAPI, threaded and pinned). The generator runs flat out on CPU 0. CPU time
//! is read from /proc/stat for both cores; the generator's own time (CPU 0's time in
//! process context, as `podswitch-compare` counts it) is subtracted, so "CPU ns/pkt"
//! is what the DUT and the sink's drop cost per delivered frame, wherever it ran. (Not
//! the generator process's rusage: with tick accounting, that also holds the softirq
//! work run on its core while it was current, such as an AF_XDP DUT's receive.)

use anyhow::{bail, Result};
use control::netns::{ip, NetNs};
use perf::daemon::Podswitchd;
use perf::host::{self, cpu_times};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const GEN_CORE: usize = 0;
const DUT_CORE: usize = 1;

struct Topo {
    gen: NetNs,
    dut: NetNs,
    sink: NetNs,
    sink_mac: String,
}

/// The MAC frames are sent to: behind the sink's port (static in both DUTs), but not
/// the sink's own address, so the sink's kernel drops each frame as soon as it looks
/// (PACKET_OTHERHOST) — the cheapest way for a kernel to receive and discard an skb.
const SINK_MAC: &str = "02:00:00:00:00:99";

/// Frames that reached the sink's veth (the veth's own receive counter).
/// Frames received on `dev` in `ns`.
fn sink_count(ns: &NetNs, dev: &str) -> Result<u64> {
    let out = ns.exec("cat", &[&format!("/sys/class/net/{dev}/statistics/rx_packets")])?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
}

fn topo() -> Result<Topo> {
    let gen = NetNs::new("psb-gen")?;
    let dut = NetNs::new("psb-dut")?;
    let sink = NetNs::new("psb-sink")?;
    ip(&["-n", gen.name(), "link", "add", "gen0", "type", "veth", "peer", "name", "dut0", "netns", dut.name()])?;
    ip(&["-n", dut.name(), "link", "add", "dut1", "type", "veth", "peer", "name", "sink0", "netns", sink.name()])?;
    for (ns, dev) in [(&gen, "gen0"), (&dut, "dut0"), (&dut, "dut1"), (&sink, "sink0")] {
        ns.run("sysctl", &["-qw", &format!("net.ipv6.conf.{dev}.disable_ipv6=1")])?;
        ns.ip(&["link", "set", dev, "up"])?;
    }
    let sink_mac = SINK_MAC.to_string();
    Ok(Topo { gen, dut, sink, sink_mac })
}

#[derive(Debug, Clone, Copy)]
struct Trial {
    mpps: f64,
    cpu_ns_per_pkt: f64,
    dut_core_busy: f64,
    gen_core_busy: f64,
}

fn trial(t: &Topo, seconds: f64) -> Result<Trial> {
    trial_between(&t.gen, (&t.sink, "sink0"), &["--dst-mac", &t.sink_mac], seconds)
}

/// Runs the generator in `gen` (out of gen0, with `args`) for `seconds`; counts what
/// reaches sink0 in `sink`.
fn trial_between(gen: &NetNs, sink: (&NetNs, &str), args: &[&str], seconds: f64) -> Result<Trial> {
    let before = sink_count(sink.0, sink.1)?;
    let c0 = cpu_times()?;
    let start = Instant::now();
    let status = Command::new("ip")
        .args(["netns", "exec", gen.name()])
        .arg(perf::sibling_bin("podswitch-pktgen")?)
        .args(["send", "--dev", "gen0", "--seconds", &seconds.to_string(), "--core", &GEN_CORE.to_string()])
        .args(args)
        .stdout(Stdio::null())
        .status()?;
    if !status.success() {
        bail!("podswitch-pktgen send failed ({status})");
    }
    let wall = start.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(100));
    let c1 = cpu_times()?;
    let got = sink_count(sink.0, sink.1)? - before;
    let hz = host::USER_HZ;
    let busy: Vec<f64> = c0.iter().zip(&c1).map(|(a, b)| (b.busy - a.busy) as f64 / hz).collect();
    let gen_cpu = (c1[GEN_CORE].process - c0[GEN_CORE].process) as f64 / hz;
    let total: f64 = busy.iter().sum();
    Ok(Trial {
        mpps: got as f64 / wall / 1e6,
        cpu_ns_per_pkt: (total - gen_cpu).max(0.0) * 1e9 / got.max(1) as f64,
        dut_core_busy: busy[DUT_CORE] / wall,
        gen_core_busy: busy[GEN_CORE] / wall,
    })
}

fn with_podswitch(t: &Topo, seconds: f64) -> Result<Trial> {
    let _d = Podswitchd::start(
        &t.dut,
        "l2",
        &format!(
            "[dataplane]\ncores = [{DUT_CORE}]\nidle = \"poll\"\nring_size = 2048\n\
             [[networks]]\nname = \"pods\"\n[[ports]]\nname = \"dut0\"\nnetwork = \"pods\"\n\
             [[ports]]\nname = \"dut1\"\nnetwork = \"pods\"\nmacs = [\"{}\"]\n",
            t.sink_mac
        ),
    )?;
    trial(t, seconds)
}

fn pin_napi_thread(t: &Topo, dev: &str) -> Result<()> {
    pin_napi(&t.dut, dev)
}

/// Makes `dev`'s receive NAPI (in `ns`) a thread of its own, pinned to the DUT core.
fn pin_napi(ns: &NetNs, dev: &str) -> Result<()> {
    host::pin_napi(ns.name(), dev, DUT_CORE)
}

fn with_bridge(t: &Topo, seconds: f64) -> Result<Trial> {
    let d = &t.dut;
    d.ip(&["link", "add", "lbr0", "type", "bridge"])?;
    d.ip(&["link", "set", "dut0", "master", "lbr0"])?;
    d.ip(&["link", "set", "dut1", "master", "lbr0"])?;
    d.ip(&["link", "set", "lbr0", "up"])?;
    d.run("bridge", &["fdb", "add", &t.sink_mac, "dev", "dut1", "master", "static"])?;
    // GRO on gives the veth a NAPI context, which frames sent with XDP need; threaded
    // and pinned, the bridge's forwarding runs on the DUT core.
    d.run("ethtool", &["-K", "dut0", "gro", "on"])?;
    pin_napi_thread(t, "dut0")?;
    let r = trial(t, seconds);
    d.run("sh", &["-c", "echo 0 > /sys/class/net/dut0/threaded"])?;
    d.run("ethtool", &["-K", "dut0", "gro", "off"])?;
    d.ip(&["link", "del", "lbr0"])?;
    r
}

/// Open vSwitch, userspace datapath, the two veths as AF_XDP ports (native XDP, copy
/// mode), one PMD thread on the DUT core, NORMAL (learning) with the sink's MAC
/// installed in its FDB: the same L2 job podswitchd does.
fn with_ovs(t: &Topo, seconds: f64) -> Result<Trial> {
    let ovs = host::Ovs::start(&t.dut, &["dut0", "dut1"], (DUT_CORE, GEN_CORE), host::OvsFlavor::Afxdp)?;
    ovs.fdb_add("dut1", &t.sink_mac)?;
    std::thread::sleep(Duration::from_secs(1));
    trial(t, seconds)
}

/// Node a's gateway MAC (the generator sends to it), the VTEP MACs, for both DUTs.
const GW_A: &str = "02:00:00:00:aa:01";
const VTEP_A: &str = "02:00:00:00:aa:02";
const VTEP_B: &str = "02:00:00:00:bb:02";

/// Two nodes, a pod on each:
///
/// ```text
///  [gen] gen0 ── a0 [node a] ua ══ ub [node b] b1 ── sink0 [sink]
///  198.18.1.10     gw 198.18.1.1   198.19.0.1/.2 gw 198.18.2.1    198.18.2.20 (SINK_MAC)
/// ```
///
/// The generator sends UDP from 198.18.1.10 to 198.18.2.20 to node a's gateway; node a
/// routes it into VXLAN (VNI 1) to node b, which decapsulates and routes it to the
/// sink's MAC. Both nodes' forwarding runs on the DUT core: both podswitchd workers
/// there, or both Linux nodes' receive NAPI threads (a0 and ub) pinned there.
///
/// With `encap_only`, node b is no DUT: what node a sends is counted as it arrives on
/// ub (the kernel there drops it), so the DUT core runs node a alone.
struct VxTopo {
    gen: NetNs,
    a: NetNs,
    b: NetNs,
    sink: NetNs,
    encap_only: bool,
}

fn vx_topo(encap_only: bool) -> Result<VxTopo> {
    let t = VxTopo {
        gen: NetNs::new("psb-gen")?,
        a: NetNs::new("psb-a")?,
        b: NetNs::new("psb-b")?,
        sink: NetNs::new("psb-sink")?,
        encap_only,
    };
    ip(&["-n", t.gen.name(), "link", "add", "gen0", "type", "veth", "peer", "name", "a0", "netns", t.a.name()])?;
    ip(&["-n", t.a.name(), "link", "add", "ua", "type", "veth", "peer", "name", "ub", "netns", t.b.name()])?;
    ip(&["-n", t.b.name(), "link", "add", "b1", "type", "veth", "peer", "name", "sink0", "netns", t.sink.name()])?;
    for (ns, dev) in [(&t.gen, "gen0"), (&t.a, "a0"), (&t.a, "ua"), (&t.b, "ub"), (&t.b, "b1"), (&t.sink, "sink0")] {
        ns.run("sysctl", &["-qw", &format!("net.ipv6.conf.{dev}.disable_ipv6=1")])?;
        ns.ip(&["link", "set", dev, "up"])?;
    }
    for (ns, dev, addr) in [(&t.a, "ua", "198.19.0.1/24"), (&t.b, "ub", "198.19.0.2/24")] {
        ns.ip(&["addr", "add", addr, "dev", dev])?;
        ns.run("ethtool", &["-K", dev, "tx", "off"])?;
    }
    if encap_only {
        // ub answers no ARP while its XDP sink drops everything: node a knows its MAC.
        let out = t.b.exec("cat", &["/sys/class/net/ub/address"])?;
        let mac = String::from_utf8_lossy(&out.stdout).trim().to_string();
        t.a.ip(&["neigh", "replace", "198.19.0.2", "lladdr", &mac, "dev", "ua", "nud", "permanent"])?;
    }
    Ok(t)
}

fn vx_trial(t: &VxTopo, seconds: f64) -> Result<Trial> {
    let args = ["--dst-mac", GW_A, "--src-ip", "198.18.1.10", "--dst-ip", "198.18.2.20"];
    if !t.encap_only {
        return trial_between(&t.gen, (&t.sink, "sink0"), &args, seconds);
    }
    // ub drops in XDP what node a sends (veth counts it in rx_packets): the kernel's
    // stack on node b would cost more per frame than node a's forwarding.
    let mut sink = Command::new("ip")
        .args(["netns", "exec", t.b.name()])
        .arg(perf::sibling_bin("podswitch-pktgen")?)
        .args(["sink", "--dev", "ub", "--seconds", &(seconds + 60.0).to_string()])
        .stdout(Stdio::null())
        .spawn()?;
    std::thread::sleep(Duration::from_millis(300));
    let r = trial_between(&t.gen, (&t.b, "ub"), &args, seconds);
    let _ = sink.kill();
    let _ = sink.wait();
    r
}

fn vx_podswitch(t: &VxTopo, seconds: f64) -> Result<Trial> {
    // Two nodes' workers share the DUT core (the machine has two CPUs): each sleeps
    // when its rings are empty ("backoff"), so the other gets the core, as a user
    // must configure workers that share a core: 5% more packets than two spinning
    // workers in an interleaved run (perf/RESULTS.md). Node a alone has the core to
    // itself and polls.
    let idle = if t.encap_only { "poll" } else { "backoff" };
    let dataplane = format!("[dataplane]\ncores = [{DUT_CORE}]\nidle = \"{idle}\"\nring_size = 2048\n");
    let _a = Podswitchd::start(
        &t.a,
        "a",
        &format!(
            "{dataplane}[node]\nname = \"a\"\npod_cidrs = [\"198.18.1.0/24\"]\nunderlay = [\"198.19.0.1\"]\n\
             vtep_mac = \"{VTEP_A}\"\n[uplink]\ninterface = \"ua\"\nnetwork = \"pods\"\n\
             [[networks]]\nname = \"pods\"\ngateway = [\"198.18.1.1/24\"]\ngateway_mac = \"{GW_A}\"\n\
             [[ports]]\nname = \"a0\"\nnetwork = \"pods\"\n\
             [[peers]]\nname = \"b\"\nunderlay = [\"198.19.0.2\"]\nvtep_mac = \"{VTEP_B}\"\n\
             pod_cidrs = [\"198.18.2.0/24\"]\n"
        ),
    )?;
    let _b = (!t.encap_only)
        .then(|| {
            Podswitchd::start(
                &t.b,
                "b",
                &format!(
                    "{dataplane}[node]\nname = \"b\"\npod_cidrs = [\"198.18.2.0/24\"]\nunderlay = [\"198.19.0.2\"]\n\
             vtep_mac = \"{VTEP_B}\"\n[uplink]\ninterface = \"ub\"\nnetwork = \"pods\"\n\
             [[networks]]\nname = \"pods\"\ngateway = [\"198.18.2.1/24\"]\n\
             [[ports]]\nname = \"b1\"\nnetwork = \"pods\"\nmacs = [\"{SINK_MAC}\"]\naddresses = [\"198.18.2.20\"]\n\
             [[peers]]\nname = \"a\"\nunderlay = [\"198.19.0.1\"]\nvtep_mac = \"{VTEP_A}\"\n\
             pod_cidrs = [\"198.18.1.0/24\"]\n"
                ),
            )
        })
        .transpose()?;
    // The underlay next hops resolve within milliseconds; leave them a moment.
    std::thread::sleep(Duration::from_millis(500));
    vx_trial(t, seconds)
}

fn vx_linux(t: &VxTopo, seconds: f64) -> Result<Trial> {
    let (a, b) = (&t.a, &t.b);
    let setup = || -> Result<()> {
        let nodes = [(a, VTEP_A, "198.19.0.1", "ua"), (b, VTEP_B, "198.19.0.2", "ub")];
        for (ns, mac, local, dev) in nodes.into_iter().take(if t.encap_only { 1 } else { 2 }) {
            host::add_kernel_vtep(ns, mac, local, dev)?;
            for k in ["all", "default", "vx0"] {
                ns.run("sysctl", &["-qw", &format!("net.ipv4.conf.{k}.rp_filter=0")])?;
            }
            ns.run("sysctl", &["-qw", "net.ipv4.ip_forward=1"])?;
        }
        a.ip(&["link", "set", "a0", "address", GW_A])?;
        a.ip(&["addr", "add", "198.18.1.1/24", "dev", "a0"])?;
        a.ip(&["neigh", "add", "198.18.2.254", "lladdr", VTEP_B, "dev", "vx0", "nud", "permanent"])?;
        a.ip(&["route", "add", "198.18.2.0/24", "via", "198.18.2.254", "dev", "vx0", "onlink"])?;
        a.run("bridge", &["fdb", "append", VTEP_B, "dev", "vx0", "dst", "198.19.0.2"])?;
        if t.encap_only {
            // Node a alone: receive NAPI on a0 (the generator's frames) on the DUT core.
            a.run("ethtool", &["-K", "a0", "gro", "on"])?;
            return pin_napi(a, "a0");
        }
        b.ip(&["addr", "add", "198.18.2.1/24", "dev", "b1"])?;
        b.ip(&["neigh", "add", "198.18.2.20", "lladdr", SINK_MAC, "dev", "b1", "nud", "permanent"])?;
        // Receive NAPI on a0 (the generator's frames) and ub (the VXLAN), threaded and
        // pinned to the DUT core; GRO on gives a veth its NAPI.
        for (ns, dev) in [(a, "a0"), (b, "ub")] {
            ns.run("ethtool", &["-K", dev, "gro", "on"])?;
            pin_napi(ns, dev)?;
        }
        Ok(())
    };
    let r = setup().and_then(|_| vx_trial(t, seconds));
    for (ns, dev) in [(a, "a0"), (b, "ub")] {
        let _ = ns.run("sh", &["-c", &format!("echo 0 > /sys/class/net/{dev}/threaded")]);
        let _ = ns.run("ethtool", &["-K", dev, "gro", "off"]);
    }
    let _ = a.ip(&["addr", "del", "198.18.1.1/24", "dev", "a0"]);
    let _ = b.ip(&["addr", "del", "198.18.2.1/24", "dev", "b1"]);
    for ns in [a, b] {
        let _ = ns.ip(&["link", "del", "vx0"]);
    }
    r
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let which = args.get(1).map(String::as_str);
    if !matches!(which, Some("l2" | "vxlan" | "vxlan-encap")) {
        bail!("usage: podswitch-bench l2|vxlan|vxlan-encap [ROUNDS] [SECONDS]");
    }
    let rounds: usize = args.get(2).map_or(Ok(3), |s| s.parse())?;
    let seconds: f64 = args.get(3).map_or(Ok(3.0), |s| s.parse())?;
    let (l2, vx) = match which {
        Some("l2") => (Some(topo()?), None),
        _ => (None, Some(vx_topo(which == Some("vxlan-encap"))?)),
    };
    let mut results: Vec<(&str, Vec<Trial>)> = if vx.is_some() {
        vec![("podswitchd", vec![]), ("linux-vxlan", vec![])]
    } else {
        vec![("podswitchd", vec![]), ("linux-bridge", vec![]), ("ovs-afxdp", vec![])]
    };
    if l2.is_some() && !host::ovs_installed() {
        println!("ovs-vswitchd not installed (apt-get install openvswitch-switch): measuring without it");
        results.pop();
    }
    if let Ok(only) = std::env::var("PSB_ONLY") {
        results.retain(|(n, _)| *n == only);
    }
    for round in 0..rounds {
        for (name, trials) in results.iter_mut() {
            let r = match (*name, &l2, &vx) {
                ("podswitchd", Some(t), _) => with_podswitch(t, seconds)?,
                ("podswitchd", _, Some(t)) => vx_podswitch(t, seconds)?,
                ("linux-bridge", Some(t), _) => with_bridge(t, seconds)?,
                ("linux-vxlan", _, Some(t)) => vx_linux(t, seconds)?,
                (_, Some(t), _) => with_ovs(t, seconds)?,
                _ => unreachable!("every DUT has its topology"),
            };
            println!(
                "round {round} {name:<13} {:>6.3} Mpps  {:>7.1} CPU ns/pkt  DUT core {:>3.0}%  gen core {:>3.0}%",
                r.mpps,
                r.cpu_ns_per_pkt,
                r.dut_core_busy * 100.0,
                r.gen_core_busy * 100.0
            );
            trials.push(r);
        }
    }
    println!("\n{:<13} {:>12} {:>12} {:>16}", "DUT", "Mpps (med)", "spread", "CPU ns/pkt (med)");
    let mut meds = Vec::new();
    for (name, trials) in &results {
        let mut m: Vec<f64> = trials.iter().map(|t| t.mpps).collect();
        let mut c: Vec<f64> = trials.iter().map(|t| t.cpu_ns_per_pkt).collect();
        let (lo, hi) = (m.iter().cloned().fold(f64::MAX, f64::min), m.iter().cloned().fold(0.0, f64::max));
        let (mm, cm) = (median(&mut m), median(&mut c));
        println!("{name:<13} {mm:>12.3} {:>12} {cm:>16.1}", format!("{lo:.2}-{hi:.2}"));
        meds.push((mm, cm));
    }
    if results.first().map(|r| r.0) == Some("podswitchd") {
        for (i, (name, _)) in results.iter().enumerate().skip(1) {
            println!(
                "podswitchd / {name}: {:.2}x the packet rate, {:.2}x the CPU per packet",
                meds[0].0 / meds[i].0,
                meds[0].1 / meds[i].1
            );
        }
    }
    Ok(())
}
