//! `podswitch-pktgen`: a traffic generator and sink on a veth or NIC queue.
//!
//! - `send`: UDP over IPv4/IPv6 (optionally in VXLAN) at a rate or flat out, fixed
//!   sizes, IMIX or a size list, 1 to 65,536 flows; 10+ Mpps from one core (an XDP
//!   program run over live frames, `perf::pktgen::gen`).
//! - `sink`: counts what arrives, per flow, with sequence checks (loss, reordering,
//!   duplicates) and a latency histogram, in XDP.
//! - `ndr`: RFC 2544 throughput search (NDR and PDR) between a generator interface and
//!   a sink interface, then latency at 10/50/90% of NDR.
//! - `replay` / `capture`: a pcap file sent and frames captured byte for byte, through
//!   AF_XDP.
//!
//! Tables for people; `--json` for scripts. Every run is bounded in time.

use anyhow::{bail, Context, Result};
use clap::{Args as ClapArgs, Parser, Subcommand};
use perf::pktgen::gen::{Generator, RunOpts};
use perf::pktgen::search::{self, Rig, SearchOpts, Trial};
use perf::pktgen::sink::{Received, Sink};
use perf::pktgen::stream::{Stream, Vxlan, IMIX};
use perf::pktgen::{afxdp, plot};
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;
use switch_core::wire::EthernetAddress;

#[derive(Parser)]
#[command(version, about = "podswitch traffic generator and sink")]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

/// What to send.
#[derive(ClapArgs, Clone)]
struct StreamArgs {
    /// Frame size on the wire, FCS included (64 to 3000).
    #[arg(long, default_value_t = 64, conflicts_with_all = ["imix", "sizes"])]
    size: usize,
    /// IMIX: 64, 594 and 1518-byte frames, 7:4:1.
    #[arg(long)]
    imix: bool,
    /// Sizes in turn, comma-separated (e.g. 64,128,1518).
    #[arg(long, value_delimiter = ',')]
    sizes: Vec<usize>,
    /// Flows (1 to 65,536), told apart by UDP source port.
    #[arg(long, default_value_t = 1)]
    flows: u32,
    /// Destination MAC.
    #[arg(long, default_value = "02:00:00:00:00:02")]
    dst_mac: EthernetAddress,
    /// Source MAC.
    #[arg(long, default_value = "02:00:00:00:00:01")]
    src_mac: EthernetAddress,
    /// Source address (IPv4 or IPv6).
    #[arg(long, default_value = "198.18.0.1")]
    src_ip: IpAddr,
    /// Destination address (same family).
    #[arg(long, default_value = "198.18.0.2")]
    dst_ip: IpAddr,
    /// UDP source port of the first flow.
    #[arg(long, default_value_t = 1024)]
    src_port: u16,
    /// UDP destination port.
    #[arg(long, default_value_t = 9)]
    dst_port: u16,
    /// Encapsulate in VXLAN with this VNI (IPv4 underlay; the --outer-* options).
    #[arg(long)]
    vxlan_vni: Option<u32>,
    /// Outer source MAC.
    #[arg(long, default_value = "02:00:00:00:01:01")]
    outer_src_mac: EthernetAddress,
    /// Outer destination MAC.
    #[arg(long, default_value = "02:00:00:00:01:02")]
    outer_dst_mac: EthernetAddress,
    /// Sending VTEP.
    #[arg(long, default_value = "198.19.0.1")]
    outer_src_ip: Ipv4Addr,
    /// Receiving VTEP.
    #[arg(long, default_value = "198.19.0.2")]
    outer_dst_ip: Ipv4Addr,
}

impl StreamArgs {
    fn stream(&self) -> Result<Stream> {
        let sizes = if self.imix {
            IMIX.to_vec()
        } else if !self.sizes.is_empty() {
            self.sizes.clone()
        } else {
            vec![self.size]
        };
        let s = Stream {
            src_mac: self.src_mac,
            dst_mac: self.dst_mac,
            src_ip: self.src_ip,
            dst_ip: self.dst_ip,
            src_port: self.src_port,
            dst_port: self.dst_port,
            flows: self.flows,
            sizes,
            vxlan: self.vxlan_vni.map(|vni| Vxlan {
                src_mac: self.outer_src_mac,
                dst_mac: self.outer_dst_mac,
                src: self.outer_src_ip,
                dst: self.outer_dst_ip,
                vni,
            }),
        };
        s.validate()?;
        Ok(s)
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// Send frames out of an interface (its peer receives them).
    Send {
        /// Interface to send from.
        #[arg(long)]
        dev: String,
        /// Network namespace of the interface (default: this one).
        #[arg(long)]
        netns: Option<String>,
        #[command(flatten)]
        stream: StreamArgs,
        /// Stop after this many seconds (at most 3600).
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
        /// Stop after this many frames.
        #[arg(long)]
        count: Option<u64>,
        /// Frames per second; 0 sends flat out.
        #[arg(long, default_value_t = 0)]
        rate_pps: u64,
        /// Frames the kernel runs before transmitting them (lower: less latency added).
        #[arg(long, default_value_t = 64)]
        batch: u32,
        /// CPU to pin to.
        #[arg(long)]
        core: Option<usize>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Count frames arriving on an interface (and drop them).
    Sink {
        /// Interface.
        #[arg(long)]
        dev: String,
        /// Network namespace of the interface.
        #[arg(long)]
        netns: Option<String>,
        /// How long.
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
        /// Count frames only (no flows, sequences or latency): the cheapest sink, to
        /// measure the generator's own ceiling.
        #[arg(long)]
        count_only: bool,
        /// With --count-only: count at tc ingress (tcx) instead of XDP, each frame as
        /// the skb a pod's stack would receive (on a veth, turn GRO on first: `ethtool
        /// -K DEV gro on`, or frames sent with XDP do not arrive).
        #[arg(long, requires = "count_only")]
        tc: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// RFC 2544 throughput search (NDR, PDR) and latency at 10/50/90% of NDR.
    Ndr {
        /// Generator interface.
        #[arg(long)]
        tx_dev: String,
        /// Its namespace.
        #[arg(long)]
        tx_netns: Option<String>,
        /// Sink interface.
        #[arg(long)]
        rx_dev: String,
        /// Its namespace.
        #[arg(long)]
        rx_netns: Option<String>,
        #[command(flatten)]
        stream: StreamArgs,
        /// Seconds per trial.
        #[arg(long, default_value_t = 2.0)]
        trial_seconds: f64,
        /// Highest rate to try (default: what a flat-out trial reaches).
        #[arg(long)]
        max_pps: Option<u64>,
        /// Stop when the bounds are this close, as a fraction of the upper one.
        #[arg(long, default_value_t = 0.01)]
        resolution: f64,
        /// PDR loss ratio threshold.
        #[arg(long, default_value_t = 0.005)]
        pdr_loss: f64,
        /// Searches to run (median reported).
        #[arg(long, default_value_t = 1)]
        rounds: u32,
        /// CPU to pin the generator to.
        #[arg(long)]
        core: Option<usize>,
        /// Write JSON here, and an SVG latency CDF beside it (same name, .svg).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Send the frames of a pcap file, byte for byte, through AF_XDP.
    Replay {
        /// Interface.
        #[arg(long)]
        dev: String,
        /// Its namespace.
        #[arg(long)]
        netns: Option<String>,
        /// The capture (Ethernet).
        #[arg(long)]
        pcap: PathBuf,
        /// Times through the file.
        #[arg(long, default_value_t = 1)]
        loops: u32,
        /// Frames per second; 0 as fast as the socket takes them.
        #[arg(long, default_value_t = 0)]
        rate_pps: u64,
        /// Stop after this many seconds in any case.
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Capture frames arriving on an interface into a pcap file, through AF_XDP.
    Capture {
        /// Interface.
        #[arg(long)]
        dev: String,
        /// Its namespace.
        #[arg(long)]
        netns: Option<String>,
        /// The pcap file to write.
        #[arg(short = 'w', long)]
        write: PathBuf,
        /// Stop after this many frames.
        #[arg(long, default_value_t = 1000)]
        count: u64,
        /// Stop after this many seconds.
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
    },
}

fn print_received(r: &Received, seconds: f64) {
    println!(
        "received {} frames ({} bytes) in {seconds:.1} s, {} signed in {} flows",
        r.frames,
        r.bytes,
        r.signed,
        r.flows.len()
    );
    if r.signed > 0 {
        println!(
            "sequence: {} missing, {} duplicates, {} reordered, {} late",
            r.sum(|f| f.missing()),
            r.sum(|f| f.duplicates),
            r.sum(|f| f.reordered),
            r.sum(|f| f.late)
        );
        let l = &r.latency;
        println!(
            "latency ns: min {}  p50 {}  p99 {}  p99.9 {}  max {}",
            l.min_ns, l.p50_ns, l.p99_ns, l.p999_ns, l.max_ns
        );
    }
}

fn trial_line(t: &Trial) -> String {
    format!(
        "offered {:>10}  sent {:>9.3} Mpps  lost {:>9} ({:.4}%)  p50 {} ns",
        if t.offered_pps == 0 { "flat out".to_string() } else { format!("{:.3} Mpps", t.offered_pps as f64 / 1e6) },
        t.sent.rate_pps / 1e6,
        t.lost,
        t.loss_ratio * 100.0,
        t.latency.p50_ns
    )
}

fn main() -> Result<()> {
    match Args::parse().cmd {
        Cmd::Send { dev, netns, stream, seconds, count, rate_pps, batch, core, json } => {
            let g = Generator::new(&stream.stream()?)?;
            let opts = RunOpts { rate_pps, count, seconds, batch, progress: !json, core };
            let sent = g.run(&dev, netns.as_deref(), &opts)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&sent)?);
            } else {
                println!(
                    "sent {} frames in {:.3} s: {:.3} Mpps, {:.3} Gbit/s",
                    sent.frames,
                    sent.seconds,
                    sent.rate_pps / 1e6,
                    sent.gbit_s
                );
            }
        }
        Cmd::Sink { dev, netns, seconds, count_only, tc, json } => {
            if !(seconds > 0.0 && seconds <= 86_400.0) {
                bail!("--seconds {seconds}: give 0 to 86400");
            }
            let sink = if tc {
                Sink::attach_counting_tc(&dev, netns.as_deref())?
            } else if count_only {
                Sink::attach_counting(&dev, netns.as_deref())?
            } else {
                Sink::attach(&dev, netns.as_deref())?
            };
            let start = std::time::Instant::now();
            let mut last = 0;
            while start.elapsed().as_secs_f64() < seconds {
                std::thread::sleep(Duration::from_secs_f64((seconds - start.elapsed().as_secs_f64()).clamp(0.0, 1.0)));
                let n = sink.read()?.frames;
                if !json {
                    eprintln!(
                        "{:>6.1} s  {:>12} frames  {:>8.3} Mpps",
                        start.elapsed().as_secs_f64(),
                        n,
                        (n - last) as f64 / 1e6
                    );
                }
                last = n;
            }
            let r = sink.read()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                print_received(&r, seconds);
            }
        }
        Cmd::Ndr {
            tx_dev,
            tx_netns,
            rx_dev,
            rx_netns,
            stream,
            trial_seconds,
            max_pps,
            resolution,
            pdr_loss,
            rounds,
            core,
            out,
            json,
        } => {
            if !(0.0..1.0).contains(&pdr_loss) || !(0.0001..0.5).contains(&resolution) {
                bail!("--pdr-loss must be in [0, 1) and --resolution in [0.0001, 0.5)");
            }
            let g = Generator::new(&stream.stream()?)?;
            let sink = Sink::attach(&rx_dev, rx_netns.as_deref())?;
            let rig = Rig { gen: &g, tx_dev: &tx_dev, tx_netns: tx_netns.as_deref(), sink: &sink, batch: 64, core };
            let opts = SearchOpts { trial_seconds, max_pps, resolution, pdr_loss, rounds };
            let mut log = |t: &Trial| {
                if !json {
                    eprintln!("{}", trial_line(t));
                }
            };
            let s = search::search(&rig, &opts, &mut log)?;
            let mean = g.stream().mean_wire();
            if let Some(path) = &out {
                std::fs::write(path, serde_json::to_string_pretty(&s)?)
                    .with_context(|| format!("writing {}", path.display()))?;
                let series: Vec<_> =
                    s.latency.iter().map(|(f, t)| (format!("{:.0}% of NDR", f * 100.0), t.latency.cdf())).collect();
                std::fs::write(path.with_extension("svg"), plot::cdf("Latency at fractions of NDR", &series))?;
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&s)?);
            } else {
                println!(
                    "NDR {:.3} Mpps ({:.3} Gbit/s)   PDR ({}% loss) {:.3} Mpps ({:.3} Gbit/s)",
                    s.ndr_pps / 1e6,
                    s.ndr_pps * mean * 8.0 / 1e9,
                    pdr_loss * 100.0,
                    s.pdr_pps / 1e6,
                    s.pdr_pps * mean * 8.0 / 1e9
                );
                for (f, t) in &s.latency {
                    let l = &t.latency;
                    println!(
                        "latency at {:>3.0}% of NDR: min {} p50 {} p99 {} p99.9 {} max {} ns",
                        f * 100.0,
                        l.min_ns,
                        l.p50_ns,
                        l.p99_ns,
                        l.p999_ns,
                        l.max_ns
                    );
                }
            }
        }
        Cmd::Replay { dev, netns, pcap, loops, rate_pps, seconds, json } => {
            if !(seconds > 0.0 && seconds <= 3600.0) {
                bail!("--seconds {seconds}: give 0 to 3600");
            }
            let frames = afxdp::read_pcap(&pcap)?;
            let mut link = afxdp::XskLink::open(&dev, netns.as_deref(), false)?;
            let r = afxdp::replay(&mut link, &frames, loops, rate_pps, seconds)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                println!("replayed {} frames ({} bytes) in {:.3} s", r.frames, r.bytes, r.seconds);
            }
        }
        Cmd::Capture { dev, netns, write, count, seconds } => {
            if !(seconds > 0.0 && seconds <= 3600.0) {
                bail!("--seconds {seconds}: give 0 to 3600");
            }
            let mut link = afxdp::XskLink::open(&dev, netns.as_deref(), true)?;
            // Ready: a script may start sending now.
            eprintln!("capturing on {dev}");
            let frames = afxdp::capture(&mut link, count, seconds);
            afxdp::write_pcap(&write, &frames)?;
            println!("captured {} frames into {}", frames.len(), write.display());
        }
    }
    Ok(())
}
