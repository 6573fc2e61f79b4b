"""`tcpwhy analyze --kernel-trace`: lab recordings with the kernel's trace of the same run.

Each scenario is played on the kernel (root, namespaces); the capture's finding must then
carry the reset reason that the trace file itself holds for the RST's sender, next to the RST
of the timeline, and the kernel's reason name must be one the running kernel publishes. A
trace whose reason is changed by hand must make the finding say the kernel disagrees.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tcpwhy.lab.env import Options
from tcpwhy.lab.runner import run_scenario

RST_FORMAT = Path("/sys/kernel/tracing/events/tcp/tcp_send_reset/format")
# scenario → (finding kind, the end whose kernel sends the decisive RST)
CASES = {
    "refused": ("connection-refused", "server"),
    "stale-keepalive": ("stale-keepalive-reuse", "server"),
    "abortive-close": ("abortive-close", "server"),
    "half-open": ("half-open-reset", "server"),
}


def _analyze(pcap: Path, trace: Path) -> dict[str, Any]:
    p = subprocess.run(
        [
            *(sys.executable, "-m", "tcpwhy", "analyze", str(pcap), "--format", "json"),
            *("--kernel-trace", str(trace)),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode in (0, 1), p.stderr
    return json.loads(p.stdout)  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def recorded(netns_ok: None, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("ktrace")
    out = {}
    for name in CASES:
        pcap = d / f"{name}.pcap"
        result = run_scenario(name, Options(), str(pcap))
        assert result.ok, result.reason
        assert result.trace == str(d / f"{name}.trace.jsonl") and result.trace_lost == 0
        out[name] = pcap
    return out


@pytest.mark.root
@pytest.mark.parametrize("name", sorted(CASES))
def test_finding_carries_the_kernels_reason(recorded: dict[str, Path], name: str) -> None:
    pcap = recorded[name]
    trace = pcap.with_suffix(".trace.jsonl")
    kind, side = CASES[name]
    events = [json.loads(line) for line in trace.read_text().splitlines()]
    doc = _analyze(pcap, trace)
    found = [f for f in doc["findings"] if f["kind"] == kind]
    assert found, [f["kind"] for f in doc["findings"]]
    f = found[0]
    port = 8080
    # the trace's own resets sent by that end for this service, read without tcpwhy's join
    server_resets = {
        e["reason"]
        for e in events
        if e["event"] == "reset_sent" and (e["sport"] == port) == (side == "server")
    }
    assert server_resets, "the trace holds no reset of that end"
    said = [k for k in f["facts"]["kernel"] if k["event"] == "reset_sent"]
    assert said and {k["reason"] for k in said} <= server_resets
    assert all(k["side"] == side for k in said)
    for k in said:
        assert f'"{k["reason"]}"' in RST_FORMAT.read_text()  # the kernel's own name
    # next to the RST that end sent in the timeline
    rst_notes = [s["note"] for s in f["timeline"] if s["sender"] == side and "RST" in s["packet"]]
    assert any(
        f"the {side}'s kernel sent this RST because {said[0]['reason']}" in n for n in rst_notes
    )
    assert "kernel_contradicts" not in f["facts"]
    # the text report says it too
    text = subprocess.run(
        [sys.executable, "-m", "tcpwhy", "analyze", str(pcap), "--kernel-trace", str(trace)],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    assert f"kernel sent this RST because {said[0]['reason']}" in " ".join(text.split())


@pytest.mark.root
def test_a_reason_that_does_not_fit_is_reported(recorded: dict[str, Path], tmp_path: Path) -> None:
    pcap = recorded["stale-keepalive"]
    lines = pcap.with_suffix(".trace.jsonl").read_text().splitlines()
    edited = []
    for line in lines:
        e = json.loads(line)
        if e["event"] == "reset_sent" and e["reason"] == "TCP_TIMEWAIT_SOCKET":
            e["reason"] = "TCP_ABORT_ON_CLOSE"  # as if the server had closed with unread data
        edited.append(json.dumps(e))
    trace = tmp_path / "edited.trace.jsonl"
    trace.write_text("\n".join(edited) + "\n")
    doc = _analyze(pcap, trace)
    f = next(f for f in doc["findings"] if f["kind"] == "stale-keepalive-reuse")
    (said,) = f["facts"]["kernel_contradicts"]
    assert "TCP_ABORT_ON_CLOSE" in said and "abortive-close" in said
    assert "The kernel disagrees" in f["explanation"]


def test_bad_trace_file_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "x.trace.jsonl"
    bad.write_text("not json\n")
    cap = Path(__file__).parents[1] / "src/tcpwhy/data/lab/refused.pcap"
    p = subprocess.run(
        [sys.executable, "-m", "tcpwhy", "analyze", str(cap), "--kernel-trace", str(bad)],
        capture_output=True,
        text=True,
    )
    assert p.returncode == 2
    assert p.stderr.strip().splitlines() == [f"tcpwhy: {bad}: line 1: not JSON"]


# ---------------------------------------------------------------- host watch, explain


@pytest.mark.root
def test_watch_counts_the_kernels_resets_per_reason(netns_ok: None) -> None:
    import socket
    import time

    w = subprocess.Popen(
        [
            *(sys.executable, "-m", "tcpwhy", "host", "watch", "--interval", "1"),
            *("--count", "6", "--format", "json"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert w.stdout is not None
    first = json.loads(w.stdout.readline())  # the trace is running from the first sample on
    assert "kernel_per_s" in first and first["kernel_per_s"] is not None
    refused = 0
    for _ in range(20):
        c = socket.socket()
        try:
            c.connect(("127.0.0.1", 9))
        except ConnectionRefusedError:
            refused += 1
        c.close()
    assert refused == 20
    time.sleep(0.1)
    frames = [first] + [json.loads(line) for line in w.stdout]
    assert w.wait(timeout=30) == 0
    # each frame's rate is its count over the time since the previous frame (about a
    # second, longer on a loaded machine): rate x that time, summed, counts the resets
    seen = sum(
        f["kernel_per_s"].get("reset_sent NO_SOCKET", 0.0) * (f["elapsed_s"] - p["elapsed_s"])
        for p, f in itertools.pairwise(frames)
    )
    assert seen >= 20 * 0.8, frames


@pytest.mark.root
def test_watch_without_root_says_why_the_trace_is_missing(netns_ok: None) -> None:
    drop = (
        "import os, sys; from tcpwhy.cli import main; import tcpwhy.host.cli, "
        "tcpwhy.host.watch, tcpwhy.host.trace; os.setgroups([]); os.setgid(65534); "
        "os.setuid(65534); sys.exit(main(['host', 'watch', '--count', '1', '--format', 'json']))"
    )
    p = subprocess.run([sys.executable, "-c", drop], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    frame = json.loads(p.stdout)
    assert frame["kernel_per_s"] is None
    assert any(
        "no kernel resets/drops by reason" in n and "needs root" in n for n in frame["notes"]
    )


def test_explain_lists_the_kernel_reasons_the_lab_measured() -> None:
    doc = Path(__file__).parents[1] / "docs" / "lab.md"
    table = doc.read_text()
    p = subprocess.run(
        [sys.executable, "-m", "tcpwhy", "explain", "Connection reset by peer", "--format", "json"],
        capture_output=True,
        text=True,
    )
    assert p.returncode == 0, p.stderr
    reasons = [r for m in json.loads(p.stdout)["meanings"] for r in m["kernel_reasons"]]
    sent = {r["reason"] for r in reasons if r["event"] == "reset_sent"}
    assert {"TCP_ABORT_ON_CLOSE", "TCP_ABORT_ON_DATA", "NO_SOCKET"} <= sent
    for r in reasons:  # each one is in the lab's measured table
        if r["event"] in ("reset_sent", "drop"):
            assert f"reason={r['reason']}" in table, r
    text = subprocess.run(
        [sys.executable, "-m", "tcpwhy", "explain", "Connection reset by peer"],
        capture_output=True,
        text=True,
    ).stdout
    assert "reset_sent TCP_ABORT_ON_CLOSE ← abortive-close" in text
