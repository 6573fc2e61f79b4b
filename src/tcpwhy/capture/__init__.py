"""Capture readers (pcap, pcapng, gzip, stdin), the pcap writer, and live capture.

Public entry points:
  iter_tables(source, stats=None)  -> Iterator[PacketTable], one per chunk, streamed
  read_table(source, stats=None)   -> PacketTable for the whole capture
`source` is a path, or "-" for standard input.
"""

from tcpwhy.capture.reader import iter_tables, read_table

__all__ = ["iter_tables", "read_table"]
