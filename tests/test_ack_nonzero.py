"""Acknowledgment numbers without the ACK flag, against tshark 4.0.

tshark shows ``tcp.ack`` relative only when the ACK flag is set; without it the
field holds the raw 32 bits, and a nonzero value raises the expert item
``tcp.ack.nonzero`` ("The acknowledgment number field is nonzero while the ACK
flag is not set"). The capture is written here: SYNs, a RST, a FIN and a
flagless segment carrying stray acknowledgment numbers (IPv4 and IPv6), a normal
handshake beside them, and ICMP errors quoting such a SYN whole and cut short.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tcpwhy.capture import read_table
from tcpwhy.capture.writer import LINKTYPE_RAW, PcapWriter
from tcpwhy.decode.table import ACK, FIN, RST, SYN
from tcpwhy.filter import FilterContext
from tcpwhy.filter.fields import FIELDS
from tests.craft import csum
from tests.gates import need

A4, B4 = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])
A6 = bytes.fromhex("20010db8000000000000000000000001")
B6 = bytes.fromhex("20010db8000000000000000000000002")


def _tcp(src: bytes, dst: bytes, sport: int, dport: int, seq: int, ack: int, flags: int) -> bytes:
    seg = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, flags, 65535, 0, 0)
    proto = 6
    if len(src) == 4:
        pseudo = src + dst + struct.pack("!BBH", 0, proto, len(seg))
    else:
        pseudo = src + dst + struct.pack("!IxxxB", len(seg), proto)
    seg = seg[:16] + struct.pack("!H", csum(pseudo + seg)) + seg[18:]
    return _ip(src, dst, proto, seg)


def _ip(src: bytes, dst: bytes, proto: int, body: bytes) -> bytes:
    if len(src) == 16:
        return struct.pack("!IHBB", 6 << 28, len(body), proto, 64) + src + dst + body
    hdr = struct.pack("!BBHHHBBH", 0x45, 0, 20 + len(body), 1, 0, 64, proto, 0) + src + dst
    return hdr[:10] + struct.pack("!H", csum(hdr)) + hdr[12:] + body


def _unreachable(src: bytes, dst: bytes, quoted: bytes) -> bytes:
    body = struct.pack("!BBHI", 3, 3, 0, 0) + quoted
    body = body[:2] + struct.pack("!H", csum(body)) + body[4:]
    return _ip(src, dst, 1, body)


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ack") / "ack-without-ack.pcap"
    stray_syn = _tcp(A4, B4, 2000, 81, 100, 4242, SYN)
    frames = [
        _tcp(A4, B4, 1000, 80, 100, 12345, SYN),  # SYN with a stray ack
        _tcp(B4, A4, 80, 1000, 500, 101, SYN | ACK),
        _tcp(A4, B4, 1000, 80, 101, 501, ACK),
        _tcp(A4, B4, 1000, 80, 101, 777, RST),  # RST without ACK, nonzero ack
        _tcp(A4, B4, 1001, 80, 5, 0, SYN),  # a clean SYN
        _tcp(A4, B4, 1002, 80, 5, 99, FIN),  # FIN alone, mid-stream
        _tcp(A4, B4, 1003, 80, 7, 3, 0),  # no flags at all
        _tcp(A6, B6, 1004, 80, 9, 0xFFFFFFFF, SYN),  # IPv6, all ones
        _tcp(B6, A6, 80, 1004, 1, 10, SYN | ACK),
        stray_syn,
        _unreachable(B4, A4, stray_syn),  # quotes the whole header
        _unreachable(B4, A4, stray_syn[:28]),  # quote stops after the sequence number
        _unreachable(B4, A4, _tcp(A4, B4, 2000, 81, 100, 0, SYN)),
    ]
    with PcapWriter.open(str(out), LINKTYPE_RAW) as w:
        for k, f in enumerate(frames):
            w.write(1_700_000_000_000_000_000 + k * 1000, f)
    return out


def _tshark(cap: Path, *args: str) -> str:
    need(shutil.which("tshark") is not None, "tshark not installed")
    cmd = ["tshark", "-n", "-r", str(cap), *args]
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def test_fields_match_tshark(capture: Path) -> None:
    """tcp.ack, tcp.ack_raw and tcp.ack.nonzero of every TCP row, field by field."""
    text = _tshark(
        capture,
        *("-Y", "tcp && !icmp", "-T", "fields", "-E", "header=y"),
        *("-e", "frame.number", "-e", "tcp.ack", "-e", "tcp.ack_raw", "-e", "tcp.ack.nonzero"),
    )
    want = {
        int(r["frame.number"]): (
            int(r["tcp.ack"]),
            int(r["tcp.ack_raw"]),
            r["tcp.ack.nonzero"] != "",
        )
        for r in csv.DictReader(io.StringIO(text), delimiter="\t")
    }
    t = read_table(str(capture))
    ctx = FilterContext(t)
    rows = np.arange(len(t), dtype=np.int64)
    (ack,) = FIELDS["tcp.ack"].extract(ctx, rows)
    (raw,) = FIELDS["tcp.ack_raw"].extract(ctx, rows)
    (nonzero,) = FIELDS["tcp.ack.nonzero"].extract(ctx, rows)
    assert nonzero.present is not None
    got = {
        int(f): (int(ack.values[i]), int(raw.values[i]), bool(nonzero.present[i]))
        for i, f in enumerate(t["frame"])
    }
    assert got == want
    assert sum(v[2] for v in want.values()) == 6  # the capture has what it is about
    assert want[8] == (0xFFFFFFFF, 0xFFFFFFFF, True)


FILTERS = (
    "tcp.ack.nonzero",
    "!tcp.ack.nonzero",
    "tcp.ack == 0",
    "tcp.ack == 12345",
    "tcp.ack == 4242",
    "tcp.ack == 1",
    "tcp.ack > 100 && !tcp.flags.ack",
    "tcp.ack.nonzero && tcp.flags.syn == 1",
    "tcp.ack.nonzero && icmp",
    "tcp.ack",
)


@pytest.mark.parametrize("flt", FILTERS)
def test_filters_select_tshark_frames(capture: Path, flt: str) -> None:
    """The same frames as tshark, ICMP errors quoting a segment included."""
    want = [
        int(x) for x in _tshark(capture, "-Y", flt, "-T", "fields", "-e", "frame.number").split()
    ]
    cmd = [sys.executable, "-m", "tcpwhy", "packets", str(capture), "-Y", flt, "--format", "jsonl"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    got = [json.loads(line)["frame"] for line in out.splitlines() if line.strip()]
    assert got == want


@pytest.mark.parametrize("absolute", [False, True])
def test_packets_jsonl_and_parquet_carry_tcp_ack(capture: Path, absolute: bool) -> None:
    """`packets --format jsonl` (compiled writer) and Parquet give each TCP row tshark's
    tcp.ack: relative (or raw with --absolute) with the ACK flag, the raw field without."""
    opt = ("-o", "tcp.relative_sequence_numbers:FALSE") if absolute else ()
    text = _tshark(
        capture,
        *opt,
        *("-Y", "tcp && !icmp", "-T", "fields", "-e", "frame.number", "-e", "tcp.ack"),
    )
    want = {int(f): int(a) for f, a in (line.split("\t") for line in text.splitlines())}
    args = ["--absolute"] if absolute else []
    out = subprocess.run(
        [sys.executable, "-m", "tcpwhy", "packets", str(capture), "--format", "jsonl", *args],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    rows = [json.loads(line) for line in out.splitlines()]
    got = {r["frame"]: r["ack"] for r in rows if r["frame"] in want}
    assert got == want
    pq = capture.parent / f"p{int(absolute)}.parquet"
    cmd = (sys.executable, "-m", "tcpwhy", "packets")
    subprocess.run(
        [*cmd, str(capture), *args, "--format", "parquet", "-o", str(pq)],
        check=True,
    )
    import pyarrow.parquet as papq

    tab = papq.read_table(pq).to_pydict()
    assert {f: a for f, a in zip(tab["frame"], tab["ack"], strict=True) if f in want} == want
