//! The pod's interfaces, made over rtnetlink in-process: one netlink socket in the
//! runtime's namespace and one opened inside the pod's, so no `ip`/`nsenter` process
//! is started per step (each cost 5–8 ms; ADD made eleven of them).

use crate::spec::{code, CniError};
use futures_util::TryStreamExt;
use rtnetlink::packet_core::ErrorMessage;
use rtnetlink::packet_route::address::{AddressAttribute, AddressFlags};
use rtnetlink::packet_route::link::{InfoData, InfoVeth, LinkAttribute, LinkMessage};
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute};
use rtnetlink::{Handle, LinkUnspec, LinkVeth, RouteMessageBuilder};
use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

/// A netlink error's errno, when the kernel sent one.
fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(ErrorMessage { code: Some(c), .. }) => Some(-c.get()),
        _ => None,
    }
}

fn io(what: impl Into<String>, e: impl ToString) -> CniError {
    CniError::with(code::IO, what, e)
}

/// Opens a netlink connection in the calling thread's namespace and drives it on the
/// current tokio runtime.
fn connect() -> Result<Handle, CniError> {
    let (conn, handle, _) = rtnetlink::new_connection().map_err(|e| io("cannot open a netlink socket", e))?;
    tokio::spawn(conn);
    Ok(handle)
}

/// Enters a network namespace on this thread until dropped.
struct Entered {
    home: File,
}

impl Entered {
    fn enter(ns: &File) -> Result<Entered, CniError> {
        let home =
            File::open("/proc/thread-self/ns/net").map_err(|e| io("cannot open our own network namespace", e))?;
        setns(ns.as_fd())?;
        Ok(Entered { home })
    }
}

impl Drop for Entered {
    fn drop(&mut self) {
        // Going home cannot fail for a namespace we came from; if it did, every
        // later step would act in the pod, so stop rather than go on.
        if setns(self.home.as_fd()).is_err() {
            std::process::abort();
        }
    }
}

fn setns(fd: std::os::fd::BorrowedFd<'_>) -> Result<(), CniError> {
    // SAFETY: setns only reads the descriptor, which the borrow keeps open, and changes
    // this thread's network namespace.
    #[allow(unsafe_code)]
    if unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io("cannot enter the network namespace", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// One interface as the kernel reports it.
#[derive(Debug, Clone)]
pub struct Link {
    /// Its index in its namespace.
    pub index: u32,
    /// Its MAC address, `aa:bb:..`.
    pub mac: String,
}

fn link_of(m: &LinkMessage) -> Link {
    let mac = m
        .attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::Address(b) => Some(b.iter().map(|x| format!("{x:02x}")).collect::<Vec<_>>().join(":")),
            _ => None,
        })
        .unwrap_or_default();
    Link { index: m.header.index, mac }
}

/// Netlink in the runtime's namespace (the host side of the veth).
pub struct Host {
    nl: Handle,
}

impl Host {
    /// Connects in the current namespace.
    pub fn open() -> Result<Host, CniError> {
        Ok(Host { nl: connect()? })
    }

    /// The interface called `name`, if there is one.
    pub async fn find(&self, name: &str) -> Result<Option<Link>, CniError> {
        find(&self.nl, name).await
    }

    /// Deletes interface `index` (a veth takes its peer with it).
    pub async fn delete(&self, index: u32) -> Result<(), CniError> {
        match self.nl.link().del(index).execute().await {
            Ok(()) => Ok(()),
            Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(()),
            Err(e) => Err(io(format!("cannot delete interface {index}"), e)),
        }
    }

    /// Creates veth `host` here with its peer born in `pod` as `ifname` (with `mac`
    /// when given), `queues` queues each way on both ends.
    pub async fn add_veth(
        &self,
        host: &str,
        pod: &Pod,
        ifname: &str,
        queues: u32,
        mtu: Option<u32>,
        mac: Option<[u8; 6]>,
    ) -> Result<(), CniError> {
        fn q<T>(b: rtnetlink::LinkMessageBuilder<T>, queues: u32) -> rtnetlink::LinkMessageBuilder<T> {
            b.append_extra_attribute(LinkAttribute::NumRxQueues(queues))
                .append_extra_attribute(LinkAttribute::NumTxQueues(queues))
        }
        let mut peer = q(LinkUnspec::new_with_name(ifname), queues).setns_by_fd(pod.ns.as_raw_fd());
        let mut this = q(LinkVeth::new(host, ifname), queues);
        if let Some(m) = mtu {
            peer = peer.mtu(m);
            this = this.mtu(m);
        }
        if let Some(m) = mac {
            peer = peer.address(m.to_vec());
        }
        let msg = this.set_info_data(InfoData::Veth(InfoVeth::Peer(peer.build()))).build();
        match self.nl.link().add(msg).execute().await {
            Ok(()) => Ok(()),
            Err(e) if errno(&e) == Some(libc::EEXIST) => Err(CniError::new(
                code::IO,
                format!(
                    "{host} here or {ifname} in the pod already exists: the pod is already attached \
                     (run DEL first) or another plugin made {ifname}"
                ),
            )),
            Err(e) => Err(io(format!("cannot create veth {host}"), e)),
        }
    }

    /// Sets interface `index` up.
    pub async fn up(&self, index: u32) -> Result<(), CniError> {
        up(&self.nl, index).await
    }

    /// Turns IPv6 off on the switch end `name` (call before it goes up): the switch
    /// takes every frame, so the end needs no address, and a link-local one would cost
    /// the node's kernel a route, duplicate address detection and MLD reports per pod.
    /// Done as `sysctl -w net.ipv6.conf.NAME.disable_ipv6=1` does, through /proc/sys,
    /// which shows this thread's namespace. A kernel without IPv6 has nothing to turn off.
    pub fn ipv6_off(&self, name: &str) -> Result<(), CniError> {
        match std::fs::write(format!("/proc/sys/net/ipv6/conf/{name}/disable_ipv6"), "1") {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(io(format!("cannot turn IPv6 off on {name} (net.ipv6.conf.{name}.disable_ipv6)"), e))
            }
            _ => Ok(()),
        }
    }
}

/// Netlink (and an ethtool socket) inside the pod's namespace.
pub struct Pod {
    ns: File,
    nl: Handle,
    ethtool: OwnedFd,
}

impl Pod {
    /// Opens the pod namespace at `path` (`/run/netns/NAME` or `/proc/PID/ns/net`).
    pub fn open(path: &str) -> Result<Pod, CniError> {
        let ns = File::open(path)
            .map_err(|e| CniError::with(code::UNKNOWN_CONTAINER, format!("cannot open CNI_NETNS {path}"), e))?;
        let entered = Entered::enter(&ns)?;
        let nl = connect()?;
        // Any socket of the namespace carries ethtool ioctls.
        let ethtool = std::net::UdpSocket::bind("0.0.0.0:0")
            .map_err(|e| io("cannot open an ethtool socket in the pod", e))?
            .into();
        drop(entered);
        Ok(Pod { ns, nl, ethtool })
    }

    /// The interface called `name` in the pod, if there is one.
    pub async fn find(&self, name: &str) -> Result<Option<Link>, CniError> {
        find(&self.nl, name).await
    }

    /// Sets interface `index` up.
    pub async fn up(&self, index: u32) -> Result<(), CniError> {
        up(&self.nl, index).await
    }

    /// Turns off transmit checksum offload, TSO and GSO on `name`: AF_XDP carries bytes,
    /// not the kernel's offload metadata, so the pod must send finished frames.
    ///
    /// By hand over SIOCETHTOOL: three fixed-size legacy requests; the ethtool netlink
    /// family would need a genetlink resolve and a feature-name table for the same.
    pub fn offloads_off(&self, name: &str) -> Result<(), CniError> {
        const ETHTOOL_STXCSUM: u32 = 0x17;
        const ETHTOOL_STSO: u32 = 0x1f;
        const ETHTOOL_SGSO: u32 = 0x24;
        #[repr(C)]
        struct EthtoolValue {
            cmd: u32,
            data: u32,
        }
        for cmd in [ETHTOOL_STSO, ETHTOOL_SGSO, ETHTOOL_STXCSUM] {
            let mut v = EthtoolValue { cmd, data: 0 };
            let mut req = libc::ifreq {
                ifr_name: [0; libc::IFNAMSIZ],
                ifr_ifru: libc::__c_anonymous_ifr_ifru { ifru_data: (&raw mut v).cast() },
            };
            for (d, s) in req.ifr_name.iter_mut().zip(name.bytes().take(libc::IFNAMSIZ - 1)) {
                *d = s as libc::c_char;
            }
            // SAFETY: SIOCETHTOOL reads the ifreq and the ethtool_value it points to,
            // both alive on this stack frame for the call.
            #[allow(unsafe_code)]
            if unsafe { libc::ioctl(self.ethtool.as_raw_fd(), libc::SIOCETHTOOL, &mut req) } != 0 {
                return Err(io(
                    format!("cannot turn off offloads on {name} in the pod"),
                    std::io::Error::last_os_error(),
                ));
            }
        }
        Ok(())
    }

    /// Adds `addr/len` to interface `index` (IPv6 without duplicate detection: the
    /// daemon allocated it uniquely).
    pub async fn add_address(&self, index: u32, addr: IpAddr, len: u8) -> Result<(), CniError> {
        let mut req = self.nl.address().add(index, addr, len);
        if addr.is_ipv6() {
            req.message_mut().attributes.push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        req.execute().await.map_err(|e| io(format!("cannot add {addr}/{len} in the pod"), e))
    }

    /// The addresses on interface `index`, as `addr/len`.
    pub async fn addresses(&self, index: u32) -> Result<Vec<String>, CniError> {
        let msgs: Vec<_> = self
            .nl
            .address()
            .get()
            .set_link_index_filter(index)
            .execute()
            .try_collect()
            .await
            .map_err(|e| io("cannot list the pod's addresses", e))?;
        Ok(msgs
            .iter()
            .filter_map(|m| {
                m.attributes.iter().find_map(|a| match a {
                    AddressAttribute::Address(ip) => Some(format!("{ip}/{}", m.header.prefix_len)),
                    _ => None,
                })
            })
            .collect())
    }

    /// Adds a default route via `gw` out of interface `index`.
    pub async fn add_default_route(&self, index: u32, gw: IpAddr) -> Result<(), CniError> {
        let msg = match gw {
            IpAddr::V4(g) => RouteMessageBuilder::<Ipv4Addr>::new().output_interface(index).gateway(g).build(),
            IpAddr::V6(g) => RouteMessageBuilder::<Ipv6Addr>::new().output_interface(index).gateway(g).build(),
        };
        self.nl.route().add(msg).execute().await.map_err(|e| io(format!("cannot add a default route via {gw}"), e))
    }

    /// Whether the pod has a default route via `gw` out of interface `index`.
    pub async fn has_default_route(&self, index: u32, gw: IpAddr) -> Result<bool, CniError> {
        let q = match gw {
            IpAddr::V4(_) => RouteMessageBuilder::<Ipv4Addr>::new().build(),
            IpAddr::V6(_) => RouteMessageBuilder::<Ipv6Addr>::new().build(),
        };
        let routes: Vec<_> =
            self.nl.route().get(q).execute().try_collect().await.map_err(|e| io("cannot list the pod's routes", e))?;
        let want = RouteAddress::from(gw);
        Ok(routes.iter().any(|r| {
            r.header.destination_prefix_length == 0
                && r.attributes.contains(&RouteAttribute::Gateway(want.clone()))
                && r.attributes.contains(&RouteAttribute::Oif(index))
        }))
    }
}

async fn find(nl: &Handle, name: &str) -> Result<Option<Link>, CniError> {
    let mut s = nl.link().get().match_name(name.to_string()).execute();
    match s.try_next().await {
        Ok(m) => Ok(m.as_ref().map(link_of)),
        Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(None),
        Err(e) => Err(io(format!("cannot look up {name}"), e)),
    }
}

async fn up(nl: &Handle, index: u32) -> Result<(), CniError> {
    nl.link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(|e| io(format!("cannot set interface {index} up"), e))
}
