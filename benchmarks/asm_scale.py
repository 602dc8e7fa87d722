"""The assembler on a large source: ``vmi asm`` against GNU as (issue 17).

Writes a source of ordinary lines (register, immediate and memory
instructions, a label every 16 lines and a backward ``jne`` to it), assembles
it with ``as --32`` and with ``python -m vmi asm``, each in its own process,
and prints for both the wall time and the CPU time (user + system of the
child: on a shared machine the wall time also measures the neighbours), the
ratio of the CPU times, and whether the two ``.text`` images are identical.

Target (issue 17, CPython 3.11, this 2-core machine): a 50 MB source within
10x of GNU as (CPU time). The unit test ``tests/asm/test_limits.py`` checks
only that the time grows linearly with the size, never an absolute time.

    python benchmarks/asm_scale.py [--mb 50] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_RATIO = 10.0

#: The lines the source repeats (GNU as and vmi.asm both take them).
BODY = ("\tmovl $1,%eax", "\taddl %ebx,%ecx", "\tmovl 4(%esp),%edx", "\tpushl %ebp",
        "\tmovl %esp,%ebp", "\txorl %eax,%eax", "\tleal 8(%ebx,%esi,4),%edi",
        "\tcmpl $0x10,%eax", "\ttestb $1,%al", "\tpopl %ebp", "\tnop", "\tmovb %al,%cl",
        "\tincl %esi")


def ordinary_source(size: int) -> str:
    """About ``size`` bytes of assembly: ``BODY`` lines, with a label every 16
    lines and a ``jne`` back to it as the 16th (labels are unique)."""
    out: list[str] = []
    total = labels = k = 0
    while total < size:
        if k % 16 == 0:
            line = f"f{labels}:"
            labels += 1
        elif k % 16 == 15:
            line = f"\tjne f{labels - 1}"
        else:
            line = BODY[k % len(BODY)]
        out.append(line)
        total += len(line) + 1
        k += 1
    return "\n".join(out) + "\n"


def timed(command: list[str], **kwargs: object) -> tuple[float, float]:
    """Run ``command``; its wall time and CPU time (user + system) in seconds."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, **kwargs)  # type: ignore[call-overload]
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=50.0, help="source size in MB (10**6 bytes)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    if shutil.which("as") is None or shutil.which("objcopy") is None:
        print("GNU as and objcopy (binutils) are needed", file=sys.stderr)
        return 2
    root = Path(__file__).resolve().parent.parent
    env = dict(os.environ, PYTHONPATH=str(root) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "big.S"
        source.write_text(ordinary_source(int(args.mb * 1_000_000)))
        size = source.stat().st_size
        gnu_wall, gnu_cpu = timed(["as", "--32", str(source), "-o", str(Path(tmp) / "big.o")])
        vmi_wall, vmi_cpu = timed([sys.executable, "-m", "vmi", "asm", str(source), "-o",
                                   str(Path(tmp) / "big.bin")], env=env)
        subprocess.run(["objcopy", "-O", "binary", "-j", ".text", str(Path(tmp) / "big.o"),
                        str(Path(tmp) / "gnu.bin")], check=True)
        same = (Path(tmp) / "gnu.bin").read_bytes() == (Path(tmp) / "big.bin").read_bytes()
    ratio = vmi_cpu / gnu_cpu if gnu_cpu else float("inf")
    figures = {"source_bytes": size, "gnu_wall_s": round(gnu_wall, 2),
               "gnu_cpu_s": round(gnu_cpu, 2), "vmi_wall_s": round(vmi_wall, 2),
               "vmi_cpu_s": round(vmi_cpu, 2), "cpu_ratio": round(ratio, 1),
               "target_ratio": TARGET_RATIO, "met": ratio <= TARGET_RATIO,
               "same_bytes": same}
    if args.json:
        print(json.dumps(figures))
    else:
        print(f"source: {size / 1e6:.1f} MB of ordinary lines")
        print(f"GNU as --32: {gnu_wall:8.2f} s wall {gnu_cpu:8.2f} s CPU")
        print(f"vmi asm:     {vmi_wall:8.2f} s wall {vmi_cpu:8.2f} s CPU")
        print(f"ratio (CPU): {ratio:.1f}x (target <= {TARGET_RATIO:.0f}x: "
              f"{'met' if ratio <= TARGET_RATIO else 'NOT met'}); "
              f"same .text bytes: {'yes' if same else 'NO'}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
