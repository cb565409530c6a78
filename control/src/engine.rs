//! Applies the desired state to the running dataplane.
//!
//! [`Engine::apply`] is the one path for every change, from the API or at start-up:
//! check the whole resulting state ([`state::check`]), attach what is new (sockets on
//! every worker, the XDP program), write the journal record, publish the tables, detach
//! what went. A refusal or a failure before the journal write leaves the state and the
//! dataplane as they were.
//!
//! Ports whose interface is missing (it vanished while the daemon was down, or a pod
//! was deleted without telling the API) stay in the desired state but out of the
//! dataplane; [`Engine::reconcile`] attaches them when the interface comes back.

use crate::config::{Config, Ids, PodRef, PortConfig};
use crate::daemon::{PortView, View};
use crate::overlay::TunnelParts;
use crate::state::{self, Desired, Mutation, Refusal};
use crate::store::Store;
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use switch_core::pipeline::BATCH_SIZE;
use switch_core::port::{Port, XskPort};
use switch_core::sys::netdev;
use switch_core::tables::{
    Fdb, Learner, NeighKey, Parts, PeerSpec, PortId, PortMode, PortSpec, Publisher, Resolver, Routes, Topology, Tunnel,
};
use switch_core::wire::EthernetAddress;
use switch_core::worker::{PortCommand, PortDone, WorkerQueues};
use switch_core::xdp::insn::UplinkFilter;
use switch_core::xdp::{Fallback, XdpMember, XdpMode, XdpShared};
use switch_core::xsk::{port_segment, HugepagePolicy, Segment, UmemConfig, XskConfig, XskSocket, FRAME_HEADROOM};

/// How long the kernel may take to free a queue whose socket was closed.
const QUEUE_RELEASE: Duration = Duration::from_secs(1);
/// How long a worker may take to act on a port command.
const WORKER_ANSWER: Duration = Duration::from_secs(2);

/// The tables control publishes, shared by the control thread (learning, ageing,
/// neighbours) and the engine (topology changes).
#[derive(Debug)]
pub struct Live {
    /// Publishes snapshots.
    pub publisher: Publisher,
    /// MAC learning.
    pub learner: Learner,
    /// Neighbour resolution.
    pub resolver: Resolver,
    /// The current topology.
    pub topology: Arc<Topology>,
    /// The current routes.
    pub routes: Arc<Routes>,
    /// The uplink and the peers, without their next hops' MACs.
    pub tunnel_parts: Option<TunnelParts>,
    /// The peers' underlay next hops' MACs (by peer underlay address), as the
    /// underlay watcher last found them.
    pub next_hops: HashMap<IpAddr, EthernetAddress>,
    /// The current tunnel table.
    pub tunnel: Arc<Tunnel>,
}

impl Live {
    /// Publishes the current state; returns the snapshot's generation.
    pub fn publish(&mut self) -> u64 {
        self.publisher.publish(Parts {
            topology: self.topology.clone(),
            fdb: Arc::new(self.learner.build()),
            routes: self.routes.clone(),
            neigh: Arc::new(self.resolver.build()),
            tunnel: self.tunnel.clone(),
        })
    }

    /// Replaces topology, routes, static neighbours and the tunnel's parts, and
    /// publishes.
    pub fn set(
        &mut self,
        topology: Topology,
        routes: Routes,
        statics: &[(NeighKey, EthernetAddress)],
        tunnel: Option<TunnelParts>,
    ) -> u64 {
        self.learner.sync_topology(&topology);
        self.resolver.set_statics(statics);
        self.topology = Arc::new(topology);
        self.routes = Arc::new(routes);
        self.tunnel_parts = tunnel;
        self.build_tunnel();
        self.publish()
    }

    /// Takes a topology that differs from the current one only in the ports `delta`
    /// names, patches the FDB's and the neighbour table's statics for those ports, and
    /// publishes: a pod's attachment without compiling every other port again.
    pub fn set_ports(&mut self, topology: Topology, delta: &PortDelta) -> u64 {
        let old = core::mem::replace(&mut self.topology, Arc::new(topology));
        let changed: Vec<PortId> = delta.removed.iter().copied().chain(delta.added.iter().map(|p| p.id)).collect();
        self.learner.sync_ports(&old, &self.topology, &changed);
        self.resolver.patch_statics(&delta.neigh_removed, &delta.neigh_added);
        self.publish()
    }

    /// Takes the underlay next hops' MACs; publishes if they changed anything.
    pub fn set_next_hops(&mut self, next_hops: HashMap<IpAddr, EthernetAddress>) {
        if next_hops != self.next_hops {
            self.next_hops = next_hops;
            self.build_tunnel();
            self.publish();
        }
    }

    /// The peers' underlay addresses (what the underlay watcher resolves).
    pub fn peer_addresses(&self) -> Vec<IpAddr> {
        self.tunnel_parts.as_ref().map_or_else(Vec::new, |t| t.peers.iter().map(|p| p.underlay).collect())
    }

    fn build_tunnel(&mut self) {
        let Some(parts) = &self.tunnel_parts else {
            self.tunnel = Arc::new(Tunnel::empty());
            self.learner.sync_tunnel(&self.tunnel);
            return;
        };
        let peers: Vec<PeerSpec> = parts
            .peers
            .iter()
            .map(|p| PeerSpec { next_hop: self.next_hops.get(&p.underlay).copied(), ..p.clone() })
            .collect();
        let tunnel = Tunnel::new(parts.local.clone(), &peers).and_then(|t| t.with_l2(parts.l2.clone()));
        self.tunnel = Arc::new(tunnel.unwrap_or_else(|e| {
            // The configuration was checked; an uplink whose MTU changed under us can
            // still get here. Say so; the peers are unreachable until it is fixed.
            tracing::error!("tunnel table: {e}");
            Tunnel::empty()
        }));
        // MACs behind peers that left a VNI, or whose index names another node now.
        self.learner.sync_tunnel(&self.tunnel);
    }

    /// An empty FDB (before the first publish).
    pub fn empty_fdb() -> Arc<Fdb> {
        Arc::new(Fdb::empty())
    }
}

/// Frames in each socket's UMEM segment: a full fill ring with the kernel (fill and rx
/// rings hold that many together), full tx and completion rings in flight, and a batch
/// in the worker's hands (received, or copied in for a send), so that sending never
/// starves the port's receive. Frames this port's receive parks for a next hop come
/// out of the same budget: a next hop that never answers slows only this port.
pub fn segment_frames(xsk: &XskConfig) -> u32 {
    xsk.fill_size + xsk.tx_size + xsk.comp_size + BATCH_SIZE as u32
}

/// The ports added and removed since the last publish, and their static neighbours:
/// what a burst of pod attachments and detachments changes in the tables. Their net
/// effect, applied as "remove, then add" ([`Topology::with_ports`],
/// [`Resolver::patch_statics`](switch_core::tables::Resolver::patch_statics)).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PortDelta {
    /// Ports taken out (by id).
    pub removed: Vec<PortId>,
    /// Ports put in.
    pub added: Vec<PortSpec>,
    /// Static neighbours taken out.
    pub neigh_removed: Vec<NeighKey>,
    /// Static neighbours put in.
    pub neigh_added: Vec<(NeighKey, EthernetAddress)>,
}

impl PortDelta {
    /// Port `spec` (configured as `p`) comes.
    pub fn add(&mut self, spec: PortSpec, p: &PortConfig) {
        self.neigh_added.extend(port_neighbours(&spec, p));
        self.added.push(spec);
    }

    /// Port `spec` (configured as `p`) goes. If it came in this same burst, its coming
    /// is forgotten: "remove, then add" would otherwise put it back.
    pub fn remove(&mut self, spec: &PortSpec, p: &PortConfig) {
        let keys: Vec<NeighKey> = port_neighbours(spec, p).into_iter().map(|(k, _)| k).collect();
        self.added.retain(|a| a.id != spec.id);
        self.neigh_added.retain(|(k, _)| !keys.contains(k));
        self.removed.push(spec.id);
        self.neigh_removed.extend(keys);
    }
}

/// The static neighbours a port's addresses make (as `Config::routing` makes them): each
/// address, in the network of the port's untagged frames, at the pod's MAC.
pub fn port_neighbours(spec: &PortSpec, p: &PortConfig) -> Vec<(NeighKey, EthernetAddress)> {
    let network = match &spec.mode {
        PortMode::Access { network } => Some(*network),
        PortMode::Trunk { native, .. } => *native,
        PortMode::Uplink => None,
    };
    match (network, spec.static_macs.first()) {
        (Some(n), Some(mac)) => p.addresses.iter().map(|a| (NeighKey::new(n, *a), *mac)).collect(),
        _ => Vec::new(),
    }
}

/// The spec port `p` compiles to with id `id`, in `desired`'s networks: what the whole
/// compile would give it, at the cost of the networks only.
pub fn port_spec(base: &Config, desired: &Desired, p: &PortConfig, id: u16) -> Result<PortSpec, Refusal> {
    let mut c = base.clone();
    c.host_port = None;
    c.uplink = None;
    c.routes = vec![];
    c.peers = vec![];
    c.networks = desired.networks.values().cloned().collect();
    c.ports = vec![p.clone()];
    let mut ids = Ids { networks: desired.ids.networks.clone(), ports: Default::default() };
    ids.ports.insert(p.name.clone(), id);
    c.ids = Some(ids);
    let (_, specs) = c.specs().map_err(|e| Refusal::Conflict(e.to_string()))?;
    specs.into_iter().next().ok_or_else(|| Refusal::Conflict(format!("port {:?}: no spec", p.name)))
}

/// What changed since the last publish.
#[derive(Debug, Default)]
enum Pending {
    /// Nothing.
    #[default]
    Nothing,
    /// Only ports came and went (pods): the tables are patched.
    Ports(PortDelta),
    /// Anything else: the whole state is compiled.
    All,
}

/// One worker as control sees it.
#[derive(Debug)]
pub struct WorkerSide {
    /// Its queues.
    pub queues: WorkerQueues,
}

#[derive(Debug)]
struct Attached {
    name: String,
    xdp: XdpMember,
    max_frame: u32,
}

/// The workers and the ports attached to them.
#[derive(Debug)]
pub struct Dataplane {
    workers: Vec<WorkerSide>,
    attached: BTreeMap<u16, Attached>,
    xsk: XskConfig,
    /// Each socket's own UMEM segment (see `switch_core::xsk` for why one per socket).
    segment: UmemConfig,
    xdp_mode: XdpMode,
    /// One steering program for every port, made at the first attach (see XdpShared
    /// for why one), with a slot per port id.
    xdp: Option<Arc<XdpShared>>,
    max_ports: u16,
    frame_size: u32,
    /// What the uplink's own program takes (see XdpShared::attach_uplink).
    pub uplink_filter: Option<UplinkFilter>,
}

impl Dataplane {
    /// Workers with no ports yet; port ids below `max_ports`; every socket with a UMEM
    /// segment of [`segment_frames`] frames.
    pub fn new(
        workers: Vec<WorkerSide>,
        xsk: XskConfig,
        xdp_mode: XdpMode,
        max_ports: u16,
        frame_size: u32,
        hugepages: HugepagePolicy,
    ) -> Dataplane {
        Dataplane {
            workers,
            attached: BTreeMap::new(),
            xsk,
            segment: UmemConfig { frames: segment_frames(&xsk), frame_size, hugepages },
            xdp_mode,
            xdp: None,
            max_ports,
            frame_size,
            uplink_filter: None,
        }
    }

    /// The attached ports, for the metrics.
    fn views(&self) -> Vec<PortView> {
        self.attached.keys().filter_map(|id| self.view(*id)).collect()
    }

    /// Attached port `id`, for the metrics.
    fn view(&self, id: u16) -> Option<PortView> {
        let a = self.attached.get(&id)?;
        Some(PortView { id, name: a.name.clone(), xdp_mode: a.xdp.mode(), max_frame: a.max_frame })
    }

    /// Checks that `spec`'s interface can be attached; returns its largest frame.
    fn probe(&self, spec: &PortSpec) -> Result<u32, Refusal> {
        let name = &spec.name;
        let workers = self.workers.len();
        netdev::ifindex(name).map_err(|_| {
            Refusal::Conflict(format!(
                "port {name:?}: interface {name:?} does not exist in podswitchd's network namespace; create it \
                 first (the CNI plugin does), then put the port"
            ))
        })?;
        let queues = netdev::rx_queues(name).map_err(|e| Refusal::Conflict(format!("port {name:?}: queues: {e}")))?;
        if (queues as usize) < workers {
            return Err(Refusal::Conflict(format!(
                "port {name:?} has {queues} receive queue(s) but there are {workers} workers: each worker binds its \
                 own queue. Create the veth with `numrxqueues {workers} numtxqueues {workers}` on both ends"
            )));
        }
        let mtu = netdev::mtu(name).map_err(|e| Refusal::Conflict(format!("port {name:?}: MTU: {e}")))?;
        let tag = if matches!(spec.mode, PortMode::Trunk { .. }) { 4 } else { 0 };
        Ok((mtu + 14 + tag).min(self.frame_size - FRAME_HEADROOM))
    }

    /// Opens a socket on every worker, attaches the XDP program and hands the sockets
    /// to the workers. On failure nothing stays attached.
    fn attach(&mut self, spec: &PortSpec) -> Result<(), Refusal> {
        let t0 = Instant::now();
        let max_frame = self.probe(spec)?;
        let name = &spec.name;
        let fail = |what: String| Refusal::Conflict(format!("port {name:?}: {what}"));
        let mut sockets = Vec::new();
        for w in 0..self.workers.len() {
            let seg = Segment::new(&self.segment).map_err(|e| fail(format!("worker {w}: {e}")))?;
            // A socket closed just before (the same port removed and put again) frees
            // its queue in deferred kernel work: EBUSY for a moment, then free.
            let deadline = Instant::now() + QUEUE_RELEASE;
            let s = loop {
                match XskSocket::new(seg.region(), name, w as u32, None, &self.xsk) {
                    Err(e) if e.source.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    r => break r.map_err(|e| fail(e.to_string()))?,
                }
            };
            sockets.push((s, seg));
        }
        let t1 = Instant::now();
        let shared = match &self.xdp {
            Some(x) => Arc::clone(x),
            None => {
                let x = XdpShared::new(u32::from(self.max_ports), self.workers.len() as u32, Fallback::Drop)
                    .map_err(|e| fail(e.to_string()))?;
                Arc::clone(self.xdp.insert(Arc::new(x)))
            }
        };
        let slot = u32::from(spec.id.0);
        let xdp = match (&spec.mode, &self.uplink_filter) {
            (PortMode::Uplink, Some(f)) => shared.attach_uplink(name, slot, self.xdp_mode, f),
            _ => shared.attach(name, slot, self.xdp_mode),
        }
        .map_err(|e| fail(e.to_string()))?;
        let t2 = Instant::now();
        for (w, (s, _)) in sockets.iter().enumerate() {
            xdp.insert(w as u32, s.raw_fd()).map_err(|e| fail(e.to_string()))?;
        }
        self.attached.insert(spec.id.0, Attached { name: name.clone(), xdp, max_frame });
        for (w, (s, seg)) in sockets.into_iter().enumerate() {
            let port = Port::Xsk(XskPort::new(s, port_segment(spec.id.0), max_frame));
            if let Err(r) = self.command(w, PortCommand::Add(spec.id, port, Some(seg))) {
                let _ = self.detach(spec.id);
                return Err(r);
            }
        }
        tracing::debug!(
            port = %name,
            sockets_us = (t1 - t0).as_micros() as u64,
            xdp_us = (t2 - t1).as_micros() as u64,
            workers_us = t2.elapsed().as_micros() as u64,
            "attached"
        );
        Ok(())
    }

    /// Detaches port `id`: the XDP program first (traffic falls back to the kernel),
    /// then each worker stops polling it, its sockets close, and the frames they held
    /// return to the pools.
    fn detach(&mut self, id: PortId) -> Result<(), Refusal> {
        let Some(a) = self.attached.remove(&id.0) else { return Ok(()) };
        let t0 = Instant::now();
        drop(a.xdp);
        let t1 = Instant::now();
        let mut ports = Vec::new();
        for w in 0..self.workers.len() {
            if let PortDone::Removed(_, Some(p)) = self.command(w, PortCommand::Remove(id))? {
                ports.push(p);
            }
        }
        let t2 = Instant::now();
        // Closing the sockets waits for the kernel (synchronize_net): here, not on a worker.
        drop(ports);
        let t3 = Instant::now();
        for w in 0..self.workers.len() {
            self.command(w, PortCommand::Reclaim(id))?;
        }
        tracing::debug!(
            port = %a.name,
            xdp_us = (t1 - t0).as_micros() as u64,
            workers_us = (t2 - t1).as_micros() as u64,
            close_us = (t3 - t2).as_micros() as u64,
            reclaim_us = t3.elapsed().as_micros() as u64,
            "detached"
        );
        Ok(())
    }

    /// Sends `cmd` to worker `w` and waits for its answer.
    fn command(&self, w: usize, cmd: PortCommand) -> Result<PortDone, Refusal> {
        let q = &self.workers[w].queues;
        if q.ports.push(cmd).is_err() {
            return Err(Refusal::Conflict(format!("worker {w}: port command queue full")));
        }
        let deadline = Instant::now() + WORKER_ANSWER;
        loop {
            if let Some(done) = q.done.pop() {
                return Ok(done);
            }
            if Instant::now() > deadline {
                return Err(Refusal::Conflict(format!("worker {w} did not answer a port command within 2 s")));
            }
            std::thread::sleep(Duration::from_micros(50));
        }
    }

    fn is_attached(&self, id: u16) -> bool {
        self.attached.contains_key(&id)
    }
}

/// The outcome of a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    /// Generation of the state after it.
    pub generation: u64,
    /// Whether the state changed.
    pub changed: bool,
    /// Journal sequence number to sync before answering.
    pub seq: Option<u64>,
}

/// A change that was accepted, for watchers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Generation it produced.
    pub generation: u64,
    /// "network", "port" or "route".
    pub kind: &'static str,
    /// Its name.
    pub name: String,
    /// "put" or "delete".
    pub op: &'static str,
}

/// The desired state and what makes it real.
#[derive(Debug)]
pub struct Engine {
    base: Config,
    desired: Desired,
    store: Arc<Store>,
    live: Arc<Mutex<Live>>,
    dp: Dataplane,
    /// Ports in the desired state whose interface is missing, and why.
    missing: BTreeMap<String, String>,
    view: Arc<View>,
    changes: tokio::sync::broadcast::Sender<Change>,
    /// Changes applied but not yet published.
    pending: Pending,
    /// The sockets of vhost-user ports, by port.
    vhost: BTreeMap<String, VhostSocket>,
}

/// Why a vhost-user port is in the state but not in the dataplane.
const VHOST_NO_DATAPATH: &str = "vhost-user: the socket is served; its data path comes with the vhost-user issue";

/// A vhost-user port's listening socket, in a directory of its own; both removed when
/// dropped. Connections wait in the backlog: the protocol comes with the data path.
#[derive(Debug)]
struct VhostSocket {
    _listener: std::os::unix::net::UnixListener,
    path: std::path::PathBuf,
}

impl VhostSocket {
    /// Makes `DIR/PORT/` (mode 0700) and binds `sock` in it (mode 0600), both owned by
    /// the pod's user. A stale socket from a previous run is replaced.
    fn serve(base: &Config, port: &str, owner: crate::config::VhostUserConfig) -> Result<VhostSocket, Refusal> {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        let path = base.vhost_user_socket(port);
        let shown = path.display().to_string();
        let fail = |what: &str, e: std::io::Error| {
            Refusal::Conflict(format!("port {port:?}: vhost-user socket {shown}: {what}: {e}"))
        };
        if path.as_os_str().len() > crate::config::MAX_SOCKET_PATH {
            return Err(Refusal::Invalid(format!(
                "port {port:?}: the vhost-user socket path {} is longer than a Unix socket allows ({} bytes): \
                 shorten vhost_user_dir",
                path.display(),
                crate::config::MAX_SOCKET_PATH
            )));
        }
        let dir = path.parent().unwrap_or(&base.vhost_user_dir).to_path_buf();
        std::fs::create_dir_all(&base.vhost_user_dir).map_err(|e| fail("creating the directory", e))?;
        let _ = std::fs::remove_file(&path);
        let _ = std::fs::remove_dir(&dir);
        std::fs::DirBuilder::new().mode(0o700).create(&dir).map_err(|e| fail("creating the pod's directory", e))?;
        let listener = std::os::unix::net::UnixListener::bind(&path).map_err(|e| fail("binding", e))?;
        let me = VhostSocket { _listener: listener, path };
        std::fs::set_permissions(&me.path, std::fs::Permissions::from_mode(0o600)).map_err(|e| fail("chmod", e))?;
        for p in [&me.path, &dir] {
            std::os::unix::fs::chown(p, Some(owner.uid), Some(owner.gid)).map_err(|e| fail("chown", e))?;
        }
        Ok(me)
    }
}

impl Drop for VhostSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        if let Some(dir) = self.path.parent() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

impl Engine {
    /// Attaches every port of `desired` (and the host port) whose interface exists,
    /// and publishes. Ports whose interface is missing are reported and kept.
    pub fn start(
        base: Config,
        desired: Desired,
        store: Arc<Store>,
        live: Arc<Mutex<Live>>,
        dp: Dataplane,
        view: Arc<View>,
        strict: bool,
    ) -> anyhow::Result<Engine> {
        let (changes, _) = tokio::sync::broadcast::channel(1024);
        let mut e = Engine {
            base,
            desired,
            store,
            live,
            dp,
            missing: BTreeMap::new(),
            view,
            changes,
            pending: Pending::Nothing,
            vhost: BTreeMap::new(),
        };
        let all = e.desired.config(&e.base, |_| false);
        let (_, specs) = all.specs()?;
        for spec in &specs {
            if let Some(owner) = e.desired.ports.get(&spec.name).and_then(|p| p.vhost_user) {
                match VhostSocket::serve(&e.base, &spec.name, owner) {
                    Ok(v) => {
                        e.vhost.insert(spec.name.clone(), v);
                        e.missing.insert(spec.name.clone(), VHOST_NO_DATAPATH.into());
                    }
                    Err(r) => {
                        tracing::warn!(port = %spec.name, "vhost-user socket not served: {r}");
                        e.missing.insert(spec.name.clone(), r.to_string());
                    }
                }
                continue;
            }
            if let Err(r) = e.dp.attach(spec) {
                // On a first start the ports come from the config file: a missing
                // interface is the file's mistake. The host port is always ours.
                let host = e.base.host_port.as_ref().is_some_and(|h| h.switch_side() == spec.name);
                let uplink = spec.mode == PortMode::Uplink;
                if host || uplink || strict {
                    anyhow::bail!("{r}");
                }
                tracing::warn!(port = %spec.name, "not attached: {r}; kept in the state, attached when it appears");
                e.missing.insert(spec.name.clone(), r.to_string());
            }
        }
        e.publish().map_err(|r| anyhow::anyhow!("{r}"))?;
        Ok(e)
    }

    /// The desired state.
    pub fn desired(&self) -> &Desired {
        &self.desired
    }

    /// The base configuration.
    pub fn base(&self) -> &Config {
        &self.base
    }

    /// The store (to sync outside the engine's lock).
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The published tables' owner.
    pub fn live(&self) -> &Arc<Mutex<Live>> {
        &self.live
    }

    /// Ports whose interface is missing, and why.
    pub fn missing(&self) -> &BTreeMap<String, String> {
        &self.missing
    }

    /// Whether port `id` is attached.
    pub fn is_attached(&self, id: u16) -> bool {
        self.dp.is_attached(id)
    }

    /// The attached ports.
    pub fn port_views(&self) -> Vec<PortView> {
        self.dp.views()
    }

    /// Subscribes to accepted changes.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    /// Compiles the desired state (without missing ports) and publishes it.
    fn publish(&mut self) -> Result<u64, Refusal> {
        let t0 = Instant::now();
        self.pending = Pending::Nothing;
        let c = self.desired.config(&self.base, |n| self.missing.contains_key(n));
        let topology = c.topology().map_err(|e| Refusal::Conflict(e.to_string()))?;
        let routing = c.routing(&topology).map_err(|e| Refusal::Conflict(e.to_string()))?;
        let routes = Routes::build(&topology, &routing.routes).map_err(|e| Refusal::Conflict(e.to_string()))?;
        let tunnel = match &c.uplink {
            // Without the uplink in the dataplane there is no tunnel: routes to peers
            // drop (no_route) until it comes back.
            Some(u) if !self.missing.contains_key(&u.interface) => {
                let iface = |e: std::io::Error| Refusal::Conflict(format!("uplink {:?}: {e}", u.interface));
                let mac = EthernetAddress(netdev::mac(&u.interface).map_err(iface)?);
                let mtu = netdev::mtu(&u.interface).map_err(iface)?;
                c.tunnel_parts(&topology, mac, mtu).map_err(|e| Refusal::Conflict(e.to_string()))?
            }
            _ => None,
        };
        let generation =
            self.live.lock().unwrap_or_else(|e| e.into_inner()).set(topology, routes, &routing.neighbours, tunnel);
        if let Ok(mut p) = self.view.ports.lock() {
            *p = self.dp.views();
        }
        self.published_gauges();
        tracing::debug!(generation, us = t0.elapsed().as_micros() as u64, "published the whole state");
        Ok(generation)
    }

    /// Publishes `delta` as a patch of the published tables (see [`PortDelta`]); the
    /// whole compile if the patch does not apply.
    fn publish_ports(&mut self, delta: PortDelta) -> Result<u64, Refusal> {
        let t0 = Instant::now();
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        let max_ports = self.base.dataplane.max_ports;
        let topology = match live.topology.with_ports(&delta.removed, &delta.added, max_ports) {
            Ok(t) => t,
            Err(e) => {
                // The state was checked: this is a bug, and the whole compile is right.
                tracing::error!("patching the topology: {e}; compiling the whole state");
                drop(live);
                return self.publish();
            }
        };
        let generation = live.set_ports(topology, &delta);
        drop(live);
        self.published_gauges();
        tracing::debug!(
            generation,
            us = t0.elapsed().as_micros() as u64,
            added = delta.added.len(),
            removed = delta.removed.len(),
            "published ports"
        );
        Ok(generation)
    }

    fn published_gauges(&self) {
        // Relaxed: gauges for the metrics endpoint.
        self.view.state_generation.store(self.desired.generation, core::sync::atomic::Ordering::Relaxed);
        self.view.ports_missing.store(self.missing.len() as u64, core::sync::atomic::Ordering::Relaxed);
    }

    /// Shows port `id` in the view as the dataplane has it (attached or not).
    fn view_port(&self, id: u16) {
        let Ok(mut views) = self.view.ports.lock() else { return };
        let at = views.binary_search_by_key(&id, |v| v.id);
        match (self.dp.view(id), at) {
            (Some(v), Ok(i)) => views[i] = v,
            (Some(v), Err(i)) => views.insert(i, v),
            (None, Ok(i)) => {
                views.remove(i);
            }
            (None, Err(_)) => {}
        }
    }

    /// Checks and applies `m`. The answer may be sent once `store.sync(seq)` returns.
    pub fn apply(&mut self, m: &Mutation) -> Result<Applied, Refusal> {
        state::check(&self.base, &self.desired, m, |n| self.missing.contains_key(n))?;
        if !self.desired.changes(m) {
            return Ok(Applied { generation: self.desired.generation, changed: false, seq: None });
        }
        // A new port is attached before anything is written; a failure undoes it.
        let mut attached_new = None;
        let mut vhost_new = None;
        if let Mutation::PutPort(p) = m {
            if !self.desired.ports.contains_key(&p.name) {
                match p.vhost_user {
                    Some(owner) => vhost_new = Some(VhostSocket::serve(&self.base, &p.name, owner)?),
                    None => {
                        let spec = port_spec(&self.base, &self.desired, p, self.desired.next_port_id())?;
                        self.dp.attach(&spec)?;
                        attached_new = Some(spec);
                    }
                }
            }
        }
        // A pod's port coming or going patches the published tables; anything else
        // has the whole state compiled.
        let patch = match m {
            Mutation::PutPort(p) => attached_new.clone().map(|spec| (spec, p.clone(), true)),
            Mutation::DeletePort(name) => self.desired.ports.get(name).and_then(|p| {
                let id = *self.desired.ids.ports.get(name)?;
                Some((port_spec(&self.base, &self.desired, p, id).ok()?, p.clone(), false))
            }),
            _ => None,
        };
        let generation = self.desired.generation + 1;
        let seq = match self.store.append(generation, m) {
            Ok(seq) => seq,
            Err(e) => {
                if let Some(spec) = attached_new {
                    let _ = self.dp.detach(spec.id);
                }
                return Err(Refusal::Conflict(format!(
                    "could not write the state to {}: {e}; nothing changed",
                    self.store.dir().display()
                )));
            }
        };
        let removed = match m {
            Mutation::DeletePort(name) => self.desired.ids.ports.get(name).copied(),
            _ => None,
        };
        self.desired.apply(m);
        self.desired.generation = generation;
        if let Mutation::DeletePort(name) = m {
            self.missing.remove(name);
            self.vhost.remove(name);
        }
        if let (Some(v), Mutation::PutPort(p)) = (vhost_new, m) {
            tracing::warn!(port = %p.name, socket = %v.path.display(), "{VHOST_NO_DATAPATH}");
            self.vhost.insert(p.name.clone(), v);
            self.missing.insert(p.name.clone(), VHOST_NO_DATAPATH.into());
        }
        self.pending = match (core::mem::take(&mut self.pending), patch) {
            (Pending::All, _) | (_, None) => Pending::All,
            (Pending::Nothing, Some(patch)) => Pending::Ports(Self::patched(PortDelta::default(), patch)),
            (Pending::Ports(d), Some(patch)) => Pending::Ports(Self::patched(d, patch)),
        };
        if let Some(spec) = &attached_new {
            self.view_port(spec.id.0);
        }
        if let Some(id) = removed {
            // Publish first, so no worker sends to the port any more, then detach.
            self.flush();
            if let Err(r) = self.dp.detach(PortId(id)) {
                tracing::error!(port = id, "detach: {r}");
            }
            self.view_port(id);
        }
        let (kind, name, op) = m.describe();
        tracing::debug!(generation, kind, name = %name, op, "state changed");
        let _ = self.changes.send(Change { generation, kind, name, op });
        if self.store.should_compact() {
            if let Err(e) = self.store.compact(&self.desired) {
                tracing::warn!("compacting the journal: {e}");
            }
        }
        Ok(Applied { generation, changed: true, seq: Some(seq) })
    }

    /// Attaches a pod: its port `port` joins `network` with `mac` and an address of
    /// each of the network's gateway families, allocated here (the lowest free) and kept
    /// with the port in the state — or the `requested` addresses ("ADDR/LEN", from a
    /// delegated IPAM plugin), checked against the network's subnets. The same pod
    /// attached again gets the same answer.
    pub fn attach_pod(
        &mut self,
        pod: PodRef,
        port: &str,
        network: &str,
        mac: &str,
        requested: &[String],
        vhost_user: Option<crate::config::VhostUserConfig>,
    ) -> Result<(PortConfig, Applied), Refusal> {
        let bad = |m: String| Err(Refusal::Invalid(m));
        if pod.container_id.is_empty() || pod.ifname.is_empty() {
            return bad("pod: container_id and ifname are required".into());
        }
        let mut asked = Vec::new();
        for r in requested {
            let parsed = r.split_once('/').and_then(|(a, l)| Some((a.parse::<IpAddr>().ok()?, l.parse::<u8>().ok()?)));
            let Some(a) = parsed else {
                return bad(format!("addresses: {r:?} is not ADDR/LEN"));
            };
            if asked.iter().any(|(b, _): &(IpAddr, u8)| b.is_ipv4() == a.0.is_ipv4()) {
                return bad(format!(
                    "addresses: more than one {} address",
                    if a.0.is_ipv4() { "IPv4" } else { "IPv6" }
                ));
            }
            asked.push(a);
        }
        if let Some(p) = self.desired.pod_port(&pod) {
            if p.name == port
                && p.network.as_deref() == Some(network)
                && p.macs.first().map(String::as_str) == Some(mac)
                && (asked.is_empty() || asked.iter().map(|(a, _)| *a).eq(p.addresses.iter().copied()))
                && p.vhost_user == vhost_user
            {
                let a = Applied { generation: self.desired.generation, changed: false, seq: None };
                return Ok((p.clone(), a));
            }
            return Err(Refusal::Conflict(format!(
                "pod {}/{} is already attached as port {:?}: detach it first",
                pod.container_id, pod.ifname, p.name
            )));
        }
        if self.desired.ports.contains_key(port) {
            return Err(Refusal::Conflict(format!("port {port:?} already exists: pick another interface name")));
        }
        let Some(net) = self.desired.networks.get(network) else {
            let known: Vec<&String> = self.desired.networks.keys().collect();
            return Err(Refusal::Conflict(format!("network {network:?} is not defined (networks: {known:?})")));
        };
        let gw = net.gateway_spec().map_err(|e| Refusal::Conflict(e.to_string()))?.ok_or_else(|| {
            Refusal::Conflict(format!(
                "network {network:?} has no gateway: pods need one for their addresses and route"
            ))
        })?;
        let host: Vec<IpAddr> = match &self.base.host_port {
            Some(h) if h.network == network => {
                h.addresses.iter().filter_map(|a| a.split('/').next()?.parse().ok()).collect()
            }
            _ => vec![],
        };
        let mut addresses = Vec::new();
        for (a, len) in &asked {
            let (family, subnet) = match a {
                IpAddr::V4(_) => ("IPv4", gw.subnet4().map(|s| s.len())),
                IpAddr::V6(_) => ("IPv6", gw.subnet6().map(|s| s.len())),
            };
            let Some(want) = subnet else {
                return Err(Refusal::Conflict(format!(
                    "addresses: {a}/{len}: network {network:?} has no {family} gateway to route it"
                )));
            };
            if *len != want || !crate::config::in_subnet(&gw, *a) || crate::config::gw_owns(&gw, *a) {
                return Err(Refusal::Conflict(format!(
                    "addresses: {a}/{len} is not a host address of network {network:?}'s {family} subnet (/{want}): \
                     give the IPAM plugin that subnet's range, without the gateway"
                )));
            }
            if host.contains(a) {
                return Err(Refusal::Conflict(format!("addresses: {a} is the node's own (the host port's)")));
            }
            if let Some(other) = self.desired.claimed_by(network, *a) {
                return Err(Refusal::Conflict(format!("addresses: {a} is already port {other:?}'s")));
            }
            addresses.push(*a);
        }
        for v4 in [true, false] {
            let has = if v4 { gw.v4.is_some() } else { gw.v6.is_some() };
            if has && asked.is_empty() {
                let a = self.desired.free_address(network, &gw, v4, |a| host.contains(&a)).ok_or_else(|| {
                    Refusal::Conflict(format!(
                        "network {network:?} has no free {} address",
                        if v4 { "IPv4" } else { "IPv6" }
                    ))
                })?;
                addresses.push(a);
            }
        }
        let pc = PortConfig {
            name: port.to_string(),
            network: Some(network.to_string()),
            vlans: vec![],
            native: None,
            macs: vec![mac.to_string()],
            addresses,
            pod: Some(pod),
            vhost_user,
        };
        let a = self.apply(&Mutation::PutPort(pc.clone()))?;
        Ok((pc, a))
    }

    /// Detaches a pod: removes its port (and so frees its addresses). Detaching a pod
    /// that is not attached changes nothing.
    pub fn detach_pod(&mut self, pod: &PodRef) -> Result<Applied, Refusal> {
        match self.desired.pod_port(pod).map(|p| p.name.clone()) {
            Some(name) => self.apply(&Mutation::DeletePort(name)),
            None => Ok(Applied { generation: self.desired.generation, changed: false, seq: None }),
        }
    }

    fn patched(mut d: PortDelta, (spec, p, put): (PortSpec, PortConfig, bool)) -> PortDelta {
        if put {
            d.add(spec, &p);
        } else {
            d.remove(&spec, &p);
        }
        d
    }

    /// Publishes the changes applied since the last publish. Callers apply, then flush
    /// before they answer: changes that queued up meanwhile share one publish.
    pub fn flush(&mut self) {
        let r = match core::mem::take(&mut self.pending) {
            Pending::Nothing => return,
            Pending::Ports(d) => self.publish_ports(d),
            Pending::All => self.publish(),
        };
        if let Err(r) = r {
            // check() accepted every change: this cannot happen; say so loudly.
            tracing::error!("publishing an accepted state failed: {r}");
        }
    }

    /// Attaches ports whose interface appeared, and takes out of the dataplane ports
    /// whose interface vanished (they stay in the state). Returns true if anything
    /// changed.
    pub fn reconcile(&mut self) -> bool {
        let mut changed = false;
        let all = self.desired.config(&self.base, |_| false);
        let Ok((_, specs)) = all.specs() else { return false };
        for spec in specs.iter().filter(|s| !self.vhost.contains_key(&s.name)) {
            let exists = netdev::ifindex(&spec.name).is_ok();
            if self.missing.contains_key(&spec.name) && exists {
                match self.dp.attach(spec) {
                    Ok(()) => {
                        tracing::info!(port = %spec.name, "interface is back: attached");
                        self.missing.remove(&spec.name);
                        changed = true;
                    }
                    Err(r) => {
                        self.missing.insert(spec.name.clone(), r.to_string());
                    }
                }
            } else if !exists && self.dp.is_attached(spec.id.0) {
                tracing::warn!(port = %spec.name, "interface vanished: detached; kept in the state");
                let _ = self.dp.detach(spec.id);
                self.missing.insert(spec.name.clone(), "the interface vanished".into());
                changed = true;
            }
        }
        if changed {
            if let Err(r) = self.publish() {
                tracing::error!("publishing after reconcile: {r}");
            }
        }
        changed
    }

    /// Detaches the XDP program from every port (at stop: the workers keep their
    /// sockets until they stop). Returns the interfaces.
    pub fn detach_xdp(&mut self) -> Vec<String> {
        let names = self.dp.attached.values().map(|a| a.name.clone()).collect();
        self.dp.attached.clear();
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::VlanConfig;
    use crate::state::tests::net;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn base() -> Config {
        Config::parse("[dataplane]\ncores = [0]\nmax_ports = 64\n").unwrap()
    }

    /// What the tables hold: every port's compiled entry and each network's flood
    /// list, and the static neighbours.
    type Tables = (Vec<(PortSpec, u16, Vec<u16>)>, Vec<Vec<PortId>>, BTreeSet<(NeighKey, [u8; 6])>);

    fn tables(t: &Topology, statics: impl IntoIterator<Item = (NeighKey, EthernetAddress)>) -> Tables {
        let ports = t.ports().map(|e| (e.spec.clone(), e.untagged, e.egress.to_vec())).collect();
        let floods = t.networks().map(|n| n.flood.to_vec()).collect();
        (ports, floods, statics.into_iter().map(|(k, m)| (k, m.0)).collect())
    }

    fn whole(d: &Desired) -> Tables {
        let c = d.config(&base(), |_| false);
        let t = c.topology().unwrap();
        let r = c.routing(&t).unwrap();
        tables(&t, r.neighbours)
    }

    proptest! {
        /// Pods' ports put and deleted in bursts (a port put and deleted in one burst,
        /// ids reused, access and trunk ports, one or two addresses or none) and
        /// published as patches give the tables the whole compile gives.
        #[test]
        fn port_patches_agree_with_the_whole_compile(
            steps in proptest::collection::vec((0u8..4, 0usize..40, 0u8..3, proptest::bool::ANY), 1..80)
        ) {
            let mut d = Desired::default();
            d.apply(&net("pods", &["198.18.0.1/24", "2001:db8::1/64"]));
            d.apply(&net("plain", &[]));
            let mut t = d.config(&base(), |_| false).topology().unwrap();
            let mut statics: BTreeMap<NeighKey, EthernetAddress> = BTreeMap::new();
            let mut delta = PortDelta::default();
            for (n, (kind, pick, addrs, flush)) in steps.into_iter().enumerate() {
                let names: Vec<String> = d.ports.keys().cloned().collect();
                if kind == 0 && !names.is_empty() {
                    let name = &names[pick % names.len()];
                    let p = d.ports[name].clone();
                    let spec = port_spec(&base(), &d, &p, d.ids.ports[name]).unwrap();
                    delta.remove(&spec, &p);
                    d.apply(&Mutation::DeletePort(name.clone()));
                } else {
                    let gw = d.networks["pods"].gateway_spec().unwrap().unwrap();
                    let mut addresses = vec![];
                    for v4 in [true, false].into_iter().take(usize::from(addrs)) {
                        addresses.push(d.free_address("pods", &gw, v4, |_| false).unwrap());
                    }
                    let mac = format!("02:00:00:00:{:02x}:{:02x}", n / 256, n % 256);
                    let p = PortConfig {
                        name: format!("p{n}"),
                        network: (kind != 3).then(|| "pods".to_string()),
                        vlans: if kind == 3 { vec![VlanConfig { vid: 10, network: "plain".into() }] } else { vec![] },
                        native: (kind == 3).then(|| "pods".to_string()),
                        macs: vec![mac],
                        addresses,
                        pod: None,
                        vhost_user: None,
                    };
                    let m = Mutation::PutPort(p.clone());
                    prop_assert!(state::check(&base(), &d, &m, |_| false).is_ok());
                    delta.add(port_spec(&base(), &d, &p, d.next_port_id()).unwrap(), &p);
                    d.apply(&m);
                }
                if flush {
                    let delta = core::mem::take(&mut delta);
                    t = t.with_ports(&delta.removed, &delta.added, 64).unwrap();
                    for k in &delta.neigh_removed {
                        statics.remove(k);
                    }
                    statics.extend(delta.neigh_added.iter().copied());
                    prop_assert_eq!(tables(&t, statics.clone()), whole(&d));
                }
            }
        }
    }
}
