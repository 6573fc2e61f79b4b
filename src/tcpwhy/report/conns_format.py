"""Columnar writers of `tcpwhy conns`: each format's line as a program for the compiled row
formatter (`tcpwhy.report.conns_kernel`), run over a whole batch of records.

Each program is the same line as `tcpwhy.report.conns.record_lines` writes for one
`ConnRecord`, step by step; tests/test_conns_columns.py holds the two to the same bytes on
every shipped and corpus capture, in every format.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import numpy.typing as npt

from tcpwhy.report import conns_kernel as k
from tcpwhy.report.conns import LOCAL_FIELDS, csv_fields, record_lines
from tcpwhy.schemas import SCHEMA_VERSION
from tcpwhy.tcp.connections import end_code
from tcpwhy.tcp.records import IRTT_UNSET, JSON_FIELDS, WORD_COLUMNS, ConnColumns
from tcpwhy.tcp.records_kernel import COMMUNITY_ID_WIDTH
from tcpwhy.tcp.zeek import HIST_MAX


def _csv_token(word: str) -> str:
    """`word` as a field of a csv.writer row (quoted if it holds a comma, quote or newline)."""
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow([word, "x"])
    return buf.getvalue()[: -len(",x\n")]


_ESCAPE: dict[str, Callable[[str], str]] = {
    "jsonl": json.encoder.encode_basestring,
    "csv": _csv_token,
    "zeek": str,
    "zeek-json": json.encoder.encode_basestring,
    "table": str,
}
"""How each format writes a word taken from a vocabulary (JSON strings are quoted)."""


PIECE_ROWS = 2048
"""Records a writer formats at a time (`RowProgram.format_pieces`): a flood's batches of 20,000
records were formatted whole, into 40 MB buffers (one per thread that formats) for 17 MB of
text; a piece's buffer is a few MB, and its text is written while it is still in cache."""


class RowProgram:
    """A program for `conns_kernel.format_rows`: the steps of one line, the input columns they
    read, and the static words; built once per format."""

    def __init__(self, fmt: str, uid_prefix: str, local: bool = False) -> None:
        self.fmt = fmt
        self.local = local  # writes local_orig / local_resp (the batch has local networks)
        self.uses_community_id = False  # writes the Community ID (the `fixed` text of the kernel)
        self.esc = _ESCAPE[fmt]
        self.steps: list[tuple[int, int, int, int]] = []
        self.inputs: list[tuple[str, str]] = []  # (kind, column); kinds: int, float, word
        self.words: list[bytes] = []
        self._word_ids: dict[bytes, int] = {}
        self._bases: dict[str, int] = {}
        self.row_bound = 0
        self.end_steps = 0  # steps that write a word of the batch's `end` words
        self.name_steps = 0  # steps that write a word of the batch's `name_words`
        self.code_steps = 0  # steps that write the `end_code` of the batch's `end` words
        self.uid_prefix = uid_prefix

    def word(self, text: str | bytes) -> int:
        b = text.encode() if isinstance(text, str) else text
        if b not in self._word_ids:
            self._word_ids[b] = len(self.words)
            self.words.append(b)
        return self._word_ids[b]

    def _input(self, kind: str, column: str) -> int:
        if (kind, column) not in self.inputs:
            self.inputs.append((kind, column))
        return self.inputs.index((kind, column))

    def _step(self, op: int, a: int = 0, b: int = 0, c: int = -1, bound: int = 0) -> None:
        self.steps.append((op, a, b, c))
        self.row_bound += bound

    def lit(self, text: str) -> None:
        w = self.word(text)
        self._step(k.OP_LIT, w, bound=len(self.words[w]))

    def integer(self, column: str, op: int = -1) -> None:
        op = k.OP_INT if op < 0 else op
        self._step(op, self._input("int", column), bound=21)

    def real(self, column: str, digits: int | None, null: str | None = None) -> None:
        """digits None: repr(round(x, 6)); else '.{digits}f'. `null` for an unset value."""
        nw = -1 if null is None else self.word(null)
        src = self._input("float", column)
        if digits is None:
            self._step(k.OP_REPR6, src, nw, bound=32)
        else:
            self._step(k.OP_FIXED, src, digits, nw, bound=32)
        if null is not None:
            self.row_bound += len(null)

    def text(self, column: str) -> None:
        """A word column (`tcpwhy.tcp.records.WORD_COLUMNS`), escaped for the format."""
        src = self._input("word", column)
        self._step(k.OP_WORD, src)
        if column == "end":
            self.end_steps += 1
            return
        if column == "server_name":
            self.name_steps += 1
            return
        if column == "end_code":  # the `end` column's codes, through the batch's code words
            self.code_steps += 1
            return
        # a JSON boolean is the one word column written as it is
        words = WORD_COLUMNS[column] if column != "continued" else ("false", "true")
        esc = self.esc if column != "continued" else str
        assert words is not None
        if column not in self._bases:
            self._bases[column] = len(self.words)
            for w in words:  # consecutive, so a code plus the base is the word
                b = esc(w).encode()
                self._word_ids.setdefault(b, len(self.words))
                self.words.append(b)
        self.row_bound += max(len(esc(w).encode()) for w in words)

    def flag(self, column: str, words: tuple[str, str]) -> None:
        """A derived boolean column (``local_orig``, ``local_resp``) as one of two words."""
        src = self._input("word", column)
        self._step(k.OP_WORD, src)
        if column not in self._bases:
            self._bases[column] = len(self.words)
            for w in words:
                b = w.encode()
                self._word_ids.setdefault(b, len(self.words))
                self.words.append(b)
        self.row_bound += max(len(w) for w in words)

    def time(self, column: str) -> None:
        """Nanoseconds since the epoch as RFC 3339 UTC (`tcpwhy.timestamps.rfc3339`)."""
        self._step(k.OP_RFC3339, self._input("int", column), bound=30)

    def uid(self) -> None:
        """The record's uid after its prefix: Zeek's base 62 of its two words (`uid_words`)."""
        self._step(k.OP_B62, self._input("int", "uid_a"), bound=11)
        self._step(k.OP_B62, self._input("int", "uid_b"), bound=11)

    def community_id(self) -> None:
        """The Community ID hash (after ``1:``)."""
        self.uses_community_id = True
        self._step(k.OP_FIXED_TEXT, 0, COMMUNITY_ID_WIDTH, bound=COMMUNITY_ID_WIDTH)

    def addr(self, which: str, brackets: bool = False) -> None:
        hi, lo = self._input("int", f"{which}_hi"), self._input("int", f"{which}_lo")
        self._step(k.OP_ADDR, hi, lo, int(brackets), bound=43)

    def history(self, empty: str | None = None) -> None:
        self._step(k.OP_HIST, 0, 0, -1 if empty is None else self.word(empty), bound=HIST_MAX + 4)

    def mark(self) -> None:
        self._step(k.OP_MARK)

    def pad(self, width: int, right: bool) -> None:
        self._step(k.OP_PADR if right else k.OP_PADL, width, bound=width)

    def unless_positive(self, column: str, word: str, skip: int = 1) -> None:
        """Where `column` is not positive: `word`, instead of the next `skip` steps."""
        w = self.word(word)
        self._step(k.OP_UNLESS_POS, self._input("int", column), w, skip, bound=len(word))

    def unless_history(self, skip: int) -> None:
        """Where the record has no history letters: nothing, instead of the next `skip` steps."""
        self._step(k.OP_SKIP_NO_HIST, skip)

    def _merged_steps(self) -> list[tuple[int, int, int, int, int]]:
        """The steps with each run of literals joined into one word and written by the value
        step before it (its `d`, `conns_kernel.program`): the kernel copies a word per step,
        and a turn of its loop per literal was a tenth of a line's time. A literal a skip
        lands on starts a step of its own; skips are renumbered."""
        steps = self.steps
        targets = set()
        for s, (op, a, _b, c) in enumerate(steps):
            if op == k.OP_UNLESS_POS:
                targets.add(s + 1 + (c if c > 1 else 1))
            elif op == k.OP_SKIP_NO_HIST:
                targets.add(s + 1 + a)
        merged: list[tuple[int, int, int, int, int]] = []
        new_index = []  # the merged step holding each step
        for s, (op, a, b, c) in enumerate(steps):
            last = merged[-1] if merged and s not in targets else None
            if op == k.OP_LIT and last is not None and last[0] == k.OP_LIT:
                merged[-1] = (k.OP_LIT, self.word(self.words[last[1]] + self.words[a]), *last[2:])
            elif op == k.OP_LIT and last is not None and last[0] in k.VALUE_OPS:
                d = a if last[4] < 0 else self.word(self.words[last[4]] + self.words[a])
                merged[-1] = (*last[:4], d)
            else:
                merged.append((op, a, b, c, -1))
            new_index.append(len(merged) - 1)
        new_index.append(len(merged))  # a skip may land just past the last step
        for s, (op, a, b, c) in enumerate(steps):
            d = merged[new_index[s]][4]
            if op == k.OP_UNLESS_POS:
                skip = new_index[s + 1 + (c if c > 1 else 1)] - new_index[s + 1]
                merged[new_index[s]] = (op, a, b, skip, d)
            elif op == k.OP_SKIP_NO_HIST:
                merged[new_index[s]] = (op, new_index[s + 1 + a] - new_index[s + 1], b, c, d)
        return merged

    def compile(self) -> None:
        self.prog = k.program(self._merged_steps())

    def format(self, c: ConnColumns) -> str | None:
        """The lines of a batch; None if a value is out of the kernel's range."""
        text = []
        for _, _, raw in self.format_pieces(c, len(c)):
            if raw is None:
                return None
            text.append(raw.tobytes().decode())
        return "".join(text)

    def format_pieces(
        self, c: ConnColumns, rows: int = PIECE_ROWS
    ) -> Iterator[tuple[int, int, npt.NDArray[np.uint8] | None]]:
        """The lines of a batch, `rows` records at a time: (first row, the row past the last,
        their text as UTF-8 bytes, or None if a value of theirs is out of the kernel's
        range). The text is a view of the thread's own buffer, reused by the next piece and
        the next batch: write or copy it before taking the next (written as they are, the
        bytes are neither copied nor decoded and encoded again; a new buffer per batch cost
        a page fault per 4 kB written)."""
        n = len(c)
        # the batch's words after the static ones: its `end` words, then its server names
        ends = [self.esc(w).encode() for w in c.end_words]
        names = [self.esc(w).encode() for w in c.name_words] if self.name_steps else []
        codes = [self.esc(end_code(w)).encode() for w in c.end_words] if self.code_steps else []
        batch = ends + names + codes
        vocab, voff = k.vocabulary(self.words + batch)
        batch_base = {
            "end": len(self.words),
            "server_name": len(self.words) + len(ends),
            "end_code": len(self.words) + len(ends) + len(names),
        }
        ints = _scratch("ints", len(self.inputs) * n, np.int64).reshape(len(self.inputs), n)
        derived: dict[str, Any] = {}
        if any(name.startswith("uid_") for _, name in self.inputs):
            derived["uid_a"], derived["uid_b"] = c.uid_words()
        for which in ("orig", "resp"):
            if self.local:
                derived[f"local_{which}"] = c.local(which)
        if self.code_steps:
            derived["end_code"] = c["end"]
        for i, (kind, name) in enumerate(self.inputs):
            v = derived[name] if name in derived else c[name]
            if v is None:
                raise ValueError(f"{name} is unset: the batch has no local networks")
            if kind == "float":
                if name == "irtt_ns":
                    ints[i] = np.where(v == IRTT_UNSET, np.nan, v / 1e9).view(np.int64)
                else:
                    ints[i] = (v / 1e9).view(np.int64)
            elif kind == "word":
                base = batch_base[name] if name in batch_base else self._bases[name]
                ints[i] = v.astype(np.int64) + base
            else:
                ints[i] = v.view(np.int64) if v.dtype == np.uint64 else v
        bound = self.row_bound + self.end_steps * max((len(w) for w in ends), default=0)
        bound += self.name_steps * max((len(w) for w in names), default=0)
        bound += self.code_steps * max((len(w) for w in codes), default=0)
        hist = c["history"]
        if not hist.flags.c_contiguous:
            hist = np.ascontiguousarray(hist)
        fixed = c.community_id_text() if self.uses_community_id else np.zeros((n, 0), np.uint8)
        rows = max(1, min(rows, n))
        out = _scratch("out", rows * bound + 1 + k.WORD_SLACK, np.uint8)
        for first in range(0, n, rows):
            stop = min(first + rows, n)
            size = k.format_rows(
                self.prog, ints, hist, c["history_len"], vocab, voff, fixed, out, first, stop
            )
            yield first, stop, out[:size] if size >= 0 else None


_SCRATCH = threading.local()


def _scratch(name: str, size: int, dtype: type) -> npt.NDArray[Any]:
    """A buffer of at least `size` items of this thread, kept for the next batch."""
    buf: npt.NDArray[Any] | None = getattr(_SCRATCH, name, None)
    if buf is None or len(buf) < size:
        buf = np.empty(max(size, 2 * len(buf) if buf is not None else 0), dtype)
        setattr(_SCRATCH, name, buf)
    return buf[:size]


@functools.lru_cache(maxsize=32)
def row_program(fmt: str, uid_prefix: str = "C", local: bool = False) -> RowProgram:
    """The line of each format, step by step (see `record_lines` for the same, per record);
    `local`: with ``local_orig`` and ``local_resp`` (the batch has local networks)."""
    p = RowProgram(fmt, uid_prefix, local)
    if fmt == "jsonl":
        kinds = {
            "uid": "uid",
            "local_orig": "flag",
            "local_resp": "flag",
            "community_id": "community_id",
            "orig_h": "addr",
            "resp_h": "addr",
            "start": "float",
            "duration": "float",
            "irtt": "float",
            "orig_bytes": "uint",
            "resp_bytes": "uint",
            "history": "history",
            "continued": "text",
            **{w: "text" for w in WORD_COLUMNS},
        }
        p.lit('{"schema_version": ' + json.dumps(SCHEMA_VERSION))  # on every line: see docs/json.md
        sep = ", "
        for f in JSON_FIELDS:
            if f in LOCAL_FIELDS and not local:
                continue
            if f == "server_name":  # left out when there is none (code 0)
                p.unless_positive(f, "", skip=2)
                p.lit(f"{sep}{json.dumps(f)}: ")
                p.text(f)
                continue
            p.lit(f"{sep}{json.dumps(f)}: ")
            sep = ", "
            kind = kinds.get(f, "int")
            if kind == "uid":
                p.lit(json.encoder.encode_basestring(uid_prefix)[:-1])
                p.uid()
                p.lit('"')
            elif kind == "flag":
                p.flag(f, ("false", "true"))
            elif kind == "community_id":
                p.lit('"1:')
                p.community_id()
                p.lit('"')
            elif kind == "addr":
                p.lit('"')
                p.addr(f[:4])
                p.lit('"')
            elif kind == "float":
                p.real(f"{f}_ns", None, "null")
                if f == "start":  # the time convention of docs/json.md beside Zeek's seconds
                    p.lit(', "start_ns": ')
                    p.integer("start_ns")
                    p.lit(', "start_time": "')
                    p.time("start_ns")
                    p.lit('"')
            elif kind == "uint":
                p.integer(f, k.OP_UINT)
            elif kind == "history":  # Zeek's history letters: nothing to escape
                p.lit('"')
                p.history()
                p.lit('"')
            elif kind == "text":
                p.text(f)
            else:
                p.integer(f)
            if f == "end":  # the stable code beside the words (`tcpwhy.tcp.connections.ENDINGS`)
                p.lit(', "end_code": ')
                p.text("end_code")
        p.lit("}\n")
    elif fmt == "csv":
        for i, f in enumerate(csv_fields(local)):
            if i:
                p.lit(",")
            if f in LOCAL_FIELDS:
                p.flag(f, ("false", "true"))
            elif f == "community_id":
                p.lit("1:")
                p.community_id()
            elif f in ("orig_h", "resp_h"):
                p.addr(f[:4])
            elif f in ("start", "duration", "irtt"):
                p.real(f"{f}_ns", 6, "")
            elif f in ("orig_bytes", "resp_bytes"):
                p.integer(f, k.OP_UINT)
            elif f == "history":
                p.history()
            elif f in WORD_COLUMNS:
                p.text(f)
            else:
                p.integer(f)
        p.lit("\n")
    elif fmt == "zeek":
        p.real("start_ns", 6)
        p.lit("\t" + uid_prefix)
        p.uid()
        for which in ("orig", "resp"):
            p.lit("\t")
            p.addr(which)
            p.lit("\t")
            p.integer(f"{which}_p")
        p.lit("\ttcp\t-\t")
        p.unless_positive("duration_ns", "-")
        p.real("duration_ns", 6)
        for f in ("orig_bytes", "resp_bytes"):
            p.lit("\t")
            p.unless_positive("duration_ns", "-")
            p.integer(f, k.OP_UINT)
        p.lit("\t")
        p.text("conn_state")
        for f in LOCAL_FIELDS:
            p.lit("\t")
            if local:
                p.flag(f, ("F", "T"))
            else:
                p.lit("-")
        p.lit("\t")
        p.integer("missed_bytes")
        p.lit("\t")
        p.history("-")
        for f in ("orig_pkts", "orig_ip_bytes", "resp_pkts", "resp_ip_bytes"):
            p.lit("\t")
            p.integer(f)
        p.lit("\t-\t6\t1:")
        p.community_id()
        p.lit("\n")
    elif fmt == "zeek-json":
        p.lit('{"ts":')
        p.real("start_ns", None)
        p.lit(',"uid":' + json.encoder.encode_basestring(uid_prefix)[:-1])
        p.uid()
        for which in ("orig", "resp"):
            p.lit(f'","id.{which}_h":"' if which == "orig" else f',"id.{which}_h":"')
            p.addr(which)
            p.lit(f'","id.{which}_p":')
            p.integer(f"{which}_p")
        p.lit(',"proto":"tcp"')
        p.unless_positive("duration_ns", "", skip=6)
        p.lit(',"duration":')
        p.real("duration_ns", None)
        for f in ("orig_bytes", "resp_bytes"):
            p.lit(f',"{f}":')
            p.integer(f, k.OP_UINT)
        p.lit(',"conn_state":')
        p.text("conn_state")
        if local:
            for f in LOCAL_FIELDS:
                p.lit(f',"{f}":')
                p.flag(f, ("false", "true"))
        p.lit(',"missed_bytes":')
        p.integer("missed_bytes")
        p.unless_history(3)
        p.lit(',"history":"')
        p.history()
        p.lit('"')
        for f in ("orig_pkts", "orig_ip_bytes", "resp_pkts", "resp_ip_bytes"):
            p.lit(f',"{f}":')
            p.integer(f)
        p.lit(',"ip_proto":6,"community_id":"1:')
        p.community_id()
        p.lit('"}\n')
    else:
        p.mark()
        p.integer("stream")
        p.pad(6, right=True)
        for which in ("orig", "resp"):
            p.lit("  " if which == "orig" else " ")
            p.mark()
            p.addr(which, brackets=True)
            p.lit(":")
            p.integer(f"{which}_p")
            p.pad(28, right=False)
        p.lit(" ")
        p.mark()
        p.real("duration_ns", 3)
        p.pad(10, right=True)
        for a, b, width in (("orig_pkts", "resp_pkts", 11), ("orig_bytes", "resp_bytes", 17)):
            p.lit(" ")
            p.mark()
            op = k.OP_UINT if a == "orig_bytes" else k.OP_INT
            p.integer(a, op)
            p.lit("/")
            p.integer(b, op)
            p.pad(width, right=True)
        p.lit("  ")
        p.mark()
        p.text("conn_state")
        p.pad(6, right=False)
        p.lit(" ")
        p.mark()
        p.history()
        p.pad(14, right=False)
        p.lit(" ")
        p.text("end")
        p.lit(" [")
        p.text("orig_state")
        p.lit("/")
        p.text("resp_state")
        p.lit("]\n")
    p.compile()
    return p


def format_columns_pieces(c: ConnColumns, fmt: str) -> Iterator[bytes | memoryview]:
    """`format_columns` as UTF-8 bytes, for a binary stream, a piece at a time
    (`RowProgram.format_pieces`: a view of the kernel's buffer, valid until the thread
    formats its next piece); a piece with a value out of the kernel's range is written by
    `record_lines`, record by record, as the same bytes."""
    if not len(c):
        return
    prog = row_program(fmt, c.uid_prefix, c.options.local_nets is not None)
    for first, stop, raw in prog.format_pieces(c):
        if raw is not None:
            yield raw.data
        else:
            yield record_lines(c.take(np.arange(first, stop)), fmt).encode()


def format_columns(c: ConnColumns, fmt: str) -> str:
    """The data lines of `fmt` for a batch, formatted column-wise by the compiled kernel; the
    text is `record_lines` of the same records, byte for byte."""
    if not len(c):
        return ""
    text = row_program(fmt, c.uid_prefix, c.options.local_nets is not None).format(c)
    return text if text is not None else record_lines(c, fmt)
