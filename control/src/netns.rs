//! Network namespaces and veth pairs, through iproute2's `ip`, for `--demo` and the
//! integration tests. Every object is removed when its guard drops.

use anyhow::{bail, Context, Result};
use std::os::fd::AsRawFd;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Runs `ip ARGS`, failing with its stderr.
pub fn ip(args: &[&str]) -> Result<()> {
    run("ip", args)
}

/// Runs a command, failing with its stderr.
pub fn run(cmd: &str, args: &[&str]) -> Result<()> {
    let out = Command::new(cmd).args(args).output().with_context(|| format!("cannot run {cmd}: is it installed?"))?;
    if !out.status.success() {
        bail!("{cmd} {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// A network namespace named `<prefix>-<pid>-<n>`, deleted on drop.
#[derive(Debug)]
pub struct NetNs {
    name: String,
}

impl NetNs {
    /// Creates a uniquely named namespace with its loopback up.
    pub fn new(prefix: &str) -> Result<NetNs> {
        // Relaxed: only uniqueness matters.
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("{prefix}-{}-{n}", std::process::id());
        ip(&["netns", "add", &name])?;
        let ns = NetNs { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip -n NS ARGS`.
    pub fn ip(&self, args: &[&str]) -> Result<()> {
        let mut a = vec!["-n", self.name.as_str()];
        a.extend_from_slice(args);
        ip(&a)
    }

    /// Runs `cmd ARGS` inside the namespace; returns its output whatever its status.
    pub fn exec(&self, cmd: &str, args: &[&str]) -> Result<Output> {
        Command::new("ip")
            .args(["netns", "exec", &self.name, cmd])
            .args(args)
            .output()
            .with_context(|| format!("cannot run {cmd} in {}", self.name))
    }

    /// Runs `cmd ARGS` inside the namespace, failing with its stderr.
    pub fn run(&self, cmd: &str, args: &[&str]) -> Result<()> {
        let out = self.exec(cmd, args)?;
        if !out.status.success() {
            bail!(
                "{cmd} {} in {} failed: {}{}",
                args.join(" "),
                self.name,
                String::from_utf8_lossy(&out.stdout).trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// Moves the calling thread into the namespace. Threads and processes it starts
    /// afterwards are in it too; other threads are not affected.
    pub fn enter(&self) -> Result<()> {
        let f = std::fs::File::open(format!("/run/netns/{}", self.name))?;
        // SAFETY: setns on a valid namespace descriptor only changes this thread's
        // network namespace.
        #[allow(unsafe_code)]
        let r = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
        if r != 0 {
            bail!("setns into {}: {}", self.name, std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Runs `f` on a new thread inside the namespace and returns its result. Sockets
    /// made by `f` stay in the namespace wherever they are used afterwards.
    pub fn within<R: Send + 'static>(&self, f: impl FnOnce() -> R + Send + 'static) -> Result<R> {
        let path = format!("/run/netns/{}", self.name);
        std::thread::spawn(move || -> Result<R> {
            let file = std::fs::File::open(&path)?;
            // SAFETY: as in `enter`; this thread exists only to run `f`.
            #[allow(unsafe_code)]
            let r = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            if r != 0 {
                bail!("setns into {path}: {}", std::io::Error::last_os_error());
            }
            Ok(f())
        })
        .join()
        .map_err(|_| anyhow::anyhow!("thread in namespace panicked"))?
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        // Interfaces inside go with it.
        let _ = ip(&["netns", "del", &self.name]);
    }
}

/// A pod's attachment: a veth whose switch end (`host_if`) is in `node` (or the
/// caller's namespace) and whose other end is `pod_if` in `pod`, with `queues` queues
/// on both ends (one per worker), up, with AF_XDP-friendly settings on the pod end:
/// TX checksum offload off (a partial checksum would reach the other pod as garbage,
/// since AF_XDP carries bytes, not skb metadata) and IPv6 DAD off (tests start at once).
pub fn pod_veth(node: Option<&NetNs>, host_if: &str, pod: &NetNs, pod_if: &str, queues: u32) -> Result<()> {
    let q = queues.to_string();
    let mut args: Vec<&str> = Vec::new();
    if let Some(n) = node {
        args.extend(["-n", n.name()]);
    }
    args.extend(["link", "add", host_if, "numtxqueues", &q, "numrxqueues", &q, "type", "veth", "peer", "name", pod_if]);
    args.extend(["numtxqueues", &q, "numrxqueues", &q, "netns", pod.name()]);
    ip(&args)?;
    let host = |a: &[&str]| -> Result<()> {
        match node {
            Some(n) => n.ip(a),
            None => ip(a),
        }
    };
    // The switch end carries no addresses of its own: no IPv6 link-local chatter.
    let sysctl = format!("net.ipv6.conf.{host_if}.disable_ipv6=1");
    match node {
        Some(n) => n.run("sysctl", &["-qw", &sysctl])?,
        None => run("sysctl", &["-qw", &sysctl])?,
    }
    host(&["link", "set", host_if, "up"])?;
    pod.run("sysctl", &["-qw", &format!("net.ipv6.conf.{pod_if}.accept_dad=0")])?;
    pod.run("ethtool", &["-K", pod_if, "tx", "off"])?;
    pod.ip(&["link", "set", pod_if, "up"])?;
    Ok(())
}
