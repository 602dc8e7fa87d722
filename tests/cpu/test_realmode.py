"""Real mode: the state after RESET, real-mode segmentation and its limit faults,
segment register loads, far transfers, and delivery through the interrupt vector
table (``vmi.cpu.realmode``, ``vmi.cpu.segmentation``, ``vmi.cpu.ops.far``).

Each test names the SDM section whose rule it checks. Programs are placed at
``CODE_CS:CODE_IP`` with the stack at ``STACK_SS:STACK_SP`` and data in DS.
"""

from __future__ import annotations

import pytest

from vmi.cpu import CPU, CPUException, Memory
from vmi.cpu import segmentation as seg
from vmi.cpu.realmode import RESET_CR0, RealModePlatform, Shutdown, reset

CODE_CS, CODE_IP = 0x1000, 0x0100
STACK_SS, STACK_SP = 0x2000, 0x0100
DATA_DS = 0x3000
ES, CS, SS, DS, FS, GS = range(6)


def real_cpu(code: bytes = b"", *, platform: bool = True,
             trace: list[int] | None = None) -> CPU:
    """A CPU after RESET with CS:IP, SS:SP and DS set up and ``code`` at CS:IP."""
    cpu = CPU(Memory(2 << 20))
    reset(cpu)
    if platform:
        cpu.platform = RealModePlatform(trace=None if trace is None else trace.append)
    seg.load_segment(cpu, CS, CODE_CS)
    seg.load_segment(cpu, SS, STACK_SS)
    seg.load_segment(cpu, DS, DATA_DS)
    cpu.eip = CODE_IP
    cpu.regs.sp = STACK_SP
    cpu.mem.load(linear(CODE_CS, CODE_IP), code)
    return cpu


def linear(segment: int, offset: int) -> int:
    return (segment << 4) + offset


def set_vector(cpu: CPU, vector: int, segment: int, offset: int) -> None:
    cpu.mem.write16(vector * 4, offset)
    cpu.mem.write16(vector * 4 + 2, segment)


def stack_word(cpu: CPU, sp: int) -> int:
    return cpu.mem.read16(linear(cpu.sreg[SS], sp))


# -- RESET -------------------------------------------------------------------------------
def test_reset_state():
    """SDM Vol.3A §9.1.1, Table 9-1: the registers after RESET."""
    cpu = CPU(Memory(1 << 20))
    cpu.r[:] = [1] * 8
    cpu.halted = True
    reset(cpu)
    assert cpu.eip == 0xFFF0 and cpu.eflags == 0x2
    assert cpu.cr == [RESET_CR0, 0, 0, 0, 0] and RESET_CR0 == 0x60000010
    assert cpu.sreg == [0, 0xF000, 0, 0, 0, 0]
    assert cpu.seg_base == [0, 0xFFFF0000, 0, 0, 0, 0]
    assert cpu.seg_limit == [0xFFFF] * 6
    assert cpu.r == [0, 0, 0x0308, 0, 0, 0, 0, 0]  # EDX: component 3, stepping 08h
    assert cpu.idtr == [0, 0xFFFF] and cpu.gdtr == [0, 0xFFFF]
    assert cpu.dr[6] == 0xFFFF0FF0 and cpu.dr[7] == 0x400
    assert (cpu.code_bits, cpu.stack_bits, cpu.cpl) == (16, 16, 0)
    assert not cpu.halted and not cpu.shadow


def test_first_fetch_is_16_bytes_below_4gib():
    """SDM Vol.3A §9.1.4: the first instruction is fetched at linear FFFFFFF0h
    (CS base FFFF0000h + EIP FFF0h), where a PC maps its BIOS ROM."""
    cpu = CPU(Memory(1 << 20))
    reset(cpu)
    assert (cpu.seg_base[CS] + cpu.eip) & 0xFFFFFFFF == 0xFFFFFFF0


def test_reset_installs_checked_accessors_and_flat_cpu_keeps_fast_path():
    """SDM Vol.3A §20.1.1: real-mode segments are 64 KiB; a flat CPU (all bases 0,
    limits 4 GiB, paging off) keeps the unchecked accessors."""
    cpu = real_cpu(platform=False)
    assert not getattr(cpu.rd8, "flat", False)
    with pytest.raises(CPUException) as info:
        cpu.rd16(DS, 0xFFFF)
    assert info.value.vector == 13
    flat = CPU.flat()
    flat.mem.write16(0xFFFF, 0x1234)
    assert flat.rd16(DS, 0xFFFF) == 0x1234  # 4 GiB limit: no fault at FFFF


# -- limit checks -------------------------------------------------------------------------
@pytest.mark.parametrize("code, vector", [
    (bytes.fromhex("a1ffff"), 13),          # mov ax,[0xFFFF]: a word past DS's limit
    (bytes.fromhex("26a1ffff"), 13),        # mov ax,es:[0xFFFF]
    (bytes.fromhex("36a1ffff"), 12),        # mov ax,ss:[0xFFFF]: #SS
    (bytes.fromhex("8b4600"), 12),          # mov ax,[bp+0] with BP=FFFF: SS by default
    (bytes.fromhex("66a1fdff"), 13),        # mov eax,[0xFFFD]: a dword past the limit
    (bytes.fromhex("678b03"), 13),          # mov ax,[ebx] with EBX=10000h
    (bytes.fromhex("0106ffff"), 13),        # add [0xFFFF],ax: nothing written
])
def test_limit_faults(code, vector):
    """SDM Vol.3 "Segment Wraparound" and Vol.2 "Real-Address Mode Exceptions": an
    operand crossing offset FFFFh raises #GP(0), or #SS(0) through SS, and the
    faulting instruction changes nothing."""
    cpu = real_cpu(code, platform=False)
    cpu.regs.bp = 0xFFFF
    cpu.r[3] = 0x10000  # EBX
    cpu.mem.write8(linear(DATA_DS, 0xFFFF), 0x5A)
    with pytest.raises(CPUException) as info:
        cpu.run(1)
    assert info.value.vector == vector
    assert cpu.eip == CODE_IP
    assert cpu.mem.read8(linear(DATA_DS, 0xFFFF)) == 0x5A


@pytest.mark.parametrize("code", [
    bytes.fromhex("a0ffff"),    # mov al,[0xFFFF]: the last byte is inside
    bytes.fromhex("a1feff"),    # mov ax,[0xFFFE]
    bytes.fromhex("66a1fcff"),  # mov eax,[0xFFFC]
])
def test_accesses_inside_the_limit(code):
    """SDM Vol.3A §5.3: an access ending at the limit is allowed."""
    cpu = real_cpu(code, platform=False)
    cpu.run(1)
    assert cpu.eip == CODE_IP + len(code)


def test_push_with_sp_1_faults_ss():
    """SDM Vol.3 "Segment Wraparound": pushing a word with SP = 1 crosses the stack
    limit: #SS(0), SP unchanged."""
    cpu = real_cpu(b"\x50", platform=False)  # push ax
    cpu.regs.sp = 1
    with pytest.raises(CPUException) as info:
        cpu.run(1)
    assert info.value.vector == 12 and cpu.regs.sp == 1


def test_unreal_limit_survives_a_real_mode_load():
    """SDM Vol.3A §20.1.1: a real-mode segment load sets the base only; a 4 GiB limit
    left in the cache ("unreal mode") still allows 32-bit offsets."""
    cpu = real_cpu(bytes.fromhex("8ed8" "678b03"), platform=False)  # mov ds,ax; mov ax,[ebx]
    cpu.seg_limit[DS] = 0xFFFFFFFF
    cpu.regs.ax = 0
    cpu.r[3] = 0x100000
    cpu.mem.write16(0x100000, 0xBEEF)
    cpu.run(2)
    assert cpu.seg_base[DS] == 0 and cpu.seg_limit[DS] == 0xFFFFFFFF
    assert cpu.regs.ax == 0xBEEF


# -- interrupt delivery ------------------------------------------------------------------------
def test_int_n_frame_and_vector():
    """SDM Vol.2 INT n (REAL-ADDRESS-MODE) and Vol.3A §20.1.4: push FLAGS, CS, IP (of
    the next instruction), clear IF, TF and AC, load CS:IP from the IVT."""
    trace: list[int] = []
    cpu = real_cpu(bytes.fromhex("cd21"), trace=trace)
    set_vector(cpu, 0x21, 0x4000, 0x0040)
    cpu.eflags = 0x40000 | 0x0300 | 0x0001  # AC, IF, TF, CF
    cpu.run(1)
    assert trace == [0x21]
    assert (cpu.sreg[CS], cpu.eip, cpu.seg_base[CS]) == (0x4000, 0x0040, 0x40000)
    assert cpu.regs.sp == STACK_SP - 6
    assert stack_word(cpu, STACK_SP - 2) == 0x0303  # FLAGS as they were (low 16 bits)
    assert stack_word(cpu, STACK_SP - 4) == CODE_CS
    assert stack_word(cpu, STACK_SP - 6) == CODE_IP + 2
    assert cpu.eflags & (0x40000 | 0x300) == 0 and cpu.eflags & 1


def test_fault_pushes_the_faulting_ip():
    """SDM Vol.3A §6.5 and §20.1.4: a fault's saved IP is the faulting instruction;
    real mode pushes no error code."""
    cpu = real_cpu(bytes.fromhex("a1ffff"))  # mov ax,[0xFFFF] -> #GP
    set_vector(cpu, 13, 0x5000, 0x0010)
    cpu.run(1)
    assert (cpu.sreg[CS], cpu.eip) == (0x5000, 0x0010)
    assert cpu.regs.sp == STACK_SP - 6
    assert stack_word(cpu, STACK_SP - 6) == CODE_IP
    assert stack_word(cpu, STACK_SP - 4) == CODE_CS


def test_external_interrupt_wakes_hlt():
    """SDM Vol.2 HLT: an interrupt resumes a halted processor; the saved IP is the
    instruction after the HLT."""
    cpu = real_cpu(b"\xf4")
    set_vector(cpu, 8, 0x6000, 0x0000)
    cpu.run(1)
    assert cpu.halted
    cpu.platform.deliver_interrupt(cpu, 8)
    assert not cpu.halted and (cpu.sreg[CS], cpu.eip) == (0x6000, 0)
    assert stack_word(cpu, STACK_SP - 6) == CODE_IP + 1


def test_vector_beyond_idt_limit_raises_gp_then_double_fault():
    """SDM Vol.2 INT n: a vector beyond the IDTR limit raises #GP; SDM Vol.3A §6.15
    Table 6-5: #GP while delivering #GP is a double fault."""
    trace: list[int] = []
    cpu = real_cpu(bytes.fromhex("cd20"), trace=trace)
    cpu.idtr[1] = 0x33  # vectors 0..12 only: 13*4+3 = 55 > 51
    set_vector(cpu, 8, 0x7000, 0x0008)
    cpu.run(1)
    assert trace == [0x20, 13, 8]
    assert (cpu.sreg[CS], cpu.eip) == (0x7000, 0x0008)
    assert stack_word(cpu, STACK_SP - 6) == CODE_IP + 2  # int n is a trap
    assert cpu.regs.sp == STACK_SP - 6  # one frame: the failed deliveries pushed nothing


def test_benign_then_contributory_delivers_the_second():
    """SDM Vol.3A §6.15 Table 6-5: a #GP while delivering a benign event (int n) is
    delivered in its place, not as a double fault."""
    trace: list[int] = []
    cpu = real_cpu(bytes.fromhex("cd20"), trace=trace)
    cpu.idtr[1] = 0x7F  # vector 0x20 lies beyond, 13 inside
    set_vector(cpu, 13, 0x7100, 0x0000)
    cpu.run(1)
    assert trace == [0x20, 13] and cpu.sreg[CS] == 0x7100


def test_stack_fault_during_delivery_shuts_down():
    """SDM Vol.3A §6.15 and Vol.3 "Segment Wraparound": with SP = 1 no frame fits;
    #SS during #BP delivery, #DF during #SS, and a fault while delivering #DF
    shuts the processor down."""
    trace: list[int] = []
    cpu = real_cpu(b"\xcc", trace=trace)  # int3
    cpu.regs.sp = 1
    with pytest.raises(Shutdown):
        cpu.run(1)
    assert trace == [3, 12, 8] and cpu.halted


def test_frame_must_fit_before_anything_is_written():
    """SDM Vol.2 INT n: "IF stack not large enough for a 6-byte return information
    THEN #SS" is checked before the pushes."""
    cpu = real_cpu(b"\xcc")
    cpu.regs.sp = 3  # FLAGS would fit at 1, IP would cross FFFF
    cpu.mem.write16(linear(STACK_SS, 1), 0xAAAA)
    with pytest.raises(Shutdown):
        cpu.run(1)
    assert cpu.mem.read16(linear(STACK_SS, 1)) == 0xAAAA


def test_protected_mode_platform_reraises():
    """The real-mode platform does not deliver in protected mode (IDT gates, SDM
    Vol.3A §6.10, belong to the descriptor model): the exception reaches the caller."""
    cpu = real_cpu(bytes.fromhex("cd21"))
    cpu.cr[0] |= 1
    with pytest.raises(CPUException) as info:
        cpu.run(1)
    assert info.value.vector == 0x21


# -- far transfers -------------------------------------------------------------------------------
def test_far_jmp_direct_reloads_cs_and_forgets_cached_code():
    """SDM Vol.2 JMP (far, real mode): CS = selector, base = selector << 4, IP =
    offset. The decoded-code cache is keyed by IP, so code at the same IP under
    the new CS must be decoded afresh."""
    cpu = real_cpu(bytes.fromhex("ea0001" "0020"))  # jmp 2000:0100
    cpu.mem.load(linear(0x2000, 0x0100), bytes.fromhex("b83412f4"))  # mov ax,1234h; hlt
    cpu.run(3)
    assert cpu.sreg[CS] == 0x2000 and cpu.seg_base[CS] == 0x20000
    assert cpu.regs.ax == 0x1234 and cpu.halted


def test_far_jmp_indirect():
    """SDM Vol.2 JMP m16:16: offset then selector from memory."""
    cpu = real_cpu(bytes.fromhex("ff2e0005"))  # jmp far [0x500]
    cpu.mem.write16(linear(DATA_DS, 0x500), 0x1234)
    cpu.mem.write16(linear(DATA_DS, 0x502), 0x5678)
    cpu.run(1)
    assert (cpu.sreg[CS], cpu.eip) == (0x5678, 0x1234)


def test_far_jmp_beyond_cs_limit_faults():
    """SDM Vol.2 JMP, Real-Address Mode Exceptions: "#GP if the target operand is
    beyond the code segment limits"; CS stays."""
    cpu = real_cpu(bytes.fromhex("66ea00000100" "0030"), platform=False)  # jmp 3000:10000h
    with pytest.raises(CPUException) as info:
        cpu.run(1)
    assert info.value.vector == 13 and cpu.sreg[CS] == CODE_CS and cpu.eip == CODE_IP


def test_far_call_and_return():
    """SDM Vol.2 CALL (far) pushes CS then IP; RET (far) pops them, RET imm16
    releases the arguments."""
    cpu = real_cpu(bytes.fromhex("9a00020030"))  # call 3000:0200
    cpu.mem.load(linear(0x3000, 0x0200), bytes.fromhex("ca0400"))  # retf 4
    cpu.run(1)
    assert (cpu.sreg[CS], cpu.eip) == (0x3000, 0x0200)
    assert stack_word(cpu, STACK_SP - 2) == CODE_CS
    assert stack_word(cpu, STACK_SP - 4) == CODE_IP + 5
    cpu.run(1)
    assert (cpu.sreg[CS], cpu.eip) == (CODE_CS, CODE_IP + 5)
    assert cpu.regs.sp == STACK_SP + 4


def test_far_call_32bit_operand_size():
    """SDM Vol.2 CALL with operand size 32: CS is pushed as a doubleword (zero
    extended) and EIP as a doubleword; RETF with 66h pops both."""
    cpu = real_cpu(bytes.fromhex("669a000200000030"))  # call dword 3000:00000200
    cpu.mem.load(linear(0x3000, 0x0200), bytes.fromhex("66cb"))
    cpu.run(1)
    assert cpu.regs.sp == STACK_SP - 8
    assert cpu.mem.read32(linear(STACK_SS, STACK_SP - 4)) == CODE_CS
    assert cpu.mem.read32(linear(STACK_SS, STACK_SP - 8)) == CODE_IP + 8
    cpu.run(1)
    assert (cpu.sreg[CS], cpu.eip, cpu.regs.sp) == (CODE_CS, CODE_IP + 8, STACK_SP)


def test_far_call_indirect():
    """SDM Vol.2 CALL m16:16."""
    cpu = real_cpu(bytes.fromhex("ff1e0005"))  # call far [0x500]
    cpu.mem.write16(linear(DATA_DS, 0x500), 0x0010)
    cpu.mem.write16(linear(DATA_DS, 0x502), 0x4000)
    cpu.run(1)
    assert (cpu.sreg[CS], cpu.eip) == (0x4000, 0x0010)
    assert stack_word(cpu, STACK_SP - 4) == CODE_IP + 4


def test_far_call_checks_the_whole_frame_first():
    """SDM Vol.2 CALL (real mode): "IF stack not large enough for a 4-byte return
    address THEN #SS(0)" before any push."""
    cpu = real_cpu(bytes.fromhex("9a00020030"), platform=False)
    cpu.regs.sp = 3  # CS would go to 1, IP would cross FFFF
    cpu.mem.write16(linear(STACK_SS, 1), 0xAAAA)
    with pytest.raises(CPUException) as info:
        cpu.run(1)
    assert info.value.vector == 12
    assert cpu.mem.read16(linear(STACK_SS, 1)) == 0xAAAA and cpu.regs.sp == 3


def test_iret_restores_flags_cs_ip():
    """SDM Vol.2 IRET (REAL-ADDRESS-MODE): pop IP, CS and FLAGS."""
    cpu = real_cpu(b"\xcf")
    sp = STACK_SP - 6
    cpu.regs.sp = sp
    for i, value in enumerate((0x0300, 0x6000, 0x08D5)):
        cpu.mem.write16(linear(STACK_SS, sp + 2 * i), value)
    cpu.run(1)
    assert (cpu.sreg[CS], cpu.eip, cpu.regs.sp) == (0x6000, 0x0300, STACK_SP)
    assert cpu.eflags & 0xFFFF == 0x08D7  # bit 1 always reads 1


def test_iretd_masks_eflags():
    """SDM Vol.2 IRET: IRETD in real mode loads (popped EFLAGS AND 257FD5h), keeping
    VM, VIF and VIP (1A0000h) as they were."""
    cpu = real_cpu(b"\x66\xcf")
    sp = STACK_SP - 12
    cpu.regs.sp = sp
    for i, value in enumerate((0x300, 0x6000, 0x003E0ED5)):
        cpu.mem.write32(linear(STACK_SS, sp + 4 * i), value)
    cpu.run(1)
    assert (cpu.sreg[CS], cpu.eip, cpu.regs.sp) == (0x6000, 0x300, STACK_SP)
    assert cpu.eflags == 0x00240ED7  # ID, AC, OF, DF, IF, TF... loaded; VM, VIF, VIP not


def test_int_then_iret_round_trip():
    """SDM Vol.3A §20.1.4: IRET returns to the instruction after INT n with FLAGS
    (IF included) restored."""
    cpu = real_cpu(bytes.fromhex("cd30" "f4"))
    set_vector(cpu, 0x30, 0x4000, 0)
    cpu.mem.load(0x40000, b"\xcf")
    cpu.eflags = 0x202
    for _ in range(3):  # the run loop returns after delivering an event
        cpu.run(1)
    assert cpu.halted and (cpu.sreg[CS], cpu.eip) == (CODE_CS, CODE_IP + 3)
    assert cpu.eflags & 0x200 and cpu.regs.sp == STACK_SP


# -- segment register loads ------------------------------------------------------------------------
def test_mov_to_and_from_segment_registers():
    """SDM Vol.2 MOV (segment registers) and Vol.3A §20.1.1: base = selector << 4;
    storing a selector writes 16 bits to memory, zero-extends into a 32-bit register."""
    cpu = real_cpu(bytes.fromhex("8ec0" "8cc3" "8c060005" "668cc1"))
    cpu.regs.ax = 0x1234
    cpu.r[1] = 0xFFFFFFFF
    cpu.run(4)
    assert (cpu.sreg[ES], cpu.seg_base[ES]) == (0x1234, 0x12340)
    assert cpu.regs.bx == 0x1234
    assert cpu.mem.read16(linear(DATA_DS, 0x500)) == 0x1234
    assert cpu.r[1] == 0x1234


def test_mov_to_cs_is_invalid():
    """SDM Vol.2 MOV: "#UD if an attempt is made to load the CS register"."""
    cpu = real_cpu(bytes.fromhex("8ec8"), platform=False)
    with pytest.raises(CPUException) as info:
        cpu.run(1)
    assert info.value.vector == 6 and cpu.sreg[CS] == CODE_CS


def test_mov_ss_and_pop_ss_set_the_interrupt_shadow():
    """SDM Vol.3A §6.8.3: loading SS with MOV or POP inhibits interrupts until the
    next instruction has run."""
    cpu = real_cpu(bytes.fromhex("8ed0"))
    cpu.regs.ax = STACK_SS
    cpu.run(1)
    assert cpu.shadow
    cpu = real_cpu(bytes.fromhex("16" "17"))  # push ss; pop ss
    cpu.run(1)
    assert not cpu.shadow
    cpu.run(1)
    assert cpu.shadow and cpu.sreg[SS] == STACK_SS and cpu.regs.sp == STACK_SP


def test_push_and_pop_segment_registers():
    """SDM Vol.2 PUSH/POP (segment registers): 16-bit slots, or 32-bit with the
    selector zero-extended under operand size 32."""
    cpu = real_cpu(bytes.fromhex("1e" "07" "0fa0" "0fa9" "661e" "6607"))
    cpu.sreg[FS] = 0x7777
    cpu.run(2)  # push ds; pop es
    assert (cpu.sreg[ES], cpu.seg_base[ES]) == (DATA_DS, DATA_DS << 4)
    cpu.run(2)  # push fs; pop gs
    assert cpu.sreg[GS] == 0x7777 and cpu.seg_base[GS] == 0x77770
    cpu.run(1)  # push dword ds
    assert cpu.regs.sp == STACK_SP - 4
    assert cpu.mem.read32(linear(STACK_SS, STACK_SP - 4)) == DATA_DS
    cpu.run(1)
    assert cpu.regs.sp == STACK_SP and cpu.sreg[ES] == DATA_DS


@pytest.mark.parametrize("code, sreg, reg", [
    (bytes.fromhex("c41e0005"), ES, 3),      # les bx,[0x500]
    (bytes.fromhex("c5360005"), DS, 6),      # lds si,[0x500]
    (bytes.fromhex("0fb2260005"), SS, 4),    # lss sp,[0x500]
    (bytes.fromhex("0fb4060005"), FS, 0),    # lfs ax,[0x500]
    (bytes.fromhex("0fb53e0005"), GS, 7),    # lgs di,[0x500]
])
def test_load_far_pointer(code, sreg, reg):
    """SDM Vol.2 LDS/LES/LFS/LGS/LSS: the offset goes to the register, the selector
    (the word after it) to the segment register."""
    cpu = real_cpu(code)
    cpu.mem.write16(linear(DATA_DS, 0x500), 0xABCD)
    cpu.mem.write16(linear(DATA_DS, 0x502), 0x4321)
    cpu.run(1)
    assert cpu.sreg[sreg] == 0x4321 and cpu.seg_base[sreg] == 0x43210
    assert cpu.r[reg] & 0xFFFF == 0xABCD


def test_load_far_pointer_32bit_offset():
    """SDM Vol.2 LDS with operand size 32: a 32-bit offset, then the selector."""
    cpu = real_cpu(bytes.fromhex("66c5360005"))  # lds esi,[0x500]
    cpu.mem.write32(linear(DATA_DS, 0x500), 0x89ABCDEF)
    cpu.mem.write16(linear(DATA_DS, 0x504), 0x4321)
    cpu.run(1)
    assert cpu.r[6] == 0x89ABCDEF and cpu.sreg[DS] == 0x4321


def test_far_pointer_crossing_the_limit_faults():
    """SDM Vol.2 LES, Real-Address Mode Exceptions: the selector word at offset
    10000h lies beyond the limit: #GP, nothing loaded."""
    cpu = real_cpu(bytes.fromhex("c41efeff"), platform=False)  # les bx,[0xFFFE]
    with pytest.raises(CPUException) as info:
        cpu.run(1)
    assert info.value.vector == 13 and cpu.sreg[ES] == 0


def test_protected_mode_loads_need_the_descriptor_model(monkeypatch):
    """SDM Vol.3A §3.4.3: a protected-mode load reads a descriptor; without a
    registered implementation the load raises #GP and changes nothing."""
    monkeypatch.setattr(seg, "PROTECTED", {})
    cpu = real_cpu(platform=False)
    cpu.cr[0] |= 1
    with pytest.raises(CPUException) as info:
        seg.load_segment(cpu, DS, 0x10)
    assert info.value.vector == 13 and cpu.sreg[DS] == DATA_DS
    calls = []
    monkeypatch.setattr(seg, "PROTECTED", {"load": lambda *args: calls.append(args[1:])})
    seg.load_segment(cpu, DS, 0x10)
    assert calls == [(DS, 0x10)]


def test_virtual_8086_loads_are_real_mode_style():
    """SDM Vol.3A §20.2.1: in virtual-8086 mode segment loads shift the selector
    into the base as in real mode."""
    cpu = real_cpu(platform=False)
    cpu.cr[0] |= 1
    cpu.flags |= 0x20000
    seg.load_segment(cpu, ES, 0x0123)
    assert cpu.seg_base[ES] == 0x1230
