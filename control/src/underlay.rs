//! The underlay watcher: finds the MAC of each peer's underlay next hop in the
//! kernel's tables, and hands changes to the tunnel table.
//!
//! The kernel owns the uplink's addresses, answers ARP and neighbour discovery for
//! them and keeps the neighbour table; the switch sends on the uplink behind its back,
//! so it asks the kernel, over netlink: the route to each peer (its gateway, or the peer
//! itself when it is on the link), then the neighbour entry for that next hop. An entry
//! that is missing or stale is refreshed with `NTF_USE`, which makes the kernel
//! resolve (or re-confirm) it as if it had a packet to send; that also keeps entries
//! the switch relies on from being garbage-collected, since the kernel never sees the
//! switch's traffic. While a peer is unresolved it looks again after 10 ms, then 20,
//! 40... up to a second; once all are resolved, every second.

use crate::engine::Live;
use futures_util::TryStreamExt;
use rtnetlink::packet_route::neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourState};
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute};
use rtnetlink::{Handle, RouteMessageBuilder};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use switch_core::sys::netdev;
use switch_core::wire::EthernetAddress;

const FIRST: Duration = Duration::from_millis(10);
const SLOW: Duration = Duration::from_secs(1);

/// The watcher thread; stopped and joined on drop.
#[derive(Debug)]
pub struct UnderlayWatch {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl UnderlayWatch {
    /// Watches the next hops of the peers `live` has, on `uplink`.
    pub fn start(uplink: String, live: Arc<Mutex<Live>>, cpus: Vec<usize>) -> std::io::Result<UnderlayWatch> {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::Builder::new().name("ps-underlay".into()).spawn(move || {
            crate::daemon::pin_to(&cpus);
            let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!("underlay watcher: no runtime: {e}; peers stay unresolved");
                    return;
                }
            };
            rt.block_on(watch(&uplink, &live, &s));
        })?;
        Ok(UnderlayWatch { stop, thread: Some(thread) })
    }
}

impl Drop for UnderlayWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn watch(uplink: &str, live: &Mutex<Live>, stop: &AtomicBool) {
    let (conn, handle, _) = match rtnetlink::new_connection() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("underlay watcher: no netlink socket: {e}; peers stay unresolved");
            return;
        }
    };
    tokio::spawn(conn);
    let mut complained: HashMap<IpAddr, String> = HashMap::new();
    let mut retry = FIRST;
    while !stop.load(Ordering::Relaxed) {
        let peers = live.lock().unwrap_or_else(|e| e.into_inner()).peer_addresses();
        let mut found = HashMap::new();
        if let Ok(ifindex) = netdev::ifindex(uplink) {
            for peer in &peers {
                match next_hop_mac(&handle, ifindex, *peer).await {
                    Ok(Some(mac)) => {
                        if complained.remove(peer).is_some() {
                            tracing::info!(%peer, %mac, "peer's underlay next hop resolved");
                        }
                        found.insert(*peer, mac);
                    }
                    Ok(None) => {}
                    Err(why) => {
                        if complained.get(peer) != Some(&why) {
                            tracing::warn!(%peer, "peer unreachable over the underlay: {why}");
                            complained.insert(*peer, why);
                        }
                    }
                }
            }
        }
        let all = found.len() == peers.len();
        live.lock().unwrap_or_else(|e| e.into_inner()).set_next_hops(found);
        let wait = if all {
            retry = FIRST;
            SLOW
        } else {
            retry = (retry * 2).min(SLOW);
            retry / 2
        };
        let mut waited = Duration::ZERO;
        while waited < wait && !stop.load(Ordering::Relaxed) {
            let step = (wait - waited).min(Duration::from_millis(20));
            tokio::time::sleep(step).await;
            waited += step;
        }
    }
}

/// The MAC of the next hop towards `peer` on `ifindex`: Some when the kernel has a
/// usable entry, None while it resolves (it is asked to), Err when the kernel routes
/// the peer elsewhere or not at all.
async fn next_hop_mac(handle: &Handle, ifindex: u32, peer: IpAddr) -> Result<Option<EthernetAddress>, String> {
    let msg = match peer {
        IpAddr::V4(a) => RouteMessageBuilder::<Ipv4Addr>::new().destination_prefix(a, 32).build(),
        IpAddr::V6(a) => RouteMessageBuilder::<Ipv6Addr>::new().destination_prefix(a, 128).build(),
    };
    let route = handle
        .route()
        .get(msg)
        .execute()
        .try_next()
        .await
        .map_err(|e| format!("no route to it in the node's namespace: {e}"))?
        .ok_or_else(|| "no route to it in the node's namespace".to_string())?;
    let mut hop = peer;
    let mut oif = None;
    for a in &route.attributes {
        match a {
            RouteAttribute::Gateway(RouteAddress::Inet(g)) => hop = IpAddr::V4(*g),
            RouteAttribute::Gateway(RouteAddress::Inet6(g)) => hop = IpAddr::V6(*g),
            RouteAttribute::Oif(i) => oif = Some(*i),
            _ => {}
        }
    }
    if oif != Some(ifindex) {
        return Err(format!("the node routes it through interface index {oif:?}, not the uplink ({ifindex})"));
    }
    let mut entries = handle.neighbours().get().execute();
    let mut state = None;
    while let Ok(Some(n)) = entries.try_next().await {
        if n.header.ifindex != ifindex {
            continue;
        }
        let dst = n.attributes.iter().find_map(|a| match a {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(x)) => Some(IpAddr::V4(*x)),
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(x)) => Some(IpAddr::V6(*x)),
            _ => None,
        });
        if dst != Some(hop) {
            continue;
        }
        let mac = n.attributes.iter().find_map(|a| match a {
            NeighbourAttribute::LinkLayerAddress(l) if l.len() == 6 => Some(EthernetAddress::from_bytes(l)),
            _ => None,
        });
        state = Some((n.header.state, mac));
    }
    // Ask the kernel to resolve, or to confirm what it has (NTF_USE), unless the entry
    // is fresh or fixed.
    let fresh =
        matches!(state, Some((NeighbourState::Reachable | NeighbourState::Permanent | NeighbourState::Noarp, _)));
    if !fresh {
        let _ = handle
            .neighbours()
            .add(ifindex, hop)
            .state(NeighbourState::None)
            .flags(NeighbourFlags::Use)
            .replace()
            .execute()
            .await;
    }
    Ok(match state {
        Some((NeighbourState::Failed | NeighbourState::Incomplete | NeighbourState::None, _)) | None => None,
        Some((_, mac)) => mac,
    })
}
