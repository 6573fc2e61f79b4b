"""The one Internet checksum (tcpwhy.lab.packets) that the lab, the tests' crafted captures and
the benchmarks' synthetic ones use: RFC 1071's example, and tshark agreeing with every header
the lab forges (IPv4 and IPv6, TCP, UDP, ICMPv6)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tcpwhy.capture.writer import LINKTYPE_RAW, PcapWriter
from tcpwhy.decode.table import SYN
from tcpwhy.lab.packets import internet_checksum, pseudo_header, transport_checksum
from tcpwhy.lab.relay import build_rst
from tcpwhy.lab.scenarios_connect import spoofed_syn
from tests import craft
from tests.gates import need

V4 = (bytes([192, 0, 2, 1]), bytes([198, 51, 100, 2]))
V6 = (
    bytes.fromhex("20010db8000000000000000000000001"),
    bytes.fromhex("20010db8" + "0" * 22 + "02"),
)


def test_rfc_1071_example() -> None:
    # RFC 1071 3: the words 0001 f203 f4f5 f6f7 sum to 2ddf0, folded ddf2; the checksum is ~ddf2
    assert internet_checksum(bytes.fromhex("0001f203f4f5f6f7")) == 0x220D
    assert internet_checksum(b"\x01") == 0xFEFF  # an odd byte is padded with zero: 0100
    assert internet_checksum(b"") == 0xFFFF
    data = bytes.fromhex("4500003c1c4640004006") + b"\0\0" + V4[0] + V4[1]
    c = internet_checksum(data)
    # a header carrying its own checksum sums to zero
    assert internet_checksum(data[:10] + c.to_bytes(2, "big") + data[12:]) == 0


def test_pseudo_headers() -> None:
    assert pseudo_header(*V4, 6, 20) == V4[0] + V4[1] + bytes([0, 6, 0, 20])
    assert pseudo_header(*V6, 58, 8) == V6[0] + V6[1] + bytes([0, 0, 0, 8, 0, 0, 0, 58])
    seg = craft.tcp(*V4, 1, 2, 3, 4, SYN)
    assert transport_checksum(*V4, 6, seg[:16] + b"\0\0" + seg[18:]) == int.from_bytes(
        seg[16:18], "big"
    )


def _tshark_statuses(tmp_path: Path, packets: list[bytes]) -> list[str]:
    need(shutil.which("tshark") is not None, "tshark not installed")
    path = tmp_path / "forged.pcap"
    with path.open("wb") as f:
        w = PcapWriter(f, LINKTYPE_RAW)
        for i, p in enumerate(packets):
            w.write(1_700_000_000_000_000_000 + i * 1000, p)
    out = subprocess.run(
        [
            "tshark",
            "-r",
            str(path),
            "-o",
            "ip.check_checksum:TRUE",
            "-o",
            "tcp.check_checksum:TRUE",
            "-o",
            "udp.check_checksum:TRUE",
            "-T",
            "fields",
            "-e",
            "ip.checksum.status",
            "-e",
            "tcp.checksum.status",
            "-e",
            "udp.checksum.status",
            "-e",
            "icmpv6.checksum.status",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.splitlines()


def _echo_request(src: bytes, dst: bytes) -> bytes:
    m = bytes([128, 0, 0, 0, 0, 1, 0, 1]) + b"ping"
    return m[:2] + transport_checksum(src, dst, 58, m).to_bytes(2, "big") + m[4:]


def test_tshark_agrees_with_every_forged_header(tmp_path: Path) -> None:
    """status 1 is tshark's "Good" (0 "Bad", 2 "Unverified"): IP header, TCP, UDP, ICMPv6."""
    packets = [
        build_rst(*V4, 443, 50000, 12345, 64),
        build_rst(*V6, 443, 50000, 12345, 64),
        spoofed_syn(*V4, 40000, 443, 99),
        craft.ip(*V4, 17, craft.udp(*V4, 53, 5353, b"odd")),
        craft.ip(*V6, 6, craft.tcp(*V6, 1, 2, 3, 4, SYN, b"x")),
        craft.ip(*V6, 58, _echo_request(*V6)),
    ]
    # spoofed_syn leaves the IP checksum to the kernel (IP_HDRINCL): fill it in as it would
    syn = packets[2]
    packets[2] = (
        syn[:10] + internet_checksum(syn[:10] + b"\0\0" + syn[12:20]).to_bytes(2, "big") + syn[12:]
    )
    rows = [r.split("\t") for r in _tshark_statuses(tmp_path, packets)]
    assert rows == [
        ["1", "1", "", ""],
        ["", "1", "", ""],
        ["1", "1", "", ""],
        ["1", "", "1", ""],
        ["", "1", "", ""],
        ["", "", "", "1"],
    ]
    spoiled = bytearray(packets[0])
    spoiled[24] ^= 0x5A  # a byte of the sequence number
    assert _tshark_statuses(tmp_path, [bytes(spoiled)])[0].split("\t")[1] == "0"  # Bad
