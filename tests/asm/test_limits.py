"""Hostile input (issue 17): every bomb ends in one located error naming the limit,
or assembles, in bounded memory and time; never a traceback.

The bombs that ate the machine before run ``vmi asm`` in a child process with
an address-space limit and a timeout, so that a regression fails the test
instead of taking the machine with it.
"""

from __future__ import annotations

import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from vmi.asm import AsmError, assemble
from vmi.asm import assembler as asm_module
from vmi.asm.expr import MAX_EXPR_DEPTH
from vmi.cli import main
from vmi.files import write_atomically

ROOT = Path(__file__).resolve().parents[2]
#: Address space of a bomb's process: far more than an honest run needs (the
#: interpreter and vmi take about 100 MiB), far less than a runaway read.
MEMORY_LIMIT = 1 << 30
TIMEOUT = 120

LOCATED = re.compile(r"^(?P<file>[^:\n]+):(?P<line>\d+):(?P<col>\d+): error: (?P<message>.*)$",
                     re.M)


def _limit_memory() -> None:  # runs in the child before exec
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def bomb(tmp_path: Path, source: str, *extra: str) -> subprocess.CompletedProcess[str]:
    """``vmi asm`` on ``source`` (written to tmp_path/bomb.S) in a bounded child."""
    path = tmp_path / "bomb.S"
    path.write_text(source)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "vmi", "asm", str(path), "-o",
                           str(tmp_path / "bomb.bin"), *extra],
                          capture_output=True, text=True, timeout=TIMEOUT, cwd=tmp_path,
                          env=env, preexec_fn=_limit_memory)


def refused(result: subprocess.CompletedProcess[str], line: int, pattern: str) -> str:
    """Check that ``result`` failed with one located error at ``line`` matching ``pattern``."""
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert result.returncode == 1, (result.returncode, result.stderr[-3000:])
    errors = list(LOCATED.finditer(result.stderr))
    assert len(errors) == 1, result.stderr[-3000:]
    assert errors[0]["file"].endswith("bomb.S") and int(errors[0]["line"]) == line
    assert re.search(pattern, errors[0]["message"]), errors[0]["message"]
    return errors[0]["message"]


# -- files ---------------------------------------------------------------------


def test_incbin_of_a_device_is_refused(tmp_path: Path) -> None:
    result = bomb(tmp_path, 'nop\n.incbin "/dev/urandom", 0, 100\n')
    refused(result, 2, r"'/dev/urandom'.*character device, not a regular file")
    assert not (tmp_path / "bomb.bin").exists()


def test_include_of_a_device_is_refused(tmp_path: Path) -> None:
    refused(bomb(tmp_path, '.include "/dev/zero"\n'),
            1, r"cannot include '/dev/zero'.*character device")


def test_include_of_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe")
    refused(bomb(tmp_path, '.include "pipe"\n'), 1, r"'pipe'.*FIFO")


def test_incbin_of_a_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir()
    refused(bomb(tmp_path, '.incbin "dir"\n'), 1, r"'dir'.*directory")


def test_incbin_reads_only_the_bytes_asked_for(tmp_path: Path) -> None:
    # A sparse 4 GiB file: reading it whole cannot fit in the child's 1 GiB.
    with open(tmp_path / "huge.bin", "wb") as handle:
        handle.truncate(4 << 30)
        handle.seek(3 << 30)
        handle.write(b"\x12\x34\x56\x78")
    result = bomb(tmp_path, '.incbin "huge.bin", 3 << 30, 4\n.incbin "huge.bin", 3 << 30, 2\n')
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "bomb.bin").read_bytes() == b"\x12\x34\x56\x78\x12\x34"


def test_incbin_of_a_whole_file_larger_than_the_output_limit_is_refused(tmp_path: Path) -> None:
    with open(tmp_path / "huge.bin", "wb") as handle:
        handle.truncate(4 << 30)
    refused(bomb(tmp_path, '.incbin "huge.bin"\n'), 1, r"64 MiB")


def test_include_larger_than_its_limit_is_refused(tmp_path: Path) -> None:
    with open(tmp_path / "big.S", "wb") as handle:
        handle.truncate(asm_module.MAX_INCLUDE_SIZE + 1)
    message = refused(bomb(tmp_path, '.include "big.S"\n'), 1, r"'big\.S'")
    assert f"{asm_module.MAX_INCLUDE_SIZE >> 20} MiB" in message and "limit" in message


def test_incbin_range_outside_the_file(tmp_path: Path) -> None:
    (tmp_path / "small.bin").write_bytes(b"abcdefgh")
    program = assemble('.incbin "small.bin", 2, 3\n.incbin "small.bin", 6\n', macros=None,
                       filename=str(tmp_path / "x.S"))
    assert program.image == b"cdegh"
    for tail in (", 9", ", 2, 7", ", -1", ", 0, -1"):
        with pytest.raises(AsmError) as failure:
            assemble(f'.incbin "small.bin"{tail}\n', macros=None, filename=str(tmp_path / "x.S"))
        assert failure.value.errors[0].location.line == 1


# -- nesting and recursion -----------------------------------------------------------


@pytest.mark.parametrize("expression", [
    "(" * 100_000 + "1" + ")" * 100_000,
    "-" * 100_000 + "1",
    "~" * 100_000 + "1",
    "-(" * 100_000 + "1" + ")" * 100_000,
], ids=["parentheses", "minus", "not", "mixed"])
def test_deep_expressions_are_a_located_error(tmp_path: Path, expression: str) -> None:
    message = refused(bomb(tmp_path, f"nop\n.long {expression}\n"), 2,
                      f"nested more than {MAX_EXPR_DEPTH} deep")
    assert "limit" in message


def test_expressions_at_the_nesting_limit_and_long_operator_chains_assemble() -> None:
    deep = "(" * MAX_EXPR_DEPTH + "7" + ")" * MAX_EXPR_DEPTH
    minus = "-" * (MAX_EXPR_DEPTH - 1) + "(5)"
    chain = "1" + "+1" * 100_000
    down = chain.replace("+", "-")
    program = assemble(f".long {deep}\n.long {minus}\n.long {chain}\n.long {down}\n",
                       macros=None)
    assert program.image == (7).to_bytes(4, "little") + (-5 & 0xFFFFFFFF).to_bytes(4, "little") \
        + (100_001).to_bytes(4, "little") + (-99_999 & 0xFFFFFFFF).to_bytes(4, "little")


def test_a_long_chain_of_symbols_defined_by_one_another_is_evaluated_once_each() -> None:
    # Each symbol depends on the previous one and, through it, on x, defined last:
    # evaluated recursively this overflowed Python's stack, and it was quadratic.
    count = 20_000
    lines = ["a0 = x"] + [f"a{i} = a{i - 1} + 1" for i in range(1, count)]
    source = "\n".join(lines) + f"\n.long a{count - 1}\nx = 5\n"
    start = time.process_time()
    program = assemble(source, macros=None)
    elapsed = time.process_time() - start
    assert program.image == (5 + count - 1).to_bytes(4, "little")
    assert program.symbols[f"a{count - 1}"] == 5 + count - 1
    # Linear: the same chain twice as long takes about twice as long, not four times.
    lines = ["a0 = x"] + [f"a{i} = a{i - 1} + 1" for i in range(1, 2 * count)]
    start = time.process_time()
    assemble("\n".join(lines) + f"\n.long a{2 * count - 1}\nx = 5\n", macros=None)
    assert time.process_time() - start < 3.5 * elapsed + 0.5


def test_a_symbol_defined_in_terms_of_itself_through_a_chain() -> None:
    with pytest.raises(AsmError) as failure:
        assemble(".long a\na = b + 1\nb = c + 1\nc = a + 1\n", macros=None)
    assert any("defined in terms of itself" in e.message for e in failure.value.errors)


def test_deep_macro_recursion_is_a_located_error(tmp_path: Path) -> None:
    source = ".macro m n\n.if \\n\nm \\n+1\n.endif\n.endm\nnop\nm 1\n"
    message = refused(bomb(tmp_path, source), 3, r"macros nested too deeply")
    assert f"{asm_module.MAX_MACRO_DEPTH} levels (the limit)" in message


def test_deep_if_nesting_assembles(tmp_path: Path) -> None:
    depth = 100_000
    result = bomb(tmp_path, ".if 1\n" * depth + "nop\n" + ".endif\n" * depth)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "bomb.bin").read_bytes() == b"\x90"


def test_include_nesting_is_a_located_error(tmp_path: Path) -> None:
    message = refused(bomb(tmp_path, 'nop\n.include "bomb.S"\n'), 2, r"\.include nested")
    assert f"{asm_module.MAX_INCLUDE_DEPTH} files open at once (the limit)" in message


# -- repetition and size -----------------------------------------------------------------


def test_nested_rept_counts_multiply(tmp_path: Path) -> None:
    source = ".rept 1000\n.rept 1000\n.rept 1000\nnop\n.endr\n.endr\n.endr\n"
    message = refused(bomb(tmp_path, source), 3, r"1000000000 copies")
    assert "(the limit)" in message


def test_nested_irp_counts_multiply() -> None:
    values = ",".join(["1"] * 1001)
    with pytest.raises(AsmError) as failure:
        assemble(f".irp a,{values}\n.irp b,{values}\n.byte 0\n.endr\n.endr\n", macros=None)
    (error,) = failure.value.errors
    assert error.location.line == 2 and "1002001 copies" in error.message


def test_rept_nesting_is_limited() -> None:
    depth = asm_module.MAX_REPT_DEPTH
    program = assemble(".rept 1\n" * depth + "nop\n" + ".endr\n" * depth, macros=None)
    assert program.image == b"\x90"
    with pytest.raises(AsmError) as failure:
        assemble(".rept 1\n" * 10_000 + "nop\n" + ".endr\n" * 10_000, macros=None)
    (error,) = failure.value.errors
    assert error.location.line == depth + 1
    assert f"more than {depth} levels (the limit)" in error.message


def test_repetitions_in_all_are_limited(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(asm_module, "MAX_REPETITIONS", 50)
    program = assemble(".rept 25\nnop\n.endr\n.rept 25\nnop\n.endr\n", macros=None)
    assert program.image == b"\x90" * 50
    with pytest.raises(AsmError) as failure:
        assemble(".rept 25\nnop\n.endr\n.rept 26\nnop\n.endr\n", macros=None)
    (error,) = failure.value.errors
    assert error.location.line == 4 and "more than 50 copies" in error.message


def test_expansion_trees_stop_at_the_statement_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    # A macro invoking itself twice: depth 40 stays under the depth limit, but
    # the tree has 2**40 leaves.
    monkeypatch.setattr(asm_module, "MAX_EXPANDED_STATEMENTS", 20_000)
    source = ".macro m n\n.if \\n\nm \\n-1\nm \\n-1\n.endif\n.endm\nm 40\n"
    with pytest.raises(AsmError) as failure:
        assemble(source, macros=None)
    (error,) = failure.value.errors
    assert "more than 20000 statements" in error.message and "(the limit)" in error.message


def test_output_size_is_limited(tmp_path: Path) -> None:
    message = refused(bomb(tmp_path, ".rept 100\n.space 1 << 20\n.endr\n"), 2,
                      r"output larger than 64 MiB \(the limit\)")
    assert message


def test_gaps_between_sections_count_toward_the_output_limit(tmp_path: Path) -> None:
    refused(bomb(tmp_path, "nop\n.data\n.balign 1 << 30\n.byte 1\n"), 4,
            r"output larger than 64 MiB \(the limit\)")


# -- the command line ------------------------------------------------------------------


def test_output_may_not_be_the_source(tmp_path: Path) -> None:
    source = tmp_path / "x.S"
    source.write_text("nop\n")
    link = tmp_path / "link.S"
    link.symlink_to(source)
    for target in (source, link, tmp_path / "." / "x.S"):
        result = CliRunner().invoke(main, ["asm", str(source), "-o", str(target)])
        assert result.exit_code != 0
        assert "source file" in result.output and "Traceback" not in result.output
        assert len(result.output.strip().splitlines()) == 1
        assert source.read_text() == "nop\n"


def test_a_source_that_is_not_a_regular_file_is_refused(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["asm", "/dev/zero", "-o", str(tmp_path / "z.bin")])
    assert result.exit_code != 0 and "not a regular file" in result.output
    assert not (tmp_path / "z.bin").exists()


def test_output_is_replaced_only_when_complete(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "out.bin"
    target.write_bytes(b"old image")

    def broken_fsync(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError):
        write_atomically(target, lambda out: out.write(b"new image"))
    assert target.read_bytes() == b"old image"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]
    source = tmp_path / "x.S"
    source.write_text("nop\n")
    result = CliRunner().invoke(main, ["asm", str(source), "-o", str(target)])
    assert result.exit_code != 0 and "No space left on device" in result.output
    assert target.read_bytes() == b"old image"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin", "x.S"]


# -- time -------------------------------------------------------------------------------------


def _ordinary(size: int) -> str:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from asm_scale import ordinary_source
    finally:
        sys.path.pop(0)
    return ordinary_source(size)


def _cpu_seconds(source: str) -> float:
    best = float("inf")
    for _ in range(2):
        start = time.process_time()
        assemble(source, macros=None)
        best = min(best, time.process_time() - start)
    return best


def test_time_grows_linearly_with_the_source() -> None:
    """1 MB takes about 4 times as long as 256 kB; quadratic work would take 16.
    No absolute time here: the target is benchmarks/asm_scale.py's."""
    small = _cpu_seconds(_ordinary(250_000))
    large = _cpu_seconds(_ordinary(1_000_000))
    assert large < 8 * small, (small, large)
