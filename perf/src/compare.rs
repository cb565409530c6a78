//! The comparison behind `podswitch-compare`: one generator → DUT → sink topology, the
//! devices under test set up on it in turn, interleaved over rounds, each measured
//! with the same frames.
//!
//! ```text
//!  [gen ns] gen0 ── dut0 [dut ns: the DUT, CPU 1] dut1 ── sink0 [sink ns]
//!  [gen ns] base0 ───────────────────────────────────── base1 [sink ns]   (no DUT)
//! ```
//!
//! The VXLAN DUTs are one node of a tunnel, each direction on its own: `vxlan-encap`
//! routes the generator's pod traffic into VXLAN to a remote node whose underlay
//! address (198.19.0.2) is the sink's MAC, out of dut1; `vxlan-decap` takes VXLAN that
//! the generator sends as that remote node to the DUT's VTEP address on dut0, and
//! routes the inner packets to the sink's pod. Their load sizes are the pod's frames:
//! the generator's VXLAN frames are 50 bytes longer, and dut1 / sink0 carry 1600-byte
//! frames for the encapsulated 1518.
//!
//! The generator (`pktgen::gen`, CPU 0) sends flat out, then paced at 5% above the
//! rate the DUT delivered flat out (a flat-out generator overruns the DUT's veth ring
//! and the frames it cannot push cost the DUT core). The sink counts and drops, in XDP
//! or at tc ingress ([`SinkHook`]).
//!
//! CPU per packet, from /proc/stat: the busy time of every core during a trial, less
//! the generator's own (its core's time in process context: the sending thread), less
//! what the sink costs per frame in a run over base0 → base1 without a DUT, per frame
//! delivered. On veth the kernel's receive work runs where the sender transmits (in
//! softirq on the generator's core for dut0, on the DUT's for sink0), so a DUT's rate
//! per DUT core alone would mislead; this counts its work wherever it ran. The summary
//! gives the paced trial's figure: flat out, every DUT also pays for the frames it
//! cannot forward, and where it drops them (early and cheaply, at the veth's ring, for
//! the kernel's; after XDP and the socket's copy, for an AF_XDP DUT) decides what that
//! costs, not how well it forwards.

use crate::daemon::Podswitchd;
use crate::host::{self, Ovs, OvsFlavor, Testpmd};
use crate::pktgen::gen::{Generator, RunOpts};
use crate::pktgen::sink::Sink;
use crate::pktgen::stream::{Stream, Vxlan, IMIX};
use anyhow::{Context, Result};
use control::netns::NetNs;
use serde::Serialize;
use std::time::Duration;
use switch_core::wire::EthernetAddress;

/// The generator's core.
pub const GEN_CORE: usize = 0;
/// The DUT's core.
pub const DUT_CORE: usize = 1;
/// The generator's MAC.
const GEN_MAC: &str = "02:00:00:00:00:01";
/// Where frames go: behind the sink's port in every L2 DUT, the routed DUTs' next hop.
const SINK_MAC: &str = "02:00:00:00:00:99";
/// podswitchd's gateway MAC on the routed DUT's first network.
const GW_MAC: &str = "02:aa:00:00:00:01";
/// The VXLAN DUT's VTEP MAC (inner source of what it encapsulates, inner destination
/// of what it accepts).
const VTEP_MAC: &str = "02:cc:00:00:00:01";
/// The remote node's VTEP MAC.
const PEER_VTEP_MAC: &str = "02:cc:00:00:00:02";
/// The VXLAN DUT's underlay address.
const UNDERLAY: &str = "198.19.0.1";
/// The remote node's underlay address.
const PEER_UNDERLAY: &str = "198.19.0.2";
/// VXLAN's outer headers: Ethernet, IPv4, UDP, VXLAN.
const VXLAN_OVERHEAD: usize = 50;

/// A device under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Dut {
    /// podswitchd, one worker, both veths AF_XDP ports of one network.
    PodswitchL2,
    /// podswitchd routing between two networks.
    PodswitchRouted,
    /// podswitchd routing pod traffic into VXLAN to a remote node.
    PodswitchVxlanEncap,
    /// podswitchd taking VXLAN from a remote node and routing it to a pod.
    PodswitchVxlanDecap,
    /// The Linux bridge.
    LinuxBridge,
    /// Linux IP forwarding.
    LinuxRouter,
    /// Linux routing into a `vxlan` device to a remote node.
    LinuxVxlanEncap,
    /// Linux's `vxlan` device decapsulating, then routing to the pod.
    LinuxVxlanDecap,
    /// Open vSwitch, userspace datapath, AF_XDP ports, NORMAL.
    OvsAfxdp,
    /// Open vSwitch's DPDK build, userspace datapath, DPDK net_af_xdp ports, NORMAL.
    OvsDpdk,
    /// dpdk-testpmd io forwarding over net_af_xdp.
    TestpmdIo,
    /// dpdk-testpmd mac forwarding over net_af_xdp.
    TestpmdMac,
    /// An XDP program redirecting dut0 to dut1 (the kernel's ceiling).
    XdpRedirect,
}

impl Dut {
    /// Every DUT, podswitchd first.
    pub const ALL: [Dut; 13] = [
        Dut::PodswitchL2,
        Dut::PodswitchRouted,
        Dut::PodswitchVxlanEncap,
        Dut::PodswitchVxlanDecap,
        Dut::LinuxBridge,
        Dut::LinuxRouter,
        Dut::LinuxVxlanEncap,
        Dut::LinuxVxlanDecap,
        Dut::OvsAfxdp,
        Dut::OvsDpdk,
        Dut::TestpmdIo,
        Dut::TestpmdMac,
        Dut::XdpRedirect,
    ];

    /// Its name in tables.
    pub fn name(self) -> &'static str {
        match self {
            Dut::PodswitchL2 => "podswitchd-l2",
            Dut::PodswitchRouted => "podswitchd-routed",
            Dut::PodswitchVxlanEncap => "podswitchd-vxlan-encap",
            Dut::PodswitchVxlanDecap => "podswitchd-vxlan-decap",
            Dut::LinuxBridge => "linux-bridge",
            Dut::LinuxRouter => "linux-router",
            Dut::LinuxVxlanEncap => "linux-vxlan-encap",
            Dut::LinuxVxlanDecap => "linux-vxlan-decap",
            Dut::OvsAfxdp => "ovs-afxdp",
            Dut::OvsDpdk => "ovs-dpdk",
            Dut::TestpmdIo => "testpmd-io",
            Dut::TestpmdMac => "testpmd-mac",
            Dut::XdpRedirect => "xdp-redirect",
        }
    }

    /// Parses a name.
    pub fn parse(s: &str) -> Result<Dut> {
        Dut::ALL
            .into_iter()
            .find(|d| d.name() == s)
            .with_context(|| format!("unknown DUT {s}; choose from {}", Dut::ALL.map(Dut::name).join(", ")))
    }

    /// True for the DUTs that decapsulate VXLAN the generator sends.
    fn decap(self) -> bool {
        matches!(self, Dut::PodswitchVxlanDecap | Dut::LinuxVxlanDecap)
    }

    /// The Debian packages it needs, if they are not installed.
    pub fn missing(self) -> Option<&'static [&'static str]> {
        match self {
            Dut::OvsAfxdp if !host::ovs_installed() => Some(&["openvswitch-switch"]),
            Dut::OvsDpdk if !host::ovs_dpdk_installed() => Some(&["openvswitch-switch-dpdk", "librte-net-af-xdp23"]),
            Dut::TestpmdIo | Dut::TestpmdMac if !host::testpmd_installed() => {
                Some(&["dpdk-dev", "librte-net-af-xdp23"])
            }
            _ => None,
        }
    }
}

/// The namespaces and veths.
pub struct Topo {
    gen: NetNs,
    dut: NetNs,
    sink: NetNs,
    dut0_mac: EthernetAddress,
}

impl Topo {
    /// Builds the topology.
    pub fn new() -> Result<Topo> {
        let (gen, dut, sink) = (NetNs::new("psc-gen")?, NetNs::new("psc-dut")?, NetNs::new("psc-sink")?);
        for ns in [&gen, &dut, &sink] {
            ns.run("sysctl", &["-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"])?;
        }
        gen.ip(&["link", "add", "gen0", "type", "veth", "peer", "name", "dut0", "netns", dut.name()])?;
        dut.ip(&["link", "add", "dut1", "type", "veth", "peer", "name", "sink0", "netns", sink.name()])?;
        gen.ip(&["link", "add", "base0", "type", "veth", "peer", "name", "base1", "netns", sink.name()])?;
        for (ns, dev) in
            [(&gen, "gen0"), (&dut, "dut0"), (&dut, "dut1"), (&sink, "sink0"), (&gen, "base0"), (&sink, "base1")]
        {
            ns.ip(&["link", "set", dev, "up"])?;
        }
        let out = dut.exec("cat", &["/sys/class/net/dut0/address"])?;
        let dut0_mac = String::from_utf8_lossy(&out.stdout).trim().parse()?;
        Ok(Topo { gen, dut, sink, dut0_mac })
    }
}

/// Frame sizes and flows of one measurement.
#[derive(Debug, Clone, Serialize)]
pub struct Load {
    /// "64", "1518" or "imix".
    pub size: String,
    /// Flows.
    pub flows: u32,
    #[serde(skip)]
    sizes: Vec<usize>,
}

/// 64, 1518 and IMIX; 1 and 256 flows.
pub fn loads() -> Vec<Load> {
    let mut v = Vec::new();
    for (size, sizes) in [("64", vec![64]), ("1518", vec![1518]), ("imix", IMIX.to_vec())] {
        for flows in [1, 256] {
            v.push(Load { size: size.into(), flows, sizes: sizes.clone() });
        }
    }
    v
}

fn stream(load: &Load, dut: Dut, dut0_mac: EthernetAddress) -> Result<Stream> {
    let (src_mac, dst_mac, src_ip, dst_ip) = match dut {
        Dut::PodswitchRouted | Dut::PodswitchVxlanEncap => (GEN_MAC, GW_MAC.parse()?, "198.18.1.10", "198.18.2.20"),
        Dut::LinuxRouter | Dut::LinuxVxlanEncap => (GEN_MAC, dut0_mac, "198.18.1.10", "198.18.2.20"),
        // Inside the tunnel: from the remote node's VTEP to the DUT's.
        Dut::PodswitchVxlanDecap | Dut::LinuxVxlanDecap => {
            (PEER_VTEP_MAC, VTEP_MAC.parse()?, "198.18.1.10", "198.18.2.20")
        }
        _ => (GEN_MAC, SINK_MAC.parse()?, "198.18.0.1", "198.18.0.2"),
    };
    let vxlan = dut.decap().then(|| -> Result<Vxlan> {
        Ok(Vxlan {
            src_mac: GEN_MAC.parse()?,
            dst_mac: dut0_mac,
            src: PEER_UNDERLAY.parse()?,
            dst: UNDERLAY.parse()?,
            vni: 1,
        })
    });
    let extra = if dut.decap() { VXLAN_OVERHEAD } else { 0 };
    Ok(Stream {
        src_mac: src_mac.parse()?,
        dst_mac,
        src_ip: src_ip.parse()?,
        dst_ip: dst_ip.parse()?,
        src_port: 1024,
        dst_port: 9,
        flows: load.flows,
        sizes: load.sizes.iter().map(|s| s + extra).collect(),
        vxlan: vxlan.transpose()?,
    })
}

/// Runs `undo` when dropped.
struct Undo<F: FnMut()>(F);

impl<F: FnMut()> Drop for Undo<F> {
    fn drop(&mut self) {
        (self.0)();
    }
}

/// Sets `dut` up on the topology; dropping the result takes it down.
fn setup(dut: Dut, t: &Topo) -> Result<Box<dyn std::any::Any>> {
    let d = &t.dut;
    let dp = format!("[dataplane]\ncores = [{DUT_CORE}]\nidle = \"poll\"\nring_size = 2048\nhugepages = \"off\"\n");
    let name = d.name().to_string();
    let kernel_napi = || -> Result<()> {
        // GRO gives the veth a NAPI (which frames sent with XDP need); threaded and
        // pinned, the kernel's forwarding runs on the DUT core.
        d.run("ethtool", &["-K", "dut0", "gro", "on"])?;
        host::pin_napi(d.name(), "dut0", DUT_CORE)
    };
    let in_dut = move |args: &[&str]| {
        let mut a = vec!["netns", "exec", name.as_str()];
        a.extend_from_slice(args);
        let _ = control::netns::run("ip", &a);
    };
    Ok(match dut {
        Dut::PodswitchL2 => Box::new(Podswitchd::start(
            d,
            "l2",
            &format!(
                "{dp}[[networks]]\nname = \"pods\"\n[[ports]]\nname = \"dut0\"\nnetwork = \"pods\"\n\
                 [[ports]]\nname = \"dut1\"\nnetwork = \"pods\"\nmacs = [\"{SINK_MAC}\"]\n"
            ),
        )?),
        Dut::PodswitchRouted => Box::new(Podswitchd::start(
            d,
            "routed",
            &format!(
                "{dp}[[networks]]\nname = \"a\"\ngateway = [\"198.18.1.1/24\"]\ngateway_mac = \"{GW_MAC}\"\n\
                 [[networks]]\nname = \"b\"\ngateway = [\"198.18.2.1/24\"]\n\
                 [[ports]]\nname = \"dut0\"\nnetwork = \"a\"\nmacs = [\"{GEN_MAC}\"]\naddresses = [\"198.18.1.10\"]\n\
                 [[ports]]\nname = \"dut1\"\nnetwork = \"b\"\nmacs = [\"{SINK_MAC}\"]\naddresses = [\"198.18.2.20\"]\n"
            ),
        )?),
        Dut::PodswitchVxlanEncap | Dut::PodswitchVxlanDecap => {
            let (uplink, pod_port, pods, remote) = if dut.decap() {
                ("dut0", "dut1", "198.18.2", "198.18.1.0/24")
            } else {
                ("dut1", "dut0", "198.18.1", "198.18.2.0/24")
            };
            let underlay = vxlan_underlay(t, dut)?;
            // The pod port's static MAC and address: the sink's for decap (the route's
            // next hop), the generator's for encap.
            let (pod_mac, pod_ip) = if dut.decap() { (SINK_MAC, "198.18.2.20") } else { (GEN_MAC, "198.18.1.10") };
            let node = Podswitchd::start(
                d,
                dut.name(),
                &format!(
                    "{dp}[node]\nname = \"dut\"\npod_cidrs = [\"{pods}.0/24\"]\nunderlay = [\"{UNDERLAY}\"]\n\
                     vtep_mac = \"{VTEP_MAC}\"\n[uplink]\ninterface = \"{uplink}\"\nnetwork = \"pods\"\n\
                     [[networks]]\nname = \"pods\"\ngateway = [\"{pods}.1/24\"]\ngateway_mac = \"{GW_MAC}\"\n\
                     [[ports]]\nname = \"{pod_port}\"\nnetwork = \"pods\"\nmacs = [\"{pod_mac}\"]\naddresses = [\"{pod_ip}\"]\n\
                     [[peers]]\nname = \"remote\"\nunderlay = [\"{PEER_UNDERLAY}\"]\nvtep_mac = \"{PEER_VTEP_MAC}\"\n\
                     pod_cidrs = [\"{remote}\"]\n"
                ),
            )?;
            // The underlay next hop resolves from the kernel's neighbour table at once.
            std::thread::sleep(Duration::from_millis(300));
            Box::new((node, underlay))
        }
        Dut::LinuxVxlanEncap | Dut::LinuxVxlanDecap => {
            let underlay = vxlan_underlay(t, dut)?;
            let (uplink, pod_port) = if dut.decap() { ("dut0", "dut1") } else { ("dut1", "dut0") };
            host::add_kernel_vtep(d, VTEP_MAC, UNDERLAY, uplink)?;
            for k in ["all", "default", "vx0", "dut0", "dut1"] {
                d.run("sysctl", &["-qw", &format!("net.ipv4.conf.{k}.rp_filter=0")])?;
            }
            d.run("sysctl", &["-qw", "net.ipv4.ip_forward=1"])?;
            if dut.decap() {
                d.ip(&["addr", "add", "198.18.2.1/24", "dev", pod_port])?;
                d.ip(&["neigh", "replace", "198.18.2.20", "lladdr", SINK_MAC, "dev", pod_port, "nud", "permanent"])?;
                d.ip(&["route", "add", "198.18.1.0/24", "dev", "vx0"])?;
            } else {
                d.ip(&["addr", "add", "198.18.1.1/24", "dev", pod_port])?;
                d.ip(&["neigh", "add", "198.18.2.254", "lladdr", PEER_VTEP_MAC, "dev", "vx0", "nud", "permanent"])?;
                d.ip(&["route", "add", "198.18.2.0/24", "via", "198.18.2.254", "dev", "vx0", "onlink"])?;
                d.run("bridge", &["fdb", "append", PEER_VTEP_MAC, "dev", "vx0", "dst", PEER_UNDERLAY])?;
            }
            // The generator's frames arrive on dut0: its receive NAPI (and so the
            // forwarding, encapsulation or decapsulation) on the DUT core.
            kernel_napi()?;
            let undo = Undo(move || {
                in_dut(&["sh", "-c", "echo 0 > /sys/class/net/dut0/threaded"]);
                in_dut(&["ethtool", "-K", "dut0", "gro", "off"]);
                in_dut(&["ip", "link", "del", "vx0"]);
                in_dut(&["ip", "addr", "flush", "dev", pod_port]);
                in_dut(&["sysctl", "-qw", "net.ipv4.ip_forward=0"]);
            });
            Box::new((undo, underlay))
        }
        Dut::LinuxBridge => {
            d.ip(&["link", "add", "lbr0", "type", "bridge"])?;
            d.ip(&["link", "set", "dut0", "master", "lbr0"])?;
            d.ip(&["link", "set", "dut1", "master", "lbr0"])?;
            d.ip(&["link", "set", "lbr0", "up"])?;
            d.run("bridge", &["fdb", "add", SINK_MAC, "dev", "dut1", "master", "static"])?;
            kernel_napi()?;
            Box::new(Undo(move || {
                in_dut(&["sh", "-c", "echo 0 > /sys/class/net/dut0/threaded"]);
                in_dut(&["ethtool", "-K", "dut0", "gro", "off"]);
                in_dut(&["ip", "link", "del", "lbr0"]);
            }))
        }
        Dut::LinuxRouter => {
            d.run("sysctl", &["-qw", "net.ipv4.ip_forward=1"])?;
            d.ip(&["addr", "add", "198.18.1.1/24", "dev", "dut0"])?;
            d.ip(&["addr", "add", "198.18.2.1/24", "dev", "dut1"])?;
            d.ip(&["neigh", "replace", "198.18.2.20", "lladdr", SINK_MAC, "dev", "dut1", "nud", "permanent"])?;
            kernel_napi()?;
            Box::new(Undo(move || {
                in_dut(&["sh", "-c", "echo 0 > /sys/class/net/dut0/threaded"]);
                in_dut(&["ethtool", "-K", "dut0", "gro", "off"]);
                in_dut(&["ip", "addr", "flush", "dev", "dut0"]);
                in_dut(&["ip", "addr", "flush", "dev", "dut1"]);
                in_dut(&["sysctl", "-qw", "net.ipv4.ip_forward=0"]);
            }))
        }
        Dut::OvsAfxdp | Dut::OvsDpdk => {
            let flavor = if dut == Dut::OvsDpdk { OvsFlavor::Dpdk } else { OvsFlavor::Afxdp };
            let ovs = Ovs::start(d, &["dut0", "dut1"], (DUT_CORE, GEN_CORE), flavor)?;
            ovs.fdb_add("dut1", SINK_MAC)?;
            std::thread::sleep(Duration::from_secs(1));
            Box::new(ovs)
        }
        Dut::TestpmdIo => Box::new(Testpmd::start(d, "dut0", "dut1", (DUT_CORE, GEN_CORE), "io", SINK_MAC)?),
        Dut::TestpmdMac => Box::new(Testpmd::start(d, "dut0", "dut1", (DUT_CORE, GEN_CORE), "mac", SINK_MAC)?),
        Dut::XdpRedirect => {
            use switch_core::xdp::asm::Asm;
            let ifindex = crate::pktgen::in_netns(Some(d.name()), || Ok(switch_core::sys::netdev::ifindex("dut1")?))?;
            let mut a = Asm::new();
            // r0 = bpf_redirect(dut1, 0)
            a.mov_imm(1, ifindex as i32).mov_imm(2, 0).call(23).exit();
            let prog = switch_core::xdp::bpf::load_xdp(&a.finish(), "psc_redirect")?;
            let link = crate::pktgen::in_netns(Some(d.name()), move || {
                let ifindex = switch_core::sys::netdev::ifindex("dut0")?;
                Ok(switch_core::xdp::bpf::link_xdp(&prog, ifindex, switch_core::xdp::XDP_FLAGS_DRV_MODE)?)
            })?;
            host::pin_napi(d.name(), "dut0", DUT_CORE)?;
            // Threaded off while the program still gives dut0 its NAPI: without one, the
            // kernel refuses the write and the next DUT's NAPI would come up threaded
            // (an AF_XDP DUT's receive then competes with its worker). Tuple fields drop
            // in order.
            Box::new((Undo(move || in_dut(&["sh", "-c", "echo 0 > /sys/class/net/dut0/threaded"])), link))
        }
    })
}

/// The underlay side of a VXLAN DUT: its address on the uplink (dut1 to encapsulate,
/// dut0 to decapsulate), the remote node's MAC there (the sink's, or the generator's),
/// and 1600-byte frames on the uplink veth pair, for the encapsulated 1518. Undone when
/// dropped.
fn vxlan_underlay(t: &Topo, dut: Dut) -> Result<Box<dyn std::any::Any>> {
    let d = &t.dut;
    let (uplink, peer_mac, peer_ns, peer_dev) = if dut.decap() {
        ("dut0", GEN_MAC, t.gen.name().to_string(), "gen0")
    } else {
        ("dut1", SINK_MAC, t.sink.name().to_string(), "sink0")
    };
    let addr = format!("{UNDERLAY}/24");
    d.ip(&["addr", "add", &addr, "dev", uplink])?;
    d.ip(&["neigh", "replace", PEER_UNDERLAY, "lladdr", peer_mac, "dev", uplink, "nud", "permanent"])?;
    let dut_ns = d.name().to_string();
    let mtu = move |m: &str| -> Result<()> {
        control::netns::ip(&["-n", &dut_ns, "link", "set", uplink, "mtu", m])?;
        control::netns::ip(&["-n", &peer_ns, "link", "set", peer_dev, "mtu", m])?;
        Ok(())
    };
    mtu("1600")?;
    let dut_ns = d.name().to_string();
    Ok(Box::new(Undo(move || {
        let _ = control::netns::ip(&["-n", &dut_ns, "addr", "del", &addr, "dev", uplink]);
        let _ = control::netns::ip(&["-n", &dut_ns, "neigh", "del", PEER_UNDERLAY, "dev", uplink]);
        let _ = mtu("1500");
    })))
}

/// One trial's figures.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Sample {
    /// Frames per second the sink received.
    pub mpps: f64,
    /// Gigabits per second received (FCS included).
    pub gbit_s: f64,
    /// Frames per second sent.
    pub sent_mpps: f64,
    /// CPU time on every core per frame delivered, generator and sink taken out.
    pub cpu_ns_per_pkt: f64,
    /// Share of the DUT core that was busy.
    pub dut_core_busy: f64,
}

/// A DUT's figures for one load in one round.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// The DUT.
    pub dut: &'static str,
    /// The load.
    pub load: Load,
    /// The round.
    pub round: u32,
    /// Generator flat out.
    pub flat: Sample,
    /// Generator paced 5% above the flat-out delivered rate.
    pub paced: Sample,
}

/// Where the sink counts and drops the frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SinkHook {
    /// An XDP program on sink0: the cheapest receiver. On a veth it copies every skb
    /// without XDP's 256 bytes of headroom (all those an AF_XDP DUT sends) before it
    /// runs, a copy that the frames the kernel's own forwarding sends do not need.
    Xdp,
    /// A tc (tcx) ingress program on sink0, after GRO: each frame reaches it as an skb,
    /// as a pod's stack receives it, at the same cost whoever sent it.
    Tc,
}

/// The measuring side of the topology.
pub struct Meter {
    sink: Sink,
    base_sink: Sink,
    seconds: f64,
}

impl Meter {
    /// Attaches the sinks (sink0's and the baseline's base1) at `hook`;
    /// `sink_on_generator_core`: their receive runs in NAPI threads on the generator's
    /// core (else sink0's runs in the softirq of the core that sent, the DUT's).
    pub fn new(t: &Topo, seconds: f64, hook: SinkHook, sink_on_generator_core: bool) -> Result<Meter> {
        let ns = Some(t.sink.name());
        let (sink, base_sink) = match hook {
            SinkHook::Xdp => (Sink::attach_counting("sink0", ns)?, Sink::attach_counting("base1", ns)?),
            SinkHook::Tc => {
                // GRO gives each veth the NAPI that the baseline's XDP frames need, and
                // the DUTs' skbs the receive path a pod's veth with GRO has.
                for dev in ["sink0", "base1"] {
                    t.sink.run("ethtool", &["-K", dev, "gro", "on"])?;
                }
                (Sink::attach_counting_tc("sink0", ns)?, Sink::attach_counting_tc("base1", ns)?)
            }
        };
        if sink_on_generator_core {
            // The XDP program (or GRO) gave them a NAPI; threaded, it can be pinned.
            // The baseline's too, so that its sink's work is counted as sink0's is.
            for dev in ["sink0", "base1"] {
                host::pin_napi(t.sink.name(), dev, GEN_CORE)?;
            }
        }
        Ok(Meter { sink, base_sink, seconds })
    }

    /// A trial: its figures, frames sent and frames the sink received. Its CPU per
    /// packet is every core's busy time but the generator's own (the generator core's
    /// time in process context: the sending thread; in softirq there, the receive
    /// work that veth runs after each transmit, a DUT's or the sink's), per frame
    /// received.
    fn run(&self, t: &Topo, gen: &Generator, dev: &str, sink: &Sink, rate_pps: u64) -> Result<(Sample, u64, u64)> {
        sink.clear()?;
        let opts =
            RunOpts { rate_pps, count: None, seconds: self.seconds, batch: 64, progress: false, core: Some(GEN_CORE) };
        let c0 = host::cpu_times()?;
        let sent = gen.run(dev, Some(t.gen.name()), &opts)?;
        let c1 = host::cpu_times()?;
        std::thread::sleep(Duration::from_millis(100));
        let got = sink.read()?.frames;
        let secs = |j: u64| j as f64 / host::USER_HZ;
        let busy: Vec<f64> = c0.iter().zip(&c1).map(|(a, b)| secs(b.busy - a.busy)).collect();
        let generator = c0.get(GEN_CORE).zip(c1.get(GEN_CORE)).map_or(0.0, |(a, b)| secs(b.process - a.process));
        let wall = sent.seconds.max(1e-9);
        let mean_wire = gen.stream().mean_wire();
        Ok((
            Sample {
                mpps: got as f64 / wall / 1e6,
                gbit_s: got as f64 / wall * mean_wire * 8.0 / 1e9,
                sent_mpps: sent.rate_pps / 1e6,
                cpu_ns_per_pkt: (busy.iter().sum::<f64>() - generator).max(0.0) * 1e9 / got.max(1) as f64,
                dut_core_busy: busy.get(DUT_CORE).copied().unwrap_or(0.0) / wall,
            },
            sent.frames,
            got,
        ))
    }

    /// What the sink alone costs per frame for `load`, ns of CPU: a run straight from
    /// base0 to base1, no DUT. (The generator's own time is never counted.)
    pub fn baseline(&self, t: &Topo, load: &Load) -> Result<f64> {
        let gen = Generator::new(&stream(load, Dut::PodswitchL2, t.dut0_mac)?)?;
        Ok(self.run(t, &gen, "base0", &self.base_sink, 0)?.0.cpu_ns_per_pkt)
    }

    /// Measures `dut` (already set up) under `load`: flat out, then paced.
    pub fn measure(&self, t: &Topo, dut: Dut, load: &Load, sink_ns: f64) -> Result<(Sample, Sample)> {
        let gen = Generator::new(&stream(load, dut, t.dut0_mac)?)?;
        let (mut flat, sent, got) = self.run(t, &gen, "gen0", &self.sink, 0)?;
        let rate = ((flat.mpps * 1.05) * 1e6) as u64;
        let (mut paced, paced_sent, paced_got) = self.run(t, &gen, "gen0", &self.sink, rate.max(1000))?;
        if std::env::var_os("PSC_DEBUG").is_some() {
            eprintln!(
                "flat {sent} sent, {got} got, {:.1} ns each; paced {paced_sent} sent, {paced_got} got, {:.1} ns \
                 each (besides the generator); the sink's {sink_ns:.1}",
                flat.cpu_ns_per_pkt, paced.cpu_ns_per_pkt
            );
        }
        // Take out the sink's work for the frames it received.
        for s in [&mut flat, &mut paced] {
            s.cpu_ns_per_pkt = (s.cpu_ns_per_pkt - sink_ns).max(0.0);
        }
        // Bits of the pods' frames (a VXLAN DUT's generator or sink sees them 50 bytes
        // longer).
        let pod_wire = load.sizes.iter().sum::<usize>() as f64 / load.sizes.len().max(1) as f64;
        for s in [&mut flat, &mut paced] {
            s.gbit_s = s.mpps * pod_wire * 8.0 / 1e3;
        }
        Ok((flat, paced))
    }
}

/// Sets `dut` up, measures every load, takes it down.
pub fn round(t: &Topo, m: &Meter, dut: Dut, loads: &[Load], base: &[f64], round: u32) -> Result<Vec<Row>> {
    let _guard = setup(dut, t).with_context(|| format!("setting up {}", dut.name()))?;
    let mut rows = Vec::new();
    for (load, &b) in loads.iter().zip(base) {
        let (flat, paced) = m.measure(t, dut, load, b)?;
        rows.push(Row { dut: dut.name(), load: load.clone(), round, flat, paced });
    }
    Ok(rows)
}

/// The podswitchd mode `dut` is held against: its L2 against the L2 peers, its routed
/// mode against Linux's router, its VXLAN encap and decap against Linux's.
pub fn podswitch_for(dut: &str) -> &'static str {
    match Dut::parse(dut) {
        Ok(Dut::LinuxRouter) => Dut::PodswitchRouted.name(),
        Ok(Dut::LinuxVxlanEncap) => Dut::PodswitchVxlanEncap.name(),
        Ok(Dut::LinuxVxlanDecap) => Dut::PodswitchVxlanDecap.name(),
        _ => Dut::PodswitchL2.name(),
    }
}
