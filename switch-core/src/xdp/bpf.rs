//! The `bpf()` commands podswitch uses, with their `union bpf_attr` members laid out as
//! the kernel's linux/bpf.h does.

use super::insn::Insn;
use crate::sys::{self, Syscall};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

const BPF_MAP_CREATE: u32 = 0;
const BPF_MAP_LOOKUP_ELEM: u32 = 1;
const BPF_MAP_UPDATE_ELEM: u32 = 2;
const BPF_MAP_DELETE_ELEM: u32 = 3;
const BPF_PROG_LOAD: u32 = 5;
const BPF_PROG_TEST_RUN: u32 = 10;
const BPF_LINK_CREATE: u32 = 28;

const BPF_MAP_TYPE_HASH: u32 = 1;
const BPF_MAP_TYPE_ARRAY: u32 = 2;
const BPF_MAP_TYPE_PERCPU_ARRAY: u32 = 6;
const BPF_MAP_TYPE_XSKMAP: u32 = 17;
const BPF_F_TEST_XDP_LIVE_FRAMES: u32 = 1 << 1;
const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;
const BPF_PROG_TYPE_XDP: u32 = 6;
const BPF_XDP: u32 = 37;
const BPF_TCX_INGRESS: u32 = 46;

/// A BPF command failed.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {source}{hint}")]
pub struct BpfError {
    /// The step.
    pub what: &'static str,
    /// The errno.
    #[source]
    pub source: io::Error,
    /// What to do (and the verifier log, for a refused program).
    pub hint: String,
}

impl BpfError {
    pub(crate) fn new(what: &'static str, source: io::Error) -> BpfError {
        let hint = match source.raw_os_error() {
            Some(libc::EPERM) => ": loading BPF needs CAP_BPF and CAP_NET_ADMIN (run podswitchd as root)".into(),
            Some(libc::EBUSY) | Some(libc::EEXIST) => {
                ": another XDP program is attached to this interface; remove it (`ip link set dev IF xdp off`) or stop the process that owns it".into()
            }
            Some(libc::ERANGE) => ": the MTU is too large for native XDP on this device (veth: at most 3506); lower it or use generic mode".into(),
            Some(libc::EMFILE) => ": out of file descriptors (each port holds a socket per worker and an XDP link); raise podswitchd's open-file limit (LimitNOFILE=, ulimit -n)".into(),
            _ => String::new(),
        };
        BpfError { what, source, hint }
    }

    /// Another program holds the interface.
    pub fn is_busy(&self) -> bool {
        matches!(self.source.raw_os_error(), Some(libc::EBUSY) | Some(libc::EEXIST))
    }
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
    numa_node: u32,
    map_name: [u8; 16],
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct MapElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad: u32,
}

/// `struct xdp_md`, the context a test run starts from.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct XdpMd {
    data: u32,
    data_end: u32,
    data_meta: u32,
    ingress_ifindex: u32,
    rx_queue_index: u32,
    egress_ifindex: u32,
}

fn as_bytes_mut<T: Copy>(v: &mut T) -> &mut [u8] {
    // SAFETY: the attr structs are repr(C) integers and byte arrays; every byte pattern
    // is valid and the kernel reads them as bytes.
    unsafe { core::slice::from_raw_parts_mut((v as *mut T).cast(), core::mem::size_of::<T>()) }
}

fn name16(s: &str) -> [u8; 16] {
    let mut n = [0u8; 16];
    let b = s.as_bytes();
    let len = b.len().min(15);
    n[..len].copy_from_slice(&b[..len]);
    n
}

/// An XSKMAP of `entries` slots (u32 queue id → AF_XDP socket).
pub(crate) fn create_xskmap(entries: u32) -> Result<OwnedFd, BpfError> {
    let mut a = MapCreateAttr {
        map_type: BPF_MAP_TYPE_XSKMAP,
        key_size: 4,
        value_size: 4,
        max_entries: entries,
        map_name: name16("podswitch_xsks"),
        ..Default::default()
    };
    sys::syscall_fd(Syscall::Bpf { cmd: BPF_MAP_CREATE, attr: as_bytes_mut(&mut a) })
        .map_err(|e| BpfError::new("creating the XSKMAP", e))
}

/// A hash of `entries` u32 keys to u32 values.
pub(crate) fn create_u32_hash(entries: u32, name: &str) -> Result<OwnedFd, BpfError> {
    let mut a = MapCreateAttr {
        map_type: BPF_MAP_TYPE_HASH,
        key_size: 4,
        value_size: 4,
        max_entries: entries,
        map_name: name16(name),
        ..Default::default()
    };
    sys::syscall_fd(Syscall::Bpf { cmd: BPF_MAP_CREATE, attr: as_bytes_mut(&mut a) })
        .map_err(|e| BpfError::new("creating a hash map", e))
}

/// An array of `entries` values of `value_size` bytes (u32 keys), zeroed; per CPU if
/// `per_cpu` (each CPU its own copy, written without atomics).
pub fn create_array(name: &str, value_size: u32, entries: u32, per_cpu: bool) -> Result<OwnedFd, BpfError> {
    let mut a = MapCreateAttr {
        map_type: if per_cpu { BPF_MAP_TYPE_PERCPU_ARRAY } else { BPF_MAP_TYPE_ARRAY },
        key_size: 4,
        value_size,
        max_entries: entries,
        map_name: name16(name),
        ..Default::default()
    };
    sys::syscall_fd(Syscall::Bpf { cmd: BPF_MAP_CREATE, attr: as_bytes_mut(&mut a) })
        .map_err(|e| BpfError::new("creating an array map", e))
}

/// `BPF_F_MMAPABLE`: an array that user space may map.
const BPF_F_MMAPABLE: u32 = 1 << 10;

/// An array of `entries` u64 values, zeroed, that user space maps (the [`Mapping`]
/// returned, shared with the kernel) and writes in place. A program reads an entry
/// with one 8-byte load and user space writes it with one 8-byte atomic store, so an
/// entry is never seen half written, which `BPF_MAP_UPDATE_ELEM` (a memcpy) does not
/// promise.
pub(crate) fn create_mapped_u64_array(name: &str, entries: u32) -> Result<(OwnedFd, crate::sys::Mapping), BpfError> {
    let mut a = MapCreateAttr {
        map_type: BPF_MAP_TYPE_ARRAY,
        key_size: 4,
        value_size: 8,
        max_entries: entries,
        map_flags: BPF_F_MMAPABLE,
        map_name: name16(name),
        ..Default::default()
    };
    let map = sys::syscall_fd(Syscall::Bpf { cmd: BPF_MAP_CREATE, attr: as_bytes_mut(&mut a) })
        .map_err(|e| BpfError::new("creating a mappable array", e))?;
    let page = 4096;
    let len = (entries as usize * 8).div_ceil(page) * page;
    let area = crate::sys::Mapping::new(len, libc::MAP_SHARED, map.as_raw_fd(), 0)
        .map_err(|e| BpfError::new("mapping an array", e))?;
    Ok((map, area))
}

/// Reads `map[key]` into `value`: the value's bytes, or for a per-CPU map every CPU's
/// value one after the other, each rounded up to 8 bytes ([`possible_cpus`] of them).
pub fn map_lookup_bytes(map: &OwnedFd, key: u32, value: &mut [u8]) -> Result<(), BpfError> {
    let mut a = MapElemAttr {
        map_fd: map.as_raw_fd() as u32,
        key: &key as *const u32 as u64,
        value: value.as_mut_ptr() as u64,
        ..Default::default()
    };
    sys::syscall(Syscall::Bpf { cmd: BPF_MAP_LOOKUP_ELEM, attr: as_bytes_mut(&mut a) })
        .map(drop)
        .map_err(|e| BpfError::new("reading a map entry", e))
}

/// `map[key] = value` (for a per-CPU map, laid out as [`map_lookup_bytes`] returns it).
pub fn map_update_bytes(map: &OwnedFd, key: u32, value: &[u8]) -> Result<(), BpfError> {
    let mut a = MapElemAttr {
        map_fd: map.as_raw_fd() as u32,
        key: &key as *const u32 as u64,
        value: value.as_ptr() as u64,
        ..Default::default()
    };
    sys::syscall(Syscall::Bpf { cmd: BPF_MAP_UPDATE_ELEM, attr: as_bytes_mut(&mut a) })
        .map(drop)
        .map_err(|e| BpfError::new("writing a map entry", e))
}

/// Number of possible CPUs (the kernel's per-CPU value count), from
/// /sys/devices/system/cpu/possible ("0-3" or "0").
pub fn possible_cpus() -> usize {
    std::fs::read_to_string("/sys/devices/system/cpu/possible")
        .ok()
        .and_then(|s| s.trim().rsplit(['-', ',']).next().and_then(|n| n.parse::<usize>().ok()))
        .map_or(1, |n| n + 1)
}

/// Runs `prog` over `frame` `repeat` times in live-frames mode, as if the frames were
/// received on `ifindex`: what the program transmits (XDP_TX) really leaves through
/// that interface. Returns how long the kernel says the run took, in ns per frame.
pub fn test_run_live(prog: &OwnedFd, ifindex: u32, frame: &[u8], repeat: u32, batch: u32) -> Result<u32, BpfError> {
    let ctx = XdpMd { data_end: frame.len() as u32, ingress_ifindex: ifindex, ..Default::default() };
    let mut a = TestRunAttr {
        prog_fd: prog.as_raw_fd() as u32,
        data_size_in: frame.len() as u32,
        data_in: frame.as_ptr() as u64,
        repeat,
        ctx_size_in: size_of::<XdpMd>() as u32,
        ctx_in: &ctx as *const XdpMd as u64,
        flags: BPF_F_TEST_XDP_LIVE_FRAMES,
        batch_size: batch,
        ..Default::default()
    };
    sys::syscall(Syscall::Bpf { cmd: BPF_PROG_TEST_RUN, attr: as_bytes_mut(&mut a) })
        .map_err(|e| BpfError::new("running the program on live frames", e))?;
    Ok(a.duration)
}

/// Runs `prog` once over a copy of `frame` as if it came in on `ifindex` (an
/// interface of this network namespace), queue `rx_queue` (below the interface's
/// queue count); returns its verdict. Nothing is sent.
pub fn test_run_from(prog: &OwnedFd, frame: &[u8], ifindex: u32, rx_queue: u32) -> Result<u32, BpfError> {
    let ctx = XdpMd {
        data_end: frame.len() as u32,
        ingress_ifindex: ifindex,
        rx_queue_index: rx_queue,
        ..Default::default()
    };
    let mut a = TestRunAttr {
        prog_fd: prog.as_raw_fd() as u32,
        data_size_in: frame.len() as u32,
        data_in: frame.as_ptr() as u64,
        repeat: 1,
        ctx_size_in: size_of::<XdpMd>() as u32,
        ctx_in: &ctx as *const XdpMd as u64,
        ..Default::default()
    };
    sys::syscall(Syscall::Bpf { cmd: BPF_PROG_TEST_RUN, attr: as_bytes_mut(&mut a) })
        .map_err(|e| BpfError::new("running the program on a test frame", e))?;
    Ok(a.retval)
}

/// Runs `prog` once over a copy of `frame` (nothing is sent) and returns its verdict.
pub fn test_run(prog: &OwnedFd, frame: &[u8]) -> Result<u32, BpfError> {
    test_run_out(prog, frame).map(|(v, _)| v)
}

/// [`test_run`], also returning the frame as the program left it.
pub fn test_run_out(prog: &OwnedFd, frame: &[u8]) -> Result<(u32, Vec<u8>), BpfError> {
    // Room for a program that grows the frame (to a page at most).
    let mut out = vec![0u8; frame.len() + 4096];
    let mut a = TestRunAttr {
        prog_fd: prog.as_raw_fd() as u32,
        data_size_in: frame.len() as u32,
        data_in: frame.as_ptr() as u64,
        data_size_out: out.len() as u32,
        data_out: out.as_mut_ptr() as u64,
        repeat: 1,
        ..Default::default()
    };
    sys::syscall(Syscall::Bpf { cmd: BPF_PROG_TEST_RUN, attr: as_bytes_mut(&mut a) })
        .map_err(|e| BpfError::new("running the program on a test frame", e))?;
    out.truncate(a.data_size_out as usize);
    Ok((a.retval, out))
}

/// `map[key] = value`.
pub(crate) fn map_update(map: &OwnedFd, key: u32, value: u32) -> Result<(), BpfError> {
    map_update_bytes(map, key, &value.to_ne_bytes())
}

/// Removes `map[key]`.
pub(crate) fn map_delete(map: &OwnedFd, key: u32) -> Result<(), BpfError> {
    let mut a = MapElemAttr { map_fd: map.as_raw_fd() as u32, key: &key as *const u32 as u64, ..Default::default() };
    sys::syscall(Syscall::Bpf { cmd: BPF_MAP_DELETE_ELEM, attr: as_bytes_mut(&mut a) })
        .map(drop)
        .map_err(|e| BpfError::new("removing a map entry", e))
}

/// Loads an XDP program; on refusal, loads it again with the verifier log on and puts
/// the log in the error.
pub fn load_xdp(insns: &[Insn], name: &str) -> Result<OwnedFd, BpfError> {
    load(BPF_PROG_TYPE_XDP, BPF_XDP, insns, name, "loading the XDP program")
}

/// Loads a tc program for the ingress hook of [`link_tcx_ingress`] (context: the
/// skb; verdicts `TCX_PASS` 0, `TCX_DROP` 2). Refusals carry the verifier log.
pub fn load_tcx_ingress(insns: &[Insn], name: &str) -> Result<OwnedFd, BpfError> {
    load(BPF_PROG_TYPE_SCHED_CLS, BPF_TCX_INGRESS, insns, name, "loading the tc program")
}

fn load(prog_type: u32, attach: u32, insns: &[Insn], name: &str, what: &'static str) -> Result<OwnedFd, BpfError> {
    let license = c"Dual MIT/GPL";
    let mut a = ProgLoadAttr {
        prog_type,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        prog_name: name16(name),
        expected_attach_type: attach,
        ..Default::default()
    };
    match sys::syscall_fd(Syscall::Bpf { cmd: BPF_PROG_LOAD, attr: as_bytes_mut(&mut a) }) {
        Ok(fd) => Ok(fd),
        Err(first) => {
            let mut log = vec![0u8; 64 * 1024];
            a.log_level = 1;
            a.log_size = log.len() as u32;
            a.log_buf = log.as_mut_ptr() as u64;
            let _ = sys::syscall(Syscall::Bpf { cmd: BPF_PROG_LOAD, attr: as_bytes_mut(&mut a) });
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            let mut e = BpfError::new(what, first);
            if end > 0 {
                e.hint.push_str(&format!("; verifier log:\n{}", String::from_utf8_lossy(&log[..end])));
            }
            Err(e)
        }
    }
}

/// Attaches `prog` to `ifindex` through a BPF link (detached when the link closes).
pub fn link_xdp(prog: &OwnedFd, ifindex: u32, flags: u32) -> Result<OwnedFd, BpfError> {
    let mut a =
        LinkCreateAttr { prog_fd: prog.as_raw_fd() as u32, target_ifindex: ifindex, attach_type: BPF_XDP, flags };
    sys::syscall_fd(Syscall::Bpf { cmd: BPF_LINK_CREATE, attr: as_bytes_mut(&mut a) })
        .map_err(|e| BpfError::new("attaching the XDP program", e))
}

/// Attaches the tc program `prog` to `ifindex`'s ingress (tcx, Linux 6.6 and later),
/// after any program already there, through a BPF link (detached when it closes).
pub fn link_tcx_ingress(prog: &OwnedFd, ifindex: u32) -> Result<OwnedFd, BpfError> {
    // The tcx members after `flags` (relative_fd, expected_revision) stay zero: append.
    let mut a = LinkCreateAttr {
        prog_fd: prog.as_raw_fd() as u32,
        target_ifindex: ifindex,
        attach_type: BPF_TCX_INGRESS,
        flags: 0,
    };
    sys::syscall_fd(Syscall::Bpf { cmd: BPF_LINK_CREATE, attr: as_bytes_mut(&mut a) })
        .map_err(|e| BpfError::new("attaching the tc program", e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::fake::{errno, with_fake};

    #[test]
    fn refused_program_carries_the_verifier_log() {
        let e = with_fake(
            |c| match c {
                Syscall::Bpf { cmd: BPF_PROG_LOAD, attr } => {
                    // On the retry, write a log into the buffer the attr points at.
                    let a = attr.as_ptr() as *const ProgLoadAttr;
                    // SAFETY: attr is the ProgLoadAttr built by load_xdp.
                    #[allow(unsafe_code)]
                    let a = unsafe { *a };
                    if a.log_level == 1 {
                        let msg = b"R2 invalid mem access\0";
                        // SAFETY: log_buf points at load_xdp's 64 KiB buffer.
                        #[allow(unsafe_code)]
                        unsafe {
                            core::ptr::copy_nonoverlapping(msg.as_ptr(), a.log_buf as *mut u8, msg.len())
                        };
                    }
                    Some(errno(libc::EACCES))
                }
                _ => None,
            },
            || load_xdp(&[super::super::insn::exit()], "t").unwrap_err(),
        );
        assert!(e.to_string().contains("R2 invalid mem access"), "{e}");
    }

    #[test]
    fn busy_interface_is_explained() {
        let e = with_fake(
            |_| Some(errno(libc::EBUSY)),
            || {
                // Any fd works for the prog argument; the fake answers.
                let fd: OwnedFd = std::fs::File::open("/dev/null").unwrap().into();
                link_xdp(&fd, 1, 0).unwrap_err()
            },
        );
        assert!(e.is_busy());
        assert!(e.to_string().contains("another XDP program"), "{e}");
    }
}
