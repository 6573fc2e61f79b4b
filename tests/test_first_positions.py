"""`first_positions` lists the positions where a mask holds a block of rows at a time; what it
finds must be what one search over the whole mask finds (the readable version below), for
streams of every length, masks dense and sparse, with and without `after`, on real captures
and on blocks made small enough that streams straddle them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from tcpwhy.capture import read_table
from tcpwhy.decode.table import RST, SYN
from tcpwhy.diagnose import common
from tcpwhy.diagnose.common import first_positions
from tcpwhy.diagnose.context import CLIENT, SERVER, Capture

LAB = Path(__file__).resolve().parents[1] / "src" / "tcpwhy" / "data" / "lab"


def _oracle(
    cap: Capture,
    sids: npt.NDArray[np.int64],
    at: npt.NDArray[np.bool_],
    after: npt.NDArray[np.int64] | None = None,
) -> npt.NDArray[np.int64]:
    pos = np.flatnonzero(at)
    if not len(pos):
        return np.full(len(sids), -1, np.int64)
    if after is None:
        j = np.searchsorted(pos, cap.starts[sids])
    else:
        j = np.searchsorted(pos, after, side="right")
    got = pos[np.minimum(j, len(pos) - 1)]
    return np.where((j < len(pos)) & (got < cap.ends[sids]), got, -1)


def _masks(cap: Capture, rng: np.random.Generator) -> list[npt.NDArray[np.bool_]]:
    flags = cap.table["flags"][cap.order]
    side = cap.side[cap.order]
    n = len(cap.order)
    return [
        side == SERVER,  # dense
        (side == CLIENT) & ((flags & SYN) != 0),
        (flags & RST) != 0,  # sparse, often absent
        rng.random(n) < 0.01,
        np.zeros(n, np.bool_),
        np.ones(n, np.bool_),
    ]


@pytest.mark.parametrize("scan_rows", [4, 64, 1 << 20])
def test_blocks_find_what_one_search_finds(monkeypatch: pytest.MonkeyPatch, scan_rows: int) -> None:
    monkeypatch.setattr(common, "SCAN_ROWS", scan_rows)
    rng = np.random.default_rng(7)
    checked = 0
    for path in sorted(LAB.glob("*.pcap")):
        table = read_table(str(path))
        if not len(table):
            continue
        cap = Capture(table, np.zeros(len(table), np.int16), [path.name])
        every = np.arange(cap.nstreams, dtype=np.int64)
        some = rng.permutation(every)[: max(1, cap.nstreams // 2)]
        for sids in (every, some, every[::-1].copy()):
            for at in _masks(cap, rng):
                want = _oracle(cap, sids, at)
                assert np.array_equal(first_positions(cap, sids, at), want), path.name
                # "the first one after it": after a found position, after the stream's
                # start, and after -1 (the search then starts at the capture's start)
                for after in (
                    np.where(want >= 0, want, cap.starts[sids]),
                    cap.starts[sids],
                    np.full(len(sids), -1, np.int64),
                ):
                    assert np.array_equal(
                        first_positions(cap, sids, at, after=after), _oracle(cap, sids, at, after)
                    ), path.name
                checked += int((want >= 0).sum())
    assert checked > 1000
