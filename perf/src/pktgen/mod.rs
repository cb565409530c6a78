//! `podswitch-pktgen`'s engines, for its binary, the benchmarks and the tests.
//!
//! - [`stream`]: what is sent — UDP over IPv4/IPv6, optionally in VXLAN, sizes (fixed,
//!   IMIX, a list), flows, and the signature every frame carries.
//! - [`gen`]: the line-rate generator, an XDP program run over live frames.
//! - [`sink`]: the line-rate sink, an XDP program that counts, checks sequences and
//!   measures latency.
//! - [`afxdp`]: AF_XDP for arbitrary content: pcap replay and capture.
//! - [`search`]: RFC 2544 throughput search (NDR, PDR) and latency at fractions of NDR.
//! - [`plot`]: SVG charts of results.

pub mod afxdp;
pub mod gen;
pub mod plot;
pub mod search;
pub mod sink;
pub mod stream;

use anyhow::{bail, Result};
use std::os::fd::AsRawFd;

/// Moves the calling thread into the network namespace `/run/netns/NAME` (as `ip netns
/// exec` would); other threads stay where they are.
pub fn enter_netns(name: &str) -> Result<()> {
    let path = format!("/run/netns/{name}");
    let f = std::fs::File::open(&path).map_err(|e| anyhow::anyhow!("network namespace {name}: {path}: {e}"))?;
    // SAFETY: setns on a namespace descriptor we hold open only changes this thread's
    // network namespace.
    #[allow(unsafe_code)]
    let r = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    if r != 0 {
        bail!("entering network namespace {name}: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// Runs `f` on a thread in namespace `netns` (or this one), returning its result.
pub fn in_netns<R: Send + 'static>(netns: Option<&str>, f: impl FnOnce() -> Result<R> + Send + 'static) -> Result<R> {
    let ns = netns.map(str::to_string);
    std::thread::spawn(move || {
        if let Some(ns) = &ns {
            enter_netns(ns)?;
        }
        f()
    })
    .join()
    .map_err(|_| anyhow::anyhow!("a thread working in a namespace panicked"))?
}
