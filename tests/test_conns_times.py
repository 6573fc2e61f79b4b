"""`conns --format jsonl` times: `start_ns` and `start_time` (RFC 3339 UTC) beside Zeek's
`start` seconds, the instant of the connection's first packet as tshark reads it.

The lines are the columnar writer's (the compiled formatter) and, for the same records, the
per-record form (`ConnRecord.as_json`); tests/test_conns_columns.py holds the two to the same
bytes, here both are read.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from tcpwhy.capture import read_table
from tcpwhy.report.conns import write_conns
from tcpwhy.tcp.connections import build_connections
from tests.gates import need

LAB = Path(__file__).resolve().parents[1] / "src" / "tcpwhy" / "data" / "lab"
CAPTURES = (
    "clean.pcap",
    "time-wait-reuse.pcap",
    "syn-flood.pcap",
    "retransmission-timeout.pcap",
    "middlebox-reset.pcap",
    "keepalive-race-tls.pcap",
)


def _tshark_first_ns(cap: Path) -> dict[int, int]:
    """tcp.stream -> frame.time_epoch of its first packet, in integer nanoseconds."""
    exe = shutil.which("tshark")
    need(exe is not None, "tshark not installed")
    assert exe is not None
    out = subprocess.run(
        [exe, "-r", str(cap), "-Y", "tcp", "-T", "fields", "-e", "tcp.stream", "-e",
         "frame.time_epoch"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    first: dict[int, int] = {}
    for line in out.splitlines():
        stream, epoch = line.split("\t")
        ns = int(Decimal(epoch) * 1_000_000_000)
        first.setdefault(int(stream), ns)
    assert first, cap.name
    return first


def _check(rec: dict[str, object], first: dict[int, int]) -> None:
    ns, text, start = rec["start_ns"], rec["start_time"], rec["start"]
    assert isinstance(ns, int) and isinstance(text, str) and isinstance(start, float)
    # `start` is the same instant in seconds, rounded to microseconds (the double nearest)
    assert start == round(ns / 1e9, 6), rec
    sec, frac = divmod(ns, 1_000_000_000)
    parsed = datetime.strptime(text[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
    assert text[19] == "." and text[-1] == "Z" and len(text) == 30, text
    assert int(parsed.timestamp()) == sec and int(text[20:29]) == frac, text
    assert ns >= first[rec["stream"]]  # type: ignore[index]


@pytest.mark.parametrize("name", CAPTURES)
def test_start_ns_and_start_time_are_the_first_packet(name: str) -> None:
    cap = LAB / name
    first = _tshark_first_ns(cap)
    out = io.StringIO()
    write_conns(str(cap), "jsonl", out=out)
    recs = [json.loads(line) for line in out.getvalue().splitlines()]
    assert recs, name
    keys = list(recs[0])
    assert keys[keys.index("start") + 1 : keys.index("start") + 3] == ["start_ns", "start_time"]
    earliest: dict[int, int] = {}
    for rec in recs:
        _check(rec, first)
        s = rec["stream"]
        earliest[s] = min(earliest.get(s, rec["start_ns"]), rec["start_ns"])
    # a stream's first record starts at the stream's first packet, to the nanosecond
    assert earliest == {s: first[s] for s in earliest}, name
    # the per-record form gives the same times
    per_record = [r.as_json() for r in build_connections(read_table(str(cap)))]
    got = {(r["stream"], r["start_ns"], r["start_time"]) for r in per_record}
    assert got == {(r["stream"], r["start_ns"], r["start_time"]) for r in recs}, name
