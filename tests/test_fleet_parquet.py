"""`analyze --parquet OUTDIR`: connection records and findings as hive-partitioned Parquet
datasets, read back with DuckDB and Polars and held to `conns --format parquet` and to
`analyze --format json`; a run that fails or is interrupted leaves no dataset behind."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import psutil
import pytest

from tests.test_fleet import DEMO, LAB, analyze, fleet  # noqa: F401 (the fixture)

CONN_KEY = "stream, start_ns"


def tcpwhy(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tcpwhy", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=600,
    )


def duck(sql: str) -> list[dict[str, Any]]:
    rel = duckdb.connect().sql(sql)
    return [dict(zip(rel.columns, row, strict=True)) for row in rel.fetchall()]


def dataset_rows(out: Path, name: str, order: str) -> list[dict[str, Any]]:
    glob = out / name / "**" / "*.parquet"
    return duck(
        f"select * from read_parquet('{glob}', hive_partitioning = true) order by point, {order}"
    )


def conns_rows(capture: Path, tmp: Path) -> list[dict[str, Any]]:
    """`conns FILE --format parquet` of one capture, read by DuckDB."""
    out = tmp / f"{capture.name}.conns.parquet"
    r = tcpwhy("conns", capture, "--format", "parquet", "-o", out)
    assert r.returncode == 0, r.stderr
    return duck(f"select * from read_parquet('{out}') order by {CONN_KEY}")


def without(rows: list[dict[str, Any]], *keys: str) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k not in keys} for r in rows]


def finding_view(f: dict[str, Any]) -> tuple[Any, ...]:
    """What a finding row must carry of the JSON finding."""
    return (
        f["kind"],
        f["severity"],
        f["count"],
        f["summary"],
        f["first_ns"],
        f["last_ns"],
        list(f["streams"]),
        list(f["frames"]),
        list(f["examples"]),
        f["explanation"],
        list(f["causes"]),
        list(f["fixes"]),
        list(f["errors"]),
    )


def test_fleet_datasets(fleet: Path, tmp_path: Path) -> None:  # noqa: F811
    out = tmp_path / "ds"
    status, report, err = analyze(fleet, "--parquet", out)
    assert status == 2, err  # the corrupt file: an error row, the rest written
    assert sorted(os.listdir(out)) == ["connections", "findings"]
    points = [p["point"] for p in report["capture_points"]]
    for name in ("connections", "findings"):
        assert sorted(os.listdir(out / name)) == sorted(f"point={p}" for p in points)
        for p in points:
            assert os.listdir(out / name / f"point={p}") == ["part-0.parquet"]
    # nothing of the run is left beside the dataset
    assert sorted(os.listdir(tmp_path)) == ["ds", "fleet"]

    conns = dataset_rows(out, "connections", CONN_KEY)
    # every connection of each point as `conns` writes it (uids apart: random per run)
    files = {
        "close-wait-leak.pcap": LAB / "close-wait-leak.pcap",
        "host-a": DEMO,
        "host-b": LAB / "abortive-close.pcap",  # b-2.pcap is the corrupt one
        "refused.pcap": LAB / "refused.pcap",
        "stale-keepalive.pcap": LAB / "stale-keepalive.pcap",
    }
    for point, capture in files.items():
        got = [r for r in conns if r["point"] == point]
        want = conns_rows(capture, tmp_path)
        assert len(got) == len(want) > 0, point
        assert without(got, "uid", "point") == without(want, "uid"), point
    # the same connection counts as the fleet report, and uids unique across the fleet
    counts = {p["point"]: p["connections"] for p in report["capture_points"]}
    assert {p: sum(r["point"] == p for r in conns) for p in points} == counts
    assert len({r["uid"] for r in conns}) == len(conns)

    found = dataset_rows(out, "findings", "kind, first_ns")
    for p in points:
        got = sorted(finding_view(f) for f in found if f["point"] == p)
        want = sorted(finding_view(f) for f in report["points"][p])
        assert got == want, p
    stale = [f for f in found if f["kind"] == "stale-keepalive-reuse"]
    assert {(f["point"], f["server"]) for f in stale} == {
        ("host-a", "api.internal (127.0.0.1:8080)"),
        ("stale-keepalive.pcap", "10.77.0.2:8080"),
    }
    assert all(f["server_idle_timeout_s"] == pytest.approx(1.0, abs=0.01) for f in stale)
    assert all(json.loads(f["facts"]) for f in stale)

    # Polars reads the same datasets, the partition column included
    lc = pl.scan_parquet(out / "connections" / "**" / "*.parquet", hive_partitioning=True)
    per_point = lc.group_by("point").len().collect()
    assert dict(per_point.iter_rows()) == counts
    lf = pl.read_parquet(out / "findings" / "**" / "*.parquet", hive_partitioning=True)
    assert sorted(lf["kind"].to_list()) == sorted(f["kind"] for f in found)

    # on a LocalCluster of two workers (each writes its own points): the same datasets
    out2 = tmp_path / "ds2"
    status2, report2, _ = analyze(fleet, "--workers", "2", "--parquet", out2)
    assert status2 == 2 and report2 == report
    conns2 = dataset_rows(out2, "connections", CONN_KEY)
    assert without(conns2, "uid") == without(conns, "uid")
    found2 = dataset_rows(out2, "findings", "kind, first_ns")
    assert found2 == found


def test_one_capture_and_replace(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    r = tcpwhy("analyze", DEMO, "--parquet", out, "--format", "json")
    assert r.returncode == 1, r.stderr
    report = json.loads(r.stdout)
    found = dataset_rows(out, "findings", "kind, first_ns")
    assert {f["point"] for f in found} == {DEMO.name}
    assert sorted(finding_view(f) for f in found) == sorted(
        finding_view(f) for f in report["findings"]
    )
    conns = dataset_rows(out, "connections", CONN_KEY)
    assert without(conns, "uid", "point") == without(conns_rows(DEMO, tmp_path), "uid")
    # an earlier dataset is replaced whole (another capture, other partitions)
    r = tcpwhy("analyze", LAB / "refused.pcap", "--parquet", out)
    assert r.returncode == 1, r.stderr
    assert os.listdir(out / "connections") == ["point=refused.pcap"]
    assert os.listdir(out / "findings") == ["point=refused.pcap"]
    assert sorted(os.listdir(tmp_path)) == [f"{DEMO.name}.conns.parquet", "ds"]


def test_bad_outdir_and_input(tmp_path: Path) -> None:
    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    r = tcpwhy("analyze", DEMO, "--parquet", other)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith(f"tcpwhy: {other}: ")
    assert os.listdir(other) == ["keep.txt"]
    r = tcpwhy("analyze", DEMO, "--parquet", tmp_path / "no" / "ds")
    assert r.returncode == 2 and "Traceback" not in r.stderr and r.stderr.count("\n") == 1
    # a capture that cannot be read: no dataset, nothing half written beside it
    bad = tmp_path / "bad.pcap"
    bad.write_bytes(b"not a capture at all")
    r = tcpwhy("analyze", bad, "--parquet", tmp_path / "ds")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert sorted(os.listdir(tmp_path)) == ["bad.pcap", "notes"]


def test_interrupted_run_leaves_no_dataset(fleet: Path, tmp_path: Path) -> None:  # noqa: F811
    big = tmp_path / "big"
    for k in range(24):  # enough points that the run is still going when interrupted
        (big / f"h{k:02d}").mkdir(parents=True)
        shutil.copy(LAB / "zero-window.pcap", big / f"h{k:02d}" / "x.pcap")
    out = tmp_path / "ds"
    p = subprocess.Popen(
        [sys.executable, "-m", "tcpwhy", "analyze", str(big), "--workers", "2", "--parquet", out],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # a terminal's Ctrl-C: SIGINT to the whole process group
    )
    try:
        deadline = time.monotonic() + 120
        while not any(n.startswith(".ds.") for n in os.listdir(tmp_path)):
            assert time.monotonic() < deadline and p.poll() is None
            time.sleep(0.05)
        while len(psutil.Process(p.pid).children(recursive=True)) < 3:
            assert time.monotonic() < deadline and p.poll() is None
            time.sleep(0.05)
        time.sleep(1.0)
        kids = psutil.Process(p.pid).children(recursive=True)
        os.killpg(p.pid, signal.SIGINT)
        _, err = p.communicate(timeout=60)
        _, alive = psutil.wait_procs(kids, timeout=30)
        assert not alive, [k.pid for k in alive]
        assert p.returncode == 130 and err == "tcpwhy: interrupted\n", err
        assert sorted(os.listdir(tmp_path)) == ["big", "fleet"]
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
