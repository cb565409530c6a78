//! The sink: an XDP program on the receiving interface that counts every frame,
//! reads the signature of the generator's frames and drops them, at line rate.
//!
//! Per frame it counts frames and bytes (per CPU); for a signed frame (plain or in
//! VXLAN, IPv4 or IPv6) it also
//! - measures latency, now minus the send time in the signature (both from
//!   CLOCK_MONOTONIC on this machine), into a log-linear histogram: exact below 16 ns,
//!   then 8 buckets per power of two (12.5% wide);
//! - checks the flow's sequence numbers with a 64-wide window, as IPsec's anti-replay
//!   check does: a number above the highest seen moves the window; one inside it is a
//!   duplicate if seen, else reordered; one below it is counted as late (reordered or
//!   duplicate: too old to tell).
//!
//! Flow state is one array entry per flow, written without atomics: a flow must arrive
//! on one CPU at a time, as it does through a veth (the sender's CPU) or a NIC queue
//! (RSS). Totals and latency are per CPU.

use anyhow::{Context, Result};
use serde::Serialize;
use std::os::fd::{AsRawFd, OwnedFd};
use switch_core::xdp::asm::{Alu, Asm, Cond, Size, HELPER_KTIME_GET_NS};
use switch_core::xdp::insn::Insn;
use switch_core::xdp::{bpf, insn, XDP_FLAGS_DRV_MODE};

use super::stream::{MAGIC, MAX_FLOWS, SIGNATURE_LEN, VXLAN_PORT};

/// Latency histogram buckets.
pub const BUCKETS: u32 = 512;

// Totals (per CPU): u64 fields.
const T_FRAMES: i16 = 0;
const T_BYTES: i16 = 8;
const T_SIGNED: i16 = 16;
const T_FLOWS: i16 = 24;
const TOTALS_LEN: usize = 32;

// A flow's state: u64 fields.
const F_TOP: i16 = 0;
const F_WINDOW: i16 = 8;
const F_PACKETS: i16 = 16;
const F_BYTES: i16 = 24;
const F_DUPS: i16 = 32;
const F_LATE: i16 = 40;
const F_REORDERED: i16 = 48;
const FLOW_LEN: usize = 56;

// Stack slots.
const KEY: i16 = -4;
const FLOW_KEY: i16 = -8;
const SEQ: i16 = -16;
const TS: i16 = -24;
const LEN: i16 = -32;

/// tc's verdict for a dropped skb.
const TCX_DROP: i32 = 2;

/// Where a counting sink's program runs.
#[derive(Debug, Clone, Copy)]
enum Hook {
    Xdp,
    TcIngress,
}

/// A sink attached to an interface. Dropping it detaches the program.
#[derive(Debug)]
pub struct Sink {
    totals: OwnedFd,
    latency: OwnedFd,
    flows: OwnedFd,
    _prog: OwnedFd,
    _link: OwnedFd,
}

/// One flow's counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct FlowStats {
    /// Flow index.
    pub flow: u32,
    /// Frames received (duplicates included).
    pub packets: u64,
    /// Their bytes (without FCS).
    pub bytes: u64,
    /// Highest sequence number seen, plus one (0: none).
    pub top: u64,
    /// Frames seen before.
    pub duplicates: u64,
    /// Frames that came after a later one of their flow.
    pub reordered: u64,
    /// Frames more than 64 behind the highest: reordered or duplicates.
    pub late: u64,
}

impl FlowStats {
    /// Distinct frames received (late ones counted as distinct).
    pub fn unique(&self) -> u64 {
        self.packets - self.duplicates
    }

    /// Sequence numbers below the highest seen that never arrived.
    pub fn missing(&self) -> u64 {
        self.top.saturating_sub(self.unique())
    }
}

/// What a sink counted.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Received {
    /// Every frame.
    pub frames: u64,
    /// Their bytes (without FCS).
    pub bytes: u64,
    /// Frames with the generator's signature.
    pub signed: u64,
    /// Per flow, for flows 0 up to the highest seen.
    pub flows: Vec<FlowStats>,
    /// Latency of the signed frames.
    pub latency: Latency,
}

impl Received {
    /// Distinct signed frames over all flows.
    pub fn unique(&self) -> u64 {
        self.flows.iter().map(FlowStats::unique).sum()
    }

    /// Sum of a per-flow count.
    pub fn sum(&self, f: impl Fn(&FlowStats) -> u64) -> u64 {
        self.flows.iter().map(f).sum()
    }
}

/// A latency histogram in the sink's buckets.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Latency {
    /// Frames per bucket.
    #[serde(skip)]
    pub buckets: Vec<u64>,
    /// Frames measured.
    pub count: u64,
    /// Lowest, ns (the lower bound of its bucket).
    pub min_ns: u64,
    /// Median, ns (upper bound of its bucket).
    pub p50_ns: u64,
    /// 99th percentile, ns.
    pub p99_ns: u64,
    /// 99.9th percentile, ns.
    pub p999_ns: u64,
    /// Highest, ns (upper bound of its bucket).
    pub max_ns: u64,
}

/// The latencies bucket `b` holds: `[low, high)` ns.
pub fn bucket_bounds(b: u32) -> (u64, u64) {
    if b < 16 {
        return (u64::from(b), u64::from(b) + 1);
    }
    let (msb, sub) = ((b + 16) / 8, u64::from((b + 16) % 8));
    let shift = msb - 3;
    let bound = |m: u64| u64::try_from(u128::from(m) << shift).unwrap_or(u64::MAX);
    (bound(8 + sub), bound(9 + sub))
}

/// The bucket of a latency, as the program computes it.
pub fn bucket_of(ns: u64) -> u32 {
    if ns < 16 {
        return ns as u32;
    }
    let msb = 63 - ns.leading_zeros();
    let sub = ((ns >> (msb - 3)) & 7) as u32;
    msb * 8 - 16 + sub
}

impl Latency {
    /// Summarises bucket counts.
    pub fn from_buckets(buckets: Vec<u64>) -> Latency {
        let count: u64 = buckets.iter().sum();
        let mut l = Latency { count, ..Default::default() };
        if count == 0 {
            l.buckets = buckets;
            return l;
        }
        let at = |q: f64| -> u64 {
            let rank = ((count as f64 * q).ceil() as u64).clamp(1, count);
            let mut seen = 0;
            for (b, &n) in buckets.iter().enumerate() {
                seen += n;
                if seen >= rank {
                    return bucket_bounds(b as u32).1;
                }
            }
            unreachable!("rank is within the count")
        };
        let first = buckets.iter().position(|&n| n > 0).expect("count > 0") as u32;
        l.min_ns = bucket_bounds(first).0;
        l.p50_ns = at(0.5);
        l.p99_ns = at(0.99);
        l.p999_ns = at(0.999);
        l.max_ns = at(1.0);
        l.buckets = buckets;
        l
    }

    /// `(latency ns, fraction of frames at or below it)` at each non-empty bucket's
    /// upper bound: the CDF to plot.
    pub fn cdf(&self) -> Vec<(u64, f64)> {
        let mut seen = 0;
        let mut out = Vec::new();
        for (b, &n) in self.buckets.iter().enumerate() {
            if n > 0 {
                seen += n;
                out.push((bucket_bounds(b as u32).1, seen as f64 / self.count as f64));
            }
        }
        out
    }
}

impl Sink {
    /// Loads the program and attaches it (native mode) to `dev` in `netns` (or the
    /// caller's namespace).
    pub fn attach(dev: &str, netns: Option<&str>) -> Result<Sink> {
        let totals = bpf::create_array("sink_totals", TOTALS_LEN as u32, 1, true)?;
        let latency = bpf::create_array("sink_latency", 8, BUCKETS, true)?;
        let flows = bpf::create_array("sink_flows", FLOW_LEN as u32, MAX_FLOWS, false)?;
        let insns = program(totals.as_raw_fd(), latency.as_raw_fd(), flows.as_raw_fd());
        let prog = bpf::load_xdp(&insns, "pktgen_sink").context("loading the sink's program")?;
        let link = Sink::link(&prog, dev, netns, Hook::Xdp)?;
        Ok(Sink { totals, latency, flows, _prog: prog, _link: link })
    }

    /// A sink that only counts frames (`insn::count_and_drop`: one per-CPU add): the
    /// least a receiver can cost, for measuring the generator alone. Its reads show
    /// frames, and nothing else.
    pub fn attach_counting(dev: &str, netns: Option<&str>) -> Result<Sink> {
        Sink::counting(dev, netns, Hook::Xdp)
    }

    /// A counting sink at tc ingress (tcx) instead of XDP: each frame reaches it as an
    /// skb, through the receive path a pod's stack takes (on a veth with NAPI, GRO
    /// first), and is dropped there. Unlike the XDP sink, it never makes the kernel
    /// copy a frame: on a veth, an XDP program given an skb with less than 256 bytes
    /// of headroom (one an AF_XDP socket sent in copy mode) gets a copy of it, which
    /// an skb routed or bridged by the kernel (built from an XDP frame) does not need.
    pub fn attach_counting_tc(dev: &str, netns: Option<&str>) -> Result<Sink> {
        Sink::counting(dev, netns, Hook::TcIngress)
    }

    fn counting(dev: &str, netns: Option<&str>, hook: Hook) -> Result<Sink> {
        let totals = bpf::create_array("sink_totals", TOTALS_LEN as u32, 1, true)?;
        let latency = bpf::create_array("sink_latency", 8, BUCKETS, true)?;
        let flows = bpf::create_array("sink_flows", FLOW_LEN as u32, 1, false)?;
        // The program adds 1 to the first u64 of slot 0: T_FRAMES.
        let prog = match hook {
            Hook::Xdp => bpf::load_xdp(&insn::count_and_drop(totals.as_raw_fd()), "pktgen_count")?,
            Hook::TcIngress => {
                bpf::load_tcx_ingress(&insn::count_and_return(totals.as_raw_fd(), TCX_DROP), "pktgen_count_tc")?
            }
        };
        let link = Sink::link(&prog, dev, netns, hook)?;
        Ok(Sink { totals, latency, flows, _prog: prog, _link: link })
    }

    fn link(prog: &OwnedFd, dev: &str, netns: Option<&str>, hook: Hook) -> Result<OwnedFd> {
        let dev = dev.to_string();
        let p = prog.try_clone()?;
        super::in_netns(netns, move || {
            let ifindex = switch_core::sys::netdev::ifindex(&dev).with_context(|| format!("no interface {dev}"))?;
            match hook {
                Hook::Xdp => bpf::link_xdp(&p, ifindex, XDP_FLAGS_DRV_MODE),
                Hook::TcIngress => bpf::link_tcx_ingress(&p, ifindex),
            }
            .with_context(|| format!("attaching the sink to {dev}"))
        })
    }

    fn percpu(map: &OwnedFd, key: u32, value_len: usize) -> Result<Vec<Vec<u64>>> {
        let cpus = bpf::possible_cpus();
        let stride = value_len.div_ceil(8) * 8;
        let mut b = vec![0u8; cpus * stride];
        bpf::map_lookup_bytes(map, key, &mut b)?;
        Ok(b.chunks_exact(stride).map(words).collect())
    }

    /// Reads every count.
    pub fn read(&self) -> Result<Received> {
        let t = Sink::percpu(&self.totals, 0, TOTALS_LEN)?;
        let sum = |i: i16| t.iter().map(|c| c[(i / 8) as usize]).sum::<u64>();
        let flows_seen = t.iter().map(|c| c[(T_FLOWS / 8) as usize]).max().unwrap_or(0) as u32;
        let mut flows = Vec::with_capacity(flows_seen as usize);
        let mut b = [0u8; FLOW_LEN];
        for f in 0..flows_seen.min(MAX_FLOWS) {
            bpf::map_lookup_bytes(&self.flows, f, &mut b)?;
            let w = words(&b);
            let at = |i: i16| w[(i / 8) as usize];
            flows.push(FlowStats {
                flow: f,
                packets: at(F_PACKETS),
                bytes: at(F_BYTES),
                top: at(F_TOP),
                duplicates: at(F_DUPS),
                reordered: at(F_REORDERED),
                late: at(F_LATE),
            });
        }
        let mut buckets = vec![0u64; BUCKETS as usize];
        for (b, slot) in buckets.iter_mut().enumerate() {
            *slot = Sink::percpu(&self.latency, b as u32, 8)?.iter().map(|c| c[0]).sum();
        }
        Ok(Received {
            frames: sum(T_FRAMES),
            bytes: sum(T_BYTES),
            signed: sum(T_SIGNED),
            flows,
            latency: Latency::from_buckets(buckets),
        })
    }

    /// Zeroes every count (between the trials of a search).
    pub fn clear(&self) -> Result<()> {
        let seen = Sink::percpu(&self.totals, 0, TOTALS_LEN)?.iter().map(|c| c[(T_FLOWS / 8) as usize]).max();
        let cpus = bpf::possible_cpus();
        bpf::map_update_bytes(&self.totals, 0, &vec![0u8; cpus * TOTALS_LEN])?;
        for b in 0..BUCKETS {
            bpf::map_update_bytes(&self.latency, b, &vec![0u8; cpus * 8])?;
        }
        for f in 0..seen.unwrap_or(0).min(u64::from(MAX_FLOWS)) as u32 {
            bpf::map_update_bytes(&self.flows, f, &[0u8; FLOW_LEN])?;
        }
        Ok(())
    }
}

fn words(b: &[u8]) -> Vec<u64> {
    b.chunks_exact(8).map(|c| u64::from_ne_bytes(c.try_into().expect("8 bytes"))).collect()
}

/// A u16 in network order as `ldx_h` loads it on this (little-endian) machine.
fn net16(v: u16) -> i32 {
    i32::from(u16::from_le_bytes(v.to_be_bytes()))
}

/// Emits the parse of an Ethernet frame at `eth`: on a signed frame's leaf, r8 points
/// at the signature (checked to be inside the frame) and control goes to "signed".
/// Expects r2 = data, r3 = data_end.
fn parse(a: &mut Asm, eth: i16, inner: bool) {
    let name = |s: &str| format!("{s}_{eth}");
    a.mov(4, 2).alu_imm(Alu::Add, 4, i32::from(eth) + 14).jmp(Cond::Gt, 4, 3, "unsigned");
    a.ldx(Size::H, 1, 2, eth + 12);
    a.jmp_imm(Cond::Eq, 1, net16(0x0800), &name("v4")).jmp_imm(Cond::Eq, 1, net16(0x86dd), &name("v6"));
    a.ja("unsigned");
    for (family, ip_len, proto_at) in [("v4", 20i16, 9i16), ("v6", 40, 6)] {
        let udp = eth + 14 + ip_len;
        a.label(&name(family)).mov(4, 2).alu_imm(Alu::Add, 4, i32::from(udp) + 8).jmp(Cond::Gt, 4, 3, "unsigned");
        if family == "v4" {
            a.ldx(Size::B, 1, 2, eth + 14).jmp_imm(Cond::Ne, 1, 0x45, "unsigned");
        }
        a.ldx(Size::B, 1, 2, eth + 14 + proto_at).jmp_imm(Cond::Ne, 1, 17, "unsigned");
        if !inner {
            let plain = name(&format!("plain_{family}"));
            a.ldx(Size::H, 1, 2, udp + 2).jmp_imm(Cond::Ne, 1, net16(VXLAN_PORT), &plain);
            a.ja(&format!("eth_{}", udp + 16));
            a.label(&plain);
        }
        let sig = udp + 8;
        a.mov(8, 2).alu_imm(Alu::Add, 8, i32::from(sig)).mov(4, 8).alu_imm(Alu::Add, 4, SIGNATURE_LEN as i32);
        a.jmp(Cond::Gt, 4, 3, "unsigned").ja("signed");
    }
}

/// The sink's program.
pub fn program(totals_fd: i32, latency_fd: i32, flows_fd: i32) -> Vec<Insn> {
    let mut a = Asm::new();
    // r7 = &totals (this CPU's)
    a.mov(6, 1).st(Size::W, 10, KEY, 0).mov(2, 10).alu_imm(Alu::Add, 2, i32::from(KEY)).ld_map(1, totals_fd);
    a.call(insn::HELPER_MAP_LOOKUP_ELEM).jmp_imm(Cond::Eq, 0, 0, "unsigned").mov(7, 0);
    // Length; frames and bytes.
    a.ldx(Size::W, 2, 6, 0).ldx(Size::W, 3, 6, 4).mov(9, 3).alu(Alu::Sub, 9, 2).stx(Size::Dw, 10, LEN, 9);
    a.ldx(Size::Dw, 1, 7, T_FRAMES).alu_imm(Alu::Add, 1, 1).stx(Size::Dw, 7, T_FRAMES, 1);
    a.ldx(Size::Dw, 1, 7, T_BYTES).alu(Alu::Add, 1, 9).stx(Size::Dw, 7, T_BYTES, 1);
    // Outer frame; VXLAN's inner frames over IPv4 and IPv6 underlays.
    parse(&mut a, 0, false);
    for eth in [14 + 20 + 16, 14 + 40 + 16] {
        a.label(&format!("eth_{eth}"));
        parse(&mut a, eth, true);
    }
    // r8 = the signature.
    a.label("signed").ldx(Size::H, 1, 8, 0).jmp_imm(Cond::Ne, 1, net16(MAGIC), "unsigned");
    a.ldx(Size::Dw, 1, 7, T_SIGNED).alu_imm(Alu::Add, 1, 1).stx(Size::Dw, 7, T_SIGNED, 1);
    a.ldx(Size::H, 1, 8, 2).be(1, 16).stx(Size::W, 10, FLOW_KEY, 1);
    a.alu_imm(Alu::Add, 1, 1).ldx(Size::Dw, 2, 7, T_FLOWS).jmp(Cond::Ge, 2, 1, "seq").stx(Size::Dw, 7, T_FLOWS, 1);
    a.label("seq").ldx(Size::W, 1, 8, 4).be(1, 32).stx(Size::Dw, 10, SEQ, 1);
    a.ldx(Size::Dw, 1, 8, 8).be(1, 64).stx(Size::Dw, 10, TS, 1);
    // r1 = latency (0 if the send time is ahead of now).
    a.call(HELPER_KTIME_GET_NS).ldx(Size::Dw, 2, 10, TS).mov_imm(1, 0).jmp(Cond::Lt, 0, 2, "bucket_small");
    a.mov(1, 0).alu(Alu::Sub, 1, 2).jmp_imm(Cond::Lt, 1, 16, "bucket_small");
    // msb of r1 into r4 by halving steps, then 3 bits below it.
    a.mov(2, 1).mov_imm(4, 0);
    for s in [32, 16, 8, 4, 2, 1] {
        let next = format!("msb_{s}");
        a.mov(5, 2).alu_imm(Alu::Rsh, 5, s).jmp_imm(Cond::Eq, 5, 0, &next).mov(2, 5).alu_imm(Alu::Add, 4, s);
        a.label(&next);
    }
    a.mov(5, 4).alu_imm(Alu::Sub, 5, 3).mov(0, 1).alu(Alu::Rsh, 0, 5).alu_imm(Alu::And, 0, 7);
    a.alu_imm(Alu::Lsh, 4, 3).alu_imm(Alu::Sub, 4, 16).alu(Alu::Add, 4, 0).mov(1, 4);
    a.label("bucket_small").stx(Size::W, 10, KEY, 1);
    a.mov(2, 10).alu_imm(Alu::Add, 2, i32::from(KEY)).ld_map(1, latency_fd).call(insn::HELPER_MAP_LOOKUP_ELEM);
    a.jmp_imm(Cond::Eq, 0, 0, "flow").ldx(Size::Dw, 1, 0, 0).alu_imm(Alu::Add, 1, 1).stx(Size::Dw, 0, 0, 1);
    // r0 = &flows[flow]
    a.label("flow").mov(2, 10).alu_imm(Alu::Add, 2, i32::from(FLOW_KEY)).ld_map(1, flows_fd);
    a.call(insn::HELPER_MAP_LOOKUP_ELEM).jmp_imm(Cond::Eq, 0, 0, "unsigned");
    a.ldx(Size::Dw, 1, 0, F_PACKETS).alu_imm(Alu::Add, 1, 1).stx(Size::Dw, 0, F_PACKETS, 1);
    a.ldx(Size::Dw, 2, 10, LEN).ldx(Size::Dw, 1, 0, F_BYTES).alu(Alu::Add, 1, 2).stx(Size::Dw, 0, F_BYTES, 1);
    // r1 = seq, r2 = top, r4 = window
    a.ldx(Size::Dw, 1, 10, SEQ).ldx(Size::Dw, 2, 0, F_TOP).ldx(Size::Dw, 4, 0, F_WINDOW);
    a.jmp(Cond::Lt, 1, 2, "behind");
    // Ahead: slide the window by seq + 1 - top, mark seq.
    a.mov(3, 1).alu_imm(Alu::Add, 3, 1).alu(Alu::Sub, 3, 2).mov_imm(5, 0).jmp_imm(Cond::Ge, 3, 64, "slid");
    a.mov(5, 4).alu(Alu::Lsh, 5, 3);
    a.label("slid").alu_imm(Alu::Or, 5, 1).stx(Size::Dw, 0, F_WINDOW, 5);
    a.alu_imm(Alu::Add, 1, 1).stx(Size::Dw, 0, F_TOP, 1).ja("unsigned");
    // Behind by d = top - 1 - seq.
    a.label("behind").mov(3, 2).alu_imm(Alu::Sub, 3, 1).alu(Alu::Sub, 3, 1).jmp_imm(Cond::Lt, 3, 64, "in_window");
    a.ldx(Size::Dw, 1, 0, F_LATE).alu_imm(Alu::Add, 1, 1).stx(Size::Dw, 0, F_LATE, 1).ja("unsigned");
    a.label("in_window").mov_imm(5, 1).alu(Alu::Lsh, 5, 3).jmp(Cond::Set, 4, 5, "duplicate");
    a.alu(Alu::Or, 4, 5).stx(Size::Dw, 0, F_WINDOW, 4);
    a.ldx(Size::Dw, 1, 0, F_REORDERED).alu_imm(Alu::Add, 1, 1).stx(Size::Dw, 0, F_REORDERED, 1).ja("unsigned");
    a.label("duplicate").ldx(Size::Dw, 1, 0, F_DUPS).alu_imm(Alu::Add, 1, 1).stx(Size::Dw, 0, F_DUPS, 1);
    a.label("unsigned").ret(insn::XDP_DROP);
    a.finish()
}

#[cfg(test)]
mod tests {
    use super::super::stream::{Stream, Vxlan};
    use super::*;
    use switch_core::wire::EthernetAddress;

    #[test]
    fn buckets_cover_every_latency_once() {
        for ns in (0..5000u64).chain([1 << 20, (1 << 20) + 12345, 1 << 40, u64::MAX]) {
            let b = bucket_of(ns);
            assert!(b < BUCKETS);
            let (lo, hi) = bucket_bounds(b);
            assert!(lo <= ns && (ns < hi || hi == u64::MAX), "{ns} in bucket {b} [{lo}, {hi})");
        }
        let l = Latency::from_buckets({
            let mut b = vec![0; BUCKETS as usize];
            b[bucket_of(1000) as usize] = 98;
            b[bucket_of(50_000) as usize] = 2;
            b
        });
        assert_eq!((l.count, l.min_ns, l.p50_ns), (100, 960, 1024));
        assert_eq!((l.p99_ns, l.max_ns), (53248, 53248));
    }

    /// The program, run on frames by the kernel, counts as the user-space model says.
    #[test]
    fn the_program_counts_sequences_and_latency() {
        let totals = bpf::create_array("t", TOTALS_LEN as u32, 1, true).unwrap();
        let latency = bpf::create_array("l", 8, BUCKETS, true).unwrap();
        let flows = bpf::create_array("f", FLOW_LEN as u32, MAX_FLOWS, false).unwrap();
        let prog = bpf::load_xdp(&program(totals.as_raw_fd(), latency.as_raw_fd(), flows.as_raw_fd()), "t")
            .expect("the verifier accepts the sink");
        let mut s = Stream {
            src_mac: EthernetAddress([2, 0, 0, 0, 0, 1]),
            dst_mac: EthernetAddress([2, 0, 0, 0, 0, 2]),
            src_ip: "2001:db8::1".parse().unwrap(),
            dst_ip: "2001:db8::2".parse().unwrap(),
            src_port: 1,
            dst_port: 9,
            flows: 2,
            sizes: vec![200],
            vxlan: Some(Vxlan {
                src_mac: EthernetAddress([2, 0, 0, 0, 1, 1]),
                dst_mac: EthernetAddress([2, 0, 0, 0, 1, 2]),
                src: "198.19.0.1".parse().unwrap(),
                dst: "198.19.0.2".parse().unwrap(),
                vni: 5,
            }),
        };
        // Flow 0 gets 0..200 with 150 missing, 3 before 2, 10 twice and 5 very late;
        // flow 1 gets 0..10.
        let mut order: Vec<u64> = (0..200).filter(|&i| i != 150 && i != 2 && i != 5).collect();
        order.insert(3, 2);
        order.insert(11, 10);
        order.push(5);
        let run = |s: &Stream, n: u64| bpf::test_run(&prog, &s.frame(n, 1)).unwrap();
        for seq in order {
            assert_eq!(run(&s, seq * 2) as i32, insn::XDP_DROP);
        }
        for seq in 0..10 {
            run(&s, seq * 2 + 1);
        }
        s.vxlan = None;
        s.src_ip = "198.18.0.1".parse().unwrap();
        s.dst_ip = "198.18.0.2".parse().unwrap();
        run(&s, 400); // seq 200 of flow 0, plain IPv4
        bpf::test_run(&prog, &[0u8; 60]).unwrap(); // not ours
        let sink = Sink { totals, latency, flows, _prog: prog.try_clone().unwrap(), _link: prog };
        let r = sink.read().unwrap();
        assert_eq!((r.frames, r.signed), (200 + 10 + 1 + 1, 211));
        let f0 = r.flows[0];
        assert_eq!((f0.packets, f0.top, f0.duplicates, f0.reordered, f0.late), (201, 201, 1, 1, 1));
        assert_eq!(f0.missing(), 1, "150");
        assert_eq!((r.flows[1].packets, r.flows[1].missing()), (10, 0));
        assert_eq!(r.flows[1].bytes, 10 * 196);
        assert_eq!(r.latency.count, 211);
        assert!(r.latency.min_ns > 1_000, "ktime now minus 1 ns");
        sink.clear().unwrap();
        let r = sink.read().unwrap();
        assert_eq!((r.frames, r.flows.len(), r.latency.count), (0, 0, 0));
    }
}
