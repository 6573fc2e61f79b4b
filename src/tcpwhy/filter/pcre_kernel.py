"""The compiled loop of `matches` over a table's payloads (`tcpwhy.filter.pcre`)."""

from __future__ import annotations

from typing import Any

from tcpwhy.intrinsics import call_match
from tcpwhy.native import kernel


@kernel("i8 i8 i8 i8[:] i8[:] i8 b1[:] -> none")
def match_rows(fn: Any, code: Any, base: Any, off: Any, length: Any, data: Any, out: Any) -> None:
    """out[i]: whether PCRE2's `fn` (``pcre2_match``) finds pattern `code` in the bytes at
    ``base + off[i]``, ``length[i]`` long (`data`: the thread's match block). An error of
    the engine (a limit reached) is no match, as in tshark."""
    for i in range(off.shape[0]):
        out[i] = call_match(fn, code, base + off[i], length[i], data) >= 0
