//! The line-rate engine: an XDP program run by the kernel over live frames
//! (BPF_PROG_RUN with BPF_F_TEST_XDP_LIVE_FRAMES), each run writing one frame of the
//! [`Stream`] and returning `XDP_TX`, so the kernel transmits it out of the interface.
//!
//! The program does the per-frame work itself — pacing, counting, flow, size,
//! signature and checksum — so one `BPF_PROG_RUN` call lasts the whole run and the
//! generator costs no syscall per frame or per batch. Per run of the program:
//!
//! 1. Pacing (when a rate is set): a frame is due every `interval_ns`; a run before it
//!    is due returns `XDP_DROP` (the kernel recycles the page and runs again). The
//!    schedule never falls more than `burst_ns` behind the clock, so a stall is not
//!    made up for with a burst. Unpaced, the clock (for the signature) is read for
//!    one frame in 16 and reused for the next 15, a few hundred ns apart.
//! 2. Counting: frame `n = sent++`, up to `limit`; past it every run drops.
//! 3. Size: `sizes[n % len]` sets the frame's length (`bpf_xdp_adjust_tail`) and its
//!    length fields and IPv4 header checksums, precomputed per size.
//! 4. Headers: written on every run. The kernel recycles each frame's page when the
//!    receiver frees it, bytes and all, so a receiver that edits frames in place (a
//!    router decrementing the TTL and writing the next hop's MACs, a VXLAN device)
//!    would otherwise have the next frames arrive already edited, and drop them.
//! 5. Flow, signature and the UDP checksum, adjusted from the size's precomputed sum
//!    by adding the variable words (RFC 1071's one's-complement sum is order-free).
//!
//! The call is ended from outside by a signal (the kernel checks for one between
//! batches and returns EINTR): [`Generator::run`] runs it on a thread of its own and
//! interrupts it when the count is reached or the time is up.

use super::stream::{Stream, MAGIC};
use anyhow::{bail, Context, Result};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use switch_core::xdp::asm::{Alu, Asm, Cond, Size, HELPER_KTIME_GET_NS, HELPER_XDP_ADJUST_TAIL};
use switch_core::xdp::insn::Insn;
use switch_core::xdp::{bpf, insn};

// The state map's one value: u64 fields at these offsets.
const NEXT_NS: i16 = 0;
const INTERVAL_NS: i16 = 8;
const SENT: i16 = 16;
const LIMIT: i16 = 24;
const FLOWS: i16 = 32;
const BURST_NS: i16 = 40;
const SIZES: i16 = 48;
const FIRST_NS: i16 = 56;
const LAST_NS: i16 = 64;
const CLOCK_NS: i16 = 72;
const STATE_LEN: usize = 80;
/// Unpaced, the clock is read for one frame in this many (a power of two) and reused
/// for the others: reading it costs ~25 ns here, a sixth of a frame's cost.
const CLOCK_EVERY: i32 = 16;

// A size's entry: wanted length (u32), UDP partial sum (u32), then the size fields'
// values as they go on the wire.
const ENTRY_LEN: i16 = 0;
const ENTRY_SUM: i16 = 4;
const ENTRY_FIELDS: i16 = 8;
const ENTRY_SIZE: usize = 24;

// Stack slots.
const KEY: i16 = -4;
const SIZE_KEY: i16 = -8;
const FLOW: i16 = -16;
const SEQ: i16 = -24;
const NOW: i16 = -32;

/// A loaded generator for one stream.
#[derive(Debug)]
pub struct Generator {
    stream: Stream,
    prog: OwnedFd,
    state: OwnedFd,
    /// The frame each run starts from (the largest size's base frame).
    template: Vec<u8>,
}

/// How to run.
#[derive(Debug, Clone, Copy)]
pub struct RunOpts {
    /// Frames per second; 0 sends flat out.
    pub rate_pps: u64,
    /// Stop after this many frames (`None`: until the time is up).
    pub count: Option<u64>,
    /// Stop after this long in any case.
    pub seconds: f64,
    /// Frames the kernel runs before it transmits what they produced.
    pub batch: u32,
    /// Print a progress line every second.
    pub progress: bool,
    /// CPU the sending thread is pinned to.
    pub core: Option<usize>,
}

/// What a run sent.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Sent {
    /// Frames.
    pub frames: u64,
    /// Bytes on the wire (FCS included).
    pub wire_bytes: u64,
    /// From the first frame to the last.
    pub seconds: f64,
    /// Frames per second over that time.
    pub rate_pps: f64,
    /// Gigabits per second on the wire, FCS included (preamble and gap not).
    pub gbit_s: f64,
}

impl Generator {
    /// Checks the stream and loads its program and maps.
    pub fn new(stream: &Stream) -> Result<Generator> {
        stream.validate()?;
        let state = bpf::create_array("pktgen_state", STATE_LEN as u32, 1, false)?;
        let sizes = bpf::create_array("pktgen_sizes", ENTRY_SIZE as u32, stream.sizes.len() as u32, false)?;
        let layout = stream.layout();
        let mut entries = Vec::new();
        for (i, &size) in stream.sizes.iter().enumerate() {
            let base = stream.base(size);
            let mut e = [0u8; ENTRY_SIZE];
            e[0..4].copy_from_slice(&(base.len() as u32).to_ne_bytes());
            e[4..8].copy_from_slice(&stream.base_udp_sum(size).to_ne_bytes());
            for (k, &off) in layout.size_fields.iter().enumerate() {
                e[8 + 2 * k..10 + 2 * k].copy_from_slice(&base[off..off + 2]);
            }
            bpf::map_update_bytes(&sizes, i as u32, &e)?;
            entries.push(e);
        }
        let largest = *stream.sizes.iter().max().expect("validate() requires a size");
        let template = stream.base(largest);
        let insns = program(stream, &template[..layout.sig], &entries, state.as_raw_fd(), sizes.as_raw_fd());
        let prog = bpf::load_xdp(&insns, "pktgen_tx").context("loading the generator's program")?;
        // The sizes map lives as long as the program that uses it.
        drop(sizes);
        Ok(Generator { stream: stream.clone(), prog, state, template })
    }

    /// The stream.
    pub fn stream(&self) -> &Stream {
        &self.stream
    }

    fn read_state(&self) -> Result<[u64; STATE_LEN / 8]> {
        let mut b = [0u8; STATE_LEN];
        bpf::map_lookup_bytes(&self.state, 0, &mut b)?;
        let mut v = [0u64; STATE_LEN / 8];
        for (i, c) in b.chunks_exact(8).enumerate() {
            v[i] = u64::from_ne_bytes(c.try_into().expect("8 bytes"));
        }
        Ok(v)
    }

    /// Sends out of `dev` (in namespace `netns`, or the caller's) until the count is
    /// reached or the time is up, whichever comes first.
    pub fn run(&self, dev: &str, netns: Option<&str>, opts: &RunOpts) -> Result<Sent> {
        if !(opts.seconds > 0.0 && opts.seconds <= 3600.0) {
            bail!("--seconds {}: every run is bounded; give 0 to 3600 seconds", opts.seconds);
        }
        let mut st = [0u64; STATE_LEN / 8];
        st[(INTERVAL_NS / 8) as usize] =
            if opts.rate_pps > 0 { (1e9 / opts.rate_pps as f64).round() as u64 } else { 0 };
        st[(LIMIT / 8) as usize] = opts.count.unwrap_or(u64::MAX);
        st[(FLOWS / 8) as usize] = u64::from(self.stream.flows);
        // A stall may be made up for by at most one batch's worth of frames.
        st[(BURST_NS / 8) as usize] = st[(INTERVAL_NS / 8) as usize] * u64::from(opts.batch.max(1));
        st[(SIZES / 8) as usize] = self.stream.sizes.len() as u64;
        let bytes: Vec<u8> = st.iter().flat_map(|v| v.to_ne_bytes()).collect();
        bpf::map_update_bytes(&self.state, 0, &bytes)?;

        interrupt_handler()?;
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicBool::new(false));
        let (prog, frame) = (self.prog.try_clone()?, self.template.clone());
        let (dev_name, ns, batch) = (dev.to_string(), netns.map(str::to_string), opts.batch.clamp(1, 256));
        let (stop2, done2, core) = (stop.clone(), done.clone(), opts.core);
        let sender = std::thread::spawn(move || -> Result<()> {
            let r = (|| {
                if let Some(c) = core {
                    if !core_affinity::set_for_current(core_affinity::CoreId { id: c }) {
                        bail!("cannot pin the sender to CPU {c}");
                    }
                }
                if let Some(ns) = &ns {
                    super::enter_netns(ns)?;
                }
                let ifindex =
                    switch_core::sys::netdev::ifindex(&dev_name).with_context(|| format!("no interface {dev_name}"))?;
                // Acquire: pairs with the Release store of `stop`.
                while !stop2.load(Ordering::Acquire) {
                    match bpf::test_run_live(&prog, ifindex, &frame, u32::MAX, batch) {
                        Ok(_) => {}
                        Err(e) if e.source.raw_os_error() == Some(libc::EINTR) => {}
                        Err(e) => return Err(e).context(format!("sending on {dev_name}")),
                    }
                }
                Ok(())
            })();
            // Release: the result is ready before `done` reads true.
            done2.store(true, Ordering::Release);
            r
        });

        let start = Instant::now();
        let end = start + Duration::from_secs_f64(opts.seconds);
        let mut last = (start, 0u64);
        loop {
            std::thread::sleep(Duration::from_millis(20));
            // Acquire: see the sender's result if it ended on its own (an error).
            if done.load(Ordering::Acquire) {
                break;
            }
            let sent = self.read_state()?[(SENT / 8) as usize];
            let now = Instant::now();
            if opts.progress && now - last.0 >= Duration::from_secs(1) {
                let rate = (sent - last.1) as f64 / (now - last.0).as_secs_f64();
                eprintln!(
                    "{:>6.1} s  {:>12} frames  {:>8.3} Mpps  {:>7.3} Gbit/s",
                    (now - start).as_secs_f64(),
                    sent,
                    rate / 1e6,
                    rate * self.stream.mean_wire() * 8.0 / 1e9
                );
                last = (now, sent);
            }
            if now >= end || opts.count.is_some_and(|c| sent >= c) {
                break;
            }
        }
        stop.store(true, Ordering::Release);
        // Interrupt until the sender is out: a signal that lands between two calls is
        // lost, and the next call would run for hours.
        while !done.load(Ordering::Acquire) {
            use std::os::unix::thread::JoinHandleExt;
            // SAFETY: the thread has not been joined (it is joined below, after `done`),
            // so its pthread_t is valid; SIGUSR1 has a handler (`interrupt_handler`).
            #[allow(unsafe_code)]
            unsafe {
                libc::pthread_kill(sender.as_pthread_t(), libc::SIGUSR1)
            };
            std::thread::sleep(Duration::from_millis(2));
        }
        sender.join().map_err(|_| anyhow::anyhow!("the sending thread panicked"))??;

        let st = self.read_state()?;
        let frames = st[(SENT / 8) as usize];
        let seconds =
            if frames > 1 { (st[(LAST_NS / 8) as usize] - st[(FIRST_NS / 8) as usize]) as f64 / 1e9 } else { 0.0 };
        let rate_pps = if seconds > 0.0 { (frames - 1) as f64 / seconds } else { 0.0 };
        let wire_bytes = self.stream.wire_bytes(frames);
        let gbit_s = if frames > 0 { rate_pps * wire_bytes as f64 / frames as f64 * 8.0 / 1e9 } else { 0.0 };
        Ok(Sent { frames, wire_bytes, seconds, rate_pps, gbit_s })
    }
}

/// SIGUSR1 interrupts a thread's BPF_PROG_RUN (EINTR) instead of ending the process.
fn interrupt_handler() -> Result<()> {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    let mut r = Ok(());
    INSTALLED.call_once(|| {
        // The flag is never read: the handler exists so the signal interrupts the call.
        r = signal_hook::flag::register(libc::SIGUSR1, Arc::new(AtomicBool::new(false))).map(drop);
    });
    r.context("installing the SIGUSR1 handler that ends a run")
}

/// The generator's program for `stream`: `header` is written at the frame's start on
/// every run; `sizes` are the entries of the sizes map (`sizes_fd`), built in as
/// constants when there is only one.
fn program(stream: &Stream, header: &[u8], sizes: &[[u8; ENTRY_SIZE]], state_fd: i32, sizes_fd: i32) -> Vec<Insn> {
    let l = stream.layout();
    let mut a = Asm::new();
    // r7 = &state
    a.mov(6, 1).st(Size::W, 10, KEY, 0).mov(2, 10).alu_imm(Alu::Add, 2, i32::from(KEY)).ld_map(1, state_fd);
    a.call(insn::HELPER_MAP_LOOKUP_ELEM).jmp_imm(Cond::Eq, 0, 0, "drop").mov(7, 0);
    // Paced: the clock on every run; a frame is due at next_ns.
    a.ldx(Size::Dw, 1, 7, INTERVAL_NS).jmp_imm(Cond::Eq, 1, 0, "unpaced");
    a.call(HELPER_KTIME_GET_NS).stx(Size::Dw, 10, NOW, 0).mov(3, 0).ldx(Size::Dw, 1, 7, INTERVAL_NS);
    a.ldx(Size::Dw, 2, 7, NEXT_NS).jmp(Cond::Lt, 3, 2, "drop");
    a.ldx(Size::Dw, 5, 7, BURST_NS).mov(4, 3).alu(Alu::Sub, 4, 5).jmp(Cond::Ge, 2, 4, "on_time").mov(2, 4);
    a.label("on_time").alu(Alu::Add, 2, 1).stx(Size::Dw, 7, NEXT_NS, 2).ja("count");
    // Unpaced: the clock for one frame in CLOCK_EVERY.
    a.label("unpaced").ldx(Size::Dw, 1, 7, SENT).alu_imm(Alu::And, 1, CLOCK_EVERY - 1);
    a.ldx(Size::Dw, 0, 7, CLOCK_NS).jmp_imm(Cond::Ne, 1, 0, "clock");
    a.call(HELPER_KTIME_GET_NS).stx(Size::Dw, 7, CLOCK_NS, 0);
    a.label("clock").stx(Size::Dw, 10, NOW, 0);
    // r8 = n = sent++, below the limit.
    a.label("count").ldx(Size::Dw, 8, 7, SENT).ldx(Size::Dw, 1, 7, LIMIT).jmp(Cond::Ge, 8, 1, "drop");
    a.mov(1, 8).alu_imm(Alu::Add, 1, 1).stx(Size::Dw, 7, SENT, 1);
    a.ldx(Size::Dw, 1, 10, NOW).stx(Size::Dw, 7, LAST_NS, 1).jmp_imm(Cond::Ne, 8, 0, "flow");
    a.stx(Size::Dw, 7, FIRST_NS, 1);
    // flow = n % flows, seq = n / flows
    a.label("flow");
    if stream.flows == 1 {
        a.st(Size::Dw, 10, FLOW, 0).stx(Size::Dw, 10, SEQ, 8);
    } else {
        a.ldx(Size::Dw, 2, 7, FLOWS).mov(1, 8).alu(Alu::Mod, 1, 2).stx(Size::Dw, 10, FLOW, 1);
        a.mov(1, 8).alu(Alu::Div, 1, 2).stx(Size::Dw, 10, SEQ, 1);
    }
    // r9 = &sizes[n % len], and the frame resized from whatever length the page was
    // left at. One size: the frame is the template's length, always.
    if sizes.len() > 1 {
        a.ldx(Size::Dw, 2, 7, SIZES).mov(1, 8).alu(Alu::Mod, 1, 2).stx(Size::W, 10, SIZE_KEY, 1);
        a.mov(2, 10).alu_imm(Alu::Add, 2, i32::from(SIZE_KEY)).ld_map(1, sizes_fd);
        a.call(insn::HELPER_MAP_LOOKUP_ELEM).jmp_imm(Cond::Eq, 0, 0, "drop").mov(9, 0);
        a.ldx(Size::W, 1, 6, 0).ldx(Size::W, 2, 6, 4).alu(Alu::Sub, 2, 1);
        a.ldx(Size::W, 3, 9, ENTRY_LEN).alu(Alu::Sub, 3, 2).jmp_imm(Cond::Eq, 3, 0, "sized");
        a.mov(1, 6).mov(2, 3).call(HELPER_XDP_ADJUST_TAIL).jmp_imm(Cond::Ne, 0, 0, "drop");
        a.label("sized");
    }
    // r2 = data, checked to hold the headers and the signature.
    let sig = l.sig as i16;
    a.ldx(Size::W, 2, 6, 0).ldx(Size::W, 3, 6, 4).mov(4, 2).alu_imm(Alu::Add, 4, i32::from(sig) + 16);
    a.jmp(Cond::Gt, 4, 3, "drop");
    let words = header.chunks_exact(4);
    let tail = words.remainder().to_vec();
    for (k, w) in words.enumerate() {
        a.st(Size::W, 2, (k * 4) as i16, i32::from_le_bytes([w[0], w[1], w[2], w[3]]));
    }
    if !tail.is_empty() {
        a.st(Size::H, 2, (header.len() - 2) as i16, i32::from(u16::from_le_bytes([tail[0], tail[1]])));
    }
    for (k, &off) in l.size_fields.iter().enumerate() {
        match sizes {
            [one] => a.st(Size::H, 2, off as i16, i32::from(u16::from_le_bytes([one[8 + 2 * k], one[9 + 2 * k]]))),
            _ => a.ldx(Size::H, 1, 9, ENTRY_FIELDS + 2 * k as i16).stx(Size::H, 2, off as i16, 1),
        };
    }
    // r4 = the UDP sum; r5 = flow.
    let udp = l.udp as i16;
    match sizes {
        [one] => a.mov_imm(4, i32::from_ne_bytes([one[4], one[5], one[6], one[7]])),
        _ => a.ldx(Size::W, 4, 9, ENTRY_SUM),
    };
    a.ldx(Size::Dw, 5, 10, FLOW);
    a.mov(1, 5).alu_imm(Alu::Add, 1, i32::from(stream.src_port)).alu_imm(Alu::And, 1, 0xffff).alu(Alu::Add, 4, 1);
    a.be(1, 16).stx(Size::H, 2, udp, 1);
    if let Some(outer) = l.outer_udp {
        a.mov(1, 5).alu_imm(Alu::And, 1, 0x3fff).alu_imm(Alu::Or, 1, 0xc000).be(1, 16).stx(Size::H, 2, outer as i16, 1);
    }
    a.st(Size::H, 2, sig, i32::from(u16::from_le_bytes(MAGIC.to_be_bytes())));
    a.mov(1, 5).alu(Alu::Add, 4, 1).be(1, 16).stx(Size::H, 2, sig + 2, 1);
    // seq, as 32 bits
    a.ldx(Size::Dw, 1, 10, SEQ).alu_imm(Alu::Lsh, 1, 32).alu_imm(Alu::Rsh, 1, 32);
    a.mov(0, 1).alu_imm(Alu::Rsh, 0, 16).alu(Alu::Add, 4, 0).mov(0, 1).alu_imm(Alu::And, 0, 0xffff).alu(Alu::Add, 4, 0);
    a.be(1, 32).stx(Size::W, 2, sig + 4, 1);
    // time
    a.ldx(Size::Dw, 1, 10, NOW);
    for shift in [0, 16, 32, 48] {
        a.mov(0, 1).alu_imm(Alu::Rsh, 0, shift).alu_imm(Alu::And, 0, 0xffff).alu(Alu::Add, 4, 0);
    }
    a.be(1, 64).stx(Size::Dw, 2, sig + 8, 1);
    // Fold, complement; a zero checksum is sent as 0xffff (zero means "none" in UDP).
    for _ in 0..3 {
        a.mov(0, 4).alu_imm(Alu::Rsh, 0, 16).alu_imm(Alu::And, 4, 0xffff).alu(Alu::Add, 4, 0);
    }
    a.alu_imm(Alu::Xor, 4, 0xffff).jmp_imm(Cond::Ne, 4, 0, "nonzero").mov_imm(4, 0xffff);
    a.label("nonzero").be(4, 16).stx(Size::H, 2, udp + 6, 4);
    a.ret(insn::XDP_TX);
    a.label("drop").ret(insn::XDP_DROP);
    a.finish()
}

#[cfg(test)]
mod tests {
    use super::super::stream::{signature, Vxlan, IMIX};
    use super::*;
    use switch_core::wire::EthernetAddress;

    fn stream() -> Stream {
        Stream {
            src_mac: EthernetAddress([2, 0, 0, 0, 0, 1]),
            dst_mac: EthernetAddress([2, 0, 0, 0, 0, 2]),
            src_ip: "198.18.0.1".parse().unwrap(),
            dst_ip: "198.18.0.2".parse().unwrap(),
            src_port: 65000,
            dst_port: 9,
            flows: 7,
            sizes: IMIX.to_vec(),
            vxlan: None,
        }
    }

    /// Runs the program once per frame over pages left in every state (another size,
    /// edited headers) and checks each frame against the stream's own builder.
    fn check(s: &Stream, frames: u64) {
        let g = Generator::new(s).expect("the verifier accepts the program");
        let mut st = [0u8; STATE_LEN];
        st[FLOWS as usize..FLOWS as usize + 8].copy_from_slice(&u64::from(s.flows).to_ne_bytes());
        st[LIMIT as usize..LIMIT as usize + 8].copy_from_slice(&u64::MAX.to_ne_bytes());
        st[SIZES as usize..SIZES as usize + 8].copy_from_slice(&(s.sizes.len() as u64).to_ne_bytes());
        bpf::map_update_bytes(&g.state, 0, &st).unwrap();
        let mut page = g.template.clone();
        for n in 0..frames {
            // The page as a receiver might leave it: shorter, its headers edited.
            page.truncate(page.len().min(s.sizes[((n + 5) % s.sizes.len() as u64) as usize] - 4));
            for b in page.iter_mut().take(20) {
                *b ^= 0x5a;
            }
            let (verdict, out) = bpf::test_run_out(&g.prog, &page).unwrap();
            assert_eq!(verdict as i32, insn::XDP_TX, "frame {n}");
            let ts = signature(&out).expect("signed").ts_ns;
            assert_eq!(out, s.frame(n, ts), "frame {n} as the stream defines it");
            page = out;
            page.resize(g.template.len(), 0);
        }
        assert_eq!(g.read_state().unwrap()[(SENT / 8) as usize], frames);
    }

    #[test]
    fn the_program_writes_every_frame_as_the_stream_defines_it() {
        check(&stream(), 40);
        let mut v6 = stream();
        v6.src_ip = "2001:db8::1".parse().unwrap();
        v6.dst_ip = "2001:db8::2".parse().unwrap();
        v6.sizes = vec![82, 1518, 200];
        check(&v6, 20);
        let mut vx = stream();
        vx.sizes = vec![112, 1518];
        vx.flows = 65536;
        vx.vxlan = Some(Vxlan {
            src_mac: EthernetAddress([2, 0, 0, 0, 1, 1]),
            dst_mac: EthernetAddress([2, 0, 0, 0, 1, 2]),
            src: "198.19.0.1".parse().unwrap(),
            dst: "198.19.0.2".parse().unwrap(),
            vni: 77,
        });
        check(&vx, 10);
        let mut one = stream();
        one.sizes = vec![64];
        check(&one, 10);
    }

    #[test]
    fn past_the_limit_every_run_drops() {
        let g = Generator::new(&stream()).unwrap();
        let mut st = [0u8; STATE_LEN];
        st[FLOWS as usize..FLOWS as usize + 8].copy_from_slice(&1u64.to_ne_bytes());
        st[SIZES as usize..SIZES as usize + 8].copy_from_slice(&12u64.to_ne_bytes());
        st[LIMIT as usize..LIMIT as usize + 8].copy_from_slice(&2u64.to_ne_bytes());
        bpf::map_update_bytes(&g.state, 0, &st).unwrap();
        let verdicts: Vec<i32> = (0..4).map(|_| bpf::test_run(&g.prog, &g.template).unwrap() as i32).collect();
        assert_eq!(verdicts, [insn::XDP_TX, insn::XDP_TX, insn::XDP_DROP, insn::XDP_DROP]);
    }
}
