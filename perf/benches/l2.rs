//! The L2 pipeline over the in-memory port, per packet: a poll loop that receives a
//! batch of 64 frames on one port (copied into UMEM frames, as the kernel does for
//! AF_XDP copy mode), classifies, learns, looks up and sends them.
//!
//! `cargo bench -p perf --bench l2`; results and how to read them: perf/RESULTS.md.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use perf::{flow_dst, flow_src, frame, worker, KNOWN, SRC, UNKNOWN};

fn l2(c: &mut Criterion) {
    let mut g = c.benchmark_group("l2_pipeline_64B");
    g.throughput(Throughput::Elements(64));
    for (name, dst) in
        [("known_dst", KNOWN), ("unknown_dst_flood_2_ports", UNKNOWN), ("broadcast_flood_2_ports", [0xff; 6])]
    {
        let mut w = worker(vec![frame(dst, SRC, 64); 64]);
        let before = w.stats().ports[2].tx_flood.get();
        let mut ran = false;
        g.bench_function(name, |b| {
            ran = true;
            b.iter(|| w.poll_once(0))
        });
        // The case measured what it says (if a filter let it run): known destinations
        // were switched, not flooded.
        let floods = w.stats().ports[2].tx_flood.get() - before;
        assert!(!ran || (floods == 0) == (dst == KNOWN), "{name}: {floods} flood copies");
    }
    // 64 flows, each packet of a batch a different source and destination: no two
    // neighbours share a lookup.
    let mut w = worker((0..64).map(|i| frame(flow_dst(i), flow_src(i), 64)).collect());
    let before = w.stats().ports[2].tx_flood.get();
    g.bench_function("known_dst_64_flows", |b| b.iter(|| w.poll_once(0)));
    assert_eq!(w.stats().ports[2].tx_flood.get(), before, "64 flows: all destinations known");
    g.finish();
}

criterion_group!(benches, l2);
criterion_main!(benches);
