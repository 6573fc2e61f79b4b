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
