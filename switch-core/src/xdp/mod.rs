//! The XDP program that steers a port's frames into its AF_XDP sockets.
//!
//! Built from BPF instructions in Rust (no clang, no libbpf, no ELF), loaded with
//! `BPF_PROG_LOAD`, and attached with `BPF_LINK_CREATE` so that the kernel detaches it
//! when the link's descriptor closes — including when the daemon crashes.
//!
//! The program, per frame: find the interface's slots in the XSKMAP, look up the
//! socket for the frame's rx queue and redirect to it; if there is none, return the
//! fallback action (pass, for uplinks whose other traffic belongs to the kernel; drop,
//! for pod ports).
//!
//! The uplink has a program of its own ([`XdpShared::attach_uplink`]): it steers only
//! VXLAN to this node's VTEP, or IP to its pod CIDRs, and passes the rest to the
//! kernel. It redirects into the same XSKMAP.
//!
//! One program and one XSKMAP serve every port of a daemon ([`XdpShared`]): that is
//! what makes attaching a port cheap. Native XDP programs enter the kernel's XDP
//! dispatcher, and every program the dispatcher has not seen yet costs a
//! `synchronize_rcu()` on attach and on detach (8–20 ms measured here, when each port
//! had a program of its own); attaching a program already in it costs 20 µs.
#![allow(unsafe_code)]

pub mod asm;
pub mod bpf;
pub mod insn;

use crate::sys;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

pub use bpf::BpfError;

/// How the program is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum XdpMode {
    /// Native (driver) mode; fall back to generic with a warning if the driver refuses.
    #[default]
    NativeOrGeneric,
    /// Native mode only.
    Native,
    /// Generic (skb) mode only.
    Generic,
}

/// What the program does with a frame for a queue that has no socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// Hand it to the kernel's stack.
    Pass,
    /// Drop it.
    Drop,
}

/// The attach mode that took effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachedMode {
    /// Driver mode.
    Native,
    /// skb mode.
    Generic,
}

/// `XDP_FLAGS_SKB_MODE`: generic attach.
pub const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
/// `XDP_FLAGS_DRV_MODE`: native attach.
pub const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;

/// One redirect program for up to `ports` interfaces of `queues` queues each: interface
/// `slot`'s queue `q` is XSKMAP entry `slot * queues + q`. The program finds
/// `slot * queues` by the frame's ifindex in an [`IfIndexMap`] (an array load) or, for
/// an interface whose entry there another one holds, in a hash of ifindex → `slot *
/// queues` (29 ns a frame more, measured with BPF_PROG_TEST_RUN; perf/RESULTS.md).
#[derive(Debug)]
pub struct XdpShared {
    prog: OwnedFd,
    index: IfIndexMap,
    ports: OwnedFd,
    xsks: OwnedFd,
    slots: u32,
    queues: u32,
}

/// The array in front of [`XdpShared`]'s hash: entry `ifindex & mask` holds
/// `ifindex << 32 | first XSKMAP slot` of the interface that claimed it, 0 if none.
/// Control claims and releases entries with atomic compare-and-swaps on the array's
/// mapping, while the program reads them with one 8-byte load: it sees an entry
/// whole or not at all. Interfaces come and go with pods and their indices climb,
/// so entries are direct-mapped, twice as many as the interfaces the program serves;
/// an interface whose entry is taken is found through the hash.
#[derive(Debug)]
pub(crate) struct IfIndexMap {
    fd: OwnedFd,
    area: sys::Mapping,
    mask: u32,
}

// SAFETY: the mapping is shared memory that this process touches only through the
// atomic operations of `entry`; which thread does so, or unmaps it, does not matter.
unsafe impl Send for IfIndexMap {}
// SAFETY: as above: every access from any thread is atomic.
unsafe impl Sync for IfIndexMap {}

impl IfIndexMap {
    /// An index of at least `entries` entries (a power of two, 64 at least).
    pub(crate) fn new(entries: u32) -> Result<IfIndexMap, BpfError> {
        let n = entries.max(64).next_power_of_two();
        let (fd, area) = bpf::create_mapped_u64_array("podswitch_ifidx", n)?;
        Ok(IfIndexMap { fd, area, mask: n - 1 })
    }

    /// What the program needs to read it.
    pub(crate) fn insn(&self) -> insn::IfIndex {
        insn::IfIndex { fd: self.fd.as_raw_fd(), mask: self.mask }
    }

    fn entry(&self, ifindex: u32) -> &core::sync::atomic::AtomicU64 {
        let i = (ifindex & self.mask) as usize;
        debug_assert!((i + 1) * 8 <= self.area.len());
        // SAFETY: entry i of mask + 1 lies inside the mapping (it holds mask + 1 u64s,
        // rounded up to pages), 8-aligned (the mapping starts on a page); AtomicU64 has
        // u64's layout, and this process reads and writes the memory only through it.
        unsafe { &*self.area.as_ptr().cast::<core::sync::atomic::AtomicU64>().add(i) }
    }

    /// Points `ifindex`'s entry at `first`, if no interface holds it; true if it did.
    pub(crate) fn claim(&self, ifindex: u32, first: u32) -> bool {
        use core::sync::atomic::Ordering;
        let v = u64::from(ifindex) << 32 | u64::from(first);
        self.entry(ifindex).compare_exchange(0, v, Ordering::AcqRel, Ordering::Relaxed).is_ok()
    }

    /// Empties `ifindex`'s entry if it is this claim's.
    pub(crate) fn release(&self, ifindex: u32, first: u32) {
        use core::sync::atomic::Ordering;
        let v = u64::from(ifindex) << 32 | u64::from(first);
        let _ = self.entry(ifindex).compare_exchange(v, 0, Ordering::AcqRel, Ordering::Relaxed);
    }
}

impl XdpShared {
    /// Loads the program and its maps.
    pub fn new(slots: u32, queues: u32, fallback: Fallback) -> Result<XdpShared, BpfError> {
        let (slots, queues) = (slots.max(1), queues.max(1));
        let index = IfIndexMap::new(slots.saturating_mul(2))?;
        let ports = bpf::create_u32_hash(slots, "podswitch_ports")?;
        let xsks = bpf::create_xskmap(slots * queues)?;
        let insns = insn::redirect_by_ifindex(index.insn(), ports.as_raw_fd(), xsks.as_raw_fd(), queues, fallback);
        let prog = bpf::load_xdp(&insns, "podswitch_xsk")?;
        Ok(XdpShared { prog, index, ports, xsks, slots, queues })
    }

    /// Attaches the program to `ifname` as `slot` (each interface its own slot, below
    /// `slots`). Sockets are inserted afterwards with [`XdpMember::insert`].
    pub fn attach(self: &std::sync::Arc<Self>, ifname: &str, slot: u32, mode: XdpMode) -> Result<XdpMember, XdpError> {
        let ifindex = lookup(ifname)?;
        let wrap = |source| XdpError::Bpf { ifname: ifname.to_string(), source };
        if slot >= self.slots {
            return Err(wrap(BpfError {
                what: "choosing the interface's XSKMAP slots",
                source: io::Error::from_raw_os_error(libc::E2BIG),
                hint: format!(": slot {slot} is beyond the {} the program was made for", self.slots),
            }));
        }
        bpf::map_update(&self.ports, ifindex, slot * self.queues).map_err(wrap)?;
        // Before the program is on the interface: no frame of it reads the entry yet.
        self.index.claim(ifindex, slot * self.queues);
        // Dropped on failure below, which takes the entries out again.
        let mut member = XdpMember {
            link: None,
            shared: std::sync::Arc::clone(self),
            ifindex,
            slot,
            ifname: ifname.to_string(),
            mode: AttachedMode::Native,
        };
        let (link, mode) = attach_link(&self.prog, ifname, ifindex, mode)?;
        member.link = Some(link);
        member.mode = mode;
        Ok(member)
    }
}

impl XdpShared {
    /// Attaches a program of the uplink's own to `ifname` as `slot`: it steers to the
    /// switch only what `filter` selects and passes everything else to the kernel, so
    /// the node keeps its own traffic (and keeps it when the daemon stops: the link
    /// goes with the process). Its sockets share this program's XSKMAP.
    pub fn attach_uplink(
        self: &std::sync::Arc<Self>,
        ifname: &str,
        slot: u32,
        mode: XdpMode,
        filter: &insn::UplinkFilter,
    ) -> Result<XdpMember, XdpError> {
        let ifindex = lookup(ifname)?;
        let wrap = |source| XdpError::Bpf { ifname: ifname.to_string(), source };
        if slot >= self.slots {
            return Err(wrap(BpfError {
                what: "choosing the uplink's XSKMAP slots",
                source: io::Error::from_raw_os_error(libc::E2BIG),
                hint: format!(": slot {slot} is beyond the {} the program was made for", self.slots),
            }));
        }
        let insns = insn::uplink_redirect(filter, self.xsks.as_raw_fd(), slot * self.queues, self.queues);
        let prog = bpf::load_xdp(&insns, "podswitch_uplink").map_err(wrap)?;
        let (link, mode) = attach_link(&prog, ifname, ifindex, mode)?;
        Ok(XdpMember {
            link: Some(link),
            shared: std::sync::Arc::clone(self),
            ifindex,
            slot,
            ifname: ifname.to_string(),
            mode,
        })
    }
}

/// The index of `ifname`: [`XdpError::NoInterface`] if it does not exist.
fn lookup(ifname: &str) -> Result<u32, XdpError> {
    sys::netdev::ifindex(ifname).map_err(|source| match source.raw_os_error() {
        Some(libc::ENODEV) => XdpError::NoInterface { ifname: ifname.to_string(), source },
        _ => XdpError::Bpf { ifname: ifname.to_string(), source: BpfError::new("looking up the interface", source) },
    })
}

/// One interface's share of an [`XdpShared`]. Dropping it detaches the program from
/// the interface and empties its entries.
#[derive(Debug)]
pub struct XdpMember {
    link: Option<OwnedFd>,
    shared: std::sync::Arc<XdpShared>,
    ifindex: u32,
    slot: u32,
    ifname: String,
    mode: AttachedMode,
}

impl XdpMember {
    /// Steers the interface's `queue` to the AF_XDP socket `xsk_fd`.
    pub fn insert(&self, queue: u32, xsk_fd: i32) -> Result<(), XdpError> {
        if queue >= self.shared.queues {
            return Err(XdpError::Bpf {
                ifname: self.ifname.clone(),
                source: BpfError {
                    what: "inserting a socket",
                    source: io::Error::from_raw_os_error(libc::E2BIG),
                    hint: format!(": queue {queue} is beyond the {} the program was made for", self.shared.queues),
                },
            });
        }
        bpf::map_update(&self.shared.xsks, self.slot * self.shared.queues + queue, xsk_fd as u32)
            .map_err(|source| XdpError::Bpf { ifname: self.ifname.clone(), source })
    }

    /// Native or generic.
    pub fn mode(&self) -> AttachedMode {
        self.mode
    }
}

impl Drop for XdpMember {
    fn drop(&mut self) {
        // The program off the interface first (its frames go to the kernel), then the
        // entries. The XSKMAP holds a reference on each socket in it, and the kernel
        // frees a map only after a grace period: an emptied slot releases its socket
        // at once, so a socket closed next can have its queue bound again (else EBUSY).
        drop(self.link.take());
        self.shared.index.release(self.ifindex, self.slot * self.shared.queues);
        let _ = bpf::map_delete(&self.shared.ports, self.ifindex);
        for q in 0..self.shared.queues {
            let _ = bpf::map_delete(&self.shared.xsks, self.slot * self.shared.queues + q);
        }
    }
}

/// Attaches `prog` to `ifindex` in `mode`, falling back from native to generic when
/// the mode allows.
fn attach_link(prog: &OwnedFd, ifname: &str, ifindex: u32, mode: XdpMode) -> Result<(OwnedFd, AttachedMode), XdpError> {
    let wrap = |source| XdpError::Bpf { ifname: ifname.to_string(), source };
    let try_attach = |flags| bpf::link_xdp(prog, ifindex, flags);
    let attached = match mode {
        XdpMode::Native => (try_attach(XDP_FLAGS_DRV_MODE).map_err(wrap)?, AttachedMode::Native),
        XdpMode::Generic => (try_attach(XDP_FLAGS_SKB_MODE).map_err(wrap)?, AttachedMode::Generic),
        XdpMode::NativeOrGeneric => match try_attach(XDP_FLAGS_DRV_MODE) {
            Ok(l) => (l, AttachedMode::Native),
            Err(e) if e.is_busy() => return Err(wrap(e)),
            Err(e) => {
                tracing::warn!(ifname, error = %e, "native XDP refused; attaching in generic (skb) mode, which is slower");
                (try_attach(XDP_FLAGS_SKB_MODE).map_err(wrap)?, AttachedMode::Generic)
            }
        },
    };
    if crate::sys::netdev::napi_threaded(ifname) == Some(true) {
        // Measured on veth: a busy-polling worker and the receive thread, once the
        // scheduler puts them on one core, forward a fifth to two thirds of the rate.
        tracing::warn!(
            ifname,
            "the kernel receives on this interface in a NAPI thread (threaded NAPI), which \
             the scheduler may put on a worker's core, where the busy-polling worker starves \
             it: keep napi/{ifname}-* off the worker cores (taskset), or turn it off \
             (echo 0 > /sys/class/net/{ifname}/threaded)"
        );
    }
    Ok(attached)
}

/// The redirect program could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum XdpError {
    /// A BPF syscall failed.
    #[error("XDP on {ifname}: {source}")]
    Bpf {
        /// Interface.
        ifname: String,
        /// What failed.
        #[source]
        source: BpfError,
    },
    /// The interface is unknown.
    #[error("XDP on {ifname}: no such interface in this network namespace: {source}")]
    NoInterface {
        /// Interface.
        ifname: String,
        /// The errno.
        #[source]
        source: io::Error,
    },
}
