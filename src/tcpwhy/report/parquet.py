"""Parquet out: connection records and packets as Arrow tables built from the columns.

The text columns (addresses, uids, Community IDs, history letters) come out of the same
compiled row formatter as ``tcpwhy conns`` (`tcpwhy.report.conns_kernel`), one buffer per
batch cut into an Arrow string array by its offsets; the word columns (states, how a
connection ended) are Arrow dictionaries over the codes. No Python object is made per row,
so a capture of millions of connections costs what its columns cost.

The schemas (`conn_schema`, `packet_schema`, `finding_schema`) are documented in
docs/fleet.md, whose tables are made from them (``python -m tcpwhy.report.parquet
docs/fleet.md``); names and values are those of the jsonl output, with times as UTC
timestamps and seconds.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from tcpwhy.capture.writer import written_in_place
from tcpwhy.errors import EnvironmentProblem, TcpwhyError

if TYPE_CHECKING:
    import pyarrow as pa

    from tcpwhy.decode.table import CaptureStats
    from tcpwhy.filter import DisplayFilter
    from tcpwhy.tcp.records import ConnColumns, RecordOptions
    from tcpwhy.views import UnbuiltBatch


def require_pyarrow() -> Any:
    """pyarrow, or one line saying how to install it (exit status 1: the environment)."""
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise EnvironmentProblem(
            "parquet", "needs pyarrow: pip install 'tcpwhy[parquet]'"
        ) from None
    return pyarrow


def _cut(buf: npt.NDArray[np.uint8], n: int) -> pa.Array:
    """An Arrow string array of the n newline-ended texts in `buf` (newlines dropped)."""
    import pyarrow as pa

    ends = np.flatnonzero(buf == 10)
    assert len(ends) == n
    data = buf[buf != 10]
    if len(data) < 2**31:  # 32-bit offsets as they are: a cast would load pyarrow.compute
        offsets32 = np.zeros(n + 1, np.int32)
        offsets32[1:] = ends - np.arange(n)
        return pa.StringArray.from_buffers(n, pa.py_buffer(offsets32), pa.py_buffer(data))
    offsets = np.zeros(n + 1, np.int64)
    offsets[1:] = ends - np.arange(n)
    return pa.LargeStringArray.from_buffers(
        n, pa.py_buffer(offsets), pa.py_buffer(data.tobytes())
    ).cast(pa.string())


def _kernel_text(
    steps: list[tuple[int, int, int, int]],
    ints: npt.NDArray[np.int64],
    words: list[bytes],
    row_bound: int,
    fixed: npt.NDArray[np.uint8] | None = None,
) -> pa.Array:
    """One text per row, written by the compiled row formatter; each program ends in word 0
    (a newline)."""
    from tcpwhy.report import conns_kernel as k

    n = ints.shape[1]
    vocab, voff = k.vocabulary(words)
    prog = k.program([*steps, (k.OP_LIT, 0, 0, -1)])
    out = np.empty(n * (row_bound + 1) + 1 + k.WORD_SLACK, np.uint8)
    hist = np.zeros((n, 1), np.uint8)
    hlen = np.zeros(n, np.int64)
    fx = fixed if fixed is not None else np.zeros((n, 0), np.uint8)
    size = k.format_rows(prog, ints, hist, hlen, vocab, voff, fx, out, 0, n)
    assert size >= 0  # integers and words only: nothing out of range
    return _cut(out[:size], n)


def address_rows(
    hi: npt.NDArray[Any], lo: npt.NDArray[Any]
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]]:
    """Address text (as Wireshark writes it) from the packet table's two 64-bit halves, as
    rows of a fixed width and their lengths (to be placed by row before `_fixed_text`)."""
    from tcpwhy.report import conns_kernel as k

    rows = np.empty((len(hi), k.ADDRESS_WIDTH), np.uint8)
    lengths = np.empty(len(hi), np.uint8)
    k.address_rows(
        np.ascontiguousarray(hi).view(np.int64),
        np.ascontiguousarray(lo).view(np.int64),
        rows,
        lengths,
    )
    return rows, lengths


def addresses(hi: npt.NDArray[Any], lo: npt.NDArray[Any]) -> pa.Array:
    """Address text as an Arrow string array."""
    return _fixed_text(*address_rows(hi, lo))


def community_id_rows(
    ids: npt.NDArray[np.uint8],
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]]:
    """Community IDs as rows of text, ``1:`` and the hash (`ConnColumns.community_id_text`),
    and their lengths: every row is whole, so `_fixed_text` takes the matrix as it is."""
    rows = np.empty((len(ids), 2 + ids.shape[1]), np.uint8)
    rows[:, :2] = np.frombuffer(b"1:", np.uint8)
    rows[:, 2:] = ids
    return rows, np.full(len(rows), rows.shape[1], np.uint8)


def _fixed_text(rows: npt.NDArray[np.uint8], lengths: npt.NDArray[Any]) -> pa.Array:
    """Strings from rows of a fixed-width byte matrix, the first `lengths[i]` bytes of row i
    (cut by the compiled `compact_rows`; a matrix of whole rows is taken as it is)."""
    import pyarrow as pa

    from tcpwhy.report.conns_kernel import compact_rows

    n, width = rows.shape
    lengths = np.ascontiguousarray(lengths, np.int64)
    total = int(lengths.sum())
    if total >= 2**31:  # Arrow's `string` has 32-bit offsets (100 million addresses)
        raise ValueError(f"{total} bytes of text in one column: past Arrow's string type")
    if rows.flags.c_contiguous and total == n * width:
        offsets = np.arange(0, total + 1, width, dtype=np.int32)
        return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(rows))
    offsets = np.empty(n + 1, np.int32)
    body = np.empty(total, np.uint8)
    compact_rows(np.ascontiguousarray(rows), lengths, offsets, body)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(body))


def _words(codes: npt.NDArray[Any], words: tuple[str, ...]) -> pa.Array:
    import pyarrow as pa

    return pa.DictionaryArray.from_arrays(
        pa.array(codes.astype(np.int32)), pa.array(list(words) or [""], pa.string())
    )


def conn_schema(local: bool = True) -> pa.Schema:
    """The Arrow schema of connection records (docs/conns.md, "Parquet")."""
    import pyarrow as pa

    word = pa.dictionary(pa.int32(), pa.string())
    fields = [
        ("uid", pa.string()),
        ("stream", pa.int64()),
        ("orig_h", pa.string()),
        ("orig_p", pa.int64()),
        ("resp_h", pa.string()),
        ("resp_p", pa.int64()),
        ("orientation", word),
        ("start", pa.timestamp("us", tz="UTC")),
        ("start_ns", pa.int64()),
        ("duration", pa.float64()),
        ("orig_pkts", pa.int64()),
        ("resp_pkts", pa.int64()),
        ("orig_bytes", pa.uint64()),
        ("resp_bytes", pa.uint64()),
        ("orig_payload", pa.int64()),
        ("resp_payload", pa.int64()),
        ("orig_ip_bytes", pa.int64()),
        ("resp_ip_bytes", pa.int64()),
        ("missed_bytes", pa.int64()),
        ("irtt", pa.float64()),
        ("retransmissions", pa.int64()),
        ("zero_windows", pa.int64()),
        ("orig_state", word),
        ("resp_state", word),
        ("end", word),
        ("end_code", word),
        ("conn_state", word),
        ("history", pa.string()),
        ("continued", pa.bool_()),
        ("emitted", word),
        ("zeek_orig_state", word),
        ("zeek_resp_state", word),
        ("local_orig", pa.bool_()),
        ("local_resp", pa.bool_()),
        ("community_id", pa.string()),
        ("server_name", word),
    ]
    return pa.schema([pa.field(n, t) for n, t in fields])


def conn_table(c: ConnColumns) -> pa.Table:
    """A batch of connection records as an Arrow table of `conn_schema`."""
    import pyarrow as pa

    from tcpwhy.report import conns_kernel as k
    from tcpwhy.tcp.connections import end_code
    from tcpwhy.tcp.records import IRTT_UNSET

    col = c.cols
    n = len(c)
    a, b = c.uid_words()
    pre = c.uid_prefix.encode()
    uids = _kernel_text(
        [(k.OP_LIT, 1, 0, -1), (k.OP_B62, 0, 0, -1), (k.OP_B62, 1, 0, -1)],
        np.stack([a.view(np.int64), b.view(np.int64)]) if n else np.zeros((2, 0), np.int64),
        [b"\n", pre],
        len(pre) + 22,
    )
    irtt = col["irtt_ns"]
    lo, lr = c.local("orig"), c.local("resp")
    null_bool = pa.nulls(n, pa.bool_())
    arrays: dict[str, Any] = {
        "uid": uids,
        "stream": col["stream"],
        "orig_h": addresses(col["orig_hi"], col["orig_lo"]),
        "orig_p": col["orig_p"],
        "resp_h": addresses(col["resp_hi"], col["resp_lo"]),
        "resp_p": col["resp_p"],
        "start": pa.array(col["start_ns"] // 1000, pa.int64()).cast(pa.timestamp("us", "UTC")),
        "start_ns": col["start_ns"],
        "duration": col["duration_ns"] / 1e9,
        "irtt": pa.array(irtt / 1e9, pa.float64(), mask=irtt == IRTT_UNSET),
        "history": _fixed_text(col["history"], col["history_len"]),
        "continued": col["continued"],
        "local_orig": null_bool if lo is None else lo,
        "local_resp": null_bool if lr is None else lr,
        "community_id": _fixed_text(*community_id_rows(c.community_id_text())),
    }
    for name in (
        "orientation",
        "orig_state",
        "resp_state",
        "end",
        "conn_state",
        "emitted",
        "zeek_orig_state",
        "zeek_resp_state",
    ):
        arrays[name] = _words(col[name], c.words(name))
    arrays["server_name"] = _words(col["server_name"], c.name_words)
    arrays["end_code"] = _words(col["end"], tuple(end_code(w) for w in c.end_words))
    for name in (
        "orig_pkts",
        "resp_pkts",
        "orig_bytes",
        "resp_bytes",
        "orig_payload",
        "resp_payload",
        "orig_ip_bytes",
        "resp_ip_bytes",
        "missed_bytes",
        "retransmissions",
        "zero_windows",
    ):
        arrays[name] = col[name]
    schema = conn_schema()
    return pa.table([pa.array(arrays[f.name], f.type) for f in schema], schema=schema)


class ParquetSink:
    """Tables appended to one Parquet file, written beside its name and renamed into place
    when closed without error (as `-o FILE` does for text)."""

    def __init__(self, path: str, schema: pa.Schema) -> None:
        pa = require_pyarrow()
        self.path = path
        where = os.path.dirname(os.path.abspath(path)) or "."
        if os.path.isdir(path):
            raise TcpwhyError(path, "is a directory")
        if not os.path.isdir(where):
            raise TcpwhyError(path, "cannot write: No such file or directory")
        self.tmp = os.path.join(where, f".tcpwhy-{os.getpid()}-{os.path.basename(path)}.part")
        if written_in_place(path):
            self.tmp = path
        try:
            # dictionary pages for the columns the schema makes dictionaries (states, ends)
            # alone: Parquet's default tries one for every column and gives up on the
            # columns of distinct values (uids, addresses, times) only once it is large. A
            # 1.5 M-SYN flood's records: 2.2 s and 85 MB written, now 1.5 s and 70 MB; the
            # connection-heavy capture's: 8.1 MB, now 7.2 MB
            dicts = [
                f.name if pa.types.is_dictionary(f.type) else f"{f.name}.list.element"
                for f in schema
                if pa.types.is_dictionary(f.type)
                or (pa.types.is_list(f.type) and pa.types.is_dictionary(f.type.value_type))
            ]
            self.writer = pa.parquet.ParquetWriter(
                self.tmp, schema, compression="zstd", use_dictionary=dicts
            )
        except OSError as exc:
            raise TcpwhyError(path, f"cannot write: {exc}") from None
        self.rows = 0

    def write(self, table: pa.Table) -> None:
        if table.num_rows:
            # dictionaries differ from batch to batch: unify them into the file's schema
            self.writer.write_table(table.cast(self.writer.schema))
            self.rows += table.num_rows

    def close(self, ok: bool) -> None:
        self.writer.close()
        if self.tmp == self.path:
            return
        if ok:
            os.replace(self.tmp, self.path)
        elif os.path.exists(self.tmp):
            os.unlink(self.tmp)


def write_conns_parquet(
    source: str,
    path: str,
    stats: CaptureStats,
    flt: DisplayFilter | None = None,
    record_options: RecordOptions | None = None,
    **options: Any,
) -> int:
    """The connection records of a capture into a Parquet file; the rows written."""
    from tcpwhy.views import connection_batches

    return _write_conns(
        path,
        lambda: connection_batches(
            [source], [stats], flt, record_options=record_options, unbuilt=True, **options
        )[1],
    )


WRITE_DEPTH = 2
"""Batches queued for the Parquet writing thread at most (each may still be to build)."""


def _write_conns(path: str, batches: Callable[[], Iterable[UnbuiltBatch]]) -> int:
    """Connection records into a Parquet file, put in place only when every batch was
    written (`batches` is called once the file is open); the rows written.

    The batches are built, turned into Arrow and compressed in a thread of their own while
    the capture is read on (pyarrow and the kernels release the GIL): one after the other,
    a 1.5 M-SYN flood's `conns --format parquet` took 6.2 s, writing 2.7 s of it."""
    from concurrent.futures import Future, ThreadPoolExecutor

    from tcpwhy.views import built

    sink = ParquetSink(path, conn_schema())
    ok = False
    pool = ThreadPoolExecutor(1, thread_name_prefix="tcpwhy-parquet-writer")
    pending: list[Future[None]] = []

    def write(c: ConnColumns | Callable[[], ConnColumns]) -> None:
        sink.write(conn_table(built(c)))

    try:
        for _, c, _ in batches():
            while len(pending) >= WRITE_DEPTH:
                pending.pop(0).result()  # (raising what the thread raised)
            pending.append(pool.submit(write, c))
        while pending:
            pending.pop(0).result()
        ok = True
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        sink.close(ok)
    return sink.rows


def packet_schema() -> pa.Schema:
    """The Arrow schema of ``packets --format parquet`` (docs/conns.md, "Parquet")."""
    import pyarrow as pa

    word = pa.dictionary(pa.int32(), pa.string())
    return pa.schema(
        [
            ("frame", pa.int64()),
            ("ts", pa.timestamp("us", tz="UTC")),
            ("ts_ns", pa.int64()),
            ("time", pa.float64()),
            ("src", pa.string()),
            ("dst", pa.string()),
            ("sport", pa.int64()),
            ("dport", pa.int64()),
            ("length", pa.int64()),
            ("flags", pa.list_(word)),
            ("seq", pa.int64()),
            ("ack", pa.int64()),
            ("len", pa.int64()),
            ("win", pa.int64()),
            ("stream", pa.int64()),
            ("analysis", pa.list_(word)),
        ]
    )


def _name_lists(bits: npt.NDArray[Any], names: tuple[str, ...]) -> pa.Array:
    """A list of names per row: the names of the bits set, in the order of `names`."""
    import pyarrow as pa

    n = len(bits)
    b = bits.astype(np.uint64)
    m = ((b[:, None] >> np.arange(len(names), dtype=np.uint64)[None, :]) & np.uint64(1)) != 0
    _, which = np.nonzero(m)
    offsets = np.zeros(n + 1, np.int32)
    np.cumsum(m.sum(axis=1), out=offsets[1:])
    values = pa.DictionaryArray.from_arrays(
        pa.array(which.astype(np.int32)), pa.array(list(names), pa.string())
    )
    return pa.ListArray.from_arrays(pa.array(offsets), values)


def write_packets_parquet(
    source: str,
    path: str,
    stats: CaptureStats,
    absolute: bool = False,
    limit: int | None = None,
    flt: DisplayFilter | None = None,
) -> int:
    """The TCP packets of a capture into a Parquet file, with the values of the jsonl packet
    list (relative or absolute numbers, scaled window, stream, analysis flags); the rows
    written. ICMP errors about TCP are not rows here."""
    import pyarrow as pa

    from tcpwhy.decode.table import FLAG_NAMES
    from tcpwhy.tcp.analysis import FLAGS
    from tcpwhy.views import packet_chunks

    flag_bits = np.array([bit for bit, _ in FLAG_NAMES], np.uint64)
    flag_words = tuple(name for _, name in FLAG_NAMES)
    schema = packet_schema()
    sink = ParquetSink(path, schema)
    ok = False
    try:
        for ch in packet_chunks([source], [stats], flt):  # as `tcpwhy packets` lists them
            if limit is not None and sink.rows >= limit:
                break
            t, s, an = ch.table, ch.streams, ch.analysis
            assert an is not None
            idx = np.flatnonzero(ch.keep) if ch.keep is not None else np.arange(len(t))
            if limit is not None:
                idx = idx[: limit - sink.rows]
            flags = t["flags"][idx].astype(np.uint64)
            fbits = np.zeros(len(idx), np.uint64)
            for k, bit in enumerate(flag_bits):  # Wireshark's order, one bit per name
                fbits |= ((flags & bit) != 0).astype(np.uint64) << np.uint64(k)
            ack = (t["ack"] if absolute else s["rel_ack"])[idx].astype(np.int64)
            # without the ACK flag, the raw field (tshark's tcp.ack)
            ack = np.where((t["flags"][idx] & 0x10) != 0, ack, t["ack"][idx].astype(np.int64))
            ts = t["ts_ns"][idx].astype(np.int64)
            t0 = stats.first_ts_ns or 0
            cols = {
                "frame": t["frame"][idx],
                "ts": pa.array(ts // 1000, pa.int64()).cast(pa.timestamp("us", "UTC")),
                "ts_ns": ts,
                "time": (ts - t0).astype(np.float64) / 1e9,
                "src": addresses(t["src_hi"][idx], t["src_lo"][idx]),
                "dst": addresses(t["dst_hi"][idx], t["dst_lo"][idx]),
                "sport": t["sport"][idx],
                "dport": t["dport"][idx],
                "length": t["frame_len"][idx],
                "flags": _name_lists(fbits, flag_words),
                "seq": (t["seq"] if absolute else s["rel_seq"])[idx],
                "ack": ack,
                "len": t["payload_len"][idx],
                "win": s["win_scaled"][idx],
                "stream": s["stream"][idx],
                "analysis": _name_lists(an.bits[idx], tuple(FLAGS)),
            }
            sink.write(
                pa.table(
                    [
                        cols[f.name]
                        if isinstance(cols[f.name], pa.Array)
                        else pa.array(np.asarray(cols[f.name]).astype(np.int64), f.type)
                        if pa.types.is_integer(f.type)
                        else pa.array(cols[f.name], f.type)
                        for f in schema
                    ],
                    schema=schema,
                )
            )
        ok = True
    finally:
        sink.close(ok)
    return sink.rows


def need_output(args: argparse.Namespace) -> str:
    """``--format parquet`` writes a file: `-o FILE` is required (a terminal gets no binary)."""
    path = getattr(args, "output", None)
    if not path or path == "-":
        raise TcpwhyError("--format parquet", "needs -o FILE")
    return str(path)


# --- analyze --parquet OUTDIR: datasets partitioned by capture point ---------------------

DATASETS = ("connections", "findings")
"""The datasets of ``analyze --parquet OUTDIR``: ``OUTDIR/NAME/point=POINT/part-0.parquet``."""


def finding_schema() -> pa.Schema:
    """The Arrow schema of the findings dataset (docs/fleet.md): the fields of ``analyze
    --format json``'s findings; `facts` and `timeline` as JSON text."""
    import pyarrow as pa

    word = pa.dictionary(pa.int32(), pa.string())
    return pa.schema(
        [
            ("kind", word),
            ("severity", word),
            ("count", pa.int64()),
            ("server", pa.string()),
            ("server_idle_timeout_s", pa.float64()),
            ("summary", pa.string()),
            ("first", pa.timestamp("us", tz="UTC")),
            ("first_ns", pa.int64()),
            ("last_ns", pa.int64()),
            ("streams", pa.list_(pa.int64())),
            ("frames", pa.list_(pa.int64())),
            ("examples", pa.list_(pa.int64())),
            ("explanation", pa.string()),
            ("causes", pa.list_(pa.string())),
            ("fixes", pa.list_(pa.string())),
            ("errors", pa.list_(pa.string())),
            ("display_filter", pa.string()),
            ("facts", pa.string()),
            ("timeline", pa.string()),
        ]
    )


_CONN_NOTES = {
    "uid": "Zeek-style uid, `C` + base 62 (random per run, different at every capture point)",
    "stream": "Wireshark's `tcp.stream`, numbered over the capture point's files in time order",
    "orig_h": "originator address, as Wireshark writes it",
    "orig_p": "originator port",
    "resp_h": "responder address",
    "resp_p": "responder port",
    "orientation": "how the originator was chosen (`conns` docs)",
    "start": "first packet, UTC",
    "start_ns": "first packet, nanoseconds since the epoch",
    "duration": "seconds from first to last packet",
    "orig_pkts": "packets from the originator",
    "resp_pkts": "packets from the responder",
    "orig_bytes": "payload bytes from the originator (Zeek's, by sequence numbers)",
    "resp_bytes": "payload bytes from the responder",
    "orig_payload": "payload bytes seen from the originator",
    "resp_payload": "payload bytes seen from the responder",
    "orig_ip_bytes": "IP bytes from the originator",
    "resp_ip_bytes": "IP bytes from the responder",
    "missed_bytes": "bytes acknowledged but never seen (Zeek's)",
    "irtt": "initial round trip, seconds (null without a full handshake)",
    "retransmissions": "retransmitted segments",
    "zero_windows": "zero-window advertisements",
    "orig_state": "the originator's final RFC 9293 state",
    "resp_state": "the responder's final RFC 9293 state",
    "end": "how the connection ended, in words",
    "end_code": "how the connection ended, as a stable code (docs/json.md)",
    "conn_state": "Zeek's `conn_state`",
    "history": "Zeek's `history`",
    "continued": "the record continues one written out early",
    "emitted": "why the record was written",
    "zeek_orig_state": "Zeek's originator state",
    "zeek_resp_state": "Zeek's responder state",
    "local_orig": "originator in `--local-nets` (null: not set)",
    "local_resp": "responder in `--local-nets` (null: not set)",
    "community_id": "Community ID v1 (`1:` + base64)",
    "server_name": "TLS SNI or HTTP Host of the connection, if seen",
}

_FINDING_NOTES = {
    "kind": "the finding's kind (docs/diagnose.md)",
    "severity": "`info`, `warning` or `error`",
    "count": "connections that show it at this capture point",
    "server": "the server it is about (`facts.server`; a server's CLOSE_WAIT leak: that "
    "server), if one",
    "server_idle_timeout_s": "the server idle timeout inferred here, median seconds (or null)",
    "summary": "one line",
    "first": "first packet of the finding, UTC",
    "first_ns": "first packet of the finding, nanoseconds since the epoch",
    "last_ns": "last packet of the finding, nanoseconds since the epoch",
    "streams": "the streams that show it",
    "frames": "the decisive frames",
    "examples": "the example streams the text report details",
    "explanation": "what happened, in prose",
    "causes": "likely causes, most likely first",
    "fixes": "what to change",
    "errors": "what the applications most likely logged",
    "display_filter": "a Wireshark display filter selecting its packets (or null)",
    "facts": "the finding's facts, as JSON text",
    "timeline": "the decisive packets with both endpoints' states, as JSON text",
}
_PACKET_NOTES = {
    "frame": "frame number in the capture",
    "ts": "capture time, UTC",
    "ts_ns": "capture time, nanoseconds since the epoch",
    "time": "seconds since the first frame",
    "src": "source address",
    "dst": "destination address",
    "sport": "source port",
    "dport": "destination port",
    "length": "frame length on the wire",
    "flags": "TCP flag names, in Wireshark's order",
    "seq": "sequence number (relative unless `--absolute`)",
    "ack": "acknowledgment number (without the ACK flag the raw field, as tshark's tcp.ack)",
    "len": "TCP payload length",
    "win": "window, scaled",
    "stream": "Wireshark's `tcp.stream`",
    "analysis": "Wireshark's analysis flags (`tcp.analysis.*` names)",
}


def schemas() -> dict[str, tuple[pa.Schema, dict[str, str]]]:
    """The documented schemas and what each column holds: the tables of docs/conns.md and
    docs/fleet.md are made from these (`schema_markdown`), and a test keeps them equal."""
    return {
        "connections": (conn_schema(), _CONN_NOTES),
        "packets": (packet_schema(), _PACKET_NOTES),
        "findings": (finding_schema(), _FINDING_NOTES),
    }


def schema_markdown(name: str) -> str:
    """The Markdown table of one documented schema: column, Arrow type, meaning."""
    schema, notes = schemas()[name]
    lines = ["| column | Arrow type | meaning |", "|---|---|---|"]
    for f in schema:
        lines.append(f"| `{f.name}` | `{_type_text(f.type)}` | {notes.get(f.name, '')} |")
    return "\n".join(lines) + "\n"


def _type_text(t: pa.DataType) -> str:
    """An Arrow type as the docs write it: ``dictionary<int32, string>``, ``list<int64>``."""
    import pyarrow as pa

    if pa.types.is_dictionary(t):
        return f"dictionary<{t.index_type}, {t.value_type}>"
    if pa.types.is_list(t):
        return f"list<{_type_text(t.value_type)}>"
    return str(t)


def update_docs(path: str) -> bool:
    """Rewrite the tables between ``<!-- arrow-schema:NAME -->`` and ``<!-- /arrow-schema -->``
    in a Markdown file from the code; whether anything changed."""
    import re

    with open(path, encoding="utf-8") as f:
        text = f.read()
    new = re.sub(
        r"(<!-- arrow-schema:(\w+) -->\n).*?(<!-- /arrow-schema -->)",
        lambda m: m.group(1) + schema_markdown(m.group(2)) + m.group(3),
        text,
        flags=re.S,
    )
    if new != text:
        with open(path, "w", encoding="utf-8") as f:
            f.write(new)
    return new != text


def partition(point: str) -> str:
    """The hive-style directory of a capture point: ``point=NAME``, characters other than
    letters, digits and ``-_.~`` percent-encoded (as pyarrow's hive partitioning decodes)."""
    from urllib.parse import quote

    return "point=" + quote(point, safe="")


def _finding_rows(findings: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Findings (few per capture point) as rows of `finding_schema`."""
    import datetime as dt
    import json

    from tcpwhy.diagnose.fleet import finding_server

    rows = []
    for f in findings:
        facts = f.get("facts") or {}
        t = facts.get("server_idle_timeout_s")
        first_ns = int(f.get("first_ns") or 0)
        rows.append(
            {
                "kind": f["kind"],
                "severity": f["severity"],
                "count": int(f["count"]),
                "server": finding_server(f) or None,
                "server_idle_timeout_s": float(t["median"])
                if isinstance(t, dict) and "median" in t
                else None,
                "summary": f["summary"],
                "first": dt.datetime.fromtimestamp(first_ns // 1000 / 1e6, dt.UTC),
                "first_ns": first_ns,
                "last_ns": int(f.get("last_ns") or 0),
                "streams": f.get("streams") or [],
                "frames": f.get("frames") or [],
                "examples": f.get("examples") or [],
                "explanation": f.get("explanation", ""),
                "causes": f.get("causes") or [],
                "fixes": f.get("fixes") or [],
                "errors": f.get("errors") or [],
                "display_filter": f.get("display_filter"),
                "facts": json.dumps(facts, default=str, sort_keys=True),
                "timeline": json.dumps(f.get("timeline") or [], default=str),
            }
        )
    return rows


def _first_ts(path: str) -> tuple[int, str]:
    """When a capture file starts (its first chunk's earliest packet), to join a point's
    files in time order; an empty file sorts last."""
    from tcpwhy.capture import iter_tables

    for t in iter_tables(path, reuse=True):
        if len(t):
            return int(t["ts_ns"].min()), path
    return 2**63 - 1, path


def point_seed(run_seed: int, point: str) -> int:
    """The uid seed of one capture point: the run's random seed mixed with its name, so that
    uids differ across points (they number records from 0 at each) wherever a point runs."""
    import hashlib

    h = hashlib.blake2b(f"{run_seed}\0{point}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "little")


def write_point(
    staging: str,
    point: str,
    files: list[str],
    findings: list[dict[str, Any]],
    run_seed: int,
) -> int:
    """One capture point's partitions of both datasets under `staging` (the dataset being
    written, `ParquetDataset`), from the point's readable files (local paths); the connection
    rows written. Runs where the point was diagnosed (a Dask worker, or this process)."""
    pa = require_pyarrow()
    from tcpwhy.decode.table import CaptureStats
    from tcpwhy.tcp.records import RecordOptions
    from tcpwhy.views import connection_batches

    if not os.path.isdir(staging):  # the run was abandoned: write nothing
        raise TcpwhyError(staging, "the dataset being written is gone")
    dirs = {}
    for name in DATASETS:
        dirs[name] = os.path.join(staging, name, partition(point))
        os.makedirs(dirs[name], exist_ok=True)
    fpath = os.path.join(dirs["findings"], "part-0.parquet")
    schema = finding_schema()
    pa.parquet.write_table(
        pa.Table.from_pylist(_finding_rows(findings), schema=schema), fpath, compression="zstd"
    )
    ordered = [p for _, p in sorted(_first_ts(f) for f in files)]
    ropts = RecordOptions(uid_seed=point_seed(run_seed, point))
    # the records as `conns --format parquet` has them: the point's files one capture
    return _write_conns(
        os.path.join(dirs["connections"], "part-0.parquet"),
        lambda: connection_batches(
            ordered, [CaptureStats() for _ in ordered], record_options=ropts, rotated=True
        )[1],
    )


def check_outdir(outdir: str) -> str:
    """The absolute path of ``--parquet OUTDIR``, or one line saying why it cannot be one:
    checked before any work is done."""
    require_pyarrow()
    if outdir.startswith("file://"):
        outdir = outdir[len("file://") :]
    elif "://" in outdir:
        raise TcpwhyError(outdir, "--parquet writes to a local (or shared) directory")
    path = os.path.abspath(outdir)
    if not os.path.isdir(os.path.dirname(path)):
        raise TcpwhyError(outdir, "cannot write: No such file or directory")
    if os.path.exists(path):
        if not os.path.isdir(path):
            raise TcpwhyError(outdir, "exists and is not a directory")
        if not set(os.listdir(path)) <= set(DATASETS):
            raise TcpwhyError(outdir, "exists and is not a dataset of tcpwhy's")
    return path


class ParquetDataset:
    """``analyze --parquet OUTDIR``: the datasets are written into a directory beside OUTDIR
    and renamed into place only when every capture point is written, so a run that fails
    or is interrupted leaves no half dataset. OUTDIR may be new, empty, or an earlier
    dataset of tcpwhy's (replaced)."""

    def __init__(self, outdir: str) -> None:
        import secrets
        import tempfile

        self.outdir = check_outdir(outdir)
        parent = os.path.dirname(self.outdir)
        try:
            self.staging = tempfile.mkdtemp(
                prefix=f".{os.path.basename(self.outdir)}.", suffix=".part", dir=parent
            )
        except OSError as exc:
            raise TcpwhyError(outdir, f"cannot write: {exc.strerror or exc}") from None
        for name in DATASETS:
            os.mkdir(os.path.join(self.staging, name))
        self.seed = secrets.randbits(63)

    def commit(self) -> None:
        """Rename the finished datasets into place (an earlier dataset there is replaced)."""
        import shutil

        old = None
        if os.path.exists(self.outdir):
            old = self.staging + ".old"
            os.rename(self.outdir, old)
        os.rename(self.staging, self.outdir)
        if old:
            shutil.rmtree(old, ignore_errors=True)

    def abandon(self) -> None:
        import shutil

        shutil.rmtree(self.staging, ignore_errors=True)


if __name__ == "__main__":  # python -m tcpwhy.report.parquet docs/conns.md docs/fleet.md
    import sys

    for doc in sys.argv[1:]:
        print(doc, "updated" if update_docs(doc) else "unchanged")
