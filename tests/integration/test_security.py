# SPDX-License-Identifier: MIT
"""Who may read what, where root's files go, which cache folders are
trusted, and .progress lines whatever a name holds."""

import os
import stat
import subprocess
import sys

import pytest

from conftest import MiB, read_all, run_daemon
from test_core import expect_refusal

NOBODY = 65534


def mode_of(path):
    st = os.stat(path)
    return stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid


def test_private_by_default(http_server, images, mount):
    img = images.random("web01.raw", 2 * MiB, seed=81)
    m = mount({"web01": http_server.url(img.name)})
    me = (os.getuid(), os.getgid())
    assert mode_of(m.disk("web01")) == (0o400, *me)
    assert mode_of(m.vm("web01")) == (0o500, *me)
    assert mode_of(m.path / "url") == (0o500, *me)
    assert mode_of(m.path / ".progress") == (0o400, *me)


def test_uid_gid_umask(http_server, images, mount):
    img = images.random("web01.raw", 2 * MiB, seed=82)
    m = mount({"web01": http_server.url(img.name)},
              options={"uid": 1234, "gid": 2345, "umask": "0227"})
    assert mode_of(m.disk("web01")) == (0o440, 1234, 2345)
    assert mode_of(m.vm("web01")) == (0o550, 1234, 2345)


def test_bad_umask_refused(cloudfs_bin, tmp_path):
    err = expect_refusal(cloudfs_bin, tmp_path / "mnt", "-o",
                         "umask=9x,cache_dir=%s" % (tmp_path / "c"))
    assert "umask" in err


def other_user_reads(path):
    """Whether user nobody can read the first byte of path."""
    code = ("import sys\n"
            "try:\n"
            "    open(sys.argv[1], 'rb').read(1)\n"
            "except PermissionError:\n"
            "    sys.exit(13)\n")
    res = subprocess.run([sys.executable, "-c", code, str(path)],
                         user=NOBODY, group=NOBODY, extra_groups=[],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode in (0, 13), res.stderr
    return res.returncode == 0


@pytest.fixture
def reachable(tmp_path):
    """Let other users pass through the test's folders to the mount."""
    chain = [tmp_path, tmp_path.parent, tmp_path.parent.parent]
    saved = [(p, stat.S_IMODE(p.stat().st_mode)) for p in chain]
    for p, mode in saved:
        p.chmod(mode | 0o011)
    yield
    for p, mode in saved:
        p.chmod(mode)


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to switch users")
def test_allow_other_shares_only_what_modes_give(http_server, images, mount,
                                                 reachable):
    img = images.random("web01.raw", 2 * MiB, seed=83)
    m = mount({"web01": http_server.url(img.name)},
              options={"allow_other": True})
    assert not other_user_reads(m.disk("web01"))
    assert not other_user_reads(m.path / ".progress")
    # Nothing was exported for the refused reader.
    assert m.disk_progress("web01")["state"] == "idle"

    shared = mount({"web01": http_server.url(img.name)},
                   options={"allow_other": True, "umask": "0222"})
    assert other_user_reads(shared.disk("web01"))


@pytest.mark.skipif(os.getuid() != 0, reason="root's defaults")
def test_root_defaults_ignore_home(cloudfs_bin, tmp_path):
    env = {"HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "c"),
           "XDG_CACHE_HOME": str(tmp_path / "k")}
    res = subprocess.run([str(cloudfs_bin), "--help"], capture_output=True,
                         text=True, timeout=20, env={**os.environ, **env})
    assert res.returncode == 0
    assert "/etc/cloudfs/cloudfs.conf" in res.stdout
    assert "/var/cache/cloudfs" in res.stdout
    assert str(tmp_path) not in res.stdout


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o1777])
def test_cache_dir_others_can_write_refused(cloudfs_bin, tmp_path, mode):
    cache = tmp_path / "cache"
    cache.mkdir()
    cache.chmod(mode)
    err = expect_refusal(cloudfs_bin, tmp_path / "mnt", "-o",
                         "cache_dir=%s" % cache)
    assert str(cache) in err and "written by others" in err


def test_cache_dir_of_other_files_refused(cloudfs_bin, tmp_path):
    cache = tmp_path / "var-cache"
    cache.mkdir(mode=0o755)
    (cache / "apt").mkdir()
    (cache / "apt" / "pkgcache.bin").write_bytes(b"x")
    err = expect_refusal(cloudfs_bin, tmp_path / "mnt", "-o",
                         "cache_dir=%s" % cache)
    assert "cloudfs did not make" in err
    assert (cache / "apt" / "pkgcache.bin").exists()
    assert not (cache / "CACHEDIR.TAG").exists()


def test_second_daemon_on_a_cache_dir(http_server, images, mount, tmp_path,
                                      cloudfs_bin):
    img = images.random("web01.raw", 2 * MiB, seed=84)
    m = mount({"web01": http_server.url(img.name)})
    assert (m.cache_dir / "CACHEDIR.TAG").read_text().startswith(
        "Signature: 8a477f597d28d172789f06886806bc55")
    err = expect_refusal(cloudfs_bin, tmp_path / "mnt2", "-o",
                         "config=%s,cache_dir=%s" % (m.config, m.cache_dir))
    assert "in use by another cloudfs" in err
    assert read_all(m.disk("web01")) == img.read(0, img.size)


def test_progress_path_escaped(http_server, images, mount):
    img = images.random("web01.raw", 2 * MiB, seed=85)
    m = mount(config_text="[url]\nweb 01 = %s\n" % http_server.url(img.name))
    assert "web 01" in os.listdir(m.path / "url")   # listed: the root's
    text = read_all(m.path / ".progress").decode()  # .progress never waits
    line = [l for l in text.splitlines() if "web" in l][0]
    fields = line.split(" ")
    assert fields[0] == "url/web\\x2001/disk.raw", line
    assert all("=" in f for f in fields[1:]), line


# --- redirects and validators ----------------------------------------------

@pytest.fixture
def tls_cert(tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    res = subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        capture_output=True, text=True)
    if res.returncode:
        pytest.skip("openssl cannot make a certificate: %s" % res.stderr)
    return cert, key


def test_https_to_http_redirect_refused(http_server, images, mount, tmp_path,
                                        tls_cert):
    from conftest import HttpServer
    img = images.random("web01.raw", 2 * MiB, seed=86)
    tls = HttpServer(images.root, tmp_path / "https.log", tls=tls_cert)
    try:
        tls.faults(redirect=http_server.base + "/")
        m = mount(config_text="[url]\nca_file = %s\nweb01 = %s\n"
                  % (tls_cert[0], tls.url(img.name)))
        line = m.progress("url/web01")[0]
        assert line["state"] == "failed", line
        # Refused for the scheme (not for TLS: the certificate was good).
        assert 'Protocol \\x22http\\x22 not supported' in \
            line.get("error", ""), line
        assert http_server.stats(img.name)["requests"] == 0
    finally:
        tls.stop()


def test_no_validator_no_resume(http_server, images, mount, tmp_path):
    img = images.random("web01.raw", 4 * MiB, seed=87)
    urls = {"web01": http_server.url(img.name)}
    cache = tmp_path / "cache"
    http_server.faults(novalidators=1)
    m = mount(urls, cache_dir=cache)
    assert read_all(m.disk("web01")) == img.read(0, img.size)
    m.unmount()
    sent = http_server.data_bytes(img.name)
    assert sent >= img.size
    again = mount(urls, cache_dir=cache)
    assert again.disk_progress("web01")["bytes"] == "0"
    assert read_all(again.disk("web01")) == img.read(0, img.size)
    assert http_server.data_bytes(img.name) >= sent + img.size
