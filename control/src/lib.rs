//! podswitch's control plane: configuration, the daemon that drives switch-core, its
//! metrics endpoint, and the `--demo` topology.
//!
//! | module | one job |
//! |---|---|
//! | [`config`] | the TOML file, validated into switch-core's types |
//! | [`daemon`] | start-up (UMEMs, sockets, XDP), the control thread (learning, ageing, neighbours, publishing), stop |
//! | [`host`] | the host port: a veth pair into the node's namespace, with its routes |
//! | [`metrics`] | Prometheus text over HTTP |
//! | [`netns`] | network namespaces and veths, for the demo and the tests |
//! | [`demo`] | `podswitchd --demo` |

pub mod config;
pub mod daemon;
pub mod demo;
pub mod host;
pub mod metrics;
pub mod netns;
