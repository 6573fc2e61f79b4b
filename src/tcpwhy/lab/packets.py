"""Packets built byte by byte (the lab's forged RSTs and SYN floods, the tests' crafted
captures, the benchmarks' synthetic ones): the one Internet checksum they all use.

TCP's, UDP's and ICMPv6's checksums cover a pseudo-header of the IP addresses as well
(IPv4: RFC 9293 3.1; IPv6: RFC 8200 8.1); IPv4's header checksum and ICMPv4's cover only
their own bytes.
"""

from __future__ import annotations

import struct


def internet_checksum(data: bytes) -> int:
    """The 16-bit one's complement of the one's complement sum of `data` taken as big-endian
    16-bit words, an odd last byte padded with zero (RFC 1071)."""
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def pseudo_header(src: bytes, dst: bytes, proto: int, length: int) -> bytes:
    """The pseudo-header a transport checksum covers: IPv4 when the addresses are 4 bytes
    (zero, protocol, 16-bit length), IPv6 when 16 (32-bit length, three zeros, next header)."""
    if len(src) == 4:
        return src + dst + struct.pack("!BBH", 0, proto, length)
    return src + dst + struct.pack("!I3xB", length, proto)


def transport_checksum(src: bytes, dst: bytes, proto: int, segment: bytes) -> int:
    """The checksum of a TCP segment, UDP datagram or ICMPv6 message (its own checksum field
    zero) between src and dst."""
    return internet_checksum(pseudo_header(src, dst, proto, len(segment)) + segment)
