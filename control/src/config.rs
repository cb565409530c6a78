//! `podswitchd --config FILE`: the TOML configuration, and its validation into the
//! dataplane's types. Unknown keys are errors, so a typo never silently does nothing.

use serde::Deserialize;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use switch_core::tables::{NetworkId, NetworkSpec, PortId, PortMode, PortSpec, Topology};
use switch_core::wire::{EthernetAddress, VlanId};
use switch_core::worker::IdlePolicy;
use switch_core::xdp::XdpMode;
use switch_core::xsk::HugepagePolicy;

/// The whole file.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Workers, memory, attach mode.
    #[serde(default)]
    pub dataplane: Dataplane,
    /// Prometheus endpoint, e.g. "127.0.0.1:9464". None: no endpoint.
    #[serde(default)]
    pub metrics_address: Option<SocketAddr>,
    /// Log level filter (trace, debug, info, warn, error), overridden by RUST_LOG.
    #[serde(default = "default_log_level")]
    pub log_level: String,
    /// Bridge domains.
    #[serde(default)]
    pub networks: Vec<NetworkConfig>,
    /// Ports and how they join networks.
    #[serde(default)]
    pub ports: Vec<PortConfig>,
}

fn default_log_level() -> String {
    "info".into()
}

/// `[dataplane]`: keys left out take their defaults.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Dataplane {
    /// One worker per listed CPU, pinned to it. Keep them off the cores that send to
    /// the switch's veths (the kernel's receive work runs there).
    pub cores: Vec<usize>,
    /// "poll" (spin) or "backoff" (sleep up to `backoff_max_us` when idle).
    pub idle: Idle,
    /// Longest idle sleep, microseconds.
    pub backoff_max_us: u32,
    /// "auto", "require" or "off".
    pub hugepages: Hugepages,
    /// UMEM frame size: 2048 or 4096.
    pub frame_size: u32,
    /// UMEM frames per worker; derived from the ports' rings when absent.
    pub umem_frames: Option<u32>,
    /// Entries in each AF_XDP ring (rx, tx, fill, completion): a power of two.
    pub ring_size: u32,
    /// "native-or-generic", "native" or "generic".
    pub xdp_mode: Mode,
    /// Port ids are below this.
    pub max_ports: u16,
    /// Learned MAC entries at most.
    pub fdb_capacity: u32,
}

impl Default for Dataplane {
    fn default() -> Self {
        Dataplane {
            cores: vec![1],
            idle: Idle::Poll,
            backoff_max_us: 200,
            hugepages: Hugepages::Auto,
            frame_size: 4096,
            umem_frames: None,
            ring_size: 2048,
            xdp_mode: Mode::NativeOrGeneric,
            max_ports: 256,
            fdb_capacity: 65536,
        }
    }
}

/// Idle policy names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Idle {
    /// Spin.
    Poll,
    /// Sleep when idle.
    Backoff,
}

/// Hugepage policy names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Hugepages {
    /// Use when free.
    Auto,
    /// Refuse to start without.
    Require,
    /// Never.
    Off,
}

/// XDP attach mode names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Native, else generic.
    NativeOrGeneric,
    /// Native only.
    Native,
    /// Generic only.
    Generic,
}

/// `[[networks]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkConfig {
    /// Unique name.
    pub name: String,
    /// MAC ageing, seconds.
    #[serde(default = "default_ageing")]
    pub ageing_s: u32,
}

fn default_ageing() -> u32 {
    300
}

/// `[[ports]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortConfig {
    /// The interface (in the daemon's network namespace).
    pub name: String,
    /// Access port: the network of its untagged frames.
    pub network: Option<String>,
    /// Trunk port: VLAN → network.
    #[serde(default)]
    pub vlans: Vec<VlanConfig>,
    /// Trunk port: network of untagged frames.
    pub native: Option<String>,
    /// MACs behind this port, installed statically.
    #[serde(default)]
    pub macs: Vec<String>,
}

/// One VLAN on a trunk.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VlanConfig {
    /// 1..=4094.
    pub vid: u16,
    /// Network name.
    pub network: String,
}

/// A configuration that cannot be used, and why.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Unreadable file.
    #[error("cannot read {path}: {source}")]
    Read {
        /// Path.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// Bad TOML or a wrong key.
    #[error("{path}: {message}")]
    Parse {
        /// Path.
        path: String,
        /// What toml says (line, column, key).
        message: String,
    },
    /// Valid TOML, invalid meaning.
    #[error("{0}")]
    Invalid(String),
}

impl Config {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
        let cfg = Config::parse(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse { path: path.display().to_string(), message },
            ConfigError::Invalid(m) => ConfigError::Invalid(format!("{}: {m}", path.display())),
            e => e,
        })?;
        Ok(cfg)
    }

    /// Parses and validates TOML text.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let cfg: Config =
            toml::from_str(text).map_err(|e| ConfigError::Parse { path: "config".into(), message: e.to_string() })?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        let d = &self.dataplane;
        if d.cores.is_empty() {
            return bad("dataplane.cores is empty: list at least one CPU for a worker, e.g. cores = [1]".into());
        }
        let ncpu = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut seen = HashSet::new();
        for c in &d.cores {
            if *c >= ncpu {
                return bad(format!(
                    "dataplane.cores: CPU {c} does not exist (this machine has CPUs 0..={})",
                    ncpu - 1
                ));
            }
            if !seen.insert(c) {
                return bad(format!("dataplane.cores: CPU {c} is listed twice; one worker per core"));
            }
        }
        if d.frame_size != 2048 && d.frame_size != 4096 {
            return bad(format!("dataplane.frame_size = {}: must be 2048 or 4096", d.frame_size));
        }
        if !d.ring_size.is_power_of_two() || !(64..=16384).contains(&d.ring_size) {
            return bad(format!("dataplane.ring_size = {}: must be a power of two from 64 to 16384", d.ring_size));
        }
        if d.max_ports == 0 {
            return bad("dataplane.max_ports must be at least 1".into());
        }
        self.topology()?;
        Ok(())
    }

    /// Worker idle policy.
    pub fn idle_policy(&self) -> IdlePolicy {
        match self.dataplane.idle {
            Idle::Poll => IdlePolicy::Poll,
            Idle::Backoff => IdlePolicy::Backoff { max_us: self.dataplane.backoff_max_us },
        }
    }

    /// Hugepage policy.
    pub fn hugepage_policy(&self) -> HugepagePolicy {
        match self.dataplane.hugepages {
            Hugepages::Auto => HugepagePolicy::Auto,
            Hugepages::Require => HugepagePolicy::Require,
            Hugepages::Off => HugepagePolicy::Off,
        }
    }

    /// XDP attach mode.
    pub fn xdp_mode(&self) -> XdpMode {
        match self.dataplane.xdp_mode {
            Mode::NativeOrGeneric => XdpMode::NativeOrGeneric,
            Mode::Native => XdpMode::Native,
            Mode::Generic => XdpMode::Generic,
        }
    }

    /// The networks and ports as the dataplane's specs, ids in file order.
    pub fn specs(&self) -> Result<(Vec<NetworkSpec>, Vec<PortSpec>), ConfigError> {
        let bad = |m: String| ConfigError::Invalid(m);
        let mut nets = Vec::new();
        for (i, n) in self.networks.iter().enumerate() {
            if n.name.is_empty() {
                return Err(bad(format!("networks[{i}]: name is empty")));
            }
            if n.ageing_s == 0 {
                return Err(bad(format!("network {:?}: ageing_s must be at least 1 second", n.name)));
            }
            nets.push(NetworkSpec { id: NetworkId(i as u16), name: n.name.clone(), ageing_s: n.ageing_s });
        }
        let net_id = |port: &str, name: &str| {
            nets.iter().find(|n| n.name == name).map(|n| n.id).ok_or_else(|| {
                let known: Vec<_> = nets.iter().map(|n| n.name.as_str()).collect();
                bad(format!("port {port:?}: network {name:?} is not defined (networks: {known:?})"))
            })
        };
        let mut ports = Vec::new();
        for (i, p) in self.ports.iter().enumerate() {
            if p.name.is_empty() || p.name.len() > 15 {
                return Err(bad(format!("ports[{i}]: interface name {:?} must be 1 to 15 characters", p.name)));
            }
            let mode = match (&p.network, p.vlans.is_empty(), &p.native) {
                (Some(n), true, None) => PortMode::Access { network: net_id(&p.name, n)? },
                (None, false, native) => {
                    let mut vlans = Vec::new();
                    for v in &p.vlans {
                        let vid = VlanId::new(v.vid).ok_or_else(|| {
                            bad(format!("port {:?}: VLAN {} is out of range (1 to 4094)", p.name, v.vid))
                        })?;
                        vlans.push((vid, net_id(&p.name, &v.network)?));
                    }
                    let native = native.as_deref().map(|n| net_id(&p.name, n)).transpose()?;
                    PortMode::Trunk { vlans, native }
                }
                (None, true, _) => {
                    return Err(bad(format!(
                        "port {:?}: give either network = \"NAME\" (access port) or vlans = [...] (trunk port)",
                        p.name
                    )))
                }
                (Some(_), _, _) => {
                    return Err(bad(format!(
                        "port {:?}: network (access) and vlans/native (trunk) cannot be combined",
                        p.name
                    )))
                }
            };
            let mut macs = Vec::new();
            for m in &p.macs {
                let mac: EthernetAddress = m.parse().map_err(|e| bad(format!("port {:?}: {e}", p.name)))?;
                if !mac.is_unicast() {
                    return Err(bad(format!("port {:?}: static MAC {m} must be a unicast address", p.name)));
                }
                macs.push(mac);
            }
            ports.push(PortSpec { id: PortId(i as u16), name: p.name.clone(), mode, static_macs: macs });
        }
        Ok((nets, ports))
    }

    /// The compiled topology.
    pub fn topology(&self) -> Result<Topology, ConfigError> {
        let (nets, ports) = self.specs()?;
        Topology::new(&nets, &ports, self.dataplane.max_ports).map_err(|e| ConfigError::Invalid(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
        metrics_address = "127.0.0.1:9464"
        [dataplane]
        cores = [0]
        idle = "backoff"
        [[networks]]
        name = "red"
        [[networks]]
        name = "blue"
        ageing_s = 10
        [[ports]]
        name = "veth-a"
        network = "red"
        macs = ["02:00:00:00:00:0a"]
        [[ports]]
        name = "trunk0"
        vlans = [{ vid = 100, network = "red" }, { vid = 200, network = "blue" }]
    "#;

    #[test]
    fn good_config_compiles() {
        let c = Config::parse(GOOD).unwrap();
        assert_eq!(c.dataplane.ring_size, 2048, "defaults fill what the file leaves out");
        assert_eq!(c.idle_policy(), IdlePolicy::Backoff { max_us: 200 });
        let t = c.topology().unwrap();
        assert_eq!(t.network_by_name("blue").unwrap().spec.ageing_s, 10);
        assert_eq!(t.ports().count(), 2);
    }

    fn err(text: &str) -> String {
        Config::parse(text).unwrap_err().to_string()
    }

    #[test]
    fn errors_name_the_problem() {
        let e = err("[dataplane]\ncores = [0]\nring_sise = 64\n");
        assert!(e.contains("ring_sise"), "{e}");
        let e = err("[dataplane]\ncores = []\n");
        assert!(e.contains("cores is empty"), "{e}");
        let e = err("[dataplane]\ncores = [9999]\n");
        assert!(e.contains("CPU 9999 does not exist"), "{e}");
        let e = err("[dataplane]\ncores = [0]\nring_size = 1000\n");
        assert!(e.contains("power of two"), "{e}");
        let e = err("[dataplane]\ncores=[0]\n[[ports]]\nname = \"a\"\nnetwork = \"nope\"\n");
        assert!(e.contains("network \"nope\" is not defined"), "{e}");
        let e = err("[dataplane]\ncores=[0]\n[[networks]]\nname=\"n\"\n[[ports]]\nname = \"a\"\n");
        assert!(e.contains("either network"), "{e}");
        let e = err("[dataplane]\ncores=[0]\n[[networks]]\nname=\"n\"\n[[ports]]\nname=\"a\"\nvlans=[{vid=4095, network=\"n\"}]\n");
        assert!(e.contains("VLAN 4095 is out of range"), "{e}");
        let e = err(
            "[dataplane]\ncores=[0]\n[[networks]]\nname=\"n\"\n[[ports]]\nname=\"a\"\nnetwork=\"n\"\nmacs=[\"zz\"]\n",
        );
        assert!(e.contains("invalid MAC"), "{e}");
        let e = err("[dataplane]\ncores=[0]\n[[networks]]\nname=\"n\"\n[[ports]]\nname=\"a\"\nnetwork=\"n\"\n[[ports]]\nname=\"a\"\nnetwork=\"n\"\n");
        assert!(e.contains("duplicate port"), "{e}");
        let e = err("[dataplane]\ncores=[0]\nhugepages = \"sometimes\"\n");
        assert!(e.contains("sometimes"), "{e}");
    }
}
