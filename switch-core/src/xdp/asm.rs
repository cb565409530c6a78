//! A small eBPF assembler with labels, for programs too long to count jump offsets by
//! hand (the traffic generator's and sink's programs in perf/).
//!
//! Every 64-bit ALU operation, every conditional jump, loads and stores of each size and
//! byte swaps; jumps name a label, resolved by [`Asm::finish`]. The encodings are the
//! kernel's (linux/bpf_common.h, linux/bpf.h), as in [`super::insn`].

use super::insn::Insn;
use std::collections::HashMap;

/// Operand size of a load or store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Size {
    /// 1 byte.
    B,
    /// 2 bytes.
    H,
    /// 4 bytes.
    W,
    /// 8 bytes.
    Dw,
}

impl Size {
    const fn code(self) -> u8 {
        match self {
            Size::W => 0x00,
            Size::H => 0x08,
            Size::B => 0x10,
            Size::Dw => 0x18,
        }
    }
}

/// A 64-bit ALU operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alu {
    /// `dst += src`
    Add,
    /// `dst -= src`
    Sub,
    /// `dst *= src`
    Mul,
    /// `dst /= src` (unsigned; by zero gives zero)
    Div,
    /// `dst |= src`
    Or,
    /// `dst &= src`
    And,
    /// `dst <<= src`
    Lsh,
    /// `dst >>= src` (logical)
    Rsh,
    /// `dst %= src` (unsigned; by zero leaves dst)
    Mod,
    /// `dst ^= src`
    Xor,
    /// `dst = src`
    Mov,
}

impl Alu {
    const fn code(self) -> u8 {
        match self {
            Alu::Add => 0x00,
            Alu::Sub => 0x10,
            Alu::Mul => 0x20,
            Alu::Div => 0x30,
            Alu::Or => 0x40,
            Alu::And => 0x50,
            Alu::Lsh => 0x60,
            Alu::Rsh => 0x70,
            Alu::Mod => 0x90,
            Alu::Xor => 0xa0,
            Alu::Mov => 0xb0,
        }
    }
}

/// A jump condition (unsigned unless it says signed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cond {
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `dst & src != 0`
    Set,
    /// signed `>`
    Sgt,
    /// signed `<`
    Slt,
}

impl Cond {
    const fn code(self) -> u8 {
        match self {
            Cond::Eq => 0x10,
            Cond::Gt => 0x20,
            Cond::Ge => 0x30,
            Cond::Set => 0x40,
            Cond::Ne => 0x50,
            Cond::Sgt => 0x60,
            Cond::Lt => 0xa0,
            Cond::Le => 0xb0,
            Cond::Slt => 0xc0,
        }
    }
}

use super::insn::{regs, BPF_ALU64, BPF_CALL, BPF_EXIT, BPF_IMM, BPF_JMP, BPF_LD, BPF_LDX, BPF_MEM, BPF_PSEUDO_MAP_FD};
const BPF_ST: u8 = 0x02;
const BPF_STX: u8 = 0x03;
const BPF_ALU: u8 = 0x04;
const BPF_X: u8 = 0x08;
const BPF_END: u8 = 0xd0;
const BPF_TO_BE: u8 = 0x08;

/// `bpf_ktime_get_ns` helper id.
pub const HELPER_KTIME_GET_NS: i32 = 5;
/// `bpf_xdp_adjust_tail` helper id.
pub const HELPER_XDP_ADJUST_TAIL: i32 = 65;

/// A program being written. Methods append one instruction (two for 64-bit
/// immediates) and return the builder, so short sequences read as one line each.
#[derive(Debug, Default)]
pub struct Asm {
    insns: Vec<Insn>,
    labels: HashMap<String, usize>,
    jumps: Vec<(usize, String)>,
}

impl Asm {
    /// An empty program.
    pub fn new() -> Asm {
        Asm::default()
    }

    fn push(&mut self, code: u8, dst: u8, src: u8, off: i16, imm: i32) -> &mut Asm {
        self.insns.push(Insn { code, regs: regs(dst, src), off, imm });
        self
    }

    /// `dst = dst OP imm` (64-bit; imm is sign-extended).
    pub fn alu_imm(&mut self, op: Alu, dst: u8, imm: i32) -> &mut Asm {
        self.push(BPF_ALU64 | op.code(), dst, 0, 0, imm)
    }

    /// `dst = dst OP src` (64-bit).
    pub fn alu(&mut self, op: Alu, dst: u8, src: u8) -> &mut Asm {
        self.push(BPF_ALU64 | op.code() | BPF_X, dst, src, 0, 0)
    }

    /// `dst = imm` (sign-extended).
    pub fn mov_imm(&mut self, dst: u8, imm: i32) -> &mut Asm {
        self.alu_imm(Alu::Mov, dst, imm)
    }

    /// `dst = src`
    pub fn mov(&mut self, dst: u8, src: u8) -> &mut Asm {
        self.alu(Alu::Mov, dst, src)
    }

    /// `dst = imm` (a full 64-bit immediate, two instructions).
    pub fn ld_imm64(&mut self, dst: u8, imm: u64) -> &mut Asm {
        self.push(BPF_LD | 0x18 | BPF_IMM, dst, 0, 0, imm as u32 as i32);
        self.push(0, 0, 0, 0, (imm >> 32) as u32 as i32)
    }

    /// `dst = map` (the kernel swaps the descriptor for the map's address).
    pub fn ld_map(&mut self, dst: u8, fd: i32) -> &mut Asm {
        self.push(BPF_LD | 0x18 | BPF_IMM, dst, BPF_PSEUDO_MAP_FD, 0, fd);
        self.push(0, 0, 0, 0, 0)
    }

    /// Converts the low `bits` (16, 32 or 64) of `dst` between host and network byte
    /// order; the bits above are cleared.
    pub fn be(&mut self, dst: u8, bits: i32) -> &mut Asm {
        assert!(matches!(bits, 16 | 32 | 64), "byte swaps are of 16, 32 or 64 bits");
        self.push(BPF_ALU | BPF_END | BPF_TO_BE, dst, 0, 0, bits)
    }

    /// `dst = *(size *)(src + off)`
    pub fn ldx(&mut self, size: Size, dst: u8, src: u8, off: i16) -> &mut Asm {
        self.push(BPF_LDX | BPF_MEM | size.code(), dst, src, off, 0)
    }

    /// `*(size *)(dst + off) = src`
    pub fn stx(&mut self, size: Size, dst: u8, off: i16, src: u8) -> &mut Asm {
        self.push(BPF_STX | BPF_MEM | size.code(), dst, src, off, 0)
    }

    /// `*(size *)(dst + off) = imm`
    pub fn st(&mut self, size: Size, dst: u8, off: i16, imm: i32) -> &mut Asm {
        self.push(BPF_ST | BPF_MEM | size.code(), dst, 0, off, imm)
    }

    /// `if dst COND imm goto label`
    pub fn jmp_imm(&mut self, cond: Cond, dst: u8, imm: i32, label: &str) -> &mut Asm {
        self.jumps.push((self.insns.len(), label.to_string()));
        self.push(BPF_JMP | cond.code(), dst, 0, 0, imm)
    }

    /// `if dst COND src goto label`
    pub fn jmp(&mut self, cond: Cond, dst: u8, src: u8, label: &str) -> &mut Asm {
        self.jumps.push((self.insns.len(), label.to_string()));
        self.push(BPF_JMP | cond.code() | BPF_X, dst, src, 0, 0)
    }

    /// `goto label`
    pub fn ja(&mut self, label: &str) -> &mut Asm {
        self.jumps.push((self.insns.len(), label.to_string()));
        self.push(BPF_JMP, 0, 0, 0, 0)
    }

    /// `r0 = helper(r1, ..., r5)`; r1-r5 are clobbered.
    pub fn call(&mut self, helper: i32) -> &mut Asm {
        self.push(BPF_JMP | BPF_CALL, 0, 0, 0, helper)
    }

    /// `return r0`
    pub fn exit(&mut self) -> &mut Asm {
        self.push(BPF_JMP | BPF_EXIT, 0, 0, 0, 0)
    }

    /// `return verdict`
    pub fn ret(&mut self, verdict: i32) -> &mut Asm {
        self.mov_imm(0, verdict).exit()
    }

    /// Names the next instruction. Each name once.
    pub fn label(&mut self, name: &str) -> &mut Asm {
        let previous = self.labels.insert(name.to_string(), self.insns.len());
        assert!(previous.is_none(), "label {name} defined twice");
        self
    }

    /// Instructions so far.
    pub fn len(&self) -> usize {
        self.insns.len()
    }

    /// True before the first instruction.
    pub fn is_empty(&self) -> bool {
        self.insns.is_empty()
    }

    /// Appends instructions made elsewhere (no jumps out of them).
    pub fn extend(&mut self, insns: &[Insn]) -> &mut Asm {
        self.insns.extend_from_slice(insns);
        self
    }

    /// The program, every jump pointing at its label. A jump to a label never defined
    /// is a bug in the program's builder: it panics, naming the label.
    pub fn finish(mut self) -> Vec<Insn> {
        for (at, name) in &self.jumps {
            let target = *self.labels.get(name).unwrap_or_else(|| panic!("jump to undefined label {name}"));
            let off = target as i64 - *at as i64 - 1;
            self.insns[*at].off = i16::try_from(off).expect("jump within 32k instructions");
        }
        self.insns
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xdp::insn;

    fn bytes(i: &Insn) -> [u8; 8] {
        let mut b = [0u8; 8];
        b[0] = i.code;
        b[1] = i.regs;
        b[2..4].copy_from_slice(&i.off.to_le_bytes());
        b[4..8].copy_from_slice(&i.imm.to_le_bytes());
        b
    }

    #[test]
    fn encodings_match_the_kernel_headers() {
        let mut a = Asm::new();
        a.alu_imm(Alu::Add, 1, 1) // 0: r1 += 1
            .alu(Alu::Mod, 2, 3) // 1: r2 %= r3
            .be(4, 16) // 2: r4 = htobe16(r4)
            .ldx(Size::H, 5, 2, 12) // 3: r5 = *(u16 *)(r2 + 12)
            .stx(Size::Dw, 10, -8, 1) // 4: *(u64 *)(r10 - 8) = r1
            .st(Size::B, 2, 3, 7) // 5: *(u8 *)(r2 + 3) = 7
            .jmp_imm(Cond::Ne, 0, 0, "out") // 6
            .jmp(Cond::Lt, 1, 2, "out") // 7
            .ld_imm64(3, 0x1122_3344_5566_7788) // 8, 9
            .label("out")
            .ret(insn::XDP_DROP); // 10, 11
        let p = a.finish();
        assert_eq!(bytes(&p[0]), [0x07, 0x01, 0, 0, 1, 0, 0, 0]);
        assert_eq!(bytes(&p[1]), [0x9f, 0x32, 0, 0, 0, 0, 0, 0]);
        assert_eq!(bytes(&p[2]), [0xdc, 0x04, 0, 0, 16, 0, 0, 0]);
        assert_eq!(bytes(&p[3]), [0x69, 0x25, 12, 0, 0, 0, 0, 0]);
        assert_eq!(bytes(&p[4]), [0x7b, 0x1a, 0xf8, 0xff, 0, 0, 0, 0]);
        assert_eq!(bytes(&p[5]), [0x72, 0x02, 3, 0, 7, 0, 0, 0]);
        assert_eq!(bytes(&p[6]), [0x55, 0x00, 3, 0, 0, 0, 0, 0], "3 forward to out");
        assert_eq!(bytes(&p[7]), [0xad, 0x21, 2, 0, 0, 0, 0, 0]);
        assert_eq!(bytes(&p[8]), [0x18, 0x03, 0, 0, 0x88, 0x77, 0x66, 0x55]);
        assert_eq!(bytes(&p[9]), [0, 0, 0, 0, 0x44, 0x33, 0x22, 0x11]);
        assert_eq!(p[10], insn::mov64_imm(0, insn::XDP_DROP));
        // The same instructions as insn's hand-encoded ones.
        let mut b = Asm::new();
        b.mov(4, 2).alu_imm(Alu::Add, 4, 42).ldx(Size::W, 2, 1, 0).ldx(Size::Dw, 1, 0, 0);
        assert_eq!(
            b.finish(),
            vec![insn::mov64_reg(4, 2), insn::add64_imm(4, 42), insn::ldx_w(2, 1, 0), insn::ldx_dw(1, 0, 0)]
        );
    }

    #[test]
    fn a_program_runs_as_written() {
        // Sum of the first frame byte's value 1..=n, by a loop with a backward jump.
        let mut a = Asm::new();
        a.ldx(Size::W, 2, 1, 0)
            .ldx(Size::W, 3, 1, 4)
            .mov(4, 2)
            .alu_imm(Alu::Add, 4, 1)
            .jmp(Cond::Gt, 4, 3, "short")
            .ldx(Size::B, 5, 2, 0) // n
            .alu_imm(Alu::And, 5, 15)
            .mov_imm(0, 0)
            .label("loop")
            .jmp_imm(Cond::Eq, 5, 0, "done")
            .alu(Alu::Add, 0, 5)
            .alu_imm(Alu::Sub, 5, 1)
            .ja("loop")
            .label("done")
            .exit()
            .label("short")
            .ret(99);
        let prog = crate::xdp::bpf::load_xdp(&a.finish(), "ps_test_asm").expect("the verifier accepts it");
        assert_eq!(crate::xdp::bpf::test_run(&prog, &[4u8; 20]).unwrap(), 10);
        assert_eq!(crate::xdp::bpf::test_run(&prog, &[10u8; 20]).unwrap(), 55);
    }

    #[test]
    #[should_panic(expected = "undefined label nowhere")]
    fn a_jump_to_nowhere_is_a_bug() {
        let mut a = Asm::new();
        a.ja("nowhere");
        a.finish();
    }
}
