# SPDX-License-Identifier: MIT
"""The url provider end to end: sizes, copies with real tools, lazy reads,
sparse images, .progress, info.json, the read-only tree and the command
line."""

import errno
import json
import os
import re
import shutil
import subprocess
import time

import pytest

from conftest import (KiB, MiB, GiB, allocated_bytes, call_with_timeout,
                      data_extents, read_all, read_range, run_daemon, run_tool,
                      sha256_file)

COPY_TOOLS = {
    "cp": lambda src, dst: ["cp", src, dst],
    "dd": lambda src, dst: ["dd", "if=%s" % src, "of=%s" % dst, "bs=1M",
                            "status=none"],
    "rsync": lambda src, dst: ["rsync", src, dst],
}

STATE_ORDER = ["idle", "preparing", "transferring", "complete"]


def need(tool):
    if shutil.which(tool) is None:
        pytest.skip("%s is not installed" % tool)


# --- copies -----------------------------------------------------------------

@pytest.mark.parametrize("tool", sorted(COPY_TOOLS))
def test_copy_is_byte_identical(tool, http_server, images, mount, tmp_path):
    need(tool)
    img = images.random("web01.raw", 64 * MiB, seed=11)
    m = mount({"web01": http_server.url(img.name)})
    disk = m.disk("web01")

    assert disk.stat().st_size == img.size
    assert http_server.data_bytes(img.name) == 0, \
        "the server sent data before anything was read"

    dst = tmp_path / "copy.raw"
    run_tool(COPY_TOOLS[tool](disk, dst))
    assert dst.stat().st_size == img.size
    assert sha256_file(dst) == img.sha256
    sent = http_server.data_bytes(img.name)
    assert img.size <= sent <= img.size + 4 * MiB, \
        "a plain copy fetched %d bytes for a %d-byte image" % (sent, img.size)


def test_parallel_requests_are_bounded(http_server, images, mount, tmp_path):
    """A copy keeps several requests in flight, never more than `parallel`,
    each for one chunk."""
    img = images.random("web01.raw", 16 * MiB, seed=12)
    http_server.faults(stall=0.1, ranged_only=True)
    m = mount({"web01": http_server.url(img.name)},
              options={"chunk_size": "1M", "parallel": 3})
    dst = tmp_path / "copy.raw"
    run_tool(["cp", m.disk("web01"), dst])
    assert sha256_file(dst) == img.sha256

    stats = http_server.stats(img.name)
    assert 2 <= stats["max_inflight"] <= 3, \
        "max requests in flight: %d" % stats["max_inflight"]
    data_ranges = [r for r in stats["ranges"]
                   if r["range"] not in (None, "bytes=0-0")]
    assert all(r["end"] - r["start"] + 1 <= MiB for r in data_ranges), \
        "a request asked for more than one chunk"


def test_read_from_start_fills_whole_image(http_server, images, mount):
    """A sequential reader from offset 0 sets off a fill of the whole image,
    which goes on while the file is open though the reader stopped (the
    fill stops when the last handle closes: README)."""
    img = images.random("web01.raw", 16 * MiB, seed=13)
    m = mount({"web01": http_server.url(img.name)},
              options={"chunk_size": "1M"})

    with open(m.disk("web01"), "rb") as f:
        assert call_with_timeout(lambda: f.read(2 * MiB)) == \
            img.read(0, 2 * MiB)
        line = m.wait_state("url/web01/disk.raw.progress", "complete",
                            timeout=20)
    assert int(line["bytes"]) == img.size
    assert http_server.data_bytes(img.name) >= img.size


def test_tail_read_fetches_only_its_chunks(http_server, images, mount):
    chunk = 4 * MiB
    size = 2 * GiB
    img = images.sparse("big.raw", size, [(0, chunk), (size - chunk, chunk)])
    m = mount({"big": http_server.url(img.name)},
              options={"chunk_size": "4M"})
    disk = m.disk("big")
    assert disk.stat().st_size == size

    def read_tail():
        with open(disk, "rb") as f:
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_RANDOM)
            return os.pread(f.fileno(), 4 * KiB, size - 4 * KiB)
    assert read_tail() == img.read(size - 4 * KiB, 4 * KiB)

    time.sleep(1)  # let anything the read set off arrive
    sent = http_server.data_bytes(img.name)
    assert 0 < sent <= 2 * chunk, "a 4 KiB read fetched %d bytes" % sent
    assert allocated_bytes(m.cache_dir) <= 2 * chunk + MiB
    line = m.disk_progress("big")
    assert 0 < int(line["bytes"]) <= 2 * chunk
    assert int(line["total"]) == size


# --- a sparse file:// image --------------------------------------------------

SPARSE_CHUNK = 4 * MiB
SPARSE_EXTENTS = [(0, SPARSE_CHUNK), (5 * SPARSE_CHUNK, 2 * SPARSE_CHUNK),
                  (15 * SPARSE_CHUNK, SPARSE_CHUNK)]


@pytest.fixture
def sparse_mount(images, mount):
    img = images.sparse("sparse.raw", 16 * SPARSE_CHUNK, SPARSE_EXTENTS,
                        seed=13)
    with open(img.path, "rb") as f:
        if data_extents(f.fileno(), img.size) != \
                [(o, o + n) for o, n in SPARSE_EXTENTS]:
            pytest.skip("the local filesystem does not keep holes")
    m = mount({"sparse": "file://%s" % img.path},
              options={"chunk_size": "4M"})
    return img, m


def test_sparse_file_seek_data_and_hole(sparse_mount):
    img, m = sparse_mount
    disk = m.disk("sparse")
    assert disk.stat().st_size == img.size
    with open(disk, "rb") as f:
        assert data_extents(f.fileno(), img.size) == \
            [(o, o + n) for o, n in SPARSE_EXTENTS]
        assert os.lseek(f.fileno(), img.size - 1, os.SEEK_HOLE) == img.size
        with pytest.raises(OSError) as exc:
            os.lseek(f.fileno(), img.size, os.SEEK_DATA)
        assert exc.value.errno == errno.ENXIO


def test_sparse_copy_stays_sparse(sparse_mount, tmp_path):
    need("cp")
    img, m = sparse_mount
    dst = tmp_path / "copy.raw"
    run_tool(["cp", "--sparse=always", m.disk("sparse"), dst])
    assert dst.stat().st_size == img.size
    assert sha256_file(dst) == img.sha256
    assert allocated_bytes(dst) <= allocated_bytes(img.path) + SPARSE_CHUNK

    data = sum(n for _, n in SPARSE_EXTENTS)
    line = m.wait_state("url/sparse/disk.raw.progress", "complete")
    assert int(line["total"]) == data, "total should leave out the holes"
    assert int(line["bytes"]) == data


# --- .progress and info.json -------------------------------------------------

def check_progress_fields(line):
    for key in ("state", "phase", "bytes", "total", "percent", "rate", "eta"):
        assert key in line, "%s missing from %r" % (key, line)
    assert line["state"] in STATE_ORDER + ["failed"]
    assert re.fullmatch(r"\d+\.\d", line["percent"]), line["percent"]
    assert 0 <= int(line["bytes"]) <= int(line["total"])


def watch_copy(m, vm, src, dst):
    """Copy src to dst; sample the disk's .progress meanwhile."""
    copier = subprocess.Popen(["cp", str(src), str(dst)],
                              stderr=subprocess.PIPE, text=True)
    samples = []
    while copier.poll() is None:
        samples.append(m.disk_progress(vm))
        time.sleep(0.05)
    assert copier.returncode == 0, "cp failed: %s" % copier.stderr.read()
    copier.stderr.close()
    return samples


def test_progress_moves_through_states(http_server, images, mount, tmp_path):
    web = images.random("web01.raw", 16 * MiB, seed=21)
    db = images.random("db01.img", 4 * MiB, seed=22)
    m = mount({"web01": http_server.url(web.name),
               "db01": http_server.url(db.name)},
              options={"chunk_size": "1M", "parallel": 2})
    disks = {"url/web01/disk.raw", "url/db01/disk.raw"}

    before = m.disk_progress("web01")
    check_progress_fields(before)
    assert before["path"] == "url/web01/disk.raw"
    assert before["state"] == "idle"
    assert int(before["bytes"]) == 0
    assert int(before["total"]) == web.size
    assert [line["path"] for line in m.progress("url/web01")] == \
        ["url/web01/disk.raw"]
    for rel in ("url", ""):
        assert {line["path"] for line in m.progress(rel)} == disks

    http_server.faults(stall=0.1, ranged_only=True)  # slow enough to watch
    dst = tmp_path / "copy.raw"
    samples = watch_copy(m, "web01", m.disk("web01"), dst)
    assert sha256_file(dst) == web.sha256

    for line in samples:
        check_progress_fields(line)
    states = [line["state"] for line in samples]
    assert "transferring" in states, "never saw transferring: %s" % states
    ranks = [STATE_ORDER.index(s) for s in states]
    assert ranks == sorted(ranks), "states went backwards: %s" % states
    done = [int(line["bytes"]) for line in samples]
    assert done == sorted(done), "bytes went backwards"

    final = m.wait_state("url/web01/disk.raw.progress", "complete")
    check_progress_fields(final)
    assert int(final["bytes"]) == int(final["total"]) == web.size
    assert final["percent"] == "100.0"
    for rel in ("url/web01", "url", ""):
        lines = {line["path"]: line for line in m.progress(rel)}
        assert lines["url/web01/disk.raw"]["state"] == "complete"
    assert m.disk_progress("db01")["state"] == "idle"


def test_info_json_and_query_string(http_server, images, mount):
    img = images.random("web01.raw", 2 * MiB, seed=23)
    url = http_server.url(img.name)
    secret = "sig=s3cr3t-t0ken"
    m = mount({"web01": "%s?%s" % (url, secret)})

    info = json.loads(read_all(m.vm("web01") / "info.json"))
    assert info["name"] == "web01"
    assert info["url"] == url
    assert info["size"] == img.size
    assert info["format"] == "raw"
    assert info["source"] == "random"

    assert read_range(m.disk("web01"), 0, img.size) == img.read(0, img.size)
    queries = {r["query"] for r in http_server.stats(img.name)["ranges"]}
    assert queries == {secret}, "the query string must reach the server"
    shown = read_all(m.path / ".progress").decode() + json.dumps(info)
    assert "s3cr3t" not in shown
    assert "s3cr3t" not in m.log_text()


@pytest.mark.parametrize("filename, ext", [
    ("a.vmdk", "vmdk"), ("b.vhdx", "vhdx"), ("c", "raw"), ("d.img", "raw"),
    ("e.raw", "raw")])
def test_extension_names_the_format(filename, ext, http_server, images, mount):
    img = images.random(filename, 1 * MiB, seed=24)
    m = mount({"vm": http_server.url(filename)})
    vm = m.vm("vm")
    assert set(os.listdir(m.path / "url")) - {".progress"} == {"vm"}
    names = set(os.listdir(vm)) - {".progress"}
    assert names == {"info.json", "disk." + ext, "disk.%s.progress" % ext}
    assert (vm / ".progress").exists()
    assert m.disk("vm", ext).stat().st_size == img.size
    assert json.loads(read_all(vm / "info.json"))["format"] == ext


# --- read-only ----------------------------------------------------------------

READ_ONLY_OPS = {
    "open-write": lambda disk: os.open(disk, os.O_WRONLY),
    "open-rdwr": lambda disk: os.open(disk, os.O_RDWR),
    "truncate": lambda disk: os.truncate(disk, 0),
    "create": lambda disk: os.open(disk.parent / "new.raw",
                                   os.O_WRONLY | os.O_CREAT, 0o644),
    "touch-new": lambda disk: (disk.parent / "new.txt").touch(),
    "mkdir": lambda disk: os.mkdir(disk.parent / "dir"),
    "rm": lambda disk: os.unlink(disk),
    "rmdir": lambda disk: os.rmdir(disk.parent),
    "rename": lambda disk: os.rename(disk, disk.parent / "moved.raw"),
    "chmod": lambda disk: os.chmod(disk, 0o666),
    "symlink": lambda disk: os.symlink("disk.raw", disk.parent / "link"),
    "link": lambda disk: os.link(disk, disk.parent / "hard"),
}


@pytest.mark.parametrize("op", sorted(READ_ONLY_OPS))
def test_read_only(op, http_server, images, mount):
    img = images.random("web01.raw", 1 * MiB, seed=25)
    m = mount({"web01": http_server.url(img.name)})
    disk = m.disk("web01")
    listing = sorted(os.listdir(disk.parent))

    with pytest.raises(OSError) as exc:
        READ_ONLY_OPS[op](disk)
    assert exc.value.errno == errno.EROFS, \
        "%s gave %s, not EROFS" % (op, errno.errorcode.get(exc.value.errno))
    assert sorted(os.listdir(disk.parent)) == listing
    assert read_range(disk, 0, img.size) == img.read(0, img.size)


# --- command line and configuration -----------------------------------------

def test_version_and_help(cloudfs_bin):
    version = run_daemon(cloudfs_bin, "--version")
    assert version.returncode == 0
    assert re.search(r"\d+\.\d+", version.stdout + version.stderr)

    usage = run_daemon(cloudfs_bin, "--help")
    assert usage.returncode == 0
    text = usage.stdout + usage.stderr
    for word in ("config", "cache_dir", "cache_size", "chunk_size"):
        assert word in text, "--help does not mention %s" % word


def expect_refusal(binary, mnt, *args, timeout=20):
    """Run the daemon, which must exit non-zero without mounting; return
    its stderr."""
    mnt.mkdir(exist_ok=True)
    proc = subprocess.Popen([str(binary), "-f", *map(str, args), str(mnt)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        subprocess.run(["fusermount3", "-u", "-z", str(mnt)],
                       capture_output=True)
        proc.kill()
        proc.communicate()
        pytest.fail("the daemon did not refuse %s; it kept running" % (args,))
    assert proc.returncode != 0, "the daemon exited 0; stderr:\n%s" % err
    assert not os.path.ismount(mnt)
    return err


BAD_CONFIGS = {
    "line-without-equals": ("[url]\nweb01 = http://127.0.0.1:9/a.raw\n"
                            "this line has no equals sign\n",
                            "this line has no equals sign"),
    "value-not-a-url": ("[url]\nweb01 = not-a-url\n", "not-a-url"),
    "unknown-scheme": ("[url]\nweb01 = gopher://127.0.0.1/a.raw\n", "gopher"),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_bad_config_is_refused(case, cloudfs_bin, tmp_path):
    text, culprit = BAD_CONFIGS[case]
    config = tmp_path / "bad.conf"
    config.write_text(text)
    err = expect_refusal(cloudfs_bin, tmp_path / "mnt", "-o",
                         "config=%s,cache_dir=%s" % (config, tmp_path / "c"))
    assert str(config) in err or config.name in err, \
        "stderr does not name the config file:\n%s" % err
    assert culprit in err, "stderr does not show %r:\n%s" % (culprit, err)


def test_missing_config_is_refused(cloudfs_bin, tmp_path):
    config = tmp_path / "absent.conf"
    err = expect_refusal(cloudfs_bin, tmp_path / "mnt", "-o",
                         "config=%s,cache_dir=%s" % (config, tmp_path / "c"))
    assert "absent.conf" in err


@pytest.mark.parametrize("option, culprit", [
    ("no_such_option=1", "no_such_option"),
    ("cache_size=lots", "cache_size"),
    ("chunk_size=12Q", "chunk_size"),
])
def test_bad_option_is_refused(option, culprit, cloudfs_bin, tmp_path):
    config = tmp_path / "ok.conf"
    config.write_text("[url]\n")
    err = expect_refusal(cloudfs_bin, tmp_path / "mnt", "-o",
                         "config=%s,cache_dir=%s,%s"
                         % (config, tmp_path / "c", option))
    assert culprit in err, "stderr does not name %s:\n%s" % (culprit, err)
