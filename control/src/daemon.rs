//! The daemon: builds the dataplane from a [`Config`] and the saved state, runs the
//! control thread and the API, stops cleanly.
//!
//! Threads: one worker per configured core (pinned); one control thread (drains learn
//! and neighbour queues, ages the FDB, publishes snapshots, frees retired ones); the
//! API (a small tokio runtime serving gRPC on the control socket); and the metrics
//! endpoint. Everything but the workers runs on the CPUs that are not the workers'.

use crate::config::Config;
use crate::engine::{Dataplane, Engine, Live, WorkerSide};
use crate::state::Desired;
use crate::store::Store;
use anyhow::{Context, Result};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use switch_core::stats::WorkerStats;
use switch_core::tables::neigh::ResolverStats;
use switch_core::tables::{Emit, Learner, NeighEvent, Parts, Publisher, Resolver, Routes, TablesHandle, Topology};
use switch_core::worker::{Clock, FrameAccount, Worker, WorkerConfig, WorkerQueues};
use switch_core::xdp::AttachedMode;
use switch_core::xsk::{Backing, BindMode, Umem, UmemConfig, XskConfig};

/// Events a worker may have in flight to control (and requests from control) before
/// they count as lost.
const QUEUE: usize = 4096;
/// Between unsolicited router advertisements (RFC 4861 allows 4 to 1800 s).
const RA_INTERVAL: Duration = Duration::from_secs(100);
/// How often the control thread looks at the learn queues.
const CONTROL_TICK: Duration = Duration::from_micros(500);

/// What the metrics endpoint and the stop report read. Written by the control thread
/// (atomics) and at start-up (the rest); read by anyone.
#[derive(Debug)]
pub struct View {
    /// Every worker's counters.
    pub workers: Vec<Arc<WorkerStats>>,
    /// The attached ports (changed by the engine).
    pub ports: Mutex<Vec<PortView>>,
    /// UMEM of each worker.
    pub umems: Vec<UmemView>,
    /// The published tables.
    pub tables: Arc<TablesHandle>,
    /// Learn events refused because the FDB was full.
    pub fdb_full_drops: AtomicU64,
    /// MACs that moved between ports.
    pub fdb_moves: AtomicU64,
    /// The neighbour resolver's counters, copied by the control thread.
    pub neigh: Mutex<ResolverStats>,
    /// The CPU of each worker.
    pub cores: Vec<usize>,
    /// When the daemon started.
    pub started: Instant,
    /// Each worker's capture and trace taps.
    pub taps: Vec<Arc<switch_core::debug::Taps>>,
    /// The workers' clock, and the wall-clock time it started at (for pcap stamps).
    pub clock: Clock,
    /// Wall-clock time of `clock`'s start.
    pub wall_start: std::time::SystemTime,
    /// Generation of the desired state (set by the engine).
    pub state_generation: AtomicU64,
    /// Ports in the state whose interface is missing (set by the engine).
    pub ports_missing: AtomicU64,
    /// A capture is running (one at a time).
    pub capture_busy: AtomicBool,
    /// A trace is running (one at a time).
    pub trace_busy: AtomicBool,
}

impl View {
    /// The attached ports, by id.
    pub fn ports(&self) -> Vec<PortView> {
        self.ports.lock().map(|p| p.clone()).unwrap_or_default()
    }
}

/// A port as the metrics show it.
#[derive(Debug, Clone)]
pub struct PortView {
    /// Port id.
    pub id: u16,
    /// Interface.
    pub name: String,
    /// How XDP attached.
    pub xdp_mode: AttachedMode,
    /// Largest frame sent.
    pub max_frame: u32,
}

/// A worker's own UMEM segment as the metrics show it.
#[derive(Debug, Clone, Copy)]
pub struct UmemView {
    /// Backing.
    pub backing: Backing,
}

/// A running switch.
pub struct Daemon {
    stop: Arc<AtomicBool>,
    workers: Vec<JoinHandle<(FrameAccount, Arc<WorkerStats>)>>,
    control: Option<JoinHandle<()>>,
    metrics: Option<crate::metrics::Server>,
    api: Option<crate::server::Server>,
    engine: Option<Arc<Mutex<Engine>>>,
    underlay: Option<crate::underlay::UnderlayWatch>,
    // Deleted in `stop`, after XDP is detached from it.
    host: Option<crate::host::HostPort>,
    view: Arc<View>,
}

/// What a stop reports.
#[derive(Debug)]
pub struct StopReport {
    /// Each worker's frames.
    pub frames: Vec<FrameAccount>,
    /// Interfaces the XDP program was detached from.
    pub detached: Vec<String>,
}

impl core::fmt::Display for StopReport {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        for (i, a) in self.frames.iter().enumerate() {
            writeln!(f, "worker {i}: {a}")?;
        }
        write!(f, "XDP detached from: {}", self.detached.join(", "))
    }
}

/// Frames of each worker's own UMEM segment (for frames it builds itself: ARP
/// requests, neighbour solicitations, router advertisements); each port brings its own
/// (see `engine::segment_frames`).
fn own_frames(cfg: &Config) -> u32 {
    cfg.dataplane.umem_frames.unwrap_or(OWN_FRAMES)
}

/// A worker's own frames when the config does not say.
const OWN_FRAMES: u32 = 1024;

/// File descriptors beside the ports' (API connections, netlink, the state files).
const OTHER_FILES: u64 = 1024;
/// Memory mappings per port and worker: the UMEM segment and the socket's four rings.
const MAPS_PER_SOCKET: u64 = 5;
/// Memory mappings beside the ports' (libraries, heap, thread stacks).
const OTHER_MAPS: u64 = 4096;

/// Makes room for `max_ports` ports on `workers` workers: each port holds a socket per
/// worker and an XDP link (file descriptors), and each socket five mappings. Raises
/// the open-file limit (the soft limit, and the hard one as root); says at start, not
/// at the ten-thousandth pod, if the process or the kernel will refuse ports early.
fn check_port_limits(max_ports: u16, workers: usize) {
    let (ports, workers) = (u64::from(max_ports), workers as u64);
    let files = ports * (workers + 1) + OTHER_FILES;
    match switch_core::sys::raise_open_files(files) {
        Ok(got) if got >= files => tracing::debug!(limit = got, "open-file limit"),
        Ok(got) => tracing::warn!(
            "max_ports = {ports} on {workers} worker(s) may need {files} open files but the limit is {got}: ports \
             past about {} will be refused. Raise the hard limit (LimitNOFILE= in the systemd unit, ulimit -Hn) or \
             lower max_ports",
            got.saturating_sub(OTHER_FILES) / (workers + 1)
        ),
        Err(e) => tracing::warn!("reading the open-file limit: {e}"),
    }
    let maps = ports * workers * MAPS_PER_SOCKET + OTHER_MAPS;
    let limit = std::fs::read_to_string("/proc/sys/vm/max_map_count").ok().and_then(|s| s.trim().parse::<u64>().ok());
    if let Some(limit) = limit.filter(|l| *l < maps) {
        tracing::warn!(
            "max_ports = {ports} on {workers} worker(s) may need {maps} memory mappings ({MAPS_PER_SOCKET} per port \
             and worker) but vm.max_map_count is {limit}: ports past about {} will be refused. Raise it \
             (sysctl -w vm.max_map_count={maps}, and in /etc/sysctl.d to keep it) or lower max_ports",
            limit.saturating_sub(OTHER_MAPS) / (workers * MAPS_PER_SOCKET).max(1)
        );
    }
}

/// The CPUs that are not the workers' (all of them if the workers have every one).
fn other_cpus(cfg: &Config) -> Vec<usize> {
    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
    let rest: Vec<usize> = (0..n).filter(|c| !cfg.dataplane.cores.contains(c)).collect();
    if rest.is_empty() {
        (0..n).collect()
    } else {
        rest
    }
}

/// Pins the calling thread to the first of `cpus` (control threads share it; they are
/// mostly asleep).
pub fn pin_to(cpus: &[usize]) {
    if let Some(c) = cpus.first() {
        core_affinity::set_for_current(core_affinity::CoreId { id: *c });
    }
}

impl Daemon {
    /// Restores (or, on first start, seeds from `cfg`) the desired state, builds the
    /// dataplane, and starts the control thread, the API and the metrics endpoint.
    pub fn start(cfg: &Config) -> Result<Daemon> {
        let opened = Store::open(&cfg.state_dir).with_context(|| format!("state_dir {}", cfg.state_dir.display()))?;
        let store = Arc::new(opened.store);
        let first_start = opened.state.is_none();
        let mut seeded_peers = false;
        let desired = match opened.state {
            Some(mut d) => {
                if d.seed_peers(cfg) {
                    seeded_peers = true;
                    tracing::info!(
                        peers = d.peers.len(),
                        "the saved state predates peers in the state: took the config file's peers into it"
                    );
                }
                tracing::info!(
                    generation = d.generation,
                    networks = d.networks.len(),
                    ports = d.ports.len(),
                    routes = d.routes.len(),
                    replayed = opened.replayed,
                    torn_bytes = opened.truncated,
                    "state restored from {}",
                    cfg.state_dir.display()
                );
                if !cfg.networks.is_empty() || !cfg.ports.is_empty() || !cfg.routes.is_empty() || !cfg.peers.is_empty()
                {
                    tracing::info!("the config file's static topology only seeds a first start: the saved state wins");
                }
                d
            }
            None => Desired::from_config(cfg),
        };
        // The saved state must still fit the file's dataplane settings.
        let all = desired.config(cfg, |_| false);
        all.topology().and_then(|t| all.routing(&t).map(|_| ())).with_context(|| {
            format!(
                "the state saved in {} does not fit this config; fix the config, or move the directory away to \
                 start from the config's topology",
                cfg.state_dir.display()
            )
        })?;

        let workers_n = cfg.dataplane.cores.len();
        check_port_limits(cfg.dataplane.max_ports, workers_n);
        let routing = cfg.routing(&cfg.topology()?)?;
        let host = match &cfg.host_port {
            Some(h) => Some(crate::host::HostPort::create(h, &routing, workers_n)?),
            None => None,
        };

        let publisher = Publisher::new(Parts {
            topology: Arc::new(Topology::empty()),
            fdb: Live::empty_fdb(),
            routes: Arc::new(Routes::empty()),
            neigh: Arc::new(Resolver::new(cfg.neigh_config()).build()),
            tunnel: Arc::new(switch_core::tables::Tunnel::empty()),
        });
        let clock = Clock::new();
        let xsk_cfg = XskConfig {
            rx_size: cfg.dataplane.ring_size,
            tx_size: cfg.dataplane.ring_size,
            fill_size: cfg.dataplane.ring_size,
            comp_size: cfg.dataplane.ring_size,
            mode: BindMode::Copy,
        };
        let frames = own_frames(cfg);
        let mut workers = Vec::new();
        let mut sides = Vec::new();
        let mut umems = Vec::new();
        for (w, core) in cfg.dataplane.cores.iter().enumerate() {
            let umem = Umem::new(&UmemConfig {
                frames,
                frame_size: cfg.dataplane.frame_size,
                hugepages: cfg.hugepage_policy(),
            })
            .with_context(|| format!("worker {w}: UMEM"))?;
            umems.push(UmemView { backing: umem.backing() });
            let q = WorkerQueues::new(QUEUE);
            sides.push(WorkerSide { queues: q.clone() });
            let wcfg = WorkerConfig {
                id: w,
                core: Some(*core),
                idle: cfg.idle_policy(),
                max_ports: cfg.dataplane.max_ports as usize,
                pending: cfg.dataplane.pending_packets as usize,
            };
            workers.push(Worker::new(wcfg, umem, switch_core::tables::TablesReader::new(publisher.handle()), q, clock));
        }

        let stop = Arc::new(AtomicBool::new(false));
        let view = Arc::new(View {
            workers: workers.iter().map(|w| w.stats()).collect(),
            ports: Mutex::new(Vec::new()),
            umems,
            tables: publisher.handle(),
            fdb_full_drops: AtomicU64::new(0),
            fdb_moves: AtomicU64::new(0),
            neigh: Mutex::new(ResolverStats::default()),
            cores: cfg.dataplane.cores.clone(),
            started: Instant::now(),
            taps: sides.iter().map(|s| s.queues.taps.clone()).collect(),
            clock,
            wall_start: std::time::SystemTime::now() - clock.start().elapsed(),
            state_generation: AtomicU64::new(0),
            ports_missing: AtomicU64::new(0),
            capture_busy: AtomicBool::new(false),
            trace_busy: AtomicBool::new(false),
        });
        let mut handles = Vec::new();
        for worker in workers {
            let stop = stop.clone();
            let name = format!("ps-worker-{}", handles.len());
            handles.push(std::thread::Builder::new().name(name).spawn(move || worker.run(&stop))?);
        }
        let live = Arc::new(Mutex::new(Live {
            publisher,
            learner: Learner::new(cfg.dataplane.fdb_capacity),
            resolver: Resolver::new(cfg.neigh_config()),
            topology: Arc::new(Topology::empty()),
            routes: Arc::new(Routes::empty()),
            tunnel_parts: None,
            next_hops: Default::default(),
            tunnel: Arc::new(switch_core::tables::Tunnel::empty()),
        }));
        let queues: Vec<WorkerQueues> = sides.iter().map(|s| s.queues.clone()).collect();
        let mut dp = Dataplane::new(
            sides,
            xsk_cfg,
            cfg.xdp_mode(),
            cfg.dataplane.max_ports,
            cfg.dataplane.frame_size,
            cfg.hugepage_policy(),
        );
        dp.uplink_filter = cfg.uplink_filter();
        let control = {
            let (stop, view, live) = (stop.clone(), view.clone(), live.clone());
            let state = Control { live, queues, clock };
            let cpus = other_cpus(cfg);
            std::thread::Builder::new().name("ps-control".into()).spawn(move || {
                pin_to(&cpus);
                state.run(&stop, &view)
            })?
        };
        // From here on a failure must stop the threads: Daemon's Drop does.
        let mut daemon = Daemon {
            stop: stop.clone(),
            workers: handles,
            control: Some(control),
            metrics: None,
            api: None,
            engine: None,
            underlay: None,
            host,
            view: view.clone(),
        };
        let engine = Engine::start(cfg.clone(), desired, store.clone(), live.clone(), dp, view.clone(), first_start)?;
        // After the engine published the peers, so the first look finds them.
        if let Some(u) = &cfg.uplink {
            daemon.underlay = Some(crate::underlay::UnderlayWatch::start(u.interface.clone(), live, other_cpus(cfg))?);
        }
        if first_start || seeded_peers {
            store.write_snapshot(engine.desired()).context("writing the first state snapshot")?;
        }
        let engine = Arc::new(Mutex::new(engine));
        daemon.engine = Some(engine.clone());
        daemon.api = Some(crate::server::Server::start(cfg, engine, view.clone(), other_cpus(cfg))?);
        if let Some(addr) = cfg.metrics_address {
            daemon.metrics = Some(crate::metrics::Server::start(addr, view.clone(), stop.clone())?);
        }
        for p in view.ports() {
            tracing::info!(port = %p.name, xdp = ?p.xdp_mode, max_frame = p.max_frame, "port attached");
        }
        tracing::info!(
            workers = workers_n,
            ports = view.ports().len(),
            own_frames = frames,
            port_frames = crate::engine::segment_frames(&xsk_cfg),
            backing = ?view.umems.first().map(|u| u.backing),
            socket = %cfg.control_socket.display(),
            "podswitchd ready"
        );
        Ok(daemon)
    }

    /// The metrics endpoint's address, if one is configured.
    pub fn metrics_address(&self) -> Option<std::net::SocketAddr> {
        self.metrics.as_ref().map(|m| m.address())
    }

    /// What the metrics read.
    pub fn view(&self) -> &Arc<View> {
        &self.view
    }

    /// Stops the API, detaches XDP (traffic falls back to the kernel), stops the
    /// workers (waiting for their sends to complete), and deletes the host port.
    pub fn stop(mut self) -> StopReport {
        if let Some(a) = self.api.take() {
            a.stop();
        }
        self.underlay.take();
        let detached = match self.engine.take() {
            Some(e) => e.lock().map(|mut e| e.detach_xdp()).unwrap_or_default(),
            None => Vec::new(),
        };
        // Relaxed: the flag carries no data; threads see it within a loop or two.
        self.stop.store(true, Ordering::Relaxed);
        let mut frames = Vec::new();
        for h in self.workers.drain(..) {
            match h.join() {
                Ok((acct, _)) => frames.push(acct),
                Err(_) => tracing::error!("a worker panicked"),
            }
        }
        if let Some(c) = self.control.take() {
            let _ = c.join();
        }
        if let Some(m) = self.metrics.take() {
            m.join();
        }
        self.host.take();
        StopReport { frames, detached }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // A daemon dropped without `stop` (an error path) still stops its threads.
        if let Some(a) = self.api.take() {
            a.stop();
        }
        // Relaxed: as in `stop`.
        self.stop.store(true, Ordering::Relaxed);
        for h in self.workers.drain(..) {
            let _ = h.join();
        }
        if let Some(c) = self.control.take() {
            let _ = c.join();
        }
    }
}

/// What the control thread owns.
struct Control {
    live: Arc<Mutex<Live>>,
    queues: Vec<WorkerQueues>,
    clock: Clock,
}

impl Control {
    fn run(self, stop: &AtomicBool, view: &View) {
        let mut last_age = Instant::now();
        let mut next_ra = Instant::now();
        let mut emits = Vec::new();
        let mut sends = Vec::new();
        // Relaxed: see Daemon::stop.
        while !stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            let now_s = self.clock.secs(now);
            {
                let mut guard = self.live.lock().unwrap_or_else(|e| e.into_inner());
                let live = &mut *guard;
                let mut changed = false;
                for (w, q) in self.queues.iter().enumerate() {
                    changed |= live.learner.drain(&q.learn, now_s, &live.topology);
                    while let Some(ev) = q.neigh.pop() {
                        match ev {
                            // The worker that waits sends the request.
                            NeighEvent::Miss(key) => {
                                if let Some(e) = live.resolver.miss(key, now) {
                                    sends.push((w, e));
                                }
                            }
                            NeighEvent::Seen(key, mac) => changed |= live.resolver.seen(key, mac, now),
                        }
                    }
                }
                if now.duration_since(last_age) >= Duration::from_secs(1) {
                    let topology = live.topology.clone();
                    changed |= live.learner.age(now_s, &topology);
                    last_age = now;
                }
                changed |= live.resolver.tick(now, &mut emits);
                if now >= next_ra {
                    next_ra = now + RA_INTERVAL;
                    for n in live.topology.networks() {
                        if n.spec.gateway.as_ref().is_some_and(|g| g.router_advertisements) {
                            emits.push(Emit::RouterAdvert(n.spec.id));
                        }
                    }
                }
                if changed {
                    live.publish();
                }
                let min_seen = view.workers.iter().map(|w| w.generation.get()).min().unwrap_or(u64::MAX);
                live.publisher.reclaim(min_seen);
                // Relaxed: gauges for the metrics endpoint.
                view.fdb_full_drops.store(live.learner.full_drops, Ordering::Relaxed);
                view.fdb_moves.store(live.learner.moves, Ordering::Relaxed);
                if let Ok(mut n) = view.neigh.lock() {
                    *n = live.resolver.stats;
                }
            }
            for (w, e) in sends.drain(..) {
                self.send(w, e);
            }
            for e in emits.drain(..) {
                self.send(0, e);
            }
            std::thread::sleep(CONTROL_TICK);
        }
    }

    /// Asks worker `w` to send `e`.
    fn send(&self, w: usize, e: Emit) {
        if self.queues[w].emit.push(e).is_err() {
            tracing::warn!(worker = w, "request queue full: a neighbour request or advertisement was not sent");
        }
    }
}
