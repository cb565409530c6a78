//! What the end-to-end benchmarks need from the host: CPU time per core, receive NAPI
//! pinned to a core, and the peers they measure beside podswitchd (Open vSwitch with
//! AF_XDP ports, dpdk-testpmd), each a guard that stops what it started, by PID.

use anyhow::{bail, Context, Result};
use control::netns::NetNs;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One CPU's time since boot from /proc/stat, in jiffies (USER_HZ).
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuTimes {
    /// Busy: user, nice, system, hard and soft interrupts. Not idle, I/O wait or steal
    /// (time the hypervisor gave to another guest).
    pub busy: u64,
    /// In process context: user, nice, system (a thread's own work, a NAPI thread's
    /// too). Softirq work (a veth's receive run after a transmit) is not in it.
    pub process: u64,
}

/// Each CPU's times, from /proc/stat.
pub fn cpu_times() -> Result<Vec<CpuTimes>> {
    let s = std::fs::read_to_string("/proc/stat")?;
    Ok(s.lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .map(|l| {
            // user nice system idle iowait irq softirq steal (guest time is in user).
            let v: Vec<u64> = l.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
            let at = |i: usize| v.get(i).copied().unwrap_or(0);
            let process = at(0) + at(1) + at(2);
            CpuTimes { busy: process + at(5) + at(6), process }
        })
        .collect())
}

/// USER_HZ, the unit of /proc/stat.
pub const USER_HZ: f64 = 100.0;

/// Runs `sh -c script` in namespace `ns`.
pub fn sh_in(ns: &str, script: &str) -> Result<()> {
    control::netns::run("ip", &["netns", "exec", ns, "sh", "-c", script])
}

/// Makes `dev`'s receive NAPI (in namespace `ns`) a thread of its own, pinned to `core`.
pub fn pin_napi(ns: &str, dev: &str, core: usize) -> Result<()> {
    sh_in(ns, &format!("echo 1 > /sys/class/net/{dev}/threaded"))?;
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
                libc::CPU_SET(core, &mut set);
                libc::sched_setaffinity(pid, size_of::<libc::cpu_set_t>(), &set);
            }
        }
    }
    Ok(())
}

fn kill_and_wait(pid: i32, signal: i32) {
    // SAFETY: kill on the pid of a process this module started and has not reaped
    // (a daemon's pid from its own pidfile, or our child's).
    #[allow(unsafe_code)]
    unsafe {
        libc::kill(pid, signal)
    };
    // Wait for it to go, so that trials never overlap.
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::path::Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Open vSwitch 3 (Debian's), userspace datapath, on ports of `ns` as AF_XDP ports
/// (native XDP, copy mode), one PMD thread on a given core, its database and logs in
/// a directory of its own; stopped (by the PIDs in its pidfiles) when dropped.
pub struct Ovs {
    dir: PathBuf,
    ns_name: String,
    ctl: String,
}

/// Adds and brings up `vx0` in `ns`: a Linux VXLAN device, VNI 1 on port 4789, with
/// the VTEP MAC `mac`, sending from `local` over `dev`, learning nothing (peers and
/// their MACs are added as static FDB entries and neighbours).
pub fn add_kernel_vtep(ns: &NetNs, mac: &str, local: &str, dev: &str) -> Result<()> {
    ns.ip(&[
        "link",
        "add",
        "vx0",
        "address",
        mac,
        "type",
        "vxlan",
        "id",
        "1",
        "dstport",
        "4789",
        "local",
        local,
        "dev",
        dev,
        "nolearning",
    ])?;
    ns.ip(&["link", "set", "vx0", "up"])
}

/// Installs Debian packages (as root), for the peers a comparison measures.
pub fn install(packages: &[&str]) -> Result<()> {
    let out = Command::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(packages)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .output()
        .context("cannot run apt-get")?;
    if !out.status.success() {
        bail!("apt-get install {}: {}", packages.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// True if Open vSwitch is installed.
pub fn ovs_installed() -> bool {
    Command::new(OvsFlavor::Afxdp.vswitchd()).arg("--version").output().is_ok()
}

/// True if Open vSwitch's DPDK build is installed (Debian's openvswitch-switch-dpdk).
pub fn ovs_dpdk_installed() -> bool {
    Command::new(OvsFlavor::Dpdk.vswitchd()).arg("--version").output().is_ok()
}

/// Which Open vSwitch and which ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OvsFlavor {
    /// The plain build (what `/usr/sbin/ovs-vswitchd` is unless changed), `type=afxdp`
    /// ports: OVS's own AF_XDP netdev.
    Afxdp,
    /// The DPDK build, run by its own path (the Debian alternative is left alone),
    /// `type=dpdk` ports on DPDK's net_af_xdp driver; DPDK without hugepages.
    Dpdk,
}

impl OvsFlavor {
    fn vswitchd(self) -> &'static str {
        match self {
            OvsFlavor::Afxdp => "/usr/lib/openvswitch-switch/ovs-vswitchd",
            OvsFlavor::Dpdk => "/usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk",
        }
    }
}

impl Ovs {
    fn sh(dir: &str, cmd: &str, args: &[&str]) -> Result<()> {
        let out = Command::new(cmd)
            .args(args)
            .env("OVS_RUNDIR", dir)
            .env("OVS_LOGDIR", dir)
            .env("OVS_DBDIR", dir)
            .output()
            .with_context(|| format!("cannot run {cmd}: apt-get install openvswitch-switch"))?;
        if !out.status.success() {
            bail!("{cmd} {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    }

    /// Starts ovsdb-server and ovs-vswitchd, with bridge br0 (NORMAL) over `ports`, its
    /// one PMD thread on `pmd_core` (and for DPDK, its main lcore on `main_core`).
    pub fn start(ns: &NetNs, ports: &[&str], (pmd_core, main_core): (usize, usize), flavor: OvsFlavor) -> Result<Ovs> {
        let dir = std::env::temp_dir().join(format!("psb-ovs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let d = dir.display().to_string();
        let db = format!("unix:{d}/db.sock");
        Ovs::sh(&d, "ovsdb-tool", &["create", &format!("{d}/conf.db"), "/usr/share/openvswitch/vswitch.ovsschema"])?;
        Ovs::sh(
            &d,
            "ovsdb-server",
            &[
                &format!("--remote=punix:{d}/db.sock"),
                &format!("--pidfile={d}/ovsdb.pid"),
                "--detach",
                &format!("--log-file={d}/ovsdb.log"),
                &format!("{d}/conf.db"),
            ],
        )?;
        let mut ovs = Ovs { dir, ns_name: ns.name().to_string(), ctl: String::new() };
        Ovs::sh(&d, "ovs-vsctl", &[&format!("--db={db}"), "--no-wait", "init"])?;
        if flavor == OvsFlavor::Dpdk {
            // Without hugepages (as testpmd runs): OVS adds --in-memory unless
            // --legacy-mem is given, and --no-huge works only with the latter.
            let extra = format!("--no-huge --legacy-mem -m 1024 --no-pci --file-prefix psb-ovs-{}", std::process::id());
            Ovs::sh(
                &d,
                "ovs-vsctl",
                &[
                    &format!("--db={db}"),
                    "--no-wait",
                    "set",
                    "Open_vSwitch",
                    ".",
                    "other_config:dpdk-init=true",
                    &format!("other_config:dpdk-lcore-mask={:#x}", 1u64 << main_core),
                    &format!("other_config:dpdk-extra=\"{extra}\""),
                ],
            )?;
        }
        Ovs::sh(
            &d,
            "ip",
            &[
                "netns",
                "exec",
                ns.name(),
                flavor.vswitchd(),
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
            Ovs::sh(&d, "ovs-vsctl", &a)
        };
        vsctl(&["set", "Open_vSwitch", ".", &format!("other_config:pmd-cpu-mask={:#x}", 1u64 << pmd_core)])?;
        vsctl(&["add-br", "br0", "--", "set", "bridge", "br0", "datapath_type=netdev"])?;
        for (i, p) in ports.iter().enumerate() {
            match flavor {
                OvsFlavor::Afxdp => vsctl(&[
                    "add-port",
                    "br0",
                    p,
                    "--",
                    "set",
                    "interface",
                    p,
                    "type=afxdp",
                    "options:xdp-mode=native",
                ])?,
                OvsFlavor::Dpdk => vsctl(&[
                    "add-port",
                    "br0",
                    p,
                    "--",
                    "set",
                    "interface",
                    p,
                    "type=dpdk",
                    &format!("options:dpdk-devargs=net_af_xdp{i},iface={p}"),
                ])?,
            }
        }
        // The control socket is named after the program: ovs-vswitchd or ovs-vswitchd-dpdk.
        let program = flavor.vswitchd().rsplit('/').next().unwrap_or("ovs-vswitchd");
        let pid = std::fs::read_to_string(format!("{d}/vswitchd.pid"))?;
        ovs.ctl = format!("{d}/{program}.{}.ctl", pid.trim());
        Ok(ovs)
    }

    /// Adds a static MAC behind `port` to br0's FDB.
    pub fn fdb_add(&self, port: &str, mac: &str) -> Result<()> {
        Ovs::sh(&self.dir.display().to_string(), "ovs-appctl", &["-t", &self.ctl, "fdb/add", "br0", port, "0", mac])
    }
}

impl Drop for Ovs {
    fn drop(&mut self) {
        for pidfile in ["vswitchd.pid", "ovsdb.pid"] {
            if let Some(pid) =
                std::fs::read_to_string(self.dir.join(pidfile)).ok().and_then(|p| p.trim().parse::<i32>().ok())
            {
                kill_and_wait(pid, libc::SIGTERM);
            }
        }
        // The userspace datapath leaves its tap devices behind.
        for dev in ["br0", "ovs-netdev"] {
            let _ = control::netns::ip(&["-n", &self.ns_name, "link", "del", dev]);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// dpdk-testpmd (Debian's dpdk-dev package) forwarding between two interfaces of a
/// namespace through net_af_xdp, on one core; stopped with SIGINT when dropped.
pub struct Testpmd {
    child: Child,
}

/// True if dpdk-testpmd and the net_af_xdp driver are installed.
pub fn testpmd_installed() -> bool {
    Command::new("dpdk-testpmd").arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok()
}

impl Testpmd {
    /// Starts it in `ns` forwarding on `core`, its main thread (statistics, idle
    /// otherwise) on `main_core`, forwarding `a` ↔ `b` in `mode` ("io", or "mac" with
    /// the destination MAC set to `peer_mac`).
    pub fn start(
        ns: &NetNs,
        a: &str,
        b: &str,
        (core, main_core): (usize, usize),
        mode: &str,
        peer_mac: &str,
    ) -> Result<Testpmd> {
        let mut args: Vec<String> = vec![
            "netns".into(),
            "exec".into(),
            ns.name().into(),
            "dpdk-testpmd".into(),
            "-l".into(),
            format!("{main_core},{core}"),
            "--main-lcore".into(),
            main_core.to_string(),
            "--no-pci".into(),
            "--no-huge".into(),
            "-m".into(),
            "1024".into(),
            "--file-prefix".into(),
            format!("psb{}", std::process::id()),
            "--vdev".into(),
            format!("net_af_xdp0,iface={a}"),
            "--vdev".into(),
            format!("net_af_xdp1,iface={b}"),
            "--".into(),
            format!("--forward-mode={mode}"),
            "--auto-start".into(),
            "--stats-period=1".into(),
            "--nb-cores=1".into(),
        ];
        if mode == "mac" {
            args.push(format!("--eth-peer=1,{peer_mac}"));
            args.push(format!("--eth-peer=0,{peer_mac}"));
        }
        let mut child = Command::new("ip")
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot run dpdk-testpmd: apt-get install dpdk-dev librte-net-af-xdp23")?;
        // Started when it prints its first statistics.
        let mut out = child.stdout.take().expect("piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::Read;
            let mut buf = [0u8; 4096];
            let mut seen = String::new();
            while let Ok(n) = out.read(&mut buf) {
                if n == 0 {
                    break;
                }
                seen.push_str(&String::from_utf8_lossy(&buf[..n]));
                if seen.contains("Port statistics") {
                    let _ = tx.send(());
                    seen.clear();
                }
            }
        });
        if rx.recv_timeout(Duration::from_secs(20)).is_err() {
            let _ = child.kill();
            let _ = child.wait();
            bail!("dpdk-testpmd did not start forwarding within 20 s");
        }
        Ok(Testpmd { child })
    }
}

impl Drop for Testpmd {
    fn drop(&mut self) {
        // `ip netns exec` execs testpmd: the child's pid is testpmd's.
        kill_and_wait(self.child.id() as i32, libc::SIGINT);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
