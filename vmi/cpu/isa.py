"""The i386 ISA table: the one table that drives decoding, disassembly, cycle costs
and (later) the assembler.

Each line of the tables below is ``KEY MNEMONIC OPERANDS CYCLES [ATTRS]``
(``docs/decoder.md`` explains how to add one):

``KEY``
    The opcode bytes in hex: ``XX`` a one-byte opcode, ``0FXX`` the two-byte
    map, ``D9E8`` an x87 escape whose ModRM byte is fixed (``vmi.cpu.x87``).
    ``/r`` appends the ModRM ``reg`` field ``r`` of a group and ``/*`` says a
    ModRM byte follows whose ``reg`` field is ignored (``0F90/*``). ``XX+``
    stands for eight opcodes ``XX``..``XX+7`` with a register in the low three
    bits, ``XX+n`` for the last ``n`` of those (``91+7``: 91-97 name ECX..EDI).
    ``F390`` is PAUSE, the one form selected by a prefix (SDM Vol.2 PAUSE:
    ``F3 90``; without F3 the byte is NOP).
``MNEMONIC``
    Intel's base mnemonic in lower case. ``a/b`` names the 16-bit and 32-bit
    forms (``cbw/cwde``), chosen by the operand size, or by the address size
    for forms with the ``asize`` attribute (``jcxz/jecxz``).
``OPERANDS``
    Comma-separated specs in the notation of the SDM opcode map (Vol.2
    Appendix A.2; ``-`` = none), in Intel order, destination first:
    ``E`` ModRM r/m, ``G`` ModRM reg, ``R`` r/m that must be a register (the
    ``mod`` field is ignored, SDM MOV CRn/DRn), ``M`` r/m that must be memory,
    ``Rv/Mw`` a register of the operand size or a word in memory (``mov
    %es,%eax``, ``sldt``, ``lar``), ``I`` immediate, ``sI`` immediate
    sign-extended to the operand size, ``J`` relative branch target, ``O``
    memory offset (moffs), ``A`` far pointer, ``S`` segment register,
    ``C``/``D``/``T`` control/debug/test register, ``X``/``Y`` the string
    operands DS:eSI and ES:eDI. A size letter follows: ``b`` 8, ``w`` 16,
    ``d`` 32, ``v`` 16/32 by operand size, ``p`` far pointer (4/6), ``s``
    6-byte descriptor-table pointer, ``a`` BOUND pair (4/8), ``q`` 64, ``t`` 80,
    ``e`` x87 environment (14/28), ``f`` x87 state (94/108), none = unsized
    (``lea``, ``invlpg``). Fixed operands: ``AL``..``BH``, ``eAX``..``eDI``
    (16/32 by operand size), ``AX``, ``DX``, ``CL``, ``ES``..``GS``, the
    constant ``1``, and for x87 ``ST`` (the stack top) and ``STi`` (``ST(i)``
    from the low three bits of an ``XX+`` key). ``Zv``/``Zb``/``Zd`` name the
    register in the low opcode bits of an ``XX+`` key.
``CYCLES``
    The Intel486 clock count of the common case (Intel486 Programmer's
    Reference Manual, "Instruction Set Clock Count Summary"; real-mode figures
    where the manual gives several, branches taken). ``a/b`` gives the
    register/memory forms. Multiplies cost the early-out minimum (the 486 takes
    13-42 clocks by multiplier); ``docs/decoder.md`` lists the choices.
    ``cmovcc`` has no Intel486 figure: the 486 has no CMOV (the Pentium Pro,
    P6, brought it). It costs 2 clocks from a register or memory, the P6's
    figure: two micro-ops issued together (Agner Fog, "Instruction tables",
    PPro/P2/P3 integer instructions: CMOVcc r,r one micro-op each on ports 0
    and 1; the memory form adds one load micro-op, which vmi's 486 cost
    model, like ``mov``'s 1 clock from memory, does not charge apart).
``ATTRS``
    ``lock`` LOCK allowed with a memory destination (SDM Vol.2 LOCK); ``rep``
    REP-able string instruction; ``repz`` REPE/REPNE-able (cmps/scas);
    ``asize`` the ``a/b`` mnemonic follows the address size; ``386`` not on
    the 80386 (later CPUs, kept for the 2006 kernel); ``p6`` not on the
    80386 nor the Intel486 either: a P6-family (Pentium Pro) addition that
    CPUID reports (``cmovcc``, CPUID.1:EDX.CMOV[bit 15]), kept because a
    stock ``gcc -m32`` (i686) build emits it; ``priv`` CPL 0 only;
    ``x87`` a floating-point escape (``vmi.cpu.x87``).
"""

from __future__ import annotations

from functools import cached_property

from attrs import frozen

# fmt: off
ONE_BYTE = r"""
00 add Eb,Gb 1/3 lock
01 add Ev,Gv 1/3 lock
02 add Gb,Eb 1/2
03 add Gv,Ev 1/2
04 add AL,Ib 1
05 add eAX,Iv 1
06 push ES 3
07 pop ES 3
08 or Eb,Gb 1/3 lock
09 or Ev,Gv 1/3 lock
0A or Gb,Eb 1/2
0B or Gv,Ev 1/2
0C or AL,Ib 1
0D or eAX,Iv 1
0E push CS 3
10 adc Eb,Gb 1/3 lock
11 adc Ev,Gv 1/3 lock
12 adc Gb,Eb 1/2
13 adc Gv,Ev 1/2
14 adc AL,Ib 1
15 adc eAX,Iv 1
16 push SS 3
17 pop SS 3
18 sbb Eb,Gb 1/3 lock
19 sbb Ev,Gv 1/3 lock
1A sbb Gb,Eb 1/2
1B sbb Gv,Ev 1/2
1C sbb AL,Ib 1
1D sbb eAX,Iv 1
1E push DS 3
1F pop DS 3
20 and Eb,Gb 1/3 lock
21 and Ev,Gv 1/3 lock
22 and Gb,Eb 1/2
23 and Gv,Ev 1/2
24 and AL,Ib 1
25 and eAX,Iv 1
27 daa - 2
28 sub Eb,Gb 1/3 lock
29 sub Ev,Gv 1/3 lock
2A sub Gb,Eb 1/2
2B sub Gv,Ev 1/2
2C sub AL,Ib 1
2D sub eAX,Iv 1
2F das - 2
30 xor Eb,Gb 1/3 lock
31 xor Ev,Gv 1/3 lock
32 xor Gb,Eb 1/2
33 xor Gv,Ev 1/2
34 xor AL,Ib 1
35 xor eAX,Iv 1
37 aaa - 3
38 cmp Eb,Gb 1/2
39 cmp Ev,Gv 1/2
3A cmp Gb,Eb 1/2
3B cmp Gv,Ev 1/2
3C cmp AL,Ib 1
3D cmp eAX,Iv 1
3F aas - 3
40+ inc Zv 1
48+ dec Zv 1
50+ push Zv 1
58+ pop Zv 4
60 pusha/pushad - 11
61 popa/popad - 9
62 bound Gv,Ma 7
63 arpl Ew,Gw 9/9
68 push Iv 1
69 imul Gv,Ev,Iv 13/13
6A push sIb 1
6B imul Gv,Ev,sIb 13/13
6C ins Yb,DX 17 rep
6D ins Yv,DX 17 rep
6E outs DX,Xb 17 rep
6F outs DX,Xv 17 rep
70 jo Jb 3
71 jno Jb 3
72 jb Jb 3
73 jae Jb 3
74 je Jb 3
75 jne Jb 3
76 jbe Jb 3
77 ja Jb 3
78 js Jb 3
79 jns Jb 3
7A jp Jb 3
7B jnp Jb 3
7C jl Jb 3
7D jge Jb 3
7E jle Jb 3
7F jg Jb 3
80/0 add Eb,Ib 1/3 lock
80/1 or Eb,Ib 1/3 lock
80/2 adc Eb,Ib 1/3 lock
80/3 sbb Eb,Ib 1/3 lock
80/4 and Eb,Ib 1/3 lock
80/5 sub Eb,Ib 1/3 lock
80/6 xor Eb,Ib 1/3 lock
80/7 cmp Eb,Ib 1/2
82/0 add Eb,Ib 1/3 lock
82/1 or Eb,Ib 1/3 lock
82/2 adc Eb,Ib 1/3 lock
82/3 sbb Eb,Ib 1/3 lock
82/4 and Eb,Ib 1/3 lock
82/5 sub Eb,Ib 1/3 lock
82/6 xor Eb,Ib 1/3 lock
82/7 cmp Eb,Ib 1/2
81/0 add Ev,Iv 1/3 lock
81/1 or Ev,Iv 1/3 lock
81/2 adc Ev,Iv 1/3 lock
81/3 sbb Ev,Iv 1/3 lock
81/4 and Ev,Iv 1/3 lock
81/5 sub Ev,Iv 1/3 lock
81/6 xor Ev,Iv 1/3 lock
81/7 cmp Ev,Iv 1/2
83/0 add Ev,sIb 1/3 lock
83/1 or Ev,sIb 1/3 lock
83/2 adc Ev,sIb 1/3 lock
83/3 sbb Ev,sIb 1/3 lock
83/4 and Ev,sIb 1/3 lock
83/5 sub Ev,sIb 1/3 lock
83/6 xor Ev,sIb 1/3 lock
83/7 cmp Ev,sIb 1/2
84 test Eb,Gb 1/2
85 test Ev,Gv 1/2
86 xchg Eb,Gb 3/5 lock
87 xchg Ev,Gv 3/5 lock
88 mov Eb,Gb 1
89 mov Ev,Gv 1
8A mov Gb,Eb 1
8B mov Gv,Ev 1
8C mov Rv/Mw,Sw 3
8D lea Gv,M 1
8E mov Sw,Rv/Mw 3/9
8F/0 pop Ev 4/6
90 nop - 1
F390 pause - 1 386
91+7 xchg Zv,eAX 3
98 cbw/cwde - 3
99 cwd/cdq - 3
9A lcall Ap 18
9B fwait - 3
9C pushf/pushfd - 4
9D popf/popfd - 9
9E sahf - 2
9F lahf - 3
A0 mov AL,Ob 1
A1 mov eAX,Ov 1
A2 mov Ob,AL 1
A3 mov Ov,eAX 1
A4 movs Yb,Xb 7 rep
A5 movs Yv,Xv 7 rep
A6 cmps Xb,Yb 8 repz
A7 cmps Xv,Yv 8 repz
A8 test AL,Ib 1
A9 test eAX,Iv 1
AA stos Yb,AL 5 rep
AB stos Yv,eAX 5 rep
AC lods AL,Xb 5 rep
AD lods eAX,Xv 5 rep
AE scas AL,Yb 6 repz
AF scas eAX,Yv 6 repz
B0+ mov Zb,Ib 1
B8+ mov Zv,Iv 1
C0/0 rol Eb,Ib 2/4
C0/1 ror Eb,Ib 2/4
C0/2 rcl Eb,Ib 8/9
C0/3 rcr Eb,Ib 8/9
C0/4 shl Eb,Ib 2/4
C0/5 shr Eb,Ib 2/4
C0/6 sal Eb,Ib 2/4
C0/7 sar Eb,Ib 2/4
C1/0 rol Ev,Ib 2/4
C1/1 ror Ev,Ib 2/4
C1/2 rcl Ev,Ib 8/9
C1/3 rcr Ev,Ib 8/9
C1/4 shl Ev,Ib 2/4
C1/5 shr Ev,Ib 2/4
C1/6 sal Ev,Ib 2/4
C1/7 sar Ev,Ib 2/4
C2 ret Iw 5
C3 ret - 5
C4 les Gv,Mp 6
C5 lds Gv,Mp 6
C6/0 mov Eb,Ib 1
C7/0 mov Ev,Iv 1
C8 enter Iw,Ib 14
C9 leave - 5
CA lret Iw 14
CB lret - 13
CC int3 - 26
CD int Ib 30
CE into - 28
CF iret/iretd - 15
D0/0 rol Eb,1 3/4
D0/1 ror Eb,1 3/4
D0/2 rcl Eb,1 3/4
D0/3 rcr Eb,1 3/4
D0/4 shl Eb,1 3/4
D0/5 shr Eb,1 3/4
D0/6 sal Eb,1 3/4
D0/7 sar Eb,1 3/4
D1/0 rol Ev,1 3/4
D1/1 ror Ev,1 3/4
D1/2 rcl Ev,1 3/4
D1/3 rcr Ev,1 3/4
D1/4 shl Ev,1 3/4
D1/5 shr Ev,1 3/4
D1/6 sal Ev,1 3/4
D1/7 sar Ev,1 3/4
D2/0 rol Eb,CL 3/4
D2/1 ror Eb,CL 3/4
D2/2 rcl Eb,CL 8/9
D2/3 rcr Eb,CL 8/9
D2/4 shl Eb,CL 3/4
D2/5 shr Eb,CL 3/4
D2/6 sal Eb,CL 3/4
D2/7 sar Eb,CL 3/4
D3/0 rol Ev,CL 3/4
D3/1 ror Ev,CL 3/4
D3/2 rcl Ev,CL 8/9
D3/3 rcr Ev,CL 8/9
D3/4 shl Ev,CL 3/4
D3/5 shr Ev,CL 3/4
D3/6 sal Ev,CL 3/4
D3/7 sar Ev,CL 3/4
D4 aam Ib 15
D5 aad Ib 14
D6 salc - 2
D7 xlat - 4
E0 loopne Jb 9
E1 loope Jb 9
E2 loop Jb 7
E3 jcxz/jecxz Jb 8 asize
E4 in AL,Ib 14
E5 in eAX,Ib 14
E6 out Ib,AL 16
E7 out Ib,eAX 16
E8 call Jv 3
E9 jmp Jv 3
EA ljmp Ap 17
EB jmp Jb 3
EC in AL,DX 14
ED in eAX,DX 14
EE out DX,AL 16
EF out DX,eAX 16
F1 int1 - 26
F4 hlt - 4 priv
F5 cmc - 2
F6/0 test Eb,Ib 1/2
F6/1 test Eb,Ib 1/2
F6/2 not Eb 1/3 lock
F6/3 neg Eb 1/3 lock
F6/4 mul Eb 13/13
F6/5 imul Eb 13/13
F6/6 div Eb 16/16
F6/7 idiv Eb 19/20
F7/0 test Ev,Iv 1/2
F7/1 test Ev,Iv 1/2
F7/2 not Ev 1/3 lock
F7/3 neg Ev 1/3 lock
F7/4 mul Ev 13/13
F7/5 imul Ev 13/13
F7/6 div Ev 40/40
F7/7 idiv Ev 43/44
F8 clc - 2
F9 stc - 2
FA cli - 5
FB sti - 5
FC cld - 2
FD std - 2
FE/0 inc Eb 1/3 lock
FE/1 dec Eb 1/3 lock
FF/0 inc Ev 1/3 lock
FF/1 dec Ev 1/3 lock
FF/2 call Ev 5/5
FF/3 lcall Mp 17
FF/4 jmp Ev 5/5
FF/5 ljmp Mp 13
FF/6 push Ev 4/4
"""

TWO_BYTE = r"""
0F00/0 sldt Rv/Mw 2/3
0F00/1 str Rv/Mw 2/3
0F00/2 lldt Ew 11/11 priv
0F00/3 ltr Ew 20/20 priv
0F00/4 verr Ew 11/11
0F00/5 verw Ew 11/11
0F01/0 sgdt Ms 10
0F01/1 sidt Ms 10
0F01/2 lgdt Ms 11 priv
0F01/3 lidt Ms 11 priv
0F01/4 smsw Rv/Mw 2/3
0F01/6 lmsw Ew 13/13 priv
0F01/7 invlpg M 12 priv 386
0F02 lar Gv,Rv/Mw 11/11
0F03 lsl Gv,Rv/Mw 10/10
0F06 clts - 7 priv
0F08 invd - 4 priv 386
0F09 wbinvd - 5 priv 386
0F0B ud2 - 1 386
0F20 mov Rd,Cd 4 priv
0F21 mov Rd,Dd 10 priv
0F22 mov Cd,Rd 17 priv
0F23 mov Dd,Rd 10 priv
0F24 mov Rd,Td 4 priv
0F26 mov Td,Rd 4 priv
0F30 wrmsr - 30 priv 386
0F31 rdtsc - 15 386
0F32 rdmsr - 20 priv 386
0F34 sysenter - 20 386
0F35 sysexit - 20 priv 386
0F40 cmovo Gv,Ev 2/2 p6
0F41 cmovno Gv,Ev 2/2 p6
0F42 cmovb Gv,Ev 2/2 p6
0F43 cmovae Gv,Ev 2/2 p6
0F44 cmove Gv,Ev 2/2 p6
0F45 cmovne Gv,Ev 2/2 p6
0F46 cmovbe Gv,Ev 2/2 p6
0F47 cmova Gv,Ev 2/2 p6
0F48 cmovs Gv,Ev 2/2 p6
0F49 cmovns Gv,Ev 2/2 p6
0F4A cmovp Gv,Ev 2/2 p6
0F4B cmovnp Gv,Ev 2/2 p6
0F4C cmovl Gv,Ev 2/2 p6
0F4D cmovge Gv,Ev 2/2 p6
0F4E cmovle Gv,Ev 2/2 p6
0F4F cmovg Gv,Ev 2/2 p6
0F80 jo Jv 3
0F81 jno Jv 3
0F82 jb Jv 3
0F83 jae Jv 3
0F84 je Jv 3
0F85 jne Jv 3
0F86 jbe Jv 3
0F87 ja Jv 3
0F88 js Jv 3
0F89 jns Jv 3
0F8A jp Jv 3
0F8B jnp Jv 3
0F8C jl Jv 3
0F8D jge Jv 3
0F8E jle Jv 3
0F8F jg Jv 3
0F90/* seto Eb 3/4
0F91/* setno Eb 3/4
0F92/* setb Eb 3/4
0F93/* setae Eb 3/4
0F94/* sete Eb 3/4
0F95/* setne Eb 3/4
0F96/* setbe Eb 3/4
0F97/* seta Eb 3/4
0F98/* sets Eb 3/4
0F99/* setns Eb 3/4
0F9A/* setp Eb 3/4
0F9B/* setnp Eb 3/4
0F9C/* setl Eb 3/4
0F9D/* setge Eb 3/4
0F9E/* setle Eb 3/4
0F9F/* setg Eb 3/4
0FA0 push FS 3
0FA1 pop FS 3
0FA2 cpuid - 14 386
0FA3 bt Ev,Gv 3/8
0FA4 shld Ev,Gv,Ib 2/3
0FA5 shld Ev,Gv,CL 3/4
0FA8 push GS 3
0FA9 pop GS 3
0FAB bts Ev,Gv 6/13 lock
0FAC shrd Ev,Gv,Ib 2/3
0FAD shrd Ev,Gv,CL 3/4
0FAF imul Gv,Ev 13/13
0FB0 cmpxchg Eb,Gb 6/7 lock 386
0FB1 cmpxchg Ev,Gv 6/7 lock 386
0FB2 lss Gv,Mp 6
0FB3 btr Ev,Gv 6/13 lock
0FB4 lfs Gv,Mp 6
0FB5 lgs Gv,Mp 6
0FB6 movzx Gv,Eb 3/3
0FB7 movzx Gv,Ew 3/3
0FBA/4 bt Ev,Ib 3/3
0FBA/5 bts Ev,Ib 6/8 lock
0FBA/6 btr Ev,Ib 6/8 lock
0FBA/7 btc Ev,Ib 6/8 lock
0FBB btc Ev,Gv 6/13 lock
0FBC bsf Gv,Ev 6/7
0FBD bsr Gv,Ev 6/7
0FBE movsx Gv,Eb 3/3
0FBF movsx Gv,Ew 3/3
0FC0 xadd Eb,Gb 3/4 lock 386
0FC1 xadd Ev,Gv 3/4 lock 386
0FC7/1 cmpxchg8b Mq 10 lock 386
0FC8+ bswap Zv 1 386
"""
# fmt: on

#: Prefix bytes and the name each is recorded under in ``Instruction.prefixes``.
PREFIXES = {
    0x26: "es", 0x2E: "cs", 0x36: "ss", 0x3E: "ds", 0x64: "fs", 0x65: "gs",
    0x66: "data16", 0x67: "addr16", 0xF0: "lock", 0xF2: "repne", 0xF3: "rep",
}
#: Segment-override prefix byte -> segment register index (ES CS SS DS FS GS).
SEGMENT_PREFIX = {0x26: 0, 0x2E: 1, 0x36: 2, 0x3E: 3, 0x64: 4, 0x65: 5}

#: The longest instruction the processor accepts (SDM Vol.2 §2.1); longer -> #UD/#GP.
MAX_LENGTH = 15


@frozen
class Form:
    """One instruction form of the table: what an opcode means and what it costs."""

    key: str
    opcode: tuple[int, ...]
    group: int | None  # ModRM reg field for group forms, else None
    mnemonic: str  # "cbw/cwde" style names carry both operand-size spellings
    operands: tuple[str, ...]
    cycles: int  # register form (or the only form)
    cycles_mem: int  # memory form
    attrs: frozenset[str]
    any_modrm: bool = False  # "0F90/*": ModRM present, reg field ignored

    @cached_property
    def has_modrm(self) -> bool:
        """Whether a ModRM byte follows the opcode bytes (computed once per form)."""
        return self.group is not None or self.any_modrm or any(
            _uses_modrm(spec) for spec in self.operands
        )

    def name(self, opsize: int) -> str:
        """The mnemonic for this operand size (``cbw`` at 16 bits, ``cwde`` at 32).

        For ``asize`` forms (``jcxz/jecxz``) the decoder passes the address size.
        """
        if "/" in self.mnemonic:
            short, long = self.mnemonic.split("/")
            return short if opsize == 16 else long
        return self.mnemonic


# "Zv"/"Zb"/"Zd": the register named by the low three opcode bits.
_Z_REG = {
    "v": ("eAX", "eCX", "eDX", "eBX", "eSP", "eBP", "eSI", "eDI"),
    "b": ("AL", "CL", "DL", "BL", "AH", "CH", "DH", "BH"),
    "d": ("EAX", "ECX", "EDX", "EBX", "ESP", "EBP", "ESI", "EDI"),
}

#: Register-name operands: never need ModRM.
_FIXED = frozenset(
    "AL CL DL BL AH CH DH BH AX DX eAX eCX eDX eBX eSP eBP eSI eDI "
    "ES CS SS DS FS GS 1 ST".split()
) | frozenset(_Z_REG["d"])

# Specs read from the byte stream after the ModRM/SIB/displacement bytes.
_TRAILING = ("I", "sI", "J", "O", "A")


#: Bytes of the fixed size letters (see the module docstring, ``OPERANDS``).
_LETTER_BYTES = {"b": 1, "w": 2, "d": 4, "q": 8, "t": 10, "s": 6, "": 0}


def operand_bytes(letter: str, opsize: int) -> int:
    """Bytes accessed by an operand of size ``letter`` at operand size ``opsize``
    (16 or 32); KeyError for a letter the table does not use."""
    if letter == "v":
        return opsize // 8
    if letter == "p":
        return opsize // 8 + 2
    if letter == "a":
        return opsize // 4
    if letter == "e":  # FLDENV/FNSTENV image (SDM Vol.1 §8.1.10)
        return 14 if opsize == 16 else 28
    if letter == "f":  # FSAVE/FRSTOR image (SDM Vol.1 §8.1.10)
        return 94 if opsize == 16 else 108
    return _LETTER_BYTES[letter]


def _uses_modrm(spec: str) -> bool:
    return spec[:1] in "EGRMSCDT" and spec not in _FIXED and not spec.startswith("ST")


def parse_table(text: str) -> list[Form]:
    """Parse table lines (format in the module docstring) into forms, expanding
    ``XX+`` keys into one form per register."""
    forms = []
    for line in text.strip().splitlines():
        key, mnemonic, operands, cycles, *attrs = line.split()
        hexpart, _, reg = key.partition("/")
        hexpart, plus, count = hexpart.partition("+")
        opcode = tuple(bytes.fromhex(hexpart))
        group = int(reg) if reg not in ("", "*") else None
        reg_cycles, _, mem_cycles = cycles.partition("/")
        specs = () if operands == "-" else tuple(operands.split(","))
        _check_order(key, specs)
        first = 8 - int(count) if count else 0
        for low in range(first, 8) if plus else (0,):
            ops = tuple(_expand(spec, low) for spec in specs)
            forms.append(Form(
                key=key, opcode=opcode[:-1] + (opcode[-1] - first + low,), group=group,
                mnemonic=mnemonic, operands=ops, cycles=int(reg_cycles),
                cycles_mem=int(mem_cycles or reg_cycles), attrs=frozenset(attrs),
                any_modrm=reg == "*",
            ))
    return forms


def _expand(spec: str, low: int) -> str:
    """Resolve the register specs of ``XX+`` keys for the opcode with low bits ``low``."""
    if spec.startswith("Z"):
        return _Z_REG[spec[1]][low]
    if spec == "STi":
        return f"ST({low})"
    return spec


def _check_order(key: str, specs: tuple[str, ...]) -> None:
    """The decoder reads operands in spec order, so ModRM-based specs (which own the
    SIB and displacement bytes) must come before immediates (SDM Vol.2 Figure 2-1)."""
    seen_trailing = False
    for spec in specs:
        if spec.startswith(_TRAILING):
            seen_trailing = True
        elif _uses_modrm(spec) and seen_trailing:
            raise ValueError(f"{key}: ModRM operand {spec} after an immediate")


FORMS: list[Form] = parse_table(ONE_BYTE) + parse_table(TWO_BYTE)


def _index(forms: list[Form]) -> dict[tuple[int, ...], Form | dict[int, Form]]:
    """Map an opcode to its form, or to ``{reg: form}`` for a ModRM group."""
    table: dict[tuple[int, ...], Form | dict[int, Form]] = {}
    for form in forms:
        if form.group is None:
            assert form.opcode not in table, form.key
            table[form.opcode] = form
        else:
            group = table.setdefault(form.opcode, {})
            assert isinstance(group, dict) and form.group not in group, form.key
            group[form.group] = form
    return table


#: opcode tuple (``(0x01,)``, ``(0x0F, 0xAF)``, ``(0xF3, 0x90)``) -> Form or {reg: Form}.
OPCODES = _index(FORMS)
