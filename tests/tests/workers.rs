//! Two workers: each binds its own queue of every port; an address learned from one
//! worker's traffic is used by the other without flooding.

use podswitch_tests::raw::{frame, RawSocket, TEST_ETHERTYPE};
use podswitch_tests::{root_or_skip, Node, Pod};
use std::time::Duration;

/// Sends `f` from a thread pinned to `cpu`: with XPS set as below, it leaves the pod on
/// tx queue `cpu`, arrives on the switch port's rx queue `cpu`, and worker `cpu` gets it.
fn send_on_cpu(s: &RawSocket, f: &[u8], cpu: usize) {
    std::thread::scope(|sc| {
        sc.spawn(|| {
            // SAFETY: a cpu_set_t on the stack; pins only this thread.
            #[allow(unsafe_code)]
            unsafe {
                let mut set: libc::cpu_set_t = core::mem::zeroed();
                libc::CPU_SET(cpu, &mut set);
                assert_eq!(libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set), 0);
            }
            s.send(f).unwrap();
        });
    });
}

fn xps(p: &Pod) {
    let cmd = "echo 1 > /sys/class/net/eth0/queues/tx-0/xps_cpus && echo 2 > /sys/class/net/eth0/queues/tx-1/xps_cpus";
    p.ns.run("sh", &["-c", cmd]).unwrap();
}

#[test]
fn two_workers_share_what_either_learns() {
    if !root_or_skip() {
        return;
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert!(cpus >= 2, "this test needs two CPUs for two workers");
    let mut node = Node::new("ps-2w").unwrap();
    // IPv4 only at first: no IPv6 chatter moves the flood counters checked below.
    let pods: Vec<Pod> = (0..3)
        .map(|i| node.pod(&format!("pod{i}"), Some(&format!("198.18.3.{}", i + 1)), None, 1500, 2).unwrap())
        .collect();
    pods.iter().for_each(xps);
    node.start(
        "[dataplane]\ncores = [0, 1]\nidle = \"backoff\"\nring_size = 512\nhugepages = \"off\"\n\
         [[networks]]\nname = \"n\"\n[[ports]]\nname = \"pod0\"\nnetwork = \"n\"\n\
         [[ports]]\nname = \"pod1\"\nnetwork = \"n\"\n[[ports]]\nname = \"pod2\"\nnetwork = \"n\"\n",
    )
    .unwrap();
    let s: Vec<_> = pods.iter().map(|p| RawSocket::open(&p.ns, "eth0").unwrap()).collect();
    let (ma, mb) = ([0x02, 0xaa, 0, 0, 0, 1], [0x02, 0xbb, 0, 0, 0, 2]);

    // ma speaks through worker 0.
    send_on_cpu(&s[0], &frame([0xff; 6], ma, TEST_ETHERTYPE, &[1; 46]), 0);
    std::thread::sleep(Duration::from_millis(200));
    let before = node.metrics().unwrap();
    assert!(before.sum("podswitch_port_rx_packets_total", &[("port", "pod0"), ("worker", "0")]) >= 1);

    // A frame to ma handled by worker 1 goes to pod0 only: worker 1 uses the address
    // worker 0's traffic taught.
    let to_a = frame(ma, mb, TEST_ETHERTYPE, &[2; 46]);
    send_on_cpu(&s[1], &to_a, 1);
    let ours = |f: &[u8]| f.len() >= 14 && f[0..6] == ma && f[6..12] == mb;
    assert_eq!(s[0].recv_matching(Duration::from_millis(400), ours).len(), 1, "pod0 got it");
    assert!(s[2].recv_matching(Duration::from_millis(200), ours).is_empty(), "not flooded to pod2");
    let after = node.metrics().unwrap();
    let w1 = |m: &podswitch_tests::metrics::Metrics, port: &str, c: &str| {
        m.sum(&format!("podswitch_port_{c}_total"), &[("port", port), ("worker", "1")])
    };
    assert!(w1(&after, "pod1", "rx_packets") > w1(&before, "pod1", "rx_packets"), "worker 1 received it");
    assert!(w1(&after, "pod0", "tx_packets") > w1(&before, "pod0", "tx_packets"), "worker 1 sent it to pod0");
    assert_eq!(
        w1(&after, "pod2", "tx_flood_packets"),
        w1(&before, "pod2", "tx_flood_packets"),
        "worker 1 flooded nothing to pod2"
    );

    // And ordinary traffic works across both workers, IPv4 and IPv6.
    for (i, p) in pods.iter().enumerate() {
        p.ns.run("sysctl", &["-qw", "net.ipv6.conf.eth0.disable_ipv6=0"]).unwrap();
        p.ns.ip(&["addr", "add", &format!("2001:db8:3::{}/64", i + 1), "dev", "eth0", "nodad"]).unwrap();
    }
    for (a, b) in [(0, 1), (1, 2), (2, 0)] {
        assert!(pods[a].ping(pods[b].v4.as_ref().unwrap(), 2).unwrap());
        assert!(pods[a].ping(&format!("2001:db8:3::{}", b + 1), 2).unwrap());
    }
}
