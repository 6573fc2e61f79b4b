"""The columnar writers of `tcpwhy conns` write what the per-record formatting writes, byte for
byte: on every shipped and corpus capture, in every format, and on values chosen to hit the
edges of float rounding, address compression, unsigned counters and escaping."""

from __future__ import annotations

import io
import json
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from tcpwhy.capture import read_table
from tcpwhy.report.conns import TEXT_FORMATS as FORMATS
from tcpwhy.report.conns import record_lines, write_conns
from tcpwhy.report.conns_format import format_columns, row_program
from tcpwhy.tcp.connections import build_connections, connection_columns
from tcpwhy.tcp.records import (
    COLUMNS,
    IRTT_UNSET,
    JSON_FIELDS,
    ConnColumns,
    ConnRecord,
    RecordOptions,
    base62,
    parse_local_nets,
)

DATA = Path(str(resources.files("tcpwhy") / "data"))
SHIPPED = [*sorted((DATA / "lab").glob("*.pcap")), DATA / "demo-stale-keepalive.pcap"]


def _captures(zeek_corpus: Path) -> list[Path]:
    return SHIPPED + sorted(zeek_corpus.glob("*.pcap*"))


def _same(c: ConnColumns, fmt: str, *, compiled: bool = True) -> None:
    want = record_lines(c.records(), fmt)
    got = format_columns(c, fmt)
    # the compiled formatter wrote it (it did not hand the batch to the per-record fallback)
    local = c.options.local_nets is not None
    assert (row_program(fmt, c.uid_prefix, local).format(c) is not None) == compiled
    if got != want:  # the first differing line, not two walls of text
        for g, w in zip(got.splitlines(), want.splitlines(), strict=False):
            assert g == w, fmt
    assert got == want, fmt


LOCAL = RecordOptions(uid_seed=3, community_id_seed=512, local_nets=parse_local_nets("private"))
"""Options that set every derived field (local_orig and local_resp too)."""


@pytest.mark.parametrize("boundaries", ["stream", "zeek"])
def test_every_capture_every_format(zeek_corpus: Path, boundaries: str) -> None:
    n = 0
    for p in _captures(zeek_corpus):
        c = connection_columns(read_table(str(p)), boundaries=boundaries)
        for fmt in FORMATS:
            _same(c, fmt)
            _same(c.with_options(LOCAL), fmt)
        n += len(c)
    assert n > 100


def test_records_from_columns_are_the_built_records() -> None:
    t = read_table(str(SHIPPED[0]))
    c = connection_columns(t)
    recs = build_connections(t)
    assert [c.record(i) for i in range(len(c))] == recs == list(c)
    assert all(isinstance(r, ConnRecord) for r in recs)
    assert set(COLUMNS) == set(c.cols)
    # every jsonl field is a column, or the text of one (addresses, seconds), or derived from
    # columns when written (Community ID, local_orig/local_resp)
    derived = {"orig_h", "resp_h", "start", "duration", "irtt"}
    derived |= {"community_id", "local_orig", "local_resp"}
    assert set(JSON_FIELDS) - set(COLUMNS) == derived


def test_write_conns_matches_records_per_format() -> None:
    p = DATA / "demo-stale-keepalive.pcap"
    for fmt in FORMATS:
        buf = io.StringIO()
        write_conns(str(p), fmt, out=buf)
        opts = {"boundaries": "zeek"} if fmt == "zeek" else {}
        recs = build_connections(read_table(str(p)), **opts)  # type: ignore[arg-type]
        assert record_lines(recs, fmt) in buf.getvalue(), fmt


def _fuzz_base(n: int) -> ConnColumns:
    c = ConnColumns.concat([connection_columns(read_table(str(p))) for p in SHIPPED])
    return c.take(np.arange(n) % len(c))


def test_floats_round_as_python_does() -> None:
    """Near-ties of the 6th (and, in the table, 3rd) decimal, tiny and negative values,
    scientific notation below 1e-4, and timestamps up to 2**33 s."""
    rng = np.random.default_rng(7)
    n = 20_000
    c = _fuzz_base(n)
    big = rng.integers(0, 2**33 * 10**9 // 1000, n) * 1000
    tie = rng.integers(380, 620, n)
    c.cols["start_ns"] = np.where(
        rng.random(n) < 0.5, big + tie, rng.integers(0, 2**63 // 2**30, n)
    )
    small = rng.integers(-3_000_000, 3_000_000, n)
    c.cols["duration_ns"] = np.where(
        rng.random(n) < 0.5,
        small,
        (rng.integers(0, 10**6, n) * 1000) + rng.choice([499, 500, 501], n),
    )
    c.cols["irtt_ns"] = np.where(rng.random(n) < 0.2, IRTT_UNSET, rng.integers(0, 200_000, n))
    for fmt in FORMATS:
        _same(c, fmt)


def test_uids_in_base62_as_zeek_writes_them(monkeypatch: pytest.MonkeyPatch) -> None:
    """Both words of a uid at the edges of base 62 (0, 61, 62, 2**32 - 1, 2**64 - 1) and
    random ones: the kernel writes what `base62` writes, Zeek's digits least significant
    first without padding."""
    assert [base62(v) for v in (0, 9, 10, 35, 36, 61, 62, 3843)] == [
        "0", "9", "a", "z", "A", "Z", "01", "ZZ",
    ]  # fmt: skip
    digits = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
    for v in (2**32 - 1, 2**64 - 1, 62**10, 62**11 - 1):
        assert sum(digits.index(ch) * 62**i for i, ch in enumerate(base62(v))) == v
    assert (len(base62(2**32 - 1)), len(base62(2**64 - 1))) == (6, 11)  # 17 at most
    n = 2_000
    c = _fuzz_base(n)
    rng = np.random.default_rng(3)
    edges = np.array([0, 61, 62, 2**32 - 1, 2**64 - 1], np.uint64)
    a = np.where(rng.random(n) < 0.3, rng.choice(edges[:4], n), rng.integers(0, 2**32, n))
    b = rng.integers(0, 2**63, n).astype(np.uint64) * np.uint64(2) + np.uint64(1)
    b = np.where(rng.random(n) < 0.3, rng.choice(edges, n), b)
    words = (a.astype(np.uint64), b.astype(np.uint64))
    monkeypatch.setattr(ConnColumns, "uid_words", lambda self: words)
    for fmt in ("jsonl", "zeek", "zeek-json"):
        _same(c, fmt)


def test_out_of_range_float_falls_back() -> None:
    c = _fuzz_base(10)
    c.cols["start_ns"][3] = 2**62
    c.cols["duration_ns"][3] = 2**63 - 1  # past 2**33 s: the table prints only the duration
    for fmt in FORMATS:
        _same(c, fmt, compiled=False)


def test_addresses_and_unsigned_counters() -> None:
    """IPv6 zero runs (leading, trailing, ties, single zeros), IPv4-mapped addresses, and byte
    counts that are negative as int64 (written as Python's unsigned value)."""
    rng = np.random.default_rng(11)
    n = 5_000
    c = _fuzz_base(n)
    groups = rng.choice([0, 0, 0, 1, 0xABC, 0xFFFF, 0x10], (n, 8)).astype(np.uint64)
    hi = np.zeros(n, np.uint64)
    lo = np.zeros(n, np.uint64)
    for k in range(4):
        hi |= groups[:, k] << np.uint64(48 - 16 * k)
        lo |= groups[:, 4 + k] << np.uint64(48 - 16 * k)
    v4 = rng.random(n) < 0.3
    hi[v4] = 0
    lo[v4] = np.uint64(0xFFFF00000000) | rng.integers(0, 2**32, v4.sum()).astype(np.uint64)
    c.cols["orig_hi"], c.cols["orig_lo"] = hi, lo
    c.cols["resp_hi"], c.cols["resp_lo"] = lo, hi
    c.cols["orig_bytes"] = rng.integers(-(2**63), 2**63 - 1, n, dtype=np.int64).view(np.uint64)
    c.cols["resp_bytes"] = np.full(n, 2**64 - 1, np.uint64)
    c.cols["stream"] = rng.integers(-(2**63), 2**63 - 1, n, dtype=np.int64)
    c.cols["uid"] = rng.integers(-(2**63), 2**63 - 1, n, dtype=np.int64)
    nets = parse_local_nets("0.0.0.0/1,::/2,abc::/16,10.0.0.0/8")
    for fmt in FORMATS:
        _same(c, fmt)
        _same(c.with_options(RecordOptions(local_nets=nets)), fmt)


def test_words_are_escaped() -> None:
    """Words with quotes, backslashes, commas, controls and non-ASCII text, and an odd uid
    prefix, are escaped as json.dumps and csv.writer would."""
    c = _fuzz_base(50)
    c.end_words = ('quote " back\\slash \u00e9 \x01', "a, b", "new\nline", "")
    c.cols["end"] = (np.arange(50) % 4).astype(np.int32)
    c.uid_prefix = 'X"\\'
    for fmt in FORMATS:
        _same(c, fmt)
    lines = format_columns(c, "jsonl").splitlines()
    assert json.loads(lines[0])["end"] == c.end_words[0]
    assert json.loads(lines[0])["uid"].startswith('X"\\')


def test_concat_in_stream_order_is_concat_then_stream_order() -> None:
    from tcpwhy.capture import iter_tables
    from tcpwhy.tcp.connections import iter_connection_columns

    lab = resources.files("tcpwhy") / "data" / "lab"
    most = 0
    for name in ("time-wait-reuse.pcap", "stale-keepalive.pcap", "syn-flood.pcap"):
        # small chunks: many batches, records finishing out of stream order
        tables = iter_tables(str(lab / name), chunk_bytes=512, reuse=True)
        batches = list(iter_connection_columns(tables))
        most = max(most, len(batches))
        want = ConnColumns.concat(batches).stream_order()
        got, order = ConnColumns.concat_stream_order(batches)
        assert (got.end_words, got.name_words) == (want.end_words, want.name_words)
        for k in want.cols:
            assert got.cols[k].dtype == want.cols[k].dtype, k
            assert np.array_equal(got.cols[k], want.cols[k]), (name, k)
        assert np.array_equal(ConnColumns.concat(batches).cols["uid"][order], got.cols["uid"])
    assert most >= 2  # records from several batches interleaved
    empty, order = ConnColumns.concat_stream_order([])
    assert len(empty) == 0 and len(order) == 0


@pytest.mark.filterwarnings("ignore:more than 3 connections active at once:RuntimeWarning")
def test_stream_order_is_a_lexsort_by_stream_then_start(
    zeek_corpus: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The records' stream order (a stable sort by stream alone, when each stream's records
    come in the order they start) is numpy's lexsort by stream, then start: on Zeek's traces
    read with three connections at most held (evicted and continued records: several per
    stream), and with a stream's records given out of order (the lexsort then). Reordering in
    two threads (`_IN_TWO` rows and more) places every value as one thread does."""
    from tcpwhy.capture import iter_tables
    from tcpwhy.tcp import records
    from tcpwhy.tcp.connections import iter_connection_columns

    def lexsorted(c: ConnColumns) -> np.ndarray:
        return np.lexsort((c.cols["start_ns"], c.cols["stream"]))

    repeated = 0
    for p in _captures(zeek_corpus):
        tables = iter_tables(str(p), chunk_bytes=2048, reuse=True)
        batches = list(iter_connection_columns(tables, max_active=3))
        if not batches:
            continue
        joined = ConnColumns.concat(batches)
        streams = joined.cols["stream"]
        repeated += len(streams) - len(np.unique(streams))
        assert np.array_equal(joined.stream_order_index(), lexsorted(joined)), p
        backwards = joined.take(np.arange(len(joined))[::-1])
        assert np.array_equal(backwards.stream_order_index(), lexsorted(backwards)), p
        one, order_one = ConnColumns.concat_stream_order(batches)
        monkeypatch.setattr(records, "_IN_TWO", 0)
        two, order_two = ConnColumns.concat_stream_order(batches)
        taken = joined.take(order_two)
        monkeypatch.undo()
        assert np.array_equal(order_one, order_two), p
        for k in COLUMNS:
            assert np.array_equal(one.cols[k], two.cols[k]), (p, k)
            assert np.array_equal(one.cols[k], taken.cols[k]), (p, k)
    assert repeated >= 10  # streams with several records, where the start decides


@pytest.mark.filterwarnings("ignore:more than 3 connections active at once:RuntimeWarning")
@pytest.mark.parametrize("max_active", [3, 500_000])
def test_batches_built_beside_are_the_batches_built_in_turn(
    zeek_corpus: Path, max_active: int
) -> None:
    """`iter_connection_columns(threaded=True)` builds each batch on a second thread from
    what the builder handed over for it: the same batches, in the same order, as building
    each one where it finished (small chunks: many batches, a few in flight at once)."""
    from tcpwhy.capture import iter_tables
    from tcpwhy.tcp.connections import iter_connection_columns

    most = 0
    for p in _captures(zeek_corpus):
        got = {}
        for threaded in (False, True):
            tables = iter_tables(str(p), chunk_bytes=2048, reuse=True)
            got[threaded] = list(
                iter_connection_columns(tables, threaded=threaded, max_active=max_active)
            )
        assert len(got[True]) == len(got[False]), p
        most = max(most, len(got[True]))
        for a, b in zip(got[False], got[True], strict=True):
            assert (a.end_words, a.name_words) == (b.end_words, b.name_words), p
            for k in COLUMNS:
                assert np.array_equal(a.cols[k], b.cols[k]), (p, k)
    assert most >= 8


@pytest.mark.filterwarnings("ignore:more than 3 connections active at once:RuntimeWarning")
@pytest.mark.parametrize("max_active", [3, 500_000])
def test_joined_as_they_come_is_concat_in_stream_order(
    zeek_corpus: Path, monkeypatch: pytest.MonkeyPatch, max_active: int
) -> None:
    """`StreamOrder` (each stream's record put in its place as its batch comes) gives what
    `concat_stream_order` gives after the last batch, with an extra array per row in the
    same order: on the shipped and Zeek captures in small chunks (records finishing out of
    stream order), with three connections at most held (continued records: a stream met
    twice sends the rest to the sort), with streams that have no record (their batch
    dropped), and growing its rows past what it set aside at first."""
    from tcpwhy.capture import iter_tables
    from tcpwhy.tcp import records
    from tcpwhy.tcp.connections import iter_connection_columns

    monkeypatch.setattr(records, "_PLACED_ROWS", 2)
    placed_only = fell_back = gaps = 0
    for p in _captures(zeek_corpus):
        tables = iter_tables(str(p), chunk_bytes=2048, reuse=True)
        every = list(iter_connection_columns(tables, max_active=max_active))
        for batches in (every, every[1::2]):
            if not batches:
                continue
            joined = records.StreamOrder()
            for b in batches:
                joined.add(b, {"uid2": np.stack([b.cols["uid"], -b.cols["uid"]], axis=1)})
            got, extra = joined.result()
            want, _ = ConnColumns.concat_stream_order(batches)
            assert (got.end_words, got.name_words) == (want.end_words, want.name_words), p
            for k in COLUMNS:
                assert got.cols[k].dtype == want.cols[k].dtype, (p, k)
                assert np.array_equal(got.cols[k], want.cols[k]), (p, k)
            assert np.array_equal(extra["uid2"][:, 0], want.cols["uid"]), p
            assert np.array_equal(extra["uid2"][:, 1], -want.cols["uid"]), p
            streams = want.cols["stream"]
            if len(np.unique(streams)) < len(streams):
                fell_back += 1
            else:
                placed_only += 1
                gaps += int(streams[-1]) + 1 > len(streams)
    assert placed_only >= 10 and gaps >= 3
    if max_active == 3:
        assert fell_back >= 5
    empty, extra = records.StreamOrder().result()
    assert len(empty) == 0 and extra == {}


@pytest.mark.parametrize("max_active", [None, 8])
@pytest.mark.filterwarnings("ignore:more than 8 connections active at once")
def test_records_do_not_depend_on_the_chunks_read(
    zeek_corpus: Path, max_active: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The records, their words and the order they are written in are the capture's, not the
    reader's: read in chunks of 512 bytes (hundreds of chunks) and in one, the shipped and
    Zeek captures give the same records in the same order. Idle connections leave at sweeps
    on capture time, and each record is worded as of when it was written (a TIME_WAIT over
    by then, how long it had been idle), not as of the end of the chunk being read. Above
    `max_active` conversations (8 here, with the stream tracker forgetting every 16 rows),
    the tracker forgets at the same rows however the capture is cut, so a 4-tuple seen again
    takes the same stream number either way."""
    from tcpwhy.capture import iter_tables
    from tcpwhy.tcp import connections
    from tcpwhy.tcp.connections import iter_connection_columns
    from tcpwhy.tcp.zeek import END_CAPTURE, END_EVICTED

    options = {} if max_active is None else {"max_active": max_active}
    if max_active is not None:
        monkeypatch.setattr(connections, "FORGET_EVERY", 16)
    mid = 0  # records written before the capture's end, where the time matters
    evicted = forgotten = 0
    for p in _captures(zeek_corpus):
        got = []
        for chunk in (512, 1 << 30):
            tables = iter_tables(str(p), chunk_bytes=chunk, reuse=True)
            batches = list(iter_connection_columns(tables, **options))
            got.append(ConnColumns.concat(batches))
        small, whole = got
        assert len(small) == len(whole), p
        for k in COLUMNS:
            if k not in ("end", "server_name"):  # codes into each join's own words
                assert np.array_equal(small.cols[k], whole.cols[k]), (p, k)
        for k, words in (("end", "end_words"), ("server_name", "name_words")):
            said = [[getattr(c, words)[i] for i in c.cols[k]] for c in (small, whole)]
            assert said[0] == said[1], (p, k)
        mid += int(np.count_nonzero(whole.cols["emitted"] != END_CAPTURE))
        evicted += int(np.count_nonzero(whole.cols["emitted"] == END_EVICTED))
        # conversations forgotten and seen again: more streams than distinct 4-tuples
        c = whole.cols
        ends = np.stack(
            [c["orig_hi"], c["orig_lo"], c["orig_p"], c["resp_hi"], c["resp_lo"], c["resp_p"]]
        )
        tuples = np.unique(np.sort(ends.reshape(2, 3, -1), axis=0).reshape(6, -1), axis=1)
        forgotten += len(np.unique(c["stream"])) - tuples.shape[1]
    assert mid >= 20
    if max_active is not None:
        assert evicted >= 20 and forgotten >= 5, (evicted, forgotten)
