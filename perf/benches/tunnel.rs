//! VXLAN per packet, through the whole pipeline over in-memory ports: 64 flows of
//! 64-byte inner frames. Encap: a pod's packet routed to a remote node's pod CIDR,
//! encapsulated and sent on the uplink. Decap: VXLAN from the remote node checked,
//! decapsulated, routed and sent to the pod. Beside them, the same packets routed
//! between two local networks (the l3 bench's case), and to and from the peer in
//! direct-routing mode (the same path without the outer headers: the difference is
//! what encapsulation and decapsulation cost).
//!
//! `cargo bench -p perf --bench tunnel`; results and how to read them: perf/RESULTS.md.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use perf::tunnel_cases;

fn tunnel(c: &mut Criterion) {
    let mut g = c.benchmark_group("tunnel_64B");
    g.throughput(Throughput::Elements(64));
    for (name, mut w) in tunnel_cases() {
        g.bench_function(name, |b| b.iter(|| w.poll_once(0)));
        // The case measured what it says: every packet routed (and encapsulated or
        // decapsulated), none dropped.
        if !perf::assert_all_routed(name, &w) {
            continue;
        }
        let s = w.stats();
        let tunnelled = s.l3.to_peers.get() + s.l3.from_peers.get();
        assert!(name.starts_with("baseline") || tunnelled == s.packets.get(), "{name}: every packet tunnelled");
    }
    g.finish();
}

criterion_group!(benches, tunnel);
criterion_main!(benches);
