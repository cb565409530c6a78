//! UDP (RFC 768), with the IPv4 and IPv6 pseudo-header checksums.

use super::{checksum, read_u16, write_u16, Error, IpProtocol, Result};
use std::net::IpAddr;

mod field {
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const LENGTH: usize = 4;
    pub const CHECKSUM: usize = 6;
}

/// UDP header length.
pub const HEADER_LEN: usize = 8;

/// A view over a UDP datagram.
#[derive(Debug, Clone)]
pub struct UdpPacket<T> {
    buffer: T,
}

impl<T: AsRef<[u8]>> UdpPacket<T> {
    /// Wraps a buffer without checking it.
    pub const fn new_unchecked(buffer: T) -> Self {
        UdpPacket { buffer }
    }

    /// Wraps a buffer, checking the length field against it.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// `Truncated` if the header or the length the field claims is missing; `BadLength`
    /// if the length field is below 8.
    pub fn check_len(&self) -> Result<()> {
        let b = self.buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let len = usize::from(self.len());
        if len < HEADER_LEN {
            return Err(Error::BadLength);
        }
        if b.len() < len {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// Source port.
    pub fn src_port(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::SRC_PORT)
    }
    /// Destination port.
    pub fn dst_port(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::DST_PORT)
    }
    /// Length field (header and payload).
    pub fn len(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::LENGTH)
    }
    /// True when the length field says there is no payload.
    pub fn is_empty(&self) -> bool {
        self.len() as usize == HEADER_LEN
    }
    /// Checksum field.
    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM)
    }
    /// The payload, bounded by the length field.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..usize::from(self.len())]
    }

    /// Verifies the checksum over the pseudo-header; a zero checksum is accepted over
    /// IPv4 (RFC 768: not computed) but not over IPv6 (RFC 8200 section 8.1).
    pub fn verify_checksum(&self, src: IpAddr, dst: IpAddr) -> bool {
        if self.checksum() == 0 {
            return src.is_ipv4();
        }
        checksum::verify_l4(src, dst, IpProtocol::UDP.0, &self.buffer.as_ref()[..usize::from(self.len())])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> UdpPacket<T> {
    /// Sets the source port.
    pub fn set_src_port(&mut self, p: u16) {
        write_u16(self.buffer.as_mut(), field::SRC_PORT, p)
    }
    /// Sets the destination port.
    pub fn set_dst_port(&mut self, p: u16) {
        write_u16(self.buffer.as_mut(), field::DST_PORT, p)
    }
    /// Sets the length field.
    pub fn set_len(&mut self, l: u16) {
        write_u16(self.buffer.as_mut(), field::LENGTH, l)
    }
    /// Sets the checksum field.
    pub fn set_checksum(&mut self, c: u16) {
        write_u16(self.buffer.as_mut(), field::CHECKSUM, c)
    }
    /// The payload, writable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let len = usize::from(self.len());
        &mut self.buffer.as_mut()[HEADER_LEN..len]
    }
    /// Computes the checksum over the pseudo-header (0 is sent as 0xffff).
    pub fn fill_checksum(&mut self, src: IpAddr, dst: IpAddr) {
        self.set_checksum(0);
        let c = checksum::l4(src, dst, IpProtocol::UDP.0, &self.buffer.as_ref()[..usize::from(self.len())]);
        self.set_checksum(if c == 0 { 0xffff } else { c })
    }
}

/// A UDP header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpRepr {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
}

impl UdpRepr {
    /// Parses a checked datagram, verifying the checksum.
    pub fn parse<T: AsRef<[u8]>>(p: &UdpPacket<T>, src: IpAddr, dst: IpAddr) -> Result<UdpRepr> {
        p.check_len()?;
        if !p.verify_checksum(src, dst) {
            return Err(Error::BadChecksum);
        }
        Ok(UdpRepr { src_port: p.src_port(), dst_port: p.dst_port() })
    }

    /// 8 bytes.
    pub const fn header_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the header for `payload_len` bytes of payload already in place, and the
    /// checksum over them.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        p: &mut UdpPacket<T>,
        payload_len: usize,
        src: IpAddr,
        dst: IpAddr,
    ) {
        p.set_src_port(self.src_port);
        p.set_dst_port(self.dst_port);
        p.set_len((HEADER_LEN + payload_len) as u16);
        p.fill_checksum(src, dst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4() -> (IpAddr, IpAddr) {
        ("198.18.0.1".parse().unwrap(), "198.18.0.2".parse().unwrap())
    }

    fn v6() -> (IpAddr, IpAddr) {
        ("2001:db8::1".parse().unwrap(), "2001:db8::2".parse().unwrap())
    }

    fn datagram(src: IpAddr, dst: IpAddr) -> Vec<u8> {
        let mut b = vec![
            0x30, 0x39, // src port 12345
            0x00, 0x35, // dst port 53
            0x00, 0x0c, // length 12
            0x00, 0x00, // checksum, filled below
            b'p', b'i', b'n', b'g',
        ];
        UdpRepr { src_port: 12345, dst_port: 53 }.emit(&mut UdpPacket::new_unchecked(&mut b[..]), 4, src, dst);
        b
    }

    #[test]
    fn checksum_agrees_with_etherparse() {
        let (s, d) = v4();
        let b = datagram(s, d);
        let ep = etherparse::UdpHeader { source_port: 12345, destination_port: 53, length: 12, checksum: 0 };
        let expect = ep.calc_checksum_ipv4_raw([198, 18, 0, 1], [198, 18, 0, 2], b"ping").unwrap();
        assert_eq!(UdpPacket::new_checked(&b[..]).unwrap().checksum(), expect);
        let (s6, d6) = v6();
        let b6 = datagram(s6, d6);
        assert!(UdpRepr::parse(&UdpPacket::new_checked(&b6[..]).unwrap(), s6, d6).is_ok());
    }

    #[test]
    fn bad_checksum_and_zero() {
        let (s, d) = v4();
        let mut b = datagram(s, d);
        b[9] ^= 0xff;
        assert_eq!(UdpRepr::parse(&UdpPacket::new_checked(&b[..]).unwrap(), s, d), Err(Error::BadChecksum));
        b[6] = 0;
        b[7] = 0;
        assert!(UdpPacket::new_checked(&b[..]).unwrap().verify_checksum(s, d));
        let (s6, d6) = v6();
        assert!(!UdpPacket::new_checked(&b[..]).unwrap().verify_checksum(s6, d6));
    }

    #[test]
    fn lengths() {
        let (s, d) = v4();
        let b = datagram(s, d);
        assert_eq!(UdpPacket::new_checked(&b[..7]).unwrap_err(), Error::Truncated);
        assert_eq!(UdpPacket::new_checked(&b[..11]).unwrap_err(), Error::Truncated);
        let mut short = b.clone();
        short[5] = 7;
        assert_eq!(UdpPacket::new_checked(&short[..]).unwrap_err(), Error::BadLength);
        let mut long = b.clone();
        long.extend_from_slice(&[0; 6]);
        assert_eq!(UdpPacket::new_checked(&long[..]).unwrap().payload(), b"ping");
    }
}
