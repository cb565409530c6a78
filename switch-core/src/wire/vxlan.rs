//! VXLAN (RFC 7348): an 8-byte header after UDP, then the inner Ethernet frame.
//!
//! ```text
//!  0                   1                   2                   3
//! |R|R|R|R|I|R|R|R|            Reserved                           |
//! |                VXLAN Network Identifier (VNI) |   Reserved    |
//! ```
//!
//! Receivers here are as strict as Linux's `vxlan` driver without extensions: the
//! first word must be exactly the I flag, and the last byte zero. A header with other
//! bits set belongs to an extension (GBP, GPE) this switch does not speak, and is
//! dropped rather than misread.

use super::{Error, Result};

/// The IANA port.
pub const PORT: u16 = 4789;
/// VXLAN header length.
pub const HEADER_LEN: usize = 8;
/// The I flag: the VNI is valid.
pub const FLAG_I: u8 = 0x08;
/// Largest VNI (24 bits).
pub const MAX_VNI: u32 = (1 << 24) - 1;
/// Bytes VXLAN adds in front of an inner Ethernet frame over IPv4: outer Ethernet
/// (14), IPv4 (20), UDP (8), VXLAN (8).
pub const OVERHEAD_V4: usize = 14 + 20 + 8 + HEADER_LEN;
/// The same over IPv6 (IPv6 header 40).
pub const OVERHEAD_V6: usize = 14 + 40 + 8 + HEADER_LEN;

mod field {
    pub const FLAGS: usize = 0;
    pub const VNI: core::ops::Range<usize> = 4..7;
    pub const RESERVED2: usize = 7;
}

/// A view over a VXLAN header and what follows.
#[derive(Debug, Clone)]
pub struct VxlanPacket<T> {
    buffer: T,
}

impl<T: AsRef<[u8]>> VxlanPacket<T> {
    /// Wraps a buffer without checking it.
    pub const fn new_unchecked(buffer: T) -> Self {
        VxlanPacket { buffer }
    }

    /// Wraps a buffer, checking that the header is whole.
    pub fn new_checked(buffer: T) -> Result<Self> {
        if buffer.as_ref().len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        Ok(VxlanPacket { buffer })
    }

    /// True if the header is plain VXLAN: the I flag alone in the first word and a
    /// zero last byte.
    pub fn is_plain(&self) -> bool {
        let b = self.buffer.as_ref();
        b[..4] == [FLAG_I, 0, 0, 0] && b[field::RESERVED2] == 0
    }

    /// The flags byte.
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    /// The VNI.
    pub fn vni(&self) -> u32 {
        let b = &self.buffer.as_ref()[field::VNI];
        u32::from_be_bytes([0, b[0], b[1], b[2]])
    }

    /// The inner frame.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }
}

impl<T: AsMut<[u8]>> VxlanPacket<T> {
    /// Writes a plain header for `vni` (which must fit in 24 bits).
    pub fn emit(&mut self, vni: u32) {
        debug_assert!(vni <= MAX_VNI);
        write_header(self.buffer.as_mut(), vni);
    }
}

/// Writes a plain VXLAN header for `vni` into the first 8 bytes of `b`.
#[inline]
pub fn write_header(b: &mut [u8], vni: u32) {
    let v = vni.to_be_bytes();
    b[..HEADER_LEN].copy_from_slice(&[FLAG_I, 0, 0, 0, v[1], v[2], v[3], 0]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_and_strictness() {
        let mut b = [0u8; 8];
        VxlanPacket::new_unchecked(&mut b[..]).emit(0xabcdef);
        assert_eq!(b, [0x08, 0, 0, 0, 0xab, 0xcd, 0xef, 0]);
        let p = VxlanPacket::new_checked(&b[..]).unwrap();
        assert!(p.is_plain());
        assert_eq!(p.vni(), 0xabcdef);
        let mut gbp = b;
        gbp[0] = 0x88; // the GBP extension's G bit
        assert!(!VxlanPacket::new_unchecked(&gbp[..]).is_plain());
        let mut no_i = b;
        no_i[0] = 0;
        assert!(!VxlanPacket::new_unchecked(&no_i[..]).is_plain());
        let mut reserved = b;
        reserved[7] = 1;
        assert!(!VxlanPacket::new_unchecked(&reserved[..]).is_plain());
        assert_eq!(VxlanPacket::new_checked(&b[..7]).unwrap_err(), Error::Truncated);
    }

    #[test]
    fn overheads_are_what_design_md_says() {
        assert_eq!(OVERHEAD_V4, 50);
        assert_eq!(OVERHEAD_V6, 70);
    }
}
