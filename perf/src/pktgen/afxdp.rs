//! AF_XDP (switch-core's xsk layer) for arbitrary content: replaying a pcap file and
//! capturing what arrives, byte for byte. Slower than the XDP engines (a copy into and
//! out of the UMEM per frame, a syscall per burst), and exact.

use anyhow::{bail, Context, Result};
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapReader, PcapWriter};
use pcap_file::{DataLink, TsResolution};
use std::sync::Arc;
use std::time::{Duration, Instant};
use switch_core::port::{Desc, Port, XskPort};
use switch_core::xdp::{Fallback, XdpMember, XdpMode, XdpShared};
use switch_core::xsk::{HugepagePolicy, Umem, UmemConfig, XskConfig, XskSocket, FRAME_HEADROOM};

const FRAME_SIZE: u32 = 4096;
const BURST: usize = 64;

/// An AF_XDP socket on queue 0 of an interface, with a UMEM of its own.
#[derive(Debug)]
pub struct XskLink {
    umem: Umem,
    port: Port,
    // Detaches the redirect program when dropped (after the socket it steers to).
    _xdp: Option<XdpMember>,
}

impl XskLink {
    /// Opens a socket on `dev` in `netns` (or this namespace); with `receive`, also
    /// attaches a program that steers every frame of queue 0 to it.
    pub fn open(dev: &str, netns: Option<&str>, receive: bool) -> Result<XskLink> {
        let dev = dev.to_string();
        super::in_netns(netns, move || {
            let umem = Umem::new(&UmemConfig { frames: 4096, frame_size: FRAME_SIZE, hugepages: HugepagePolicy::Off })
                .context("allocating the UMEM")?;
            let sock = XskSocket::new(umem.region(), &dev, 0, None, &XskConfig::default())
                .with_context(|| format!("opening an AF_XDP socket on {dev}"))?;
            let xdp = if receive {
                let shared = Arc::new(XdpShared::new(1, 1, Fallback::Drop)?);
                let member = shared.attach(&dev, 0, XdpMode::NativeOrGeneric)?;
                member.insert(0, sock.raw_fd())?;
                Some(member)
            } else {
                None
            };
            let mtu = switch_core::sys::netdev::mtu(&dev).unwrap_or(1500);
            let max_frame = (mtu + 14).min(FRAME_SIZE - FRAME_HEADROOM);
            let mut link = XskLink { umem, port: Port::Xsk(XskPort::new(sock, 0, max_frame)), _xdp: xdp };
            link.port.housekeep(&mut link.umem);
            Ok(link)
        })
    }

    /// Queues as many of `frames` as the tx ring takes, in order; returns how many.
    pub fn send(&mut self, frames: &[&[u8]]) -> usize {
        self.port.housekeep(&mut self.umem);
        let mut descs = [Desc::default(); BURST];
        let mut n = 0;
        for (slot, f) in descs.iter_mut().zip(frames) {
            let Some(base) = self.umem.alloc() else { break };
            let addr = base + u64::from(FRAME_HEADROOM);
            self.umem.data_mut(addr, f.len() as u32).copy_from_slice(f);
            *slot = Desc { addr, len: f.len() as u32 };
            n += 1;
        }
        // Frames the ring did not take go back to the pool; the caller sends them again.
        self.port.tx_burst(&mut self.umem, &descs[..n]).packets as usize
    }

    /// Waits up to `wait` for frames and hands each to `f`; returns how many.
    pub fn recv(&mut self, wait: Duration, mut f: impl FnMut(&[u8])) -> usize {
        let end = Instant::now() + wait;
        let mut descs = [Desc::default(); BURST];
        loop {
            self.port.housekeep(&mut self.umem);
            let n = self.port.rx_burst(&mut self.umem, &mut descs);
            for d in &descs[..n] {
                f(self.umem.data(d.addr, d.len));
                self.umem.free(d.addr);
            }
            if n > 0 || Instant::now() >= end {
                return n;
            }
            std::thread::sleep(Duration::from_micros(50));
        }
    }

    /// Waits until every queued frame has left (or `wait` passes).
    pub fn flush(&mut self, wait: Duration) {
        let end = Instant::now() + wait;
        while self.port.held().tx > 0 && Instant::now() < end {
            self.port.housekeep(&mut self.umem);
            std::thread::sleep(Duration::from_micros(100));
        }
    }
}

/// The frames of a pcap file (Ethernet link type).
pub fn read_pcap(path: &std::path::Path) -> Result<Vec<Vec<u8>>> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut r = PcapReader::new(std::io::BufReader::new(file))
        .with_context(|| format!("{}: not a pcap file", path.display()))?;
    if r.header().datalink != DataLink::ETHERNET {
        bail!("{}: link type {:?}; only Ethernet captures can be replayed", path.display(), r.header().datalink);
    }
    let mut frames = Vec::new();
    while let Some(p) = r.next_packet() {
        let p = p.with_context(|| format!("{}: packet {}", path.display(), frames.len() + 1))?;
        if p.data.len() < p.orig_len as usize {
            bail!(
                "{}: packet {} was cut to {} of its {} bytes when captured; replay needs whole frames",
                path.display(),
                frames.len() + 1,
                p.data.len(),
                p.orig_len
            );
        }
        frames.push(p.data.into_owned());
    }
    Ok(frames)
}

/// Writes frames to a pcap file (Ethernet, nanosecond timestamps).
pub fn write_pcap(path: &std::path::Path, frames: &[(Duration, Vec<u8>)]) -> Result<()> {
    let file = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let header =
        PcapHeader { datalink: DataLink::ETHERNET, ts_resolution: TsResolution::NanoSecond, ..Default::default() };
    let mut w = PcapWriter::with_header(std::io::BufWriter::new(file), header)?;
    for (ts, f) in frames {
        w.write_packet(&PcapPacket::new(*ts, f.len() as u32, f))?;
    }
    Ok(())
}

/// What a replay sent.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Replayed {
    /// Frames.
    pub frames: u64,
    /// Their bytes (without FCS).
    pub bytes: u64,
    /// How long it took.
    pub seconds: f64,
}

/// Sends `frames` `loops` times, in order, at `rate_pps` (0: as fast as the socket
/// takes them), stopping after `seconds` in any case.
pub fn replay(link: &mut XskLink, frames: &[Vec<u8>], loops: u32, rate_pps: u64, seconds: f64) -> Result<Replayed> {
    if frames.is_empty() {
        bail!("nothing to replay: the capture has no frames");
    }
    let max = link.port.max_frame() as usize;
    if let Some((i, f)) = frames.iter().enumerate().find(|(_, f)| f.len() > max) {
        bail!("frame {} is {} bytes, more than the interface sends ({max}); raise its MTU", i + 1, f.len());
    }
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(seconds);
    let total = frames.len() as u64 * u64::from(loops);
    let (mut sent, mut bytes) = (0u64, 0u64);
    while sent < total && Instant::now() < end {
        let mut want = BURST as u64;
        if rate_pps > 0 {
            let due = (start.elapsed().as_secs_f64() * rate_pps as f64) as u64 + 1;
            want = want.min(due.saturating_sub(sent));
            if want == 0 {
                std::hint::spin_loop();
                continue;
            }
        }
        let batch: Vec<&[u8]> =
            (sent..(sent + want).min(total)).map(|n| frames[(n % frames.len() as u64) as usize].as_slice()).collect();
        let n = link.send(&batch);
        bytes += batch[..n].iter().map(|f| f.len() as u64).sum::<u64>();
        sent += n as u64;
        if n == 0 {
            std::thread::sleep(Duration::from_micros(20));
        }
    }
    link.flush(Duration::from_secs(1));
    Ok(Replayed { frames: sent, bytes, seconds: start.elapsed().as_secs_f64() })
}

/// Receives up to `count` frames for at most `seconds`, with their arrival times since
/// the start.
pub fn capture(link: &mut XskLink, count: u64, seconds: f64) -> Vec<(Duration, Vec<u8>)> {
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(seconds);
    let mut out = Vec::new();
    while (out.len() as u64) < count {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        link.recv(left.min(Duration::from_millis(100)), |f| {
            if (out.len() as u64) < count {
                out.push((start.elapsed(), f.to_vec()));
            }
        });
    }
    out
}
