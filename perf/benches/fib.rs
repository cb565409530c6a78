//! FIB lookups: IPv4 with 1,000 and 1,000,000 routes, IPv6 with 100,000. Each iteration
//! looks up 1,024 random addresses (inside the routed space, so lookups go deep).
//!
//! `cargo bench -p perf --bench fib`; results: perf/RESULTS.md.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use std::net::{Ipv4Addr, Ipv6Addr};
use switch_core::tables::{Fib4, Fib6, Ipv4Prefix, Ipv6Prefix};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*: deterministic, good enough to scatter addresses.
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// Internet-like IPv4: mostly /24, some /16–/23, a few longer, in 10/8 and 198.18/15
/// and the rest of the space.
fn v4_routes(n: usize, rng: &mut Rng) -> Vec<(Ipv4Prefix, u32)> {
    (0..n)
        .map(|i| {
            let r = rng.next();
            let len = match r % 100 {
                0..=59 => 24,
                60..=84 => 16 + (r >> 8) as u8 % 8,
                85..=94 => 8 + (r >> 8) as u8 % 8,
                _ => 25 + (r >> 8) as u8 % 8,
            };
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - u32::from(len)) };
            let addr = (r >> 16) as u32 & mask;
            (Ipv4Prefix::new(Ipv4Addr::from(addr), len).expect("masked"), i as u32)
        })
        .collect()
}

/// Pod-network-like IPv6 under 2001:db8::/32: /48 aggregates, /56 and /64 node CIDRs,
/// /128 pods.
fn v6_routes(n: usize, rng: &mut Rng) -> Vec<(Ipv6Prefix, u32)> {
    (0..n)
        .map(|i| {
            let r = rng.next();
            let len = [48u8, 56, 64, 64, 64, 64, 64, 64, 128, 128][(r % 10) as usize];
            let a = (0x2001_0db8u128 << 96) | (u128::from(rng.next()) << 32) | u128::from(rng.next() as u32);
            let mask = u128::MAX << (128 - u32::from(len));
            (Ipv6Prefix::new(Ipv6Addr::from(a & mask), len).expect("masked"), i as u32)
        })
        .collect()
}

fn fib(c: &mut Criterion) {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut g = c.benchmark_group("fib_lookup");
    g.throughput(Throughput::Elements(1024));
    for n in [1_000usize, 1_000_000] {
        let routes = v4_routes(n, &mut rng);
        let fib = Fib4::build(&routes);
        // Probe addresses inside routed prefixes (half) and anywhere (half).
        let addrs: Vec<Ipv4Addr> = (0..1024)
            .map(|i| {
                let r = rng.next();
                if i % 2 == 0 {
                    let (p, _) = routes[(r as usize) % routes.len()];
                    Ipv4Addr::from(
                        u32::from(p.addr())
                            | ((r >> 32) as u32 & !(u32::MAX.checked_shl(32 - u32::from(p.len())).unwrap_or(0))),
                    )
                } else {
                    Ipv4Addr::from((r >> 32) as u32)
                }
            })
            .collect();
        let hits = addrs.iter().filter(|a| fib.lookup(**a).is_some()).count();
        eprintln!("IPv4 {n} routes: {} KiB, {hits}/1024 probes routed", fib.memory_bytes() / 1024);
        g.bench_function(format!("ipv4_{n}_routes"), |b| {
            b.iter(|| addrs.iter().filter_map(|a| fib.lookup(black_box(*a))).fold(0u32, u32::wrapping_add))
        });
    }
    let routes = v6_routes(100_000, &mut rng);
    let fib = Fib6::build(&routes);
    let addrs: Vec<Ipv6Addr> = (0..1024)
        .map(|_| {
            let (p, _) = routes[(rng.next() as usize) % routes.len()];
            let host = if p.len() == 128 { 0 } else { u128::from(rng.next()) >> p.len() };
            Ipv6Addr::from(u128::from(p.addr()) | host)
        })
        .collect();
    eprintln!("IPv6 100000 routes: {} KiB, {} prefix lengths", fib.memory_bytes() / 1024, fib.lengths());
    g.bench_function("ipv6_100000_routes", |b| {
        b.iter(|| addrs.iter().filter_map(|a| fib.lookup(black_box(*a))).fold(0u32, u32::wrapping_add))
    });
    g.finish();
}

criterion_group!(benches, fib);
criterion_main!(benches);
