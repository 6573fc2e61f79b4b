"""Per-packet state a filter may need besides the table, computed on first use.

Stream numbers, relative sequence numbers and scaled windows come from the
StreamTracker; analysis flags from `tcpwhy.tcp.analysis`; HTTP fields from the
payload starts. Each is computed only when a field of the filter asks for it
(`DisplayFilter.needs`), and at most once per context. A caller that already
has them (a command streaming chunks through its own StreamTracker) passes
them in.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from tcpwhy.decode import http1
from tcpwhy.decode.table import PacketTable
from tcpwhy.filter import http
from tcpwhy.filter.fields import ByteValues


class FilterContext:
    """The table's rows plus lazily computed streams, analysis and HTTP heads."""

    def __init__(
        self,
        table: PacketTable,
        *,
        streams: dict[str, npt.NDArray[Any]] | None = None,
        analysis: Any = None,
        first_ts_ns: int | None = None,
    ) -> None:
        self.table = table
        self._streams = streams
        self._analysis = analysis
        if first_ts_ns is None:
            first_ts_ns = int(table["ts_ns"][0]) if len(table) else 0
        self.first_ts_ns = first_ts_ns
        """Timestamp of the capture's first frame (``frame.time_relative`` is from it)."""
        self._heads: dict[int, http1.Head | None] = {}
        self._http_rows: npt.NDArray[np.bool_] | None = None

    @property
    def streams(self) -> dict[str, npt.NDArray[Any]]:
        if self._streams is None:
            from tcpwhy.tcp.streams import StreamTracker

            self._streams = StreamTracker().feed(self.table)
        return self._streams

    @property
    def analysis(self) -> Any:
        if self._analysis is None:
            from tcpwhy.tcp.analysis import analyze  # loads compiled code: only when used

            self._analysis = analyze(self.table, self.streams)
        return self._analysis

    def http_rows(self) -> npt.NDArray[np.bool_]:
        if self._http_rows is None:
            self._http_rows = http.http_rows(self.table, self.streams["stream"])
        return self._http_rows

    def head(self, row: int) -> http1.Head | None:
        if row not in self._heads:
            t = self.table
            off = int(t["payload_off"][row])
            cap = min(int(t["payload_cap"][row]), http1.HEAD_LIMIT)
            self._heads[row] = http1.parse_head(t.data[off : off + cap].tobytes()) if cap else None
        return self._heads[row]

    def http_field(
        self, attr: str, rows: npt.NDArray[np.int64]
    ) -> tuple[npt.NDArray[np.bool_], Any]:
        """Presence and values of one HTTP field over candidate rows (heads parsed on demand)."""
        heads = [self.head(int(r)) for r in rows]
        if attr in ("request", "response"):
            want = attr == "request"
            return np.array([h is not None and h.request == want for h in heads], bool), None
        vals = [None if h is None else getattr(h, attr) for h in heads]
        present = np.array([v is not None for v in vals], bool)
        if attr == "code":
            return present, np.array([v or 0 for v in vals], np.int64)
        return present, ByteValues([v or b"" for v in vals])
