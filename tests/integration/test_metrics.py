# SPDX-License-Identifier: MIT
"""MOUNT/.metrics: counters in the Prometheus text format, checked with a
strict parser of that format (and promtool where it is installed), and
against what a copy did."""

import re
import shutil
import subprocess

from conftest import MiB, read_all, run_tool, wait_until

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"'
SAMPLE = re.compile(r"^(%s)(\{(?:%s)(?:,%s)*\})? (\S+)$" % (NAME, LABEL,
                                                          LABEL))


def parse_metrics(text):
    """{(name, frozenset(labels)): value}; asserts the format."""
    assert text.endswith("\n")
    types, helps, samples = {}, {}, {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name, _, doc = line[7:].partition(" ")
            assert re.fullmatch(NAME, name) and doc, line
            helps[name] = doc
        elif line.startswith("# TYPE "):
            name, _, kind = line[7:].partition(" ")
            assert kind in ("counter", "gauge"), line
            assert name not in types, "TYPE twice for %s" % name
            types[name] = kind
        else:
            m = SAMPLE.match(line)
            assert m, "not a sample line: %r" % line
            name, labels, value = m.group(1), m.group(2) or "", m.group(3)
            assert name in types, "%s has no TYPE before it" % name
            if types[name] == "counter":
                assert name.endswith("_total"), name
            pairs = frozenset(re.findall(r'([a-zA-Z_]\w*)="((?:[^"\\]|\\.)*)"',
                                         labels))
            assert (name, pairs) not in samples, "duplicate %s" % line
            samples[(name, pairs)] = float(value)
    assert set(types) == set(helps)
    return samples


def value(samples, name, **labels):
    return samples[(name, frozenset(labels.items()))]


def test_metrics_count_a_copy(images, http_server, mount, tmp_path):
    img = images.random("m.raw", 3 * MiB, seed=7)
    m = mount({"m": http_server.url(img.name)})
    assert m.disk("m").stat().st_size == img.size   # listed
    text = (m.path / ".metrics").read_text()
    before = parse_metrics(text)
    disk = {"provider": "url", "disk": "url/m/disk"}
    assert value(before, "cloudfs_fetched_bytes_total", **disk) == 0
    assert value(before, "cloudfs_exports", provider="url",
                 state="idle") == 1

    run_tool(["cp", m.disk("m"), tmp_path / "copy.raw"])
    read_all(m.disk("m"))          # again, from the cache
    wait_until(lambda: m.disk_progress("m")["state"] == "complete", 10)
    text = (m.path / ".metrics").read_text()
    after = parse_metrics(text)
    assert value(after, "cloudfs_fetched_bytes_total", **disk) == 3 * MiB
    # The second read may come from the page cache (keep_cache).
    assert value(after, "cloudfs_served_bytes_total", **disk) >= 3 * MiB
    assert value(after, "cloudfs_disk_cached_bytes", **disk) == 3 * MiB
    assert value(after, "cloudfs_disk_data_bytes", **disk) == 3 * MiB
    assert value(after, "cloudfs_cache_hits_total", **disk) > 0
    assert value(after, "cloudfs_cache_misses_total", **disk) > 0
    assert value(after, "cloudfs_exports", provider="url",
                 state="complete") == 1
    assert value(after, "cloudfs_http_attempts_total") >= 1
    assert value(after, "cloudfs_cache_used_bytes") >= 3 * MiB

    promtool = shutil.which("promtool")
    if promtool:
        check = subprocess.run([promtool, "check", "metrics"], input=text,
                               capture_output=True, text=True, timeout=60)
        assert check.returncode == 0, check.stdout + check.stderr


def test_label_values_are_escaped(images, http_server, mount):
    img = images.random("q.raw", 64 * 1024, seed=8)
    m = mount(config_text='[url]\nweird"name\\x = %s\n'
              % http_server.url(img.name))
    assert len([n for n in m.path.joinpath("url").iterdir()
                if not n.name.startswith(".")]) == 1
    samples = parse_metrics((m.path / ".metrics").read_text())
    disks = {dict(labels)["disk"] for (name, labels) in samples
             if name == "cloudfs_fetched_bytes_total"}
    assert disks == {'url/weird\\"name\\\\x/disk'}, disks
