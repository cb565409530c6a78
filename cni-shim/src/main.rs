//! `podswitch`: the CNI plugin. containerd runs it for every pod; it makes the pod's
//! veth pair, asks podswitchd to attach the host side and allocate the pod's addresses,
//! and configures the pod's side.
//!
//! Commands: ADD, DEL, CHECK, VERSION, STATUS (CNI 1.1; results in 0.3.x/0.4.0 shape
//! when the configuration asks). Interfaces are made and configured over netlink from
//! this process (see [`links`]).

mod ipam;
mod links;
mod spec;

use control::api::v1 as pb;
use serde_json::{json, Value};
use spec::{code, CniError, Env, NetConf, SUPPORTED};
use std::io::Read;
use std::net::IpAddr;

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
            "ADD" => add(env, &conf, input).await.map(Some),
            "DEL" => del(env, &conf, input).await.map(|()| None),
            "CHECK" => check(env, &conf).await.map(|()| None),
            "STATUS" => status(&conf).await.map(|()| None),
            "GC" => gc(env, &conf, input).await.map(|()| None),
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

/// A name for the pod's host-side interface: a prefix and 12 hex digits of a hash of the
/// container and interface, 14 characters, stable (DEL finds it from the same inputs).
fn if_name(prefix: &str, env: &Env) -> String {
    host_name(prefix, &env.container_id, &env.ifname)
}

fn host_name(prefix: &str, container_id: &str, ifname: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in container_id.bytes().chain([b'/']).chain(ifname.bytes()) {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    format!("{prefix}{:012x}", h & 0xffff_ffff_ffff)
}

fn parse_cidr(a: &str) -> Result<(IpAddr, u8), CniError> {
    let bad = || CniError::new(code::IO, format!("podswitchd answered an address that is not ADDR/LEN: {a:?}"));
    let (ip, len) = a.split_once('/').ok_or_else(bad)?;
    Ok((ip.parse().map_err(|_| bad())?, len.parse().map_err(|_| bad())?))
}

async fn add(env: &Env, conf: &NetConf, input: &[u8]) -> Result<Value, CniError> {
    let ch = connect(conf, code::TRY_AGAIN).await?;
    let status = pb::switch_client::SwitchClient::new(ch.clone())
        .status(pb::ListRequest {})
        .await
        .map_err(|s| grpc("report its status", s))?
        .into_inner();
    let mac = conf.mac(env)?;
    // The daemon derives the pod MTU and knows the largest it carries.
    let mtu = match conf.mtu {
        Some(m) if status.max_mtu > 0 && m > status.max_mtu => {
            return Err(CniError::new(
                code::INVALID_CONFIG,
                format!(
                    "mtu {m} is above what podswitchd carries ({}): lower it, or raise dataplane.frame_size",
                    status.max_mtu
                ),
            ))
        }
        Some(m) if (1..1280).contains(&m) => {
            return Err(CniError::new(code::INVALID_CONFIG, format!("mtu {m} is below 1280, IPv6's minimum")))
        }
        Some(0) | None => (status.pod_mtu > 0).then_some(status.pod_mtu),
        Some(m) => Some(m),
    };
    // A delegated IPAM plugin's lease first (as the bridge plugin does); given back if
    // anything after fails.
    let lease = match conf.ipam {
        Some(_) => Some(ipam::add(conf, env, input)?),
        None => None,
    };
    let r = if conf.mode == "vhostuser" {
        add_vhost(env, conf, ch, mac, lease.as_ref()).await
    } else {
        add_veth(env, conf, ch, status.workers, mtu, mac, lease.as_ref()).await
    };
    if r.is_err() && lease.is_some() {
        let _ = ipam::exec(conf, env, "DEL", input);
    }
    r
}

async fn add_veth(
    env: &Env,
    conf: &NetConf,
    ch: tonic::transport::Channel,
    workers: u32,
    mtu: Option<u32>,
    mac: Option<[u8; 6]>,
    lease: Option<&ipam::Lease>,
) -> Result<Value, CniError> {
    let host = links::Host::open()?;
    let pod = links::Pod::open(&env.netns)?;
    let name = if_name("ps", env);
    // One queue per worker on both ends: each worker binds its own.
    host.add_veth(&name, &pod, &env.ifname, workers.max(1), mtu, mac).await?;
    let mut attached = false;
    let r = add_rest(env, conf, ch.clone(), &host, &pod, &name, lease, &mut attached).await;
    if r.is_err() {
        // Undo: a failed ADD leaves nothing behind.
        if attached {
            let r = pb::PodRef { container_id: env.container_id.clone(), ifname: env.ifname.clone() };
            let _ = pb::pods_client::PodsClient::new(ch).detach(r).await;
        }
        if let Ok(Some(l)) = host.find(&name).await {
            let _ = host.delete(l.index).await;
        }
    }
    r
}

/// ADD in vhostuser mode: no kernel interface; the daemon serves the pod's vhost-user
/// socket and the result names it (CNI 1.1 `socketPath`) with the addresses and routes
/// the pod's DPDK application is to use.
async fn add_vhost(
    env: &Env,
    conf: &NetConf,
    ch: tonic::transport::Channel,
    mac: Option<[u8; 6]>,
    lease: Option<&ipam::Lease>,
) -> Result<Value, CniError> {
    let port = if_name("vh", env);
    // No device to read a MAC from: a stable, locally administered one unless asked.
    let mac = mac.unwrap_or_else(|| {
        let h = u64::from_str_radix(&port[2..], 16).unwrap_or(0).to_be_bytes();
        [0x02, h[3], h[4], h[5], h[6], h[7]]
    });
    let mac = mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":");
    let owner = conf.vhostuser.unwrap_or_default();
    let req = pb::PodAttach {
        pod: Some(pb::PodRef { container_id: env.container_id.clone(), ifname: env.ifname.clone() }),
        port: port.clone(),
        network: conf.network.clone(),
        mac: mac.clone(),
        addresses: lease.map(|l| l.addresses.clone()).unwrap_or_default(),
        mode: "vhostuser".into(),
        socket_uid: owner.uid,
        socket_gid: owner.gid,
    };
    let a = pb::pods_client::PodsClient::new(ch).attach(req).await.map_err(|s| grpc("attach the pod", s))?.into_inner();
    let mut ips = Vec::new();
    let mut routes = Vec::new();
    for addr in &a.addresses {
        let (ip, _) = parse_cidr(addr)?;
        let gw = a.gateways.iter().find(|g| g.contains(':') == ip.is_ipv6()).cloned().unwrap_or_default();
        ips.push(json!({ "address": addr, "gateway": gw, "interface": 0 }));
        if !gw.is_empty() {
            routes.push(json!({ "dst": if ip.is_ipv6() { "::/0" } else { "0.0.0.0/0" }, "gw": gw }));
        }
    }
    Ok(json!({
        "cniVersion": conf.cni_version,
        "interfaces": [ { "name": port, "mac": mac, "socketPath": a.socket_path } ],
        "ips": ips,
        "routes": routes,
        "dns": {},
    }))
}

/// ADD once the veth exists; sets `attached` once the daemon holds the pod.
#[allow(clippy::too_many_arguments)]
async fn add_rest(
    env: &Env,
    conf: &NetConf,
    ch: tonic::transport::Channel,
    host: &links::Host,
    pod: &links::Pod,
    name: &str,
    lease: Option<&ipam::Lease>,
    attached: &mut bool,
) -> Result<Value, CniError> {
    let missing = |n: &str| CniError::new(code::IO, format!("{n} vanished while it was being set up"));
    let inside = pod.find(&env.ifname).await?.ok_or_else(|| missing(&env.ifname))?;
    let outside = host.find(name).await?.ok_or_else(|| missing(name))?;
    pod.offloads_off(&env.ifname)?;
    pod.up(inside.index).await?;
    host.ipv6_off(name)?;
    host.up(outside.index).await?;

    let req = pb::PodAttach {
        pod: Some(pb::PodRef { container_id: env.container_id.clone(), ifname: env.ifname.clone() }),
        port: name.to_string(),
        network: conf.network.clone(),
        mac: inside.mac.clone(),
        addresses: lease.map(|l| l.addresses.clone()).unwrap_or_default(),
        mode: "afxdp".into(),
        socket_uid: 0,
        socket_gid: 0,
    };
    let a = pb::pods_client::PodsClient::new(ch).attach(req).await.map_err(|s| grpc("attach the pod", s))?.into_inner();
    *attached = true;

    let mut ips = Vec::new();
    let mut routes = Vec::new();
    for addr in &a.addresses {
        let (ip, len) = parse_cidr(addr)?;
        pod.add_address(inside.index, ip, len).await?;
        let gw = a.gateways.iter().find(|g| g.contains(':') == ip.is_ipv6()).cloned().unwrap_or_default();
        let mut entry = json!({ "address": addr, "gateway": gw, "interface": 1 });
        if conf.legacy() {
            entry["version"] = Value::String(if ip.is_ipv6() { "6" } else { "4" }.into());
        }
        ips.push(entry);
        if let Ok(g) = gw.parse::<IpAddr>() {
            pod.add_default_route(inside.index, g).await?;
            routes.push(json!({ "dst": if g.is_ipv6() { "::/0" } else { "0.0.0.0/0" }, "gw": gw }));
        }
    }
    Ok(json!({
        "cniVersion": conf.cni_version,
        "interfaces": [
            { "name": name, "mac": outside.mac },
            { "name": env.ifname, "mac": inside.mac, "sandbox": env.netns },
        ],
        "ips": ips,
        "routes": routes,
        "dns": {},
    }))
}

async fn del(env: &Env, conf: &NetConf, input: &[u8]) -> Result<(), CniError> {
    // Reach the daemon first: if it cannot be reached, the runtime retries DEL later
    // and nothing is half-removed. Then detach and delete the veth together: both wait
    // for the kernel's RCU grace periods, and each is idempotent if DEL runs again.
    let ch = connect(conf, code::TRY_AGAIN).await?;
    let r = pb::PodRef { container_id: env.container_id.clone(), ifname: env.ifname.clone() };
    let detach = async { pb::pods_client::PodsClient::new(ch).detach(r).await.map_err(|s| grpc("detach the pod", s)) };
    let delete = async {
        let host = links::Host::open()?;
        if let Some(l) = host.find(&if_name("ps", env)).await? {
            host.delete(l.index).await?;
        }
        Ok(())
    };
    let (d, l) = tokio::join!(detach, delete);
    d?;
    l?;
    // The lease last: it is free for another pod only once this one is gone.
    if conf.ipam.is_some() {
        ipam::exec(conf, env, "DEL", input)?;
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
    let wrong = |m: String| Err(CniError::new(code::IO, m));
    if p.mode == "vhostuser" {
        if !std::path::Path::new(&p.socket_path).exists() {
            return wrong(format!("the pod's vhost-user socket {} is gone", p.socket_path));
        }
        return Ok(());
    }
    let pod = links::Pod::open(&env.netns)?;
    let Some(inside) = pod.find(&env.ifname).await? else {
        return wrong(format!("{} has no interface {}", env.netns, env.ifname));
    };
    if inside.mac != p.mac {
        return wrong(format!("{}'s MAC is {}, not the attached {}", env.ifname, inside.mac, p.mac));
    }
    let have = pod.addresses(inside.index).await?;
    for a in &p.addresses {
        if !have.contains(a) {
            return wrong(format!("{} in {} lacks address {a}", env.ifname, env.netns));
        }
    }
    for g in &p.gateways {
        let gw: IpAddr = g.parse().map_err(|_| CniError::new(code::IO, format!("bad gateway {g:?}")))?;
        if !pod.has_default_route(inside.index, gw).await? {
            return wrong(format!("{} in {} has no default route via {g}", env.ifname, env.netns));
        }
    }
    let host = links::Host::open()?;
    if host.find(&p.port).await?.is_none() {
        return wrong(format!("the pod's host-side interface {} is gone", p.port));
    }
    Ok(())
}

/// GC: detaches this network's pods that are not in the valid list, deletes the veths
/// the plugin made for them (interfaces it did not make are left alone) and, with a
/// delegated IPAM, releases their leases (an IPAM DEL each: any IPAM plugin takes
/// that, where few take GC). Goes on past a failure and reports the first.
async fn gc(env: &Env, conf: &NetConf, input: &[u8]) -> Result<(), CniError> {
    if !matches!(conf.cni_version.as_str(), "1.1.0") {
        return Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            format!("GC is a CNI 1.1.0 command; the configuration says {}", conf.cni_version),
        ));
    }
    let valid = conf.valid_attachments()?;
    let ch = connect(conf, code::TRY_AGAIN).await?;
    let mut client = pb::pods_client::PodsClient::new(ch);
    let pods = client.list(pb::ListRequest {}).await.map_err(|s| grpc("list pods", s))?.into_inner();
    let host = links::Host::open()?;
    let mut first_error = None;
    for p in pods.pods.into_iter().filter(|p| p.network == conf.network) {
        let r = p.pod.unwrap_or_default();
        if valid.iter().any(|(c, i)| *c == r.container_id && *i == r.ifname) {
            continue;
        }
        let ours = host_name("ps", &r.container_id, &r.ifname) == p.port;
        let result = async {
            client.detach(r.clone()).await.map_err(|s| grpc("detach a stale pod", s))?;
            if ours {
                if let Some(l) = host.find(&p.port).await? {
                    host.delete(l.index).await?;
                }
            }
            if conf.ipam.is_some() {
                ipam::exec_for(conf, env, "DEL", input, &r.container_id, &r.ifname)?;
            }
            Ok::<(), CniError>(())
        }
        .await;
        if let Err(e) = result {
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

async fn status(conf: &NetConf) -> Result<(), CniError> {
    let ch = connect(conf, code::NOT_AVAILABLE).await?;
    pb::switch_client::SwitchClient::new(ch)
        .status(pb::ListRequest {})
        .await
        .map_err(|s| CniError::with(code::NOT_AVAILABLE, "podswitchd is not ready", s.message()))?;
    Ok(())
}
