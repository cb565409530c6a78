//! Delegated IPAM: when the configuration has an `ipam` section, its `type` names a
//! standard IPAM plugin (host-local, static, dhcp, ...) that the plugin runs as the
//! spec says a plugin delegates: found in CNI_PATH, the runtime's environment with
//! CNI_COMMAND set, the whole configuration on stdin, its result or error on stdout.

use crate::spec::{code, CniError, Env, NetConf};
use serde_json::Value;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// What an IPAM ADD handed out: "ADDR/LEN" per address.
#[derive(Debug, Clone, Default)]
pub struct Lease {
    /// The addresses, in the plugin's order.
    pub addresses: Vec<String>,
}

fn plugin(conf: &NetConf, env: &Env) -> Result<(String, PathBuf), CniError> {
    let ty = conf.ipam.as_ref().and_then(|i| i.get("type")).and_then(Value::as_str).unwrap_or_default();
    if ty.is_empty() || ty.contains('/') || ty == "." || ty == ".." {
        return Err(CniError::new(code::INVALID_CONFIG, format!("ipam.type {ty:?} is not a plugin name")));
    }
    let found = env.path.split(':').filter(|d| !d.is_empty()).map(|d| PathBuf::from(d).join(ty)).find(|p| p.is_file());
    match found {
        Some(p) => Ok((ty.to_string(), p)),
        None => Err(CniError::new(
            code::INVALID_CONFIG,
            format!("IPAM plugin {ty:?} is not in CNI_PATH ({:?}): install it or fix ipam.type", env.path),
        )),
    }
}

/// Runs the IPAM plugin with `command` on `input`; its parsed stdout when it printed any.
pub fn exec(conf: &NetConf, env: &Env, command: &str, input: &[u8]) -> Result<Option<Value>, CniError> {
    exec_for(conf, env, command, input, &env.container_id, &env.ifname)
}

/// [`exec`] for another attachment than the runtime's (GC releasing a stale lease).
pub fn exec_for(
    conf: &NetConf,
    env: &Env,
    command: &str,
    input: &[u8],
    container_id: &str,
    ifname: &str,
) -> Result<Option<Value>, CniError> {
    let (ty, path) = plugin(conf, env)?;
    let mut child = Command::new(&path)
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", container_id)
        .env("CNI_IFNAME", ifname)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| CniError::with(code::IO, format!("cannot run IPAM plugin {}", path.display()), e))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A plugin that exits without reading says why on stdout; that is what counts.
        let _ = stdin.write_all(input);
    }
    let out = child.wait_with_output().map_err(|e| CniError::with(code::IO, format!("IPAM plugin {ty}"), e))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let parsed: Option<Value> = if text.trim().is_empty() { None } else { serde_json::from_str(&text).ok() };
    if !out.status.success() {
        // Its error, passed on with its own code.
        let e = parsed.unwrap_or_default();
        return Err(CniError::with(
            e["code"].as_u64().map_or(code::IO, |c| c as u32),
            format!("IPAM plugin {ty} failed {command}: {}", e["msg"].as_str().unwrap_or("no message")),
            e["details"].as_str().map_or_else(|| String::from_utf8_lossy(&out.stderr).trim().to_string(), String::from),
        ));
    }
    if !text.trim().is_empty() && parsed.is_none() {
        return Err(CniError::new(
            code::DECODE,
            format!("IPAM plugin {ty} printed something that is not JSON: {text}"),
        ));
    }
    Ok(parsed)
}

/// IPAM ADD: the addresses handed out.
pub fn add(conf: &NetConf, env: &Env, input: &[u8]) -> Result<Lease, CniError> {
    let r = exec(conf, env, "ADD", input)?.unwrap_or_default();
    let addresses: Vec<String> = r["ips"]
        .as_array()
        .map(|ips| ips.iter().filter_map(|ip| ip["address"].as_str().map(String::from)).collect())
        .unwrap_or_default();
    if addresses.is_empty() {
        return Err(CniError::new(code::IO, format!("the IPAM plugin handed out no address: {r}")));
    }
    Ok(Lease { addresses })
}
