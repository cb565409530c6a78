//! The node's uplink and its peers, from the configuration: the uplink's port, the
//! routes to every peer's pod CIDRs, the tunnel table's parts and the uplink's XDP
//! filter, each validated with a message that says what to change.

use crate::config::{derived_mac, Config, ConfigError, Overlay, PeerConfig};
use std::net::IpAddr;
use switch_core::tables::{L2Vni, PeerSpec, Prefix, RouteSpec, RouteTarget, Topology, TunnelMode, TunnelSpec};
use switch_core::wire::{vxlan, EthernetAddress};
use switch_core::xdp::insn::UplinkFilter;

fn bad(m: String) -> ConfigError {
    ConfigError::Invalid(m)
}

/// True if the two prefixes share an address.
fn overlap(a: &Prefix, b: &Prefix) -> bool {
    match (a, b) {
        (Prefix::V4(a), Prefix::V4(b)) => a.contains(b.addr()) || b.contains(a.addr()),
        (Prefix::V6(a), Prefix::V6(b)) => a.contains(b.addr()) || b.contains(a.addr()),
        _ => false,
    }
}

/// The host name, for a node without `node.name`.
fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into the buffer it is given.
    #[allow(unsafe_code)]
    let r = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    if r == 0 && end > 0 {
        String::from_utf8_lossy(&buf[..end]).into_owned()
    } else {
        "node".into()
    }
}

/// The VTEP MAC a node named `name` derives (the same on every node, so that peers
/// agree without configuring it).
pub fn vtep_mac_of(name: &str) -> EthernetAddress {
    derived_mac(&format!("vtep/{name}"))
}

fn parse_mac(what: &str, s: &str) -> Result<EthernetAddress, ConfigError> {
    let mac: EthernetAddress = s.parse().map_err(|e| bad(format!("{what}: {e}")))?;
    if !mac.is_unicast() || mac.0 == [0; 6] {
        return Err(bad(format!("{what}: {s} must be a unicast address")));
    }
    Ok(mac)
}

/// What the tunnel table is built from; control adds the peers' next hops' MACs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelParts {
    /// This node's end.
    pub local: TunnelSpec,
    /// The peers, in the file's order (peer `i` is tunnel peer `i`).
    pub peers: Vec<PeerSpec>,
    /// The networks stretched across nodes.
    pub l2: Vec<L2Vni>,
}

impl Config {
    /// The uplink port's id: the one below the host port's, so the API's ports never
    /// take it.
    pub fn uplink_port_id(&self) -> u16 {
        self.dataplane.max_ports - 2
    }

    /// The lowest port id the daemon keeps for itself (host port, uplink); the API's
    /// ports get ids below it.
    pub fn first_reserved_port_id(&self) -> u16 {
        if self.uplink.is_some() {
            self.uplink_port_id()
        } else {
            self.dataplane.max_ports - u16::from(self.host_port.is_some())
        }
    }

    /// The node's name.
    pub fn node_name(&self) -> String {
        self.node.name.clone().unwrap_or_else(hostname)
    }

    /// This node's VTEP MAC.
    pub fn vtep_mac(&self) -> Result<EthernetAddress, ConfigError> {
        match &self.node.vtep_mac {
            Some(m) => parse_mac("node.vtep_mac", m),
            None => Ok(vtep_mac_of(&self.node_name())),
        }
    }

    /// The address `p` is reached at: its first underlay address of a family this
    /// node has one in (in direct mode, its first).
    fn peer_underlay(&self, p: &PeerConfig) -> Result<IpAddr, ConfigError> {
        let direct = self.uplink.as_ref().is_some_and(|u| u.mode == Overlay::Direct);
        p.underlay
            .iter()
            .copied()
            .find(|a| direct || self.node.underlay.iter().any(|l| l.is_ipv4() == a.is_ipv4()))
            .ok_or_else(|| {
                bad(format!(
                    "peer {:?}: none of its underlay addresses {:?} is of a family this node has an underlay \
                     address in (node.underlay = {:?})",
                    p.name, p.underlay, self.node.underlay
                ))
            })
    }

    /// Checks `[uplink]`, `node.underlay` and `[[peers]]`; returns the routes to the
    /// peers' pod CIDRs (peer `i` of the file is tunnel peer `i`).
    pub(crate) fn peer_routes(&self, topology: &Topology) -> Result<Vec<RouteSpec>, ConfigError> {
        let stretched: Vec<(u32, &str)> =
            self.networks.iter().filter_map(|n| n.vni.map(|v| (v, n.name.as_str()))).collect();
        let Some(u) = &self.uplink else {
            if !self.peers.is_empty() {
                return Err(bad("peers need an [uplink]: the interface that reaches them".into()));
            }
            if let Some((_, name)) = stretched.first() {
                return Err(bad(format!(
                    "network {name:?} is stretched across nodes (vni) but there is no [uplink] to carry it"
                )));
            }
            return Ok(vec![]);
        };
        if let Some((_, name)) = stretched.first().filter(|_| u.mode == Overlay::Direct) {
            return Err(bad(format!(
                "network {name:?}: networks are stretched across nodes (vni) in VXLAN mode only, and uplink.mode \
                 is direct"
            )));
        }
        for (i, (vni, name)) in stretched.iter().enumerate() {
            if *vni == u.vni {
                return Err(bad(format!(
                    "network {name:?}: vni = {vni} is the uplink's L3 overlay VNI (uplink.vni); choose another"
                )));
            }
            if let Some((_, other)) = stretched[..i].iter().find(|(v, _)| v == vni) {
                return Err(bad(format!("network {name:?}: vni = {vni} is network {other:?}'s already")));
            }
        }
        let net = topology
            .network_by_name(&u.network)
            .ok_or_else(|| bad(format!("uplink.network: network {:?} is not defined", u.network)))?;
        if net.spec.gateway.is_none() {
            return Err(bad(format!(
                "uplink.network: network {:?} has no gateway; packets from remote nodes are routed by it, so give it one",
                u.network
            )));
        }
        if u.vni > vxlan::MAX_VNI {
            return Err(bad(format!("uplink.vni = {}: a VNI has 24 bits (at most {})", u.vni, vxlan::MAX_VNI)));
        }
        if u.vxlan_port == 0 {
            return Err(bad("uplink.vxlan_port must not be 0".into()));
        }
        if self.dataplane.max_ports < 3 {
            return Err(bad("dataplane.max_ports must be at least 3 with an uplink".into()));
        }
        let fams = (
            self.node.underlay.iter().filter(|a| a.is_ipv4()).count(),
            self.node.underlay.iter().filter(|a| a.is_ipv6()).count(),
        );
        if fams.0 > 1 || fams.1 > 1 {
            return Err(bad("node.underlay: at most one address per family".into()));
        }
        if u.mode == Overlay::Vxlan && self.node.underlay.is_empty() {
            return Err(bad(
                "node.underlay is empty: VXLAN needs this node's address on the uplink, e.g. underlay = [\"198.19.0.1\"]"
                    .into(),
            ));
        }
        let own: Vec<Prefix> = self
            .node
            .pod_cidrs
            .iter()
            .map(|c| c.parse().map_err(|e| bad(format!("node.pod_cidrs: {e}"))))
            .collect::<Result<_, _>>()?;
        if u.mode == Overlay::Direct && own.is_empty() {
            return Err(bad(
                "node.pod_cidrs is empty: in direct mode the uplink takes traffic for this node's pod CIDRs only"
                    .into(),
            ));
        }
        self.vtep_mac()?;
        let mut routes = Vec::new();
        // Every peer's CIDRs so far, with its name.
        let mut claimed: Vec<(Prefix, &str)> = Vec::new();
        let mut names = std::collections::HashSet::new();
        for (i, p) in self.peers.iter().enumerate() {
            if p.name.is_empty() || !names.insert(p.name.as_str()) {
                return Err(bad(format!("peers[{i}]: name {:?} is empty or given twice", p.name)));
            }
            self.peer_underlay(p)?;
            if let Some(m) = &p.vtep_mac {
                parse_mac(&format!("peer {:?}: vtep_mac", p.name), m)?;
            }
            if p.pod_cidrs.is_empty() && p.vnis.is_empty() {
                return Err(bad(format!(
                    "peer {:?}: pod_cidrs and vnis are empty: nothing would be sent to it",
                    p.name
                )));
            }
            for (k, v) in p.vnis.iter().enumerate() {
                if !stretched.iter().any(|(s, _)| s == v) {
                    return Err(bad(format!(
                        "peer {:?}: vnis: no network is stretched as VNI {v} (set vni on a network)",
                        p.name
                    )));
                }
                if p.vnis[..k].contains(v) {
                    return Err(bad(format!("peer {:?}: vnis: {v} is listed twice", p.name)));
                }
            }
            for c in &p.pod_cidrs {
                let prefix: Prefix = c.parse().map_err(|e| bad(format!("peer {:?}: pod_cidrs: {e}", p.name)))?;
                if let Some(o) = own.iter().find(|o| overlap(o, &prefix)) {
                    return Err(bad(format!(
                        "peer {:?}: pod CIDR {prefix} overlaps this node's own {o}: every node needs its own",
                        p.name
                    )));
                }
                if let Some((o, other)) = claimed.iter().find(|(o, _)| overlap(o, &prefix)) {
                    return Err(bad(format!(
                        "peer {:?}: pod CIDR {prefix} overlaps peer {other:?}'s {o}: every node needs its own",
                        p.name
                    )));
                }
                claimed.push((prefix, p.name.as_str()));
                routes.push(RouteSpec { prefix, target: RouteTarget::Peer(i as u16) });
            }
        }
        Ok(routes)
    }

    /// The tunnel table's parts (peers without their next hops' MACs), given the
    /// uplink's MAC and MTU; None without an uplink.
    pub fn tunnel_parts(
        &self,
        topology: &Topology,
        uplink_mac: EthernetAddress,
        uplink_mtu: u32,
    ) -> Result<Option<TunnelParts>, ConfigError> {
        let Some(u) = &self.uplink else { return Ok(None) };
        let network = topology
            .network_by_name(&u.network)
            .map(|n| n.spec.id)
            .ok_or_else(|| bad(format!("uplink.network: network {:?} is not defined", u.network)))?;
        let local = TunnelSpec {
            uplink: switch_core::tables::PortId(self.uplink_port_id()),
            mode: match u.mode {
                Overlay::Vxlan => TunnelMode::Vxlan,
                Overlay::Direct => TunnelMode::Direct,
            },
            uplink_mac,
            uplink_mtu,
            vtep_mac: self.vtep_mac()?,
            local4: self.node.underlay.iter().find_map(|a| match a {
                IpAddr::V4(a) => Some(*a),
                IpAddr::V6(_) => None,
            }),
            local6: self.node.underlay.iter().find_map(|a| match a {
                IpAddr::V6(a) => Some(*a),
                IpAddr::V4(_) => None,
            }),
            udp_port: u.vxlan_port,
            vni: u.vni,
            network,
        };
        let mut peers = Vec::new();
        for p in &self.peers {
            peers.push(PeerSpec {
                name: p.name.clone(),
                underlay: self.peer_underlay(p)?,
                vtep_mac: match &p.vtep_mac {
                    Some(m) => parse_mac("vtep_mac", m)?,
                    None => vtep_mac_of(&p.name),
                },
                next_hop: None,
            });
        }
        let mut l2 = Vec::new();
        for n in &self.networks {
            let Some(vni) = n.vni else { continue };
            let network = topology
                .network_by_name(&n.name)
                .map(|e| e.spec.id)
                .ok_or_else(|| bad(format!("network {:?} is not defined", n.name)))?;
            let carriers = self.peers.iter().enumerate().filter(|(_, p)| p.vnis.contains(&vni));
            l2.push(L2Vni { vni, network, peers: carriers.map(|(i, _)| i as u16).collect() });
        }
        Ok(Some(TunnelParts { local, peers, l2 }))
    }

    /// What the uplink's XDP program steers to the switch.
    pub fn uplink_filter(&self) -> Option<UplinkFilter> {
        let u = self.uplink.as_ref()?;
        let mut f = UplinkFilter::default();
        match u.mode {
            Overlay::Vxlan => {
                let v4 = self.node.underlay.iter().find_map(|a| match a {
                    IpAddr::V4(a) => Some(*a),
                    IpAddr::V6(_) => None,
                });
                let v6 = self.node.underlay.iter().find_map(|a| match a {
                    IpAddr::V6(a) => Some(*a),
                    IpAddr::V4(_) => None,
                });
                f.vxlan = Some((v4, v6, u.vxlan_port));
            }
            Overlay::Direct => {
                for c in &self.node.pod_cidrs {
                    match c.parse::<Prefix>() {
                        Ok(Prefix::V4(p)) => f.prefixes4.push((p.addr(), p.len())),
                        Ok(Prefix::V6(p)) => f.prefixes6.push((p.addr(), p.len())),
                        Err(_) => {}
                    }
                }
            }
        }
        Some(f)
    }

    /// The pod MTU with the uplink's MTU known: the uplink's minus VXLAN's overhead
    /// (70 bytes if any peer is reached over IPv6, else 50; none in direct mode),
    /// within what a pod port carries.
    pub fn pod_mtu_over(&self, uplink_mtu: Option<u32>) -> u32 {
        let (Some(u), Some(mtu)) = (&self.uplink, uplink_mtu) else { return self.pod_mtu() };
        let overhead = match u.mode {
            Overlay::Direct => 0,
            Overlay::Vxlan => {
                let v6 = self.peers.iter().any(|p| self.peer_underlay(p).is_ok_and(|a| a.is_ipv6()))
                    || (self.peers.is_empty() && self.node.underlay.iter().any(|a| a.is_ipv6()));
                // Outer IP, UDP and VXLAN headers, and the inner Ethernet header.
                if v6 {
                    vxlan::OVERHEAD_V6 as u32
                } else {
                    vxlan::OVERHEAD_V4 as u32
                }
            }
        };
        mtu.saturating_sub(overhead).min(self.max_pod_mtu())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODE: &str = r#"
        [dataplane]
        cores = [0]
        [node]
        name = "a"
        pod_cidrs = ["198.18.1.0/24", "2001:db8:1::/64"]
        underlay = ["198.19.0.1"]
        [uplink]
        interface = "eth0"
        network = "pods"
        [[networks]]
        name = "pods"
        gateway = ["198.18.1.1/24", "2001:db8:1::1/64"]
        [[peers]]
        name = "b"
        underlay = ["2001:db8:ff::2", "198.19.0.2"]
        pod_cidrs = ["198.18.2.0/24", "2001:db8:2::/64"]
    "#;

    fn err(from: &str, to: &str) -> String {
        assert!(NODE.contains(from), "{from}");
        Config::parse(&NODE.replace(from, to)).unwrap_err().to_string()
    }

    #[test]
    fn peers_compile_into_routes_and_tunnel_parts() {
        let c = Config::parse(NODE).unwrap();
        let t = c.topology().unwrap();
        assert!(t.ports().any(|p| p.spec.name == "eth0" && p.spec.mode == switch_core::tables::PortMode::Uplink));
        let r = c.routing(&t).unwrap();
        let peer_routes: Vec<_> = r.routes.iter().filter(|r| r.target == RouteTarget::Peer(0)).collect();
        assert_eq!(peer_routes.len(), 2, "both of b's pod CIDRs");
        let TunnelParts { local, peers, l2 } =
            c.tunnel_parts(&t, EthernetAddress([2, 0, 0, 0, 0, 1]), 1500).unwrap().unwrap();
        assert!(l2.is_empty());
        assert_eq!(local.vtep_mac, vtep_mac_of("a"));
        assert_eq!(local.vni, 1);
        assert_eq!(peers[0].underlay, "198.19.0.2".parse::<IpAddr>().unwrap(), "the family this node has");
        assert_eq!(peers[0].vtep_mac, vtep_mac_of("b"), "derived from its name, as b derives it");
        assert_eq!(c.pod_mtu_over(Some(1500)), 1450);
        assert_eq!(c.pod_mtu_over(Some(9000)), c.max_pod_mtu(), "never above what a pod port carries");
        assert_eq!(c.first_reserved_port_id(), c.dataplane.max_ports - 2);
        let f = c.uplink_filter().unwrap();
        assert_eq!(f.vxlan, Some((Some("198.19.0.1".parse().unwrap()), None, 4789)));
    }

    #[test]
    fn bad_overlays_are_refused_with_the_reason() {
        let e = err("[uplink]\n        interface = \"eth0\"\n        network = \"pods\"", "");
        assert!(e.contains("peers need an [uplink]"), "{e}");
        let e = err(
            "network = \"pods\"\n        [[networks]]",
            "network = \"pods\"\n        vni = 16777216\n        [[networks]]",
        );
        assert!(e.contains("24 bits"), "{e}");
        let e = err("pod_cidrs = [\"198.18.2.0/24\"", "pod_cidrs = [\"198.18.1.128/25\"");
        assert!(e.contains("overlaps this node's own"), "{e}");
        let e = err("underlay = [\"2001:db8:ff::2\", \"198.19.0.2\"]", "underlay = [\"2001:db8:ff::2\"]");
        assert!(e.contains("none of its underlay addresses"), "{e}");
        let e = err("underlay = [\"198.19.0.1\"]", "");
        assert!(e.contains("node.underlay is empty"), "{e}");
        let e = err("network = \"pods\"\n        [[networks]]", "network = \"nope\"\n        [[networks]]");
        assert!(e.contains("network \"nope\" is not defined"), "{e}");
        let e = err("name = \"b\"", "name = \"b\"\n        vtep_mac = \"01:00:5e:00:00:01\"");
        assert!(e.contains("unicast"), "{e}");
    }

    /// NODE with network "blue" stretched as VNI 100 to peer b, and peer c carrying
    /// VNIs only.
    const STRETCHED: &str = r#"
        [[networks]]
        name = "blue"
        vni = 100
        [[peers]]
        name = "c"
        underlay = ["198.19.0.3"]
        vnis = [100]
    "#;

    /// NODE and STRETCHED, with b carrying VNI 100 too, and `from` replaced by `to`.
    fn stretched(from: &str, to: &str) -> Result<Config, String> {
        let b_cidrs = "pod_cidrs = [\"198.18.2.0/24\", \"2001:db8:2::/64\"]";
        let text = format!("{NODE}{STRETCHED}").replacen(b_cidrs, &format!("{b_cidrs}\n        vnis = [100]"), 1);
        assert!(text.contains(from), "{from}");
        Config::parse(&text.replace(from, to)).map_err(|e| e.to_string())
    }

    #[test]
    fn stretched_networks_compile_to_their_vni_and_peers() {
        let c = stretched("", "").unwrap();
        let t = c.topology().unwrap();
        let parts = c.tunnel_parts(&t, EthernetAddress([2, 0, 0, 0, 0, 1]), 1500).unwrap().unwrap();
        let blue = t.network_by_name("blue").unwrap().spec.id;
        assert_eq!(parts.l2, vec![L2Vni { vni: 100, network: blue, peers: [0, 1].into() }]);
        let r = c.routing(&t).unwrap();
        assert!(!r.routes.iter().any(|r| r.target == RouteTarget::Peer(1)), "c has no pod CIDRs: no routes");
    }

    #[test]
    fn bad_stretched_networks_are_refused_with_the_reason() {
        let err = |from: &str, to: &str| stretched(from, to).unwrap_err();
        let e = err("vni = 100\n", "vni = 1\n");
        assert!(e.contains("uplink's L3 overlay VNI"), "{e}");
        let e = err("vni = 100\n", "vni = 16777216\n");
        assert!(e.contains("24 bits"), "{e}");
        let e = err("vni = 100\n", "vni = 100\n        gateway = [\"198.18.9.1/24\"]\n");
        assert!(e.contains("remove its gateway"), "{e}");
        let e = err(
            "underlay = [\"198.19.0.3\"]\n        vnis = [100]",
            "underlay = [\"198.19.0.3\"]\n        vnis = [200]",
        );
        assert!(e.contains("no network is stretched as VNI 200"), "{e}");
        let e = err(
            "underlay = [\"198.19.0.3\"]\n        vnis = [100]",
            "underlay = [\"198.19.0.3\"]\n        vnis = [100, 100]",
        );
        assert!(e.contains("listed twice"), "{e}");
        let e = err("underlay = [\"198.19.0.3\"]\n        vnis = [100]", "underlay = [\"198.19.0.3\"]");
        assert!(e.contains("pod_cidrs and vnis are empty"), "{e}");
        let e = err("network = \"pods\"\n", "network = \"pods\"\n        mode = \"direct\"\n");
        assert!(e.contains("VXLAN mode only"), "{e}");
        let e = err(
            "name = \"blue\"",
            "name = \"blue\"\n        vni = 100\n        [[networks]]\n        name = \"green\"",
        );
        assert!(e.contains("is network \"blue\"'s already"), "{e}");
    }
}
