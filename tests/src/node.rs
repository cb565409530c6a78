//! A node: a network namespace running `podswitchd`, and pods attached to it.

use crate::metrics::Metrics;
use crate::NetNs;
use anyhow::{bail, Context, Result};
use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The `podswitchd` binary the workspace built (next to the test binary's `deps/`).
pub fn podswitchd_path() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let p = dir.join("podswitchd");
    assert!(p.exists(), "{} not found: build the workspace first (`cargo build --workspace`)", p.display());
    p
}

/// A pod: its namespace, interface and addresses.
#[derive(Debug)]
pub struct Pod {
    /// Namespace.
    pub ns: NetNs,
    /// Port (switch-side interface) name in the node.
    pub port: String,
    /// IPv4 address, if any.
    pub v4: Option<String>,
    /// IPv6 address, if any.
    pub v6: Option<String>,
    /// MAC of the pod's eth0.
    pub mac: String,
}

impl Pod {
    /// Pings `dst` `count` times; true if every echo was answered.
    pub fn ping(&self, dst: &str, count: u32) -> Result<bool> {
        let c = count.to_string();
        let out = self.ns.exec("ping", &["-c", &c, "-i", "0.2", "-W", "2", "-q", dst])?;
        Ok(out.status.success())
    }

    /// Pings `dst` once with a short wait; true if answered.
    pub fn ping_once(&self, dst: &str) -> Result<bool> {
        let out = self.ns.exec("ping", &["-c", "1", "-W", "1", "-q", dst])?;
        Ok(out.status.success())
    }
}

/// A namespace running `podswitchd` with a given config. Stopped with SIGTERM on drop.
pub struct Node {
    /// The node's namespace.
    pub ns: NetNs,
    child: Option<Child>,
    log: PathBuf,
    config: PathBuf,
    /// The daemon's state directory (kept across restarts of this node's daemon).
    pub state_dir: PathBuf,
    /// The daemon's control socket.
    pub socket: PathBuf,
    metrics_port: Option<u16>,
}

impl Node {
    /// A node namespace, no daemon yet (add pods first).
    pub fn new(prefix: &str) -> Result<Node> {
        let ns = NetNs::new(prefix)?;
        let dir = std::env::temp_dir();
        let log = dir.join(format!("{}.log", ns.name()));
        let config = dir.join(format!("{}.toml", ns.name()));
        let state_dir = dir.join(format!("{}.state", ns.name()));
        let _ = std::fs::remove_dir_all(&state_dir);
        let socket = state_dir.join("podswitchd.sock");
        Ok(Node { ns, child: None, log, config, state_dir, socket, metrics_port: None })
    }

    /// Adds a pod: namespace, veth with `queues` queues (switch end `port` in the node,
    /// `eth0` in the pod), MTU, addresses (/24 and /64).
    pub fn pod(&self, port: &str, v4: Option<&str>, v6: Option<&str>, mtu: u32, queues: u32) -> Result<Pod> {
        let ns = NetNs::new(&format!("{}-{port}", self.ns.name()))?;
        crate::pod_veth(Some(&self.ns), port, &ns, "eth0", queues)?;
        let m = mtu.to_string();
        self.ns.ip(&["link", "set", port, "mtu", &m])?;
        ns.ip(&["link", "set", "eth0", "mtu", &m])?;
        if let Some(a) = v4 {
            ns.ip(&["addr", "add", &format!("{a}/24"), "dev", "eth0"])?;
        }
        match v6 {
            Some(a) => ns.ip(&["addr", "add", &format!("{a}/64"), "dev", "eth0", "nodad"])?,
            // No IPv6 wanted: no link-local chatter (MLD, RS) either.
            None => ns.run("sysctl", &["-qw", "net.ipv6.conf.eth0.disable_ipv6=1"])?,
        }
        let out = ns.exec("cat", &["/sys/class/net/eth0/address"])?;
        // /sys in `ip netns exec` is remounted for the namespace, so this is eth0's.
        let mac = String::from_utf8_lossy(&out.stdout).trim().to_string();
        Ok(Pod { ns, port: port.into(), v4: v4.map(Into::into), v6: v6.map(Into::into), mac })
    }

    /// Starts `podswitchd` with `config` (TOML; `metrics_address = "127.0.0.1:0"`, the
    /// node's state directory and control socket are added) and waits until it is ready.
    pub fn start(&mut self, config: &str) -> Result<()> {
        let text = format!(
            "metrics_address = \"127.0.0.1:0\"\nlog_level = \"info\"\nstate_dir = \"{}\"\ncontrol_socket = \"{}\"\n{config}",
            self.state_dir.display(),
            self.socket.display()
        );
        std::fs::write(&self.config, text)?;
        let log = std::fs::File::create(&self.log)?;
        let child = Command::new("ip")
            .args(["netns", "exec", self.ns.name()])
            .arg(podswitchd_path())
            .arg("--config")
            .arg(&self.config)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting podswitchd")?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = self.log_text();
            if text.contains("podswitchd ready") {
                if let Some(port) = text
                    .lines()
                    .find_map(|l| l.split("metrics on http://127.0.0.1:").nth(1))
                    .and_then(|r| r.split('/').next())
                    .and_then(|p| p.parse().ok())
                {
                    self.metrics_port = Some(port);
                }
                return Ok(());
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                self.child = None;
                bail!("podswitchd exited ({status}) before it was ready:\n{text}");
            }
            if Instant::now() > deadline {
                bail!("podswitchd not ready after 20 s:\n{text}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Everything the daemon logged so far.
    pub fn log_text(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// Scrapes the metrics endpoint.
    pub fn metrics(&self) -> Result<Metrics> {
        Metrics::parse(&self.metrics_text()?)
    }

    /// The metrics endpoint's text.
    pub fn metrics_text(&self) -> Result<String> {
        let port = self.metrics_port.context("daemon has no metrics endpoint")?;
        self.ns.within(move || crate::metrics::scrape(port))?
    }

    /// Runs `podswitchctl --socket SOCKET ARGS...` (from the test's namespace: the
    /// socket is a file, reachable from any).
    pub fn ctl(&self, args: &[&str]) -> Result<std::process::Output> {
        Command::new(podswitchd_path().with_file_name("podswitchctl"))
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .output()
            .context("running podswitchctl")
    }

    /// Runs podswitchctl and returns its stdout; fails with its stderr if it fails.
    pub fn ctl_ok(&self, args: &[&str]) -> Result<String> {
        let out = self.ctl(args)?;
        if !out.status.success() {
            bail!("podswitchctl {args:?} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The daemon's pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Kills the daemon with SIGKILL (a crash) and reaps it.
    pub fn kill9(&mut self) -> Result<()> {
        let mut child = self.child.take().context("daemon is not running")?;
        child.kill()?;
        child.wait()?;
        Ok(())
    }

    /// Sends SIGTERM and waits for exit; returns the exit status and the log.
    pub fn stop(&mut self) -> Result<(std::process::ExitStatus, String)> {
        let mut child = self.child.take().context("daemon is not running")?;
        // SAFETY: kill on the pid of a child we spawned and have not reaped.
        #[allow(unsafe_code)]
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(st) = child.try_wait()? {
                return Ok((st, self.log_text()));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("podswitchd did not stop within 10 s of SIGTERM:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = self.stop();
        }
        let _ = std::fs::remove_file(&self.config);
        let _ = std::fs::remove_dir_all(&self.state_dir);
        if !std::thread::panicking() {
            let _ = std::fs::remove_file(&self.log);
        } else {
            eprintln!("podswitchd log kept at {}:\n{}", self.log.display(), self.log_text());
        }
    }
}
