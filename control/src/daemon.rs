//! The daemon: builds the dataplane from a [`Config`], runs the control thread, stops
//! cleanly.
//!
//! Threads: one worker per configured core (pinned), one control thread (drains learn
//! queues, ages the FDB, publishes snapshots, frees retired ones), and an optional
//! metrics thread. The control and metrics threads run on whatever cores are not the
//! workers'.

use crate::config::Config;
use anyhow::{bail, Context, Result};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use switch_core::pipeline::BATCH_SIZE;
use switch_core::port::{Port, XskPort};
use switch_core::stats::WorkerStats;
use switch_core::sys::netdev;
use switch_core::tables::neigh::ResolverStats;
use switch_core::tables::{
    Emit, Learner, NeighEvent, Parts, PortMode, Publisher, Resolver, Routes, TablesHandle, TablesReader, Topology,
};
use switch_core::worker::{Clock, FrameAccount, Worker, WorkerConfig, WorkerQueues};
use switch_core::xdp::{AttachedMode, Fallback, XdpRedirect};
use switch_core::xsk::{Backing, BindMode, Umem, UmemConfig, XskConfig, XskSocket, FRAME_HEADROOM};

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
    /// Ports, by id.
    pub ports: Vec<PortView>,
    /// UMEM of each worker.
    pub umems: Vec<UmemView>,
    /// The published tables.
    pub tables: Arc<TablesHandle>,
    /// Learn events refused because the FDB was full.
    pub fdb_full_drops: AtomicU64,
    /// MACs that moved between ports.
    pub fdb_moves: AtomicU64,
    /// The neighbour resolver's counters, copied by the control thread.
    pub neigh: std::sync::Mutex<ResolverStats>,
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

/// A worker's UMEM as the metrics show it.
#[derive(Debug, Clone, Copy)]
pub struct UmemView {
    /// Frames.
    pub frames: u32,
    /// Backing.
    pub backing: Backing,
}

/// A running switch.
pub struct Daemon {
    stop: Arc<AtomicBool>,
    workers: Vec<JoinHandle<(FrameAccount, Arc<WorkerStats>)>>,
    control: Option<JoinHandle<()>>,
    metrics: Option<crate::metrics::Server>,
    // Dropped (detached) in `stop`, after the workers have stopped.
    xdp: Vec<XdpRedirect>,
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

fn umem_frames(cfg: &Config, ports: usize) -> u32 {
    if let Some(n) = cfg.dataplane.umem_frames {
        return n;
    }
    // Each port keeps a full fill ring with the kernel and can have a full tx ring in
    // flight; add room for a batch being flooded, then round up to whole 2 MiB pages.
    let ring = cfg.dataplane.ring_size;
    let need = ports as u32 * 2 * ring + 8 * BATCH_SIZE as u32;
    let per_page = (2 << 20) / cfg.dataplane.frame_size;
    need.div_ceil(per_page) * per_page
}

impl Daemon {
    /// Builds and starts the dataplane.
    pub fn start(cfg: &Config) -> Result<Daemon> {
        let topology = Arc::new(cfg.topology()?);
        let routing = cfg.routing(&topology)?;
        let routes = Arc::new(Routes::build(&topology, &routing.routes)?);
        let mut resolver = Resolver::new(cfg.neigh_config());
        for (key, mac) in &routing.neighbours {
            resolver.set_static(*key, *mac);
        }
        let workers_n = cfg.dataplane.cores.len();
        let host = match &cfg.host_port {
            Some(h) => Some(crate::host::HostPort::create(h, &routing, workers_n)?),
            None => None,
        };
        let port_specs: Vec<_> = topology.ports().map(|p| p.spec.clone()).collect();
        if port_specs.is_empty() {
            tracing::warn!("no ports configured: the switch has nothing to forward");
        }

        // Check every interface before touching any.
        let mut max_frames = Vec::new();
        for p in &port_specs {
            netdev::ifindex(&p.name).with_context(|| {
                format!("port {:?}: no such interface in this network namespace; create it first", p.name)
            })?;
            let queues = netdev::rx_queues(&p.name).with_context(|| format!("port {:?}: reading queues", p.name))?;
            if (queues as usize) < workers_n {
                bail!(
                    "port {:?} has {queues} receive queue(s) but there are {workers_n} workers: each worker binds its \
                     own queue. Create the veth with `numrxqueues {workers_n} numtxqueues {workers_n}` on both ends, \
                     or configure fewer cores",
                    p.name
                );
            }
            let mtu = netdev::mtu(&p.name).with_context(|| format!("port {:?}: reading MTU", p.name))?;
            let tag = if matches!(p.mode, PortMode::Trunk { .. }) { 4 } else { 0 };
            max_frames.push((mtu + 14 + tag).min(cfg.dataplane.frame_size - FRAME_HEADROOM));
        }

        let mut learner = Learner::new(cfg.dataplane.fdb_capacity);
        learner.sync_topology(&topology);
        let publisher = Publisher::new(Parts {
            topology: topology.clone(),
            fdb: Arc::new(learner.build()),
            routes: routes.clone(),
            neigh: Arc::new(resolver.build()),
        });
        let clock = Clock::new();
        let xsk_cfg = XskConfig {
            rx_size: cfg.dataplane.ring_size,
            tx_size: cfg.dataplane.ring_size,
            fill_size: cfg.dataplane.ring_size,
            comp_size: cfg.dataplane.ring_size,
            mode: BindMode::Copy,
        };

        // Per worker: UMEM, then one socket per port (the first registers the UMEM).
        let frames = umem_frames(cfg, port_specs.len());
        let mut workers = Vec::new();
        let mut queues = Vec::new();
        let mut socket_fds = vec![Vec::new(); port_specs.len()];
        let mut umems = Vec::new();
        for (w, core) in cfg.dataplane.cores.iter().enumerate() {
            let umem = Umem::new(&UmemConfig {
                frames,
                frame_size: cfg.dataplane.frame_size,
                hugepages: cfg.hugepage_policy(),
            })
            .with_context(|| format!("worker {w}: UMEM"))?;
            umems.push(UmemView { frames, backing: umem.backing() });
            let mut sockets: Vec<XskSocket> = Vec::new();
            for (i, p) in port_specs.iter().enumerate() {
                let s = XskSocket::new(&umem, &p.name, w as u32, sockets.first(), &xsk_cfg)?;
                socket_fds[i].push(s.raw_fd());
                sockets.push(s);
            }
            let q = WorkerQueues::new(QUEUE);
            queues.push(q.clone());
            let wcfg = WorkerConfig {
                id: w,
                core: Some(*core),
                idle: cfg.idle_policy(),
                max_ports: cfg.dataplane.max_ports as usize,
                pending: cfg.dataplane.pending_packets as usize,
            };
            let mut worker = Worker::new(wcfg, umem, TablesReader::new(publisher.handle()), q, clock);
            // The kernel reference-counts the UMEM, so the sockets may close in any order.
            for (i, s) in sockets.into_iter().enumerate() {
                worker.add_port(port_specs[i].id, Port::Xsk(XskPort::new(s, max_frames[i])));
            }
            workers.push(worker);
        }

        // Steer every queue to its worker's socket.
        let mut xdp = Vec::new();
        let mut port_views = Vec::new();
        for (i, p) in port_specs.iter().enumerate() {
            let prog = XdpRedirect::attach(&p.name, workers_n as u32, Fallback::Drop, cfg.xdp_mode())?;
            for (w, fd) in socket_fds[i].iter().enumerate() {
                prog.insert(w as u32, *fd)?;
            }
            port_views.push(PortView {
                id: p.id.0,
                name: p.name.clone(),
                xdp_mode: prog.mode(),
                max_frame: max_frames[i],
            });
            xdp.push(prog);
        }

        let stop = Arc::new(AtomicBool::new(false));
        let view = Arc::new(View {
            workers: workers.iter().map(|w| w.stats()).collect(),
            ports: port_views,
            umems,
            tables: publisher.handle(),
            fdb_full_drops: AtomicU64::new(0),
            fdb_moves: AtomicU64::new(0),
            neigh: std::sync::Mutex::new(ResolverStats::default()),
        });

        let mut handles = Vec::new();
        for worker in workers {
            let stop = stop.clone();
            let name = format!("ps-worker-{}", handles.len());
            handles.push(std::thread::Builder::new().name(name).spawn(move || worker.run(&stop))?);
        }
        let control = {
            let (stop, view) = (stop.clone(), view.clone());
            let state = Control { publisher, learner, resolver, topology, routes, queues, clock };
            std::thread::Builder::new().name("ps-control".into()).spawn(move || state.run(&stop, &view))?
        };
        let metrics = match cfg.metrics_address {
            Some(addr) => Some(crate::metrics::Server::start(addr, view.clone(), stop.clone())?),
            None => None,
        };

        for (p, x) in view.ports.iter().zip(&xdp) {
            tracing::info!(port = %p.name, xdp = ?x.mode(), max_frame = p.max_frame, "port attached");
        }
        tracing::info!(
            workers = workers_n,
            ports = view.ports.len(),
            umem_frames = frames,
            backing = ?view.umems.first().map(|u| u.backing),
            "podswitchd ready"
        );
        Ok(Daemon { stop, workers: handles, control: Some(control), metrics, xdp, host, view })
    }

    /// The metrics endpoint's address, if one is configured.
    pub fn metrics_address(&self) -> Option<std::net::SocketAddr> {
        self.metrics.as_ref().map(|m| m.address())
    }

    /// What the metrics read.
    pub fn view(&self) -> &Arc<View> {
        &self.view
    }

    /// Stops the workers, waits for their sends to complete, detaches XDP.
    pub fn stop(mut self) -> StopReport {
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
        let detached = self.xdp.drain(..).map(|x| x.ifname().to_string()).collect();
        self.host.take();
        StopReport { frames, detached }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // A daemon dropped without `stop` (an error path) still stops its threads.
        // Relaxed: as in `stop`.
        self.stop.store(true, Ordering::Relaxed);
        for h in self.workers.drain(..) {
            let _ = h.join();
        }
    }
}

/// What the control thread owns.
struct Control {
    publisher: Publisher,
    learner: Learner,
    resolver: Resolver,
    topology: Arc<Topology>,
    routes: Arc<Routes>,
    queues: Vec<WorkerQueues>,
    clock: Clock,
}

impl Control {
    fn run(mut self, stop: &AtomicBool, view: &View) {
        let mut last_age = Instant::now();
        let mut next_ra = Instant::now();
        let mut emits = Vec::new();
        // Relaxed: see Daemon::stop.
        while !stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            let now_s = self.clock.secs(now);
            let mut changed = false;
            for (w, q) in self.queues.iter().enumerate() {
                changed |= self.learner.drain(&q.learn, now_s);
                while let Some(ev) = q.neigh.pop() {
                    match ev {
                        // The worker that waits sends the request.
                        NeighEvent::Miss(key) => {
                            if let Some(e) = self.resolver.miss(key, now) {
                                self.send(w, e);
                            }
                        }
                        NeighEvent::Seen(key, mac) => changed |= self.resolver.seen(key, mac, now),
                    }
                }
            }
            if now.duration_since(last_age) >= Duration::from_secs(1) {
                changed |= self.learner.age(now_s, &self.topology);
                last_age = now;
            }
            changed |= self.resolver.tick(now, &mut emits);
            if now >= next_ra {
                next_ra = now + RA_INTERVAL;
                for n in self.topology.networks() {
                    if n.spec.gateway.as_ref().is_some_and(|g| g.router_advertisements) {
                        emits.push(Emit::RouterAdvert(n.spec.id));
                    }
                }
            }
            for e in emits.drain(..) {
                self.send(0, e);
            }
            if changed {
                self.publisher.publish(Parts {
                    topology: self.topology.clone(),
                    fdb: Arc::new(self.learner.build()),
                    routes: self.routes.clone(),
                    neigh: Arc::new(self.resolver.build()),
                });
            }
            let min_seen = view.workers.iter().map(|w| w.generation.get()).min().unwrap_or(u64::MAX);
            self.publisher.reclaim(min_seen);
            // Relaxed: gauges for the metrics endpoint.
            view.fdb_full_drops.store(self.learner.full_drops, Ordering::Relaxed);
            view.fdb_moves.store(self.learner.moves, Ordering::Relaxed);
            if let Ok(mut n) = view.neigh.lock() {
                *n = self.resolver.stats;
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
