//! `podswitch-pktgen`: a traffic generator and sink on a veth or NIC queue.
//!
//! `send` runs an XDP program that writes the frame's headers and returns `XDP_TX`
//! over a frame with BPF_PROG_TEST_RUN in live-frames mode: the kernel transmits each
//! copy out of the interface, 10+ Mpps from one core, flat out or paced to a rate. (The
//! headers are written on every run because the kernel recycles a frame's page after
//! the receiver is done with it, with whatever a router or VXLAN device wrote into it;
//! see `insn::rewrite_and_tx`.) `sink` attaches a
//! program that counts frames in a per-CPU array and drops them.
//!
//! This is the line-rate engine of the perf issue; AF_XDP replay, flows, IMIX, latency
//! and RFC 2544 searches come with that issue.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use std::time::{Duration, Instant};
use switch_core::sys::netdev;
use switch_core::wire::{checksum, EthernetAddress};
use switch_core::xdp::{bpf, insn, XDP_FLAGS_DRV_MODE};

#[derive(Parser)]
#[command(version, about = "podswitch traffic generator and sink")]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Send UDP/IPv4 frames out of an interface.
    Send {
        /// Interface to send from (its peer receives).
        #[arg(long)]
        dev: String,
        /// Stop after this many seconds.
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
        /// Frames per second; 0 sends flat out.
        #[arg(long, default_value_t = 0)]
        rate_pps: u64,
        /// Frame size in bytes without FCS (60 is a 64-byte frame on the wire).
        #[arg(long, default_value_t = 60)]
        size: usize,
        /// Destination MAC.
        #[arg(long, default_value = "02:00:00:00:00:02")]
        dst_mac: EthernetAddress,
        /// Source MAC.
        #[arg(long, default_value = "02:00:00:00:00:01")]
        src_mac: EthernetAddress,
        /// Source IPv4 address.
        #[arg(long, default_value = "198.18.0.1")]
        src_ip: std::net::Ipv4Addr,
        /// Destination IPv4 address.
        #[arg(long, default_value = "198.18.0.2")]
        dst_ip: std::net::Ipv4Addr,
        /// CPU to pin to.
        #[arg(long)]
        core: Option<usize>,
    },
    /// Count frames arriving on an interface (and drop them) for a while.
    Sink {
        /// Interface.
        #[arg(long)]
        dev: String,
        /// How long.
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
    },
}

/// A UDP/IPv4 frame of `size` bytes (`ips`, port 9 to 9), checksums right.
fn udp_frame(
    size: usize,
    src: EthernetAddress,
    dst: EthernetAddress,
    ips: (std::net::Ipv4Addr, std::net::Ipv4Addr),
) -> Result<Vec<u8>> {
    if !(42..=3000).contains(&size) {
        bail!("--size {size}: must be 42 to 3000 bytes");
    }
    let mut f = vec![0u8; size];
    f[0..6].copy_from_slice(&dst.0);
    f[6..12].copy_from_slice(&src.0);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    let ip_len = (size - 14) as u16;
    let ip = &mut f[14..34];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&ip_len.to_be_bytes());
    ip[6] = 0x40;
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&ips.0.octets());
    ip[16..20].copy_from_slice(&ips.1.octets());
    let c = checksum::checksum(ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let udp_len = ip_len - 20;
    f[34..36].copy_from_slice(&9u16.to_be_bytes());
    f[36..38].copy_from_slice(&9u16.to_be_bytes());
    f[38..40].copy_from_slice(&udp_len.to_be_bytes());
    Ok(f)
}

fn send(dev: &str, seconds: f64, rate: u64, frame: &[u8]) -> Result<u64> {
    let ifindex = netdev::ifindex(dev).with_context(|| format!("no interface {dev}"))?;
    // Ethernet, IPv4 and UDP headers: what forwarders edit.
    let prog = bpf::load_xdp(&insn::rewrite_and_tx(&frame[..42]), "pktgen_tx")?;
    // Flat out: runs of about a quarter second each (a run costs ~25 ms to set up and
    // tear down here, and cannot be stopped early), sized from the rate the last run
    // reached, and never much past the end: a receiver that pushes back slows the
    // kernel's sending, from 10+ Mpps to a fraction of one. Paced: 100 µs worth per run.
    let mut chunk = if rate == 0 { 1 << 16 } else { (rate / 10_000).clamp(1, 1 << 16) } as u32;
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(seconds);
    let mut sent = 0u64;
    while Instant::now() < end {
        if rate > 0 {
            let due = start + Duration::from_secs_f64(sent as f64 / rate as f64);
            while Instant::now() < due {
                std::hint::spin_loop();
            }
        }
        let t0 = Instant::now();
        let ns = bpf::test_run_live(&prog, ifindex, frame, chunk, 64)?;
        let took = t0.elapsed();
        if std::env::var_os("PKTGEN_DEBUG").is_some() {
            eprintln!("chunk {chunk}: {ns} ns/frame, call took {took:?}");
        }
        sent += u64::from(chunk);
        if rate == 0 {
            let per_s = f64::from(chunk) / took.as_secs_f64().max(1e-6);
            let left = end.saturating_duration_since(Instant::now()).as_secs_f64().min(0.25);
            chunk = (per_s * left).clamp(1024.0, f64::from(1u32 << 23)) as u32;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!("sent {sent} frames in {secs:.3} s: {:.3} Mpps", sent as f64 / secs / 1e6);
    Ok(sent)
}

fn sink(dev: &str, seconds: f64) -> Result<()> {
    let ifindex = netdev::ifindex(dev).with_context(|| format!("no interface {dev}"))?;
    let map = bpf::create_percpu_counters(1)?;
    let prog = bpf::load_xdp(&insn::count_and_drop(std::os::fd::AsRawFd::as_raw_fd(&map)), "pktgen_sink")?;
    let _link = bpf::link_xdp(&prog, ifindex, XDP_FLAGS_DRV_MODE)?;
    let start = Instant::now();
    let mut last = 0;
    while start.elapsed().as_secs_f64() < seconds {
        std::thread::sleep(Duration::from_secs(1));
        let n = bpf::read_percpu_counter(&map, 0)?;
        println!("{:>6.1} s  {:>12} frames  {:>8.3} Mpps", start.elapsed().as_secs_f64(), n, (n - last) as f64 / 1e6);
        last = n;
    }
    println!("received {last} frames");
    Ok(())
}

fn main() -> Result<()> {
    match Args::parse().cmd {
        Cmd::Send { dev, seconds, rate_pps, size, dst_mac, src_mac, src_ip, dst_ip, core } => {
            if let Some(c) = core {
                core_affinity::set_for_current(core_affinity::CoreId { id: c });
            }
            let frame = udp_frame(size, src_mac, dst_mac, (src_ip, dst_ip))?;
            send(&dev, seconds, rate_pps, &frame)?;
        }
        Cmd::Sink { dev, seconds } => sink(&dev, seconds)?,
    }
    Ok(())
}
