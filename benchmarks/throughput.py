"""Instruction throughput of vmi against Unicorn with a Python per-instruction hook.

Both run the same two loops from the same state in the same process:

* ALU: the ten-ALU-instruction loop of reference/oracles-and-speed.md §4
  (add adc xor sub and or inc shl mov dec + jnz);
* memory: push/pop/call/ret, movs and mov through memory.

Prints M instructions/s for each engine and the ratio vmi / Unicorn, and checks
that both engines end with the same registers (a benchmark of a wrong
interpreter is worthless). Targets (issue 2, CPython 3.11, 2 cores): ALU >= 2.0
M/s and >= 0.8 of Unicorn-with-hook; memory >= 1.0 M/s.

    python benchmarks/throughput.py [--iterations N] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

ALU_LOOP = bytes.fromhex(
    "01d8"  # add %ebx,%eax
    "11f2"  # adc %esi,%edx
    "31c7"  # xor %eax,%edi
    "83eb03"  # sub $3,%ebx
    "81e6ffffff7f"  # and $0x7fffffff,%esi
    "83ca01"  # or $1,%edx
    "40"  # inc %eax
    "d1e7"  # shl %edi
    "89c5"  # mov %eax,%ebp
    "49"  # dec %ecx
    "75e6"  # jne top
)
ALU_PER_ITERATION = 11

MEMORY_LOOP = bytes.fromhex(
    "50"  # top: push %eax
    "53"  # push %ebx
    "e817000000"  # call f
    "5b"  # pop %ebx
    "58"  # pop %eax
    "a300900000"  # mov %eax,0x9000
    "a100900000"  # mov 0x9000,%eax
    "a5"  # movsl %ds:(%esi),%es:(%edi)
    "8b5604"  # mov 0x4(%esi),%edx
    "895708"  # mov %edx,0x8(%edi)
    "4975e3"  # dec %ecx ; jne top
    "f4"  # hlt (not reached)
    "c3"  # f: ret
)
MEMORY_PER_ITERATION = 13
CODE = 0x1000


def _initial(iterations: int) -> dict[str, int]:
    return {"eax": 0x12345678, "ebx": 0x9ABCDEF0, "ecx": iterations, "edx": 0,
            "esi": 0x10000, "edi": 0x20000, "esp": 0x8000, "ebp": 0}


def run_vmi(code: bytes, iterations: int, steps: int) -> tuple[float, dict[str, int]]:
    from vmi.cpu import CPU

    cpu = CPU.flat()
    cpu.mem.load(CODE, code)
    for name, value in _initial(iterations).items():
        setattr(cpu.regs, name, value)
    cpu.eip = CODE
    start = time.perf_counter()
    done = cpu.run(steps)
    elapsed = time.perf_counter() - start
    assert done == steps, f"vmi retired {done} of {steps}"
    return elapsed, cpu.regs.as_dict()


def run_unicorn(code: bytes, iterations: int, steps: int) -> tuple[float, dict[str, int]]:
    from unicorn import UC_ARCH_X86, UC_HOOK_CODE, UC_MODE_32, Uc
    from unicorn import x86_const as ux

    uc = Uc(UC_ARCH_X86, UC_MODE_32)
    uc.mem_map(0, 16 << 20)
    uc.mem_write(CODE, code)
    for name, value in _initial(iterations).items():
        uc.reg_write(getattr(ux, f"UC_X86_REG_{name.upper()}"), value)
    count = [0]

    def hook(_uc, _address, _size, _data):
        count[0] += 1

    uc.hook_add(UC_HOOK_CODE, hook)
    start = time.perf_counter()
    uc.emu_start(CODE, 0xFFFFFFFF, count=steps)
    elapsed = time.perf_counter() - start
    regs = {n: uc.reg_read(getattr(ux, f"UC_X86_REG_{n.upper()}")) for n in _initial(0)}
    regs["eip"] = uc.reg_read(ux.UC_X86_REG_EIP)
    return elapsed, regs


def measure(name: str, code: bytes, per_iteration: int, iterations: int) -> dict:
    steps = iterations * per_iteration
    vmi_time, vmi_regs = run_vmi(code, iterations, steps)
    try:
        uc_time, uc_regs = run_unicorn(code, iterations, steps)
    except ImportError:
        uc_time, uc_regs = None, None
    result = {
        "loop": name,
        "instructions": steps,
        "vmi_mips": steps / vmi_time / 1e6,
        "unicorn_hook_mips": None if uc_time is None else steps / uc_time / 1e6,
    }
    if uc_regs is not None:
        result["ratio"] = result["vmi_mips"] / result["unicorn_hook_mips"]
        differ = {k: (vmi_regs[k], uc_regs[k]) for k in uc_regs if vmi_regs.get(k) != uc_regs[k]}
        result["same_final_registers"] = not differ
        if differ:
            result["differences"] = {k: [f"{a:#x}", f"{b:#x}"] for k, (a, b) in differ.items()}
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=100_000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = [
        measure("alu", ALU_LOOP, ALU_PER_ITERATION, args.iterations),
        measure("memory", MEMORY_LOOP, MEMORY_PER_ITERATION, args.iterations),
    ]
    if args.json:
        print(json.dumps(results))
    else:
        targets = {"alu": 2.0, "memory": 1.0}
        for r in results:
            uc = r["unicorn_hook_mips"]
            print(f"{r['loop']:7} vmi {r['vmi_mips']:5.2f} M instr/s"
                  f" (target {targets[r['loop']]:.1f})"
                  + ("" if uc is None else f"   unicorn+hook {uc:5.2f} M/s   ratio {r['ratio']:.2f}"
                     f"   registers {'agree' if r['same_final_registers'] else 'DIFFER'}"))
            if r.get("differences"):
                print("        differences:", r["differences"])
    return 0 if all(r.get("same_final_registers", True) for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
