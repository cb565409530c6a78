//! Raw Ethernet frames into and out of a pod, through an AF_PACKET socket made inside
//! the pod's namespace.

use crate::NetNs;
use anyhow::{bail, Result};
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// An AF_PACKET socket bound to one interface of one namespace, seeing every frame.
pub struct RawSocket {
    fd: OwnedFd,
    ifindex: i32,
}

impl RawSocket {
    /// Opens a socket on `ifname` inside `ns`.
    pub fn open(ns: &NetNs, ifname: &str) -> Result<RawSocket> {
        let ifname = ifname.to_string();
        ns.within(move || -> Result<RawSocket> {
            let proto = (libc::ETH_P_ALL as u16).to_be() as i32;
            // SAFETY: plain syscalls with valid arguments; the returned fd is owned below.
            #[allow(unsafe_code)]
            unsafe {
                let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, proto);
                if fd < 0 {
                    bail!("socket(AF_PACKET): {}", std::io::Error::last_os_error());
                }
                let fd = OwnedFd::from_raw_fd(fd);
                let c = CString::new(ifname.clone())?;
                let ifindex = libc::if_nametoindex(c.as_ptr()) as i32;
                if ifindex == 0 {
                    bail!("no interface {ifname}");
                }
                let mut sll: libc::sockaddr_ll = core::mem::zeroed();
                sll.sll_family = libc::AF_PACKET as u16;
                sll.sll_protocol = proto as u16;
                sll.sll_ifindex = ifindex;
                let r = libc::bind(
                    fd.as_raw_fd(),
                    (&sll as *const libc::sockaddr_ll).cast(),
                    size_of::<libc::sockaddr_ll>() as u32,
                );
                if r != 0 {
                    bail!("bind AF_PACKET: {}", std::io::Error::last_os_error());
                }
                // Tags the kernel strips on receive come back as auxiliary data; `recv`
                // puts them back so callers see the frame as it was on the wire.
                let one: i32 = 1;
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_PACKET,
                    libc::PACKET_AUXDATA,
                    (&one as *const i32).cast(),
                    4,
                );
                let tv = libc::timeval { tv_sec: 0, tv_usec: 50_000 };
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_RCVTIMEO,
                    (&tv as *const libc::timeval).cast(),
                    size_of::<libc::timeval>() as u32,
                );
                Ok(RawSocket { fd, ifindex })
            }
        })?
    }

    /// Sends one frame as it is.
    pub fn send(&self, frame: &[u8]) -> Result<()> {
        // SAFETY: sockaddr_ll is plain data; zeroed is valid.
        #[allow(unsafe_code)]
        let mut sll: libc::sockaddr_ll = unsafe { core::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_ifindex = self.ifindex;
        sll.sll_halen = 6;
        // SAFETY: `frame` and `sll` are live for the call.
        #[allow(unsafe_code)]
        let r = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&sll as *const libc::sockaddr_ll).cast(),
                size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if r < 0 {
            bail!("sendto: {}", std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Frames received for up to `wait` that `keep` accepts (incoming only), with any
    /// VLAN tag the kernel stripped put back in place.
    pub fn recv_matching(&self, wait: Duration, keep: impl Fn(&[u8]) -> bool) -> Vec<Vec<u8>> {
        let deadline = Instant::now() + wait;
        let mut got = Vec::new();
        let mut buf = vec![0u8; 4096];
        let mut cbuf = [0u64; 16];
        while Instant::now() < deadline {
            // SAFETY: plain data; zeroed is valid.
            #[allow(unsafe_code)]
            let mut from: libc::sockaddr_ll = unsafe { core::mem::zeroed() };
            let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
            // SAFETY: plain data; zeroed is valid.
            #[allow(unsafe_code)]
            let mut msg: libc::msghdr = unsafe { core::mem::zeroed() };
            msg.msg_name = (&mut from as *mut libc::sockaddr_ll).cast();
            msg.msg_namelen = size_of::<libc::sockaddr_ll>() as u32;
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = cbuf.as_mut_ptr().cast();
            msg.msg_controllen = size_of_val(&cbuf);
            // SAFETY: every pointer in msg refers to a live local buffer of the given size.
            #[allow(unsafe_code)]
            let n = unsafe { libc::recvmsg(self.fd.as_raw_fd(), &mut msg, 0) };
            if n <= 0 || from.sll_pkttype == libc::PACKET_OUTGOING {
                continue;
            }
            let mut f = buf[..n as usize].to_vec();
            // SAFETY: msg was filled by recvmsg; the CMSG macros walk its control buffer.
            #[allow(unsafe_code)]
            unsafe {
                let mut c = libc::CMSG_FIRSTHDR(&msg);
                while !c.is_null() {
                    if (*c).cmsg_level == libc::SOL_PACKET && (*c).cmsg_type == libc::PACKET_AUXDATA {
                        let aux = (libc::CMSG_DATA(c) as *const libc::tpacket_auxdata).read_unaligned();
                        if aux.tp_status & libc::TP_STATUS_VLAN_VALID != 0 && f.len() >= 12 {
                            let tpid = if aux.tp_status & libc::TP_STATUS_VLAN_TPID_VALID != 0 {
                                aux.tp_vlan_tpid
                            } else {
                                0x8100
                            };
                            let mut tag = tpid.to_be_bytes().to_vec();
                            tag.extend_from_slice(&aux.tp_vlan_tci.to_be_bytes());
                            f.splice(12..12, tag);
                        }
                    }
                    c = libc::CMSG_NXTHDR(&msg, c);
                }
            }
            if keep(&f) {
                got.push(f);
            }
        }
        got
    }
}

/// Parses "aa:bb:cc:dd:ee:ff".
pub fn mac(s: &str) -> [u8; 6] {
    let mut m = [0u8; 6];
    for (i, p) in s.split(':').enumerate().take(6) {
        m[i] = u8::from_str_radix(p, 16).expect("hex MAC");
    }
    m
}

/// An Ethernet frame: dst, src, EtherType, payload.
pub fn frame(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + payload.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// Test frames use the IEEE local experimental EtherType, so nothing else matches them.
pub const TEST_ETHERTYPE: u16 = 0x88b5;
