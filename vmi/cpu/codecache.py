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
file and renamed, so a reader never sees half a file).

**What is checked before anything is used.** The file holds marshalled code
objects that the process executes, so a damaged file could crash or silently
mislead the interpreter and a planted one would run its author's code. Hence:

* every file starts with a header (``MAGIC``, ``FORMAT``) and an HMAC-SHA256 of
  the header, the file's name and the marshalled payload, keyed by a random
  32-byte key in ``key`` in the cache directory (created 0600 at the first save;
  only its owner can read it, so nobody else can make a file that passes). The
  digest is checked before the payload is unmarshalled; a file that fails it
  (a flipped bit, a truncation, a file written without this key) is dropped with
  one line on stderr naming the file and the cause, and rebuilt: the run is
  exactly what it would be with no cache;
* the cache directory is created 0700. Before it is used, the directory, the
  directory holding it, the key and the file read must be safe, as ssh requires of
  ``~/.ssh``: the directory owned by this user and writable by nobody else; its
  parent owned by this user or root and writable by nobody else unless sticky
  (as ``/tmp``); the key a regular file (not a symbolic link) owned by this user
  and accessible to nobody else; the translation file a regular file owned by
  this user and writable by nobody else. Anything else turns the cache off for
  the process with one line on stderr saying what and how to fix it;
* a directory that cannot be created or written is left alone: the cache only
  ever saves time.

Where it lives: ``$VMI_CACHE_DIR``, else ``$XDG_CACHE_HOME/vmi``, else
``~/.cache/vmi``. ``VMI_CACHE_DIR=off`` turns it off.
"""

from __future__ import annotations

import atexit
import errno
import hashlib
import hmac
import importlib
import importlib.util
import marshal
import os
import stat
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
#: The first bytes of every translation file.
MAGIC = b"vmi-translations\n"
#: The layout of what follows ``MAGIC``: one byte, bumped when it changes.
FORMAT = 1
#: Bytes of the payload's length (big-endian) after the format byte.
LENGTH_SIZE = 8
#: Bytes of the HMAC-SHA256 after the length.
DIGEST_SIZE = 32
#: ``MAGIC``, the format byte, the length and the digest: what precedes the
#: marshalled payload.
HEADER_SIZE = len(MAGIC) + 1 + LENGTH_SIZE + DIGEST_SIZE
#: The name of the per-user HMAC key in the cache directory, and its size.
KEY_NAME = "key"
KEY_SIZE = 32
#: Whether this system has owners and permission bits to check (POSIX).
_POSIX = hasattr(os, "getuid")
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_BINARY = getattr(os, "O_BINARY", 0)
#: Opening a file never waits (a FIFO in place of a file is refused, not waited on).
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)

Key = tuple[bytes, int, int, int]
#: (shape source, constants, next EIP, cycles, length, mnemonic)
Recipe = tuple[str, tuple[Any, ...], int, int, int, str]
#: As stored: (source, plain constants (None where a reference goes), references
#: ((position, module, name), ...), next EIP, cycles, length, mnemonic)
Stored = tuple[str, tuple[Any, ...], tuple[tuple[int, str, str], ...], int, int, int, str]
#: What a file holds: shapes (source -> code object) and recipes.
Content = tuple[dict[str, CodeType], dict[Key, Stored]]

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


# -- what is checked before the cache is used (see the module) --------------------------
class Refused(Exception):  # noqa: N818 (a verdict, not an error of the program)
    """The cache directory, its key or a file in it is not safe to use: another user
    could have written it. The cache is off for the process."""

    def __init__(self, place: Path | str, reason: str, fix: str) -> None:
        super().__init__(f"{place} {reason}")
        self.place, self.reason, self.fix = str(place), reason, fix

    def line(self) -> str:
        """The one line printed on stderr."""
        return (f"translation cache refused: {self}; running without the cache "
                f"({self.fix})")


class Damaged(Exception):  # noqa: N818 (a verdict, not an error of the program)
    """A translation file failed its check: it is dropped and rebuilt."""


#: What this process has already spoken about (a message, or a damaged file's path).
_WARNED: set[str] = set()


def _warn(message: str, about: str | None = None) -> None:
    """Print ``message`` as one line on stderr, once per process for each ``about``
    (default: the message itself), so a file found damaged when it is read and again
    when it is merged at the save is reported once."""
    topic = message if about is None else about
    if topic in _WARNED:
        return
    _WARNED.add(topic)
    try:
        print(f"vmi: {message}", file=sys.stderr, flush=True)
    except (OSError, ValueError, AttributeError):  # no stderr left (at exit): nothing to tell
        pass


def _unsafe(info: os.stat_result, *, secret: bool = False) -> str | None:
    """Why a file or directory with status ``info`` could have been written (or, when
    ``secret``, read) by another user, or None. As ssh's StrictModes: owned by this
    user, and no write (or, for a secret, no access at all) by group or others."""
    if not _POSIX:
        return None
    uid = os.getuid()
    if info.st_uid != uid:
        return f"is owned by uid {info.st_uid}, not by this user (uid {uid})"
    if info.st_mode & (0o077 if secret else 0o022):
        who = "readable or writable" if secret else "writable"
        return f"is {who} by group or others (mode {stat.S_IMODE(info.st_mode):04o})"
    return None


def _check_directory(directory: Path) -> bool:
    """Raise ``Refused`` when ``directory`` (followed if a symbolic link) or the
    directory holding it is unsafe; returns whether ``directory`` exists (one that
    does not is created 0700 at the first save). Its parent may also belong to root,
    and may be writable by others if it is sticky (``/tmp``): nobody else can then
    rename or replace ``directory``."""
    try:
        info = os.stat(directory)
    except FileNotFoundError:
        return False
    except OSError as error:
        raise Refused(directory, f"cannot be examined ({error.strerror or error})",
                      "set VMI_CACHE_DIR elsewhere, or to off") from None
    if not stat.S_ISDIR(info.st_mode):
        raise Refused(directory, "is not a directory", "set VMI_CACHE_DIR elsewhere, or to off")
    problem = _unsafe(info)
    if problem:
        raise Refused(directory, problem, f"chmod 700 {directory}" if info.st_uid == os.getuid()
                      else "set VMI_CACHE_DIR to a directory of your own")
    if not _POSIX:
        return True
    parent = Path(os.path.abspath(directory)).parent
    try:
        above = os.stat(parent)
    except OSError as error:
        raise Refused(parent, f"(holding the cache) cannot be examined "
                      f"({error.strerror or error})", "set VMI_CACHE_DIR elsewhere") from None
    if above.st_uid not in (os.getuid(), 0):
        raise Refused(parent, f"(holding the cache) is owned by uid {above.st_uid}, not by "
                      "this user or root", "set VMI_CACHE_DIR to a directory of your own")
    if above.st_mode & 0o022 and not above.st_mode & stat.S_ISVTX:
        raise Refused(parent, "(holding the cache) is writable by group or others and not "
                      f"sticky (mode {stat.S_IMODE(above.st_mode):04o})",
                      "set VMI_CACHE_DIR to a directory of your own")
    return True


def check_directory(directory: Path) -> str | None:
    """Why ``directory`` would be refused as the cache (see the module), or None."""
    try:
        _check_directory(directory)
    except Refused as refusal:
        return str(refusal)
    return None


def _open_private(path: Path) -> tuple[int, os.stat_result] | None:
    """A descriptor of the regular file ``path`` (not followed if a symbolic link)
    and its status, or None when there is none; ``Refused`` when it is not a
    regular file. The status is taken from the descriptor, so it is the file read."""
    try:
        fd = os.open(path, os.O_RDONLY | _NOFOLLOW | _BINARY | _NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise Refused(path, "is a symbolic link", "python -m vmi cache --clear") from None
        raise Refused(path, f"cannot be opened ({error.strerror or error})",
                      "python -m vmi cache --clear") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise Refused(path, "is not a regular file", "remove it")
    return fd, info


def _load_key(directory: Path, *, create: bool) -> bytes | None:
    """This user's HMAC key in ``directory`` (None when there is none and not
    ``create``); ``Refused`` when it could be known or replaced by someone else."""
    path = directory / KEY_NAME
    opened = _open_private(path)
    if opened is None:
        return _create_key(directory) if create else None
    fd, info = opened
    with os.fdopen(fd, "rb") as handle:
        problem = _unsafe(info, secret=True)
        if problem:
            raise Refused(path, problem, "python -m vmi cache --clear makes a new key")
        key = handle.read(KEY_SIZE + 1)
    if len(key) != KEY_SIZE:
        raise Refused(path, f"holds {len(key)} bytes, not {KEY_SIZE}",
                      "python -m vmi cache --clear makes a new key")
    return key


def _create_key(directory: Path) -> bytes | None:
    """Make this user's key: written 0600 under another name, then linked into
    place, so no process ever reads half a key and none replaces another's."""
    key = os.urandom(KEY_SIZE)
    handle, temporary = tempfile.mkstemp(dir=directory, prefix=".key-", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(key)
        try:
            os.link(temporary, directory / KEY_NAME)
        except FileExistsError:  # another process was first: use its key
            return _load_key(directory, create=False)
        except (OSError, AttributeError, NotImplementedError):  # no hard links here
            fd = os.open(directory / KEY_NAME, os.O_WRONLY | os.O_CREAT | os.O_EXCL
                         | _NOFOLLOW | _BINARY, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(key)
    finally:
        os.unlink(temporary)
    return key


def _digest(key: bytes, name: str, length: bytes, payload: bytes) -> bytes:
    """The HMAC-SHA256 of a translation file: its magic, format, file name (so a
    file is never taken for another source version's) and payload."""
    mac = hmac.new(key, digestmod=hashlib.sha256)
    for part in (MAGIC, bytes([FORMAT]), name.encode("utf-8"), b"\0", length, payload):
        mac.update(part)
    return mac.digest()


def seal(key: bytes, name: str, payload: bytes) -> bytes:
    """A translation file's bytes: the header (magic, format, payload length,
    digest) and then ``payload``."""
    length = len(payload).to_bytes(LENGTH_SIZE, "big")
    return MAGIC + bytes([FORMAT]) + length + _digest(key, name, length, payload) + payload


def unseal(key: bytes | None, name: str, data: bytes) -> bytes:
    """The payload of the translation file ``name`` whose bytes are ``data``, after
    checking its header and digest; ``Damaged`` (with the cause) otherwise."""
    if not data.startswith(MAGIC):
        if len(data) < len(MAGIC) and MAGIC.startswith(data):
            raise Damaged(f"truncated: {len(data)} bytes, inside the header")
        raise Damaged("not a vmi translation file (its first bytes are not the magic)")
    if len(data) < HEADER_SIZE:
        raise Damaged(f"truncated: {len(data)} bytes, inside the {HEADER_SIZE}-byte header")
    if data[len(MAGIC)] != FORMAT:
        raise Damaged(f"format {data[len(MAGIC)]}, where this vmi reads {FORMAT}")
    at = len(MAGIC) + 1
    length = data[at:at + LENGTH_SIZE]
    digest = data[at + LENGTH_SIZE:HEADER_SIZE]
    payload = data[HEADER_SIZE:]
    if int.from_bytes(length, "big") != len(payload):
        raise Damaged(f"{len(payload):,} bytes of payload where the header says "
                      f"{int.from_bytes(length, 'big'):,} (truncated or damaged)")
    if key is None:
        raise Damaged(f"no key to check it with ({KEY_NAME} is missing)")
    if not hmac.compare_digest(digest, _digest(key, name, length, payload)):
        raise Damaged("digest mismatch (damaged, or not written with this user's key)")
    return payload


def read_sealed(path: Path, key: bytes | None) -> bytes | None:
    """The verified payload of the sealed cache file ``path`` (None when there is
    none): ``Refused`` when someone else could have written it, ``Damaged`` when
    it cannot be read or fails its digest. Nothing is parsed here (translation and
    image files alike)."""
    opened = _open_private(path)
    if opened is None:
        return None
    fd, info = opened
    with os.fdopen(fd, "rb") as handle:
        problem = _unsafe(info)
        if problem:
            raise Refused(path, problem, "python -m vmi cache --clear")
        try:
            data = handle.read()
        except OSError as error:
            raise Damaged(f"cannot be read ({error.strerror or error})") from None
    return unseal(key, path.name, data)


def _load_file(path: Path, key: bytes | None) -> Content | None:
    """The shapes and recipes of the translation file ``path`` (None when there is
    none): ``Refused`` when someone else could have written it, ``Damaged`` when it
    fails its check. Nothing is unmarshalled before the digest matches."""
    payload = read_sealed(path, key)
    if payload is None:
        return None
    try:  # what this user's key signed: only a bug of vmi can fail here
        content = marshal.loads(payload)
        shapes, recipes = content["shapes"], content["recipes"]
    except Exception as error:  # noqa: BLE001 (a file must never end the run)
        raise Damaged(f"verified but unreadable ({type(error).__name__}: {error})") from None
    if not isinstance(shapes, dict) or not isinstance(recipes, dict):
        raise Damaged("verified but not a translation cache")
    return shapes, recipes


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
        #: Why the directory, its key or the file was refused (the cache is then off
        #: for the process), or None.
        self.refused: str | None = None
        #: Instructions this process rebuilt from the file (``_used_shapes``: the
        #: shapes it took from there); for the tests and anyone measuring.
        self.hits = 0

    @property
    def enabled(self) -> bool:
        """Whether there is a directory to read and write (``VMI_CACHE_DIR`` not off,
        and nothing refused)."""
        return self.directory is not None and self.refused is None

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
        try:
            shapes, recipes = self._read()
        except Refused as refusal:
            self._refuse(refusal)
            return
        except OSError:  # the directory vanished while it was read: as if empty
            return
        self.shapes.update(shapes)
        self.recipes.update(recipes)

    def _refuse(self, refusal: Refused) -> None:
        """Turn the cache off for the process, saying why on one line of stderr."""
        self.refused = str(refusal)
        self._new_shapes.clear()
        self._new_recipes.clear()
        _warn(refusal.line())

    def _read(self) -> Content:
        """The file's shapes and recipes once the directory, the key and the file have
        passed every check (see the module); empty when there is no file, or when it
        is damaged (said once on stderr: the file is rebuilt at the next save).
        Raises ``Refused`` when another user could have written any of them."""
        path = self.path
        if path is None:
            return {}, {}
        try:
            found = read_file(path)
        except Damaged as damage:
            _warn(f"translation cache {path}: {damage}; dropped, rebuilt as code runs",
                  about=str(path))
            return {}, {}
        return found if found is not None else ({}, {})

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
        """Merge what this process added into the file. Returns whether it wrote.
        The directory is created 0700 and the key 0600 if they are missing; the
        directory, the key and the file it merges with are checked as when reading."""
        path = self.path
        if path is None or self.refused is not None or not (self._new_recipes
                                                            or self._new_shapes):
            return False
        try:
            if not _check_directory(path.parent):
                path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                _check_directory(path.parent)
            secret = _load_key(path.parent, create=True)
            shapes, recipes = self._read()
        except Refused as refusal:
            self._refuse(refusal)
            return False
        except OSError:
            return False
        if secret is None:  # the key went between making and reading it: next time
            return False
        recipes.update(self._new_recipes)
        shapes.update(self._new_shapes)
        if len(recipes) > RECIPE_LIMIT:  # keep this process's working set
            recipes = {key: self.recipes[key] for key in self._used | set(self._new_recipes)}
            keep = self._used_shapes | set(self._new_shapes)
            keep.update(recipe[0] for recipe in recipes.values())
            shapes = {source: shapes[source] for source in keep if source in shapes}
        try:
            data = seal(secret, path.name, marshal.dumps({"shapes": shapes, "recipes": recipes}))
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


def read_file(path: Path) -> Content | None:
    """The shapes and recipes of the translation file ``path`` after every check a
    run makes (its directory, the key, the file's owner and mode, its digest; see
    the module), or None when it does not exist. Raises ``Refused`` or ``Damaged``."""
    if not _check_directory(path.parent):
        return None
    return _load_file(path, _load_key(path.parent, create=False))


def inspect(directory: Path) -> dict[str, Any]:
    """What ``vmi cache`` reports of ``directory``, checked as a run checks it:
    ``refused`` (why the directory or its key would turn the cache off, or None) and
    ``files``, one dict per translation file: path, bytes, whether it is this source
    version's, and either its recipe and shape counts (it passed every check),
    ``damaged`` (the cause: a run drops and rebuilds it), ``refused`` (why a run
    would turn the cache off over it) or ``unchecked`` (the directory is refused)."""
    current = f"translations-{source_version()}.marshal"
    refused, key = None, None
    try:
        if _check_directory(directory):
            key = _load_key(directory, create=False)
    except Refused as refusal:
        refused = str(refusal)
    found = []
    for path in sorted(directory.glob("translations-*.marshal")):
        try:
            size = path.lstat().st_size
        except OSError:  # gone meanwhile
            continue
        info: dict[str, Any] = {"path": str(path), "bytes": size,
                                "current": path.name == current}
        if refused is not None:
            info["unchecked"] = True
        else:
            try:
                loaded = _load_file(path, key)
            except Damaged as damage:
                info["damaged"] = str(damage)
            except Refused as refusal:
                info["refused"] = str(refusal)
            else:
                if loaded is None:  # gone meanwhile
                    continue
                info["recipes"], info["shapes"] = len(loaded[1]), len(loaded[0])
        found.append(info)
    return {"refused": refused, "files": found}


def cache_files(directory: Path) -> list[dict[str, Any]]:
    """The ``files`` of ``inspect(directory)``: each translation file, checked."""
    files: list[dict[str, Any]] = inspect(directory)["files"]
    return files


def clear(directory: Path) -> int:
    """Delete the translation files, leftover temporaries and the key in
    ``directory`` (a new key is made at the next save, so ``--clear`` is also the
    way out of a damaged or exposed key); returns how many translation files were
    removed. Nothing is read, so damaged or refused files go too."""
    removed = 0
    for pattern in ("translations-*.marshal", "translations-*.tmp", ".key-*.tmp", KEY_NAME):
        for path in directory.glob(pattern):
            path.unlink(missing_ok=True)
            removed += pattern == "translations-*.marshal"
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
