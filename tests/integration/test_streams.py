# SPDX-License-Identifier: MIT
"""Sources of unknown length: a server that ignores Range and sends no
Content-Length (as a vSphere NFC export stream may) is read as one stream
whose size shows at its end. The file reads with direct I/O to its real
end, its size is then exact, views wait for the end of the stream, and
.progress has no total until it is known."""

import os

from conftest import MiB, read_all, run_tool, sha256_file, wait_until
from test_formats import qemu, qemu_img  # noqa: F401  (fixture)


def stream_mount(images, http_server, mount, size, formats=None, seed=3):
    img = images.random("stream.raw", size, seed=seed)
    http_server.faults(norange=True, nolength=True)
    options = {"chunk_size": "1M"}
    if formats:
        options["formats"] = formats
    m = mount({"vm": http_server.url(img.name)}, options=options)
    return img, m


def test_stream_of_unknown_length_reads_to_its_end(images, http_server,
                                                   mount, tmp_path):
    size = 5 * MiB + 12345
    img, m = stream_mount(images, http_server, mount, size)
    disk = m.disk("vm", "raw")
    assert disk.stat().st_size == 0, "a size was invented before the end"
    line = m.disk_progress("vm", "raw")
    assert line["state"] == "idle" and line["total"] == "0", line

    data = read_all(disk)
    assert len(data) == size
    assert data == img.path.read_bytes()
    wait_until(lambda: disk.stat().st_size == size, 10,
               what="the size known after the stream")
    line = m.disk_progress("vm", "raw")
    assert line["state"] == "complete", line
    assert line["total"] == str(size) and line["bytes"] == str(size), line

    # A copy now is an ordinary one, from the cache.
    copy = tmp_path / "copy.raw"
    run_tool(["cp", disk, copy])
    assert sha256_file(copy) == img.sha256
    assert http_server.stats(img.name)["requests"] <= 3


def test_view_of_a_stream_waits_for_its_end(images, http_server, mount,
                                            qemu_img, tmp_path):
    size = 3 * MiB + 512
    img, m = stream_mount(images, http_server, mount, size, formats="qcow2",
                          seed=4)
    view = m.disk("vm", "qcow2")
    dst = tmp_path / "copy.qcow2"
    dst.write_bytes(read_all(view))
    cmp = qemu(qemu_img, "compare", "-f", "qcow2", "-F", "raw", dst,
               img.path, check=False)
    assert cmp.returncode == 0 and "identical" in cmp.stdout, cmp.stdout
    assert view.stat().st_size == os.path.getsize(dst)
