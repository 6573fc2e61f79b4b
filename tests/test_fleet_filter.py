"""`analyze DIR -Y FILTER`: every capture point of a fleet is diagnosed with the filter, as
one capture is (only connections with a matching packet); a bad filter is one error before
any point is read; --parquet, which writes every connection, refuses it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

LAB = Path(str(resources.files("tcpwhy") / "data" / "lab"))


@pytest.fixture
def fleet(tmp_path: Path) -> Path:
    """A host with one file and two single-file points (3, 1 and 2 connections)."""
    d = tmp_path / "fleet"
    (d / "host-a").mkdir(parents=True)
    shutil.copy(LAB / "refused.pcap", d / "host-a" / "a-1.pcap")
    for name in ("close-wait-leak.pcap", "abortive-close.pcap"):
        shutil.copy(LAB / name, d / name)
    return d


def analyze(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tcpwhy", "analyze", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=600,
    )


def summary(report: dict[str, Any]) -> tuple[list[tuple[str, int]], dict[str, int]]:
    kinds = sorted((f["kind"], f["count"]) for f in report["findings"])
    return kinds, {p["point"]: p["connections"] for p in report["capture_points"]}


def test_filter_reaches_every_point(fleet: Path) -> None:
    r = analyze(fleet, "--format", "json")
    assert r.returncode == 1, r.stderr
    assert summary(json.loads(r.stdout)) == (
        [("abortive-close", 2), ("close-wait-leak", 3), ("connection-refused", 1)],
        {"abortive-close.pcap": 2, "close-wait-leak.pcap": 3, "host-a": 1},
    )
    # tcp.stream 2 exists only in close-wait-leak.pcap: one of its three leaks is left
    r = analyze(fleet, "-Y", "tcp.stream == 2", "--format", "json")
    assert r.returncode == 1, r.stderr
    assert summary(json.loads(r.stdout)) == (
        [("close-wait-leak", 1)],
        {"abortive-close.pcap": 0, "close-wait-leak.pcap": 1, "host-a": 0},
    )
    # nothing matches: nothing to report, exit status 0
    r = analyze(fleet, "-Y", "tcp.port == 1", "--format", "json")
    assert (r.returncode, r.stderr) == (0, "")
    assert json.loads(r.stdout)["findings"] == []


def test_filter_reaches_dask_workers(fleet: Path) -> None:
    """The filter travels to the worker processes as text and is compiled there."""
    r = analyze(fleet, "-Y", "tcp.stream == 2", "--workers", "1", "--format", "json")
    assert r.returncode == 1, r.stderr
    assert summary(json.loads(r.stdout))[0] == [("close-wait-leak", 1)]


def test_bad_filter_and_parquet(fleet: Path, tmp_path: Path) -> None:
    r = analyze(fleet, "-Y", "tcp.prt == 1")
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.startswith("tcpwhy: -Y: ") and "tcp.prt" in r.stderr
    r = analyze(fleet, "-Y", "tcp.port == 80", "--parquet", tmp_path / "ds")
    assert (r.returncode, r.stdout) == (2, "")
    assert r.stderr == "tcpwhy: --parquet: writes every connection: give no -Y\n"
    assert not (tmp_path / "ds").exists()


def test_api_fleet_takes_the_filter_as_the_command_does(fleet: Path) -> None:
    import tcpwhy

    r = analyze(fleet, "-Y", "tcp.stream == 2", "--format", "json")
    want = summary(json.loads(r.stdout))
    got = tcpwhy.analyze(fleet, display_filter="tcp.stream == 2")
    assert isinstance(got, tcpwhy.FleetReport)
    assert summary({"findings": got.findings, "capture_points": got.capture_points}) == want
    kinds, _ = want
    assert kinds == [("close-wait-leak", 1)]
    with pytest.raises(tcpwhy.TcpwhyError):
        tcpwhy.analyze(fleet, display_filter="tcp.stream ==")
