"""The assembled-image cache (vmi.asm.imagecache): a new process takes the guest's
images from the files an earlier one wrote, without assembling; they equal a fresh
assembly; any change of what an image depends on misses; a damaged, truncated,
forged or exposed file is refused with one line and the image assembled afresh;
`vmi cache` shows and clears the files."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from vmi.asm import assemble, imagecache
from vmi.commands.cache import command as cache_command
from vmi.cpu import codecache
from vmi.guest.build import KERNEL_SOURCE, MACRO_SETS, PROGRAMS

ROOT = Path(__file__).resolve().parents[2]
UID = os.getuid() if hasattr(os, "getuid") else None
IS_ROOT = UID == 0

#: Builds every image of the guest (each macro set, the boot ROM, the vsyscall page,
#: each user program in two slots) and prints each one whole, and what the image
#: cache did, and whether the assembler was ever imported.
CHILD = """
import json, sys
from vmi.guest.build import MACRO_SETS, PROGRAMS, build_guest, user_program
from vmi.asm import imagecache

def whole(image):
    p = image.program
    return {"image": p.image.hex(), "base": p.base, "symbols": p.symbols,
            "sections": [list(map(str, (s.name, s.address, s.size, s.alignment, s.loaded,
                                        s.nobits, s.code))) for s in p.sections],
            "annotations": [[a.site, a.call, a.site_length, a.native_length]
                            for a in p.annotations],
            "warnings": [d.format() for d in p.warnings],
            "unloaded": {name: data.hex() for name, data in p.unloaded.items()},
            "load_address": image.load_address}

images = {}
for macros in MACRO_SETS:
    build = build_guest(macros)
    for image in (build.rom, build.kernel, build.vsyscall):
        images[f"{macros}/{image.name}"] = whole(image)
for slot, name in enumerate(PROGRAMS + PROGRAMS):
    images[f"{name}@{slot}"] = whole(user_program(name, slot))
cache = imagecache.CACHE
print(json.dumps({"images": images, "hits": cache.hits, "misses": cache.misses,
                  "stored": cache.stored, "assembler": "vmi.asm.assembler" in sys.modules}))
"""


def _env(cache_dir: Path | str) -> dict[str, str]:
    return dict(os.environ, VMI_CACHE_DIR=str(cache_dir), PYTHONPATH=str(ROOT))


def _build_in_child(cache_dir: Path | str) -> tuple[dict, str]:
    done = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True,
                          env=_env(cache_dir), cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    return json.loads(done.stdout), done.stderr


@pytest.fixture(scope="module")
def fresh_images() -> dict:
    """Every image as a process without the cache assembles it."""
    result, errors = _build_in_child("off")
    assert errors == "" and result["hits"] == 0 and result["stored"] == 0
    return result["images"]


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory, fresh_images: dict) -> Path:
    """A cache directory that one process filled with the guest's images."""
    directory = tmp_path_factory.mktemp("images") / "cache"
    first, errors = _build_in_child(directory)
    assert errors == ""
    # the boot ROM is the same for every macro set: stored once, then found
    files = list(directory.glob("image-*.image"))
    assert first["misses"] == first["stored"] == len(files) > 0
    assert first["hits"] + first["misses"] == len(fresh_images) - 3  # one vsyscall build
    assert first["images"] == fresh_images
    return directory


def test_a_second_process_takes_every_image_from_the_cache(filled, fresh_images):
    """No assembly at all (the assembler is never even imported), and every image,
    of every macro set, the boot ROM and the user programs, is the fresh one: bytes,
    base, symbols, sections, annotations, warnings and unloaded sections."""
    files = sorted(filled.glob("image-*.image"))
    second, errors = _build_in_child(filled)
    assert errors == ""
    assert second["misses"] == 0 and second["stored"] == 0
    assert second["hits"] == len(fresh_images) - 3 > len(files)
    assert second["assembler"] is False
    assert set(second["images"]) == set(fresh_images)
    for name, image in fresh_images.items():
        assert second["images"][name] == image, name
    # the macro sets give different kernels (so a key that ignored them would show)
    kernels = {second["images"][f"{macros}/kernel"]["image"] for macros in MACRO_SETS}
    assert len(kernels) > 1


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> imagecache.ImageCache:
    """An image cache of this process in a new directory; warnings said afresh."""
    monkeypatch.setattr(codecache, "_WARNED", set())
    return imagecache.ImageCache(tmp_path / "cache")


def _kernel(cache: imagecache.ImageCache, macros: str = "native", **defines: int):
    return cache.assemble(KERNEL_SOURCE.read_text(), macros=macros, base=0xC0100000,
                          filename=str(KERNEL_SOURCE),
                          defines={"MACRO_SET_ID": MACRO_SETS.index(macros), **defines})


def _fresh_kernel(macros: str = "native", **defines: int):
    return assemble(KERNEL_SOURCE.read_text(), macros=macros, base=0xC0100000,
                    filename=str(KERNEL_SOURCE),
                    defines={"MACRO_SET_ID": MACRO_SETS.index(macros), **defines})


@pytest.mark.parametrize("macros", MACRO_SETS)
def test_a_stored_kernel_reads_back_equal_with_its_listing(cache, macros):
    fresh = _fresh_kernel(macros)
    first = _kernel(cache, macros)
    assert (cache.hits, cache.misses, cache.stored) == (0, 1, 1)
    again = imagecache.ImageCache(cache.directory)
    read = _kernel(again, macros)
    assert (again.hits, again.misses) == (1, 0)
    assert read == fresh == first
    assert read.image == fresh.image and read.symbols == fresh.symbols
    assert read.annotations == fresh.annotations and read.unloaded == fresh.unloaded
    assert read.listing == fresh.listing  # made on demand, by assembling again
    assert read.format_listing() == fresh.format_listing()


SOURCE = """\
    .include "part.S"
start:
    CLI
    movl $VALUE, %eax
    .incbin "blob.bin"
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A source that includes a file and a binary, in a directory of its own."""
    folder = tmp_path / "src"
    folder.mkdir()
    (folder / "main.S").write_text(SOURCE)
    (folder / "part.S").write_text("    .set OTHER, 5\n    nop\n")
    (folder / "blob.bin").write_bytes(b"\x90\x90")
    return folder / "main.S"


def _build(cache: imagecache.ImageCache, path: Path, macros: str | None = "native",
           value: int = 1):
    return cache.assemble(path.read_text(), macros=macros, base=0x1000, filename=str(path),
                          defines={"VALUE": value})


def _check_miss(cache, path, **kwargs):
    """Assembling again with ``kwargs`` misses and gives the fresh program."""
    before = cache.misses
    program = _build(cache, path, **kwargs)
    assert cache.misses == before + 1
    fresh = assemble(path.read_text(), macros=kwargs.get("macros", "native"), base=0x1000,
                     filename=str(path), defines={"VALUE": kwargs.get("value", 1)})
    assert program == fresh
    return program


def test_whatever_an_image_depends_on_is_in_its_key(cache, project):
    _build(cache, project)
    assert (cache.hits, cache.misses) == (0, 1)
    _build(cache, project)
    assert (cache.hits, cache.misses) == (1, 1)
    _check_miss(cache, project, macros="vmi")  # the macro set
    _check_miss(cache, project, macros=None)
    _check_miss(cache, project, value=2)  # a define
    (project.parent / "part.S").write_text("    .set OTHER, 5\n    nop\n    nop\n")
    _check_miss(cache, project)  # an included file
    (project.parent / "blob.bin").write_bytes(b"\x90\xcc")
    _check_miss(cache, project)  # an .incbin'd file
    project.write_text(SOURCE.replace("start:", "begin:"))
    _check_miss(cache, project)  # the source itself
    hits = cache.hits
    _build(cache, project)
    assert cache.hits == hits + 1


def test_a_changed_macro_set_misses(cache, project, monkeypatch):
    _build(cache, project)
    text, path = imagecache.macro_source("native")
    changed = text.replace(".macro CLI\n", ".macro CLI\n\tnop\n", 1)
    assert changed != text
    monkeypatch.setattr(imagecache, "macro_source", lambda name: (changed, path))
    before = cache.misses
    _build(cache, project)
    assert cache.misses == before + 1


def test_a_changed_assembler_misses(cache, project, monkeypatch):
    _build(cache, project)
    monkeypatch.setattr(imagecache, "assembler_version", lambda: "another")
    before = cache.misses
    _build(cache, project)
    assert cache.misses == before + 1


def test_a_file_edited_while_it_is_assembled_is_not_stored(cache, project, monkeypatch):
    real = imagecache._fresh

    def edit_then_assemble(*args):
        (project.parent / "part.S").write_text("    .set OTHER, 6\n")
        return real(*args)

    monkeypatch.setattr(imagecache, "_fresh", edit_then_assemble)
    _build(cache, project)
    assert cache.misses == 1 and cache.stored == 0
    monkeypatch.setattr(imagecache, "_fresh", real)
    _check_miss(cache, project)
    assert cache.stored == 1


def test_a_name_made_by_a_macro_is_never_cached(cache, tmp_path):
    path = tmp_path / "dyn.S"
    (tmp_path / "one.S").write_text("nop\n")
    path.write_text('.macro take name\n.include "\\name"\n.endm\ntake one.S\n')
    program = cache.assemble(path.read_text(), macros=None, filename=str(path))
    assert program.image == b"\x90"
    assert cache.stored == 0 and not cache.directory.exists()


def test_the_cache_off_writes_nothing(tmp_path, project):
    off = imagecache.ImageCache(None)
    assert _build(off, project) == _build(off, project)
    assert (off.hits, off.misses, off.stored) == (0, 2, 0)
    done = subprocess.run([sys.executable, "-c", "import vmi.guest.build as b; b.build_guest()"],
                          env=_env("off"), cwd=tmp_path, capture_output=True, timeout=300)
    assert done.returncode == 0 and done.stderr == b""
    assert not (tmp_path / "off").exists()


# -- what is refused ----------------------------------------------------------------------------
def _stored(cache, project) -> Path:
    _build(cache, project)
    (path,) = cache.directory.glob("image-*.image")
    return path


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x01
    path.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _forge(path: Path) -> None:
    """Re-seal, with a key of one's own, the payload with one image byte changed."""
    payload = imagecache.read_sealed(path, codecache._load_key(path.parent, create=False))
    content = json.loads(payload)
    image = bytearray(base64.b64decode(content["image"]))
    image[-1] ^= 0xFF
    content["image"] = base64.b64encode(image).decode()
    path.write_bytes(codecache.seal(os.urandom(32), path.name, json.dumps(content).encode()))


def _foreign_key_order(path: Path) -> None:
    """Seal, with the right key, an image made for another key (a bug's output)."""
    secret = codecache._load_key(path.parent, create=False)
    content = json.loads(imagecache.read_sealed(path, secret))
    content["key"] = "0" * 64
    path.write_bytes(codecache.seal(secret, path.name, json.dumps(content).encode()))


DAMAGE = [
    pytest.param(_flip_byte, "digest mismatch (damaged, or not written with this user's key)",
                 id="flipped"),
    pytest.param(_truncate, "bytes of payload where the header says", id="truncated"),
    pytest.param(_forge, "digest mismatch (damaged, or not written with this user's key)",
                 id="forged"),
    pytest.param(lambda path: path.write_bytes(b"junk"), "not a vmi translation file",
                 id="junk"),
    pytest.param(_foreign_key_order, "verified but not an image (ValueError: made for "
                 "another key or format)", id="verified-but-wrong"),
]


@pytest.mark.parametrize(("damage", "cause"), DAMAGE)
def test_a_damaged_file_is_dropped_and_assembled_again(damage, cause, cache, project, capsys):
    path = _stored(cache, project)
    damage(path)
    again = imagecache.ImageCache(cache.directory)
    program = _build(again, project)
    assert program == assemble(project.read_text(), base=0x1000, filename=str(project),
                               defines={"VALUE": 1})
    assert (again.hits, again.misses, again.stored) == (0, 1, 1)
    err = capsys.readouterr().err
    assert err.startswith(f"vmi: image cache {path}: "), err
    assert cause in err and err.endswith("; dropped, assembled again\n"), err
    assert err.count("\n") == 1
    third = imagecache.ImageCache(cache.directory)  # rewritten: good again
    assert _build(third, project) == program and third.hits == 1
    assert capsys.readouterr().err == ""


def _loosen_file(directory: Path) -> Path:
    (path,) = directory.glob("image-*.image")
    path.chmod(0o666)
    return path


def _loosen_dir(directory: Path) -> Path:
    directory.chmod(0o777)
    return directory


def _loosen_key(directory: Path) -> Path:
    key = directory / codecache.KEY_NAME
    key.chmod(0o640)
    return key


def _foreign_owner(directory: Path) -> Path:
    (path,) = directory.glob("image-*.image")
    os.chown(path, 65534, -1)
    return path


LOOSE = [
    pytest.param(_loosen_file, "is writable by group or others (mode 0666)", id="file-666"),
    pytest.param(_loosen_dir, "is writable by group or others (mode 0777)", id="dir-777"),
    pytest.param(_loosen_key, "is readable or writable by group or others (mode 0640)",
                 id="key-640"),
    pytest.param(_foreign_owner, f"is owned by uid 65534, not by this user (uid {UID})",
                 id="file-other-owner",
                 marks=pytest.mark.skipif(not IS_ROOT, reason="chown needs root")),
]


@pytest.mark.parametrize(("loosen", "reason"), LOOSE)
def test_what_another_user_could_write_is_refused(loosen, reason, cache, project, capsys):
    """One line naming the place, the cause and the fix; the image assembled afresh;
    nothing read or written for the rest of the process."""
    _stored(cache, project)
    place = loosen(cache.directory)
    before = {entry.name: entry.read_bytes() for entry in cache.directory.iterdir()}
    again = imagecache.ImageCache(cache.directory)
    program = _build(again, project)
    assert program == assemble(project.read_text(), base=0x1000, filename=str(project),
                               defines={"VALUE": 1})
    assert (again.hits, again.misses, again.stored) == (0, 1, 0) and not again.enabled
    err = capsys.readouterr().err
    assert err.startswith(f"vmi: image cache refused: {place} {reason}; assembling without "
                          "the cache ("), err
    assert err.count("\n") == 1
    _build(again, project, value=3)
    assert again.misses == 2 and capsys.readouterr().err == ""
    assert {entry.name: entry.read_bytes() for entry in cache.directory.iterdir()} == before
    shown = _cache_command(cache.directory)
    assert f"{place} {reason}" in shown and "symbols" not in shown, shown


def test_a_new_directory_and_its_files_are_private(cache, project):
    path = _stored(cache, project)
    assert cache.directory.stat().st_mode & 0o777 == 0o700
    assert path.stat().st_mode & 0o777 == 0o600
    assert (cache.directory / codecache.KEY_NAME).stat().st_mode & 0o777 == 0o600


def test_old_files_are_dropped(cache, project, monkeypatch):
    monkeypatch.setattr(imagecache, "FILES_KEPT", 2)
    for value in range(4):
        _build(cache, project, value=value)
    assert len(list(cache.directory.glob("image-*.image"))) == 2


# -- vmi cache ----------------------------------------------------------------------------------
def _cache_command(directory: Path, *args: str) -> str:
    result = CliRunner().invoke(cache_command, list(args), env={"VMI_CACHE_DIR": str(directory)})
    assert result.exit_code == 0, result.output
    return result.output


def test_vmi_cache_lists_checks_and_clears_the_images(filled, tmp_path):
    directory = tmp_path / "cache"
    shutil.copytree(filled, directory)
    files = sorted(directory.glob("image-*.image"))
    shown = _cache_command(directory)
    assert f"assembled images: {len(files)} file(s)" in shown
    for macros in MACRO_SETS:
        assert f"  kernel.S ({macros} macros) at 0xc0100000: 13," in shown
    assert "  boot.S at 0xf0000: 65,536 bytes" in shown
    for name in PROGRAMS:
        assert f"  {name}.S at 0x80" in shown
    assert "DAMAGED" not in shown and "older" not in shown
    report = json.loads(_cache_command(directory, "--json"))
    assert sorted(info["path"] for info in report["images"]) == [str(p) for p in files]
    assert all(info["current"] for info in report["images"])
    _flip_byte(files[0])
    shown = _cache_command(directory)
    assert f"  {files[0]}: " in shown and "DAMAGED: digest mismatch" in shown
    assert "1 file(s) failed their check" in shown
    cleared = _cache_command(directory, "--clear")
    assert f"removed {len(files)} assembled image(s)" in cleared
    assert "no assembled images yet" in cleared
    assert not list(directory.glob("image-*")) and not list(directory.glob(".image-*"))
