//! Scraping and reading the Prometheus endpoint.

use anyhow::{bail, Context, Result};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// GET /metrics from 127.0.0.1:`port` in the calling thread's namespace.
pub fn scrape(port: u16) -> Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    let (head, body) = buf.split_once("\r\n\r\n").context("no HTTP header end")?;
    if !head.starts_with("HTTP/1.") || !head.contains(" 200 ") {
        bail!("metrics answered {}", head.lines().next().unwrap_or(""));
    }
    Ok(body.to_string())
}

/// A sample: name, labels, value.
type Sample = (String, Vec<(String, String)>, f64);

/// One parsed exposition.
#[derive(Debug, Clone)]
pub struct Metrics {
    samples: Vec<Sample>,
}

impl Metrics {
    /// Parses Prometheus text format, checking every line's shape.
    pub fn parse(text: &str) -> Result<Metrics> {
        let mut samples = Vec::new();
        for line in text.lines() {
            if line.is_empty() || line.starts_with('#') {
                if line.starts_with("# TYPE ")
                    && !["counter", "gauge", "histogram"].contains(&line.rsplit(' ').next().unwrap_or(""))
                {
                    bail!("bad TYPE line: {line}");
                }
                continue;
            }
            let (series, value) = line.rsplit_once(' ').context(format!("no value: {line}"))?;
            let value: f64 = value.parse().with_context(|| format!("bad value: {line}"))?;
            let (name, labels) = match series.split_once('{') {
                Some((n, rest)) => {
                    let body = rest.strip_suffix('}').context(format!("unclosed labels: {line}"))?;
                    let mut labels = Vec::new();
                    for kv in body.split(',').filter(|s| !s.is_empty()) {
                        let (k, v) = kv.split_once('=').context(format!("bad label: {line}"))?;
                        let v = v
                            .strip_prefix('"')
                            .and_then(|v| v.strip_suffix('"'))
                            .context(format!("unquoted: {line}"))?;
                        labels.push((k.to_string(), v.to_string()));
                    }
                    (n.to_string(), labels)
                }
                None => (series.to_string(), Vec::new()),
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
                bail!("bad metric name: {line}");
            }
            samples.push((name, labels, value));
        }
        Ok(Metrics { samples })
    }

    /// Sum of `name` over samples whose labels include every `(key, value)` in `with`.
    pub fn sum(&self, name: &str, with: &[(&str, &str)]) -> u64 {
        self.samples
            .iter()
            .filter(|(n, l, _)| n == name && with.iter().all(|(k, v)| l.iter().any(|(lk, lv)| lk == k && lv == v)))
            .map(|(_, _, v)| *v as u64)
            .sum()
    }

    /// How many samples `name` has with every `(key, value)` in `with`.
    pub fn count(&self, name: &str, with: &[(&str, &str)]) -> usize {
        self.samples
            .iter()
            .filter(|(n, l, _)| n == name && with.iter().all(|(k, v)| l.iter().any(|(lk, lv)| lk == k && lv == v)))
            .count()
    }

    /// Drops counted for `reason`, over all workers.
    pub fn drops(&self, reason: &str) -> u64 {
        self.sum("podswitch_drops_total", &[("reason", reason)])
    }

    /// A port counter (e.g. "tx_packets"), over all workers.
    pub fn port(&self, port: &str, counter: &str) -> u64 {
        self.sum(&format!("podswitch_port_{counter}_total"), &[("port", port)])
    }
}
