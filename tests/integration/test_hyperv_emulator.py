# SPDX-License-Identifier: MIT
"""The Hyper-V emulator itself, driven by real clients: python3-winrm
(Basic and NTLMv2 over HTTPS), curl, smbclient and qemu-img."""

import json
import os
import random
import re
import subprocess
import time

import pytest

from hyperv_fixtures import hyperv, hyperv_session  # noqa: F401,F811

MiB = 1 << 20
WEB_DISK = "C:\\VMs\\web01\\web01.vhdx"
DB_DISK = "C:\\VMs\\db01\\db01.vhdx"
DB_DATA = "C:\\VMs\\db01\\data.vhdx"
DB_DATA_DIFF = "C:\\VMs\\db01\\data_8E3A.avhdx"


def sparse_raw(size, extents, seed):
    rnd = random.Random(seed)
    buf = bytearray(size)
    for off, length in extents:
        buf[off:off + length] = bytes(rnd.getrandbits(8) for _ in range(length))
    return bytes(buf)


RAWS = {
    WEB_DISK: sparse_raw(8 * MiB, [(0, 64 * 1024), (5 * MiB, 4096)], 1),
    DB_DISK: sparse_raw(4 * MiB, [(0, 4096)], 2),
    DB_DATA_DIFF: sparse_raw(6 * MiB, [(MiB, 8192), (6 * MiB - 512, 512)], 3),
}
INVENTORY = {
    "vhds": [{"Path": DB_DATA, "Size": 6 * MiB},
             {"Path": DB_DATA_DIFF, "ParentPath": DB_DATA,
              "VhdType": "Differencing"}],
    "vms": [
        {"Name": "web01", "Id": "6f1c2b7e-52a7-4a57-9a39-0d0c9a6a1f01",
         "State": "Running", "Generation": 2, "MemoryStartup": 2 * 1024 ** 3,
         "ProcessorCount": 2, "CreationTime": 1700000000.25,
         "HardDrives": [{"ControllerType": "SCSI", "ControllerNumber": 0,
                         "ControllerLocation": 0, "Path": WEB_DISK}]},
        {"Name": "db01", "State": "Off", "Generation": 1,
         "HardDrives": [{"ControllerType": "IDE", "Path": DB_DISK},
                        {"ControllerType": "IDE", "ControllerLocation": 1,
                         "Path": DB_DATA_DIFF}]},
    ]}
QUIET = "$ProgressPreference = 'SilentlyContinue'\n"


@pytest.fixture
def hv(hyperv):
    hyperv.seed(INVENTORY, RAWS)
    return hyperv


def clixml_errors(stderr):
    text = stderr.decode()
    assert text.startswith("#< CLIXML\r\n"), text[:200]
    return [re.sub(r"_x000D__x000A_", "\n", m)
            for m in re.findall(r'<S S="Error">(.*?)</S>', text)]


def test_creation_time_as_5_1_writes_it(hv):
    """A DateTime goes out as Windows PowerShell 5.1 writes it, or as the
    round-trip string a calculated property makes of it."""
    out, err, code = hv.winrm(
        "Get-VM -Name web01 | Select-Object Name,CreationTime,"
        "@{n='Created';e={$_.CreationTime.ToUniversalTime().ToString('o')}},"
        "@{n='Local';e={$_.CreationTime.ToString('o')}} | "
        "ConvertTo-Json -Compress")
    assert code == 0, err
    assert b'"CreationTime":"\\/Date(1700000000250)\\/"' in out, out
    vm = json.loads(out)
    assert vm["Created"] == "2023-11-14T22:13:20.2500000Z"
    assert vm["Local"] == "2023-11-14T23:13:20.2500000+01:00"
    out, err, code = hv.winrm(
        "Get-VM | Select-Object @{n='X';e={$_.Name.Length}} | ConvertTo-Json")
    assert code != 0


def test_get_vm_json_basic_and_ntlm(hv):
    for transport in ("basic", "ntlm"):
        out, err, code = hv.winrm(
            "Get-VM | Select-Object Name,Id,State | ConvertTo-Json -Compress",
            transport=transport)
        assert code == 0, err
        vms = json.loads(out)
        assert [(v["Name"], v["State"]) for v in vms] == \
            [("web01", 2), ("db01", 3)]
        assert vms[0]["Id"] == "6f1c2b7e-52a7-4a57-9a39-0d0c9a6a1f01"
        # progress records arrive on stderr even on success
        assert b'S="progress"' in err and not clixml_errors(err)
    stats = hv.stats()
    # Basic rides on every request; NTLM authenticates the connection once
    # and the client's five requests reuse it
    assert stats["auth"] == {"basic": 5, "ntlm": 1}
    assert stats["actions"]["Create"] == 2 and stats["actions"]["Delete"] == 2
    assert stats["cmdlets"]["Get-VM"] == 2
    assert hv.state()["live_shells"] == 0


def test_single_result_is_an_object_and_disks(hv):
    out, err, code = hv.winrm(QUIET + "Get-VM -Name 'web01' | Select-Object "
                              "Name,State,Generation | ConvertTo-Json "
                              "-Compress; Get-VMHardDiskDrive -VMName db01 | "
                              "Select-Object ControllerType,ControllerLocation,"
                              "Path | ConvertTo-Json -Compress; Get-VHD -Path "
                              "'%s' | Select-Object VhdType,Size,ParentPath | "
                              "ConvertTo-Json -Compress" % DB_DATA_DIFF)
    assert code == 0 and err == b"", err
    vm, drives, vhd = [json.loads(l) for l in out.decode().split("\r\n") if l]
    assert vm == {"Name": "web01", "State": 2, "Generation": 2}
    assert drives == [{"ControllerType": 0, "ControllerLocation": 0,
                       "Path": DB_DISK},
                      {"ControllerType": 0, "ControllerLocation": 1,
                       "Path": DB_DATA_DIFF}]
    assert vhd == {"VhdType": 4, "Size": 6 * MiB, "ParentPath": DB_DATA}


def test_long_output_over_several_receives(hv):
    hv.faults(piece_size=300)
    out, err, code = hv.winrm(QUIET + "Get-VM | ConvertTo-Json -Depth 3")
    assert code == 0, err
    assert [v["Name"] for v in json.loads(out)] == ["web01", "db01"]
    assert len(out) > 900
    assert hv.stats()["actions"]["Receive"] >= len(out) // 300


def test_receive_timeout_is_retried(hv):
    hv.faults(receive_timeouts=2)
    t0 = time.monotonic()
    out, err, code = hv.winrm(QUIET + "Test-Path -Path '%s'" % WEB_DISK,
                              operation_timeout=1)
    assert (out, code) == (b"True\r\n", 0)
    stats = hv.stats()
    assert stats["injected"]["receive_timeout"] == 2
    assert stats["actions"]["Receive"] == 3
    assert time.monotonic() - t0 >= 2
    # a slow command: Receive waits, times out, and is sent again
    hv.faults(command_seconds=1.5)
    out, err, code = hv.winrm(QUIET + "Test-Path -Path 'C:\\nope.vhdx'",
                              operation_timeout=1)
    assert (out, code) == (b"False\r\n", 0)
    assert hv.stats()["http"]["500"] >= 3


def test_errors_are_clixml(hv):
    out, err, code = hv.winrm("$ErrorActionPreference = 'Stop'\n"
                              "Get-VM -Name 'nope'\nGet-VM")
    assert code == 1 and out == b""
    lines = clixml_errors(err)
    assert lines[0].startswith('Get-VM : Hyper-V was unable to find a virtual '
                               'machine with name "nope".')
    assert any("FullyQualifiedErrorId : InvalidParameter" in l for l in lines)
    assert hv.stats()["cmdlets"]["Get-VM"] == 1  # stopped at the error
    out, err, code = hv.winrm("Get-VM -Name web01 | Format-Table")
    assert code == 1 and "is not recognized" in clixml_errors(err)[0]
    out, err, code = hv.winrm("Get-VM | Where-Object { $_.State -eq 2 }")
    assert code == 1 and "winrm_fake: unsupported" in clixml_errors(err)[0]
    out, err, code = hv.winrm("Get-VM")  # objects, no ConvertTo-Json
    assert code == 1 and "winrm_fake:" in clixml_errors(err)[-7]


def test_wrong_password_is_401(hv):
    for transport in ("basic", "ntlm"):
        with pytest.raises(RuntimeError, match="401|[Uu]nauthorized|"
                           "credentials"):
            hv.winrm("Get-VM", transport=transport, password="wrong")
    hv.faults(password="rotated")
    with pytest.raises(RuntimeError):
        hv.winrm("Get-VM", transport="basic")
    assert hv.stats()["http"]["401"] >= 3
    r = subprocess.run(["curl", "-s", "-o", "/dev/null", "-D", "-",
                        "--cacert", hv.ca_file, "-X", "POST", hv.wsman_url],
                       capture_output=True, text=True)
    assert r.stdout.startswith("HTTP/1.1 401")
    offers = re.findall(r"(?im)^WWW-Authenticate: (.*?)\r?$", r.stdout)
    assert offers == ["Negotiate", "NTLM", 'Basic realm="WSMAN"']


def test_curl_basic_envelope_checks(hv):
    """A raw Create over curl: content type, MessageID and a bad shell."""
    env = ('<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" '
           'xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing" '
           'xmlns:w="http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd" '
           'xmlns:rsp="http://schemas.microsoft.com/wbem/wsman/1/windows/'
           'shell"><s:Header><a:Action s:mustUnderstand="true">%s</a:Action>'
           '<a:MessageID>uuid:0B8C5E0C-2F43-4F6B-8B3A-2C0A3C6E9D11'
           '</a:MessageID><w:ResourceURI s:mustUnderstand="true">http://'
           'schemas.microsoft.com/wbem/wsman/1/windows/shell/cmd'
           '</w:ResourceURI>%s</s:Header><s:Body>%s</s:Body></s:Envelope>')
    recv = env % ("http://schemas.microsoft.com/wbem/wsman/1/windows/shell/"
                  "Receive", '<w:SelectorSet><w:Selector Name="ShellId">'
                  'NOPE</w:Selector></w:SelectorSet>',
                  '<rsp:Receive><rsp:DesiredStream CommandId="X">stdout'
                  '</rsp:DesiredStream></rsp:Receive>')

    def post(body, ctype="application/soap+xml;charset=UTF-8"):
        r = subprocess.run(["curl", "-s", "--cacert", hv.ca_file, "--basic",
                            "-u", "%s:%s" % (hv.username, hv.password),
                            "-H", "Content-Type: " + ctype, "--data-binary",
                            body, "-w", "\n%{http_code}", hv.wsman_url],
                           capture_output=True, text=True)
        text, _, status = r.stdout.rpartition("\n")
        return int(status), text
    status, text = post(recv, "text/xml")
    assert status == 415
    status, text = post(recv)
    assert status == 500 and 'Code="2150858843"' in text
    assert "<a:RelatesTo>uuid:0B8C5E0C-2F43-4F6B-8B3A-2C0A3C6E9D11" in text
    status, text = post(env % ("http://schemas.xmlsoap.org/ws/2004/09/"
                               "transfer/Create", "",
                               "<rsp:Shell><rsp:InputStreams>stdin"
                               "</rsp:InputStreams></rsp:Shell>"))
    assert status == 200
    shell = re.search(r"<rsp:ShellId>(.*?)</rsp:ShellId>", text).group(1)
    status, text = post(env % ("http://schemas.xmlsoap.org/ws/2004/09/"
                               "transfer/Delete", '<w:SelectorSet><w:Selector '
                               'Name="ShellId">%s</w:Selector></w:SelectorSet>'
                               % shell, ""))
    assert status == 200 and hv.state()["live_shells"] == 0


def test_checkpoint_and_snapshot_listing(hv):
    out, err, code = hv.winrm(
        QUIET + "Checkpoint-VM -Name web01 -SnapshotName 'cloudfs-t1' "
        "-Passthru | Select-Object Name,VMName | ConvertTo-Json -Compress\n"
        "Get-VMHardDiskDrive -VMName web01 | Select-Object -ExpandProperty "
        "Path")
    assert code == 0, err
    snap, path = out.decode().split("\r\n")[:2]
    assert json.loads(snap) == {"Name": "cloudfs-t1", "VMName": "web01"}
    assert re.fullmatch(r"C:\\VMs\\web01\\web01_[0-9A-F-]{36}\.avhdx", path)
    assert hv.state()["checkpoints"] == 1
    out, err, code = hv.winrm(QUIET + "Remove-VMSnapshot -VMName web01 -Name "
                              "'cloudfs-t1'; Get-VMSnapshot -VMName web01 | "
                              "ConvertTo-Json")
    assert (out, code) == (b"", 0)
    assert hv.state()["vms"][0]["HardDrives"] == [WEB_DISK]


def qemu_compare(raw_bytes, image, tmp_path):
    raw = tmp_path / "seed.raw"
    raw.write_bytes(raw_bytes)
    back = tmp_path / "back.raw"
    subprocess.run(["qemu-img", "convert", "-f", "vhdx", "-O", "raw",
                    str(image), str(back)], check=True)
    assert back.read_bytes() == raw_bytes
    r = subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", "vhdx",
                        str(raw), str(image)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_export_job_then_smb_read(hv, tmp_path):
    hv.faults(export_seconds=1.0, persistent_jobs=True)
    out, err, code = hv.winrm(
        QUIET + "Checkpoint-VM -Name db01 -SnapshotName 'cloudfs-e1'\n"
        "Export-VMSnapshot -VMName db01 -Name 'cloudfs-e1' -Path "
        "'D:\\cloudfs-exports\\e1' -AsJob | Select-Object -ExpandProperty Id")
    assert code == 0, err
    job = int(out)
    seen = []
    while True:
        out, err, code = hv.winrm(QUIET + "Get-Job -Id %d | Select-Object "
                                  "State,Progress | ConvertTo-Json -Compress"
                                  % job)
        assert code == 0, err
        info = json.loads(out)
        seen.append(info["Progress"][-1]["PercentComplete"])
        if info["State"] != 1:
            break
        time.sleep(0.2)
    assert info["State"] == 2 and seen[-1] == 100 and seen == sorted(seen)
    out, err, code = hv.winrm(QUIET + "Get-ChildItem -Path "
                              "'D:\\cloudfs-exports\\e1' -Recurse -Filter "
                              "*.vhdx | Select-Object FullName | ConvertTo-Json"
                              " -Compress")
    names = sorted(f["FullName"] for f in json.loads(out))
    assert names == ["D:\\cloudfs-exports\\e1\\db01\\Virtual Hard Disks\\"
                     "data.vhdx", "D:\\cloudfs-exports\\e1\\db01\\Virtual "
                     "Hard Disks\\db01.vhdx"]
    r = hv.smbclient('cd "e1\\db01\\Virtual Hard Disks"; ls; '
                     'get data.vhdx data.vhdx; get db01.vhdx db01.vhdx',
                     cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    qemu_compare(RAWS[DB_DATA_DIFF], tmp_path / "data.vhdx", tmp_path)
    qemu_compare(RAWS[DB_DISK], tmp_path / "db01.vhdx", tmp_path)
    out, err, code = hv.winrm(QUIET + "Remove-Item -Path "
                              "'D:\\cloudfs-exports\\e1' -Recurse -Force; "
                              "Remove-VMSnapshot -VMName db01 -Name "
                              "'cloudfs-e1'; Test-Path 'D:\\cloudfs-exports\\e1'")
    assert (out, code) == (b"False\r\n", 0), err
    assert hv.state()["export_folders"] == []


def test_export_sync_with_progress_and_failure(hv):
    hv.faults(export_seconds=0.6)
    out, err, code = hv.winrm("Export-VM -Name web01 -Path "
                              "'D:\\cloudfs-exports\\s1'")
    assert code == 0, err
    pcts = [int(p) for p in re.findall(r"<PC>(\d+)</PC>", err.decode())]
    assert len(pcts) >= 3 and pcts == sorted(pcts)
    assert os.path.getsize(os.path.join(
        hv.export_dir, "s1", "web01", "Virtual Hard Disks", "web01.vhdx")) > 0
    # the same destination again is refused
    out, err, code = hv.winrm(QUIET + "Export-VM -Name web01 -Path "
                              "'D:\\cloudfs-exports\\s1'")
    assert code == 1 and "already exists" in clixml_errors(err)[0]
    hv.faults(fail_export="The disk is full.")
    out, err, code = hv.winrm(QUIET + "Export-VM -Name web01 -Path "
                              "'D:\\cloudfs-exports\\s2'")
    assert code == 1 and clixml_errors(err)[0].startswith(
        "Export-VM : The disk is full.")
    # jobs belong to the powershell.exe that made them
    out, err, code = hv.winrm(QUIET + "Export-VM -Name web01 -Path "
                              "'D:\\cloudfs-exports\\s3' -AsJob | Out-Null")
    assert code == 0
    out, err, code = hv.winrm(QUIET + "Get-Job -Id 1")
    assert code == 1 and "cannot find a job" in clixml_errors(err)[0]
    out, err, code = hv.winrm(QUIET + "Remove-Item -Path 'C:\\VMs' -Recurse")
    assert code == 1 and "winrm_fake:" in clixml_errors(err)[0]


def test_smb_wrong_password(hv):
    r = hv.smbclient("ls", password="not-it")
    assert r.returncode != 0
    assert "NT_STATUS_LOGON_FAILURE" in r.stdout + r.stderr
    r = hv.smbclient("ls")
    assert r.returncode == 0, r.stdout + r.stderr
