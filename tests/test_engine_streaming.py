"""analyze tracks a single file's streams as it reads it and drops the address columns
chunk by chunk (`engine._read_tracked`): the report must be the one the whole-table path
gives, however the file is cut into chunks and whichever way the compaction ends."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest

from tcpwhy.capture import reader
from tcpwhy.diagnose import engine
from tcpwhy.diagnose.context import StreamColumn
from tcpwhy.diagnose.render import to_json

LAB = Path(__file__).resolve().parents[1] / "src" / "tcpwhy" / "data" / "lab"
CAPTURES = [
    "stale-keepalive.pcap",  # pooled HTTP: many packets per stream (compacted)
    "time-wait-reuse.pcap",  # 4-tuples reused: new streams on known conversations
    "icmp-reject.pcap",  # ICMP errors about TCP: plain columns
    "syn-flood.pcap",  # one-packet connections: plain columns
    "clean-tls.pcap",
    "zero-window.pcap",
]


def _whole_table(path: str) -> str:
    """The report of the path that joins the table first and tracks it after (the one
    several files or a display filter take), with the file's own report text."""
    tables = []
    st = engine.CaptureStats()
    parts = [engine._slim(t) for t in engine.iter_tables(path, st)]
    tables.append(engine._join(parts, free=True))
    cap = engine.Capture(tables[0], engine.np.zeros(len(tables[0]), engine.np.int16), [path])
    cap.compact_addresses()
    diag = engine.run_rules(cap)
    return sorted((f.kind, tuple(f.streams)) for f in diag.findings).__repr__()


def _kinds(report: engine.Report) -> str:
    return sorted((f.kind, tuple(f.streams)) for f in report.findings).__repr__()


@pytest.mark.parametrize("name", CAPTURES)
def test_small_chunks_and_fallback_give_the_same_report(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = str(LAB / name)
    whole = to_json(engine.diagnose_files([path]))
    assert _kinds(engine.diagnose_files([path])) == _whole_table(path)

    # many small chunks: streams start in one chunk and go on in later ones
    small = functools.partial(reader.iter_tables, chunk_bytes=256)
    monkeypatch.setattr(engine, "iter_tables", small)
    report = engine.diagnose_files([path])
    assert to_json(report) == whole

    # no size to go by (as for a compressed file): the columns grow chunk after chunk
    monkeypatch.setattr(engine, "_plain_size", lambda path: 0)
    grown = {"n": 0}
    init = engine._Growing.__init__

    def tiny(self: engine._Growing) -> None:
        init(self)
        self.expect = 1

    monkeypatch.setattr(engine._Growing, "__init__", tiny)
    put = engine._Growing.add

    def counted(self: engine._Growing, cols: dict) -> None:  # type: ignore[type-arg]
        before = {k: len(a) for k, a in self.cols.items()}
        put(self, cols)
        grown["n"] += any(len(a) != before.get(k, len(a)) for k, a in self.cols.items())

    monkeypatch.setattr(engine._Growing, "add", counted)
    assert to_json(engine.diagnose_files([path])) == whole
    assert grown["n"] >= 2

    # a chunk that cannot be compacted after some that were: their columns come back
    calls = {"n": 0}
    take = engine._Endpoints.take

    def fail_third(self: engine._Endpoints, t: engine.PacketTable, got: dict) -> bool:  # type: ignore[type-arg]
        calls["n"] += 1
        return False if calls["n"] == 3 else take(self, t, got)

    monkeypatch.setattr(engine._Endpoints, "take", fail_third)
    report = engine.diagnose_files([path])
    assert to_json(report) == whole
    # the ICMP capture leaves compaction at its first chunk with ICMP rows
    assert calls["n"] >= 3 or name.startswith("icmp")


def test_a_connection_rich_file_keeps_addresses_per_stream() -> None:
    report = engine.diagnose_files([str(LAB / "stale-keepalive.pcap")])
    cap = report.diags[0].cap
    for k in ("src_hi", "src_lo", "sport", "dst_hi", "dst_lo", "dport"):
        assert isinstance(cap.table.cols[k], StreamColumn)
    flood = engine.diagnose_files([str(LAB / "syn-flood.pcap")]).diags[0].cap
    assert not isinstance(flood.table.cols["src_hi"], StreamColumn)


def test_growing_columns_are_the_chunks_joined() -> None:
    np = engine.np
    g = engine._Growing()
    g.expect = 3
    chunks = [
        {"a": np.arange(2, dtype=np.uint32), "b": np.ones((2, 3), np.int8)},
        {"a": np.arange(5, dtype=np.uint32) + 10, "b": np.zeros((5, 3), np.int8)},
        # a wider type than the rows before: the column is widened, no value cut
        {"a": np.array([1 << 40], np.uint64), "b": np.full((1, 3), 7, np.int8)},
    ]
    for c in chunks:
        g.add(c)
    g.put("c", np.arange(8, dtype=np.int16))
    out = g.done()
    for k in ("a", "b"):
        want = np.concatenate([c[k] for c in chunks])
        assert out[k].dtype == want.dtype
        assert np.array_equal(out[k], want)
    assert np.array_equal(out["c"], np.arange(8))


def test_zero_columns_are_held_unwritten_until_a_row_is_not() -> None:
    """All-zero columns are not written while they stay so; `done` gives them as writable
    zeros, in the order the columns came, equal to the chunks joined, whatever chunk
    first has a non-zero row (the first, a later one, one of a wider type, or none)."""
    np = engine.np
    g = engine._Growing()
    g.expect = 2
    chunks = [
        {"z": np.zeros(3, np.uint64), "late": np.zeros(3, np.uint32), "v": np.arange(3)},
        {"z": np.zeros(2, np.uint64), "late": np.zeros(2, np.uint32), "v": np.arange(2)},
        {"z": np.zeros(0, np.uint64), "late": np.zeros(0, np.uint32), "v": np.arange(0)},
        {"z": np.zeros(4, np.uint64), "late": np.array([0, 5, 0, 1], np.uint64), "v": np.arange(4)},
        {"z": np.zeros(1, np.uint64), "late": np.zeros(1, np.uint32), "v": np.arange(1)},
    ]
    for i, c in enumerate(chunks):
        g.add(c)
        if i == 1:
            assert set(g.zero) == {"z", "late"} and set(g.cols) == {"v"}
    g.put("p", np.zeros(10, np.int8))
    g.put("q", np.array([0, 0, 3] + [0] * 7, np.int16))
    out = g.done()
    assert list(out) == ["z", "late", "v", "p", "q"]
    for k in ("z", "late", "v"):
        want = np.concatenate([c[k] for c in chunks])
        assert out[k].dtype == want.dtype and np.array_equal(out[k], want), k
    assert out["z"].flags.writeable and out["z"].flags.c_contiguous
    assert out["p"].dtype == np.int8 and not out["p"].any() and len(out["p"]) == 10
    assert out["q"].tolist() == [0, 0, 3] + [0] * 7
    assert "z" in g.zero and "late" not in g.zero


def test_a_flood_gives_up_per_stream_addresses_early(monkeypatch: pytest.MonkeyPatch) -> None:
    """After JUDGE_ROWS rows, a file of streams too short for per-stream addresses to pay
    (`compact_pays`: a flood's) keeps plain address columns from there on; the report is the same, and
    the stream tracker's slot arrays got room for the whole file at once."""
    path = str(LAB / "syn-flood.pcap")
    small = functools.partial(reader.iter_tables, chunk_bytes=4096)
    monkeypatch.setattr(engine, "iter_tables", small)
    monkeypatch.setattr(engine, "JUDGE_ROWS", 1 << 40)
    late = to_json(engine.diagnose_files([path]))
    restored = {"n": 0}
    restore = engine._Endpoints.restore

    def counted(self: engine._Endpoints, rows: engine._Growing, tracked: engine._Growing) -> None:
        restored["n"] += 1
        restore(self, rows, tracked)

    monkeypatch.setattr(engine._Endpoints, "restore", counted)
    monkeypatch.setattr(engine, "JUDGE_ROWS", 64)
    rooms: list[int] = []
    from tcpwhy.tcp import streams

    feed = streams.StreamTracker.feed

    def watched(self: streams.StreamTracker, t: engine.PacketTable) -> dict:  # type: ignore[type-arg]
        out = feed(self, t)
        rooms.append(len(self.st_stream))
        return out

    monkeypatch.setattr(streams.StreamTracker, "feed", watched)
    assert to_json(engine.diagnose_files([path])) == late
    assert restored["n"] == 1
    # room for the file's rows (estimated from its size) once the first chunk was read
    assert len(set(rooms[1:])) == 1 and rooms[-1] >= rows_of(path)


def rows_of(path: str) -> int:
    return sum(len(t) for t in reader.iter_tables(path))


def _tracked(name: str) -> tuple[engine.PacketTable, dict]:  # type: ignore[type-arg]
    """A lab capture's rows as the engine keeps them and the stream tracker's columns."""
    from tcpwhy.diagnose.context import narrow_streams
    from tcpwhy.tcp.streams import StreamTracker

    parts = [engine._slim(t) for t in reader.iter_tables(str(LAB / name))]
    table = engine._join(parts, free=True)
    return table, narrow_streams(StreamTracker().feed(table))


def test_endpoint_check_finds_the_rows_that_differ() -> None:
    """`kernels.endpoints_agree` (the compiled check of `_Endpoints.take`) against numpy's
    formulation of it: each row's endpoints are its stream's, swapped the other way."""
    import numpy as np

    from tcpwhy.decode.table import ENDPOINT_COLUMNS
    from tcpwhy.diagnose import kernels
    from tcpwhy.diagnose.context import PEER

    t, got = _tracked("time-wait-reuse.pcap")
    sid, pdir = got["stream"], got["dir"]
    n = int(sid.max()) + 1
    first = np.full(n, -1, np.int64)
    first[sid[::-1]] = np.arange(len(sid))[::-1]
    fwd = pdir[first] == 0
    held = {k: np.where(fwd, t[k][first], t[PEER[k]][first]) for k in ENDPOINT_COLUMNS}

    def numpy_agrees(rows: dict) -> bool:  # type: ignore[type-arg]
        back = pdir != 0
        return all(
            np.array_equal(np.where(back, held[PEER[k]][sid], held[k][sid]), rows[k])
            for k in ENDPOINT_COLUMNS
        )

    def agrees(rows: dict, nstreams: int = n) -> bool:  # type: ignore[type-arg]
        return bool(
            kernels.endpoints_agree(
                sid,
                pdir,
                nstreams,
                tuple(rows[k] for k in ENDPOINT_COLUMNS),
                tuple(held[k] for k in ENDPOINT_COLUMNS),
            )
        )

    rows = {k: t[k].copy() for k in ENDPOINT_COLUMNS}
    assert (pdir != 0).any() and (pdir == 0).any()
    assert agrees(rows) and numpy_agrees(rows)
    assert not agrees(rows, n - 1)  # a row of a stream not yet recorded
    last_back = int(np.flatnonzero(pdir != 0)[-1])
    for k in ENDPOINT_COLUMNS:
        for row in (0, last_back):
            changed = {c: v.copy() for c, v in rows.items()}
            changed[k][row] += 1
            assert not agrees(changed) and not numpy_agrees(changed), (k, row)


def test_stream_bases_are_numpys_assignments() -> None:
    """`kernels.stream_bases` (`StreamConstants.take`) writes what numpy's masked
    assignments of the ACKs' bases and then the rows' own wrote, block by block, on a
    capture of reused ports (a stream's bases and conversation slot)."""
    import numpy as np

    from tcpwhy.decode.table import ACK
    from tcpwhy.diagnose.context import StreamConstants

    t, got = _tracked("time-wait-reuse.pcap")
    stream, pdir = got["stream"], got["dir"]
    n = int(stream.max()) + 1
    for block in (1, 7, 1 << 16):
        base = np.zeros((n, 2), np.uint32)
        conv = np.zeros(n, np.int32)
        for lo in range(0, len(stream), block):
            sl = slice(lo, lo + block)
            s, d = stream[sl], pdir[sl]
            has_ack = (t["flags"][sl] & ACK) != 0
            base[s[has_ack], 1 - d[has_ack]] = (t["ack"][sl] - got["rel_ack"][sl])[has_ack]
            base[s, d] = t["seq"][sl] - got["rel_seq"][sl]
            conv[s] = got["conv"][sl]
        sc = StreamConstants()
        sc._grow(n)
        engine.kernels.stream_bases(
            stream, pdir, t["flags"], t["seq"], t["ack"], got["rel_seq"], got["rel_ack"],
            got["conv"], block, sc.base, sc.conv,
        )  # fmt: skip
        assert np.array_equal(sc.base[:n], base) and np.array_equal(sc.conv[:n], conv)
        assert base.any() and len(set(conv.tolist())) > 1
