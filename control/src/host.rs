//! The host port: a veth pair between the switch and the namespace podswitchd runs in
//! (the node's own), so that the node reaches every pod and pods reach the node.
//!
//! `NAME-sw` is an ordinary switch port; `NAME` stays in the node with the configured
//! addresses and a route for each of the node's pod CIDRs through the network's
//! gateway. Made with iproute2 (`ip`), which scripts/deps.sh installs; the pair is
//! deleted when the daemon stops, and its routes go with it. A pair left behind by a
//! daemon that was killed is replaced on start.

use crate::config::{HostPortConfig, Routing};
use crate::netns::{ip, run};
use anyhow::{Context, Result};
use switch_core::sys::netdev;

/// The pair, deleted on drop.
#[derive(Debug)]
pub struct HostPort {
    node_side: String,
}

impl HostPort {
    /// Creates the pair with `queues` queues per side (one per worker), addresses and
    /// routes on the node side.
    pub fn create(cfg: &HostPortConfig, routing: &Routing, queues: usize) -> Result<HostPort> {
        let (node, switch) = (cfg.name.as_str(), cfg.switch_side());
        if netdev::ifindex(node).is_ok() {
            tracing::warn!(interface = node, "host port left behind by an earlier run: replacing it");
            ip(&["link", "del", node]).with_context(|| format!("removing the old host port {node}"))?;
        }
        let q = queues.to_string();
        ip(&[
            "link",
            "add",
            &switch,
            "numtxqueues",
            &q,
            "numrxqueues",
            &q,
            "type",
            "veth",
            "peer",
            "name",
            node,
            "numtxqueues",
            &q,
            "numrxqueues",
            &q,
        ])
        .with_context(|| format!("creating the host port veth pair {switch} / {node}"))?;
        let port = HostPort { node_side: node.to_string() };
        // The switch side has no addresses of its own; the node side must not leave
        // checksums to an offload that AF_XDP does not carry.
        run("sysctl", &["-qw", &format!("net.ipv6.conf.{switch}.disable_ipv6=1")])?;
        run("sysctl", &["-qw", &format!("net.ipv6.conf.{node}.accept_dad=0")])?;
        netdev::set_tx_checksum(node, false).with_context(|| format!("turning off tx checksum offload on {node}"))?;
        for (addr, len) in &routing.host_addrs {
            ip(&["addr", "add", &format!("{addr}/{len}"), "dev", node])
                .with_context(|| format!("adding {addr}/{len} to {node}"))?;
        }
        ip(&["link", "set", &switch, "up"])?;
        ip(&["link", "set", node, "up"])?;
        for (prefix, via) in &routing.node_routes {
            ip(&["route", "replace", &prefix.to_string(), "via", &via.to_string(), "dev", node])
                .with_context(|| format!("routing {prefix} via {via} on {node}"))?;
        }
        tracing::info!(node_side = node, switch_side = %switch, routes = routing.node_routes.len(), "host port up");
        Ok(port)
    }
}

impl Drop for HostPort {
    fn drop(&mut self) {
        if let Err(e) = ip(&["link", "del", &self.node_side]) {
            tracing::warn!(interface = %self.node_side, "could not remove the host port: {e:#}");
        }
    }
}
