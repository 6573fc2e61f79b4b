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

from tcpwhy.decode.table import ACK, COLUMNS, RST, SYN, PacketTable
from tcpwhy.native import array_types, kernel

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
    row, `sport` and `dport` that row's ports. One compiled pass over the rows
    (`_client_dirs`): numpy's way, scattering each kind's rows last to first into
    per-stream arrays, took 0.25 s of a 3 M-SYN flood's `analyze`."""
    out = np.empty(nstreams, np.int8)
    if nstreams:
        # the table's columns in the types its schema gives them, as the kernel's signature
        flags, sport, dport = (
            np.ascontiguousarray(v, COLUMNS[k][0])
            for k, v in (("flags", flags), ("sport", sport), ("dport", dport))
        )
        pdir, stream = np.ascontiguousarray(pdir, np.int8), np.ascontiguousarray(stream, np.int64)
        _client_dirs(flags, pdir, stream, np.ascontiguousarray(first, np.int64), sport, dport, out)
    return out


@kernel(
    f"{array_types(COLUMNS, ('flags',))} i1[:] i8[:] i8[:] "
    f"{array_types(COLUMNS, ('sport', 'dport'))} i1[:] -> none",
    nogil=True,
)
def _client_dirs(
    flags: Any, pdir: Any, stream: Any, first: Any, sport: Any, dport: Any, out: Any
) -> None:
    """`client_dirs` into `out`: while the rows are read, -1 for a stream with neither kind
    yet, 0 or 1 once its first SYN is seen (final), 2 or 3 for the client's direction as
    its first SYN-ACK tells it (a SYN, seen later or not, overrides it)."""
    for s in range(out.shape[0]):
        out[s] = -1
    for i in range(flags.shape[0]):
        kind = flags[i] & (SYN | ACK | RST)
        if kind == SYN:
            s = stream[i]
            if out[s] < 0 or out[s] >= 2:
                out[s] = pdir[i]
        elif kind == SYN | ACK:
            s = stream[i]
            if out[s] < 0:
                out[s] = 3 - pdir[i]  # 2 + the receiver's direction
    for s in range(out.shape[0]):
        if out[s] >= 2:
            out[s] -= 2
        elif out[s] < 0:
            d = pdir[first[s]]
            # the first packet's sender, unless its port is the lower and not ephemeral:
            # then it is the server answering
            out[s] = 1 - d if sport[s] < dport[s] and sport[s] < EPHEMERAL_FROM else d


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
