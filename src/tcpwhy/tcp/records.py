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
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import numpy.typing as npt

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
    "conn_state": CONN_STATE_WORDS,
    "emitted": z.END_WORDS,
    "zeek_orig_state": z.ZEEK_STATE_NAMES,
    "zeek_resp_state": z.ZEEK_STATE_NAMES,
}
"""Columns holding codes, and the words they index."""

COLUMNS: dict[str, tuple[str, tuple[int, ...], str]] = {
    "uid": ("i8", (), "record number in this run; its text is the uid prefix ('C') + hexadecimal"),
    "stream": ("i8", (), "Wireshark's tcp.stream number"),
    "orig_hi": ("u8", (), "originator address, high 64 bits (the packet table's `src_hi`)"),
    "orig_lo": ("u8", (), "originator address, low 64 bits (IPv4: 0xffff_xxxxxxxx)"),
    "orig_p": ("i8", (), "originator port"),
    "resp_hi": ("u8", (), "responder address, high 64 bits"),
    "resp_lo": ("u8", (), "responder address, low 64 bits"),
    "resp_p": ("i8", (), "responder port"),
    "orientation": ("u1", (), "code (ORIENT_WORDS): how the originator was chosen"),
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
    "missed_bytes": ("i8", (), "always 0: no stream reassembly"),
    "irtt_ns": ("i8", (), "SYN to the originator's ACK of the SYN-ACK; IRTT_UNSET if none"),
    "retransmissions": ("i8", (), "packets flagged as retransmissions, both ways"),
    "zero_windows": ("i8", (), "zero-window packets, both ways"),
    "orig_state": ("u1", (), "code (RFC_STATE_WORDS): final RFC 9293 state of the originator"),
    "resp_state": ("u1", (), "code (RFC_STATE_WORDS): final RFC 9293 state of the responder"),
    "end": ("i4", (), "code (`ConnColumns.end_words`): how the connection ended, in words"),
    "conn_state": ("u1", (), "code (CONN_STATE_WORDS): Zeek's conn_state"),
    "history": ("u1", (z.HIST_MAX,), "Zeek's history letters (ASCII), `history_len` of them"),
    "history_len": ("i8", (), "number of history letters"),
    "continued": ("?", (), "continues a stream written out earlier (idle or evicted)"),
    "emitted": ("u1", (), "code (tcp.zeek.END_WORDS): why the record was written when it was"),
    "zeek_orig_state": ("u1", (), "code (ZEEK_STATE_NAMES): Zeek's originator endpoint state"),
    "zeek_resp_state": ("u1", (), "code (ZEEK_STATE_NAMES): Zeek's responder endpoint state"),
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
    first_ns: int = field(repr=False, default=0)

    def as_json(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in JSON_FIELDS}
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


@dataclass
class ConnColumns:
    """A batch of connection records, one array per `COLUMNS` field."""

    cols: dict[str, npt.NDArray[Any]]
    end_words: tuple[str, ...]
    uid_prefix: str = "C"

    def __len__(self) -> int:
        return len(self.cols["uid"])

    def __getitem__(self, name: str) -> npt.NDArray[Any]:
        return self.cols[name]

    def words(self, name: str) -> tuple[str, ...]:
        w = WORD_COLUMNS[name]
        return self.end_words if w is None else w

    def take(self, idx: npt.NDArray[Any]) -> ConnColumns:
        """The rows `idx` (indices or a boolean mask), in that order."""
        return ConnColumns(
            {k: v[idx] for k, v in self.cols.items()}, self.end_words, self.uid_prefix
        )

    @staticmethod
    def concat(batches: Sequence[ConnColumns], uid_prefix: str = "C") -> ConnColumns:
        """One batch of all rows; `end` codes are renumbered into one tuple of words."""
        if not batches:
            return empty_columns(uid_prefix)
        words: dict[str, int] = {}
        ends = []
        for b in batches:
            remap = np.array(
                [words.setdefault(w, len(words)) for w in b.end_words] or [0], np.int32
            )
            ends.append(remap[b.cols["end"]])
        cols = {k: np.concatenate([b.cols[k] for b in batches]) for k in COLUMNS}
        cols["end"] = np.concatenate(ends).astype(np.int32)
        return ConnColumns(cols, tuple(words), batches[0].uid_prefix)

    def stream_order(self) -> ConnColumns:
        """Sorted by stream, then start (the order `build_connections` gives)."""
        return self.take(np.lexsort((self.cols["start_ns"], self.cols["stream"])))

    def addresses(self, which: str) -> list[str]:
        """The text of the originator's (``"orig"``) or responder's (``"resp"``) addresses."""
        hi = self.cols[f"{which}_hi"].tolist()
        lo = self.cols[f"{which}_lo"].tolist()
        return [_addr_text(h, low) for h, low in zip(hi, lo, strict=True)]

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
        pre = self.uid_prefix
        rows = zip(
            c["uid"].tolist(),
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
            strict=True,
        )
        out = []
        for row in rows:
            r: list[Any] = list(row)
            args = [f"{pre}{r[0]:x}", *r[1:7], r[7] / 1e9, r[8] / 1e9, *r[9:]]
            rec = ConnRecord(*args)
            rec.first_ns = r[7]
            out.append(rec)
        return out

    def record(self, i: int) -> ConnRecord:
        """Row i as a `ConnRecord`."""
        return self.take(np.array([i])).records()[0]

    def __iter__(self) -> Iterator[ConnRecord]:
        return iter(self.records())


def empty_columns(uid_prefix: str = "C") -> ConnColumns:
    cols = {name: np.zeros((0, *shape), np.dtype(dt)) for name, (dt, shape, _) in COLUMNS.items()}
    return ConnColumns(cols, (), uid_prefix)


__all__ = [
    "COLUMNS",
    "CONN_STATE_WORDS",
    "IRTT_UNSET",
    "JSON_FIELDS",
    "RFC_STATE_WORDS",
    "WORD_COLUMNS",
    "ConnColumns",
    "ConnRecord",
    "empty_columns",
]
