//! `podswitch`: the CNI plugin. containerd runs it for every pod; it makes the pod's
//! veth pair, asks podswitchd to attach the host side and allocate the pod's addresses,
//! and configures the pod's side.
//!
//! Commands: ADD, DEL, CHECK, VERSION, STATUS (CNI 1.1; results in 0.3.x/0.4.0 shape
//! when the configuration asks). Interfaces are configured with iproute2 and ethtool
//! run inside the pod's namespace through nsenter: a first version, simple to read and
//! to check; netlink in-process is the next step for ADD latency.

mod spec;

use control::api::v1 as pb;
use serde_json::{json, Value};
use spec::{code, CniError, Env, NetConf, SUPPORTED};
use std::io::Read;
use std::process::Command;

fn main() {
    let mut input = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut input);
    let env = Env::read(|k| std::env::var(k).ok());
    // Errors are answered in the configuration's version when it can be read.
    let version = serde_json::from_slice::<Value>(&input)
        .ok()
        .and_then(|v| v.get("cniVersion").and_then(|s| s.as_str()).map(String::from))
        .filter(|v| SUPPORTED.contains(&v.as_str()))
        .unwrap_or_else(|| "1.1.0".to_string());
    match env.and_then(|env| run(&env, &input)) {
        Ok(Some(out)) => println!("{out}"),
        Ok(None) => {}
        Err(e) => {
            println!("{}", e.to_json(&version));
            std::process::exit(1);
        }
    }
}

fn run(env: &Env, input: &[u8]) -> Result<Option<Value>, CniError> {
    if env.command == "VERSION" {
        let v = serde_json::from_slice::<Value>(input)
            .ok()
            .and_then(|v| v.get("cniVersion").and_then(|s| s.as_str()).map(String::from))
            .unwrap_or_else(|| "1.1.0".into());
        return Ok(Some(json!({ "cniVersion": v, "supportedVersions": SUPPORTED })));
    }
    let conf = NetConf::parse(input)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CniError::with(code::IO, "cannot start the runtime", e))?;
    rt.block_on(async {
        match env.command.as_str() {
            "ADD" => add(env, &conf).await.map(Some),
            "DEL" => del(env, &conf).await.map(|()| None),
            "CHECK" => check(env, &conf).await.map(|()| None),
            "STATUS" => status(&conf).await.map(|()| None),
            "GC" => Err(CniError::new(code::UNSUPPORTED_FIELD, "GC is not available yet")),
            c => Err(CniError::new(code::INVALID_ENV, format!("CNI_COMMAND {c:?} is unknown"))),
        }
    })
}

async fn connect(conf: &NetConf, busy_code: u32) -> Result<tonic::transport::Channel, CniError> {
    control::client::connect(std::path::Path::new(&conf.socket))
        .await
        .map_err(|e| CniError::with(busy_code, format!("podswitchd is not reachable at {}", conf.socket), e))
}

fn grpc(what: &str, s: tonic::Status) -> CniError {
    let c = match s.code() {
        tonic::Code::InvalidArgument | tonic::Code::FailedPrecondition => code::INVALID_CONFIG,
        tonic::Code::Unavailable => code::TRY_AGAIN,
        _ => code::IO,
    };
    CniError::with(c, format!("podswitchd refused to {what}"), s.message())
}

/// Runs a command; fails with its stderr.
fn sh(cmd: &str, args: &[&str]) -> Result<String, CniError> {
    let out =
        Command::new(cmd).args(args).output().map_err(|e| CniError::with(code::IO, format!("cannot run {cmd}"), e))?;
    if !out.status.success() {
        return Err(CniError::with(
            code::IO,
            format!("{cmd} {} failed", args.join(" ")),
            String::from_utf8_lossy(&out.stderr).trim(),
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `cmd ARGS` in the pod's network namespace.
fn in_pod(netns: &str, cmd: &str, args: &[&str]) -> Result<String, CniError> {
    let net = format!("--net={netns}");
    let mut a = vec![net.as_str(), cmd];
    a.extend_from_slice(args);
    sh("nsenter", &a)
}

/// A name for the pod's host-side interface (and its temporary peer): a prefix and 12
/// hex digits of a hash of the container and interface, 14 characters, stable.
fn if_name(prefix: &str, env: &Env) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in env.container_id.bytes().chain([b'/']).chain(env.ifname.bytes()) {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    format!("{prefix}{:012x}", h & 0xffff_ffff_ffff)
}

/// `ip link set ... netns` wants a name under /run/netns or a PID.
fn netns_arg(path: &str) -> Result<String, CniError> {
    let p = std::path::Path::new(path);
    if let Some(parent) = p.parent() {
        if parent.ends_with("netns") && (parent.starts_with("/run") || parent.starts_with("/var/run")) {
            return Ok(p.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default());
        }
    }
    let parts: Vec<&str> = path.split('/').collect();
    if let ["", "proc", pid, "ns", "net"] = parts.as_slice() {
        return Ok((*pid).to_string());
    }
    Err(CniError::new(code::INVALID_ENV, format!("CNI_NETNS {path:?} is neither /run/netns/NAME nor /proc/PID/ns/net")))
}

/// Undoes a half-made ADD when dropped armed.
struct Undo<'a> {
    host: Option<String>,
    detach: Option<(&'a NetConf, &'a Env)>,
}

impl Drop for Undo<'_> {
    fn drop(&mut self) {
        if let Some(h) = self.host.take() {
            let _ = sh("ip", &["link", "del", &h]);
        }
        if let Some((conf, env)) = self.detach.take() {
            let socket = conf.socket.clone();
            let r = pb::PodRef { container_id: env.container_id.clone(), ifname: env.ifname.clone() };
            // A fresh runtime: this runs while the ADD's own is unwinding.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
                rt.block_on(async {
                    let ch = control::client::connect(std::path::Path::new(&socket)).await.ok()?;
                    pb::pods_client::PodsClient::new(ch).detach(r).await.ok()
                })
            })
            .join();
        }
    }
}

async fn add(env: &Env, conf: &NetConf) -> Result<Value, CniError> {
    let ch = connect(conf, code::TRY_AGAIN).await?;
    let status = pb::switch_client::SwitchClient::new(ch.clone())
        .status(pb::ListRequest {})
        .await
        .map_err(|s| grpc("report its status", s))?
        .into_inner();
    let queues = status.workers.max(1).to_string();
    let host = if_name("ps", env);
    let peer = if_name("pt", env);
    let target = netns_arg(&env.netns)?;
    if !std::path::Path::new(&env.netns).exists() {
        return Err(CniError::new(code::UNKNOWN_CONTAINER, format!("CNI_NETNS {} does not exist", env.netns)));
    }
    // One queue per worker on both ends: each worker binds its own.
    sh(
        "ip",
        &[
            "link",
            "add",
            &host,
            "numrxqueues",
            &queues,
            "numtxqueues",
            &queues,
            "type",
            "veth",
            "peer",
            "name",
            &peer,
            "numrxqueues",
            &queues,
            "numtxqueues",
            &queues,
        ],
    )?;
    let mut undo = Undo { host: Some(host.clone()), detach: None };
    sh("ip", &["link", "set", &peer, "netns", &target])?;
    in_pod(&env.netns, "ip", &["link", "set", &peer, "name", &env.ifname])?;
    if let Some(mtu) = conf.mtu {
        let m = mtu.to_string();
        sh("ip", &["link", "set", &host, "mtu", &m])?;
        in_pod(&env.netns, "ip", &["link", "set", &env.ifname, "mtu", &m])?;
    }
    // AF_XDP carries bytes, not the kernel's checksum-offload or GSO metadata.
    in_pod(&env.netns, "ethtool", &["-K", &env.ifname, "tx", "off", "tso", "off", "gso", "off"])?;
    in_pod(&env.netns, "ip", &["link", "set", &env.ifname, "up"])?;
    sh("ip", &["link", "set", &host, "up"])?;
    let link: Value = serde_json::from_str(&in_pod(&env.netns, "ip", &["-j", "link", "show", "dev", &env.ifname])?)
        .map_err(|e| CniError::with(code::IO, "cannot read the pod interface", e))?;
    let mac = link[0]["address"].as_str().unwrap_or_default().to_string();

    let req = pb::PodAttach {
        pod: Some(pb::PodRef { container_id: env.container_id.clone(), ifname: env.ifname.clone() }),
        port: host.clone(),
        network: conf.network.clone(),
        mac: mac.clone(),
    };
    let a = pb::pods_client::PodsClient::new(ch).attach(req).await.map_err(|s| grpc("attach the pod", s))?.into_inner();
    undo.detach = Some((conf, env));

    let mut ips = Vec::new();
    let mut routes = Vec::new();
    for addr in &a.addresses {
        let v6 = addr.contains(':');
        let mut args = vec!["addr", "add", addr.as_str(), "dev", env.ifname.as_str()];
        if v6 {
            args.push("nodad");
        }
        in_pod(&env.netns, "ip", &args)?;
        let gw = a.gateways.iter().find(|g| g.contains(':') == v6).cloned().unwrap_or_default();
        let mut ip = json!({ "address": addr, "gateway": gw, "interface": 1 });
        if conf.legacy() {
            ip["version"] = Value::String(if v6 { "6" } else { "4" }.into());
        }
        ips.push(ip);
        if !gw.is_empty() {
            let fam = if v6 { "-6" } else { "-4" };
            in_pod(&env.netns, "ip", &[fam, "route", "add", "default", "via", &gw, "dev", &env.ifname])?;
            routes.push(json!({ "dst": if v6 { "::/0" } else { "0.0.0.0/0" }, "gw": gw }));
        }
    }
    let host_mac = std::fs::read_to_string(format!("/sys/class/net/{host}/address")).unwrap_or_default();
    undo.host = None;
    undo.detach = None;
    Ok(json!({
        "cniVersion": conf.cni_version,
        "interfaces": [
            { "name": host, "mac": host_mac.trim() },
            { "name": env.ifname, "mac": mac, "sandbox": env.netns },
        ],
        "ips": ips,
        "routes": routes,
        "dns": {},
    }))
}

async fn del(env: &Env, conf: &NetConf) -> Result<(), CniError> {
    // The daemon first: if it cannot be reached, the runtime retries DEL later and
    // nothing is half-removed.
    let ch = connect(conf, code::TRY_AGAIN).await?;
    let r = pb::PodRef { container_id: env.container_id.clone(), ifname: env.ifname.clone() };
    pb::pods_client::PodsClient::new(ch).detach(r).await.map_err(|s| grpc("detach the pod", s))?;
    let host = if_name("ps", env);
    if std::path::Path::new(&format!("/sys/class/net/{host}")).exists() {
        sh("ip", &["link", "del", &host])?;
    }
    Ok(())
}

async fn check(env: &Env, conf: &NetConf) -> Result<(), CniError> {
    let ch = connect(conf, code::TRY_AGAIN).await?;
    let pods = pb::pods_client::PodsClient::new(ch)
        .list(pb::ListRequest {})
        .await
        .map_err(|s| grpc("list pods", s))?
        .into_inner();
    let want = pb::PodRef { container_id: env.container_id.clone(), ifname: env.ifname.clone() };
    let Some(p) = pods.pods.iter().find(|p| p.pod.as_ref() == Some(&want)) else {
        return Err(CniError::new(
            code::UNKNOWN_CONTAINER,
            format!("{}/{} is not attached to podswitchd", env.container_id, env.ifname),
        ));
    };
    let shown = in_pod(&env.netns, "ip", &["-j", "addr", "show", "dev", &env.ifname])?;
    let v: Value =
        serde_json::from_str(&shown).map_err(|e| CniError::with(code::IO, "cannot read the pod interface", e))?;
    let have: Vec<String> = v[0]["addr_info"]
        .as_array()
        .map(|a| a.iter().map(|i| format!("{}/{}", i["local"].as_str().unwrap_or(""), i["prefixlen"])).collect())
        .unwrap_or_default();
    for a in &p.addresses {
        if !have.contains(a) {
            return Err(CniError::new(code::IO, format!("{} in {} lacks address {a}", env.ifname, env.netns)));
        }
    }
    if v[0]["address"].as_str() != Some(p.mac.as_str()) {
        return Err(CniError::new(code::IO, format!("{}'s MAC is not the attached one ({})", env.ifname, p.mac)));
    }
    Ok(())
}

async fn status(conf: &NetConf) -> Result<(), CniError> {
    let ch = connect(conf, code::NOT_AVAILABLE).await?;
    pb::switch_client::SwitchClient::new(ch)
        .status(pb::ListRequest {})
        .await
        .map_err(|s| CniError::with(code::NOT_AVAILABLE, "podswitchd is not ready", s.message()))?;
    Ok(())
}
