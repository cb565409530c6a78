//! Routes: what control asks for ([`RouteSpec`]), compiled with the networks' connected
//! subnets into one snapshot ([`Routes`]) of two FIBs and the hops they point at.
//!
//! Every network with a gateway contributes a connected route for each of its subnets
//! (destinations there are resolved directly on the network). A configured route points
//! at a network, a port, a next-hop address (which must sit in some network's connected
//! subnet, so the switch knows where to resolve it), a remote node (a peer of the
//! tunnel table, which control keeps consistent with these routes) or a drop. A configured route for
//! exactly a connected prefix replaces the connected one.

use super::fib::{Fib4, Fib6, Ipv4Prefix, Ipv6Prefix};
use super::topology::{NetworkId, PortId, Topology};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// An IPv4 or IPv6 prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Prefix {
    /// IPv4.
    V4(Ipv4Prefix),
    /// IPv6.
    V6(Ipv6Prefix),
}

impl core::fmt::Display for Prefix {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Prefix::V4(p) => p.fmt(f),
            Prefix::V6(p) => p.fmt(f),
        }
    }
}

impl core::str::FromStr for Prefix {
    type Err = super::fib::PrefixError;
    fn from_str(s: &str) -> Result<Prefix, Self::Err> {
        if s.contains(':') {
            s.parse().map(Prefix::V6)
        } else {
            s.parse().map(Prefix::V4)
        }
    }
}

/// Where a configured route sends packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteTarget {
    /// Resolve the destination itself on this network (which needs a gateway in the
    /// route's family).
    Network(NetworkId),
    /// Resolve the destination on this port's untagged network, and send on this port
    /// only.
    Port(PortId),
    /// Send to this neighbour (resolved on the network whose subnet holds it).
    Via(IpAddr),
    /// Drop silently (a blackhole route), counted as `route_drop`.
    Drop,
    /// Send to remote node `i` of the tunnel table (through VXLAN, or straight over
    /// the underlay in direct-routing mode).
    Peer(u16),
}

/// A route as control asks for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteSpec {
    /// Destinations.
    pub prefix: Prefix,
    /// Where they go.
    pub target: RouteTarget,
}

/// What a FIB entry does, compiled for the worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hop {
    /// Resolve the packet's destination on `network`; if `port` is set, send there
    /// without looking the MAC up.
    Connected {
        /// Egress network.
        network: NetworkId,
        /// Fixed egress port.
        port: Option<PortId>,
    },
    /// Resolve `ip` on `network`.
    Via {
        /// Egress network.
        network: NetworkId,
        /// The neighbour.
        ip: IpAddr,
    },
    /// Drop.
    Drop,
    /// To remote node `i` of [`Tunnel::peers`](super::Tunnel::peers).
    Peer(u16),
}

/// A route that cannot be installed, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// The target network has no gateway address in the prefix's family.
    #[error("route {prefix}: network {network:?} has no {family} gateway address to send from; give it one")]
    NoGateway {
        /// The route.
        prefix: String,
        /// Network name.
        network: String,
        /// "IPv4" or "IPv6".
        family: &'static str,
    },
    /// The next hop is not in any connected subnet.
    #[error("route {prefix}: next hop {via} is not inside any network's gateway subnet, so it cannot be resolved")]
    ViaNotConnected {
        /// The route.
        prefix: String,
        /// The next hop.
        via: IpAddr,
    },
    /// Family mismatch between prefix and next hop.
    #[error("route {prefix}: next hop {via} is not of the prefix's family")]
    FamilyMismatch {
        /// The route.
        prefix: String,
        /// The next hop.
        via: IpAddr,
    },
    /// Unknown network or port, or a port without an untagged network.
    #[error("route {prefix}: {reason}")]
    BadTarget {
        /// The route.
        prefix: String,
        /// What is wrong.
        reason: String,
    },
    /// The same prefix twice.
    #[error("route {prefix} is given twice")]
    Duplicate {
        /// The route.
        prefix: String,
    },
}

/// The routing snapshot: both FIBs and the hops their values index.
#[derive(Debug, Default)]
pub struct Routes {
    fib4: Fib4,
    fib6: Fib6,
    hops: Box<[Hop]>,
    /// Every route with its hop, connected ones included, for the API and tests.
    pub table: Vec<(Prefix, Hop)>,
}

impl Routes {
    /// No routes.
    pub fn empty() -> Routes {
        Routes::default()
    }

    /// Compiles the connected subnets of `topology` and `specs`, validating each.
    pub fn build(topology: &Topology, specs: &[RouteSpec]) -> Result<Routes, RouteError> {
        let mut table: Vec<(Prefix, Hop)> = Vec::new();
        for n in topology.networks() {
            let Some(gw) = &n.spec.gateway else { continue };
            let hop = Hop::Connected { network: n.spec.id, port: None };
            if let Some(s) = gw.subnet4() {
                table.push((Prefix::V4(s), hop));
            }
            if let Some(s) = gw.subnet6() {
                table.push((Prefix::V6(s), hop));
            }
        }
        let connected = table.clone();
        let connected_at: std::collections::HashMap<Prefix, usize> =
            connected.iter().enumerate().map(|(i, (p, _))| (*p, i)).collect();
        let mut seen = std::collections::HashSet::with_capacity(specs.len());
        for r in specs {
            let name = r.prefix.to_string();
            if !seen.insert(r.prefix) {
                return Err(RouteError::Duplicate { prefix: name });
            }
            let v6 = matches!(r.prefix, Prefix::V6(_));
            let family = if v6 { "IPv6" } else { "IPv4" };
            let has_gw = |net: NetworkId| -> Result<(), RouteError> {
                let n = topology
                    .network(net)
                    .ok_or_else(|| RouteError::BadTarget { prefix: name.clone(), reason: "no such network".into() })?;
                let ok = n.spec.gateway.as_ref().is_some_and(|g| if v6 { g.v6.is_some() } else { g.v4.is_some() });
                if ok {
                    Ok(())
                } else {
                    Err(RouteError::NoGateway { prefix: name.clone(), network: n.spec.name.clone(), family })
                }
            };
            let hop = match r.target {
                RouteTarget::Network(net) => {
                    has_gw(net)?;
                    Hop::Connected { network: net, port: None }
                }
                RouteTarget::Port(p) => {
                    let e = topology
                        .port(p)
                        .ok_or_else(|| RouteError::BadTarget { prefix: name.clone(), reason: "no such port".into() })?;
                    if e.untagged == super::topology::NOT_MEMBER {
                        return Err(RouteError::BadTarget {
                            prefix: name.clone(),
                            reason: format!("port {:?} has no untagged network to resolve on", e.spec.name),
                        });
                    }
                    has_gw(NetworkId(e.untagged))?;
                    Hop::Connected { network: NetworkId(e.untagged), port: Some(p) }
                }
                RouteTarget::Via(ip) => {
                    if ip.is_ipv6() != v6 {
                        return Err(RouteError::FamilyMismatch { prefix: name, via: ip });
                    }
                    let on = connected.iter().find_map(|(p, h)| match (p, h, ip) {
                        (Prefix::V4(p), Hop::Connected { network, .. }, IpAddr::V4(a)) if p.contains(a) => {
                            Some(*network)
                        }
                        (Prefix::V6(p), Hop::Connected { network, .. }, IpAddr::V6(a)) if p.contains(a) => {
                            Some(*network)
                        }
                        _ => None,
                    });
                    match on {
                        Some(network) => Hop::Via { network, ip },
                        None => return Err(RouteError::ViaNotConnected { prefix: name, via: ip }),
                    }
                }
                RouteTarget::Drop => Hop::Drop,
                RouteTarget::Peer(i) => Hop::Peer(i),
            };
            // A route for exactly a connected prefix replaces it.
            match connected_at.get(&r.prefix) {
                Some(&i) => table[i].1 = hop,
                None => table.push((r.prefix, hop)),
            }
        }
        let hops: Box<[Hop]> = table.iter().map(|(_, h)| *h).collect();
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for (i, (p, _)) in table.iter().enumerate() {
            match p {
                Prefix::V4(p) => v4.push((*p, i as u32)),
                Prefix::V6(p) => v6.push((*p, i as u32)),
            }
        }
        Ok(Routes { fib4: Fib4::build(&v4), fib6: Fib6::build(&v6), hops, table })
    }

    /// The hop for an IPv4 destination.
    #[inline]
    pub fn lookup4(&self, a: Ipv4Addr) -> Option<Hop> {
        self.fib4.lookup(a).map(|i| self.hops[i as usize])
    }

    /// The hop for an IPv6 destination.
    #[inline]
    pub fn lookup6(&self, a: Ipv6Addr) -> Option<Hop> {
        self.fib6.lookup(a).map(|i| self.hops[i as usize])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tables::topology::{Gateway, NetworkSpec, PortMode, PortSpec};
    use crate::wire::EthernetAddress;

    fn topo() -> Topology {
        let gw = |i: u8, v6: bool| Gateway {
            mac: EthernetAddress([2, 0, 0, 0, 0, i]),
            v4: Some((Ipv4Addr::new(198, 18, i, 1), 24)),
            v6: v6.then(|| Ipv6Addr::new(0x2001, 0xdb8, u16::from(i), 0, 0, 0, 0, 1)).map(|a| (a, 64)),
            router_advertisements: false,
        };
        let nets = [
            NetworkSpec { id: NetworkId(0), name: "a".into(), ageing_s: 300, gateway: Some(gw(1, true)) },
            NetworkSpec { id: NetworkId(1), name: "b".into(), ageing_s: 300, gateway: Some(gw(2, false)) },
            NetworkSpec { id: NetworkId(2), name: "l2".into(), ageing_s: 300, gateway: None },
        ];
        let ports = [PortSpec {
            id: PortId(0),
            name: "p".into(),
            mode: PortMode::Access { network: NetworkId(1) },
            static_macs: vec![],
        }];
        Topology::new(&nets, &ports, 4).unwrap()
    }

    fn route(p: &str, target: RouteTarget) -> RouteSpec {
        RouteSpec { prefix: p.parse().unwrap(), target }
    }

    #[test]
    fn connected_and_configured_routes() {
        let t = topo();
        let r = Routes::build(
            &t,
            &[
                route("0.0.0.0/0", RouteTarget::Via("198.18.2.254".parse().unwrap())),
                route("198.19.0.0/16", RouteTarget::Drop),
                route("198.19.7.0/24", RouteTarget::Port(PortId(0))),
            ],
        )
        .unwrap();
        let hop4 = |a: &str| r.lookup4(a.parse().unwrap());
        assert_eq!(hop4("198.18.1.9"), Some(Hop::Connected { network: NetworkId(0), port: None }));
        assert_eq!(hop4("198.18.2.9"), Some(Hop::Connected { network: NetworkId(1), port: None }));
        assert_eq!(hop4("8.8.8.8"), Some(Hop::Via { network: NetworkId(1), ip: "198.18.2.254".parse().unwrap() }));
        assert_eq!(hop4("198.19.3.3"), Some(Hop::Drop));
        assert_eq!(hop4("198.19.7.3"), Some(Hop::Connected { network: NetworkId(1), port: Some(PortId(0)) }));
        assert_eq!(
            r.lookup6("2001:db8:1::5".parse().unwrap()),
            Some(Hop::Connected { network: NetworkId(0), port: None })
        );
        assert_eq!(r.lookup6("2001:db8:2::5".parse().unwrap()), None);
    }

    #[test]
    fn bad_routes_are_refused_with_the_reason() {
        let t = topo();
        let e = Routes::build(&t, &[route("10.0.0.0/8", RouteTarget::Via("192.0.2.1".parse().unwrap()))]);
        assert!(matches!(e, Err(RouteError::ViaNotConnected { .. })), "{e:?}");
        let e = Routes::build(&t, &[route("2001:db8:9::/48", RouteTarget::Network(NetworkId(1)))]);
        assert!(matches!(e, Err(RouteError::NoGateway { family: "IPv6", .. })), "{e:?}");
        let e = Routes::build(&t, &[route("10.0.0.0/8", RouteTarget::Network(NetworkId(2)))]);
        assert!(matches!(e, Err(RouteError::NoGateway { .. })), "{e:?}");
        let e = Routes::build(&t, &[route("10.0.0.0/8", RouteTarget::Via("2001:db8:1::2".parse().unwrap()))]);
        assert!(matches!(e, Err(RouteError::FamilyMismatch { .. })), "{e:?}");
        let d = route("10.0.0.0/8", RouteTarget::Drop);
        assert!(matches!(Routes::build(&t, &[d, d]), Err(RouteError::Duplicate { .. })));
    }
}
