"""The primary IDE/ATA channel in PIO mode (ports 0x1F0-0x1F7 and 0x3F6, IRQ 14)
with up to two drives, and the disks behind it.

Modelled after ATA/ATAPI-4 (NCITS 317-1998):

* Clause 7 (register descriptions), the command block registers: data (16
  bits, and 32 bits as two words, so ``rep insl``/``rep outsl`` move a sector
  in 128 reads), error (read) / features (write), sector count, LBA
  low/mid/high (sector number, cylinder low/high in CHS mode), device/head
  (bit 6 LBA, bit 4 the drive), status (read: BSY, DRDY, DF, DSC, DRQ, ERR;
  reading it clears a pending interrupt) / command (write); and the control
  block at 0x3F6: alternate status (read, no side effect) / device control
  (write: nIEN, SRST).
* Clause 8 (command descriptions): IDENTIFY DEVICE (0xEC), READ SECTORS
  (0x20/0x21), WRITE SECTORS (0x30/0x31), READ/WRITE MULTIPLE (0xC4/0xC5)
  with SET MULTIPLE MODE (0xC6), READ VERIFY (0x40/0x41), and the housekeeping ones a
  driver sends (FLUSH CACHE 0xE7, SET FEATURES 0xEF, INITIALIZE DEVICE
  PARAMETERS 0x91, RECALIBRATE 0x1x, the power commands 0xE0-0xE5) completing
  at once; any other command aborts (ERR, error ABRT). LBA28 and CHS
  addressing; a sector count of 0 means 256; a sector past the end of the disk
  fails with IDNF.
* Clause 9's PIO data-in and PIO data-out protocols: for reads, each
  sector (or block, for READ MULTIPLE) is ready with DRQ and an interrupt; for
  writes, DRQ asks for the first sector without an interrupt, and each sector
  written is followed by an interrupt (with DRQ again while more remain).
* INTRQ is ``irq(14, level)``: asserted at completion unless nIEN is set,
  deasserted when the status register is read or a command is written.

Commands complete at once: BSY is never seen set, as if the drive were
infinitely fast. A selected drive that is absent reads status 0 when the
other drive is present, and 0xFF (the floating bus) when no drive is: what
xv6's ideinit probes disk 1 with. Not modelled: DMA, LBA48, ATAPI, the
diagnostic and security commands, drive timing.
"""

from __future__ import annotations

import os

from attrs import define, field

from vmi.pc import IrqLine, no_irq

SECTOR = 512
DATA, ERROR, COUNT, LBA_LOW, LBA_MID, LBA_HIGH, DEVICE, STATUS = range(0x1F0, 0x1F8)
FEATURES, COMMAND = ERROR, STATUS
CONTROL = ALT_STATUS = 0x3F6
BSY, DRDY, DF, DSC, DRQ, ERR = 0x80, 0x40, 0x20, 0x10, 0x08, 0x01
ABRT, IDNF = 0x04, 0x10
NIEN, SRST = 0x02, 0x04
DEV_LBA, DEV_DRIVE = 0x40, 0x10
IDENTIFY, READ, READ_NR, WRITE, WRITE_NR = 0xEC, 0x20, 0x21, 0x30, 0x31
READ_MULTIPLE, WRITE_MULTIPLE, SET_MULTIPLE = 0xC4, 0xC5, 0xC6
VERIFY, VERIFY_NR = 0x40, 0x41
#: Commands that need no data and just succeed here (see the module docstring).
NOOPS = frozenset([0xE7, 0xEF, 0x91, *range(0x10, 0x20), *range(0xE0, 0xE6)])
MAX_MULTIPLE = 16
#: CHS translation of every disk: 16 heads, 63 sectors per track.
HEADS, SECTORS_PER_TRACK = 16, 63


class DiskError(Exception):
    """A disk image cannot be used (the message names the file and the cause)."""


@define(eq=False)
class Disk:
    """A disk's bytes, copy-on-write over a base image: writes land in an
    overlay of sectors kept in memory, never in the image file unless
    :meth:`flush` is called on a disk opened writable."""

    base: bytes
    path: str | None = None
    writable: bool = False
    overlay: dict[int, bytes] = field(factory=dict)
    reads: int = 0
    writes: int = 0

    @classmethod
    def open(cls, path: str | os.PathLike[str], writable: bool = False) -> Disk:
        """The image at ``path``; ``writable`` lets :meth:`flush` write it back."""
        name = os.fspath(path)
        try:
            with open(name, "rb") as f:
                data = f.read()
        except OSError as e:
            raise DiskError(f"{name}: cannot read the disk image ({e.strerror})") from None
        # The mode bits too: root may write any file, but a user who made an
        # image read-only meant it.
        if writable and (not os.access(name, os.W_OK)
                         or not os.stat(name).st_mode & 0o222):
            raise DiskError(f"{name}: the disk image is read-only, so its writes "
                            "cannot be kept")
        return cls.of(data, name, writable)

    @classmethod
    def of(cls, data: bytes, path: str | None = None, writable: bool = False) -> Disk:
        name = path or "disk"
        if not data:
            raise DiskError(f"{name}: the disk image is empty")
        if len(data) % SECTOR:
            raise DiskError(f"{name}: the disk image is {len(data)} bytes, not a whole "
                            f"number of {SECTOR}-byte sectors")
        return cls(bytes(data), path, writable)

    @property
    def sectors(self) -> int:
        return len(self.base) // SECTOR

    def read_sector(self, lba: int) -> bytes:
        self.reads += 1
        data = self.overlay.get(lba)
        if data is None:
            data = self.base[lba * SECTOR:(lba + 1) * SECTOR]
        return data

    def write_sector(self, lba: int, data: bytes | bytearray) -> None:
        self.writes += 1
        self.overlay[lba] = bytes(data)

    def peek(self, offset: int, length: int) -> bytes:
        """Bytes of the disk as the guest sees it, without counting a read."""
        out = bytearray(self.base[offset:offset + length])
        for lba in range(offset // SECTOR, (offset + length + SECTOR - 1) // SECTOR):
            data = self.overlay.get(lba)
            if data is not None:
                start = lba * SECTOR
                lo, hi = max(start, offset), min(start + SECTOR, offset + length)
                out[lo - offset:hi - offset] = data[lo - start:hi - start]
        return bytes(out)

    def flush(self) -> int:
        """Write the overlay's sectors into the image file (a disk opened
        writable only); the number of sectors written."""
        if not self.writable or self.path is None:
            raise DiskError(f"{self.path or 'disk'}: not opened writable, its writes "
                            "stay in memory")
        with open(self.path, "r+b") as f:
            for lba in sorted(self.overlay):
                f.seek(lba * SECTOR)
                f.write(self.overlay[lba])
        return len(self.overlay)

    def state(self) -> dict:
        """The overlay (the base is the image file, not state)."""
        return {"overlay": {str(k): v.hex() for k, v in self.overlay.items()},
                "reads": self.reads, "writes": self.writes}

    def set_state(self, state: dict) -> None:
        self.overlay = {int(k): bytes.fromhex(v) for k, v in state["overlay"].items()}
        self.reads = state["reads"]
        self.writes = state["writes"]


def _ata_string(text: str, words: int) -> list[int]:
    """An IDENTIFY string: space-padded, two characters a word, first in the high byte."""
    raw = text.ljust(2 * words)[:2 * words].encode("ascii")
    return [raw[i] << 8 | raw[i + 1] for i in range(0, len(raw), 2)]


def identify_words(disk: Disk, multiple: int) -> list[int]:
    """IDENTIFY DEVICE data (ATA/ATAPI-4, IDENTIFY DEVICE) for ``disk``."""
    total = min(disk.sectors, (1 << 28) - 1)
    cylinders = min(max(total // (HEADS * SECTORS_PER_TRACK), 1), 16383)
    chs = cylinders * HEADS * SECTORS_PER_TRACK
    w = [0] * 256
    w[0] = 0x0040  # fixed device
    w[1], w[3], w[6] = cylinders, HEADS, SECTORS_PER_TRACK
    w[10:20] = _ata_string("VMI0000000001", 10)
    w[23:27] = _ata_string("1.0", 4)
    w[27:47] = _ata_string("VMI ATA DISK", 20)
    w[47] = 0x8000 | MAX_MULTIPLE
    w[49] = 0x0200  # LBA supported
    w[51] = 0x0200  # PIO mode 2 timing
    w[53] = 0x0001  # words 54-58 valid
    w[54], w[55], w[56] = cylinders, HEADS, SECTORS_PER_TRACK
    w[57], w[58] = chs & 0xFFFF, chs >> 16
    w[59] = (0x100 | multiple) if multiple else 0
    w[60], w[61] = total & 0xFFFF, total >> 16
    w[80] = 0x001E  # ATA-1 to ATA-4
    w[82], w[83], w[84] = 0x4000, 0x4000, 0x4000  # "words valid" pattern, no features
    return w


@define(eq=False)
class IdeChannel:
    """The primary channel (see the module docstring): ``disks`` holds drive 0
    and drive 1, either None when absent."""

    PORTS = (DATA, ERROR, COUNT, LBA_LOW, LBA_MID, LBA_HIGH, DEVICE, STATUS, CONTROL)

    disks: list[Disk | None] = field(factory=lambda: [None, None])
    irq: IrqLine = no_irq
    line: int = 14
    # The command block registers; both drives latch every write (ATA-4 clause 7).
    features: int = 0
    count: int = 0
    lba_low: int = 0
    lba_mid: int = 0
    lba_high: int = 0
    device: int = 0
    control: int = 0
    status: list[int] = field(factory=lambda: [DRDY | DSC, DRDY | DSC])
    error: list[int] = field(factory=lambda: [1, 1])
    multiple: list[int] = field(factory=lambda: [0, 0])
    #: The transfer in progress: its command, next LBA, sectors left, and the
    #: sector buffer with the position of the next data-port access.
    command: int = 0
    next_lba: int = 0
    remaining: int = 0
    buffer: bytearray = field(factory=bytearray)
    position: int = 0
    #: Sectors transferred per DRQ block of the current command.
    block: int = 1
    pending: bool = False
    irq_level: bool = False
    commands: int = 0

    def __attrs_post_init__(self) -> None:
        if len(self.disks) != 2:
            raise ValueError("an IDE channel has two drive positions")

    @property
    def drive(self) -> int:
        return self.device >> 4 & 1

    def _present(self) -> bool:
        return self.disks[self.drive] is not None

    # -- interrupt -----------------------------------------------------------

    def _update(self) -> None:
        level = self.pending and not self.control & NIEN
        if level != self.irq_level:
            self.irq_level = level
            self.irq(self.line, level)

    def _interrupt(self) -> None:
        self.pending = True
        self._update()

    # -- registers -----------------------------------------------------------

    def peek_port(self, port: int) -> int:
        """The value a read would give, with no side effect."""
        if port in (STATUS, ALT_STATUS):
            if not self._present():
                return 0 if any(self.disks) else 0xFF
            return self.status[self.drive]
        if port == ERROR:
            return self.error[self.drive] if self._present() else 0
        if port == COUNT:
            return self.count
        if port == LBA_LOW:
            return self.lba_low
        if port == LBA_MID:
            return self.lba_mid
        if port == LBA_HIGH:
            return self.lba_high
        if port == DEVICE:
            return self.device | 0xA0  # bits 7 and 5 read as one (obsolete in ATA-4)
        return 0xFF

    def read_port(self, port: int, size: int) -> int:
        if port == DATA:
            return self._read_data(size)
        value = self.peek_port(port)
        if port == STATUS and self._present():
            self.pending = False
            self._update()
        return value

    def write_port(self, port: int, size: int, value: int) -> None:
        if port == DATA:
            self._write_data(size, value)
            return
        value &= 0xFF
        if port == FEATURES:
            self.features = value
        elif port == COUNT:
            self.count = value
        elif port == LBA_LOW:
            self.lba_low = value
        elif port == LBA_MID:
            self.lba_mid = value
        elif port == LBA_HIGH:
            self.lba_high = value
        elif port == DEVICE:
            self.device = value & 0x5F
            self._update()
        elif port == COMMAND:
            if self._present():
                self._command(value)
        elif port == CONTROL:
            if value & SRST and not self.control & SRST:
                self._reset()
            self.control = value & (NIEN | SRST)
            self._update()

    def _reset(self) -> None:
        """Software reset (ATA-4 clause 9): both drives idle with their signature."""
        self.status = [DRDY | DSC, DRDY | DSC]
        self.error = [1, 1]  # diagnostic code: no error
        self.count, self.lba_low, self.lba_mid, self.lba_high = 1, 1, 0, 0
        self.device = 0
        self._end_transfer()
        self.pending = False

    def _end_transfer(self) -> None:
        self.command = self.remaining = self.position = 0
        self.buffer = bytearray()

    # -- commands ------------------------------------------------------------

    def _lba(self) -> int | None:
        if self.device & DEV_LBA:
            return (self.device & 0xF) << 24 | self.lba_high << 16 | self.lba_mid << 8 | \
                self.lba_low
        cylinder = self.lba_high << 8 | self.lba_mid
        head, sector = self.device & 0xF, self.lba_low
        if sector == 0:
            return None
        return (cylinder * HEADS + head) * SECTORS_PER_TRACK + sector - 1

    def _command(self, command: int) -> None:
        self.commands += 1
        self.pending = False
        self._end_transfer()
        d = self.drive
        self.error[d] = 0
        self.status[d] = DRDY | DSC
        disk = self.disks[d]
        assert disk is not None
        if command == IDENTIFY:
            words = identify_words(disk, self.multiple[d])
            self.buffer = bytearray(b"".join(w.to_bytes(2, "little") for w in words))
            self.command, self.remaining, self.block = command, 1, 1
            self.status[d] |= DRQ
            self._interrupt()
        elif command in (READ, READ_NR, WRITE, WRITE_NR, READ_MULTIPLE, WRITE_MULTIPLE,
                         VERIFY, VERIFY_NR):
            self._start_transfer(command, disk)
        elif command == SET_MULTIPLE:
            if self.count > MAX_MULTIPLE or self.count & (self.count - 1):
                self._abort(ABRT)
            else:
                self.multiple[d] = self.count
                self._interrupt()
        elif command in NOOPS:
            self._interrupt()
        else:
            self._abort(ABRT)

    def _abort(self, error: int) -> None:
        d = self.drive
        self.error[d] = error
        self.status[d] = DRDY | DSC | ERR
        self._end_transfer()
        self._interrupt()

    def _start_transfer(self, command: int, disk: Disk) -> None:
        lba = self._lba()
        count = self.count or 256
        if lba is None or lba + count > disk.sectors:
            self._abort(IDNF)
            return
        if command in (READ_MULTIPLE, WRITE_MULTIPLE):
            if not self.multiple[self.drive]:
                self._abort(ABRT)  # READ/WRITE MULTIPLE before SET MULTIPLE MODE
                return
            self.block = self.multiple[self.drive]
        else:
            self.block = 1
        if command in (VERIFY, VERIFY_NR):
            self._interrupt()
            return
        self.command, self.next_lba, self.remaining = command, lba, count
        if command in (READ, READ_NR, READ_MULTIPLE):
            self._load_block(disk)
            self._interrupt()
        else:
            # PIO data-out: DRQ for the first block, no interrupt before it.
            self.buffer = bytearray(SECTOR * min(self.block, count))
            self.status[self.drive] |= DRQ

    def _load_block(self, disk: Disk) -> None:
        n = min(self.block, self.remaining)
        self.buffer = bytearray(b"".join(disk.read_sector(self.next_lba + i)
                                         for i in range(n)))
        self.position = 0
        self.status[self.drive] |= DRQ

    # -- the data port -------------------------------------------------------

    def _read_data(self, size: int) -> int:
        if not self.status[self.drive] & DRQ or self.command in (WRITE, WRITE_NR,
                                                                 WRITE_MULTIPLE):
            return 0
        size = 4 if size == 4 else 2
        p = self.position
        value = int.from_bytes(self.buffer[p:p + size], "little")
        self.position = p + size
        if self.position >= len(self.buffer):
            self._read_block_done()
        return value

    def read_data(self, length: int) -> bytes:
        """``length`` bytes through the data port at once: what ``rep insw/insl``
        of ``length`` bytes reads, for a fast string-input path."""
        out = bytearray()
        while len(out) < length and self.status[self.drive] & DRQ and \
                self.command not in (WRITE, WRITE_NR, WRITE_MULTIPLE):
            p = self.position
            take = min(length - len(out), len(self.buffer) - p)
            out += self.buffer[p:p + take]
            self.position = p + take
            if self.position >= len(self.buffer):
                self._read_block_done()
        return bytes(out) + bytes(length - len(out))

    def _read_block_done(self) -> None:
        d = self.drive
        n = len(self.buffer) // SECTOR
        self.status[d] &= ~DRQ
        if self.command == IDENTIFY:
            self._end_transfer()
            return
        self.next_lba += n
        self.remaining -= n
        disk = self.disks[d]
        if self.remaining and disk is not None:
            self._load_block(disk)
            self._interrupt()  # the next block is ready
        else:
            self._end_transfer()

    def _write_data(self, size: int, value: int) -> None:
        if not self.status[self.drive] & DRQ or self.command not in (WRITE, WRITE_NR,
                                                                     WRITE_MULTIPLE):
            return
        size = 4 if size == 4 else 2
        p = self.position
        self.buffer[p:p + size] = (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little")
        self.position = p + size
        if self.position >= len(self.buffer):
            self._write_block_done()

    def write_data(self, data: bytes) -> None:
        """``data`` through the data port at once (``rep outsw/outsl``)."""
        i = 0
        while i < len(data) and self.status[self.drive] & DRQ and \
                self.command in (WRITE, WRITE_NR, WRITE_MULTIPLE):
            p = self.position
            take = min(len(data) - i, len(self.buffer) - p)
            self.buffer[p:p + take] = data[i:i + take]
            self.position = p + take
            i += take
            if self.position >= len(self.buffer):
                self._write_block_done()

    def _write_block_done(self) -> None:
        d = self.drive
        disk = self.disks[d]
        assert disk is not None
        n = len(self.buffer) // SECTOR
        for i in range(n):
            disk.write_sector(self.next_lba + i, self.buffer[i * SECTOR:(i + 1) * SECTOR])
        self.next_lba += n
        self.remaining -= n
        self.position = 0
        if self.remaining:
            self.buffer = bytearray(SECTOR * min(self.block, self.remaining))
        else:
            self.status[d] &= ~DRQ
            self._end_transfer()
        self._interrupt()

    # -- snapshots -----------------------------------------------------------

    def state(self) -> dict:
        out = {name: getattr(self, name) for name in _STATE}
        out["buffer"] = bytes(self.buffer).hex()
        out["disks"] = [None if d is None else d.state() for d in self.disks]
        return out

    def set_state(self, state: dict) -> None:
        for name in _STATE:
            value = state[name]
            setattr(self, name, list(value) if isinstance(value, list) else value)
        self.buffer = bytearray.fromhex(state["buffer"])
        for disk, s in zip(self.disks, state["disks"], strict=True):
            if (disk is None) != (s is None):
                raise ValueError("the state's drives are not this channel's drives")
            if disk is not None:
                disk.set_state(s)


_STATE = ("features", "count", "lba_low", "lba_mid", "lba_high", "device", "control",
          "status", "error", "multiple", "command", "next_lba", "remaining", "position",
          "block", "pending", "irq_level", "commands")
