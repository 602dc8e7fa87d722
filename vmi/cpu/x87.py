"""The x87 escape opcodes D8-DF: decoded for length, mnemonic and operands.

The interpreter models no floating-point unit (CR0.EM/TS semantics belong to
the system model); these forms exist so that listings, lengths and the
decode-once cache are right, and so that an executor can raise #NM or #UD
for them by the ``x87`` attribute.

The escape byte and the ModRM byte together select the instruction (SDM
Vol.2 Appendix A.4, "Escape Opcode Instructions"):

* ``mod != 3``: a memory operand; the form is chosen by ``(escape, reg)``
  (``MEMORY``). The operand size comes from the form (``Md`` a 32-bit real or
  integer, ``Mq`` 64-bit, ``Mt`` 80-bit, ``Mw`` a word, ``Me``/``Mf`` the
  14/28-byte environment and 94/108-byte state by operand size).
* ``mod == 3``: a register form chosen by ``(escape, reg, rm)``
  (``REGISTER``); the whole ModRM byte is part of the opcode (key ``D9E8``),
  and ``ST``/``ST(i)`` name the stack top and stack register ``i``.

Mnemonics are the ones iced-x86 uses, lower-cased (``fnstsw``, ``fstpnce``).
Only what the 387 executes is here: FCMOVcc, FCOMI and FISTTP (P6 and SSE3)
are undefined and raise ``InvalidOpcode``. The 387 also runs the 8087/287
leftovers ``fneni``, ``fndisi`` and ``fnsetpm`` (as no-ops) and the
undocumented aliases D9 D8+i, DC D0+i, DC D8+i, DD C8+i, DE D0+i, DF C8+i,
DF D0+i, DF D8+i of fstp/fcom/fcomp/fxch, so they decode.

Cycle counts are the Intel486 FPU figures (Intel486 Programmer's Reference
Manual, floating-point clock counts), the low end of each range.
"""

from __future__ import annotations

from vmi.cpu.isa import Form, parse_table

# fmt: off
TABLE = r"""
D8/0 fadd Md 8 x87
D8/1 fmul Md 11 x87
D8/2 fcom Md 4 x87
D8/3 fcomp Md 4 x87
D8/4 fsub Md 8 x87
D8/5 fsubr Md 8 x87
D8/6 fdiv Md 73 x87
D8/7 fdivr Md 73 x87
D8C0+ fadd ST,STi 8 x87
D8C8+ fmul ST,STi 16 x87
D8D0+ fcom ST,STi 4 x87
D8D8+ fcomp ST,STi 4 x87
D8E0+ fsub ST,STi 8 x87
D8E8+ fsubr ST,STi 8 x87
D8F0+ fdiv ST,STi 73 x87
D8F8+ fdivr ST,STi 73 x87
D9/0 fld Md 3 x87
D9/2 fst Md 7 x87
D9/3 fstp Md 7 x87
D9/4 fldenv Me 44 x87
D9/5 fldcw Mw 4 x87
D9/6 fnstenv Me 56 x87
D9/7 fnstcw Mw 3 x87
D9C0+ fld STi 4 x87
D9C8+ fxch ST,STi 4 x87
D9D0 fnop - 3 x87
D9D8+ fstpnce STi 3 x87
D9E0 fchs - 6 x87
D9E1 fabs - 3 x87
D9E4 ftst - 4 x87
D9E5 fxam - 8 x87
D9E8 fld1 - 4 x87
D9E9 fldl2t - 8 x87
D9EA fldl2e - 8 x87
D9EB fldpi - 8 x87
D9EC fldlg2 - 8 x87
D9ED fldln2 - 8 x87
D9EE fldz - 4 x87
D9F0 f2xm1 - 140 x87
D9F1 fyl2x - 196 x87
D9F2 fptan - 200 x87
D9F3 fpatan - 218 x87
D9F4 fxtract - 16 x87
D9F5 fprem1 - 72 x87
D9F6 fdecstp - 3 x87
D9F7 fincstp - 3 x87
D9F8 fprem - 70 x87
D9F9 fyl2xp1 - 171 x87
D9FA fsqrt - 83 x87
D9FB fsincos - 292 x87
D9FC frndint - 21 x87
D9FD fscale - 30 x87
D9FE fsin - 257 x87
D9FF fcos - 257 x87
DA/0 fiadd Md 19 x87
DA/1 fimul Md 22 x87
DA/2 ficom Md 15 x87
DA/3 ficomp Md 15 x87
DA/4 fisub Md 19 x87
DA/5 fisubr Md 19 x87
DA/6 fidiv Md 84 x87
DA/7 fidivr Md 84 x87
DAE9 fucompp - 5 x87
DB/0 fild Md 9 x87
DB/2 fist Md 28 x87
DB/3 fistp Md 28 x87
DB/5 fld Mt 6 x87
DB/7 fstp Mt 6 x87
DBE0 fneni - 3 x87
DBE1 fndisi - 3 x87
DBE2 fnclex - 7 x87
DBE3 fninit - 17 x87
DBE4 fnsetpm - 3 x87
DC/0 fadd Mq 8 x87
DC/1 fmul Mq 14 x87
DC/2 fcom Mq 4 x87
DC/3 fcomp Mq 4 x87
DC/4 fsub Mq 8 x87
DC/5 fsubr Mq 8 x87
DC/6 fdiv Mq 73 x87
DC/7 fdivr Mq 73 x87
DCC0+ fadd STi,ST 8 x87
DCC8+ fmul STi,ST 16 x87
DCD0+ fcom ST,STi 4 x87
DCD8+ fcomp ST,STi 4 x87
DCE0+ fsubr STi,ST 8 x87
DCE8+ fsub STi,ST 8 x87
DCF0+ fdivr STi,ST 73 x87
DCF8+ fdiv STi,ST 73 x87
DD/0 fld Mq 3 x87
DD/2 fst Mq 8 x87
DD/3 fstp Mq 8 x87
DD/4 frstor Mf 131 x87
DD/6 fnsave Mf 143 x87
DD/7 fnstsw Mw 3 x87
DDC0+ ffree STi 3 x87
DDC8+ fxch ST,STi 4 x87
DDD0+ fst STi 3 x87
DDD8+ fstp STi 3 x87
DDE0+ fucom ST,STi 4 x87
DDE8+ fucomp ST,STi 4 x87
DE/0 fiadd Mw 20 x87
DE/1 fimul Mw 23 x87
DE/2 ficom Mw 16 x87
DE/3 ficomp Mw 16 x87
DE/4 fisub Mw 20 x87
DE/5 fisubr Mw 20 x87
DE/6 fidiv Mw 85 x87
DE/7 fidivr Mw 85 x87
DEC0+ faddp STi,ST 8 x87
DEC8+ fmulp STi,ST 16 x87
DED0+ fcomp ST,STi 4 x87
DED9 fcompp - 5 x87
DEE0+ fsubrp STi,ST 8 x87
DEE8+ fsubp STi,ST 8 x87
DEF0+ fdivrp STi,ST 73 x87
DEF8+ fdivp STi,ST 73 x87
DF/0 fild Mw 13 x87
DF/2 fist Mw 29 x87
DF/3 fistp Mw 29 x87
DF/4 fbld Mt 70 x87
DF/5 fild Mq 10 x87
DF/6 fbstp Mt 172 x87
DF/7 fistp Mq 28 x87
DFC0+ ffreep STi 3 x87
DFC8+ fxch ST,STi 4 x87
DFD0+ fstp STi 3 x87
DFD8+ fstp STi 3 x87
DFE0 fnstsw AX 3 x87
"""
# fmt: on

#: Every x87 form: memory forms (opcode ``(escape,)``, group ``reg``) and register
#: forms (opcode ``(escape, modrm)``).
FORMS: list[Form] = parse_table(TABLE)

#: ``(escape, reg)`` -> the memory form (ModRM ``mod`` 0-2).
MEMORY: dict[tuple[int, int], Form] = {
    (form.opcode[0], form.group): form for form in FORMS if form.group is not None
}

#: ``(escape, reg, rm)`` -> the register form (ModRM ``mod`` 3).
REGISTER: dict[tuple[int, int, int], Form] = {
    (form.opcode[0], (form.opcode[1] >> 3) & 7, form.opcode[1] & 7): form
    for form in FORMS if form.group is None
}

assert len(MEMORY) + len(REGISTER) == len(FORMS), "duplicate x87 form"
