//! The XDP program that steers a port's frames into its AF_XDP sockets.
//!
//! Built from BPF instructions in Rust (no clang, no libbpf, no ELF), loaded with
//! `BPF_PROG_LOAD`, and attached with `BPF_LINK_CREATE` so that the kernel detaches it
//! when the link's descriptor closes — including when the daemon crashes.
//!
//! The program, per frame: look up the socket for the frame's rx queue in the XSKMAP
//! and redirect to it; if that queue has no socket, return the fallback action (pass,
//! for uplinks whose other traffic belongs to the kernel; drop, for pod ports).
#![allow(unsafe_code)]

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

/// The redirect program, its XSKMAP and its link on one interface. Dropping it detaches
/// the program.
#[derive(Debug)]
pub struct XdpRedirect {
    // Field order is drop order: the link goes first, so the program stops redirecting
    // before the map and program are released.
    link: OwnedFd,
    _prog: OwnedFd,
    map: OwnedFd,
    ifname: String,
    mode: AttachedMode,
    queues: u32,
}

impl Drop for XdpRedirect {
    fn drop(&mut self) {
        // The XSKMAP holds a reference on each socket in it, and the kernel frees the
        // map only after a grace period: empty it now, so that a socket closed next is
        // released at once and its queue can be bound again (else bind says EBUSY).
        for q in 0..self.queues {
            let _ = bpf::map_delete(&self.map, q);
        }
    }
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

impl XdpRedirect {
    /// Loads the program with an XSKMAP of `queues` entries and attaches it to `ifname`.
    /// Sockets are inserted afterwards with [`insert`](Self::insert).
    pub fn attach(ifname: &str, queues: u32, fallback: Fallback, mode: XdpMode) -> Result<XdpRedirect, XdpError> {
        let ifindex = sys::netdev::ifindex(ifname)
            .map_err(|source| XdpError::NoInterface { ifname: ifname.to_string(), source })?;
        let wrap = |source| XdpError::Bpf { ifname: ifname.to_string(), source };
        let map = bpf::create_xskmap(queues.max(1)).map_err(wrap)?;
        let prog = bpf::load_xdp(&insn::redirect_to_xsk(map.as_raw_fd(), fallback), "podswitch_xsk").map_err(wrap)?;
        let try_attach = |flags| bpf::link_xdp(&prog, ifindex, flags);
        let (link, mode) = match mode {
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
        Ok(XdpRedirect { link, _prog: prog, map, ifname: ifname.to_string(), mode, queues: queues.max(1) })
    }

    /// Steers `queue` to the AF_XDP socket `xsk_fd`.
    pub fn insert(&self, queue: u32, xsk_fd: i32) -> Result<(), XdpError> {
        bpf::map_update(&self.map, queue, xsk_fd as u32)
            .map_err(|source| XdpError::Bpf { ifname: self.ifname.clone(), source })
    }

    /// The interface it is attached to.
    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// Native or generic.
    pub fn mode(&self) -> AttachedMode {
        self.mode
    }

    /// The link's descriptor (kept open for as long as the program should stay).
    pub fn link_fd(&self) -> i32 {
        self.link.as_raw_fd()
    }
}
