"""Fleets: the same findings in this process, on a LocalCluster and on a Dask cluster of
separately started processes; a corrupt file is an error row; no process is left behind."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import psutil
import pytest

import tcpwhy

LAB = Path(str(resources.files("tcpwhy") / "data" / "lab"))
DEMO = LAB.parent / "demo-stale-keepalive.pcap"
BIN = Path(sys.executable).parent
TCPWHY = (sys.executable, "-m", "tcpwhy")


@pytest.fixture
def fleet(tmp_path: Path) -> Path:
    """Two hosts with rotated files, three single-file points and one corrupt file."""
    d = tmp_path / "fleet"
    (d / "host-a").mkdir(parents=True)
    (d / "host-b").mkdir()
    shutil.copy(DEMO, d / "host-a" / "a-1.pcap")
    shutil.copy(LAB / "abortive-close.pcap", d / "host-b" / "b-1.pcap")
    (d / "host-b" / "b-2.pcap").write_bytes(b"this is not a capture")
    for name in ("stale-keepalive.pcap", "refused.pcap", "close-wait-leak.pcap"):
        shutil.copy(LAB / name, d / name)
    return d


def analyze(*args: str | Path, timeout: float = 300) -> tuple[int, dict[str, Any], str]:
    r = subprocess.run(
        [sys.executable, "-m", "tcpwhy", "analyze", *map(str, args), "--format", "json"],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return r.returncode, json.loads(r.stdout), r.stderr


def plain_findings(path: Path) -> list[tuple[str, int]]:
    """(kind, count) of a capture diagnosed by itself, as `analyze FILE` does today."""
    r = subprocess.run(
        [sys.executable, "-m", "tcpwhy", "analyze", str(path), "--format", "json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    return sorted((f["kind"], f["count"]) for f in json.loads(r.stdout)["findings"])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    """Stop the processes by PID, and their children, and wait for all of them."""
    for p in procs:
        kids = []
        with contextlib.suppress(psutil.NoSuchProcess):
            kids = psutil.Process(p.pid).children(recursive=True)
        for k in kids:
            with contextlib.suppress(psutil.NoSuchProcess):
                k.kill()
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)
        psutil.wait_procs(kids, timeout=10)


def dataset(out: Path, name: str) -> list[tuple[Any, ...]]:
    """A Parquet dataset of `analyze --parquet`, read by DuckDB, without uids, in order."""
    import duckdb

    rel = duckdb.connect().sql(
        f"select * exclude (uid) from read_parquet('{out / name / '**' / '*.parquet'}', "
        "hive_partitioning = true)"
        if name == "connections"
        else f"select * from read_parquet('{out / name / '**' / '*.parquet'}', "
        "hive_partitioning = true)"
    )
    return sorted(rel.fetchall(), key=repr)


def children_now() -> set[int]:
    return {c.pid for c in psutil.Process().children(recursive=True)}


def test_same_findings_everywhere(fleet: Path, tmp_path: Path) -> None:
    before = children_now()
    status, plain, err = analyze(fleet, "--parquet", tmp_path / "ds-plain")
    # the corrupt file is an error row; the rest of its point and the fleet are analysed
    assert status == 2
    assert plain["errors"] == [
        {"file": str(fleet / "host-b" / "b-2.pcap"), "reason": plain["errors"][0]["reason"]}
    ]
    assert "not a pcap" in plain["errors"][0]["reason"] and "b-2.pcap" in err
    names = [p["point"] for p in plain["capture_points"]]
    assert names == [
        "close-wait-leak.pcap",
        "host-a",
        "host-b",
        "refused.pcap",
        "stale-keepalive.pcap",
    ]
    # each point's findings are those of the capture diagnosed alone
    for point, path in (
        ("host-a", DEMO),
        ("host-b", LAB / "abortive-close.pcap"),
        ("refused.pcap", LAB / "refused.pcap"),
    ):
        got = sorted((f["kind"], f["count"]) for f in plain["points"][point])
        assert got == plain_findings(path) and got, point
    # fleet findings: per kind and server, with the points and their connection counts
    stale = [f for f in plain["findings"] if f["kind"] == "stale-keepalive-reuse"]
    assert {f["server"]: f["capture_points"] for f in stale} == {
        "api.internal (127.0.0.1:8080)": {"host-a": 1},
        "10.77.0.2:8080": {"stale-keepalive.pcap": 1},
    }
    assert all(f["server_idle_timeout_s"]["median"] == pytest.approx(1.0, abs=0.01) for f in stale)

    _, local1, _ = analyze(fleet, "--workers", "1")
    _, local2, _ = analyze(fleet, "--workers", "2")
    assert local1 == plain and local2 == plain

    with external_cluster(tmp_path) as (addr, procs):
        _, external, _ = analyze(fleet, "--scheduler", addr, "--parquet", tmp_path / "ds-ext")
        assert external == plain
    # the external workers wrote the same datasets (uids apart: random per run)
    for name in ("connections", "findings"):
        rows = dataset(tmp_path / "ds-plain", name)
        assert rows and dataset(tmp_path / "ds-ext", name) == rows, name
    for p in procs:
        assert not psutil.pid_exists(p.pid) or psutil.Process(p.pid).status() == "zombie"
    assert children_now() <= before


@contextlib.contextmanager
def external_cluster(tmp_path: Path) -> Iterator[tuple[str, list[subprocess.Popen[bytes]]]]:
    """`dask scheduler` and two `dask worker` processes (each a nanny and its worker),
    started as a user starts them on a cluster, and stopped by PID."""
    port = free_port()
    addr = f"tcp://127.0.0.1:{port}"
    procs: list[subprocess.Popen[bytes]] = []
    log = open(tmp_path / "dask.log", "wb")  # noqa: SIM115
    try:
        procs.append(
            subprocess.Popen(
                [
                    str(BIN / "dask"),
                    "scheduler",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--no-dashboard",
                ],
                stdout=log,
                stderr=log,
            )
        )
        for _ in range(2):
            procs.append(
                subprocess.Popen(
                    [
                        str(BIN / "dask"),
                        "worker",
                        addr,
                        "--nworkers",
                        "1",
                        "--nthreads",
                        "1",
                        "--no-dashboard",
                        "--memory-limit",
                        "2GB",
                    ],
                    stdout=log,
                    stderr=log,
                )
            )
        deadline = time.monotonic() + 60
        from distributed import Client

        while True:
            try:
                with Client(addr, timeout="5s") as c:
                    if len(c.scheduler_info()["workers"]) == 2:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "dask.log").read_text()
            time.sleep(1)
        yield addr, procs
    finally:
        stop(procs)
        log.close()


def test_worker_killed_mid_run(fleet: Path, tmp_path: Path) -> None:
    """SIGKILL to a worker process while it holds tasks: Dask runs them again (on the other
    worker, or on the one its nanny restarts) and the findings are the same."""
    for k in range(12):  # more points than workers, so that the run lasts
        shutil.copy(LAB / "zero-window.pcap", fleet / f"zw-{k:02d}.pcap")
    _, plain, _ = analyze(fleet)
    from distributed import Client

    with external_cluster(tmp_path) as (addr, _), Client(addr, timeout="10s") as c:
        pids = c.run(os.getpid)  # {worker address: worker process}
        run = subprocess.Popen(
            [*TCPWHY, "analyze", str(fleet), "--scheduler", addr, "--format", "json"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            deadline = time.monotonic() + 120
            while True:
                busy = [w for w, keys in c.processing().items() if keys]
                if busy:
                    break
                assert time.monotonic() < deadline and run.poll() is None
                time.sleep(0.01)
            victim = pids[busy[0]]
            held = c.processing()[busy[0]]
            os.kill(victim, signal.SIGKILL)
            out, err = run.communicate(timeout=300)
        finally:
            if run.poll() is None:
                run.kill()
                run.wait()
        assert held and any(str(k).startswith("tcpwhy-point-") for k in held)
        assert not psutil.pid_exists(victim) or psutil.Process(victim).status() == "zombie"
        assert run.returncode == 2, err  # the corrupt file, as in the plain run
        assert json.loads(out) == plain


def named(report: dict[str, Any], fleet: Path | None = None, url: str = "") -> tuple[Any, Any]:
    """A report's findings and points, with the fleet's paths written as `url`."""
    text = json.dumps([report["points"], report["findings"]])
    if fleet is not None:
        text = text.replace(f"{fleet}/", f"{url}/")
    return tuple(json.loads(text))


def test_fsspec_urls(fleet: Path) -> None:
    """A fleet given as a file:// URL, and one in fsspec's memory filesystem (read in this
    process: memory:// is per process), has the findings of the plain run."""
    import fsspec

    from tcpwhy.diagnose import fleet as fl

    _, plain, _ = analyze(fleet)
    status, via_url, _ = analyze(f"file://{fleet}")
    assert status == 2
    # the findings name the files as given (here, URLs)
    assert named(via_url) == named(plain, fleet, f"file://{fleet}")
    assert [e["file"] for e in via_url["errors"]] == [f"file://{fleet}/host-b/b-2.pcap"]

    fs = fsspec.filesystem("memory")
    root = f"/tcpwhy-test-{os.getpid()}"
    try:
        for f in fleet.rglob("*"):
            if f.is_file():
                fs.pipe(f"{root}/{f.relative_to(fleet)}", f.read_bytes())
        points = fl.capture_points([f"memory://{root}"])
        assert [p.name for p in points] == [p["point"] for p in plain["capture_points"]]
        results = fl.run_points(points, {"close_wait_s": 10.0, "fin_wait_2_s": 5.0})
        report = fl.fleet_report(results)
        url = f"memory://{root}"
        assert named(report) == named(plain, fleet, url)
        assert [e["file"] for e in report["errors"]] == [f"memory://{root}/host-b/b-2.pcap"]
    finally:
        fs.rm(root, recursive=True)


def test_one_capture_by_url_is_its_plain_report(tmp_path: Path) -> None:
    """`analyze URL` of one capture (not a directory) is that capture's own report, naming
    the URL where it names the file (warnings too): it said "no such file"."""
    pytest.importorskip("fsspec")
    cap = tmp_path / "refused.pcap"
    shutil.copy(LAB / "refused.pcap", cap)
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(cap.read_bytes()[:-10])  # ends in the middle of a record: a warning
    for path in (cap, cut):
        plain = subprocess.run(
            [*TCPWHY, "analyze", "--format", "json", str(path)], capture_output=True, text=True
        )
        url = f"file://{path}"
        by_url = subprocess.run(
            [*TCPWHY, "analyze", "--format", "json", url], capture_output=True, text=True
        )
        assert by_url.returncode == plain.returncode == (1 if path == cap else 0), by_url.stderr
        assert json.loads(by_url.stdout) == json.loads(plain.stdout.replace(str(path), url))
        assert json.loads(by_url.stdout)["capture"]["files"] == [url]
    assert json.loads(by_url.stdout)["capture"]["warnings"][0].startswith(f"{url}: file ends")
    gone = subprocess.run(
        [*TCPWHY, "analyze", f"file://{tmp_path}/nope.pcap"], capture_output=True, text=True
    )
    assert gone.returncode == 2
    assert gone.stderr == f"tcpwhy: file://{tmp_path}/nope.pcap: no such file\n"


@pytest.mark.parametrize("children", [1, 3], ids=["cluster-starting", "running"])
def test_ctrl_c_leaves_no_process(fleet: Path, children: int) -> None:
    """Ctrl-C (SIGINT to the whole process group, as a terminal sends it) while the cluster
    starts and while it runs: the one summary line, status 130, no process left (by PID)."""
    p = subprocess.Popen(
        [sys.executable, "-m", "tcpwhy", "analyze", str(fleet), "--workers", "2"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while len(psutil.Process(p.pid).children(recursive=True)) < children:
            assert time.monotonic() < deadline and p.poll() is None
            time.sleep(0.02)
        kids = psutil.Process(p.pid).children(recursive=True)
        os.killpg(p.pid, signal.SIGINT)
        _, err = p.communicate(timeout=60)
        _, alive = psutil.wait_procs(kids, timeout=30)
        # also any process started after the snapshot: none may be left in the group
        late = [q.pid for q in psutil.process_iter() if _pgid(q.pid) == p.pid]
        assert not alive and not late, ([k.pid for k in alive], late)
        assert p.returncode == 130 and err == "tcpwhy: interrupted\n", err
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


def test_text_leads_with_fleet_verdict(fleet: Path) -> None:
    r = subprocess.run(
        [*TCPWHY, "analyze", str(fleet)], capture_output=True, text=True, timeout=300
    )
    lines = r.stdout.splitlines()
    _, report, _ = analyze(fleet)
    total = sum(p["connections"] for p in report["capture_points"])
    assert (
        r.returncode == 2 and lines[0] == f"tcpwhy: fleet of 5 capture points, {total} connections"
    )
    assert (
        "[error] stale-keepalive-reuse at 1 of 5 capture points, all to 10.77.0.2:8080, "
        "server idle timeout 1.001 s (1 connection)"
    ) in lines
    assert (
        lines[-1]
        == f"error: {fleet / 'host-b' / 'b-2.pcap'}: " + r.stderr.split(": ", 2)[2].strip()
    )


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def moved_port(src: Path, dst: Path, old: int, new: int) -> None:
    """A copy of an Ethernet/IPv4 pcap recording with TCP port `old` written as `new` (the
    same connections to another server), TCP checksums recomputed."""
    data = bytearray(src.read_bytes())
    off = 24
    while off < len(data):
        incl = int.from_bytes(data[off + 8 : off + 12], "little")
        frame = off + 16
        ip = frame + 14
        if data[frame + 12 : frame + 14] == b"\x08\x00" and data[ip + 9] == 6:
            ihl = (data[ip] & 0x0F) * 4
            total = int.from_bytes(data[ip + 2 : ip + 4], "big")
            seg = ip + ihl
            for at in (seg, seg + 2):
                if int.from_bytes(data[at : at + 2], "big") == old:
                    data[at : at + 2] = new.to_bytes(2, "big")
            data[seg + 16 : seg + 18] = b"\0\0"
            n = total - ihl
            pseudo = bytes(data[ip + 12 : ip + 20]) + b"\0\x06" + n.to_bytes(2, "big")
            data[seg + 16 : seg + 18] = _checksum(pseudo + bytes(data[seg : seg + n])).to_bytes(
                2, "big"
            )
        off = frame + incl
    dst.write_bytes(bytes(data))


def test_close_wait_leaks_are_one_finding_per_server(tmp_path: Path) -> None:
    """CLOSE_WAIT leaks name their server by `facts.endpoint`, not `facts.server`: the fleet
    still has one finding per server (two servers, two findings, each named in its verdict),
    and the Parquet findings name the server too."""
    d = tmp_path / "fleet"
    d.mkdir()
    leak = LAB / "close-wait-leak.pcap"
    shutil.copy(leak, d / "web-1.pcap")
    shutil.copy(leak, d / "web-2.pcap")
    moved_port(leak, d / "web-3.pcap", 8080, 8081)
    alone = json.loads(
        subprocess.run(
            [*TCPWHY, "analyze", str(d / "web-3.pcap"), "--format", "json"],
            capture_output=True,
            text=True,
            timeout=300,
        ).stdout
    )["findings"]
    # the copy is the same leak, now at port 8081
    assert [(f["kind"], f["facts"]["endpoint"]) for f in alone] == [
        ("close-wait-leak", "10.77.0.2:8081")
    ]
    status, report, _ = analyze(d, "--parquet", tmp_path / "ds")
    assert status == 1
    leaks = {f["server"]: f for f in report["findings"] if f["kind"] == "close-wait-leak"}
    assert sorted(leaks) == ["10.77.0.2:8080", "10.77.0.2:8081"]
    assert leaks["10.77.0.2:8080"]["capture_points"] == {"web-1.pcap": 3, "web-2.pcap": 3}
    assert leaks["10.77.0.2:8081"]["capture_points"] == {"web-3.pcap": 3}
    assert leaks["10.77.0.2:8080"]["verdict"] == (
        "close-wait-leak at 2 of 3 capture points, all to 10.77.0.2:8080 (6 connections)"
    )
    import duckdb

    got = (
        duckdb.connect()
        .sql(
            f"select point, server from read_parquet('{tmp_path / 'ds' / 'findings' / '**' / '*.parquet'}', "
            "hive_partitioning = true) where kind = 'close-wait-leak' order by point"
        )
        .fetchall()
    )
    assert got == [
        ("web-1.pcap", "10.77.0.2:8080"),
        ("web-2.pcap", "10.77.0.2:8080"),
        ("web-3.pcap", "10.77.0.2:8081"),
    ]


def test_special_files_in_a_fleet_are_error_rows(tmp_path: Path) -> None:
    """A named pipe left in a fleet's directory made the run wait forever for a writer:
    files that are not regular files are error rows, never opened; the rest is analysed."""
    d = tmp_path / "fleet"
    (d / "host-a").mkdir(parents=True)
    shutil.copy(LAB / "time-wait.pcap", d / "host-a" / "a-1.pcap")
    os.mkfifo(d / "host-a" / "a-2.pcap")
    os.mkfifo(d / "pipe.pcap")
    shutil.copy(LAB / "refused.pcap", d / "refused.pcap")
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(d / "sock"))
        status, got, err = analyze(d, timeout=60)
    assert status == 2
    assert got["errors"] == [
        {
            "file": str(d / "host-a" / "a-2.pcap"),
            "reason": "a named pipe, not a capture file: skipped",
        },
        {"file": str(d / "pipe.pcap"), "reason": "a named pipe, not a capture file: skipped"},
        {"file": str(d / "sock"), "reason": "a socket, not a capture file: skipped"},
    ]
    assert f"tcpwhy: {d / 'pipe.pcap'}: a named pipe" in err
    assert sorted((f["kind"], f["count"]) for f in got["points"]["host-a"]) == plain_findings(
        LAB / "time-wait.pcap"
    )
    assert sorted((f["kind"], f["count"]) for f in got["points"]["refused.pcap"]) == plain_findings(
        LAB / "refused.pcap"
    )


def test_a_directory_without_captures_is_an_error(tmp_path: Path) -> None:
    """An empty directory (a typo'd path into an existing tree, or a collector that has not
    written yet) said "fleet of 0 capture points ... no findings" and exited 0: an all-clear
    for nothing read. Now one line and exit 2, from the command and from the API, also when
    another directory given has captures and this one has only empty sub-directories."""
    empty = tmp_path / "empty"
    (empty / "host-a").mkdir(parents=True)
    full = tmp_path / "full"
    full.mkdir()
    shutil.copy(LAB / "refused.pcap", full / "refused.pcap")
    for args in ([empty], [full, empty]):
        r = subprocess.run(
            [sys.executable, "-m", "tcpwhy", "analyze", *map(str, args)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert r.returncode == 2, r.stdout
        assert r.stdout == ""
        assert r.stderr == (
            f"tcpwhy: {empty}: no capture file in this directory (nor in its sub-directories)\n"
        )
    with pytest.raises(tcpwhy.CaptureError, match="no capture file in this directory"):
        tcpwhy.analyze(empty)
    status, got, _ = analyze(full)
    assert [p["point"] for p in got["capture_points"]] == ["refused.pcap"]
    assert status == 1  # the refused connection, an error-severity finding


def test_head_line_says_which_points_could_not_be_read(tmp_path: Path) -> None:
    """ "fleet of 3 capture points, 1 connections" over a verdict "at 1 of 3 capture points"
    read as two points found clean when two could not be read at all: the head line says
    how many could not be read (a point with one readable file of two was read), in words
    of one and many."""
    d = tmp_path / "fleet"
    (d / "host-a").mkdir(parents=True)
    shutil.copy(LAB / "refused.pcap", d / "host-a" / "a-1.pcap")
    (d / "host-a" / "a-2.pcap").write_bytes(b"not a capture at all")
    (d / "garbage.pcap").write_bytes(b"not a capture either")
    os.mkfifo(d / "pipe.pcap")
    r = subprocess.run([*TCPWHY, "analyze", str(d)], capture_output=True, text=True, timeout=120)
    lines = r.stdout.splitlines()
    assert r.returncode == 2, r.stderr
    assert lines[0] == (
        "tcpwhy: fleet of 3 capture points (2 could not be read: errors below), 1 connection"
    )
    assert "[error] connection-refused at 1 of 3 capture points" in lines[1]
    one = tmp_path / "one"
    one.mkdir()
    shutil.copy(LAB / "refused.pcap", one / "refused.pcap")
    r = subprocess.run([*TCPWHY, "analyze", str(one)], capture_output=True, text=True, timeout=120)
    assert r.stdout.splitlines()[0] == "tcpwhy: fleet of 1 capture point, 1 connection"


def test_no_more_workers_than_points(tmp_path: Path) -> None:
    """`--workers` above the number of capture points starts one worker per point: 10**20
    tried to start them all. Counted by PID while the run goes (spawned interpreters only)."""
    cap = tmp_path / "refused.pcap"
    shutil.copy(LAB / "refused.pcap", cap)
    p = subprocess.Popen(
        [*TCPWHY, "analyze", str(cap), "--workers", "8", "--format", "json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    most = 0
    while p.poll() is None:
        with contextlib.suppress(psutil.NoSuchProcess):
            kids = psutil.Process(p.pid).children(recursive=True)
            # a worker is a spawned interpreter; a child caught between fork and exec still
            # shows its parent's command line (the resource tracker's start was counted, and
            # so was a worker's own child under load): not one whose parent is a worker
            workers = {k.pid: k for k in kids if "spawn_main" in " ".join(k.cmdline())}
            most = max(most, sum(k.ppid() not in workers for k in workers.values()))
        time.sleep(0.01)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 1, err  # the refused connection is an error-severity finding
    assert json.loads(out)["capture_points"][0]["connections"] == 1
    assert most == 1
