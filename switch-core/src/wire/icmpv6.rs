//! ICMPv6 (RFC 4443) and neighbour discovery (RFC 4861): echo, the error messages,
//! router and neighbour solicitations and advertisements, with their link-layer
//! address, MTU and prefix options.

use super::{checksum, read_u16, write_u16, Error, EthernetAddress, IpProtocol, Result};
use std::net::Ipv6Addr;

mod field {
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: usize = 2;
    pub const BODY: usize = 4;
}

/// Type, code, checksum.
pub const HEADER_LEN: usize = 4;

/// Message types.
pub mod ty {
    /// Destination unreachable.
    pub const DST_UNREACHABLE: u8 = 1;
    /// Packet too big.
    pub const PACKET_TOO_BIG: u8 = 2;
    /// Time exceeded.
    pub const TIME_EXCEEDED: u8 = 3;
    /// Parameter problem.
    pub const PARAM_PROBLEM: u8 = 4;
    /// Echo request.
    pub const ECHO_REQUEST: u8 = 128;
    /// Echo reply.
    pub const ECHO_REPLY: u8 = 129;
    /// Router solicitation.
    pub const ROUTER_SOLICIT: u8 = 133;
    /// Router advertisement.
    pub const ROUTER_ADVERT: u8 = 134;
    /// Neighbour solicitation.
    pub const NEIGHBOR_SOLICIT: u8 = 135;
    /// Neighbour advertisement.
    pub const NEIGHBOR_ADVERT: u8 = 136;
}

/// NDP option types.
mod opt {
    pub const SOURCE_LLADDR: u8 = 1;
    pub const TARGET_LLADDR: u8 = 2;
    pub const PREFIX_INFO: u8 = 3;
    pub const MTU: u8 = 5;
}

/// A view over an ICMPv6 message.
#[derive(Debug, Clone)]
pub struct Icmpv6Packet<T> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Icmpv6Packet<T> {
    /// Wraps a buffer without checking it.
    pub const fn new_unchecked(buffer: T) -> Self {
        Icmpv6Packet { buffer }
    }

    /// Wraps a buffer, checking that it holds the message's fixed part.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// `Truncated` if shorter than the fixed part of its type.
    pub fn check_len(&self) -> Result<()> {
        let b = self.buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let fixed = match b[field::TYPE] {
            ty::NEIGHBOR_SOLICIT | ty::NEIGHBOR_ADVERT => 24,
            ty::ROUTER_ADVERT => 16,
            _ => 8,
        };
        if b.len() < fixed {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// Message type.
    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[field::TYPE]
    }
    /// Code.
    pub fn msg_code(&self) -> u8 {
        self.buffer.as_ref()[field::CODE]
    }
    /// Checksum field.
    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM)
    }
    /// Everything after type, code and checksum.
    pub fn body(&self) -> &[u8] {
        &self.buffer.as_ref()[field::BODY..]
    }
    /// True when the checksum over the pseudo-header and the message verifies.
    pub fn verify_checksum(&self, src: &Ipv6Addr, dst: &Ipv6Addr) -> bool {
        checksum::verify_l4((*src).into(), (*dst).into(), IpProtocol::ICMPV6.0, self.buffer.as_ref())
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Icmpv6Packet<T> {
    /// Computes the checksum over the pseudo-header and the whole buffer.
    pub fn fill_checksum(&mut self, src: &Ipv6Addr, dst: &Ipv6Addr) {
        write_u16(self.buffer.as_mut(), field::CHECKSUM, 0);
        let c = checksum::l4((*src).into(), (*dst).into(), IpProtocol::ICMPV6.0, self.buffer.as_ref());
        write_u16(self.buffer.as_mut(), field::CHECKSUM, c)
    }
}

/// Prefix information in a router advertisement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrefixInfo {
    /// The prefix.
    pub prefix: Ipv6Addr,
    /// Its length.
    pub len: u8,
    /// On-link (L) and autonomous (A) flags, as on the wire (0x80, 0x40).
    pub flags: u8,
    /// Valid lifetime, seconds.
    pub valid_s: u32,
    /// Preferred lifetime, seconds.
    pub preferred_s: u32,
}

/// The ICMPv6 messages the switch reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Icmpv6Repr<'a> {
    /// Echo request.
    EchoRequest {
        /// Identifier.
        ident: u16,
        /// Sequence number.
        seq_no: u16,
        /// Data.
        data: &'a [u8],
    },
    /// Echo reply.
    EchoReply {
        /// Identifier.
        ident: u16,
        /// Sequence number.
        seq_no: u16,
        /// Data.
        data: &'a [u8],
    },
    /// An error (destination unreachable, packet too big, time exceeded, parameter
    /// problem): `param` is the MTU or pointer field (0 otherwise); `invoking` as much
    /// of the offending packet as fits.
    Error {
        /// One of the error types.
        msg_type: u8,
        /// Code.
        code: u8,
        /// MTU (packet too big), pointer (parameter problem), else 0.
        param: u32,
        /// The start of the packet that caused it.
        invoking: &'a [u8],
    },
    /// Router solicitation.
    RouterSolicit {
        /// Source link-layer address option.
        source_lladdr: Option<EthernetAddress>,
    },
    /// Router advertisement.
    RouterAdvert {
        /// Hop limit hosts should use.
        hop_limit: u8,
        /// M and O flags as on the wire.
        flags: u8,
        /// Router lifetime, seconds (0: not a default router).
        lifetime_s: u16,
        /// Reachable time, ms.
        reachable_ms: u32,
        /// Retransmit timer, ms.
        retrans_ms: u32,
        /// Source link-layer address option.
        source_lladdr: Option<EthernetAddress>,
        /// MTU option.
        mtu: Option<u32>,
        /// One prefix information option.
        prefix: Option<PrefixInfo>,
    },
    /// Neighbour solicitation.
    NeighborSolicit {
        /// Address asked about.
        target: Ipv6Addr,
        /// Source link-layer address option.
        source_lladdr: Option<EthernetAddress>,
    },
    /// Neighbour advertisement.
    NeighborAdvert {
        /// Router (0x80), solicited (0x40), override (0x20) flags as on the wire.
        flags: u8,
        /// Address advertised.
        target: Ipv6Addr,
        /// Target link-layer address option.
        target_lladdr: Option<EthernetAddress>,
    },
}

/// Reads NDP options: (source lladdr, target lladdr, MTU, first prefix).
type Options = (Option<EthernetAddress>, Option<EthernetAddress>, Option<u32>, Option<PrefixInfo>);

fn parse_options(mut b: &[u8]) -> Result<Options> {
    let mut out: Options = (None, None, None, None);
    while !b.is_empty() {
        if b.len() < 2 {
            return Err(Error::Truncated);
        }
        let len = usize::from(b[1]) * 8;
        if len == 0 {
            // RFC 4861 4.6: a zero-length option is invalid; the message must be dropped.
            return Err(Error::BadLength);
        }
        if b.len() < len {
            return Err(Error::Truncated);
        }
        let o = &b[..len];
        match o[0] {
            opt::SOURCE_LLADDR if len >= 8 => out.0 = Some(EthernetAddress::from_bytes(&o[2..8])),
            opt::TARGET_LLADDR if len >= 8 => out.1 = Some(EthernetAddress::from_bytes(&o[2..8])),
            opt::MTU if len >= 8 => out.2 = Some(u32::from_be_bytes([o[4], o[5], o[6], o[7]])),
            opt::PREFIX_INFO if len >= 32 && out.3.is_none() => {
                let mut p = [0u8; 16];
                p.copy_from_slice(&o[16..32]);
                out.3 = Some(PrefixInfo {
                    len: o[2],
                    flags: o[3],
                    valid_s: u32::from_be_bytes([o[4], o[5], o[6], o[7]]),
                    preferred_s: u32::from_be_bytes([o[8], o[9], o[10], o[11]]),
                    prefix: Ipv6Addr::from(p),
                });
            }
            _ => {} // unknown options are skipped (RFC 4861 4.6)
        }
        b = &b[len..];
    }
    Ok(out)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn addr_at(b: &[u8], at: usize) -> Ipv6Addr {
    let mut a = [0u8; 16];
    a.copy_from_slice(&b[at..at + 16]);
    Ipv6Addr::from(a)
}

impl<'a> Icmpv6Repr<'a> {
    /// Parses a message whose checksum verifies over `src` and `dst`. NDP messages must
    /// arrive with hop limit 255 (RFC 4861): pass the IPv6 header's.
    pub fn parse(b: &'a [u8], src: &Ipv6Addr, dst: &Ipv6Addr, hop_limit: u8) -> Result<Icmpv6Repr<'a>> {
        let p = Icmpv6Packet::new_checked(b)?;
        if !p.verify_checksum(src, dst) {
            return Err(Error::BadChecksum);
        }
        let (t, code) = (p.msg_type(), p.msg_code());
        let ndp = matches!(t, ty::ROUTER_SOLICIT..=ty::NEIGHBOR_ADVERT);
        if ndp && (hop_limit != 255 || code != 0) {
            return Err(Error::Unsupported);
        }
        Ok(match t {
            ty::ECHO_REQUEST | ty::ECHO_REPLY => {
                let (ident, seq_no, data) = (read_u16(b, 4), read_u16(b, 6), &b[8..]);
                if t == ty::ECHO_REQUEST {
                    Icmpv6Repr::EchoRequest { ident, seq_no, data }
                } else {
                    Icmpv6Repr::EchoReply { ident, seq_no, data }
                }
            }
            ty::DST_UNREACHABLE | ty::PACKET_TOO_BIG | ty::TIME_EXCEEDED | ty::PARAM_PROBLEM => {
                Icmpv6Repr::Error { msg_type: t, code, param: u32_at(b, 4), invoking: &b[8..] }
            }
            ty::ROUTER_SOLICIT => Icmpv6Repr::RouterSolicit { source_lladdr: parse_options(&b[8..])?.0 },
            ty::ROUTER_ADVERT => {
                let o = parse_options(&b[16..])?;
                Icmpv6Repr::RouterAdvert {
                    hop_limit: b[4],
                    flags: b[5],
                    lifetime_s: read_u16(b, 6),
                    reachable_ms: u32_at(b, 8),
                    retrans_ms: u32_at(b, 12),
                    source_lladdr: o.0,
                    mtu: o.2,
                    prefix: o.3,
                }
            }
            ty::NEIGHBOR_SOLICIT => {
                let target = addr_at(b, 8);
                if target.is_multicast() {
                    return Err(Error::Unsupported);
                }
                Icmpv6Repr::NeighborSolicit { target, source_lladdr: parse_options(&b[24..])?.0 }
            }
            ty::NEIGHBOR_ADVERT => Icmpv6Repr::NeighborAdvert {
                flags: b[4] & 0xe0,
                target: addr_at(b, 8),
                target_lladdr: parse_options(&b[24..])?.1,
            },
            _ => return Err(Error::Unsupported),
        })
    }

    /// Bytes the message takes.
    pub fn buffer_len(&self) -> usize {
        let ll = |o: &Option<EthernetAddress>| if o.is_some() { 8 } else { 0 };
        match self {
            Icmpv6Repr::EchoRequest { data, .. } | Icmpv6Repr::EchoReply { data, .. } => 8 + data.len(),
            Icmpv6Repr::Error { invoking, .. } => 8 + invoking.len(),
            Icmpv6Repr::RouterSolicit { source_lladdr } => 8 + ll(source_lladdr),
            Icmpv6Repr::RouterAdvert { source_lladdr, mtu, prefix, .. } => {
                16 + ll(source_lladdr) + if mtu.is_some() { 8 } else { 0 } + if prefix.is_some() { 32 } else { 0 }
            }
            Icmpv6Repr::NeighborSolicit { source_lladdr, .. } => 24 + ll(source_lladdr),
            Icmpv6Repr::NeighborAdvert { target_lladdr, .. } => 24 + ll(target_lladdr),
        }
    }

    /// Writes the message (exactly `buffer_len()` bytes of `b`) with its checksum.
    pub fn emit(&self, b: &mut [u8], src: &Ipv6Addr, dst: &Ipv6Addr) {
        let b = &mut b[..self.buffer_len()];
        b.fill(0);
        fn lladdr(b: &mut [u8], kind: u8, a: &EthernetAddress) -> usize {
            b[0] = kind;
            b[1] = 1;
            b[2..8].copy_from_slice(&a.0);
            8
        }
        match *self {
            Icmpv6Repr::EchoRequest { ident, seq_no, data } | Icmpv6Repr::EchoReply { ident, seq_no, data } => {
                b[0] = if matches!(self, Icmpv6Repr::EchoRequest { .. }) { ty::ECHO_REQUEST } else { ty::ECHO_REPLY };
                write_u16(b, 4, ident);
                write_u16(b, 6, seq_no);
                b[8..].copy_from_slice(data);
            }
            Icmpv6Repr::Error { msg_type, code, param, invoking } => {
                b[0] = msg_type;
                b[1] = code;
                b[4..8].copy_from_slice(&param.to_be_bytes());
                b[8..].copy_from_slice(invoking);
            }
            Icmpv6Repr::RouterSolicit { source_lladdr } => {
                b[0] = ty::ROUTER_SOLICIT;
                if let Some(a) = source_lladdr {
                    lladdr(&mut b[8..], opt::SOURCE_LLADDR, &a);
                }
            }
            Icmpv6Repr::RouterAdvert {
                hop_limit,
                flags,
                lifetime_s,
                reachable_ms,
                retrans_ms,
                source_lladdr,
                mtu,
                prefix,
            } => {
                b[0] = ty::ROUTER_ADVERT;
                b[4] = hop_limit;
                b[5] = flags;
                write_u16(b, 6, lifetime_s);
                b[8..12].copy_from_slice(&reachable_ms.to_be_bytes());
                b[12..16].copy_from_slice(&retrans_ms.to_be_bytes());
                let mut at = 16;
                if let Some(a) = source_lladdr {
                    at += lladdr(&mut b[at..], opt::SOURCE_LLADDR, &a);
                }
                if let Some(m) = mtu {
                    b[at] = opt::MTU;
                    b[at + 1] = 1;
                    b[at + 4..at + 8].copy_from_slice(&m.to_be_bytes());
                    at += 8;
                }
                if let Some(p) = prefix {
                    let o = &mut b[at..at + 32];
                    o[0] = opt::PREFIX_INFO;
                    o[1] = 4;
                    o[2] = p.len;
                    o[3] = p.flags;
                    o[4..8].copy_from_slice(&p.valid_s.to_be_bytes());
                    o[8..12].copy_from_slice(&p.preferred_s.to_be_bytes());
                    o[16..32].copy_from_slice(&p.prefix.octets());
                }
            }
            Icmpv6Repr::NeighborSolicit { target, source_lladdr } => {
                b[0] = ty::NEIGHBOR_SOLICIT;
                b[8..24].copy_from_slice(&target.octets());
                if let Some(a) = source_lladdr {
                    lladdr(&mut b[24..], opt::SOURCE_LLADDR, &a);
                }
            }
            Icmpv6Repr::NeighborAdvert { flags, target, target_lladdr } => {
                b[0] = ty::NEIGHBOR_ADVERT;
                b[4] = flags & 0xe0;
                b[8..24].copy_from_slice(&target.octets());
                if let Some(a) = target_lladdr {
                    lladdr(&mut b[24..], opt::TARGET_LLADDR, &a);
                }
            }
        }
        Icmpv6Packet::new_unchecked(b).fill_checksum(src, dst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    /// A neighbour solicitation as Linux sends it: fe80::1 asks for 2001:db8::2 at its
    /// solicited-node address, with its link-layer address.
    static NS: [u8; 32] = [
        135, 0, // type NS, code 0
        0x00, 0x00, // checksum (filled in by the test)
        0, 0, 0, 0, // reserved
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, // target 2001:db8::2
        1, 1, 0x02, 0, 0, 0, 0, 1, // option: source lladdr 02:00:00:00:00:01
    ];

    fn ns() -> ([u8; 32], Ipv6Addr, Ipv6Addr) {
        let (src, dst) = (a("fe80::1"), a("ff02::1:ff00:2"));
        let mut b = NS;
        Icmpv6Packet::new_unchecked(&mut b[..]).fill_checksum(&src, &dst);
        (b, src, dst)
    }

    #[test]
    fn neighbour_solicitation() {
        let (b, src, dst) = ns();
        let r = Icmpv6Repr::parse(&b, &src, &dst, 255).unwrap();
        assert_eq!(
            r,
            Icmpv6Repr::NeighborSolicit {
                target: a("2001:db8::2"),
                source_lladdr: Some("02:00:00:00:00:01".parse().unwrap())
            }
        );
        let mut out = [0u8; 32];
        r.emit(&mut out, &src, &dst);
        assert_eq!(out, b);
        assert_eq!(Icmpv6Repr::parse(&b, &src, &dst, 64).unwrap_err(), Error::Unsupported, "hop limit must be 255");
    }

    #[test]
    fn truncated_bad_checksum_and_bad_options() {
        let (b, src, dst) = ns();
        assert_eq!(Icmpv6Repr::parse(&b[..23], &src, &dst, 255).unwrap_err(), Error::Truncated);
        let mut bad = b;
        bad[31] ^= 1;
        assert_eq!(Icmpv6Repr::parse(&bad, &src, &dst, 255).unwrap_err(), Error::BadChecksum);
        let mut zero_opt = b;
        zero_opt[25] = 0; // option length 0
        Icmpv6Packet::new_unchecked(&mut zero_opt[..]).fill_checksum(&src, &dst);
        assert_eq!(Icmpv6Repr::parse(&zero_opt, &src, &dst, 255).unwrap_err(), Error::BadLength);
        let mut long_opt = b;
        long_opt[25] = 2; // option claims 16 bytes, 8 present
        Icmpv6Packet::new_unchecked(&mut long_opt[..]).fill_checksum(&src, &dst);
        assert_eq!(Icmpv6Repr::parse(&long_opt, &src, &dst, 255).unwrap_err(), Error::Truncated);
    }

    #[test]
    fn every_message_round_trips() {
        let (src, dst) = (a("2001:db8::1"), a("2001:db8::2"));
        let mac: EthernetAddress = "02:00:00:00:00:0a".parse().unwrap();
        let invoking = [0x60u8, 0, 0, 0, 0, 8, 17, 1];
        let msgs = [
            Icmpv6Repr::EchoRequest { ident: 7, seq_no: 1, data: b"ping" },
            Icmpv6Repr::EchoReply { ident: 7, seq_no: 1, data: b"pong" },
            Icmpv6Repr::Error { msg_type: ty::PACKET_TOO_BIG, code: 0, param: 1450, invoking: &invoking },
            Icmpv6Repr::Error { msg_type: ty::TIME_EXCEEDED, code: 0, param: 0, invoking: &invoking },
            Icmpv6Repr::RouterSolicit { source_lladdr: Some(mac) },
            Icmpv6Repr::RouterAdvert {
                hop_limit: 64,
                flags: 0,
                lifetime_s: 1800,
                reachable_ms: 0,
                retrans_ms: 0,
                source_lladdr: Some(mac),
                mtu: Some(1450),
                prefix: Some(PrefixInfo {
                    prefix: a("2001:db8:1::"),
                    len: 64,
                    flags: 0xc0,
                    valid_s: 86400,
                    preferred_s: 14400,
                }),
            },
            Icmpv6Repr::NeighborAdvert { flags: 0xe0, target: a("2001:db8::1"), target_lladdr: Some(mac) },
        ];
        for m in msgs {
            let mut b = vec![0u8; m.buffer_len()];
            m.emit(&mut b, &src, &dst);
            let hop = if matches!(
                m,
                Icmpv6Repr::RouterSolicit { .. } | Icmpv6Repr::RouterAdvert { .. } | Icmpv6Repr::NeighborAdvert { .. }
            ) {
                255
            } else {
                64
            };
            assert_eq!(Icmpv6Repr::parse(&b, &src, &dst, hop).unwrap(), m);
        }
    }

    #[test]
    fn checksum_matches_etherparse() {
        let (src, dst) = (a("2001:db8::1"), a("2001:db8::2"));
        let m = Icmpv6Repr::EchoRequest { ident: 0x1234, seq_no: 9, data: b"abcdef" };
        let mut b = vec![0u8; m.buffer_len()];
        m.emit(&mut b, &src, &dst);
        let ep = etherparse::Icmpv6Header::with_checksum(
            etherparse::Icmpv6Type::EchoRequest(etherparse::IcmpEchoHeader { id: 0x1234, seq: 9 }),
            src.octets(),
            dst.octets(),
            b"abcdef",
        )
        .unwrap();
        assert_eq!(Icmpv6Packet::new_checked(&b[..]).unwrap().checksum(), ep.checksum);
    }
}
