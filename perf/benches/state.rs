//! The control plane's cost per change as the state grows: checking a pod's port
//! (`state::check`: the whole resulting state compiled, as every API change is) with
//! 100, 1,000 and 10,000 ports already there (10,000 pod attachments in under a second
//! needs this well under 100 µs at 10,000), and compiling the whole state, as each
//! publish does.

use control::config::{Config, NetworkConfig, PortConfig};
use control::state::{check, Desired, Mutation};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use std::net::{IpAddr, Ipv4Addr};

fn pod(i: u32) -> PortConfig {
    PortConfig {
        name: format!("pod{i}"),
        network: Some("pods".into()),
        vlans: vec![],
        native: None,
        macs: vec![format!("02:00:00:{:02x}:{:02x}:{:02x}", i >> 16, (i >> 8) & 0xff, i & 0xff)],
        addresses: vec![IpAddr::V4(Ipv4Addr::from(0xc612_0000 + i + 2))],
        pod: None,
        vhost_user: None,
    }
}

fn state(ports: u32) -> (Config, Desired) {
    let base = Config::parse("[dataplane]\ncores = [0]\nmax_ports = 16384\n").unwrap();
    let mut d = Desired::default().with(&Mutation::PutNetwork(NetworkConfig {
        name: "pods".into(),
        ageing_s: 300,
        gateway: vec!["198.18.0.1/16".into()],
        gateway_mac: None,
        router_advertisements: false,
        vni: None,
    }));
    for i in 0..ports {
        d = d.with(&Mutation::PutPort(pod(i)));
    }
    (base, d)
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("state_check_port_put");
    g.sample_size(10);
    for n in [100u32, 1_000, 10_000] {
        let (base, d) = state(n);
        let m = Mutation::PutPort(pod(n));
        assert!(check(&base, &d, &m, |_| false).is_ok(), "the change is valid");
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| b.iter(|| check(&base, &d, &m, |_| false)));
    }
    g.finish();
    // What one publish compiles (the engine publishes once per burst of changes).
    let mut g = c.benchmark_group("state_compile_whole");
    g.sample_size(10);
    for n in [100u32, 1_000, 10_000] {
        let (base, d) = state(n);
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                let c = d.config(&base, |_| false);
                let t = c.topology().unwrap();
                let r = c.routing(&t).unwrap();
                switch_core::tables::Routes::build(&t, &r.routes).unwrap()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
