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
use perf::{ipv4_frame, ipv6_frame, routed_worker, tunnel_worker, vxlan_frame, PEER_VTEP, VTEP};
use std::net::{Ipv4Addr, Ipv6Addr};

/// `f` (an IPv4 or IPv6 frame from `ipv4_frame`/`ipv6_frame`) readdressed as the
/// remote pod's packet inside the tunnel: to `VTEP`, from `PEER_VTEP`.
fn inner(mut f: Vec<u8>) -> Vec<u8> {
    f[0..6].copy_from_slice(&VTEP);
    f[6..12].copy_from_slice(&PEER_VTEP);
    f
}

fn tunnel(c: &mut Criterion) {
    let mut g = c.benchmark_group("tunnel_64B");
    g.throughput(Throughput::Elements(64));
    let pod4 = |h: u8| Ipv4Addr::new(198, 18, 1, h);
    let remote4 = |h: u8| Ipv4Addr::new(198, 18, 2, h);
    let pod6 = |h: u8| Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, u16::from(h));
    let remote6 = |h: u8| Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, u16::from(h));
    let to_remote4: Vec<_> = (0..64).map(|i| ipv4_frame(pod4(10), remote4(10 + i))).collect();
    let to_remote6: Vec<_> = (0..64).map(|i| ipv6_frame(pod6(10), remote6(10 + i))).collect();
    let from_remote4 = |v6: bool| -> Vec<_> {
        (0..64).map(|i| vxlan_frame(&inner(ipv4_frame(remote4(10 + i), pod4(10 + i))), v6)).collect()
    };
    let from_remote6 = |v6: bool| -> Vec<_> {
        (0..64).map(|i| vxlan_frame(&inner(ipv6_frame(remote6(10 + i), pod6(10 + i))), v6)).collect()
    };
    let cases = [
        // The l3 bench's network "b" is 198.18.2.0/24 with hosts 10-73 resolved: the same
        // packets, routed locally.
        ("baseline_routed_ipv4_64_flows", routed_worker(to_remote4.clone(), &[])),
        // The same routes to the peer in direct-routing mode: everything but the outer
        // headers, so the difference is what encapsulation and decapsulation cost.
        ("direct_out_ipv4_64_flows", tunnel_worker(to_remote4.clone(), 0, false, true)),
        (
            "direct_in_ipv4_64_flows",
            tunnel_worker(
                (0..64)
                    .map(|i| {
                        let mut f = ipv4_frame(remote4(10 + i), pod4(10 + i));
                        f[0..6].copy_from_slice(&perf::UPLINK);
                        f
                    })
                    .collect(),
                1,
                false,
                true,
            ),
        ),
        ("encap_ipv4_in_ipv4_64_flows", tunnel_worker(to_remote4.clone(), 0, false, false)),
        ("encap_ipv6_in_ipv4_64_flows", tunnel_worker(to_remote6, 0, false, false)),
        ("encap_ipv4_in_ipv6_64_flows", tunnel_worker(to_remote4, 0, true, false)),
        ("decap_ipv4_in_ipv4_64_flows", tunnel_worker(from_remote4(false), 1, false, false)),
        ("decap_ipv6_in_ipv4_64_flows", tunnel_worker(from_remote6(false), 1, false, false)),
        ("decap_ipv4_in_ipv6_64_flows", tunnel_worker(from_remote4(true), 1, true, false)),
    ];
    for (name, mut w) in cases {
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
