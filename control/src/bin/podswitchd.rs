//! `podswitchd`: the podswitch daemon.

use anyhow::{Context, Result};
use clap::Parser;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A userspace, poll-mode virtual switch for Kubernetes nodes.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Configuration file (TOML).
    #[arg(long, short, required_unless_present = "demo")]
    config: Option<PathBuf>,
    /// Build three pods in network namespaces, switch pings between them, clean up.
    #[arg(long, conflicts_with = "config")]
    demo: bool,
    /// CPU for the demo's worker (default: the last one).
    #[arg(long, requires = "demo")]
    demo_core: Option<usize>,
}

fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}

fn main() {
    // Errors are for the operator: one line with the whole chain, no backtrace.
    if let Err(e) = run() {
        eprintln!("podswitchd: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let args = Args::parse();
    if args.demo {
        init_logging("warn");
        return control::demo::run(args.demo_core);
    }
    let path = args.config.context("--config FILE is required")?;
    let cfg = control::config::Config::load(&path)?;
    init_logging(&cfg.log_level);

    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone())?;
    }
    let daemon = control::daemon::Daemon::start(&cfg)?;
    // Relaxed: the signal handler only sets the flag.
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50));
    }
    tracing::info!("stopping");
    let report = daemon.stop();
    for line in report.to_string().lines() {
        tracing::info!("{line}");
    }
    tracing::info!("stopped");
    Ok(())
}
