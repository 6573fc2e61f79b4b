"""Connection records as columns: the schema of what `tcpwhy conns` writes.

The connection builder (`tcpwhy.tcp.connections`) hands out its finished
connections in batches, one numpy array per field and one row per
connection (`ConnColumns`), the way the packet table (`tcpwhy.decode.table`)
holds packets: the writers of ``tcpwhy conns`` format whole columns at once,
with no Python object per connection. `ConnRecord` -- one connection as a
Python object, with its text fields -- is built from a row on demand
(`ConnColumns.record`, iteration) for callers that read a few records.

Columns are raw: times stay integer nanoseconds, addresses stay the packet
table's two 64-bit halves, the words (states, how it ended, why it was
written) are codes into a tuple of words. `ConnRecord` has the same fields in
text and seconds; the fields of a written record are listed in docs/conns.md.

A few fields are derived from the columns when a record is written, under the
batch's `RecordOptions`: the Zeek-style ``uid`` text (from the record number in
the ``uid`` column and a per-run key: `uid_words`), the Community ID
(`community_ids`) and ``local_orig`` / ``local_resp`` (`local_flags`).
"""

from __future__ import annotations

import functools
import ipaddress
import secrets
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import numpy.typing as npt

from tcpwhy.arrays import room_for
from tcpwhy.decode.table import format_addr
from tcpwhy.tcp import zeek as z
from tcpwhy.tcp.state import State

RFC_STATE_WORDS: tuple[str, ...] = (*(s.name for s in State), "")
"""Words of `orig_state` / `resp_state`: the `State` names, and "" when the builder was asked
not to run the RFC state machine."""
NO_RFC_STATE = len(RFC_STATE_WORDS) - 1

CONN_STATE_WORDS: tuple[str, ...] = (
    "S0",
    "S1",
    "SF",
    "REJ",
    "S2",
    "S3",
    "RSTO",
    "RSTR",
    "RSTOS0",
    "RSTRH",
    "SH",
    "SHR",
    "OTH",
)
"""Zeek's conn_state values."""

IRTT_UNSET = np.iinfo(np.int64).min
"""`irtt_ns` of a connection without a full handshake."""

# name -> (dtype, extra shape, meaning); a "code" column indexes the tuple of words named
WORD_COLUMNS: dict[str, tuple[str, ...] | None] = {
    "orientation": z.ORIENT_WORDS,
    "orig_state": RFC_STATE_WORDS,
    "resp_state": RFC_STATE_WORDS,
    "end": None,  # words of the batch: `ConnColumns.end_words`
    "server_name": None,  # words of the batch: `ConnColumns.name_words`
    "conn_state": CONN_STATE_WORDS,
    "emitted": z.END_WORDS,
    "zeek_orig_state": z.ZEEK_STATE_NAMES,
    "zeek_resp_state": z.ZEEK_STATE_NAMES,
}
"""Columns holding codes, and the words they index."""

COLUMNS: dict[str, tuple[str, tuple[int, ...], str]] = {
    "uid": (
        "i8",
        (),
        "record number in this run (`tcpwhy conns` writes a Zeek-style uid made from it)",
    ),
    "stream": ("i8", (), "Wireshark's tcp.stream number"),
    "orig_hi": ("u8", (), "originator address, high 64 bits (the packet table's `src_hi`)"),
    "orig_lo": ("u8", (), "originator address, low 64 bits (IPv4: 0xffff_xxxxxxxx)"),
    "orig_p": ("i8", (), "originator port"),
    "resp_hi": ("u8", (), "responder address, high 64 bits"),
    "resp_lo": ("u8", (), "responder address, low 64 bits"),
    "resp_p": ("i8", (), "responder port"),
    "orientation": ("u1", (), "how the originator was chosen"),
    "start_ns": ("i8", (), "first packet, nanoseconds since the Unix epoch"),
    "duration_ns": ("i8", (), "first to last packet (Zeek's: not extended after both closed)"),
    "orig_pkts": ("i8", (), "packets sent by the originator"),
    "resp_pkts": ("i8", (), "packets sent by the responder"),
    "orig_bytes": ("u8", (), "originator payload bytes from sequence numbers (Zeek's Size())"),
    "resp_bytes": ("u8", (), "responder payload bytes from sequence numbers"),
    "orig_payload": ("i8", (), "originator payload bytes summed over the packets"),
    "resp_payload": ("i8", (), "responder payload bytes summed over the packets"),
    "orig_ip_bytes": ("i8", (), "originator IP-level bytes (IP total length)"),
    "resp_ip_bytes": ("i8", (), "responder IP-level bytes"),
    "missed_bytes": ("i8", (), "content gap bytes, as Zeek's reassembler counts them"),
    "irtt_ns": ("i8", (), "SYN to the originator's ACK of the SYN-ACK; IRTT_UNSET if none"),
    "retransmissions": ("i8", (), "packets flagged as retransmissions, both ways"),
    "zero_windows": ("i8", (), "zero-window packets, both ways"),
    "orig_state": ("u1", (), 'final RFC 9293 state of the originator ("": not tracked)'),
    "resp_state": ("u1", (), 'final RFC 9293 state of the responder ("": not tracked)'),
    "end": ("i4", (), "how the connection ended, in words"),
    "conn_state": ("u1", (), "Zeek's conn_state"),
    "history": ("u1", (z.HIST_MAX,), "Zeek's history letters (ASCII), `history_len` of them"),
    "history_len": ("i8", (), "number of history letters"),
    "continued": ("?", (), "continues a stream written out earlier (idle or evicted)"),
    "emitted": ("u1", (), "why the record was written when it was"),
    "zeek_orig_state": ("u1", (), "Zeek's originator endpoint state"),
    "zeek_resp_state": ("u1", (), "Zeek's responder endpoint state"),
    "server_name": (
        "i4",
        (),
        "the server name the client asked for, the SNI of its first ClientHello or the Host of "
        'its first cleartext HTTP request ("": none seen)',
    ),
}


@dataclass(slots=True)
class ConnRecord:
    """One connection. Addresses are text; times are seconds since the Unix epoch."""

    uid: str
    stream: int
    orig_h: str
    orig_p: int
    resp_h: str
    resp_p: int
    orientation: str
    start: float
    duration: float
    orig_pkts: int
    resp_pkts: int
    orig_bytes: int
    resp_bytes: int
    orig_payload: int
    resp_payload: int
    orig_ip_bytes: int
    resp_ip_bytes: int
    missed_bytes: int
    irtt: float | None
    retransmissions: int
    zero_windows: int
    orig_state: str
    resp_state: str
    end: str
    conn_state: str
    history: str
    continued: bool
    emitted: str
    zeek_orig_state: str
    zeek_resp_state: str
    local_orig: bool | None = None
    local_resp: bool | None = None
    community_id: str = ""
    server_name: str = ""
    first_ns: int = field(repr=False, default=0)

    def as_json(self) -> dict[str, Any]:
        """The jsonl object; `local_orig` and `local_resp` are left out while unset (no
        ``--local-nets``), as Zeek leaves them out of its JSON logs."""
        from tcpwhy.schemas import SCHEMA_VERSION
        from tcpwhy.tcp.connections import end_code
        from tcpwhy.timestamps import rfc3339

        d: dict[str, Any] = {"schema_version": SCHEMA_VERSION}
        for k in JSON_FIELDS:
            d[k] = getattr(self, k)
            if k == "start":  # exact nanoseconds and RFC 3339 beside Zeek's seconds
                d["start_ns"] = self.first_ns
                d["start_time"] = rfc3339(self.first_ns)
            if k == "end":  # the stable code beside the words
                d["end_code"] = end_code(self.end)
        if self.local_orig is None:
            del d["local_orig"], d["local_resp"]
        if not self.server_name:
            del d["server_name"]
        d["start"] = round(self.start, 6)
        d["duration"] = round(self.duration, 6)
        if self.irtt is not None:
            d["irtt"] = round(self.irtt, 6)
        return d

    def json_line(self) -> str:
        """``json.dumps(self.as_json(), ensure_ascii=False)``: the readable form of what the
        columnar jsonl writer (`tcpwhy.report.conns`) writes for many records at once."""
        import json

        return json.dumps(self.as_json(), ensure_ascii=False)


JSON_FIELDS = tuple(f.name for f in fields(ConnRecord) if f.name != "first_ns")
"""Fields of a jsonl record, in order."""

_addr_text = functools.lru_cache(maxsize=1 << 16)(format_addr)


class _Words:
    """One tuple each of the `end` and `server_name` words of batches met one by one, into
    which each batch's codes are renumbered (int32)."""

    def __init__(self) -> None:
        self.end: dict[str, int] = {}
        self.names: dict[str, int] = {"": 0}

    def renumbered(self, b: ConnColumns) -> dict[str, npt.NDArray[Any]]:
        """The batch's columns, its word codes renumbered into these words."""
        cols = dict(b.cols)
        end, names = self.end, self.names
        remap = np.array([end.setdefault(w, len(end)) for w in b.end_words] or [0], np.int32)
        cols["end"] = remap[b.cols["end"]]
        remap = np.array([names.setdefault(w, len(names)) for w in b.name_words], np.int32)
        cols["server_name"] = remap[b.cols["server_name"]]
        return cols


def _common_words(
    batches: Sequence[ConnColumns],
) -> tuple[tuple[str, ...], tuple[str, ...], list[dict[str, npt.NDArray[Any]]]]:
    """The `end` and `server_name` words of all batches as one tuple each, and each batch's
    columns with those codes renumbered into them (int32)."""
    w = _Words()
    parts = [w.renumbered(b) for b in batches]
    return tuple(w.end), tuple(w.names), parts


_ORDER = ("stream", "start_ns")


def _stream_order(cols: dict[str, npt.NDArray[Any]]) -> npt.NDArray[np.intp]:
    """Rows by stream, then start (the order `build_connections` gives)."""
    stream, start = cols["stream"], cols["start_ns"]
    # by stream alone first, stable: a stream's records come out of the builder in the order
    # they start, and then that is the order sought, at half a lexsort's cost
    order = np.argsort(stream, kind="stable")
    same = stream[order[1:]] == stream[order[:-1]]
    if same.any() and bool((start[order[1:]][same] < start[order[:-1]][same]).any()):
        return np.lexsort((start, stream))
    return order


_IN_TWO = 100_000
"""Rows from which `ConnColumns.take` and `concat_stream_order` move columns in two threads."""


def _on_both_cores(
    fn: Callable[[str], npt.NDArray[Any]], names: Sequence[str], rows: int
) -> list[npt.NDArray[Any]]:
    """`fn` of each column name, in two threads from `_IN_TWO` rows: numpy's gathers and
    scatters release the GIL and the new pages fault in on both cores at once, which halves
    the reordering of a capture's records (`Capture.connections`: it comes after the reading,
    so the second core is idle)."""
    if rows < _IN_TWO:
        return [fn(k) for k in names]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2, thread_name_prefix="tcpwhy-columns") as pool:
        return list(pool.map(fn, names))


@dataclass
class ConnColumns:
    """A batch of connection records, one array per `COLUMNS` field. `name_words`: the
    server names the batch's `server_name` codes index, "" (no name) first."""

    cols: dict[str, npt.NDArray[Any]]
    end_words: tuple[str, ...]
    uid_prefix: str = "C"
    options: RecordOptions = field(default_factory=lambda: DEFAULT_OPTIONS)
    name_words: tuple[str, ...] = ("",)

    def __len__(self) -> int:
        return len(self.cols["uid"])

    def __getitem__(self, name: str) -> npt.NDArray[Any]:
        return self.cols[name]

    def words(self, name: str) -> tuple[str, ...]:
        w = WORD_COLUMNS[name]
        if w is None:
            return self.name_words if name == "server_name" else self.end_words
        return w

    def take(self, idx: npt.NDArray[Any]) -> ConnColumns:
        """The rows `idx` (indices or a boolean mask), in that order."""
        names = list(self.cols)
        got = dict(
            zip(names, _on_both_cores(lambda k: self.cols[k][idx], names, len(idx)), strict=True)
        )
        return ConnColumns(
            got,
            self.end_words,
            self.uid_prefix,
            self.options,
            self.name_words,
        )

    @staticmethod
    def concat(batches: Sequence[ConnColumns], uid_prefix: str = "C") -> ConnColumns:
        """One batch of all rows; `end` and `server_name` codes are renumbered into one tuple
        of words each."""
        if not batches:
            return empty_columns(uid_prefix)
        words, names, parts = _common_words(batches)
        cols = {k: np.concatenate([p[k] for p in parts]) for k in COLUMNS}
        b0 = batches[0]
        return ConnColumns(cols, words, b0.uid_prefix, b0.options, names)

    @staticmethod
    def concat_stream_order(
        batches: Sequence[ConnColumns], uid_prefix: str = "C"
    ) -> tuple[ConnColumns, npt.NDArray[np.intp]]:
        """`concat(batches).stream_order()`, and the order it is of the joined rows
        (`stream_order_index`), each value copied once: every batch's rows are written
        straight to their places. Joining and then reordering held a capture's records
        three times at the peak, and their pages cost the Python API a tenth of its time."""
        if not batches:
            return empty_columns(uid_prefix), np.zeros(0, np.intp)
        order = _stream_order({k: np.concatenate([b.cols[k] for b in batches]) for k in _ORDER})
        place = np.empty(len(order), np.intp)
        place[order] = np.arange(len(order))
        words, names, parts = _common_words(batches)

        def placed(k: str) -> npt.NDArray[Any]:
            first = parts[0][k]
            out = np.empty((len(order), *first.shape[1:]), first.dtype)
            lo = 0
            for p in parts:
                v = p[k]
                out[place[lo : lo + len(v)]] = v
                lo += len(v)
            return out

        keys = list(COLUMNS)
        cols = dict(zip(keys, _on_both_cores(placed, keys, len(order)), strict=True))
        b0 = batches[0]
        return ConnColumns(cols, words, b0.uid_prefix, b0.options, names), order

    def stream_order(self) -> ConnColumns:
        """Sorted by stream, then start (the order `build_connections` gives)."""
        return self.take(self.stream_order_index())

    def stream_order_index(self) -> npt.NDArray[np.intp]:
        """The rows in `stream_order`."""
        return _stream_order(self.cols)

    def addresses(self, which: str) -> list[str]:
        """The text of the originator's (``"orig"``) or responder's (``"resp"``) addresses."""
        hi = self.cols[f"{which}_hi"].tolist()
        lo = self.cols[f"{which}_lo"].tolist()
        return [_addr_text(h, low) for h, low in zip(hi, lo, strict=True)]

    def with_options(self, options: RecordOptions) -> ConnColumns:
        """The same rows, written under other options (the columns are shared, not copied)."""
        return ConnColumns(self.cols, self.end_words, self.uid_prefix, options, self.name_words)

    def uid_words(self) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.uint64]]:
        """The two parts of each record's uid (`uid_words`), under the batch's key."""
        return uid_words(self.cols["uid"], self.options.key())

    def uids(self) -> list[str]:
        """Each record's uid text: the prefix, then Zeek's base 62 of the two parts."""
        a, b = self.uid_words()
        pre = self.uid_prefix
        return [pre + base62(x) + base62(y) for x, y in zip(a.tolist(), b.tolist(), strict=True)]

    def community_id_text(self) -> npt.NDArray[np.uint8]:
        """Each record's Community ID hash, without the ``1:`` prefix: ``uint8[n, 28]``."""
        return community_ids(self.cols, self.options.community_id_seed)

    def local(self, which: str) -> npt.NDArray[np.bool_] | None:
        """``local_orig`` (`which` "orig") or ``local_resp`` ("resp"); None if unset."""
        nets = self.options.local_nets
        if nets is None:
            return None
        return local_flags(self.cols[f"{which}_hi"], self.cols[f"{which}_lo"], nets)

    def histories(self) -> list[str]:
        h, n = self.cols["history"], self.cols["history_len"].tolist()
        return [bytes(row[:k]).decode("ascii") for row, k in zip(h, n, strict=True)]

    def records(self) -> list[ConnRecord]:
        """Every row as a `ConnRecord` (a Python object per row: for callers that read records
        one by one; the writers of ``tcpwhy conns`` format the columns directly)."""
        c = self.cols
        text = {name: [self.words(name)[k] for k in c[name].tolist()] for name in WORD_COLUMNS}
        irtt = c["irtt_ns"]
        irtt_s: list[float | None] = [None if v == IRTT_UNSET else v / 1e9 for v in irtt.tolist()]
        unset: list[bool | None] = [None] * len(self)
        lo, lr = self.local("orig"), self.local("resp")
        local_o = unset if lo is None else lo.tolist()
        local_r = unset if lr is None else lr.tolist()
        cid = ["1:" + t.decode() for t in self.community_id_text().view("S28")[:, 0].tolist()]
        rows = zip(
            self.uids(),
            c["stream"].tolist(),
            self.addresses("orig"),
            c["orig_p"].tolist(),
            self.addresses("resp"),
            c["resp_p"].tolist(),
            text["orientation"],
            c["start_ns"].tolist(),
            c["duration_ns"].tolist(),
            c["orig_pkts"].tolist(),
            c["resp_pkts"].tolist(),
            c["orig_bytes"].tolist(),
            c["resp_bytes"].tolist(),
            c["orig_payload"].tolist(),
            c["resp_payload"].tolist(),
            c["orig_ip_bytes"].tolist(),
            c["resp_ip_bytes"].tolist(),
            c["missed_bytes"].tolist(),
            irtt_s,
            c["retransmissions"].tolist(),
            c["zero_windows"].tolist(),
            text["orig_state"],
            text["resp_state"],
            text["end"],
            text["conn_state"],
            self.histories(),
            c["continued"].tolist(),
            text["emitted"],
            text["zeek_orig_state"],
            text["zeek_resp_state"],
            local_o,
            local_r,
            cid,
            text["server_name"],
            strict=True,
        )
        out = []
        for row in rows:
            r: list[Any] = list(row)
            args = [*r[0:7], r[7] / 1e9, r[8] / 1e9, *r[9:]]
            rec = ConnRecord(*args)
            rec.first_ns = r[7]
            out.append(rec)
        return out

    def record(self, i: int) -> ConnRecord:
        """Row i as a `ConnRecord`."""
        return self.take(np.array([i])).records()[0]

    def __iter__(self) -> Iterator[ConnRecord]:
        return iter(self.records())


_PLACED_ROWS = 1 << 20
"""Rows `StreamOrder` sets aside at first: numpy maps untouched pages lazily, so memory
follows the streams placed, and a capture of up to a million streams is never copied."""


class StreamOrder:
    """Batches joined in stream order as they come (`concat_stream_order` of them all, with
    `extra` row arrays in the same order), for a reader that holds every record.

    Each stream's one record is written straight to row `stream` as its batch arrives, so
    the joining is done by the end of the reading, on whichever thread adds (the Python
    API's records thread), not after it: joined after it, the records took 0.05 of the
    0.09 s the API spent past the reading of a capture of 200,000 connections. A stream
    met twice (a continued record, several capture points) makes the rest wait for
    `concat_stream_order`, which orders by start within a stream."""

    def __init__(self) -> None:
        self._words = _Words()
        self._cols: dict[str, npt.NDArray[Any]] = {}
        self._extra: dict[str, npt.NDArray[Any]] = {}
        self._seen = np.zeros(0, np.bool_)
        self._rows = 0  # streams below this may be placed
        self._placed = 0
        self._first: ConnColumns | None = None
        self._rest: list[tuple[ConnColumns, dict[str, npt.NDArray[Any]]]] = []

    def add(self, batch: ConnColumns, extra: dict[str, npt.NDArray[Any]] | None = None) -> None:
        """Takes a batch (and its rows' `extra` arrays, the same names for every batch)."""
        extra = extra or {}
        if not len(batch):
            return
        if self._first is None:
            self._first = batch
        s = batch.cols["stream"]
        if not self._rest and int(s.min()) >= 0:
            hi = int(s.max()) + 1
            self._room(hi, batch, extra)
            ordered = np.sort(s)
            if not self._seen[s].any() and not bool((ordered[1:] == ordered[:-1]).any()):
                self._seen[s] = True
                for k, v in self._words.renumbered(batch).items():
                    self._cols[k][s] = v
                for k, v in extra.items():
                    self._extra[k][s] = v
                self._rows = max(self._rows, hi)
                self._placed += len(s)
                return
        self._rest.append((batch, extra))

    def _room(self, hi: int, batch: ConnColumns, extra: dict[str, npt.NDArray[Any]]) -> None:
        """Rows for streams below `hi`: set aside lazily (`_PLACED_ROWS`), doubled past it."""
        have = len(self._seen)
        if hi <= have:
            return
        rows = max(hi, 2 * have, _PLACED_ROWS)

        def moved(old: npt.NDArray[Any] | None, like: npt.NDArray[Any]) -> npt.NDArray[Any]:
            new = room_for((rows, *like.shape[1:]), like.dtype)
            if old is not None:
                new[: self._rows] = old[: self._rows]
            return new

        self._cols = {k: moved(self._cols.get(k), v) for k, v in batch.cols.items()}
        self._extra = {k: moved(self._extra.get(k), v) for k, v in extra.items()}
        seen = np.zeros(rows, np.bool_)
        seen[:have] = self._seen
        self._seen = seen

    def result(self, uid_prefix: str = "C") -> tuple[ConnColumns, dict[str, npt.NDArray[Any]]]:
        """All rows in stream order, and the extra arrays in that order."""
        if self._first is None:
            return empty_columns(uid_prefix), {}
        b0, n = self._first, self._rows
        cols = {k: v[:n] for k, v in self._cols.items()}
        extra = {k: v[:n] for k, v in self._extra.items()}
        if self._placed < n:  # streams without a record (their packets all dropped)
            seen = self._seen[:n]
            cols = {k: v[seen] for k, v in cols.items()}
            extra = {k: v[seen] for k, v in extra.items()}
        w = self._words
        placed = ConnColumns(cols, tuple(w.end), b0.uid_prefix, b0.options, tuple(w.names))
        if not self._rest:
            return placed, extra
        parts = [(placed, extra), *self._rest] if self._placed else self._rest
        joined, order = ConnColumns.concat_stream_order([b for b, _ in parts])
        names = parts[0][1]
        return joined, {k: np.concatenate([e[k] for _, e in parts])[order] for k in names}


# -- fields derived when records are written ------------------------------------------------

_M64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    """One output of the SplitMix64 generator whose state is x (before its step)."""
    z = (x + 0x9E3779B97F4A7C15) & _M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return z ^ (z >> 31)


def _mix(x: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """SplitMix64's output function on a whole array (each step is a bijection of 64 bits)."""
    z = x ^ (x >> np.uint64(30))
    z *= np.uint64(0xBF58476D1CE4E5B9)
    z ^= z >> np.uint64(27)
    z *= np.uint64(0x94D049BB133111EB)
    z ^= z >> np.uint64(31)
    return z


def uid_key(seed: int | None = None) -> tuple[int, int]:
    """A key for `uid_words`: random (``secrets``) without a seed, else made from the seed."""
    if seed is None:
        return secrets.randbits(64), secrets.randbits(64)
    s = seed & _M64
    return _splitmix64(s), _splitmix64((s + 0x9E3779B97F4A7C15) & _M64)


RUN_UID_KEY = uid_key()
"""The key of this process's uids when no seed is given: drawn once per run."""


def uid_words(
    numbers: npt.NDArray[np.int64], key: tuple[int, int]
) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.uint64]]:
    """The two words of Zeek's 96-bit connection uid for record numbers: a 32-bit word (Zeek
    keeps the top 32 bits of its first 64-bit value) and a 64-bit one. Both are keyed
    mixes of the record number; the second is a bijection of it, so the uids of one run are
    all different, and a random key makes them different from run to run."""
    n = numbers.astype(np.uint64)
    with np.errstate(over="ignore"):
        a = _mix(n + np.uint64(key[0])) >> np.uint64(32)
        b = _mix(n + np.uint64(key[1]))
    return a, b


_B62 = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


def base62(v: int) -> str:
    """v in base 62 as Zeek's ``uitoa_n`` writes it: digits 0-9, a-z, A-Z, least significant
    first, no padding (so a uid is ``C`` plus 2 to 17 characters, usually 16 or 17)."""
    out = []
    while True:
        v, d = divmod(v, 62)
        out.append(_B62[d])
        if not v:
            return "".join(out)


def community_ids(cols: dict[str, npt.NDArray[Any]], seed: int = 0) -> npt.NDArray[np.uint8]:
    """Community ID v1 (https://github.com/corelight/community-id-spec) of TCP connections,
    the base64 text after ``1:``, one ``uint8[28]`` row per connection: computed by a
    compiled kernel (`tcpwhy.tcp.records_kernel.community_ids`)."""
    from tcpwhy.tcp.records_kernel import COMMUNITY_ID_WIDTH
    from tcpwhy.tcp.records_kernel import community_ids as kernel

    n = len(cols["uid"])
    out = np.zeros((n, COMMUNITY_ID_WIDTH), np.uint8)
    if n:

        def arg(name: str) -> npt.NDArray[np.int64]:
            return np.ascontiguousarray(cols[name]).view(np.int64)

        kernel(
            int(seed),
            6,
            arg("orig_hi"),
            arg("orig_lo"),
            arg("orig_p"),
            arg("resp_hi"),
            arg("resp_lo"),
            arg("resp_p"),
            out,
        )
    return out


ZEEK_PRIVATE_ADDRESS_SPACE: tuple[str, ...] = (
    "0.0.0.0/8", "2002::/24", "10.0.0.0/8", "2002:a00::/24", "100.64.0.0/10", "2002:6440::/26",
    "127.0.0.0/8", "2002:7f00::/24", "169.254.0.0/16", "2002:a9fe::/32", "172.16.0.0/12",
    "2002:ac10::/28", "192.0.0.0/24", "2002:c000::/40", "192.0.2.0/24", "2002:c000:200::/40",
    "192.168.0.0/16", "2002:c0a8::/32", "198.18.0.0/15", "2002:c612::/31", "198.51.100.0/24",
    "2002:c633:6400::/40", "203.0.113.0/24", "2002:cb00:7100::/40", "240.0.0.0/4",
    "2002:f000::/20", "255.255.255.255/32", "2002:ffff:ffff::/48", "::/128", "::1/128",
    "64:ff9b:1::/48", "100::/64", "2001::/23", "2001:2::/48", "2001:db8::/32", "fc00::/7",
    "fe80::/10",
)  # fmt: skip
"""Zeek's ``Site::private_address_space`` (base/utils/site.zeek), which Zeek 6 and later add to
``Site::local_nets`` by default (``Site::private_address_space_is_local``): ``--local-nets
private``."""

Net = tuple[int, int, int, int]
"""A network as (high, low) address halves and (high, low) mask halves, IPv4 mapped into
``::ffff:0:0/96`` as the packet table stores it."""


def parse_local_nets(text: str | Iterable[str]) -> tuple[Net, ...]:
    """Networks from CIDR text (``"10.0.0.0/8,2001:db8::/32"``, or a list of such); the word
    ``private`` stands for `ZEEK_PRIVATE_ADDRESS_SPACE`. Host bits are dropped (Zeek's subnet
    literals do the same). ValueError on anything else."""
    items = text.split(",") if isinstance(text, str) else list(text)
    nets: list[Net] = []
    for item in (i.strip() for i in items):
        if not item:
            continue
        if item == "private":
            nets += parse_local_nets(ZEEK_PRIVATE_ADDRESS_SPACE)
            continue
        net = ipaddress.ip_network(item, strict=False)
        base = int(net.network_address)
        plen = net.prefixlen
        if net.version == 4:
            base |= 0xFFFF << 32
            plen += 96
        mask = ((1 << 128) - 1) ^ ((1 << (128 - plen)) - 1)
        nets.append((base >> 64, base & _M64, mask >> 64, mask & _M64))
    return tuple(dict.fromkeys(nets))


def local_flags(
    hi: npt.NDArray[np.uint64], lo: npt.NDArray[np.uint64], nets: Sequence[Net]
) -> npt.NDArray[np.bool_]:
    """Whether each address is in one of the networks (Zeek's ``Site::is_local_addr``)."""
    out = np.zeros(len(hi), np.bool_)
    for nh, nl, mh, ml in nets:
        out |= ((hi & np.uint64(mh)) == np.uint64(nh)) & ((lo & np.uint64(ml)) == np.uint64(nl))
    return out


@dataclass(frozen=True)
class RecordOptions:
    """How the derived fields of a batch's records are written.

    `uid_seed` None: uids from this run's random key (`RUN_UID_KEY`), else from a key made
    from the seed (reproducible output). `community_id_seed`: the Community ID seed (0 to
    65535). `local_nets`: the networks of ``local_orig`` / ``local_resp`` (`parse_local_nets`);
    None leaves them unset, as Zeek does when ``Site::local_nets`` is empty."""

    uid_seed: int | None = None
    community_id_seed: int = 0
    local_nets: tuple[Net, ...] | None = None

    def key(self) -> tuple[int, int]:
        return RUN_UID_KEY if self.uid_seed is None else uid_key(self.uid_seed)


DEFAULT_OPTIONS: RecordOptions = RecordOptions()


def empty_columns(uid_prefix: str = "C") -> ConnColumns:
    cols = {name: np.zeros((0, *shape), np.dtype(dt)) for name, (dt, shape, _) in COLUMNS.items()}
    return ConnColumns(cols, (), uid_prefix)


__all__ = [
    "COLUMNS",
    "CONN_STATE_WORDS",
    "DEFAULT_OPTIONS",
    "IRTT_UNSET",
    "JSON_FIELDS",
    "RFC_STATE_WORDS",
    "WORD_COLUMNS",
    "ZEEK_PRIVATE_ADDRESS_SPACE",
    "ConnColumns",
    "ConnRecord",
    "RecordOptions",
    "StreamOrder",
    "base62",
    "community_ids",
    "empty_columns",
    "local_flags",
    "parse_local_nets",
    "uid_key",
    "uid_words",
]
