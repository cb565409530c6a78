//! RFC 2544 throughput: the highest rate a device forwards with no loss (NDR) and with
//! a loss ratio at most a threshold (PDR), by binary search over trials of a set
//! duration; then latency at 10%, 50% and 90% of NDR.
//!
//! Like FD.io CSIT's MLRsearch, every trial narrows the bounds of both searches: a
//! trial is an upper bound for NDR as soon as it loses a frame, and a lower bound for
//! PDR whenever its loss ratio is within the threshold, so the PDR search starts from
//! what the NDR search already learned. A search ends when its bounds are within the
//! resolution (relative to the upper bound). The whole search can be repeated
//! (`rounds`) and is reported per round and as the median.

use super::gen::{Generator, RunOpts, Sent};
use super::sink::{Latency, Sink};
use anyhow::Result;
use serde::Serialize;
use std::time::Duration;

/// How long the sink waits after a trial for frames still in flight.
const DRAIN: Duration = Duration::from_millis(200);

/// The devices a search drives.
pub struct Rig<'a> {
    /// The generator.
    pub gen: &'a Generator,
    /// Interface it sends out of.
    pub tx_dev: &'a str,
    /// Its namespace.
    pub tx_netns: Option<&'a str>,
    /// The sink at the far end.
    pub sink: &'a Sink,
    /// Frames per kernel batch.
    pub batch: u32,
    /// CPU the generator runs on.
    pub core: Option<usize>,
}

/// How to search.
#[derive(Debug, Clone, Copy)]
pub struct SearchOpts {
    /// Duration of each trial.
    pub trial_seconds: f64,
    /// Upper bound of the search, frames per second (`None`: the rate of a flat-out
    /// trial, the generator's own limit).
    pub max_pps: Option<u64>,
    /// Bounds closer than this fraction of the upper bound end a search.
    pub resolution: f64,
    /// The PDR's loss ratio threshold.
    pub pdr_loss: f64,
    /// Searches to run.
    pub rounds: u32,
}

/// One trial.
#[derive(Debug, Clone, Serialize)]
pub struct Trial {
    /// Rate asked for, frames per second (0: flat out).
    pub offered_pps: u64,
    /// What was sent.
    pub sent: Sent,
    /// Distinct frames of the stream that arrived.
    pub received: u64,
    /// Frames sent and not received.
    pub lost: u64,
    /// `lost / sent`.
    pub loss_ratio: f64,
    /// Frames received twice or more.
    pub duplicates: u64,
    /// Frames received after a later frame of their flow.
    pub reordered: u64,
    /// Latency of the frames received.
    pub latency: Latency,
}

/// One round's results.
#[derive(Debug, Clone, Serialize)]
pub struct Round {
    /// Highest rate without loss (`None`: every trial lost frames).
    pub ndr: Option<Trial>,
    /// Highest rate within the PDR threshold.
    pub pdr: Option<Trial>,
    /// Every trial, in order.
    pub trials: Vec<Trial>,
}

/// A search's results.
#[derive(Debug, Clone, Serialize)]
pub struct Search {
    /// Each round.
    pub rounds: Vec<Round>,
    /// Median NDR over the rounds, frames per second sent.
    pub ndr_pps: f64,
    /// Median PDR over the rounds, frames per second sent.
    pub pdr_pps: f64,
    /// The PDR threshold used.
    pub pdr_loss: f64,
    /// Trials at 10%, 50% and 90% of the median NDR, for their latency.
    pub latency: Vec<(f64, Trial)>,
}

/// Runs one trial at `rate_pps` (0: flat out).
pub fn trial(rig: &Rig, rate_pps: u64, seconds: f64) -> Result<Trial> {
    rig.sink.clear()?;
    let opts = RunOpts { rate_pps, count: None, seconds, batch: rig.batch, progress: false, core: rig.core };
    let sent = rig.gen.run(rig.tx_dev, rig.tx_netns, &opts)?;
    std::thread::sleep(DRAIN);
    let r = rig.sink.read()?;
    let flows = rig.gen.stream().flows as usize;
    let ours = &r.flows[..r.flows.len().min(flows)];
    let received: u64 = ours.iter().map(|f| f.unique()).sum();
    let lost = sent.frames.saturating_sub(received);
    Ok(Trial {
        offered_pps: rate_pps,
        sent,
        received,
        lost,
        loss_ratio: if sent.frames > 0 { lost as f64 / sent.frames as f64 } else { 0.0 },
        duplicates: ours.iter().map(|f| f.duplicates).sum(),
        reordered: ours.iter().map(|f| f.reordered + f.late).sum(),
        latency: r.latency,
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The binary search for the highest offered rate whose trial `passes`, between the
/// bounds the trials so far give, adding its trials to `trials`.
fn bisect(
    rig: &Rig,
    opts: &SearchOpts,
    max: u64,
    trials: &mut Vec<Trial>,
    passes: impl Fn(&Trial) -> bool,
    log: &mut dyn FnMut(&Trial),
) -> Result<Option<Trial>> {
    let best = |trials: &[Trial]| trials.iter().filter(|t| passes(t)).max_by_key(|t| t.offered_pps).cloned();
    let lowest_fail = |trials: &[Trial]| trials.iter().filter(|t| !passes(t)).map(|t| t.offered_pps).min();
    if best(trials).is_none() && lowest_fail(trials).is_none() {
        let t = trial(rig, max, opts.trial_seconds)?;
        log(&t);
        trials.push(t);
    }
    loop {
        let lo = best(trials).map_or(0, |t| t.offered_pps);
        let Some(hi) = lowest_fail(trials) else { return Ok(best(trials)) };
        let step = ((hi as f64 * opts.resolution) as u64).max(1);
        if hi <= lo + step {
            return Ok(best(trials));
        }
        let t = trial(rig, lo + (hi - lo) / 2, opts.trial_seconds)?;
        log(&t);
        trials.push(t);
    }
}

/// Searches NDR and PDR, then measures latency at fractions of NDR. `log` sees each
/// trial as it ends.
pub fn search(rig: &Rig, opts: &SearchOpts, log: &mut dyn FnMut(&Trial)) -> Result<Search> {
    let max = match opts.max_pps {
        Some(m) => m,
        None => {
            let t = trial(rig, 0, opts.trial_seconds)?;
            log(&t);
            t.sent.rate_pps.max(1.0) as u64
        }
    };
    let mut rounds = Vec::new();
    for _ in 0..opts.rounds.max(1) {
        let mut trials = Vec::new();
        let ndr = bisect(rig, opts, max, &mut trials, |t| t.lost == 0, log)?;
        let pdr_loss = opts.pdr_loss;
        let pdr = bisect(rig, opts, max, &mut trials, |t| t.loss_ratio <= pdr_loss, log)?;
        rounds.push(Round { ndr, pdr, trials });
    }
    let ndr_pps = median(rounds.iter().map(|r| r.ndr.as_ref().map_or(0.0, |t| t.sent.rate_pps)).collect());
    let pdr_pps = median(rounds.iter().map(|r| r.pdr.as_ref().map_or(0.0, |t| t.sent.rate_pps)).collect());
    let mut latency = Vec::new();
    if ndr_pps > 0.0 {
        for f in [0.1, 0.5, 0.9] {
            let t = trial(rig, ((ndr_pps * f) as u64).max(1), opts.trial_seconds)?;
            log(&t);
            latency.push((f, t));
        }
    }
    Ok(Search { rounds, ndr_pps, pdr_pps, pdr_loss: opts.pdr_loss, latency })
}

#[cfg(test)]
mod tests {
    #[test]
    fn median_of_even_and_odd_counts() {
        assert_eq!(super::median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(super::median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(super::median(vec![]), 0.0);
    }
}
