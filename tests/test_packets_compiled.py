"""The compiled packet-list writer against the per-row Python writer: the same bytes.

`write_packets_rows` is the Python formatter the Info column was checked against tshark
with (tests/test_packets_view.py); the compiled writer must print exactly its text, in
every format, with relative and absolute numbers, a display filter and a count.
"""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest

from tcpwhy.errors import CaptureError
from tcpwhy.filter import compile_filter
from tcpwhy.report.packets import write_packets, write_packets_rows
from tests.tshark_ref import PACKAGE_DATA

LAB = sorted((PACKAGE_DATA / "lab").glob("*.pcap*"))
FORMATS = ("table", "csv", "jsonl")


def _both(cap: Path, fmt: str, **kw: object) -> tuple[str, str]:
    got, want = io.StringIO(), io.StringIO()
    write_packets(str(cap), fmt, out=got, **kw)  # type: ignore[arg-type]
    write_packets_rows(str(cap), fmt, out=want, **kw)  # type: ignore[arg-type]
    return got.getvalue(), want.getvalue()


@pytest.mark.parametrize("fmt", FORMATS)
def test_lab_recordings_byte_identical(fmt: str) -> None:
    assert len(LAB) >= 30
    lines = 0
    for cap in LAB:
        for absolute in (False, True):
            got, want = _both(cap, fmt, absolute=absolute)
            assert got == want, (cap.name, absolute)
            lines += want.count("\n")
    assert lines > 2000


@pytest.mark.parametrize("fmt", FORMATS)
def test_corpus_byte_identical(zeek_corpus: Path, fmt: str) -> None:
    # IPv6, tunnels, SACK blocks and analysis prefixes among them
    caps = sorted(zeek_corpus.glob("*.pcap"))[:24]
    compared = 0
    for cap in caps:
        try:
            want = io.StringIO()
            write_packets_rows(str(cap), fmt, out=want)
        except CaptureError:  # a link type tcpwhy does not read: the same error from both
            with pytest.raises(CaptureError):
                write_packets(str(cap), fmt, out=io.StringIO())
            continue
        got = io.StringIO()
        write_packets(str(cap), fmt, out=got)
        assert got.getvalue() == want.getvalue(), cap.name
        compared += want.getvalue().count("\n")
    assert compared > 5000


def test_filter_and_count_byte_identical() -> None:
    flt = compile_filter("tcp.analysis.flags || tcp.flags.syn == 1")
    checked = 0
    for cap in LAB:
        for fmt in FORMATS:
            got, want = _both(cap, fmt, flt=flt, limit=7)
            assert got == want, (cap.name, fmt)
            checked += want.count("\n")
    assert checked > 100


def test_icmp_rows_keep_their_place() -> None:
    caps = [c for c in LAB if "icmp" in c.name or "mtu" in c.name]
    assert caps
    for cap in caps:
        for limit in (None, 3, 5):
            got, want = _both(cap, "table", limit=limit)
            assert got == want, (cap.name, limit)


def test_command_line_writes_the_same_bytes(tmp_path: Path) -> None:
    cap = LAB[0]
    out = tmp_path / "p.csv"
    subprocess.run(
        [sys.executable, "-m", "tcpwhy", "packets", str(cap), "--format", "csv", "-o", str(out)],
        check=True,
    )
    want = io.StringIO()
    write_packets_rows(str(cap), "csv", out=want)
    assert out.read_bytes() == want.getvalue().encode()


def test_tshark_style_read_option() -> None:
    cap = str(LAB[0])

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "tcpwhy", "packets", *argv, "--format", "csv"],
            capture_output=True,
            text=True,
        )

    positional = run(cap)
    assert positional.returncode == 0 and positional.stdout.count("\n") > 2
    assert run("-n", "-r", cap).stdout == positional.stdout
    both = run(cap, "-r", cap)
    assert both.returncode == 2 and "FILE or -r FILE" in both.stderr


def _retimed(src: Path, dst: Path, stamps: list[int], nano: bool) -> None:
    """`src` (a pcap) with its packets at the given nanosecond times, in microsecond or
    nanosecond resolution."""
    import struct

    data = src.read_bytes()
    magic = struct.unpack("<I", data[:4])[0]
    assert magic in (0xA1B2C3D4, 0xA1B23C4D), "a little-endian pcap"
    head = struct.pack("<I", 0xA1B23C4D if nano else 0xA1B2C3D4) + data[4:24]
    out, p, k = [head], 24, 0
    while p + 16 <= len(data) and k < len(stamps):
        _, _, incl, orig = struct.unpack("<IIII", data[p : p + 16])
        sec, frac = divmod(stamps[k], 10**9)
        out.append(struct.pack("<IIII", sec, frac if nano else frac // 1000, incl, orig))
        out.append(data[p + 16 : p + 16 + incl])
        p += 16 + incl
        k += 1
    dst.write_bytes(b"".join(out))


@pytest.mark.parametrize("nano", [False, True])
def test_json_times_around_second_and_day_edges(tmp_path: Path, nano: bool) -> None:
    # `ts`, `ts_ns` and `utc_time` share digits and a once-a-second date in the compiled
    # writer: times below one second, on and just before second, minute and day edges, a
    # leap day and an out-of-order step back must print as the per-row writer prints them
    src = max((c for c in LAB if c.suffix == ".pcap"), key=lambda c: c.stat().st_size)
    day = 86_400 * 10**9
    base = 951_782_400 * 10**9  # 2000-02-29T00:00:00Z
    stamps = [
        0,
        999_999_999,
        10**9,
        59 * 10**9 + 999_999_999,
        60 * 10**9,
        day - 1,
        day,
        base - 1,
        base,
        base + 1,
        base + day - 1,
        base + day,
        base + 5 * 10**9 + 123_456_789,
        base + 5 * 10**9 + 999_999_000,
        base + 6 * 10**9,
        base + 5 * 10**9,
        4_102_444_800 * 10**9 - 1,  # the last nanosecond of 2099
    ]
    stamps += [base + 7 * 10**9 + k * 333_333_333 for k in range(40)]
    cap = tmp_path / "retimed.pcap"
    _retimed(src, cap, stamps, nano)
    for absolute in (False, True):
        got, want = _both(cap, "jsonl", absolute=absolute)
        assert got == want
        assert want.count("\n") == len(stamps)
