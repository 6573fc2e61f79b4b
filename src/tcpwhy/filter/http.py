"""Just enough HTTP/1.x for the ``http.*`` filter fields: the start of each segment's payload.

tshark reassembles HTTP messages across TCP segments and reports their fields
on the segment that completes the headers (or the body, for messages with a
Content-Length), with ``http`` present on every segment it handed to the HTTP
dissector. tcpwhy does not reassemble: a request or status line and the
headers that follow it are read from the payload of the one segment they start
in, so a message split across segments has its fields on its first segment
(and a header beyond the segment is not seen). The payload is attacker data:
it is only searched with bounded, byte-level operations, and the values are
kept as bytes.

A segment is HTTP (the bare ``http`` field) when its stream uses one of the
ports tshark 4.0 assigns to HTTP by default, or when it comes at or after a
segment of its stream that starts with a request or status line: that is what
tshark's "HTTP over TCP" heuristic does for streams on other ports.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from tcpwhy.decode.http1 import METHOD_WORDS
from tcpwhy.decode.table import PacketTable

HTTP_PORTS = (80, 3128, 3132, 5985, 8080, 8088, 11371, 1900, 2869, 2710)
"""tshark 4.0's default ``http.tcp.port`` range."""

_PREFIX = 12  # bytes compared per row by `starts_message`


def starts_message(table: PacketTable, rows: npt.NDArray[np.int64]) -> npt.NDArray[np.bool_]:
    """Rows whose payload starts like an HTTP request or status line (vectorised prefix test)."""
    cap = table["payload_cap"][rows].astype(np.int64)
    off = table["payload_off"][rows].astype(np.int64)
    k = np.arange(_PREFIX)
    idx = off[:, None] + np.minimum(k[None, :], np.maximum(cap[:, None] - 1, 0))
    if not table.data.size:
        return np.zeros(len(rows), bool)
    pre = table.data[np.minimum(idx, table.data.size - 1)]
    valid = k[None, :] < cap[:, None]
    out = np.zeros(len(rows), bool)
    for word in (b"HTTP/", *METHOD_WORDS):
        w = np.frombuffer(word, np.uint8)
        n = len(w)
        out |= (cap >= n) & np.all((pre[:, :n] == w) & valid[:, :n], axis=1)
    return out


def http_rows(table: PacketTable, stream: npt.NDArray[np.int64]) -> npt.NDArray[np.bool_]:
    """Rows tshark would hand to its HTTP dissector (see the module docstring)."""
    n = len(table)
    has = table["payload_cap"] > 0
    rows = np.flatnonzero(has)
    port = np.isin(table["sport"], HTTP_PORTS) | np.isin(table["dport"], HTTP_PORTS)
    start = np.zeros(n, bool)
    start[rows] = starts_message(table, rows)
    nstreams = int(stream.max()) + 1 if n else 0
    first = np.full(nstreams, n, np.int64)
    srows = np.flatnonzero(start)
    np.minimum.at(first, stream[srows], srows)
    after = np.arange(n) >= first[stream] if n else np.zeros(0, bool)
    return has & (port | after)
