//! Helpers for podswitch's integration tests: a node (a namespace running the real
//! `podswitchd`), pods (namespaces on veths), raw and UDP sockets inside namespaces,
//! and the metrics endpoint. Every guard removes what it made when it drops.
//!
//! Tests need root. Without it they skip with a message, except under `CI=true`, where
//! they fail.

pub mod metrics;
pub mod node;
pub mod raw;
pub mod udp;

pub use control::netns::{pod_veth, NetNs};
pub use node::{podswitchd_path, Node, Pod};
pub use udp::udp_exact;

/// True if the test can run; false (after saying why) if it should skip. Panics under
/// CI=true when not root, so CI never passes by skipping.
pub fn root_or_skip() -> bool {
    // SAFETY: geteuid has no preconditions.
    #[allow(unsafe_code)]
    let root = unsafe { libc::geteuid() } == 0;
    if root {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("this test needs root (network namespaces, XDP); CI must run it as root");
    }
    eprintln!("skipping: needs root (network namespaces, XDP)");
    false
}

/// The worker core for test daemons: the last CPU (tests' own traffic runs wherever
/// the scheduler puts it; daemons idle with back-off, so they share it politely).
pub fn worker_core() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get()) - 1
}

/// Sets a socket's receive buffer to `bytes`, past `net.core.rmem_max` (root only).
pub fn set_rcvbuf(sock: &impl std::os::fd::AsRawFd, bytes: i32) {
    // SAFETY: setsockopt with a valid fd and a live i32.
    #[allow(unsafe_code)]
    let r = unsafe {
        libc::setsockopt(sock.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, (&bytes as *const i32).cast(), 4)
    };
    assert_eq!(r, 0, "SO_RCVBUFFORCE: {}", std::io::Error::last_os_error());
}
