//! What the dataplane reads about a network interface: index, MTU, queue count.

use std::ffi::CString;
use std::io;

/// The interface index of `name`, or `NotFound`.
pub fn ifindex(name: &str) -> io::Result<u32> {
    let c = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `c` is a valid NUL-terminated string that lives across the call.
    #[allow(unsafe_code)]
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(idx)
    }
}

fn read_sys(name: &str, file: &str) -> io::Result<String> {
    Ok(
        std::fs::read_to_string(format!("/sys/class/net/{name}/{file}"))?
            .trim()
            .to_string(),
    )
}

/// The interface's MTU.
pub fn mtu(name: &str) -> io::Result<u32> {
    read_sys(name, "mtu")?
        .parse()
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidData))
}

/// How many receive queues the interface has (`rx-N` entries in sysfs).
pub fn rx_queues(name: &str) -> io::Result<u32> {
    let n = std::fs::read_dir(format!("/sys/class/net/{name}/queues"))?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
        .count();
    Ok(n as u32)
}

/// The kernel's driver name for the interface (`veth`, `ixgbe`, ...), if it says.
pub fn driver(name: &str) -> Option<String> {
    let link = std::fs::read_link(format!("/sys/class/net/{name}/device/driver")).ok();
    if let Some(l) = link {
        return l.file_name().map(|f| f.to_string_lossy().into_owned());
    }
    // Virtual devices have no device/driver link; uevent names the kind.
    read_sys(name, "uevent").ok().and_then(|u| {
        u.lines()
            .find_map(|l| l.strip_prefix("DEVTYPE=").map(str::to_string))
    })
}
