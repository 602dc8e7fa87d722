"""A translation cache that outlives the process, as ``__pycache__`` does for Python.

Turning an instruction into a closure costs about 60 µs (decoding, the
semantics factory, and for each new *shape* a ``compile`` of its source), and
the bundled workload meets 1,500 distinct instructions: most of a fresh
process's first run. This module keeps, on disk, what that work produced:

* **shapes**: the code object of each generated maker source (``codegen`` and
  the paging accessors), so ``compile`` runs once per shape per installation;
* **recipes**: for each instruction, keyed exactly as the in-process cache
  ``vmi.cpu.core.COMPILED`` is (bytes, address, code size, stack size), the
  shape's source, the constants it was made with, the next EIP, the cycle
  cost, the length and the mnemonic. Building the closure from a recipe is one
  call of the shape's maker.

A recipe is only a memo of a pure function of its key and of the processor's
source code, so the cache file is named after a hash of every source file of
``vmi.cpu`` and of the Python version: a change to either starts a new file,
never a stale answer. Constants that are module-level objects (a condition
function, a helper such as ``load_segment``) are stored as their module and
name; an instruction with any other kind of constant is not stored.

The file is read on the first miss of a process and written back at exit
(merged with whatever other processes wrote meanwhile; written to a temporary
file and renamed, so a reader never sees half a file). An unreadable file is
ignored and replaced; a directory that cannot be written is left alone: the
cache only ever saves time.

Where it lives: ``$VMI_CACHE_DIR``, else ``$XDG_CACHE_HOME/vmi``, else
``~/.cache/vmi``. ``VMI_CACHE_DIR=off`` turns it off.
"""

from __future__ import annotations

import atexit
import hashlib
import importlib
import importlib.util
import marshal
import os
import sys
import tempfile
from pathlib import Path
from types import CodeType, ModuleType
from typing import Any

#: The environment variable naming the cache directory (``off`` disables it).
ENV = "VMI_CACHE_DIR"
#: Values of ``VMI_CACHE_DIR`` that turn the cache off.
OFF = frozenset({"off", "0", "no", "none", "false"})
#: Recipes kept in one file at most (about 1.5 µs each to read at a process's
#: first miss); past it, a save keeps only the recipes this process used or made.
RECIPE_LIMIT = 30_000
#: Translation files kept in a directory (the newest; older source versions go).
FILES_KEPT = 4

Key = tuple[bytes, int, int, int]
#: (shape source, constants, next EIP, cycles, length, mnemonic)
Recipe = tuple[str, tuple[Any, ...], int, int, int, str]
#: As stored: (source, plain constants (None where a reference goes), references
#: ((position, module, name), ...), next EIP, cycles, length, mnemonic)
Stored = tuple[str, tuple[Any, ...], tuple[tuple[int, str, str], ...], int, int, int, str]

_PLAIN = (int, str, bytes, bool, float, type(None))


def cache_directory() -> Path | None:
    """Where the cache lives, or None when ``VMI_CACHE_DIR`` turns it off."""
    configured = os.environ.get(ENV)
    if configured is not None:
        if configured.strip().lower() in OFF or not configured.strip():
            return None
        return Path(configured).expanduser()
    base = os.environ.get("XDG_CACHE_HOME")
    if not base:
        try:
            base = str(Path.home() / ".cache")
        except RuntimeError:  # no home directory to be found: no cache
            return None
    return Path(base) / "vmi"


def source_version() -> str:
    """A hash of every source file of ``vmi.cpu`` and of the Python version: what a
    recipe or a shape's code object depends on besides its key."""
    package = os.path.dirname(os.path.abspath(__file__))
    digest = hashlib.sha1(usedforsecurity=False)  # change detection, not security
    digest.update(sys.version.encode())
    digest.update(importlib.util.MAGIC_NUMBER)
    for path in sorted(_python_files(package)):
        digest.update(os.path.relpath(path, package).encode())
        with open(path, "rb") as source:
            digest.update(source.read())
    return digest.hexdigest()[:16]


def _python_files(directory: str) -> list[str]:
    """The ``.py`` files under ``directory`` (os.scandir: a third of rglob's time)."""
    found, pending = [], [directory]
    while pending:
        with os.scandir(pending.pop()) as entries:
            for entry in entries:
                if entry.is_dir():
                    if entry.name != "__pycache__":
                        pending.append(entry.path)
                elif entry.name.endswith(".py"):
                    found.append(entry.path)
    return found


def _plain(value: Any) -> bool:
    if isinstance(value, tuple):
        return all(_plain(item) for item in value)
    return isinstance(value, _PLAIN)


class TranslationCache:
    """The on-disk shapes and recipes of one ``source_version`` (see the module)."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory
        self._path: Path | None = None
        self._loaded = directory is None  # nothing to load when disabled
        self.shapes: dict[str, CodeType] = {}
        self.recipes: dict[Key, Stored] = {}
        self._new_shapes: dict[str, CodeType] = {}
        self._new_recipes: dict[Key, Stored] = {}
        self._used: set[Key] = set()
        self._used_shapes: set[str] = set()
        self._names: dict[int, tuple[str, str]] = {}
        self._indexed: set[str] = set()
        #: Instructions this process rebuilt from the file (``_used_shapes``: the
        #: shapes it took from there); for the tests and anyone measuring.
        self.hits = 0

    @property
    def enabled(self) -> bool:
        """Whether there is a directory to read and write (``VMI_CACHE_DIR`` not off)."""
        return self.directory is not None

    @property
    def path(self) -> Path | None:
        """The file of this source version (None when disabled)."""
        if self.directory is None:
            return None
        if self._path is None:
            self._path = self.directory / f"translations-{source_version()}.marshal"
        return self._path

    # -- reading ------------------------------------------------------------------
    def _ensure_loaded(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        shapes, recipes = self._read()
        self.shapes.update(shapes)
        self.recipes.update(recipes)

    def _read(self) -> tuple[dict[str, CodeType], dict[Key, Stored]]:
        """The file's shapes and recipes; empty when it is missing or unreadable."""
        path = self.path
        if path is None:
            return {}, {}
        try:
            data = marshal.loads(path.read_bytes())
            shapes, recipes = data["shapes"], data["recipes"]
            if not isinstance(shapes, dict) or not isinstance(recipes, dict):
                raise TypeError("not a translation cache")
        except (OSError, EOFError, ValueError, TypeError, KeyError):
            return {}, {}
        return shapes, recipes

    def code(self, source: str, filename: str) -> CodeType:
        """The code object of a maker's ``source``: from the file, else compiled
        (and remembered for the file)."""
        self._ensure_loaded()
        code = self.shapes.get(source)
        if code is not None:
            self._used_shapes.add(source)
            return code
        code = compile(source, filename, "exec")
        if self.enabled:
            self.shapes[source] = code
            self._new_shapes[source] = code
        return code

    def recipe(self, key: Key) -> Recipe | None:
        """The stored recipe of the instruction at ``key`` with its constants
        resolved, or None."""
        self._ensure_loaded()
        stored = self.recipes.get(key)
        if stored is None:
            return None
        try:
            source, constants, refs, next_eip, cycles, length, mnemonic = stored
        except (TypeError, ValueError):  # not a recipe: a foreign or damaged file
            return None
        if refs:
            try:
                resolved = list(constants)
                for position, module, name in refs:
                    resolved[position] = getattr(importlib.import_module(module), name)
            except (ImportError, AttributeError, IndexError, TypeError):
                return None
            constants = tuple(resolved)
        self.hits += 1
        self._used.add(key)
        return source, constants, next_eip, cycles, length, mnemonic

    # -- writing --------------------------------------------------------------------
    def remember(self, key: Key, source: str, constants: tuple[Any, ...], next_eip: int,
                 cycles: int, length: int, mnemonic: str) -> None:
        """Keep the recipe of a freshly compiled instruction for the file (skipped
        when one of its constants cannot be stored)."""
        if not self.enabled:
            return
        refs = []
        for position, value in enumerate(constants):
            if type(value) is int or _plain(value):
                continue
            name = self._name_of(value)
            if name is None:
                return
            refs.append((position, *name))
        plain = constants
        if refs:
            blanked = list(constants)
            for position, _module, _name in refs:
                blanked[position] = None
            plain = tuple(blanked)
        stored = (source, plain, tuple(refs), next_eip, cycles, length, mnemonic)
        self.recipes[key] = stored
        self._new_recipes[key] = stored

    def _name_of(self, value: Any) -> tuple[str, str] | None:
        """(module, name) of a module-level object of ``vmi.cpu``, or None."""
        found = self._names.get(id(value))
        if found is None:  # perhaps from a module imported since the last look
            for module_name, module in list(sys.modules.items()):
                if module_name.startswith("vmi.cpu") and module_name not in self._indexed:
                    self._indexed.add(module_name)
                    for attr, obj in vars(module).items():
                        if not _plain(obj) and not isinstance(obj, ModuleType):
                            self._names.setdefault(id(obj), (module_name, attr))
            found = self._names.get(id(value))
        if found is None or getattr(sys.modules.get(found[0]), found[1], None) is not value:
            return None
        return found

    def save(self) -> bool:
        """Merge what this process added into the file. Returns whether it wrote."""
        path = self.path
        if path is None or not (self._new_recipes or self._new_shapes):
            return False
        shapes, recipes = self._read()
        recipes.update(self._new_recipes)
        shapes.update(self._new_shapes)
        if len(recipes) > RECIPE_LIMIT:  # keep this process's working set
            recipes = {key: self.recipes[key] for key in self._used | set(self._new_recipes)}
            keep = self._used_shapes | set(self._new_shapes)
            keep.update(recipe[0] for recipe in recipes.values())
            shapes = {source: shapes[source] for source in keep if source in shapes}
        try:
            data = marshal.dumps({"shapes": shapes, "recipes": recipes})
            path.parent.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
            try:
                with os.fdopen(handle, "wb") as out:
                    out.write(data)
                os.replace(temporary, path)
            except BaseException:
                os.unlink(temporary)
                raise
        except (OSError, ValueError):
            return False
        self._new_recipes.clear()
        self._new_shapes.clear()
        _drop_old_files(path.parent)
        return True


def _drop_old_files(directory: Path) -> None:
    """Keep the ``FILES_KEPT`` newest translation files of ``directory``: files of
    source versions no longer installed would only take space."""
    try:
        files = sorted(directory.glob("translations-*.marshal"),
                       key=lambda path: path.stat().st_mtime, reverse=True)
        for path in files[FILES_KEPT:]:
            path.unlink(missing_ok=True)
    except OSError:
        pass


def cache_files(directory: Path) -> list[dict[str, Any]]:
    """What ``directory`` holds: one dict per translation file (path, bytes,
    whether it is this source version's, recipe and shape counts, or the reason it
    cannot be read)."""
    current = f"translations-{source_version()}.marshal"
    found = []
    for path in sorted(directory.glob("translations-*.marshal")):
        info: dict[str, Any] = {"path": str(path), "bytes": path.stat().st_size,
                                "current": path.name == current}
        try:
            data = marshal.loads(path.read_bytes())
            info["recipes"], info["shapes"] = len(data["recipes"]), len(data["shapes"])
        except (OSError, EOFError, ValueError, TypeError, KeyError) as error:
            info["unreadable"] = f"{type(error).__name__}: {error}"
        found.append(info)
    return found


def clear(directory: Path) -> int:
    """Delete the translation files (and leftover temporaries) in ``directory``;
    returns how many were removed."""
    removed = 0
    for pattern in ("translations-*.marshal", "translations-*.tmp"):
        for path in directory.glob(pattern):
            path.unlink(missing_ok=True)
            removed += 1
    return removed


#: The process's cache (its directory read from the environment at import).
CACHE = TranslationCache(cache_directory())


def reset(directory: Path | None) -> TranslationCache:
    """Point the process's cache at ``directory`` (None: off), dropping what it
    holds in memory; for tests and tools. Returns the new cache."""
    global CACHE
    CACHE = TranslationCache(directory)
    return CACHE


atexit.register(lambda: CACHE.save())
