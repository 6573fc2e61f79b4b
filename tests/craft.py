"""Packets built byte by byte for tests that need what no lab run produces (bad checksums,
holes in a stream, stray fields), written with tcpwhy's own pcap writer.

Checksums are right unless a test spoils them; every builder returns bytes, so a test can
change any byte after building.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from pathlib import Path

from tcpwhy.capture.writer import LINKTYPE_ETHERNET, PcapWriter
from tcpwhy.decode.table import ACK, FIN, PSH, SYN
from tcpwhy.lab.packets import internet_checksum as csum
from tcpwhy.lab.packets import pseudo_header as _pseudo

MAC_A = bytes.fromhex("020000000001")
MAC_B = bytes.fromhex("020000000002")


def v4(text: str) -> bytes:
    return bytes(int(x) for x in text.split("."))


def tcp(
    src: bytes,
    dst: bytes,
    sport: int,
    dport: int,
    seq: int,
    ack: int,
    flags: int,
    payload: bytes = b"",
    win: int = 65535,
) -> bytes:
    """A TCP segment (header and payload) with its checksum over src and dst."""
    seg = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, flags, win, 0, 0) + payload
    c = csum(_pseudo(src, dst, 6, len(seg)) + seg)
    return seg[:16] + struct.pack("!H", c) + seg[18:]


def udp(
    src: bytes, dst: bytes, sport: int, dport: int, payload: bytes, zero: bool = False
) -> bytes:
    """A UDP datagram; `zero` leaves its checksum 0 (none, over IPv4)."""
    d = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    if zero:
        return d
    c = csum(_pseudo(src, dst, 17, len(d)) + d) or 0xFFFF
    return d[:6] + struct.pack("!H", c) + d[8:]


def ip(
    src: bytes, dst: bytes, proto: int, body: bytes, ident: int = 1, frag: int = 0, ttl: int = 64
) -> bytes:
    """An IPv4 packet (src of 4 bytes) or IPv6 packet (16 bytes) around body."""
    if len(src) == 16:
        return struct.pack("!IHBB", 6 << 28, len(body), proto, ttl) + src + dst + body
    hdr = struct.pack("!BBHHHBBH", 0x45, 0, 20 + len(body), ident, frag, ttl, proto, 0) + src + dst
    return hdr[:10] + struct.pack("!H", csum(hdr)) + hdr[12:] + body


def eth(payload: bytes, v6: bool = False, src: bytes = MAC_A, dst: bytes = MAC_B) -> bytes:
    return dst + src + struct.pack("!H", 0x86DD if v6 else 0x0800) + payload


def vxlan(inner_frame: bytes, vni: int = 7) -> bytes:
    return struct.pack("!BxxxI", 0x08, vni << 8) + inner_frame


def geneve(inner_frame: bytes, vni: int = 7) -> bytes:
    return struct.pack("!BBHI", 0, 0, 0x6558, vni << 8) + inner_frame


def fragments(packet: bytes, size: int) -> list[bytes]:
    """An IPv4 packet cut into fragments of `size` payload bytes (a multiple of 8)."""
    hdr, body = packet[:20], packet[20:]
    ident = struct.unpack_from("!H", hdr, 4)[0]
    src, dst, proto = hdr[12:16], hdr[16:20], hdr[9]
    out = []
    for off in range(0, len(body), size):
        more = off + size < len(body)
        out.append(ip(src, dst, proto, body[off : off + size], ident, (off // 8) | (more << 13)))
    return out


def spoil_ip_checksum(frame: bytes, at: int = 14) -> bytes:
    """The frame with the IPv4 header checksum at offset `at` (+10) made wrong."""
    b = bytearray(frame)
    b[at + 10] ^= 0x55
    return bytes(b)


def spoil_last_byte(frame: bytes) -> bytes:
    """The frame with its last byte changed (a payload or header checksum then fails)."""
    b = bytearray(frame)
    b[-1] ^= 0x5A
    return bytes(b)


def write(path: Path, frames: Iterable[bytes | None], step_ns: int = 1_000_000) -> Path:
    """Ethernet frames into a pcap, the k-th at 2024-01-01 plus k * `step_ns`; a None is
    left out (a capture without some packets keeps the others' times)."""
    with PcapWriter.open(str(path), LINKTYPE_ETHERNET) as w:
        for k, f in enumerate(frames):
            if f is not None:
                w.write(1_704_067_200_000_000_000 + k * step_ns, f)
    return path


def without(frames: list[bytes], drop: Iterable[int]) -> list[bytes | None]:
    """The frames with those at the indices `drop` replaced by None (see `write`)."""
    gone = set(drop)
    return [None if k in gone else f for k, f in enumerate(frames)]


def conversation(
    a: bytes = v4("10.0.0.1"),
    b: bytes = v4("10.0.0.2"),
    sport: int = 40000,
    dport: int = 80,
    request: bytes = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    response: bytes = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
) -> list[bytes]:
    """IP packets of a whole connection: handshake, a request, a response, FINs both ways."""
    ia, ib = 1000, 5000
    ra, rb = len(request), len(response)
    segs = [
        (a, b, sport, dport, ia, 0, SYN, b""),
        (b, a, dport, sport, ib, ia + 1, SYN | ACK, b""),
        (a, b, sport, dport, ia + 1, ib + 1, ACK, b""),
        (a, b, sport, dport, ia + 1, ib + 1, PSH | ACK, request),
        (b, a, dport, sport, ib + 1, ia + 1 + ra, ACK, b""),
        (b, a, dport, sport, ib + 1, ia + 1 + ra, PSH | ACK, response),
        (a, b, sport, dport, ia + 1 + ra, ib + 1 + rb, ACK, b""),
        (a, b, sport, dport, ia + 1 + ra, ib + 1 + rb, FIN | ACK, b""),
        (b, a, dport, sport, ib + 1 + rb, ia + 2 + ra, FIN | ACK, b""),
        (a, b, sport, dport, ia + 2 + ra, ib + 2 + rb, ACK, b""),
    ]
    return [
        ip(s, d, 6, tcp(s, d, sp, dp, sq, ak, fl, pl), ident=k + 1)
        for k, (s, d, sp, dp, sq, ak, fl, pl) in enumerate(segs)
    ]


def pcap_records(raw: bytes) -> tuple[str, bytes, list[bytes]]:
    """A classic pcap's byte order (``<`` or ``>``), file header and records, each with its
    16-byte record header: what tests that drop, repeat or reorder a real capture's packets
    take apart and join again."""
    e = "<" if raw[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    out, pos = [], 24
    while pos + 16 <= len(raw):
        incl = struct.unpack(e + "I", raw[pos + 8 : pos + 12])[0]
        out.append(raw[pos : pos + 16 + incl])
        pos += 16 + incl
    return e, raw[:24], out
