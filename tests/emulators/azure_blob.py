# SPDX-License-Identifier: MIT
"""Blob-service helpers shared by the Azure fake and its test fixtures:
Shared Key signing, blob service SAS (sv=2022-11-02) and the few page-blob
calls the fake makes against Azurite, plus the fixed-VHD footer that a
managed disk's page blob ends with.  Standard library only.

Azurite's development account is path-style:
    http://127.0.0.1:PORT/devstoreaccount1/<container>/<blob>
"""

import base64
import email.utils
import hashlib
import hmac
import http.client
import os
import re
import struct
import time
import urllib.parse
import uuid

ACCOUNT = "devstoreaccount1"
# The well-known key of Azurite's (and the old Storage Emulator's) dev account.
ACCOUNT_KEY = ("Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6"
               "tq/K1SZFPTOtr/KBHBeksoGMGw==")
STORAGE_VERSION = "2022-11-02"
PAGE = 512
MAX_PUT_PAGE = 4 << 20
ZERO_PAGE = bytes(PAGE)

VHD_FOOTER_SIZE = 512
_VHD_EPOCH = 946684800  # 2000-01-01T00:00:00Z


class BlobError(Exception):
    def __init__(self, status, code, body):
        super().__init__("blob service answered %d %s: %s"
                         % (status, code, body[:300]))
        self.status = status
        self.code = code


def _key():
    return base64.b64decode(ACCOUNT_KEY)


def _hmac(text):
    return base64.b64encode(hmac.new(_key(), text.encode("utf-8"),
                                     hashlib.sha256).digest()).decode()


def iso_seconds(t):
    """A time as the blob service writes it in a SAS: 2024-01-02T03:04:05Z."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(t)))


def service_sas(container, blob, permissions="", start=None, expiry=None,
                identifier="", protocol=""):
    """The query string of a blob service SAS (sr=b) for one blob.

    Fields left empty are left out of the URL and signed as empty; with an
    identifier the service takes start, expiry and permissions from the
    container's stored access policy of that id."""
    st = iso_seconds(start) if start is not None else ""
    se = iso_seconds(expiry) if expiry is not None else ""
    canonical = "/blob/%s/%s/%s" % (ACCOUNT, container, blob)
    # 2020-12-06 and later: sp st se canonical si sip spr sv sr snapshot-time
    # ses rscc rscd rsce rscl rsct
    to_sign = "\n".join([permissions, st, se, canonical, identifier, "",
                         protocol, STORAGE_VERSION, "b", "", "", "", "", "",
                         "", ""])
    fields = [("sv", STORAGE_VERSION)]
    if permissions:
        fields.append(("sp", permissions))
    if st:
        fields.append(("st", st))
    if se:
        fields.append(("se", se))
    if protocol:
        fields.append(("spr", protocol))
    fields.append(("sr", "b"))
    if identifier:
        fields.append(("si", identifier))
    fields.append(("sig", _hmac(to_sign)))
    return urllib.parse.urlencode(fields, quote_via=urllib.parse.quote,
                                  safe="")


class BlobClient:
    """Shared Key calls to one Azurite blob endpoint; one connection each
    call (cheap on loopback, and safe from any thread)."""

    def __init__(self, endpoint):
        url = urllib.parse.urlsplit(endpoint)
        self.host = url.hostname
        self.port = url.port
        self.endpoint = endpoint.rstrip("/")

    def url(self, container, blob=None):
        path = "/%s/%s" % (ACCOUNT, container)
        if blob is not None:
            path += "/" + urllib.parse.quote(blob)
        return self.endpoint + path

    def _sign(self, method, path, query, headers):
        canon_headers = "".join(
            "%s:%s\n" % (k, headers[k].strip())
            for k in sorted(h for h in headers if h.startswith("x-ms-")))
        resource = "/%s%s" % (ACCOUNT, path)
        for k in sorted(query):
            resource += "\n%s:%s" % (k.lower(), query[k])
        length = headers.get("content-length", "")
        to_sign = "\n".join([
            method, "", "", "" if length == "0" else length, "",
            headers.get("content-type", ""), "", "", "", "", "",
            headers.get("range", "")]) + "\n" + canon_headers + resource
        return "SharedKey %s:%s" % (ACCOUNT, _hmac(to_sign))

    def request(self, method, container, blob=None, query=None, headers=None,
                body=b"", ok=(200, 201, 202)):
        """Send one signed request; return (status, headers, body)."""
        query = dict(query or {})
        path = "/%s/%s" % (ACCOUNT, container)
        if blob is not None:
            path += "/" + urllib.parse.quote(blob)
        hdrs = {k.lower(): str(v) for k, v in (headers or {}).items()}
        hdrs["x-ms-date"] = email.utils.formatdate(usegmt=True)
        hdrs["x-ms-version"] = STORAGE_VERSION
        hdrs["content-length"] = str(len(body))
        hdrs["authorization"] = self._sign(method, path, query, hdrs)
        target = path
        if query:
            target += "?" + urllib.parse.urlencode(query)
        conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
        try:
            conn.request(method, target, body=body, headers=hdrs)
            resp = conn.getresponse()
            data = resp.read()
            status, rhdrs = resp.status, {k.lower(): v for k, v
                                          in resp.getheaders()}
        finally:
            conn.close()
        if status not in ok:
            raise BlobError(status, rhdrs.get("x-ms-error-code", ""),
                            data.decode(errors="replace"))
        return status, rhdrs, data

    # --- containers ---
    def create_container(self, container):
        self.request("PUT", container, query={"restype": "container"},
                     ok=(201, 409))

    def delete_container(self, container):
        self.request("DELETE", container, query={"restype": "container"},
                     ok=(202, 404))

    def list_containers(self):
        conn_q = {"comp": "list"}
        _, _, data = self.request("GET", "", query=conn_q)
        return re.findall(r"<Name>([^<]*)</Name>", data.decode())

    def set_policies(self, container, policies):
        """Replace the stored access policies: [(id, start, expiry, perm)]."""
        items = "".join(
            "<SignedIdentifier><Id>%s</Id><AccessPolicy><Start>%s</Start>"
            "<Expiry>%s</Expiry><Permission>%s</Permission></AccessPolicy>"
            "</SignedIdentifier>" % (pid, iso_seconds(st), iso_seconds(se),
                                     perm)
            for pid, st, se, perm in policies)
        body = ('<?xml version="1.0" encoding="utf-8"?><SignedIdentifiers>%s'
                "</SignedIdentifiers>" % items).encode()
        self.request("PUT", container,
                     query={"restype": "container", "comp": "acl"},
                     headers={"content-type": "application/xml"}, body=body)

    # --- page blobs ---
    def create_page_blob(self, container, blob, size):
        self.request("PUT", container, blob, headers={
            "x-ms-blob-type": "PageBlob",
            "x-ms-blob-content-length": str(size),
            "content-type": "application/octet-stream"})

    def put_pages(self, container, blob, offset, data):
        for pos in range(0, len(data), MAX_PUT_PAGE):
            piece = data[pos:pos + MAX_PUT_PAGE]
            start = offset + pos
            self.request("PUT", container, blob, query={"comp": "page"},
                         headers={"x-ms-page-write": "update",
                                  "x-ms-range": "bytes=%d-%d"
                                  % (start, start + len(piece) - 1)},
                         body=bytes(piece))

    def page_ranges(self, container, blob):
        """[(start, end_inclusive)] written, following NextMarker."""
        out = []
        marker = None
        while True:
            query = {"comp": "pagelist"}
            if marker:
                query["marker"] = marker
            _, _, data = self.request("GET", container, blob, query=query)
            text = data.decode()
            out += [(int(a), int(b)) for a, b in re.findall(
                r"<PageRange><Start>(\d+)</Start><End>(\d+)</End></PageRange>",
                text)]
            m = re.search(r"<NextMarker>([^<]+)</NextMarker>", text)
            if not m:
                return out
            marker = m.group(1)

    def get_range(self, container, blob, start, end):
        _, _, data = self.request("GET", container, blob, headers={
            "x-ms-range": "bytes=%d-%d" % (start, end)}, ok=(200, 206))
        return data

    def blob_size(self, container, blob):
        _, hdrs, _ = self.request("HEAD", container, blob)
        return int(hdrs["content-length"])

    def copy_pages(self, src_container, src_blob, dst_container, dst_blob,
                   size):
        """A new page blob holding only the written pages of the source."""
        self.create_page_blob(dst_container, dst_blob, size)
        for start, end in self.page_ranges(src_container, src_blob):
            for pos in range(start, end + 1, MAX_PUT_PAGE):
                last = min(pos + MAX_PUT_PAGE, end + 1) - 1
                data = self.get_range(src_container, src_blob, pos, last)
                self.put_pages(dst_container, dst_blob, pos, data)


# --- seeding a page blob from a raw image ------------------------------------

def data_runs(path, size):
    """(offset, bytes) runs of non-zero 512-byte pages of a raw file, at
    most 4 MiB each; holes of a sparse file are skipped without reading."""
    fd = os.open(path, os.O_RDONLY)
    try:
        pos = 0
        while pos < size:
            try:
                start = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:
                return
            end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
            start -= start % PAGE
            yield from _nonzero_runs(fd, start, end)
            pos = end
    finally:
        os.close(fd)


def _nonzero_runs(fd, start, end):
    pos = start
    while pos < end:
        chunk = os.pread(fd, min(MAX_PUT_PAGE, end - pos), pos)
        if not chunk:
            return
        if len(chunk) % PAGE:
            chunk += bytes(PAGE - len(chunk) % PAGE)
        if ZERO_PAGE not in chunk:
            yield pos, chunk  # no zero page anywhere: one run
        elif chunk.count(0) != len(chunk):
            view = memoryview(chunk)
            run = None
            for off in range(0, len(chunk), PAGE):
                zero = view[off:off + PAGE] == ZERO_PAGE
                if not zero and run is None:
                    run = off
                elif zero and run is not None:
                    yield pos + run, bytes(view[run:off])
                    run = None
            if run is not None:
                yield pos + run, bytes(view[run:])
        pos += len(chunk)


# --- the fixed VHD footer ----------------------------------------------------

def vhd_footer(size, timestamp=None, unique_id=None):
    """The 512-byte footer of a fixed VHD of `size` bytes, laid out as
    `qemu-img convert -O vpc -o subformat=fixed,force_size=on` writes it
    (creator "qem2", geometry 65535/16/255, original = current size); only
    the timestamp, unique id and checksum differ from one run to the next."""
    if size % PAGE:
        raise ValueError("a VHD's size is a multiple of 512")
    if timestamp is None:
        timestamp = time.time()
    stamp = max(int(timestamp) - _VHD_EPOCH, 0) & 0xFFFFFFFF
    uid = (unique_id or uuid.uuid4()).bytes
    footer = bytearray(VHD_FOOTER_SIZE)
    struct.pack_into(">8sIIQI4sI4sQQHBBII16sB", footer, 0,
                     b"conectix", 2, 0x00010000, 0xFFFFFFFFFFFFFFFF, stamp,
                     b"qem2", 0x00050003, b"Wi2k", size, size,
                     65535, 16, 255, 2, 0, uid, 0)
    checksum = (~sum(footer)) & 0xFFFFFFFF
    struct.pack_into(">I", footer, 64, checksum)
    return bytes(footer)
