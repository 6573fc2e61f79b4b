"""The `conns` writer thread: batches come out in the order given, byte for byte what each
batch formats to, also when the thread falls behind and the caller formats batches itself."""

from __future__ import annotations

import contextlib
import io
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from tcpwhy.capture import read_table
from tcpwhy.report.conns import _BehindWriter, record_lines
from tcpwhy.report.conns_format import format_columns_pieces, row_program
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


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The builder's warning about connections held at once, which these tests provoke."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def _batches() -> list[ConnColumns]:
    whole = ConnColumns.concat(
        [connection_columns(read_table(str(p))) for p in sorted(LAB.glob("*.pcap"))]
    )
    assert len(whole) >= 60
    cuts = np.array_split(np.arange(len(whole)), 20)
    return [whole.take(c) for c in cuts]


def _text(batches: list[ConnColumns], fmt: str) -> bytes:
    return b"".join(bytes(p) for c in batches for p in format_columns_pieces(c, fmt))


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "zeek", "table"])
@pytest.mark.parametrize("rows", [1, 7, 64, 10_000])
def test_pieces_are_the_lines(fmt: str, rows: int) -> None:
    """A batch formatted a piece at a time is its lines, record by record, for any piece size;
    a piece with a value beyond the compiled formatter's range is written by the records'
    own formatter, and the pieces before and after it stay the kernel's."""
    c = ConnColumns.concat(_batches())
    program = row_program(fmt, c.uid_prefix)
    # each piece copied before the next is taken: they share the thread's buffer
    pieces = [(a, b, None if t is None else bytes(t)) for a, b, t in program.format_pieces(c, rows)]
    assert [p[0] for p in pieces] == list(range(0, len(c), rows))
    assert (
        b"".join(bytes(p[2]) for p in pieces if p[2] is not None) == record_lines(c, fmt).encode()
    )
    # a duration of 300 years is beyond the kernel's floats (2**33 seconds)
    far = c.take(np.arange(len(c)))
    far.cols["duration_ns"] = far.cols["duration_ns"].copy()
    far.cols["duration_ns"][len(c) // 2] = 9_000_000_000 * 10**9
    got = [t is None for _, _, t in row_program(fmt, far.uid_prefix).format_pieces(far, rows)]
    assert sum(got) == 1
    assert (
        b"".join(bytes(p) for p in format_columns_pieces(far, fmt))
        == record_lines(far, fmt).encode()
    )


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "zeek"])
@pytest.mark.parametrize("delay", [0.0, 0.02], ids=["keeps-up", "falls-behind"])
def test_batches_in_order(fmt: str, delay: float, monkeypatch: pytest.MonkeyPatch) -> None:
    from tcpwhy.report import conns_format

    batches = _batches()
    want = _text(batches, fmt)
    formatters: set[str] = set()

    def formatting(c: ConnColumns, f: str) -> Iterator[bytes | memoryview]:
        formatters.add(threading.current_thread().name)
        return format_columns_pieces(c, f)

    monkeypatch.setattr(conns_format, "format_columns_pieces", formatting)
    sink = _SlowSink(delay)
    w = _BehindWriter(sink, fmt)
    texts = 0  # the most batches' text the caller formatted that waited to be written
    try:
        for c in batches:
            w.put(c)
            texts = max(texts, sum(not formats for _, formats in w.pending))
        w.drain()
    finally:
        w.close()
    assert sink.getvalue() == want
    # the text is written by the thread alone, in order, whoever formatted it
    assert all(n.startswith("tcpwhy-conns-writer") for n in sink.writers)
    assert any(n.startswith("tcpwhy-conns-writer") for n in formatters)
    if delay:  # a slow destination: the caller formatted some batches itself
        assert threading.current_thread().name in formatters
        # and no more of them wait, as text, than the bound (a flood's are 6 to 10 MB each)
        assert texts == _BehindWriter.TEXT_JOBS


@pytest.mark.parametrize("delay", [0.0, 0.02], ids=["keeps-up", "falls-behind"])
def test_batches_handed_over_unbuilt(delay: float) -> None:
    """Batches handed over still to build (`connection_jobs`) are built where they are
    formatted, by the thread or, when it falls behind, by the caller: the same text."""
    batches = _batches()
    want = _text(batches, "jsonl")
    builders: list[str] = []

    def job(c: ConnColumns) -> Callable[[], ConnColumns]:
        def build() -> ConnColumns:
            builders.append(threading.current_thread().name)
            return c

        return build

    sink = _SlowSink(delay)
    w = _BehindWriter(sink, "jsonl")
    try:
        for c in batches:
            w.put(job(c))
        w.drain()
    finally:
        w.close()
    assert sink.getvalue() == want
    assert len(builders) == len(batches)  # each built once
    assert any(n.startswith("tcpwhy-conns-writer") for n in builders)
    if delay:
        assert threading.current_thread().name in builders


def test_connection_jobs_build_the_batches(
    zeek_corpus: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`connection_jobs` gives the batches `iter_connection_columns` builds, in the same
    order, with the same warnings and ICMP counts, on the lab's and Zeek's captures (small
    chunks and few connections held: many batches, evicted and continued records)."""
    import functools

    from tcpwhy import capture
    from tcpwhy.decode.table import CaptureStats
    from tcpwhy.tcp.connections import iter_connection_columns
    from tcpwhy.tcp.records import COLUMNS
    from tcpwhy.views import connection_jobs

    iter_tables = functools.partial(capture.iter_tables, chunk_bytes=2048)
    monkeypatch.setattr(capture, "iter_tables", iter_tables)
    paths = sorted(LAB.glob("*.pcap")) + sorted(zeek_corpus.glob("*.pcap"))
    most = 0
    for p in paths:
        opts = {"max_active": 3}
        st_a, st_b = CaptureStats(), CaptureStats()
        counts: list[dict[int, dict[str, int]]] = []
        with _quiet():
            got = [j() for j in connection_jobs(str(p), st_a, icmp=counts, **opts)]
            want_counts: dict[int, dict[str, int]] = {}
            tables = iter_tables(str(p), st_b, reuse=True)
            want = list(iter_connection_columns(tables, st_b, icmp_counts=want_counts, **opts))
        assert len(got) == len(want), p
        most = max(most, len(got))
        for a, b in zip(got, want, strict=True):
            assert (a.end_words, a.name_words) == (b.end_words, b.name_words), p
            for k in COLUMNS:
                assert np.array_equal(a.cols[k], b.cols[k]), (p, k)
        assert st_a.warnings == st_b.warnings, p
        assert counts == [want_counts], p
    assert most >= 8


def test_filtered_batches_built_late_keep_what_they_kept_at_once(
    zeek_corpus: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`conns -Y` hands its batches over unbuilt, as without a filter: a batch built after
    the whole capture was read keeps the connections that had matched by the chunk that
    finished it, as when built at once. With few connections held, an evicted connection's
    later packets start a continued record of the same stream, so a match in them must not
    reach back into the record written before (small chunks, many batches)."""
    import functools

    from tcpwhy import capture
    from tcpwhy.decode.table import CaptureStats
    from tcpwhy.filter import compile_filter
    from tcpwhy.tcp.records import COLUMNS
    from tcpwhy.views import connection_jobs

    monkeypatch.setattr(
        capture, "iter_tables", functools.partial(capture.iter_tables, chunk_bytes=2048)
    )
    paths = sorted(LAB.glob("*.pcap")) + sorted(zeek_corpus.glob("*.pcap"))
    differs = 0  # captures where a plain "matched by the end" would have kept more
    for text in ("tcp.flags.fin == 1", "tcp.len > 0", "tcp.flags.reset == 1"):
        flt = compile_filter(text)
        for p in paths:
            opts = {"max_active": 3}
            with _quiet():
                now = [j() for j in connection_jobs(str(p), CaptureStats(), flt, **opts)]
                late = [j() for j in list(connection_jobs(str(p), CaptureStats(), flt, **opts))]
                every = [j() for j in connection_jobs(str(p), CaptureStats(), None, **opts)]
            assert len(now) == len(late), (p, text)
            for a, b in zip(now, late, strict=True):
                for k in COLUMNS:
                    assert np.array_equal(a.cols[k], b.cols[k]), (p, text, k)
            kept = {int(s) for c in now for s in c["stream"]}
            whole = sum(int(s) in kept for c in every for s in c["stream"])
            differs += whole > sum(len(c) for c in now)
    assert differs > 0
