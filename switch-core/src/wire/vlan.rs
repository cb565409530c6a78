//! IEEE 802.1Q VLAN tags: the 4 bytes that follow the TPID (0x8100).

use super::{read_u16, write_u16, Error, EtherType, Result};

/// A 12-bit VLAN identifier, 1..=4094 (0 means priority-tagged, 4095 is reserved).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub struct VlanId(u16);

impl VlanId {
    /// Checks that `vid` is a usable VLAN id (1..=4094).
    pub const fn new(vid: u16) -> Option<VlanId> {
        if vid >= 1 && vid <= 4094 {
            Some(VlanId(vid))
        } else {
            None
        }
    }

    /// The numeric id.
    pub const fn get(self) -> u16 {
        self.0
    }
}

mod field {
    pub const TCI: usize = 0;
    pub const ETHERTYPE: usize = 2;
    pub const PAYLOAD: usize = 4;
}

/// Length of the tag after the TPID: TCI and the inner EtherType.
pub const TAG_LEN: usize = field::PAYLOAD;

/// A view over an 802.1Q tag (starting after the outer EtherType/TPID).
#[derive(Debug, Clone)]
pub struct VlanTag<T> {
    buffer: T,
}

impl<T: AsRef<[u8]>> VlanTag<T> {
    /// Wraps a buffer without checking its length.
    pub const fn new_unchecked(buffer: T) -> Self {
        VlanTag { buffer }
    }

    /// Wraps a buffer, checking that it holds the tag.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let t = Self::new_unchecked(buffer);
        t.check_len()?;
        Ok(t)
    }

    /// `Truncated` unless the 4-byte tag is present.
    pub fn check_len(&self) -> Result<()> {
        if self.buffer.as_ref().len() < TAG_LEN {
            Err(Error::Truncated)
        } else {
            Ok(())
        }
    }

    /// Priority code point.
    pub fn pcp(&self) -> u8 {
        (read_u16(self.buffer.as_ref(), field::TCI) >> 13) as u8
    }

    /// The 12-bit VLAN id field as it is on the wire (0 and 4095 included).
    pub fn vid(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::TCI) & 0x0fff
    }

    /// The inner EtherType.
    pub fn ethertype(&self) -> EtherType {
        EtherType(read_u16(self.buffer.as_ref(), field::ETHERTYPE))
    }

    /// What follows the tag.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> VlanTag<T> {
    /// Sets the VLAN id, keeping PCP and DEI.
    pub fn set_vid(&mut self, vid: VlanId) {
        let tci = read_u16(self.buffer.as_ref(), field::TCI) & 0xf000 | vid.get();
        write_u16(self.buffer.as_mut(), field::TCI, tci)
    }

    /// Sets the whole TCI (PCP, DEI, VID).
    pub fn set_tci(&mut self, tci: u16) {
        write_u16(self.buffer.as_mut(), field::TCI, tci)
    }

    /// Sets the inner EtherType.
    pub fn set_ethertype(&mut self, t: EtherType) {
        write_u16(self.buffer.as_mut(), field::ETHERTYPE, t.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_tag() {
        // PCP 5, DEI 0, VID 100; inner IPv6
        let b = [0xa0, 0x64, 0x86, 0xdd, 0x60];
        let t = VlanTag::new_checked(&b[..]).unwrap();
        assert_eq!(t.pcp(), 5);
        assert_eq!(t.vid(), 100);
        assert_eq!(t.ethertype(), EtherType::IPV6);
        assert_eq!(t.payload(), &[0x60]);
        assert_eq!(VlanTag::new_checked(&b[..3]).unwrap_err(), Error::Truncated);
    }

    #[test]
    fn set_vid_keeps_priority() {
        let mut b = [0xa0, 0x64, 0x08, 0x00];
        VlanTag::new_unchecked(&mut b[..]).set_vid(VlanId::new(200).unwrap());
        assert_eq!(b, [0xa0, 0xc8, 0x08, 0x00]);
    }

    #[test]
    fn vlan_id_range() {
        assert!(VlanId::new(0).is_none());
        assert!(VlanId::new(4095).is_none());
        assert_eq!(VlanId::new(4094).unwrap().get(), 4094);
    }
}
