//! The in-memory port: frames queued by a test or benchmark, and frames sent kept (or
//! only counted). It lets the whole pipeline run without a kernel.

use super::Desc;
use crate::xsk::{Umem, FRAME_HEADROOM};
use std::collections::VecDeque;

/// A port backed by memory.
#[derive(Debug)]
pub struct MemoryPort {
    name: String,
    rx: VecDeque<Vec<u8>>,
    /// Frames replayed in a loop, for benchmarks (rx never runs dry).
    replay: Vec<Vec<u8>>,
    replay_next: usize,
    sent: Vec<Vec<u8>>,
    keep_sent: bool,
    sent_packets: u64,
    max_frame: u32,
}

impl MemoryPort {
    /// A port that keeps every frame it sends.
    pub fn new(name: &str) -> MemoryPort {
        MemoryPort {
            name: name.to_string(),
            rx: VecDeque::new(),
            replay: Vec::new(),
            replay_next: 0,
            sent: Vec::new(),
            keep_sent: true,
            sent_packets: 0,
            max_frame: 3840,
        }
    }

    /// A port that receives `frames` over and over and only counts what it sends
    /// (benchmarks and the allocation test: nothing allocates per packet).
    pub fn replaying(name: &str, frames: Vec<Vec<u8>>) -> MemoryPort {
        MemoryPort { replay: frames, keep_sent: false, ..MemoryPort::new(name) }
    }

    /// Sends frames of at most `bytes` (an MTU of `bytes` - 14).
    pub fn with_max_frame(mut self, bytes: u32) -> MemoryPort {
        self.max_frame = bytes;
        self
    }

    /// Queues a frame to be received.
    pub fn push_rx(&mut self, frame: &[u8]) {
        self.rx.push_back(frame.to_vec());
    }

    /// Takes the frames sent so far.
    pub fn take_sent(&mut self) -> Vec<Vec<u8>> {
        core::mem::take(&mut self.sent)
    }

    /// Frames sent so far (also when they are not kept).
    pub fn sent_packets(&self) -> u64 {
        self.sent_packets
    }

    /// Name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Largest frame sent.
    pub fn max_frame(&self) -> u32 {
        self.max_frame
    }

    pub(super) fn rx_burst(&mut self, umem: &mut Umem, out: &mut [Desc]) -> usize {
        let room = (umem.frame_size() - FRAME_HEADROOM) as usize;
        let mut n = 0;
        while n < out.len() {
            let src: &[u8] = if self.replay.is_empty() {
                match self.rx.front() {
                    Some(f) => f,
                    None => break,
                }
            } else {
                &self.replay[self.replay_next]
            };
            let Some(base) = umem.alloc() else { break };
            let addr = base + u64::from(FRAME_HEADROOM);
            let len = src.len().min(room);
            umem.data_mut(addr, len as u32).copy_from_slice(&src[..len]);
            if self.replay.is_empty() {
                self.rx.pop_front();
            } else {
                // A compare, not `%`: this runs per packet in the benchmarks.
                self.replay_next += 1;
                if self.replay_next == self.replay.len() {
                    self.replay_next = 0;
                }
            }
            out[n] = Desc { addr, len: len as u32 };
            n += 1;
        }
        n
    }

    pub(super) fn tx_burst(&mut self, umem: &mut Umem, descs: &[Desc]) -> super::Sent {
        for d in descs {
            if self.keep_sent {
                self.sent.push(umem.data(d.addr, d.len).to_vec());
            }
            self.sent_packets += 1;
            umem.free(d.addr);
        }
        super::Sent { packets: descs.len() as u32, bytes: descs.iter().map(|d| u64::from(d.len)).sum() }
    }
}
