"""A generated AT&T corpus covering every instruction form of the ISA table.

``corpus_lines()`` walks ``vmi.cpu.isa.FORMS`` (and the x87 forms) and writes,
for each form, source lines that GNU as and vmi.asm should encode with it:
registers varied, every ModRM/SIB memory shape (no displacement, disp8,
disp32, SIB with and without base, segment overrides, 16-bit addressing),
immediates of every size class, branch targets near and far. The same lines
are emitted under ``.code32`` and ``.code16``. Lines GNU as rejects are
filtered out by the test with GNU as itself (``tests/asm/gnu.py`` drives it), so the
generator may be liberal.

Each corpus line is ``(text, form_key)``; ``form_key`` names the form the line
was written for (for coverage reports; the assemblers may legitimately pick a
shorter form, as for ``add $1,%eax``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from vmi.cpu import isa

GPR = {
    1: ["%al", "%cl", "%dl", "%bl", "%ah", "%ch", "%dh", "%bh"],
    2: ["%ax", "%cx", "%dx", "%bx", "%sp", "%bp", "%si", "%di"],
    4: ["%eax", "%ecx", "%edx", "%ebx", "%esp", "%ebp", "%esi", "%edi"],
}
SEGMENTS = ["%es", "%cs", "%ss", "%ds", "%fs", "%gs"]

#: Every 32-bit ModRM/SIB shape, and segment overrides (redundant ones included).
MEMORY32 = [
    "(%eax)", "(%esp)", "(%ebp)", "0x4(%ecx)", "-0x4(%edx)", "0x7f(%ebx)", "-0x80(%esi)",
    "0x80(%edi)", "0x12345678(%eax)", "-0x12345678(%ebp)", "0x12345678", "(%eax,%ebx)",
    "(%ecx,%edx,2)", "0x8(%esp,%esi,4)", "(,%edi,8)", "0x10(,%eax,1)", "-0x80(%ebp,%ecx,8)",
    "(%esp,%ebp,1)", "0x0(%eax)", "%fs:(%eax)", "%ss:(%ebp)", "%es:0x1000",
    "%ss:0x8(%eax)", "%cs:(%esi,%edi,4)", "%gs:0x0(%ebp)", "%ds:(%esp)", "%ds:0x10(%ebx)",
    "L0", "L1+4(%ebx)", "FWD(%ecx)", "(8)(%eax)", "(1+2)*4(%esi)",
]
#: Every 16-bit ModRM shape (the assemblers add 67 in 32-bit code).
MEMORY16 = [
    "(%bx,%si)", "0x4(%bx,%di)", "-0x2(%bp,%si)", "0x1234(%bp,%di)", "(%si)", "(%di)",
    "(%bp)", "0x7f(%bx)", "-0x80(%bx)", "%es:(%bx)", "%ss:0x4(%bp)",
]
#: Memory operands used where an instruction has several variants to try.
MEMORY_SHORT = ["(%eax)", "0x4(%ebp)", "0x12345678(%ebx,%ecx,4)", "%fs:0x10", "(%bx,%si)"]

IMM = {
    1: ["$0x0", "$0x7f", "$0xff", "$-0x80", "$FWD"],
    2: ["$0x1234", "$0xffff", "$0x80", "$-0x1", "$FWD"],
    4: ["$0x12345678", "$0x80", "$-0x81", "$0xffffffff", "$0x1", "$L0", "$FWD", "$(L1-L0)"],
}
IMM_S8 = ["$0x1", "$-0x1", "$0x7f", "$-0x80", "$(2*3)"]
CONTROL = ["%cr0", "%cr2", "%cr3", "%cr4"]
DEBUG = ["%db0", "%db3", "%db6", "%db7"]
TEST = ["%tr3", "%tr6", "%tr7"]

#: AT&T spellings of the table's "a/b" pairs (by operand size).
PAIR_NAMES = {
    "cbw/cwde": {16: "cbtw", 32: "cwtl"}, "cwd/cdq": {16: "cwtd", 32: "cltd"},
}
#: Forms no line is written for: GNU as has no spelling for them.
NO_SPELLING = {"D6"}  # salc


def _size_letter(size: int) -> str:
    return {1: "b", 2: "w", 4: "l"}.get(size, "")


def _spec_operands(spec: str, opsize: int) -> list[str]:
    """Candidate AT&T operand texts for one operand spec at an operand size."""
    v = opsize // 8
    fixed = {
        "AL": "%al", "CL": "%cl", "DL": "%dl", "BL": "%bl", "AH": "%ah", "CH": "%ch",
        "DH": "%dh", "BH": "%bh", "AX": "%ax", "ES": "%es", "CS": "%cs", "SS": "%ss",
        "DS": "%ds", "FS": "%fs", "GS": "%gs",
    }
    if spec in fixed:
        return [fixed[spec]]
    if spec == "DX":
        return ["(%dx)", "%dx"]
    if spec == "1":
        return ["$1", ""]
    names32 = ("EAX", "ECX", "EDX", "EBX", "ESP", "EBP", "ESI", "EDI")
    if spec in names32:
        return [GPR[4][names32.index(spec)]]
    if spec.startswith("e") and spec[1:] in [n[1:] for n in names32]:
        return [GPR[v][[n[1:] for n in names32].index(spec[1:])]]
    if spec == "Rv/Mw":
        return GPR[v][::3] + MEMORY_SHORT
    kind, letter = (spec[:2], spec[2:]) if spec.startswith("sI") else (spec[0], spec[1:])
    size = {"b": 1, "w": 2, "d": 4, "v": v}.get(letter, 0)
    if kind == "E":
        return GPR[size][::3] + _memory_window(7)
    if kind == "M":
        return _memory_window(4)
    if kind == "R":
        return GPR[4][::2]
    if kind == "G":
        return GPR[size][1::3]
    if kind == "S":
        return SEGMENTS
    if kind == "C":
        return CONTROL
    if kind == "D":
        return DEBUG
    if kind == "T":
        return TEST
    if kind == "sI":
        return IMM_S8
    if kind == "I":
        return IMM[size]
    if kind == "J":
        return ["L0", "far_end", "1f", ".+0x10", ".-0x10"]
    if kind == "O":
        return ["0x12345678", "%es:0x1234", "L1", "%ds:0x8"]
    if kind == "A":
        return ["$0x10,$0x12345678", "$0x8,$L0", "$0xffff,$0x1234"]
    if kind in "XY":
        return ["<implicit>"]
    return []


_WINDOW = [0]
_ALL_MEMORY = MEMORY32 + MEMORY16


def _memory_window(count: int) -> list[str]:
    """The next ``count`` memory shapes, round-robin: every form gets a few, and
    over the corpus every shape meets every kind of instruction many times."""
    start = _WINDOW[0]
    _WINDOW[0] = (start + count) % len(_ALL_MEMORY)
    return [_ALL_MEMORY[(start + k) % len(_ALL_MEMORY)] for k in range(count)]


def _variants(options: list[list[str]]) -> list[list[str]]:
    """The first option of every operand, then each option of each operand in turn."""
    if not options:
        return [[]]
    if any(not o for o in options):
        return []
    base = [o[0] for o in options]
    out = [base]
    for k, opts in enumerate(options):
        for alt in opts[1:]:
            out.append(base[:k] + [alt] + base[k + 1 :])
    return out


def _string_lines(form: isa.Form, opsize: int) -> list[str]:
    """String instructions: bare with suffix, with prefixes, with explicit operands."""
    base = form.mnemonic
    size = {"b": 1, "v": opsize // 8}[[s for s in form.operands if s[0] in "XY"][0][-1]]
    suffix = _size_letter(size)
    lines = [f"{base}{suffix}"]
    acc = GPR[size][0]
    explicit = {
        "movs": [("%ds:(%esi)", "%es:(%edi)"), ("%fs:(%esi)", "%es:(%edi)"),
                 ("(%si)", "%es:(%di)")],
        "cmps": [("%es:(%edi)", "%ds:(%esi)"), ("%es:(%edi)", "%gs:(%esi)")],
        "stos": [(acc, "%es:(%edi)"), (acc, "%es:(%di)")],
        "lods": [("%ds:(%esi)", acc), ("%cs:(%esi)", acc), ("(%si)", acc)],
        "scas": [("%es:(%edi)", acc), ("%es:(%di)", acc)],
        "ins": [("(%dx)", "%es:(%edi)")],
        "outs": [("%ds:(%esi)", "(%dx)"), ("%ss:(%esi)", "(%dx)")],
    }
    for ops in explicit.get(base, []):
        lines.append(f"{base}{suffix} {','.join(ops)}")
    rep = "repz" if "repz" in form.attrs else "rep"
    lines += [f"{rep} {base}{suffix}", f"{rep}; {base}{suffix}"]
    if "repz" in form.attrs:
        lines.append(f"repnz {base}{suffix}")
    return lines


def _needs_suffix(form: isa.Form, texts: list[str]) -> bool:
    return not any(t.startswith("%") and t not in ("%dx",) + tuple(SEGMENTS)
                   and not t.startswith(("%cr", "%db", "%tr", "%st"))
                   for t in texts if t) or form.mnemonic in ("shl", "shr")


def _operation_size(form: isa.Form, opsize: int) -> int:
    for spec in form.operands:
        kind = spec[0]
        if spec in ("DX", "CL", "1") or spec.startswith(("I", "sI", "J", "A", "S", "C", "D",
                                                         "T")):
            continue
        if spec == "Rv/Mw":
            return 2
        letter = spec[-1]
        if kind in "EGROXYM" or spec[0] in "ACDB" or spec.startswith(("e", "E")):
            return {"b": 1, "w": 2, "d": 4, "v": opsize // 8, "X": opsize // 8}.get(letter, 4)
        return 0
    return opsize // 8


_X87_REAL = frozenset("fadd fmul fcom fcomp fsub fsubr fdiv fdivr fld fst fstp".split())
_X87_ARITHMETIC = frozenset(n + p for n in ("fadd", "fmul", "fsub", "fsubr", "fdiv", "fdivr")
                            for p in ("", "p"))
_X87_SWAPPED = {"fsub": "fsubr", "fsubr": "fsub", "fdiv": "fdivr", "fdivr": "fdiv"}
_X87_SWAPPED |= {a + "p": b + "p" for a, b in _X87_SWAPPED.items()}


def x87_form_lines(form: isa.Form) -> list[str]:
    """AT&T lines for an x87 form: suffixes by memory format, the fsub/fdiv swap."""
    base = form.mnemonic
    if form.group is not None:
        spec = form.operands[0]
        size = {"Mw": 2, "Md": 4, "Mq": 8, "Mt": 10}.get(spec, 0)
        if base in _X87_REAL:
            names = [base + {4: "s", 8: "l", 10: "t"}[size]]
        elif base.startswith("fi"):
            names = [base + {2: "s", 4: "l", 8: "ll"}[size]]
            if size == 8:
                names.append(base + "q")
        elif spec in ("Me", "Mf"):
            names = [base, base + "s", base + "l"]
        else:
            names = [base]
        if size and (base in _X87_REAL or base.startswith("fi")) and size in (2, 4):
            names.append(base)  # the default format, with GNU as's warning
        waited = {"fnstsw": "fstsw", "fnstcw": "fstcw", "fnstenv": "fstenv", "fnsave": "fsave"}
        if base in waited:
            names.append(waited[base])
        return [f"{name} {mem}" for name in names for mem in MEMORY_SHORT + MEMORY16[:2]]
    name = _X87_SWAPPED.get(base, base) if form.opcode[0] in (0xDC, 0xDE) else base
    registers = ["%st" if spec == "ST" else "%" + spec.lower() for spec in form.operands]
    if not registers:
        lines = [name]
        if name.startswith("fn") and name[2:] in ("init", "clex", "eni", "disi", "setpm"):
            lines.append("f" + name[2:])
        return lines
    if registers == ["%ax"]:
        return [f"{name} %ax", name, "fstsw %ax", "fstsw"]
    if name in _X87_ARITHMETIC:
        lines = [f"{name} {','.join(reversed(registers))}"]
    else:
        lines = [f"{name} {r}" for r in registers if r != "%st"] or [f"{name} %st"]
    if len(registers) == 2 and "%st(1)" in registers:
        lines.append(name)  # fxch, fcom, faddp alone work on %st(1)
    return lines


#: Branches without a rel16/32 form: far targets are errors (layout-dependent).
_REL8_ONLY = frozenset({"loop", "loope", "loopne", "jcxz"})


def form_lines(form: isa.Form) -> list[str]:
    """AT&T lines written for one table form (Intel operand order in the table)."""
    if form.key in NO_SPELLING:
        return []
    if "x87" in form.attrs:
        return x87_form_lines(form)
    if form.key == "F390":
        return ["pause"]
    lines: list[str] = []
    uses_v = any(s[-1:] in "vpa" or s.startswith("e") or s == "Rv/Mw" for s in form.operands)
    name = form.mnemonic
    for opsize in (32, 16) if uses_v or "/" in name else (32,):
        if name in PAIR_NAMES:
            mnemonic = PAIR_NAMES[name][opsize]
        else:
            mnemonic = name.split("/")[0]
        if any(s[:1] in "XY" for s in form.operands):
            lines += _string_lines(form, opsize)
            continue
        if "Ap" in form.operands:
            suffix = "" if opsize == 32 else "w"
            lines += [f"{mnemonic}{suffix} {op}" for op in _spec_operands("Ap", opsize)]
            continue
        options = [_spec_operands(spec, opsize) for spec in form.operands]
        if name.split("/")[0] in _REL8_ONLY:
            options = [[".+0x10", ".-0x10", ".+2"]]  # rel8 only: near targets
        for choice in _variants(options):
            texts = [t for t in choice]
            if mnemonic in ("bound", "enter"):
                ordered = texts
            else:
                ordered = list(reversed(texts))
            ordered = [t for t in ordered if t != ""]
            if any(t.startswith("J") for t in form.operands):
                pass
            opsize_letter = _size_letter(_operation_size(form, opsize))
            text = mnemonic + (" " + ",".join(ordered) if ordered else "")
            if mnemonic in ("jmp", "call") and form.operands[0][0] == "E" and ordered:
                text = mnemonic + " *" + ordered[0]
            if mnemonic in ("lcall", "ljmp") and ordered:
                text = mnemonic + " *" + ordered[0]
            lines.append(text)
            if _needs_suffix(form, ordered) and opsize_letter:
                head, _, rest = text.partition(" ")
                lines.append(f"{head}{opsize_letter} {rest}".rstrip())
            if opsize == 16 and not any(t.startswith("%") for t in ordered) and uses_v:
                head, _, rest = text.partition(" ")
                lines.append(f"{head}w {rest}".rstrip())
    return lines


#: Lines written by hand: spellings and features the table walk does not reach.
EXTRA = [
    "lock addl $1,(%eax)", "lock; incl (%ebx)", "lock xchg %eax,(%ebx)",
    "lock cmpxchg %ecx,%fs:(%edx)", "lock btsl $3,(%eax)", "lock cmpxchg8b (%esi)",
    "lock xaddl %eax,0x4(%esp)", "lock decb (%edi)", "lock", "rep", "repnz", "cs", "ds",
    "fs", "gs", "es", "ss", "data16", "addr16", "rep; nop", "rep nop", "rep ret",
    "cs movl (%eax),%ecx", "ds; movl (%eax),%ecx", "data16 nop", "addr16 nop",
    "addr16 movl 0x1234,%eax", "addr16 movl 0x1234,%ecx", "addr16 lodsb", "addr16 stosl",
    "{disp32} movl 4(%eax),%ecx", "{disp8} movl (%ebp),%ecx", "{disp32} movl (%eax),%ecx",
    "{load} movl %eax,%ecx", "{store} movl %eax,%ecx", "{load} addl %eax,%ecx",
    "{nooptimize} cli", "sal %eax", "sall $2,(%eax)", "salb %cl,%al",
    "int $3", "int $0x80", "int3", "int1", "into", "aam", "aad", "aam $0x10", "aad $7",
    "imul $3,%eax", "imul $0x1234,%ecx", "imulw $3,%ax", "shld %eax,%ecx",
    "shrdw %ax,(%ebx)", "xchg %eax,%eax", "xchg %ax,%ax", "xchg %ecx,%eax",
    "xchg %eax,%ecx", "xchg (%eax),%ebx", "xchgb %al,(%ebx)", "test (%eax),%ebx",
    "test %eax,%ecx", "testb $1,(%eax)", "xlat", "xlatb", "xlat %fs:(%ebx)",
    "xlat %ds:(%ebx)", "xlat (%bx)", "wait", "fwait", "ud2a", "pause",
    "jz L0", "jnz far_end", "jc 1f", "jnae L0", "jnb L0", "jnc L0", "jna L0", "jnbe L0",
    "jpe L0", "jpo L0", "jnge L0", "jnl L0", "jng L0", "jnle L0", "jecxz .+4", "jcxz .-4",
    "loopz .+8", "loopnz .-8", "loope .+0x7f", "loopne .-0x7e", "loop .",
    "setz %al", "setnz (%eax)", "setc %bl", "setnae %cl", "setpe %dl", "setpo (%ebx)",
    "setnge %al", "setnle %ah",
    "cmovne %eax,%ebx", "cmovl 4(%esi),%ecx", "cmovz %ax,%bx", "cmovnz (%eax),%dx",
    "cmovc %ecx,%edx", "cmovnae 0x10(%ebp),%eax", "cmovnb %esi,%edi", "cmovnc (%bx,%si),%cx",
    "cmovna %eax,%eax", "cmovnbe %esp,%ebp", "cmovpe %eax,%ebx", "cmovpo (%esp),%eax",
    "cmovnge %ax,%dx", "cmovnl %eax,%ecx", "cmovng 0x12345678,%esi", "cmovnle %edx,%eax",
    "cmovnel %eax,%ebx", "cmovgew (%eax),%cx", "cmovll %ebx,%ecx", "cmovsw %ax,%si",
    "movzbl %al,%eax", "movzbw (%eax),%cx", "movzwl %ax,%edx", "movzwl (%ebx),%ecx",
    "movsbl %bl,%esi", "movsbw %al,%ax", "movswl (%eax),%eax", "movzx %al,%eax",
    "movsx %ax,%ecx", "movzb %al,%eax", "movzw %ax,%eax", "movzx (%eax),%eax",
    "cbw", "cwde", "cwd", "cdq", "cbtw", "cwtl", "cwtd", "cltd",
    "pusha", "pushal", "pushaw", "popa", "popal", "popaw", "pushf", "pushfl", "pushfw",
    "popf", "popfl", "popfw", "iret", "iretl", "iretw", "ret", "retl", "retw", "ret $4",
    "retw $4", "lret", "lretl", "lretw", "lret $8", "lretw $8", "leave", "leavew",
    "enter $0x10,$0", "enterw $4,$1", "push $1", "push $0x1000", "pushw $1", "pushl $-1",
    "push $L0", "push (%eax)", "pushw (%eax)", "pop (%eax)", "popw 4(%esp)",
    "push %ds", "pushw %fs", "pushl %gs", "pop %es", "popw %ss", "pop %fs",
    "jmp *%eax", "jmp *(%eax)", "jmpw *%ax", "jmp *L0(,%eax,4)", "call *%ebx",
    "call *0x10(%ebp)", "callw *(%esi)", "calll *%eax", "jmpl *%eax",
    "ljmp *(%eax)", "ljmpw *4(%ebx)", "lcall *(%ecx)", "lcallw *(%edx)",
    "ljmp $0x10,$0x20", "lcall $0x8,$L0", "jmp $0x10,$0x20", "call $0x10,$L1",
    "ljmpw $0x10,$0x20", "lcallw $0x18,$0x1234",
    "mov %ds,%eax", "mov %ds,%ax", "mov %ax,%ds", "mov %eax,%ds", "movw %ds,(%eax)",
    "mov %ds,(%eax)", "movw (%eax),%ss", "mov %eax,%cs", "movl %ds,%eax", "movw %es,%ax",
    "sldt %eax", "sldt %ax", "sldt (%eax)", "str %ecx", "str %dx", "smsw %eax", "smsw %ax",
    "smsw (%eax)", "lldt %ax", "lldt (%eax)", "ltr %bx", "verr %ax", "verw (%eax)",
    "lmsw %ax", "lar %ax,%eax", "lar %eax,%eax", "lar (%eax),%cx", "lsl %bx,%ecx",
    "lsl (%eax),%ax", "larw %ax,%ax", "arpl %ax,(%ebx)", "arpl %cx,%dx",
    "lgdt (%eax)", "lgdtw (%eax)", "lgdtl 0x10(%ebx)", "sgdt (%eax)", "sidtw (%eax)",
    "lidt L0", "invlpg (%eax)", "invlpg 0x1000", "bound %eax,(%ebx)", "bound %ax,(%ebx)",
    "les (%eax),%ecx", "lds 4(%esp),%ax", "lss 20+4(%esp),%esp", "lfs (%eax),%esi",
    "lgs L0,%edi", "lesw (%eax),%ax",
    "movl %eax,0x1234", "movb 0x1234,%al", "movw %ax,%fs:0x10", "mov 0x12345678,%eax",
    "movl %eax,%ss:0x4", "mov L0,%eax", "mov %eax,L1", "movl 0x1234(%eax),%eax",
    "in $0x60,%al", "in $0x60,%ax", "in $0x60,%eax", "inb $0x60", "inw $0x60", "inl $0x60",
    "in (%dx),%al", "in %dx,%eax", "inb (%dx)", "inw %dx", "out %al,$0x80",
    "out %ax,$0x80", "out %eax,(%dx)", "outb $0x80", "outl (%dx)", "outw %ax,%dx",
    "nop", "hlt", "cmc", "clc", "stc", "cli", "sti", "cld", "std", "sahf", "lahf",
    "clts", "invd", "wbinvd", "ud2", "wrmsr", "rdtsc", "rdmsr", "sysenter", "sysexit",
    "cpuid", "daa", "das", "aaa", "aas", "bswap %eax", "bswap %edi",
    "mov %cr0,%eax", "movl %cr0,%eax", "mov %eax,%cr3", "mov %db7,%eax", "mov %dr7,%eax",
    "mov %tr6,%eax", "mov %ecx,%tr7", "mov %esi,%db0",
    "addl $L1-L0,%eax", "addl $FWD,%eax", "addl $(L1-L0),(%eax)",
    "movl $.,%eax", "movl $1f,%eax", "jmp .", "jmp .+2", "jmp 1f", "jmp 2f", "call 1f",
    "call L0", "call far_end", "jmp far_end",
    "addl $0xffffffff,%eax", "addl $-129,%ecx", "addw $0xff80,%cx", "addb $-1,%cl",
    "movl -128(%eax),%ecx", "movl 0xffffffff(%eax),%ecx", "movl 0xffffff80(%eax),%ecx",
    "movl 0xffff(%bx),%eax", "movl 0x8000(%bx),%eax", "lea (%eax,%eax,2),%eax",
    "lea 0x0(,%eax,4),%eax", "leal 4(%esp,%eax,8),%ecx",
    "movl TI_flags(%ebp),%ecx", "testw $_TIF_ALLWORK_MASK,%cx",
    "testb $(_TIF_SYSCALL_TRACE|_TIF_SYSCALL_AUDIT),%cl", "cmpl $0,TI_flags(%ebp)",
    "movl %esp, %eax", "addl $4, %esp", "subl $8, %esp", "pushl $-1",
    "cmpl $(nr_syscalls),%eax", "call *sys_call_table(,%eax,4)",
    "movl %ss:VIF,%eax", "movl $0x200, %ss:VIF", "andl $0x200, %eax",
]

#: Lines after the corpus: the targets used above.
TRAILER = [
    "1: nop", "2: nop", ".fill 300,1,0x90", "far_end: nop",
    ".equ FWD, 0x44", ".equ TI_flags, 8", ".equ _TIF_ALLWORK_MASK, 0xfeff",
    ".equ _TIF_SYSCALL_TRACE, 1", ".equ _TIF_SYSCALL_AUDIT, 0x80", ".equ nr_syscalls, 300",
    ".equ sys_call_table, 0xc0100000", ".equ VIF, 0xfffff000",
]
#: Lines before the corpus (constants known before use take the short forms).
HEADER = [".equ TI_flags_early, 8"]


@functools.cache
def corpus_lines() -> list[tuple[str, str]]:
    """Every generated line with the key of the form it was written for."""
    _WINDOW[0] = 0
    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    forms = list(isa.FORMS) + _x87_forms()
    for form in forms:
        for text in form_lines(form):
            if text not in seen:
                seen.add(text)
                out.append((text, form.key))
    for text in EXTRA:
        if text not in seen:
            seen.add(text)
            out.append((text, "extra"))
    return out


def _x87_forms() -> list[isa.Form]:
    try:
        from vmi.cpu import x87
    except ImportError:  # pragma: no cover - before the x87 table exists
        return []
    return list(getattr(x87, "FORMS", []))


def build_source(lines: list[str], bits: int = 32, labels: bool = True) -> str:
    """A source with one label per line: ``L<k>:`` before line ``k``."""
    body = [".code16" if bits == 16 else ".code32", *HEADER]
    for k, text in enumerate(lines):
        body.append(f"L{k}: {text}" if labels else text)
    body.append(f"L{len(lines)}:")
    body += TRAILER
    return "\n".join(body) + "\n"


#: Line number of corpus line 0 in ``build_source``.
FIRST_LINE = 2 + len(HEADER)


def by_corpus_line(numbers: dict[int, str], lines: list[str]) -> dict[str, str]:
    """Map source line numbers of a ``build_source`` text to corpus lines."""
    out = {}
    for number, message in numbers.items():
        k = number - FIRST_LINE
        if 0 <= k < len(lines):
            out.setdefault(lines[k], message)
    return out


# ---------------------------------------------------------------------------
# vmi.asm


@dataclass
class VmiCorpus:
    """The corpus as vmi.asm sees it: the lines it accepts, assembled together."""

    bits: int
    lines: list[str]
    program: object
    rejected: dict[str, str]  # line -> vmi.asm's error message

    def bytes_of(self, k: int) -> bytes:
        symbols = self.program.symbols  # type: ignore[attr-defined]
        image = self.program.image  # type: ignore[attr-defined]
        return image[symbols[f"L{k}"]:symbols[f"L{k + 1}"]]


def vmi_corpus(lines: list[str], bits: int) -> VmiCorpus:
    """Assemble ``lines`` with vmi.asm, dropping (and recording) the lines it rejects.

    Errors found while reading come first; errors found at layout (a rel8 out of
    range) only once reading is clean, so this repeats until nothing fails.
    """
    from vmi.asm import AsmError
    from vmi.asm.assembler import Assembler

    rejected: dict[str, str] = {}
    current = list(lines)
    for _ in range(5):
        try:
            program = Assembler(0, max_errors=10**6).assemble(
                [(build_source(current, bits), "<corpus>", Path("."))])
        except AsmError as failure:
            bad = {}
            for diagnostic in failure.errors:
                k = diagnostic.location.line - FIRST_LINE
                if 0 <= k < len(current):
                    bad.setdefault(current[k], diagnostic.message)
                else:
                    raise
            rejected.update(bad)
            current = [t for t in current if t not in bad]
            continue
        return VmiCorpus(bits, current, program, rejected)
    raise AssertionError("the corpus did not settle")


@functools.cache
def assembled_corpus(bits: int) -> VmiCorpus:
    """The whole generated corpus assembled by vmi.asm in 32- or 16-bit code (cached)."""
    return vmi_corpus([text for text, _key in corpus_lines()], bits)
