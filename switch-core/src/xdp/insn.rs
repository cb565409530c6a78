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
const BPF_LD: u8 = 0x00;
const BPF_LDX: u8 = 0x01;
const BPF_JMP: u8 = 0x05;
const BPF_ALU64: u8 = 0x07;
const BPF_W: u8 = 0x00;
const BPF_DW: u8 = 0x18;
const BPF_IMM: u8 = 0x00;
const BPF_MEM: u8 = 0x60;
const BPF_K: u8 = 0x00;
const BPF_MOV: u8 = 0xb0;
const BPF_CALL: u8 = 0x80;
const BPF_EXIT: u8 = 0x90;
const BPF_PSEUDO_MAP_FD: u8 = 1;

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

const fn regs(dst: u8, src: u8) -> u8 {
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

/// `*(u32 *)(dst + off) = src`
pub const fn stx_w(dst: u8, off: i16, src: u8) -> Insn {
    Insn { code: 0x03 | BPF_MEM | BPF_W, regs: regs(dst, src), off, imm: 0 }
}

/// `dst += src`
pub const fn add64_reg(dst: u8, src: u8) -> Insn {
    Insn { code: BPF_ALU64 | 0x08, regs: regs(dst, src), off: 0, imm: 0 }
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

/// The steering program shared by many interfaces: `ports` (hash, ifindex → first
/// XSKMAP slot of the interface) picks the interface's slots, the rx queue the slot:
///
/// ```text
/// r6 = ctx
/// key = ctx->ingress_ifindex            ; on the stack
/// r0 = lookup(ports, &key)
/// if r0 == NULL goto fallback
/// r3 = ctx->rx_queue_index
/// if r3 >= queues goto fallback         ; never another interface's slot
/// r2 = *r0 + r3
/// r0 = bpf_redirect_map(xsks, r2, fallback verdict)
/// exit
/// fallback: r0 = verdict; exit
/// ```
pub fn redirect_by_ifindex(ports_fd: i32, xsks_fd: i32, queues: u32, fallback: super::Fallback) -> Vec<Insn> {
    let verdict = match fallback {
        super::Fallback::Pass => XDP_PASS,
        super::Fallback::Drop => XDP_DROP,
    };
    let [p0, p1] = ld_map_fd(1, ports_fd);
    let [x0, x1] = ld_map_fd(1, xsks_fd);
    vec![
        mov64_reg(6, 1),
        ldx_w(2, 1, XDP_MD_INGRESS_IFINDEX),
        stx_w(10, -4, 2),
        mov64_reg(2, 10),
        add64_imm(2, -4),
        p0,
        p1,
        call(HELPER_MAP_LOOKUP_ELEM),
        jeq_imm(0, 0, 9), // → fallback
        ldx_w(3, 6, XDP_MD_RX_QUEUE_INDEX),
        jge_imm(3, queues as i32, 7), // → fallback
        ldx_w(2, 0, 0),
        add64_reg(2, 3),
        x0,
        x1,
        mov64_imm(3, verdict),
        call(HELPER_REDIRECT_MAP),
        exit(),
        mov64_imm(0, verdict), // fallback
        exit(),
    ]
}

/// `return verdict` for every frame.
pub fn verdict(v: i32) -> Vec<Insn> {
    vec![mov64_imm(0, v), exit()]
}

/// Counts frames into slot 0 of a per-CPU array (`map_fd`: u32 key, u64 value) and
/// drops them: a sink that costs the kernel as little as a sink can.
pub fn count_and_drop(map_fd: i32) -> Vec<Insn> {
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
        mov64_imm(0, XDP_DROP),
        exit(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings_match_the_kernel_headers() {
        // Checked against the kernel's encodings of the same instructions.
        let p = redirect_by_ifindex(7, 8, 2, crate::xdp::Fallback::Pass);
        let bytes: Vec<[u8; 8]> = p
            .iter()
            .map(|i| {
                let mut b = [0u8; 8];
                b[0] = i.code;
                b[1] = i.regs;
                b[2..4].copy_from_slice(&i.off.to_le_bytes());
                b[4..8].copy_from_slice(&i.imm.to_le_bytes());
                b
            })
            .collect();
        assert_eq!(bytes[0], [0xbf, 0x16, 0, 0, 0, 0, 0, 0]); // r6 = r1
        assert_eq!(bytes[1], [0x61, 0x12, 12, 0, 0, 0, 0, 0]); // r2 = *(u32 *)(r1 + 12)
        assert_eq!(bytes[2], [0x63, 0x2a, 0xfc, 0xff, 0, 0, 0, 0]); // *(u32 *)(r10 - 4) = r2
        assert_eq!(bytes[5], [0x18, 0x11, 0, 0, 7, 0, 0, 0]); // r1 = map[fd 7]
        assert_eq!(bytes[6], [0; 8]);
        assert_eq!(bytes[7], [0x85, 0x00, 0, 0, 1, 0, 0, 0]); // call bpf_map_lookup_elem
        assert_eq!(bytes[12], [0x0f, 0x32, 0, 0, 0, 0, 0, 0]); // r2 += r3
        assert_eq!(bytes[15], [0xb7, 0x03, 0, 0, 2, 0, 0, 0]); // r3 = XDP_PASS
        assert_eq!(bytes[16], [0x85, 0x00, 0, 0, 51, 0, 0, 0]); // call bpf_redirect_map
        assert_eq!(bytes[17], [0x95, 0, 0, 0, 0, 0, 0, 0]); // exit
        assert_eq!(core::mem::size_of::<Insn>(), 8);
    }

    #[test]
    fn the_shared_programs_jumps_land_on_the_fallback() {
        let p = redirect_by_ifindex(3, 4, 2, crate::xdp::Fallback::Drop);
        let fallback = p.len() - 2;
        assert_eq!(p[fallback], mov64_imm(0, XDP_DROP));
        for (i, insn) in p.iter().enumerate() {
            if insn.code & 0x07 == 0x05 && insn.code & 0xf0 != 0x80 && insn.code & 0xf0 != 0x90 {
                assert_eq!(i as i64 + 1 + i64::from(insn.off), fallback as i64, "jump at {i}");
            }
        }
        assert_eq!(p[10], jge_imm(3, 2, 7), "queues beyond the interface's own fall back");
    }
}
