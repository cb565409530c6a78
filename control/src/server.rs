//! The gRPC API on the control socket.
//!
//! A small tokio runtime (one thread, plus blocking threads for mutations, all on the
//! CPUs that are not the workers') serves `podswitch.v1`. Mutations run on a blocking
//! thread: they take the engine's lock, apply, and wait for the journal fsync (after
//! releasing the lock, so concurrent requests share fsyncs) before answering.

use crate::api::v1 as pb;
use crate::config::{Config, NetworkConfig, PeerConfig, PortConfig, RouteConfig, VlanConfig};
use crate::daemon::View;
use crate::engine::Engine;
use crate::state::{Mutation, Refusal};
use anyhow::{bail, Context, Result};
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use switch_core::stats::{DropReason, PortCounters, WorkerStats};
use switch_core::tables::{Hop, NetworkId, PortId};
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};

/// How often ports whose interface is missing are looked for.
const RECONCILE: Duration = Duration::from_secs(2);

/// The running API.
pub struct Server {
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    socket: std::path::PathBuf,
}

impl Server {
    /// Binds the control socket and serves on a thread of its own.
    pub fn start(cfg: &Config, engine: Arc<Mutex<Engine>>, view: Arc<View>, cpus: Vec<usize>) -> Result<Server> {
        let path = cfg.control_socket.clone();
        let listener = bind(&path, cfg.control_socket_gid)?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let pin = cpus.clone();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .max_blocking_threads(16)
            .thread_name("ps-api")
            .on_thread_start(move || crate::daemon::pin_to(&pin))
            .enable_all()
            .build()
            .context("starting the API runtime")?;
        let api = Api { engine, view };
        let thread = std::thread::Builder::new().name("ps-api".into()).spawn(move || {
            rt.block_on(async move {
                listener.set_nonblocking(true).expect("nonblocking");
                let listener = match tokio::net::UnixListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::error!("control socket: {e}");
                        return;
                    }
                };
                let reconcile = {
                    let engine = api.engine.clone();
                    tokio::spawn(async move {
                        let mut t = tokio::time::interval(RECONCILE);
                        loop {
                            t.tick().await;
                            let engine = engine.clone();
                            let _ = tokio::task::spawn_blocking(move || {
                                engine.lock().unwrap_or_else(|e| e.into_inner()).reconcile()
                            })
                            .await;
                        }
                    })
                };
                let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
                let served = tonic::transport::Server::builder()
                    .add_service(pb::networks_server::NetworksServer::new(api.clone()))
                    .add_service(pb::ports_server::PortsServer::new(api.clone()))
                    .add_service(pb::routes_server::RoutesServer::new(api.clone()))
                    .add_service(pb::peers_server::PeersServer::new(api.clone()))
                    .add_service(pb::neighbours_server::NeighboursServer::new(api.clone()))
                    .add_service(pb::pods_server::PodsServer::new(api.clone()))
                    .add_service(pb::switch_server::SwitchServer::new(api.clone()))
                    .add_service(pb::debug_server::DebugServer::new(api))
                    .serve_with_incoming_shutdown(incoming, async {
                        let _ = rx.await;
                    })
                    .await;
                reconcile.abort();
                if let Err(e) = served {
                    tracing::error!("API server: {e}");
                }
            });
        })?;
        Ok(Server { shutdown: Some(tx), thread: Some(thread), socket: path })
    }

    /// Stops serving and removes the socket.
    pub fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// Creates the socket: its directory, no stale file, mode 0600 (0660 with a group).
fn bind(path: &Path, gid: Option<u32>) -> Result<std::os::unix::net::UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("control_socket: creating {}", dir.display()))?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            bail!(
                "control_socket {}: another podswitchd is listening there; stop it or give this one another socket",
                path.display()
            );
        }
        std::fs::remove_file(path).with_context(|| format!("control_socket: removing stale {}", path.display()))?;
    }
    let listener = std::os::unix::net::UnixListener::bind(path)
        .with_context(|| format!("control_socket: binding {}", path.display()))?;
    let mode = if gid.is_some() { 0o660 } else { 0o600 };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("control_socket: chmod {}", path.display()))?;
    if let Some(g) = gid {
        std::os::unix::fs::chown(path, None, Some(g))
            .with_context(|| format!("control_socket: chown to group {g} {}", path.display()))?;
    }
    Ok(listener)
}

#[derive(Clone)]
struct Api {
    engine: Arc<Mutex<Engine>>,
    view: Arc<View>,
}

fn applied(a: &crate::engine::Applied) -> pb::Applied {
    pb::Applied { generation: a.generation, changed: a.changed }
}

fn status(r: Refusal) -> Status {
    match r {
        Refusal::Invalid(m) => Status::invalid_argument(m),
        Refusal::Conflict(m) => Status::failed_precondition(m),
    }
}

fn lock(engine: &Mutex<Engine>) -> std::sync::MutexGuard<'_, Engine> {
    engine.lock().unwrap_or_else(|e| e.into_inner())
}

impl Api {
    /// Runs a change on a blocking thread: `f` under the engine's lock, then a second
    /// turn at the lock to publish (requests that queued meanwhile were applied too, and
    /// the first of them to get here publishes them all at once), then the journal fsync
    /// (shared with concurrent requests) before the answer.
    async fn change<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Engine) -> Result<(T, Option<u64>), Refusal> + Send + 'static,
    ) -> Result<Response<T>, Status> {
        let engine = self.engine.clone();
        tokio::task::spawn_blocking(move || {
            let (res, store) = {
                let mut e = lock(&engine);
                let res = f(&mut e);
                (res, e.store().clone())
            };
            let (reply, seq) = res.map_err(status)?;
            lock(&engine).flush();
            if let Some(seq) = seq {
                // Applied but not durable: the daemon cannot promise anything any more.
                store.sync(seq).map_err(|e| {
                    tracing::error!("fsync of the journal failed: {e}");
                    Status::data_loss(format!("the change was applied but could not be made durable: {e}"))
                })?;
            }
            Ok(Response::new(reply))
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
    }

    async fn mutate(&self, m: Result<Mutation, Refusal>) -> Result<Response<pb::Applied>, Status> {
        let m = m.map_err(status)?;
        self.change(move |e| e.apply(&m).map(|a| (applied(&a), a.seq))).await
    }

    /// Network and port names by id, from the published topology.
    fn names(&self) -> (Vec<Option<String>>, Vec<Option<String>>) {
        let tables = self.view.tables.load();
        let mut nets: Vec<Option<String>> = Vec::new();
        for n in tables.topology.networks() {
            let i = n.spec.id.0 as usize;
            if nets.len() <= i {
                nets.resize(i + 1, None);
            }
            nets[i] = Some(n.spec.name.clone());
        }
        let mut ports: Vec<Option<String>> = Vec::new();
        for p in tables.topology.ports() {
            let i = p.spec.id.0 as usize;
            if ports.len() <= i {
                ports.resize(i + 1, None);
            }
            ports[i] = Some(p.spec.name.clone());
        }
        (nets, ports)
    }
}

fn net_name(names: &[Option<String>], id: NetworkId) -> String {
    names.get(id.0 as usize).cloned().flatten().unwrap_or_else(|| format!("#{}", id.0))
}

fn port_name(names: &[Option<String>], id: PortId) -> String {
    names.get(id.0 as usize).cloned().flatten().unwrap_or_else(|| format!("#{}", id.0))
}

// ---- Conversions ----

fn network_in(n: pb::Network) -> NetworkConfig {
    NetworkConfig {
        name: n.name,
        ageing_s: if n.ageing_s == 0 { 300 } else { n.ageing_s },
        gateway: n.gateway,
        gateway_mac: n.gateway_mac,
        router_advertisements: n.router_advertisements,
        vni: n.vni,
    }
}

fn port_in(p: pb::Port) -> Result<PortConfig, Refusal> {
    let mut vlans = Vec::new();
    for v in p.vlans {
        let vid = u16::try_from(v.vid)
            .map_err(|_| Refusal::Invalid(format!("port {:?}: VLAN {} is out of range (1 to 4094)", p.name, v.vid)))?;
        vlans.push(VlanConfig { vid, network: v.network });
    }
    let mut addresses = Vec::new();
    for (i, a) in p.addresses.iter().enumerate() {
        let ip: IpAddr = a.parse().map_err(|_| {
            Refusal::Invalid(format!("port {:?}: addresses[{i}] = {a:?} is not an IPv4 or IPv6 address", p.name))
        })?;
        addresses.push(ip);
    }
    Ok(PortConfig {
        name: p.name,
        network: p.network,
        vlans,
        native: p.native,
        macs: p.macs,
        addresses,
        pod: None,
        vhost_user: None,
    })
}

fn peer_in(p: pb::Peer) -> Result<PeerConfig, Refusal> {
    let underlay = p
        .underlay
        .iter()
        .map(|a| {
            a.parse().map_err(|_| {
                Refusal::Invalid(format!("peer {:?}: underlay address {a:?} is not an IP address", p.name))
            })
        })
        .collect::<Result<_, _>>()?;
    Ok(PeerConfig { name: p.name, underlay, vtep_mac: p.vtep_mac, pod_cidrs: p.pod_cidrs, vnis: p.vnis })
}

fn route_in(r: pb::Route) -> Result<RouteConfig, Refusal> {
    use pb::route::Target;
    let mut c = RouteConfig { prefix: r.prefix.clone(), via: None, network: None, port: None, drop: false };
    match r.target {
        Some(Target::Via(v)) => {
            c.via = Some(v.parse().map_err(|_| {
                Refusal::Invalid(format!("route {:?}: via {v:?} is not an IPv4 or IPv6 address", r.prefix))
            })?)
        }
        Some(Target::Network(n)) => c.network = Some(n),
        Some(Target::Port(p)) => c.port = Some(p),
        Some(Target::Drop(true)) => c.drop = true,
        Some(Target::Drop(false)) | None => {
            return Err(Refusal::Invalid(format!(
                "route {:?}: give exactly one of via, network, port or drop",
                r.prefix
            )))
        }
    }
    Ok(c)
}

fn route_out(r: &RouteConfig) -> pb::Route {
    use pb::route::Target;
    let target = if let Some(v) = r.via {
        Target::Via(v.to_string())
    } else if let Some(n) = &r.network {
        Target::Network(n.clone())
    } else if let Some(p) = &r.port {
        Target::Port(p.clone())
    } else {
        Target::Drop(true)
    };
    pb::Route { prefix: crate::state::route_key(&r.prefix), target: Some(target) }
}

fn counters(name: &str, id: u16, c: &[&PortCounters]) -> pb::PortCounters {
    let sum = |f: fn(&PortCounters) -> u64| c.iter().map(|c| f(c)).sum();
    pb::PortCounters {
        name: name.to_string(),
        id: u32::from(id),
        rx_packets: sum(|c| c.rx_packets.get()),
        rx_bytes: sum(|c| c.rx_bytes.get()),
        tx_packets: sum(|c| c.tx_packets.get()),
        tx_bytes: sum(|c| c.tx_bytes.get()),
        tx_flood_packets: sum(|c| c.tx_flood.get()),
        xsk_rx_dropped: sum(|c| c.xsk.rx_dropped.get()),
        xsk_rx_ring_full: sum(|c| c.xsk.rx_ring_full.get()),
        xsk_rx_fill_ring_empty: sum(|c| c.xsk.rx_fill_ring_empty.get()),
    }
}

fn drops(workers: &[&WorkerStats]) -> Vec<pb::Drop> {
    DropReason::ALL
        .iter()
        .map(|r| pb::Drop { reason: r.name().to_string(), packets: workers.iter().map(|w| w.drops(*r)).sum() })
        .filter(|d| d.packets > 0)
        .collect()
}

// ---- Services ----

#[tonic::async_trait]
impl pb::networks_server::Networks for Api {
    async fn put(&self, r: Request<pb::Network>) -> Result<Response<pb::Applied>, Status> {
        self.mutate(Ok(Mutation::PutNetwork(network_in(r.into_inner())))).await
    }

    async fn delete(&self, r: Request<pb::Name>) -> Result<Response<pb::Applied>, Status> {
        self.mutate(Ok(Mutation::DeleteNetwork(r.into_inner().name))).await
    }

    async fn list(&self, _: Request<pb::ListRequest>) -> Result<Response<pb::NetworkList>, Status> {
        let e = lock(&self.engine);
        let d = e.desired();
        let networks = d
            .networks
            .values()
            .map(|n| pb::Network {
                name: n.name.clone(),
                ageing_s: n.ageing_s,
                gateway: n.gateway.clone(),
                gateway_mac: n.gateway_mac.clone(),
                router_advertisements: n.router_advertisements,
                vni: n.vni,
                id: u32::from(d.ids.networks.get(&n.name).copied().unwrap_or_default()),
            })
            .collect();
        Ok(Response::new(pb::NetworkList { networks, generation: d.generation }))
    }
}

#[tonic::async_trait]
impl pb::ports_server::Ports for Api {
    async fn put(&self, r: Request<pb::Port>) -> Result<Response<pb::Applied>, Status> {
        self.mutate(port_in(r.into_inner()).map(Mutation::PutPort)).await
    }

    async fn delete(&self, r: Request<pb::Name>) -> Result<Response<pb::Applied>, Status> {
        self.mutate(Ok(Mutation::DeletePort(r.into_inner().name))).await
    }

    async fn list(&self, _: Request<pb::ListRequest>) -> Result<Response<pb::PortList>, Status> {
        let e = lock(&self.engine);
        let d = e.desired();
        let views = e.port_views();
        let status = |name: &str, id: u16, from_config: bool| {
            let v = views.iter().find(|v| v.id == id);
            pb::PortStatus {
                id: u32::from(id),
                attached: v.is_some(),
                reason: e.missing().get(name).cloned().unwrap_or_default(),
                xdp_mode: v.map(|v| format!("{:?}", v.xdp_mode).to_lowercase()).unwrap_or_default(),
                max_frame: v.map_or(0, |v| v.max_frame),
                from_config,
            }
        };
        let mut ports: Vec<pb::Port> = d
            .ports
            .values()
            .map(|p| pb::Port {
                name: p.name.clone(),
                network: p.network.clone(),
                vlans: p.vlans.iter().map(|v| pb::Vlan { vid: u32::from(v.vid), network: v.network.clone() }).collect(),
                native: p.native.clone(),
                macs: p.macs.clone(),
                addresses: p.addresses.iter().map(|a| a.to_string()).collect(),
                status: Some(status(&p.name, d.ids.ports.get(&p.name).copied().unwrap_or_default(), false)),
            })
            .collect();
        if let Some(h) = &e.base().host_port {
            let id = e.base().dataplane.max_ports - 1;
            ports.push(pb::Port {
                name: h.switch_side(),
                network: Some(h.network.clone()),
                status: Some(status(&h.switch_side(), id, true)),
                ..Default::default()
            });
        }
        if let Some(u) = &e.base().uplink {
            // In no network: it carries the tunnel (`podswitchctl fib` shows the peers).
            ports.push(pb::Port {
                name: u.interface.clone(),
                status: Some(status(&u.interface, e.base().uplink_port_id(), true)),
                ..Default::default()
            });
        }
        Ok(Response::new(pb::PortList { ports, generation: d.generation }))
    }
}

#[tonic::async_trait]
impl pb::peers_server::Peers for Api {
    async fn put(&self, r: Request<pb::Peer>) -> Result<Response<pb::Applied>, Status> {
        self.mutate(peer_in(r.into_inner()).map(Mutation::PutPeer)).await
    }

    async fn delete(&self, r: Request<pb::Name>) -> Result<Response<pb::Applied>, Status> {
        self.mutate(Ok(Mutation::DeletePeer(r.into_inner().name))).await
    }

    async fn list(&self, _: Request<pb::ListRequest>) -> Result<Response<pb::PeerList>, Status> {
        let tables = self.view.tables.load();
        let e = lock(&self.engine);
        let d = e.desired();
        let peers = d
            .peers
            .values()
            .map(|p| {
                let live = tables.tunnel.peers.iter().find(|t| t.spec.name == p.name);
                pb::Peer {
                    name: p.name.clone(),
                    underlay: p.underlay.iter().map(ToString::to_string).collect(),
                    vtep_mac: p.vtep_mac.clone(),
                    pod_cidrs: p.pod_cidrs.clone(),
                    vnis: p.vnis.clone(),
                    reached_at: live.map(|t| t.spec.underlay.to_string()).unwrap_or_default(),
                    next_hop: live.and_then(|t| t.spec.next_hop).map(|m| m.to_string()).unwrap_or_default(),
                }
            })
            .collect();
        Ok(Response::new(pb::PeerList { peers, generation: d.generation }))
    }
}

#[tonic::async_trait]
impl pb::routes_server::Routes for Api {
    async fn put(&self, r: Request<pb::Route>) -> Result<Response<pb::Applied>, Status> {
        self.mutate(route_in(r.into_inner()).map(Mutation::PutRoute)).await
    }

    async fn delete(&self, r: Request<pb::Name>) -> Result<Response<pb::Applied>, Status> {
        self.mutate(Ok(Mutation::DeleteRoute(r.into_inner().name))).await
    }

    async fn list(&self, _: Request<pb::ListRequest>) -> Result<Response<pb::RouteList>, Status> {
        let e = lock(&self.engine);
        let d = e.desired();
        Ok(Response::new(pb::RouteList {
            routes: d.routes.values().map(route_out).collect(),
            generation: d.generation,
        }))
    }

    async fn fib(&self, _: Request<pb::ListRequest>) -> Result<Response<pb::FibList>, Status> {
        let tables = self.view.tables.load();
        let (nets, ports) = self.names();
        let entries = tables
            .routes
            .table
            .iter()
            .map(|(p, h)| {
                let mut e = pb::FibEntry { prefix: p.to_string(), ..Default::default() };
                match h {
                    Hop::Connected { network, port } => {
                        e.kind = "connected".into();
                        e.network = net_name(&nets, *network);
                        e.port = port.map(|p| port_name(&ports, p)).unwrap_or_default();
                    }
                    Hop::Via { network, ip } => {
                        e.kind = "via".into();
                        e.network = net_name(&nets, *network);
                        e.via = ip.to_string();
                    }
                    Hop::Drop => e.kind = "drop".into(),
                    Hop::Peer(i) => {
                        e.kind = "peer".into();
                        if let Some(p) = tables.tunnel.peer(*i) {
                            e.peer = p.spec.name.clone();
                            e.via = p.spec.underlay.to_string();
                        }
                    }
                }
                e
            })
            .collect();
        Ok(Response::new(pb::FibList { entries }))
    }
}

#[tonic::async_trait]
impl pb::neighbours_server::Neighbours for Api {
    async fn list(&self, _: Request<pb::ListRequest>) -> Result<Response<pb::NeighbourList>, Status> {
        let list = {
            let e = lock(&self.engine);
            let live = e.live().lock().unwrap_or_else(|e| e.into_inner());
            live.resolver.list()
        };
        let (nets, _) = self.names();
        let neighbours = list
            .into_iter()
            .map(|n| pb::Neighbour {
                network: net_name(&nets, NetworkId(n.key.network)),
                address: n.key.ip().to_string(),
                mac: n.mac.map(|m| m.to_string()).unwrap_or_default(),
                state: n.state.to_string(),
            })
            .collect();
        Ok(Response::new(pb::NeighbourList { neighbours }))
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::Change, Status>> + Send>>;

#[tonic::async_trait]
impl pb::switch_server::Switch for Api {
    async fn status(&self, _: Request<pb::ListRequest>) -> Result<Response<pb::StatusReply>, Status> {
        let e = lock(&self.engine);
        let d = e.desired();
        let views = e.port_views();
        Ok(Response::new(pb::StatusReply {
            version: env!("CARGO_PKG_VERSION").to_string(),
            generation: d.generation,
            tables_generation: self.view.tables.load().generation,
            workers: self.view.workers.len() as u32,
            networks: d.networks.len() as u32,
            ports: (d.ports.len() + usize::from(e.base().host_port.is_some())) as u32,
            ports_attached: views.len() as u32,
            routes: d.routes.len() as u32,
            uptime_s: self.view.started.elapsed().as_secs(),
            state_dir: e.store().dir().display().to_string(),
            missing_ports: e.missing().keys().cloned().collect(),
            // Over a tunnel, what it leaves of the uplink's MTU.
            pod_mtu: e
                .base()
                .pod_mtu_over(e.base().uplink.as_ref().and_then(|u| switch_core::sys::netdev::mtu(&u.interface).ok())),
            max_mtu: e.base().max_pod_mtu(),
        }))
    }

    async fn stats(&self, _: Request<pb::ListRequest>) -> Result<Response<pb::StatsReply>, Status> {
        let v = &self.view;
        let at_ns = v.started.elapsed().as_nanos() as u64;
        let ports = v.ports();
        let all: Vec<&WorkerStats> = v.workers.iter().map(|w| &**w).collect();
        let port_totals = ports
            .iter()
            .map(|p| {
                let c: Vec<&PortCounters> = all.iter().map(|w| &w.ports[p.id as usize]).collect();
                counters(&p.name, p.id, &c)
            })
            .collect();
        let workers = all
            .iter()
            .enumerate()
            .map(|(i, w)| pb::WorkerCounters {
                id: i as u32,
                core: v.cores.get(i).copied().unwrap_or_default() as u32,
                busy_loops: w.busy_loops.get(),
                idle_loops: w.idle_loops.get(),
                batches: w.batches.get(),
                packets: w.packets.get(),
                umem_frames: w.umem_frames.get() as u32,
                free_frames: w.free_frames.get(),
                tables_generation: w.generation.get(),
                drops: drops(&[w]),
                ports: ports.iter().map(|p| counters(&p.name, p.id, &[&w.ports[p.id as usize]])).collect(),
            })
            .collect();
        Ok(Response::new(pb::StatsReply { ports: port_totals, drops: drops(&all), workers, at_ns }))
    }

    async fn fdb(&self, _: Request<pb::ListRequest>) -> Result<Response<pb::FdbList>, Status> {
        let tables = self.view.tables.load();
        let (nets, ports) = self.names();
        let mut entries: Vec<pb::FdbEntry> = tables
            .fdb
            .iter()
            .map(|(n, mac, e)| pb::FdbEntry {
                network: net_name(&nets, n),
                mac: mac.to_string(),
                port: port_name(&ports, e.port),
                is_static: e.is_static(),
                peer: match tables.tunnel.peer(e.peer) {
                    Some(p) if e.is_remote() => p.spec.name.clone(),
                    _ => String::new(),
                },
            })
            .collect();
        entries.sort_by(|a, b| (&a.network, &a.mac).cmp(&(&b.network, &b.mac)));
        Ok(Response::new(pb::FdbList { entries }))
    }

    type WatchStream = WatchStream;

    async fn watch(&self, _: Request<pb::WatchRequest>) -> Result<Response<WatchStream>, Status> {
        let rx = lock(&self.engine).subscribe();
        let stream = tokio_stream::wrappers::BroadcastStream::new(rx).map(|c| match c {
            Ok(c) => Ok(pb::Change { generation: c.generation, kind: c.kind.into(), name: c.name, op: c.op.into() }),
            Err(e) => Err(Status::data_loss(format!("watcher fell behind: {e}; list again and re-watch"))),
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

// ---- Pods ----

fn pod_ref(r: Option<pb::PodRef>) -> Result<crate::config::PodRef, Status> {
    let r = r.ok_or_else(|| Status::invalid_argument("pod: container_id and ifname are required"))?;
    Ok(crate::config::PodRef { container_id: r.container_id, ifname: r.ifname })
}

/// A pod's port as the API shows it: addresses with their subnet's length, gateways.
fn attachment(e: &Engine, p: &PortConfig, generation: u64, changed: bool) -> pb::PodAttachment {
    let gw = p.network.as_ref().and_then(|n| e.desired().networks.get(n)).and_then(|n| n.gateway_spec().ok().flatten());
    let len = |a: &IpAddr| match (a, &gw) {
        (IpAddr::V4(_), Some(g)) => g.v4.map_or(32, |(_, l)| l),
        (IpAddr::V6(_), Some(g)) => g.v6.map_or(128, |(_, l)| l),
        (IpAddr::V4(_), None) => 32,
        (IpAddr::V6(_), None) => 128,
    };
    let gateways = gw
        .as_ref()
        .map(|g| g.v4.map(|(a, _)| a.to_string()).into_iter().chain(g.v6.map(|(a, _)| a.to_string())).collect())
        .unwrap_or_default();
    pb::PodAttachment {
        pod: p.pod.as_ref().map(|r| pb::PodRef { container_id: r.container_id.clone(), ifname: r.ifname.clone() }),
        port: p.name.clone(),
        network: p.network.clone().unwrap_or_default(),
        mac: p.macs.first().cloned().unwrap_or_default(),
        addresses: p.addresses.iter().map(|a| format!("{a}/{}", len(a))).collect(),
        gateways,
        generation,
        changed,
        mode: if p.vhost_user.is_some() { "vhostuser" } else { "afxdp" }.into(),
        socket_path: if p.vhost_user.is_some() {
            e.base().vhost_user_socket(&p.name).display().to_string()
        } else {
            String::new()
        },
    }
}

#[tonic::async_trait]
impl pb::pods_server::Pods for Api {
    async fn attach(&self, r: Request<pb::PodAttach>) -> Result<Response<pb::PodAttachment>, Status> {
        let r = r.into_inner();
        let pod = pod_ref(r.pod)?;
        self.change(move |e| {
            let vhost = match r.mode.as_str() {
                "" | "afxdp" => None,
                "vhostuser" => Some(crate::config::VhostUserConfig { uid: r.socket_uid, gid: r.socket_gid }),
                m => return Err(Refusal::Invalid(format!("mode {m:?} is unknown: use \"afxdp\" or \"vhostuser\""))),
            };
            let (p, a) = e.attach_pod(pod, &r.port, &r.network, &r.mac, &r.addresses, vhost)?;
            Ok((attachment(e, &p, a.generation, a.changed), a.seq))
        })
        .await
    }

    async fn detach(&self, r: Request<pb::PodRef>) -> Result<Response<pb::Applied>, Status> {
        let pod = pod_ref(Some(r.into_inner()))?;
        self.change(move |e| e.detach_pod(&pod).map(|a| (applied(&a), a.seq))).await
    }

    async fn list(&self, _: Request<pb::ListRequest>) -> Result<Response<pb::PodList>, Status> {
        let e = lock(&self.engine);
        let g = e.desired().generation;
        let pods =
            e.desired().ports.values().filter(|p| p.pod.is_some()).map(|p| attachment(&e, p, g, false)).collect();
        Ok(Response::new(pb::PodList { pods }))
    }
}

// ---- Debugging ----

/// Most frames one capture may ask for.
const MAX_CAPTURE: u32 = 1_000_000;
/// Longest capture or trace.
const MAX_DEBUG_MS: u32 = 3_600_000;

/// Clears a busy flag when dropped, however the task ends.
struct Busy<'a>(&'a std::sync::atomic::AtomicBool);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        // Relaxed: the flag guards nothing but itself.
        self.0.store(false, std::sync::atomic::Ordering::Relaxed);
    }
}

fn claim(flag: &std::sync::atomic::AtomicBool, what: &str) -> Result<(), Status> {
    // Relaxed: see Busy.
    if flag.swap(true, std::sync::atomic::Ordering::Relaxed) {
        return Err(Status::failed_precondition(format!("a {what} is already running; one at a time")));
    }
    Ok(())
}

/// pcap file header: nanosecond timestamps, Ethernet, snap length `SNAP`.
fn pcap_header() -> Vec<u8> {
    let mut h = Vec::with_capacity(24);
    h.extend_from_slice(&0xa1b2_3c4du32.to_le_bytes());
    h.extend_from_slice(&2u16.to_le_bytes());
    h.extend_from_slice(&4u16.to_le_bytes());
    h.extend_from_slice(&0i32.to_le_bytes());
    h.extend_from_slice(&0u32.to_le_bytes());
    h.extend_from_slice(&(switch_core::debug::SNAP as u32).to_le_bytes());
    h.extend_from_slice(&1u32.to_le_bytes());
    h
}

fn pcap_record(out: &mut Vec<u8>, view: &View, f: &switch_core::debug::CapturedFrame) {
    let wall = view.wall_start + Duration::from_nanos(f.ts_ns);
    let since = wall.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    out.extend_from_slice(&(since.as_secs() as u32).to_le_bytes());
    out.extend_from_slice(&since.subsec_nanos().to_le_bytes());
    out.extend_from_slice(&u32::from(f.len).to_le_bytes());
    out.extend_from_slice(&f.orig_len.to_le_bytes());
    out.extend_from_slice(&f.data[..f.len as usize]);
}

fn decision(
    step: &switch_core::debug::Step,
    nets: &[Option<String>],
    ports: &[Option<String>],
    peers: &[String],
) -> String {
    use switch_core::pipeline::Next;
    let net = net_name(nets, NetworkId(step.network));
    match step.next {
        Next::L2 => format!("network {net}"),
        Next::Port(p) => format!("send on {}", port_name(ports, p)),
        Next::Raw(p) => format!("to a remote node, on {}", port_name(ports, p)),
        Next::Vtep(i) => format!("to remote node {} in network {net}'s VNI", peer_name(peers, i)),
        Next::Fragment(p) => format!("send on {} in IPv4 fragments", port_name(ports, p)),
        Next::FragmentToPeer(i) => format!("to remote node {} in IPv4 fragments", peer_name(peers, i)),
        Next::Flood => format!("flood in network {net}"),
        Next::L3 => format!("to network {net}'s gateway"),
        Next::Consumed => "answered by the switch".into(),
        Next::Parked => "parked until the next hop resolves".into(),
        Next::Drop(r) => format!("drop: {}", r.name()),
    }
}

fn peer_name(peers: &[String], i: u16) -> String {
    peers.get(usize::from(i)).cloned().unwrap_or_else(|| format!("#{i}"))
}

type CaptureStream = Pin<Box<dyn Stream<Item = Result<pb::CaptureChunk, Status>> + Send>>;

#[tonic::async_trait]
impl pb::debug_server::Debug for Api {
    type CaptureStream = CaptureStream;

    async fn capture(&self, r: Request<pb::CaptureRequest>) -> Result<Response<CaptureStream>, Status> {
        let r = r.into_inner();
        let count = if r.count == 0 { 1000 } else { r.count.min(MAX_CAPTURE) } as u64;
        let duration =
            Duration::from_millis(u64::from(if r.duration_ms == 0 { 10_000 } else { r.duration_ms.min(MAX_DEBUG_MS) }));
        let Some(id) = self.view.ports().iter().find(|p| p.name == r.port).map(|p| p.id) else {
            return Err(Status::failed_precondition(format!(
                "port {:?} is not attached; `podswitchctl port list` shows the ports",
                r.port
            )));
        };
        claim(&self.view.capture_busy, "capture")?;
        let view = self.view.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            let _busy = Busy(&view.capture_busy);
            let lost0: u64 = view.taps.iter().map(|t| t.capture.lost()).sum();
            // Frames left from an earlier capture are not this one's.
            for t in &view.taps {
                while t.capture.pop().is_some() {}
                t.capture.start(PortId(id));
            }
            let deadline = tokio::time::Instant::now() + duration;
            let mut frames = 0u64;
            let mut buf = pcap_header();
            loop {
                for t in &view.taps {
                    while frames < count {
                        let Some(f) = t.capture.pop() else { break };
                        pcap_record(&mut buf, &view, &f);
                        frames += 1;
                    }
                }
                let done = frames >= count || tokio::time::Instant::now() >= deadline;
                if !buf.is_empty() || done {
                    let lost = view.taps.iter().map(|t| t.capture.lost()).sum::<u64>() - lost0;
                    let chunk = pb::CaptureChunk { pcap: core::mem::take(&mut buf), frames, lost };
                    if tx.send(Ok(chunk)).await.is_err() {
                        break;
                    }
                }
                if done || tx.is_closed() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            for t in &view.taps {
                t.capture.stop();
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }

    async fn trace(&self, r: Request<pb::TraceRequest>) -> Result<Response<pb::TraceReply>, Status> {
        let r = r.into_inner();
        let count = if r.count == 0 { 10 } else { r.count.min(1000) };
        let timeout =
            Duration::from_millis(u64::from(if r.timeout_ms == 0 { 10_000 } else { r.timeout_ms.min(MAX_DEBUG_MS) }));
        claim(&self.view.trace_busy, "trace")?;
        let _busy = Busy(&self.view.trace_busy);
        for t in &self.view.taps {
            while t.trace.pop().is_some() {}
            t.trace.start(count);
        }
        let deadline = tokio::time::Instant::now() + timeout;
        let mut got = Vec::new();
        while (got.len() as u32) < count && tokio::time::Instant::now() < deadline {
            for (w, t) in self.view.taps.iter().enumerate() {
                while let Some(p) = t.trace.pop() {
                    got.push((w, p));
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        for t in &self.view.taps {
            t.trace.start(0);
        }
        got.truncate(count as usize);
        let (nets, ports) = self.names();
        let peers: Vec<String> = self.view.tables.load().tunnel.peers.iter().map(|p| p.spec.name.clone()).collect();
        let packets = got
            .iter()
            .map(|(w, p)| pb::TracedPacket {
                worker: *w as u32,
                port: port_name(&ports, p.port),
                len: p.len,
                summary: crate::summary::frame(&p.head[..p.head_len as usize]),
                steps: p
                    .steps()
                    .iter()
                    .map(|s| pb::TraceStep {
                        stage: s.stage.name().into(),
                        decision: decision(s, &nets, &ports, &peers),
                    })
                    .collect(),
            })
            .collect();
        Ok(Response::new(pb::TraceReply { packets }))
    }
}
