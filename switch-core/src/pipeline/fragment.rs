//! IPv4 fragmentation of routed packets (RFC 791 3.2, RFC 1812 5.2.6): a packet
//! without DF that is larger than its next hop's MTU leaves in fragments, as a Linux or
//! VPP router sends it, instead of being dropped. (IPv6 routers never fragment; DF
//! packets get fragmentation needed from the L3 stage.)
//!
//! The first fragment is the packet's own frame, cut short; each other one is a new
//! frame holding a copy of the L2 and IP headers and its slice of the payload. Options
//! not marked "copied" are overwritten with no-ops in the later fragments, as Linux
//! does, so every fragment keeps the original's header length. All the frames are
//! taken before any is written: a packet leaves whole or not at all.

use crate::port::Desc;
use crate::stats::DropReason;
use crate::wire::{checksum, read_u16};
use crate::xsk::Umem;

/// Most fragments one packet is cut into. A packet that would need more (an MTU near
/// IPv4's minimum of 68 bytes) is dropped as `frag_needed`.
pub const MAX_FRAGMENTS: usize = 32;

/// IPv4 flags and fragment offset: more fragments.
const MF: u16 = 0x2000;
/// The offset, in 8-byte units.
const OFFSET: u16 = 0x1fff;

/// Cuts the IPv4 packet in frame `d` (its header at `l2`, whole and checked by the
/// L3 stage, DF clear) into fragments of at most `mtu` bytes of IP. `d` becomes the
/// first; the others are new frames of segment `seg`, in `rest`, and their number is
/// returned. On an error nothing has changed and no frame was taken.
pub(super) fn split(
    umem: &mut Umem,
    d: &mut Desc,
    l2: usize,
    mtu: u32,
    seg: u32,
    rest: &mut [Desc; MAX_FRAGMENTS - 1],
) -> Result<usize, DropReason> {
    let b = umem.data(d.addr, d.len);
    let ihl = usize::from(b[l2] & 0x0f) * 4;
    let total = usize::from(read_u16(b, l2 + 2));
    let field = read_u16(b, l2 + 6);
    let (more, offset) = (field & MF != 0, usize::from(field & OFFSET) * 8);
    // Every fragment but the last carries a multiple of 8 bytes.
    let step = (mtu as usize).saturating_sub(ihl) & !7;
    let payload = total - ihl;
    if step == 0 || payload.div_ceil(step) > MAX_FRAGMENTS {
        return Err(DropReason::FragNeeded);
    }
    let n = payload.div_ceil(step) - 1;
    let headroom = d.addr & u64::from(umem.frame_size() - 1);
    for k in 0..n {
        match umem.alloc_in(seg) {
            Some(base) => rest[k].addr = base + headroom,
            None => {
                for f in &rest[..k] {
                    umem.free(f.addr);
                }
                return Err(DropReason::FragNoFrame);
            }
        }
    }
    let head = l2 + ihl;
    for (k, f) in rest[..n].iter_mut().enumerate() {
        let start = (k + 1) * step;
        let len = step.min(payload - start);
        f.len = (head + len) as u32;
        umem.copy(d.addr, f.addr, head as u32);
        umem.copy(d.addr + (head + start) as u64, f.addr + head as u64, len as u32);
        let h = &mut umem.data_mut(f.addr, f.len)[l2..head];
        drop_uncopied_options(h);
        set_fragment(h, len, offset + start, more || k + 1 < n);
    }
    d.len = (head + step) as u32;
    set_fragment(&mut umem.data_mut(d.addr, d.len)[l2..head], step, offset, true);
    Ok(n)
}

/// Writes an IPv4 fragment's total length (`payload` bytes after the header `h`), its
/// offset in bytes and MF, and its header checksum.
fn set_fragment(h: &mut [u8], payload: usize, offset: usize, more: bool) {
    let total = (h.len() + payload) as u16;
    h[2..4].copy_from_slice(&total.to_be_bytes());
    // Keep the reserved bit and DF (clear: only those are fragmented) as they were.
    let field = read_u16(h, 6) & !(MF | OFFSET) | if more { MF } else { 0 } | (offset / 8) as u16;
    h[6..8].copy_from_slice(&field.to_be_bytes());
    h[10..12].fill(0);
    let c = checksum::checksum(h);
    h[10..12].copy_from_slice(&c.to_be_bytes());
}

/// Overwrites the options of header `h` that the copied flag does not mark with
/// no-ops (RFC 791: only those go into every fragment). Stops at the end-of-options
/// option or at one whose length does not fit, leaving the rest as it is.
fn drop_uncopied_options(h: &mut [u8]) {
    const END: u8 = 0;
    const NOP: u8 = 1;
    const COPIED: u8 = 0x80;
    let mut i = 20;
    while i < h.len() {
        match h[i] {
            END => return,
            NOP => i += 1,
            kind => {
                let len = h.get(i + 1).map_or(0, |&l| usize::from(l));
                if len < 2 || i + len > h.len() {
                    return;
                }
                if kind & COPIED == 0 {
                    h[i..i + len].fill(NOP);
                }
                i += len;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xsk::{HugepagePolicy, UmemConfig, FRAME_HEADROOM};

    fn umem(frames: u32) -> Umem {
        Umem::new(&UmemConfig { frames, frame_size: 2048, hugepages: HugepagePolicy::Off }).unwrap()
    }

    /// An Ethernet frame with an IPv4 header of `options` and `payload` bytes counting
    /// up, written into a fresh frame.
    fn packet(u: &mut Umem, options: &[u8], payload: usize, field: u16) -> Desc {
        let ihl = 20 + options.len();
        let mut p = vec![0u8; 14 + ihl + payload];
        p[12..14].copy_from_slice(&[0x08, 0x00]);
        let ip = &mut p[14..];
        ip[0] = 0x40 | (ihl / 4) as u8;
        ip[2..4].copy_from_slice(&((ihl + payload) as u16).to_be_bytes());
        ip[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
        ip[6..8].copy_from_slice(&field.to_be_bytes());
        ip[8] = 63;
        ip[9] = 17;
        ip[12..20].copy_from_slice(&[198, 18, 1, 10, 198, 18, 2, 20]);
        ip[20..ihl].copy_from_slice(options);
        for (i, x) in ip[ihl..].iter_mut().enumerate() {
            *x = i as u8;
        }
        let c = checksum::checksum(&ip[..ihl]);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        let d = Desc { addr: u.alloc().unwrap() + u64::from(FRAME_HEADROOM), len: p.len() as u32 };
        u.data_mut(d.addr, d.len).copy_from_slice(&p);
        d
    }

    /// A fragment as read back: offset, MF, payload.
    type Piece = (usize, bool, Vec<u8>);

    /// Each fragment, checking its header checksum and length, and the payloads
    /// joined in order.
    fn read(u: &Umem, frames: &[Desc]) -> (Vec<Piece>, Vec<u8>) {
        let mut parts: Vec<_> = frames
            .iter()
            .map(|f| {
                let b = u.data(f.addr, f.len);
                let ip = &b[14..];
                let ihl = usize::from(ip[0] & 0x0f) * 4;
                assert_eq!(checksum::checksum(&ip[..ihl]), 0, "header checksum");
                assert_eq!(usize::from(read_u16(ip, 2)), ip.len(), "total length is the frame's");
                let field = read_u16(ip, 6);
                (usize::from(field & OFFSET) * 8, field & MF != 0, ip[ihl..].to_vec())
            })
            .collect();
        parts.sort_by_key(|p| p.0);
        let joined = parts.iter().flat_map(|p| p.2.clone()).collect();
        (parts, joined)
    }

    #[test]
    fn a_packet_is_cut_into_fragments_that_rebuild_it() {
        let mut u = umem(8);
        let mut d = packet(&mut u, &[], 1480, 0);
        let original = u.data(d.addr, d.len)[14 + 20..].to_vec();
        let mut rest = [Desc::default(); MAX_FRAGMENTS - 1];
        let n = split(&mut u, &mut d, 14, 576, 0, &mut rest).unwrap();
        assert_eq!(n, 2, "1480 bytes in 552-byte steps: 552, 552, 376");
        let mut all = vec![d];
        all.extend_from_slice(&rest[..n]);
        let (parts, joined) = read(&u, &all);
        assert_eq!(joined, original);
        assert_eq!(
            parts.iter().map(|p| (p.0, p.1, p.2.len())).collect::<Vec<_>>(),
            [(0, true, 552), (552, true, 552), (1104, false, 376)]
        );
        for f in &all {
            let ip = &u.data(f.addr, f.len)[14..];
            assert!(ip.len() <= 576);
            assert_eq!(read_u16(ip, 4), 0x1234, "same identification");
            assert_eq!(ip[8], 63, "TTL as routed");
        }
        assert_eq!(u.data(rest[0].addr, 14), u.data(d.addr, 14), "same L2 header");
        assert_eq!(u.free_frames(), 8 - 3);
    }

    /// A fragment cut again: offsets stay absolute, and MF stays set on the last piece
    /// when the original was not the last fragment.
    #[test]
    fn a_fragment_is_cut_again_with_absolute_offsets() {
        let mut u = umem(8);
        let mut d = packet(&mut u, &[], 1000, MF | (800 / 8));
        let mut rest = [Desc::default(); MAX_FRAGMENTS - 1];
        let n = split(&mut u, &mut d, 14, 520, 0, &mut rest).unwrap();
        let mut all = vec![d];
        all.extend_from_slice(&rest[..n]);
        let (parts, _) = read(&u, &all);
        assert_eq!(
            parts.iter().map(|p| (p.0, p.1, p.2.len())).collect::<Vec<_>>(),
            [(800, true, 496), (1296, true, 496), (1792, true, 8)]
        );
    }

    #[test]
    fn only_copied_options_go_into_later_fragments() {
        let mut u = umem(8);
        // Record route (7, not copied, 7 bytes), NOP, security (130, copied, 3 bytes
        // here), end.
        let options = [7, 7, 4, 0, 0, 0, 0, 1, 130, 3, 9, 0];
        let mut d = packet(&mut u, &options, 600, 0);
        let mut rest = [Desc::default(); MAX_FRAGMENTS - 1];
        let n = split(&mut u, &mut d, 14, 400, 0, &mut rest).unwrap();
        assert_eq!(n, 1);
        assert_eq!(u.data(d.addr, d.len)[34..46], options, "the first keeps them all");
        assert_eq!(u.data(rest[0].addr, rest[0].len)[34..46], [1, 1, 1, 1, 1, 1, 1, 1, 130, 3, 9, 0]);
        let (_, joined) = read(&u, &[d, rest[0]]);
        assert_eq!(joined.len(), 600);
    }

    #[test]
    fn without_frames_or_room_nothing_changes() {
        let mut u = umem(2);
        let mut d = packet(&mut u, &[], 1480, 0);
        let before = u.data(d.addr, d.len).to_vec();
        let mut rest = [Desc::default(); MAX_FRAGMENTS - 1];
        // Needs two more frames; one is free.
        assert_eq!(split(&mut u, &mut d, 14, 576, 0, &mut rest), Err(DropReason::FragNoFrame));
        assert_eq!(u.free_frames(), 1, "the frame taken was given back");
        // An MTU with no room for 8 bytes after the header, and one needing too many.
        assert_eq!(split(&mut u, &mut d, 14, 27, 0, &mut rest), Err(DropReason::FragNeeded));
        assert_eq!(split(&mut u, &mut d, 14, 60, 0, &mut rest), Err(DropReason::FragNeeded));
        assert_eq!(u.data(d.addr, d.len), &before[..]);
    }
}
