//! TCP headers (RFC 9293): the fields a router and a flow hash read, and the checksum.

use super::{checksum, read_u16, write_u16, Error, IpProtocol, Result};
use std::net::IpAddr;

mod field {
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const SEQ: usize = 4;
    pub const ACK: usize = 8;
    pub const OFF_FLAGS: usize = 12;
    pub const WINDOW: usize = 14;
    pub const CHECKSUM: usize = 16;
}

/// Header length without options.
pub const HEADER_LEN: usize = 20;

/// Flag bits.
pub mod flags {
    /// FIN.
    pub const FIN: u16 = 0x001;
    /// SYN.
    pub const SYN: u16 = 0x002;
    /// RST.
    pub const RST: u16 = 0x004;
    /// PSH.
    pub const PSH: u16 = 0x008;
    /// ACK.
    pub const ACK: u16 = 0x010;
}

/// A view over a TCP segment (the whole IP payload).
#[derive(Debug, Clone)]
pub struct TcpPacket<T> {
    buffer: T,
}

impl<T: AsRef<[u8]>> TcpPacket<T> {
    /// Wraps a buffer without checking it.
    pub const fn new_unchecked(buffer: T) -> Self {
        TcpPacket { buffer }
    }

    /// Wraps a buffer, checking the data offset against it.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// `Truncated` if the header (with its options) is not all there; `BadLength` if
    /// the data offset is below 5 words.
    pub fn check_len(&self) -> Result<()> {
        let b = self.buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let hl = self.header_len();
        if hl < HEADER_LEN {
            return Err(Error::BadLength);
        }
        if b.len() < hl {
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
    /// Sequence number.
    pub fn seq_number(&self) -> u32 {
        let b = self.buffer.as_ref();
        u32::from_be_bytes([b[field::SEQ], b[field::SEQ + 1], b[field::SEQ + 2], b[field::SEQ + 3]])
    }
    /// Acknowledgement number.
    pub fn ack_number(&self) -> u32 {
        let b = self.buffer.as_ref();
        u32::from_be_bytes([b[field::ACK], b[field::ACK + 1], b[field::ACK + 2], b[field::ACK + 3]])
    }
    /// Header length in bytes (data offset × 4).
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::OFF_FLAGS] >> 4) * 4
    }
    /// The 9 flag bits.
    pub fn flags(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::OFF_FLAGS) & 0x01ff
    }
    /// Window.
    pub fn window(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::WINDOW)
    }
    /// Checksum field.
    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM)
    }
    /// Options.
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..self.header_len()]
    }
    /// Data after the header.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }
    /// True when the checksum over the pseudo-header and the segment verifies.
    pub fn verify_checksum(&self, src: IpAddr, dst: IpAddr) -> bool {
        checksum::verify_l4(src, dst, IpProtocol::TCP.0, self.buffer.as_ref())
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TcpPacket<T> {
    /// Sets the ports.
    pub fn set_ports(&mut self, src: u16, dst: u16) {
        write_u16(self.buffer.as_mut(), field::SRC_PORT, src);
        write_u16(self.buffer.as_mut(), field::DST_PORT, dst);
    }
    /// Sets the checksum field (after an incremental update, for example).
    pub fn set_checksum(&mut self, c: u16) {
        write_u16(self.buffer.as_mut(), field::CHECKSUM, c)
    }
    /// Computes the checksum over the pseudo-header and the whole segment.
    pub fn fill_checksum(&mut self, src: IpAddr, dst: IpAddr) {
        self.set_checksum(0);
        let c = checksum::l4(src, dst, IpProtocol::TCP.0, self.buffer.as_ref());
        self.set_checksum(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A SYN from 198.18.0.1:40000 to 198.18.0.2:80 with an MSS option.
    static SYN: [u8; 24] = [
        0x9c, 0x40, // src port 40000
        0x00, 0x50, // dst port 80
        0x00, 0x00, 0x00, 0x01, // seq 1
        0x00, 0x00, 0x00, 0x00, // ack 0
        0x60, 0x02, // data offset 6 words, SYN
        0xfa, 0xf0, // window 64240
        0x00, 0x00, // checksum (filled in by the test)
        0x00, 0x00, // urgent pointer
        0x02, 0x04, 0x05, 0xb4, // option: MSS 1460
    ];

    fn ends() -> (IpAddr, IpAddr) {
        ("198.18.0.1".parse().unwrap(), "198.18.0.2".parse().unwrap())
    }

    fn syn() -> [u8; 24] {
        let (s, d) = ends();
        let mut b = SYN;
        TcpPacket::new_unchecked(&mut b[..]).fill_checksum(s, d);
        b
    }

    #[test]
    fn fields_and_checksum_against_etherparse() {
        let (s, d) = ends();
        let b = syn();
        let p = TcpPacket::new_checked(&b[..]).unwrap();
        assert_eq!((p.src_port(), p.dst_port(), p.seq_number(), p.ack_number()), (40000, 80, 1, 0));
        assert_eq!(p.flags(), flags::SYN);
        assert_eq!(p.window(), 64240);
        assert_eq!(p.options(), &[2, 4, 5, 0xb4]);
        assert!(p.payload().is_empty());
        assert!(p.verify_checksum(s, d));
        let (h, _) = etherparse::TcpHeader::from_slice(&b).unwrap();
        assert_eq!(h.calc_checksum_ipv4_raw([198, 18, 0, 1], [198, 18, 0, 2], &[]).unwrap(), p.checksum());
    }

    #[test]
    fn truncated_bad_offset_overlong_bad_checksum() {
        let (s, d) = ends();
        let b = syn();
        assert_eq!(TcpPacket::new_checked(&b[..19]).unwrap_err(), Error::Truncated);
        assert_eq!(TcpPacket::new_checked(&b[..22]).unwrap_err(), Error::Truncated, "options cut short");
        let mut off = b;
        off[12] = 0x40;
        assert_eq!(TcpPacket::new_checked(&off[..]).unwrap_err(), Error::BadLength);
        let mut long = b.to_vec();
        long.extend_from_slice(b"data");
        assert_eq!(TcpPacket::new_checked(&long[..]).unwrap().payload(), b"data");
        let mut bad = b;
        bad[5] ^= 1;
        assert!(!TcpPacket::new_checked(&bad[..]).unwrap().verify_checksum(s, d));
    }
}
