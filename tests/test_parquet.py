"""`conns --format parquet` and `packets --format parquet`: read back with DuckDB, every value
held to the jsonl output of the same capture."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import duckdb
import pytest

from tcpwhy.timestamps import rfc3339

LAB = Path(str(resources.files("tcpwhy") / "data" / "lab"))
DEMO = LAB.parent / "demo-stale-keepalive.pcap"
CAPTURES = [DEMO, *sorted(LAB.glob("*.pcap"))]
SOME = [DEMO, LAB / "abortive-close.pcap", LAB / "icmp-no-route.pcap", LAB / "zero-window.pcap"]


def tcpwhy(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tcpwhy", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
    )


def duck_rows(path: Path, order: str) -> list[dict[str, Any]]:
    """The rows of a Parquet file as DuckDB reads them, as Python values."""
    con = duckdb.connect()
    rel = con.sql(f"select * from read_parquet('{path}') order by {order}")
    names = rel.columns
    return [dict(zip(names, row, strict=True)) for row in rel.fetchall()]


def same(a: Any, b: Any, tol: float = 0.0) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return a is not None and b is not None and math.isclose(a, b, abs_tol=tol)
    return bool(a == b)


@pytest.mark.parametrize("capture", CAPTURES, ids=lambda p: p.name)
def test_conns_parquet_matches_jsonl(tmp_path: Path, capture: Path) -> None:
    out = tmp_path / "c.parquet"
    r = tcpwhy("conns", capture, "--seed", "7", "--format", "parquet", "-o", out)
    assert r.returncode == 0, r.stderr
    j = tcpwhy("conns", capture, "--seed", "7", "--format", "jsonl")
    assert j.returncode == 0, j.stderr
    want = [json.loads(line) for line in j.stdout.splitlines()]
    got = duck_rows(out, "stream, start_ns")
    want.sort(key=lambda d: (d["stream"], d["start"]))
    assert len(got) == len(want) > 0
    for g, w in zip(got, want, strict=True):
        for key, value in w.items():
            # icmp and schema_version: the jsonl's alone (a Parquet file's schema is its own)
            if key in ("start", "start_time", "duration", "irtt", "icmp", "schema_version"):
                continue
            assert g[key] == value, (capture.name, key, g[key], value)
        # times: the jsonl writes seconds rounded to microseconds
        assert same(g["start_ns"] / 1e9, w["start"], 1e-6)
        assert same(g["start"].timestamp(), w["start"], 2e-6)
        assert w["start_time"] == rfc3339(g["start_ns"])  # Parquet: the typed `start`
        assert same(g["duration"], w["duration"], 1e-6)
        assert (g["irtt"] is None) == (w["irtt"] is None)
        if w["irtt"] is not None:
            assert same(g["irtt"], w["irtt"], 1e-6)
        assert g["local_orig"] is None and g["local_resp"] is None


def test_conns_parquet_local_nets_and_filter(tmp_path: Path) -> None:
    out = tmp_path / "c.parquet"
    args = ("--seed", "1", "--local-nets", "10.77.0.1/32", "-Y", "tcp.flags.reset == 1")
    cap = LAB / "abortive-close.pcap"
    r = tcpwhy("conns", cap, *args, "--format", "parquet", "-o", out)
    assert r.returncode == 0, r.stderr
    want = [
        json.loads(x)
        for x in tcpwhy("conns", cap, *args, "--format", "jsonl").stdout.split("\n")
        if x
    ]
    got = duck_rows(out, "stream")
    assert [(g["uid"], g["local_orig"], g["local_resp"]) for g in got] == [
        (w["uid"], w["local_orig"], w["local_resp"]) for w in want
    ]
    assert any(g["local_orig"] for g in got) and not any(g["local_resp"] for g in got)


@pytest.mark.parametrize("capture", SOME, ids=lambda p: p.name)
@pytest.mark.parametrize("absolute", [False, True])
def test_packets_parquet_matches_jsonl(tmp_path: Path, capture: Path, absolute: bool) -> None:
    out = tmp_path / "p.parquet"
    extra = ("--absolute",) if absolute else ()
    r = tcpwhy("packets", capture, *extra, "--format", "parquet", "-o", out)
    assert r.returncode == 0, r.stderr
    j = tcpwhy("packets", capture, *extra, "--format", "jsonl")
    # ICMP errors about TCP are rows of the text views only
    want = [d for d in map(json.loads, j.stdout.splitlines()) if "icmp" not in d]
    got = duck_rows(out, "frame")
    assert len(got) == len(want) > 0
    for g, w in zip(got, want, strict=True):
        for key in ("frame", "src", "dst", "sport", "dport", "length", "flags", "seq", "ack"):
            assert g[key] == w[key], (key, g[key], w[key])
        for key in ("len", "win", "stream", "analysis"):
            assert g[key] == w[key], (key, g[key], w[key])
        assert same(g["time"], w["time"], 1e-9)


def test_packets_parquet_count_and_filter(tmp_path: Path) -> None:
    out = tmp_path / "p.parquet"
    cap = LAB / "abortive-close.pcap"
    r = tcpwhy("packets", cap, "-Y", "tcp.len > 0", "-c", "3", "--format", "parquet", "-o", out)
    assert r.returncode == 0, r.stderr
    want = [
        json.loads(x)["frame"]
        for x in tcpwhy(
            "packets", cap, "-Y", "tcp.len > 0", "-c", "3", "--format", "jsonl"
        ).stdout.split("\n")
        if x
    ]
    con = duckdb.connect()
    got = [f for (f,) in con.sql(f"select frame from '{out}' order by frame").fetchall()]
    assert got == want and len(got) == 3
    [(n,)] = con.sql(f"select count(*) from '{out}' where len = 0").fetchall()
    assert n == 0


def test_parquet_bad_output(tmp_path: Path) -> None:
    r = tcpwhy("conns", DEMO, "--format", "parquet")
    assert r.returncode == 2 and r.stderr.startswith("tcpwhy: ") and "-o FILE" in r.stderr
    missing = tmp_path / "no" / "c.parquet"
    r = tcpwhy("packets", DEMO, "--format", "parquet", "-o", missing)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.count("\n") == 1 and str(missing) in r.stderr
    # a capture that cannot be read leaves no file, not even half of one
    bad = tmp_path / "bad.pcap"
    bad.write_bytes(b"not a capture at all")
    out = tmp_path / "c.parquet"
    r = tcpwhy("conns", bad, "--format", "parquet", "-o", out)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert not out.exists() and os.listdir(tmp_path) == ["bad.pcap"]


def test_schema_tables_in_docs() -> None:
    """The Arrow schemas' tables in the docs are those the code makes (no drift), every
    schema is documented, and every column says what it holds."""
    import re

    from tcpwhy.report.parquet import schema_markdown, schemas

    docs = Path(__file__).resolve().parent.parent / "docs"
    seen = set()
    for doc in sorted(docs.glob("*.md")):
        text = doc.read_text(encoding="utf-8")
        for name, table in re.findall(
            r"<!-- arrow-schema:(\w+) -->\n(.*?)<!-- /arrow-schema -->", text, flags=re.S
        ):
            assert table == schema_markdown(name), (
                f"{doc.name}: the {name} table differs from the code: "
                f"python -m tcpwhy.report.parquet docs/{doc.name}"
            )
            seen.add(name)
    assert seen == set(schemas())
    for name, (schema, notes) in schemas().items():
        assert [f.name for f in schema if not notes.get(f.name)] == [], name
        assert set(notes) == set(schema.names), name


def test_conns_parquet_written_behind_the_reading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batches are built and written by a thread of their own, in the order read (many
    small batches here), and an error there is the command's: no file is left in place."""
    import functools
    import threading
    import warnings

    import pyarrow.parquet as pq

    from tcpwhy import capture
    from tcpwhy.decode.table import CaptureStats
    from tcpwhy.report import parquet
    from tcpwhy.tcp.records import RecordOptions
    from tcpwhy.views import connection_batches

    monkeypatch.setattr(
        capture, "iter_tables", functools.partial(capture.iter_tables, chunk_bytes=2048)
    )
    threads: list[str] = []
    write = parquet.ParquetSink.write

    def noting(self: parquet.ParquetSink, table: Any) -> None:
        threads.append(threading.current_thread().name)
        write(self, table)

    monkeypatch.setattr(parquet.ParquetSink, "write", noting)
    cap = str(LAB / "syn-flood.pcap")
    opts = RecordOptions(uid_seed=3)
    out = tmp_path / "c.parquet"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # (few connections held: evicted)
        rows = parquet.write_conns_parquet(cap, str(out), CaptureStats(), None, opts, max_active=3)
        batches = connection_batches(
            [cap], [CaptureStats()], None, record_options=opts, max_active=3
        )[1]
        want = [r.uid for _, c, _ in batches for r in c.records()]
    assert len(threads) > 3 and set(threads) == {"tcpwhy-parquet-writer_0"}
    assert rows == len(want) and pq.read_table(out).column("uid").to_pylist() == want

    def failing(self: parquet.ParquetSink, table: Any) -> None:
        if self.rows:
            raise OSError(28, "No space left on device")
        write(self, table)

    monkeypatch.setattr(parquet.ParquetSink, "write", failing)
    again = tmp_path / "d.parquet"
    with warnings.catch_warnings(), pytest.raises(OSError, match="No space"):
        warnings.simplefilter("ignore", RuntimeWarning)
        parquet.write_conns_parquet(cap, str(again), CaptureStats(), None, opts, max_active=3)
    assert os.listdir(tmp_path) == ["c.parquet"]
