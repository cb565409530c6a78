//! Byte-exact UDP between two pods.

use crate::Pod;
use std::net::UdpSocket;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Sends `count` datagrams of mixed sizes from `a` to `b` and checks every one arrives
/// intact: its sequence number once, its bytes exactly as sent.
pub fn udp_exact(a: &Pod, b: &Pod, dst_ip: &str, max_payload: usize, count: u32) {
    let bind_any = if dst_ip.contains(':') { "[::]:0" } else { "0.0.0.0:0" };
    let rx_addr = if dst_ip.contains(':') { "[::]:9000".to_string() } else { "0.0.0.0:9000".to_string() };
    let rx = b.ns.within(move || UdpSocket::bind(rx_addr)).unwrap().unwrap();
    // Room for the whole window of the largest datagrams even when the receiving thread
    // is slow to run (the default 208 KiB holds only a few dozen).
    crate::set_rcvbuf(&rx, 16 << 20);
    let tx = a.ns.within(move || UdpSocket::bind(bind_any)).unwrap().unwrap();
    rx.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    let dst = if dst_ip.contains(':') { format!("[{dst_ip}]:9000") } else { format!("{dst_ip}:9000") };

    // Sizes: the smallest frame (64 bytes on the wire: 18 bytes of UDP payload over
    // IPv4), the largest the port carries, and a spread between.
    let sizes: Vec<usize> = {
        let mut v = vec![18, max_payload, 1, 100, 512, 1000, 1472, 1473, 2048, 3000, max_payload - 1];
        v.retain(|s| *s <= max_payload);
        let mut x = 12345u32;
        for _ in 0..32 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            v.push(1 + (x as usize >> 8) % max_payload);
        }
        v
    };
    let payload = |seq: u32| -> Vec<u8> {
        let len = sizes[seq as usize % sizes.len()].max(4);
        let mut p = vec![0u8; len];
        p[..4].copy_from_slice(&seq.to_be_bytes());
        for (i, byte) in p[4..].iter_mut().enumerate() {
            *byte = (seq as usize).wrapping_mul(31).wrapping_add(i) as u8;
        }
        p
    };

    let received = Arc::new(AtomicU64::new(0));
    let r2 = received.clone();
    let expect: Vec<Vec<u8>> = (0..count).map(payload).collect();
    let expect2 = expect.clone();
    let receiver = std::thread::spawn(move || {
        let mut seen = vec![false; count as usize];
        let mut buf = vec![0u8; 65536];
        let mut bad = 0u32;
        let deadline = Instant::now() + Duration::from_secs(60);
        while r2.load(Ordering::Relaxed) < u64::from(count) && Instant::now() < deadline {
            let Ok(n) = rx.recv(&mut buf) else { continue };
            let seq = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
            if seq >= seen.len() || seen[seq] || buf[..n] != expect2[seq][..] {
                bad += 1;
                continue;
            }
            seen[seq] = true;
            r2.fetch_add(1, Ordering::Relaxed);
        }
        (seen.iter().filter(|s| !**s).count(), bad)
    });
    // Window of 64 datagrams in flight: a correctness test, not a load test.
    let start = Instant::now();
    for seq in 0..count {
        while u64::from(seq) >= received.load(Ordering::Relaxed) + 64 {
            assert!(start.elapsed() < Duration::from_secs(60), "stalled at {seq}");
            std::thread::sleep(Duration::from_micros(50));
        }
        tx.send_to(&expect[seq as usize], &dst).unwrap();
    }
    let (missing, bad) = receiver.join().unwrap();
    if missing + bad as usize > 0 {
        // Say where they went: the receiving pod's UDP counters.
        let snmp = b.ns.exec("cat", &["/proc/net/snmp"]).unwrap();
        let text = String::from_utf8_lossy(&snmp.stdout).to_string();
        let udp: Vec<_> = text.lines().filter(|l| l.starts_with("Udp:")).collect();
        panic!("{missing} datagrams missing, {bad} wrong or duplicated; receiver's UDP stats:\n{}", udp.join("\n"));
    }
}
