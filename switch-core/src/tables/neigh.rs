//! Neighbours: (network, IP) → MAC, for routed packets' next hops.
//!
//! The workers read the published [`Neighbours`] snapshot. When a routed packet's next
//! hop is missing, the worker parks the packet (see `pipeline::Pending`) and sends a
//! [`NeighEvent::Miss`] to control; ARP replies, neighbour advertisements and requests
//! addressed to a gateway come back as [`NeighEvent::Seen`]. The [`Resolver`] on the
//! control thread owns every entry's state, as Linux's neighbour table does:
//!
//! ```text
//!  miss ──▶ INCOMPLETE ──reply──▶ REACHABLE ──reachable time──▶ PROBE ──reply──▶ REACHABLE
//!            │ (broadcast request     (published)                 (unicast requests,
//!            │  every retry interval)                              still published)
//!            └─ no reply after the retries ─▶ FAILED (published, held) ─▶ removed
//!                                               PROBE without reply ─▶ removed
//! ```
//!
//! It asks a worker to send each request ([`Emit`]), since only workers own frames and
//! sockets. Static entries (a pod's configured address and MAC) never change; they
//! are kept in shards that every snapshot shares ([`Sharded`]), so a pod attached
//! among thousands copies one shard.

use super::sharded::{mix, ShardKey, Sharded};
use super::topology::NetworkId;
use crate::wire::EthernetAddress;
use rustc_hash::FxHashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

/// A neighbour's key: network and address (IPv4 as IPv4-mapped IPv6, so one table
/// holds both families).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NeighKey {
    /// Network id.
    pub network: u16,
    /// Address bits.
    pub ip: u128,
}

impl ShardKey for NeighKey {
    #[inline(always)]
    fn shard_hash(&self) -> u64 {
        mix((self.ip as u64) ^ ((self.ip >> 64) as u64).rotate_left(17) ^ u64::from(self.network) << 40)
    }
}

impl NeighKey {
    /// An IPv4 neighbour.
    #[inline]
    pub fn v4(network: NetworkId, a: Ipv4Addr) -> NeighKey {
        NeighKey { network: network.0, ip: 0xffff_0000_0000 | u128::from(u32::from(a)) }
    }

    /// An IPv6 neighbour.
    #[inline]
    pub fn v6(network: NetworkId, a: Ipv6Addr) -> NeighKey {
        NeighKey { network: network.0, ip: u128::from(a) }
    }

    /// Either family.
    pub fn new(network: NetworkId, a: IpAddr) -> NeighKey {
        match a {
            IpAddr::V4(a) => NeighKey::v4(network, a),
            IpAddr::V6(a) => NeighKey::v6(network, a),
        }
    }

    /// The address.
    pub fn ip(&self) -> IpAddr {
        Ipv6Addr::from(self.ip).to_canonical()
    }

    /// True for an IPv4 neighbour.
    pub fn is_v4(&self) -> bool {
        self.ip >> 32 == 0xffff
    }
}

/// What a worker may do with a next hop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NeighState {
    /// Send to this MAC.
    Reachable(EthernetAddress),
    /// Resolution failed: drop and report the host unreachable.
    Failed,
}

/// The published neighbour table: the static entries, shared in shards with the
/// resolver and the snapshots before it (a pod's attachment copies one shard, not every
/// pod's entry), and the resolved ones, few, made anew for each snapshot. The two never
/// share a key.
#[derive(Debug, Default, Clone)]
pub struct Neighbours {
    statics: Sharded<NeighKey, NeighState>,
    resolved: FxHashMap<NeighKey, NeighState>,
}

impl Neighbours {
    /// No neighbours.
    pub fn empty() -> Neighbours {
        Neighbours::default()
    }

    /// The state of `key`, if the table has an entry.
    #[inline]
    pub fn lookup(&self, key: NeighKey) -> Option<NeighState> {
        self.statics.get(&key).or_else(|| self.resolved.get(&key)).copied()
    }

    /// Entries.
    pub fn len(&self) -> usize {
        self.statics.len() + self.resolved.len()
    }

    /// True if there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every entry.
    pub fn iter(&self) -> impl Iterator<Item = (&NeighKey, &NeighState)> {
        self.statics.iter().chain(self.resolved.iter())
    }
}

/// What workers tell control about neighbours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NeighEvent {
    /// A routed packet waits for this neighbour.
    Miss(NeighKey),
    /// The neighbour said it has this MAC (ARP or neighbour discovery to a gateway).
    Seen(NeighKey, EthernetAddress),
}

/// What control asks a worker to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Emit {
    /// An ARP request or neighbour solicitation for `key`: broadcast/multicast when
    /// `unicast` is None, else to that MAC (a reachability probe).
    Solicit {
        /// Who.
        key: NeighKey,
        /// Probe this MAC.
        unicast: Option<EthernetAddress>,
    },
    /// An unsolicited router advertisement on the network.
    RouterAdvert(NetworkId),
}

/// Resolution timers and limits.
#[derive(Debug, Clone, Copy)]
pub struct NeighConfig {
    /// Requests per resolution (and per probe) before giving up.
    pub retries: u32,
    /// Between requests.
    pub retry: Duration,
    /// How long an answer is trusted before it is probed again.
    pub reachable: Duration,
    /// How long a failed entry is kept (packets to it are refused at once) before a new
    /// packet may start a new resolution.
    pub failed_hold: Duration,
    /// Entries at most; misses beyond are refused (counted).
    pub capacity: usize,
}

impl Default for NeighConfig {
    fn default() -> Self {
        NeighConfig {
            retries: 3,
            retry: Duration::from_secs(1),
            reachable: Duration::from_secs(30),
            failed_hold: Duration::from_secs(3),
            capacity: 65536,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Incomplete { tries: u32, next: Instant },
    Reachable { until: Instant },
    Probe { tries: u32, next: Instant },
    Failed { until: Instant },
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    mac: Option<EthernetAddress>,
    phase: Phase,
}

/// A neighbour as the API shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NeighInfo {
    /// Network and address.
    pub key: NeighKey,
    /// MAC, once known.
    pub mac: Option<EthernetAddress>,
    /// "incomplete", "reachable", "probe", "failed" or "static".
    pub state: &'static str,
}

/// Counters of the resolver.
#[derive(Debug, Clone, Copy, Default)]
pub struct ResolverStats {
    /// Requests asked of workers.
    pub requests: u64,
    /// Resolutions that failed.
    pub failed: u64,
    /// Entries removed after a probe went unanswered.
    pub expired: u64,
    /// Misses refused because the table was full.
    pub full: u64,
}

/// The control thread's neighbour state machine (see the module docs).
#[derive(Debug)]
pub struct Resolver {
    cfg: NeighConfig,
    /// Entries being resolved or resolved (never a static one).
    entries: FxHashMap<NeighKey, Entry>,
    /// Static entries, as published: kept apart so that publishing shares them (a pod
    /// per port makes them the bulk) and the timers never visit them.
    statics: Sharded<NeighKey, NeighState>,
    /// Counters.
    pub stats: ResolverStats,
}

impl Resolver {
    /// An empty table.
    pub fn new(cfg: NeighConfig) -> Resolver {
        Resolver { cfg, entries: FxHashMap::default(), statics: Sharded::default(), stats: ResolverStats::default() }
    }

    /// Installs a static entry (replacing any learned one). Returns true (the snapshot
    /// changes).
    pub fn set_static(&mut self, key: NeighKey, mac: EthernetAddress) -> bool {
        self.entries.remove(&key);
        self.statics.insert(key, NeighState::Reachable(mac));
        true
    }

    /// Removes the static entries `removed`, then installs `added` (replacing any
    /// learned ones): a pod's port gone and another come, without visiting the other
    /// statics. Returns true if the published table changes.
    pub fn patch_statics(&mut self, removed: &[NeighKey], added: &[(NeighKey, EthernetAddress)]) -> bool {
        let mut changed = false;
        for k in removed {
            changed |= self.statics.remove(k).is_some();
        }
        for (k, mac) in added {
            if self.statics.get(k) != Some(&NeighState::Reachable(*mac)) || self.entries.contains_key(k) {
                changed |= self.set_static(*k, *mac);
            }
        }
        changed
    }

    fn len(&self) -> usize {
        self.entries.len() + self.statics.len()
    }

    /// Makes `statics` the whole set of static entries: ones not listed any more are
    /// removed (the address is resolved again if traffic needs it). Returns true if the
    /// published table changes.
    pub fn set_statics(&mut self, statics: &[(NeighKey, EthernetAddress)]) -> bool {
        let want: Sharded<NeighKey, NeighState> =
            statics.iter().map(|(k, mac)| (*k, NeighState::Reachable(*mac))).collect();
        let before = self.entries.len();
        self.entries.retain(|k, _| !want.contains_key(k));
        let changed = self.entries.len() != before || want != self.statics;
        self.statics = want;
        changed
    }

    /// A worker waits for `key`: starts resolving it unless that is under way. Returns
    /// the first request to send.
    pub fn miss(&mut self, key: NeighKey, now: Instant) -> Option<Emit> {
        if self.entries.contains_key(&key) || self.statics.contains_key(&key) {
            return None;
        }
        if self.len() >= self.cfg.capacity {
            self.stats.full += 1;
            return None;
        }
        self.entries
            .insert(key, Entry { mac: None, phase: Phase::Incomplete { tries: 1, next: now + self.cfg.retry } });
        self.stats.requests += 1;
        Some(Emit::Solicit { key, unicast: None })
    }

    /// The neighbour announced `mac`. Returns true if the published table changes.
    pub fn seen(&mut self, key: NeighKey, mac: EthernetAddress, now: Instant) -> bool {
        let until = now + self.cfg.reachable;
        if self.statics.contains_key(&key) {
            return false;
        }
        let full = self.len() >= self.cfg.capacity;
        match self.entries.get_mut(&key) {
            Some(e) => {
                let was_published = matches!(e.phase, Phase::Reachable { .. } | Phase::Probe { .. });
                let changed = !was_published || e.mac != Some(mac);
                *e = Entry { mac: Some(mac), phase: Phase::Reachable { until } };
                changed
            }
            None if full => {
                self.stats.full += 1;
                false
            }
            None => {
                self.entries.insert(key, Entry { mac: Some(mac), phase: Phase::Reachable { until } });
                true
            }
        }
    }

    /// Runs the timers: requests to send go to `emit`. Returns true if the published
    /// table changes.
    pub fn tick(&mut self, now: Instant, emit: &mut Vec<Emit>) -> bool {
        let mut changed = false;
        let cfg = self.cfg;
        let stats = &mut self.stats;
        self.entries.retain(|key, e| {
            match e.phase {
                Phase::Incomplete { tries, next } if now >= next => {
                    if tries >= cfg.retries {
                        e.phase = Phase::Failed { until: now + cfg.failed_hold };
                        stats.failed += 1;
                        changed = true;
                    } else {
                        e.phase = Phase::Incomplete { tries: tries + 1, next: now + cfg.retry };
                        stats.requests += 1;
                        emit.push(Emit::Solicit { key: *key, unicast: None });
                    }
                }
                Phase::Reachable { until } if now >= until => {
                    e.phase = Phase::Probe { tries: 1, next: now + cfg.retry };
                    stats.requests += 1;
                    emit.push(Emit::Solicit { key: *key, unicast: e.mac });
                }
                Phase::Probe { tries, next } if now >= next => {
                    if tries >= cfg.retries {
                        stats.expired += 1;
                        changed = true;
                        return false;
                    }
                    e.phase = Phase::Probe { tries: tries + 1, next: now + cfg.retry };
                    stats.requests += 1;
                    emit.push(Emit::Solicit { key: *key, unicast: e.mac });
                }
                Phase::Failed { until } if now >= until => {
                    changed = true;
                    return false;
                }
                _ => {}
            }
            true
        });
        changed
    }

    /// The snapshot for workers.
    pub fn build(&self) -> Neighbours {
        // The statics' shards shared, then the resolved entries.
        let mut resolved = FxHashMap::default();
        resolved.reserve(self.entries.len());
        for (k, e) in &self.entries {
            match (e.phase, e.mac) {
                (Phase::Reachable { .. } | Phase::Probe { .. }, Some(mac)) => {
                    resolved.insert(*k, NeighState::Reachable(mac));
                }
                (Phase::Failed { .. }, _) => {
                    resolved.insert(*k, NeighState::Failed);
                }
                _ => {}
            }
        }
        Neighbours { statics: self.statics.clone(), resolved }
    }

    /// Every entry, sorted by key.
    pub fn list(&self) -> Vec<NeighInfo> {
        let mut v: Vec<_> = self
            .entries
            .iter()
            .map(|(k, e)| NeighInfo {
                key: *k,
                mac: e.mac,
                state: match e.phase {
                    Phase::Incomplete { .. } => "incomplete",
                    Phase::Reachable { .. } => "reachable",
                    Phase::Probe { .. } => "probe",
                    Phase::Failed { .. } => "failed",
                },
            })
            .collect();
        v.extend(self.statics.iter().map(|(k, s)| NeighInfo {
            key: *k,
            mac: match s {
                NeighState::Reachable(mac) => Some(*mac),
                NeighState::Failed => None,
            },
            state: "static",
        }));
        v.sort_by_key(|i| i.key);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pod's port patched among 1,000: the new snapshot shares all but the shards
    /// the change touched with the one before, and that one keeps what it had.
    #[test]
    fn patched_statics_share_the_rest_with_the_last_snapshot() {
        let mut r = Resolver::new(NeighConfig::default());
        let key = |h: u32| NeighKey::v4(NetworkId(1), Ipv4Addr::from(0xc612_0000 + h));
        let mac = |h: u32| EthernetAddress([2, 0, 0, 0, (h >> 8) as u8, h as u8]);
        r.set_statics(&(0..1000).map(|h| (key(h), mac(h))).collect::<Vec<_>>());
        let before = r.build();
        assert!(r.patch_statics(&[key(7)], &[(key(2000), mac(2000))]));
        let after = r.build();
        assert!(after.statics.shards_shared_with(&before.statics) >= 62, "at most two shards copied");
        assert_eq!(before.lookup(key(7)), Some(NeighState::Reachable(mac(7))));
        assert_eq!(before.lookup(key(2000)), None);
        assert_eq!(after.lookup(key(7)), None);
        assert_eq!(after.lookup(key(2000)), Some(NeighState::Reachable(mac(2000))));
        assert_eq!((before.len(), after.len()), (1000, 1000));
    }

    fn cfg() -> NeighConfig {
        NeighConfig {
            retries: 3,
            retry: Duration::from_secs(1),
            reachable: Duration::from_secs(30),
            failed_hold: Duration::from_secs(3),
            capacity: 2,
        }
    }

    const MAC: EthernetAddress = EthernetAddress([2, 0, 0, 0, 0, 7]);

    #[test]
    fn keys_keep_families_apart() {
        let k4 = NeighKey::v4(NetworkId(1), Ipv4Addr::new(198, 18, 0, 1));
        assert!(k4.is_v4());
        assert_eq!(k4.ip(), IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1)));
        let k6 = NeighKey::v6(NetworkId(1), "2001:db8::1".parse().unwrap());
        assert!(!k6.is_v4());
        assert_ne!(k4, NeighKey::v4(NetworkId(2), Ipv4Addr::new(198, 18, 0, 1)));
    }

    #[test]
    fn unanswered_resolution_retries_then_fails_then_goes() {
        let mut r = Resolver::new(cfg());
        let t0 = Instant::now();
        let k = NeighKey::v4(NetworkId(0), Ipv4Addr::new(198, 18, 0, 9));
        assert_eq!(r.miss(k, t0), Some(Emit::Solicit { key: k, unicast: None }));
        assert_eq!(r.miss(k, t0), None, "one resolution at a time");
        assert!(r.build().lookup(k).is_none(), "incomplete entries are not published");
        let mut out = Vec::new();
        assert!(!r.tick(t0 + Duration::from_millis(500), &mut out));
        assert!(out.is_empty());
        assert!(!r.tick(t0 + Duration::from_secs(1), &mut out));
        assert!(!r.tick(t0 + Duration::from_secs(2), &mut out));
        assert_eq!(out.len(), 2, "three requests in all");
        assert!(r.tick(t0 + Duration::from_secs(3), &mut out));
        assert_eq!(r.build().lookup(k), Some(NeighState::Failed));
        assert_eq!(r.stats.failed, 1);
        assert_eq!(r.miss(k, t0 + Duration::from_secs(4)), None, "failed entries are held");
        assert!(r.tick(t0 + Duration::from_secs(6), &mut out));
        assert!(r.build().is_empty());
        assert!(r.miss(k, t0 + Duration::from_secs(6)).is_some(), "and then retried");
    }

    #[test]
    fn answers_publish_and_are_probed_then_expire() {
        let mut r = Resolver::new(cfg());
        let t0 = Instant::now();
        let k = NeighKey::v6(NetworkId(0), "2001:db8::9".parse().unwrap());
        r.miss(k, t0);
        assert!(r.seen(k, MAC, t0));
        assert!(!r.seen(k, MAC, t0), "the same answer changes nothing");
        assert_eq!(r.build().lookup(k), Some(NeighState::Reachable(MAC)));
        let mut out = Vec::new();
        assert!(!r.tick(t0 + Duration::from_secs(30), &mut out));
        assert_eq!(out, vec![Emit::Solicit { key: k, unicast: Some(MAC) }], "unicast probe");
        assert_eq!(r.build().lookup(k), Some(NeighState::Reachable(MAC)), "still used while probed");
        r.tick(t0 + Duration::from_secs(31), &mut out);
        r.tick(t0 + Duration::from_secs(32), &mut out);
        assert!(r.tick(t0 + Duration::from_secs(33), &mut out));
        assert!(r.build().is_empty());
        assert_eq!(r.stats.expired, 1);
    }

    #[test]
    fn static_entries_stay_and_capacity_is_bounded() {
        let mut r = Resolver::new(cfg());
        let t0 = Instant::now();
        let k = |i| NeighKey::v4(NetworkId(0), Ipv4Addr::new(198, 18, 0, i));
        r.set_static(k(1), MAC);
        assert!(!r.seen(k(1), EthernetAddress([2, 0, 0, 0, 0, 8]), t0));
        assert!(r.miss(k(2), t0).is_some());
        assert!(r.miss(k(3), t0).is_none());
        assert_eq!(r.stats.full, 1);
        let mut out = Vec::new();
        r.tick(t0 + Duration::from_secs(100), &mut out);
        assert_eq!(r.build().lookup(k(1)), Some(NeighState::Reachable(MAC)));
        assert_eq!(r.list()[0].state, "static");
    }

    #[test]
    fn set_statics_replaces_the_static_set_only() {
        let mut r = Resolver::new(NeighConfig { capacity: 8, ..cfg() });
        let t0 = Instant::now();
        let k = |i| NeighKey::v4(NetworkId(0), Ipv4Addr::new(198, 18, 0, i));
        assert!(r.set_statics(&[(k(1), MAC), (k(2), MAC)]));
        assert!(r.seen(k(3), MAC, t0), "a learned entry");
        assert!(!r.set_statics(&[(k(1), MAC), (k(2), MAC)]), "the same set changes nothing");
        assert!(r.set_statics(&[(k(2), EthernetAddress([2, 0, 0, 0, 0, 8]))]));
        let n = r.build();
        assert!(n.lookup(k(1)).is_none(), "dropped from the set");
        assert_eq!(n.lookup(k(2)), Some(NeighState::Reachable(EthernetAddress([2, 0, 0, 0, 0, 8]))));
        assert_eq!(n.lookup(k(3)), Some(NeighState::Reachable(MAC)), "learned entries stay");
    }

    #[test]
    fn patching_statics_is_setting_the_patched_set() {
        let other = EthernetAddress([2, 0, 0, 0, 0, 8]);
        let k = |i| NeighKey::v4(NetworkId(0), Ipv4Addr::new(198, 18, 0, i));
        let t0 = Instant::now();
        let big = NeighConfig { capacity: 8, ..cfg() };
        let (mut patched, mut whole) = (Resolver::new(big), Resolver::new(big));
        for r in [&mut patched, &mut whole] {
            r.set_statics(&[(k(1), MAC), (k(2), MAC)]);
            assert!(r.seen(k(3), MAC, t0), "a learned entry");
        }
        assert!(patched.patch_statics(&[k(1)], &[(k(3), other), (k(4), MAC)]));
        assert!(whole.set_statics(&[(k(2), MAC), (k(3), other), (k(4), MAC)]));
        let (p, w) = (patched.build(), whole.build());
        let sorted = |n: &Neighbours| {
            let mut v: Vec<_> = n.iter().map(|(k, s)| (*k, *s)).collect();
            v.sort_by_key(|(k, _)| *k);
            v
        };
        assert_eq!(sorted(&p), sorted(&w));
        assert_eq!(p.lookup(k(3)), Some(NeighState::Reachable(other)), "the static replaced the learned entry");
        assert!(p.lookup(k(1)).is_none());
        assert!(!patched.patch_statics(&[], &[(k(4), MAC)]), "the same entry again changes nothing");
        assert!(!patched.seen(k(4), other, t0), "a static entry is not learned over");
        let list = patched.list();
        assert_eq!(list.iter().filter(|i| i.state == "static").count(), 3);
    }
}
