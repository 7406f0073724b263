# SPDX-License-Identifier: MIT
"""Disks that come inside a container file (a fixed VHD, a dynamic VHDX,
a streamOptimized VMDK), served by the url provider: the native file is
the container as it is, and formats= views (disk.raw, disk.qcow2) are of
the disk inside, decoded by the container readers from the same cache.
Unallocated blocks of the container are holes of the views and are never
fetched."""

import errno
import os

import pytest

from conftest import KiB, MiB, GiB, data_extents, read_all, read_range, \
    run_tool, sha256_file, wait_until
from test_formats import qemu, qemu_img  # noqa: F401  (fixture)

CONTAINERS = {
    # extension: qemu-img output format and options
    "vhd": ("vpc", "subformat=fixed,force_size=on"),
    "vhdx": ("vhdx", "subformat=dynamic,block_size=1M"),
    "vmdk": ("vmdk", "subformat=streamOptimized"),
}

DISK_SIZE = 24 * MiB
DISK_EXTENTS = [(0, MiB + 333), (7 * MiB, 3 * MiB),
                (DISK_SIZE - 70000, 70000)]


def make_container(images, qemu_img, ext, size=DISK_SIZE,
                   extents=DISK_EXTENTS, seed=7):
    raw = images.sparse("inside-%s.raw" % ext, size, extents, seed=seed)
    out = raw.path.parent / ("disk-%s.%s" % (ext, ext))
    fmt, opts = CONTAINERS[ext]
    qemu(qemu_img, "convert", "-f", "raw", "-O", fmt, "-o", opts, raw.path,
         out)
    return raw, out


@pytest.mark.parametrize("transport", ["http", "file"])
@pytest.mark.parametrize("ext", sorted(CONTAINERS))
def test_views_of_the_disk_inside(ext, transport, images, qemu_img,
                                  http_server, mount, tmp_path):
    raw, container = make_container(images, qemu_img, ext)
    url = (http_server.url(container.name) if transport == "http"
           else "file://%s" % container)
    m = mount({"vm": url}, options={"chunk_size": "1M",
                                    "formats": "raw:qcow2"})
    native = m.disk("vm", ext)
    assert native.stat().st_size == container.stat().st_size

    # disk.raw: the disk inside, byte for byte, its size exact once read.
    data = read_all(m.disk("vm", "raw"))
    assert len(data) == raw.size
    assert data == raw.path.read_bytes()
    assert m.disk("vm", "raw").stat().st_size == raw.size

    # Another view of the same disk, from the same cache.
    dst = tmp_path / "copy.qcow2"
    run_tool(["cp", m.disk("vm", "qcow2"), dst])
    cmp = qemu(qemu_img, "compare", "-f", "qcow2", "-F", "raw", dst,
               raw.path, check=False)
    assert cmp.returncode == 0 and "identical" in cmp.stdout, cmp.stdout

    # The native file is the container as it is.
    copy = tmp_path / ("copy." + ext)
    run_tool(["cp", native, copy])
    assert sha256_file(copy) == sha256_file(container)

    # Holes of the disk inside are holes of disk.raw. A fixed VHD keeps
    # none of its own: over http (no map of the file) it has none to tell.
    if ext == "vhd" and transport == "http":
        return
    fd = os.open(m.disk("vm", "raw"), os.O_RDONLY)
    try:
        holes_seen = data_extents(fd, raw.size)
    finally:
        os.close(fd)
    assert holes_seen, "disk.raw reports no data"
    covered = sum(end - start for start, end in holes_seen)
    assert covered < raw.size, "disk.raw reports no hole at all"
    for start, end in holes_seen:
        assert any(s < end and start < s + n + 2 * MiB
                   for s, n in DISK_EXTENTS), \
            "data reported at %d-%d where the disk has none" % (start, end)


def test_unallocated_blocks_are_never_fetched(images, qemu_img, http_server,
                                              mount):
    """A 4 KiB read at the end of a large, mostly empty VHDX's disk.raw
    reads the container's metadata and the one block it needs; the empty
    blocks in between are never asked for."""
    size = GiB
    raw, container = make_container(
        images, qemu_img, "vhdx", size=size,
        extents=[(0, MiB), (size - MiB, MiB)], seed=8)
    assert container.stat().st_size < 16 * MiB
    m = mount({"vm": http_server.url(container.name)},
              options={"chunk_size": "1M", "formats": "raw"})
    view = m.disk("vm", "raw")
    tail = read_range(view, size - 4 * KiB, 4 * KiB)
    assert tail == raw.read(size - 4 * KiB, 4 * KiB)
    middle = read_range(view, size // 2, 4 * KiB)
    assert middle == b"\0" * (4 * KiB)
    sent = http_server.data_bytes(container.name)
    assert sent <= 8 * MiB, \
        "%d bytes fetched for two 4 KiB reads of disk.raw" % sent


def test_broken_container_fails_with_a_reason(images, http_server, mount):
    """A file that says .vhdx but is not one: with views asked for, the
    export fails (EIO for every file of the disk) and .progress says the
    container could not be read."""
    junk = images.random("junk.vhdx", 4 * MiB, seed=9)
    m = mount({"vm": http_server.url(junk.name)},
              options={"chunk_size": "1M", "formats": "raw"})
    for ext in ("raw", "vhdx"):
        with pytest.raises(OSError) as exc:
            read_all(m.disk("vm", ext))
        assert exc.value.errno == errno.EIO
    line = m.disk_progress("vm", "raw")
    assert line["state"] == "failed", line
    assert "vhdx container" in line["error"], line
