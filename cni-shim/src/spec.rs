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
    #[allow(dead_code)] // the spec's table; nothing the plugin reads is unsupported now
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
    /// vhostuser mode: who owns the pod's socket (the pod's user); root when absent.
    #[serde(default)]
    pub vhostuser: Option<SocketOwner>,
    /// What the runtime passes per call (capabilities: `mac`, `portMappings`, ...);
    /// keys are matched without regard to case, unknown ones ignored.
    #[serde(rename = "runtimeConfig", default)]
    pub runtime_config: serde_json::Map<String, Value>,
    /// GC: the attachments that are still in use.
    #[serde(rename = "cni.dev/valid-attachments", default)]
    pub valid_attachments: Option<Vec<Value>>,
}

/// `"vhostuser": {"uid": 1000, "gid": 1000}`.
#[derive(Debug, Clone, Copy, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct SocketOwner {
    /// Owner uid.
    #[serde(default)]
    pub uid: u32,
    /// Owner gid.
    #[serde(default)]
    pub gid: u32,
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
            "vhostuser" if c.cni_version != "1.1.0" => {
                return Err(CniError::new(
                    code::INCOMPATIBLE_VERSION,
                    "mode \"vhostuser\" answers the socket as CNI 1.1's socketPath: set cniVersion to 1.1.0",
                ))
            }
            "vhostuser" => {}
            m => {
                return Err(CniError::new(
                    code::INVALID_CONFIG,
                    format!("mode {m:?} is unknown: use \"afxdp\" or \"vhostuser\""),
                ))
            }
        }
        if let Some(i) = &c.ipam {
            if !i.get("type").is_some_and(Value::is_string) {
                return Err(CniError::new(
                    code::INVALID_CONFIG,
                    "ipam needs a \"type\" (an IPAM plugin such as host-local); leave ipam out and podswitchd \
                     allocates the addresses",
                ));
            }
        }
        if c.socket.is_empty() {
            return Err(CniError::new(code::INVALID_CONFIG, "socket is empty: give podswitchd's control socket"));
        }
        Ok(c)
    }

    /// runtimeConfig's `key`, whatever its case (containerd sends `HostPort`, others
    /// `hostPort`).
    pub fn runtime(&self, key: &str) -> Option<&Value> {
        self.runtime_config.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v)
    }

    /// GC's valid attachments as (container id, ifname); an error when absent or not
    /// objects with both.
    pub fn valid_attachments(&self) -> Result<Vec<(String, String)>, CniError> {
        let Some(list) = &self.valid_attachments else {
            return Err(CniError::new(
                code::INVALID_CONFIG,
                "GC needs cni.dev/valid-attachments (the attachments still in use); without it nothing is removed",
            ));
        };
        list.iter()
            .map(|v| {
                let field = |name: &str| {
                    v.as_object()
                        .and_then(|o| o.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)))
                        .and_then(|(_, v)| v.as_str())
                        .map(String::from)
                };
                match (field("containerID"), field("ifname")) {
                    (Some(c), Some(i)) => Ok((c, i)),
                    _ => Err(CniError::new(
                        code::INVALID_CONFIG,
                        format!("cni.dev/valid-attachments: {v} lacks containerID or ifname"),
                    )),
                }
            })
            .collect()
    }

    /// The MAC the runtime asks for the pod's interface (runtimeConfig `mac`, else
    /// CNI_ARGS `MAC`), checked: six hex octets, unicast.
    pub fn mac(&self, env: &Env) -> Result<Option<[u8; 6]>, CniError> {
        let asked = match self.runtime("mac") {
            Some(v) => Some(v.as_str().map(String::from).ok_or_else(|| {
                CniError::new(code::INVALID_CONFIG, format!("runtimeConfig mac is {v}, not a string"))
            })?),
            None => env.arg("MAC").map(String::from),
        };
        let Some(text) = asked else { return Ok(None) };
        let bad =
            || CniError::new(code::INVALID_CONFIG, format!("MAC {text:?} is not a unicast MAC like 02:00:c6:12:00:02"));
        let octets: Vec<u8> =
            text.split(':').map(|o| u8::from_str_radix(o, 16).map_err(|_| bad())).collect::<Result<_, _>>()?;
        let mac: [u8; 6] = octets.try_into().map_err(|_| bad())?;
        if mac[0] & 1 != 0 || mac == [0; 6] {
            return Err(bad());
        }
        Ok(Some(mac))
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
    /// CNI_ARGS, `KEY=VALUE` pairs in the order given.
    pub args: Vec<(String, String)>,
    /// CNI_PATH: where delegated plugins are looked for.
    pub path: String,
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
            args: parse_args(&var("CNI_ARGS"))?,
            path: var("CNI_PATH"),
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

    /// CNI_ARGS' `key`, whatever the order they came in.
    pub fn arg(&self, key: &str) -> Option<&str> {
        self.args.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// The CNI_ARGS the plugin knows; others are an error unless `IgnoreUnknown` is true
/// (as libcni's plugins do; containerd and CRI-O always set it).
const KNOWN_ARGS: &[&str] =
    &["IgnoreUnknown", "K8S_POD_NAMESPACE", "K8S_POD_NAME", "K8S_POD_INFRA_CONTAINER_ID", "K8S_POD_UID", "MAC"];

/// Parses CNI_ARGS: `KEY=VALUE` pairs separated by `;`, in any order.
fn parse_args(text: &str) -> Result<Vec<(String, String)>, CniError> {
    let mut args = Vec::new();
    for pair in text.split(';').filter(|p| !p.is_empty()) {
        let Some((k, v)) = pair.split_once('=') else {
            return Err(CniError::new(code::INVALID_ENV, format!("CNI_ARGS: {pair:?} is not KEY=VALUE")));
        };
        args.push((k.to_string(), v.to_string()));
    }
    let ignore = args.iter().any(|(k, v)| k == "IgnoreUnknown" && (v == "1" || v.eq_ignore_ascii_case("true")));
    if !ignore {
        if let Some((k, _)) = args.iter().find(|(k, _)| !KNOWN_ARGS.contains(&k.as_str())) {
            return Err(CniError::new(
                code::INVALID_ENV,
                format!("CNI_ARGS: unknown key {k:?} (known: {KNOWN_ARGS:?}; add IgnoreUnknown=1 to ignore it)"),
            ));
        }
    }
    Ok(args)
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
            code(br#"{"cniVersion":"1.0.0","type":"podswitch","mode":"vhostuser"}"#),
            code::INCOMPATIBLE_VERSION
        );
        assert_eq!(
            code(br#"{"cniVersion":"1.1.0","type":"podswitch","mode":"vhostuser","vhostuser":{"user":1}}"#),
            code::DECODE
        );
        assert!(NetConf::parse(br#"{"cniVersion":"1.0.0","type":"podswitch","ipam":{"type":"host-local"}}"#).is_ok());
        assert_eq!(
            code(br#"{"cniVersion":"1.0.0","type":"podswitch","ipam":{"subnet":"198.18.0.0/24"}}"#),
            code::INVALID_CONFIG
        );
        let e = CniError::with(7, "bad", "because").to_json("1.0.0");
        assert_eq!(e, json!({"cniVersion":"1.0.0","code":7,"msg":"bad","details":"because"}));
    }

    #[test]
    fn runtime_config_keys_match_without_case_and_args_in_any_order() {
        let c = NetConf::parse(
            br#"{"cniVersion":"1.1.0","type":"podswitch","runtimeConfig":{"MAC":"02:00:c6:12:00:09","PortMappings":[{"HostPort":80}],"Servers":[]}}"#,
        )
        .unwrap();
        assert!(c.runtime("portmappings").is_some() && c.runtime("servers").is_some());
        let env = |args: &str| {
            let args = args.to_string();
            Env::read(move |k| match k {
                "CNI_COMMAND" => Some("ADD".into()),
                "CNI_CONTAINERID" => Some("c".into()),
                "CNI_IFNAME" => Some("eth0".into()),
                "CNI_NETNS" => Some("/run/netns/x".into()),
                "CNI_ARGS" => Some(args.clone()),
                _ => None,
            })
        };
        assert_eq!(c.mac(&env("").unwrap()).unwrap(), Some([2, 0, 0xc6, 0x12, 0, 9]), "runtimeConfig wins");
        let a = env("K8S_POD_NAME=web;IgnoreUnknown=1;Foo=bar;K8S_POD_NAMESPACE=default").unwrap();
        assert_eq!(
            (a.arg("K8S_POD_NAMESPACE"), a.arg("K8S_POD_NAME"), a.arg("Foo")),
            (Some("default"), Some("web"), Some("bar"))
        );
        assert_eq!(env("Foo=bar").unwrap_err().code, code::INVALID_ENV, "unknown without IgnoreUnknown");
        assert_eq!(env("K8S_POD_NAME").unwrap_err().code, code::INVALID_ENV, "not KEY=VALUE");
        let plain = NetConf::parse(br#"{"cniVersion":"1.1.0","type":"podswitch"}"#).unwrap();
        assert_eq!(plain.mac(&env("MAC=02:00:00:00:00:01").unwrap()).unwrap(), Some([2, 0, 0, 0, 0, 1]));
        for bad in ["MAC=03:00:00:00:00:01", "MAC=02:00:00:00:00", "MAC=zz:00:00:00:00:01"] {
            assert_eq!(plain.mac(&env(bad).unwrap()).unwrap_err().code, code::INVALID_CONFIG, "{bad}");
        }
    }

    #[test]
    fn gc_needs_its_list_of_valid_attachments() {
        let c = NetConf::parse(
            br#"{"cniVersion":"1.1.0","type":"podswitch","cni.dev/valid-attachments":[{"containerID":"a","ifname":"eth0"},{"containerid":"b","IFNAME":"net1"}]}"#,
        )
        .unwrap();
        assert_eq!(c.valid_attachments().unwrap(), vec![("a".into(), "eth0".into()), ("b".into(), "net1".into())]);
        let none = NetConf::parse(br#"{"cniVersion":"1.1.0","type":"podswitch"}"#).unwrap();
        assert_eq!(none.valid_attachments().unwrap_err().code, code::INVALID_CONFIG);
        let bad = NetConf::parse(
            br#"{"cniVersion":"1.1.0","type":"podswitch","cni.dev/valid-attachments":[{"ifname":"x"}]}"#,
        )
        .unwrap();
        assert_eq!(bad.valid_attachments().unwrap_err().code, code::INVALID_CONFIG);
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
