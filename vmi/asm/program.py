"""What ``vmi.asm.assemble`` returns: the flat image and everything known about it."""

from __future__ import annotations

from collections.abc import Callable

from attrs import field, frozen

from vmi.asm.errors import Diagnostic

#: The section whose 8-byte records describe VMI hook sites (see docs/asm.md).
ANNOTATION_SECTION = ".vmi.annotation"
#: Size of one annotation record: .long site; .byte call, site_len, native_len, 0.
ANNOTATION_RECORD_SIZE = 8


@frozen
class Section:
    """A section as laid out: ``loaded`` sections with ``nobits`` False are in the image.

    ``nobits`` sections (``.bss``) follow the image and are reported by size
    only: a loader zero-fills ``size`` bytes at ``address``. Sections that are
    not loaded (``.vmi.annotation``, sections without the ``a`` flag) are placed
    after those so their labels have distinct addresses, but are not in the image.
    """

    name: str
    address: int
    size: int
    alignment: int
    loaded: bool
    nobits: bool
    code: bool

    @property
    def end(self) -> int:
        return self.address + self.size


@frozen
class Annotation:
    """One VMI hook site: ``call`` is the VMI API call number (2006 numbering);
    ``site_length`` bytes at ``site`` may be patched, of which the first
    ``native_length`` are the native instruction(s)."""

    site: int
    call: int
    site_length: int
    native_length: int


@frozen
class ListingLine:
    """One source statement: where it landed, the bytes it produced, its text."""

    address: int
    data: bytes
    text: str
    filename: str
    line: int
    section: str
    depth: int = 0  # macro expansion depth: 0 for lines of the source itself


@frozen
class Program:
    """An assembled program.

    ``image`` holds the bytes of the loaded sections from ``base`` up to the
    end of the last one (gaps between sections zero-filled). ``symbols`` maps
    every non-local symbol (labels and ``.equ``/``.set`` constants) to its value.
    """

    image: bytes
    base: int
    symbols: dict[str, int]
    sections: tuple[Section, ...]
    annotations: tuple[Annotation, ...]
    #: The listing, or a function that makes it: most callers never look at it,
    #: and a large source has millions of lines (``listing`` makes it once).
    _listing: tuple[ListingLine, ...] | Callable[[], tuple[ListingLine, ...]] = field(
        eq=False, repr=False)
    warnings: tuple[Diagnostic, ...] = ()
    #: Contents of sections kept out of the image (``.vmi.annotation``), by name.
    unloaded: dict[str, bytes] = field(factory=dict)

    @property
    def listing(self) -> tuple[ListingLine, ...]:
        """One ``ListingLine`` per statement of the source (not of the macro set)."""
        listing = self._listing
        if callable(listing):
            listing = listing()
            object.__setattr__(self, "_listing", listing)
        return listing

    @property
    def end(self) -> int:
        """The address just past the image."""
        return self.base + len(self.image)

    def section(self, name: str) -> Section:
        """The section called ``name`` (KeyError if there is none)."""
        for section in self.sections:
            if section.name == name:
                return section
        raise KeyError(name)

    def section_bytes(self, name: str) -> bytes:
        """The bytes of a section: cut from the image, kept aside for sections not
        loaded, zeros for ``nobits`` sections."""
        section = self.section(name)
        if name in self.unloaded:
            return self.unloaded[name]
        if not section.loaded or section.nobits:
            return bytes(section.size)
        start = section.address - self.base
        return self.image[start : start + section.size]

    def format_listing(self, max_bytes: int = 8) -> str:
        """The listing as text: address, up to ``max_bytes`` bytes per row, source."""
        rows = []
        for entry in self.listing:
            data = entry.data
            chunks = [data[i : i + max_bytes] for i in range(0, len(data), max_bytes)] or [b""]
            shown = chunks[:4]
            for k, chunk in enumerate(shown):
                hexes = " ".join(f"{b:02x}" for b in chunk)
                text = "  " * entry.depth + entry.text if k == 0 else ""
                address = f"{entry.address + k * max_bytes:08x}" if chunk or k == 0 else ""
                rows.append(f"{address}  {hexes:<{3 * max_bytes - 1}}  {text}".rstrip())
            if len(chunks) > len(shown):
                rows.append(f"{'':8}  ... {len(data) - len(shown) * max_bytes} more bytes")
        return "\n".join(rows)
