//! Networks (bridge domains) and the ports that belong to them, compiled into arrays a
//! worker indexes directly.

use super::fib::{Ipv4Prefix, Ipv6Prefix};
use crate::wire::{EthernetAddress, VlanId};
use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

/// A network's dense index, the same on every worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NetworkId(pub u16);

/// A port's dense index, the same on every worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortId(pub u16);

/// How a port joins networks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortMode {
    /// Untagged frames, one network.
    Access {
        /// The network.
        network: NetworkId,
    },
    /// 802.1Q tagged frames, one network per VLAN, and optionally untagged frames for a
    /// native network.
    Trunk {
        /// VLAN to network.
        vlans: Vec<(VlanId, NetworkId)>,
        /// Network of untagged frames.
        native: Option<NetworkId>,
    },
    /// The node's NIC: in no network. What arrives is underlay traffic for the tunnel
    /// stage; what leaves was encapsulated or routed to a remote node.
    Uplink,
}

/// A network as control describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkSpec {
    /// Dense id.
    pub id: NetworkId,
    /// Name, for people.
    pub name: String,
    /// Learned MACs expire after this many seconds without traffic.
    pub ageing_s: u32,
    /// The network's routing interface, if it routes.
    pub gateway: Option<Gateway>,
}

/// A network's integrated routing interface: one MAC, an address in each family it
/// routes, and whether it sends router advertisements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gateway {
    /// The gateway's MAC, for both families.
    pub mac: EthernetAddress,
    /// IPv4 address and the length of the network's subnet.
    pub v4: Option<(Ipv4Addr, u8)>,
    /// IPv6 address and the length of the network's subnet.
    pub v6: Option<(Ipv6Addr, u8)>,
    /// Send router advertisements (periodically and in answer to solicitations).
    pub router_advertisements: bool,
}

impl Gateway {
    /// The IPv4 subnet (connected route).
    pub fn subnet4(&self) -> Option<Ipv4Prefix> {
        let (a, len) = self.v4?;
        let mask = if len == 0 { 0 } else { u32::MAX << (32 - u32::from(len)) };
        Ipv4Prefix::new(Ipv4Addr::from(u32::from(a) & mask), len).ok()
    }

    /// The IPv6 subnet (connected route).
    pub fn subnet6(&self) -> Option<Ipv6Prefix> {
        let (a, len) = self.v6?;
        let mask = if len == 0 { 0 } else { u128::MAX << (128 - u32::from(len)) };
        Ipv6Prefix::new(Ipv6Addr::from(u128::from(a) & mask), len).ok()
    }

    /// The link-local address (fe80::/64 with the MAC's modified EUI-64), which router
    /// advertisements come from and neighbour solicitation answers for.
    pub fn link_local(&self) -> Ipv6Addr {
        let m = self.mac.0;
        Ipv6Addr::from([0xfe, 0x80, 0, 0, 0, 0, 0, 0, m[0] ^ 2, m[1], m[2], 0xff, 0xfe, m[3], m[4], m[5]])
    }

    /// True if `a` is one of the gateway's IPv6 addresses.
    pub fn owns6(&self, a: &Ipv6Addr) -> bool {
        self.v6.is_some_and(|(g, _)| g == *a) || (self.v6.is_some() && *a == self.link_local())
    }

    fn check(&self, network: &str) -> Result<(), TopologyError> {
        let bad = |reason: String| Err(TopologyError::BadGateway { network: network.into(), reason });
        if !self.mac.is_unicast() || self.mac.0 == [0; 6] {
            return bad(format!("MAC {} is not a unicast address", self.mac));
        }
        if let Some((a, len)) = self.v4 {
            let s = self.subnet4().map(|s| s.addr());
            if !(8..=30).contains(&len) {
                return bad(format!("IPv4 subnet length /{len} must be between /8 and /30"));
            }
            let broadcast = Ipv4Addr::from(u32::from(a) | (u32::MAX >> len));
            if Some(a) == s || a == broadcast || a.is_multicast() || a.is_unspecified() {
                return bad(format!("{a}/{len} is not a host address of its subnet"));
            }
        }
        if let Some((a, len)) = self.v6 {
            if !(16..=126).contains(&len) {
                return bad(format!("IPv6 subnet length /{len} must be between /16 and /126"));
            }
            if a.is_multicast() || a.is_unspecified() || Some(a) == self.subnet6().map(|s| s.addr()) {
                return bad(format!("{a}/{len} is not a host address of its subnet"));
            }
        }
        if self.v4.is_none() && self.v6.is_none() {
            return bad("it has no address: give it an IPv4 or IPv6 address (or both)".into());
        }
        Ok(())
    }
}

/// A port as control describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortSpec {
    /// Dense id.
    pub id: PortId,
    /// Name (the interface, for AF_XDP ports).
    pub name: String,
    /// Access or trunk.
    pub mode: PortMode,
    /// MACs known to be behind this port (a pod's own address): installed in the FDB,
    /// never aged, never moved by learning.
    pub static_macs: Vec<EthernetAddress>,
}

/// Marks "not a member" in the per-port egress array.
pub const NOT_MEMBER: u16 = u16::MAX;
/// Marks "member, untagged" in the per-port egress array.
pub const UNTAGGED: u16 = 0;

/// A port, compiled.
#[derive(Debug, Clone)]
pub struct PortEntry {
    /// The spec it came from.
    pub spec: PortSpec,
    /// Network of untagged frames, or `NOT_MEMBER`.
    pub untagged: u16,
    /// VLAN id → network, or `NOT_MEMBER` (empty for access ports).
    pub vid_to_network: Box<[u16]>,
    /// Network id → how frames leave: `NOT_MEMBER`, `UNTAGGED`, or the VLAN id.
    pub egress: Box<[u16]>,
}

/// A network, compiled.
#[derive(Debug, Clone)]
pub struct NetworkEntry {
    /// The spec.
    pub spec: NetworkSpec,
    /// Ports that get its broadcast, multicast and unknown unicast, by id (shared
    /// between snapshots until a member comes or goes).
    pub flood: Arc<[PortId]>,
    /// The gateway MAC as [`EthernetAddress::to_u64`], or `NO_GATEWAY`.
    pub gw_mac: u64,
    /// The IPv4 subnet's broadcast address, or 0.0.0.0 without one.
    pub gw_broadcast4: Ipv4Addr,
}

/// `gw_mac` of a network without a gateway (no MAC has this value: MACs are 48 bits).
pub const NO_GATEWAY: u64 = u64::MAX;

/// A topology that cannot be built, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopologyError {
    /// Two networks or ports share an id or name.
    #[error("duplicate {kind} {name:?}: names and ids must be unique")]
    Duplicate {
        /// "network" or "port".
        kind: &'static str,
        /// The name.
        name: String,
    },
    /// A port names a network that does not exist.
    #[error("port {port:?} refers to network id {network} which does not exist")]
    UnknownNetwork {
        /// Port name.
        port: String,
        /// The id.
        network: u16,
    },
    /// A trunk maps one VLAN twice, or one network to two VLANs.
    #[error("port {port:?}: {reason}")]
    BadTrunk {
        /// Port name.
        port: String,
        /// What is wrong.
        reason: String,
    },
    /// A gateway that cannot work.
    #[error("network {network:?}: gateway {reason}")]
    BadGateway {
        /// Network name.
        network: String,
        /// What is wrong.
        reason: String,
    },
    /// Ids must be dense and below the limit.
    #[error("{kind} id {id} is out of range (at most {max})")]
    IdOutOfRange {
        /// "network" or "port".
        kind: &'static str,
        /// The id.
        id: u16,
        /// The limit.
        max: u16,
    },
}

/// Two networks' gateway subnets may not overlap: a destination would belong to both.
/// Sorted by first address, a subnet overlaps an earlier one iff it starts before the
/// furthest end seen so far.
fn check_overlaps(networks: &[NetworkSpec]) -> Result<(), TopologyError> {
    let mut spans: Vec<(u128, u128, bool, &str)> = Vec::new();
    for n in networks {
        let Some(g) = &n.gateway else { continue };
        if let Some(p) = g.subnet4() {
            let start = u128::from(u32::from(p.addr()));
            spans.push((
                start,
                start | u128::from(u32::MAX.checked_shr(u32::from(p.len())).unwrap_or(0)),
                true,
                &n.name,
            ));
        }
        if let Some(p) = g.subnet6() {
            let start = u128::from(p.addr());
            spans.push((start, start | u128::MAX.checked_shr(u32::from(p.len())).unwrap_or(0), false, &n.name));
        }
    }
    for v4 in [true, false] {
        let mut fam: Vec<_> = spans.iter().filter(|s| s.2 == v4).collect();
        fam.sort_unstable_by_key(|s| (s.0, core::cmp::Reverse(s.1)));
        let mut furthest: Option<(u128, &str)> = None;
        for s in fam {
            if let Some((end, name)) = furthest {
                if s.0 <= end {
                    return Err(TopologyError::BadGateway {
                        network: s.3.to_string(),
                        reason: format!(
                            "subnet overlaps network {name:?}'s {} subnet: give each network its own",
                            if v4 { "IPv4" } else { "IPv6" }
                        ),
                    });
                }
            }
            if furthest.is_none_or(|(end, _)| s.1 > end) {
                furthest = Some((s.1, s.3));
            }
        }
    }
    Ok(())
}

/// Port slots per chunk of [`Topology`]'s port array.
const CHUNK: usize = 64;

/// Networks and ports, indexed by id.
///
/// Port entries live in chunks of [`CHUNK`] slots, each shared between snapshots: a
/// pod's port added or removed ([`Topology::with_ports`]) copies one chunk and the
/// chunk pointers, not every port, so a change costs the same at 10,000 ports as at
/// 10 (about 160 pointers and one chunk, against 10,000 deep copies). A lookup reads
/// the chunk pointer and then the entry: two dependent loads, as an array of pointers
/// to entries would need.
#[derive(Debug, Clone, Default)]
pub struct Topology {
    ports: Box<[Arc<[Option<PortEntry>]>]>,
    networks: Box<[Option<NetworkEntry>]>,
}

/// Largest number of networks (ids 0..MAX_NETWORKS).
pub const MAX_NETWORKS: u16 = 4096;

/// Compiles port `p` against `nets` (the network slots); `max_ports` bounds its id.
fn compile_port(p: &PortSpec, nets: &[Option<NetworkEntry>], max_ports: u16) -> Result<PortEntry, TopologyError> {
    if p.id.0 >= max_ports {
        return Err(TopologyError::IdOutOfRange { kind: "port", id: p.id.0, max: max_ports - 1 });
    }
    let known = |id: NetworkId| -> Result<u16, TopologyError> {
        if nets.get(id.0 as usize).is_some_and(|n| n.is_some()) {
            Ok(id.0)
        } else {
            Err(TopologyError::UnknownNetwork { port: p.name.clone(), network: id.0 })
        }
    };
    let mut egress = vec![NOT_MEMBER; nets.len()].into_boxed_slice();
    let (untagged, vid_to_network) = match &p.mode {
        PortMode::Uplink => (NOT_MEMBER, Box::default()),
        PortMode::Access { network } => {
            let n = known(*network)?;
            egress[n as usize] = UNTAGGED;
            (n, Box::default())
        }
        PortMode::Trunk { vlans, native } => {
            let mut map = vec![NOT_MEMBER; 4096].into_boxed_slice();
            for (vid, net) in vlans {
                let n = known(*net)?;
                if map[vid.get() as usize] != NOT_MEMBER {
                    return Err(TopologyError::BadTrunk {
                        port: p.name.clone(),
                        reason: format!("VLAN {} is mapped twice", vid.get()),
                    });
                }
                if egress[n as usize] != NOT_MEMBER {
                    return Err(TopologyError::BadTrunk {
                        port: p.name.clone(),
                        reason: format!("network id {n} is carried twice"),
                    });
                }
                map[vid.get() as usize] = n;
                egress[n as usize] = vid.get();
            }
            let untagged = match native {
                Some(net) => {
                    let n = known(*net)?;
                    if egress[n as usize] != NOT_MEMBER {
                        return Err(TopologyError::BadTrunk {
                            port: p.name.clone(),
                            reason: format!("native network id {n} is also tagged"),
                        });
                    }
                    egress[n as usize] = UNTAGGED;
                    n
                }
                None => NOT_MEMBER,
            };
            (untagged, map)
        }
    };
    Ok(PortEntry { spec: p.clone(), untagged, vid_to_network, egress })
}

/// The networks `e` is a member of.
fn memberships(e: &PortEntry) -> impl Iterator<Item = usize> + '_ {
    e.egress.iter().enumerate().filter(|(_, x)| **x != NOT_MEMBER).map(|(n, _)| n)
}

impl Topology {
    /// No networks, no ports.
    pub fn empty() -> Topology {
        Topology::default()
    }

    /// Compiles and validates `networks` and `ports`; `max_ports` bounds port ids.
    pub fn new(networks: &[NetworkSpec], ports: &[PortSpec], max_ports: u16) -> Result<Topology, TopologyError> {
        let net_slots = networks.iter().map(|n| n.id.0 as usize + 1).max().unwrap_or(0);
        let mut nets: Vec<Option<NetworkEntry>> = vec![None; net_slots];
        let mut names = HashMap::new();
        for n in networks {
            if n.id.0 >= MAX_NETWORKS {
                return Err(TopologyError::IdOutOfRange { kind: "network", id: n.id.0, max: MAX_NETWORKS - 1 });
            }
            if nets[n.id.0 as usize].is_some() || names.insert(n.name.clone(), ()).is_some() {
                return Err(TopologyError::Duplicate { kind: "network", name: n.name.clone() });
            }
            let gw_mac = match &n.gateway {
                Some(g) => {
                    g.check(&n.name)?;
                    g.mac.to_u64()
                }
                None => NO_GATEWAY,
            };
            let gw_broadcast4 =
                n.gateway.as_ref().and_then(|g| g.subnet4()).map_or(Ipv4Addr::UNSPECIFIED, |s| s.broadcast());
            nets[n.id.0 as usize] = Some(NetworkEntry { spec: n.clone(), flood: Arc::new([]), gw_mac, gw_broadcast4 });
        }
        check_overlaps(networks)?;
        let port_slots = ports.iter().map(|p| p.id.0 as usize + 1).max().unwrap_or(0);
        let mut out: Vec<Option<PortEntry>> = vec![None; port_slots.div_ceil(CHUNK) * CHUNK];
        let mut flood: Vec<Vec<PortId>> = vec![Vec::new(); net_slots];
        let mut pnames = HashMap::new();
        for p in ports {
            let e = compile_port(p, &nets, max_ports)?;
            if out[p.id.0 as usize].is_some() || pnames.insert(p.name.clone(), ()).is_some() {
                return Err(TopologyError::Duplicate { kind: "port", name: p.name.clone() });
            }
            for net in memberships(&e) {
                flood[net].push(p.id);
            }
            out[p.id.0 as usize] = Some(e);
        }
        for (i, n) in nets.iter_mut().enumerate() {
            if let Some(n) = n {
                let mut f = core::mem::take(&mut flood[i]);
                f.sort_unstable();
                n.flood = f.into();
            }
        }
        let ports = out.chunks(CHUNK).map(Arc::from).collect();
        Ok(Topology { ports, networks: nets.into_boxed_slice() })
    }

    /// This topology with the ports `removed` taken out and then `added` put in (the
    /// networks stay as they are): what a pod's attachment or detachment changes,
    /// without compiling every other port again. Ports are checked as [`Topology::new`]
    /// checks them, except that names are not compared: the caller keeps them unique
    /// (control's state is keyed by name).
    pub fn with_ports(
        &self,
        removed: &[PortId],
        added: &[PortSpec],
        max_ports: u16,
    ) -> Result<Topology, TopologyError> {
        let mut chunks: Vec<Arc<[Option<PortEntry>]>> = self.ports.to_vec();
        let mut gone: Vec<(usize, PortId)> = Vec::new();
        for id in removed {
            let (c, i) = (id.0 as usize / CHUNK, id.0 as usize % CHUNK);
            if chunks.get(c).is_some_and(|ch| ch[i].is_some()) {
                if let Some(e) = Arc::make_mut(&mut chunks[c])[i].take() {
                    gone.extend(memberships(&e).map(|n| (n, *id)));
                }
            }
        }
        let mut joined: Vec<(usize, PortId)> = Vec::new();
        for p in added {
            let e = compile_port(p, &self.networks, max_ports)?;
            let (c, i) = (p.id.0 as usize / CHUNK, p.id.0 as usize % CHUNK);
            while chunks.len() <= c {
                chunks.push(vec![None; CHUNK].into());
            }
            let slot = &mut Arc::make_mut(&mut chunks[c])[i];
            if slot.is_some() {
                return Err(TopologyError::Duplicate { kind: "port", name: p.name.clone() });
            }
            joined.extend(memberships(&e).map(|n| (n, p.id)));
            *slot = Some(e);
        }
        let mut networks = self.networks.clone();
        let mut touched: Vec<usize> = gone.iter().chain(&joined).map(|(n, _)| *n).collect();
        touched.sort_unstable();
        touched.dedup();
        for n in touched {
            let Some(net) = networks.get_mut(n).and_then(|x| x.as_mut()) else { continue };
            let out = |id: &PortId| gone.iter().any(|(m, g)| *m == n && g == id);
            let mut f: Vec<PortId> = net.flood.iter().filter(|id| !out(id)).copied().collect();
            f.extend(joined.iter().filter(|(m, _)| *m == n).map(|(_, id)| *id));
            f.sort_unstable();
            net.flood = f.into();
        }
        Ok(Topology { ports: chunks.into_boxed_slice(), networks })
    }

    /// The port with id `p`, if it exists.
    #[inline]
    pub fn port(&self, p: PortId) -> Option<&PortEntry> {
        let i = p.0 as usize;
        self.ports.get(i / CHUNK).and_then(|c| c[i % CHUNK].as_ref())
    }

    /// The network with id `n`, if it exists.
    #[inline]
    pub fn network(&self, n: NetworkId) -> Option<&NetworkEntry> {
        self.networks.get(n.0 as usize).and_then(|e| e.as_ref())
    }

    /// Every port.
    pub fn ports(&self) -> impl Iterator<Item = &PortEntry> {
        self.ports.iter().flat_map(|c| c.iter()).flatten()
    }

    /// Every network.
    pub fn networks(&self) -> impl Iterator<Item = &NetworkEntry> {
        self.networks.iter().flatten()
    }

    /// The network named `name`.
    pub fn network_by_name(&self, name: &str) -> Option<&NetworkEntry> {
        self.networks().find(|n| n.spec.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(id: u16, name: &str) -> NetworkSpec {
        NetworkSpec { id: NetworkId(id), name: name.into(), ageing_s: 300, gateway: None }
    }

    fn access(id: u16, name: &str, n: u16) -> PortSpec {
        PortSpec {
            id: PortId(id),
            name: name.into(),
            mode: PortMode::Access { network: NetworkId(n) },
            static_macs: vec![],
        }
    }

    #[test]
    fn flood_lists_and_egress() {
        let trunk = PortSpec {
            id: PortId(2),
            name: "t".into(),
            mode: PortMode::Trunk {
                vlans: vec![(VlanId::new(100).unwrap(), NetworkId(0)), (VlanId::new(200).unwrap(), NetworkId(1))],
                native: None,
            },
            static_macs: vec![],
        };
        let t =
            Topology::new(&[net(0, "a"), net(1, "b")], &[access(0, "p0", 0), access(1, "p1", 1), trunk], 16).unwrap();
        assert_eq!(&*t.network(NetworkId(0)).unwrap().flood, &[PortId(0), PortId(2)]);
        assert_eq!(&*t.network(NetworkId(1)).unwrap().flood, &[PortId(1), PortId(2)]);
        let tp = t.port(PortId(2)).unwrap();
        assert_eq!(tp.vid_to_network[100], 0);
        assert_eq!(tp.vid_to_network[200], 1);
        assert_eq!(tp.vid_to_network[300], NOT_MEMBER);
        assert_eq!(tp.egress[1], 200);
        assert_eq!(tp.untagged, NOT_MEMBER);
        assert_eq!(t.port(PortId(0)).unwrap().egress[..], [UNTAGGED, NOT_MEMBER]);
    }

    /// The same ports, compiled whole and patched in: entries and flood lists agree.
    fn assert_same(patched: &Topology, whole: &Topology) {
        let ids = |t: &Topology| t.ports().map(|e| e.spec.id).collect::<Vec<_>>();
        assert_eq!(ids(patched), ids(whole));
        for w in whole.ports() {
            let p = patched.port(w.spec.id).unwrap();
            assert_eq!(p.spec, w.spec);
            assert_eq!((p.untagged, &p.egress, &p.vid_to_network), (w.untagged, &w.egress, &w.vid_to_network));
        }
        for w in whole.networks() {
            assert_eq!(patched.network(w.spec.id).unwrap().flood, w.flood, "network {}", w.spec.name);
        }
    }

    proptest::proptest! {
        /// Ports put and removed one burst at a time, across chunk boundaries, give the
        /// topology compiling them all at once gives; earlier snapshots never change.
        #[test]
        fn with_ports_agrees_with_a_whole_compile(
            bursts in proptest::collection::vec(
                proptest::collection::vec((0u16..200, 0u16..4, proptest::bool::ANY), 1..6), 1..40)
        ) {
            let nets = [net(0, "a"), net(1, "b"), net(3, "d")];
            let spec = |id: u16, n: u16| match n {
                3 => PortSpec {
                    id: PortId(id),
                    name: format!("t{id}"),
                    mode: PortMode::Trunk { vlans: vec![(VlanId::new(7).unwrap(), NetworkId(1))], native: Some(NetworkId(0)) },
                    static_macs: vec![],
                },
                n => access(id, &format!("p{id}"), if n == 2 { 3 } else { n }),
            };
            let mut have: std::collections::BTreeMap<u16, PortSpec> = Default::default();
            let mut t = Topology::new(&nets, &[], 256).unwrap();
            for burst in bursts {
                let before = t.clone();
                let before_ids: Vec<PortId> = before.ports().map(|e| e.spec.id).collect();
                let (mut removed, mut added) = (vec![], vec![]);
                for (id, n, put) in burst {
                    if removed.contains(&PortId(id)) || added.iter().any(|a: &PortSpec| a.id.0 == id) {
                        continue;
                    }
                    if put && !have.contains_key(&id) {
                        added.push(spec(id, n));
                    } else if !put && have.contains_key(&id) {
                        removed.push(PortId(id));
                    }
                }
                for r in &removed {
                    have.remove(&r.0);
                }
                for a in &added {
                    have.insert(a.id.0, a.clone());
                }
                t = t.with_ports(&removed, &added, 256).unwrap();
                let all: Vec<PortSpec> = have.values().cloned().collect();
                assert_same(&t, &Topology::new(&nets, &all, 256).unwrap());
                proptest::prop_assert_eq!(before.ports().map(|e| e.spec.id).collect::<Vec<_>>(), before_ids);
            }
        }
    }

    #[test]
    fn with_ports_refuses_what_new_refuses() {
        let t = Topology::new(&[net(0, "a")], &[access(0, "p0", 0)], 16).unwrap();
        let e = t.with_ports(&[], &[access(0, "again", 0)], 16).unwrap_err();
        assert!(matches!(e, TopologyError::Duplicate { kind: "port", .. }));
        let e = t.with_ports(&[], &[access(1, "p1", 5)], 16).unwrap_err();
        assert_eq!(e, TopologyError::UnknownNetwork { port: "p1".into(), network: 5 });
        let e = t.with_ports(&[], &[access(16, "p16", 0)], 16).unwrap_err();
        assert!(matches!(e, TopologyError::IdOutOfRange { kind: "port", id: 16, .. }));
        // Removing and putting back the same id in one burst is a replacement.
        let t2 = t.with_ports(&[PortId(0)], &[access(0, "p0b", 0)], 16).unwrap();
        assert_eq!(t2.port(PortId(0)).unwrap().spec.name, "p0b");
        assert_eq!(&*t2.network(NetworkId(0)).unwrap().flood, &[PortId(0)]);
        assert_eq!(t.port(PortId(0)).unwrap().spec.name, "p0", "the old snapshot is untouched");
    }

    #[test]
    fn errors_are_precise() {
        let e = Topology::new(&[net(0, "a")], &[access(0, "p0", 3)], 16).unwrap_err();
        assert_eq!(e, TopologyError::UnknownNetwork { port: "p0".into(), network: 3 });
        let e = Topology::new(&[net(0, "a"), net(1, "a")], &[], 16).unwrap_err();
        assert!(matches!(e, TopologyError::Duplicate { kind: "network", .. }));
        let e = Topology::new(&[net(0, "a")], &[access(0, "p", 0), access(1, "p", 0)], 16).unwrap_err();
        assert!(matches!(e, TopologyError::Duplicate { kind: "port", .. }));
        let e = Topology::new(&[net(0, "a")], &[access(20, "p", 0)], 16).unwrap_err();
        assert!(matches!(e, TopologyError::IdOutOfRange { kind: "port", id: 20, .. }));
        let bad = PortSpec {
            id: PortId(0),
            name: "t".into(),
            mode: PortMode::Trunk {
                vlans: vec![(VlanId::new(5).unwrap(), NetworkId(0)), (VlanId::new(6).unwrap(), NetworkId(0))],
                native: None,
            },
            static_macs: vec![],
        };
        assert!(matches!(Topology::new(&[net(0, "a")], &[bad], 16), Err(TopologyError::BadTrunk { .. })));
    }

    #[test]
    fn gateways_are_checked_and_give_their_subnets() {
        let gw = Gateway {
            mac: EthernetAddress([0x02, 0, 0, 0, 0, 1]),
            v4: Some(("198.18.1.1".parse().unwrap(), 24)),
            v6: Some(("2001:db8:1::1".parse().unwrap(), 64)),
            router_advertisements: false,
        };
        assert_eq!(gw.subnet4().unwrap().to_string(), "198.18.1.0/24");
        assert_eq!(gw.subnet6().unwrap().to_string(), "2001:db8:1::/64");
        assert_eq!(gw.link_local(), "fe80::ff:fe00:1".parse::<Ipv6Addr>().unwrap());
        assert!(gw.owns6(&gw.link_local()));
        let mut n = net(0, "a");
        n.gateway = Some(gw.clone());
        let t = Topology::new(&[n.clone()], &[], 16).unwrap();
        assert_eq!(t.network(NetworkId(0)).unwrap().gw_mac, gw.mac.to_u64());
        for bad in [
            Gateway { v4: Some(("198.18.1.0".parse().unwrap(), 24)), ..gw.clone() },
            Gateway { v4: Some(("198.18.1.255".parse().unwrap(), 24)), ..gw.clone() },
            Gateway { v4: Some(("198.18.1.1".parse().unwrap(), 31)), ..gw.clone() },
            Gateway { mac: EthernetAddress([0x03, 0, 0, 0, 0, 1]), ..gw.clone() },
            Gateway { v4: None, v6: None, ..gw.clone() },
        ] {
            n.gateway = Some(bad);
            assert!(matches!(Topology::new(&[n.clone()], &[], 16), Err(TopologyError::BadGateway { .. })));
        }
    }

    #[test]
    fn overlapping_subnets_are_refused() {
        let with = |id, name, v4: &str, v6: &str| {
            let mut n = net(id, name);
            n.gateway = Some(Gateway {
                mac: EthernetAddress([0x02, 0, 0, 0, 0, 1 + id as u8]),
                v4: Some((v4.parse().unwrap(), 24)),
                v6: Some((v6.parse().unwrap(), 64)),
                router_advertisements: false,
            });
            n
        };
        let a = with(0, "a", "198.18.1.1", "2001:db8:1::1");
        assert!(Topology::new(&[a.clone(), with(1, "b", "198.18.2.1", "2001:db8:2::1")], &[], 16).is_ok());
        for b in [with(1, "b", "198.18.1.2", "2001:db8:2::1"), with(1, "b", "198.18.2.1", "2001:db8:1::2")] {
            let e = Topology::new(&[a.clone(), b], &[], 16).unwrap_err().to_string();
            assert!(e.contains("overlaps network \"a\""), "{e}");
        }
        let mut wide = with(1, "wide", "198.18.2.1", "2001:db8:2::1");
        wide.gateway.as_mut().unwrap().v4 = Some(("198.18.0.1".parse().unwrap(), 16));
        assert!(Topology::new(&[a, wide], &[], 16).is_err(), "containment is overlap");
    }
}
