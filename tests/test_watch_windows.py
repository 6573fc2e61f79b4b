"""What `tcpwhy watch` carries from one window of connections to the next: the numbers of
the whole capture, which its findings' texts name (as their `streams` and `timeline` do),
not a window's own; and the failed requests whose retry may come in a later window."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
LAB = REPO / "src" / "tcpwhy" / "data" / "lab"
STREAM = re.compile(r"\bstreams? (\d+)")
TEXT = ("summary", "explanation", "causes", "fixes", "errors")


def _run(*args: str) -> str:
    r = subprocess.run(
        [sys.executable, "-m", "tcpwhy", *args], capture_output=True, text=True, timeout=120
    )
    assert r.returncode in (0, 1), r.stderr
    return r.stdout


def _numbers(f: dict[str, Any]) -> list[int]:
    return [int(x) for k in TEXT if k in f for x in STREAM.findall(json.dumps(f[k]))]


@pytest.mark.parametrize(
    "name", ["middlebox-idle-reset-path", "close-wait-leak", "keepalive-race", "tls-truncation"]
)
def test_watch_text_names_the_streams_analyze_names(name: str) -> None:
    path = str(LAB / f"{name}.pcap")
    watched = [json.loads(x) for x in _run("watch", "-r", path, "--format", "jsonl").splitlines()]
    analyzed = json.loads(_run("analyze", "--format", "json", path))["findings"]
    matched = 0
    for w in watched:
        same = [a for a in analyzed if a["kind"] == w["kind"] and a["streams"] == w["streams"]]
        if not same:
            continue  # a window's part of a finding analyze makes of more connections
        matched += 1
        assert _numbers(w) == _numbers(same[0]), (w["kind"], w["summary"])
        # and the text's connections are the finding's own (or, for a retry, the next one)
        assert {n for n in _numbers(w)} <= set(w["streams"]) | {max(w["streams"]) + 1}
    assert matched


def test_watch_text_numbers_are_not_the_window_s() -> None:
    """middlebox-idle-reset-path: the reset connection is the capture's second; its window
    holds it first, which the text said before."""
    path = str(LAB / "middlebox-idle-reset-path.pcap")
    lines = _run("watch", "-r", path, "--format", "jsonl").splitlines()
    found = [json.loads(x) for x in lines if json.loads(x)["kind"] == "middlebox-reset"]
    assert found and found[0]["streams"][0] == 1
    assert _numbers(found[0]) and set(_numbers(found[0])) <= set(found[0]["streams"])


def test_only_unanswered_requests_wait_for_their_retry() -> None:
    """abortive-close: stream 0's request is reset by the server unanswered (it waits for a
    retry); stream 1's client resets after the server's answer, which request-retried never
    calls a failed request (it waited too, and was matched in every later window)."""
    from tcpwhy.capture import iter_tables
    from tcpwhy.watch.core import Watcher

    w = Watcher(io.StringIO(), "jsonl", summary_every_s=0)
    for t in iter_tables(str(LAB / "abortive-close.pcap")):
        w.chunk(t)
    w.finish()
    assert w.counters.resets == 2
    assert [f.number for f in w.failed] == [0]


def _twice(src: Path, dst: Path) -> str:
    """`src` (a classic little-endian pcap, micro- or nanosecond) and then its packets again 300 s later from
    another client address (10.77.0.1 written as 10.77.0.3): the second copy's connections
    are other connections, diagnosed in a window of their own."""
    import struct

    raw = src.read_bytes()
    assert raw[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1")
    out, off = [raw[:24]], 24
    recs = []
    while off < len(raw):
        head = raw[off : off + 16]
        (incl,) = struct.unpack_from("<I", head, 8)
        recs.append((head, raw[off + 16 : off + 16 + incl]))
        off += 16 + incl
    client = bytes([10, 77, 0, 1])
    assert all(client in d for _, d in recs)
    for shift in (0, 300):
        for head, data in recs:
            sec, frac, incl, orig = struct.unpack("<IIII", head)
            if shift:
                data = data.replace(client, bytes([10, 77, 0, 3]))
            out.append(struct.pack("<IIII", sec + shift, frac, incl, orig) + data)
    dst.write_bytes(b"".join(out))
    return str(dst)


@pytest.mark.parametrize(
    ("name", "kind"),
    [("time-wait", "time-wait-accumulation"), ("time-wait-reuse", "time-wait-reuse")],
)
def test_a_later_window_s_finding_names_its_own_connections(
    tmp_path: Path, name: str, kind: str
) -> None:
    """The second copy's finding names the second copy's connections, by the watch's numbers,
    in its streams, its display filter and its text: the TIME_WAIT pile-up gave its window's
    stream ids as its streams (the first copy's numbers, and a server of "?"), and the reuse
    named the previous connection by its window's id."""
    path = _twice(LAB / f"{name}.pcap", tmp_path / f"{name}-twice.pcap")
    found = [json.loads(x) for x in _run("watch", "-r", path, "--format", "jsonl").splitlines()]
    first, second = [f for f in found if f["kind"] == kind]
    assert "10.77.0.1" in first["summary"] + first["explanation"]
    assert "10.77.0.3" in second["summary"] + second["explanation"]
    assert first["group"]["server"] == second["group"]["server"] == "10.77.0.2:8080"
    named = [set(f["streams"]) | set(_numbers(f)) for f in (first, second)]
    assert named[0] and named[1] and not named[0] & named[1], named
    lo, hi = min(second["streams"]), max(second["streams"])
    assert second["display_filter"] in (
        f"tcp.stream in {{{lo}..{hi}}}",
        "tcp.stream in {" + " ".join(map(str, second["streams"])) + "}",
    )


def test_the_summary_counts_read_as_words(tmp_path: Path) -> None:
    """One group is "1 finding group", not "1 finding groups"; counts are as analyze writes
    them (a group announced again: its running count)."""
    path = _twice(LAB / "time-wait.pcap", tmp_path / "time-wait-twice.pcap")
    r = subprocess.run(
        [sys.executable, "-m", "tcpwhy", "watch", "-r", path],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "time-wait-accumulation  10.77.0.2:8080 again (10 so far)" in r.stdout
    assert (
        "tcpwhy: watch: 100 packets, 10 connections (0 open), 1 finding group (10 instances), "
        "0 resets, 0 retransmissions, 0 refused"
    ) in r.stderr, r.stderr
