//! Longest-prefix match for IPv4 and IPv6, built once per snapshot by control.
//!
//! **IPv4: DIR-16-8-8**, a three-level multibit trie with controlled prefix expansion
//! (the shape of DPDK's rte_lpm, whose DIR-24-8 spends a fixed 64 MiB on the first
//! level; we spend 256 KiB there and 1 KiB per populated /16 or /24 below it). A lookup
//! is at most three dependent reads whatever the table size, so a million routes cost
//! cache misses, not more instructions; building expands each prefix into the entries
//! it covers, shortest prefixes first, so longer ones overwrite them.
//!
//! **IPv6: one hash table per prefix length present**, probed from the longest length
//! down. A pod network's IPv6 table has few distinct lengths (/128 pods, /64–/80 node
//! CIDRs, /48 aggregates, ::/0), so a lookup is a handful of probes; a table with many
//! distinct lengths would want binary search on lengths with markers (Waldvogel et al.),
//! the next step if routing tables of that shape arrive.
//!
//! Values are opaque `u32` route ids (below 2^31); what a route does (port, neighbour,
//! drop) lives in the table they index.

use core::fmt;
use core::str::FromStr;
use rustc_hash::FxHashMap;
use std::net::{Ipv4Addr, Ipv6Addr};

/// An IPv4 prefix with its host bits zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv4Prefix {
    addr: u32,
    len: u8,
}

/// An IPv6 prefix with its host bits zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv6Prefix {
    addr: u128,
    len: u8,
}

/// A prefix that is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrefixError {
    /// Not ADDR/LEN.
    #[error("{0:?} is not a prefix: write ADDRESS/LENGTH, e.g. 198.18.0.0/15 or 2001:db8::/32")]
    Syntax(String),
    /// Length out of range.
    #[error("prefix length {len} is too long for {family} (at most {max})")]
    Length {
        /// Family.
        family: &'static str,
        /// Given.
        len: u8,
        /// Limit.
        max: u8,
    },
    /// Bits set past the length.
    #[error("{0} has host bits set: did you mean {1}?")]
    HostBits(String, String),
}

fn mask4(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len))
    }
}

fn mask6(len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(len))
    }
}

impl Ipv4Prefix {
    /// `addr/len`, refusing host bits.
    pub fn new(addr: Ipv4Addr, len: u8) -> Result<Ipv4Prefix, PrefixError> {
        if len > 32 {
            return Err(PrefixError::Length { family: "IPv4", len, max: 32 });
        }
        let a = u32::from(addr);
        if a & !mask4(len) != 0 {
            let fixed = Ipv4Prefix { addr: a & mask4(len), len };
            return Err(PrefixError::HostBits(format!("{addr}/{len}"), fixed.to_string()));
        }
        Ok(Ipv4Prefix { addr: a, len })
    }

    /// The network address.
    pub fn addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.addr)
    }

    /// The length.
    #[allow(clippy::len_without_is_empty)] // a prefix length, not a collection
    pub fn len(&self) -> u8 {
        self.len
    }

    /// True for 0.0.0.0/0.
    pub fn is_default(&self) -> bool {
        self.len == 0
    }

    /// True if `a` is inside.
    pub fn contains(&self, a: Ipv4Addr) -> bool {
        u32::from(a) & mask4(self.len) == self.addr
    }

    /// The last address (the subnet's broadcast address).
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.addr | !mask4(self.len))
    }
}

impl Ipv6Prefix {
    /// `addr/len`, refusing host bits.
    pub fn new(addr: Ipv6Addr, len: u8) -> Result<Ipv6Prefix, PrefixError> {
        if len > 128 {
            return Err(PrefixError::Length { family: "IPv6", len, max: 128 });
        }
        let a = u128::from(addr);
        if a & !mask6(len) != 0 {
            let fixed = Ipv6Prefix { addr: a & mask6(len), len };
            return Err(PrefixError::HostBits(format!("{addr}/{len}"), fixed.to_string()));
        }
        Ok(Ipv6Prefix { addr: a, len })
    }

    /// The network address.
    pub fn addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(self.addr)
    }

    /// The length.
    #[allow(clippy::len_without_is_empty)] // a prefix length, not a collection
    pub fn len(&self) -> u8 {
        self.len
    }

    /// True for ::/0.
    pub fn is_default(&self) -> bool {
        self.len == 0
    }

    /// True if `a` is inside.
    pub fn contains(&self, a: Ipv6Addr) -> bool {
        u128::from(a) & mask6(self.len) == self.addr
    }
}

impl fmt::Display for Ipv4Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.addr), self.len)
    }
}

impl fmt::Display for Ipv6Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", Ipv6Addr::from(self.addr), self.len)
    }
}

fn split(s: &str) -> Result<(&str, u8), PrefixError> {
    let (a, l) = s.split_once('/').ok_or_else(|| PrefixError::Syntax(s.into()))?;
    Ok((a, l.parse().map_err(|_| PrefixError::Syntax(s.into()))?))
}

impl FromStr for Ipv4Prefix {
    type Err = PrefixError;
    fn from_str(s: &str) -> Result<Self, PrefixError> {
        let (a, l) = split(s)?;
        Ipv4Prefix::new(a.parse().map_err(|_| PrefixError::Syntax(s.into()))?, l)
    }
}

impl FromStr for Ipv6Prefix {
    type Err = PrefixError;
    fn from_str(s: &str) -> Result<Self, PrefixError> {
        let (a, l) = split(s)?;
        Ipv6Prefix::new(a.parse().map_err(|_| PrefixError::Syntax(s.into()))?, l)
    }
}

/// Entry: 0 = no route; CHILD set = index of a child table; else route id + 1.
const CHILD: u32 = 1 << 31;
const EMPTY: u32 = 0;

/// Largest route id a FIB holds.
pub const MAX_ROUTE_ID: u32 = CHILD - 2;

/// IPv4 longest-prefix match (DIR-16-8-8). Immutable once built.
#[derive(Debug, Clone)]
pub struct Fib4 {
    root: Box<[u32]>,
    tables: Vec<[u32; 256]>,
    routes: usize,
}

impl Default for Fib4 {
    fn default() -> Self {
        Fib4::build(&[])
    }
}

impl Fib4 {
    /// Builds from `(prefix, route id)` pairs. For a prefix given twice, the later pair
    /// wins. Panics if a route id exceeds [`MAX_ROUTE_ID`] (control validates first).
    pub fn build(routes: &[(Ipv4Prefix, u32)]) -> Fib4 {
        let mut sorted: Vec<(usize, &(Ipv4Prefix, u32))> = routes.iter().enumerate().collect();
        // Shortest first, and in input order within a length, so that longer prefixes
        // and later duplicates overwrite.
        sorted.sort_by_key(|(i, (p, _))| (p.len, *i));
        let mut fib = Fib4 { root: vec![EMPTY; 1 << 16].into_boxed_slice(), tables: Vec::new(), routes: routes.len() };
        for (_, (p, id)) in sorted {
            assert!(*id <= MAX_ROUTE_ID, "route id {id} too large");
            fib.insert(p.addr, p.len, id + 1);
        }
        fib
    }

    fn child(&mut self, entry: u32) -> (u32, usize) {
        if entry & CHILD != 0 {
            return (entry, (entry & !CHILD) as usize);
        }
        // A new child inherits what its parent entry routed to.
        self.tables.push([entry; 256]);
        let idx = self.tables.len() - 1;
        (CHILD | idx as u32, idx)
    }

    fn insert(&mut self, addr: u32, len: u8, val: u32) {
        let hi = (addr >> 16) as usize;
        if len <= 16 {
            let n = 1usize << (16 - len);
            self.root[hi..hi + n].fill(val);
            return;
        }
        let (e, t1) = self.child(self.root[hi]);
        self.root[hi] = e;
        let mid = ((addr >> 8) & 0xff) as usize;
        if len <= 24 {
            let n = 1usize << (24 - len);
            self.tables[t1][mid..mid + n].fill(val);
            return;
        }
        let (e, t2) = self.child(self.tables[t1][mid]);
        self.tables[t1][mid] = e;
        let lo = (addr & 0xff) as usize;
        let n = 1usize << (32 - len);
        self.tables[t2][lo..lo + n].fill(val);
    }

    /// The route id of the longest prefix containing `addr`.
    #[inline]
    pub fn lookup(&self, addr: Ipv4Addr) -> Option<u32> {
        let a = u32::from(addr);
        let mut e = self.root[(a >> 16) as usize];
        if e & CHILD != 0 {
            e = self.tables[(e & !CHILD) as usize][((a >> 8) & 0xff) as usize];
            if e & CHILD != 0 {
                e = self.tables[(e & !CHILD) as usize][(a & 0xff) as usize];
            }
        }
        e.checked_sub(1)
    }

    /// Routes it was built from.
    pub fn len(&self) -> usize {
        self.routes
    }

    /// True if built from no routes.
    pub fn is_empty(&self) -> bool {
        self.routes == 0
    }

    /// Bytes of lookup structure.
    pub fn memory_bytes(&self) -> usize {
        self.root.len() * 4 + self.tables.len() * 256 * 4
    }
}

/// IPv6 longest-prefix match (a hash table per prefix length). Immutable once built.
#[derive(Debug, Clone, Default)]
pub struct Fib6 {
    /// Lengths present, longest first, each with its table.
    levels: Vec<(u8, u128, FxHashMap<u128, u32>)>,
    routes: usize,
}

impl Fib6 {
    /// Builds from `(prefix, route id)` pairs; for a prefix given twice, the later wins.
    pub fn build(routes: &[(Ipv6Prefix, u32)]) -> Fib6 {
        let mut by_len: std::collections::BTreeMap<u8, FxHashMap<u128, u32>> = Default::default();
        for (p, id) in routes {
            by_len.entry(p.len).or_default().insert(p.addr, *id);
        }
        let levels = by_len.into_iter().rev().map(|(l, m)| (l, mask6(l), m)).collect();
        Fib6 { levels, routes: routes.len() }
    }

    /// The route id of the longest prefix containing `addr`.
    #[inline]
    pub fn lookup(&self, addr: Ipv6Addr) -> Option<u32> {
        let a = u128::from(addr);
        self.levels.iter().find_map(|(_, mask, m)| m.get(&(a & mask)).copied())
    }

    /// Routes it was built from.
    pub fn len(&self) -> usize {
        self.routes
    }

    /// True if built from no routes.
    pub fn is_empty(&self) -> bool {
        self.routes == 0
    }

    /// Distinct prefix lengths (the worst-case probes per lookup).
    pub fn lengths(&self) -> usize {
        self.levels.len()
    }

    /// Approximate bytes of lookup structure (hash tables at their capacity).
    pub fn memory_bytes(&self) -> usize {
        self.levels.iter().map(|(_, _, m)| m.capacity() * (16 + 4 + 1)).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn p4(s: &str) -> Ipv4Prefix {
        s.parse().unwrap()
    }

    #[test]
    fn longest_prefix_wins_across_levels() {
        let fib = Fib4::build(&[
            (p4("0.0.0.0/0"), 1),
            (p4("198.18.0.0/15"), 2),
            (p4("198.18.0.0/24"), 3),
            (p4("198.18.0.128/25"), 4),
            (p4("198.18.0.129/32"), 5),
        ]);
        let l = |a: &str| fib.lookup(a.parse().unwrap());
        assert_eq!(l("10.0.0.1"), Some(1));
        assert_eq!(l("198.19.255.255"), Some(2));
        assert_eq!(l("198.18.0.1"), Some(3));
        assert_eq!(l("198.18.0.200"), Some(4));
        assert_eq!(l("198.18.0.129"), Some(5));
        assert_eq!(l("198.18.1.0"), Some(2));
        assert_eq!(Fib4::build(&[(p4("198.18.0.0/16"), 0)]).lookup("10.0.0.1".parse().unwrap()), None);
    }

    #[test]
    fn prefixes_are_validated_with_helpful_errors() {
        assert_eq!(
            "198.18.0.1/15".parse::<Ipv4Prefix>().unwrap_err().to_string(),
            "198.18.0.1/15 has host bits set: did you mean 198.18.0.0/15?"
        );
        assert!(matches!("198.18.0.0/33".parse::<Ipv4Prefix>(), Err(PrefixError::Length { .. })));
        assert!(matches!("198.18.0.0".parse::<Ipv4Prefix>(), Err(PrefixError::Syntax(_))));
        assert!("2001:db8::1/64".parse::<Ipv6Prefix>().unwrap_err().to_string().contains("2001:db8::/64"));
        assert!("2001:db8::/129".parse::<Ipv6Prefix>().is_err());
        assert!("::/0".parse::<Ipv6Prefix>().unwrap().is_default());
    }

    fn naive<P: Copy, A: Copy>(
        routes: &[(P, u32)],
        a: A,
        contains: impl Fn(&P, A) -> bool,
        len: impl Fn(&P) -> u8,
    ) -> Option<u32> {
        // The longest containing prefix; among equal prefixes, the last given.
        let mut best: Option<(u8, u32)> = None;
        for (p, id) in routes {
            if contains(p, a) && best.is_none_or(|(l, _)| len(p) >= l) {
                best = Some((len(p), *id));
            }
        }
        best.map(|(_, id)| id)
    }

    fn v4_routes() -> impl Strategy<Value = Vec<(Ipv4Prefix, u32)>> {
        // Addresses from a few /8s so that prefixes overlap; every length.
        let addr = (prop::sample::select(vec![10u32, 198, 203]), any::<u32>()).prop_map(|(hi, lo)| hi << 24 | lo >> 8);
        prop::collection::vec((addr, 0u8..=32, 0u32..1000), 0..150).prop_map(|v| {
            v.into_iter().map(|(a, l, id)| (Ipv4Prefix::new(Ipv4Addr::from(a & mask4(l)), l).unwrap(), id)).collect()
        })
    }

    fn v6_routes() -> impl Strategy<Value = Vec<(Ipv6Prefix, u32)>> {
        let addr = (prop::sample::select(vec![0x2001_0db8u128, 0x2001_0db9]), any::<u128>())
            .prop_map(|(hi, lo)| hi << 96 | (lo >> 32));
        prop::collection::vec((addr, 0u8..=128, 0u32..1000), 0..150).prop_map(|v| {
            v.into_iter().map(|(a, l, id)| (Ipv6Prefix::new(Ipv6Addr::from(a & mask6(l)), l).unwrap(), id)).collect()
        })
    }

    proptest! {
        #[test]
        fn fib4_agrees_with_a_linear_search(routes in v4_routes(), probes in prop::collection::vec(any::<u32>(), 64)) {
            let fib = Fib4::build(&routes);
            // Probe random addresses and each route's first, last and next address.
            let mut addrs: Vec<u32> = probes.iter().map(|p| (198 << 24) | (p >> 8)).collect();
            for (p, _) in &routes {
                let a = u32::from(p.addr());
                addrs.extend([a, a | !mask4(p.len()), (a | !mask4(p.len())).wrapping_add(1)]);
            }
            for a in addrs {
                let a = Ipv4Addr::from(a);
                prop_assert_eq!(fib.lookup(a), naive(&routes, a, |p, a| p.contains(a), |p| p.len()), "{}", a);
            }
        }

        #[test]
        fn fib6_agrees_with_a_linear_search(routes in v6_routes(), probes in prop::collection::vec(any::<u128>(), 64)) {
            let fib = Fib6::build(&routes);
            let mut addrs: Vec<u128> = probes.iter().map(|p| (0x2001_0db8u128 << 96) | (p >> 32)).collect();
            for (p, _) in &routes {
                let a = u128::from(p.addr());
                addrs.extend([a, a | !mask6(p.len()), (a | !mask6(p.len())).wrapping_add(1)]);
            }
            for a in addrs {
                let a = Ipv6Addr::from(a);
                prop_assert_eq!(fib.lookup(a), naive(&routes, a, |p, a| p.contains(a), |p| p.len()), "{}", a);
            }
        }
    }
}
