//! `podswitchd --config FILE`: the TOML configuration, and its validation into the
//! dataplane's types. Unknown keys are errors, so a typo never silently does nothing.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;
use switch_core::tables::{
    Gateway, NeighConfig, NeighKey, NetworkId, NetworkSpec, PortId, PortMode, PortSpec, Prefix, RouteSpec, RouteTarget,
    Routes, Topology,
};
use switch_core::wire::{EthernetAddress, VlanId};
use switch_core::worker::IdlePolicy;
use switch_core::xdp::XdpMode;
use switch_core::xsk::HugepagePolicy;

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Workers, memory, attach mode.
    #[serde(default)]
    pub dataplane: Dataplane,
    /// Prometheus endpoint, e.g. "127.0.0.1:9464". None: no endpoint.
    #[serde(default)]
    pub metrics_address: Option<SocketAddr>,
    /// Log level filter (trace, debug, info, warn, error), overridden by RUST_LOG.
    #[serde(default = "default_log_level")]
    pub log_level: String,
    /// Bridge domains.
    #[serde(default)]
    pub networks: Vec<NetworkConfig>,
    /// Ports and how they join networks.
    #[serde(default)]
    pub ports: Vec<PortConfig>,
    /// Static routes.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// The node's identity.
    #[serde(default)]
    pub node: NodeConfig,
    /// The veth pair into the node's own namespace.
    pub host_port: Option<HostPortConfig>,
    /// The node's NIC, which carries traffic to and from other nodes.
    pub uplink: Option<UplinkConfig>,
    /// Remote nodes and their pod CIDRs.
    #[serde(default)]
    pub peers: Vec<PeerConfig>,
    /// The gRPC API's Unix socket.
    #[serde(default = "default_socket")]
    pub control_socket: PathBuf,
    /// Group (numeric gid) allowed to use the socket besides root; the socket is then
    /// mode 0660 instead of 0600.
    #[serde(default)]
    pub control_socket_gid: Option<u32>,
    /// Where the desired state is kept across restarts.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// Where vhost-user pods' sockets go: `DIR/PORT/sock`, one directory per pod (so
    /// a runtime can mount exactly the pod's own into it).
    #[serde(default = "default_vhost_user_dir")]
    pub vhost_user_dir: PathBuf,
    /// Stable ids for networks and ports (from the saved state); file order when None.
    #[serde(skip)]
    pub ids: Option<Ids>,
}

/// Dataplane ids of networks and ports by name. Ids stay with their object for its
/// life (and across restarts), so counters and learned MACs never move to another.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ids {
    /// Network name → id.
    pub networks: BTreeMap<String, u16>,
    /// Port name → id.
    pub ports: BTreeMap<String, u16>,
}

fn default_socket() -> PathBuf {
    "/run/podswitch/podswitchd.sock".into()
}

fn default_state_dir() -> PathBuf {
    "/var/lib/podswitch".into()
}

fn default_vhost_user_dir() -> PathBuf {
    "/run/podswitch/vhost".into()
}

/// The longest Unix socket path (sun_path without its terminating NUL).
pub const MAX_SOCKET_PATH: usize = 107;

/// The largest MTU native XDP allows on a veth (copy mode; the kernel refuses more).
pub const VETH_XDP_MAX_MTU: u32 = 3506;

impl Config {
    /// The largest MTU a pod interface may have: what a UMEM frame holds after the
    /// headroom and the Ethernet header, and what native XDP on a veth allows.
    pub fn max_pod_mtu(&self) -> u32 {
        (self.dataplane.frame_size.saturating_sub(switch_core::xsk::FRAME_HEADROOM) - 14).min(VETH_XDP_MAX_MTU)
    }

    /// The MTU pods get by default: Ethernet's 1500, within [`max_pod_mtu`](Self::max_pod_mtu).
    pub fn pod_mtu(&self) -> u32 {
        1500.min(self.max_pod_mtu())
    }

    /// A vhost-user port's socket: `vhost_user_dir/PORT/sock`.
    pub fn vhost_user_socket(&self, port: &str) -> PathBuf {
        self.vhost_user_dir.join(port).join("sock")
    }
}

/// `[node]`
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// The node's name (default: the host name); its VTEP MAC is derived from it.
    pub name: Option<String>,
    /// The pod CIDRs this node owns: the node's own namespace routes them to the host
    /// port, and remote nodes route them here.
    #[serde(default)]
    pub pod_cidrs: Vec<String>,
    /// This node's underlay addresses (on the uplink, owned by the kernel): the VTEP
    /// addresses VXLAN is sent from and accepted on. One per family at most.
    #[serde(default)]
    pub underlay: Vec<IpAddr>,
    /// The VTEP MAC (inner source of encapsulated frames, and the inner destination
    /// accepted). Default: derived from the node name, as peers derive it.
    pub vtep_mac: Option<String>,
}

/// How pods reach pods on other nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Overlay {
    /// VXLAN to each peer's VTEP (the underlay routes only node addresses).
    #[default]
    Vxlan,
    /// Plain routing to each peer's underlay address (the nodes share an L2 segment,
    /// or the fabric routes pod CIDRs).
    Direct,
}

/// `[uplink]`: the NIC (every queue, one per worker). Its XDP program takes only what
/// is the switch's; everything else stays the kernel's.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UplinkConfig {
    /// The interface.
    pub interface: String,
    /// `vxlan` (default) or `direct`.
    #[serde(default)]
    pub mode: Overlay,
    /// The VNI of the pod overlay.
    #[serde(default = "default_vni")]
    pub vni: u32,
    /// VXLAN's UDP port.
    #[serde(default = "default_vxlan_port")]
    pub vxlan_port: u16,
    /// The network (with a gateway) that routes what comes from remote nodes: its
    /// gateway is where ICMP errors about their packets come from.
    pub network: String,
}

fn default_vni() -> u32 {
    1
}

fn default_vxlan_port() -> u16 {
    switch_core::wire::vxlan::PORT
}

/// `[[peers]]`: a remote node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    /// Its name (its VTEP MAC is derived from it unless given).
    pub name: String,
    /// Its underlay addresses; the first of a family this node has an underlay
    /// address in is used.
    pub underlay: Vec<IpAddr>,
    /// Its VTEP MAC (a Linux `vxlan` device's MAC, for a kernel peer).
    pub vtep_mac: Option<String>,
    /// Its pod CIDRs: routed to it.
    #[serde(default)]
    pub pod_cidrs: Vec<String>,
    /// The VNIs of stretched networks it carries too: what this node floods to it.
    #[serde(default)]
    pub vnis: Vec<u32>,
}

/// `[host_port]`: podswitchd creates a veth pair, `NAME-sw` (a switch port in
/// `network`) and `NAME` (in the daemon's namespace, with `addresses` and routes for
/// the node's pod CIDRs through the network's gateway).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostPortConfig {
    /// The node-side interface, at most 12 characters (the switch side adds "-sw").
    #[serde(default = "default_host_name")]
    pub name: String,
    /// The network it joins (it needs a gateway).
    pub network: String,
    /// The node side's addresses with their prefix length, inside the network's
    /// gateway subnets, e.g. ["198.18.255.2/24", "2001:db8:ff::2/64"].
    pub addresses: Vec<String>,
}

fn default_host_name() -> String {
    "podswitch0".into()
}

/// `[[routes]]`: a prefix and exactly one of `via`, `network`, `port` or `drop`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Destinations, e.g. "198.19.0.0/16".
    pub prefix: String,
    /// Next-hop address (inside some network's gateway subnet).
    pub via: Option<IpAddr>,
    /// Resolve destinations directly on this network.
    pub network: Option<String>,
    /// Resolve destinations on this port's network, send on this port.
    pub port: Option<String>,
    /// Drop (blackhole).
    #[serde(default)]
    pub drop: bool,
}

fn default_log_level() -> String {
    "info".into()
}

/// `[dataplane]`: keys left out take their defaults.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Dataplane {
    /// One worker per listed CPU, pinned to it. Keep them off the cores that send to
    /// the switch's veths (the kernel's receive work runs there).
    pub cores: Vec<usize>,
    /// "poll" (spin) or "backoff" (sleep up to `backoff_max_us` when idle).
    pub idle: Idle,
    /// Longest idle sleep, microseconds.
    pub backoff_max_us: u32,
    /// "auto", "require" or "off".
    pub hugepages: Hugepages,
    /// UMEM frame size: 2048 or 4096.
    pub frame_size: u32,
    /// Frames of each worker's own UMEM segment (for frames it builds itself); when
    /// absent, 1024. Ports bring segments of their own, sized by `ring_size`.
    pub umem_frames: Option<u32>,
    /// Entries in each AF_XDP ring (rx, tx, fill, completion): a power of two.
    pub ring_size: u32,
    /// "native-or-generic", "native" or "generic".
    pub xdp_mode: Mode,
    /// Port ids are below this.
    pub max_ports: u16,
    /// Learned MAC entries at most.
    pub fdb_capacity: u32,
    /// Routed packets per worker that may wait for their next hop to resolve.
    pub pending_packets: u32,
    /// How long a neighbour's answer is trusted before it is probed again, seconds.
    pub neighbour_reachable_s: u32,
    /// ARP requests / neighbour solicitations per resolution before it fails.
    pub neighbour_retries: u32,
    /// Between those, milliseconds.
    pub neighbour_retry_ms: u32,
}

impl Default for Dataplane {
    fn default() -> Self {
        Dataplane {
            cores: vec![1],
            idle: Idle::Poll,
            backoff_max_us: 200,
            hugepages: Hugepages::Auto,
            frame_size: 4096,
            umem_frames: None,
            ring_size: 512,
            xdp_mode: Mode::NativeOrGeneric,
            max_ports: 256,
            fdb_capacity: 65536,
            pending_packets: 256,
            neighbour_reachable_s: 30,
            neighbour_retries: 3,
            neighbour_retry_ms: 1000,
        }
    }
}

/// Idle policy names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Idle {
    /// Spin.
    Poll,
    /// Sleep when idle.
    Backoff,
}

/// Hugepage policy names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Hugepages {
    /// Use when free.
    Auto,
    /// Refuse to start without.
    Require,
    /// Never.
    Off,
}

/// XDP attach mode names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Native, else generic.
    NativeOrGeneric,
    /// Native only.
    Native,
    /// Generic only.
    Generic,
}

/// `[[networks]]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkConfig {
    /// Unique name.
    pub name: String,
    /// MAC ageing, seconds.
    #[serde(default = "default_ageing")]
    pub ageing_s: u32,
    /// Gateway addresses with the subnet length, at most one per family, e.g.
    /// ["198.18.1.1/24", "2001:db8:1::1/64"]. Empty: the network is not routed.
    #[serde(default)]
    pub gateway: Vec<String>,
    /// The gateway's MAC; derived from the network's name when absent (stable across
    /// restarts, so pods' ARP caches stay right).
    pub gateway_mac: Option<String>,
    /// Send IPv6 router advertisements (needs an IPv6 gateway address).
    #[serde(default)]
    pub router_advertisements: bool,
    /// Stretch the network across nodes as this VXLAN VNI (the L2 overlay): its
    /// floods are replicated to the peers that list the VNI, and MACs behind them
    /// are learned. Such a network is switched only (no gateway).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vni: Option<u32>,
}

fn default_ageing() -> u32 {
    300
}

/// `[[ports]]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortConfig {
    /// The interface (in the daemon's network namespace).
    pub name: String,
    /// Access port: the network of its untagged frames.
    pub network: Option<String>,
    /// Trunk port: VLAN → network.
    #[serde(default)]
    pub vlans: Vec<VlanConfig>,
    /// Trunk port: network of untagged frames.
    pub native: Option<String>,
    /// MACs behind this port, installed statically.
    #[serde(default)]
    pub macs: Vec<String>,
    /// The pod's addresses (static IPAM): installed as static neighbours with the
    /// port's one MAC, so the switch never has to ask for them.
    #[serde(default)]
    pub addresses: Vec<IpAddr>,
    /// The pod this port attaches (set by the pods API; absent for other ports).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodRef>,
    /// A vhost-user port (no kernel interface): the daemon serves its socket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vhost_user: Option<VhostUserConfig>,
}

/// A vhost-user port's socket owner: the pod's user, who alone (with root) may connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VhostUserConfig {
    /// Owner uid of the socket and its directory.
    pub uid: u32,
    /// Owner gid.
    pub gid: u32,
}

/// A pod's attachment, as the CNI names it: the container and its interface.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PodRef {
    /// CNI_CONTAINERID.
    pub container_id: String,
    /// CNI_IFNAME.
    pub ifname: String,
}

/// One VLAN on a trunk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VlanConfig {
    /// 1..=4094.
    pub vid: u16,
    /// Network name.
    pub network: String,
}

/// What the file says about routing, checked.
#[derive(Debug, Clone, Default)]
pub struct Routing {
    /// Routes for the switch (connected subnets are added by the tables).
    pub routes: Vec<RouteSpec>,
    /// Pods' configured addresses and MACs.
    pub neighbours: Vec<(NeighKey, EthernetAddress)>,
    /// The host port's node-side addresses and prefix lengths.
    pub host_addrs: Vec<(IpAddr, u8)>,
    /// Routes the node's namespace gets: pod CIDR via the gateway.
    pub node_routes: Vec<(Prefix, IpAddr)>,
}

impl HostPortConfig {
    /// The switch side's interface name.
    pub fn switch_side(&self) -> String {
        format!("{}-sw", self.name)
    }
}

/// Parses "ADDRESS/LENGTH".
fn parse_interface(s: &str) -> Result<(IpAddr, u8), String> {
    let err = || format!("{s:?} is not ADDRESS/LENGTH, e.g. 198.18.1.1/24 or 2001:db8:1::1/64");
    let (a, l) = s.split_once('/').ok_or_else(err)?;
    let ip: IpAddr = a.parse().map_err(|_| err())?;
    let len: u8 = l.parse().map_err(|_| err())?;
    if len > if ip.is_ipv4() { 32 } else { 128 } {
        return Err(err());
    }
    Ok((ip, len))
}

/// True if `ip` is a host address of `gw`'s subnet in its family.
pub fn in_subnet(gw: &Gateway, ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => gw.subnet4().is_some_and(|s| s.contains(a) && a != s.broadcast()),
        IpAddr::V6(a) => gw.subnet6().is_some_and(|s| s.contains(a)),
    }
}

/// True if `ip` is one of `gw`'s own addresses.
pub fn gw_owns(gw: &Gateway, ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => gw.v4.is_some_and(|(g, _)| g == a),
        IpAddr::V6(a) => gw.owns6(&a),
    }
}

impl NetworkConfig {
    /// The gateway this network asks for, if any.
    pub fn gateway_spec(&self) -> Result<Option<Gateway>, ConfigError> {
        let bad = |m: String| ConfigError::Invalid(format!("network {:?}: {m}", self.name));
        if self.gateway.is_empty() {
            if self.gateway_mac.is_some() || self.router_advertisements {
                return Err(bad("gateway_mac and router_advertisements need gateway addresses".into()));
            }
            return Ok(None);
        }
        let mut v4: Option<(Ipv4Addr, u8)> = None;
        let mut v6: Option<(Ipv6Addr, u8)> = None;
        for g in &self.gateway {
            match parse_interface(g).map_err(|e| bad(format!("gateway: {e}")))? {
                (IpAddr::V4(a), l) if v4.is_none() => v4 = Some((a, l)),
                (IpAddr::V6(a), l) if v6.is_none() => v6 = Some((a, l)),
                _ => return Err(bad("gateway: at most one address per family".into())),
            }
        }
        if self.router_advertisements && v6.is_none() {
            return Err(bad("router_advertisements needs an IPv6 gateway address".into()));
        }
        let mac = match &self.gateway_mac {
            Some(m) => m.parse().map_err(|e| bad(format!("gateway_mac: {e}")))?,
            None => derived_mac(&self.name),
        };
        Ok(Some(Gateway { mac, v4, v6, router_advertisements: self.router_advertisements }))
    }
}

/// A locally administered unicast MAC made from `name` (FNV-1a), the same on every
/// start: 02:70:73 ("ps") and three bytes of the hash.
pub fn derived_mac(name: &str) -> EthernetAddress {
    let mut h: u32 = 0x811c_9dc5;
    for b in name.bytes() {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    let b = h.to_be_bytes();
    EthernetAddress([0x02, 0x70, 0x73, b[1], b[2], b[3]])
}

/// A configuration that cannot be used, and why.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Unreadable file.
    #[error("cannot read {path}: {source}")]
    Read {
        /// Path.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// Bad TOML or a wrong key.
    #[error("{path}: {message}")]
    Parse {
        /// Path.
        path: String,
        /// What toml says (line, column, key).
        message: String,
    },
    /// Valid TOML, invalid meaning.
    #[error("{0}")]
    Invalid(String),
}

impl Config {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
        let cfg = Config::parse(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse { path: path.display().to_string(), message },
            ConfigError::Invalid(m) => ConfigError::Invalid(format!("{}: {m}", path.display())),
            e => e,
        })?;
        Ok(cfg)
    }

    /// Parses and validates TOML text.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let cfg: Config =
            toml::from_str(text).map_err(|e| ConfigError::Parse { path: "config".into(), message: e.to_string() })?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        let d = &self.dataplane;
        if d.cores.is_empty() {
            return bad("dataplane.cores is empty: list at least one CPU for a worker, e.g. cores = [1]".into());
        }
        let ncpu = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut seen = HashSet::new();
        for c in &d.cores {
            if *c >= ncpu {
                return bad(format!(
                    "dataplane.cores: CPU {c} does not exist (this machine has CPUs 0..={})",
                    ncpu - 1
                ));
            }
            if !seen.insert(c) {
                return bad(format!("dataplane.cores: CPU {c} is listed twice; one worker per core"));
            }
        }
        if d.frame_size != 2048 && d.frame_size != 4096 {
            return bad(format!("dataplane.frame_size = {}: must be 2048 or 4096", d.frame_size));
        }
        if !d.ring_size.is_power_of_two() || !(64..=16384).contains(&d.ring_size) {
            return bad(format!("dataplane.ring_size = {}: must be a power of two from 64 to 16384", d.ring_size));
        }
        if d.max_ports == 0 {
            return bad("dataplane.max_ports must be at least 1".into());
        }
        if d.pending_packets == 0 || d.neighbour_retries == 0 || d.neighbour_retry_ms == 0 {
            return bad("dataplane.pending_packets, neighbour_retries and neighbour_retry_ms must be at least 1".into());
        }
        if d.neighbour_reachable_s == 0 {
            return bad("dataplane.neighbour_reachable_s must be at least 1".into());
        }
        let topology = self.topology()?;
        self.routing(&topology)?;
        Ok(())
    }

    /// Worker idle policy.
    pub fn idle_policy(&self) -> IdlePolicy {
        match self.dataplane.idle {
            Idle::Poll => IdlePolicy::Poll,
            Idle::Backoff => IdlePolicy::Backoff { max_us: self.dataplane.backoff_max_us },
        }
    }

    /// Hugepage policy.
    pub fn hugepage_policy(&self) -> HugepagePolicy {
        match self.dataplane.hugepages {
            Hugepages::Auto => HugepagePolicy::Auto,
            Hugepages::Require => HugepagePolicy::Require,
            Hugepages::Off => HugepagePolicy::Off,
        }
    }

    /// XDP attach mode.
    pub fn xdp_mode(&self) -> XdpMode {
        match self.dataplane.xdp_mode {
            Mode::NativeOrGeneric => XdpMode::NativeOrGeneric,
            Mode::Native => XdpMode::Native,
            Mode::Generic => XdpMode::Generic,
        }
    }

    /// The networks and ports as the dataplane's specs, ids in file order.
    pub fn specs(&self) -> Result<(Vec<NetworkSpec>, Vec<PortSpec>), ConfigError> {
        let bad = |m: String| ConfigError::Invalid(m);
        let mut nets = Vec::new();
        for (i, n) in self.networks.iter().enumerate() {
            if n.name.is_empty() {
                return Err(bad(format!("networks[{i}]: name is empty")));
            }
            if n.ageing_s == 0 {
                return Err(bad(format!("network {:?}: ageing_s must be at least 1 second", n.name)));
            }
            if let Some(vni) = n.vni {
                if vni > switch_core::wire::vxlan::MAX_VNI {
                    return Err(bad(format!(
                        "network {:?}: vni = {vni}: a VNI has 24 bits (at most {})",
                        n.name,
                        switch_core::wire::vxlan::MAX_VNI
                    )));
                }
                if !n.gateway.is_empty() {
                    return Err(bad(format!(
                        "network {:?}: a network stretched across nodes (vni) is switched only; remove its gateway",
                        n.name
                    )));
                }
            }
            let id = match &self.ids {
                Some(ids) => {
                    *ids.networks.get(&n.name).ok_or_else(|| bad(format!("network {:?} has no id", n.name)))?
                }
                None => i as u16,
            };
            nets.push(NetworkSpec {
                id: NetworkId(id),
                name: n.name.clone(),
                ageing_s: n.ageing_s,
                gateway: n.gateway_spec()?,
            });
        }
        let net_id = |port: &str, name: &str| {
            nets.iter().find(|n| n.name == name).map(|n| n.id).ok_or_else(|| {
                let known: Vec<_> = nets.iter().map(|n| n.name.as_str()).collect();
                bad(format!("port {port:?}: network {name:?} is not defined (networks: {known:?})"))
            })
        };
        let mut ports = Vec::new();
        for (i, p) in self.ports.iter().enumerate() {
            if p.name.is_empty() || p.name.len() > 15 {
                return Err(bad(format!("ports[{i}]: interface name {:?} must be 1 to 15 characters", p.name)));
            }
            let mode = match (&p.network, p.vlans.is_empty(), &p.native) {
                (Some(n), true, None) => PortMode::Access { network: net_id(&p.name, n)? },
                (None, false, native) => {
                    let mut vlans = Vec::new();
                    for v in &p.vlans {
                        let vid = VlanId::new(v.vid).ok_or_else(|| {
                            bad(format!("port {:?}: VLAN {} is out of range (1 to 4094)", p.name, v.vid))
                        })?;
                        vlans.push((vid, net_id(&p.name, &v.network)?));
                    }
                    let native = native.as_deref().map(|n| net_id(&p.name, n)).transpose()?;
                    PortMode::Trunk { vlans, native }
                }
                (None, true, _) => {
                    return Err(bad(format!(
                        "port {:?}: give either network = \"NAME\" (access port) or vlans = [...] (trunk port)",
                        p.name
                    )))
                }
                (Some(_), _, _) => {
                    return Err(bad(format!(
                        "port {:?}: network (access) and vlans/native (trunk) cannot be combined",
                        p.name
                    )))
                }
            };
            let mut macs = Vec::new();
            for m in &p.macs {
                let mac: EthernetAddress = m.parse().map_err(|e| bad(format!("port {:?}: {e}", p.name)))?;
                if !mac.is_unicast() {
                    return Err(bad(format!("port {:?}: static MAC {m} must be a unicast address", p.name)));
                }
                macs.push(mac);
            }
            if !p.addresses.is_empty() && macs.len() != 1 {
                return Err(bad(format!(
                    "port {:?}: addresses need the pod's MAC to become static neighbours: give exactly one in macs",
                    p.name
                )));
            }
            let id = match &self.ids {
                Some(ids) => *ids.ports.get(&p.name).ok_or_else(|| bad(format!("port {:?} has no id", p.name)))?,
                None => i as u16,
            };
            ports.push(PortSpec { id: PortId(id), name: p.name.clone(), mode, static_macs: macs });
        }
        if let Some(u) = &self.uplink {
            if u.interface.is_empty() || u.interface.len() > 15 {
                return Err(bad(format!("uplink.interface {:?} must be 1 to 15 characters", u.interface)));
            }
            if ports.iter().any(|p| p.name == u.interface) {
                return Err(bad(format!("uplink: {:?} is also configured as a port", u.interface)));
            }
            if self.dataplane.max_ports < 3 {
                return Err(bad("dataplane.max_ports must be at least 3 with an uplink".into()));
            }
            ports.push(PortSpec {
                id: PortId(self.uplink_port_id()),
                name: u.interface.clone(),
                mode: PortMode::Uplink,
                static_macs: vec![],
            });
        }
        if let Some(h) = &self.host_port {
            if h.name.is_empty() || h.name.len() > 12 {
                return Err(bad(format!(
                    "host_port.name {:?} must be 1 to 12 characters (the switch side adds \"-sw\")",
                    h.name
                )));
            }
            let network = net_id("host_port", &h.network)?;
            let name = h.switch_side();
            if ports.iter().any(|p| p.name == name || p.name == h.name) {
                // (The uplink is in `ports` by now, so a clash with it is caught too.)
                return Err(bad(format!("host_port: a port named {name:?} or {:?} is already configured", h.name)));
            }
            // The last id is the host port's, so the API's ports never take it.
            ports.push(PortSpec {
                id: PortId(self.dataplane.max_ports - 1),
                name,
                mode: PortMode::Access { network },
                static_macs: vec![],
            });
        }
        Ok((nets, ports))
    }

    /// Resolution timers.
    pub fn neigh_config(&self) -> NeighConfig {
        let d = &self.dataplane;
        NeighConfig {
            retries: d.neighbour_retries,
            retry: Duration::from_millis(u64::from(d.neighbour_retry_ms)),
            reachable: Duration::from_secs(u64::from(d.neighbour_reachable_s)),
            ..NeighConfig::default()
        }
    }

    /// Routes, static neighbours and the node's routes, checked against `topology`.
    pub fn routing(&self, topology: &Topology) -> Result<Routing, ConfigError> {
        let bad = |m: String| ConfigError::Invalid(m);
        let net_id = |what: &str, name: &str| {
            topology
                .network_by_name(name)
                .map(|n| n.spec.id)
                .ok_or_else(|| bad(format!("{what}: network {name:?} is not defined")))
        };
        let mut routes = Vec::new();
        for r in &self.routes {
            let what = format!("route {:?}", r.prefix);
            let prefix: Prefix = r.prefix.parse().map_err(|e| bad(format!("{what}: {e}")))?;
            let target = match (r.via, &r.network, &r.port, r.drop) {
                (Some(ip), None, None, false) => RouteTarget::Via(ip),
                (None, Some(n), None, false) => RouteTarget::Network(net_id(&what, n)?),
                (None, None, Some(p), false) => RouteTarget::Port(
                    topology
                        .ports()
                        .find(|e| e.spec.name == *p)
                        .map(|e| e.spec.id)
                        .ok_or_else(|| bad(format!("{what}: port {p:?} is not defined")))?,
                ),
                (None, None, None, true) => RouteTarget::Drop,
                _ => return Err(bad(format!("{what}: give exactly one of via, network, port or drop = true"))),
            };
            routes.push(RouteSpec { prefix, target });
        }

        let mut host_addrs = Vec::new();
        let mut node_routes = Vec::new();
        if let Some(h) = &self.host_port {
            let net = topology.network(net_id("host_port", &h.network)?).expect("id from the topology");
            let Some(gw) = &net.spec.gateway else {
                return Err(bad(format!(
                    "host_port: network {:?} has no gateway; the node routes pods through it, so give it one",
                    h.network
                )));
            };
            for a in &h.addresses {
                let (ip, len) = parse_interface(a).map_err(|e| bad(format!("host_port: {e}")))?;
                if !in_subnet(gw, ip) || gw_owns(gw, ip) {
                    return Err(bad(format!(
                        "host_port: address {a} must be a host of network {:?}'s gateway subnet, other than the gateway",
                        h.network
                    )));
                }
                host_addrs.push((ip, len));
                // The switch's default route in this family goes to the node, unless
                // the file gives one.
                let default: Prefix = if ip.is_ipv4() { "0.0.0.0/0" } else { "::/0" }.parse().expect("valid");
                if !routes.iter().any(|r| r.prefix == default) {
                    routes.push(RouteSpec { prefix: default, target: RouteTarget::Via(ip) });
                }
            }
            for c in &self.node.pod_cidrs {
                let p: Prefix = c.parse().map_err(|e| bad(format!("node.pod_cidrs: {e}")))?;
                let via = match p {
                    Prefix::V4(_) => gw.v4.map(|(a, _)| IpAddr::V4(a)),
                    Prefix::V6(_) => gw.v6.map(|(a, _)| IpAddr::V6(a)),
                };
                let via = via.ok_or_else(|| {
                    bad(format!("node.pod_cidrs: {c}: network {:?} has no gateway address of that family", h.network))
                })?;
                node_routes.push((p, via));
            }
        } else if !self.node.pod_cidrs.is_empty() {
            for c in &self.node.pod_cidrs {
                c.parse::<Prefix>().map_err(|e| bad(format!("node.pod_cidrs: {e}")))?;
            }
        }
        routes.extend(self.peer_routes(topology)?);
        Routes::build(topology, &routes).map_err(|e| bad(e.to_string()))?;

        let mut neighbours = Vec::new();
        let by_name: std::collections::HashMap<&str, &switch_core::tables::topology::PortEntry> =
            topology.ports().map(|e| (e.spec.name.as_str(), e)).collect();
        // Who claims each address, so that two pods never get one.
        let mut owners: std::collections::HashMap<NeighKey, &str> = std::collections::HashMap::new();
        if let Some(h) = &self.host_port {
            if let Some(n) = topology.network_by_name(&h.network) {
                for (ip, _) in &host_addrs {
                    owners.insert(NeighKey::new(n.spec.id, *ip), "host_port");
                }
            }
        }
        for p in &self.ports {
            let Some(entry) = by_name.get(p.name.as_str()).copied() else { continue };
            for a in &p.addresses {
                let net =
                    topology.network(NetworkId(entry.untagged)).and_then(|n| n.spec.gateway.as_ref().map(|g| (n, g)));
                let Some((n, gw)) = net else {
                    return Err(bad(format!(
                        "port {:?}: address {a} needs the port's (untagged) network to have a gateway",
                        p.name
                    )));
                };
                if !in_subnet(gw, *a) || gw_owns(gw, *a) {
                    return Err(bad(format!(
                        "port {:?}: address {a} is not a host of network {:?}'s gateway subnet",
                        p.name, n.spec.name
                    )));
                }
                let key = NeighKey::new(n.spec.id, *a);
                if let Some(other) = owners.insert(key, &p.name) {
                    return Err(bad(format!("port {:?}: address {a} is already {other:?}'s", p.name)));
                }
                neighbours.push((key, entry.spec.static_macs[0]));
            }
        }
        Ok(Routing { routes, neighbours, host_addrs, node_routes })
    }

    /// The compiled topology.
    pub fn topology(&self) -> Result<Topology, ConfigError> {
        let (nets, ports) = self.specs()?;
        Topology::new(&nets, &ports, self.dataplane.max_ports).map_err(|e| ConfigError::Invalid(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
        metrics_address = "127.0.0.1:9464"
        [dataplane]
        cores = [0]
        idle = "backoff"
        [[networks]]
        name = "red"
        [[networks]]
        name = "blue"
        ageing_s = 10
        [[ports]]
        name = "veth-a"
        network = "red"
        macs = ["02:00:00:00:00:0a"]
        [[ports]]
        name = "trunk0"
        vlans = [{ vid = 100, network = "red" }, { vid = 200, network = "blue" }]
    "#;

    #[test]
    fn good_config_compiles() {
        let c = Config::parse(GOOD).unwrap();
        assert_eq!(c.dataplane.ring_size, 512, "defaults fill what the file leaves out");
        assert_eq!(c.idle_policy(), IdlePolicy::Backoff { max_us: 200 });
        let t = c.topology().unwrap();
        assert_eq!(t.network_by_name("blue").unwrap().spec.ageing_s, 10);
        assert_eq!(t.ports().count(), 2);
    }

    fn err(text: &str) -> String {
        Config::parse(text).unwrap_err().to_string()
    }

    #[test]
    fn errors_name_the_problem() {
        let e = err("[dataplane]\ncores = [0]\nring_sise = 64\n");
        assert!(e.contains("ring_sise"), "{e}");
        let e = err("[dataplane]\ncores = []\n");
        assert!(e.contains("cores is empty"), "{e}");
        let e = err("[dataplane]\ncores = [9999]\n");
        assert!(e.contains("CPU 9999 does not exist"), "{e}");
        let e = err("[dataplane]\ncores = [0]\nring_size = 1000\n");
        assert!(e.contains("power of two"), "{e}");
        let e = err("[dataplane]\ncores=[0]\n[[ports]]\nname = \"a\"\nnetwork = \"nope\"\n");
        assert!(e.contains("network \"nope\" is not defined"), "{e}");
        let e = err("[dataplane]\ncores=[0]\n[[networks]]\nname=\"n\"\n[[ports]]\nname = \"a\"\n");
        assert!(e.contains("either network"), "{e}");
        let e = err("[dataplane]\ncores=[0]\n[[networks]]\nname=\"n\"\n[[ports]]\nname=\"a\"\nvlans=[{vid=4095, network=\"n\"}]\n");
        assert!(e.contains("VLAN 4095 is out of range"), "{e}");
        let e = err(
            "[dataplane]\ncores=[0]\n[[networks]]\nname=\"n\"\n[[ports]]\nname=\"a\"\nnetwork=\"n\"\nmacs=[\"zz\"]\n",
        );
        assert!(e.contains("invalid MAC"), "{e}");
        let e = err("[dataplane]\ncores=[0]\n[[networks]]\nname=\"n\"\n[[ports]]\nname=\"a\"\nnetwork=\"n\"\n[[ports]]\nname=\"a\"\nnetwork=\"n\"\n");
        assert!(e.contains("duplicate port"), "{e}");
        let e = err("[dataplane]\ncores=[0]\nhugepages = \"sometimes\"\n");
        assert!(e.contains("sometimes"), "{e}");
    }

    const ROUTED: &str = r#"
        [dataplane]
        cores = [0]
        [node]
        pod_cidrs = ["198.18.0.0/16", "2001:db8::/32"]
        [host_port]
        network = "host"
        addresses = ["198.18.255.2/24", "2001:db8:ff::2/64"]
        [[networks]]
        name = "pods"
        gateway = ["198.18.1.1/24", "2001:db8:1::1/64"]
        router_advertisements = true
        [[networks]]
        name = "host"
        gateway = ["198.18.255.1/24", "2001:db8:ff::1/64"]
        gateway_mac = "02:00:00:00:ff:01"
        [[ports]]
        name = "pod0"
        network = "pods"
        macs = ["02:00:00:00:00:0a"]
        addresses = ["198.18.1.10", "2001:db8:1::10"]
        [[routes]]
        prefix = "198.19.0.0/16"
        via = "198.18.1.254"
        [[routes]]
        prefix = "198.19.66.0/24"
        drop = true
    "#;

    #[test]
    fn routed_config_compiles() {
        let c = Config::parse(ROUTED).unwrap();
        let t = c.topology().unwrap();
        let pods = t.network_by_name("pods").unwrap();
        let gw = pods.spec.gateway.as_ref().unwrap();
        assert_eq!(gw.mac, derived_mac("pods"), "a stable MAC from the name");
        assert!(gw.router_advertisements);
        assert_eq!(t.ports().count(), 2, "the host port is a port");
        assert!(t.ports().any(|p| p.spec.name == "podswitch0-sw"));
        let r = c.routing(&t).unwrap();
        assert_eq!(r.routes.len(), 4, "two configured, two defaults to the node");
        assert_eq!(r.neighbours.len(), 2, "the pod's two addresses");
        assert_eq!(r.node_routes.len(), 2);
        assert_eq!(r.node_routes[0].1, "198.18.255.1".parse::<IpAddr>().unwrap());
        let routes = Routes::build(&t, &r.routes).unwrap();
        assert_eq!(
            routes.lookup4("8.8.8.8".parse().unwrap()),
            Some(switch_core::tables::Hop::Via {
                network: t.network_by_name("host").unwrap().spec.id,
                ip: "198.18.255.2".parse().unwrap()
            }),
            "the default route goes to the node"
        );
    }

    #[test]
    fn routing_errors_name_the_problem() {
        let with = |from: &str, to: &str| {
            assert!(ROUTED.contains(from), "{from}");
            err(&ROUTED.replace(from, to))
        };
        let e = with("\"198.18.1.1/24\"", "\"198.18.1.0/24\"");
        assert!(e.contains("not a host address"), "{e}");
        let e = with("\"198.18.1.1/24\"", "\"198.18.1.1/24\", \"198.18.9.1/24\"");
        assert!(e.contains("at most one address per family"), "{e}");
        let e = with("drop = true", "drop = true\nvia = \"198.18.1.9\"");
        assert!(e.contains("exactly one of via, network, port or drop"), "{e}");
        let e = with("via = \"198.18.1.254\"", "via = \"192.0.2.1\"");
        assert!(e.contains("not inside any network's gateway subnet"), "{e}");
        let e = with("macs = [\"02:00:00:00:00:0a\"]", "");
        assert!(e.contains("give exactly one in macs"), "{e}");
        let e = with("\"198.18.1.10\"", "\"198.18.7.10\"");
        assert!(e.contains("not a host of network \"pods\""), "{e}");
        let e = with("\"198.18.255.2/24\"", "\"198.18.255.1/24\"");
        assert!(e.contains("other than the gateway"), "{e}");
        let e = with("prefix = \"198.19.0.0/16\"", "prefix = \"198.19.0.1/16\"");
        assert!(e.contains("host bits"), "{e}");
        let e = with("gateway = [\"198.18.255.1/24\", \"2001:db8:ff::1/64\"]", "");
        assert!(e.contains("gateway_mac and router_advertisements need gateway addresses"), "{e}");
        let e = err(&ROUTED
            .replace("gateway = [\"198.18.255.1/24\", \"2001:db8:ff::1/64\"]", "")
            .replace("gateway_mac = \"02:00:00:00:ff:01\"", ""));
        assert!(e.contains("has no gateway"), "{e}");
    }
}
