//! Prometheus text exposition (format 0.0.4) over HTTP: `GET /metrics`.

use crate::daemon::View;
use core::fmt::Write;
use core::sync::atomic::{AtomicBool, Ordering};
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;
use switch_core::stats::DropReason;
use switch_core::xsk::Backing;

/// The HTTP endpoint's thread.
pub struct Server {
    addr: SocketAddr,
    thread: JoinHandle<()>,
}

impl Server {
    /// Binds `addr` (port 0 picks a free one) and serves until `stop`.
    pub fn start(addr: SocketAddr, view: Arc<View>, stop: Arc<AtomicBool>) -> anyhow::Result<Server> {
        let server = tiny_http::Server::http(addr)
            .map_err(|e| anyhow::anyhow!("metrics endpoint: cannot listen on {addr}: {e}"))?;
        let addr = server.server_addr().to_ip().unwrap_or(addr);
        tracing::info!("metrics on http://{addr}/metrics");
        let thread = std::thread::Builder::new().name("ps-metrics".into()).spawn(move || {
            // Relaxed: see Daemon::stop.
            while !stop.load(Ordering::Relaxed) {
                let Ok(Some(req)) = server.recv_timeout(Duration::from_millis(100)) else {
                    continue;
                };
                let resp = if req.url() == "/metrics" {
                    let ct = tiny_http::Header::from_bytes("Content-Type", "text/plain; version=0.0.4")
                        .expect("static header is valid");
                    tiny_http::Response::from_string(render(&view)).with_header(ct)
                } else {
                    tiny_http::Response::from_string("see /metrics\n").with_status_code(404)
                };
                let _ = req.respond(resp);
            }
        })?;
        Ok(Server { addr, thread })
    }

    /// Where it listens.
    pub fn address(&self) -> SocketAddr {
        self.addr
    }

    /// Waits for the thread (after the stop flag is set).
    pub fn join(self) {
        let _ = self.thread.join();
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// The exposition text for the current counters.
pub fn render(view: &View) -> String {
    let mut o = String::with_capacity(8192);
    type PortField = fn(&switch_core::stats::PortCounters) -> u64;
    let port_counters: [(&str, &str, PortField); 10] = [
        ("podswitch_port_rx_packets_total", "Frames received on a port.", |c| c.rx_packets.get()),
        ("podswitch_port_rx_bytes_total", "Bytes received on a port.", |c| c.rx_bytes.get()),
        ("podswitch_port_tx_packets_total", "Frames sent on a port.", |c| c.tx_packets.get()),
        ("podswitch_port_tx_bytes_total", "Bytes sent on a port.", |c| c.tx_bytes.get()),
        ("podswitch_port_tx_flood_packets_total", "Frames sent on a port as flood copies.", |c| c.tx_flood.get()),
        ("podswitch_port_xsk_rx_dropped_total", "Frames the kernel dropped for the port's AF_XDP socket.", |c| {
            c.xsk.rx_dropped.get()
        }),
        ("podswitch_port_xsk_rx_ring_full_total", "Frames dropped because the socket's rx ring was full.", |c| {
            c.xsk.rx_ring_full.get()
        }),
        ("podswitch_port_xsk_rx_fill_ring_empty_total", "Frames that found the fill ring empty.", |c| {
            c.xsk.rx_fill_ring_empty.get()
        }),
        ("podswitch_port_xsk_rx_invalid_descs_total", "Invalid rx descriptors.", |c| c.xsk.rx_invalid_descs.get()),
        ("podswitch_port_xsk_tx_invalid_descs_total", "Invalid tx descriptors.", |c| c.xsk.tx_invalid_descs.get()),
    ];
    let ports = view.ports();
    for (name, help, get) in port_counters {
        family(&mut o, name, "counter", help);
        for p in &ports {
            for w in &view.workers {
                let _ = writeln!(
                    o,
                    "{name}{{port=\"{}\",worker=\"{}\"}} {}",
                    p.name,
                    w.worker,
                    get(&w.ports[p.id as usize])
                );
            }
        }
    }
    family(&mut o, "podswitch_drops_total", "counter", "Packets dropped, by reason.");
    for w in &view.workers {
        for r in DropReason::ALL {
            let _ =
                writeln!(o, "podswitch_drops_total{{reason=\"{}\",worker=\"{}\"}} {}", r.name(), w.worker, w.drops(*r));
        }
    }
    type WorkerField = fn(&switch_core::stats::WorkerStats) -> u64;
    let worker_counters: [(&str, &str, &str, WorkerField); 22] = [
        ("podswitch_worker_busy_loops_total", "counter", "Poll loops that found packets.", |w| w.busy_loops.get()),
        ("podswitch_worker_idle_loops_total", "counter", "Poll loops that found none.", |w| w.idle_loops.get()),
        ("podswitch_worker_batches_total", "counter", "Batches processed.", |w| w.batches.get()),
        ("podswitch_worker_packets_total", "counter", "Packets processed.", |w| w.packets.get()),
        ("podswitch_worker_learn_events_total", "counter", "MAC learn events sent to control.", |w| {
            w.learn_events.get()
        }),
        ("podswitch_worker_learn_queue_full_total", "counter", "Learn events lost to a full queue.", |w| {
            w.learn_queue_full.get()
        }),
        ("podswitch_worker_umem_free_frames", "gauge", "UMEM frames in the worker's free pool.", |w| {
            w.free_frames.get()
        }),
        ("podswitch_l3_routed_total", "counter", "Packets routed.", |w| w.l3.routed.get()),
        ("podswitch_tunnel_tx_total", "counter", "Packets sent to remote nodes.", |w| w.l3.to_peers.get()),
        ("podswitch_tunnel_rx_total", "counter", "Packets received from remote nodes.", |w| w.l3.from_peers.get()),
        ("podswitch_l3_arp_replies_total", "counter", "ARP replies for gateway addresses.", |w| w.l3.arp_replies.get()),
        ("podswitch_l3_nd_adverts_total", "counter", "Neighbour advertisements for gateway addresses.", |w| {
            w.l3.nd_adverts.get()
        }),
        ("podswitch_l3_router_adverts_total", "counter", "Router advertisements sent.", |w| w.l3.router_adverts.get()),
        ("podswitch_l3_echo_replies_total", "counter", "Echo replies from gateway addresses.", |w| {
            w.l3.echo_replies.get()
        }),
        ("podswitch_l3_icmp_errors_total", "counter", "ICMP errors sent.", |w| w.l3.icmp_errors.get()),
        ("podswitch_l3_fragments_total", "counter", "IPv4 fragments made of routed packets without DF.", |w| {
            w.l3.fragments.get()
        }),
        ("podswitch_l3_icmp_rate_limited_total", "counter", "ICMP errors held back by the rate limit.", |w| {
            w.l3.icmp_rate_limited.get()
        }),
        ("podswitch_l3_solicits_total", "counter", "ARP requests and neighbour solicitations sent.", |w| {
            w.l3.solicits.get()
        }),
        ("podswitch_l3_parked_total", "counter", "Packets parked for next-hop resolution.", |w| w.l3.parked.get()),
        ("podswitch_l3_released_total", "counter", "Parked packets sent after resolution.", |w| w.l3.released.get()),
        ("podswitch_l3_neigh_consumed_total", "counter", "ARP/ND answers taken by the switch.", |w| {
            w.l3.neigh_consumed.get()
        }),
        ("podswitch_l3_neigh_events_lost_total", "counter", "Neighbour events lost to a full queue.", |w| {
            w.l3.neigh_events_lost.get()
        }),
    ];
    for (name, kind, help, get) in worker_counters {
        family(&mut o, name, kind, help);
        for w in &view.workers {
            let _ = writeln!(o, "{name}{{worker=\"{}\"}} {}", w.worker, get(w));
        }
    }
    family(&mut o, "podswitch_worker_umem_frames", "gauge", "UMEM frames of the worker (its own and its ports').");
    for w in &view.workers {
        let _ = writeln!(o, "podswitch_worker_umem_frames{{worker=\"{}\"}} {}", w.worker, w.umem_frames.get());
    }
    family(&mut o, "podswitch_worker_umem_frames_in_use", "gauge", "UMEM frames not in the free pools.");
    for w in &view.workers {
        let used = w.umem_frames.get().saturating_sub(w.free_frames.get());
        let _ = writeln!(o, "podswitch_worker_umem_frames_in_use{{worker=\"{}\"}} {used}", w.worker);
    }
    family(&mut o, "podswitch_worker_tables_generation", "gauge", "Generation of the tables the worker uses.");
    for w in &view.workers {
        let _ = writeln!(o, "podswitch_worker_tables_generation{{worker=\"{}\"}} {}", w.worker, w.generation.get());
    }
    family(&mut o, "podswitch_worker_batch_size", "histogram", "Packets per received batch.");
    for w in &view.workers {
        let mut cum = 0;
        for (b, le) in switch_core::stats::BATCH_BUCKETS.iter().enumerate() {
            cum += w.batch_sizes[b].get();
            let _ = writeln!(o, "podswitch_worker_batch_size_bucket{{worker=\"{}\",le=\"{le}\"}} {cum}", w.worker);
        }
        let _ = writeln!(o, "podswitch_worker_batch_size_bucket{{worker=\"{}\",le=\"+Inf\"}} {cum}", w.worker);
        let _ = writeln!(o, "podswitch_worker_batch_size_sum{{worker=\"{}\"}} {}", w.worker, w.packets.get());
        let _ = writeln!(o, "podswitch_worker_batch_size_count{{worker=\"{}\"}} {}", w.worker, w.batches.get());
    }
    family(&mut o, "podswitch_state_generation", "gauge", "Generation of the desired state (API changes).");
    let _ = writeln!(o, "podswitch_state_generation {}", view.state_generation.load(Ordering::Relaxed));
    family(&mut o, "podswitch_ports_attached", "gauge", "Ports the workers poll.");
    let _ = writeln!(o, "podswitch_ports_attached {}", ports.len());
    family(&mut o, "podswitch_ports_missing", "gauge", "Ports in the state whose interface is missing.");
    let _ = writeln!(o, "podswitch_ports_missing {}", view.ports_missing.load(Ordering::Relaxed));
    family(&mut o, "podswitch_capture_lost_total", "counter", "Captured frames lost to a full capture queue.");
    let lost: u64 = view.taps.iter().map(|t| t.capture.lost()).sum();
    let _ = writeln!(o, "podswitch_capture_lost_total {lost}");
    family(&mut o, "podswitch_worker_umem_hugepages", "gauge", "1 if the worker's own UMEM segment is on hugepages.");
    for (i, u) in view.umems.iter().enumerate() {
        let _ = writeln!(
            o,
            "podswitch_worker_umem_hugepages{{worker=\"{i}\"}} {}",
            u8::from(u.backing == Backing::Hugepages)
        );
    }
    let tables = view.tables.load();
    family(&mut o, "podswitch_tables_generation", "gauge", "Generation of the published tables.");
    let _ = writeln!(o, "podswitch_tables_generation {}", tables.generation);
    family(&mut o, "podswitch_fdb_entries", "gauge", "MAC entries in the FDB, static and learned.");
    let _ = writeln!(o, "podswitch_fdb_entries {}", tables.fdb.len());
    family(&mut o, "podswitch_fdb_moves_total", "counter", "MACs that moved between ports.");
    // Relaxed: counters read at any recent moment.
    let _ = writeln!(o, "podswitch_fdb_moves_total {}", view.fdb_moves.load(Ordering::Relaxed));
    family(&mut o, "podswitch_fdb_full_drops_total", "counter", "Learn events refused because the FDB was full.");
    let _ = writeln!(o, "podswitch_fdb_full_drops_total {}", view.fdb_full_drops.load(Ordering::Relaxed));
    family(&mut o, "podswitch_fib_routes", "gauge", "Routes, connected subnets included.");
    let _ = writeln!(o, "podswitch_fib_routes {}", tables.routes.table.len());
    family(&mut o, "podswitch_neigh_entries", "gauge", "Published neighbours (reachable and failed).");
    let _ = writeln!(o, "podswitch_neigh_entries {}", tables.neigh.len());
    if let Ok(n) = view.neigh.lock() {
        for (name, help, v) in [
            ("podswitch_neigh_requests_total", "ARP requests / solicitations asked of workers.", n.requests),
            ("podswitch_neigh_failed_total", "Resolutions that got no answer.", n.failed),
            ("podswitch_neigh_expired_total", "Neighbours removed after an unanswered probe.", n.expired),
            ("podswitch_neigh_full_total", "Resolutions refused: the table was full.", n.full),
        ] {
            family(&mut o, name, "counter", help);
            let _ = writeln!(o, "{name} {v}");
        }
    }
    o
}
