# SPDX-License-Identifier: MIT
"""Hostile or broken answers from an endpoint: bounded, reported in
.progress, never a crash, a hang or a wrong byte. The aws emulator
answers ListSnapshotBlocks with what each case says."""

import errno

import pytest

from aws_fixtures import aws_config
from conftest import read_range
from test_aws import aws, aws_env, emu, vm_dir  # noqa: F401 (fixtures)

TOKEN = "AAUBAXlmlrDTyQ9HoOeMKkkKhzeBQvdmvRcb"


def blocks(**fields):
    answer = {"Blocks": [{"BlockIndex": 0, "BlockToken": TOKEN}],
              "BlockSize": 524288, "VolumeSize": 1,
              "ExpiryTime": 4102444800}
    answer.update(fields)
    return {k: v for k, v in answer.items() if v is not Ellipsis}


CASES = {
    "block size not a power of two": (blocks(BlockSize=524287),
                                      "unexpected answer", errno.EIO),
    "block size zero": (blocks(BlockSize=0), "unexpected answer", errno.EIO),
    "block size huge": (blocks(BlockSize=1 << 40), "unexpected answer",
                        errno.EIO),
    "no block size": (blocks(BlockSize=...), "unexpected answer", errno.EIO),
    "block token null": (blocks(Blocks=[{"BlockIndex": 0,
                                         "BlockToken": None}]),
                         "without index or token", errno.EIO),
    "block index past any volume": (
        blocks(Blocks=[{"BlockIndex": 1 << 62, "BlockToken": TOKEN}]),
        "past any volume", errno.EIO),
    "block index past the volume": (
        blocks(Blocks=[{"BlockIndex": 2048, "BlockToken": TOKEN}]),
        "past the end of the volume", errno.EIO),
    "paging token that repeats": (blocks(NextToken="again"),
                                  "pages do not end", errno.EIO),
    "volume of an exabyte": (blocks(VolumeSize=1 << 40),
                             "more than cloudfs takes", errno.EFBIG),
    "not JSON": ("{\"Blocks\": [", "unexpected answer", errno.EIO),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_block_list(case, emu, mount, monkeypatch):
    answer, words, code = CASES[case]
    aws_env(monkeypatch)
    m = mount(config_text=aws_config(emu), options={"formats": "raw"})
    emu.faults({"ListSnapshotBlocks": {"body": answer}})
    web = vm_dir(m, emu, "web01")
    with pytest.raises(OSError) as exc:
        read_range(web / "disk.raw", 0, 4096, timeout=60)
    assert exc.value.errno == code
    rel = "aws/%s/disk.raw.progress" % web.name
    line = m.wait_state(rel, "failed")
    assert words in line.get("error", ""), line
    # The daemon is alive and the folder answers.
    assert (web / "info.json").read_bytes()


FOREIGN_KEY = "backups/payroll.vmdk"
FOREIGN_TASK = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    '<DescribeExportTasksResponse xmlns="http://ec2.amazonaws.com/doc/'
    '2016-11-15/"><requestId>r</requestId><exportTaskSet><item>'
    '<exportTaskId>export-i-0123</exportTaskId><state>completed</state>'
    '<exportToS3><diskImageFormat>vmdk</diskImageFormat>'
    '<s3Bucket>exports</s3Bucket><s3Key>%s</s3Key></exportToS3>'
    '</item></exportTaskSet></DescribeExportTasksResponse>' % FOREIGN_KEY)


def test_export_key_outside_prefix_is_not_touched(emu, mount, monkeypatch):
    aws_env(monkeypatch)
    m = mount(config_text=aws_config(emu, mode="export", s3_bucket="exports",
                                     s3_prefix="cloudfs/",
                                     export_method="instance"))
    emu.faults({"DescribeExportTasks": {"body": FOREIGN_TASK}})
    web = vm_dir(m, emu, "web01")
    with pytest.raises(OSError) as exc:
        read_range(web / "disk.vmdk", 0, 4096, timeout=60)
    assert exc.value.errno == errno.EIO
    line = m.wait_state("aws/%s/disk.vmdk.progress" % web.name, "failed")
    assert "outside s3_prefix" in line.get("error", ""), line
    assert emu.calls("GetObject") == 0
    assert emu.calls("DeleteObject") == 0


def test_signed_request_not_redirected(emu, mount, monkeypatch, http_server):
    """A signed call answered with a redirect to another host fails; the
    other host never sees the signature."""
    aws_env(monkeypatch)
    http_server.faults(redirect=emu.endpoint + "/")
    m = mount(config_text=aws_config(emu, endpoint_url=http_server.base))
    line = m.progress("aws")[0]
    assert line["state"] == "failed", line
    assert "302" in line.get("error", ""), line
    assert emu.calls("DescribeInstances") == 0
    assert http_server.injected().get("302", 0) >= 1
