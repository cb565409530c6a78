//! `podswitchctl`: the podswitch CLI, talking gRPC to podswitchd's control socket.
//!
//! Exit codes: 0 done; 1 the daemon refused the request (bad argument, conflict with
//! the state, not found); 2 bad command line; 3 the daemon cannot be reached; 4 the
//! daemon failed (internal error, a change it could not make durable).

use clap::{Args, Parser, Subcommand};
use control::api::v1 as pb;
use std::path::PathBuf;
use std::time::Duration;
use tonic::transport::Channel;

/// Drives a running podswitchd.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    /// podswitchd's control socket.
    #[arg(long, global = true, default_value = "/run/podswitch/podswitchd.sock", env = "PODSWITCH_SOCKET")]
    socket: PathBuf,
    /// Print replies as JSON (for scripts).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// The daemon's state at a glance.
    Status,
    /// Networks (bridge domains).
    #[command(subcommand)]
    Network(NetworkCmd),
    /// Ports (interfaces attached through AF_XDP).
    #[command(subcommand)]
    Port(PortCmd),
    /// Static routes.
    #[command(subcommand)]
    Route(RouteCmd),
    /// Remote nodes (reached through the uplink).
    #[command(subcommand)]
    Peer(PeerCmd),
    /// Pods attached as the CNI plugin does it (addresses allocated by the daemon).
    #[command(subcommand)]
    Pod(PodCmd),
    /// The neighbour table (ARP / NDP).
    Neigh,
    /// The MAC table.
    Fdb,
    /// The compiled routing table, connected subnets included.
    Fib,
    /// Counters per port, per worker and per drop reason.
    Stats(StatsArgs),
    /// Writes a pcap of a port's frames (both directions), readable by tshark.
    Capture {
        /// The port (interface).
        port: String,
        /// The pcap file to write ("-" for stdout).
        #[arg(short = 'w', long = "write")]
        file: PathBuf,
        /// Stop after this many frames.
        #[arg(long, default_value_t = 1000)]
        count: u32,
        /// Stop after this many seconds.
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
    },
    /// Shows the stages the next packets take through the pipeline.
    Trace {
        /// Packets to trace.
        #[arg(long, default_value_t = 10)]
        count: u32,
        /// Give up waiting after this many seconds.
        #[arg(long, default_value_t = 10.0)]
        timeout: f64,
    },
    /// Prints every change to the state as it is accepted.
    Watch {
        /// Stop after this many changes.
        #[arg(long)]
        count: Option<u64>,
    },
}

#[derive(Subcommand, Debug)]
enum NetworkCmd {
    /// Lists networks.
    List,
    /// Creates or replaces a network.
    Put {
        name: String,
        /// Gateway address with subnet length (one per family), e.g. 198.18.1.1/24.
        #[arg(long)]
        gateway: Vec<String>,
        /// The gateway's MAC (default: derived from the name).
        #[arg(long)]
        gateway_mac: Option<String>,
        /// Seconds a learned MAC lives without traffic.
        #[arg(long, default_value_t = 300)]
        ageing: u32,
        /// Send IPv6 router advertisements.
        #[arg(long)]
        router_advertisements: bool,
        /// Stretch the network across nodes as this VXLAN VNI (no gateway then).
        #[arg(long)]
        vni: Option<u32>,
    },
    /// Deletes a network (it must have no ports).
    Delete { name: String },
}

#[derive(Subcommand, Debug)]
enum PeerCmd {
    /// Lists peers and whether their underlay next hop is resolved.
    List,
    /// Creates or replaces a peer.
    Put {
        name: String,
        /// Its underlay address (repeat for IPv4 and IPv6).
        #[arg(long, required = true)]
        underlay: Vec<String>,
        /// Its pod CIDRs, routed to it (repeat).
        #[arg(long = "pod-cidr")]
        pod_cidrs: Vec<String>,
        /// A stretched network's VNI it carries too (repeat).
        #[arg(long = "vni")]
        vnis: Vec<u32>,
        /// Its VTEP MAC (default: derived from its name, as a podswitch node derives it).
        #[arg(long)]
        vtep_mac: Option<String>,
    },
    /// Deletes a peer.
    Delete { name: String },
}

#[derive(Subcommand, Debug)]
enum PortCmd {
    /// Lists ports and whether they are attached.
    List,
    /// Attaches an interface (or changes an attached one).
    Put(PortArgs),
    /// Detaches an interface.
    Delete { name: String },
}

#[derive(Args, Debug)]
struct PortArgs {
    /// The interface.
    name: String,
    /// Access port: its network.
    #[arg(long)]
    network: Option<String>,
    /// Trunk port: VID=NETWORK, repeated.
    #[arg(long)]
    vlan: Vec<String>,
    /// Trunk port: network of untagged frames.
    #[arg(long)]
    native: Option<String>,
    /// Static MAC behind the port, repeated.
    #[arg(long)]
    mac: Vec<String>,
    /// The pod's address (needs exactly one --mac), repeated.
    #[arg(long)]
    address: Vec<String>,
}

#[derive(Subcommand, Debug)]
enum PodCmd {
    /// Lists attached pods and their addresses.
    List,
    /// Attaches a pod's switch-side interface; prints its addresses.
    Attach {
        /// The container id.
        container: String,
        /// The pod's interface name (e.g. eth0).
        ifname: String,
        /// The switch-side interface.
        #[arg(long)]
        port: String,
        /// The network (with a gateway).
        #[arg(long)]
        network: String,
        /// The pod interface's MAC.
        #[arg(long)]
        mac: String,
        /// An address the pod brings, ADDR/LEN (repeat for each family); without, the
        /// daemon allocates.
        #[arg(long = "address")]
        addresses: Vec<String>,
        /// "afxdp" (PORT is an interface) or "vhostuser" (the daemon serves a socket).
        #[arg(long, default_value = "afxdp")]
        mode: String,
        /// vhostuser: the socket's owner uid and gid (the pod's user).
        #[arg(long, default_value_t = 0)]
        socket_uid: u32,
        #[arg(long, default_value_t = 0)]
        socket_gid: u32,
    },
    /// Detaches a pod (frees its addresses).
    Detach { container: String, ifname: String },
}

#[derive(Subcommand, Debug)]
enum RouteCmd {
    /// Lists configured routes.
    List,
    /// Creates or replaces the route for a prefix.
    Put {
        prefix: String,
        /// Next hop.
        #[arg(long, group = "target")]
        via: Option<String>,
        /// Destinations are neighbours on this network.
        #[arg(long, group = "target")]
        network: Option<String>,
        /// Destinations are neighbours behind this port.
        #[arg(long, group = "target")]
        port: Option<String>,
        /// Blackhole.
        #[arg(long, group = "target")]
        drop: bool,
    },
    /// Deletes the route for a prefix.
    Delete { prefix: String },
}

#[derive(Args, Debug)]
struct StatsArgs {
    /// Print rates every --interval seconds.
    #[arg(long)]
    watch: bool,
    /// Seconds between samples with --watch.
    #[arg(long, default_value_t = 1.0)]
    interval: f64,
    /// Stop after this many samples with --watch.
    #[arg(long)]
    count: Option<u64>,
}

/// A failure, with the exit code it maps to.
struct Failure {
    code: i32,
    message: String,
}

impl From<tonic::Status> for Failure {
    fn from(s: tonic::Status) -> Failure {
        use tonic::Code;
        let code = match s.code() {
            Code::InvalidArgument | Code::FailedPrecondition | Code::NotFound | Code::AlreadyExists => 1,
            Code::Unavailable => 3,
            _ => 4,
        };
        Failure { code, message: s.message().to_string() }
    }
}

fn main() {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
    match rt.block_on(run(cli)) {
        Ok(()) => {}
        Err(f) => {
            eprintln!("podswitchctl: {}", f.message);
            std::process::exit(f.code);
        }
    }
}

async fn connect(socket: &std::path::Path) -> Result<Channel, Failure> {
    // Connect once up front, so that a missing daemon or a refused socket gets its
    // own message rather than a transport error.
    if let Err(e) = tokio::net::UnixStream::connect(socket).await {
        let hint = match e.kind() {
            std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                "is podswitchd running? (see control_socket in its config, or pass --socket)"
            }
            std::io::ErrorKind::PermissionDenied => {
                "the socket is only for root (or the group in control_socket_gid): run as root"
            }
            _ => "",
        };
        return Err(Failure {
            code: 3,
            message: format!("cannot reach podswitchd at {}: {e}; {hint}", socket.display()),
        });
    }
    control::client::connect(socket)
        .await
        .map_err(|e| Failure { code: 3, message: format!("cannot reach podswitchd at {}: {e}", socket.display()) })
}

fn json<T: serde::Serialize>(v: &T) {
    println!("{}", serde_json::to_string_pretty(v).expect("serializable"));
}

/// Prints rows under headers, columns padded to their widest cell.
fn table(headers: &[&str], rows: Vec<Vec<String>>) {
    let mut w: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let s: Vec<String> = cells.iter().enumerate().map(|(i, c)| format!("{c:<width$}", width = w[i])).collect();
        println!("{}", s.join("  ").trim_end());
    };
    line(headers.to_vec());
    for r in &rows {
        line(r.iter().map(|s| s.as_str()).collect());
    }
}

fn applied(a: pb::Applied, json_out: bool) {
    if json_out {
        json(&a);
    } else if a.changed {
        println!("ok: generation {}", a.generation);
    } else {
        println!("unchanged: generation {}", a.generation);
    }
}

fn or_dash(s: &str) -> String {
    if s.is_empty() {
        "-".into()
    } else {
        s.to_string()
    }
}

async fn run(cli: Cli) -> Result<(), Failure> {
    let ch = connect(&cli.socket).await?;
    let j = cli.json;
    let list = || tonic::Request::new(pb::ListRequest {});
    match cli.cmd {
        Cmd::Status => {
            let s = pb::switch_client::SwitchClient::new(ch).status(list()).await?.into_inner();
            if j {
                json(&s);
            } else {
                println!("podswitchd {}, up {} s", s.version, s.uptime_s);
                println!(
                    "state generation {} (in {}), tables generation {}",
                    s.generation, s.state_dir, s.tables_generation
                );
                println!("workers {}, networks {}, routes {}", s.workers, s.networks, s.routes);
                println!("ports {} ({} attached)", s.ports, s.ports_attached);
                if !s.missing_ports.is_empty() {
                    println!("missing interfaces: {}", s.missing_ports.join(", "));
                }
            }
        }
        Cmd::Network(c) => {
            let mut client = pb::networks_client::NetworksClient::new(ch);
            match c {
                NetworkCmd::List => {
                    let l = client.list(list()).await?.into_inner();
                    if j {
                        json(&l);
                        return Ok(());
                    }
                    table(
                        &["NAME", "ID", "GATEWAY", "AGEING", "RA", "VNI"],
                        l.networks
                            .iter()
                            .map(|n| {
                                vec![
                                    n.name.clone(),
                                    n.id.to_string(),
                                    or_dash(&n.gateway.join(",")),
                                    format!("{}s", n.ageing_s),
                                    if n.router_advertisements { "yes" } else { "no" }.into(),
                                    n.vni.map_or_else(|| "-".into(), |v| v.to_string()),
                                ]
                            })
                            .collect(),
                    );
                }
                NetworkCmd::Put { name, gateway, gateway_mac, ageing, router_advertisements, vni } => {
                    let n =
                        pb::Network { name, ageing_s: ageing, gateway, gateway_mac, router_advertisements, vni, id: 0 };
                    applied(client.put(n).await?.into_inner(), j);
                }
                NetworkCmd::Delete { name } => applied(client.delete(pb::Name { name }).await?.into_inner(), j),
            }
        }
        Cmd::Port(c) => {
            let mut client = pb::ports_client::PortsClient::new(ch);
            match c {
                PortCmd::List => {
                    let l = client.list(list()).await?.into_inner();
                    if j {
                        json(&l);
                        return Ok(());
                    }
                    table(
                        &["NAME", "ID", "NETWORK", "ATTACHED", "XDP", "MACS", "ADDRESSES"],
                        l.ports
                            .iter()
                            .map(|p| {
                                let s = p.status.clone().unwrap_or_default();
                                let net = match (&p.network, p.vlans.is_empty()) {
                                    (Some(n), _) => n.clone(),
                                    (None, false) => p
                                        .vlans
                                        .iter()
                                        .map(|v| format!("{}={}", v.vid, v.network))
                                        .chain(p.native.iter().map(|n| format!("native={n}")))
                                        .collect::<Vec<_>>()
                                        .join(","),
                                    _ => "-".into(),
                                };
                                let attached = if s.attached { "yes".to_string() } else { format!("no: {}", s.reason) };
                                vec![
                                    p.name.clone() + if s.from_config { " (config)" } else { "" },
                                    s.id.to_string(),
                                    net,
                                    attached,
                                    or_dash(&s.xdp_mode),
                                    or_dash(&p.macs.join(",")),
                                    or_dash(&p.addresses.join(",")),
                                ]
                            })
                            .collect(),
                    );
                }
                PortCmd::Put(a) => {
                    let mut vlans = Vec::new();
                    for v in &a.vlan {
                        let (vid, net) = v.split_once('=').ok_or_else(|| Failure {
                            code: 2,
                            message: format!("--vlan {v:?}: write VID=NETWORK, e.g. --vlan 100=pods"),
                        })?;
                        let vid = vid.parse().map_err(|_| Failure {
                            code: 2,
                            message: format!("--vlan {v:?}: {vid:?} is not a number"),
                        })?;
                        vlans.push(pb::Vlan { vid, network: net.to_string() });
                    }
                    let p = pb::Port {
                        name: a.name,
                        network: a.network,
                        vlans,
                        native: a.native,
                        macs: a.mac,
                        addresses: a.address,
                        status: None,
                    };
                    applied(client.put(p).await?.into_inner(), j);
                }
                PortCmd::Delete { name } => applied(client.delete(pb::Name { name }).await?.into_inner(), j),
            }
        }
        Cmd::Route(c) => {
            let mut client = pb::routes_client::RoutesClient::new(ch);
            match c {
                RouteCmd::List => {
                    let l = client.list(list()).await?.into_inner();
                    if j {
                        json(&l);
                        return Ok(());
                    }
                    table(&["PREFIX", "TARGET"], l.routes.iter().map(|r| vec![r.prefix.clone(), target(r)]).collect());
                }
                RouteCmd::Put { prefix, via, network, port, drop } => {
                    use pb::route::Target;
                    let target = match (via, network, port, drop) {
                        (Some(v), _, _, _) => Target::Via(v),
                        (_, Some(n), _, _) => Target::Network(n),
                        (_, _, Some(p), _) => Target::Port(p),
                        (_, _, _, true) => Target::Drop(true),
                        _ => {
                            return Err(Failure {
                                code: 2,
                                message: "route put: give one of --via, --network, --port or --drop".into(),
                            })
                        }
                    };
                    applied(client.put(pb::Route { prefix, target: Some(target) }).await?.into_inner(), j);
                }
                RouteCmd::Delete { prefix } => applied(client.delete(pb::Name { name: prefix }).await?.into_inner(), j),
            }
        }
        Cmd::Peer(c) => {
            let mut client = pb::peers_client::PeersClient::new(ch);
            match c {
                PeerCmd::List => {
                    let l = client.list(list()).await?.into_inner();
                    if j {
                        json(&l);
                        return Ok(());
                    }
                    table(
                        &["NAME", "UNDERLAY", "POD CIDRS", "VNIS", "NEXT HOP"],
                        l.peers
                            .iter()
                            .map(|p| {
                                let vnis: Vec<String> = p.vnis.iter().map(ToString::to_string).collect();
                                let next_hop = match (p.reached_at.is_empty(), p.next_hop.is_empty()) {
                                    (true, _) => "-".to_string(),
                                    (false, true) => "resolving".to_string(),
                                    (false, false) => p.next_hop.clone(),
                                };
                                vec![
                                    p.name.clone(),
                                    or_dash(&p.underlay.join(",")),
                                    or_dash(&p.pod_cidrs.join(",")),
                                    or_dash(&vnis.join(",")),
                                    next_hop,
                                ]
                            })
                            .collect(),
                    );
                }
                PeerCmd::Put { name, underlay, pod_cidrs, vnis, vtep_mac } => {
                    let p = pb::Peer {
                        name,
                        underlay,
                        vtep_mac,
                        pod_cidrs,
                        vnis,
                        reached_at: String::new(),
                        next_hop: String::new(),
                    };
                    applied(client.put(p).await?.into_inner(), j);
                }
                PeerCmd::Delete { name } => applied(client.delete(pb::Name { name }).await?.into_inner(), j),
            }
        }
        Cmd::Pod(c) => {
            let mut client = pb::pods_client::PodsClient::new(ch);
            let row = |p: &pb::PodAttachment| {
                let r = p.pod.clone().unwrap_or_default();
                vec![
                    r.container_id,
                    r.ifname,
                    p.port.clone(),
                    p.network.clone(),
                    p.mac.clone(),
                    or_dash(&p.addresses.join(",")),
                    or_dash(&p.gateways.join(",")),
                    or_dash(&p.socket_path),
                ]
            };
            let headers =
                ["CONTAINER", "IFNAME", "PORT", "NETWORK", "MAC", "ADDRESSES", "GATEWAYS", "VHOST-USER SOCKET"];
            match c {
                PodCmd::List => {
                    let l = client.list(list()).await?.into_inner();
                    if j {
                        json(&l);
                        return Ok(());
                    }
                    table(&headers, l.pods.iter().map(row).collect());
                }
                PodCmd::Attach { container, ifname, port, network, mac, addresses, mode, socket_uid, socket_gid } => {
                    let pod = Some(pb::PodRef { container_id: container, ifname });
                    let req = pb::PodAttach { pod, port, network, mac, addresses, mode, socket_uid, socket_gid };
                    let a = client.attach(req).await?.into_inner();
                    if j {
                        json(&a);
                        return Ok(());
                    }
                    table(&headers, vec![row(&a)]);
                    println!("{}: generation {}", if a.changed { "ok" } else { "unchanged" }, a.generation);
                }
                PodCmd::Detach { container, ifname } => {
                    let r = pb::PodRef { container_id: container, ifname };
                    applied(client.detach(r).await?.into_inner(), j);
                }
            }
        }
        Cmd::Fib => {
            let l = pb::routes_client::RoutesClient::new(ch).fib(list()).await?.into_inner();
            if j {
                json(&l);
                return Ok(());
            }
            table(
                &["PREFIX", "KIND", "NETWORK", "PORT", "VIA"],
                l.entries
                    .iter()
                    .map(|e| {
                        let via = if e.peer.is_empty() { e.via.clone() } else { format!("{} ({})", e.peer, e.via) };
                        vec![e.prefix.clone(), e.kind.clone(), or_dash(&e.network), or_dash(&e.port), or_dash(&via)]
                    })
                    .collect(),
            );
        }
        Cmd::Neigh => {
            let l = pb::neighbours_client::NeighboursClient::new(ch).list(list()).await?.into_inner();
            if j {
                json(&l);
                return Ok(());
            }
            table(
                &["NETWORK", "ADDRESS", "MAC", "STATE"],
                l.neighbours
                    .iter()
                    .map(|n| vec![n.network.clone(), n.address.clone(), or_dash(&n.mac), n.state.clone()])
                    .collect(),
            );
        }
        Cmd::Fdb => {
            let l = pb::switch_client::SwitchClient::new(ch).fdb(list()).await?.into_inner();
            if j {
                json(&l);
                return Ok(());
            }
            table(
                &["NETWORK", "MAC", "PORT", "TYPE"],
                l.entries
                    .iter()
                    .map(|e| {
                        vec![
                            e.network.clone(),
                            e.mac.clone(),
                            if e.peer.is_empty() { e.port.clone() } else { format!("{} (peer {})", e.port, e.peer) },
                            if e.is_static { "static" } else { "learned" }.into(),
                        ]
                    })
                    .collect(),
            );
        }
        Cmd::Stats(a) => stats(ch, a, j).await?,
        Cmd::Capture { port, file, count, duration } => {
            let req = pb::CaptureRequest { port, count, duration_ms: (duration.max(0.001) * 1000.0) as u32 };
            let mut s = pb::debug_client::DebugClient::new(ch).capture(req).await?.into_inner();
            let mut out: Box<dyn std::io::Write> = if file.as_os_str() == "-" {
                Box::new(std::io::stdout())
            } else {
                Box::new(
                    std::fs::File::create(&file)
                        .map_err(|e| Failure { code: 2, message: format!("cannot write {}: {e}", file.display()) })?,
                )
            };
            let (mut frames, mut lost) = (0, 0);
            while let Some(c) = s.message().await? {
                out.write_all(&c.pcap)
                    .map_err(|e| Failure { code: 4, message: format!("writing the capture: {e}") })?;
                (frames, lost) = (c.frames, c.lost);
            }
            out.flush().map_err(|e| Failure { code: 4, message: format!("writing the capture: {e}") })?;
            if j {
                eprintln!("{}", serde_json::json!({ "frames": frames, "lost": lost }));
            } else {
                eprintln!(
                    "{frames} frames captured to {}{}",
                    file.display(),
                    if lost > 0 { format!(" ({lost} lost: the switch outran the capture)") } else { String::new() }
                );
            }
        }
        Cmd::Trace { count, timeout } => {
            let req = pb::TraceRequest { count, timeout_ms: (timeout.max(0.001) * 1000.0) as u32 };
            let t = pb::debug_client::DebugClient::new(ch).trace(req).await?.into_inner();
            if j {
                json(&t);
                return Ok(());
            }
            if t.packets.is_empty() {
                println!("no packets arrived within {timeout} s");
            }
            for (i, p) in t.packets.iter().enumerate() {
                println!("packet {}: worker {}, port {}, {} bytes: {}", i + 1, p.worker, p.port, p.len, p.summary);
                for s in &p.steps {
                    println!("  {:<9} {}", s.stage, s.decision);
                }
            }
        }
        Cmd::Watch { count } => {
            let mut s = pb::switch_client::SwitchClient::new(ch).watch(pb::WatchRequest {}).await?.into_inner();
            let mut n = 0;
            while count.is_none_or(|c| n < c) {
                let Some(c) = s.message().await? else { break };
                if j {
                    println!("{}", serde_json::to_string(&c).expect("serializable"));
                } else {
                    println!("generation {}: {} {} {}", c.generation, c.op, c.kind, c.name);
                }
                n += 1;
            }
        }
    }
    Ok(())
}

fn target(r: &pb::Route) -> String {
    use pb::route::Target;
    match &r.target {
        Some(Target::Via(v)) => format!("via {v}"),
        Some(Target::Network(n)) => format!("network {n}"),
        Some(Target::Port(p)) => format!("port {p}"),
        Some(Target::Drop(_)) => "drop".into(),
        None => "-".into(),
    }
}

async fn stats(ch: Channel, a: StatsArgs, j: bool) -> Result<(), Failure> {
    let mut client = pb::switch_client::SwitchClient::new(ch);
    let mut prev = client.stats(pb::ListRequest {}).await?.into_inner();
    if !a.watch {
        if j {
            json(&prev);
            return Ok(());
        }
        table(
            &["PORT", "RX PKTS", "RX BYTES", "TX PKTS", "TX BYTES", "FLOODED", "XSK DROPS"],
            prev.ports
                .iter()
                .map(|p| {
                    vec![
                        p.name.clone(),
                        p.rx_packets.to_string(),
                        p.rx_bytes.to_string(),
                        p.tx_packets.to_string(),
                        p.tx_bytes.to_string(),
                        p.tx_flood_packets.to_string(),
                        p.xsk_rx_dropped.to_string(),
                    ]
                })
                .collect(),
        );
        println!();
        table(
            &["WORKER", "CORE", "PACKETS", "BATCHES", "AVG BATCH", "BUSY %", "FREE FRAMES"],
            prev.workers
                .iter()
                .map(|w| {
                    let loops = (w.busy_loops + w.idle_loops).max(1);
                    vec![
                        w.id.to_string(),
                        w.core.to_string(),
                        w.packets.to_string(),
                        w.batches.to_string(),
                        format!("{:.1}", w.packets as f64 / w.batches.max(1) as f64),
                        format!("{:.1}", 100.0 * w.busy_loops as f64 / loops as f64),
                        format!("{}/{}", w.free_frames, w.umem_frames),
                    ]
                })
                .collect(),
        );
        if !prev.drops.is_empty() {
            println!();
            table(
                &["DROP REASON", "PACKETS"],
                prev.drops.iter().map(|d| vec![d.reason.clone(), d.packets.to_string()]).collect(),
            );
        }
        return Ok(());
    }
    let mut n = 0;
    while a.count.is_none_or(|c| n < c) {
        tokio::time::sleep(Duration::from_secs_f64(a.interval.max(0.1))).await;
        let cur = client.stats(pb::ListRequest {}).await?.into_inner();
        let dt = (cur.at_ns.saturating_sub(prev.at_ns)) as f64 / 1e9;
        let rate = |now: u64, before: u64| now.saturating_sub(before) as f64 / dt.max(1e-9);
        let rows: Vec<_> = cur
            .ports
            .iter()
            .map(|p| {
                let b = prev.ports.iter().find(|q| q.id == p.id && q.name == p.name).cloned().unwrap_or_default();
                (
                    p.name.clone(),
                    rate(p.rx_packets, b.rx_packets),
                    rate(p.tx_packets, b.tx_packets),
                    rate(p.rx_bytes, b.rx_bytes) * 8.0,
                    rate(p.tx_bytes, b.tx_bytes) * 8.0,
                )
            })
            .collect();
        if j {
            let v: Vec<_> = rows
                .iter()
                .map(|r| serde_json::json!({"port": r.0, "rx_pps": r.1, "tx_pps": r.2, "rx_bps": r.3, "tx_bps": r.4}))
                .collect();
            println!("{}", serde_json::json!({ "interval_s": dt, "ports": v }));
        } else {
            table(
                &["PORT", "RX PPS", "TX PPS", "RX BIT/S", "TX BIT/S"],
                rows.iter()
                    .map(|r| {
                        vec![
                            r.0.clone(),
                            format!("{:.0}", r.1),
                            format!("{:.0}", r.2),
                            format!("{:.0}", r.3),
                            format!("{:.0}", r.4),
                        ]
                    })
                    .collect(),
            );
            println!();
        }
        prev = cur;
        n += 1;
    }
    Ok(())
}
