"""`tcpwhy.analyze` on fleets: the report of ``tcpwhy analyze DIR --format json``, made by the
same function, here and on a real Dask LocalCluster of two workers; the API's exceptions,
nothing on stdout, progress only when asked for, no process left behind."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil
import pytest

import tcpwhy

LAB = Path(tcpwhy.__file__).parent / "data" / "lab"
DEMO = LAB.parent / "demo-stale-keepalive.pcap"


@pytest.fixture
def fleet(tmp_path: Path) -> Path:
    """A host with two rotated files (one not a capture) and three single-file points."""
    d = tmp_path / "fleet"
    (d / "host-a").mkdir(parents=True)
    (d / "host-b").mkdir()
    shutil.copy(DEMO, d / "host-a" / "a-1.pcap")
    shutil.copy(LAB / "abortive-close.pcap", d / "host-b" / "b-1.pcap")
    (d / "host-b" / "b-2.pcap").write_bytes(b"this is not a capture")
    for name in ("stale-keepalive.pcap", "refused.pcap", "close-wait-leak.pcap"):
        shutil.copy(LAB / name, d / name)
    return d


def cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tcpwhy", "analyze", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=600,
    )


def children_now() -> set[int]:
    """This process's children, but multiprocessing's resource tracker (started with the
    first cluster, it stays until this process exits, as in any program using Dask)."""
    out = set()
    for c in psutil.Process().children(recursive=True):
        try:
            if "resource_tracker" not in " ".join(c.cmdline()):
                out.add(c.pid)
        except psutil.NoSuchProcess:
            pass
    return out


def test_fleet_on_a_local_cluster_is_the_commands_report(fleet: Path, capfd: Any) -> None:
    before = children_now()
    got = tcpwhy.analyze(fleet, workers=2)
    out, err = capfd.readouterr()
    assert out == "" and err == ""  # nothing printed, no progress unless asked for
    assert children_now() <= before  # the cluster's processes are gone
    assert isinstance(got, tcpwhy.FleetReport)

    p = cli(fleet, "--format", "json", "--workers", "2")
    want = json.loads(p.stdout)
    assert got.to_dict() == want
    assert got.to_json() + "\n" == p.stdout
    assert got.exit_status == p.returncode == 2  # the unreadable file
    assert got.errors == want["errors"] and len(got.errors) == 1
    assert got.errors[0]["file"] == str(fleet / "host-b" / "b-2.pcap")
    assert got.findings == want["findings"] and got.findings
    assert got.points == want["points"]
    assert [c["point"] for c in got.capture_points] == [
        "close-wait-leak.pcap",
        "host-a",
        "host-b",
        "refused.pcap",
        "stale-keepalive.pcap",
    ]
    # the text view is the command's; the same report when run in this process
    text = cli(fleet)
    assert got.to_text() == text.stdout
    here = tcpwhy.analyze([fleet])
    assert isinstance(here, tcpwhy.FleetReport) and here.to_dict() == want
    assert "capture points" in repr(got) and "stale-keepalive-reuse" in got._repr_html_()


def test_fleet_points_are_the_captures_diagnosed_alone(fleet: Path) -> None:
    got = tcpwhy.analyze(fleet)
    assert isinstance(got, tcpwhy.FleetReport)
    for point, path in (
        ("host-a", fleet / "host-a" / "a-1.pcap"),
        ("refused.pcap", fleet / "refused.pcap"),
    ):
        alone = tcpwhy.analyze(path)
        assert isinstance(alone, tcpwhy.Report)
        assert got.points[point] == alone.to_dict()["findings"], point
    # files given with workers are a fleet of single-file points
    files = [LAB / "refused.pcap", LAB / "close-wait-leak.pcap"]
    two = tcpwhy.analyze(files, workers=1)
    assert isinstance(two, tcpwhy.FleetReport)
    assert two.to_dict() == json.loads(cli(*files, "--format", "json", "--workers", "1").stdout)


def test_fleet_errors_are_the_apis_exceptions(fleet: Path, tmp_path: Path, capfd: Any) -> None:
    missing = tmp_path / "no-such-dir"
    with pytest.raises(tcpwhy.NotACaptureError) as e:
        tcpwhy.analyze([fleet, missing])
    p = cli(fleet, missing, "--format", "json")
    assert p.returncode == 2 and p.stderr == f"tcpwhy: {e.value}\n"
    with pytest.raises(tcpwhy.TcpwhyError):  # a bad filter, before any point is read
        tcpwhy.analyze(fleet, display_filter="tcp.port ==")
    with pytest.raises(ValueError, match="workers"):
        tcpwhy.analyze(fleet, workers=0)
    with open(LAB / "refused.pcap", "rb") as f, pytest.raises(ValueError, match="file objects"):
        tcpwhy.analyze([f], workers=1)
    assert capfd.readouterr().out == ""


def test_progress_only_when_asked(fleet: Path, capfd: Any) -> None:
    quiet = tcpwhy.analyze(fleet)
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    shown = tcpwhy.analyze(fleet, progress=True)
    out, _ = capfd.readouterr()
    assert out == ""  # a bar goes to stderr only
    assert isinstance(quiet, tcpwhy.FleetReport) and isinstance(shown, tcpwhy.FleetReport)
    assert shown.to_dict() == quiet.to_dict()
    one = tcpwhy.analyze(LAB / "refused.pcap", progress=True)
    assert capfd.readouterr().out == ""
    assert isinstance(one, tcpwhy.Report) and one.findings


def test_no_reassemble_reaches_the_workers(tmp_path: Path) -> None:
    """A worker process does not share the client's reading default: the option goes with
    each task (seen in the connection rows the workers write with --parquet)."""
    import pyarrow.parquet as pq

    sys.path.insert(0, str(Path(__file__).parent.parent))
    from tests import fragment_lab

    why = fragment_lab.available()
    if why:
        pytest.skip(why)
    (tmp_path / "rec").mkdir()
    fragment_lab.record(tmp_path / "rec" / "frag.pcap")  # leaves its own files beside it
    d = tmp_path / "fleet"
    d.mkdir()
    shutil.copy(tmp_path / "rec" / "frag.pcap", d / "frag.pcap")
    for args in ((), ("--no-reassemble",)):
        out = tmp_path / f"ds{len(args)}"
        p = cli(d, *args, "--workers", "2", "--parquet", out, "--format", "json")
        assert p.returncode == 0, p.stderr
        rows = pq.read_table(out / "connections").sort_by("stream").to_pylist()
        conns = subprocess.run(
            [
                sys.executable,
                "-m",
                "tcpwhy",
                "conns",
                str(d / "frag.pcap"),
                "--format",
                "jsonl",
                *args,
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        want = sorted(
            (json.loads(line) for line in conns.stdout.splitlines()), key=lambda r: r["stream"]
        )
        assert [r["orig_pkts"] for r in rows] == [w["orig_pkts"] for w in want], args
        assert tcpwhy.analyze(d, workers=2, reassemble=not args).to_dict() == json.loads(p.stdout)
    whole = pq.read_table(tmp_path / "ds0" / "connections")["orig_pkts"].to_pylist()
    cut = pq.read_table(tmp_path / "ds1" / "connections")["orig_pkts"].to_pylist()
    assert sum(cut) < sum(whole)


def test_fleet_on_an_external_scheduler(fleet: Path, tmp_path: Path) -> None:
    """`scheduler=` sends the points to a cluster started as a user starts one (`dask
    scheduler`, `dask worker`): the command's report; an unreachable one is its error."""
    sys.path.insert(0, str(Path(__file__).parent.parent))
    from tests.test_fleet import external_cluster, free_port

    want = json.loads(cli(fleet, "--format", "json").stdout)
    with external_cluster(tmp_path) as (addr, _):
        got = tcpwhy.analyze(fleet, scheduler=addr)
    assert isinstance(got, tcpwhy.FleetReport) and got.to_dict() == want
    nowhere = f"tcp://127.0.0.1:{free_port()}"
    with pytest.raises(tcpwhy.TcpwhyError) as e:
        tcpwhy.analyze(fleet, scheduler=nowhere)
    assert not isinstance(e.value, tcpwhy.CaptureError)
    p = cli(fleet, "--scheduler", nowhere)
    assert p.returncode == 2 and p.stderr == f"tcpwhy: {e.value}\n"
