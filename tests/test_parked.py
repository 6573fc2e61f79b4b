"""A connection whose first packet is a pure SYN is parked once many are open: it keeps its
slot number, its state stays its packet (`tcpwhy.tcp.zeek.P`), and whatever needs its state
replays that packet. Its record must be the one a slot would have held."""

from __future__ import annotations

import warnings
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tcpwhy.capture import iter_tables
from tcpwhy.decode.table import ACK, RST, SYN
from tcpwhy.tcp import zeek as z
from tcpwhy.tcp.connections import ConnectionBuilder, iter_connection_columns
from tests.test_syn_flood import SERVER, T0, Pkts

CLIENT = (10 << 24) + 7
NEVER_PARK = 10**9


def _flood(path: Path, n: int = 3000) -> Path:
    """SYNs 1 ms apart from as many ports; some answered, some reset, some sent again, some
    followed by data much later (a second packet long after the first)."""
    p = Pkts()
    ports = 1024 + np.arange(n)
    p.add(T0 + np.arange(n) * 1_000_000, CLIENT, SERVER, ports, 80, SYN)
    k = np.arange(0, n, 7)
    p.add(T0 + k * 1_000_000 + 500_000, SERVER, CLIENT, 80, ports[k], SYN | ACK, seq=5000, ack=1001)
    k = np.arange(0, n, 11)
    p.add(T0 + k * 1_000_000 + 700_000, CLIENT, SERVER, ports[k], 80, RST, seq=1001)
    k = np.arange(3, n, 13)
    p.add(T0 + k * 1_000_000 + 3 * 10**9, CLIENT, SERVER, ports[k], 80, SYN)
    k = np.arange(5, n, 17)
    p.add(T0 + 4 * 10**9 + k * 1_000_000, CLIENT, SERVER, ports[k], 80, ACK, seq=1001, ack=1)
    p.write(path)
    return path


def _records(path: Path, **options: Any) -> list[str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the cap's own warning
        cols = iter_connection_columns(
            iter_tables(str(path), chunk_bytes=4096, reuse=True), **options
        )
        return [repr(r) for c in cols for r in c]


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"max_active": 3},
        {"max_active": 500, "idle_timeout_s": 1.0},
        {"check_checksums": True, "max_active": 5},
        {"boundaries": "zeek", "max_active": 4},
    ],
)
def test_parked_connections_have_a_slots_records(
    zeek_corpus: Path, tmp_path: Path, options: dict[str, Any]
) -> None:
    """Every connection parked (from the first) against none, on the shipped and Zeek
    captures and a flood: with evictions, idle sweeps, checksums and Zeek's timers."""
    lab = Path(str(resources.files("tcpwhy") / "data" / "lab"))
    caps = [_flood(tmp_path / "flood.pcap"), *sorted(lab.glob("*.pcap"))]
    caps += sorted(zeek_corpus.glob("*.pcap"))
    total = 0
    for cap in caps:
        want = _records(cap, park_from=NEVER_PARK, **options)
        assert _records(cap, park_from=0, **options) == want, cap
        total += len(want)
    assert total > 3000


def test_a_parked_flood_leaves_the_pool_unwritten(tmp_path: Path) -> None:
    """Parked connections hold their slot numbers but write nothing of their slots' rows,
    so the pool's memory is never touched; the capture's end replays each into a record."""
    p = Pkts()
    n = 3000
    p.add(T0 + np.arange(n) * 1_000_000, CLIENT, SERVER, 1024 + np.arange(n), 80, SYN)
    p.write(tmp_path / "syns.pcap")
    b = ConnectionBuilder(park_from=0)
    for t in iter_tables(str(tmp_path / "syns.pcap"), chunk_bytes=4096, reuse=True):
        assert b.feed_jobs(t) == []
    assert b.active == n
    assert int(b.parked[: b._cap].sum()) == n
    assert not b.S[: b._cap].any() and not b.W[: b._cap].any() and not b.H[: b._cap].any()
    # their packets are in P only, not kept a second time for the RFC state machine
    assert not b._kept
    got = b.finish_columns().records()
    assert [r.history for r in got] == ["S"] * n
    # handed to it as the records were written
    assert {(r.orig_state, r.resp_state) for r in got} == {("SYN_SENT", "SYN_RECEIVED")}
    assert [r.stream for r in got] == list(range(n))
    assert {r.end for r in got} == {"no answer to SYN"}
    assert int(b.parked[: b._cap].sum()) == 0 and b.active == 0
    # and the same records as slots
    assert _records(tmp_path / "syns.pcap", park_from=0) == _records(
        tmp_path / "syns.pcap", park_from=NEVER_PARK
    )
    assert z.NPARK * 8 < (z.NFIELDS * 8 + z.NFIELDS32 * 4 + z.HIST_MAX) / 6
