//! One-line summaries of frames for traces: "02:..:01 > 02:..:02 IPv4 198.18.0.1 >
//! 198.18.0.2 ttl 64 ICMP echo request". Reads fixed offsets with bounds checks; a
//! frame too short for a header says so instead of guessing.

use std::net::{Ipv4Addr, Ipv6Addr};
use switch_core::wire::EthernetAddress;

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn mac(b: &[u8], at: usize) -> String {
    b.get(at..at + 6).map_or("?".into(), |m| EthernetAddress(m.try_into().expect("6 bytes")).to_string())
}

fn v4(b: &[u8], at: usize) -> Option<Ipv4Addr> {
    Some(Ipv4Addr::from(<[u8; 4]>::try_from(b.get(at..at + 4)?).ok()?))
}

fn v6(b: &[u8], at: usize) -> Option<Ipv6Addr> {
    Some(Ipv6Addr::from(<[u8; 16]>::try_from(b.get(at..at + 16)?).ok()?))
}

fn l4(b: &[u8], proto: u8, at: usize) -> String {
    match proto {
        1 => match b.get(at) {
            Some(0) => "ICMP echo reply".into(),
            Some(3) => "ICMP unreachable".into(),
            Some(8) => "ICMP echo request".into(),
            Some(11) => "ICMP time exceeded".into(),
            Some(t) => format!("ICMP type {t}"),
            None => "ICMP (cut short)".into(),
        },
        58 => match b.get(at) {
            Some(1) => "ICMPv6 unreachable".into(),
            Some(2) => "ICMPv6 packet too big".into(),
            Some(3) => "ICMPv6 time exceeded".into(),
            Some(128) => "ICMPv6 echo request".into(),
            Some(129) => "ICMPv6 echo reply".into(),
            Some(133) => "ICMPv6 router solicitation".into(),
            Some(134) => "ICMPv6 router advertisement".into(),
            Some(135) => "ICMPv6 neighbour solicitation".into(),
            Some(136) => "ICMPv6 neighbour advertisement".into(),
            Some(t) => format!("ICMPv6 type {t}"),
            None => "ICMPv6 (cut short)".into(),
        },
        6 | 17 => {
            let name = if proto == 6 { "TCP" } else { "UDP" };
            match (u16_at(b, at), u16_at(b, at + 2)) {
                (Some(s), Some(d)) => format!("{name} {s} > {d}"),
                _ => format!("{name} (cut short)"),
            }
        }
        p => format!("protocol {p}"),
    }
}

/// Summarises an Ethernet frame.
pub fn frame(b: &[u8]) -> String {
    if b.len() < 14 {
        return format!("runt ({} bytes)", b.len());
    }
    let mut out = format!("{} > {}", mac(b, 6), mac(b, 0));
    let mut at = 12;
    let mut ty = u16_at(b, at).unwrap_or(0);
    if ty == 0x8100 {
        let vid = u16_at(b, 14).map_or(0, |t| t & 0x0fff);
        out += &format!(" vlan {vid}");
        at = 16;
        ty = u16_at(b, at).unwrap_or(0);
    }
    let l3 = at + 2;
    match ty {
        0x0806 => {
            let op = match u16_at(b, l3 + 6) {
                Some(1) => "request",
                Some(2) => "reply",
                _ => "?",
            };
            match (v4(b, l3 + 14), v4(b, l3 + 24)) {
                (Some(s), Some(t)) => out += &format!(" ARP {op} {t} from {s}"),
                _ => out += " ARP (cut short)",
            }
        }
        0x0800 => match (v4(b, l3 + 12), v4(b, l3 + 16), b.get(l3 + 8), b.get(l3 + 9), b.get(l3)) {
            (Some(s), Some(d), Some(ttl), Some(p), Some(vihl)) => {
                let ihl = usize::from(vihl & 0x0f) * 4;
                out += &format!(" IPv4 {s} > {d} ttl {ttl} {}", l4(b, *p, l3 + ihl));
            }
            _ => out += " IPv4 (cut short)",
        },
        0x86dd => match (v6(b, l3 + 8), v6(b, l3 + 24), b.get(l3 + 7), b.get(l3 + 6)) {
            (Some(s), Some(d), Some(hl), Some(nh)) => {
                out += &format!(" IPv6 {s} > {d} hlim {hl} {}", l4(b, *nh, l3 + 40));
            }
            _ => out += " IPv6 (cut short)",
        },
        t => out += &format!(" ethertype {t:#06x}"),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_name_what_matters() {
        let mut f = vec![0u8; 14 + 20 + 8];
        f[0..6].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
        f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[14] = 0x45;
        f[22] = 64;
        f[23] = 1;
        f[26..30].copy_from_slice(&[198, 18, 0, 1]);
        f[30..34].copy_from_slice(&[198, 18, 0, 2]);
        f[34] = 8;
        assert_eq!(
            frame(&f),
            "02:00:00:00:00:01 > 02:00:00:00:00:02 IPv4 198.18.0.1 > 198.18.0.2 ttl 64 ICMP echo request"
        );
        assert_eq!(frame(&f[..20]), "02:00:00:00:00:01 > 02:00:00:00:00:02 IPv4 (cut short)");
        assert_eq!(frame(&f[..5]), "runt (5 bytes)");
    }
}
