//! The routed pipeline over the in-memory port, per packet: a batch of 64 frames to a
//! gateway MAC is classified, checked (IPv4 header checksum), looked up in the FIB and
//! the neighbour table, has its TTL decremented and MACs rewritten, and is sent.
//!
//! `cargo bench -p perf --bench l3`; results and how to read them: perf/RESULTS.md.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use perf::{ipv4_frame, l3_connected_cases, random_v4_prefixes, routed_worker};
use std::net::Ipv4Addr;
use switch_core::tables::Prefix;

fn l3(c: &mut Criterion) {
    let mut g = c.benchmark_group("l3_pipeline_64B");
    g.throughput(Throughput::Elements(64));
    let src = Ipv4Addr::new(198, 18, 1, 10);
    let mut cases: Vec<(String, Vec<Vec<u8>>, Vec<Prefix>)> =
        l3_connected_cases().into_iter().map(|(name, frames)| (name.to_string(), frames, vec![])).collect();
    // 64 flows, each to a different route of a table of 1,000 or 1,000,000 routes.
    for n in [1_000, 1_000_000] {
        let prefixes = random_v4_prefixes(n);
        let frames = (0..64)
            .map(|i| {
                let Prefix::V4(p) = prefixes[i * (n / 64)] else { unreachable!() };
                ipv4_frame(src, Ipv4Addr::from(u32::from(p.addr()) | 1))
            })
            .collect();
        cases.push((format!("ipv4_via_64_flows_{n}_routes"), frames, prefixes));
    }
    for (name, frames, routes) in cases {
        let mut w = routed_worker(frames, &routes);
        let before = w.stats().l3.routed.get();
        g.bench_function(&name, |b| b.iter(|| w.poll_once(0)));
        // The case measured what it says: every packet was routed, none dropped (a case
        // filtered out on the command line ran nothing).
        if !perf::assert_all_routed(&name, &w) {
            continue;
        }
        assert!(w.stats().l3.routed.get() > before, "{name}: routed");
    }
    g.finish();
}

criterion_group!(benches, l3);
criterion_main!(benches);
