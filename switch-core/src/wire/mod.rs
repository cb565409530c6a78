//! Zero-copy, typed views over packet bytes.
//!
//! Every protocol has a view type generic over its buffer (`AsRef<[u8]>` to read,
//! `AsMut<[u8]>` to write). `new_checked` validates the length once; after it, the
//! accessors cannot panic. Field offsets live in a private `field` module per protocol.
//! A small `Copy` `Repr` with `parse` and `emit` serves the slow path and the tests.
//!
//! Protocols: Ethernet, 802.1Q, ARP, IPv4, IPv6, ICMP, ICMPv6 with neighbour discovery,
//! UDP, TCP, VXLAN; checksums full and incremental (RFC 1624) in `checksum`.
//!
//! The hot path uses the views directly with fixed offsets; it never builds a `Repr`.

pub mod arp;
pub mod checksum;
pub mod ethernet;
pub mod icmp;
pub mod icmpv6;
pub mod ipv4;
pub mod ipv6;
pub mod tcp;
pub mod udp;
pub mod vlan;
pub mod vxlan;

pub use arp::{ArpOperation, ArpPacket, ArpRepr};
pub use ethernet::{EtherType, EthernetAddress, EthernetFrame, EthernetRepr};
pub use icmp::{Icmpv4Packet, Icmpv4Repr};
pub use icmpv6::{Icmpv6Packet, Icmpv6Repr};
pub use ipv4::{IpProtocol, Ipv4Packet, Ipv4Repr};
pub use ipv6::{Ipv6Packet, Ipv6Repr};
pub use tcp::TcpPacket;
pub use udp::{UdpPacket, UdpRepr};
pub use vlan::{VlanId, VlanTag};
pub use vxlan::VxlanPacket;

/// Why a packet could not be parsed. Small and `Copy`, so the slow path can count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Error {
    /// The buffer is shorter than the header, or than a length field says.
    Truncated,
    /// A length field is inconsistent (smaller than the header it covers, for example).
    BadLength,
    /// The version field is not the one this view parses.
    BadVersion,
    /// The checksum does not verify.
    BadChecksum,
    /// Well formed, but a variant this code does not handle.
    Unsupported,
}

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Error::Truncated => "truncated",
            Error::BadLength => "inconsistent length field",
            Error::BadVersion => "wrong version",
            Error::BadChecksum => "bad checksum",
            Error::Unsupported => "unsupported",
        })
    }
}

impl std::error::Error for Error {}

/// Result of parsing wire data.
pub type Result<T> = core::result::Result<T, Error>;

#[inline]
pub(crate) fn read_u16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

pub(crate) fn write_u16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}
