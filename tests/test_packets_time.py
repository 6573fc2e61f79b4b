"""`packets -t`: the Time column as tshark 4.0's -t prints it, and `ts` in JSON lines.

Checked against tshark itself on lab recordings (nanosecond pcap), on the same packets
rewritten as microsecond pcap and as pcapng by editcap, in UTC and in two other zones
(one with daylight saving), with a display filter (delta from the previous captured vs
displayed packet); and the compiled writer against the per-row writer at times far from
the first packet (where a double no longer resolves nanoseconds).
"""

from __future__ import annotations

import csv
import io
import json
import os
import random
import shutil
import struct
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import pytest

from tcpwhy.filter import compile_filter
from tcpwhy.report.packets import (
    TIME_FORMATS,
    capture_ts_digits,
    write_packets,
    write_packets_rows,
)
from tests.gates import need
from tests.tshark_ref import PACKAGE_DATA

LAB = PACKAGE_DATA / "lab"
CAPS = ("clean.pcap", "icmp-reject.pcap", "retransmission-timeout.pcap", "zero-window.pcap")
ZONES = ("UTC", "Asia/Kolkata", "America/New_York")


def _tool(name: str) -> str:
    exe = shutil.which(name)
    need(exe is not None, f"{name} not installed")
    assert exe is not None
    return exe


def _tshark_times(
    cap: Path, fmt: str, tz: str, display: str = "tcp || icmp || icmpv6"
) -> list[str]:
    out = subprocess.run(
        [_tool("tshark"), "-r", str(cap), "-t", fmt, "-Y", display, "-T", "fields", "-e",
         "_ws.col.Time"],
        capture_output=True, text=True, check=True, env={**os.environ, "TZ": tz},
    ).stdout  # fmt: skip
    return out.splitlines()


def _tcpwhy_times(cap: Path, fmt: str, tz: str, display: str | None = None) -> list[str]:
    """The Time column of `packets --format csv -t fmt` in time zone `tz` (in this process:
    a subprocess each would cost a second of start-up a call)."""
    old = os.environ.get("TZ")
    os.environ["TZ"] = tz
    time.tzset()
    try:
        out = io.StringIO()
        flt = compile_filter(display) if display else None
        write_packets(str(cap), "csv", out=out, flt=flt, time_format=fmt)
    finally:
        if old is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = old
        time.tzset()
    return [row[1] for row in list(csv.reader(io.StringIO(out.getvalue())))[1:]]


def test_command_line_time_format() -> None:
    cap = LAB / CAPS[0]
    out = subprocess.run(
        [sys.executable, "-m", "tcpwhy", "packets", "-t", "ud", "-r", str(cap), "-c", "3"],
        capture_output=True, text=True, check=True, env={**os.environ, "TZ": "UTC"},
    ).stdout  # fmt: skip
    want = _tshark_times(cap, "ud", "UTC")[:3]
    assert [line.split()[1] + " " + line.split()[2] for line in out.splitlines()] == want
    bad = subprocess.run(
        [sys.executable, "-m", "tcpwhy", "packets", str(cap), "-t", "x"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert bad.returncode == 2 and "-t" in bad.stderr


@pytest.fixture(scope="module")
def variants(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Lab captures as recorded (ns pcap), as µs pcap and as pcapng (editcap's rewrites)."""
    editcap = _tool("editcap")
    d = tmp_path_factory.mktemp("time")
    caps = [LAB / name for name in CAPS]
    for name in CAPS[:2]:
        for ftype, ext in (("pcap", ".us.pcap"), ("pcapng", ".pcapng")):
            dst = d / (Path(name).stem + ext)
            subprocess.run([editcap, "-F", ftype, str(LAB / name), str(dst)], check=True)
            caps.append(dst)
    return caps


@pytest.mark.parametrize("fmt", TIME_FORMATS)
def test_time_column_as_tshark(variants: list[Path], fmt: str) -> None:
    zones = ZONES if fmt in ("a", "ad") else ("UTC",)
    rows = 0
    for cap in variants:
        for tz in zones:
            want = _tshark_times(cap, fmt, tz)
            assert want, cap
            assert _tcpwhy_times(cap, fmt, tz) == want, (cap.name, fmt, tz)
            rows += len(want)
    assert rows > 100


def test_precision_follows_the_capture(variants: list[Path]) -> None:
    digits = {cap.name: capture_ts_digits(str(cap)) for cap in variants}
    assert digits["clean.pcap"] == 9 and digits["clean.us.pcap"] == 6
    assert digits["clean.pcapng"] == 9
    # tshark's epoch times have as many decimals
    for cap in variants:
        t = _tshark_times(cap, "e", "UTC")[0]
        assert len(t.split(".")[1]) == digits[cap.name], cap.name


@pytest.mark.parametrize("fmt", ("d", "dd"))
def test_deltas_with_a_display_filter(fmt: str) -> None:
    # d: from the previous frame of the capture, listed or not; dd: from the previous listed
    flt = "tcp.flags.syn == 1 || tcp.flags.fin == 1"
    for name in CAPS:
        cap = LAB / name
        want = _tshark_times(cap, fmt, "UTC", flt)
        assert want
        assert _tcpwhy_times(cap, fmt, "UTC", flt) == want, name


def test_jsonl_ts_is_tsharks_epoch_written_exactly(variants: list[Path]) -> None:
    for cap in variants:
        want = subprocess.run(
            [_tool("tshark"), "-r", str(cap), "-Y", "tcp || icmp || icmpv6", "-T", "fields",
             "-e", "frame.time_epoch"],
            capture_output=True, text=True, check=True,
        ).stdout.split()  # fmt: skip
        out = io.StringIO()
        write_packets(str(cap), "jsonl", out=out)
        lines = out.getvalue().splitlines()
        # the number as written, before json.loads makes it a float
        got = [line.split('"ts": ', 1)[1].split(",", 1)[0] for line in lines]
        # tshark writes nine decimals whatever the capture's precision; ts has the capture's
        digits = capture_ts_digits(str(cap))
        assert all(len(g.split(".")[1]) == digits for g in got), cap.name
        assert [Decimal(g) for g in got] == [Decimal(w) for w in want], cap.name
        assert all(json.loads(line)["ts"] == float(w) for line, w in zip(lines, want, strict=True))


@pytest.mark.parametrize("fmt", TIME_FORMATS)
def test_compiled_and_row_writer_agree(fmt: str) -> None:
    flt = compile_filter("tcp.len > 0 || icmp || icmpv6")
    for name in CAPS:
        for kw in ({}, {"flt": flt}, {"limit": 5}):
            for view in ("table", "csv"):
                got, want = io.StringIO(), io.StringIO()
                write_packets(str(LAB / name), view, out=got, time_format=fmt, **kw)  # type: ignore[arg-type]
                write_packets_rows(str(LAB / name), view, out=want, time_format=fmt, **kw)  # type: ignore[arg-type]
                assert got.getvalue() == want.getvalue(), (name, fmt, kw, view)


def _retimed(src: Path, dst: Path, seed: int) -> int:
    """`src` (ns pcap) as pcapng (nanosecond interface, 64-bit times) with every packet at a
    random time up to 2**33 s and more from the first, some before it: relative times a double cannot
    hold to the nanosecond, and some beyond 2**33 s, which the compiled writer hands to
    Python."""
    data = src.read_bytes()
    assert data[:4] == b"\x4d\x3c\xb2\xa1"
    link = struct.unpack("<I", data[20:24])[0] & 0xFFFF
    rng = random.Random(seed)
    shb_body = struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1)
    out = bytearray(struct.pack("<II", 0x0A0D0D0A, 12 + len(shb_body)) + shb_body)
    out += struct.pack("<I", 12 + len(shb_body))
    idb_body = struct.pack("<HHI", link, 0, 262144) + struct.pack("<HHB3x", 9, 1, 9)
    idb_body += struct.pack("<HH", 0, 0)
    out += (
        struct.pack("<II", 1, 12 + len(idb_body)) + idb_body + struct.pack("<I", 12 + len(idb_body))
    )
    pos = 24
    n = 0
    base = 100_000_000 * 10**9  # 1973: room for 2**33 s after it in int64 nanoseconds
    spans = ((-(10**8), 1 << 22), (-(10**8), 1 << 26), (0, 1 << 31), (1 << 31, 1 << 33),
             (1 << 33, (1 << 33) + 4 * 10**8))  # fmt: skip
    while pos + 16 <= len(data):
        _, _, incl, orig = struct.unpack("<IIII", data[pos : pos + 16])
        lo, hi = rng.choice(spans)
        ns = base if n == 0 else base + rng.randrange(lo * 10**9, hi * 10**9)
        pkt = data[pos + 16 : pos + 16 + incl]
        body = struct.pack("<IIIII", 0, ns >> 32, ns & 0xFFFFFFFF, incl, orig)
        body += pkt + b"\0" * (-incl % 4)
        out += struct.pack("<II", 6, 12 + len(body)) + body + struct.pack("<I", 12 + len(body))
        pos += 16 + incl
        n += 1
    dst.write_bytes(bytes(out))
    return n


@pytest.mark.parametrize("view", ("table", "csv", "jsonl"))
def test_far_times_compiled_and_row_writer_agree(tmp_path: Path, view: str) -> None:
    packets = 0
    far = [0, 0]  # rows beyond 2**22 s (no nanoseconds in a double), beyond 2**33 s (Python)
    for seed, src in enumerate(sorted(LAB.glob("*.pcap"))[:12]):
        cap = tmp_path / f"far-{seed}.pcapng"
        packets += _retimed(src, cap, seed)
        for fmt in (None, "r", "e", "ud"):
            got, want = io.StringIO(), io.StringIO()
            write_packets(str(cap), view, out=got, time_format=fmt)
            write_packets_rows(str(cap), view, out=want, time_format=fmt)
            assert got.getvalue() == want.getvalue(), (src.name, view, fmt)
        out = io.StringIO()
        write_packets(str(cap), "jsonl", out=out)
        times = [abs(json.loads(line)["time"]) for line in out.getvalue().splitlines()]
        far[0] += sum(2**22 <= t < 2**33 for t in times)
        far[1] += sum(t >= 2**33 for t in times)
    assert packets > 250 and far[0] > 100 and far[1] > 10, (packets, far)
