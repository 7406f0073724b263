# SPDX-License-Identifier: MIT
"""The vSphere emulator itself (tests/emulators/vcsim), driven with raw SOAP
over HTTPS and checked with curl and qemu-img: login and faults, a paged
container-view listing, ranged datastore reads with the session cookie,
ExportVm leases (state, info, download, progress, expiry), the OVF
descriptor, and snapshots."""

import shutil
import subprocess
import time
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET

import pytest

from vsphere_fixtures import NS, XSI, SoapFault, mo, moref
# the session-wide fixtures live in vsphere_fixtures
from vsphere_fixtures import vcsim, vcsim_bin, vcsim_session  # noqa: F401

MiB = 1 << 20
OFF_VM = "DC0_C0_RP0_VM1"      # powered off, two disks (2 MiB, 3 MiB)
ON_VM = "DC0_C0_RP0_VM0"       # powered on, one 4 MiB disk
FOLDER_VM = "DC0_H0_VM0"       # in vm/Prod, powered on
TEMPLATE = "DC0_H0_VM1"        # a template


def need(tool):
    if shutil.which(tool) is None:
        pytest.skip("%s is missing" % tool)


def vm_ref(vcsim, name):
    return ("VirtualMachine", vcsim.vm(name)["moref"])


def logged_in(vcsim):
    s = vcsim.soap()
    s.service_content()
    s.login()
    return s


def list_vms(s, props, max_objects=None):
    """CreateContainerView over VirtualMachine + RetrievePropertiesEx +
    ContinueRetrievePropertiesEx: ({name: {prop: elem}}, pages)."""
    view = moref(s.call("CreateContainerView", s.content["viewManager"],
                        mo("container", s.content["rootFolder"]) +
                        "<type>VirtualMachine</type><recursive>true</recursive>"
                        ).find("vim:returnval", NS))
    spec = ('<specSet><propSet><type>VirtualMachine</type>%s</propSet>'
            '<objectSet>%s<skip>true</skip><selectSet xsi:type="TraversalSpec">'
            '<name>view</name><type>ContainerView</type><path>view</path>'
            '<skip>false</skip></selectSet></objectSet></specSet>'
            % ("".join("<pathSet>%s</pathSet>" % p for p in props),
               mo("obj", view)))
    opts = "<options>%s</options>" % (
        "<maxObjects>%d</maxObjects>" % max_objects if max_objects else "")
    res = s.call("RetrievePropertiesEx", s.content["propertyCollector"],
                 spec + opts).find("vim:returnval", NS)
    out, pages = {}, 1
    while True:
        for o in res.findall("vim:objects", NS):
            ps = {p.findtext("vim:name", namespaces=NS): p.find("vim:val", NS)
                  for p in o.findall("vim:propSet", NS)}
            out[ps["name"].text] = dict(ps, _ref=moref(o.find("vim:obj", NS)))
        token = res.findtext("vim:token", namespaces=NS)
        if not token:
            break
        res = s.call("ContinueRetrievePropertiesEx",
                     s.content["propertyCollector"],
                     "<token>%s</token>" % token).find("vim:returnval", NS)
        pages += 1
    s.call("DestroyView", view)
    return out, pages


def export(s, ref):
    return moref(s.call("ExportVm", ref).find("vim:returnval", NS))


def wait_lease(s, lease, states=("ready", "error"), timeout=30):
    deadline = time.monotonic() + timeout
    while True:
        state = s.retrieve(lease, ["state"])["state"].text
        if state in states:
            return state
        assert time.monotonic() < deadline, "lease stuck in %s" % state
        time.sleep(0.05)


def device_urls(s, lease, base):
    info = s.retrieve(lease, ["info"])["info"]
    urls = []
    for d in info.findall("vim:deviceUrl", NS):
        url = d.findtext("vim:url", namespaces=NS)
        urls.append({
            "key": d.findtext("vim:key", namespaces=NS),
            "url": url.replace("://*", "://" + base.split("://", 1)[1]),
            "raw_url": url,
            "targetId": d.findtext("vim:targetId", namespaces=NS),
            "disk": d.findtext("vim:disk", namespaces=NS),
            "fileSize": int(d.findtext("vim:fileSize", "0", namespaces=NS)),
        })
    return info, urls


def http_get(vcsim, url, cookie=None, headers=None):
    req = urllib.request.Request(url, headers=headers or {})
    if cookie:
        req.add_header("Cookie", "vmware_soap_session=%s" % cookie)
    import ssl
    ctx = ssl.create_default_context(cafile=vcsim.ca_file)
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=30) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


def folder_url(vcsim, disk):
    return "%s/folder/%s?dcPath=DC0&dsName=%s" % (
        vcsim.base, disk["flat_name"], disk["datastore"])


# --- sessions and inventory ---------------------------------------------------

def test_login_faults_and_paged_listing(vcsim):
    s = vcsim.soap()
    content = s.service_content()
    assert content["propertyCollector"][0] == "PropertyCollector"
    # nothing but the service content without a session
    with pytest.raises(SoapFault) as exc:
        s.retrieve(content["rootFolder"], ["name"])
    assert exc.value.name == "NotAuthenticated" and exc.value.status == 500
    with pytest.raises(SoapFault) as exc:
        s.login(password="wrong")
    assert exc.value.name == "InvalidLogin"
    vcsim.faults(login_fail=1)
    with pytest.raises(SoapFault) as exc:
        s.login()
    assert exc.value.name == "InvalidLogin"
    s.login()
    assert s.cookie

    vms, pages = list_vms(s, ["name", "runtime.powerState", "config.template",
                              "config.uuid", "config.hardware.device",
                              "parent", "layoutEx.file"])
    assert set(vms) == {v["name"] for v in vcsim.vms()}
    assert pages >= 2 and vcsim.counter("pager.pages") >= 1
    assert vms[ON_VM]["runtime.powerState"].text == "poweredOn"
    assert vms[OFF_VM]["runtime.powerState"].text == "poweredOff"
    assert vms[TEMPLATE]["config.template"].text == "true"
    assert vms[FOLDER_VM]["parent"].text != vms[ON_VM]["parent"].text
    # the devices: xsi:type by namespace URI, not by prefix
    devs = vms[OFF_VM]["config.hardware.device"]
    disks = [d for d in devs.findall("vim:VirtualDevice", NS)
             if d.get("{%s}type" % XSI, "").split(":")[-1] == "VirtualDisk"]
    assert len(disks) == 2
    names = [d.findtext("vim:backing/vim:fileName", namespaces=NS)
             for d in disks]
    assert names == ["[LocalDS_0] DC0_C0_RP0_VM1/disk1.vmdk",
                     "[LocalDS_0] DC0_C0_RP0_VM1/disk2.vmdk"]
    assert [int(d.findtext("vim:capacityInBytes", namespaces=NS))
            for d in disks] == [2 * MiB, 3 * MiB]

    # a client's own maxObjects is honoured too
    _, pages = list_vms(s, ["name"], max_objects=1)
    assert pages == len(vms)

    # expired sessions: NotAuthenticated, then a new login works
    assert vcsim.expire_sessions() >= 1
    with pytest.raises(SoapFault) as exc:
        s.retrieve(content["rootFolder"], ["name"])
    assert exc.value.name == "NotAuthenticated"
    s.login()
    assert s.retrieve(content["rootFolder"], ["name"])["name"].text


# --- datastore reads -----------------------------------------------------------

def test_datastore_ranged_get(vcsim):
    need("curl")
    s = logged_in(vcsim)
    disk = vcsim.vm(OFF_VM)["disks"][1]
    pattern = bytes(range(256)) * 16
    vcsim.seed(OFF_VM, disk=1, data=b"\0" * MiB + pattern)
    url = folder_url(vcsim, disk)

    status, _, _ = http_get(vcsim, url, headers={"Range": "bytes=0-1"})
    assert status == 401
    # curl, as a C client would: CA file, cookie, Range
    r = subprocess.run(["curl", "-sS", "--cacert", vcsim.ca_file,
                        "-b", "vmware_soap_session=%s" % s.cookie,
                        "-r", "%d-%d" % (MiB, MiB + 4095), "-D", "-",
                        "-o", "/dev/stdout", url], capture_output=True)
    head, _, body = r.stdout.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 206"), head
    assert b"Content-Range: bytes 1048576-1052671/3145728" in head
    assert body == pattern
    status, headers, body = http_get(vcsim, url, s.cookie,
                                     {"Range": "bytes=-10"})
    assert status == 206 and body == b"\0" * 10    # the hole at the end

    # a running VM's disk is locked until it has a snapshot
    on = vcsim.vm(ON_VM)["disks"][0]
    status, _, _ = http_get(vcsim, folder_url(vcsim, on), s.cookie,
                            {"Range": "bytes=0-511"})
    assert status == 500 and vcsim.counter("folder.locked") == 1

    vcsim.faults(deny_datastore=True)
    status, _, _ = http_get(vcsim, url, s.cookie, {"Range": "bytes=0-1"})
    assert status == 403
    c = vcsim.counters()
    assert c["folder.denied"] == 1 and c["folder.unauthorized"] == 1
    assert c["folder.bytes"] == 4096 + 10


# --- ExportVm and its lease ----------------------------------------------------

def test_export_powered_on_vm_faults(vcsim):
    s = logged_in(vcsim)
    with pytest.raises(SoapFault) as exc:
        export(s, vm_ref(vcsim, ON_VM))
    assert exc.value.name == "InvalidPowerState"
    d = exc.value.detail[0]
    assert d.findtext("vim:existingState", namespaces=NS) == "poweredOn"
    vcsim.faults(export_fault="TaskInProgress")
    with pytest.raises(SoapFault) as exc:
        export(s, vm_ref(vcsim, OFF_VM))
    assert exc.value.name == "TaskInProgress"
    # without a session
    s.cookie = None
    vcsim.faults(export_fault="")
    with pytest.raises(SoapFault) as exc:
        export(s, vm_ref(vcsim, OFF_VM))
    assert exc.value.name == "NotAuthenticated"


def test_export_download_matches_flat_bytes(vcsim, tmp_path):
    need("qemu-img")
    s = logged_in(vcsim)
    flats = [vcsim.seed(OFF_VM, disk=0, extents=[(0, 64 << 10),
                                                 (MiB + 3, 5000)], seed=7),
             vcsim.seed(OFF_VM, disk=1, extents=[(2 * MiB, 300 << 10)],
                        seed=8)]
    lease = export(s, vm_ref(vcsim, OFF_VM))
    assert lease[0] == "HttpNfcLease"
    assert wait_lease(s, lease) == "ready"
    info, urls = device_urls(s, lease, vcsim.base)
    assert info.findtext("vim:totalDiskCapacityInKB", namespaces=NS) == \
        str(5 * 1024)
    assert info.findtext("vim:leaseTimeout", namespaces=NS) == "300"
    assert [u["targetId"] for u in urls] == ["disk-0.vmdk", "disk-1.vmdk"]
    assert all(u["raw_url"].startswith("https://*/nfc/") for u in urls)
    assert urls[0]["key"] == vcsim.vm(OFF_VM)["disks"][0]["device_url_key"]

    for flat, u in zip(flats, urls):
        status, headers, body = http_get(vcsim, u["url"], s.cookie)
        assert status == 200 and len(body) == u["fileSize"]
        assert body[:4] == b"KDMV"
        out = tmp_path / u["targetId"]
        out.write_bytes(body)
        r = subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", "vmdk",
                            flat, str(out)], capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "identical" in r.stdout
        r = subprocess.run(["qemu-img", "info", "--output=json", str(out)],
                           capture_output=True, text=True)
        assert '"create-type": "streamOptimized"' in r.stdout
        s.call("HttpNfcLeaseProgress", lease, "<percent>50</percent>")

    with pytest.raises(SoapFault) as exc:
        s.call("HttpNfcLeaseProgress", lease, "<percent>101</percent>")
    assert exc.value.name == "InvalidArgument"

    # the descriptor for the .ovf
    files = "".join(
        "<ovfFiles><deviceId>%s</deviceId><path>%s</path><size>%d</size>"
        "</ovfFiles>" % (u["key"], u["targetId"], u["fileSize"]) for u in urls)
    res = s.call("CreateDescriptor", s.content["ovfManager"],
                 mo("obj", vm_ref(vcsim, OFF_VM)) +
                 "<cdp>%s<name>%s</name></cdp>" % (files, OFF_VM))
    ovf = ET.fromstring(res.findtext("vim:returnval/vim:ovfDescriptor",
                                     namespaces=NS))
    O = "{http://schemas.dmtf.org/ovf/envelope/1}"
    disks = ovf.findall("%sDiskSection/%sDisk" % (O, O))
    assert [d.get(O + "capacity") for d in disks] == \
        [str(2 * MiB), str(3 * MiB)]
    assert [f.get(O + "href") for f in ovf.findall(
        "%sReferences/%sFile" % (O, O))] == ["disk-0.vmdk", "disk-1.vmdk"]

    s.call("HttpNfcLeaseComplete", lease)
    assert s.retrieve(lease, ["state"])["state"].text == "done"
    status, _, _ = http_get(vcsim, urls[0]["url"], s.cookie)
    assert status == 404
    c = vcsim.counters()
    assert c["lease.progress"] == 3 and c["lease.complete"] == 1
    assert c["nfc.downloads"] == 2


def test_lease_times_out_without_progress(vcsim):
    s = logged_in(vcsim)
    vcsim.faults(lease_timeout=1)
    lease = export(s, vm_ref(vcsim, TEMPLATE))
    assert wait_lease(s, lease, ("ready",)) == "ready"
    _, urls = device_urls(s, lease, vcsim.base)
    # progress keeps it alive
    for _ in range(3):
        time.sleep(0.5)
        s.call("HttpNfcLeaseProgress", lease, "<percent>10</percent>")
    assert s.retrieve(lease, ["state"])["state"].text == "ready"
    assert wait_lease(s, lease, ("error",), timeout=5) == "error"
    err = s.retrieve(lease, ["error"])["error"]
    assert err.find("vim:fault", NS).get("{%s}type" % XSI).split(":")[-1] \
        == "Timedout"
    status, _, _ = http_get(vcsim, urls[0]["url"], s.cookie)
    assert status == 404
    with pytest.raises(SoapFault) as exc:
        s.call("HttpNfcLeaseComplete", lease)
    assert exc.value.name == "Timedout"
    assert vcsim.counter("lease.timedout") == 1


def test_nfc_stream_switches(vcsim):
    s = logged_in(vcsim)
    vcsim.seed(TEMPLATE, extents=[(0, MiB)], seed=3)
    vcsim.faults(nfc_range=True, nfc_file_size=False, nfc_host_star=False)
    lease = export(s, vm_ref(vcsim, TEMPLATE))
    wait_lease(s, lease)
    _, urls = device_urls(s, lease, vcsim.base)
    u = urls[0]
    assert u["fileSize"] == 0 and u["raw_url"].startswith(vcsim.base)
    status, _, whole = http_get(vcsim, u["url"], s.cookie)
    assert status == 200
    status, h, part = http_get(vcsim, u["url"], s.cookie,
                               {"Range": "bytes=100-199"})
    assert status == 206 and part == whole[100:200]
    assert h["Content-Range"] == "bytes 100-199/%d" % len(whole)

    vcsim.faults(nfc_range=False, nfc_length=False)
    status, h, body = http_get(vcsim, u["url"], s.cookie,
                               {"Range": "bytes=100-199"})
    assert status == 200 and body == whole
    assert h["Content-Length"] is None
    assert h["Transfer-Encoding"] == "chunked"

    vcsim.faults(nfc_length=True, nfc_fail_after=1000)
    with pytest.raises(Exception):
        http_get(vcsim, u["url"], s.cookie)
    assert vcsim.counter("nfc.cut") == 1

    vcsim.faults(nfc_fail_after=-1, nfc_rate=len(whole) * 4)
    began = time.monotonic()
    status, _, body = http_get(vcsim, u["url"], s.cookie)
    assert body == whole and time.monotonic() - began >= 0.2
    s.call("HttpNfcLeaseAbort", lease)
    assert s.retrieve(lease, ["state"])["state"].text == "error"
    assert vcsim.counter("lease.abort") == 1


# --- snapshots ------------------------------------------------------------------

def test_snapshot_create_read_remove(vcsim):
    s = logged_in(vcsim)
    ref = vm_ref(vcsim, ON_VM)
    disk = vcsim.vm(ON_VM)["disks"][0]
    vcsim.seed(ON_VM, data=b"cloudfs" * 100)
    task = moref(s.call("CreateSnapshot_Task", ref,
                        "<name>cloudfs-export</name><memory>false</memory>"
                        "<quiesce>false</quiesce>").find("vim:returnval", NS))
    snap = moref(s.wait_task(task))
    assert snap[0] == "VirtualMachineSnapshot"
    tree = s.retrieve(ref, ["snapshot"])["snapshot"]
    assert tree.findtext("vim:rootSnapshotList/vim:name",
                         namespaces=NS) == "cloudfs-export"
    assert vcsim.vm(ON_VM)["snapshots"] == 1
    # the base disk is readable now
    status, _, body = http_get(vcsim, folder_url(vcsim, disk), s.cookie,
                               {"Range": "bytes=0-699"})
    assert status == 206 and body == b"cloudfs" * 100

    task = moref(s.call("RemoveSnapshot_Task", snap,
                        "<removeChildren>false</removeChildren>"
                        ).find("vim:returnval", NS))
    s.wait_task(task)
    assert vcsim.vm(ON_VM)["snapshots"] == 0
    assert "snapshot" not in s.retrieve(ref, ["snapshot"])
    c = vcsim.counters()
    assert c["soap.CreateSnapshot_Task"] == 1
    assert c["soap.RemoveSnapshot_Task"] == 1


CBT_VM = "DC0_C0_RP0_VM2"      # powered off, changed block tracking
CBT_ON_VM = "DC0_H0_VM2"       # powered on, changed block tracking


def changed_areas(s, ref, key, offset, snap=None):
    """One QueryChangedDiskAreas answer: (startOffset, length, [(start,
    length)])."""
    args = (mo("snapshot", snap) if snap else "") + (
        "<deviceKey>%d</deviceKey><startOffset>%d</startOffset>"
        "<changeId>*</changeId>" % (key, offset))
    rv = s.call("QueryChangedDiskAreas", ref, args).find("vim:returnval", NS)
    return (int(rv.findtext("vim:startOffset", namespaces=NS)),
            int(rv.findtext("vim:length", namespaces=NS)),
            [(int(a.findtext("vim:start", namespaces=NS)),
              int(a.findtext("vim:length", namespaces=NS)))
             for a in rv.findall("vim:changedArea", NS)])


def test_changed_disk_areas_in_parts(vcsim):
    s = logged_in(vcsim)
    vm = vcsim.vm(CBT_VM)
    assert vm["change_tracking"] and vm["power_state"] == "poweredOff"
    disk = vm["disks"][0]
    vcsim.seed(CBT_VM, extents=[(100, 10), (MiB + 65536, 65537)])
    vcsim.faults(cbt_span=MiB)
    pos, areas, answers = 0, [], 0
    while pos < disk["capacity"]:
        start, length, got = changed_areas(s, vm_ref(vcsim, CBT_VM),
                                           disk["key"], pos)
        assert start == pos and 0 < length <= MiB
        areas += got
        pos, answers = start + length, answers + 1
    assert answers == disk["capacity"] // MiB
    # 64 KiB blocks that are not all zeros
    assert areas == [(0, 65536), (MiB + 65536, 2 * 65536)]

    # no tracking: a FileFault
    off = vcsim.vm(OFF_VM)
    with pytest.raises(SoapFault) as exc:
        changed_areas(s, vm_ref(vcsim, OFF_VM), off["disks"][0]["key"], 0)
    assert exc.value.name == "File"
    assert "change tracking is not enabled" in exc.value.message


def test_changed_disk_areas_of_a_snapshot(vcsim):
    s = logged_in(vcsim)
    ref = vm_ref(vcsim, CBT_ON_VM)
    disk = vcsim.vm(CBT_ON_VM)["disks"][0]
    vcsim.seed(CBT_ON_VM, extents=[(3 * MiB, 4096)])
    vcsim.faults(cbt_span=0)      # one answer for the whole disk
    # a running VM's current state has no answer; its snapshot has
    with pytest.raises(SoapFault):
        changed_areas(s, ref, disk["key"], 0)
    task = moref(s.call("CreateSnapshot_Task", ref,
                        "<name>t</name><memory>false</memory>"
                        "<quiesce>false</quiesce>").find("vim:returnval", NS))
    snap = moref(s.wait_task(task))
    assert changed_areas(s, ref, disk["key"], 0, snap) == \
        (0, disk["capacity"], [(3 * MiB, 65536)])
    assert vcsim.counter("cbt.snapshot") == 1
