"""A long connection's `Conn` slices its numpy columns out of the capture's stream-ordered
copies (`Capture.in_order`) where a short one gathers its rows: both ways must give the same
values, and the diagnosis must not depend on which connections are long. Forced both ways
on the lab's recordings, the Zeek corpus's traces and the tests' captures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import tcpwhy
from tcpwhy.capture import read_table
from tcpwhy.diagnose import context
from tcpwhy.diagnose.context import Capture

ROOT = Path(__file__).resolve().parents[1]
LAB = sorted((ROOT / "src" / "tcpwhy" / "data" / "lab").glob("*.pcap"))
TESTS = sorted((ROOT / "tests" / "data").rglob("*.pcap"))


def _conn_columns(cap: Capture) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    out = []
    for sid in range(cap.nstreams):
        c = Capture.conn(cap, sid)
        out.append((c._np_flags, c._np_side, c._np_plen))
    return out


def test_sliced_columns_are_the_gathered_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    assert LAB
    rows = 0
    for p in LAB:
        t = read_table(str(p))
        monkeypatch.setattr(context, "IN_ORDER_FROM", 0)  # every connection sliced
        cap = Capture(t, np.zeros(len(t), np.int16), [p.name])
        sliced = _conn_columns(cap)
        for sid, (flags, side, plen) in enumerate(sliced):
            r = cap.order[cap.starts[sid] : cap.ends[sid]]
            assert flags.dtype == np.int64 and plen.dtype == np.int64, p.name
            assert np.array_equal(flags, t["flags"][r].astype(np.int64)), (p.name, sid)
            assert np.array_equal(side, cap.side[r]), (p.name, sid)
            assert np.array_equal(plen, t["payload_len"][r].astype(np.int64)), (p.name, sid)
            rows += len(r)
        monkeypatch.setattr(context, "IN_ORDER_FROM", 1 << 62)  # none
        cap2 = Capture(t, np.zeros(len(t), np.int16), [p.name])
        for a, b in zip(sliced, _conn_columns(cap2), strict=True):
            assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True)), p.name
    assert rows > 1000


def _reports(paths: list[Path], monkeypatch: pytest.MonkeyPatch, at: int) -> list[str]:
    monkeypatch.setattr(context, "IN_ORDER_FROM", at)
    return [tcpwhy.open(str(p)).report.to_json() for p in paths]


def test_diagnosis_alike_sliced_or_gathered(monkeypatch: pytest.MonkeyPatch) -> None:
    paths = LAB + TESTS
    sliced = _reports(paths, monkeypatch, 0)
    gathered = _reports(paths, monkeypatch, 1 << 62)
    for p, a, b in zip(paths, sliced, gathered, strict=True):
        assert a == b, p.name
    assert sum('"kind"' in a for a in sliced) > 20  # findings were made


def test_diagnosis_alike_on_zeek_traces(zeek_corpus: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    paths = sorted(zeek_corpus.glob("*.pcap*"))[::3]
    assert paths
    for p, a, b in zip(
        paths,
        _reports(paths, monkeypatch, 0),
        _reports(paths, monkeypatch, 1 << 62),
        strict=True,
    ):
        assert a == b, p.name
