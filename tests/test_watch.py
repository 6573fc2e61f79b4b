"""`tcpwhy watch`: findings as soon as they are certain, bounded memory, metrics, live capture."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.gates import LIVE_SLACK_S

REPO = Path(__file__).resolve().parents[1]
LAB = REPO / "src" / "tcpwhy" / "data" / "lab"
TCPWHY = [sys.executable, "-m", "tcpwhy"]


def run(*args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*TCPWHY, *args], capture_output=True, text=True, timeout=120, **kw)


def kinds_of_analyze(path: Path) -> set[str]:
    r = run("analyze", "--format", "json", str(path))
    return {f["kind"] for f in json.loads(r.stdout)["findings"]}


@pytest.mark.parametrize(
    "name",
    [
        "stale-keepalive",
        "stale-keepalive-tls",
        "keepalive-race",
        "refused",
        "middlebox-reset",
        "abortive-close",
        "time-wait-reuse",
        "close-wait-leak",
        "lost-final-ack",
        "syn-timeout",
        "pmtu-black-hole",
        "icmp-reject",
        "clean",
    ],
)
def test_watch_finds_what_analyze_finds(name: str) -> None:
    path = LAB / f"{name}.pcap"
    r = run("watch", "-r", str(path), "--format", "jsonl")
    assert r.returncode in (0, 1), r.stderr
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    assert {d["kind"] for d in lines} == kinds_of_analyze(path)
    a = json.loads(run("analyze", "--format", "json", str(path)).stdout)["findings"]
    for d in lines:
        # the same finding object as analyze's, plus when it was certain and its group
        assert set(d) == set(a[0]) | {"schema_version", "ts", "ts_ns", "group"}
        assert d["first_ns"] <= d["ts_ns"]


def _pcap_bytes(path: Path) -> tuple[bytes, list[tuple[int, bytes]]]:
    """The file header and (ts_ns, record bytes) of a classic pcap (ns or µs)."""
    raw = path.read_bytes()
    magic = struct.unpack_from("<I", raw)[0]
    scale = 1 if magic == 0xA1B23C4D else 1000
    out, pos = [], 24
    while pos + 16 <= len(raw):
        sec, frac, caplen, _ = struct.unpack_from("<IIII", raw, pos)
        out.append((sec * 10**9 + frac * scale, raw[pos : pos + 16 + caplen]))
        pos += 16 + caplen
    return raw[:24], out


def test_watch_stream_prints_the_finding_before_the_stream_ends() -> None:
    """`-r -` on a stream that stays open: the stale keep-alive reuse is named once its RST
    has arrived (the capture clock runs on with the wall clock), not at the end."""
    p = subprocess.Popen(
        [*TCPWHY, "watch", "-r", "-", "--format", "jsonl"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert p.stdin is not None and p.stdout is not None
        p.stdin.write((LAB / "stale-keepalive.pcap").read_bytes())
        p.stdin.flush()
        got: list[dict[str, Any]] = []

        def read() -> None:
            assert p.stdout is not None
            for line in p.stdout:
                got.append(json.loads(line))

        th = threading.Thread(target=read, daemon=True)
        th.start()
        deadline = time.monotonic() + 5 + LIVE_SLACK_S
        while time.monotonic() < deadline and not any(
            d["kind"] == "stale-keepalive-reuse" for d in got
        ):
            time.sleep(0.05)
        assert p.poll() is None  # still reading: the stream is open
        assert any(d["kind"] == "stale-keepalive-reuse" for d in got)
        p.stdin.close()
        assert p.wait(timeout=30) == 1
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def _long_capture(path: Path, copies: int) -> int:
    """The stale keep-alive recording replayed `copies` times, 3 s apart, each copy on its
    own client port: a long capture whose connections all end."""
    head, recs = _pcap_bytes(LAB / "stale-keepalive.pcap")
    t0 = recs[0][0]
    n = 0
    with open(path, "wb") as f:
        f.write(head)
        for i in range(copies):
            shift = i * 3 * 10**9
            for ts, rec in recs:
                b = bytearray(rec)
                ts2 = ts - t0 + 1_700_000_000 * 10**9 + shift
                sec, ns = divmod(ts2, 10**9)
                frac = ns if struct.unpack_from("<I", head)[0] == 0xA1B23C4D else ns // 1000
                struct.pack_into("<II", b, 0, sec, frac)
                ihl = (b[16 + 14] & 15) * 4
                tcp = 16 + 14 + ihl
                sport, dport = struct.unpack_from("!HH", b, tcp)
                sport, dport = (p if p == 8080 else 20000 + (p + i) % 40000 for p in (sport, dport))
                struct.pack_into("!HH", b, tcp, sport, dport)
                f.write(b)
                n += 1
    return n


def _rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_watch_memory_is_flat_over_a_long_capture(tmp_path: Path) -> None:
    """Replayed through the watcher, a long capture's connections leave as they end: the
    open connections, the rows held and the RSS are the same in the middle and at the end."""
    from tcpwhy.capture import iter_tables
    from tcpwhy.watch.core import Watcher

    path = tmp_path / "long.pcap"
    packets = _long_capture(path, 12000)
    out = io.StringIO()
    w = Watcher(out, "jsonl", summary_every_s=0)
    marks: list[tuple[int, int, int]] = []
    tables = iter_tables(str(path), chunk_bytes=256 << 10)
    for k, t in enumerate(tables):
        w.chunk(t)
        if k % 4 == 0:
            marks.append((_rss_kib(), w.tracker.open, w.tracker.pending_rows))
    w.finish()
    assert w.counters.packets == packets
    mid, end = marks[len(marks) // 2], marks[-1]
    assert end[1] <= 10 and end[2] <= 500, (mid, end)  # only the last copies are open
    assert end[0] - mid[0] < 20 * 1024, (mid, end)  # RSS: no growth beyond noise
    kinds = [json.loads(x) for x in out.getvalue().splitlines()]
    stale = [d for d in kinds if d["kind"] == "stale-keepalive-reuse"]
    # one group, announced once and again at most once a minute of capture time (36000 s)
    assert stale and stale[-1]["group"]["count"] == 12000
    assert len(stale) <= 36000 // 60 + 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_watch_metrics_are_scraped() -> None:
    port = _free_port()
    p = subprocess.Popen(
        [*TCPWHY, "watch", "-r", "-", "--format", "jsonl", "--metrics", f"127.0.0.1:{port}"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert p.stdin is not None and p.stdout is not None
        p.stdin.write((LAB / "stale-keepalive.pcap").read_bytes())
        p.stdin.flush()
        line = p.stdout.readline()  # the first finding: the metrics are set before it
        assert json.loads(line)["kind"]
        text = ""
        deadline = time.monotonic() + 5 + LIVE_SLACK_S
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                    text = r.read().decode()
            except OSError:
                time.sleep(0.1)
                continue
            if "stale-keepalive-reuse" in text:
                break
            time.sleep(0.1)
        assert re.search(
            r'tcpwhy_findings_total\{kind="stale-keepalive-reuse",server="10.77.0.2:8080"\} 1\.0',
            text,
        ), text
        assert "tcpwhy_resets_total 1.0" in text
        assert "tcpwhy_packets_total 21.0" in text
        assert re.search(r'tcpwhy_connections\{state="established"\}', text)
        assert "tcpwhy_capture_drops_total 0.0" in text
        assert "tcpwhy_refused_connects_total 0.0" in text
        assert "tcpwhy_retransmissions_total" in text
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=30) == 143
        assert p.stderr is not None
        assert "tcpwhy: watch: 21 packets" in p.stderr.read().decode()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_watch_refused_counted_in_metrics_and_bad_metrics_address() -> None:
    r = run("watch", "-r", str(LAB / "refused.pcap"), "--metrics", "nonsense")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == ["tcpwhy: --metrics: 'nonsense' is not HOST:PORT"]


def test_watch_ctrl_c_prints_the_summary_and_exits_130() -> None:
    p = subprocess.Popen(
        [*TCPWHY, "watch", "-r", "-"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert p.stdin is not None and p.stdout is not None and p.stderr is not None
    p.stdin.write((LAB / "refused.pcap").read_bytes())
    p.stdin.flush()
    p.stdout.readline()  # the refused connect is named while the stream is open
    p.send_signal(signal.SIGINT)
    assert p.wait(timeout=30) == 130
    err = p.stderr.read().decode()
    assert "tcpwhy: watch:" in err and "Traceback" not in err
    p.stdin.close()


def test_watch_bad_input_is_one_line_exit_2(tmp_path: Path) -> None:
    r = run("watch", "-r", str(tmp_path / "missing.pcap"))
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[0] == f"tcpwhy: {tmp_path / 'missing.pcap'}: no such file"
    r = run("watch")
    assert r.returncode == 2
    assert r.stderr.strip() == "tcpwhy: watch: give one of -i IFACE or -r FILE|-"
    r = run("watch", "-i", "no-such-if0")
    assert (r.returncode, r.stderr.strip()) == (2, "tcpwhy: no-such-if0: no such interface")


@pytest.mark.root
def test_watch_bad_filter_and_not_permitted(netns_ok: None) -> None:
    r = run("watch", "-i", "lo", "-f", "tcp and (")
    assert r.returncode == 2
    assert r.stderr.strip().startswith("tcpwhy: -f: bad capture filter:")
    assert len(r.stderr.strip().splitlines()) == 1
    r = subprocess.run(
        [
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            *TCPWHY,
            "watch",
            "-i",
            "lo",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
    )
    assert r.returncode == 1, r.stderr
    assert r.stderr.strip().startswith("tcpwhy: lo: not permitted to capture")


LIVE_KINDS = {
    "stale-keepalive": "stale-keepalive-reuse",
    "refused": "connection-refused",
    "abortive-close": "abortive-close",
    "keepalive-race": "keepalive-race",
    "middlebox-reset": "middlebox-reset",
}


@pytest.mark.parametrize("name", sorted(LIVE_KINDS))
def test_watch_live_names_the_scenario_within_1s_of_its_decisive_packet(
    name: str, netns_ok: None
) -> None:
    """`watch -i` on the client's interface while the lab plays a scenario: its finding is
    printed while the scenario runs, within 1 s (plus the suite's slack) of its decisive
    packet (the last step of the finding's timeline, by the kernel's capture clock)."""
    from tcpwhy.lab.env import Lab, Options
    from tcpwhy.lab.runner import get
    from tcpwhy.watch.lab import watch_command

    sc = get(name)
    lab = Lab(Options(), relay=sc.relay)
    p = None
    try:
        p = subprocess.Popen(
            watch_command(lab.client_ns, "jsonl"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(REPO / "src")},
        )
        assert p.stderr is not None and p.stdout is not None
        assert "tcpwhy: watching" in p.stderr.readline().decode()
        got: list[tuple[float, dict[str, Any]]] = []

        def read() -> None:
            assert p is not None and p.stdout is not None
            for line in p.stdout:
                got.append((time.time(), json.loads(line)))

        threading.Thread(target=read, daemon=True).start()
        sc.play(lab)
        kind = LIVE_KINDS[name]
        deadline = time.monotonic() + 1 + LIVE_SLACK_S
        while time.monotonic() < deadline and not any(d["kind"] == kind for _, d in got):
            time.sleep(0.02)
        found = [(at, d) for at, d in got if d["kind"] == kind]
        assert found, [d["kind"] for _, d in got]
        at, d = found[0]
        decisive = max(s["ts_ns"] for s in d["timeline"]) / 1e9
        assert at - decisive <= 1.0 + LIVE_SLACK_S, (at, decisive)
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=30) == 143
        err = p.stderr.read().decode()
        assert "tcpwhy: watch:" in err and "Traceback" not in err
    finally:
        if p is not None and p.poll() is None:
            p.kill()
            p.wait()
        lab.close()


def test_watch_caps_connections_and_groups() -> None:
    """Over its caps, the tracker lets the longest idle connections go (diagnosed, counted
    as evicted) and the groups keep only the most recent."""
    from tcpwhy.capture import iter_tables
    from tcpwhy.watch.core import Watcher
    from tcpwhy.watch.groups import Groups
    from tcpwhy.watch.tracker import Limits

    w = Watcher(
        io.StringIO(),
        "jsonl",
        limits=Limits(max_conns=20),
        groups=Groups(max_groups=1),
        summary_every_s=0,
    )
    for t in iter_tables(str(LAB / "syn-flood.pcap"), chunk_bytes=16 << 10):
        w.chunk(t)
        assert w.tracker.open <= 20
    w.finish()
    assert w.tracker.ended["evicted"] > 0
    assert len(w.groups.groups) <= 1


def test_request_retried_is_named_when_the_retry_leaves_after_the_failure() -> None:
    """The reset connection leaves 0.2 s after its RST; its retry (closed by both sides)
    only 2 s after its last packet, in a later window. The failed request waits for it,
    and `request-retried` is named then, on the failed connection, as analyze names it."""
    from tcpwhy.capture import iter_tables
    from tcpwhy.watch.core import Watcher

    path = LAB / "stale-keepalive.pcap"
    out = io.StringIO()
    w = Watcher(out, "jsonl", summary_every_s=0)
    for t in iter_tables(str(path)):
        w.chunk(t, tick=False)
    rst_ns = 1795308255303316769  # frame 11, the server's RST
    w.tick(rst_ns + 500_000_000)
    first = [json.loads(x) for x in out.getvalue().splitlines()]
    # the failure alone left: its own finding now, the retry not yet
    assert [d["kind"] for d in first] == ["stale-keepalive-reuse"]
    assert w.tracker.open == 1 and len(w.failed) == 1
    w.finish()
    found = [json.loads(x) for x in out.getvalue().splitlines()][len(first) :]
    assert [d["kind"] for d in found] == ["request-retried"]
    assert found[0]["streams"] == first[0]["streams"] == [0]
    assert found[0]["summary"] == next(
        f["summary"]
        for f in json.loads(run("analyze", "--format", "json", str(path)).stdout)["findings"]
        if f["kind"] == "request-retried"
    )
    assert not w.failed
