//! What the generator sends: UDP over IPv4 or IPv6, optionally inside VXLAN over
//! IPv4, in one or more sizes and flows, each frame carrying a signature the sink
//! reads.
//!
//! The signature is the first 16 bytes of the UDP payload, network byte order:
//!
//! ```text
//! 0      2      4             8                     16
//! | "PS" | flow | seq in flow |  send time (ns, CLOCK_MONOTONIC)  |
//! ```
//!
//! Flow `f` (0-based) differs from flow 0 in its UDP source port (`src_port + f`,
//! wrapping at 65,536) and, inside VXLAN, in the outer UDP source port (`0xc000 |
//! f & 0x3fff`, as a VTEP derives it from the inner flow); everything else is the same,
//! so L2 and L3 forwarders see one conversation per flow and hash them apart by port.
//! Frame `n` of a run belongs to flow `n % flows` with sequence number `n / flows`,
//! and has the size `sizes[n % sizes.len()]`.

use anyhow::{bail, Result};
use std::net::{IpAddr, Ipv4Addr};
use switch_core::wire::{checksum, EthernetAddress};

/// Bytes of the signature.
pub const SIGNATURE_LEN: usize = 16;
/// The signature's first two bytes, "PS".
pub const MAGIC: u16 = 0x5053;
/// The frame check sequence: counted in sizes on the wire, not in buffers.
pub const FCS: usize = 4;
/// Largest size on the wire (what a veth's native XDP takes with room to spare).
pub const MAX_WIRE: usize = 3000;
/// Most flows (one per UDP source port).
pub const MAX_FLOWS: u32 = 65_536;
/// IMIX sizes on the wire, 7:4:1 of 64, 594 and 1518 bytes, interleaved.
pub const IMIX: [usize; 12] = [64, 594, 64, 1518, 64, 594, 64, 64, 594, 64, 594, 64];
/// VXLAN's UDP port.
pub const VXLAN_PORT: u16 = 4789;

/// The outer headers of a VXLAN-encapsulated stream (IPv4 underlay, UDP checksum
/// zero as Linux sends it).
#[derive(Debug, Clone)]
pub struct Vxlan {
    /// Outer source MAC.
    pub src_mac: EthernetAddress,
    /// Outer destination MAC.
    pub dst_mac: EthernetAddress,
    /// Sending VTEP.
    pub src: Ipv4Addr,
    /// Receiving VTEP.
    pub dst: Ipv4Addr,
    /// VNI (24 bits).
    pub vni: u32,
}

/// A stream of UDP frames.
#[derive(Debug, Clone)]
pub struct Stream {
    /// Source MAC.
    pub src_mac: EthernetAddress,
    /// Destination MAC.
    pub dst_mac: EthernetAddress,
    /// Source address.
    pub src_ip: IpAddr,
    /// Destination address (same family).
    pub dst_ip: IpAddr,
    /// UDP source port of flow 0.
    pub src_port: u16,
    /// UDP destination port.
    pub dst_port: u16,
    /// Flows, 1 to 65,536.
    pub flows: u32,
    /// Sizes on the wire (FCS included), in the order frames take them.
    pub sizes: Vec<usize>,
    /// Encapsulation, if any.
    pub vxlan: Option<Vxlan>,
}

/// Where things are in a frame of a [`Stream`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Inner IP header.
    pub ip: usize,
    /// Inner UDP header.
    pub udp: usize,
    /// The signature.
    pub sig: usize,
    /// Outer UDP header (VXLAN only).
    pub outer_udp: Option<usize>,
    /// The 16-bit fields that depend on the frame's size (lengths, IPv4 header
    /// checksums), outer first.
    pub size_fields: Vec<usize>,
}

impl Stream {
    fn v6(&self) -> bool {
        self.src_ip.is_ipv6()
    }

    /// Where things are.
    pub fn layout(&self) -> Layout {
        let eth = if self.vxlan.is_some() { 14 + 20 + 8 + 8 } else { 0 };
        let ip = eth + 14;
        let udp = ip + if self.v6() { 40 } else { 20 };
        let mut size_fields = Vec::new();
        if self.vxlan.is_some() {
            size_fields.extend([14 + 2, 14 + 10, 34 + 4]);
        }
        if self.v6() {
            size_fields.extend([ip + 4, udp + 4]);
        } else {
            size_fields.extend([ip + 2, ip + 10, udp + 4]);
        }
        Layout { ip, udp, sig: udp + 8, outer_udp: self.vxlan.as_ref().map(|_| 34), size_fields }
    }

    /// Smallest size on the wire that holds the headers and the signature.
    pub fn min_wire(&self) -> usize {
        (self.layout().sig + SIGNATURE_LEN + FCS).max(64)
    }

    /// Checks that the stream can be generated; says what to change if not.
    pub fn validate(&self) -> Result<()> {
        if self.src_ip.is_ipv6() != self.dst_ip.is_ipv6() {
            bail!("source {} and destination {} are of different families", self.src_ip, self.dst_ip);
        }
        if !(1..=MAX_FLOWS).contains(&self.flows) {
            bail!("--flows {}: must be 1 to {MAX_FLOWS} (one per UDP source port)", self.flows);
        }
        if self.sizes.is_empty() || self.sizes.len() > 64 {
            bail!("give 1 to 64 sizes (got {})", self.sizes.len());
        }
        let min = self.min_wire();
        for &s in &self.sizes {
            if !(min..=MAX_WIRE).contains(&s) {
                bail!(
                    "size {s}: must be {min} to {MAX_WIRE} bytes on the wire (FCS included) for this stream: \
                     its headers and the {SIGNATURE_LEN}-byte signature need {min}"
                );
            }
        }
        if let Some(v) = &self.vxlan {
            if v.vni >= 1 << 24 {
                bail!("VNI {} does not fit in 24 bits", v.vni);
            }
        }
        Ok(())
    }

    /// Mean size on the wire over the size pattern.
    pub fn mean_wire(&self) -> f64 {
        self.sizes.iter().sum::<usize>() as f64 / self.sizes.len() as f64
    }

    /// Bytes on the wire (FCS included) of the first `n` frames.
    pub fn wire_bytes(&self, n: u64) -> u64 {
        let len = self.sizes.len() as u64;
        let cycle: u64 = self.sizes.iter().map(|&s| s as u64).sum();
        let rest: u64 = self.sizes.iter().take((n % len) as usize).map(|&s| s as u64).sum();
        n / len * cycle + rest
    }

    /// Frame `n` of a run as the generator sends it, sent at `ts_ns`.
    pub fn frame(&self, n: u64, ts_ns: u64) -> Vec<u8> {
        let flow = (n % u64::from(self.flows)) as u32;
        let seq = (n / u64::from(self.flows)) as u32;
        let size = self.sizes[(n % self.sizes.len() as u64) as usize];
        self.build(size, flow, seq, ts_ns, false)
    }

    /// A frame of `size` on the wire whose variable fields (UDP source ports, flow,
    /// sequence number and time) are zero and whose UDP checksum is not filled in:
    /// what the generator's program starts from.
    pub fn base(&self, size: usize) -> Vec<u8> {
        self.build(size, 0, 0, 0, true)
    }

    /// The one's-complement partial sum, unfolded, over the inner UDP checksum's
    /// coverage of [`base`](Self::base)`(size)`.
    pub fn base_udp_sum(&self, size: usize) -> u32 {
        let f = self.base(size);
        let l = self.layout();
        let udp = &f[l.udp..];
        checksum::pseudo_header(self.src_ip, self.dst_ip, 17, udp.len() as u32) + checksum::sum(udp)
    }

    fn build(&self, size: usize, flow: u32, seq: u32, ts_ns: u64, base: bool) -> Vec<u8> {
        let l = self.layout();
        let mut f = vec![0u8; size - FCS];
        let len = f.len();
        let ethernet = |f: &mut [u8], at: usize, dst: EthernetAddress, src: EthernetAddress, v6: bool| {
            f[at..at + 6].copy_from_slice(&dst.0);
            f[at + 6..at + 12].copy_from_slice(&src.0);
            f[at + 12..at + 14].copy_from_slice(if v6 { &[0x86, 0xdd] } else { &[0x08, 0x00] });
        };
        let ipv4 = |f: &mut [u8], at: usize, src: Ipv4Addr, dst: Ipv4Addr| {
            let total = (len - at) as u16;
            let h = &mut f[at..at + 20];
            h[0] = 0x45;
            h[2..4].copy_from_slice(&total.to_be_bytes());
            h[6] = 0x40; // DF
            h[8] = 64;
            h[9] = 17;
            h[12..16].copy_from_slice(&src.octets());
            h[16..20].copy_from_slice(&dst.octets());
            let c = checksum::checksum(h);
            h[10..12].copy_from_slice(&c.to_be_bytes());
        };
        let port = if base { 0 } else { self.src_port.wrapping_add(flow as u16) };
        if let Some(v) = &self.vxlan {
            ethernet(&mut f, 0, v.dst_mac, v.src_mac, false);
            ipv4(&mut f, 14, v.src, v.dst);
            let outer_port = if base { 0 } else { 0xc000 | (flow as u16 & 0x3fff) };
            f[34..36].copy_from_slice(&outer_port.to_be_bytes());
            f[36..38].copy_from_slice(&VXLAN_PORT.to_be_bytes());
            f[38..40].copy_from_slice(&((len - 34) as u16).to_be_bytes());
            f[42] = 0x08;
            f[46..49].copy_from_slice(&v.vni.to_be_bytes()[1..]);
        }
        ethernet(&mut f, l.ip - 14, self.dst_mac, self.src_mac, self.v6());
        match (self.src_ip, self.dst_ip) {
            (IpAddr::V4(s), IpAddr::V4(d)) => ipv4(&mut f, l.ip, s, d),
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                let h = &mut f[l.ip..l.ip + 40];
                h[0] = 0x60;
                h[4..6].copy_from_slice(&((len - l.udp) as u16).to_be_bytes());
                h[6] = 17;
                h[7] = 64;
                h[8..24].copy_from_slice(&s.octets());
                h[24..40].copy_from_slice(&d.octets());
            }
            _ => unreachable!("validate() refuses mixed families"),
        }
        f[l.udp..l.udp + 2].copy_from_slice(&port.to_be_bytes());
        f[l.udp + 2..l.udp + 4].copy_from_slice(&self.dst_port.to_be_bytes());
        f[l.udp + 4..l.udp + 6].copy_from_slice(&((len - l.udp) as u16).to_be_bytes());
        let s = l.sig;
        f[s..s + 2].copy_from_slice(&MAGIC.to_be_bytes());
        f[s + 2..s + 4].copy_from_slice(&(flow as u16).to_be_bytes());
        f[s + 4..s + 8].copy_from_slice(&seq.to_be_bytes());
        f[s + 8..s + 16].copy_from_slice(&ts_ns.to_be_bytes());
        if !base {
            let c = checksum::l4(self.src_ip, self.dst_ip, 17, &f[l.udp..]);
            let c = if c == 0 { 0xffff } else { c };
            f[l.udp + 6..l.udp + 8].copy_from_slice(&c.to_be_bytes());
        }
        f
    }
}

/// A signature read back from a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signature {
    /// Flow index.
    pub flow: u16,
    /// Sequence number within the flow.
    pub seq: u32,
    /// Send time, ns.
    pub ts_ns: u64,
}

/// Finds the signature of a frame the generator made (plain or in VXLAN, IPv4 or
/// IPv6 — the sink's program parses the same way); `None` for any other frame.
pub fn signature(f: &[u8]) -> Option<Signature> {
    fn sig_at(f: &[u8], eth: usize, inner: bool) -> Option<usize> {
        let ethertype = u16::from_be_bytes([*f.get(eth + 12)?, *f.get(eth + 13)?]);
        let (udp, proto) = match ethertype {
            0x0800 if *f.get(eth + 14)? == 0x45 => (eth + 34, *f.get(eth + 23)?),
            0x86dd => (eth + 54, *f.get(eth + 20)?),
            _ => return None,
        };
        if proto != 17 {
            return None;
        }
        let dport = u16::from_be_bytes([*f.get(udp + 2)?, *f.get(udp + 3)?]);
        if dport == VXLAN_PORT && !inner {
            return sig_at(f, udp + 16, true);
        }
        Some(udp + 8)
    }
    let s = sig_at(f, 0, false)?;
    let b = f.get(s..s + SIGNATURE_LEN)?;
    if u16::from_be_bytes([b[0], b[1]]) != MAGIC {
        return None;
    }
    Some(Signature {
        flow: u16::from_be_bytes([b[2], b[3]]),
        seq: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
        ts_ns: u64::from_be_bytes([b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn udp4() -> Stream {
        Stream {
            src_mac: EthernetAddress([2, 0, 0, 0, 0, 1]),
            dst_mac: EthernetAddress([2, 0, 0, 0, 0, 2]),
            src_ip: "198.18.0.1".parse().unwrap(),
            dst_ip: "198.18.0.2".parse().unwrap(),
            src_port: 1024,
            dst_port: 9,
            flows: 1,
            sizes: vec![64],
            vxlan: None,
        }
    }

    #[test]
    fn frames_parse_as_udp_with_right_checksums_and_carry_their_signature() {
        let mut v6 = udp4();
        v6.src_ip = "2001:db8::1".parse().unwrap();
        v6.dst_ip = "2001:db8::2".parse().unwrap();
        v6.sizes = vec![82, 1518];
        let mut vx = udp4();
        vx.flows = 300;
        vx.vxlan = Some(Vxlan {
            src_mac: EthernetAddress([2, 0, 0, 0, 1, 1]),
            dst_mac: EthernetAddress([2, 0, 0, 0, 1, 2]),
            src: "198.19.0.1".parse().unwrap(),
            dst: "198.19.0.2".parse().unwrap(),
            vni: 0x12_3456,
        });
        vx.sizes = IMIX.iter().map(|&s| s.max(vx.min_wire())).collect();
        for s in [udp4(), v6, vx] {
            s.validate().unwrap();
            for n in [0u64, 1, 299, 300, 12345] {
                let f = s.frame(n, 0x0102_0304_0506_0708 + n);
                assert_eq!(f.len() + FCS, s.sizes[(n % s.sizes.len() as u64) as usize]);
                let l = s.layout();
                let inner = &f[l.ip - 14..];
                let p = etherparse::SlicedPacket::from_ethernet(inner).expect("inner frame parses");
                let Some(etherparse::TransportSlice::Udp(udp)) = p.transport else { panic!("UDP") };
                let flow = (n % u64::from(s.flows)) as u16;
                assert_eq!(udp.source_port(), 1024 + flow);
                assert!(checksum::verify_l4(s.src_ip, s.dst_ip, 17, &f[l.udp..]), "UDP checksum of frame {n}");
                if let Some(etherparse::NetSlice::Ipv4(ip)) = p.net {
                    assert_eq!(checksum::checksum(ip.header().slice()), 0, "IPv4 header checksum");
                }
                let sig = signature(&f).expect("signature found");
                assert_eq!(
                    sig,
                    Signature { flow, seq: (n / u64::from(s.flows)) as u32, ts_ns: 0x0102_0304_0506_0708 + n }
                );
                if s.vxlan.is_some() {
                    assert_eq!(checksum::checksum(&f[14..34]), 0, "outer IPv4 header checksum");
                    assert_eq!(&f[46..49], &[0x12, 0x34, 0x56], "VNI");
                    assert_eq!(u16::from_be_bytes([f[34], f[35]]), 0xc000 | flow, "outer source port");
                    assert_eq!(usize::from(u16::from_be_bytes([f[38], f[39]])), f.len() - 34, "outer UDP length");
                }
            }
        }
    }

    #[test]
    fn bad_streams_are_refused_with_what_to_change() {
        let mut s = udp4();
        s.sizes = vec![60];
        assert!(s.validate().unwrap_err().to_string().contains("must be 64 to 3000"));
        s.sizes = vec![64];
        s.flows = 0;
        assert!(s.validate().unwrap_err().to_string().contains("--flows 0"));
        let mut v6 = udp4();
        v6.src_ip = "2001:db8::1".parse().unwrap();
        assert!(v6.validate().unwrap_err().to_string().contains("different families"));
        v6.dst_ip = "2001:db8::2".parse().unwrap();
        assert!(v6.validate().unwrap_err().to_string().contains("must be 82 to"), "IPv6 needs 82 bytes");
        assert!(signature(&[0u8; 10]).is_none());
        let mut other = udp4().frame(0, 0);
        let sig = udp4().layout().sig;
        other[sig] = 0;
        assert!(signature(&other).is_none(), "no magic, not ours");
    }

    #[test]
    fn wire_bytes_follow_the_size_pattern() {
        let mut s = udp4();
        s.sizes = IMIX.to_vec();
        assert_eq!(s.wire_bytes(12), 7 * 64 + 4 * 594 + 1518);
        assert_eq!(s.wire_bytes(14), 2 * (7 * 64 + 4 * 594 + 1518) / 2 + 64 + 594);
        assert!((s.mean_wire() - (7.0 * 64.0 + 4.0 * 594.0 + 1518.0) / 12.0).abs() < 1e-9);
    }
}
