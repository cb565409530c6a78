//! The forwarding database: (network, MAC) → port.
//!
//! Workers look entries up in the published [`Fdb`] snapshot. When a worker sees a
//! source MAC that is missing or has moved, it sends a [`LearnEvent`] to control through
//! a bounded queue; the [`Learner`] on the control thread applies the events, ages
//! entries out, and publishes a new snapshot. That way an address learned on one worker
//! is used by every worker, and no worker takes a lock. A snapshot's entries live in
//! shards it shares with the learner and the snapshots before it
//! ([`Sharded`]): publishing after a change copies the shards
//! the change touched, not the table.
//!
//! Ageing needs "last seen" times that the workers update at packet rate; those live in
//! [`AgeingSlots`], an array of atomics shared by every snapshot, one slot per learned
//! entry. A worker refreshes its entry's slot with a relaxed store, at most once per
//! second per entry.
//!
//! In a network stretched across nodes, a MAC may live behind a remote node: its entry
//! names the uplink port and the peer (the remote VTEP), learned from the outer source
//! address of the decapsulated frames that came from it.

use super::sharded::Sharded;
use super::topology::{NetworkId, PortId, Topology};
use crate::wire::EthernetAddress;
use core::sync::atomic::{AtomicU32, Ordering};
use rustc_hash::FxHashMap;
use std::sync::Arc;

/// Slot value for entries that never age (static MACs).
const STATIC: u32 = u32::MAX;

/// The table key: network id in the high 16 bits, MAC in the low 48.
#[inline]
pub fn key(network: NetworkId, mac: EthernetAddress) -> u64 {
    (u64::from(network.0) << 48) | mac.to_u64()
}

/// True if port `port` of `topology` is in the network of table key `k`.
fn member(topology: &Topology, port: PortId, k: u64) -> bool {
    let net = (k >> 48) as usize;
    topology.port(port).and_then(|p| p.egress.get(net)).is_some_and(|x| *x != super::topology::NOT_MEMBER)
}

/// The keys of port `id`'s static MACs in each of its networks, in `topology`.
fn static_keys(topology: &Topology, id: PortId) -> Vec<u64> {
    topology.port(id).map_or_else(Vec::new, |p| {
        let nets = p.egress.iter().enumerate().filter(|(_, e)| **e != super::topology::NOT_MEMBER);
        nets.flat_map(|(n, _)| p.spec.static_macs.iter().map(move |m| key(NetworkId(n as u16), *m))).collect()
    })
}

/// Last-seen times (seconds on the daemon's clock) of learned entries.
///
/// Thread-safety: workers store, the learner loads and stores; all relaxed, since a
/// time that is a moment stale only moves an expiry by that moment.
#[derive(Debug)]
pub struct AgeingSlots(Box<[AtomicU32]>);

impl AgeingSlots {
    /// `n` slots.
    pub fn new(n: usize) -> AgeingSlots {
        AgeingSlots((0..n).map(|_| AtomicU32::new(0)).collect())
    }

    /// Marks slot `i` as seen at `now_s`, writing only if it changed (keeps the cache
    /// line shared between cores when many packets hit the same entry).
    #[inline]
    pub fn touch(&self, i: u32, now_s: u32) {
        if let Some(s) = self.0.get(i as usize) {
            // Relaxed: see the type's docs.
            if s.load(Ordering::Relaxed) != now_s {
                s.store(now_s, Ordering::Relaxed);
            }
        }
    }

    /// When slot `i` was last seen.
    pub fn get(&self, i: u32) -> u32 {
        // Relaxed: see the type's docs.
        self.0.get(i as usize).map_or(0, |s| s.load(Ordering::Relaxed))
    }

    fn set(&self, i: u32, now_s: u32) {
        if let Some(s) = self.0.get(i as usize) {
            // Relaxed: see the type's docs.
            s.store(now_s, Ordering::Relaxed);
        }
    }
}

/// [`FdbEntry::peer`] of a MAC on a local port.
pub const LOCAL: u16 = u16::MAX;

/// Where a MAC is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdbEntry {
    /// The port (the uplink, for a MAC behind a remote node).
    pub port: PortId,
    /// The remote node (an index into the tunnel table's peers), or [`LOCAL`].
    pub peer: u16,
    slot: u32,
}

impl FdbEntry {
    /// Installed by control rather than learned.
    pub fn is_static(&self) -> bool {
        self.slot == STATIC
    }

    /// Behind a remote node.
    #[inline]
    pub fn is_remote(&self) -> bool {
        self.peer != LOCAL
    }
}

/// One immutable FDB snapshot. Its entries are shared in shards with the learner's
/// table and the snapshots before it: building one after a change copies only the
/// shards the change touched.
#[derive(Debug)]
pub struct Fdb {
    map: Sharded<u64, FdbEntry>,
    ageing: Arc<AgeingSlots>,
}

impl Fdb {
    /// An empty table.
    pub fn empty() -> Fdb {
        Fdb { map: Sharded::default(), ageing: Arc::new(AgeingSlots::new(0)) }
    }

    /// Looks up `mac` in `network`.
    #[inline]
    pub fn lookup(&self, network: NetworkId, mac: EthernetAddress) -> Option<FdbEntry> {
        self.map.get(&key(network, mac)).copied()
    }

    /// Marks a learned entry as seen now.
    #[inline]
    pub fn touch(&self, e: FdbEntry, now_s: u32) {
        if e.slot != STATIC {
            self.ageing.touch(e.slot, now_s)
        }
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Every entry: (network, MAC, entry), in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (NetworkId, EthernetAddress, FdbEntry)> + '_ {
        self.map.iter().map(|(k, e)| (NetworkId((k >> 48) as u16), EthernetAddress::from_u64(*k), *e))
    }
}

/// A worker saw `mac` arrive on `port` in `network`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LearnEvent {
    /// Network.
    pub network: NetworkId,
    /// Source MAC.
    pub mac: EthernetAddress,
    /// Ingress port.
    pub port: PortId,
    /// The remote node it came from (decapsulated), or [`LOCAL`].
    pub peer: u16,
}

/// The control-side owner of learned and static entries.
#[derive(Debug)]
pub struct Learner {
    learned: FxHashMap<u64, FdbEntry>,
    statics: FxHashMap<u64, FdbEntry>,
    /// The static and learned entries together, as snapshots publish them: every
    /// change to the two above is made here too, so `build` copies nothing.
    published: Sharded<u64, FdbEntry>,
    ageing: Arc<AgeingSlots>,
    free_slots: Vec<u32>,
    /// Learn events refused because the table was full.
    pub full_drops: u64,
    /// Entries moved from one port to another.
    pub moves: u64,
    /// The peers' underlay addresses when remote entries were last checked.
    peer_addrs: Vec<std::net::IpAddr>,
    /// Some static MAC is claimed by two ports of one network (which wins is the whole
    /// sync's rule, so every sync is a whole one until that ends).
    contested: bool,
}

impl Learner {
    /// A learner with room for `capacity` learned entries.
    pub fn new(capacity: u32) -> Learner {
        Learner {
            learned: FxHashMap::default(),
            statics: FxHashMap::default(),
            published: Sharded::default(),
            ageing: Arc::new(AgeingSlots::new(capacity as usize)),
            free_slots: (0..capacity).rev().collect(),
            full_drops: 0,
            moves: 0,
            peer_addrs: vec![],
            contested: false,
        }
    }

    /// Replaces the static entries with those of `topology`'s ports, and forgets
    /// learned entries on ports that no longer exist. Returns true if anything changed.
    pub fn sync_topology(&mut self, topology: &Topology) -> bool {
        let mut statics = FxHashMap::default();
        self.contested = false;
        for p in topology.ports() {
            for k in static_keys(topology, p.spec.id) {
                let e = FdbEntry { port: p.spec.id, peer: LOCAL, slot: STATIC };
                self.contested |= statics.insert(k, e).is_some();
            }
        }
        let changed = statics != self.statics;
        self.statics = statics;
        let stale = self
            .learned_where(|k, e| (!e.is_remote() && !member(topology, e.port, k)) || self.statics.contains_key(&k));
        let forgot = self.forget(stale);
        // The whole sync: the published entries are made again from both tables.
        self.published = self.statics.iter().chain(self.learned.iter()).map(|(k, e)| (*k, *e)).collect();
        forgot || changed
    }

    /// What [`sync_topology`](Learner::sync_topology) does, for the ports in `changed`
    /// only: `old` is the topology the statics were last synced with, `topology` the
    /// new one, and no port outside `changed` differs between them. Costs the changed
    /// ports' MACs and one pass over the learned entries, not every port's. Falls back
    /// to the whole sync while a static MAC is claimed by two ports of one network
    /// (which of them wins is the whole sync's rule). Returns true if anything changed.
    pub fn sync_ports(&mut self, old: &Topology, topology: &Topology, changed: &[PortId]) -> bool {
        if self.contested {
            return self.sync_topology(topology);
        }
        let mut any = false;
        for id in changed {
            for k in static_keys(old, *id) {
                if self.statics.get(&k).is_none_or(|e| e.port != *id) {
                    return self.sync_topology(topology);
                }
                self.statics.remove(&k);
                self.published.remove(&k);
                any = true;
            }
        }
        let mut now_static = Vec::new();
        for id in changed {
            for k in static_keys(topology, *id) {
                let e = FdbEntry { port: *id, peer: LOCAL, slot: STATIC };
                if self.statics.insert(k, e).is_some() {
                    return self.sync_topology(topology);
                }
                self.published.insert(k, e);
                now_static.push(k);
                any = true;
            }
        }
        let stale = self.learned_where(|k, e| {
            (!e.is_remote() && changed.contains(&e.port) && !member(topology, e.port, k)) || now_static.contains(&k)
        });
        self.forget(stale) || any
    }

    /// Forgets MACs learned behind remote nodes that no longer carry their network
    /// in `tunnel`, or whose peer index now names another node. Returns true if any
    /// went.
    pub fn sync_tunnel(&mut self, tunnel: &super::Tunnel) -> bool {
        let addrs: Vec<std::net::IpAddr> = tunnel.peers.iter().map(|p| p.spec.underlay).collect();
        let renamed = |i: u16| self.peer_addrs.get(usize::from(i)) != addrs.get(usize::from(i));
        let stale = self.learned_where(|k, e| {
            e.is_remote()
                && (renamed(e.peer)
                    || tunnel.l2_of(NetworkId((k >> 48) as u16)).is_none_or(|v| !v.peers.contains(&e.peer)))
        });
        self.peer_addrs = addrs;
        self.forget(stale)
    }

    /// The keys of the learned entries for which `f` holds.
    fn learned_where(&self, f: impl Fn(u64, &FdbEntry) -> bool) -> Vec<u64> {
        self.learned.iter().filter(|(k, e)| f(**k, e)).map(|(k, _)| *k).collect()
    }

    /// Removes the learned entries `keys`; returns true if there were any.
    fn forget(&mut self, keys: Vec<u64>) -> bool {
        let any = !keys.is_empty();
        for k in keys {
            self.remove(k);
        }
        any
    }

    fn remove(&mut self, k: u64) {
        if let Some(e) = self.learned.remove(&k) {
            self.free_slots.push(e.slot);
            // A MAC that just became static keeps its new, static entry.
            match self.statics.get(&k) {
                Some(s) => self.published.insert(k, *s),
                None => self.published.remove(&k),
            };
        }
    }

    /// Applies one event at time `now_s`; returns true if the table changed.
    pub fn apply(&mut self, ev: LearnEvent, now_s: u32) -> bool {
        let k = key(ev.network, ev.mac);
        if self.statics.contains_key(&k) {
            return false;
        }
        if let Some(e) = self.learned.get_mut(&k) {
            self.ageing.set(e.slot, now_s);
            if e.port == ev.port && e.peer == ev.peer {
                return false;
            }
            e.port = ev.port;
            e.peer = ev.peer;
            self.published.insert(k, *e);
            self.moves += 1;
            return true;
        }
        let Some(slot) = self.free_slots.pop() else {
            self.full_drops += 1;
            return false;
        };
        self.ageing.set(slot, now_s);
        let e = FdbEntry { port: ev.port, peer: ev.peer, slot };
        self.learned.insert(k, e);
        self.published.insert(k, e);
        true
    }

    /// Applies `ev` if its port is still in `topology` and in its network: a worker's
    /// queue may still hold events of a port that was removed since (or whose id a new
    /// port took), and an entry for it would send the MAC's traffic to the wrong port
    /// until it aged out. Returns true if the table changed.
    pub fn learn(&mut self, ev: LearnEvent, now_s: u32, topology: &Topology) -> bool {
        if ev.peer == LOCAL && !member(topology, ev.port, key(ev.network, ev.mac)) {
            return false;
        }
        self.apply(ev, now_s)
    }

    /// Learns every event waiting in a worker's `queue` (see [`learn`](Learner::learn));
    /// returns true if the table changed (so a new snapshot should be published).
    pub fn drain(&mut self, queue: &crossbeam_queue::ArrayQueue<LearnEvent>, now_s: u32, topology: &Topology) -> bool {
        let mut changed = false;
        while let Some(ev) = queue.pop() {
            changed |= self.learn(ev, now_s, topology);
        }
        changed
    }

    /// Removes learned entries not seen for their network's ageing time; returns true if
    /// any went.
    pub fn age(&mut self, now_s: u32, topology: &Topology) -> bool {
        let expired: Vec<u64> = self
            .learned
            .iter()
            .filter(|(k, e)| {
                let ageing = topology.network(NetworkId((*k >> 48) as u16)).map_or(0, |n| n.spec.ageing_s);
                now_s.saturating_sub(self.ageing.get(e.slot)) >= ageing
            })
            .map(|(k, _)| *k)
            .collect();
        let changed = !expired.is_empty();
        for k in expired {
            self.remove(k);
        }
        changed
    }

    /// Builds a snapshot of the static and learned entries: their shards are shared,
    /// not copied.
    pub fn build(&self) -> Fdb {
        Fdb { map: self.published.clone(), ageing: self.ageing.clone() }
    }

    /// Learned entries.
    pub fn learned_len(&self) -> usize {
        self.learned.len()
    }
}

#[cfg(test)]
mod tests {
    use super::super::topology::{NetworkSpec, PortMode, PortSpec};
    use super::*;

    fn mac(i: u8) -> EthernetAddress {
        EthernetAddress([2, 0, 0, 0, 0, i])
    }

    fn topo(statics: Vec<EthernetAddress>) -> Topology {
        let nets = [
            NetworkSpec { id: NetworkId(0), name: "a".into(), ageing_s: 10, gateway: None },
            NetworkSpec { id: NetworkId(1), name: "b".into(), ageing_s: 100, gateway: None },
        ];
        let port = |id, net, statics: Vec<EthernetAddress>| PortSpec {
            id: PortId(id),
            name: format!("p{id}"),
            mode: PortMode::Access { network: NetworkId(net) },
            static_macs: statics,
        };
        Topology::new(&nets, &[port(0, 0, statics), port(1, 0, vec![]), port(2, 1, vec![])], 8).unwrap()
    }

    fn ev(net: u16, m: u8, port: u16) -> LearnEvent {
        LearnEvent { network: NetworkId(net), mac: mac(m), port: PortId(port), peer: LOCAL }
    }

    fn sorted(f: &Fdb) -> Vec<(NetworkId, EthernetAddress, FdbEntry)> {
        let mut v: Vec<_> = f.iter().collect();
        v.sort_by_key(|(n, m, _)| (*n, m.0));
        v
    }

    /// What a snapshot of `l` must hold: its static entries and its learned ones,
    /// made from scratch (the published table is kept up to date change by change).
    fn from_scratch(l: &Learner) -> Vec<(NetworkId, EthernetAddress, FdbEntry)> {
        let f = Fdb {
            map: l.statics.iter().chain(l.learned.iter()).map(|(k, e)| (*k, *e)).collect(),
            ageing: l.ageing.clone(),
        };
        sorted(&f)
    }

    proptest::proptest! {
        /// Ports coming and going a burst at a time, with MACs learned in between (some
        /// of them a port's static MAC, some claimed by two ports): the incremental sync
        /// leaves the table the whole sync leaves.
        #[test]
        fn sync_ports_agrees_with_sync_topology(
            bursts in proptest::collection::vec((
                proptest::collection::vec((0u16..12, 0u16..3, 0u8..6, proptest::bool::ANY), 1..4),
                proptest::collection::vec((0u16..2, 0u8..8, 0u16..12), 0..4),
            ), 1..30)
        ) {
            let nets = [
                NetworkSpec { id: NetworkId(0), name: "a".into(), ageing_s: 10, gateway: None },
                NetworkSpec { id: NetworkId(1), name: "b".into(), ageing_s: 10, gateway: None },
            ];
            let spec = |id: u16, n: u16, m: u8| PortSpec {
                id: PortId(id),
                name: format!("p{id}"),
                mode: match n {
                    2 => PortMode::Trunk { vlans: vec![(crate::wire::VlanId::new(9).unwrap(), NetworkId(1))], native: Some(NetworkId(0)) },
                    n => PortMode::Access { network: NetworkId(n) },
                },
                static_macs: if m == 0 { vec![] } else { vec![mac(m)] },
            };
            let mut have: std::collections::BTreeMap<u16, PortSpec> = Default::default();
            let mut t = Topology::new(&nets, &[], 16).unwrap();
            let (mut inc, mut whole) = (Learner::new(64), Learner::new(64));
            for (ports, learns) in bursts {
                for (net, m, port) in learns {
                    let e = LearnEvent { network: NetworkId(net), mac: mac(m), port: PortId(port), peer: LOCAL };
                    proptest::prop_assert_eq!(inc.learn(e, 0, &t), whole.learn(e, 0, &t));
                }
                proptest::prop_assert_eq!(sorted(&inc.build()), from_scratch(&inc));
                let (mut removed, mut added) = (vec![], vec![]);
                for (id, n, m, put) in ports {
                    if removed.contains(&PortId(id)) || added.iter().any(|a: &PortSpec| a.id.0 == id) {
                        continue;
                    }
                    if have.contains_key(&id) {
                        removed.push(PortId(id));
                        have.remove(&id);
                    }
                    if put {
                        added.push(spec(id, n, m));
                        have.insert(id, spec(id, n, m));
                    }
                }
                let next = t.with_ports(&removed, &added, 16).unwrap();
                let changed: Vec<PortId> = removed.iter().copied().chain(added.iter().map(|a| a.id)).collect();
                inc.sync_ports(&t, &next, &changed);
                whole.sync_topology(&next);
                t = next;
                proptest::prop_assert_eq!(sorted(&inc.build()), sorted(&whole.build()));
                proptest::prop_assert_eq!(sorted(&inc.build()), from_scratch(&inc));
            }
        }
    }

    #[test]
    fn learn_move_and_lookup() {
        let t = topo(vec![]);
        let mut l = Learner::new(16);
        assert!(l.apply(ev(0, 1, 0), 0));
        assert!(!l.apply(ev(0, 1, 0), 1), "same port: no change");
        let fdb = l.build();
        assert_eq!(fdb.lookup(NetworkId(0), mac(1)).unwrap().port, PortId(0));
        assert!(fdb.lookup(NetworkId(1), mac(1)).is_none(), "networks are separate tables");
        assert!(l.apply(ev(0, 1, 1), 2), "moved");
        assert_eq!(l.build().lookup(NetworkId(0), mac(1)).unwrap().port, PortId(1));
        assert_eq!(fdb.lookup(NetworkId(0), mac(1)).unwrap().port, PortId(0), "an older snapshot keeps its entry");
        assert_eq!(l.moves, 1);
        assert!(!l.age(5, &t));
    }

    #[test]
    fn ageing_follows_the_network_and_touches_refresh() {
        let t = topo(vec![]);
        let mut l = Learner::new(16);
        l.apply(ev(0, 1, 0), 0);
        l.apply(ev(1, 2, 2), 0);
        let fdb = l.build();
        fdb.touch(fdb.lookup(NetworkId(0), mac(1)).unwrap(), 8); // a worker saw it at 8 s
        assert!(!l.age(15, &t), "seen at 8, ageing 10: alive at 15");
        assert!(l.age(18, &t), "expired at 18");
        assert!(fdb.lookup(NetworkId(0), mac(1)).is_some(), "an older snapshot keeps its entry");
        let fdb = l.build();
        assert_eq!(sorted(&fdb), from_scratch(&l));
        assert!(fdb.lookup(NetworkId(0), mac(1)).is_none());
        assert!(fdb.lookup(NetworkId(1), mac(2)).is_some(), "network b ages after 100 s");
    }

    #[test]
    fn statics_never_move_or_age_and_capacity_is_bounded() {
        let t = topo(vec![mac(9)]);
        let mut l = Learner::new(2);
        assert!(l.sync_topology(&t));
        assert!(!l.apply(ev(0, 9, 1), 0), "a static MAC is not learned elsewhere");
        assert!(l.build().lookup(NetworkId(0), mac(9)).unwrap().is_static());
        l.apply(ev(0, 1, 0), 0);
        l.apply(ev(0, 2, 0), 0);
        assert!(!l.apply(ev(0, 3, 0), 0), "full");
        assert_eq!(l.full_drops, 1);
        assert!(l.age(1000, &t));
        assert_eq!(l.build().len(), 1, "only the static entry is left");
        assert!(l.apply(ev(0, 3, 0), 1000), "slots were freed");
    }

    #[test]
    fn remote_entries_follow_their_peer_and_vni() {
        use super::super::tunnel::{L2Vni, PeerSpec, Tunnel, TunnelMode, TunnelSpec};
        let peer = |a: &str| PeerSpec {
            name: a.into(),
            underlay: a.parse().unwrap(),
            vtep_mac: EthernetAddress([2, 0, 0, 0, 0xcc, 2]),
            next_hop: None,
        };
        let local = TunnelSpec {
            uplink: PortId(7),
            mode: TunnelMode::Vxlan,
            uplink_mac: EthernetAddress([2, 0, 0, 0, 0xee, 1]),
            uplink_mtu: 1500,
            vtep_mac: EthernetAddress([2, 0, 0, 0, 0xcc, 1]),
            local4: Some("198.19.0.1".parse().unwrap()),
            local6: None,
            udp_port: 4789,
            vni: 1,
            network: NetworkId(0),
        };
        let tunnel = |addrs: &[&str], carried: &[u16]| {
            let peers: Vec<PeerSpec> = addrs.iter().map(|a| peer(a)).collect();
            let l2 = L2Vni { vni: 100, network: NetworkId(1), peers: carried.into() };
            Tunnel::new(local.clone(), &peers).unwrap().with_l2(vec![l2]).unwrap()
        };
        let t = topo(vec![]);
        let mut l = Learner::new(8);
        assert!(!l.sync_tunnel(&tunnel(&["198.19.0.2", "198.19.0.3"], &[0, 1])));
        let remote = |m: u8, peer: u16| LearnEvent { network: NetworkId(1), mac: mac(m), port: PortId(7), peer };
        assert!(l.apply(remote(1, 0), 0));
        assert!(l.apply(remote(2, 1), 0));
        assert!(!l.apply(remote(2, 1), 1), "same peer: no change");
        let e = l.build().lookup(NetworkId(1), mac(2)).unwrap();
        assert!(e.is_remote() && e.peer == 1 && e.port == PortId(7));
        assert!(!l.sync_topology(&t), "the uplink is no member of network 1, yet remote entries stay");
        assert!(l.apply(remote(2, 0), 2), "moved to another node");
        assert_eq!(l.build().lookup(NetworkId(1), mac(2)).unwrap().peer, 0);
        assert!(l.sync_tunnel(&tunnel(&["198.19.0.2", "198.19.0.3"], &[1])), "peer 0 left the VNI");
        assert!(l.build().is_empty());
        l.apply(remote(3, 1), 3);
        assert!(l.sync_tunnel(&tunnel(&["198.19.0.2", "198.19.0.4"], &[0, 1])), "index 1 is another node now");
        assert!(l.build().is_empty());
    }

    #[test]
    fn removed_ports_lose_their_learned_entries() {
        let mut l = Learner::new(8);
        l.apply(ev(0, 1, 1), 0);
        let nets = [NetworkSpec { id: NetworkId(0), name: "a".into(), ageing_s: 10, gateway: None }];
        let only_p0 = Topology::new(
            &nets,
            &[PortSpec {
                id: PortId(0),
                name: "p0".into(),
                mode: PortMode::Access { network: NetworkId(0) },
                static_macs: vec![],
            }],
            8,
        )
        .unwrap();
        assert!(l.sync_topology(&only_p0));
        assert!(l.build().is_empty());
    }
}
