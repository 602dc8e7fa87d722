"""The IDE channel's registers and PIO protocols (ATA/ATAPI-4), and its disks."""

from __future__ import annotations

import pytest

from tests.pc.helpers import Lines, fields, through_json
from vmi.pc import ide as I
from vmi.pc.ide import Disk, DiskError, IdeChannel


def image(sectors: int, seed: int = 0) -> bytes:
    """Each sector filled with its number and a seed, so every sector differs."""
    return b"".join(bytes([(n + seed) & 0xFF, n >> 8 & 0xFF]) * 256 for n in range(sectors))


def channel(*disks):
    lines = Lines()
    drives = list(disks) + [None] * (2 - len(disks))
    return IdeChannel(disks=drives, irq=lines), lines


def setup(ch, lba, count, drive=0, command=None):
    ch.write_port(I.COUNT, 1, count)
    ch.write_port(I.LBA_LOW, 1, lba & 0xFF)
    ch.write_port(I.LBA_MID, 1, lba >> 8 & 0xFF)
    ch.write_port(I.LBA_HIGH, 1, lba >> 16 & 0xFF)
    ch.write_port(I.DEVICE, 1, 0xE0 | drive << 4 | lba >> 24 & 0x0F)
    if command is not None:
        ch.write_port(I.COMMAND, 1, command)


def insl(ch, words32):
    return b"".join(ch.read_port(I.DATA, 4).to_bytes(4, "little") for _ in range(words32))


def outsl(ch, data):
    for i in range(0, len(data), 4):
        ch.write_port(I.DATA, 4, int.from_bytes(data[i:i + 4], "little"))


def test_power_on_status_is_ready():
    ch, _ = channel(Disk.of(image(4)))
    status = ch.read_port(I.STATUS, 1)
    assert status == I.DRDY | I.DSC
    assert (status & 0xC0) == 0x40  # bootmain's waitdisk


def test_bootmain_readsect_through_insl():
    disk = Disk.of(image(8))
    ch, _ = channel(disk)
    setup(ch, 5, 1, command=I.READ)
    assert ch.read_port(I.STATUS, 1) & (I.BSY | I.DRDY | I.DRQ) == I.DRDY | I.DRQ
    assert insl(ch, 128) == image(8)[5 * 512:6 * 512]
    assert ch.read_port(I.STATUS, 1) == I.DRDY | I.DSC  # DRQ gone after the sector
    assert disk.reads == 1


def test_sixteen_bit_data_reads():
    ch, _ = channel(Disk.of(image(2)))
    setup(ch, 1, 1, command=I.READ)
    words = [ch.read_port(I.DATA, 2) for _ in range(256)]
    assert b"".join(w.to_bytes(2, "little") for w in words) == image(2)[512:]


def test_data_port_reads_zero_without_drq():
    ch, _ = channel(Disk.of(image(2)))
    assert ch.read_port(I.DATA, 2) == 0


def test_unacknowledged_interrupt_stays_asserted_across_sectors():
    ch, lines = channel(Disk.of(image(8)))
    setup(ch, 0, 2, command=I.READ)
    insl(ch, 256)
    assert lines.calls == [(14, True)]  # no status read: INTRQ never negated


def test_multi_sector_read_interrupts_per_sector():
    ch, lines = channel(Disk.of(image(8)))
    setup(ch, 2, 3, command=I.READ)
    data = b""
    for _ in range(3):
        assert lines.level[14]
        ch.read_port(I.STATUS, 1)  # acknowledges the interrupt
        assert not lines.level[14]
        data += insl(ch, 128)
    assert data == image(8)[2 * 512:5 * 512]
    assert lines.rises(14) == 3
    assert not ch.read_port(I.STATUS, 1) & I.DRQ


def test_alternate_status_does_not_acknowledge():
    ch, lines = channel(Disk.of(image(2)))
    setup(ch, 0, 1, command=0xE7)  # FLUSH CACHE: completes with an interrupt
    assert ch.read_port(I.ALT_STATUS, 1) == I.DRDY | I.DSC
    assert lines.level[14]
    ch.read_port(I.STATUS, 1)
    assert not lines.level[14]


def test_nien_keeps_the_line_down():
    ch, lines = channel(Disk.of(image(2)))
    ch.write_port(I.CONTROL, 1, I.NIEN)
    setup(ch, 0, 1, command=I.READ)
    assert lines.calls == []
    ch.write_port(I.CONTROL, 1, 0)  # the pending interrupt shows once enabled
    assert lines.calls == [(14, True)]


def test_write_then_read_back_through_a_fresh_controller():
    disk = Disk.of(image(16))
    ch, lines = channel(disk)
    payload = bytes(range(256)) * 4
    setup(ch, 9, 2, command=I.WRITE)
    assert ch.read_port(I.ALT_STATUS, 1) & I.DRQ
    assert lines.calls == []  # PIO data-out: no interrupt before the first sector
    outsl(ch, payload[:512])
    assert lines.rises(14) == 1 and ch.read_port(I.STATUS, 1) & I.DRQ
    outsl(ch, payload[512:])
    assert lines.rises(14) == 2 and not ch.read_port(I.STATUS, 1) & I.DRQ
    assert disk.writes == 2
    fresh, _ = channel(disk)
    setup(fresh, 9, 2, command=I.READ)
    assert insl(fresh, 256) == payload
    setup(fresh, 8, 1, command=I.READ)
    assert insl(fresh, 128) == image(16)[8 * 512:9 * 512]  # its neighbour untouched


def test_sixteen_bit_writes():
    disk = Disk.of(image(2))
    ch, _ = channel(disk)
    setup(ch, 1, 1, command=I.WRITE)
    for i in range(256):
        ch.write_port(I.DATA, 2, 0xBEEF + i)
    assert disk.peek(512, 4) == (0xBEEF).to_bytes(2, "little") + (0xBEF0).to_bytes(2, "little")


def test_identify_device():
    ch, lines = channel(Disk.of(image(1000)))
    ch.write_port(I.DEVICE, 1, 0xA0)
    ch.write_port(I.COMMAND, 1, I.IDENTIFY)
    assert lines.level[14] and ch.read_port(I.STATUS, 1) & I.DRQ
    words = [ch.read_port(I.DATA, 2) for _ in range(256)]
    assert words[60] | words[61] << 16 == 1000
    assert words[49] & 0x0200  # LBA
    model = b"".join(w.to_bytes(2, "big") for w in words[27:47]).decode().strip()
    assert model == "VMI ATA DISK"
    assert not ch.read_port(I.STATUS, 1) & I.DRQ


def test_lba28_uses_all_four_registers():
    target = 0x010203
    data = bytearray((target + 2) * 512)
    data[target * 512:(target + 1) * 512] = b"\x5A" * 512
    ch, _ = channel(Disk.of(data))
    setup(ch, target, 1, command=I.READ)
    assert insl(ch, 128) == b"\x5A" * 512
    setup(ch, target - 0x100, 1, command=I.READ)  # the mid register matters too
    assert insl(ch, 128) == bytes(512)
    setup(ch, 0x1000000, 1, command=I.READ)  # bit 24, in the device register
    assert ch.read_port(I.STATUS, 1) & I.ERR
    assert ch.read_port(I.ERROR, 1) == I.IDNF


def test_chs_addressing():
    ch, _ = channel(Disk.of(image(200)))
    ch.write_port(I.COUNT, 1, 1)
    ch.write_port(I.LBA_LOW, 1, 2)  # sector 2
    ch.write_port(I.LBA_MID, 1, 0)
    ch.write_port(I.LBA_HIGH, 1, 0)
    ch.write_port(I.DEVICE, 1, 0xA1)  # CHS, head 1
    ch.write_port(I.COMMAND, 1, I.READ)
    assert insl(ch, 128) == image(200)[64 * 512:65 * 512]  # (0*16 + 1) * 63 + 2 - 1


def test_sector_count_zero_means_256():
    ch, lines = channel(Disk.of(image(300)))
    setup(ch, 10, 0, command=I.READ)
    data = b""
    for _ in range(256):
        ch.read_port(I.STATUS, 1)  # each sector's interrupt, acknowledged
        data += insl(ch, 128)
    assert data == image(300)[10 * 512:266 * 512]
    assert lines.rises(14) == 256
    setup(ch, 100, 0, command=I.READ)  # 100 + 256 > 300
    assert ch.read_port(I.ERROR, 1) == I.IDNF


def test_unknown_command_aborts():
    ch, lines = channel(Disk.of(image(2)))
    ch.write_port(I.COMMAND, 1, 0xA1)  # IDENTIFY PACKET: not an ATAPI device
    assert ch.read_port(I.ALT_STATUS, 1) == I.DRDY | I.DSC | I.ERR
    assert ch.read_port(I.ERROR, 1) == I.ABRT and lines.level[14]


def test_drive_select_reads_the_other_disk():
    ch, _ = channel(Disk.of(image(4, seed=0)), Disk.of(image(4, seed=100)))
    setup(ch, 3, 1, drive=1, command=I.READ)
    assert insl(ch, 128) == image(4, seed=100)[3 * 512:]


def xv6_probe(ch):
    """ide.c's ideinit: wait for drive 0, then look for drive 1."""
    while (ch.read_port(I.STATUS, 1) & (I.BSY | I.DRDY)) != I.DRDY:
        pass
    ch.write_port(I.DEVICE, 1, 0xE0 | 1 << 4)
    havedisk1 = any(ch.read_port(I.STATUS, 1) != 0 for _ in range(1000))
    ch.write_port(I.DEVICE, 1, 0xE0)
    return havedisk1


def test_xv6_probe_finds_disk_1_only_when_present():
    assert xv6_probe(channel(Disk.of(image(2)), Disk.of(image(2)))[0])
    assert not xv6_probe(channel(Disk.of(image(2)))[0])


def test_no_drive_at_all_floats_to_ff():
    ch, _ = channel()
    assert ch.read_port(I.STATUS, 1) == 0xFF


def test_command_to_an_absent_drive_is_ignored():
    disk = Disk.of(image(2))
    ch, lines = channel(disk)
    setup(ch, 0, 1, drive=1, command=I.READ)
    assert ch.read_port(I.STATUS, 1) == 0 and lines.calls == [] and disk.reads == 0


def test_device_register_reads_with_obsolete_bits_set():
    ch, _ = channel(Disk.of(image(2)))
    ch.write_port(I.DEVICE, 1, 0x01)
    assert ch.read_port(I.DEVICE, 1) == 0xA1


def test_software_reset_sets_the_signature():
    ch, _ = channel(Disk.of(image(2)))
    setup(ch, 0, 1, command=I.READ)
    ch.write_port(I.CONTROL, 1, I.SRST)
    ch.write_port(I.CONTROL, 1, 0)
    regs = [ch.read_port(p, 1) for p in (I.COUNT, I.LBA_LOW, I.LBA_MID, I.LBA_HIGH)]
    assert regs == [1, 1, 0, 0]
    assert ch.read_port(I.STATUS, 1) == I.DRDY | I.DSC


def test_read_multiple_interrupts_per_block():
    ch, lines = channel(Disk.of(image(16)))
    setup(ch, 0, 8, command=I.READ_MULTIPLE)
    assert ch.read_port(I.ERROR, 1) == I.ABRT  # no SET MULTIPLE MODE yet
    ch.write_port(I.COUNT, 1, 4)
    ch.write_port(I.COMMAND, 1, I.SET_MULTIPLE)
    ch.read_port(I.STATUS, 1)
    before = lines.rises(14)
    setup(ch, 4, 8, command=I.READ_MULTIPLE)
    data = b""
    for _ in range(2):
        ch.read_port(I.STATUS, 1)
        data += insl(ch, 128 * 4)
    assert data == image(16)[4 * 512:12 * 512]
    assert lines.rises(14) - before == 2


def test_write_multiple():
    disk = Disk.of(image(16))
    ch, _ = channel(disk)
    ch.write_port(I.COUNT, 1, 2)
    ch.write_port(I.COMMAND, 1, I.SET_MULTIPLE)
    setup(ch, 1, 4, command=I.WRITE_MULTIPLE)
    ch.write_data(b"\x11" * 2048)
    assert disk.peek(512, 2048) == b"\x11" * 2048 and disk.writes == 4


def test_fast_string_paths_match_port_reads():
    ch, _ = channel(Disk.of(image(8)))
    setup(ch, 1, 3, command=I.READ)
    assert ch.read_data(3 * 512) == image(8)[512:4 * 512]
    assert ch.read_data(4) == bytes(4)  # past the transfer: nothing more


def test_state_round_trip_mid_transfer():
    base = image(8)
    ch, _ = channel(Disk.of(base))
    setup(ch, 0, 1, command=I.WRITE)
    outsl(ch, b"\x42" * 512)
    setup(ch, 0, 3, command=I.READ)
    first = insl(ch, 100)
    ch2, _ = channel(Disk.of(base))
    ch2.set_state(through_json(ch.state()))
    assert ch2.state() == ch.state()
    assert {k: v for k, v in fields(ch2).items() if k != "disks"} == \
        {k: v for k, v in fields(ch).items() if k != "disks"}
    rest = insl(ch, 284)
    assert insl(ch2, 284) == rest
    assert first + rest == b"\x42" * 512 + base[512:1536]
    with pytest.raises(ValueError, match="drives"):
        channel()[0].set_state(ch.state())


# -- disks ---------------------------------------------------------------------

def test_disk_is_copy_on_write_over_its_file(tmp_path):
    path = tmp_path / "fs.img"
    path.write_bytes(image(4))
    disk = Disk.open(path)
    disk.write_sector(2, b"\xAA" * 512)
    assert disk.read_sector(2) == b"\xAA" * 512
    assert path.read_bytes() == image(4)
    with pytest.raises(DiskError, match="not opened writable"):
        disk.flush()
    assert path.read_bytes() == image(4)


def test_writable_disk_flushes_its_writes(tmp_path):
    path = tmp_path / "fs.img"
    path.write_bytes(image(4))
    disk = Disk.open(path, writable=True)
    disk.write_sector(1, b"\x55" * 512)
    assert path.read_bytes() == image(4)  # not until flushed
    assert disk.flush() == 1
    assert path.read_bytes() == image(4)[:512] + b"\x55" * 512 + image(4)[1024:]


@pytest.mark.parametrize("data, message", [(b"", "is empty"),
                                           (b"x" * 513, "513 bytes, not a whole number")])
def test_bad_images_are_refused_with_the_file_named(tmp_path, data, message):
    path = tmp_path / "bad.img"
    path.write_bytes(data)
    with pytest.raises(DiskError, match=message) as caught:
        Disk.open(path)
    assert str(caught.value).startswith(str(path))


def test_missing_image(tmp_path):
    with pytest.raises(DiskError, match="cannot read the disk image"):
        Disk.open(tmp_path / "absent.img")


def test_read_only_image_cannot_be_opened_writable(tmp_path):
    path = tmp_path / "ro.img"
    path.write_bytes(image(1))
    path.chmod(0o444)
    with pytest.raises(DiskError, match="read-only"):
        Disk.open(path, writable=True)
    assert Disk.open(path).sectors == 1


def test_disk_peek_sees_the_overlay_without_counting():
    disk = Disk.of(image(4))
    disk.write_sector(1, b"\x77" * 512)
    assert disk.peek(500, 24) == image(4)[500:512] + b"\x77" * 12
    assert disk.reads == 0
