//! Runs one pipeline bench case for a set number of batches, for an instruction count
//! under callgrind: on a shared machine whose wall-clock times vary by half from one
//! run to the next, the instructions a batch takes do not.
//!
//! ```text
//! cargo build --release -p perf --example instructions
//! for n in 1000 2000; do
//!   valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!     target/release/examples/instructions ipv4_connected_1_flow $n
//! done
//! ```
//!
//! The difference between the two totals, over 1,000, is the instructions per batch
//! of 64 (set-up and warm-up cancel out). Cases: the L2 bench's `l2_known_dst`,
//! `l2_known_dst_64_flows` and `l2_unknown_dst_flood_2_ports`, the routed bench's
//! connected cases (`perf::l3_connected_cases`) and the tunnel bench's
//! (`perf::tunnel_cases`). Results: perf/RESULTS.md.

use perf::{flow_dst, flow_src, frame, l3_connected_cases, routed_worker, tunnel_cases, worker, KNOWN, SRC, UNKNOWN};

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(case), Some(batches)) = (args.next(), args.next().and_then(|n| n.parse::<u64>().ok())) else {
        eprintln!("usage: instructions CASE BATCHES (CASE: an l2_ case, an l3 connected case or a tunnel case)");
        std::process::exit(2);
    };
    let l2 = case.starts_with("l2_");
    let mut w = if l2 {
        match case.as_str() {
            "l2_known_dst" => worker(vec![frame(KNOWN, SRC, 64); 64]),
            "l2_known_dst_64_flows" => worker((0..64).map(|i| frame(flow_dst(i), flow_src(i), 64)).collect()),
            "l2_unknown_dst_flood_2_ports" => worker(vec![frame(UNKNOWN, SRC, 64); 64]),
            _ => {
                eprintln!("unknown case {case}");
                std::process::exit(2);
            }
        }
    } else if let Some((_, frames)) = l3_connected_cases().into_iter().find(|(name, _)| *name == case) {
        routed_worker(frames, &[])
    } else if let Some((_, w)) = tunnel_cases().into_iter().find(|(name, _)| *name == case) {
        w
    } else {
        eprintln!("unknown case {case}");
        std::process::exit(2);
    };
    // Warm-up: the first batches resolve and fill caches.
    for _ in 0..100 {
        w.poll_once(0);
    }
    let before = w.stats().packets.get();
    for _ in 0..batches {
        w.poll_once(0);
    }
    let s = w.stats();
    assert_eq!(s.packets.get() - before, 64 * batches, "{case}: every batch full");
    if !l2 {
        assert!(perf::assert_all_routed(&case, &w));
    }
    println!("{case}: {batches} batches of 64");
}
