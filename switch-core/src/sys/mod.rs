//! Every raw syscall the dataplane makes, behind one narrow interface.
//!
//! Callers build a [`Syscall`] and pass it to [`syscall`]. In unit tests a thread-local
//! fake can answer instead of the kernel (see [`fake`]), so the error paths of `xsk` and
//! `xdp` are tested without root, as aya does in `aya/src/sys/fake.rs`.
//!
//! The functions here return `io::Result` with the raw errno; the modules above wrap it
//! in errors that name the interface and what to do.
#![allow(unsafe_code)]

pub mod netdev;

#[cfg(test)]
pub mod fake;

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// One raw call into the kernel.
#[derive(Debug)]
pub enum Syscall<'a> {
    /// `bpf(cmd, attr, size)`: `attr` is the command's `union bpf_attr` member, which the
    /// kernel may write back into.
    Bpf {
        /// BPF command number.
        cmd: u32,
        /// The attribute bytes.
        attr: &'a mut [u8],
    },
    /// `socket(domain, type, protocol)`.
    Socket {
        /// Address family.
        domain: i32,
        /// Socket type and flags.
        ty: i32,
    },
    /// `setsockopt(fd, level, name, value)`.
    SetSockOpt {
        /// Socket.
        fd: RawFd,
        /// Level (SOL_XDP).
        level: i32,
        /// Option name.
        name: i32,
        /// Option bytes.
        value: &'a [u8],
    },
    /// `getsockopt(fd, level, name, value)`; returns the length written.
    GetSockOpt {
        /// Socket.
        fd: RawFd,
        /// Level.
        level: i32,
        /// Option name.
        name: i32,
        /// Where the kernel writes.
        value: &'a mut [u8],
    },
    /// `bind(fd, sockaddr_xdp)`.
    BindXdp {
        /// Socket.
        fd: RawFd,
        /// Address.
        addr: libc::sockaddr_xdp,
    },
    /// `mmap(NULL, len, PROT_READ|PROT_WRITE, flags, fd, offset)`; returns the address.
    Mmap {
        /// Length in bytes.
        len: usize,
        /// mmap flags.
        flags: i32,
        /// File descriptor, or -1 for anonymous memory.
        fd: RawFd,
        /// Offset (the ring's page offset for AF_XDP).
        offset: i64,
    },
    /// `sendto(fd, NULL, 0, MSG_DONTWAIT, NULL, 0)`: AF_XDP TX kick.
    KickTx {
        /// Socket.
        fd: RawFd,
    },
    /// `recvfrom(fd, NULL, 0, MSG_DONTWAIT, NULL, NULL)`: AF_XDP fill-ring wakeup.
    WakeRx {
        /// Socket.
        fd: RawFd,
    },
    /// `ioctl(fd, request, arg)` for interface requests (`struct ifreq`).
    Ioctl {
        /// A socket in the namespace of the interface.
        fd: RawFd,
        /// SIOC* request.
        request: u64,
        /// The ifreq bytes, read and written by the kernel.
        arg: &'a mut [u8],
    },
}

/// Performs `call` (or, in unit tests with a fake installed, asks the fake).
pub fn syscall(call: Syscall<'_>) -> io::Result<i64> {
    #[cfg(test)]
    if let Some(r) = fake::answer(&call) {
        return r;
    }
    real(call)
}

fn cvt(r: i64) -> io::Result<i64> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn real(call: Syscall<'_>) -> io::Result<i64> {
    match call {
        Syscall::Bpf { cmd, attr } => {
            // SAFETY: `attr` is a live, writable buffer of `attr.len()` bytes laid out as
            // the kernel's bpf_attr member for `cmd`; any pointers inside it were set by
            // the caller to buffers that outlive this call.
            let r = unsafe { libc::syscall(libc::SYS_bpf, cmd as libc::c_long, attr.as_mut_ptr(), attr.len() as u32) };
            cvt(r)
        }
        Syscall::Socket { domain, ty } => {
            // SAFETY: plain syscall with integer arguments.
            cvt(i64::from(unsafe { libc::socket(domain, ty, 0) }))
        }
        Syscall::SetSockOpt { fd, level, name, value } => {
            // SAFETY: `value` is a live buffer of `value.len()` bytes.
            cvt(i64::from(unsafe {
                libc::setsockopt(fd, level, name, value.as_ptr().cast(), value.len() as libc::socklen_t)
            }))
        }
        Syscall::GetSockOpt { fd, level, name, value } => {
            let mut len = value.len() as libc::socklen_t;
            // SAFETY: `value` is a live, writable buffer of `len` bytes, and `len` a live
            // socklen_t the kernel updates.
            let r = unsafe { libc::getsockopt(fd, level, name, value.as_mut_ptr().cast(), &mut len) };
            cvt(i64::from(r)).map(|_| i64::from(len))
        }
        Syscall::BindXdp { fd, addr } => {
            // SAFETY: `addr` is a complete sockaddr_xdp on the stack, passed with its size.
            cvt(i64::from(unsafe {
                libc::bind(
                    fd,
                    (&addr as *const libc::sockaddr_xdp).cast(),
                    core::mem::size_of::<libc::sockaddr_xdp>() as libc::socklen_t,
                )
            }))
        }
        Syscall::Mmap { len, flags, fd, offset } => {
            // SAFETY: a new mapping at an address the kernel chooses; it cannot alias any
            // existing Rust object.
            let p = unsafe {
                libc::mmap(core::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, flags, fd, offset)
            };
            if p == libc::MAP_FAILED {
                Err(io::Error::last_os_error())
            } else {
                Ok(p as i64)
            }
        }
        Syscall::KickTx { fd } => {
            // SAFETY: a zero-length send with no buffer and no address.
            cvt(unsafe { libc::sendto(fd, core::ptr::null(), 0, libc::MSG_DONTWAIT, core::ptr::null(), 0) } as i64)
        }
        Syscall::Ioctl { fd, request, arg } => {
            // SAFETY: `arg` is a live, writable ifreq; any pointer inside it was set by
            // the caller to a buffer that outlives this call.
            cvt(i64::from(unsafe { libc::ioctl(fd, request as _, arg.as_mut_ptr()) }))
        }
        Syscall::WakeRx { fd } => {
            // SAFETY: a zero-length receive with no buffer and no address.
            cvt(unsafe {
                libc::recvfrom(
                    fd,
                    core::ptr::null_mut(),
                    0,
                    libc::MSG_DONTWAIT,
                    core::ptr::null_mut(),
                    core::ptr::null_mut(),
                )
            } as i64)
        }
    }
}

/// A syscall that returns a new file descriptor, owned.
pub fn syscall_fd(call: Syscall<'_>) -> io::Result<OwnedFd> {
    let fd = syscall(call)?;
    // SAFETY: the syscalls passed here (socket, bpf object-creating commands) return a
    // fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// A region of memory mapped with `mmap`, unmapped on drop.
#[derive(Debug)]
pub struct Mapping {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: a Mapping is a plain owned memory region; which thread unmaps it does not matter.
unsafe impl Send for Mapping {}

impl Mapping {
    /// Maps `len` bytes with `flags` from `fd` at `offset` (or anonymous memory, fd -1).
    pub fn new(len: usize, flags: i32, fd: RawFd, offset: i64) -> io::Result<Mapping> {
        let p = syscall(Syscall::Mmap { len, flags, fd, offset })?;
        Ok(Mapping { ptr: p as *mut u8, len })
    }

    /// Start of the mapping.
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// A mapping is never empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` describe a mapping this object created and still owns; no
        // reference into it outlives the owner (rings and UMEM views borrow from it).
        unsafe {
            libc::munmap(self.ptr.cast(), self.len);
        }
    }
}

/// Raises this process's open-file limit to `want` if it is lower: the soft limit, and
/// the hard limit too where the process may (root: CAP_SYS_RESOURCE, up to
/// `fs.nr_open`). Returns the soft limit now in force, which is below `want` only if
/// the hard limit could not be raised.
pub fn raise_open_files(want: u64) -> io::Result<u64> {
    let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes one `rlimit` into `r`, which lives across the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if r.rlim_cur >= want {
        return Ok(r.rlim_cur);
    }
    let set = |cur: u64, max: u64| {
        let n = libc::rlimit { rlim_cur: cur, rlim_max: max };
        // SAFETY: setrlimit reads one `rlimit` from `n`, which lives across the call.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &n) == 0 }
    };
    if r.rlim_max < want && set(want, want) {
        return Ok(want);
    }
    let cur = want.min(r.rlim_max);
    if set(cur, r.rlim_max) {
        Ok(cur)
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod limit_tests {
    #[test]
    fn the_open_file_limit_is_raised_to_what_is_asked_within_the_hard_limit() {
        let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: as in raise_open_files.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) }, 0);
        assert_eq!(super::raise_open_files(r.rlim_cur / 2).unwrap(), r.rlim_cur, "never lowered");
        if r.rlim_cur < r.rlim_max {
            assert_eq!(super::raise_open_files(r.rlim_cur + 1).unwrap(), r.rlim_cur + 1);
        }
    }
}
