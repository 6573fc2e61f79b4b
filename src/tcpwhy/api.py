"""tcpwhy's Python API: the command line's views of a capture, as Python objects.

    cap = tcpwhy.open("incident.pcap")            # nothing is read yet
    cap.findings                                   # what `tcpwhy analyze` reports
    cap.connections.to_arrow()                     # what `tcpwhy conns` writes, as Arrow
    cap.packets["stream"]                          # packet columns (numpy), by name
    cap.flow(0).to_svg()                           # `tcpwhy flow FILE 0 --format svg`
    tcpwhy.analyze(["a.pcap", "b.pcap"])           # the whole report, as `analyze --format json`

Every view is computed by the functions the commands call (`tcpwhy.views`: the command
formats what they yield as it reads, a `Capture` keeps it), so a value here is the value
the command prints. Errors are exceptions carrying the command's message
(`CaptureError` and its subclasses, `FilterError`); warnings the command prints on
stderr (a capture cut short) are `CaptureWarning`s; nothing is printed.

The names here are the stable API: tests/test_api.py pins their signatures.
"""

from __future__ import annotations

import builtins
import importlib
import io
import numbers
import os
import shutil
import tempfile
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from html import escape
from typing import IO, TYPE_CHECKING, Any, TypeVar, Union

import numpy as np
import numpy.typing as npt

from tcpwhy.errors import (
    CaptureError,
    NotACaptureError,
    TcpwhyError,
    TruncatedCaptureError,
    UnsupportedLinkTypeError,
)

if TYPE_CHECKING:
    import pandas
    import polars
    import pyarrow

    from tcpwhy.decode.table import CaptureStats
    from tcpwhy.diagnose import model
    from tcpwhy.filter import DisplayFilter
    from tcpwhy.report.flow import Ladder, LadderView
    from tcpwhy.report.flow_pair import PairView
    from tcpwhy.tcp.records import ConnColumns, RecordOptions

Source = Union[str, "os.PathLike[str]", IO[bytes]]
"""A capture: a path, an fsspec URL (``s3://…``, with fsspec installed), or a binary file
object (read once, from where it stands)."""

__all__ = [
    "Capture",
    "CaptureWarning",
    "Field",
    "Finding",
    "FleetReport",
    "Flow",
    "Report",
    "Table",
    "analyze",
    "open",
]


class CaptureWarning(UserWarning):
    """A problem after the first packet (a record cut short): what was read is still used,
    as the command line shows it and prints the same text on stderr."""


# ---------------------------------------------------------------------------------------
# sources
# ---------------------------------------------------------------------------------------


def _classify(exc: TcpwhyError, names: Mapping[str, str]) -> TcpwhyError:
    """The reader's CaptureError as the subclass its message names, same where and reason
    (a spooled file's temporary path replaced by the name the caller gave); another error
    with that name only."""
    where = names.get(exc.where, exc.where)
    if type(exc) is not CaptureError:
        if where == exc.where:
            return exc
        try:
            return type(exc)(where, exc.reason)
        except TypeError:  # an error class of another signature: as it is
            return exc
    r = exc.reason
    cls: type[CaptureError] = NotACaptureError
    if "unsupported link type" in r:
        cls = UnsupportedLinkTypeError
    elif r.startswith(("truncated", "corrupt gzip")):
        cls = TruncatedCaptureError
    return cls(where, r)


class _Sources:
    """The caller's sources as local paths: plain paths as they are, file objects and URLs
    copied once into a private temporary directory (the reader wants a file it can open),
    removed when the `Capture` is garbage-collected."""

    def __init__(self, sources: Sequence[Source]) -> None:
        self._given = list(sources)
        self._paths: list[str] | None = None
        self.names: dict[str, str] = {}
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    def display(self) -> list[str]:
        out = []
        for s in self._given:
            if isinstance(s, (str, os.PathLike)):
                out.append(os.fspath(s))
            else:
                out.append(str(getattr(s, "name", "<file object>")))
        return out

    def paths(self) -> list[str]:
        if self._paths is None:
            self._paths = [self._local(k, s) for k, s in enumerate(self._given)]
        return self._paths

    def command_paths(self) -> list[str]:
        """`paths` for a command: a missing package (fsspec, or the URL's filesystem) is the
        command's one line, ``tcpwhy: URL: reason`` and exit status 2, not an ImportError."""
        try:
            return self.paths()
        except ImportError as exc:
            where, _, reason = str(exc).partition(": ")  # "URL: reason", the API's words
            raise TcpwhyError(where, reason) from None

    def close(self) -> None:
        """Removes the copies now, not when this object is collected (a command's own)."""
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def _spool_dir(self) -> str:
        if self._tmp is None:
            # removed with this object (TemporaryDirectory's own finalizer)
            self._tmp = tempfile.TemporaryDirectory(prefix="tcpwhy-")
        return self._tmp.name

    def _local(self, k: int, s: Source) -> str:
        if isinstance(s, (str, os.PathLike)):
            text = os.fspath(s)
            if "\0" in text:  # no file has such a name (the system refuses to look)
                raise NotACaptureError(text, "no such file (the name holds a NUL character)")
            if "://" not in text:
                return text
            try:
                import fsspec
            except ImportError:
                raise ImportError(
                    f"{text}: reading a URL needs fsspec (pip install fsspec, plus s3fs or "
                    "gcsfs for cloud storage)"
                ) from None
            dest = os.path.join(self._spool_dir(), f"{k}-{os.path.basename(text) or 'capture'}")
            try:
                with fsspec.open(text, "rb") as src, builtins.open(dest, "wb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
            except FileNotFoundError:
                raise NotACaptureError(text, "no such file") from None
            except OSError as exc:
                raise NotACaptureError(text, exc.strerror or str(exc)) from None
            except ValueError as exc:  # a protocol fsspec does not know
                raise NotACaptureError(text, f"cannot read this URL: {exc}") from None
            except ImportError as exc:  # the protocol's package is missing (http: aiohttp)
                raise ImportError(f"{text}: cannot read this URL: {exc}") from None
            self.names[dest] = text
            return dest
        name = str(getattr(s, "name", "") or "<file object>")
        dest = os.path.join(self._spool_dir(), f"{k}-{os.path.basename(name) or 'capture'}")
        with builtins.open(dest, "wb") as out:
            try:
                shutil.copyfileobj(s, out, 1 << 20)
            except (OSError, ValueError) as exc:  # closed, opened for writing only
                raise NotACaptureError(name, f"cannot read this file object: {exc}") from None
        self.names[dest] = name
        return dest


def _as_list(path_or_paths: Source | Sequence[Source]) -> list[Source]:
    out: list[Any]
    if isinstance(path_or_paths, (str, os.PathLike, io.IOBase)) or hasattr(path_or_paths, "read"):
        out = [path_or_paths]
    elif isinstance(path_or_paths, (bytes, bytearray, memoryview)) or not hasattr(
        path_or_paths, "__iter__"
    ):
        out = [path_or_paths]  # bytes are not a list of captures
    else:
        out = list(path_or_paths)
    if not out:
        raise ValueError("no capture given")
    for x in out:
        if not (isinstance(x, (str, os.PathLike)) or hasattr(x, "read")):
            raise TypeError(
                "a capture is a path, an fsspec URL or a binary file object, "
                f"not {type(x).__name__}"
            )
        if isinstance(x, io.TextIOBase):  # caught here: copying it failed deep in shutil
            raise TypeError("a capture's file object reads bytes: open it with 'rb', not 'r'")
    return out


# ---------------------------------------------------------------------------------------
# tables
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Field:
    """One column of a table: numpy dtype, shape per row, meaning, and for a column of codes
    the words they index (`to_arrow` writes such a column as a dictionary of those words)."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    meaning: str
    words: tuple[str, ...] | None = None


def _import_behind(module: str) -> None:
    """Import `module` in a thread of its own if it is installed and not imported yet: the
    reading that follows spends its time in compiled loops that release the GIL, so the
    import (a tenth of a second for pyarrow) costs no wall time there."""
    import sys
    import threading
    from importlib.util import find_spec

    if module in sys.modules or find_spec(module) is None:
        return
    threading.Thread(
        target=importlib.import_module, args=(module,), name="tcpwhy-import", daemon=True
    ).start()


def _need(module: str, what: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(f"{what} needs {module}: pip install {module}") from None


def _whole(v: Any, name: str) -> int:
    """`v` as an int, for an argument that counts or numbers: a float (NaN, infinity, 2.5),
    a string or None is the caller's TypeError, named, not ``int()``'s."""
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        raise TypeError(f"{name} is a whole number, not {type(v).__name__}")
    return int(v)


def _seconds(v: Any, name: str) -> float:
    """A threshold in seconds as ``analyze``'s options take it (`positive_float`): a
    number above 0 and at most `LARGEST_FLOAT`."""
    from tcpwhy.cli_helpers import LARGEST_FLOAT

    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise TypeError(f"{name} is a number of seconds, not {type(v).__name__}")
    if not 0 < float(v) <= LARGEST_FLOAT:
        raise ValueError(f"{name} must be above 0 and at most {LARGEST_FLOAT:.0f}, not {v}")
    return float(v)


def _nets(v: Any) -> str | list[str] | None:
    """`local_nets` as ``--local-nets`` takes it: CIDR text, or a list of them."""
    if v is None or isinstance(v, str):
        return v
    nets = list(v) if isinstance(v, Iterable) and not isinstance(v, (bytes, bytearray)) else None
    if nets is None or not all(isinstance(x, str) for x in nets):
        raise TypeError("local_nets is CIDR text (or 'private'), or a list of them")
    return nets


def _from_numpy(
    pa: Any, v: npt.NDArray[Any], typ: Any = None, null: npt.NDArray[np.bool_] | None = None
) -> Any:
    """A 1-D numpy array as an Arrow array over the same memory (booleans packed into bits),
    of type `typ` (default: the numpy dtype's), null where `null`. Built from buffers because
    ``pa.array`` imports pandas on first use: half a second `to_arrow` need not spend."""
    v = np.ascontiguousarray(v)
    if v.dtype == np.bool_:
        data = pa.py_buffer(np.packbits(v, bitorder="little"))
    else:
        data = pa.py_buffer(v)
    valid = None if null is None else pa.py_buffer(np.packbits(~null, bitorder="little"))
    nulls = -1 if null is None else int(null.sum())
    t = pa.from_numpy_dtype(v.dtype) if typ is None else typ
    return pa.Array.from_buffers(t, len(v), [valid, data], null_count=nulls)


def _strings(pa: Any, texts: Sequence[str]) -> Any:
    """An Arrow string array of a few texts (a column's words), without ``pa.array``."""
    raw = [t.encode() for t in texts]
    offsets = np.zeros(len(raw) + 1, np.int32)
    np.cumsum([len(b) for b in raw], out=offsets[1:])
    return pa.StringArray.from_buffers(len(raw), pa.py_buffer(offsets), pa.py_buffer(b"".join(raw)))


class Table:
    """Columns of one row per packet or per connection: numpy arrays by name, with the
    documented `schema`, and conversions to Arrow, pandas and polars."""

    kind = "table"

    def __init__(self, columns: dict[str, npt.NDArray[Any]], schema: dict[str, Field]) -> None:
        self._cols = columns
        self._schema = schema

    @property
    def schema(self) -> dict[str, Field]:
        """The fields, in column order, each with its type and meaning."""
        return dict(self._schema)

    @property
    def columns(self) -> list[str]:
        """Column names, in order."""
        return list(self._schema)

    def __len__(self) -> int:
        """Rows."""
        first = next(iter(self._schema))
        return len(self[first])

    def __getitem__(self, name: str) -> npt.NDArray[Any]:
        """The column `name` as a numpy array (codes for a column with `words`)."""
        if not isinstance(name, str):
            raise TypeError(f"a column is asked for by its name, not by {type(name).__name__}")
        if name not in self._schema:
            raise KeyError(f"no column {name!r}; columns: {', '.join(self._schema)}")
        return self._column(name)

    def _column(self, name: str) -> npt.NDArray[Any]:
        return self._cols[name]

    def __contains__(self, name: object) -> bool:
        """Whether `name` is a column: ``"local_orig" in t`` tells whether the table was
        read with ``local_nets`` before a column lookup raises."""
        return isinstance(name, str) and name in self._schema

    def __iter__(self) -> Iterator[str]:
        """The column names, in order, as a dict's keys are: ``{k: t[k] for k in t}``
        (a column is made, or copied out of Arrow text, only when asked for by name)."""
        return iter(self._schema)

    def to_arrow(self) -> pyarrow.Table:
        """An Arrow table: numeric columns share the numpy buffers (no copy); times are
        ``timestamp[ns, UTC]``/``duration[ns]`` over the same integers; code columns are
        dictionaries of their words; booleans and text are built."""
        pa = _need("pyarrow", f"{type(self).__name__}.to_arrow()")
        arrays = [self._arrow(pa, f) for f in self._schema.values()]
        return pa.Table.from_arrays(arrays, names=list(self._schema))

    def _arrow(self, pa: Any, f: Field) -> Any:
        v = self[f.name]
        if f.words is not None:
            return pa.DictionaryArray.from_arrays(_from_numpy(pa, v), _strings(pa, f.words))
        if v.ndim == 2:
            flat = _from_numpy(pa, np.ascontiguousarray(v).reshape(-1))
            return pa.FixedSizeListArray.from_arrays(flat, v.shape[1])
        if v.dtype == object:
            return _strings(pa, v.tolist())
        return _from_numpy(pa, v)

    def to_pandas(self) -> pandas.DataFrame:
        """A pandas DataFrame (through Arrow: code columns become categoricals)."""
        _need("pandas", f"{type(self).__name__}.to_pandas()")
        return self.to_arrow().to_pandas()

    def to_polars(self) -> polars.DataFrame:
        """A polars DataFrame (through Arrow, sharing its buffers where polars can)."""
        pl = _need("polars", f"{type(self).__name__}.to_polars()")
        return pl.from_arrow(self.to_arrow())

    def __repr__(self) -> str:
        """Its size only: a table of millions of rows prints in one line."""
        return f"<tcpwhy {self.kind} table: {len(self):,} rows × {len(self._schema)} columns>"

    def _repr_html_(self) -> str:
        n = len(self)
        head = [k for k, f in self._schema.items() if f.shape == ()][:12]
        rows = "".join(
            "<tr>" + "".join(f"<td>{escape(str(self[k][i]))}</td>" for k in head) + "</tr>"
            for i in range(min(n, 10))
        )
        cols = "".join(
            f"<th title='{escape(self._schema[k].meaning)}'>{escape(k)}</th>" for k in head
        )
        return (
            f"<div><b>tcpwhy {escape(self.kind)} table</b>: {n:,} rows × {len(self._schema)} "
            f"columns (first {len(head)} shown)<table><tr>{cols}</tr>{rows}</table></div>"
        )


_TIME_COLUMNS = {"ts_ns": "timestamp", "start_ns": "timestamp", "duration_ns": "duration"}


class _TimedTable(Table):
    def _arrow(self, pa: Any, f: Field) -> Any:
        kind = _TIME_COLUMNS.get(f.name)
        if kind is None:
            return super()._arrow(pa, f)
        v = np.ascontiguousarray(self[f.name], np.int64)
        typ = pa.timestamp("ns", tz="UTC") if kind == "timestamp" else pa.duration("ns")
        return _from_numpy(pa, v, typ)


PACKET_EXTRA: dict[str, str] = {
    "stream": "Wireshark's tcp.stream number of the packet's connection",
}
"""Columns of `Capture.packets` besides the decoder's (tcpwhy.decode.table.COLUMNS)."""

PACKET_HIDDEN = ("payload_off",)
"""Decoder columns left out of `Capture.packets`: offsets into a buffer the table does not
expose."""


def packet_schema() -> dict[str, Field]:
    """The fields of `Capture.packets`: the decoder's columns, then `PACKET_EXTRA`."""
    from tcpwhy.decode.table import COLUMNS

    out = {
        k: Field(k, np.dtype(dt).str, shape, meaning)
        for k, (dt, shape, meaning) in COLUMNS.items()
        if k not in PACKET_HIDDEN
    }
    out["stream"] = Field("stream", np.dtype("i8").str, (), PACKET_EXTRA["stream"])
    return out


class PacketTable(_TimedTable):
    """One row per TCP packet, in capture order (what `tcpwhy packets` lists): the decoder's
    columns (docs/api.md, tcpwhy.decode.table) plus the packet's `stream`. ``ts_ns`` is a
    UTC timestamp in Arrow."""

    kind = "packets"


CONN_EXTRA: dict[str, str] = {
    "orig_h": "originator address as text (the jsonl record's orig_h)",
    "resp_h": "responder address as text (the jsonl record's resp_h)",
    "irtt_ns": "SYN to the originator's ACK of the SYN-ACK; null (Arrow) without a handshake",
    "community_id": "the flow's Community ID (``1:`` and base64), under `community_id_seed`",
    "local_orig": "whether the originator's address is in `local_nets` (only with local_nets)",
    "local_resp": "whether the responder's address is in `local_nets` (only with local_nets)",
}


def connection_schema(local: bool = False) -> dict[str, Field]:
    """The fields of `Capture.connections`: the connection record columns
    (tcpwhy.tcp.records.COLUMNS, words decoded in Arrow) with text addresses after each
    address pair, the Community ID, and with `local` (``local_nets`` given) local_orig and
    local_resp, as ``conns`` writes them only then."""
    from tcpwhy.tcp.records import COLUMNS, WORD_COLUMNS

    out: dict[str, Field] = {}
    for k, (dt, shape, meaning) in COLUMNS.items():
        words = WORD_COLUMNS.get(k) if k in WORD_COLUMNS else None
        if k == "history":
            out[k] = Field(k, "str", (), "Zeek's history letters")
            continue
        if k == "history_len":
            continue
        if k == "irtt_ns":
            meaning = CONN_EXTRA["irtt_ns"]
        out[k] = Field(k, np.dtype(dt).str, shape, meaning, words)
        if k in ("orig_lo", "resp_lo"):
            h = k[:4] + "_h"
            out[h] = Field(h, "str", (), CONN_EXTRA[h])
    out["community_id"] = Field("community_id", "str", (), CONN_EXTRA["community_id"])
    if local:
        for k in ("local_orig", "local_resp"):
            out[k] = Field(k, "|b1", (), CONN_EXTRA[k])
    return out


_TEXT_COLUMNS = ("orig_h", "resp_h", "history", "community_id")


class ConnectionTable(_TimedTable):
    """One row per connection, in stream order (what `tcpwhy conns` writes): the record
    columns of docs/conns.md as numbers and codes, text addresses, Zeek's history.

    The text columns are made only when asked for, as Arrow string arrays cut from rows of
    text that compiled code wrote while the capture was read (no Python string per row: on a
    capture of 200,000 connections Python strings cost more than the reading)."""

    kind = "connections"

    def __init__(
        self,
        columns: dict[str, npt.NDArray[Any]],
        schema: dict[str, Field],
        conns: ConnColumns,
        placed: dict[str, npt.NDArray[Any]] | None = None,
    ) -> None:
        super().__init__(columns, schema)
        self._conns = conns
        self._placed = placed or {}
        self._text: dict[str, Any] = {}

    def _text_arrow(self, name: str) -> Any:
        """The Arrow string array of a text column, made once: cut from the rows the records
        thread wrote while the capture was read (`_gathered`), or else written now."""
        if name not in self._text:
            from tcpwhy.report.parquet import _fixed_text

            got = self._placed
            rows, lengths = (
                (got[name], got[f"{name}_len"]) if name in got else _text_rows(self._conns, name)
            )
            self._text[name] = _fixed_text(rows, lengths)
        return self._text[name]

    def _column(self, name: str) -> npt.NDArray[Any]:
        if name in _TEXT_COLUMNS and name not in self._cols:
            arr = self._text_arrow(name).to_numpy(zero_copy_only=False)
            self._cols[name] = np.asarray(arr, dtype=object)
        return self._cols[name]

    def __len__(self) -> int:
        """Rows: the records' count, without making a text column to count it."""
        return len(self._conns)

    def _arrow(self, pa: Any, f: Field) -> Any:
        if f.name in _TEXT_COLUMNS:
            return self._text_arrow(f.name)
        if f.name == "irtt_ns":
            from tcpwhy.tcp.records import IRTT_UNSET

            v = self[f.name]
            v = np.ascontiguousarray(v, np.int64)
            return _from_numpy(pa, v, pa.duration("ns"), v == IRTT_UNSET)
        return super()._arrow(pa, f)


_PLACED_TEXT = ("orig_h", "resp_h", "community_id")
"""The text columns whose rows `_gathered` writes batch by batch while the capture is read
(the history's rows are the records' own)."""


def _gathered(
    batches: Iterator[Any], options: RecordOptions, unbuilt: bool
) -> tuple[ConnColumns, dict[str, npt.NDArray[Any]]]:
    """All the records, in stream order, and the rows of their `_PLACED_TEXT` columns in that
    order (each name, and its ``_len``): each batch is built (`unbuilt`: the batches are
    jobs), hashed, its addresses written, and put in its place (`StreamOrder`) on the
    builder's thread of its own while the next ones are read
    (`tcp.connections._built_beside`). The compiled building, hashing and writing and
    numpy's placing release the GIL; after the reading, the table is ready but for cutting
    the text into Arrow's buffers."""
    import functools

    from tcpwhy.tcp.connections import _built_beside
    from tcpwhy.tcp.records import StreamOrder

    joined = StreamOrder()

    def place(item: Any) -> ConnColumns:
        c: ConnColumns = (item() if unbuilt else item).with_options(options)
        if len(c):
            extra: dict[str, npt.NDArray[Any]] = {}
            for name in _PLACED_TEXT:
                extra[name], extra[f"{name}_len"] = _text_rows(c, name)
            joined.add(c, extra)
        return c

    for _ in _built_beside(functools.partial(place, item) for item in batches):
        pass  # each batch is in `joined` once built
    return joined.result()


def _text_rows(
    c: ConnColumns, name: str
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.integer[Any]]]:
    """Text column `name` (`_TEXT_COLUMNS`) of a batch as rows of a fixed width and the length
    of each: Community IDs with their ``1:``, addresses as Wireshark writes them, the
    history."""
    from tcpwhy.report.parquet import address_rows, community_id_rows

    col = c.cols
    if name == "history":
        return col["history"], col["history_len"]
    if name == "community_id":
        return community_id_rows(c.community_id_text())
    w = name[:4]
    return address_rows(col[f"{w}_hi"], col[f"{w}_lo"])


def _connection_table(
    c: ConnColumns, placed: dict[str, npt.NDArray[Any]] | None = None
) -> ConnectionTable:
    """The public table of a `ConnColumns` batch (its `end` words become the field's)."""
    local = c.options.local_nets is not None
    schema = connection_schema(local)
    cols: dict[str, npt.NDArray[Any]] = {}
    for k in schema:
        if k in ("local_orig", "local_resp"):
            got = c.local(k[6:])
            assert got is not None
            cols[k] = got
        elif k not in _TEXT_COLUMNS:  # made on first use, in bulk (ConnectionTable._text_arrow)
            cols[k] = c.cols[k]
    schema["end"] = Field("end", schema["end"].dtype, (), schema["end"].meaning, tuple(c.end_words))
    sn = schema["server_name"]
    schema["server_name"] = Field(sn.name, sn.dtype, (), sn.meaning, tuple(c.name_words))
    return ConnectionTable(cols, schema, c, placed)


# ---------------------------------------------------------------------------------------
# findings, reports, flows
# ---------------------------------------------------------------------------------------


def _plain(v: Any) -> Any:
    """What `json.loads(json.dumps(v))` gives, without the round trip's cost on long lists."""
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v


class Finding:
    """One finding of the diagnosis: what went wrong on which connections, why, and what to
    change; `to_dict()` is its object in ``tcpwhy analyze --format json``."""

    def __init__(self, finding: model.Finding, report: model.Report | None = None) -> None:
        self._f = finding
        self._report = report

    @property
    def kind(self) -> str:
        """The finding's kind, e.g. ``stale-keepalive-reuse`` (``tcpwhy explain`` lists them)."""
        return self._f.kind

    @property
    def severity(self) -> str:
        """``error``, ``warning`` or ``info``."""
        return self._f.severity.label

    @property
    def summary(self) -> str:
        """One sentence: what happened."""
        return self._f.summary

    @property
    def streams(self) -> list[int]:
        """tcp.stream numbers of every connection showing it."""
        return list(self._f.streams)

    @property
    def frames(self) -> list[int]:
        """Frame numbers of the decisive packets."""
        return list(self._f.frames)

    @property
    def examples(self) -> list[int]:
        """A few of `streams`, the ones the explanation and evidence describe."""
        return list(self._f.examples)

    @property
    def explanation(self) -> str:
        """What happened, in paragraphs separated by blank lines."""
        return self._f.explanation

    @property
    def causes(self) -> list[str]:
        """Likely causes, most likely first."""
        return list(self._f.causes)

    @property
    def fixes(self) -> list[str]:
        """What to change, per stack."""
        return list(self._f.fixes)

    @property
    def errors(self) -> list[str]:
        """What the applications most likely logged."""
        return list(self._f.errors)

    @property
    def count(self) -> int:
        """Connections (or events) showing it."""
        return self._f.count

    @property
    def display_filter(self) -> str:
        """Wireshark's display filter for exactly its connections, the one in ``analyze
        --format json``: every stream, runs as ranges (``tcp.stream in {0..199, 204}``);
        its frames when it has no stream."""
        return self._f.display_filter

    @property
    def fixes_by_stack(self) -> list[dict[str, Any]]:
        """The fixes as ``{stack, knob, value, text}`` dicts, for a script that picks its
        stack's setting (``stack == "any"``: advice for whatever runs there); the same
        objects as ``analyze --format json``'s ``fixes_by_stack``."""
        from tcpwhy.diagnose.knowledge import fixes_of

        return [x.to_json() for fx in self._f.fixes for x in fixes_of(fx)]

    @property
    def first_time(self) -> str:
        """When its first connection started, RFC 3339 in UTC (as ``analyze --format json``)."""
        from tcpwhy.timestamps import rfc3339

        return rfc3339(self._f.first_ns)

    @property
    def last_time(self) -> str:
        """When the last event it names happened, RFC 3339 in UTC (as ``analyze --format json``)."""
        from tcpwhy.timestamps import rfc3339

        return rfc3339(self._f.last_ns)

    def to_dict(self) -> dict[str, Any]:
        """The finding's object in ``tcpwhy analyze --format json``."""
        d = self._f.to_json()
        return {k: v if k in ("streams", "frames", "examples") else _plain(v) for k, v in d.items()}

    def __repr__(self) -> str:
        return f"<tcpwhy Finding {self.severity} {self.kind}: {self.count} connection(s)>"

    def _repr_html_(self) -> str:
        """The finding's card of ``analyze --format html`` (same template, same ladders), in
        the page's style scoped to the card, so a notebook shows what the report shows."""
        from tcpwhy.report.html import finding_card, notebook_html

        return notebook_html(finding_card(self._report, self._f))


class Report:
    """A diagnosis, as ``tcpwhy analyze`` makes it: the captures' summary, the findings, and
    connections counted by how they ended; `to_dict()` is ``analyze --format json``."""

    def __init__(self, report: model.Report) -> None:
        self._r = report
        self._findings = [Finding(f, report) for f in report.findings]

    @property
    def findings(self) -> list[Finding]:
        """Worst first, then in time order."""
        return list(self._findings)

    @property
    def connections(self) -> dict[str, int]:
        """Connections by how they ended."""
        return dict(self._r.endings)

    @property
    def capture(self) -> dict[str, Any]:
        """Files, packet and connection counts, time span, warnings (the JSON's ``capture``)."""
        return dict(self._r.to_json()["capture"])

    @property
    def exit_status(self) -> int:
        """What ``tcpwhy analyze`` exits with: 1 with a warning or error finding, else 0."""
        return self._r.exit_status()

    def to_dict(self) -> dict[str, Any]:
        """The object ``tcpwhy analyze --format json`` writes."""
        d = self._r.to_json()
        d["findings"] = [f.to_dict() for f in self._findings]
        return {k: v if k == "findings" else _plain(v) for k, v in d.items()}

    def to_json(self) -> str:
        """``tcpwhy analyze --format json``'s text (without the final newline)."""
        from tcpwhy.diagnose.render import to_json

        return to_json(self._r)

    def to_html(self) -> str:
        """``tcpwhy analyze --format html``: a self-contained page (charts included)."""
        from tcpwhy.report.html import render_html

        return render_html(self._r)

    def to_text(self) -> str:
        """``tcpwhy analyze``'s text."""
        from tcpwhy.diagnose.render import write_text

        out = io.StringIO()
        write_text(self._r, out)
        return out.getvalue()

    def __repr__(self) -> str:
        c = self._r.capture
        return (
            f"<tcpwhy Report: {len(self._findings)} finding(s), {c.packets:,} packets, "
            f"{c.connections:,} connections>"
        )

    def _repr_html_(self) -> str:
        """The page's verdict and finding cards (its templates, its style scoped once for all
        of them), under a line naming the captures; no charts, which need the page's script."""
        from tcpwhy.report.html import findings_html, notebook_html

        c = self._r.capture
        head = (
            f"<p><b>tcpwhy analyze</b> {escape(', '.join(c.files))}: {c.packets:,} TCP packets, "
            f"{c.connections:,} connections, {len(self._findings)} finding(s)</p>"
        )
        return notebook_html("\n".join([head, self._verdict_html(), findings_html(self._r)]))

    def _verdict_html(self) -> str:
        """The verdict line of ``analyze --format html``, from the page's own template: its
        worst finding when that is a warning or an error, else "no problem found"."""
        from tcpwhy.report.html import verdict_html

        return verdict_html(self._r)


class Flow:
    """The ladder of one connection (`tcpwhy flow`): as text, SVG or its JSON document. With
    captures of two points of the path that both saw the connection, the paired ladder (each
    segment's time at both points, losses and injections between them)."""

    def __init__(
        self,
        model: Ladder | PairView,
        stream: int,
        fold: int = 3,
        points: Sequence[str] = (),
        note: str | None = None,
    ) -> None:
        self._model = model
        self.stream = stream
        self.fold = fold
        self.points = list(points)
        """The capture files, as given."""
        self.note = note
        """Why a ladder of several capture points shows one point only (``tcpwhy flow``
        prints it on stderr), else None."""
        self._view: LadderView | PairView | None = None

    @property
    def paired(self) -> bool:
        """Whether the ladder joins two capture points."""
        from tcpwhy.report.flow_pair import PairView

        return isinstance(self._model, PairView)

    @property
    def view(self) -> LadderView | PairView:
        """The ladder's model: endpoints, starting and final states, and its rows (packets,
        folds of uneventful segments, packets the filter hid, timers); paired, the
        `tcpwhy.report.flow_pair.PairView` (arrows seen at either point)."""
        if self._view is None:
            from tcpwhy.report.flow import ladder_view
            from tcpwhy.report.flow_pair import PairView

            m = self._model
            self._view = m if isinstance(m, PairView) else ladder_view(m, self.fold)
        return self._view

    @property
    def rows(self) -> list[Any]:
        """The rows (`tcpwhy.report.flow.LadderRow`: kind, rel_s, frame, to_server, label,
        client, server, flagged); paired, the arrows (`tcpwhy.report.flow_pair.PairArrow`)."""
        from tcpwhy.report.flow_pair import PairView

        v = self.view
        return list(v.arrows if isinstance(v, PairView) else v.rows)

    def to_text(self) -> str:
        """``tcpwhy flow FILE… STREAM``'s text."""
        from tcpwhy.report.flow import render
        from tcpwhy.report.flow_pair import PairView, render_pair

        out = io.StringIO()
        if isinstance(self._model, PairView):
            render_pair(self._model, out)
        else:
            render(self._model, out, fold=self.fold)
        return out.getvalue()

    def to_svg(self) -> str:
        """The ladder as an SVG element (``tcpwhy flow --format svg`` without the XML
        declaration)."""
        from tcpwhy.report.flow_pair import PairView
        from tcpwhy.report.svg import render_pair_svg, render_svg

        v = self.view
        title = f"tcp.stream {self.stream}"
        return (
            render_pair_svg(v, title=title)
            if isinstance(v, PairView)
            else render_svg(v, title=title)
        )

    def to_dict(self) -> dict[str, Any]:
        """The document ``tcpwhy flow --format json`` writes (docs/schemas/flow.schema.json)."""
        from tcpwhy.report.flow_pair import PairView, flow_json

        v = self.view
        points = self.points if isinstance(v, PairView) else [", ".join(self.points)]
        return _plain(flow_json(v, self.stream, points))

    def __repr__(self) -> str:
        v = self.view
        return f"<tcpwhy Flow stream {self.stream}: {v.client} ⇄ {v.server}, {len(self.rows)} rows>"

    def _repr_html_(self) -> str:
        return self.to_svg()


# ---------------------------------------------------------------------------------------
# captures
# ---------------------------------------------------------------------------------------


class Capture:
    """One capture (or rotated parts of one, read in order as one timeline; or captures of
    several points of one path, paired as ``tcpwhy analyze`` pairs them). Make it with
    `tcpwhy.open`: nothing is read then.

    Each view (`packets`, `connections`, `report` and its `findings`) reads the files once,
    on its first use, and keeps its result; `flow` keeps the ladders of the last
    `FLOWS_KEPT` streams asked for. Each view reads on its own rather than all of them
    sharing one copy of every packet, so each holds only what it needs: `connections` of
    one file streams it (memory follows the connections open at once: a capture larger
    than memory still gives its connections), `report` keeps per packet only the header
    columns the diagnosis reads (tens of bytes a packet; an uncompressed file's payloads
    stay in the file) and a flow only its stream's packets. `packets` holds every packet's
    columns. With
    `progress`, each reading draws a bar of the bytes read on stderr (rich: in a terminal
    or a notebook); without it nothing is printed."""

    FLOWS_KEPT = 32
    """Ladders `flow` keeps (the last asked for): a notebook that shows a flow again does
    not read the capture again."""

    def __init__(
        self,
        sources: Sequence[Source],
        display_filter: str | None = None,
        boundaries: str = "stream",
        *,
        pair: bool = True,
        reassemble: bool = True,
        check_checksums: bool | None = None,
        max_active: int | None = None,
        local_nets: str | Sequence[str] | None = None,
        community_id_seed: int = 0,
        progress: bool = False,
    ) -> None:
        from tcpwhy.views import connection_options, record_options

        if display_filter is not None and not isinstance(display_filter, str):
            raise TypeError(
                f"display_filter is a Wireshark display filter's text, not {type(display_filter).__name__}"
            )
        if max_active is not None:
            max_active = _whole(max_active, "max_active")
        community_id_seed = _whole(community_id_seed, "community_id_seed")
        local_nets = _nets(local_nets)
        if max_active is not None and max_active < 1:
            raise ValueError(f"max_active must be at least 1, not {max_active}")
        # the rule `tcpwhy conns` follows (ValueError for another boundaries word)
        self._conn_options = connection_options(
            boundaries,
            check_checksums=check_checksums is True,
            ignore_checksums=check_checksums is False,
            max_active=max_active,
        )
        self._record_options = record_options(None, community_id_seed, local_nets)
        self.boundaries = boundaries
        """Where `connections` cuts records: ``stream`` (one per tcp.stream) or ``zeek``."""
        self.pair = pair
        """Whether captures of several points are paired (``--no-pair``: False)."""
        self.reassemble = reassemble
        """Whether IP fragments are joined (``--no-reassemble``: False)."""
        self._src = _Sources(sources)
        self.display_filter = display_filter
        self._flt: DisplayFilter | None = None
        if display_filter is not None:
            from tcpwhy.filter import compile_filter

            self._flt = compile_filter(display_filter)
        self._packets: PacketTable | None = None
        self._connections: ConnectionTable | None = None
        self._report: Report | None = None
        self._flows: OrderedDict[tuple[int, int], Flow] = OrderedDict()
        self.progress = bool(progress)
        """Whether reading a view draws a progress bar on stderr (set it to change your
        mind: it applies to the next reading)."""
        self.warnings: list[str] = []
        """Problems after the first packet, ``FILE: text``, as the commands print them."""

    @property
    def files(self) -> list[str]:
        """The captures as given (paths, URLs, file objects' names)."""
        return self._src.display()

    def _note(
        self, stats: Sequence[CaptureStats], paths: Sequence[str], stacklevel: int = 3
    ) -> None:
        for st, path in zip(stats, paths, strict=True):
            name = self._src.names.get(path, path)
            for w in st.warnings:
                text = f"{name}: {w}"
                if text not in self.warnings:
                    self.warnings.append(text)
                    # from `_note` through the view's property to the caller's line
                    warnings.warn(text, CaptureWarning, stacklevel=stacklevel)

    def _stats(self) -> tuple[list[str], list[CaptureStats]]:
        from tcpwhy.decode.table import CaptureStats

        paths = self._src.paths()
        return paths, [CaptureStats() for _ in paths]

    @contextmanager
    def _reading(
        self, paths: Sequence[str], stats: Sequence[CaptureStats], *, poll: bool = False
    ) -> Iterator[Callable[[], None]]:
        """The block in which a view reads `paths`: the reassembly option set and, with
        `progress`, a bar of the bytes the readers count in `stats` (what ``analyze`` draws).
        Yields the update to call after each chunk or batch; `poll`: a thread calls it too,
        for a view whose reading loop is not ours (a flow's). Without `progress` nothing is
        drawn, and rich is not imported."""
        from tcpwhy.views import reading

        with reading(self.reassemble):
            if not self.progress:
                yield _nothing
                return
            from tcpwhy.console import step_progress
            from tcpwhy.diagnose.engine import _plain_size

            sizes = [_plain_size(p) for p in paths]  # 0: compressed or not a regular file
            total = sum(sizes) if all(sizes) else None
            names = [os.path.basename(self._src.names.get(p, p)) for p in paths]
            with step_progress(True) as bar:
                assert bar is not None

                def update() -> None:
                    at = max((k for k, st in enumerate(stats) if st.bytes_read), default=0)
                    bar(f"reading {names[at]}", sum(st.bytes_read for st in stats), total)

                update()
                with _every(0.1, update) if poll else nullcontext():
                    yield update
                update()  # the bar's last drawing: all that was read

    @property
    def packets(self) -> PacketTable:
        """Every TCP packet (with a display filter, those it matches), as `tcpwhy packets`
        lists them; columns in `PacketTable.schema`. Several files are rotated parts of one
        capture, in the order given."""
        if self._packets is None:
            from tcpwhy.views import packet_chunks

            schema = packet_schema()
            parts: dict[str, list[npt.NDArray[Any]]] = {k: [] for k in schema}
            paths, stats = self._stats()
            try:
                with self._reading(paths, stats) as update:
                    for ch in packet_chunks(paths, stats, self._flt, analysis=False):
                        keep = ch.keep  # the reader reuses its buffers: every column is copied
                        for k, got in parts.items():
                            v = ch.streams["stream"] if k == "stream" else ch.table.cols[k]
                            got.append(v.copy() if keep is None else v[keep])
                        update()
            except TcpwhyError as exc:
                raise _classify(exc, self._src.names) from None
            self._note(stats, paths)
            cols = {
                k: np.concatenate(v) if v else np.zeros((0, *schema[k].shape), schema[k].dtype)
                for k, v in parts.items()
            }
            self._packets = PacketTable(cols, schema)
        return self._packets

    @property
    def connections(self) -> ConnectionTable:
        """One record per connection (with a display filter, the connections with a matching
        packet, each whole), as `tcpwhy conns` writes them, in stream order. Several capture
        points: a connection seen at more than one is the first point's record. With
        ``boundaries="zeek"``, cut where Zeek's timers would and without the packets whose
        checksums are bad, as ``conns --boundaries zeek``."""
        if self._connections is None:
            from tcpwhy.views import connection_batches

            paths, stats = self._stats()
            _import_behind("pyarrow")  # for `to_arrow`, while the capture is read
            try:
                with self._reading(paths, stats) as update, _builder_warnings_as_notes():
                    unbuilt = self._flt is None and len(paths) == 1
                    _, batches = connection_batches(
                        paths,
                        stats,
                        self._flt,
                        pair=self.pair,
                        record_options=self._record_options,
                        threaded=not unbuilt,
                        unbuilt=unbuilt,
                        **self._conn_options,
                    )
                    c, placed = _gathered(
                        (b for _, b, _ in _each_after(batches, update)),
                        self._record_options,
                        unbuilt,
                    )
            except TcpwhyError as exc:
                raise _classify(exc, self._src.names) from None
            self._note(stats, paths)
            table = _connection_table(c.with_options(self._record_options), placed)
            self._connections = table
        return self._connections

    @property
    def report(self) -> Report:
        """The diagnosis of the files, by ``tcpwhy analyze``'s engine (rotated files joined,
        capture points of one path paired)."""
        if self._report is None:
            self._report = _analyze(
                self._src, self._flt, self.pair, self.reassemble, progress=self.progress
            )
        return self._report

    @property
    def findings(self) -> list[Finding]:
        """What went wrong, worst first (``tcpwhy analyze``)."""
        return self.report.findings

    def flow(self, stream: int, *, fold: int = 3) -> Flow:
        """The ladder of tcp.stream `stream` (``tcpwhy flow``); with a display filter, the
        packets it does not match are folded away. `fold`: runs of at least that many
        uneventful segments are one row (0: never). With captures of several points, the
        stream is numbered as at the first, and drawn between the two points that saw it.

        The Flow is kept (the last `FLOWS_KEPT` streams and folds asked for): asking again,
        as a notebook does when it shows a cell again, returns the same Flow without reading
        the capture."""
        key = (_whole(stream, "stream"), _whole(fold, "fold"))
        kept = self._flows.get(key)
        if kept is not None:
            self._flows.move_to_end(key)
            return kept
        flow = self._read_flow(*key)
        self._flows[key] = flow
        while len(self._flows) > self.FLOWS_KEPT:
            self._flows.popitem(last=False)  # the least recently asked for
        return flow

    def _read_flow(self, stream: int, fold: int) -> Flow:
        from tcpwhy.views import flow_model

        paths, stats = self._stats()
        alone: list[str] = []
        try:
            with self._reading(paths, stats, poll=True):
                got = flow_model(
                    paths, int(stream), stats, self._flt, pair=self.pair, unpaired=alone
                )
        except TcpwhyError as exc:
            raise _classify(exc, self._src.names) from None
        self._note(stats, paths, stacklevel=4)  # through `flow` to the caller's line
        note = None
        if alone:
            name = ", ".join(self._src.names.get(p, p) for p in alone[0].split(", "))
            note = (
                f"tcp.stream {int(stream)} of {name} was not seen at the other capture points: "
                "drawn from that point alone"
            )
        return Flow(got, int(stream), fold, self.files, note)

    def __repr__(self) -> str:
        """The files and filter, and whether a view has read them yet."""
        views = (self._packets, self._connections, self._report)
        read = "read" if any(v is not None for v in views) or self._flows else "not read yet"
        flt = f", display_filter={self.display_filter!r}" if self.display_filter else ""
        return f"<tcpwhy Capture {', '.join(self.files)}{flt} ({read})>"

    def _repr_html_(self) -> str:
        parts = [f"<p><b>tcpwhy capture</b> {escape(', '.join(self.files))}"]
        if self.display_filter:
            parts.append(f" · filter <code>{escape(self.display_filter)}</code>")
        if self._packets is not None:
            parts.append(f" · {len(self._packets):,} TCP packets")
        if self._connections is not None:
            parts.append(f" · {len(self._connections):,} connections")
        parts.append("</p>")
        if self._report is not None:
            parts.append(self._report._repr_html_())
        else:
            parts.append("<p>(findings computed on first use of <code>.findings</code>)</p>")
        return "".join(parts)


_T = TypeVar("_T")


def _nothing() -> None:
    """The progress update of a reading without a bar."""


def _each_after(items: Iterable[_T], update: Callable[[], None]) -> Iterator[_T]:
    """`items`, calling `update` as each arrives (the readers' counts are then its own)."""
    for x in items:
        update()
        yield x


@contextmanager
def _every(seconds: float, update: Callable[[], None]) -> Iterator[None]:
    """`update` called every `seconds` on a thread of its own while the block runs: the
    progress of a reading whose loop is in another module (rich's updates take a lock)."""
    import threading

    done = threading.Event()

    def run() -> None:
        while not done.wait(seconds):
            update()

    t = threading.Thread(target=run, name="tcpwhy-progress", daemon=True)
    t.start()
    try:
        yield
    finally:
        done.set()
        t.join()


@contextmanager
def _builder_warnings_as_notes() -> Iterator[None]:
    """The connection builder's RuntimeWarning (``max_active`` evicting) is also one of the
    capture's warnings, which `Capture._note` raises as a `CaptureWarning`: the caller is
    warned once, as the command prints it once, not once per category."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", r"more than \d+ connections active at once", RuntimeWarning
        )
        yield


def _analyze(
    src: _Sources,
    flt: DisplayFilter | None,
    pair: bool = True,
    reassemble: bool = True,
    progress: bool = False,
    **settings: Any,
) -> Report:
    from tcpwhy.console import step_progress
    from tcpwhy.diagnose.registry import Settings
    from tcpwhy.views import diagnosis, reading

    try:
        with reading(reassemble), step_progress(progress) as bar:
            r = diagnosis(src.paths(), Settings(**settings), flt, pair=pair, progress=bar)
    except TcpwhyError as exc:
        raise _classify(exc, src.names) from None
    _given_names(r, src.names)
    return Report(r)


def _given_names(r: model.Report, names: Mapping[str, str]) -> None:
    """The report's files, warnings and timelines name what the caller gave (a URL, a file
    object's name), not the temporary copies read."""
    if not names:
        return
    r.capture.files = [names.get(f, f) for f in r.capture.files]
    warned = []
    for w in r.capture.warnings:
        where, sep, rest = w.partition(": ")
        warned.append(f"{names[where]}{sep}{rest}" if where in names else w)
    r.capture.warnings = warned
    for f in r.findings:
        for step in f.timeline:
            step.file = names.get(step.file, step.file)


class FleetReport:
    """The diagnosis of a fleet, as ``tcpwhy analyze DIR`` makes it: every capture point
    diagnosed apart (here, or on Dask workers), and the findings merged across points by
    kind and server. `to_dict()` is ``analyze DIR --format json``."""

    def __init__(self, report: dict[str, Any]) -> None:
        self._d = report

    @property
    def findings(self) -> list[dict[str, Any]]:
        """The fleet findings, worst first: kind, server, severity, count, capture_points
        ({point: connections}), summary, verdict, and where known server_idle_timeout_s."""
        return [dict(f) for f in self._d["findings"]]

    @property
    def points(self) -> dict[str, list[dict[str, Any]]]:
        """Each capture point's findings (``analyze --format json``'s objects), by point."""
        return {k: list(v) for k, v in self._d["points"].items()}

    @property
    def capture_points(self) -> list[dict[str, Any]]:
        """Each capture point: its name, its files, its connections."""
        return [dict(p) for p in self._d["capture_points"]]

    @property
    def errors(self) -> list[dict[str, str]]:
        """Files that could not be read (``file``, ``reason``): the rest was diagnosed."""
        return [dict(e) for e in self._d["errors"]]

    @property
    def exit_status(self) -> int:
        """What ``tcpwhy analyze DIR`` exits with: 2 with an unreadable file, else 1 with a
        warning or error finding, else 0."""
        from tcpwhy.diagnose.fleet import exit_status

        return exit_status(self._d)

    def to_dict(self) -> dict[str, Any]:
        """The object ``tcpwhy analyze DIR --format json`` writes."""
        import json

        return dict(json.loads(self.to_json()))

    def to_json(self) -> str:
        """``tcpwhy analyze DIR --format json``'s text (without the final newline)."""
        import json

        return json.dumps(self._d, indent=1, default=str)

    def to_text(self) -> str:
        """``tcpwhy analyze DIR``'s text (without the error lines it prints on stderr)."""
        from tcpwhy.diagnose.fleet import write_fleet_text

        out = io.StringIO()
        write_fleet_text(self._d, out)
        return out.getvalue()

    def __repr__(self) -> str:
        return (
            f"<tcpwhy FleetReport: {len(self._d['capture_points'])} capture points, "
            f"{len(self._d['findings'])} finding(s), {len(self._d['errors'])} error(s)>"
        )

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<li><b>[{escape(f['severity'])}]</b> {escape(f['verdict'])}</li>"
            for f in self._d["findings"]
        )
        errs = "".join(
            f"<li>error: {escape(e['file'])}: {escape(e['reason'])}</li>" for e in self._d["errors"]
        )
        return (
            f"<div><p><b>tcpwhy analyze</b>: fleet of {len(self._d['capture_points'])} capture "
            f"points</p><ul>{rows or '<li>no findings</li>'}{errs}</ul></div>"
        )


def open(
    path_or_paths: Source | Sequence[Source],
    *,
    display_filter: str | None = None,
    boundaries: str = "stream",
    pair: bool = True,
    reassemble: bool = True,
    check_checksums: bool | None = None,
    max_active: int | None = None,
    local_nets: str | Sequence[str] | None = None,
    community_id_seed: int = 0,
    progress: bool = False,
) -> Capture:
    """A capture, read on first use: a path, an fsspec URL, a binary file object, or a list
    of them (rotated parts of one capture, in order; several capture points of one path,
    paired). `display_filter` is a Wireshark display filter, as ``-Y``: it raises
    `FilterError` at once if it does not compile. `boundaries`: ``stream`` (one connection
    record per tcp.stream) or ``zeek`` (cut where Zeek would), as ``conns --boundaries``.
    The rest are the commands' options: `pair` False is ``--no-pair`` (every capture
    point's records and ladder, unpaired), `reassemble` False ``--no-reassemble``;
    `check_checksums` True is ``--check-checksums``, False ``--ignore-checksums``, None the
    default (checked with ``boundaries="zeek"`` only); `max_active`, `local_nets` (CIDR
    text, or a list; ``private``) and `community_id_seed` are ``conns --max-active``,
    ``--local-nets`` and ``--community-id-seed`` (ValueError for a value they refuse).
    `progress` True draws a bar of the bytes read on stderr while a view reads the files
    (rich: in a terminal or a notebook), as ``analyze(progress=True)``; without it nothing
    is printed, so a script's output stays its own."""
    return Capture(
        _as_list(path_or_paths),
        display_filter,
        boundaries,
        pair=pair,
        reassemble=reassemble,
        check_checksums=check_checksums,
        max_active=max_active,
        local_nets=local_nets,
        community_id_seed=community_id_seed,
        progress=progress,
    )


def analyze(
    paths: Source | Sequence[Source],
    workers: int | None = None,
    scheduler: str | None = None,
    *,
    display_filter: str | None = None,
    close_wait_s: float = 10.0,
    fin_wait_2_s: float = 5.0,
    pair: bool = True,
    reassemble: bool = True,
    progress: bool = False,
) -> Report | FleetReport:
    """The diagnosis of captures, as ``tcpwhy analyze`` makes it (`close_wait_s` and
    `fin_wait_2_s` are its ``--close-wait`` and ``--fin-wait-2``, `pair` False
    ``--no-pair``, `reassemble` False ``--no-reassemble``): a `Report`.

    A fleet, a directory among `paths` (each sub-directory one capture point, each file in
    it one of its own) or `workers` / `scheduler` given, is a `FleetReport`, made by the
    function ``analyze DIR`` uses: capture points diagnosed apart on a Dask LocalCluster of
    `workers` processes, on the cluster at `scheduler` (``tcp://host:8786``), or here one
    after the other. `progress` draws a progress bar on stderr (else nothing is printed)."""
    if workers is not None:
        workers = _whole(workers, "workers")
    if scheduler is not None and not isinstance(scheduler, str):
        raise TypeError(
            f"scheduler is an address's text (tcp://host:8786), not {type(scheduler).__name__}"
        )
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be at least 1, not {workers}")
    close_wait_s = _seconds(close_wait_s, "close_wait_s")
    fin_wait_2_s = _seconds(fin_wait_2_s, "fin_wait_2_s")
    given = _as_list(paths)
    if workers or scheduler or _is_fleet(given):
        if not all(isinstance(p, (str, os.PathLike)) for p in given):
            raise ValueError("a fleet is read from paths or URLs, not file objects")
        from tcpwhy.diagnose.fleet import _bar, run_fleet

        settings = {"close_wait_s": close_wait_s, "fin_wait_2_s": fin_wait_2_s}
        bar = _bar(always=True) if progress else nullcontext(None)
        with bar as update:
            return FleetReport(
                run_fleet(
                    [os.fspath(p) for p in given],  # type: ignore[arg-type]
                    settings,
                    pair=pair,
                    workers=workers,
                    scheduler=scheduler,
                    progress=update,
                    reassemble=reassemble,
                    display_filter=display_filter,
                )
            )
    flt = None
    if display_filter is not None:
        from tcpwhy.filter import compile_filter

        flt = compile_filter(display_filter)
    return _analyze(
        _Sources(given),
        flt,
        pair,
        reassemble,
        progress,
        close_wait_s=close_wait_s,
        fin_wait_2_s=fin_wait_2_s,
    )


def _is_fleet(given: Sequence[Source]) -> bool:
    from tcpwhy.diagnose.fleet import is_fleet

    paths = [os.fspath(p) for p in given if isinstance(p, (str, os.PathLike))]
    return bool(paths) and is_fleet(paths)
