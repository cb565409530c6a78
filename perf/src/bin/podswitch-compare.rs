//! `podswitch-compare`: podswitchd beside its peers on one generator → DUT → sink
//! topology, interleaved rounds, medians and spreads, JSON and SVG charts. See
//! `perf::compare` for the topology and how CPU per packet is counted.
//!
//! ```text
//! sudo ./target/release/podswitch-compare --rounds 3 --seconds 2 --out perf/results
//! ```

use anyhow::{bail, Result};
use clap::Parser;
use perf::compare::{self, Dut, Meter, Row, SinkHook, Topo};
use perf::pktgen::plot::{self, Bar};
use serde::Serialize;
use std::path::PathBuf;

#[derive(Parser)]
#[command(version, about = "podswitchd beside the Linux bridge and router, Open vSwitch, dpdk-testpmd and XDP")]
struct Args {
    /// Rounds (every DUT once per round, in turn).
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// Seconds per trial.
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,
    /// DUTs to measure (default: every one installed).
    #[arg(long, value_delimiter = ',')]
    duts: Vec<String>,
    /// Only loads whose size is one of these (64, 1518, imix).
    #[arg(long, value_delimiter = ',')]
    sizes: Vec<String>,
    /// Only loads with one of these flow counts (1, 256).
    #[arg(long, value_delimiter = ',')]
    flows: Vec<u32>,
    /// Directory for compare.json and the charts.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Run the sink's veth receive (its XDP counting program) in a NAPI thread on the
    /// generator's core, instead of in the DUT core's softirq after each transmit.
    /// An experiment for two-core machines: it takes that work off the DUT core, but
    /// the sink then competes with the generator, and its work (process context on
    /// the generator's core) is never counted in CPU per packet (see perf/RESULTS.md).
    #[arg(long)]
    sink_on_generator_core: bool,
    /// Where the sink counts and drops frames: `xdp` (the cheapest receiver, but on a
    /// veth it copies each skb an AF_XDP DUT sends, which kernel DUTs' skbs are spared)
    /// or `tc` (tcx ingress after GRO: an skb receive as a pod's, the same for every
    /// DUT). See perf/RESULTS.md.
    #[arg(long, value_enum, default_value_t = SinkHook::Xdp)]
    sink: SinkHook,
}

/// One DUT under one load, over the rounds.
#[derive(Debug, Serialize)]
struct Summary {
    dut: &'static str,
    size: String,
    flows: u32,
    flat_mpps: (f64, f64, f64),
    paced_mpps: (f64, f64, f64),
    paced_gbit_s: f64,
    /// CPU per packet in the paced trial (offered 5% above what the DUT forwards).
    cpu_ns_per_pkt: f64,
    /// In the flat-out trial, where every DUT also pays for the frames it drops (some
    /// early and cheaply, some late).
    cpu_ns_per_pkt_flat: f64,
    dut_core_busy: f64,
    /// podswitchd's paced rate over this DUT's (L2 DUTs against podswitchd's L2, the
    /// Linux router against its routed mode).
    podswitch_rate_ratio: Option<f64>,
    /// podswitchd's CPU per packet over this DUT's.
    podswitch_cpu_ratio: Option<f64>,
}

/// (median, lowest, highest)
fn stats(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return (0.0, 0.0, 0.0);
    }
    let med = if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 };
    (med, v[0], v[n - 1])
}

fn summarise(rows: &[Row], duts: &[Dut], loads: &[compare::Load]) -> Vec<Summary> {
    let mut out: Vec<Summary> = Vec::new();
    for load in loads {
        for d in duts {
            let mine: Vec<&Row> = rows
                .iter()
                .filter(|r| r.dut == d.name() && r.load.size == load.size && r.load.flows == load.flows)
                .collect();
            if mine.is_empty() {
                continue;
            }
            out.push(Summary {
                dut: d.name(),
                size: load.size.clone(),
                flows: load.flows,
                flat_mpps: stats(mine.iter().map(|r| r.flat.mpps).collect()),
                paced_mpps: stats(mine.iter().map(|r| r.paced.mpps).collect()),
                paced_gbit_s: stats(mine.iter().map(|r| r.paced.gbit_s).collect()).0,
                cpu_ns_per_pkt: stats(mine.iter().map(|r| r.paced.cpu_ns_per_pkt).collect()).0,
                cpu_ns_per_pkt_flat: stats(mine.iter().map(|r| r.flat.cpu_ns_per_pkt).collect()).0,
                dut_core_busy: stats(mine.iter().map(|r| r.flat.dut_core_busy).collect()).0,
                podswitch_rate_ratio: None,
                podswitch_cpu_ratio: None,
            });
        }
    }
    let snapshot: Vec<(&'static str, String, u32, f64, f64)> =
        out.iter().map(|s| (s.dut, s.size.clone(), s.flows, s.paced_mpps.0, s.cpu_ns_per_pkt)).collect();
    for s in out.iter_mut() {
        let ours = compare::podswitch_for(s.dut);
        if s.dut == ours || s.dut.starts_with("podswitchd") {
            continue;
        }
        if let Some((_, _, _, rate, cpu)) =
            snapshot.iter().find(|(d, z, f, _, _)| *d == ours && *z == s.size && *f == s.flows)
        {
            s.podswitch_rate_ratio = Some(rate / s.paced_mpps.0.max(1e-9));
            // A DUT measured at no CPU at all (its baseline took out more than its run
            // cost) has no ratio.
            s.podswitch_cpu_ratio = (s.cpu_ns_per_pkt > 0.0).then(|| cpu / s.cpu_ns_per_pkt);
        }
    }
    out
}

fn main() -> Result<()> {
    let args = Args::parse();
    if !(0.5..=60.0).contains(&args.seconds) || args.rounds == 0 {
        bail!("--seconds must be 0.5 to 60 and --rounds at least 1");
    }
    let duts: Vec<Dut> = if args.duts.is_empty() {
        Dut::ALL.to_vec()
    } else {
        args.duts.iter().map(|d| Dut::parse(d)).collect::<Result<_>>()?
    };
    // The peers' packages, installed here if missing (as the README's test command
    // does for the project's own).
    for d in &duts {
        if let Some(pkgs) = d.missing() {
            println!("{}: installing {}", d.name(), pkgs.join(" "));
            perf::host::install(pkgs)?;
        }
    }
    let loads: Vec<_> = compare::loads()
        .into_iter()
        .filter(|l| args.sizes.is_empty() || args.sizes.contains(&l.size))
        .filter(|l| args.flows.is_empty() || args.flows.contains(&l.flows))
        .collect();
    let topo = Topo::new()?;
    let meter = Meter::new(&topo, args.seconds, args.sink, args.sink_on_generator_core)?;
    let mut rows = Vec::new();
    for round in 0..args.rounds {
        let base: Vec<_> = loads.iter().map(|l| meter.baseline(&topo, l)).collect::<Result<_>>()?;
        for &dut in &duts {
            for r in compare::round(&topo, &meter, dut, &loads, &base, round)? {
                println!(
                    "round {round} {:<18} {:>5} B {:>3} flows  flat {:>6.3} Mpps  paced {:>6.3} Mpps  CPU ns/pkt {:>7.1} paced, {:>7.1} flat  DUT core {:>3.0}%",
                    r.dut,
                    r.load.size,
                    r.load.flows,
                    r.flat.mpps,
                    r.paced.mpps,
                    r.paced.cpu_ns_per_pkt,
                    r.flat.cpu_ns_per_pkt,
                    r.flat.dut_core_busy * 100.0
                );
                rows.push(r);
            }
        }
    }
    let summary = summarise(&rows, &duts, &loads);
    println!(
        "\n{:<18} {:>5} {:>5} {:>16} {:>16} {:>8} {:>10} {:>11}",
        "DUT", "size", "flows", "flat Mpps", "paced Mpps", "Gbit/s", "CPU ns/pkt", "podswitchd"
    );
    for s in &summary {
        let ratio = match (s.podswitch_rate_ratio, s.podswitch_cpu_ratio) {
            (Some(r), Some(c)) => format!("{r:.2}x / {c:.2}x CPU"),
            (Some(r), None) => format!("{r:.2}x"),
            _ => String::new(),
        };
        println!(
            "{:<18} {:>5} {:>5} {:>16} {:>16} {:>8.3} {:>10.1} {}",
            s.dut,
            s.size,
            s.flows,
            format!("{:.3} ({:.2}-{:.2})", s.flat_mpps.0, s.flat_mpps.1, s.flat_mpps.2),
            format!("{:.3} ({:.2}-{:.2})", s.paced_mpps.0, s.paced_mpps.1, s.paced_mpps.2),
            s.paced_gbit_s,
            s.cpu_ns_per_pkt,
            ratio
        );
    }
    if let Some(dir) = &args.out {
        std::fs::create_dir_all(dir)?;
        std::fs::write(
            dir.join("compare.json"),
            serde_json::to_string_pretty(&serde_json::json!({
                "rounds": args.rounds, "seconds": args.seconds, "rows": rows, "summary": summary,
            }))?,
        )?;
        for load in &loads {
            let bars: Vec<Bar> = summary
                .iter()
                .filter(|s| s.size == load.size && s.flows == load.flows)
                .map(|s| Bar {
                    label: s.dut.to_string(),
                    value: s.paced_mpps.0,
                    spread: (s.paced_mpps.1, s.paced_mpps.2),
                })
                .collect();
            let title = format!("{}-byte frames, {} flow(s): Mpps delivered, generator paced", load.size, load.flows);
            std::fs::write(
                dir.join(format!("compare-{}-{}.svg", load.size, load.flows)),
                plot::bars(&title, "Mpps", &bars),
            )?;
            let cpu: Vec<Bar> = summary
                .iter()
                .filter(|s| s.size == load.size && s.flows == load.flows)
                .map(|s| Bar {
                    label: s.dut.to_string(),
                    value: s.cpu_ns_per_pkt,
                    spread: (s.cpu_ns_per_pkt, s.cpu_ns_per_pkt),
                })
                .collect();
            let title = format!("{}-byte frames, {} flow(s): CPU ns per packet forwarded", load.size, load.flows);
            std::fs::write(dir.join(format!("cpu-{}-{}.svg", load.size, load.flows)), plot::bars(&title, "ns", &cpu))?;
        }
        println!("\nwrote {}/compare.json and the charts", dir.display());
    }
    Ok(())
}
