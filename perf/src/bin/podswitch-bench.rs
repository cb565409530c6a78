//! `podswitch-bench l2`: pod-to-pod L2 forwarding, podswitchd beside the Linux bridge
//! on the same topology, interleaved rounds, medians.
//!
//! ```text
//!  [gen ns] gen0 ── dut0 [dut ns: podswitchd | br0] dut1 ── sink0 [sink ns]
//!   podswitch-pktgen send (core 0)                 drops as other-host, counts
//! ```
//!
//! The DUT's forwarding core is CPU 1 (podswitchd's worker; for the bridge, dut0's
//! receive NAPI, threaded and pinned). The generator runs flat out on CPU 0. CPU time
//! is read from /proc/stat for both cores; the generator's own time (its process's
//! user+system, from wait4) is subtracted, so "CPU ns/pkt" is what the DUT and the
//! sink's drop cost per delivered frame, wherever it ran.

use anyhow::{bail, Result};
use control::netns::{ip, NetNs};
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
fn sink_count(t: &Topo) -> Result<u64> {
    let out = t.sink.exec("cat", &["/sys/class/net/sink0/statistics/rx_packets"])?;
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

/// Busy and idle jiffies per CPU.
fn cpu_times() -> Result<Vec<(u64, u64)>> {
    let s = std::fs::read_to_string("/proc/stat")?;
    Ok(s.lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .map(|l| {
            let v: Vec<u64> = l.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
            let idle = v[3] + v[4];
            (v.iter().sum::<u64>() - idle, idle)
        })
        .collect())
}

#[derive(Debug, Clone, Copy)]
struct Trial {
    mpps: f64,
    cpu_ns_per_pkt: f64,
    dut_core_busy: f64,
    gen_core_busy: f64,
}

fn trial(t: &Topo, seconds: f64) -> Result<Trial> {
    let before = sink_count(t)?;
    let c0 = cpu_times()?;
    let start = Instant::now();
    let child = Command::new("ip")
        .args(["netns", "exec", t.gen.name()])
        .arg(perf::sibling_bin("podswitch-pktgen")?)
        .args(["send", "--dev", "gen0", "--seconds", &seconds.to_string(), "--core", &GEN_CORE.to_string()])
        .args(["--dst-mac", &t.sink_mac])
        .stdout(Stdio::null())
        .spawn()?;
    let mut status = 0;
    // SAFETY: rusage is plain data; wait4 on our own child's pid.
    #[allow(unsafe_code)]
    let mut ru: libc::rusage = unsafe { core::mem::zeroed() };
    // SAFETY: status and ru are live locals.
    #[allow(unsafe_code)]
    unsafe {
        libc::wait4(child.id() as i32, &mut status, 0, &mut ru)
    };
    let wall = start.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(100));
    let c1 = cpu_times()?;
    let got = sink_count(t)? - before;
    let hz = 100.0; // USER_HZ
    let busy: Vec<f64> = c0.iter().zip(&c1).map(|(a, b)| (b.0 - a.0) as f64 / hz).collect();
    let gen_cpu = (ru.ru_utime.tv_sec as f64 + ru.ru_utime.tv_usec as f64 / 1e6)
        + (ru.ru_stime.tv_sec as f64 + ru.ru_stime.tv_usec as f64 / 1e6);
    let total: f64 = busy.iter().sum();
    Ok(Trial {
        mpps: got as f64 / wall / 1e6,
        cpu_ns_per_pkt: (total - gen_cpu).max(0.0) * 1e9 / got.max(1) as f64,
        dut_core_busy: busy[DUT_CORE] / wall,
        gen_core_busy: busy[GEN_CORE] / wall,
    })
}

fn with_podswitch(t: &Topo, seconds: f64) -> Result<Trial> {
    let cfg = std::env::temp_dir().join(format!("psb-{}.toml", std::process::id()));
    // A state directory of the run's own: the config's topology, never a saved one.
    let state = std::env::temp_dir().join(format!("psb-{}.state", std::process::id()));
    let _ = std::fs::remove_dir_all(&state);
    std::fs::write(
        &cfg,
        format!(
            "state_dir = \"{}\"\ncontrol_socket = \"{}\"\n\
             [dataplane]\ncores = [{DUT_CORE}]\nidle = \"poll\"\nring_size = 2048\n\
             [[networks]]\nname = \"pods\"\n[[ports]]\nname = \"dut0\"\nnetwork = \"pods\"\n\
             [[ports]]\nname = \"dut1\"\nnetwork = \"pods\"\nmacs = [\"{}\"]\n",
            state.display(),
            state.join("podswitchd.sock").display(),
            t.sink_mac
        ),
    )?;
    let log = std::env::temp_dir().join(format!("psb-{}.log", std::process::id()));
    let mut d = Command::new("ip")
        .args(["netns", "exec", t.dut.name()])
        .arg(perf::sibling_bin("podswitchd")?)
        .arg("--config")
        .arg(&cfg)
        .env("NO_COLOR", "1")
        .stderr(std::fs::File::create(&log)?)
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&log)?.contains("podswitchd ready") {
        if Instant::now() > deadline || d.try_wait()?.is_some() {
            let _ = d.kill();
            bail!("podswitchd did not start:\n{}", std::fs::read_to_string(&log)?);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let r = trial(t, seconds);
    // SAFETY: kill on our own child's pid.
    #[allow(unsafe_code)]
    unsafe {
        libc::kill(d.id() as i32, libc::SIGTERM)
    };
    d.wait()?;
    let _ = std::fs::remove_dir_all(&state);
    r
}

fn pin_napi_thread(t: &Topo, dev: &str) -> Result<()> {
    t.dut.run("sh", &["-c", &format!("echo 1 > /sys/class/net/{dev}/threaded")])?;
    std::thread::sleep(Duration::from_millis(50));
    let want = format!("napi/{dev}-");
    for e in std::fs::read_dir("/proc")?.flatten() {
        let Ok(comm) = std::fs::read_to_string(e.path().join("comm")) else { continue };
        if comm.starts_with(&want) {
            let pid: i32 = e.file_name().to_string_lossy().parse()?;
            // SAFETY: a cpu_set_t on the stack, filled with CPU_SET.
            #[allow(unsafe_code)]
            unsafe {
                let mut set: libc::cpu_set_t = core::mem::zeroed();
                libc::CPU_SET(DUT_CORE, &mut set);
                libc::sched_setaffinity(pid, size_of::<libc::cpu_set_t>(), &set);
            }
        }
    }
    Ok(())
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
    let dir = std::env::temp_dir().join(format!("psb-ovs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let d = dir.display().to_string();
    let db = format!("unix:{d}/db.sock");
    let sh = |cmd: &str, args: &[&str]| -> Result<()> {
        let out =
            Command::new(cmd).args(args).env("OVS_RUNDIR", &d).env("OVS_LOGDIR", &d).env("OVS_DBDIR", &d).output()?;
        if !out.status.success() {
            bail!("{cmd} {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    };
    sh("ovsdb-tool", &["create", &format!("{d}/conf.db"), "/usr/share/openvswitch/vswitch.ovsschema"])?;
    sh(
        "ovsdb-server",
        &[
            &format!("--remote=punix:{d}/db.sock"),
            &format!("--pidfile={d}/ovsdb.pid"),
            "--detach",
            &format!("--log-file={d}/ovsdb.log"),
            &format!("{d}/conf.db"),
        ],
    )?;
    let result = (|| -> Result<Trial> {
        sh("ovs-vsctl", &[&format!("--db={db}"), "--no-wait", "init"])?;
        sh(
            "ip",
            &[
                "netns",
                "exec",
                t.dut.name(),
                "ovs-vswitchd",
                &db,
                &format!("--pidfile={d}/vswitchd.pid"),
                "--detach",
                &format!("--log-file={d}/vswitchd.log"),
            ],
        )?;
        let vsctl = |args: &[&str]| {
            let mut a = vec![format!("--db={db}")];
            a.extend(args.iter().map(|s| s.to_string()));
            let a: Vec<&str> = a.iter().map(String::as_str).collect();
            sh("ovs-vsctl", &a)
        };
        vsctl(&["set", "Open_vSwitch", ".", &format!("other_config:pmd-cpu-mask={:#x}", 1 << DUT_CORE)])?;
        vsctl(&["add-br", "br0", "--", "set", "bridge", "br0", "datapath_type=netdev"])?;
        for p in ["dut0", "dut1"] {
            vsctl(&["add-port", "br0", p, "--", "set", "interface", p, "type=afxdp", "options:xdp-mode=native"])?;
        }
        let ctl = format!("{d}/ovs-vswitchd.{}.ctl", std::fs::read_to_string(format!("{d}/vswitchd.pid"))?.trim());
        sh("ovs-appctl", &["-t", &ctl, "fdb/add", "br0", "dut1", "0", &t.sink_mac])?;
        std::thread::sleep(Duration::from_secs(1));
        trial(t, seconds)
    })();
    for pidfile in ["vswitchd.pid", "ovsdb.pid"] {
        let Some(pid) = std::fs::read_to_string(dir.join(pidfile)).ok().and_then(|p| p.trim().parse::<i32>().ok())
        else {
            continue;
        };
        // SAFETY: kill on the pid of a daemon this function started.
        #[allow(unsafe_code)]
        unsafe {
            libc::kill(pid, libc::SIGTERM)
        };
        // Wait for it to go, so that trials never overlap.
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::path::Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    // The userspace datapath leaves its tap devices behind.
    for dev in ["br0", "ovs-netdev"] {
        let _ = t.dut.ip(&["link", "del", dev]);
    }
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) != Some("l2") {
        bail!("usage: podswitch-bench l2 [ROUNDS] [SECONDS]");
    }
    let rounds: usize = args.get(2).map_or(Ok(3), |s| s.parse())?;
    let seconds: f64 = args.get(3).map_or(Ok(3.0), |s| s.parse())?;
    let t = topo()?;
    let _ = &t.sink;
    let mut results: Vec<(&str, Vec<Trial>)> =
        vec![("podswitchd", vec![]), ("linux-bridge", vec![]), ("ovs-afxdp", vec![])];
    if Command::new("ovs-vswitchd").arg("--version").output().is_err() {
        println!("ovs-vswitchd not installed (apt-get install openvswitch-switch): measuring without it");
        results.pop();
    }
    if let Ok(only) = std::env::var("PSB_ONLY") {
        results.retain(|(n, _)| *n == only);
    }
    for round in 0..rounds {
        for (name, trials) in results.iter_mut() {
            let r = match *name {
                "podswitchd" => with_podswitch(&t, seconds)?,
                "linux-bridge" => with_bridge(&t, seconds)?,
                _ => with_ovs(&t, seconds)?,
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
