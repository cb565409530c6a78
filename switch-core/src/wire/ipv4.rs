//! IPv4 headers (RFC 791).

use super::{checksum, read_u16, write_u16, Error, Result};
use std::net::Ipv4Addr;

/// The IP protocol / IPv6 next-header number.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct IpProtocol(pub u8);

impl IpProtocol {
    /// ICMP for IPv4.
    pub const ICMP: IpProtocol = IpProtocol(1);
    /// TCP.
    pub const TCP: IpProtocol = IpProtocol(6);
    /// UDP.
    pub const UDP: IpProtocol = IpProtocol(17);
    /// ICMPv6.
    pub const ICMPV6: IpProtocol = IpProtocol(58);
}

mod field {
    pub const VER_IHL: usize = 0;
    pub const DSCP_ECN: usize = 1;
    pub const LENGTH: usize = 2;
    pub const IDENT: usize = 4;
    pub const FLG_OFF: usize = 6;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: usize = 10;
    pub const SRC: usize = 12;
    pub const DST: usize = 16;
}

/// Length of a header without options.
pub const HEADER_LEN: usize = 20;

/// A view over an IPv4 packet.
#[derive(Debug, Clone)]
pub struct Ipv4Packet<T> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// Wraps a buffer without checking it.
    pub const fn new_unchecked(buffer: T) -> Self {
        Ipv4Packet { buffer }
    }

    /// Wraps a buffer, checking version, header length and total length against it.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Validates the header's shape: version 4, IHL at least 5, and total length between
    /// the header length and the buffer length. Trailing bytes (Ethernet padding) are
    /// allowed and ignored by [`payload`](Self::payload).
    pub fn check_len(&self) -> Result<()> {
        let b = self.buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        if self.version() != 4 {
            return Err(Error::BadVersion);
        }
        let hl = self.header_len();
        let total = usize::from(self.total_len());
        if hl < HEADER_LEN || total < hl {
            return Err(Error::BadLength);
        }
        if b.len() < total {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// The version field.
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }
    /// Header length in bytes (IHL × 4).
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::VER_IHL] & 0x0f) * 4
    }
    /// DSCP and ECN.
    pub fn dscp_ecn(&self) -> u8 {
        self.buffer.as_ref()[field::DSCP_ECN]
    }
    /// Total length field.
    pub fn total_len(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::LENGTH)
    }
    /// Identification.
    pub fn ident(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::IDENT)
    }
    /// Don't-fragment flag.
    pub fn dont_frag(&self) -> bool {
        read_u16(self.buffer.as_ref(), field::FLG_OFF) & 0x4000 != 0
    }
    /// More-fragments flag.
    pub fn more_frags(&self) -> bool {
        read_u16(self.buffer.as_ref(), field::FLG_OFF) & 0x2000 != 0
    }
    /// Fragment offset in bytes.
    pub fn frag_offset(&self) -> u16 {
        (read_u16(self.buffer.as_ref(), field::FLG_OFF) & 0x1fff) * 8
    }
    /// Time to live.
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }
    /// Protocol.
    pub fn protocol(&self) -> IpProtocol {
        IpProtocol(self.buffer.as_ref()[field::PROTOCOL])
    }
    /// Header checksum field.
    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM)
    }
    /// Source address.
    pub fn src_addr(&self) -> Ipv4Addr {
        let b = self.buffer.as_ref();
        Ipv4Addr::new(b[field::SRC], b[field::SRC + 1], b[field::SRC + 2], b[field::SRC + 3])
    }
    /// Destination address.
    pub fn dst_addr(&self) -> Ipv4Addr {
        let b = self.buffer.as_ref();
        Ipv4Addr::new(b[field::DST], b[field::DST + 1], b[field::DST + 2], b[field::DST + 3])
    }
    /// True when the header checksum verifies. Unrolled for the common 20-byte header:
    /// routers check every packet.
    #[inline(always)]
    pub fn verify_checksum(&self) -> bool {
        let h = &self.buffer.as_ref()[..self.header_len()];
        if let Ok(h) = <&[u8; HEADER_LEN]>::try_from(h) {
            return checksum::verify_ipv4_header(h);
        }
        checksum::fold(checksum::sum(h)) == 0xffff
    }
    /// The payload, bounded by the total length field.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..usize::from(self.total_len())]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    /// Sets the TTL.
    pub fn set_ttl(&mut self, ttl: u8) {
        self.buffer.as_mut()[field::TTL] = ttl
    }
    /// Sets the checksum field.
    pub fn set_checksum(&mut self, c: u16) {
        write_u16(self.buffer.as_mut(), field::CHECKSUM, c)
    }
    /// Recomputes the header checksum.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let c = checksum::checksum(&self.buffer.as_ref()[..self.header_len()]);
        self.set_checksum(c)
    }
    /// The payload, writable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let (hl, tl) = (self.header_len(), usize::from(self.total_len()));
        &mut self.buffer.as_mut()[hl..tl]
    }
}

/// An IPv4 header without options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Repr {
    /// Source.
    pub src_addr: Ipv4Addr,
    /// Destination.
    pub dst_addr: Ipv4Addr,
    /// Upper-layer protocol.
    pub protocol: IpProtocol,
    /// Payload length in bytes.
    pub payload_len: usize,
    /// Time to live.
    pub ttl: u8,
    /// Don't fragment.
    pub dont_frag: bool,
}

impl Ipv4Repr {
    /// Parses a checked packet; the checksum must verify. Fragments are `Unsupported`.
    pub fn parse<T: AsRef<[u8]>>(p: &Ipv4Packet<T>) -> Result<Ipv4Repr> {
        p.check_len()?;
        if !p.verify_checksum() {
            return Err(Error::BadChecksum);
        }
        if p.more_frags() || p.frag_offset() != 0 {
            return Err(Error::Unsupported);
        }
        Ok(Ipv4Repr {
            src_addr: p.src_addr(),
            dst_addr: p.dst_addr(),
            protocol: p.protocol(),
            payload_len: p.payload().len(),
            ttl: p.ttl(),
            dont_frag: p.dont_frag(),
        })
    }

    /// 20 bytes.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes a 20-byte header, checksum included.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut Ipv4Packet<T>) {
        let b = p.buffer.as_mut();
        b[field::VER_IHL] = 0x45;
        b[field::DSCP_ECN] = 0;
        write_u16(b, field::LENGTH, (HEADER_LEN + self.payload_len) as u16);
        write_u16(b, field::IDENT, 0);
        write_u16(b, field::FLG_OFF, if self.dont_frag { 0x4000 } else { 0 });
        b[field::TTL] = self.ttl;
        b[field::PROTOCOL] = self.protocol.0;
        b[field::SRC..field::SRC + 4].copy_from_slice(&self.src_addr.octets());
        b[field::DST..field::DST + 4].copy_from_slice(&self.dst_addr.octets());
        p.fill_checksum();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // 198.18.0.1 -> 198.18.0.2, UDP, 4 bytes of payload, TTL 64, DF.
    static PACKET: [u8; 24] = [
        0x45, 0x00, 0x00, 0x18, // version 4, IHL 5, total length 24
        0x00, 0x00, 0x40, 0x00, // ident 0, DF
        0x40, 0x11, 0xae, 0xad, // TTL 64, UDP, checksum
        198, 18, 0, 1, // src
        198, 18, 0, 2, // dst
        0xde, 0xad, 0xbe, 0xef, // payload
    ];

    #[test]
    fn parse_fields() {
        let p = Ipv4Packet::new_checked(&PACKET[..]).unwrap();
        assert!(p.verify_checksum(), "checksum {:04x}", p.checksum());
        let r = Ipv4Repr::parse(&p).unwrap();
        assert_eq!(r.src_addr, Ipv4Addr::new(198, 18, 0, 1));
        assert_eq!(r.protocol, IpProtocol::UDP);
        assert_eq!(r.payload_len, 4);
        assert!(r.dont_frag);
    }

    #[test]
    fn emit_round_trip() {
        let r = Ipv4Repr::parse(&Ipv4Packet::new_checked(&PACKET[..]).unwrap()).unwrap();
        let mut out = PACKET;
        out[..20].fill(0);
        r.emit(&mut Ipv4Packet::new_unchecked(&mut out[..]));
        assert_eq!(out, PACKET);
    }

    #[test]
    fn truncated() {
        assert_eq!(Ipv4Packet::new_checked(&PACKET[..19]).unwrap_err(), Error::Truncated);
        // total length says 24, buffer has 23
        assert_eq!(Ipv4Packet::new_checked(&PACKET[..23]).unwrap_err(), Error::Truncated);
    }

    #[test]
    fn overlong_buffer_ignores_padding() {
        let mut b = PACKET.to_vec();
        b.extend_from_slice(&[0; 22]);
        let p = Ipv4Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.payload(), &[0xde, 0xad, 0xbe, 0xef]);
    }

    #[test]
    fn bad_lengths_and_version() {
        let mut b = PACKET;
        b[0] = 0x44; // IHL 4
        assert_eq!(Ipv4Packet::new_checked(&b[..]).unwrap_err(), Error::BadLength);
        let mut b = PACKET;
        b[3] = 19; // total length below header
        assert_eq!(Ipv4Packet::new_checked(&b[..]).unwrap_err(), Error::BadLength);
        let mut b = PACKET;
        b[0] = 0x65;
        assert_eq!(Ipv4Packet::new_checked(&b[..]).unwrap_err(), Error::BadVersion);
    }

    #[test]
    fn bad_checksum() {
        let mut b = PACKET;
        b[11] ^= 1;
        let p = Ipv4Packet::new_checked(&b[..]).unwrap();
        assert!(!p.verify_checksum());
        assert_eq!(Ipv4Repr::parse(&p).unwrap_err(), Error::BadChecksum);
    }
}
