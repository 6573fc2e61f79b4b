"""Wireshark display filters (``-Y FILTER``) over the packet table, with Wireshark 4.0 semantics.

API for the commands that take ``-Y``:

    add_filter_argument(parser)          adds ``-Y/--display-filter FILTER`` (dest ``display_filter``)
    filter_from_args(args)               -> DisplayFilter | None; raises FilterError (exit 2)
    compile_filter(text)                 -> DisplayFilter; raises FilterError
    FilterContext(table, streams=None, analysis=None, first_ts_ns=None)
                                         per-packet state, computed lazily on first use
    DisplayFilter.mask(table, ctx=None)  -> bool array, one per row
    DisplayFilter.needs                  {"streams", "analysis", "http"}: state the filter uses
    select_packets(table, flt, ctx=None) -> bool array (rows to show: `packets -Y`, `flow -Y`)
    select_streams(table, flt, ctx=None) -> sorted int64 array of tcp.stream numbers with at
                                            least one matching packet (`conns -Y`, `analyze -Y`,
                                            like Wireshark's "Limit to display filter")

A command that streams chunks passes each chunk's StreamTracker output as
`streams=` (and `first_ts_ns=` from CaptureStats, so ``frame.time_relative``
counts from the capture's first frame, not its first TCP packet). Analysis
fields need the whole capture's table (the analysis is stateful); a command
that uses them with a streamed capture should read the table whole.

`FilterError.reason` is several lines: tshark's message, then the filter and a
caret line under the offending part; the CLI prints ``tcpwhy: -Y: <reason>``.
The supported fields and the differences from tshark are in docs/filters.md.
"""

from __future__ import annotations

import argparse
import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from tcpwhy.arrays import unique_sorted
from tcpwhy.cli_helpers import add_common_option

if TYPE_CHECKING:
    from tcpwhy.decode.table import PacketTable
    from tcpwhy.filter.compiler import Test
    from tcpwhy.filter.context import FilterContext
    from tcpwhy.filter.fields import FIELDS
    from tcpwhy.filter.syntax import FilterError

_LAZY = {
    "FilterContext": "tcpwhy.filter.context",
    "FIELDS": "tcpwhy.filter.fields",
    "FilterError": "tcpwhy.filter.syntax",
}
"""Loaded on first use: the compiler and field tables are a twentieth of a second of start-up
that a command run without -Y does not need."""


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "FIELDS",
    "DisplayFilter",
    "FilterContext",
    "FilterError",
    "add_filter_argument",
    "chunk_mask",
    "compile_filter",
    "filter_from_args",
    "icmp_mask",
    "select_packets",
    "select_streams",
]


@dataclass(frozen=True)
class DisplayFilter:
    """A compiled filter: a tree of vectorised tests, reusable across tables and chunks."""

    text: str
    test: Test

    @property
    def needs(self) -> frozenset[str]:
        return self.test.needs

    def mask(self, table: PacketTable, ctx: FilterContext | None = None) -> npt.NDArray[np.bool_]:
        if ctx is None:
            from tcpwhy.filter.context import FilterContext

            ctx = FilterContext(table)
        rows = np.arange(len(table), dtype=np.int64)
        return np.asarray(self.test.run(ctx, rows), bool)


def compile_filter(text: str) -> DisplayFilter:
    """Parse and type-check once; raises FilterError pointing at the offending part."""
    from tcpwhy.filter.compiler import FUNCTIONS, Compiler
    from tcpwhy.filter.fields import FIELDS
    from tcpwhy.filter.syntax import parse

    tree = parse(text, lambda name: name in FIELDS, lambda name: name in FUNCTIONS)
    return DisplayFilter(text, Compiler(text).compile(tree))


def select_packets(
    table: PacketTable, flt: DisplayFilter, ctx: FilterContext | None = None
) -> npt.NDArray[np.bool_]:
    return flt.mask(table, ctx)


def select_streams(
    table: PacketTable, flt: DisplayFilter, ctx: FilterContext | None = None
) -> npt.NDArray[np.int64]:
    if ctx is None:
        from tcpwhy.filter.context import FilterContext

        ctx = FilterContext(table)
    m = flt.mask(table, ctx)
    return unique_sorted(np.asarray(ctx.streams["stream"])[m]).astype(np.int64)


def chunk_mask(
    flt: DisplayFilter,
    table: PacketTable,
    streams: dict[str, npt.NDArray[Any]] | None,
    analysis: Any = None,
    first_ts_ns: int | None = None,
) -> npt.NDArray[np.bool_]:
    """The rows of a chunk the filter matches, given the chunk's `StreamTracker` columns
    (and `Analyzer` output where it has one): the step every streaming view takes after
    tracking a chunk."""
    from tcpwhy.filter.context import FilterContext

    ctx = FilterContext(table, streams=streams, analysis=analysis, first_ts_ns=first_ts_ns)
    return flt.mask(table, ctx)


def icmp_mask(
    flt: DisplayFilter,
    icmp: PacketTable,
    stream: npt.NDArray[np.int64],
    first_ts_ns: int | None = None,
) -> npt.NDArray[np.bool_]:
    """The ICMP errors about TCP of a chunk that the filter matches, each in the stream of
    the segment it quotes (`StreamTracker.icmp_out`'s `stream`)."""
    from tcpwhy.filter.icmp_fields import icmp_streams

    return chunk_mask(flt, icmp, icmp_streams(icmp, stream), None, first_ts_ns)


def add_filter_argument(parser: argparse.ArgumentParser) -> None:
    add_common_option(parser, "display_filter")


def filter_from_args(args: Any) -> DisplayFilter | None:
    text = getattr(args, "display_filter", None)
    return None if text is None else compile_filter(text)
