//! podswitch's control plane: configuration, the daemon that drives switch-core, its
//! metrics endpoint, and the `--demo` topology.
//!
//! | module | one job |
//! |---|---|
//! | [`api`] | the generated gRPC types (`proto/podswitch/v1`) |
//! | [`client`] | a channel to the daemon's control socket |
//! | [`config`] | the TOML file, validated into switch-core's types |
//! | [`state`] | the desired state and the checks every change passes |
//! | [`store`] | the state on disk: snapshot and journal, fsynced before answering |
//! | [`engine`] | applies the desired state to the dataplane (ports, tables) |
//! | [`server`] | the gRPC API on the control socket |
//! | [`summary`] | one-line frame summaries for traces |
//! | [`daemon`] | start-up (UMEMs, workers, restore), the control thread (learning, ageing, neighbours, publishing), stop |
//! | [`host`] | the host port: a veth pair into the node's namespace, with its routes |
//! | [`metrics`] | Prometheus text over HTTP |
//! | [`netns`] | network namespaces and veths, for the demo and the tests |
//! | [`demo`] | `podswitchd --demo` |

pub mod api;
pub mod client;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod engine;
pub mod host;
pub mod metrics;
pub mod netns;
pub mod overlay;
pub mod server;
pub mod state;
pub mod store;
pub mod summary;
pub mod underlay;
