"""The persistent translation cache (vmi.cpu.codecache): what one process compiles,
the next rebuilds without decoding or compiling, with exactly the same results."""

import marshal
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vmi.cpu import CPU, codecache, codegen, core, ops

ROOT = Path(__file__).resolve().parents[2]

# Fibonacci(20) through a call and a conditional branch (tests/cpu/test_smoke.py).
FIBONACCI = bytes.fromhex(
    "bc00800000b91400000031c0bb0100000089c201d889d34975f750e801000000f4"
    "8b542404891500900000c20400"
)


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    """Point the process at an empty cache in ``tmp_path`` with no compiled code in
    memory (as a new process would start); everything is put back afterwards."""
    monkeypatch.setattr(codecache, "CACHE", codecache.TranslationCache(tmp_path))
    monkeypatch.setattr(core, "COMPILED", {})
    monkeypatch.setattr(codegen, "_MAKERS", {})
    return tmp_path


def _new_process(directory: Path, monkeypatch) -> codecache.TranslationCache:
    """What a new process sees: the file on disk, nothing in memory."""
    cache = codecache.TranslationCache(directory)
    monkeypatch.setattr(codecache, "CACHE", cache)
    monkeypatch.setattr(core, "COMPILED", {})
    monkeypatch.setattr(codegen, "_MAKERS", {})
    return cache


def _no_translation(monkeypatch) -> None:
    """Make compiling an instruction or a shape fail: only recipes may be used (a
    monitor emulating an instruction still decodes it, as it must)."""

    def refuse(*args, **kwargs):
        raise AssertionError("compiled although the cache holds the recipe")

    monkeypatch.setattr(ops, "compile_instruction", refuse)
    monkeypatch.setattr(codecache.TranslationCache, "code", _code_from_file_only)


def _code_from_file_only(self, source, filename):
    self._ensure_loaded()
    if source not in self.shapes:
        raise AssertionError(f"shape compiled although cached: {source[:60]!r}")
    return self.shapes[source]


def _fibonacci() -> CPU:
    cpu = CPU.flat()
    cpu.mem.load(0x1000, FIBONACCI)
    cpu.eip = 0x1000
    cpu.run(200)
    return cpu


def test_a_new_process_rebuilds_every_instruction_from_the_file(fresh_cache, monkeypatch):
    first = _fibonacci()
    assert codecache.CACHE.save()
    written = sorted(fresh_cache.glob("translations-*.marshal"))
    version = codecache.source_version()
    assert [path.name for path in written] == [f"translations-{version}.marshal"]

    cache = _new_process(fresh_cache, monkeypatch)
    _no_translation(monkeypatch)
    second = _fibonacci()
    assert second.halted and second.regs.eax == 6765 and second.mem.read32(0x9000) == 6765
    assert second.state() == first.state()
    assert cache.hits == 15  # every distinct instruction of the program, once
    assert not cache.save()  # nothing new to write


def test_the_bundled_workload_runs_the_same_from_recipes(fresh_cache, monkeypatch):
    """Every instruction of the native and VMI workloads, module-level constants
    (condition functions, load_segment, the CPUID leaves) included, comes back from
    the file and the kernel ends in exactly the same state."""
    from vmi.system import boot_system

    def run(mode):
        system = boot_system(mode)
        system.machine.run(10_000_000)
        assert system.guest.completed and not system.guest.check_failures()
        return [cpu.state() for cpu in system.machine.cpus], system.machine.memory.array.tobytes()

    before = {mode: run(mode) for mode in ("native", "vmi")}
    assert codecache.CACHE.save()
    remembered = len(codecache.CACHE.recipes)
    cache = _new_process(fresh_cache, monkeypatch)
    _no_translation(monkeypatch)
    after = {mode: run(mode) for mode in ("native", "vmi")}
    assert after == before
    assert cache.hits == remembered > 2000
    assert any(refs for _s, _c, refs, *_ in cache.recipes.values())  # references did round-trip


def test_a_damaged_file_is_ignored_and_replaced(fresh_cache, monkeypatch, capsys):
    path = codecache.CACHE.path
    path.write_bytes(b"\x00not marshal")
    cpu = _fibonacci()
    assert cpu.regs.eax == 6765 and codecache.CACHE.hits == 0
    assert codecache.CACHE.save()
    assert capsys.readouterr().err == (f"vmi: translation cache {path}: not a vmi translation "
                                       "file (its first bytes are not the magic); dropped, "
                                       "rebuilt as code runs\n")  # once, though read twice
    assert len(codecache.read_file(path)[1]) == 15
    # A file that passes its digest but holds a foreign entry (only a bug could write
    # one): the entry is a miss, not a crash.
    key = (fresh_cache / codecache.KEY_NAME).read_bytes()
    path.write_bytes(codecache.seal(key, path.name, marshal.dumps(
        {"shapes": {}, "recipes": {("x",): (1, 2)}})))
    cache = _new_process(fresh_cache, monkeypatch)
    assert cache.recipe(("x",)) is None
    assert _fibonacci().regs.eax == 6765
    assert capsys.readouterr().err == ""


def test_what_cannot_be_stored_is_not(fresh_cache):
    key = (b"\x90", 0, 32, 32)
    codecache.CACHE.remember(key, "def _make(f): ...", (lambda: 0,), 1, 1, 1, "nop")
    assert key not in codecache.CACHE.recipes
    codecache.CACHE.remember(key, "def _make(f): ...", (codecache.cache_files,), 1, 1, 1, "nop")
    assert codecache.CACHE.recipes[key][2] == ((0, "vmi.cpu.codecache", "cache_files"),)


def test_the_file_is_named_after_the_processor_sources(tmp_path, monkeypatch):
    package = tmp_path / "cpu"
    package.mkdir()
    (package / "a.py").write_text("X = 1\n")
    monkeypatch.setattr(codecache, "__file__", str(package / "codecache.py"))
    one = codecache.source_version()
    assert one == codecache.source_version()
    (package / "a.py").write_text("X = 2\n")
    assert codecache.source_version() != one


def test_where_the_cache_lives(monkeypatch, tmp_path):
    monkeypatch.setenv("VMI_CACHE_DIR", "off")
    assert codecache.cache_directory() is None
    assert not codecache.TranslationCache(None).save()
    monkeypatch.setenv("VMI_CACHE_DIR", str(tmp_path / "here"))
    assert codecache.cache_directory() == tmp_path / "here"
    monkeypatch.delenv("VMI_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert codecache.cache_directory() == tmp_path / "xdg" / "vmi"
    monkeypatch.delenv("XDG_CACHE_HOME")

    def homeless():
        raise RuntimeError("Could not determine home directory.")

    monkeypatch.setattr(codecache.Path, "home", staticmethod(homeless))
    assert codecache.cache_directory() is None


def test_a_full_file_keeps_the_working_set(fresh_cache, monkeypatch):
    monkeypatch.setattr(codecache, "RECIPE_LIMIT", 5)
    _fibonacci()
    assert codecache.CACHE.save()
    cache = _new_process(fresh_cache, monkeypatch)
    cache.remember((b"\x90", 0x5000, 32, 32), "def _make(): ...", (), 0x5001, 1, 1, "nop")
    cpu = CPU.flat()  # uses three of the fifteen recipes
    cpu.mem.load(0x1000, FIBONACCI)
    cpu.eip = 0x1000
    cpu.run(3)
    assert cache.save()
    kept = codecache.read_file(cache.path)[1]
    assert len(kept) == 4 and (b"\x90", 0x5000, 32, 32) in kept


def test_old_versions_are_dropped(fresh_cache, monkeypatch):
    for number in range(6):
        old = fresh_cache / f"translations-{number:016x}.marshal"
        old.write_bytes(b"")
        os.utime(old, (number, number))
    _fibonacci()
    assert codecache.CACHE.save()
    left = sorted(path.name for path in fresh_cache.glob("translations-*.marshal"))
    assert len(left) == codecache.FILES_KEPT and codecache.CACHE.path.name in left


def _vmi(args, cache_dir):
    env = dict(os.environ, VMI_CACHE_DIR=str(cache_dir))
    return subprocess.run([sys.executable, "-m", "vmi", *args], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=300)


def test_vmi_run_twice_and_vmi_cache(tmp_path):
    """The second `vmi run` uses the file the first wrote and prints the same;
    `vmi cache` shows the file and `--clear` removes it."""
    first = _vmi(["run"], tmp_path)
    assert first.returncode == 0, first.stderr
    shown = _vmi(["cache"], tmp_path)
    assert shown.returncode == 0 and "this version" in shown.stdout
    assert "instructions" in shown.stdout and str(tmp_path) in shown.stdout
    second = _vmi(["run"], tmp_path)
    assert second.returncode == 0 and second.stdout == first.stdout
    cleared = _vmi(["cache", "--clear"], tmp_path)
    assert cleared.returncode == 0 and "removed 1 file(s)" in cleared.stdout
    assert not list(tmp_path.glob("translations-*"))
    off = subprocess.run([sys.executable, "-m", "vmi", "cache"], capture_output=True, text=True,
                         env=dict(os.environ, VMI_CACHE_DIR="off"), cwd=ROOT, timeout=60)
    assert off.returncode == 0 and "off (VMI_CACHE_DIR=off)" in off.stdout
    (tmp_path / "file").write_text("")
    not_a_directory = _vmi(["cache"], tmp_path / "file")
    assert not_a_directory.returncode == 1
    assert not_a_directory.stderr.strip().endswith("file (the cache directory) is not a directory")
    assert "Traceback" not in not_a_directory.stderr
