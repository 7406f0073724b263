# SPDX-License-Identifier: MIT
"""Format views (vmdk, qcow2, vhdx, vhd) of raw disks served by the url
provider: each view read through the mount passes qemu-img, has an exact
size before any byte moves, reads only the raw chunks it covers, shares
the one cache of its disk, answers SEEK_DATA/SEEK_HOLE from the disk's
allocation map and has its own .progress line."""

import errno
import json
import os
import shutil
import struct
import subprocess
import time
import uuid

import pytest

from conftest import (KiB, MiB, GiB, data_extents, read_all, run_tool)

VIEWS = ("vmdk", "qcow2", "vhdx", "vhd")
FORMATS_OPTION = "vmdk:qcow2:vhdx:vhd:raw"
QEMU_FORMAT = {"vmdk": "vmdk", "qcow2": "qcow2", "vhdx": "vhdx",
               "vhd": "vpc", "raw": "raw"}
SECTOR = 512
GRAIN = 64 * KiB        # vmdk grain, qcow2 cluster
VHDX_BLOCK = 2 * MiB
CHUNK = MiB             # chunk_size of the mounts below, unless told

# Test disks: (size, data extents); everything else is a hole. Each mixes
# chunk-aligned regions with unaligned ones.
DISKS = {
    # 32 MiB: 4 MiB-aligned regions and unaligned ones, one ending the disk.
    "scattered": (32 * MiB, [
        (0, 4 * MiB),
        (9 * MiB + 12345, 300000),
        (16 * MiB, 4 * MiB),
        (22 * MiB + 777, 64 * KiB + 3),
        (32 * MiB - 100000, 100000)]),
    # Not a multiple of the grain (64 KiB) nor of the block (2 MiB).
    "odd_grain": (20 * MiB + 3 * GRAIN + 7 * SECTOR, [
        (0, MiB + 333),
        (8 * MiB, 4 * MiB),
        (20 * MiB + 3 * GRAIN + 7 * SECTOR - 70000, 70000)]),
    # Not a multiple of 512: the tail sector is partial.
    "odd_sector": (8 * MiB + GRAIN + 1000, [
        (2 * MiB + 5, MiB),
        (4 * MiB, 4 * MiB),
        (8 * MiB + GRAIN + 1000 - 3000, 3000)]),
}


def round_up(x, a):
    return (x + a - 1) // a * a


def round_down(x, a):
    return x // a * a


@pytest.fixture(scope="session")
def qemu_img():
    path = shutil.which("qemu-img")
    if path is None:
        pytest.skip("qemu-img is not installed (Debian package qemu-utils)")
    return path


def qemu(qemu_img, *args, check=True):
    proc = subprocess.run([qemu_img, *map(str, args)], capture_output=True,
                          text=True, timeout=120)
    if check:
        assert proc.returncode == 0, "qemu-img %s exited %d:\n%s%s" % (
            " ".join(map(str, args)), proc.returncode, proc.stdout[-3000:],
            proc.stderr[-3000:])
    return proc


def make_disk(images, name, seed=1):
    size, extents = DISKS[name]
    return images.sparse(name + ".raw", size, extents, seed=seed)


def disk_url(img, transport, http_server):
    if transport == "file":
        return "file://%s" % img.path
    return http_server.url(img.name)


def local_extents(img):
    """The data extents of the image as its filesystem keeps them: the
    allocation map the url provider sees for a file:// image."""
    with open(img.path, "rb") as f:
        return data_extents(f.fileno(), img.size)


def units_touched(extents, unit):
    """Indexes of the unit-sized pieces of the disk that hold data."""
    touched = set()
    for start, end in extents:
        touched.update(range(start // unit, (end - 1) // unit + 1))
    return touched


def pread_path(path, offset, length, random_access=True):
    fd = os.open(path, os.O_RDONLY)
    try:
        if random_access:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
        return os.pread(fd, length, offset)
    finally:
        os.close(fd)


def check_vhd_footer(path, disk_size):
    """A fixed VHD ends in a 512-byte footer: cookie, type 2, sizes and a
    ones' complement checksum."""
    with open(path, "rb") as f:
        f.seek(-SECTOR, os.SEEK_END)
        footer = f.read(SECTOR)
    assert footer[:8] == b"conectix", footer[:8]
    original, current = struct.unpack(">QQ", footer[40:56])
    disk_type, checksum = struct.unpack(">II", footer[60:68])
    assert disk_type == 2, "disk type %d, not 2 (fixed)" % disk_type
    assert current == original == round_up(disk_size, SECTOR)
    body = footer[:64] + b"\0\0\0\0" + footer[68:]
    assert checksum == (~sum(body)) & 0xffffffff, "bad footer checksum"
    assert os.path.getsize(path) == round_up(disk_size, SECTOR) + SECTOR


# --- every view passes qemu-img ---------------------------------------------

@pytest.mark.parametrize("fmt", VIEWS)
@pytest.mark.parametrize("transport", ["file", "http"])
@pytest.mark.parametrize("disk", sorted(DISKS))
def test_view_passes_qemu_img(disk, transport, fmt, qemu_img, http_server,
                              images, mount, tmp_path):
    img = make_disk(images, disk, seed=31)
    m = mount({"vm": disk_url(img, transport, http_server)},
              options={"chunk_size": "1M", "formats": FORMATS_OPTION})
    view = m.disk("vm", fmt)
    qfmt = QEMU_FORMAT[fmt]

    size = view.stat().st_size
    assert size > 0
    if transport == "http":
        assert http_server.data_bytes(img.name) == 0, \
            "the server sent data before the view was read"

    dst = tmp_path / ("copy." + fmt)
    run_tool(["cp", view, dst])
    assert dst.stat().st_size == size, \
        "stat said %d before the copy, the copy has %d bytes" % (
            size, dst.stat().st_size)
    assert view.stat().st_size == size

    info = json.loads(qemu(qemu_img, "info", "--output=json", "-f", qfmt,
                           dst).stdout)
    assert info["format"] == qfmt
    assert info["virtual-size"] == round_up(img.size, SECTOR), info
    specific = info.get("format-specific", {}).get("data", {})
    if fmt == "vmdk":
        assert specific.get("create-type") == "streamOptimized", info
    elif fmt == "qcow2":
        assert specific.get("compat") == "1.1", "not qcow2 version 3: %s" \
            % info
    elif fmt == "vhd":
        check_vhd_footer(dst, img.size)

    if fmt != "vhd":  # qemu-img cannot check vpc images
        qemu(qemu_img, "check", "-f", qfmt, dst)
    cmp = qemu(qemu_img, "compare", "-f", qfmt, "-F", "raw", dst, img.path,
               check=False)
    assert cmp.returncode == 0 and "Images are identical" in cmp.stdout, \
        "qemu-img compare exited %d:\n%s%s" % (cmp.returncode, cmp.stdout,
                                               cmp.stderr)

    # Unallocated grains, clusters and blocks are not stored.
    if transport == "file" and fmt != "vhd":
        unit = VHDX_BLOCK if fmt == "vhdx" else GRAIN
        stored = len(units_touched(local_extents(img), unit)) * unit
        overhead = {"vmdk": stored // 64 + MiB, "qcow2": MiB,
                    "vhdx": 8 * MiB}[fmt]
        assert stored <= size <= stored + overhead, \
            "%s view of %d bytes for %d bytes of allocated %s" % (
                fmt, size, stored, "blocks" if fmt == "vhdx" else "grains")


# --- sizes -------------------------------------------------------------------

def test_view_sizes_exact_and_stable_across_mounts(images, mount, tmp_path):
    """Every view's size is known at the first stat, equals the length of
    a full copy, and is the same in another mount (other chunk size)."""
    imgs = {name: make_disk(images, name, seed=32) for name in DISKS}
    urls = {name: "file://%s" % img.path for name, img in imgs.items()}
    m1 = mount(urls, options={"chunk_size": "1M", "formats": FORMATS_OPTION})
    m2 = mount(urls, options={"chunk_size": "4M", "formats": FORMATS_OPTION})

    sizes = {}
    for name in DISKS:
        for fmt in VIEWS + ("raw",):
            s1 = m1.disk(name, fmt).stat().st_size
            s2 = m2.disk(name, fmt).stat().st_size
            assert s1 == s2, "%s of %s: %d in one mount, %d in the other" % (
                fmt, name, s1, s2)
            sizes[name, fmt] = s1
    for name in DISKS:
        assert int(m1.disk_progress(name)["bytes"]) == 0, \
            "stat moved bytes"
        assert sizes[name, "raw"] == imgs[name].size
        assert sizes[name, "vhd"] == round_up(imgs[name].size, SECTOR) + \
            SECTOR

    for (name, fmt), size in sorted(sizes.items()):
        data = read_all(m1.disk(name, fmt))
        assert len(data) == size, "%s of %s: stat said %d, read gave %d" % (
            fmt, name, size, len(data))
        assert m1.disk(name, fmt).stat().st_size == size
        assert m2.disk(name, fmt).stat().st_size == size


# --- one cache for every view ------------------------------------------------

def test_views_share_one_download(qemu_img, http_server, images, mount,
                                  tmp_path):
    img = images.random("web01.raw", 16 * MiB, seed=33)
    m = mount({"web01": http_server.url(img.name)},
              options={"chunk_size": "1M", "formats": FORMATS_OPTION})

    run_tool(["cp", m.disk("web01", "vmdk"), tmp_path / "copy.vmdk"])
    first = http_server.data_bytes(img.name)
    assert img.size <= first <= img.size + CHUNK, \
        "copying disk.vmdk fetched %d bytes of a %d-byte disk" % (
            first, img.size)

    for fmt in ("qcow2", "vhdx", "vhd", "raw"):
        dst = tmp_path / ("copy." + fmt)
        run_tool(["cp", m.disk("web01", fmt), dst])
        sent = http_server.data_bytes(img.name)
        assert sent == first, \
            "copying disk.%s after disk.vmdk fetched %d more bytes" % (
                fmt, sent - first)
    cmp = qemu(qemu_img, "compare", "-f", "qcow2", "-F", "raw",
               tmp_path / "copy.qcow2", img.path, check=False)
    assert cmp.returncode == 0, cmp.stdout + cmp.stderr
    assert (tmp_path / "copy.raw").read_bytes() == img.path.read_bytes()


# --- a random read of a big view fetches only its chunks ---------------------

def le(fmt, data, off=0):
    return struct.unpack_from("<" + fmt, data, off)[0]


def be(fmt, data, off=0):
    return struct.unpack_from(">" + fmt, data, off)[0]


def qcow2_offset(view, raw_off):
    """The view offset of raw byte raw_off, through the L1 and L2 tables."""
    hdr = pread_path(view, 0, 104)
    assert hdr[:4] == b"QFI\xfb", hdr[:4]
    cluster_bits = be("I", hdr, 20)
    l1_off = be("Q", hdr, 40)
    cs = 1 << cluster_bits
    c = raw_off // cs
    mask = 0x00fffffffffffe00
    l1e = be("Q", pread_path(view, l1_off + 8 * (c // (cs // 8)), 8))
    assert l1e & mask, "L1 maps no L2 table for raw offset %d" % raw_off
    l2e = be("Q", pread_path(view, (l1e & mask) + 8 * (c % (cs // 8)), 8))
    assert not l2e & (1 << 62), "cluster is compressed"
    assert l2e & mask, "L2 maps no cluster for raw offset %d" % raw_off
    return (l2e & mask) + raw_off % cs


def vmdk_offset(view, raw_off, length):
    """The view offset of raw byte raw_off in a streamOptimized VMDK,
    through the footer's grain directory, a grain table and the stored
    deflate blocks of the grain."""
    size = view.stat().st_size
    hdr = pread_path(view, 0, SECTOR)
    assert hdr[:4] == b"KDMV", hdr[:4]
    if le("Q", hdr, 56) == 0xffffffffffffffff:  # GD at the end: footer
        hdr = pread_path(view, size - 2 * SECTOR, SECTOR)
        assert hdr[:4] == b"KDMV", "no footer before the end-of-stream marker"
    grain_sectors = le("Q", hdr, 20)
    gtes = le("I", hdr, 44)
    gd = le("Q", hdr, 56) * SECTOR
    grain_size = grain_sectors * SECTOR
    grain = raw_off // grain_size
    gt = le("I", pread_path(view, gd + 4 * (grain // gtes), 4)) * SECTOR
    assert gt, "no grain table for raw offset %d" % raw_off
    rec = le("I", pread_path(view, gt + 4 * (grain % gtes), 4)) * SECTOR
    assert rec, "grain of raw offset %d is not stored" % raw_off
    head = pread_path(view, rec, 14)
    assert le("Q", head, 0) == grain * grain_sectors, "grain marker lba"
    pos, want = rec + 14, raw_off % grain_size  # after the zlib header
    while True:
        block = pread_path(view, pos, 5)
        assert (block[0] >> 1) & 3 == 0, "grain not in stored deflate blocks"
        n = le("H", block, 1)
        assert le("H", block, 3) == n ^ 0xffff
        if want < n:
            assert want + length <= n, "pick an offset inside one block"
            return pos + 5 + want
        assert not block[0] & 1, "raw offset past the grain's last block"
        want -= n
        pos += 5 + n


VHDX_BAT = uuid.UUID("2DC27766-F623-4200-9D64-115E9BFD4A08").bytes_le
VHDX_META = uuid.UUID("8B7CA206-4790-4B9A-B8FE-575F050F886E").bytes_le
VHDX_FILE_PARAMS = uuid.UUID("CAA16737-FA36-4D43-B3B6-33F0AA44E76B").bytes_le
VHDX_SECTOR_SIZE = uuid.UUID("8141BF1D-A96F-4709-BA47-F233A8FAAB5F").bytes_le


def vhdx_offset(view, raw_off):
    """The view offset of raw byte raw_off, through the region table, the
    metadata (block size, sector size) and the BAT."""
    rt = pread_path(view, 192 * KiB, 64 * KiB)
    assert rt[:4] == b"regi", rt[:4]
    regions = {}
    for i in range(le("I", rt, 8)):
        e = 16 + 32 * i
        regions[rt[e:e + 16]] = le("Q", rt, e + 16)
    meta_off = regions[VHDX_META]
    meta = pread_path(view, meta_off, 64 * KiB)
    assert meta[:8] == b"metadata"
    items = {}
    for i in range(le("H", meta, 10)):
        e = 32 + 32 * i
        items[meta[e:e + 16]] = le("I", meta, e + 16)
    block_size = le("I", pread_path(view, meta_off + items[VHDX_FILE_PARAMS],
                                    4))
    sector = le("I", pread_path(view, meta_off + items[VHDX_SECTOR_SIZE], 4))
    chunk_ratio = (1 << 23) * sector // block_size
    b = raw_off // block_size
    entry = le("Q", pread_path(view, regions[VHDX_BAT] +
                               8 * (b + b // chunk_ratio), 8))
    assert entry & 7 == 6, "block of raw offset %d not fully present" % raw_off
    return (entry & ~0xfffff) + raw_off % block_size


def view_offset(view, fmt, raw_off, length):
    if fmt == "qcow2":
        return qcow2_offset(view, raw_off)
    if fmt == "vmdk":
        return vmdk_offset(view, raw_off, length)
    if fmt == "vhdx":
        return vhdx_offset(view, raw_off)
    return raw_off  # raw, and fixed VHD: the raw disk, then the footer


@pytest.mark.parametrize("fmt", VIEWS + ("raw",))
def test_random_read_of_big_view_fetches_its_chunks(fmt, http_server, images,
                                                    mount):
    """disk.raw is here as the baseline the views are held to."""
    chunk = 4 * MiB
    size = 2 * GiB
    data_at = GiB + 8 * MiB
    img = images.sparse("big.raw", size, [(data_at, 2 * chunk)], seed=34)
    # Inside a chunk, a grain and a cluster, 8 KiB into its grain.
    raw_off = data_at + chunk + MiB + 5 * GRAIN + 8 * KiB
    want = img.read(raw_off, 4 * KiB)
    urls = {"big": http_server.url(img.name)}
    options = {"chunk_size": "4M", "formats": FORMATS_OPTION}

    # Find where the view keeps raw_off by walking its tables in one mount
    # (that fetches what it fetches); the layout is the same in any mount.
    m1 = mount(urls, options=options)
    view_size = m1.disk("big", fmt).stat().st_size
    off = view_offset(m1.disk("big", fmt), fmt, raw_off, 4 * KiB)
    assert pread_path(m1.disk("big", fmt), off, 4 * KiB) == want
    m1.unmount()
    m1.check_log()
    http_server.reset()

    m2 = mount(urls, options=options)
    view = m2.disk("big", fmt)
    assert view.stat().st_size == view_size
    assert pread_path(view, off, 4 * KiB) == want
    time.sleep(1)  # let anything the read set off arrive
    stats = http_server.stats(img.name)
    sent = stats["data_bytes"]
    assert 0 < sent <= 2 * chunk, \
        "a 4 KiB read of disk.%s fetched %d bytes (chunk %d): %s" % (
            fmt, sent, chunk, stats["ranges"])
    fetched = [r for r in stats["ranges"] if r["range"] not in (None,
                                                               "bytes=0-0")]
    assert any(r["start"] <= raw_off < r["end"] + 1 for r in fetched), \
        "no request covered raw offset %d: %s" % (raw_off, fetched)
    line = m2.disk_progress("big", fmt)
    assert 0 < int(line["bytes"]) <= 2 * chunk, line


# --- SEEK_DATA / SEEK_HOLE ---------------------------------------------------

def covers(extents, start, end):
    return any(s <= start and end <= e for s, e in extents)


def test_seek_data_and_hole_on_raw_and_vhd(images, mount):
    img = make_disk(images, "scattered", seed=35)
    expected = local_extents(img)
    m = mount({"vm": "file://%s" % img.path},
              options={"chunk_size": "1M", "formats": FORMATS_OPTION})

    for fmt in ("raw", "vhd"):
        view = m.disk("vm", fmt)
        size = view.stat().st_size
        with open(view, "rb") as f:
            got = data_extents(f.fileno(), size)
        allowed = [(round_down(s, CHUNK), min(round_up(e, CHUNK), img.size))
                   for s, e in expected]
        if fmt == "vhd":
            allowed.append((round_down(img.size, SECTOR), size))
            assert covers(got, size - SECTOR, size), \
                "the VHD footer is not data: %s" % got
        for s, e in expected:
            assert covers(got, s, e), \
                "disk.%s: data [%d, %d) inside a hole; extents %s" % (
                    fmt, s, e, got)
        for s, e in got:
            for piece in range(s, e, SECTOR):
                assert covers(allowed, piece, min(piece + SECTOR, e)), \
                    "disk.%s: [%d, %d) is a hole of the disk but reported " \
                    "as data; extents %s" % (fmt, s, e, got)
        with open(view, "rb") as f:
            with pytest.raises(OSError) as exc:
                os.lseek(f.fileno(), size, os.SEEK_DATA)
            assert exc.value.errno == errno.ENXIO
    line = m.disk_progress("vm", "raw")
    assert int(line["bytes"]) == 0, "seeking fetched data: %s" % line


# --- .progress ---------------------------------------------------------------

def test_each_view_has_its_progress_line(images, mount, tmp_path):
    img = make_disk(images, "odd_grain", seed=36)
    # total: the disk less the chunks the allocation map says are holes.
    data = sum(min(CHUNK, img.size - i * CHUNK)
               for i in units_touched(local_extents(img), CHUNK))
    m = mount({"vm": "file://%s" % img.path},
              options={"chunk_size": "1M", "formats": FORMATS_OPTION})
    files = ("raw",) + VIEWS

    paths = [line["path"] for line in m.progress("url/vm")]
    assert sorted(paths) == sorted("url/vm/disk.%s" % f for f in files)
    before = {}
    for fmt in VIEWS:
        line = m.disk_progress("vm", fmt)
        assert line["path"] == "url/vm/disk.%s" % fmt
        assert line["state"] == "idle", line
        assert int(line["bytes"]) == 0, line
        before[fmt] = int(line["total"])

    for fmt in VIEWS:
        run_tool(["cp", m.disk("vm", fmt), tmp_path / ("copy." + fmt)])
        line = m.wait_state("url/vm/disk.%s.progress" % fmt, "complete")
        assert line["path"] == "url/vm/disk.%s" % fmt
        assert int(line["bytes"]) == int(line["total"]) == data, line
        assert line["percent"] == "100.0"
    lines = {line["path"]: line for line in m.progress("")}
    for fmt in files:
        assert lines["url/vm/disk.%s" % fmt]["state"] == "complete"
    # total does not change its meaning once the export starts.
    assert before == {fmt: data for fmt in VIEWS}, \
        "total before any read: %s, after the copies: %d (the bytes of " \
        "the chunks that hold data)" % (before, data)
