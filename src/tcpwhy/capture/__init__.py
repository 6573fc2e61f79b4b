"""Capture readers (pcap, pcapng, gzip, stdin), the pcap writer, and live capture.

Public entry points:
  iter_tables(source, stats=None)  -> Iterator[PacketTable], one per chunk, streamed
  read_table(source, stats=None)   -> PacketTable for the whole capture
`source` is a path, or "-" for standard input.

The readers are imported on first use: they load the compiled decoder, which
the writer and live capture (used by the lab) do not need.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tcpwhy.capture.reader import iter_tables, read_table

__all__ = ["iter_tables", "read_table"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from tcpwhy.capture import reader

        return getattr(reader, name)
    raise AttributeError(name)
