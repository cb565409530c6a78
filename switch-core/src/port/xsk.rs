//! The AF_XDP port: one socket on one queue of an interface.

use super::{Desc, Held};
use crate::xsk::{frame_addr, offset_of, segment_of, Umem, XskSocket};

/// Kicks per tx burst at most: copy mode sends 32 frames per kick.
const MAX_KICKS: u32 = 4;

/// One worker's socket on one interface queue.
#[derive(Debug)]
pub struct XskPort {
    sock: XskSocket,
    /// Frames given to the kernel for receive (fill ring + rx ring).
    rx_held: u32,
    /// Frames on the tx ring or in flight, until they come back on the completion ring.
    tx_held: u32,
    /// How many frames to keep with the kernel for receive.
    rx_target: u32,
    max_frame: u32,
    kick_errors: u64,
    /// The UMEM segment the socket registered: its rings hold only frames of it.
    seg: u32,
}

impl XskPort {
    /// Wraps a socket bound on the UMEM segment `seg` of the worker that will poll it.
    /// `max_frame` is what the interface can send (MTU + 14, and never more than the
    /// frame minus its headroom). Fill the rx side with [`housekeep`](Self::housekeep).
    pub fn new(sock: XskSocket, seg: u32, max_frame: u32) -> XskPort {
        let rx_target = sock.fill.size();
        XskPort { sock, rx_held: 0, tx_held: 0, rx_target, max_frame, kick_errors: 0, seg }
    }

    /// The UMEM segment of its rings.
    pub fn segment(&self) -> u32 {
        self.seg
    }

    /// The socket, for statistics.
    pub fn socket(&self) -> &XskSocket {
        &self.sock
    }

    /// Interface name.
    pub fn name(&self) -> &str {
        self.sock.ifname()
    }

    /// Largest frame this port sends.
    pub fn max_frame(&self) -> u32 {
        self.max_frame
    }

    /// Kicks that failed with an error other than EAGAIN.
    pub fn kick_errors(&self) -> u64 {
        self.kick_errors
    }

    /// Frames held outside the pool.
    pub fn held(&self) -> Held {
        Held { rx: self.rx_held, tx: self.tx_held }
    }

    #[inline]
    pub(super) fn rx_burst(&mut self, umem: &mut Umem, out: &mut [Desc]) -> usize {
        let n = self.sock.rx.peek(out.len() as u32);
        for (i, slot) in out.iter_mut().enumerate().take(n as usize) {
            let d = self.sock.rx.read(i as u32);
            *slot = Desc { addr: frame_addr(self.seg, d.addr), len: d.len };
        }
        self.sock.rx.release(n);
        self.rx_held -= n;
        if n > 0 {
            self.refill(umem);
        }
        n as usize
    }

    /// Queues `descs` on the tx ring. A frame of another segment is copied into one of
    /// this port's first; frames that find no room (ring full, or no free frame in the
    /// segment: both mean this port's frames are all in flight) go back to their pools.
    #[inline]
    pub(super) fn tx_burst(&mut self, umem: &mut Umem, descs: &[Desc]) -> super::Sent {
        let room = self.sock.tx.reserve(descs.len() as u32);
        let mut sent = super::Sent::default();
        for d in descs {
            let addr = if sent.packets == room {
                None
            } else if segment_of(d.addr) == self.seg {
                Some(d.addr)
            } else {
                let copy = umem.clone_into(self.seg, d.addr, d.len);
                umem.free(d.addr);
                copy
            };
            match addr {
                Some(a) => {
                    self.sock.tx.write(sent.packets, libc::xdp_desc { addr: offset_of(a), len: d.len, options: 0 });
                    sent.packets += 1;
                    sent.bytes += u64::from(d.len);
                }
                None if sent.packets == room => umem.free(d.addr),
                None => {}
            }
        }
        self.sock.tx.submit(sent.packets);
        self.tx_held += sent.packets;
        if sent.packets > 0 {
            self.kick();
        }
        sent
    }

    #[inline]
    fn kick(&mut self) {
        // Copy mode always sets need_wakeup on the tx ring; zero-copy drivers may not.
        if !self.sock.tx.needs_wakeup() {
            return;
        }
        for _ in 0..MAX_KICKS {
            match self.sock.kick_tx() {
                Ok(()) => return,
                Err(e) => match e.raw_os_error() {
                    // More than one kick's worth on the ring, or the driver is busy:
                    // kick again; what is left goes with the next burst.
                    Some(libc::EAGAIN) | Some(libc::EBUSY) => continue,
                    // No skb memory: the frames stay on the ring for the next kick.
                    Some(libc::ENOBUFS) => return,
                    _ => {
                        self.kick_errors += 1;
                        return;
                    }
                },
            }
        }
    }

    #[inline]
    fn refill(&mut self, umem: &mut Umem) {
        let want = self.rx_target.saturating_sub(self.rx_held).min(umem.free_in(self.seg));
        if want == 0 {
            return;
        }
        let n = self.sock.fill.reserve(want);
        for i in 0..n {
            // `want` is bounded by the pool's size, so alloc cannot fail here.
            let Some(addr) = umem.alloc_in(self.seg) else { break };
            self.sock.fill.write(i, offset_of(addr));
        }
        self.sock.fill.submit(n);
        self.rx_held += n;
        if n > 0 && self.sock.fill.needs_wakeup() {
            let _ = self.sock.wake_rx();
        }
    }

    #[inline]
    pub(super) fn housekeep(&mut self, umem: &mut Umem) {
        let n = self.sock.comp.peek(self.sock.comp.size());
        for i in 0..n {
            umem.free(frame_addr(self.seg, self.sock.comp.read(i)));
        }
        self.sock.comp.release(n);
        self.tx_held -= n;
        // Frames still on the tx ring need a kick of their own if an earlier one
        // stopped short (EAGAIN past MAX_KICKS).
        if self.tx_held > 0 && self.sock.tx.pending() > 0 {
            self.kick();
        }
        self.refill(umem);
    }
}
