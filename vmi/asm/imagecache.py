"""Assembled images kept on disk across processes, as translations are.

Assembling the bundled kernel takes about 0.4 s: half of the CPU time of
``python -m vmi run`` when the translation cache is warm. The output of
``assemble`` is a pure function of the texts it reads (the source, every file it
``.include`` s or ``.incbin`` s, the macro set and the files *that* includes), of
the defines, the base, the file name, and of the assembler's own code; so
``assemble_cached`` keeps what it produced in the translation cache's directory
(``vmi.cpu.codecache.cache_directory``), one file per image, named after a
SHA-256 of all of those:

* **the texts**: the source as given, the macro set's text, and, found by
  following every ``.include "name"`` and ``.incbin "name"`` written in them
  (resolved as the assembler resolves them, against the including file's
  directory), the bytes of each file named, or a marker when it is missing.
  The search reads every such directive, even one in a macro body, a false
  conditional or a comment, so it names a superset of what the assembler reads;
  a source with an ``.include`` or ``.incbin`` whose name is not a plain quoted
  literal (built from a macro argument), outside a ``#`` comment, is never
  cached. The key is taken again after assembling, and the image is stored only
  if it has not changed (a file edited meanwhile);
* **the parameters**: the macro set's name, the base, the file name and the
  defines in their order;
* **the assembler**: a hash of every ``vmi/asm`` Python file and
  ``codecache.source_version()`` (every ``vmi.cpu`` file, whose ISA table the
  encoder uses, and the Python version), and ``FORMAT``.

So a changed source, include, macro set, define or assembler starts a new file,
never a stale image.

**What a file holds.** A JSON object (no pickle: nothing in the file is ever
executed) with the image, base, symbols, sections, VMI annotation records,
warnings and unloaded sections of the ``Program``, and, for ``vmi cache``, what
was assembled and the assembler version. The listing is not stored: a program
taken from the cache makes it on first use by assembling the source again (few
callers look at it). The JSON is sealed as a translation file is
(``codecache.seal``: a header and an HMAC-SHA256 keyed by the same per-user
``key``), written atomically (``vmi.files.write_atomically``) and made 0600.

**What is checked before anything is used** is what ``codecache`` checks, with
its functions: the directory, the directory holding it, the key and the file
must be safe (owner and permissions, as ssh's StrictModes), else the image
cache is off for the process, with one line on stderr naming the place, the
cause and the fix; the digest must match before the JSON is parsed, else the
file is dropped with one line on stderr and the image assembled afresh (and the
file rewritten). A verified file whose content is not a well-formed image (only
a bug of vmi can make one) is dropped in the same way. Either way the image is
the one a fresh assembly gives. ``VMI_CACHE_DIR=off`` turns this cache off with
the translation cache.

The newest ``FILES_KEPT`` image files are kept (a hit refreshes a file's time).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vmi.asm import macro_source
from vmi.asm.errors import Diagnostic, Location
from vmi.asm.program import Annotation, ListingLine, Program, Section
from vmi.cpu import codecache
from vmi.cpu.codecache import Damaged, Refused
from vmi.files import write_atomically

#: The version of the stored layout; part of every key, so a change never reads old files.
FORMAT = 1
#: Image files are ``PREFIX`` + the key (64 hex digits) + ``SUFFIX``.
PREFIX = "image-"
SUFFIX = ".image"
#: Image files kept in a directory at most (the most recently used).
FILES_KEPT = 64
#: An ``.include`` or ``.incbin`` directive and whatever follows it on its line
#: (anywhere: in a macro body, a false conditional or a comment too).
_DIRECTIVE = re.compile(r"\.(?:include|incbin)\b([^\n]*)", re.IGNORECASE)
#: A plain quoted file name (what the assembler takes) at the start of the rest.
_QUOTED = re.compile(r'\s*"([^"\\\n]*)"')

Defines = dict[str, int] | None


@functools.cache
def assembler_version() -> str:
    """A hash of what the assembler's output depends on besides its input: every
    Python file of ``vmi.asm``, ``vmi.cpu`` (the ISA table) and ``FORMAT``."""
    package = os.path.dirname(os.path.abspath(__file__))
    digest = hashlib.sha256()
    digest.update(f"format {FORMAT}\0cpu {codecache.source_version()}\0".encode())
    for path in sorted(codecache._python_files(package)):
        digest.update(os.path.relpath(path, package).encode() + b"\0")
        with open(path, "rb") as source:
            digest.update(source.read())
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def _read_bytes(path: Path) -> bytes | None:
    """The bytes of ``path`` if it is a regular file, else None (the assembler
    refuses anything else, so such a name makes a key of its own and no file)."""
    try:
        if not path.is_file():
            return None
        return path.read_bytes()
    except OSError:
        return None


def _hash_texts(digest: Any, text: str, filename: str, seen: set[str],
                data: bytes | None = None) -> bool:
    """Feed ``digest`` with the file ``filename`` (its bytes ``data``, else ``text``
    encoded) and, recursively, every file the ``.include`` and ``.incbin``
    directives of ``text`` name. Returns False when a directive's name is not a
    plain quoted literal (the files read cannot be known without assembling)."""
    if data is None:
        data = text.encode("utf-8", "surrogatepass")  # one text, one byte string
    digest.update(b"file\0" + filename.encode("utf-8", "surrogatepass") + b"\0"
                  + len(data).to_bytes(8, "big") + data)
    directory = Path(filename).parent if filename != "<string>" else Path.cwd()
    for match in _DIRECTIVE.finditer(text):
        quoted = _QUOTED.match(match.group(1))
        if quoted is None:
            line_start = text.rfind("\n", 0, match.start()) + 1
            if "#" in text[line_start:match.start()]:
                continue  # in a comment ("native.S and naive.S `.include` it")
            return False
        path = directory / quoted.group(1)
        name = str(path)
        digest.update(b"names\0" + name.encode("utf-8", "surrogatepass") + b"\0")
        if name in seen:
            continue
        seen.add(name)
        included = _read_bytes(path)
        if included is None:
            digest.update(b"missing\0")
            continue
        # An .incbin'd file is scanned as text too: a superset of names is harmless.
        if not _hash_texts(digest, included.decode("utf-8", "replace"), name, seen,
                           included):
            return False
    return True


def image_key(source: str, *, macros: str | None, base: int, filename: str,
              defines: Defines) -> str | None:
    """The SHA-256 (hex) naming the image ``assemble`` makes of these arguments, or
    None when it cannot be known without assembling (see the module)."""
    digest = hashlib.sha256()
    digest.update(f"vmi image {FORMAT}\0{assembler_version()}\0{base:#x}\0".encode())
    if defines and not all(isinstance(value, int) for value in defines.values()):
        return None  # assemble says what is wrong
    digest.update(json.dumps([macros, list((defines or {}).items())]).encode() + b"\0")
    seen: set[str] = set()
    if macros is not None:
        try:
            text, path = macro_source(macros)
        except ValueError:
            return None  # assemble says why
        if not _hash_texts(digest, text, path, seen):
            return None
    if not _hash_texts(digest, source, filename, seen):
        return None
    return digest.hexdigest()


# -- the stored form: JSON, checked field by field when read -----------------------------
def _diagnostic(diagnostic: Diagnostic) -> list[Any]:
    location = diagnostic.location
    return [diagnostic.severity, diagnostic.message,
            [location.filename, location.line, location.column, location.text],
            [_diagnostic(note) for note in diagnostic.notes]]


def encode(program: Program, *, key: str, what: dict[str, Any]) -> bytes:
    """The JSON payload of ``program`` (everything but its listing); ``what`` says
    what was assembled, for ``vmi cache``."""
    return json.dumps({
        "format": FORMAT,
        "key": key,
        "assembler": assembler_version(),
        "what": what,
        "image": base64.b64encode(program.image).decode("ascii"),
        "base": program.base,
        "symbols": program.symbols,
        "sections": [[s.name, s.address, s.size, s.alignment, s.loaded, s.nobits, s.code]
                     for s in program.sections],
        "annotations": [[a.site, a.call, a.site_length, a.native_length]
                        for a in program.annotations],
        "warnings": [_diagnostic(warning) for warning in program.warnings],
        "unloaded": {name: base64.b64encode(data).decode("ascii")
                     for name, data in program.unloaded.items()},
    }, separators=(",", ":")).encode("utf-8")


def _want(value: Any, kind: type | tuple[type, ...], what: str) -> Any:
    """``value`` if it is of ``kind`` (a bool is no int here), else ValueError."""
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ValueError(f"{what} is not {getattr(kind, '__name__', kind)}")
    return value


def _ints(row: Any, count: int, what: str) -> list[int]:
    row = _want(row, list, what)
    if len(row) != count:
        raise ValueError(f"{what} has {len(row)} fields, not {count}")
    return [_want(item, int, what) for item in row]


def _undiagnostic(row: Any, depth: int = 0) -> Diagnostic:
    if depth > 8:
        raise ValueError("notes nested too deeply")
    severity, message, location, notes = _want(row, list, "a warning")
    filename, line, column, text = _want(location, list, "a location")
    return Diagnostic(_want(severity, str, "severity"), _want(message, str, "message"),
                      Location(_want(filename, str, "filename"), _want(line, int, "line"),
                               _want(column, int, "column"), _want(text, str, "text")),
                      tuple(_undiagnostic(note, depth + 1)
                            for note in _want(notes, list, "notes")))


def decode(payload: bytes, *, key: str,
           listing: Callable[[], tuple[ListingLine, ...]]) -> Program:
    """The ``Program`` a payload of ``encode`` holds, with ``listing`` making its
    listing; ValueError (or TypeError) when it is not one made for ``key``."""
    content = _want(json.loads(payload.decode("utf-8")), dict, "the content")
    if content.get("format") != FORMAT or content.get("key") != key:
        raise ValueError("made for another key or format")
    symbols = {_want(name, str, "a symbol"): _want(value, int, "a symbol's value")
               for name, value in _want(content["symbols"], dict, "symbols").items()}
    sections = []
    for row in _want(content["sections"], list, "sections"):
        name, address, size, alignment, loaded, nobits, code = _want(row, list, "a section")
        sections.append(Section(_want(name, str, "a section name"),
                                *(_want(v, int, "a section field")
                                  for v in (address, size, alignment)),
                                *(_want(v, bool, "a section flag")
                                  for v in (loaded, nobits, code))))
    annotations = tuple(Annotation(*_ints(row, 4, "an annotation"))
                        for row in _want(content["annotations"], list, "annotations"))
    unloaded = {_want(name, str, "a section name"):
                base64.b64decode(_want(data, str, "section bytes"), validate=True)
                for name, data in _want(content["unloaded"], dict, "unloaded").items()}
    return Program(
        image=base64.b64decode(_want(content["image"], str, "the image"), validate=True),
        base=_want(content["base"], int, "the base"),
        symbols=symbols,
        sections=tuple(sections),
        annotations=annotations,
        listing=listing,
        warnings=tuple(_undiagnostic(row)
                       for row in _want(content["warnings"], list, "warnings")),
        unloaded=unloaded,
    )


# -- the cache ------------------------------------------------------------------------------
def _fresh(source: str, macros: str | None, base: int, filename: str,
           defines: Defines) -> Program:
    """What ``vmi.asm.assemble`` makes of these arguments (the assembler is imported
    only here, so a process whose images all come from the cache never loads it)."""
    from vmi.asm import assemble

    return assemble(source, macros=macros, base=base, filename=filename, defines=defines)


def _listing(source: str, macros: str | None, base: int, filename: str,
             defines: Defines) -> tuple[ListingLine, ...]:
    return _fresh(source, macros, base, filename, defines).listing


class ImageCache:
    """The image files of one cache directory (None: off), and what this process
    did with them: ``hits`` (images read from a file), ``misses`` (assembled) and
    ``stored`` (files written), for the tests and anyone measuring."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory
        #: Why the directory, its key or a file was refused (the cache is then off
        #: for the process), or None.
        self.refused: str | None = None
        self.hits = 0
        self.misses = 0
        self.stored = 0

    @property
    def enabled(self) -> bool:
        """Whether there is a directory to use (``VMI_CACHE_DIR`` not off, nothing refused)."""
        return self.directory is not None and self.refused is None

    def path(self, key: str) -> Path | None:
        """The file of the image named ``key`` (None when disabled)."""
        return None if self.directory is None else self.directory / f"{PREFIX}{key}{SUFFIX}"

    def assemble(self, source: str, *, macros: str | None = "native", base: int = 0,
                 filename: str = "<string>", defines: Defines = None) -> Program:
        """``vmi.asm.assemble(source, ...)``, from the file of its key when there is a
        good one, else assembled and stored (see the module)."""
        key = image_key(source, macros=macros, base=base, filename=filename,
                        defines=defines) if self.enabled else None
        if key is not None:
            defines_copy = dict(defines) if defines else None
            listing = functools.partial(_listing, source, macros, base, filename, defines_copy)
            program = self._load(key, listing)
            if program is not None:
                self.hits += 1
                return program
        program = _fresh(source, macros, base, filename, defines)
        self.misses += 1
        if key is not None and self.enabled and key == image_key(
                source, macros=macros, base=base, filename=filename, defines=defines):
            # (not when reading refused something, nor when an included file changed
            # while it was assembled: the image might not be the key's)
            what = {"source": filename, "macros": macros, "base": base,
                    "defines": dict(defines or {})}
            self._store(key, program, what)
        return program

    def _refuse(self, refusal: Refused) -> None:
        """Turn the cache off for the process, saying why on one line of stderr."""
        self.refused = str(refusal)
        codecache._warn(f"image cache refused: {refusal}; assembling without the cache "
                        f"({refusal.fix})")

    def _load(self, key: str, listing: Callable[[], tuple[ListingLine, ...]]) -> Program | None:
        """The program in the file of ``key`` once the directory, the key and the file
        pass their checks; None when there is no such file, or it is damaged (said
        once on stderr; the caller assembles and rewrites it), or refused (the cache
        is then off)."""
        path = self.path(key)
        assert path is not None and self.directory is not None
        try:
            if not codecache._check_directory(self.directory):
                return None
            secret = codecache._load_key(self.directory, create=False)
            payload = read_sealed(path, secret)
            if payload is None:
                return None
            try:
                program = decode(payload, key=key, listing=listing)
            except (ValueError, TypeError, KeyError) as error:
                raise Damaged(f"verified but not an image ({type(error).__name__}: "
                              f"{error})") from None
        except Refused as refusal:
            self._refuse(refusal)
            return None
        except Damaged as damage:
            codecache._warn(f"image cache {path}: {damage}; dropped, assembled again",
                            about=str(path))
            return None
        except OSError:
            return None
        try:
            os.utime(path)  # recently used: kept by _drop_old_files
        except OSError:
            pass
        return program

    def _store(self, key: str, program: Program, what: dict[str, Any]) -> None:
        """Write the file of ``key``: the directory made 0700 and the key 0600 if they
        are missing, both checked as when reading; the file sealed, written whole
        and made 0600. Errors of the file system are left alone: the cache only
        ever saves time."""
        path = self.path(key)
        assert path is not None and self.directory is not None
        directory = self.directory
        try:
            if not codecache._check_directory(directory):
                directory.mkdir(mode=0o700, parents=True, exist_ok=True)
                codecache._check_directory(directory)
            secret = codecache._load_key(directory, create=True)
            if secret is None:
                return
            data = codecache.seal(secret, path.name, encode(program, key=key, what=what))
            write_atomically(path, lambda out: out.write(data))
            os.chmod(path, 0o600)
        except Refused as refusal:
            self._refuse(refusal)
            return
        except (OSError, ValueError):
            return
        self.stored += 1
        _drop_old_files(directory)


def read_sealed(path: Path, secret: bytes | None) -> bytes | None:
    """The verified payload of the image file ``path`` (None when there is none):
    ``codecache.read_sealed``, the translation files' reader."""
    return codecache.read_sealed(path, secret)


def _image_files(directory: Path) -> list[Path]:
    return sorted(directory.glob(f"{PREFIX}*{SUFFIX}"))


def _drop_old_files(directory: Path) -> None:
    """Keep the ``FILES_KEPT`` most recently used image files of ``directory``."""
    try:
        files = sorted(_image_files(directory), key=lambda path: path.stat().st_mtime,
                       reverse=True)
        for path in files[FILES_KEPT:]:
            path.unlink(missing_ok=True)
    except OSError:
        pass


def inspect(directory: Path) -> list[dict[str, Any]]:
    """What ``vmi cache`` reports of the image files of ``directory``, each checked as
    a run checks it: path, bytes, and either what it holds (``source``, ``macros``,
    ``base``, ``image_bytes``, ``symbols``, ``current``: made by this assembler), or
    ``damaged`` (the cause: a run drops it and assembles again), ``refused`` (why a
    run would turn the cache off over it) or ``unchecked`` (the directory or the
    key is refused: ``codecache.inspect`` says why)."""
    secret, refused = None, False
    try:
        if codecache._check_directory(directory):
            secret = codecache._load_key(directory, create=False)
    except Refused:
        refused = True
    found = []
    for path in _image_files(directory):
        try:
            size = path.lstat().st_size
        except OSError:  # gone meanwhile
            continue
        info: dict[str, Any] = {"path": str(path), "bytes": size}
        if refused:
            info["unchecked"] = True
            found.append(info)
            continue
        try:
            payload = read_sealed(path, secret)
            if payload is None:  # gone meanwhile
                continue
            key = path.name[len(PREFIX):-len(SUFFIX)]
            try:
                program = decode(payload, key=key, listing=tuple)
                content = json.loads(payload)
            except (ValueError, TypeError, KeyError) as error:
                raise Damaged(f"verified but not an image ({type(error).__name__}: "
                              f"{error})") from None
        except Damaged as damage:
            info["damaged"] = str(damage)
        except Refused as refusal:
            info["refused"] = str(refusal)
        else:
            what = content.get("what") if isinstance(content.get("what"), dict) else {}
            macros = what.get("macros")
            info.update(source=str(what.get("source")),
                        macros=macros if isinstance(macros, str) else None,
                        base=program.base, image_bytes=len(program.image),
                        symbols=len(program.symbols),
                        current=content.get("assembler") == assembler_version())
        found.append(info)
    return found


def clear(directory: Path) -> int:
    """Delete the image files of ``directory`` and temporaries left by an interrupted
    write, whatever their state (nothing is read); returns how many image files
    went. (``codecache.clear`` deletes the key they are sealed with.)"""
    removed = 0
    for pattern in (f"{PREFIX}*{SUFFIX}", f".{PREFIX}*{SUFFIX}.*.tmp"):
        for path in directory.glob(pattern):
            path.unlink(missing_ok=True)
            removed += pattern.startswith(PREFIX)
    return removed


#: The process's image cache (its directory read from the environment at import).
CACHE = ImageCache(codecache.cache_directory())


def reset(directory: Path | None) -> ImageCache:
    """Point the process's image cache at ``directory`` (None: off); for tests and
    tools. Returns the new cache."""
    global CACHE
    CACHE = ImageCache(directory)
    return CACHE


def assemble_cached(source: str, *, macros: str | None = "native", base: int = 0,
                    filename: str = "<string>", defines: Defines = None) -> Program:
    """``vmi.asm.assemble`` through the process's image cache (see the module)."""
    return CACHE.assemble(source, macros=macros, base=base, filename=filename,
                          defines=defines)
