//! The CNI protocol's side of the plugin: versions, the network configuration, the
//! environment, results and errors, as the CNI specification (1.1.0) defines them.

use serde::Deserialize;
use serde_json::{json, Value};

/// Versions the plugin answers in.
pub const SUPPORTED: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// The spec's well-known error codes.
pub mod code {
    /// Incompatible CNI version.
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    /// Unsupported field in the network configuration.
    pub const UNSUPPORTED_FIELD: u32 = 2;
    /// Container unknown or does not exist.
    pub const UNKNOWN_CONTAINER: u32 = 3;
    /// Invalid necessary environment variables.
    pub const INVALID_ENV: u32 = 4;
    /// I/O failure.
    pub const IO: u32 = 5;
    /// Failed to decode content.
    pub const DECODE: u32 = 6;
    /// Invalid network config.
    pub const INVALID_CONFIG: u32 = 7;
    /// Try again later.
    pub const TRY_AGAIN: u32 = 11;
    /// STATUS: the plugin is not available.
    pub const NOT_AVAILABLE: u32 = 50;
}

/// An error as the runtime receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniError {
    /// One of [`code`].
    pub code: u32,
    /// What went wrong.
    pub msg: String,
    /// More about it (the cause's own message).
    pub details: String,
}

impl CniError {
    /// An error with no details.
    pub fn new(code: u32, msg: impl Into<String>) -> CniError {
        CniError { code, msg: msg.into(), details: String::new() }
    }

    /// An error with details.
    pub fn with(code: u32, msg: impl Into<String>, details: impl ToString) -> CniError {
        CniError { code, msg: msg.into(), details: details.to_string() }
    }

    /// The error's JSON, in `version`.
    pub fn to_json(&self, version: &str) -> Value {
        let mut v = json!({ "cniVersion": version, "code": self.code, "msg": self.msg });
        if !self.details.is_empty() {
            v["details"] = Value::String(self.details.clone());
        }
        v
    }
}

/// The network configuration on stdin. Unknown keys are ignored, as the spec asks.
#[derive(Debug, Clone, Deserialize)]
pub struct NetConf {
    /// The version the runtime speaks.
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    /// "podswitch".
    #[serde(rename = "type", default)]
    pub ty: String,
    /// podswitchd's control socket.
    #[serde(default = "default_socket")]
    pub socket: String,
    /// The podswitch network pods join.
    #[serde(default = "default_network")]
    pub network: String,
    /// "afxdp" (default) or "vhostuser".
    #[serde(default = "default_mode")]
    pub mode: String,
    /// The pod interface's MTU; the kernel's default when absent.
    #[serde(default)]
    pub mtu: Option<u32>,
    /// A delegated IPAM plugin's configuration.
    #[serde(default)]
    pub ipam: Option<Value>,
}

fn default_socket() -> String {
    "/run/podswitch/podswitchd.sock".into()
}

fn default_network() -> String {
    "pods".into()
}

fn default_mode() -> String {
    "afxdp".into()
}

impl NetConf {
    /// Parses and checks the configuration.
    pub fn parse(bytes: &[u8]) -> Result<NetConf, CniError> {
        let c: NetConf = serde_json::from_slice(bytes).map_err(|e| {
            CniError::with(code::DECODE, "the network configuration is not valid JSON for podswitch", e)
        })?;
        if !SUPPORTED.contains(&c.cni_version.as_str()) {
            return Err(CniError::new(
                code::INCOMPATIBLE_VERSION,
                format!("cniVersion {:?} is not supported; use one of {SUPPORTED:?}", c.cni_version),
            ));
        }
        if c.ty != "podswitch" {
            return Err(CniError::new(code::INVALID_CONFIG, format!("type is {:?}, not \"podswitch\"", c.ty)));
        }
        match c.mode.as_str() {
            "afxdp" => {}
            "vhostuser" => {
                return Err(CniError::new(
                    code::UNSUPPORTED_FIELD,
                    "mode \"vhostuser\" is not available yet; use \"afxdp\"",
                ))
            }
            m => {
                return Err(CniError::new(
                    code::INVALID_CONFIG,
                    format!("mode {m:?} is unknown: use \"afxdp\" or \"vhostuser\""),
                ))
            }
        }
        if c.ipam.is_some() {
            return Err(CniError::new(
                code::UNSUPPORTED_FIELD,
                "ipam delegation is not available yet: leave ipam out and podswitchd allocates the addresses",
            ));
        }
        if c.socket.is_empty() {
            return Err(CniError::new(code::INVALID_CONFIG, "socket is empty: give podswitchd's control socket"));
        }
        Ok(c)
    }

    /// True when results use the 0.3/0.4 shape (IP entries carry "version").
    pub fn legacy(&self) -> bool {
        self.cni_version.starts_with("0.")
    }
}

/// The environment the runtime sets.
#[derive(Debug, Clone)]
pub struct Env {
    /// CNI_COMMAND.
    pub command: String,
    /// CNI_CONTAINERID.
    pub container_id: String,
    /// CNI_NETNS (may be empty for DEL).
    pub netns: String,
    /// CNI_IFNAME.
    pub ifname: String,
}

impl Env {
    /// Reads the CNI variables; `need_netns` for ADD and CHECK.
    pub fn read(get: impl Fn(&str) -> Option<String>) -> Result<Env, CniError> {
        let var = |k: &str| get(k).unwrap_or_default();
        let env = Env {
            command: var("CNI_COMMAND"),
            container_id: var("CNI_CONTAINERID"),
            netns: var("CNI_NETNS"),
            ifname: var("CNI_IFNAME"),
        };
        if env.command.is_empty() {
            return Err(CniError::new(code::INVALID_ENV, "CNI_COMMAND is not set"));
        }
        if matches!(env.command.as_str(), "ADD" | "DEL" | "CHECK") {
            if env.container_id.is_empty() {
                return Err(CniError::new(code::INVALID_ENV, "CNI_CONTAINERID is not set"));
            }
            if env.ifname.is_empty() || env.ifname.len() > 15 {
                return Err(CniError::new(code::INVALID_ENV, "CNI_IFNAME must be 1 to 15 characters"));
            }
            if env.command != "DEL" && env.netns.is_empty() {
                return Err(CniError::new(code::INVALID_ENV, "CNI_NETNS is not set"));
            }
        }
        Ok(env)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_are_checked_with_the_specs_codes() {
        let ok = br#"{"cniVersion":"1.0.0","name":"k8s","type":"podswitch","network":"pods","unknownKey":1}"#;
        let c = NetConf::parse(ok).unwrap();
        assert_eq!(
            (c.socket.as_str(), c.mode.as_str(), c.legacy()),
            ("/run/podswitch/podswitchd.sock", "afxdp", false)
        );
        let code = |s: &[u8]| NetConf::parse(s).unwrap_err().code;
        assert_eq!(code(b"{not json"), code::DECODE);
        assert_eq!(code(br#"{"cniVersion":"9.9.9","type":"podswitch"}"#), code::INCOMPATIBLE_VERSION);
        assert_eq!(code(br#"{"cniVersion":"1.0.0","type":"bridge"}"#), code::INVALID_CONFIG);
        assert_eq!(code(br#"{"cniVersion":"1.0.0","type":"podswitch","mode":"tap"}"#), code::INVALID_CONFIG);
        assert_eq!(
            code(br#"{"cniVersion":"1.0.0","type":"podswitch","ipam":{"type":"host-local"}}"#),
            code::UNSUPPORTED_FIELD
        );
        let e = CniError::with(7, "bad", "because").to_json("1.0.0");
        assert_eq!(e, json!({"cniVersion":"1.0.0","code":7,"msg":"bad","details":"because"}));
    }

    #[test]
    fn the_environment_is_checked_per_command() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            Env::read(|k| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string()))
        };
        assert!(env(&[("CNI_COMMAND", "VERSION")]).is_ok());
        assert_eq!(env(&[]).unwrap_err().code, code::INVALID_ENV);
        assert_eq!(
            env(&[("CNI_COMMAND", "ADD"), ("CNI_CONTAINERID", "c"), ("CNI_IFNAME", "eth0")]).unwrap_err().code,
            code::INVALID_ENV
        );
        assert!(
            env(&[("CNI_COMMAND", "DEL"), ("CNI_CONTAINERID", "c"), ("CNI_IFNAME", "eth0")]).is_ok(),
            "DEL without a netns"
        );
    }
}
