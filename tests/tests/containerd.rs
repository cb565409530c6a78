//! containerd itself attaches containers to podswitch: the test starts Debian's
//! containerd on its own socket and directories, installs the plugin and its conflist
//! with scripts/install-cni.sh into directories of its own (mounted over the standard
//! /etc/cni/net.d and /opt/cni/bin in a private mount namespace, where `ctr` looks), and
//! runs busybox containers with `ctr run --cni`. They get their addresses from
//! podswitchd, ping each other and the node over IPv4 and IPv6, and when they stop,
//! `ctr`'s CNI DEL leaves no veth and no address behind.

use podswitch_tests::{podswitchd_path, root_or_skip, worker_core, Node};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A containerd of the test's own, stopped (with every container it ran) when dropped.
struct Containerd {
    child: Child,
    dir: PathBuf,
    ns: String,
    running: Vec<(String, Child)>,
}

impl Containerd {
    /// Starts containerd with root, state and sockets under `dir`; `ctr` runs inside the
    /// network namespace `ns` (the node, where the plugin makes the veths).
    fn start(dir: &Path, ns: &str) -> Containerd {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).unwrap();
        let config = dir.join("config.toml");
        std::fs::write(
            &config,
            format!(
                "version = 2\nroot = \"{d}/root\"\nstate = \"{d}/state\"\n\
                 disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
                 [grpc]\naddress = \"{d}/containerd.sock\"\n[ttrpc]\naddress = \"{d}/containerd.sock.ttrpc\"\n\
                 [debug]\naddress = \"{d}/debug.sock\"\n",
                d = dir.display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("containerd.log")).unwrap();
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&config)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("containerd (apt-get install containerd; scripts/deps.sh does)");
        let c = Containerd { child, dir: dir.to_path_buf(), ns: ns.to_string(), running: vec![] };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !c.ctr(&["version"]).status.success() {
            assert!(Instant::now() < deadline, "containerd did not start:\n{}", c.log());
            std::thread::sleep(Duration::from_millis(100));
        }
        c
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default()
    }

    fn ctr_command(&self) -> Command {
        let mut c = Command::new("ctr");
        c.arg("--address").arg(self.dir.join("containerd.sock"));
        c
    }

    fn ctr(&self, args: &[&str]) -> Output {
        self.ctr_command().args(args).output().unwrap()
    }

    /// `ctr run --rm --cni` of a busybox container sleeping `secs`, in the foreground
    /// as a runtime would: its CNI ADD runs before the task starts, its DEL after it
    /// exits. The CNI directories are ours, mounted where `ctr` reads them.
    fn run(&mut self, id: &str, rootfs: &Path, cni: &Path, secs: u32) {
        let script = format!(
            "mount --bind {c}/net.d /etc/cni/net.d && mount --bind {c}/bin /opt/cni/bin && exec \"$@\"",
            c = cni.display()
        );
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns, "unshare", "-m", "--propagation", "private", "sh", "-c", &script, "sh"])
            .arg("ctr")
            .arg("--address")
            .arg(self.dir.join("containerd.sock"))
            .args(["run", "--rm", "--cni", "--null-io", "--env", "PATH=/bin", "--rootfs"])
            .arg(rootfs)
            .args([id, "/bin/sleep", &secs.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        self.running.push((id.to_string(), child));
    }

    /// Runs `args` inside running container `id`.
    fn exec(&self, id: &str, exec_id: &str, args: &[&str]) -> Output {
        let mut c = self.ctr_command();
        c.args(["task", "exec", "--exec-id", exec_id, id]).args(args);
        c.output().unwrap()
    }

    /// Kills container `id` and waits until its `ctr run` is done (CNI DEL included).
    fn stop(&mut self, id: &str) -> Output {
        let i = self.running.iter().position(|(n, _)| n == id).expect("a container the test started");
        let (_, mut child) = self.running.remove(i);
        self.ctr(&["task", "kill", "--signal", "SIGKILL", id]);
        let deadline = Instant::now() + Duration::from_secs(20);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("ctr run {id} did not finish within 20 s of SIGKILL");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        child.wait_with_output().unwrap()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        for (id, mut child) in std::mem::take(&mut self.running) {
            self.ctr(&["task", "kill", "--signal", "SIGKILL", &id]);
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
            self.ctr(&["task", "delete", "--force", &id]);
            self.ctr(&["container", "delete", &id]);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A root filesystem with static busybox and the applets the test uses.
fn busybox_rootfs(dir: &Path) {
    for d in ["bin", "proc", "sys", "dev", "tmp", "etc"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", dir.join("bin/busybox")).expect("busybox-static (scripts/deps.sh installs it)");
    for applet in ["sh", "sleep", "ping", "ip"] {
        std::os::unix::fs::symlink("busybox", dir.join("bin").join(applet)).unwrap();
    }
}

/// The pods podswitchd has attached: container id → addresses.
fn pods(node: &Node) -> Vec<(String, Vec<String>)> {
    let v: Value = serde_json::from_str(&node.ctl_ok(&["--json", "pod", "list"]).unwrap()).unwrap();
    v["pods"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|p| {
                    let addrs = p["addresses"].as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string());
                    (p["pod"]["container_id"].as_str().unwrap().to_string(), addrs.collect())
                })
                .collect()
        })
        .unwrap_or_default()
}

fn wait_for_pod(node: &Node, ctd: &Containerd, container_id: &str) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some((_, a)) = pods(node).into_iter().find(|(c, _)| c == container_id) {
            return a;
        }
        assert!(Instant::now() < deadline, "{container_id} not attached within 30 s:\n{}", ctd.log());
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn bare(cidr: &str) -> &str {
    cidr.split('/').next().unwrap()
}

#[test]
fn containerd_starts_containers_that_get_addresses_ping_and_leave_nothing() {
    if !root_or_skip() {
        return;
    }
    let mut node = Node::new("ps-ctd").unwrap();
    node.start(&format!(
        "[dataplane]\ncores = [{}]\nidle = \"backoff\"\nring_size = 512\nhugepages = \"off\"\n\
         [host_port]\nname = \"psw0\"\nnetwork = \"pods\"\naddresses = [\"198.18.9.254/24\", \"2001:db8:9::fe/64\"]\n\
         [[networks]]\nname = \"pods\"\ngateway = [\"198.18.9.1/24\", \"2001:db8:9::1/64\"]\n",
        worker_core()
    ))
    .unwrap();

    let dir = std::env::temp_dir().join(format!("{}.ctd", node.ns.name()));
    let mut ctd = Containerd::start(&dir, node.ns.name());
    let rootfs = dir.join("rootfs");
    busybox_rootfs(&rootfs);
    let cni = dir.join("cni");
    let install = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/install-cni.sh"))
        .arg("--bin-from")
        .arg(podswitchd_path().parent().unwrap())
        .arg("--cni-bin-dir")
        .arg(cni.join("bin"))
        .arg("--cni-conf-dir")
        .arg(cni.join("net.d"))
        .arg("--socket")
        .arg(&node.socket)
        .output()
        .unwrap();
    assert!(install.status.success(), "{}", String::from_utf8_lossy(&install.stderr));
    // The runtime's own loopback plugin, which ctr runs for `lo`.
    std::fs::copy("/usr/lib/cni/loopback", cni.join("bin/loopback"))
        .expect("containernetworking-plugins (scripts/deps.sh installs it)");

    ctd.run("ca", &rootfs, &cni, 120);
    ctd.run("cb", &rootfs, &cni, 120);
    // ctr names the CNI container id NAMESPACE-ID.
    let a = wait_for_pod(&node, &ctd, "default-ca");
    let b = wait_for_pod(&node, &ctd, "default-cb");
    assert_eq!(a.len(), 2, "an IPv4 and an IPv6 address: {a:?}");
    assert!(a[0].starts_with("198.18.9.") && a[1].starts_with("2001:db8:9::"), "{a:?}");
    assert!(a.iter().all(|x| !b.contains(x)), "distinct addresses: {a:?} {b:?}");

    let ping = |id: &str, n: &str, dst: &str| {
        let out = ctd.exec(id, n, &["/bin/ping", "-c", "2", "-W", "2", dst]);
        assert!(
            out.status.success(),
            "{id} -> {dst}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    ping("ca", "p1", bare(&b[0]));
    ping("ca", "p2", bare(&b[1]));
    ping("cb", "p3", "198.18.9.254");
    ping("cb", "p4", "2001:db8:9::fe");
    for dst in &a {
        let out = node.ns.exec("ping", &["-c", "2", "-i", "0.2", "-W", "2", "-q", bare(dst)]).unwrap();
        assert!(out.status.success(), "node -> {dst}: {}", String::from_utf8_lossy(&out.stdout));
    }
    let out = ctd.exec("ca", "ip", &["/bin/ip", "-o", "addr", "show", "dev", "eth0"]);
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(shown.contains(&a[0]) && shown.contains(&a[1]), "{shown}");

    // Stopping the containers runs CNI DEL: no veth, no attachment, no address left.
    for id in ["ca", "cb"] {
        let out = ctd.stop(id);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("cni"), "ctr run {id} reported a CNI error: {err}");
    }
    assert!(pods(&node).is_empty(), "attachments left: {:?}", pods(&node));
    let links = node.ns.exec("ip", &["-br", "link"]).unwrap();
    let links = String::from_utf8_lossy(&links.stdout);
    assert!(!links.lines().any(|l| l.starts_with("ps") && !l.starts_with("psw0")), "veths left:\n{links}");

    // The freed addresses are the ones the next container gets.
    ctd.run("cc", &rootfs, &cni, 120);
    let c = wait_for_pod(&node, &ctd, "default-cc");
    assert!(c[0] == a[0] || c[0] == b[0], "a freed address is handed out again: {c:?} after {a:?}, {b:?}");
    ctd.stop("cc");
    assert!(pods(&node).is_empty());
}
