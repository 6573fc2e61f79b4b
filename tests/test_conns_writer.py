"""The `conns` writer thread: batches come out in the order given, byte for byte what each
batch formats to, also when the thread falls behind and the caller formats batches itself."""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tcpwhy.capture import read_table
from tcpwhy.report.conns import _BehindWriter
from tcpwhy.report.conns_format import format_columns_bytes
from tcpwhy.tcp.connections import connection_columns
from tcpwhy.tcp.records import ConnColumns

LAB = Path(__file__).resolve().parents[1] / "src" / "tcpwhy" / "data" / "lab"


class _SlowSink(io.BytesIO):
    """A destination that takes its time, and records which threads wrote to it."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay
        self.writers: set[str] = set()

    def write(self, b: object) -> int:
        self.writers.add(threading.current_thread().name)
        time.sleep(self.delay)
        return super().write(b)  # type: ignore[arg-type]


def _batches() -> list[ConnColumns]:
    whole = ConnColumns.concat(
        [connection_columns(read_table(str(p))) for p in sorted(LAB.glob("*.pcap"))]
    )
    assert len(whole) >= 60
    cuts = np.array_split(np.arange(len(whole)), 20)
    return [whole.take(c) for c in cuts]


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "zeek"])
@pytest.mark.parametrize("delay", [0.0, 0.02], ids=["keeps-up", "falls-behind"])
def test_batches_in_order(fmt: str, delay: float, monkeypatch: pytest.MonkeyPatch) -> None:
    from tcpwhy.report import conns_format

    batches = _batches()
    want = b"".join(bytes(format_columns_bytes(c, fmt)) for c in batches)
    formatters: set[str] = set()

    def formatting(c: ConnColumns, f: str) -> bytes | memoryview:
        formatters.add(threading.current_thread().name)
        return format_columns_bytes(c, f)

    monkeypatch.setattr(conns_format, "format_columns_bytes", formatting)
    sink = _SlowSink(delay)
    w = _BehindWriter(sink, fmt)
    try:
        for c in batches:
            w.put(c)
        w.drain()
    finally:
        w.close()
    assert sink.getvalue() == want
    # the text is written by the thread alone, in order, whoever formatted it
    assert all(n.startswith("tcpwhy-conns-writer") for n in sink.writers)
    assert any(n.startswith("tcpwhy-conns-writer") for n in formatters)
    if delay:  # a slow destination: the caller formatted some batches itself
        assert threading.current_thread().name in formatters
