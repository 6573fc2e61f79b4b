"""A connection's states worked out with the next ones a rule goes through, in one compiled
call (`Capture.timeline_of`), are the state machine's run over that connection alone: on
the shipped and Zeek captures, every stream, with batches cut small so that many are made."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tcpwhy.capture import read_table
from tcpwhy.diagnose import context
from tcpwhy.diagnose.context import Capture, Conn
from tcpwhy.tcp.state import with_icmp_rows
from tcpwhy.tcp.state_kernel import run_connections

DATA = Path(__file__).resolve().parents[1] / "src" / "tcpwhy" / "data"


def _alone(c: Conn) -> tuple[list[int], ...]:
    """The connection's run by itself, its packets' places in it as their frames, the ICMP
    errors about it among them (unnamed: `Capture.run_states`)."""
    t, r = c.cap.table, c.rows
    cols: tuple[Any, ...] = (
        c.cap.side[r], t["flags"][r], t["seq"][r], t["ack"][r], t["payload_len"][r],
        t["ts_ns"][r], np.arange(1, c.n + 1),
    )  # fmt: skip
    off = np.array([0, c.n])
    errors = c.cap._icmp_errors(r, off)
    if errors is not None:
        cols, off = with_icmp_rows(off, r, cols, errors)
    tl = run_connections(*cols, off, end_ns=c.cap.end_ns)
    cols = (tl.side, tl.state, tl.ts_ns, tl.frame, tl.event, tl.final[0])
    return tuple(x.tolist() for x in cols)


def test_states_in_batches_are_each_connections_own(
    zeek_corpus: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(context, "STATES_BATCH_ROWS", 64)
    batches: list[int] = []
    run = context.run_connections

    def counted(*args: Any, **kw: Any) -> Any:
        batches.append(len(args[-1]) - 1)  # connections in the call
        return run(*args, **kw)

    monkeypatch.setattr(context, "run_connections", counted)
    captures = [*sorted((DATA / "lab").glob("*.pcap")), *sorted(zeek_corpus.glob("*.pcap*"))]
    for p in captures:
        table = read_table(str(p))
        if not len(table):
            continue
        cap = Capture(table, np.zeros(len(table), np.int16), [p.name])
        for c in cap.conns_where(np.ones(cap.nstreams, bool)):
            tl = cap.timeline_of(c.sid)  # the first of a batch made, or made with one before
            assert (*tl[:5], list(tl.final)) == _alone(c), (p, c.sid)
    assert len(batches) >= 50 and max(batches) >= 10 and len(batches) < sum(batches) / 2
