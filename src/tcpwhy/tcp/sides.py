"""Which side of a connection is the client: the one home of that decision.

The client is the side that called connect(): the sender of the first SYN, else the receiver
of the first SYN-ACK, else (a capture that starts mid-stream) the sender of the first packet,
unless its source port is the lower one and below 32768 (the server's port answering).
`analyze` (its diagnosis context), `flow` and the API read it from here, so they name the same
side the client. Zeek's conn.log (`tcp.zeek`) orients its records by Zeek's own rules on
purpose, so that they match conn.log.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from tcpwhy.decode.table import ACK, RST, SYN, PacketTable

EPHEMERAL_FROM = 32768
"""Ports at or above this look ephemeral (Linux's default ip_local_port_range starts here)."""


def client_dirs(
    flags: npt.NDArray[Any],
    pdir: npt.NDArray[Any],
    stream: npt.NDArray[Any],
    nstreams: int,
    first: npt.NDArray[Any],
    sport: npt.NDArray[Any],
    dport: npt.NDArray[Any],
) -> npt.NDArray[np.int8]:
    """Per stream: the direction (`pdir`'s 0 or 1) its client sends in.

    `flags`, `pdir` and `stream` are per row in capture order; `first` is each stream's first
    row, `sport` and `dport` that row's ports. Whole columns at once: no Python per stream."""
    kind = flags & (SYN | ACK | RST)
    orig = np.full(nstreams, -1, np.int64)
    idx = np.flatnonzero(kind == SYN)[::-1]  # written last to first: the first one stays
    orig[stream[idx]] = pdir[idx]
    tmp = np.full(nstreams, -1, np.int64)
    idx = np.flatnonzero(kind == (SYN | ACK))[::-1]
    tmp[stream[idx]] = 1 - pdir[idx]
    orig = np.where(orig < 0, tmp, orig)
    if nstreams:
        sp = np.asarray(sport).astype(np.int64)
        dp = np.asarray(dport).astype(np.int64)
        pf = pdir[first].astype(np.int64)
        guess = np.where((sp < dp) & (sp < EPHEMERAL_FROM), 1 - pf, pf)
        orig = np.where(orig < 0, guess, orig)
    return orig.astype(np.int8)


def client_dir(table: PacketTable, rows: npt.NDArray[Any], pdir: npt.NDArray[Any]) -> int:
    """`client_dirs` of one connection: its `rows` of `table` in capture order and their
    directions."""
    if not len(rows):
        return 0
    first = np.zeros(1, np.int64)
    r0 = rows[:1]
    got = client_dirs(
        table["flags"][rows], pdir, np.zeros(len(rows), np.int64), 1, first,
        table["sport"][r0], table["dport"][r0],
    )  # fmt: skip
    return int(got[0])
