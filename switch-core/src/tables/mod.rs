//! Forwarding tables, published as immutable, generation-numbered snapshots.
//!
//! Thread-safety: one writer (the control thread that owns a [`Publisher`]) builds a new
//! [`Tables`] and swaps it in; workers read through a [`TablesReader`], which checks
//! the published generation once per batch (one atomic load) and takes the new snapshot
//! only when it changed. A worker never frees a snapshot: the publisher keeps retired
//! snapshots until every worker reports (through `WorkerStats::generation`) that it
//! moved past them, so the last reference is always dropped on the control thread.

pub mod fdb;
pub mod fib;
pub mod neigh;
pub mod route;
pub mod sharded;
pub mod topology;
pub mod tunnel;

pub use fdb::{Fdb, FdbEntry, LearnEvent, Learner};
pub use fib::{Fib4, Fib6, Ipv4Prefix, Ipv6Prefix, PrefixError};
pub use neigh::{Emit, NeighConfig, NeighEvent, NeighKey, NeighState, Neighbours, Resolver};
pub use route::{Hop, Prefix, RouteError, RouteSpec, RouteTarget, Routes};
pub use topology::{Gateway, NetworkId, NetworkSpec, PortId, PortMode, PortSpec, Topology, TopologyError};
pub use tunnel::{L2Vni, PeerEntry, PeerSpec, Tunnel, TunnelError, TunnelMode, TunnelSpec};

use arc_swap::ArcSwap;
use core::sync::atomic::{AtomicU64, Ordering};
use std::collections::VecDeque;
use std::sync::Arc;

/// One snapshot of everything a worker looks up.
#[derive(Debug)]
pub struct Tables {
    /// Increases by one with every publish.
    pub generation: u64,
    /// Networks and ports.
    pub topology: Arc<Topology>,
    /// MAC addresses.
    pub fdb: Arc<Fdb>,
    /// IPv4 and IPv6 routes.
    pub routes: Arc<Routes>,
    /// Resolved next hops.
    pub neigh: Arc<Neighbours>,
    /// The uplink and remote nodes.
    pub tunnel: Arc<Tunnel>,
}

/// The parts of a snapshot, which control builds separately and publishes together.
#[derive(Debug, Clone)]
pub struct Parts {
    /// Networks and ports.
    pub topology: Arc<Topology>,
    /// MAC addresses.
    pub fdb: Arc<Fdb>,
    /// Routes.
    pub routes: Arc<Routes>,
    /// Neighbours.
    pub neigh: Arc<Neighbours>,
    /// The uplink and remote nodes.
    pub tunnel: Arc<Tunnel>,
}

impl Parts {
    /// A switch without routing.
    pub fn l2(topology: Arc<Topology>, fdb: Arc<Fdb>) -> Parts {
        Parts {
            topology,
            fdb,
            routes: Arc::new(Routes::empty()),
            neigh: Arc::new(Neighbours::empty()),
            tunnel: Arc::new(Tunnel::empty()),
        }
    }

    fn into_tables(self, generation: u64) -> Tables {
        Tables {
            generation,
            topology: self.topology,
            fdb: self.fdb,
            routes: self.routes,
            neigh: self.neigh,
            tunnel: self.tunnel,
        }
    }
}

/// Where the current snapshot lives.
#[derive(Debug)]
pub struct TablesHandle {
    current: ArcSwap<Tables>,
    /// Generation of `current`, readable with one load.
    generation: AtomicU64,
}

impl TablesHandle {
    /// The current snapshot.
    pub fn load(&self) -> Arc<Tables> {
        self.current.load_full()
    }
}

/// The single writer of a [`TablesHandle`].
#[derive(Debug)]
pub struct Publisher {
    handle: Arc<TablesHandle>,
    retired: VecDeque<Arc<Tables>>,
}

impl Publisher {
    /// Starts with `parts` as generation 1.
    pub fn new(parts: Parts) -> Publisher {
        let t = Arc::new(parts.into_tables(1));
        let handle = Arc::new(TablesHandle { current: ArcSwap::new(t), generation: AtomicU64::new(1) });
        Publisher { handle, retired: VecDeque::new() }
    }

    /// The handle workers read from.
    pub fn handle(&self) -> Arc<TablesHandle> {
        self.handle.clone()
    }

    /// The snapshot being served.
    pub fn current(&self) -> Arc<Tables> {
        self.handle.load()
    }

    /// Publishes a new snapshot made of `parts`; returns its generation.
    pub fn publish(&mut self, parts: Parts) -> u64 {
        let generation = self.handle.generation.load(Ordering::Relaxed) + 1;
        let old = self.handle.current.swap(Arc::new(parts.into_tables(generation)));
        // Release: a worker that sees the new generation (acquire) also sees the new
        // snapshot stored just before.
        self.handle.generation.store(generation, Ordering::Release);
        self.retired.push_back(old);
        generation
    }

    /// Frees retired snapshots older than `min_seen`, the lowest generation any worker
    /// still uses.
    pub fn reclaim(&mut self, min_seen: u64) {
        while self.retired.front().is_some_and(|t| t.generation < min_seen) {
            self.retired.pop_front();
        }
    }

    /// Snapshots kept for workers that may still use them.
    pub fn retired(&self) -> usize {
        self.retired.len()
    }
}

/// A worker's view: the snapshot it uses, refreshed once per batch.
#[derive(Debug)]
pub struct TablesReader {
    handle: Arc<TablesHandle>,
    cached: Arc<Tables>,
}

impl TablesReader {
    /// A reader of `handle`.
    pub fn new(handle: Arc<TablesHandle>) -> TablesReader {
        let cached = handle.load();
        TablesReader { handle, cached }
    }

    /// Takes the newest snapshot if there is one; returns true if it changed.
    #[inline]
    pub fn refresh(&mut self) -> bool {
        // Acquire: pairs with the publisher's release, so `load` below returns a
        // snapshot at least as new as this generation.
        if self.handle.generation.load(Ordering::Acquire) == self.cached.generation {
            return false;
        }
        self.cached = self.handle.load();
        true
    }

    /// The snapshot in use.
    #[inline]
    pub fn tables(&self) -> &Arc<Tables> {
        &self.cached
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readers_see_new_generations_and_old_ones_are_kept_until_reclaimed() {
        let topo = Arc::new(Topology::empty());
        let fdb = Arc::new(Fdb::empty());
        let mut p = Publisher::new(Parts::l2(topo.clone(), fdb.clone()));
        let mut r = TablesReader::new(p.handle());
        assert!(!r.refresh());
        assert_eq!(p.publish(Parts::l2(topo.clone(), fdb.clone())), 2);
        assert_eq!(p.publish(Parts::l2(topo, fdb)), 3);
        assert_eq!(r.tables().generation, 1);
        assert!(r.refresh());
        assert_eq!(r.tables().generation, 3);
        assert_eq!(p.retired(), 2);
        p.reclaim(2);
        assert_eq!(p.retired(), 1);
        p.reclaim(3);
        assert_eq!(p.retired(), 0);
    }
}
