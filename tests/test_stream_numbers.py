"""A finding's stream numbers held as one array (`model.StreamNumbers`) read as the list they
replace, and the flood rule's earliest streams are a stable sort's first ones."""

from __future__ import annotations

import dataclasses
import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from tcpwhy.diagnose import render
from tcpwhy.diagnose.engine import diagnose_files
from tcpwhy.diagnose.model import StreamNumbers
from tcpwhy.diagnose.syn_flood import _by_time
from tests.test_syn_flood import flood_capture


def test_reads_as_the_list() -> None:
    values = [0, 3, 4, 9, 200_000, 3_000_000]
    s = StreamNumbers(np.array(values))
    assert s == values and values == s and s != values[:-1] and s != [*values[:-1], 7]
    assert s != tuple(values)  # as a list is not equal to a tuple
    assert list(s) == values and s.tolist() == values
    assert all(type(x) is int for x in s)
    assert s[0] == 0 and s[-1] == 3_000_000 and type(s[1]) is int
    assert s[:3] == [0, 3, 4] and s[1:2] == [3] and s[10:] == []
    assert 9 in s and 5 not in s and 3_000_001 not in s and "9" not in s
    assert len(s) == 6 and repr(s) == repr(values)
    assert pickle.loads(pickle.dumps(s)) == s
    assert np.asarray(s).tolist() == values
    assert set(s) == set(values) and sorted(s) == values
    empty = StreamNumbers(np.zeros(0, np.int64))
    assert empty == [] and not len(empty) and list(empty) == []
    # iteration crosses its blocks of numbers
    big = np.arange(0, 3 * (1 << 16) + 5, 2)
    assert list(StreamNumbers(big)) == big.tolist()


@pytest.fixture(scope="module")
def flood(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("flood") / "flood.pcap"
    flood_capture(path)
    return path


def test_a_flood_finding_writes_as_with_a_list(flood: Path) -> None:
    report = diagnose_files([str(flood)])
    held = [f for f in report.findings if isinstance(f.streams, StreamNumbers)]
    assert held and max(len(f.streams) for f in held) > render.LONG_LIST
    for f in held:
        listed = dataclasses.replace(f, streams=list(f.streams))
        assert f.to_json() == listed.to_json()
        assert f.display_filter == listed.display_filter
        assert f == listed
    text = render.to_json(report)
    for f in held:
        f.streams = list(f.streams)
    assert render.to_json(report) == text
    assert json.loads(text)["findings"][0]["streams"] == report.findings[0].streams


def test_earliest_is_a_stable_sorts_first() -> None:
    """The examples of a flood or a scan: the first n of a stable argsort of the streams'
    start times (many equal, ascending, descending), and the span of them all."""
    rng = np.random.default_rng(3)
    for size in (0, 1, 5, 20, 21, 1000):
        first = rng.integers(0, 40, 2 * size + 1).astype(np.int64)  # many equal times
        last = first + rng.integers(0, 100, len(first))
        for sids in (
            np.sort(rng.choice(len(first), size, replace=False)),
            rng.permutation(len(first))[:size],
        ):
            for ts in (first, np.sort(first), np.sort(first)[::-1].copy()):
                for n in (1, 5, 20):
                    want = np.argsort(ts[sids], kind="stable")[:n]
                    got = _by_time(ts, last, sids, n)
                    assert got.first.tolist() == want.tolist()
                    if size:
                        assert got.first_ns == int(ts[sids].min())
                        assert got.last_ns == int(last[sids].max())
