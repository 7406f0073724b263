# SPDX-License-Identifier: MIT
"""The server side of NTLMv2 (MS-NLMP) for the WinRM fake: NEGOTIATE ->
CHALLENGE (with target info) -> AUTHENTICATE, verified against one local
account.  Standard library only; MD4 and RC4 are written out here because
OpenSSL 3 builds of hashlib often lack MD4.

What is checked, as a Windows host checks it:
  * the message signature and types, in order, on one connection;
  * the NTLMv2 response: NTProofStr = HMAC-MD5(NTOWFv2, server challenge +
    blob), NTOWFv2 = HMAC-MD5(MD4(UTF-16LE password), UTF-16LE(UPPER(user)
    + domain)); NTLMv1 and anonymous answers are refused;
  * the blob carries the server's own target info (its timestamp);
  * the MIC, when the client says it sent one (MsvAvFlags bit 2);
  * channel binding (MsvAvChannelBindings) when the client sends a
    non-zero one: MD5 of gss_channel_bindings_struct whose application data
    is "tls-server-end-point:" + SHA-256 of the server certificate.
The user name is compared case-insensitively; any domain is accepted (a
stand-alone host maps unknown domains to its local accounts).
"""

import hashlib
import hmac
import os
import struct
import time

SIGNATURE = b"NTLMSSP\0"

NEGOTIATE_UNICODE = 0x00000001
NEGOTIATE_OEM = 0x00000002
REQUEST_TARGET = 0x00000004
NEGOTIATE_SIGN = 0x00000010
NEGOTIATE_SEAL = 0x00000020
NEGOTIATE_NTLM = 0x00000200
NEGOTIATE_ALWAYS_SIGN = 0x00008000
TARGET_TYPE_SERVER = 0x00020000
NEGOTIATE_EXTENDED_SESSIONSECURITY = 0x00080000
NEGOTIATE_TARGET_INFO = 0x00800000
NEGOTIATE_VERSION = 0x02000000
NEGOTIATE_128 = 0x20000000
NEGOTIATE_KEY_EXCH = 0x40000000
NEGOTIATE_56 = 0x80000000

SERVER_FLAGS = (NEGOTIATE_UNICODE | REQUEST_TARGET | NEGOTIATE_SIGN |
                NEGOTIATE_SEAL | NEGOTIATE_NTLM | NEGOTIATE_ALWAYS_SIGN |
                NEGOTIATE_EXTENDED_SESSIONSECURITY | NEGOTIATE_128 |
                NEGOTIATE_KEY_EXCH | NEGOTIATE_56)

AV_EOL, AV_NB_COMPUTER, AV_NB_DOMAIN, AV_DNS_COMPUTER, AV_DNS_DOMAIN = 0, 1, 2, 3, 4
AV_FLAGS, AV_TIMESTAMP, AV_CHANNEL_BINDINGS = 6, 7, 10


class NtlmError(Exception):
    """The client's message is malformed or its answer is wrong."""


# ---- MD4 (RFC 1320) and RC4 -------------------------------------------------

def _rotl(x, n):
    return ((x << n) | (x >> (32 - n))) & 0xFFFFFFFF


def md4(data):
    msg = bytearray(data)
    bit_len = (8 * len(data)) & 0xFFFFFFFFFFFFFFFF
    msg.append(0x80)
    while len(msg) % 64 != 56:
        msg.append(0)
    msg += struct.pack("<Q", bit_len)
    a, b, c, d = 0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476
    for off in range(0, len(msg), 64):
        x = struct.unpack("<16I", msg[off:off + 64])
        aa, bb, cc, dd = a, b, c, d
        for i in (0, 4, 8, 12):
            a = _rotl((a + ((b & c) | (~b & d)) + x[i]) & 0xFFFFFFFF, 3)
            d = _rotl((d + ((a & b) | (~a & c)) + x[i + 1]) & 0xFFFFFFFF, 7)
            c = _rotl((c + ((d & a) | (~d & b)) + x[i + 2]) & 0xFFFFFFFF, 11)
            b = _rotl((b + ((c & d) | (~c & a)) + x[i + 3]) & 0xFFFFFFFF, 19)
        for i in (0, 1, 2, 3):
            g = lambda u, v, w: (u & v) | (u & w) | (v & w)
            a = _rotl((a + g(b, c, d) + x[i] + 0x5A827999) & 0xFFFFFFFF, 3)
            d = _rotl((d + g(a, b, c) + x[i + 4] + 0x5A827999) & 0xFFFFFFFF, 5)
            c = _rotl((c + g(d, a, b) + x[i + 8] + 0x5A827999) & 0xFFFFFFFF, 9)
            b = _rotl((b + g(c, d, a) + x[i + 12] + 0x5A827999) & 0xFFFFFFFF, 13)
        for i in (0, 2, 1, 3):
            a = _rotl((a + (b ^ c ^ d) + x[i] + 0x6ED9EBA1) & 0xFFFFFFFF, 3)
            d = _rotl((d + (a ^ b ^ c) + x[i + 8] + 0x6ED9EBA1) & 0xFFFFFFFF, 9)
            c = _rotl((c + (d ^ a ^ b) + x[i + 4] + 0x6ED9EBA1) & 0xFFFFFFFF, 11)
            b = _rotl((b + (c ^ d ^ a) + x[i + 12] + 0x6ED9EBA1) & 0xFFFFFFFF, 15)
        a = (a + aa) & 0xFFFFFFFF
        b = (b + bb) & 0xFFFFFFFF
        c = (c + cc) & 0xFFFFFFFF
        d = (d + dd) & 0xFFFFFFFF
    return struct.pack("<4I", a, b, c, d)


def rc4(key, data):
    s = list(range(256))
    j = 0
    for i in range(256):
        j = (j + s[i] + key[i % len(key)]) & 0xFF
        s[i], s[j] = s[j], s[i]
    out = bytearray()
    i = j = 0
    for byte in data:
        i = (i + 1) & 0xFF
        j = (j + s[i]) & 0xFF
        s[i], s[j] = s[j], s[i]
        out.append(byte ^ s[(s[i] + s[j]) & 0xFF])
    return bytes(out)


def nt_hash(password):
    return md4(password.encode("utf-16-le"))


def ntowfv2(password, user, domain):
    return hmac.new(nt_hash(password), (user.upper() + domain).encode(
        "utf-16-le"), hashlib.md5).digest()


def _hmac_md5(key, data):
    return hmac.new(key, data, hashlib.md5).digest()


# ---- messages ---------------------------------------------------------------

def _field(msg, off):
    """The payload an 8-byte (len, maxlen, offset) field at off points to."""
    if off + 8 > len(msg):
        raise NtlmError("message too short for field at %d" % off)
    length, _, where = struct.unpack_from("<HHI", msg, off)
    if where + length > len(msg):
        raise NtlmError("field at %d points past the message" % off)
    return msg[where:where + length]


def _av_pairs(data):
    pairs = []
    pos = 0
    while pos + 4 <= len(data):
        av_id, av_len = struct.unpack_from("<HH", data, pos)
        pos += 4
        if av_id == AV_EOL:
            return pairs
        pairs.append((av_id, data[pos:pos + av_len]))
        pos += av_len
    raise NtlmError("AV pair list without MsvAvEOL")


def message_type(msg):
    if len(msg) < 12 or msg[:8] != SIGNATURE:
        raise NtlmError("not an NTLMSSP message")
    return struct.unpack_from("<I", msg, 8)[0]


def channel_binding_hash(cert_der):
    """MD5 of the gss_channel_bindings_struct for tls-server-end-point."""
    app = b"tls-server-end-point:" + hashlib.sha256(cert_der).digest()
    return hashlib.md5(b"\0" * 16 + struct.pack("<I", len(app)) + app).digest()


class NtlmServer:
    """One connection's NTLM exchange.  negotiate() answers the CHALLENGE;
    authenticate() returns the user name or raises NtlmError."""

    def __init__(self, user, password, computer="HYPERV01",
                 domain="WORKGROUP", cert_der=None):
        self.user = user
        self.password = password
        self.computer = computer
        self.domain = domain
        self.cert_der = cert_der
        self.negotiate_msg = self.challenge_msg = None
        self.server_challenge = None
        self.timestamp = None

    def negotiate(self, msg):
        if message_type(msg) != 1:
            raise NtlmError("expected NEGOTIATE_MESSAGE")
        if len(msg) < 16:
            raise NtlmError("NEGOTIATE_MESSAGE too short")
        client_flags = struct.unpack_from("<I", msg, 12)[0]
        if not client_flags & (NEGOTIATE_UNICODE | NEGOTIATE_OEM):
            raise NtlmError("client offers neither Unicode nor OEM")
        flags = (client_flags & SERVER_FLAGS) | NEGOTIATE_UNICODE | \
            NEGOTIATE_NTLM | REQUEST_TARGET | TARGET_TYPE_SERVER | \
            NEGOTIATE_TARGET_INFO | NEGOTIATE_VERSION
        self.negotiate_msg = bytes(msg)
        self.server_challenge = os.urandom(8)
        self.timestamp = struct.pack(
            "<Q", int((time.time() + 11644473600) * 10000000))
        target = self.computer.encode("utf-16-le")
        info = b""
        for av_id, value in ((AV_NB_DOMAIN, self.computer),
                             (AV_NB_COMPUTER, self.computer),
                             (AV_DNS_DOMAIN, self.computer.lower()),
                             (AV_DNS_COMPUTER, self.computer.lower())):
            raw = value.encode("utf-16-le")
            info += struct.pack("<HH", av_id, len(raw)) + raw
        info += struct.pack("<HH", AV_TIMESTAMP, 8) + self.timestamp
        info += struct.pack("<HH", AV_EOL, 0)
        header_len = 56
        version = bytes([10, 0]) + struct.pack("<H", 17763) + b"\0\0\0\x0f"
        msg_out = (SIGNATURE + struct.pack("<I", 2) +
                   struct.pack("<HHI", len(target), len(target), header_len) +
                   struct.pack("<I", flags) + self.server_challenge +
                   b"\0" * 8 +
                   struct.pack("<HHI", len(info), len(info),
                               header_len + len(target)) +
                   version + target + info)
        self.challenge_msg = msg_out
        return msg_out

    def authenticate(self, msg):
        if self.challenge_msg is None:
            raise NtlmError("AUTHENTICATE_MESSAGE before a CHALLENGE")
        if message_type(msg) != 3:
            raise NtlmError("expected AUTHENTICATE_MESSAGE")
        if len(msg) < 64:
            raise NtlmError("AUTHENTICATE_MESSAGE too short")
        nt_resp = _field(msg, 20)
        domain = _field(msg, 28).decode("utf-16-le", "replace")
        user = _field(msg, 36).decode("utf-16-le", "replace")
        enc_key = _field(msg, 52)
        flags = struct.unpack_from("<I", msg, 60)[0]
        if not nt_resp:
            raise NtlmError("anonymous authentication is not allowed")
        if len(nt_resp) == 24:
            raise NtlmError("NTLMv1 responses are refused (LmCompatibility 5)")
        if len(nt_resp) < 48:
            raise NtlmError("NTLMv2 response too short")
        if user.lower() != self.user.lower():
            raise NtlmError("unknown user %r" % user)
        proof, blob = nt_resp[:16], nt_resp[16:]
        if blob[0:2] != b"\x01\x01":
            raise NtlmError("bad NTLMv2 blob version")
        key = ntowfv2(self.password, user, domain)
        if not hmac.compare_digest(
                _hmac_md5(key, self.server_challenge + blob), proof):
            raise NtlmError("wrong password for %r" % user)
        pairs = dict(_av_pairs(blob[28:]))
        if pairs.get(AV_TIMESTAMP) not in (None, self.timestamp):
            raise NtlmError("blob timestamp is not the server's")
        binding = pairs.get(AV_CHANNEL_BINDINGS)
        if binding and any(binding) and self.cert_der is not None:
            if binding != channel_binding_hash(self.cert_der):
                raise NtlmError("channel binding does not match the TLS "
                                "certificate")
        av_flags = struct.unpack("<I", pairs[AV_FLAGS])[0] \
            if AV_FLAGS in pairs else 0
        if av_flags & 0x2:
            self._check_mic(msg, key, proof, enc_key, flags)
        return user

    def _check_mic(self, msg, key, proof, enc_key, flags):
        if len(msg) < 88:
            raise NtlmError("MIC announced but message too short")
        base_key = _hmac_md5(key, proof)
        exported = rc4(base_key, enc_key) \
            if flags & NEGOTIATE_KEY_EXCH and enc_key else base_key
        mic = msg[72:88]
        zeroed = msg[:72] + b"\0" * 16 + msg[88:]
        want = _hmac_md5(exported, self.negotiate_msg + self.challenge_msg +
                         zeroed)
        if not hmac.compare_digest(mic, want):
            raise NtlmError("MIC does not match")
