"""Write codes.pcap: every ICMP and ICMPv6 error type and code tcpwhy decodes, each quoting a
TCP segment, and tshark's view of it (codes.pcap.tsv), and the frames tshark selects with each filter of
FILTERS on it and on the lab's ICMP recordings (filters.json). Run from the repository root:

    python tests/data/icmp/generate.py

Each error follows the TCP segment it quotes (a SYN, or a data segment for the
too-big ones); a few quote only the first 8 bytes of the TCP header (RFC 792's
minimum), one quotes a conversation the capture never saw, one is an ICMP error
about UDP (not about TCP: skipped) and one an echo request.
"""

from __future__ import annotations

import json
import struct
import subprocess
from pathlib import Path

from tcpwhy.lab.packets import internet_checksum as csum
from tcpwhy.lab.packets import transport_checksum

HERE = Path(__file__).resolve().parent
FIELDS = [
    *("frame.number", "tcp.stream", "ip.src", "ip.dst", "ipv6.src", "ipv6.dst"),
    *("icmp.type", "icmp.code", "icmp.mtu", "icmpv6.type", "icmpv6.code", "icmpv6.mtu"),
    *("tcp.srcport", "tcp.dstport", "tcp.seq", "tcp.ack", "tcp.flags", "tcp.hdr_len"),
    *("ip.ttl", "ipv6.hlim", "_ws.col.Info"),
]

C4, S4, R4 = bytes([10, 9, 0, 1]), bytes([10, 9, 1, 2]), bytes([10, 9, 0, 254])
C6 = bytes.fromhex("fd000009000000000000000000000001")
S6 = bytes.fromhex("fd000009000100000000000000000002")
R6 = bytes.fromhex("fd0000090000000000000000000000fe")


def tcp(sport: int, dport: int, seq: int, ack: int, flags: int, payload: bytes = b"") -> bytes:
    opts = b"\x02\x04\x05\xb4" if flags == 2 else b""
    doff = (20 + len(opts)) // 4
    return (
        struct.pack("!HHIIBBHHH", sport, dport, seq, ack, doff << 4, flags, 64240, 0, 0)
        + opts
        + payload
    )


def ip4(src: bytes, dst: bytes, proto: int, body: bytes, ttl: int = 64, df: bool = True) -> bytes:
    h = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(body), 1, 0x4000 if df else 0, ttl, proto, 0, src, dst
    )
    return h[:10] + struct.pack("!H", csum(h)) + h[12:] + body


def ip6(src: bytes, dst: bytes, nh: int, body: bytes, hlim: int = 64) -> bytes:
    return struct.pack("!IHBB16s16s", 6 << 28, len(body), nh, hlim, src, dst) + body


def icmp4(t: int, code: int, rest: int, quoted: bytes) -> bytes:
    m = struct.pack("!BBHI", t, code, 0, rest) + quoted
    return m[:2] + struct.pack("!H", csum(m)) + m[4:]


def icmp6(src: bytes, dst: bytes, t: int, code: int, rest: int, quoted: bytes) -> bytes:
    m = struct.pack("!BBHI", t, code, 0, rest) + quoted
    return m[:2] + struct.pack("!H", transport_checksum(src, dst, 58, m)) + m[4:]


def eth(payload: bytes, v6: bool) -> bytes:
    return b"\x02\0\0\0\0\x01\x02\0\0\0\0\x02" + (b"\x86\xdd" if v6 else b"\x08\x00") + payload


FILTERS = [
    "icmp",
    "icmpv6",
    "icmp.type == 3",
    "icmp.type == 3 and icmp.code == 13",
    "icmp.code == 4",
    "icmp.mtu == 1280",
    "icmp.mtu",
    "icmp.type == 11",
    "icmpv6.type == 1",
    "icmpv6.type == 1 and icmpv6.code == 1",
    "icmpv6.code == 4",
    "icmpv6.mtu == 1280",
    "icmpv6.type == 2",
    "icmpv6.type in {3, 4}",
    "tcp",
    "tcp.port == 8081",
    "tcp.dstport == 80 and icmp",
    "tcp.stream == 1",
    "tcp.stream == 3",
    "tcp.flags.syn == 1",
    "tcp.flags.syn == 1 and tcp.flags.ack == 0",
    "tcp.len > 0",
    "tcp.seq == 0",
    "tcp.hdr_len == 24",
    "ip.src == 10.77.1.1",
    "ip.addr == 10.77.2.2 and icmp",
    "ip.dst == 10.77.1.2 and not tcp.srcport == 8080",
    "ipv6.src == fd00:77:1::1",
    "ip.src == 10.9.0.254",
    "ip.ttl == 63",
    "ipv6.hlim == 63",
    "tcp.analysis.flags and icmp",
    "tcp.options.mss_val == 1460 and icmp",
]
CAPTURES = ["icmp-reject", "icmp-no-route", "pmtu-black-hole", "pmtu-discovery"]


def filters(paths: list[Path]) -> dict[str, dict[str, list[int]]]:
    """For each filter and capture, the frames tshark selects (two passes, as the tests of
    tests/data/filters)."""
    out: dict[str, dict[str, list[int]]] = {}
    for flt in FILTERS:
        for path in paths:
            cmd = ["tshark", "-n", "-2", "-r", str(path), "-Y", flt, "-T", "fields"]
            got = subprocess.run(
                [*cmd, "-e", "frame.number"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            out.setdefault(flt, {})[path.name] = [int(x) for x in got.split()]
    return out


def main() -> None:
    frames: list[bytes] = []
    port = 40000

    def v4(t: int, code: int, rest: int = 0, data: bool = False, short: bool = False) -> None:
        nonlocal port
        port += 1
        seg = tcp(
            port,
            80,
            1000 + port,
            0 if not data else 5,
            2 if not data else 0x18,
            b"x" * 1400 if data else b"",
        )
        pkt = ip4(C4, S4, 6, seg)
        frames.append(eth(pkt, False))
        quote = pkt[: 20 + 8] if short else pkt[:548]
        frames.append(eth(ip4(R4, C4, 1, icmp4(t, code, rest, quote), ttl=63, df=False), False))

    def v6(t: int, code: int, rest: int = 0, data: bool = False) -> None:
        nonlocal port
        port += 1
        seg = tcp(
            port,
            80,
            2000 + port,
            0 if not data else 5,
            2 if not data else 0x18,
            b"y" * 1400 if data else b"",
        )
        pkt = ip6(C6, S6, 6, seg)
        frames.append(eth(pkt, True))
        frames.append(eth(ip6(R6, C6, 58, icmp6(R6, C6, t, code, rest, pkt[:1232]), 63), True))

    for code in range(16):
        v4(3, code, 1280 if code == 4 else 0, data=code == 4)
    v4(3, 1, short=True)
    v4(3, 4, 0, data=True, short=True)  # an old router: MTU field 0
    for code in range(2):
        v4(11, code)
    for code in range(3):
        v4(12, code, 20 << 24)
    for code in range(9):
        v6(1, code)
    v6(2, 0, 1280, data=True)
    for code in range(2):
        v6(3, code)
    for code in range(4):
        v6(4, code, 40)
    # an error about a conversation the capture never saw, before any packet of it
    seg = tcp(39999, 443, 77, 0, 2)
    frames.append(eth(ip4(R4, C4, 1, icmp4(3, 13, 0, ip4(C4, S4, 6, seg)), ttl=60), False))
    frames.append(eth(ip4(C4, S4, 6, tcp(39999, 443, 77, 0, 2)), False))
    # not about TCP: an error quoting UDP, and an echo request
    udp = struct.pack("!HHHH", 5353, 53, 8, 0)
    frames.append(eth(ip4(R4, C4, 1, icmp4(3, 3, 0, ip4(C4, S4, 17, udp))), False))
    frames.append(eth(ip4(C4, S4, 1, icmp4(8, 0, 0x00010001, b"ping")), False))
    out = HERE / "codes.pcap"
    with out.open("wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for i, fr in enumerate(frames):
            f.write(struct.pack("<IIII", 1_700_000_000, 1000 * i, len(fr), len(fr)))
            f.write(fr)
    args = ["tshark", "-n", "-r", str(out), "-T", "fields", "-E", "separator=/t"]
    args += ["-E", "occurrence=a", "-E", "aggregator=,"]
    for x in FIELDS:
        args += ["-e", x]
    got = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    (HERE / "codes.pcap.tsv").write_text("\t".join(FIELDS) + "\n" + got)
    lab = HERE.parents[2] / "src" / "tcpwhy" / "data" / "lab"
    paths = [out] + [lab / f"{name}.pcap" for name in CAPTURES]
    (HERE / "filters.json").write_text(json.dumps(filters(paths), indent=1) + "\n")


if __name__ == "__main__":
    main()
