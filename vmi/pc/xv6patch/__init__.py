"""vmi's own change to xv6: the seed's hook sites in a kernel this project did not
write (issue 20; docs/pc.md, "xv6's hook sites").

``vmi xv6 build SRC --macros native|vmi|naive`` applies it to the build's copy of
the source, never to ``SRC``. The change is the same for every macro set; only
the two files it adds differ:

* ``x86.h``: ``#include "vmi.h"`` just above ``readeflags`` (below ``stosb``,
  the one x86.h function xv6's user library uses, so the user programs and their
  debug line tables stay byte for byte stock's); ``cli()``, ``sti()`` and
  ``readeflags()`` (the EFLAGS read, which pushcli/popcli, mycpu and sched use)
  take their instruction text from ``vmi.h``; ``readeflags`` returns in
  ``%eax`` (``"=a"``), since the VMI call GetInterruptMask returns there and the
  patcher expects ``pushfl; popl %eax``.
* ``trapasm.S``: trapret's ``iret`` becomes the ``IRET`` hook of the GNU as macro
  file ``vmi-hooks.S`` (``.include``\\ d at the top).
* ``main.c``: ``vmiinit()``, the ROM probe and Init call (``probe.c`` here), run
  first thing in ``main()`` on the boot CPU and in ``mpenter()`` on each AP.
* ``kernel.ld``: an output section ``.vmi.annotation`` (kept, between .rodata and
  .stab) bracketed by ``__vmi_annotation_start``/``__vmi_annotation_end``, so the
  records are in the kernel image and a monitor can find them by symbol (GNU ld's
  automatic ``__start_SECNAME`` needs a section name that is a C identifier,
  which ``.vmi.annotation``, the bundled kernel's name, is not).
* added: ``vmi.h`` (C: the inline-asm text of each hook) and ``vmi-hooks.S``
  (assembler: the macro set, taken verbatim from ``vmi/asm/macros``, the files the
  bundled kernel is assembled with).

Why a Python applier and not a ``.patch`` for ``patch(1)``: each edit is one exact
text that must occur exactly once in its file, all are checked against ``SRC``
before anything is written, and a tree they do not fit is refused with one line
naming the file; ``patch`` would apply with fuzz or offsets, write ``.orig`` and
``.rej`` files, and is one more host tool to require.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from attrs import frozen

from vmi.asm import macro_source
from vmi.hypervisor import layout
from vmi.hypervisor.patcher import CALL_LENGTH

#: The ``--macros`` choices: ``stock`` (no patch: xv6 as it is), ``native`` (the
#: patch, each hook the plain instruction), ``vmi`` (each hook an annotated site)
#: and ``naive`` (the hooks inline stores to the virtual IF, no sites).
MACRO_SETS = ("stock", "native", "vmi", "naive")
#: The files the patch adds to the build tree.
HEADER = "vmi.h"
ASM_HOOKS = "vmi-hooks.S"


class Xv6PatchError(Exception):
    """The source tree is not the xv6 the patch was written for (one line naming
    the file and the text it lacks)."""


@frozen
class Edit:
    """Replace ``before`` (which must occur exactly once in ``path``) by ``after``."""

    path: str
    before: str
    after: str


def _probe() -> str:
    return resources.files("vmi.pc.xv6patch").joinpath("probe.c").read_text(encoding="ascii")


def edits() -> tuple[Edit, ...]:
    """The edits of the patch, in the order they are applied."""
    return (
        Edit("x86.h", "static inline uint\nreadeflags(void)\n",
             f'#include "{HEADER}"  // vmi: the hook sites of cli, sti and readeflags\n\n'
             "static inline uint\nreadeflags(void)\n"),
        Edit("x86.h", '  asm volatile("pushfl; popl %0" : "=r" (eflags));\n',
             '  asm volatile(VMI_READEFLAGS : "=a" (eflags) : : "cc");\n'),
        Edit("x86.h", '  asm volatile("cli");\n', '  asm volatile(VMI_CLI : : : "cc");\n'),
        Edit("x86.h", '  asm volatile("sti");\n', '  asm volatile(VMI_STI : : : "cc");\n'),
        Edit("trapasm.S", '#include "mmu.h"\n',
             '#include "mmu.h"\n'
             f'.include "{ASM_HOOKS}"  # vmi: the IRET hook\n'),
        Edit("trapasm.S", "  addl $0x8, %esp  # trapno and errcode\n  iret\n",
             "  addl $0x8, %esp  # trapno and errcode\n  IRET\n"),
        Edit("main.c", "static void startothers(void);\n",
             "static void startothers(void);\nstatic int vmiinit(void);\n"),
        Edit("main.c", "main(void)\n{\n  kinit1(end, P2V(4*1024*1024)); // phys page allocator\n",
             "main(void)\n{\n  vmiinit();       // vmi: the VMI ROM's Init, if there is one\n"
             "  kinit1(end, P2V(4*1024*1024)); // phys page allocator\n"),
        Edit("main.c", "mpenter(void)\n{\n  switchkvm();\n",
             "mpenter(void)\n{\n  vmiinit();       // vmi: before any hook site, on entrypgdir\n"
             "  switchkvm();\n"),
        Edit("main.c", "pde_t entrypgdir[];  // For entry.S\n",
             "pde_t entrypgdir[];  // For entry.S\n" + _probe()),
        Edit("kernel.ld", "\t.rodata : {\n\t\t*(.rodata .rodata.* .gnu.linkonce.r.*)\n\t}\n",
             "\t.rodata : {\n\t\t*(.rodata .rodata.* .gnu.linkonce.r.*)\n\t}\n\n"
             "\t/* vmi: the hook-site records (8 bytes each), kept and found by symbol */\n"
             "\t.vmi.annotation : {\n"
             "\t\t__vmi_annotation_start = .;\n"
             "\t\tKEEP(*(.vmi.annotation))\n"
             "\t\t__vmi_annotation_end = .;\n"
             "\t}\n"),
    )


def _c_string(text: str) -> str:
    """``text`` as a C string literal for an extended ``asm`` statement: ``%`` doubled
    (the statements have operand lists), one assembler line per ``\\n``."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%")
    return '"' + escaped.replace("\n", "\\n").replace("\t", "\\t") + '"'


def _site(call: int, native: str) -> str:
    """The assembler text of one ``vmi`` hook site, as vmi/asm/macros/vmi.S emits it:
    ``native``, prefix-nop padding (66 .. 66 90) to the site length, and the record
    ``.long site; .byte call, site_length, native_length, 0`` in .vmi.annotation.
    Numeric local labels, so each inlined copy is its own site."""
    return (f"661:\n\t{native}\n662:\n"
            f"\t.fill {CALL_LENGTH} - (662b - 661b) - 1, 1, 0x66\n"
            "\t.byte 0x90\n663:\n"
            '\t.pushsection .vmi.annotation, "a"\n'
            "\t.long 661b\n"
            f"\t.byte {call}, 663b - 661b, 662b - 661b, 0\n"
            "\t.popsection")


def header_text(macros: str) -> str:
    """``vmi.h`` for macro set ``macros``: ``VMI_CLI``, ``VMI_STI`` and
    ``VMI_READEFLAGS`` (result in ``%eax``), the inline-asm text of each hook."""
    vif = f"%ss:{layout.VMI_VIF:#x}"
    if macros == "native":
        hooks = {"CLI": "cli", "STI": "sti", "READEFLAGS": "pushfl; popl %eax"}
        what = "the plain instructions (vmi/asm/macros/native.S)"
    elif macros == "vmi":
        hooks = {"CLI": _site(layout.CALL_DISABLE_INTERRUPTS, "cli"),
                 "STI": _site(layout.CALL_ENABLE_INTERRUPTS, "sti"),
                 "READEFLAGS": _site(layout.CALL_GET_INTERRUPT_MASK, "pushfl; popl %eax")}
        what = ("annotated sites (vmi/asm/macros/vmi.S): DisableInterrupts "
                f"{layout.CALL_DISABLE_INTERRUPTS}, EnableInterrupts "
                f"{layout.CALL_ENABLE_INTERRUPTS}, GetInterruptMask "
                f"{layout.CALL_GET_INTERRUPT_MASK}")
    elif macros == "naive":
        hooks = {"CLI": f"movl $0, {vif}", "STI": f"movl $0x200, {vif}",
                 "READEFLAGS": (f"pushfl; popl %eax; andl $~0x200, %eax; "
                                f"orl {vif}, %eax")}
        what = (f"stores to and a read of the virtual IF at {layout.VMI_VIF:#x} "
                "(vmi/asm/macros/naive.S)")
    else:
        raise ValueError(f"no hooks for macro set {macros!r}")
    lines = ["// Written by vmi (vmi/pc/xv6patch): the hook sites of x86.h,",
             f"// macro set {macros!r}: {what}.", "#ifndef VMI_H", "#define VMI_H"]
    for name, text in hooks.items():
        lines.append(f"#define VMI_{name} {_c_string(text)}")
    lines.append("#endif")
    return "\n".join(lines) + "\n"


def asm_hooks_text(macros: str) -> str:
    """``vmi-hooks.S`` for macro set ``macros``: vmi's own GNU as macro file,
    with ``native-system.S`` put in place of its ``.include`` (GNU as looks for an
    included file in the current directory, not next to the includer) and, for
    ``naive``, the virtual IF and pending word the monitor publishes."""
    if macros not in ("native", "vmi", "naive"):
        raise ValueError(f"no hooks for macro set {macros!r}")
    text, path = macro_source(macros)
    system = Path(path).with_name("native-system.S").read_text(encoding="utf-8")
    text = text.replace('.include "native-system.S"\n', system)
    head = [f"# Written by vmi (vmi/pc/xv6patch): vmi/asm/macros/{macros}.S"]
    if macros == "naive":
        head += [f".set VMI_VIF, {layout.VMI_VIF:#x}",
                 f".set VMI_PENDING, {layout.VMI_PENDING:#x}"]
    return "\n".join(head) + "\n" + text


def plan(source: Path, macros: str) -> dict[str, str]:
    """The build tree's files the patch writes, by name: each edited file's new
    text and the added files. Reads ``source`` only; ``Xv6PatchError`` naming the
    first file an edit does not fit (missing text, or text found more than once)."""
    if macros not in MACRO_SETS:
        raise ValueError(f"unknown macro set {macros!r} (choose one of {', '.join(MACRO_SETS)})")
    if macros == "stock":
        return {}
    texts: dict[str, str] = {}
    for edit in edits():
        if edit.path not in texts:
            try:
                texts[edit.path] = (source / edit.path).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as error:
                cause = getattr(error, "strerror", None) or error
                raise Xv6PatchError(f"{source / edit.path}: cannot read it for vmi's patch: "
                                    f"{cause}") from None
        count = texts[edit.path].count(edit.before)
        if count != 1:
            first = edit.before.strip().splitlines()[0 if count else -1].strip()
            how = "does not hold" if count == 0 else f"holds {count} times"
            raise Xv6PatchError(f"{source / edit.path}: {how} the text vmi's --macros "
                                f"{macros} patch changes ({first!r}); the patch is written "
                                "for mit-pdos/xv6-public at eeb7b415")
        texts[edit.path] = texts[edit.path].replace(edit.before, edit.after)
    for name in (HEADER, ASM_HOOKS):
        if (source / name).exists():
            raise Xv6PatchError(f"{source / name}: already there, and vmi's patch adds a "
                                "file of that name")
    texts[HEADER] = header_text(macros)
    texts[ASM_HOOKS] = asm_hooks_text(macros)
    return texts


def apply(texts: dict[str, str], build: Path) -> None:
    """Write ``plan``'s ``texts`` into the build tree ``build``."""
    for name, text in texts.items():
        (build / name).write_text(text, encoding="utf-8")
