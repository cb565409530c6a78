//! The desired state: what the API (or, on first start, the config file) asked for.
//!
//! Networks, ports, routes and peers by name (a route's name is its prefix, normalised), and
//! the dataplane id each network and port keeps for its life. [`Desired::with`] is the
//! one way to change it: pure, so the journal replays to exactly the same state and
//! ids. Whether a change is allowed is [`check`]'s business, before anything changes.

use crate::config::{Config, ConfigError, Ids, NetworkConfig, PeerConfig, PodRef, PortConfig, RouteConfig};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use switch_core::tables::Gateway;
use switch_core::tables::Prefix;

/// The desired state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Desired {
    /// Grows by one with every accepted change.
    pub generation: u64,
    /// By name.
    pub networks: BTreeMap<String, NetworkConfig>,
    /// By interface name.
    pub ports: BTreeMap<String, PortConfig>,
    /// By normalised prefix.
    pub routes: BTreeMap<String, RouteConfig>,
    /// Remote nodes, by name.
    #[serde(default)]
    pub peers: BTreeMap<String, PeerConfig>,
    /// True once the peers live in this state. A state saved before peers did (they
    /// were the config file's only) has false: the daemon seeds them from the file
    /// once, so that an upgrade keeps them.
    #[serde(default)]
    pub peers_in_state: bool,
    /// Their ids.
    pub ids: Ids,
    /// (untagged network, address) → the port that claims it; derived from `ports`
    /// (rebuilt by [`reindex`](Desired::reindex) after loading).
    #[serde(skip)]
    claims: BTreeMap<(String, IpAddr), String>,
    /// Pod → the port that attaches it; derived from `ports` as `claims` is.
    #[serde(skip)]
    pods: BTreeMap<PodRef, String>,
    /// Port ids in use, a bit each; derived from `ids.ports` as `claims` is (no
    /// trailing zero words, so that equal states compare equal).
    #[serde(skip)]
    port_ids: Vec<u64>,
}

/// The network a port's untagged frames (and so its addresses) belong to.
fn untagged(p: &PortConfig) -> Option<&String> {
    p.network.as_ref().or(p.native.as_ref())
}

/// One change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mutation {
    /// Create or replace a network.
    PutNetwork(NetworkConfig),
    /// Remove a network (it must have no ports or routes).
    DeleteNetwork(String),
    /// Create or replace a port.
    PutPort(PortConfig),
    /// Remove a port.
    DeletePort(String),
    /// Create or replace the route for a prefix.
    PutRoute(RouteConfig),
    /// Remove the route for a prefix.
    DeleteRoute(String),
    /// Create or replace a remote node.
    PutPeer(PeerConfig),
    /// Remove a remote node.
    DeletePeer(String),
}

impl Mutation {
    /// ("network" | "port" | "route" | "peer", name, "put" | "delete"), for logs and
    /// watchers.
    pub fn describe(&self) -> (&'static str, String, &'static str) {
        match self {
            Mutation::PutNetwork(n) => ("network", n.name.clone(), "put"),
            Mutation::DeleteNetwork(n) => ("network", n.clone(), "delete"),
            Mutation::PutPort(p) => ("port", p.name.clone(), "put"),
            Mutation::DeletePort(p) => ("port", p.clone(), "delete"),
            Mutation::PutRoute(r) => ("route", route_key(&r.prefix), "put"),
            Mutation::DeleteRoute(r) => ("route", route_key(r), "delete"),
            Mutation::PutPeer(p) => ("peer", p.name.clone(), "put"),
            Mutation::DeletePeer(p) => ("peer", p.clone(), "delete"),
        }
    }
}

/// A prefix as routes are keyed: normalised when it parses ("198.19.0.0/16").
pub fn route_key(prefix: &str) -> String {
    prefix.parse::<Prefix>().map_or_else(|_| prefix.to_string(), |p| p.to_string())
}

fn lowest_free(used: &BTreeMap<String, u16>) -> u16 {
    let mut taken = vec![0u64; used.len() / 64 + 1];
    for &id in used.values() {
        if let Some(w) = taken.get_mut(id as usize / 64) {
            *w |= 1 << (id % 64);
        }
    }
    first_clear(&taken)
}

/// The lowest bit that is clear in `words` (bit i of word w is id 64 × w + i).
fn first_clear(words: &[u64]) -> u16 {
    let word = words.iter().position(|w| *w != u64::MAX).unwrap_or(words.len());
    (word * 64 + words.get(word).map_or(0, |w| w.trailing_ones() as usize)) as u16
}

impl Desired {
    /// The static topology of `cfg`, ids in file order (a first start).
    pub fn from_config(cfg: &Config) -> Desired {
        let mut d = Desired::default();
        for n in &cfg.networks {
            d.apply(&Mutation::PutNetwork(n.clone()));
        }
        for p in &cfg.ports {
            d.apply(&Mutation::PutPort(p.clone()));
        }
        for r in &cfg.routes {
            d.apply(&Mutation::PutRoute(r.clone()));
        }
        d.seed_peers(cfg);
        d
    }

    /// Takes the config file's peers, if the peers do not live in this state yet (a
    /// first start, or a state saved before they did). Returns true if it did.
    pub fn seed_peers(&mut self, cfg: &Config) -> bool {
        if self.peers_in_state {
            return false;
        }
        for p in &cfg.peers {
            self.apply(&Mutation::PutPeer(p.clone()));
        }
        self.peers_in_state = true;
        true
    }

    /// The state after `m` (generation unchanged). Unchecked: see [`check`].
    pub fn with(&self, m: &Mutation) -> Desired {
        let mut d = self.clone();
        d.apply(m);
        d
    }

    /// The id a new port would get.
    pub fn next_port_id(&self) -> u16 {
        first_clear(&self.port_ids)
    }

    fn mark_port_id(&mut self, id: u16, used: bool) {
        let (w, bit) = (usize::from(id) / 64, 1u64 << (id % 64));
        if used {
            if self.port_ids.len() <= w {
                self.port_ids.resize(w + 1, 0);
            }
            self.port_ids[w] |= bit;
        } else if let Some(x) = self.port_ids.get_mut(w) {
            *x &= !bit;
            while self.port_ids.last() == Some(&0) {
                self.port_ids.pop();
            }
        }
    }

    /// True if `m` would change the state.
    pub fn changes(&self, m: &Mutation) -> bool {
        match m {
            Mutation::PutNetwork(n) => self.networks.get(&n.name) != Some(n),
            Mutation::DeleteNetwork(name) => self.networks.contains_key(name),
            Mutation::PutPort(p) => self.ports.get(&p.name) != Some(p),
            Mutation::DeletePort(name) => self.ports.contains_key(name),
            Mutation::PutRoute(r) => self.routes.get(&route_key(&r.prefix)) != Some(r),
            Mutation::DeleteRoute(prefix) => self.routes.contains_key(&route_key(prefix)),
            Mutation::PutPeer(p) => self.peers.get(&p.name) != Some(p),
            Mutation::DeletePeer(name) => self.peers.contains_key(name),
        }
    }

    /// Rebuilds the derived indexes (after deserializing).
    pub fn reindex(&mut self) {
        self.claims.clear();
        self.pods.clear();
        self.port_ids.clear();
        let ports: Vec<PortConfig> = self.ports.values().cloned().collect();
        for p in &ports {
            self.claim(p);
        }
        let ids: Vec<u16> = self.ids.ports.values().copied().collect();
        for id in ids {
            self.mark_port_id(id, true);
        }
    }

    fn claim(&mut self, p: &PortConfig) {
        if let Some(n) = untagged(p) {
            for a in &p.addresses {
                self.claims.insert((n.clone(), *a), p.name.clone());
            }
        }
        if let Some(pod) = &p.pod {
            self.pods.insert(pod.clone(), p.name.clone());
        }
    }

    fn unclaim(&mut self, name: &str) {
        if let Some(p) = self.ports.get(name) {
            if let Some(n) = untagged(p) {
                for a in &p.addresses {
                    if self.claims.get(&(n.clone(), *a)).is_some_and(|o| o == name) {
                        self.claims.remove(&(n.clone(), *a));
                    }
                }
            }
            if let Some(pod) = &p.pod {
                if self.pods.get(pod).is_some_and(|o| o == name) {
                    self.pods.remove(pod);
                }
            }
        }
    }

    /// The port attaching `pod`, if any.
    pub fn pod_port(&self, pod: &PodRef) -> Option<&PortConfig> {
        self.pods.get(pod).and_then(|name| self.ports.get(name))
    }

    /// The lowest address of `gw`'s subnet in the family of `v4` that nothing claims on
    /// network `net`: not the subnet's first or last (IPv4), not the gateway's, not a
    /// port's, not one `taken` names.
    pub fn free_address(&self, net: &str, gw: &Gateway, v4: bool, taken: impl Fn(IpAddr) -> bool) -> Option<IpAddr> {
        // Bounded: a /8 or a /64 is never walked to its end.
        const MAX_PROBES: u32 = 1 << 20;
        let (first, count): (IpAddr, u32) = if v4 {
            let s = gw.subnet4()?;
            let hosts = 1u32.checked_shl(32 - u32::from(s.len())).unwrap_or(0).saturating_sub(1);
            (IpAddr::V4(Ipv4Addr::from(u32::from(s.addr()) + 1)), hosts.saturating_sub(1).min(MAX_PROBES))
        } else {
            let s = gw.subnet6()?;
            (IpAddr::V6(Ipv6Addr::from(u128::from(s.addr()) + 1)), MAX_PROBES)
        };
        let nth = |i: u32| match first {
            IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a) + i)),
            IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(a) + u128::from(i))),
        };
        // The claims on `net` from `first` up, in address order, walked beside the
        // candidates: the lowest gap costs one step per claimed address below it, with
        // no lookup and no allocation per candidate.
        let mut claimed = self
            .claims
            .range((net.to_string(), first)..)
            .take_while(|((n, _), _)| n == net)
            .map(|((_, a), _)| *a)
            .peekable();
        (0..count).map(nth).find(|a| {
            while claimed.next_if(|c| c < a).is_some() {}
            claimed.peek() != Some(a)
                && crate::config::in_subnet(gw, *a)
                && !crate::config::gw_owns(gw, *a)
                && !taken(*a)
        })
    }

    /// The port that claims `addr` on network `net`, if any.
    pub fn claimed_by(&self, net: &str, addr: IpAddr) -> Option<&str> {
        self.claims.get(&(net.to_string(), addr)).map(String::as_str)
    }

    /// Applies `m` in place (generation unchanged). Unchecked: see [`check`].
    pub fn apply(&mut self, m: &Mutation) {
        match m {
            Mutation::PutPort(p) => {
                self.unclaim(&p.name);
                self.claim(p);
            }
            Mutation::DeletePort(name) => self.unclaim(name),
            _ => {}
        }
        let d = self;
        match m {
            Mutation::PutNetwork(n) => {
                if !d.ids.networks.contains_key(&n.name) {
                    let id = lowest_free(&d.ids.networks);
                    d.ids.networks.insert(n.name.clone(), id);
                }
                d.networks.insert(n.name.clone(), n.clone());
            }
            Mutation::DeleteNetwork(name) => {
                d.networks.remove(name);
                d.ids.networks.remove(name);
            }
            Mutation::PutPort(p) => {
                if !d.ids.ports.contains_key(&p.name) {
                    let id = d.next_port_id();
                    d.ids.ports.insert(p.name.clone(), id);
                    d.mark_port_id(id, true);
                }
                d.ports.insert(p.name.clone(), p.clone());
            }
            Mutation::DeletePort(name) => {
                d.ports.remove(name);
                if let Some(id) = d.ids.ports.remove(name) {
                    d.mark_port_id(id, false);
                }
            }
            Mutation::PutRoute(r) => {
                d.routes.insert(route_key(&r.prefix), r.clone());
            }
            Mutation::DeleteRoute(prefix) => {
                d.routes.remove(&route_key(prefix));
            }
            Mutation::PutPeer(p) => {
                d.peers.insert(p.name.clone(), p.clone());
            }
            Mutation::DeletePeer(name) => {
                d.peers.remove(name);
            }
        }
    }

    /// `base` (dataplane, node, host port) with this state's topology, leaving out the
    /// ports for which `skip` is true (their interface is missing).
    pub fn config(&self, base: &Config, skip: impl Fn(&str) -> bool) -> Config {
        let mut c = base.clone();
        c.networks = self.networks.values().cloned().collect();
        c.ports = self.ports.values().filter(|p| !skip(&p.name)).cloned().collect();
        c.routes = self.routes.values().cloned().collect();
        c.peers = self.peers.values().cloned().collect();
        c.ids = Some(self.ids.clone());
        c
    }
}

/// Why a change is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The request itself is malformed (INVALID_ARGUMENT).
    Invalid(String),
    /// It conflicts with the state (FAILED_PRECONDITION).
    Conflict(String),
}

impl core::fmt::Display for Refusal {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Refusal::Invalid(m) | Refusal::Conflict(m) => f.write_str(m),
        }
    }
}

fn message(e: ConfigError) -> String {
    e.to_string()
}

/// Checks `m` on its own: fields that do not parse, impossible combinations.
fn check_alone(base: &Config, m: &Mutation) -> Result<(), Refusal> {
    let invalid = |e: ConfigError| Refusal::Invalid(message(e));
    let mut c = base.clone();
    c.host_port = None;
    c.node = Default::default();
    c.ids = None;
    c.routes = vec![];
    match m {
        Mutation::PutNetwork(n) => {
            if n.name.is_empty() || n.name.len() > 64 {
                return Err(Refusal::Invalid(format!("network name {:?} must be 1 to 64 characters", n.name)));
            }
            c.networks = vec![n.clone()];
            c.ports = vec![];
            c.topology().map_err(invalid)?;
        }
        Mutation::PutPort(p) => {
            // Stand-ins for the networks it names: only the port's own fields are checked.
            let mut names: Vec<&String> = p.network.iter().chain(p.native.iter()).collect();
            names.extend(p.vlans.iter().map(|v| &v.network));
            names.sort();
            names.dedup();
            c.networks = names
                .into_iter()
                .map(|n| NetworkConfig {
                    name: n.clone(),
                    ageing_s: 300,
                    gateway: vec![],
                    gateway_mac: None,
                    router_advertisements: false,
                    vni: None,
                })
                .collect();
            let mut alone = p.clone();
            alone.addresses.clear();
            c.ports = vec![alone];
            c.topology().map_err(invalid)?;
            if !p.addresses.is_empty() && p.macs.len() != 1 {
                return Err(Refusal::Invalid(format!(
                    "port {:?}: addresses need the pod's MAC to become static neighbours: give exactly one in macs",
                    p.name
                )));
            }
        }
        Mutation::PutRoute(r) => {
            r.prefix.parse::<Prefix>().map_err(|e| Refusal::Invalid(format!("route {:?}: {e}", r.prefix)))?;
            let targets = usize::from(r.via.is_some())
                + usize::from(r.network.is_some())
                + usize::from(r.port.is_some())
                + usize::from(r.drop);
            if targets != 1 {
                return Err(Refusal::Invalid(format!(
                    "route {:?}: give exactly one of via, network, port or drop",
                    r.prefix
                )));
            }
        }
        Mutation::PutPeer(p) => check_peer(p)?,
        Mutation::DeleteNetwork(n) | Mutation::DeletePort(n) | Mutation::DeletePeer(n) => {
            if n.is_empty() {
                return Err(Refusal::Invalid("name is empty".into()));
            }
        }
        Mutation::DeleteRoute(r) => {
            r.parse::<Prefix>().map_err(|e| Refusal::Invalid(format!("route {r:?}: {e}")))?;
        }
    }
    Ok(())
}

/// A peer's own fields; how it fits the node (its families, CIDRs and VNIs) is the
/// whole compile's business.
fn check_peer(p: &PeerConfig) -> Result<(), Refusal> {
    let invalid = |m: String| Err(Refusal::Invalid(format!("peer {:?}: {m}", p.name)));
    if p.name.is_empty() || p.name.len() > 64 {
        return invalid("name must be 1 to 64 characters".into());
    }
    if p.underlay.is_empty() {
        return invalid("underlay is empty: give the node's address on the underlay".into());
    }
    if let Some(a) = p.underlay.iter().find(|a| a.is_unspecified() || a.is_multicast() || a.is_loopback()) {
        return invalid(format!("underlay address {a} is not a node's unicast address"));
    }
    if let Some(m) = &p.vtep_mac {
        match m.parse::<switch_core::wire::EthernetAddress>() {
            Ok(mac) if mac.is_unicast() && mac.0 != [0; 6] => {}
            Ok(_) => return invalid(format!("vtep_mac {m} must be a unicast address")),
            Err(e) => return invalid(format!("vtep_mac: {e}")),
        }
    }
    for c in &p.pod_cidrs {
        if let Err(e) = c.parse::<Prefix>() {
            return invalid(format!("pod_cidrs: {e}"));
        }
    }
    if let Some(v) = p.vnis.iter().find(|v| **v > switch_core::wire::vxlan::MAX_VNI) {
        return invalid(format!("vnis: {v} does not fit in 24 bits (at most {})", switch_core::wire::vxlan::MAX_VNI));
    }
    Ok(())
}

/// A new port (the CNI plugin's ADD) interacts with the rest of the state only through
/// the networks it names and the addresses it claims: checking those is the whole
/// state's check for it, at a cost that does not grow with every port's compile.
/// (`check_alone` has checked its own fields; ids are checked by the caller.)
fn check_new_port(base: &Config, cur: &Desired, p: &PortConfig) -> Result<(), Refusal> {
    let conflict = |m: String| Err(Refusal::Conflict(m));
    for n in p.network.iter().chain(p.native.iter()).chain(p.vlans.iter().map(|v| &v.network)) {
        if !cur.networks.contains_key(n) {
            let known: Vec<&String> = cur.networks.keys().collect();
            return conflict(format!("port {:?}: network {n:?} is not defined (networks: {known:?})", p.name));
        }
    }
    if p.addresses.is_empty() {
        return Ok(());
    }
    let untagged = untagged(p);
    let gw = untagged.and_then(|n| cur.networks[n].gateway_spec().ok().flatten());
    for a in &p.addresses {
        let Some(gw) = &gw else {
            return conflict(format!(
                "port {:?}: address {a} needs the port's (untagged) network to have a gateway",
                p.name
            ));
        };
        if !crate::config::in_subnet(gw, *a) || crate::config::gw_owns(gw, *a) {
            return conflict(format!(
                "port {:?}: address {a} is not a host of network {:?}'s gateway subnet",
                p.name,
                untagged.map(String::as_str).unwrap_or_default()
            ));
        }
        if let Some(q) = untagged.and_then(|n| cur.claimed_by(n, *a)).filter(|q| *q != p.name) {
            return conflict(format!("port {:?}: address {a} is already {q:?}'s", p.name));
        }
        if let Some(h) = base.host_port.as_ref().filter(|h| Some(&h.network) == untagged) {
            if h.addresses.iter().any(|s| s.split('/').next().and_then(|s| s.parse().ok()) == Some(*a)) {
                return conflict(format!("port {:?}: address {a} is already \"host_port\"'s", p.name));
            }
        }
    }
    Ok(())
}

/// Checks that `m` may be applied to `cur`. `skip` says which ports to leave out of
/// the compiled topology (missing interfaces).
pub fn check(base: &Config, cur: &Desired, m: &Mutation, skip: impl Fn(&str) -> bool) -> Result<(), Refusal> {
    check_alone(base, m)?;
    match m {
        Mutation::DeleteNetwork(name) if cur.networks.contains_key(name) => {
            let users: Vec<&str> = cur
                .ports
                .values()
                .filter(|p| {
                    p.network.as_ref() == Some(name)
                        || p.native.as_ref() == Some(name)
                        || p.vlans.iter().any(|v| v.network == *name)
                })
                .map(|p| p.name.as_str())
                .collect();
            if !users.is_empty() {
                return Err(Refusal::Conflict(format!(
                    "network {name:?} still has ports {users:?}: delete or move them first"
                )));
            }
            if base.host_port.as_ref().is_some_and(|h| h.network == *name) {
                return Err(Refusal::Conflict(format!(
                    "network {name:?} carries the host port (set in the config file): it cannot be deleted"
                )));
            }
        }
        _ => {}
    }
    if let Some(h) = &base.host_port {
        let (kind, name, _) = m.describe();
        if kind == "port" && (name == h.switch_side() || name == h.name) {
            return Err(Refusal::Conflict(format!(
                "port {name:?} is the host port, set in the config file (host_port); the API cannot change it"
            )));
        }
    }
    if let Mutation::PutPort(p) = m {
        if let Some(pod) = cur.ports.get(&p.name).and_then(|q| q.pod.as_ref()).filter(|r| p.pod.as_ref() != Some(*r)) {
            return Err(Refusal::Conflict(format!(
                "port {:?} attaches pod {}/{}: detach the pod first (podswitchctl pod detach)",
                p.name, pod.container_id, pod.ifname
            )));
        }
    }
    let limit = base.first_reserved_port_id();
    if let Mutation::PutPort(p) = m {
        let id = cur.ids.ports.get(&p.name).copied().unwrap_or_else(|| cur.next_port_id());
        if id >= limit {
            return Err(Refusal::Conflict(format!(
                "port {:?}: all {limit} port ids are in use; raise dataplane.max_ports",
                p.name
            )));
        }
    }
    match m {
        Mutation::PutPort(p) if !cur.ports.contains_key(&p.name) => return check_new_port(base, cur, p),
        // Nothing but a route can name a port: removing one no route names is consistent.
        Mutation::DeletePort(name) if !cur.routes.values().any(|r| r.port.as_ref() == Some(name)) => return Ok(()),
        _ => {}
    }
    check_compiled(base, &cur.with(m), skip)
}

/// Compiles `next` whole: the check every change could take.
fn check_compiled(base: &Config, next: &Desired, skip: impl Fn(&str) -> bool) -> Result<(), Refusal> {
    let c = next.config(base, skip);
    let topology = c.topology().map_err(|e| Refusal::Conflict(message(e)))?;
    c.routing(&topology).map_err(|e| Refusal::Conflict(message(e)))?;
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn base() -> Config {
        Config::parse("[dataplane]\ncores = [0]\nmax_ports = 4\n").unwrap()
    }

    /// A network `name` with gateway addresses `gw` (the engine's tests use it too).
    pub(crate) fn net(name: &str, gw: &[&str]) -> Mutation {
        Mutation::PutNetwork(NetworkConfig {
            name: name.into(),
            ageing_s: 300,
            gateway: gw.iter().map(|s| s.to_string()).collect(),
            gateway_mac: None,
            router_advertisements: false,
            vni: None,
        })
    }

    fn port(name: &str, network: &str) -> Mutation {
        Mutation::PutPort(PortConfig {
            name: name.into(),
            network: Some(network.into()),
            vlans: vec![],
            native: None,
            macs: vec![],
            addresses: vec![],
            pod: None,
            vhost_user: None,
        })
    }

    fn apply(d: &Desired, m: Mutation) -> Result<Desired, Refusal> {
        check(&base(), d, &m, |_| false).map(|()| d.with(&m))
    }

    proptest::proptest! {
        /// The lowest free address agrees with trying every address in turn, for any
        /// set of claimed addresses (on this network and another), taken addresses and
        /// gateway position, IPv4 (a /28: first and last excluded) and IPv6.
        #[test]
        fn free_address_is_the_lowest_unclaimed(
            claimed in proptest::collection::btree_set(1u8..15, 0..15),
            elsewhere in proptest::collection::btree_set(1u8..15, 0..5),
            taken in proptest::collection::btree_set(1u8..15, 0..3),
            gw in 1u8..15,
        ) {
            let mut d = apply(&Desired::default(), net("a", &[&format!("198.18.0.{gw}/28"), &format!("2001:db8::{gw:x}/64")])).unwrap();
            d = apply(&d, net("b", &["198.19.0.1/24"])).unwrap();
            for (net_name, set) in [("a", &claimed), ("b", &elsewhere)] {
                for i in set.iter().filter(|i| net_name == "b" || **i != gw) {
                    let (v4, v6) = (IpAddr::V4(Ipv4Addr::new(198, 18, 0, *i)), format!("2001:db8::{i:x}").parse().unwrap());
                    let mut p = port_cfg(&format!("{net_name}{i}"), net_name);
                    p.macs = vec![format!("02:00:00:00:00:{i:02x}")];
                    p.addresses = if net_name == "a" { vec![v4, v6] } else { vec![IpAddr::V4(Ipv4Addr::new(198, 19, 0, *i + 1))] };
                    d.apply(&Mutation::PutPort(p));
                }
            }
            let gateway = d.networks["a"].gateway_spec().unwrap().unwrap();
            let is_taken = |a: IpAddr| match a {
                IpAddr::V4(a) => taken.contains(&a.octets()[3]),
                IpAddr::V6(a) => taken.contains(&(u128::from(a) as u8)),
            };
            let naive = |v4: bool| {
                (1u8..15).find(|i| *i != gw && !claimed.contains(i) && !taken.contains(i)).map(|i| {
                    if v4 { IpAddr::V4(Ipv4Addr::new(198, 18, 0, i)) } else { format!("2001:db8::{i:x}").parse().unwrap() }
                })
            };
            proptest::prop_assert_eq!(d.free_address("a", &gateway, true, is_taken), naive(true));
            if let Some(a) = naive(false) {
                proptest::prop_assert_eq!(d.free_address("a", &gateway, false, is_taken), Some(a));
            }
        }
    }

    #[test]
    fn changes_are_idempotent_and_ids_stay_with_their_object() {
        let d = apply(&Desired::default(), net("a", &["198.18.1.1/24"])).unwrap();
        let d = apply(&d, net("b", &[])).unwrap();
        let again = apply(&d, net("b", &[])).unwrap();
        assert_eq!(again, d, "the same put twice is the same state");
        assert_eq!(again.ids, d.ids);
        let d = apply(&d, port("p0", "a")).unwrap();
        let d = apply(&d, port("p1", "b")).unwrap();
        let d = apply(&d, Mutation::DeletePort("p0".into())).unwrap();
        assert_eq!(d.ids.ports["p1"], 1, "removing p0 does not renumber p1");
        let d = apply(&d, port("p2", "b")).unwrap();
        assert_eq!(d.ids.ports["p2"], 0, "the lowest free id is reused");
        let gone = apply(&d, Mutation::DeletePort("nope".into())).unwrap();
        assert_eq!(gone, d, "deleting what is not there changes nothing");
    }

    #[test]
    fn refusals_say_malformed_or_conflicting() {
        let d = apply(&Desired::default(), net("a", &["198.18.1.1/24"])).unwrap();
        let d = apply(&d, port("p0", "a")).unwrap();
        let invalid = |m: Mutation| match apply(&d, m) {
            Err(Refusal::Invalid(msg)) => msg,
            other => panic!("expected Invalid, got {other:?}"),
        };
        let conflict = |m: Mutation| match apply(&d, m) {
            Err(Refusal::Conflict(msg)) => msg,
            other => panic!("expected Conflict, got {other:?}"),
        };
        assert!(invalid(net("b", &["198.18.2.1"])).contains("ADDRESS/LENGTH"));
        let mut bad_mac = PortConfig { macs: vec!["02:00:00:00:00".into()], ..port_cfg("p1", "a") };
        assert!(invalid(Mutation::PutPort(bad_mac.clone())).contains("p1"));
        bad_mac.macs = vec!["01:00:5e:00:00:01".into()];
        assert!(invalid(Mutation::PutPort(bad_mac)).contains("unicast"));
        assert!(invalid(Mutation::PutPort(PortConfig {
            vlans: vec![crate::config::VlanConfig { vid: 4095, network: "a".into() }],
            network: None,
            ..port_cfg("t0", "a")
        }))
        .contains("4094"));
        assert!(conflict(net("b", &["198.18.1.129/25"])).contains("overlaps"));
        assert!(conflict(port("p1", "nope")).contains("\"nope\""));
        let msg = conflict(Mutation::DeleteNetwork("a".into()));
        assert!(msg.contains("p0"), "{msg}");
        let d3 = apply(&d, port("p1", "a")).unwrap();
        let d4 = apply(&d3, port("p2", "a")).unwrap();
        let d5 = apply(&d4, port("p3", "a")).unwrap();
        match apply(&d5, port("p4", "a")) {
            Err(Refusal::Conflict(m)) => assert!(m.contains("max_ports"), "{m}"),
            other => panic!("expected the id limit, got {other:?}"),
        }
    }

    fn port_cfg(name: &str, network: &str) -> PortConfig {
        match port(name, network) {
            Mutation::PutPort(p) => p,
            _ => unreachable!(),
        }
    }

    /// A node with an uplink, its pod network, and network "blue" stretched as VNI 100.
    fn overlay_base() -> Config {
        Config::parse(
            "[dataplane]\ncores = [0]\nmax_ports = 8\n[node]\nname = \"a\"\npod_cidrs = [\"198.18.1.0/24\"]\n\
             underlay = [\"198.19.0.1\"]\n[uplink]\ninterface = \"eth0\"\nnetwork = \"pods\"\n\
             [[networks]]\nname = \"pods\"\ngateway = [\"198.18.1.1/24\"]\n[[networks]]\nname = \"blue\"\nvni = 100\n\
             [[peers]]\nname = \"b\"\nunderlay = [\"198.19.0.2\"]\npod_cidrs = [\"198.18.2.0/24\"]\n",
        )
        .unwrap()
    }

    fn peer_cfg(name: &str, underlay: &str, cidrs: &[&str], vnis: &[u32]) -> PeerConfig {
        PeerConfig {
            name: name.into(),
            underlay: vec![underlay.parse().unwrap()],
            vtep_mac: None,
            pod_cidrs: cidrs.iter().map(|c| c.to_string()).collect(),
            vnis: vnis.to_vec(),
        }
    }

    #[test]
    fn peers_live_in_the_state_checked_like_everything_else() {
        let base = overlay_base();
        let d = Desired::from_config(&base);
        assert!(d.peers_in_state && d.peers.contains_key("b"), "the file's peers seed a first start");
        let apply = |d: &Desired, m: Mutation| check(&base, d, &m, |_| false).map(|()| d.with(&m));
        let c = Mutation::PutPeer(peer_cfg("c", "198.19.0.3", &["198.18.3.0/24"], &[100]));
        let d2 = apply(&d, c.clone()).unwrap();
        assert!(!d2.changes(&c), "the same put twice is the same state");
        assert_eq!(d2.config(&base, |_| false).peers.len(), 2);
        let d3 = apply(&d2, Mutation::DeletePeer("b".into())).unwrap();
        assert_eq!(d3.peers.keys().collect::<Vec<_>>(), ["c"]);

        let invalid = |p: PeerConfig| match apply(&d, Mutation::PutPeer(p)) {
            Err(Refusal::Invalid(m)) => m,
            other => panic!("expected Invalid, got {other:?}"),
        };
        let conflict = |p: PeerConfig| match apply(&d, Mutation::PutPeer(p)) {
            Err(Refusal::Conflict(m)) => m,
            other => panic!("expected Conflict, got {other:?}"),
        };
        let mut p = peer_cfg("c", "198.19.0.3", &["198.18.3.0/24"], &[]);
        p.underlay.clear();
        assert!(invalid(p).contains("underlay is empty"));
        let p = PeerConfig { vtep_mac: Some("01:00:5e:00:00:01".into()), ..peer_cfg("c", "198.19.0.3", &[], &[100]) };
        assert!(invalid(p).contains("unicast"));
        assert!(invalid(peer_cfg("c", "198.19.0.3", &["198.18.3.0"], &[])).contains("pod_cidrs"));
        assert!(invalid(peer_cfg("c", "198.19.0.3", &[], &[1 << 24])).contains("24 bits"));
        assert!(invalid(peer_cfg("c", "224.0.0.1", &[], &[100])).contains("unicast"));
        assert!(invalid(peer_cfg("", "198.19.0.3", &[], &[100])).contains("1 to 64"));
        assert!(conflict(peer_cfg("c", "198.19.0.3", &["198.18.1.0/25"], &[])).contains("overlaps this node's own"));
        assert!(conflict(peer_cfg("c", "2001:db8:ff::3", &["198.18.3.0/24"], &[])).contains("family"));
        assert!(conflict(peer_cfg("c", "198.19.0.3", &[], &[200])).contains("no network is stretched as VNI 200"));
        // A stretched network a peer carries cannot go while the peer lists it.
        match apply(&d2, Mutation::DeleteNetwork("blue".into())) {
            Err(Refusal::Conflict(m)) => assert!(m.contains("VNI 100"), "{m}"),
            other => panic!("expected Conflict, got {other:?}"),
        }
    }

    #[test]
    fn a_state_saved_before_peers_takes_the_files_peers_once() {
        let base = overlay_base();
        let mut old: Desired = serde_json::from_str(
            r#"{"generation":7,"networks":{},"ports":{},"routes":{},"ids":{"networks":{},"ports":{}}}"#,
        )
        .unwrap();
        assert!(old.peers.is_empty() && !old.peers_in_state);
        assert!(old.seed_peers(&base));
        assert!(old.peers.contains_key("b"));
        assert_eq!(old.generation, 7, "seeding is no change of its own");
        old.apply(&Mutation::DeletePeer("b".into()));
        assert!(!old.seed_peers(&base), "once the peers live in the state, the file's never come back");
        assert!(old.peers.is_empty());
    }

    #[test]
    fn the_new_port_shortcut_agrees_with_the_whole_compile() {
        let base = Config::parse(
            "[dataplane]\ncores = [0]\nmax_ports = 64\n[[networks]]\nname = \"h\"\ngateway = [\"198.18.9.1/24\"]\n\
             [host_port]\nnetwork = \"h\"\naddresses = [\"198.18.9.2/24\"]\n",
        )
        .unwrap();
        let mut d = Desired::from_config(&base);
        for m in [net("a", &["198.18.1.1/24", "2001:db8:1::1/64"]), net("b", &[])] {
            check(&base, &d, &m, |_| false).unwrap();
            d.apply(&m);
        }
        let p0 = PortConfig {
            macs: vec!["02:00:00:00:00:01".into()],
            addresses: vec!["198.18.1.10".parse().unwrap()],
            ..port_cfg("p0", "a")
        };
        let m = Mutation::PutPort(p0);
        check(&base, &d, &m, |_| false).unwrap();
        d.apply(&m);
        let mut tried = 0;
        for network in [Some("a"), Some("b"), Some("h"), Some("nope"), None] {
            for native in [None, Some("a"), Some("b")] {
                for vlans in [vec![], vec![(10, "b")], vec![(10, "a"), (20, "b")], vec![(10, "nope")]] {
                    for addr in [
                        None,
                        Some("198.18.1.11"),
                        Some("198.18.1.10"),
                        Some("198.18.1.1"),
                        Some("198.18.2.5"),
                        Some("2001:db8:1::5"),
                        Some("198.18.9.2"),
                        Some("198.18.9.3"),
                    ] {
                        for macs in [0, 1, 2] {
                            let p = PortConfig {
                                name: "new0".into(),
                                network: network.map(Into::into),
                                vlans: vlans
                                    .iter()
                                    .map(|(v, n)| crate::config::VlanConfig { vid: *v, network: (*n).into() })
                                    .collect(),
                                native: native.map(Into::into),
                                macs: (0..macs).map(|i| format!("02:00:00:00:01:{i:02x}")).collect(),
                                addresses: addr.iter().map(|a| a.parse().unwrap()).collect(),
                                pod: None,
                                vhost_user: None,
                            };
                            let m = Mutation::PutPort(p);
                            let fast = check(&base, &d, &m, |_| false);
                            let full =
                                check_alone(&base, &m).and_then(|_| check_compiled(&base, &d.with(&m), |_| false));
                            assert_eq!(fast.is_ok(), full.is_ok(), "{m:?}: shortcut {fast:?}, compile {full:?}");
                            if let (Err(a), Err(b)) = (&fast, &full) {
                                assert_eq!(
                                    core::mem::discriminant(a),
                                    core::mem::discriminant(b),
                                    "{m:?}: {a:?} vs {b:?}"
                                );
                            }
                            tried += 1;
                        }
                    }
                }
            }
        }
        assert_eq!(tried, 5 * 3 * 4 * 8 * 3);
    }
}
