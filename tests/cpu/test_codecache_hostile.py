"""The translation cache (vmi.cpu.codecache) under hostile input (issue 17): a
damaged file (flipped bits, a truncation) is dropped with one line and rebuilt, and
the run ends exactly as with no cache; a directory, key or file another user could
write is refused with one line and the run goes on without the cache; a planted
file never runs. Every run here is a new process, as a damaged file used to crash
or hang the one that read it."""

from __future__ import annotations

import hashlib
import json
import marshal
import os
import random
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import example_scale
from vmi.commands.cache import command as cache_command
from vmi.cpu import codecache

ROOT = Path(__file__).resolve().parents[2]

# Fibonacci(20) through a call and a conditional branch (tests/cpu/test_smoke.py).
FIBONACCI = ("bc00800000b91400000031c0bb0100000089c201d889d34975f750e801000000f4"
             "8b542404891500900000c20400")

# A new process runs the program on a flat CPU with the cache of VMI_CACHE_DIR and
# prints its whole state, a hash of its low memory and how many instructions came
# from the cache.
CHILD = """
import hashlib, json, sys
from vmi.cpu import CPU, codecache
cpu = CPU.flat()
cpu.mem.load(0x1000, bytes.fromhex(sys.argv[1]))
cpu.eip = 0x1000
cpu.run(200)
print(json.dumps({"state": cpu.state(),
                  "memory": hashlib.sha256(cpu.mem.read_bytes(0, 0x10000)).hexdigest(),
                  "hits": codecache.CACHE.hits}))
"""

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
NOBODY = 65534


def _env(cache_dir: Path | str) -> dict[str, str]:
    return dict(os.environ, VMI_CACHE_DIR=str(cache_dir),
                PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT),
                                                         os.environ.get("PYTHONPATH")])))


def _child(cache_dir: Path | str) -> tuple[dict, list[str]]:
    """Run CHILD in a new process; its result and its stderr lines. It must exit 0
    within a minute (a damaged cache used to hang it or crash it)."""
    try:
        done = subprocess.run([sys.executable, "-c", CHILD, FIBONACCI], capture_output=True,
                              text=True, env=_env(cache_dir), cwd=ROOT, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("the process hung")
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    return json.loads(done.stdout), done.stderr.splitlines()


def _vmi(args: list[str], cache_dir: Path | str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run([sys.executable, "-m", "vmi", *args], capture_output=True,
                              text=True, env=_env(cache_dir), cwd=ROOT, timeout=300)
    except subprocess.TimeoutExpired:
        pytest.fail(f"vmi {' '.join(args)} hung")


def _vmi_cache_process(cache_dir: Path) -> str:
    """What `vmi cache` prints for ``cache_dir``, in a new process (a damaged file
    once crashed the process that read it)."""
    shown = _vmi(["cache"], cache_dir)
    assert shown.returncode == 0 and shown.stderr == "", shown.stderr
    return shown.stdout


def _vmi_cache(cache_dir: Path, *args: str) -> str:
    """What `vmi cache` prints for ``cache_dir``, in this process (for files that are
    whole, or that only a refusal keeps out)."""
    result = CliRunner().invoke(cache_command, list(args), env={"VMI_CACHE_DIR": str(cache_dir)})
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def reference() -> dict:
    """What the program leaves with no cache at all."""
    result, errors = _child("off")
    assert errors == [] and result["hits"] == 0 and result["state"]["halted"]
    return result


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory, reference: dict) -> Path:
    """A cache directory holding the program's translation file, as a first run
    leaves it (and the run from it is exact: the file is good)."""
    directory = tmp_path_factory.mktemp("pristine") / "cache"
    first, errors = _child(directory)
    assert errors == [] and first["hits"] == 0
    again, errors = _child(directory)
    assert errors == [] and again["hits"] == 15
    assert again["state"] == reference["state"] and again["memory"] == reference["memory"]
    return directory


def _copy(pristine: Path, into: Path) -> tuple[Path, Path]:
    """A copy of the pristine cache in ``into``/cache (modes kept); (dir, file)."""
    directory = into / "cache"
    shutil.copytree(pristine, directory)
    return directory, directory / f"translations-{codecache.source_version()}.marshal"


def _assert_exact(result: dict, reference: dict) -> None:
    assert result["state"] == reference["state"]
    assert result["memory"] == reference["memory"]


# -- damage ---------------------------------------------------------------------------------
def _flip(path: Path, bits: list[int]) -> None:
    data = bytearray(path.read_bytes())
    for bit in bits:
        data[bit // 8 % len(data)] ^= 1 << bit % 8
    path.write_bytes(bytes(data))


def _truncate(path: Path, fraction: float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * fraction)])


DAMAGE = st.one_of(
    st.tuples(st.just("flip"), st.lists(st.integers(0, 1 << 40), min_size=1, max_size=2,
                                        unique=True)),
    st.tuples(st.just("truncate"), st.floats(0, 1, exclude_max=True)),
)


def _damage(path: Path, damage: tuple) -> None:
    kind, how = damage
    size_bits = path.stat().st_size * 8
    if kind == "flip":
        bits = sorted({bit % size_bits for bit in how})
        _flip(path, bits)
    else:
        _truncate(path, how)


@settings(max_examples=20 * example_scale())
@given(damage=DAMAGE)
def test_a_damaged_file_is_dropped_and_the_run_is_exact(damage, pristine, reference):
    """1-2 flipped bits anywhere, or a truncation anywhere: `vmi cache` names the
    damaged file; a new process prints one line about it, no traceback, uses
    nothing from it and ends exactly as with no cache; it leaves a good file."""
    with tempfile.TemporaryDirectory(prefix="vmi-hostile-") as scratch:
        _check_damage(damage, *_copy(pristine, Path(scratch)), reference)


def _check_damage(damage: tuple, directory: Path, path: Path, reference: dict) -> None:
    before = path.read_bytes()
    _damage(path, damage)
    assert path.read_bytes() != before

    shown = _vmi_cache_process(directory)
    assert f"{path}: " in shown and "DAMAGED: " in shown, shown
    assert "1 file(s) failed their check" in shown

    result, errors = _child(directory)
    _assert_exact(result, reference)
    assert result["hits"] == 0
    assert len(errors) == 1, errors
    assert errors[0].startswith(f"vmi: translation cache {path}: ")
    assert errors[0].endswith("; dropped, rebuilt as code runs")
    assert len(codecache.read_file(path)[1]) == 15  # rebuilt whole
    assert "DAMAGED" not in _vmi_cache(directory)


def test_a_damaged_file_under_the_bundled_workload(tmp_path):
    """`vmi run` over a cache file with two flipped bits prints what it printed with
    a good one, and one line about the file."""
    directory = tmp_path / "cache"
    first = _vmi(["run"], directory)
    assert first.returncode == 0 and first.stderr == "", first.stderr
    path = directory / f"translations-{codecache.source_version()}.marshal"
    size_bits = path.stat().st_size * 8
    picker = random.Random(17)
    _flip(path, [picker.randrange(codecache.HEADER_SIZE * 8, size_bits) for _ in range(2)])
    assert "DAMAGED: digest mismatch" in _vmi_cache_process(directory)
    second = _vmi(["run"], directory)
    assert second.returncode == 0, second.stderr
    assert second.stdout == first.stdout
    assert second.stderr == (f"vmi: translation cache {path}: digest mismatch (damaged, or "
                             "not written with this user's key); dropped, rebuilt as code "
                             "runs\n")
    assert "DAMAGED" not in _vmi_cache(directory)


def test_clear_removes_damaged_files_and_a_bad_key(pristine, reference, tmp_path):
    directory, path = _copy(pristine, tmp_path)
    _truncate(path, 0.5)
    (directory / codecache.KEY_NAME).write_bytes(b"short")
    assert "refused: " in _vmi_cache_process(directory)
    cleared = _vmi_cache(directory, "--clear")
    assert "removed 1 file(s)" in cleared and "no translation files yet" in cleared
    assert sorted(directory.iterdir()) == []
    result, errors = _child(directory)
    _assert_exact(result, reference)
    assert errors == []
    assert len(codecache.read_file(path)[1]) == 15


# -- what another user could write ----------------------------------------------------------
def _loosen(mode: int | None = None, owner: int | None = None, *,
            what: str) -> Callable[[Path], Path]:
    """Make the cache ``what`` ("dir", "file", "key" or "parent") writable by others:
    ``mode`` and/or ``owner``; returns the path then named in the refusal."""

    def apply(directory: Path) -> Path:
        target = {"dir": directory, "parent": directory.parent,
                  "file": directory / f"translations-{codecache.source_version()}.marshal",
                  "key": directory / codecache.KEY_NAME}[what]
        if mode is not None:
            target.chmod(mode)
        if owner is not None:
            os.chown(target, owner, -1)
        return target

    return apply


ROOT_ONLY = pytest.mark.skipif(not IS_ROOT, reason="chown to another uid needs root")
LOOSE = [
    pytest.param(_loosen(0o777, what="dir"), "is writable by group or others (mode 0777)",
                 id="dir-777"),
    pytest.param(_loosen(0o770, what="dir"), "is writable by group or others (mode 0770)",
                 id="dir-770"),
    pytest.param(_loosen(owner=NOBODY, what="dir"), f"is owned by uid {NOBODY}",
                 id="dir-other-owner", marks=ROOT_ONLY),
    pytest.param(_loosen(0o666, what="file"), "is writable by group or others (mode 0666)",
                 id="file-666"),
    pytest.param(_loosen(owner=NOBODY, what="file"), f"is owned by uid {NOBODY}",
                 id="file-other-owner", marks=ROOT_ONLY),
    pytest.param(_loosen(0o644, what="key"),
                 "is readable or writable by group or others (mode 0644)", id="key-644"),
    pytest.param(_loosen(owner=NOBODY, what="key"), f"is owned by uid {NOBODY}",
                 id="key-other-owner", marks=ROOT_ONLY),
    pytest.param(_loosen(0o777, what="parent"),
                 "(holding the cache) is writable by group or others and not sticky "
                 "(mode 0777)", id="parent-777"),
    pytest.param(_loosen(owner=NOBODY, what="parent"),
                 f"(holding the cache) is owned by uid {NOBODY}", id="parent-other-owner",
                 marks=ROOT_ONLY),
]


@pytest.mark.parametrize(("loosen", "reason"), LOOSE)
def test_what_another_user_could_write_is_refused(loosen, reason, pristine, reference,
                                                  tmp_path):
    """The run prints one line naming the place and the cause, takes nothing from
    the cache, writes nothing to it, and ends exactly as with no cache; `vmi cache`
    says the same."""
    directory, path = _copy(pristine, tmp_path / "parent")
    place = loosen(directory)
    before = {entry.name: entry.read_bytes() for entry in directory.iterdir()}
    result, errors = _child(directory)
    _assert_exact(result, reference)
    assert result["hits"] == 0
    assert len(errors) == 1, errors
    assert errors[0].startswith(f"vmi: translation cache refused: {place} {reason}"), errors
    assert "; running without the cache (" in errors[0], errors
    assert {entry.name: entry.read_bytes() for entry in directory.iterdir()} == before
    shown = _vmi_cache(directory)
    assert f"{place} {reason}" in shown, shown
    assert "instructions" not in shown  # nothing is called healthy


def test_a_sticky_parent_and_a_readable_directory_are_accepted(pristine, reference, tmp_path):
    """A parent writable by all but sticky (as /tmp: nobody can rename what is not
    theirs) and a cache directory others may read but not write are fine."""
    directory, _path = _copy(pristine, tmp_path / "parent")
    directory.parent.chmod(0o1777)
    directory.chmod(0o755)
    result, errors = _child(directory)
    _assert_exact(result, reference)
    assert errors == [] and result["hits"] == 15


def test_a_fresh_directory_is_private(tmp_path, reference):
    directory = tmp_path / "new" / "cache"
    result, errors = _child(directory)
    _assert_exact(result, reference)
    assert errors == []
    assert directory.stat().st_mode & 0o777 == 0o700
    assert (directory / codecache.KEY_NAME).stat().st_mode & 0o777 == 0o600
    for path in directory.glob("translations-*"):
        assert path.stat().st_mode & 0o777 == 0o600


# -- planted files ----------------------------------------------------------------------------
def _planted_shapes(pristine: Path, marker: Path) -> dict:
    """The program's shapes, each made to create ``marker`` when executed (and then
    to define its maker as before, so a run that took them would still finish)."""
    shapes, _recipes = codecache.read_file(
        pristine / f"translations-{codecache.source_version()}.marshal")
    return {source: compile(f"open({str(marker)!r}, 'w').close()\n{source}", "<planted>", "exec")
            for source in shapes}


def _plant_old_format(directory: Path, path: Path, payload: bytes) -> None:
    """As the cache was before it had a digest: the bare marshalled dict."""
    path.write_bytes(payload)


def _plant_foreign_key(directory: Path, path: Path, payload: bytes) -> None:
    """A well-formed header whose digest was made with another key."""
    path.write_bytes(codecache.seal(os.urandom(codecache.KEY_SIZE), path.name, payload))


def _plant_wrong_digest(directory: Path, path: Path, payload: bytes) -> None:
    """The real file's header (a valid digest, of other content) over the payload."""
    header = path.read_bytes()[:len(codecache.MAGIC) + 1]
    path.write_bytes(header + len(payload).to_bytes(codecache.LENGTH_SIZE, "big")
                     + hashlib.sha256(payload).digest() + payload)


def _plant_with_key_in_open_directory(directory: Path, path: Path, payload: bytes) -> None:
    """A shared, world-writable directory: the planter wrote the key too, and the
    digest matches it."""
    key = os.urandom(codecache.KEY_SIZE)
    (directory / codecache.KEY_NAME).write_bytes(key)
    path.write_bytes(codecache.seal(key, path.name, payload))
    directory.chmod(0o777)


@pytest.mark.parametrize("plant", [_plant_old_format, _plant_foreign_key, _plant_wrong_digest,
                                   _plant_with_key_in_open_directory],
                         ids=["old-format", "foreign-key", "wrong-digest", "open-directory"])
def test_a_planted_file_never_runs(plant, pristine, reference, tmp_path):
    directory, path = _copy(pristine, tmp_path)
    marker = tmp_path / "planted-code-ran"
    recipes = codecache.read_file(path)[1]
    payload = marshal.dumps({"shapes": _planted_shapes(pristine, marker), "recipes": recipes})
    plant(directory, path, payload)
    shown = _vmi_cache_process(directory)
    assert "DAMAGED" in shown or "refused" in shown, shown
    result, errors = _child(directory)
    _assert_exact(result, reference)
    assert result["hits"] == 0 and len(errors) == 1, errors
    assert str(path) in errors[0] or str(directory) in errors[0]
    assert not marker.exists()


def test_a_file_without_its_key_is_dropped_once(pristine, reference, tmp_path):
    """The key gone (deleted by hand): the file cannot be checked, so it is dropped
    with one line (not a second one when the save finds it again under the new key)
    and rebuilt under a new key."""
    directory, path = _copy(pristine, tmp_path)
    (directory / codecache.KEY_NAME).unlink()
    result, errors = _child(directory)
    _assert_exact(result, reference)
    assert result["hits"] == 0
    assert errors == [f"vmi: translation cache {path}: no key to check it with (key is "
                      "missing); dropped, rebuilt as code runs"]
    assert len(codecache.read_file(path)[1]) == 15


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")
def test_a_pipe_in_place_of_the_file_is_refused_without_waiting(pristine, reference, tmp_path):
    directory, path = _copy(pristine, tmp_path)
    path.unlink()
    os.mkfifo(path, 0o600)
    result, errors = _child(directory)
    _assert_exact(result, reference)
    assert len(errors) == 1 and f"refused: {path} is not a regular file" in errors[0], errors
