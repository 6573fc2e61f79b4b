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
