"""At the cap of connections held, `conns` evicts the connections idle longest first, and
among equally idle ones the lower slot first: the victims listed are always the start of a
stable sort of every active connection by the time it was last seen, ties included."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tcpwhy.capture import iter_tables
from tcpwhy.decode.table import SYN
from tcpwhy.tcp import zeek as z
from tcpwhy.tcp.connections import VICTIMS_SHARE, ConnectionBuilder, iter_connection_columns
from tests.test_syn_flood import SERVER, T0, Pkts


@pytest.mark.parametrize("park_from", [None, 0])
def test_victims_are_a_stable_sorts_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, park_from: int | None
) -> None:
    # 6,000 SYNs from as many ports, in groups of 50 sent in the same microsecond: every cut
    # of the idlest falls among equal times
    n = 6000
    p = Pkts()
    p.add(T0 + (np.arange(n) // 50) * 1000, (10 << 24) + 7, SERVER, 1024 + np.arange(n), 80, SYN)
    path = tmp_path / "ties.pcap"
    p.write(path)

    listings: list[int] = []
    real = ConnectionBuilder._list_victims

    def checked(self: ConnectionBuilder) -> None:
        slots = np.flatnonzero(self.W[: self._cap, z.F_ACTIVE] | self.parked[: self._cap])
        seen = self._field(slots, z.F_SEEN_TS)
        want = slots[np.argsort(seen, kind="stable")]
        real(self)
        got = self._victims[:, 0]
        assert len(got) >= min(len(slots), max(64, self.max_active // VICTIMS_SHARE))
        assert np.array_equal(got, want[: len(got)])
        listings.append(len(got))

    monkeypatch.setattr(ConnectionBuilder, "_list_victims", checked)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the cap's own warning
        got: Any = list(
            iter_connection_columns(iter_tables(str(path)), max_active=256, park_from=park_from)
        )
    assert len(listings) >= 10
    assert sum(len(c) for c in got) == n


@pytest.mark.parametrize(
    "options", [{}, {"max_active": 3}, {"boundaries": "zeek"}, {"max_active": 3, "park_from": 0}]
)
def test_slots_in_use_are_those_off_the_free_list(
    zeek_corpus: Path, tmp_path: Path, options: dict[str, Any]
) -> None:
    """The builder finds its connections (sweeps, victims, the capture's end) as the slots not
    on its free list: after every chunk of the shipped and Zeek captures (with evictions, and
    with Zeek's timers), exactly the slots whose F_ACTIVE the compiled loops set, or that
    they parked."""
    from importlib import resources

    lab = Path(str(resources.files("tcpwhy") / "data" / "lab"))
    p = Pkts()
    p.add(T0 + np.arange(3000) * 1000, (10 << 24) + 7, SERVER, 1024 + np.arange(3000), 80, SYN)
    flood = tmp_path / "flood.pcap"
    p.write(flood)
    checked = 0
    for cap in [flood, *sorted(lab.glob("*.pcap")), *sorted(zeek_corpus.glob("*.pcap"))]:
        b = ConnectionBuilder(**options)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # the cap's own warning
            for t in iter_tables(str(cap), chunk_bytes=4096, reuse=True):
                b.feed_jobs(t)
                want = np.flatnonzero(b.W[: b._cap, z.F_ACTIVE] | b.parked[: b._cap])
                assert np.array_equal(b._active_slots(), want), cap
                checked += len(want) > 0
    assert checked >= 100
