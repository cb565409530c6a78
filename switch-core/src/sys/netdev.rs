//! What the dataplane reads about a network interface: index, MTU, MAC, queue count.
//!
//! Through ioctls on a socket of the calling thread's network namespace, not sysfs:
//! /sys/class/net shows the namespace sysfs was mounted in, which is not the daemon's
//! when it runs in a namespace of its own.

use super::{syscall, syscall_fd, Syscall};
use std::io;
use std::os::fd::AsRawFd;

const SIOCGIFINDEX: u64 = 0x8933;
const SIOCGIFMTU: u64 = 0x8921;
const SIOCGIFHWADDR: u64 = 0x8927;
const SIOCETHTOOL: u64 = 0x8946;
const ETHTOOL_GCHANNELS: u32 = 0x3c;
const ETHTOOL_STXCSUM: u32 = 0x17;

/// The interface index of `name` (ENODEV if there is none). Through our own socket
/// rather than libc's `if_nametoindex`, which reports a failure to open its socket
/// (out of file descriptors, say) as a missing interface.
pub fn ifindex(name: &str) -> io::Result<u32> {
    let mut r = IfReq::new(name)?;
    r.call(SIOCGIFINDEX)?;
    Ok(r.int() as u32)
}

/// True if `name`'s receive runs in a kernel thread of its own (threaded NAPI:
/// `/sys/class/net/NAME/threaded` set); None if that cannot be read (no such interface,
/// a kernel without it, or no NAPI: a veth has one only with XDP or GRO on).
pub fn napi_threaded(name: &str) -> Option<bool> {
    if name.is_empty() || name.contains('/') || name.starts_with('.') {
        return None;
    }
    let v = std::fs::read_to_string(format!("/sys/class/net/{name}/threaded")).ok()?;
    Some(!matches!(v.trim(), "0" | "disabled"))
}

/// `struct ifreq`: the name, then a 24-byte union.
#[repr(C)]
struct IfReq {
    name: [u8; 16],
    data: [u8; 24],
}

impl IfReq {
    fn new(name: &str) -> io::Result<IfReq> {
        if name.is_empty() || name.len() > 15 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "interface names have 1 to 15 characters"));
        }
        let mut r = IfReq { name: [0; 16], data: [0; 24] };
        r.name[..name.len()].copy_from_slice(name.as_bytes());
        Ok(r)
    }

    /// The union's first member as an `int` (ifr_ifindex, ifr_mtu).
    fn int(&self) -> i32 {
        i32::from_ne_bytes([self.data[0], self.data[1], self.data[2], self.data[3]])
    }

    fn call(&mut self, request: u64) -> io::Result<()> {
        let sock = syscall_fd(Syscall::Socket { domain: libc::AF_INET, ty: libc::SOCK_DGRAM | libc::SOCK_CLOEXEC })?;
        // SAFETY: IfReq is repr(C) bytes; viewing it as a byte slice is sound.
        #[allow(unsafe_code)]
        let arg = unsafe { core::slice::from_raw_parts_mut((self as *mut IfReq).cast::<u8>(), size_of::<IfReq>()) };
        syscall(Syscall::Ioctl { fd: sock.as_raw_fd(), request, arg }).map(drop)
    }
}

/// The interface's MTU.
pub fn mtu(name: &str) -> io::Result<u32> {
    let mut r = IfReq::new(name)?;
    r.call(SIOCGIFMTU)?;
    Ok(r.int() as u32)
}

/// The interface's hardware address (a `struct sockaddr`: family, then the bytes).
pub fn mac(name: &str) -> io::Result<[u8; 6]> {
    let mut r = IfReq::new(name)?;
    r.call(SIOCGIFHWADDR)?;
    let mut m = [0u8; 6];
    m.copy_from_slice(&r.data[2..8]);
    Ok(m)
}

/// How many receive queues the interface has (ethtool channels: rx or combined). An
/// interface whose driver does not report channels has one.
pub fn rx_queues(name: &str) -> io::Result<u32> {
    // struct ethtool_channels: cmd, max_rx, max_tx, max_other, max_combined, rx_count,
    // tx_count, other_count, combined_count.
    let mut ch = [0u32; 9];
    ch[0] = ETHTOOL_GCHANNELS;
    let mut r = IfReq::new(name)?;
    r.data[..8].copy_from_slice(&(ch.as_mut_ptr() as u64).to_ne_bytes());
    match r.call(SIOCETHTOOL) {
        Ok(()) => Ok(ch[5].max(ch[8]).max(1)),
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => Ok(1),
        Err(e) => Err(e),
    }
}

/// Turns transmit checksum offload on or off (`ethtool -K NAME tx on|off`). Needed on
/// veths whose packets reach AF_XDP: it carries bytes, not the skb's "checksum to be
/// filled in" mark, so an offloaded checksum would arrive unfilled.
pub fn set_tx_checksum(name: &str, on: bool) -> io::Result<()> {
    // struct ethtool_value: cmd, data.
    let mut v = [ETHTOOL_STXCSUM, u32::from(on)];
    let mut r = IfReq::new(name)?;
    r.data[..8].copy_from_slice(&(v.as_mut_ptr() as u64).to_ne_bytes());
    r.call(SIOCETHTOOL)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_readable_without_privileges() {
        assert_eq!(ifindex("lo").unwrap(), 1);
        assert_eq!(mtu("lo").unwrap(), 65536);
        assert_eq!(rx_queues("lo").unwrap(), 1);
        assert_eq!(napi_threaded("lo"), Some(false), "no NAPI thread");
    }

    #[test]
    fn missing_interface() {
        assert!(ifindex("nonexistent0").is_err());
        assert!(mtu("nonexistent0").is_err());
        assert!(mtu("much-too-long-interface-name").is_err());
        assert_eq!(napi_threaded("nonexistent0"), None);
        assert_eq!(napi_threaded("../lo"), None, "a name, not a path");
    }
}
