"""32-bit sequence-number arithmetic (RFC 1982 serial numbers, as RFC 9293 compares them).

The one definition for Python code: the state machine's oracle, the diagnosis rules and
the reports. Each function takes Python ints or numpy integer arrays alike (operators
only, no `and`), so a rule can compare one row or a column with the same words. The
compiled kernels keep their own copies in numba's types (`state_kernel._seq_geq`), held
to these by the oracle test.
"""

from __future__ import annotations

from typing import Any

MOD = 1 << 32
U32 = MOD - 1
"""The mask that wraps a sum into sequence space."""
HALF = 1 << 31
"""Half the space: a difference of less than this is ahead, of more behind."""


def seq_geq(a: Any, b: Any) -> Any:
    """a >= b in sequence space."""
    return ((a - b) & U32) < HALF


def seq_gt(a: Any, b: Any) -> Any:
    """a > b in sequence space."""
    return (a != b) & seq_geq(a, b)


def seq_add(a: Any, n: Any) -> Any:
    """a + n, wrapped into sequence space (a segment's end: seq + length)."""
    return (a + n) & U32


def seq_diff(a: Any, b: Any) -> Any:
    """a - b as a signed distance in sequence space (-2**31 … 2**31 - 1)."""
    return ((a - b + HALF) & U32) - HALF


def seq_offset(a: Any, base: Any) -> Any:
    """How far a lies past base, forward only (0 … 2**32 - 1): Wireshark's relative sequence
    numbers, where a number before the base reads as a large one."""
    return (a - base) & U32


def next_seq(seq: Any, payload_len: Any, syn_or_fin: Any) -> Any:
    """The sequence number after a segment, as Wireshark's ``tcp.nxtseq`` counts it: its
    payload and one if it carries a SYN or a FIN (one, not RFC 9293's two, for a segment
    with both); `syn_or_fin` is that test of its flags (this module reads no flags)."""
    return seq_add(seq, payload_len + (syn_or_fin != 0))


def ack_shown(raw: Any, rel: Any, has_ack: Any) -> Any:
    """The acknowledgment number as Wireshark 4.0 shows ``tcp.ack``: relative (`rel`) on a
    segment with the ACK flag, the raw field without it (`has_ack`: that test of its flags,
    as the caller reads them). Arrays or single values (then a numpy scalar)."""
    import numpy as np

    return np.where(has_ack != 0, rel, raw)
