"""The `icmp` field of `tcpwhy conns --format jsonl`: ICMP errors about each connection.

A connection that got ICMP or ICMPv6 errors (unreachable, packet too big, time
exceeded, parameter problem; see `tcpwhy.decode.table`) carries
``"icmp": {"TYPE/CODE": count, ...}`` in its JSON line, the ICMP version being
the connection's own. Connections without any keep their lines unchanged, so a
TCP-only capture's output is byte for byte what it was.
"""

from __future__ import annotations

import json

import numpy as np
import numpy.typing as npt

from tcpwhy.tcp.connections import IcmpCounts
from tcpwhy.tcp.records import ConnColumns


def with_icmp(text: str, c: ConnColumns, counts: IcmpCounts) -> str:
    """JSON lines of batch `c` with the `icmp` field added to those that have errors."""
    if not counts or not text:
        return text
    streams: npt.NDArray[np.int64] = c["stream"]
    hit = [i for i, s in enumerate(streams.tolist()) if s in counts]
    if not hit:
        return text
    lines = text.split("\n")
    for i in hit:
        line = lines[i]
        extra = json.dumps(dict(sorted(counts[int(streams[i])].items())))
        lines[i] = f'{line[:-1]}, "icmp": {extra}}}'
    return "\n".join(lines)
