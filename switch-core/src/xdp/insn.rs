//! eBPF instruction encoding, and the one program podswitch loads.

/// One eBPF instruction (`struct bpf_insn`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    /// Opcode.
    pub code: u8,
    /// Destination register (low nibble) and source register (high nibble).
    pub regs: u8,
    /// Offset.
    pub off: i16,
    /// Immediate.
    pub imm: i32,
}

// Opcode parts (linux/bpf_common.h, linux/bpf.h).
pub(super) const BPF_LD: u8 = 0x00;
pub(super) const BPF_LDX: u8 = 0x01;
pub(super) const BPF_JMP: u8 = 0x05;
pub(super) const BPF_ALU64: u8 = 0x07;
const BPF_W: u8 = 0x00;
const BPF_DW: u8 = 0x18;
pub(super) const BPF_IMM: u8 = 0x00;
pub(super) const BPF_MEM: u8 = 0x60;
const BPF_K: u8 = 0x00;
const BPF_MOV: u8 = 0xb0;
pub(super) const BPF_CALL: u8 = 0x80;
pub(super) const BPF_EXIT: u8 = 0x90;
pub(super) const BPF_PSEUDO_MAP_FD: u8 = 1;

/// `bpf_redirect_map` helper id.
pub const HELPER_REDIRECT_MAP: i32 = 51;
/// `struct xdp_md` offset of `rx_queue_index`.
pub const XDP_MD_RX_QUEUE_INDEX: i16 = 16;
/// XDP verdicts.
pub const XDP_DROP: i32 = 1;
/// XDP verdicts.
pub const XDP_PASS: i32 = 2;
/// XDP verdicts.
pub const XDP_TX: i32 = 3;
/// `bpf_map_lookup_elem` helper id.
pub const HELPER_MAP_LOOKUP_ELEM: i32 = 1;

pub(super) const fn regs(dst: u8, src: u8) -> u8 {
    dst | (src << 4)
}

/// `dst = *(u32 *)(src + off)`
pub const fn ldx_w(dst: u8, src: u8, off: i16) -> Insn {
    Insn { code: BPF_LDX | BPF_MEM | BPF_W, regs: regs(dst, src), off, imm: 0 }
}

/// `dst = map` (a 64-bit immediate, two instructions; the kernel swaps the fd for the map).
pub const fn ld_map_fd(dst: u8, fd: i32) -> [Insn; 2] {
    [
        Insn { code: BPF_LD | BPF_DW | BPF_IMM, regs: regs(dst, BPF_PSEUDO_MAP_FD), off: 0, imm: fd },
        Insn { code: 0, regs: 0, off: 0, imm: 0 },
    ]
}

/// `dst = imm`
pub const fn mov64_imm(dst: u8, imm: i32) -> Insn {
    Insn { code: BPF_ALU64 | BPF_MOV | BPF_K, regs: regs(dst, 0), off: 0, imm }
}

/// `*(u32 *)(dst + off) = imm`
pub const fn st_w(dst: u8, off: i16, imm: i32) -> Insn {
    Insn { code: 0x02 | BPF_MEM | BPF_W, regs: regs(dst, 0), off, imm }
}

/// `dst = *(u64 *)(src + off)`
pub const fn ldx_dw(dst: u8, src: u8, off: i16) -> Insn {
    Insn { code: BPF_LDX | BPF_MEM | BPF_DW, regs: regs(dst, src), off, imm: 0 }
}

/// `*(u64 *)(dst + off) = src`
pub const fn stx_dw(dst: u8, src: u8, off: i16) -> Insn {
    Insn { code: 0x03 | BPF_MEM | BPF_DW, regs: regs(dst, src), off, imm: 0 }
}

/// `if dst >= imm goto +off` (unsigned)
pub const fn jge_imm(dst: u8, imm: i32, off: i16) -> Insn {
    Insn { code: BPF_JMP | 0x30 | BPF_K, regs: regs(dst, 0), off, imm }
}

/// `dst = src`
pub const fn mov64_reg(dst: u8, src: u8) -> Insn {
    Insn { code: BPF_ALU64 | BPF_MOV | 0x08, regs: regs(dst, src), off: 0, imm: 0 }
}

/// `dst += imm`
pub const fn add64_imm(dst: u8, imm: i32) -> Insn {
    Insn { code: BPF_ALU64 | BPF_K, regs: regs(dst, 0), off: 0, imm }
}

/// `if dst == imm goto +off`
pub const fn jeq_imm(dst: u8, imm: i32, off: i16) -> Insn {
    Insn { code: BPF_JMP | 0x10 | BPF_K, regs: regs(dst, 0), off, imm }
}

/// `call helper`
pub const fn call(helper: i32) -> Insn {
    Insn { code: BPF_JMP | BPF_CALL, regs: 0, off: 0, imm: helper }
}

/// `exit` (returns r0)
pub const fn exit() -> Insn {
    Insn { code: BPF_JMP | BPF_EXIT, regs: 0, off: 0, imm: 0 }
}

/// `struct xdp_md` offset of `ingress_ifindex`.
pub const XDP_MD_INGRESS_IFINDEX: i16 = 12;

/// The interface index of [`redirect_by_ifindex`]: a mappable array of `mask + 1`
/// u64 entries, entry `ifindex & mask` holding `ifindex << 32 | first slot` for the
/// one interface that claimed it (0: none).
#[derive(Debug, Clone, Copy)]
pub struct IfIndex {
    /// The array's descriptor.
    pub fd: i32,
    /// Entries - 1 (a power of two, less one).
    pub mask: u32,
}

/// The steering program shared by many interfaces. The interface's first XSKMAP slot
/// comes from `index` ([`IfIndex`]: an array lookup, which the verifier inlines) or,
/// when its entry holds another interface, from `ports` (a hash, ifindex → first
/// slot); the rx queue then picks the slot. Measured with BPF_PROG_TEST_RUN, per
/// frame: 36 ns a run through the array, 64 through the hash alone, 34 a program that
/// only redirects (perf/RESULTS.md).
///
/// ```text
/// r6 = ctx; r7 = ctx->ingress_ifindex
/// key = r7 & mask; r0 = lookup(index, &key)     ; key on the stack
/// if r0 == NULL goto hash
/// r2 = *(u64 *)r0; r3 = r2 >> 32
/// if r3 != r7 goto hash                         ; another interface's entry, or none
/// r2 = (u32)r2; goto queue
/// hash: key = r7; r0 = lookup(ports, &key)
/// if r0 == NULL goto fallback
/// r2 = *(u32 *)r0
/// queue: r3 = ctx->rx_queue_index
/// if r3 >= queues goto fallback                 ; never another interface's slot
/// r2 += r3
/// found                                         ; r0 = bpf_redirect_map(xsks, r2, verdict); exit
/// fallback: r0 = verdict; exit
/// ```
pub fn redirect_by_ifindex(
    index: IfIndex,
    ports_fd: i32,
    xsks_fd: i32,
    queues: u32,
    fallback: super::Fallback,
) -> Vec<Insn> {
    let verdict = match fallback {
        super::Fallback::Pass => XDP_PASS,
        super::Fallback::Drop => XDP_DROP,
    };
    let [x0, x1] = ld_map_fd(1, xsks_fd);
    steer(index, ports_fd, queues, verdict, &[x0, x1, mov64_imm(3, verdict), call(HELPER_REDIRECT_MAP), exit()])
}

/// [`redirect_by_ifindex`] with `found` in place of the redirect: `found` starts with
/// the XSKMAP key in r2 and ends the program.
fn steer(index: IfIndex, ports_fd: i32, queues: u32, verdict: i32, found: &[Insn]) -> Vec<Insn> {
    use super::asm::{Alu, Asm as Builder, Cond, Size};
    assert!((index.mask as u64 + 1).is_power_of_two(), "an index of a power of two entries");
    let mut a = Builder::new();
    a.mov(6, 1)
        .ldx(Size::W, 7, 1, XDP_MD_INGRESS_IFINDEX)
        .mov(2, 7)
        .alu_imm(Alu::And, 2, index.mask as i32)
        .stx(Size::W, 10, -4, 2)
        .mov(2, 10)
        .alu_imm(Alu::Add, 2, -4)
        .ld_map(1, index.fd)
        .call(HELPER_MAP_LOOKUP_ELEM)
        .jmp_imm(Cond::Eq, 0, 0, "hash")
        .ldx(Size::Dw, 2, 0, 0)
        .mov(3, 2)
        .alu_imm(Alu::Rsh, 3, 32)
        .jmp(Cond::Ne, 3, 7, "hash")
        .alu_imm(Alu::Lsh, 2, 32)
        .alu_imm(Alu::Rsh, 2, 32)
        .ja("queue")
        .label("hash")
        .stx(Size::W, 10, -4, 7)
        .mov(2, 10)
        .alu_imm(Alu::Add, 2, -4)
        .ld_map(1, ports_fd)
        .call(HELPER_MAP_LOOKUP_ELEM)
        .jmp_imm(Cond::Eq, 0, 0, "fallback")
        .ldx(Size::W, 2, 0, 0)
        .label("queue")
        .ldx(Size::W, 3, 6, XDP_MD_RX_QUEUE_INDEX)
        .jmp_imm(Cond::Ge, 3, queues as i32, "fallback")
        .alu(Alu::Add, 2, 3)
        .extend(found)
        .label("fallback")
        .ret(verdict);
    a.finish()
}

/// What the uplink's program steers to the switch; everything else goes to the
/// kernel's stack.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UplinkFilter {
    /// VXLAN: UDP to this port on one of these addresses (IPv4 without options, IPv6
    /// without extension headers, as VXLAN senders send).
    pub vxlan: Option<(Option<std::net::Ipv4Addr>, Option<std::net::Ipv6Addr>, u16)>,
    /// Direct routing: IPv4 to these prefixes (address, length).
    pub prefixes4: Vec<(std::net::Ipv4Addr, u8)>,
    /// Direct routing: IPv6 to these prefixes.
    pub prefixes6: Vec<(std::net::Ipv6Addr, u8)>,
}

// More opcodes, for the uplink program.
const BPF_JMP32: u8 = 0x06;
const BPF_ALU: u8 = 0x04;
const BPF_H: u8 = 0x08;
const BPF_B: u8 = 0x10;
const BPF_X: u8 = 0x08;
const BPF_JEQ: u8 = 0x10;
const BPF_JGT: u8 = 0x20;
const BPF_JNE: u8 = 0x50;
const BPF_AND: u8 = 0x50;

/// An instruction list with named jump targets, resolved by [`Asm::finish`].
#[derive(Debug, Default)]
struct Asm {
    insns: Vec<Insn>,
    labels: Vec<(String, usize)>,
    fixups: Vec<(usize, String)>,
}

impl Asm {
    fn op(&mut self, i: Insn) -> &mut Self {
        self.insns.push(i);
        self
    }

    fn ops(&mut self, i: &[Insn]) -> &mut Self {
        self.insns.extend_from_slice(i);
        self
    }

    fn label(&mut self, name: &str) -> &mut Self {
        self.labels.push((name.to_string(), self.insns.len()));
        self
    }

    /// A jump instruction whose offset `to` fills in.
    fn jump(&mut self, i: Insn, to: &str) -> &mut Self {
        self.fixups.push((self.insns.len(), to.to_string()));
        self.insns.push(i);
        self
    }

    /// `if w(dst) == imm goto to` (32-bit compare).
    fn jeq32(&mut self, dst: u8, imm: u32, to: &str) -> &mut Self {
        self.jump(Insn { code: BPF_JMP32 | BPF_JEQ | BPF_K, regs: regs(dst, 0), off: 0, imm: imm as i32 }, to)
    }

    /// `if w(dst) != imm goto to` (32-bit compare).
    fn jne32(&mut self, dst: u8, imm: u32, to: &str) -> &mut Self {
        self.jump(Insn { code: BPF_JMP32 | BPF_JNE | BPF_K, regs: regs(dst, 0), off: 0, imm: imm as i32 }, to)
    }

    /// `if data + len > data_end goto to` (r2 = data, r3 = data_end; clobbers r1).
    fn need(&mut self, len: i32, to: &str) -> &mut Self {
        self.op(mov64_reg(1, 2)).op(add64_imm(1, len));
        self.jump(Insn { code: BPF_JMP | BPF_JGT | BPF_X, regs: regs(1, 3), off: 0, imm: 0 }, to)
    }

    /// `goto to`
    fn ja(&mut self, to: &str) -> &mut Self {
        self.jump(Insn { code: BPF_JMP, regs: 0, off: 0, imm: 0 }, to)
    }

    fn finish(mut self) -> Vec<Insn> {
        for (at, to) in &self.fixups {
            let target = self.labels.iter().find(|(n, _)| n == to).map(|(_, i)| *i).expect("every jump has a label");
            self.insns[*at].off = (target as i64 - *at as i64 - 1) as i16;
        }
        self.insns
    }
}

/// `dst = *(u16 *)(src + off)`
const fn ldx_h(dst: u8, src: u8, off: i16) -> Insn {
    Insn { code: BPF_LDX | BPF_MEM | BPF_H, regs: regs(dst, src), off, imm: 0 }
}

/// `dst = *(u8 *)(src + off)`
const fn ldx_b(dst: u8, src: u8, off: i16) -> Insn {
    Insn { code: BPF_LDX | BPF_MEM | BPF_B, regs: regs(dst, src), off, imm: 0 }
}

/// `w(dst) &= imm`
const fn and32_imm(dst: u8, imm: u32) -> Insn {
    Insn { code: BPF_ALU | BPF_AND | BPF_K, regs: regs(dst, 0), off: 0, imm: imm as i32 }
}

/// A 32-bit word of packet bytes as a little-endian load sees it.
fn le(b: [u8; 4]) -> u32 {
    u32::from_le_bytes(b)
}

/// The uplink's program: frames `filter` selects go to `on_match` (which ends the
/// program), every other frame to the kernel (XDP_PASS). Registers: r6 = ctx, r2 =
/// data, r3 = data_end.
///
/// ```text
/// ethernet too short or not IPv4/IPv6     → pass
/// IPv4 dst in a prefix (direct routing)   → match
/// IPv4 dst = VTEP, UDP, no options, port  → match
/// IPv6 dst in a prefix                    → match
/// IPv6 dst = VTEP, next header UDP, port  → match
/// else                                    → pass
/// ```
fn uplink_program(filter: &UplinkFilter, on_match: &[Insn]) -> Vec<Insn> {
    if filter.vxlan.is_none() && filter.prefixes4.is_empty() && filter.prefixes6.is_empty() {
        // Nothing is the switch's (and the verifier refuses unreachable code).
        return verdict(XDP_PASS);
    }
    let mut a = Asm::default();
    a.op(mov64_reg(6, 1)).op(ldx_w(2, 1, 0)).op(ldx_w(3, 1, 4));
    a.need(14, "pass").op(ldx_h(4, 2, 12));
    a.jeq32(4, le([0x08, 0x00, 0, 0]), "v4").jeq32(4, le([0x86, 0xdd, 0, 0]), "v6").ja("pass");

    a.label("v4").need(34, "pass").op(ldx_w(4, 2, 30));
    for (addr, len) in &filter.prefixes4 {
        let mask = u32::MAX.checked_shl(32 - u32::from(*len)).unwrap_or(0).to_be_bytes();
        let net = (u32::from(*addr) & u32::from_be_bytes(mask)).to_be_bytes();
        a.op(mov64_reg(5, 4)).op(and32_imm(5, le(mask))).jeq32(5, le(net), "match");
    }
    match filter.vxlan {
        Some((Some(v4), _, port)) => {
            let p = port.to_be_bytes();
            a.jne32(4, le(v4.octets()), "pass");
            a.op(ldx_b(5, 2, 14 + 9)).jne32(5, 17, "pass");
            a.op(ldx_b(5, 2, 14)).jne32(5, 0x45, "pass");
            a.need(42, "pass").op(ldx_h(5, 2, 36)).jne32(5, le([p[0], p[1], 0, 0]), "pass");
            a.ja("match");
        }
        _ => {
            a.ja("pass");
        }
    }

    a.label("v6").need(54, "pass");
    for (i, (addr, len)) in filter.prefixes6.iter().enumerate() {
        let next = format!("v6_next_{i}");
        let mask = u128::MAX.checked_shl(128 - u32::from(*len)).unwrap_or(0).to_be_bytes();
        let net = (u128::from(*addr) & u128::from_be_bytes(mask)).to_be_bytes();
        for w in 0..4 {
            let m: [u8; 4] = mask[w * 4..w * 4 + 4].try_into().expect("4 bytes");
            if m == [0; 4] {
                continue;
            }
            let n: [u8; 4] = net[w * 4..w * 4 + 4].try_into().expect("4 bytes");
            a.op(ldx_w(5, 2, 38 + 4 * w as i16)).op(and32_imm(5, le(m))).jne32(5, le(n), &next);
        }
        a.ja("match").label(&next);
    }
    match filter.vxlan {
        Some((_, Some(v6), port)) => {
            let o = v6.octets();
            for w in 0..4 {
                let b: [u8; 4] = o[w * 4..w * 4 + 4].try_into().expect("4 bytes");
                a.op(ldx_w(5, 2, 38 + 4 * w as i16)).jne32(5, le(b), "pass");
            }
            let p = port.to_be_bytes();
            a.op(ldx_b(5, 2, 14 + 6)).jne32(5, 17, "pass");
            a.need(62, "pass").op(ldx_h(5, 2, 56)).jne32(5, le([p[0], p[1], 0, 0]), "pass");
            a.ja("match");
        }
        _ => {
            a.ja("pass");
        }
    }

    a.label("match").ops(on_match);
    a.label("pass").op(mov64_imm(0, XDP_PASS)).op(exit());
    a.finish()
}

/// The uplink's steering program: what `filter` selects goes to XSKMAP slot
/// `base + rx queue` (queues beyond `queues`, or without a socket, to the kernel).
pub fn uplink_redirect(filter: &UplinkFilter, xsks_fd: i32, base: u32, queues: u32) -> Vec<Insn> {
    let [x0, x1] = ld_map_fd(1, xsks_fd);
    let tail = [
        ldx_w(2, 6, XDP_MD_RX_QUEUE_INDEX),
        jge_imm(2, queues as i32, 6), // → pass (the six instructions below)
        add64_imm(2, base as i32),
        x0,
        x1,
        mov64_imm(3, XDP_PASS),
        call(HELPER_REDIRECT_MAP),
        exit(),
    ];
    uplink_program(filter, &tail)
}

/// The uplink's filter with a verdict instead of the redirect (for tests through
/// `BPF_PROG_TEST_RUN`, which cannot tell a redirect from its fallback).
pub fn uplink_verdict(filter: &UplinkFilter, on_match: i32) -> Vec<Insn> {
    uplink_program(filter, &[mov64_imm(0, on_match), exit()])
}

/// `return verdict` for every frame.
pub fn verdict(v: i32) -> Vec<Insn> {
    vec![mov64_imm(0, v), exit()]
}

/// Counts frames into slot 0 of a per-CPU array (`map_fd`: u32 key, u64 value) and
/// drops them: a sink that costs the kernel as little as a sink can.
pub fn count_and_drop(map_fd: i32) -> Vec<Insn> {
    count_and_return(map_fd, XDP_DROP)
}

/// Counts as [`count_and_drop`] does, then returns `verdict`. It never reads its
/// context, so it loads as any program type (tc's drop is `TCX_DROP`, 2).
pub fn count_and_return(map_fd: i32, verdict: i32) -> Vec<Insn> {
    let [ld0, ld1] = ld_map_fd(1, map_fd);
    vec![
        st_w(10, -4, 0),  // key = 0 on the stack
        mov64_reg(2, 10), // r2 = fp
        add64_imm(2, -4), // r2 = &key
        ld0,              // r1 = map
        ld1,
        call(HELPER_MAP_LOOKUP_ELEM),
        jeq_imm(0, 0, 3), // no slot: skip the count
        ldx_dw(1, 0, 0),  // r1 = *slot
        add64_imm(1, 1),  // r1 += 1 (per-CPU: no atomic needed)
        stx_dw(0, 1, 0),  // *slot = r1
        mov64_imm(0, verdict),
        exit(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::{AsRawFd, OwnedFd};

    #[test]
    fn encodings_match_the_kernel_headers() {
        // Checked against the kernel's encodings of the same instructions.
        let bytes = |i: Insn| {
            let mut b = [0u8; 8];
            b[0] = i.code;
            b[1] = i.regs;
            b[2..4].copy_from_slice(&i.off.to_le_bytes());
            b[4..8].copy_from_slice(&i.imm.to_le_bytes());
            b
        };
        assert_eq!(bytes(mov64_reg(6, 1)), [0xbf, 0x16, 0, 0, 0, 0, 0, 0]); // r6 = r1
        assert_eq!(bytes(ldx_w(2, 1, 12)), [0x61, 0x12, 12, 0, 0, 0, 0, 0]); // r2 = *(u32 *)(r1 + 12)
        let [m0, m1] = ld_map_fd(1, 7);
        assert_eq!(bytes(m0), [0x18, 0x11, 0, 0, 7, 0, 0, 0]); // r1 = map[fd 7]
        assert_eq!(bytes(m1), [0; 8]);
        assert_eq!(bytes(call(HELPER_MAP_LOOKUP_ELEM)), [0x85, 0x00, 0, 0, 1, 0, 0, 0]);
        assert_eq!(bytes(mov64_imm(3, XDP_PASS)), [0xb7, 0x03, 0, 0, 2, 0, 0, 0]); // r3 = XDP_PASS
        assert_eq!(bytes(call(HELPER_REDIRECT_MAP)), [0x85, 0x00, 0, 0, 51, 0, 0, 0]);
        assert_eq!(bytes(exit()), [0x95, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(core::mem::size_of::<Insn>(), 8);
    }

    /// The shared program, loaded (the verifier accepts it) and run on frames from
    /// `lo` with the redirect swapped for returning the XSKMAP key it found, + 16.
    #[test]
    fn the_steering_finds_an_interfaces_slots_through_the_index_or_else_the_hash() {
        use crate::xdp::{bpf, IfIndexMap};
        let lo = crate::sys::netdev::ifindex("lo").expect("lo");
        let index = IfIndexMap::new(64).expect("a mappable array");
        let ports = bpf::create_u32_hash(8, "ps_test_ports").expect("a hash");
        let found = [mov64_reg(0, 2), add64_imm(0, 16), exit()];
        let prog = |queues| {
            let p = steer(index.insn(), ports.as_raw_fd(), queues, XDP_DROP, &found);
            bpf::load_xdp(&p, "ps_test_steer").expect("the verifier accepts it")
        };
        let (two, none) = (prog(2), prog(0));
        let run = |p: &OwnedFd| bpf::test_run_from(p, &[0u8; 60], lo, 0).expect("a test run") as i32;
        assert_eq!(run(&two), XDP_DROP, "an interface of no port");
        bpf::map_update(&ports, lo, 6).unwrap();
        assert_eq!(run(&two), 16 + 6, "through the hash");
        // Another interface holds lo's entry of the index: still the hash.
        assert!(index.claim(lo + 64, 10));
        assert!(!index.claim(lo, 20), "the entry is taken");
        assert_eq!(run(&two), 16 + 6, "an entry of another interface is not lo's");
        index.release(lo + 64, 10);
        assert!(index.claim(lo, 20));
        assert_eq!(run(&two), 16 + 20, "through the index, first");
        assert_eq!(run(&none), XDP_DROP, "a queue beyond the interface's");
        index.release(lo, 999);
        assert_eq!(run(&two), 16 + 20, "released by its own claim only");
        index.release(lo, 20);
        bpf::map_delete(&ports, lo).unwrap();
        assert_eq!(run(&two), XDP_DROP, "both gone");
    }

    /// The uplink filter, loaded into the kernel (the verifier accepts it) and run on
    /// frames: only what is the switch's matches.
    #[test]
    fn the_uplink_filter_takes_only_the_switchs_traffic() {
        use crate::xdp::bpf;
        use etherparse::PacketBuilder;
        let filter = UplinkFilter {
            vxlan: Some((Some("198.19.0.1".parse().unwrap()), Some("2001:db8:ff::1".parse().unwrap()), 4789)),
            prefixes4: vec![("198.18.4.0".parse().unwrap(), 22)],
            prefixes6: vec![("2001:db8:4::".parse().unwrap(), 48)],
        };
        let prog =
            bpf::load_xdp(&uplink_verdict(&filter, XDP_DROP), "ps_test_uplink").expect("the verifier accepts it");
        let udp4 = |dst: [u8; 4], port: u16| {
            let mut f = Vec::new();
            PacketBuilder::ethernet2([2; 6], [4; 6])
                .ipv4([198, 19, 0, 2], dst, 64)
                .udp(50000, port)
                .write(&mut f, &[0; 30])
                .unwrap();
            f
        };
        let udp6 = |dst: &str, port: u16| {
            let mut f = Vec::new();
            let d: std::net::Ipv6Addr = dst.parse().unwrap();
            PacketBuilder::ethernet2([2; 6], [4; 6])
                .ipv6([0x20, 1, 0xd, 0xb8, 0, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2], d.octets(), 64)
                .udp(50000, port)
                .write(&mut f, &[0; 30])
                .unwrap();
            f
        };
        let run = |f: &[u8]| bpf::test_run(&prog, f).unwrap() as i32;
        assert_eq!(run(&udp4([198, 19, 0, 1], 4789)), XDP_DROP, "VXLAN to the VTEP");
        assert_eq!(run(&udp4([198, 19, 0, 1], 4790)), XDP_PASS, "another port");
        assert_eq!(run(&udp4([198, 19, 0, 9], 4789)), XDP_PASS, "another address");
        assert_eq!(run(&udp4([198, 18, 7, 200], 53)), XDP_DROP, "in 198.18.4.0/22");
        assert_eq!(run(&udp4([198, 18, 8, 1], 53)), XDP_PASS, "outside it");
        assert_eq!(run(&udp6("2001:db8:ff::1", 4789)), XDP_DROP, "VXLAN over IPv6");
        assert_eq!(run(&udp6("2001:db8:ff::1", 22)), XDP_PASS);
        assert_eq!(run(&udp6("2001:db8:ff::2", 4789)), XDP_PASS);
        assert_eq!(run(&udp6("2001:db8:4:9::1", 80)), XDP_DROP, "in 2001:db8:4::/48");
        assert_eq!(run(&udp6("2001:db8:5::1", 80)), XDP_PASS);
        let mut arp = udp4([198, 19, 0, 1], 4789);
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(run(&arp), XDP_PASS, "ARP is the kernel's");
        assert_eq!(run(&arp[..20]), XDP_PASS, "short frames too");
        let with_options = {
            let mut f = udp4([198, 19, 0, 1], 4789);
            f[14] = 0x46;
            f
        };
        assert_eq!(run(&with_options), XDP_PASS, "IPv4 options: not a VXLAN sender's");
        // Without VXLAN (direct mode) and without prefixes, nothing is the switch's.
        let none = bpf::load_xdp(&uplink_verdict(&UplinkFilter::default(), XDP_DROP), "ps_test_none").unwrap();
        assert_eq!(bpf::test_run(&none, &udp4([198, 19, 0, 1], 4789)).unwrap() as i32, XDP_PASS);
    }
}
