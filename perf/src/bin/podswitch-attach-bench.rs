//! `podswitch-attach-bench N [CLIENTS]`: N pod ports attached through the gRPC API by
//! CLIENTS concurrent clients, as the CNI plugin would, while two other pods ping each
//! other through the switch every 5 ms.
//!
//! Reports the wall time of the N attachments (first request to last answer), the
//! daemon's peak RSS before and after, and the pings lost while they were applied: the
//! proof that forwarding on other ports does not pause.
//!
//! ```text
//!  [pa] ── pa ┐                  ┌ a0 ── b0   (N veth pairs in the node namespace;
//!  [pb] ── pb ┤ podswitchd (CPU 1) ├ a1 ── b1    the b ends stay there, up)
//!             └──────────────────┘ ...
//! ```

use anyhow::{Context, Result};
use control::api::v1 as pb;
use control::netns::{pod_veth, NetNs};
use perf::daemon::Podswitchd;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const DUT_CORE: usize = 1;
/// Frames per port ring: small, as thousands of pods on one node would want.
const RING: u32 = 64;

/// VmHWM and VmRSS of `pid`, in KiB.
fn memory(pid: u32) -> Result<(u64, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let get = |k: &str| {
        s.lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Ok((get("VmHWM:"), get("VmRSS:")))
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let n: u32 = args.get(1).map_or(Ok(1000), |s| s.parse()).context("usage: podswitch-attach-bench N [CLIENTS]")?;
    let clients: u32 = args.get(2).map_or(Ok(16), |s| s.parse())?;
    let node = NetNs::new("psa-node")?;
    let pa = NetNs::new("psa-pa")?;
    let pb = NetNs::new("psa-pb")?;
    pod_veth(Some(&node), "pa", &pa, "eth0", 1)?;
    pod_veth(Some(&node), "pb", &pb, "eth0", 1)?;
    pa.ip(&["addr", "add", "198.18.0.1/16", "dev", "eth0"])?;
    pb.ip(&["addr", "add", "198.18.0.2/16", "dev", "eth0"])?;

    // The switch ends carry no addresses (as the CNI plugin leaves them), and the
    // other ends stand for pods, which have namespaces of their own: without this the
    // kernel of this one namespace would do every pod's IPv6 start-up chatter, flooded
    // to all N ports, against a table of 2N link-local routes, and the bench would
    // measure that instead of the attachments.
    node.run("sysctl", &["-qw", "net.ipv6.conf.default.disable_ipv6=1"])?;
    let t0 = Instant::now();
    let batch = std::env::temp_dir().join(format!("psa-{}.batch", std::process::id()));
    let mut text = String::new();
    for i in 0..n {
        text += &format!("link add a{i} type veth peer name b{i}\nlink set a{i} up\nlink set b{i} up\n");
    }
    std::fs::write(&batch, text)?;
    control::netns::ip(&["-n", node.name(), "-batch", &batch.display().to_string()])?;
    let _ = std::fs::remove_file(&batch);
    println!("{n} veth pairs made in {:.1} s (kernel work, not counted)", t0.elapsed().as_secs_f64());

    let mut d = Podswitchd::start(
        &node,
        "attach",
        &format!(
            "log_level = \"{}\"\n\
             [dataplane]\ncores = [{DUT_CORE}]\nidle = \"poll\"\nring_size = {RING}\nframe_size = 2048\n\
             hugepages = \"off\"\nmax_ports = {}\n\
             [[networks]]\nname = \"pods\"\ngateway = [\"198.18.255.254/16\"]\n\
             [[ports]]\nname = \"pa\"\nnetwork = \"pods\"\n[[ports]]\nname = \"pb\"\nnetwork = \"pods\"\n",
            std::env::var("PSA_LOG").unwrap_or_else(|_| "warn".into()),
            n + 8
        ),
    )?;
    let socket = d.socket();
    let (hwm0, _) = memory(d.pid())?;

    // Quiet (-q): a line per reply into a pipe nobody reads until the end fills it
    // after about 1,000 replies, and ping then blocks instead of sending.
    let pinger = Command::new("ip")
        .args(["netns", "exec", pa.name(), "ping", "-q", "-i", "0.005", "-W", "1", "198.18.0.2"])
        .stdout(Stdio::piped())
        .spawn()?;
    std::thread::sleep(Duration::from_millis(500));

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    let next = Arc::new(AtomicU32::new(0));
    let started = Instant::now();
    let refused = rt.block_on(async {
        let ch = control::client::connect(&socket).await?;
        let mut tasks = Vec::new();
        for _ in 0..clients {
            let (ch, next) = (ch.clone(), next.clone());
            tasks.push(tokio::spawn(async move {
                let mut c = pb::ports_client::PortsClient::new(ch);
                let mut refused = 0u32;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        return refused;
                    }
                    let p = pb::Port {
                        name: format!("a{i}"),
                        network: Some("pods".into()),
                        macs: vec![format!("02:01:00:00:{:02x}:{:02x}", i >> 8, i & 0xff)],
                        addresses: vec![format!("198.18.{}.{}", 1 + i / 250, 1 + i % 250)],
                        ..Default::default()
                    };
                    if let Err(e) = c.put(p).await {
                        if refused == 0 {
                            eprintln!("a{i}: {}", e.message());
                        }
                        refused += 1;
                    }
                }
            }));
        }
        let mut refused = 0;
        for t in tasks {
            refused += t.await?;
        }
        anyhow::Ok(refused)
    })?;
    let took = started.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(500));
    // SAFETY: SIGINT to the ping we started, so it prints its summary.
    #[allow(unsafe_code)]
    unsafe {
        libc::kill(pinger.id() as i32, libc::SIGINT)
    };
    let out = pinger.wait_with_output()?;
    let summary = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("packets transmitted") || l.contains("rtt"))
        .collect::<Vec<_>>()
        .join("; ");
    let (hwm1, rss1) = memory(d.pid())?;
    println!(
        "{} ports attached through the API by {clients} clients in {took:.2} s ({:.2} ms each, {:.0}/s); {refused} refused",
        n - refused,
        took * 1e3 / f64::from(n.max(1)),
        f64::from(n) / took
    );
    println!("podswitchd peak RSS {} MiB before, {} MiB after (RSS now {} MiB)", hwm0 / 1024, hwm1 / 1024, rss1 / 1024);
    println!("ping pa -> pb every 5 ms throughout: {summary}");
    d.stop()?;
    // With PSA_LOG=debug the daemon logs where each attachment's time went.
    let text = d.log_text();
    let mut parts: Vec<(&str, Vec<u64>)> = vec![("sockets_us", vec![]), ("xdp_us", vec![]), ("workers_us", vec![])];
    for line in text.lines().filter(|l| l.contains(" attached")) {
        for (k, v) in parts.iter_mut() {
            if let Some(x) = line.split(&format!("{k}=")).nth(1).and_then(|r| r.split(' ').next()?.parse().ok()) {
                v.push(x);
            }
        }
    }
    if parts[0].1.len() > 1 {
        let med = |v: &mut Vec<u64>| {
            v.sort_unstable();
            v[v.len() / 2]
        };
        let line: Vec<String> = parts.iter_mut().map(|(k, v)| format!("{k} {}", med(v))).collect();
        println!("per attachment, medians: {}", line.join(", "));
    }
    Ok(())
}
