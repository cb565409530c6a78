//! An AF_XDP socket bound to one (interface, queue), with its four rings.

use super::ring::{ConsumerRing, ProducerRing};
use super::UmemRegion;
use crate::sys::{self, Mapping, Syscall};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

/// Ring sizes and bind options for one socket. Sizes are powers of two.
#[derive(Debug, Clone, Copy)]
pub struct XskConfig {
    /// RX ring entries.
    pub rx_size: u32,
    /// TX ring entries.
    pub tx_size: u32,
    /// Fill ring entries.
    pub fill_size: u32,
    /// Completion ring entries.
    pub comp_size: u32,
    /// Copy or zero-copy (only for the socket that registers the UMEM; the others
    /// inherit it).
    pub mode: BindMode,
}

impl Default for XskConfig {
    fn default() -> Self {
        XskConfig { rx_size: 2048, tx_size: 2048, fill_size: 2048, comp_size: 2048, mode: BindMode::Copy }
    }
}

/// How a socket binds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindMode {
    /// The kernel copies frames (works everywhere, and is all veth offers).
    Copy,
    /// The driver DMAs into the UMEM (NICs whose driver supports it).
    ZeroCopy,
}

/// An AF_XDP socket operation failed.
#[derive(Debug, thiserror::Error)]
#[error("AF_XDP socket on {ifname} queue {queue}: {what}: {source}{hint}")]
pub struct XskError {
    /// Interface name.
    pub ifname: String,
    /// Queue id.
    pub queue: u32,
    /// The step that failed.
    pub what: &'static str,
    /// The errno.
    #[source]
    pub source: io::Error,
    /// What to do about it.
    pub hint: String,
}

/// The kernel's per-socket counters (`XDP_STATISTICS`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct XskStatistics {
    /// Dropped for reasons other than invalid descriptors (rx ring full in older kernels).
    pub rx_dropped: u64,
    /// Invalid rx descriptors.
    pub rx_invalid_descs: u64,
    /// Invalid tx descriptors.
    pub tx_invalid_descs: u64,
    /// Dropped because the rx ring was full.
    pub rx_ring_full: u64,
    /// Times the fill ring was empty when a frame arrived.
    pub rx_fill_ring_empty_descs: u64,
    /// Times the tx ring was empty when the kernel looked.
    pub tx_ring_empty_descs: u64,
}

/// A bound AF_XDP socket. Not `Sync`: one worker drives it.
#[derive(Debug)]
pub struct XskSocket {
    /// RX ring: frames the kernel received.
    pub rx: ConsumerRing<libc::xdp_desc>,
    /// TX ring: frames to send.
    pub tx: ProducerRing<libc::xdp_desc>,
    /// Fill ring: empty frames for the kernel to receive into.
    pub fill: ProducerRing<u64>,
    /// Completion ring: frames the kernel has sent.
    pub comp: ConsumerRing<u64>,
    fd: OwnedFd,
    ifname: String,
    queue: u32,
}

fn setsockopt_u32(fd: RawFd, name: i32, v: u32) -> io::Result<()> {
    sys::syscall(Syscall::SetSockOpt { fd, level: libc::SOL_XDP, name, value: &v.to_ne_bytes() }).map(drop)
}

/// View of a plain-old-data kernel struct as bytes.
fn pod_bytes<T: Copy>(v: &T) -> &[u8] {
    // SAFETY: T is a repr(C) kernel struct of integers (no padding that matters to the
    // kernel, no pointers to Rust data); reading it as bytes is sound.
    unsafe { core::slice::from_raw_parts((v as *const T).cast(), core::mem::size_of::<T>()) }
}

fn pod_bytes_mut<T: Copy>(v: &mut T) -> &mut [u8] {
    // SAFETY: as in `pod_bytes`; any byte pattern is a valid value of these integer structs.
    unsafe { core::slice::from_raw_parts_mut((v as *mut T).cast(), core::mem::size_of::<T>()) }
}

impl XskSocket {
    /// Opens a socket on `ifname`/`queue`. With `shared = None` it registers `umem`;
    /// otherwise it shares the UMEM registered by `shared`: the descriptor of a bound
    /// socket of the same UMEM (any of the worker's sockets), which the caller keeps
    /// open for the call. The kernel checks it (EBADF, ENOTSOCK, EINVAL otherwise).
    pub fn new(
        umem: UmemRegion,
        ifname: &str,
        queue: u32,
        shared: Option<RawFd>,
        cfg: &XskConfig,
    ) -> Result<XskSocket, XskError> {
        let err = |what: &'static str, hint: &str| {
            let ifname = ifname.to_string();
            let hint = hint.to_string();
            move |source: io::Error| XskError { ifname, queue, what, source, hint }
        };
        for (name, size) in [
            ("rx_size", cfg.rx_size),
            ("tx_size", cfg.tx_size),
            ("fill_size", cfg.fill_size),
            ("comp_size", cfg.comp_size),
        ] {
            if !size.is_power_of_two() {
                return Err(err("checking ring sizes", "")(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{name} = {size} is not a power of two"),
                )));
            }
        }
        let ifindex = sys::netdev::ifindex(ifname)
            .map_err(err("looking up the interface", ": does the interface exist in this namespace?"))?;
        let fd = sys::syscall_fd(Syscall::Socket { domain: libc::AF_XDP, ty: libc::SOCK_RAW | libc::SOCK_CLOEXEC })
            .map_err(err("socket(AF_XDP)", ": AF_XDP needs CAP_NET_RAW and a kernel with CONFIG_XDP_SOCKETS"))?;
        let raw = fd.as_raw_fd();

        if shared.is_none() {
            let reg = libc::xdp_umem_reg {
                addr: umem.addr,
                len: umem.len,
                chunk_size: umem.frame_size,
                headroom: 0,
                flags: 0,
                tx_metadata_len: 0,
            };
            sys::syscall(Syscall::SetSockOpt { fd: raw, level: libc::SOL_XDP, name: libc::XDP_UMEM_REG, value: pod_bytes(&reg) })
                .map_err(err(
                    "registering the UMEM",
                    ": without CAP_IPC_LOCK the UMEM counts against RLIMIT_MEMLOCK (ENOBUFS); run as root or raise the limit",
                ))?;
        }
        // Every socket gets its own fill and completion rings: required when sharing a
        // UMEM across interfaces or queues.
        setsockopt_u32(raw, libc::XDP_UMEM_FILL_RING, cfg.fill_size).map_err(err("sizing the fill ring", ""))?;
        setsockopt_u32(raw, libc::XDP_UMEM_COMPLETION_RING, cfg.comp_size)
            .map_err(err("sizing the completion ring", ""))?;
        setsockopt_u32(raw, libc::XDP_RX_RING, cfg.rx_size).map_err(err("sizing the rx ring", ""))?;
        setsockopt_u32(raw, libc::XDP_TX_RING, cfg.tx_size).map_err(err("sizing the tx ring", ""))?;

        // SAFETY: xdp_mmap_offsets is a struct of integers; all zeroes is a valid value.
        let mut off: libc::xdp_mmap_offsets = unsafe { core::mem::zeroed() };
        sys::syscall(Syscall::GetSockOpt {
            fd: raw,
            level: libc::SOL_XDP,
            name: libc::XDP_MMAP_OFFSETS,
            value: pod_bytes_mut(&mut off),
        })
        .map_err(err("reading the ring offsets", ""))?;

        let desc = core::mem::size_of::<libc::xdp_desc>();
        let map = |o: &libc::xdp_ring_offset, n: u32, entry: usize, pgoff: u64| {
            Mapping::new(o.desc as usize + n as usize * entry, libc::MAP_SHARED | libc::MAP_POPULATE, raw, pgoff as i64)
        };
        let rx_map =
            map(&off.rx, cfg.rx_size, desc, libc::XDP_PGOFF_RX_RING as u64).map_err(err("mapping the rx ring", ""))?;
        let tx_map =
            map(&off.tx, cfg.tx_size, desc, libc::XDP_PGOFF_TX_RING as u64).map_err(err("mapping the tx ring", ""))?;
        let fill_map =
            map(&off.fr, cfg.fill_size, 8, libc::XDP_UMEM_PGOFF_FILL_RING).map_err(err("mapping the fill ring", ""))?;
        let comp_map = map(&off.cr, cfg.comp_size, 8, libc::XDP_UMEM_PGOFF_COMPLETION_RING)
            .map_err(err("mapping the completion ring", ""))?;

        // SAFETY: each mapping is the ring the offsets describe, sized for its entries.
        let (rx, tx, fill, comp) = unsafe {
            (
                ConsumerRing::new(rx_map, &off.rx, cfg.rx_size),
                ProducerRing::new(tx_map, &off.tx, cfg.tx_size),
                ProducerRing::new(fill_map, &off.fr, cfg.fill_size),
                ConsumerRing::new(comp_map, &off.cr, cfg.comp_size),
            )
        };

        let flags = match (shared, cfg.mode) {
            // A socket that shares a UMEM may not pass other flags: it inherits the
            // owner's copy/zero-copy and need_wakeup settings.
            (Some(_), _) => libc::XDP_SHARED_UMEM,
            (None, BindMode::Copy) => libc::XDP_COPY | libc::XDP_USE_NEED_WAKEUP,
            (None, BindMode::ZeroCopy) => libc::XDP_ZEROCOPY | libc::XDP_USE_NEED_WAKEUP,
        };
        let addr = libc::sockaddr_xdp {
            sxdp_family: libc::AF_XDP as u16,
            sxdp_flags: flags,
            sxdp_ifindex: ifindex,
            sxdp_queue_id: queue,
            sxdp_shared_umem_fd: shared.map_or(0, |fd| fd as u32),
        };
        sys::syscall(Syscall::BindXdp { fd: raw, addr }).map_err(|e| {
            let hint = match e.raw_os_error() {
                Some(libc::EINVAL) => format!(
                    ": does {ifname} have a queue {queue}? create veths with numrxqueues/numtxqueues \
                     of at least the number of workers"
                ),
                Some(libc::EBUSY) => ": another AF_XDP socket is bound to this queue".to_string(),
                Some(libc::EOPNOTSUPP) if cfg.mode == BindMode::ZeroCopy => {
                    ": the driver has no zero-copy support; use copy mode".to_string()
                }
                _ => String::new(),
            };
            XskError { ifname: ifname.to_string(), queue, what: "bind", source: e, hint }
        })?;

        Ok(XskSocket { rx, tx, fill, comp, fd, ifname: ifname.to_string(), queue })
    }

    /// The socket's descriptor (for the XSKMAP and for sharing the UMEM).
    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// The socket, borrowed (to share its UMEM with a new socket).
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Interface name.
    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// Queue id.
    pub fn queue(&self) -> u32 {
        self.queue
    }

    /// Asks the kernel to transmit what is on the tx ring. Copy mode sends at most 32
    /// frames per call and answers EAGAIN when more remain.
    #[inline]
    pub fn kick_tx(&self) -> io::Result<()> {
        sys::syscall(Syscall::KickTx { fd: self.fd.as_raw_fd() }).map(drop)
    }

    /// Wakes the kernel after refilling a fill ring it found empty.
    #[inline]
    pub fn wake_rx(&self) -> io::Result<()> {
        sys::syscall(Syscall::WakeRx { fd: self.fd.as_raw_fd() }).map(drop)
    }

    /// The kernel's counters for this socket.
    pub fn statistics(&self) -> io::Result<XskStatistics> {
        // SAFETY: xdp_statistics is a struct of integers; all zeroes is a valid value.
        let mut s: libc::xdp_statistics = unsafe { core::mem::zeroed() };
        sys::syscall(Syscall::GetSockOpt {
            fd: self.fd.as_raw_fd(),
            level: libc::SOL_XDP,
            name: libc::XDP_STATISTICS,
            value: pod_bytes_mut(&mut s),
        })?;
        Ok(XskStatistics {
            rx_dropped: s.rx_dropped,
            rx_invalid_descs: s.rx_invalid_descs,
            tx_invalid_descs: s.tx_invalid_descs,
            rx_ring_full: s.rx_ring_full,
            rx_fill_ring_empty_descs: s.rx_fill_ring_empty_descs,
            tx_ring_empty_descs: s.tx_ring_empty_descs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::fake::{errno, with_fake};
    use crate::xsk::{HugepagePolicy, Umem, UmemConfig};

    // Leaked: a socket may register the memory, which must outlive it.
    fn umem() -> &'static Umem {
        Box::leak(Box::new(
            Umem::new(&UmemConfig { frames: 64, frame_size: 4096, hugepages: HugepagePolicy::Off }).unwrap(),
        ))
    }

    #[test]
    fn missing_interface_says_so() {
        let e = XskSocket::new(umem().region(), "no-such-if0", 0, None, &XskConfig::default()).unwrap_err();
        assert_eq!(e.what, "looking up the interface");
        assert!(e.to_string().contains("no-such-if0"), "{e}");
    }

    #[test]
    fn bad_ring_size_is_refused_before_any_syscall() {
        let cfg = XskConfig { rx_size: 1000, ..XskConfig::default() };
        let u = umem();
        let e = with_fake(
            |c| panic!("no syscall expected, got {c:?}"),
            || XskSocket::new(u.region(), "lo", 0, None, &cfg).unwrap_err(),
        );
        assert!(e.to_string().contains("rx_size = 1000"), "{e}");
    }

    #[test]
    fn socket_failure_explains_capabilities() {
        let e = with_fake(
            |c| matches!(c, Syscall::Socket { domain: libc::AF_XDP, .. }).then(|| errno(libc::EPERM)),
            || XskSocket::new(umem().region(), "lo", 0, None, &XskConfig::default()).unwrap_err(),
        );
        assert_eq!(e.source.raw_os_error(), Some(libc::EPERM));
        assert!(e.to_string().contains("CAP_NET_RAW"), "{e}");
    }

    #[test]
    fn umem_registration_failure_names_memlock() {
        // The fake answers socket() with a real descriptor (a UDP socket) so that the
        // OwnedFd closes something real, and fails the UMEM registration.
        let e = with_fake(
            |c| match c {
                Syscall::Socket { .. } => {
                    // SAFETY: plain syscall returning a fresh descriptor.
                    #[allow(unsafe_code)]
                    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) };
                    Some(Ok(i64::from(fd)))
                }
                Syscall::SetSockOpt { name, .. } if *name == libc::XDP_UMEM_REG => Some(errno(libc::ENOBUFS)),
                _ => None,
            },
            || XskSocket::new(umem().region(), "lo", 0, None, &XskConfig::default()).unwrap_err(),
        );
        assert_eq!(e.what, "registering the UMEM");
        assert!(e.to_string().contains("RLIMIT_MEMLOCK"), "{e}");
    }
}
