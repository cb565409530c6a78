//! The control plane's cost per change as the state grows: checking a pod's port
//! (`state::check`: the whole resulting state compiled, as every API change is) with
//! 100, 1,000 and 10,000 ports already there (10,000 pod attachments in under a second
//! needs this well under 100 µs at 10,000), compiling the whole state, as a publish
//! of anything but ports does, and a pod port's incremental publish (the topology
//! patched, the FDB's and neighbours' statics patched, one snapshot published), as an
//! attachment or detachment does.

use control::config::{Config, NetworkConfig, PortConfig};
use control::engine::{Live, PortDelta};
use control::state::{check, Desired, Mutation};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use switch_core::tables::{
    Learner, NeighKey, NetworkId, Parts, PortId, PortMode, PortSpec, Publisher, Resolver, Tunnel,
};
use switch_core::wire::EthernetAddress;

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
    // A pod's port attached and detached again: two incremental publishes, each what
    // `Engine::publish_ports` does (`Topology::with_ports`, then `Live::set_ports`).
    let mut g = c.benchmark_group("state_publish_port_attach_detach");
    g.sample_size(10);
    for n in [100u32, 1_000, 10_000] {
        let (base, d) = state(n);
        let c = d.config(&base, |_| false);
        let topology = c.topology().unwrap();
        let routing = c.routing(&topology).unwrap();
        let routes = Arc::new(switch_core::tables::Routes::build(&topology, &routing.routes).unwrap());
        let mut learner = Learner::new(65_536);
        learner.sync_topology(&topology);
        let mut resolver = Resolver::new(Default::default());
        resolver.set_statics(&routing.neighbours);
        let parts = Parts {
            topology: Arc::new(topology.clone()),
            fdb: Arc::new(learner.build()),
            routes: routes.clone(),
            neigh: Arc::new(resolver.build()),
            tunnel: Arc::new(Tunnel::empty()),
        };
        let mut live = Live {
            publisher: Publisher::new(parts),
            learner,
            resolver,
            topology: Arc::new(topology),
            routes,
            tunnel_parts: None,
            next_hops: HashMap::new(),
            tunnel: Arc::new(Tunnel::empty()),
        };
        let network = NetworkId(0);
        let cfg = pod(n);
        let mac: EthernetAddress = cfg.macs[0].parse().unwrap();
        let spec = PortSpec {
            id: PortId(n as u16),
            name: cfg.name.clone(),
            mode: PortMode::Access { network },
            static_macs: vec![mac],
        };
        let key = NeighKey::new(network, cfg.addresses[0]);
        let attach = PortDelta { added: vec![spec.clone()], neigh_added: vec![(key, mac)], ..Default::default() };
        let detach = PortDelta { removed: vec![spec.id], neigh_removed: vec![key], ..Default::default() };
        let max_ports = base.dataplane.max_ports;
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                for delta in [&attach, &detach] {
                    let t = live.topology.with_ports(&delta.removed, &delta.added, max_ports).unwrap();
                    live.set_ports(t, delta);
                }
            })
        });
        assert_eq!(live.topology.ports().count(), n as usize, "every attach was detached");
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
