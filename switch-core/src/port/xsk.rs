//! The AF_XDP port: one socket on one queue of an interface.

use super::{Desc, Held};
use crate::xsk::{Umem, XskSocket};

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
    /// Marks the frames this port's rings hold in the UMEM (see [`Umem::reclaim`]).
    owner: u16,
}

impl XskPort {
    /// Wraps a bound socket. `max_frame` is what the interface can send (MTU + 14, and
    /// never more than the frame minus its headroom). Fill the rx side with
    /// [`housekeep`](Self::housekeep).
    pub fn new(sock: XskSocket, max_frame: u32) -> XskPort {
        let rx_target = sock.fill.size();
        XskPort { sock, rx_held: 0, tx_held: 0, rx_target, max_frame, kick_errors: 0, owner: crate::xsk::NO_OWNER }
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

    /// Tags the frames this port's rings hold with `owner` (the worker uses the port id).
    pub fn set_owner(&mut self, owner: u16) {
        self.owner = owner;
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
            umem.take_back(d.addr);
            *slot = Desc { addr: d.addr, len: d.len };
        }
        self.sock.rx.release(n);
        self.rx_held -= n;
        if n > 0 {
            self.refill(umem);
        }
        n as usize
    }

    #[inline]
    pub(super) fn tx_burst(&mut self, umem: &mut Umem, descs: &[Desc]) -> usize {
        let n = self.sock.tx.reserve(descs.len() as u32);
        for (i, d) in descs.iter().enumerate().take(n as usize) {
            self.sock.tx.write(i as u32, libc::xdp_desc { addr: d.addr, len: d.len, options: 0 });
            umem.lend(d.addr, self.owner);
        }
        self.sock.tx.submit(n);
        self.tx_held += n;
        for d in &descs[n as usize..] {
            umem.free(d.addr);
        }
        if n > 0 {
            self.kick();
        }
        n as usize
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
        let want = self.rx_target.saturating_sub(self.rx_held).min(umem.free_frames());
        if want == 0 {
            return;
        }
        let n = self.sock.fill.reserve(want);
        for i in 0..n {
            // `want` is bounded by the pool's size, so alloc cannot fail here.
            let Some(addr) = umem.alloc() else { break };
            self.sock.fill.write(i, addr);
            umem.lend(addr, self.owner);
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
            let addr = self.sock.comp.read(i);
            umem.take_back(addr);
            umem.free(addr);
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
