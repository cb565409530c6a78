//! The tunnel table: this node's end of the underlay (the uplink port, its VTEP
//! addresses and MACs) and the remote nodes that routes of kind [`Hop::Peer`] point
//! at, each with its outer headers built once, so that encapsulation is a copy and a
//! few length fields.
//!
//! Control resolves every peer's underlay next hop (from the kernel's neighbour table:
//! the kernel owns the uplink's addresses) and publishes a new table when a MAC
//! changes. A peer without one has no header yet; packets to it are dropped as
//! `peer_unresolved` until it has.
//!
//! Networks stretched across nodes (the L2 overlay) are [`L2Vni`]s: a VNI, the local
//! network it carries, and the peers that carry it too, to which broadcast, multicast
//! and unknown unicast frames are replicated (head-end replication, as Linux's
//! all-zeros FDB entries and EVPN's inclusive multicast routes do). Their frames reuse
//! each peer's outer headers with the VNI written over.
//!
//! [`Hop::Peer`]: super::Hop::Peer

use super::topology::{NetworkId, PortId};
use crate::wire::{checksum, vxlan, EtherType, EthernetAddress, IpProtocol};
use rustc_hash::FxHashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// How packets reach remote nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TunnelMode {
    /// Encapsulated in VXLAN to the peer's VTEP (an overlay: the underlay needs to
    /// route only node addresses).
    Vxlan,
    /// Routed as they are to the peer's underlay address (the underlay must deliver
    /// pod addresses: one L2 segment, or routes in the fabric).
    Direct,
}

/// This node's end, as control describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelSpec {
    /// The uplink port.
    pub uplink: PortId,
    /// VXLAN or direct routing.
    pub mode: TunnelMode,
    /// The uplink interface's MAC (outer source).
    pub uplink_mac: EthernetAddress,
    /// The uplink's MTU (the largest outer IP packet).
    pub uplink_mtu: u32,
    /// The inner source MAC of encapsulated frames, and the inner destination MAC this
    /// node accepts.
    pub vtep_mac: EthernetAddress,
    /// This node's underlay IPv4 address (outer source, and what it accepts VXLAN on).
    pub local4: Option<Ipv4Addr>,
    /// This node's underlay IPv6 address.
    pub local6: Option<Ipv6Addr>,
    /// VXLAN destination port (4789).
    pub udp_port: u16,
    /// The VNI of the L3 overlay.
    pub vni: u32,
    /// The network whose gateway packets from remote nodes are routed by (its
    /// addresses answer for this node; it must route both families it carries).
    pub network: NetworkId,
}

/// A remote node, as control describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSpec {
    /// Name, for people.
    pub name: String,
    /// Its underlay address (VTEP).
    pub underlay: IpAddr,
    /// Its VTEP MAC: the inner destination MAC it accepts.
    pub vtep_mac: EthernetAddress,
    /// The MAC of the underlay next hop towards it (the peer itself on one segment,
    /// else a router), once resolved.
    pub next_hop: Option<EthernetAddress>,
}

/// Longest outer header: Ethernet, IPv6, UDP, VXLAN.
pub const MAX_OUTER: usize = vxlan::OVERHEAD_V6;

/// A remote node, compiled.
#[derive(Debug, Clone)]
pub struct PeerEntry {
    /// The spec.
    pub spec: PeerSpec,
    /// Outer headers with zero lengths and source port (`outer_len` bytes), or in
    /// direct mode the Ethernet header (12 bytes of MACs); None while unresolved.
    pub header: Option<[u8; MAX_OUTER]>,
    /// Bytes of `header` in use.
    pub outer_len: u8,
    /// Largest inner IP packet to this peer.
    pub mtu: u32,
    /// IPv4 underlay: the unfolded sum of the outer IPv4 header template (adding the
    /// total length and folding gives its checksum).
    pub ip_sum: u32,
}

/// A network stretched across nodes as a VXLAN VNI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct L2Vni {
    /// The VNI.
    pub vni: u32,
    /// The local network it carries.
    pub network: NetworkId,
    /// The peers that carry it too (indices into [`Tunnel::peers`]): where flooded
    /// frames are replicated.
    pub peers: Box<[u16]>,
}

/// No L2 VNI for this network (in [`Tunnel`]'s index by network).
const NO_VNI: u16 = u16::MAX;

/// The tunnel table.
#[derive(Debug, Clone, Default)]
pub struct Tunnel {
    /// This node's end; None: no uplink configured.
    pub local: Option<TunnelSpec>,
    /// Remote nodes, by the index in [`Hop::Peer`](super::Hop::Peer).
    pub peers: Box<[PeerEntry]>,
    /// Networks stretched across nodes.
    pub l2: Box<[L2Vni]>,
    /// Network id → index in `l2`, or NO_VNI.
    l2_by_network: Box<[u16]>,
    /// VNI → index in `l2`.
    l2_by_vni: FxHashMap<u32, u16>,
    /// Underlay address → peer index: who sent a decapsulated frame (to learn where
    /// its source MAC lives).
    by_underlay: FxHashMap<IpAddr, u16>,
}

/// A peer that cannot be served, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TunnelError {
    /// The peer's underlay family has no local address.
    #[error("peer {peer:?}: its underlay address {addr} is {family}, but this node has no {family} underlay address")]
    NoLocalAddress {
        /// Peer name.
        peer: String,
        /// Its address.
        addr: IpAddr,
        /// "IPv4" or "IPv6".
        family: &'static str,
    },
    /// VNI beyond 24 bits.
    #[error("VNI {0} does not fit in 24 bits (at most 16777215)")]
    BadVni(u32),
    /// MTU too small to carry anything.
    #[error("uplink MTU {0} leaves no room for an IP packet after the VXLAN overhead")]
    MtuTooSmall(u32),
    /// A VNI given to two networks, or to a network and the L3 overlay.
    #[error("VNI {0} is used twice (by two stretched networks, or by one and the uplink's L3 overlay)")]
    DuplicateVni(u32),
    /// An L2 VNI in direct-routing mode (nothing to carry frames in).
    #[error("networks can be stretched across nodes only in VXLAN mode, not in direct-routing mode")]
    L2NeedsVxlan,
    /// An L2 VNI naming a peer that does not exist.
    #[error("VNI {vni}: no peer {peer}")]
    NoSuchPeer {
        /// The VNI.
        vni: u32,
        /// The peer index.
        peer: u16,
    },
}

impl Tunnel {
    /// No uplink, no peers.
    pub fn empty() -> Tunnel {
        Tunnel::default()
    }

    /// Compiles `local` and `peers`; every peer must be reachable in a family this
    /// node has an underlay address in.
    pub fn new(local: TunnelSpec, peers: &[PeerSpec]) -> Result<Tunnel, TunnelError> {
        if local.vni > vxlan::MAX_VNI {
            return Err(TunnelError::BadVni(local.vni));
        }
        let mut out = Vec::with_capacity(peers.len());
        for p in peers {
            let (overhead, family) = match p.underlay {
                IpAddr::V4(_) => (vxlan::OVERHEAD_V4, "IPv4"),
                IpAddr::V6(_) => (vxlan::OVERHEAD_V6, "IPv6"),
            };
            let has_local = match p.underlay {
                IpAddr::V4(_) => local.local4.is_some(),
                IpAddr::V6(_) => local.local6.is_some(),
            };
            if !has_local {
                return Err(TunnelError::NoLocalAddress { peer: p.name.clone(), addr: p.underlay, family });
            }
            // The inner packet's own Ethernet header is inside the overhead.
            let mtu = match local.mode {
                TunnelMode::Vxlan => local.uplink_mtu.checked_sub((overhead - 14) as u32 + 14),
                TunnelMode::Direct => Some(local.uplink_mtu),
            };
            let mtu = mtu.filter(|m| *m >= 68).ok_or(TunnelError::MtuTooSmall(local.uplink_mtu))?;
            let (header, outer_len) = match local.mode {
                TunnelMode::Vxlan => (p.next_hop.map(|nh| outer_header(&local, p, nh)), overhead as u8),
                TunnelMode::Direct => (
                    p.next_hop.map(|nh| {
                        let mut h = [0u8; MAX_OUTER];
                        h[0..6].copy_from_slice(&nh.0);
                        h[6..12].copy_from_slice(&local.uplink_mac.0);
                        h
                    }),
                    12,
                ),
            };
            let ip_sum = match (local.mode, p.underlay, &header) {
                (TunnelMode::Vxlan, IpAddr::V4(_), Some(h)) => checksum::sum(&h[14..34]),
                _ => 0,
            };
            out.push(PeerEntry { spec: p.clone(), header, outer_len, mtu, ip_sum });
        }
        let by_underlay = out.iter().enumerate().map(|(i, p)| (p.spec.underlay, i as u16)).collect();
        Ok(Tunnel { local: Some(local), peers: out.into_boxed_slice(), by_underlay, ..Tunnel::default() })
    }

    /// The same tunnel carrying the stretched networks `l2` too.
    pub fn with_l2(mut self, l2: Vec<L2Vni>) -> Result<Tunnel, TunnelError> {
        let Some(local) = self.local.as_ref() else {
            return Ok(self);
        };
        if !l2.is_empty() && local.mode != TunnelMode::Vxlan {
            return Err(TunnelError::L2NeedsVxlan);
        }
        let mut by_vni = FxHashMap::default();
        let mut by_network = vec![];
        for (i, v) in l2.iter().enumerate() {
            if v.vni > vxlan::MAX_VNI {
                return Err(TunnelError::BadVni(v.vni));
            }
            if v.vni == local.vni || by_vni.insert(v.vni, i as u16).is_some() {
                return Err(TunnelError::DuplicateVni(v.vni));
            }
            if let Some(&peer) = v.peers.iter().find(|p| usize::from(**p) >= self.peers.len()) {
                return Err(TunnelError::NoSuchPeer { vni: v.vni, peer });
            }
            let n = usize::from(v.network.0);
            if by_network.len() <= n {
                by_network.resize(n + 1, NO_VNI);
            }
            by_network[n] = i as u16;
        }
        self.l2 = l2.into_boxed_slice();
        self.l2_by_vni = by_vni;
        self.l2_by_network = by_network.into_boxed_slice();
        Ok(self)
    }

    /// Peer `i`.
    #[inline]
    pub fn peer(&self, i: u16) -> Option<&PeerEntry> {
        self.peers.get(usize::from(i))
    }

    /// The peer whose underlay address is `addr`.
    #[inline]
    pub fn peer_at(&self, addr: &IpAddr) -> Option<u16> {
        self.by_underlay.get(addr).copied()
    }

    /// The stretched network carried in `vni`.
    #[inline]
    pub fn l2_by_vni(&self, vni: u32) -> Option<&L2Vni> {
        self.l2_by_vni.get(&vni).map(|i| &self.l2[usize::from(*i)])
    }

    /// How `network` is stretched across nodes, if it is.
    #[inline]
    pub fn l2_of(&self, network: NetworkId) -> Option<&L2Vni> {
        match self.l2_by_network.get(usize::from(network.0)) {
            Some(&i) if i != NO_VNI => self.l2.get(usize::from(i)),
            _ => None,
        }
    }
}

/// The outer Ethernet, IP, UDP and VXLAN headers to peer `p` through next hop `nh`,
/// with zero lengths, source port and (IPv4) checksum: encapsulation fills those in.
fn outer_header(local: &TunnelSpec, p: &PeerSpec, nh: EthernetAddress) -> [u8; MAX_OUTER] {
    let mut h = [0u8; MAX_OUTER];
    h[0..6].copy_from_slice(&nh.0);
    h[6..12].copy_from_slice(&local.uplink_mac.0);
    let udp = match p.underlay {
        IpAddr::V4(dst) => {
            h[12..14].copy_from_slice(&EtherType::IPV4.0.to_be_bytes());
            let ip = &mut h[14..34];
            ip[0] = 0x45;
            // DF: the switch checks the inner size before encapsulating, so the outer
            // packet always fits the uplink; as Open vSwitch does by default.
            ip[6] = 0x40;
            ip[8] = 64;
            ip[9] = IpProtocol::UDP.0;
            ip[12..16].copy_from_slice(&local.local4.unwrap_or(Ipv4Addr::UNSPECIFIED).octets());
            ip[16..20].copy_from_slice(&dst.octets());
            34
        }
        IpAddr::V6(dst) => {
            h[12..14].copy_from_slice(&EtherType::IPV6.0.to_be_bytes());
            let ip = &mut h[14..54];
            ip[0] = 0x60;
            ip[6] = IpProtocol::UDP.0;
            ip[7] = 64;
            ip[8..24].copy_from_slice(&local.local6.unwrap_or(Ipv6Addr::UNSPECIFIED).octets());
            ip[24..40].copy_from_slice(&dst.octets());
            54
        }
    };
    h[udp + 2..udp + 4].copy_from_slice(&local.udp_port.to_be_bytes());
    vxlan::write_header(&mut h[udp + 8..], local.vni);
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn local(mode: TunnelMode) -> TunnelSpec {
        TunnelSpec {
            uplink: PortId(3),
            mode,
            uplink_mac: EthernetAddress([2, 0, 0, 0, 0xee, 1]),
            uplink_mtu: 1500,
            vtep_mac: EthernetAddress([2, 0, 0, 0, 0xcc, 1]),
            local4: Some(Ipv4Addr::new(198, 19, 0, 1)),
            local6: None,
            udp_port: vxlan::PORT,
            vni: 7,
            network: NetworkId(0),
        }
    }

    fn peer(addr: &str, resolved: bool) -> PeerSpec {
        PeerSpec {
            name: "b".into(),
            underlay: addr.parse().unwrap(),
            vtep_mac: EthernetAddress([2, 0, 0, 0, 0xcc, 2]),
            next_hop: resolved.then_some(EthernetAddress([2, 0, 0, 0, 0xee, 2])),
        }
    }

    #[test]
    fn headers_are_built_once_resolved_and_mtus_derived() {
        let t = Tunnel::new(local(TunnelMode::Vxlan), &[peer("198.19.0.2", true), peer("198.19.0.3", false)]).unwrap();
        let p = t.peer(0).unwrap();
        assert_eq!(p.mtu, 1450, "1500 minus the 50 bytes of VXLAN over IPv4");
        assert_eq!(p.outer_len, 50);
        let h = p.header.unwrap();
        assert_eq!(&h[0..6], &[2, 0, 0, 0, 0xee, 2]);
        assert_eq!(&h[12..14], &[0x08, 0x00]);
        assert_eq!(&h[26..30], &[198, 19, 0, 1]);
        assert_eq!(&h[30..34], &[198, 19, 0, 2]);
        assert_eq!(&h[36..38], &4789u16.to_be_bytes());
        assert_eq!(&h[42..50], &[8, 0, 0, 0, 0, 0, 7, 0]);
        assert!(t.peer(1).unwrap().header.is_none(), "unresolved: no header");
        let d = Tunnel::new(local(TunnelMode::Direct), &[peer("198.19.0.2", true)]).unwrap();
        assert_eq!(d.peer(0).unwrap().mtu, 1500);
    }

    #[test]
    fn peers_need_a_local_address_of_their_family() {
        let e = Tunnel::new(local(TunnelMode::Vxlan), &[peer("2001:db8::2", true)]).unwrap_err();
        assert!(e.to_string().contains("no IPv6 underlay address"), "{e}");
        let mut l = local(TunnelMode::Vxlan);
        l.local6 = Some("2001:db8::1".parse().unwrap());
        let t = Tunnel::new(l, &[peer("2001:db8::2", true)]).unwrap();
        assert_eq!(t.peer(0).unwrap().mtu, 1430, "70 bytes over IPv6");
        let mut l = local(TunnelMode::Vxlan);
        l.vni = 1 << 24;
        assert_eq!(Tunnel::new(l, &[]).unwrap_err(), TunnelError::BadVni(1 << 24));
    }

    fn vni(vni: u32, net: u16, peers: &[u16]) -> L2Vni {
        L2Vni { vni, network: NetworkId(net), peers: peers.into() }
    }

    #[test]
    fn stretched_networks_are_found_by_vni_network_and_sender() {
        let peers = [peer("198.19.0.2", true), peer("198.19.0.3", false)];
        let t = Tunnel::new(local(TunnelMode::Vxlan), &peers).unwrap();
        let t = t.with_l2(vec![vni(100, 2, &[0, 1]), vni(200, 5, &[1])]).unwrap();
        assert_eq!(t.l2_by_vni(200).unwrap().network, NetworkId(5));
        assert!(t.l2_by_vni(7).is_none(), "the L3 overlay's VNI is not an L2 one");
        assert_eq!(&*t.l2_of(NetworkId(2)).unwrap().peers, &[0, 1]);
        assert!(t.l2_of(NetworkId(3)).is_none() && t.l2_of(NetworkId(900)).is_none());
        assert_eq!(t.peer_at(&"198.19.0.3".parse().unwrap()), Some(1));
        assert_eq!(t.peer_at(&"198.19.0.9".parse().unwrap()), None);
    }

    #[test]
    fn stretched_networks_are_checked() {
        let t = || Tunnel::new(local(TunnelMode::Vxlan), &[peer("198.19.0.2", true)]).unwrap();
        assert_eq!(t().with_l2(vec![vni(7, 1, &[])]).unwrap_err(), TunnelError::DuplicateVni(7));
        assert_eq!(t().with_l2(vec![vni(8, 1, &[]), vni(8, 2, &[])]).unwrap_err(), TunnelError::DuplicateVni(8));
        assert_eq!(t().with_l2(vec![vni(1 << 24, 1, &[])]).unwrap_err(), TunnelError::BadVni(1 << 24));
        assert_eq!(t().with_l2(vec![vni(9, 1, &[1])]).unwrap_err(), TunnelError::NoSuchPeer { vni: 9, peer: 1 });
        let d = Tunnel::new(local(TunnelMode::Direct), &[]).unwrap();
        assert_eq!(d.with_l2(vec![vni(9, 1, &[])]).unwrap_err(), TunnelError::L2NeedsVxlan);
    }
}
