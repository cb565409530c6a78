//! `podswitch-cni-bench [PODS]`: ADD and DEL latency of the podswitch CNI plugin beside
//! the reference `bridge` plugin with `host-local` IPAM (Debian's
//! containernetworking-plugins), run the way a runtime runs them: a fresh process per
//! call, configuration on stdin, for PODS pod namespaces each. Prints p50 and p99.
//!
//! Both plugins run from a process inside one node namespace (podswitchd lives there
//! too), so neither pays for `ip netns exec`.

use anyhow::{bail, Context, Result};
use control::netns::NetNs;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CNI_PATH: &str = "/usr/lib/cni";

fn call(plugin: &Path, cmd: &str, id: &str, netns: &str, conf: &str) -> Result<Duration> {
    let start = Instant::now();
    let mut child = Command::new(plugin)
        .env("CNI_COMMAND", cmd)
        .env("CNI_CONTAINERID", id)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", CNI_PATH)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    child.stdin.take().context("stdin")?.write_all(conf.as_bytes())?;
    let out = child.wait_with_output()?;
    let took = start.elapsed();
    if !out.status.success() {
        bail!(
            "{} {cmd} {id}: {}{}",
            plugin.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(took)
}

/// The bench's daemon and scratch directory: killed and removed however the run ends.
struct Daemon {
    child: std::process::Child,
    dir: std::path::PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = Command::new("ip").args(["link", "del", "psc0"]).output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn percentiles(mut v: Vec<Duration>) -> (f64, f64) {
    v.sort();
    let at = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize].as_secs_f64() * 1e3;
    (at(0.5), at(0.99))
}

fn main() -> Result<()> {
    let n: usize = std::env::args().nth(1).map_or(Ok(200), |s| s.parse())?;
    let bridge = Path::new(CNI_PATH).join("bridge");
    if !bridge.exists() {
        bail!("{} not found: apt-get install containernetworking-plugins", bridge.display());
    }
    let ours = perf::sibling_bin("podswitch")?;
    let node = NetNs::new("psc-node")?;
    let pods: Vec<NetNs> = (0..n).map(|i| NetNs::new(&format!("psc{i}"))).collect::<Result<_>>()?;
    let paths: Vec<String> = pods.iter().map(|p| format!("/run/netns/{}", p.name())).collect();
    node.enter()?;

    let dir = std::env::temp_dir().join(format!("psc-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let socket = dir.join("podswitchd.sock");
    let cfg = dir.join("podswitchd.toml");
    // 64-frame rings: room for every pod in the UMEM.
    std::fs::write(
        &cfg,
        format!(
            "state_dir = \"{}\"\ncontrol_socket = \"{}\"\nlog_level = \"warn\"\n[dataplane]\ncores = [1]\n\
             idle = \"backoff\"\nring_size = 64\nframe_size = 2048\nhugepages = \"off\"\numem_frames = {}\n\
             max_ports = {}\n[[networks]]\nname = \"pods\"\ngateway = [\"198.18.0.1/16\"]\n",
            dir.display(),
            socket.display(),
            (n as u32 + 8) * 64 + 1024,
            n + 8
        ),
    )?;
    let child = Command::new(perf::sibling_bin("podswitchd")?)
        .arg("--config")
        .arg(&cfg)
        .stderr(std::fs::File::create(dir.join("podswitchd.log"))?)
        .spawn()?;
    let mut d = Daemon { child, dir: dir.clone() };
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        if Instant::now() > deadline || d.child.try_wait()?.is_some() {
            bail!("podswitchd did not start: {}", std::fs::read_to_string(dir.join("podswitchd.log"))?);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let ours_conf = format!(
        r#"{{"cniVersion":"1.0.0","name":"bench","type":"podswitch","socket":"{}","network":"pods"}}"#,
        socket.display()
    );
    let bridge_conf = format!(
        r#"{{"cniVersion":"1.0.0","name":"bench","type":"bridge","bridge":"psc0","isGateway":true,
            "ipam":{{"type":"host-local","subnet":"198.19.0.0/16","dataDir":"{}"}}}}"#,
        dir.join("ipam").display()
    );

    let mut rows = Vec::new();
    for (name, plugin, conf) in
        [("podswitch", ours.as_path(), &ours_conf), ("bridge + host-local", bridge.as_path(), &bridge_conf)]
    {
        let mut add = Vec::new();
        let mut del = Vec::new();
        for (i, p) in paths.iter().enumerate() {
            add.push(call(plugin, "ADD", &format!("bench-{i}"), p, conf)?);
        }
        for (i, p) in paths.iter().enumerate() {
            del.push(call(plugin, "DEL", &format!("bench-{i}"), p, conf)?);
        }
        rows.push((name, percentiles(add), percentiles(del)));
    }
    println!("{n} pods, one call at a time\n");
    println!("{:<22} {:>10} {:>10} {:>10} {:>10}", "plugin", "ADD p50", "ADD p99", "DEL p50", "DEL p99");
    for (name, a, d) in &rows {
        println!("{name:<22} {:>8.1}ms {:>8.1}ms {:>8.1}ms {:>8.1}ms", a.0, a.1, d.0, d.1);
    }
    println!(
        "\npodswitch / bridge: ADD p50 {:.2}x, DEL p50 {:.2}x the time",
        rows[0].1 .0 / rows[1].1 .0,
        rows[0].2 .0 / rows[1].2 .0
    );
    drop(d);
    Ok(())
}
