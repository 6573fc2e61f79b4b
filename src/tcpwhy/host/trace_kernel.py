# mypy: disable-error-code="assignment"
"""The ring buffer's sub-buffers walked in compiled code, for `tcpwhy host trace`.

Records in a sub-buffer have variable lengths and time deltas relative to the previous one,
so finding them is a sequential walk; at a hundred thousand events a second that walk in
Python alone would cost a fifth of a core. Here it is one compiled call per read batch; the
fields are then decoded with numpy (trace.py), with a dtype built from each `format` file.
The layout is the kernel's documented one (Documentation/trace/ring-buffer-design.rst), the
same as `tracefs.walk_page`, which stays as the readable reference.
"""

from __future__ import annotations

from typing import Any

from tcpwhy.native import kernel, njit

TYPE_PADDING = 29
TYPE_TIME_EXTEND = 30
TYPE_TIME_STAMP = 31
TS_SHIFT = 27
COMMIT_MASK = (1 << 27) - 1
MISSED_EVENTS = 1 << 31
MISSED_STORED = 1 << 30


@njit(cache=True)
def _u32(buf: Any, pos: int) -> int:
    return (
        int(buf[pos])
        | (int(buf[pos + 1]) << 8)
        | (int(buf[pos + 2]) << 16)
        | (int(buf[pos + 3]) << 24)
    )


@njit(cache=True)
def _uint(buf: Any, pos: int, size: int) -> int:
    v = 0
    for k in range(min(size, 8)):
        v |= int(buf[pos + k]) << (8 * k)
    return v


@kernel("u1[:] i8[:] i8 i8 i8 i8 i8[:] i8[:] i8[:] -> i8")
def walk_pages(
    buf: Any,
    lens: Any,
    page_size: int,
    commit_off: int,
    commit_size: int,
    data_off: int,
    out_ts: Any,
    out_off: Any,
    missed: Any,
) -> int:
    """Every record of pages `buf[i*page_size : i*page_size + lens[i]]`: its time stamp (ns of
    the instance's clock) and the offset of its data in `buf`. `missed[i]` is 0, the number of
    events lost before page i, or -1 when lost but not counted. Returns the record count."""
    n = 0
    cap = out_ts.shape[0]
    msb = -(1 << 59)  # the top 5 bits of a 64-bit time stamp (0xF8 << 56, as a signed mask)
    for i in range(lens.shape[0]):
        base = i * page_size
        plen = lens[i]
        missed[i] = 0
        if plen < data_off:
            continue
        ts = _uint(buf, base, 8)
        commit = _uint(buf, base + commit_off, commit_size)
        size = commit & COMMIT_MASK
        if commit & MISSED_EVENTS:
            missed[i] = -1
            if commit & MISSED_STORED and plen >= data_off + size + commit_size:
                missed[i] = _uint(buf, base + data_off + size, commit_size)
        pos = base + data_off
        end = base + min(data_off + size, plen)
        while pos + 4 <= end and n < cap:
            head = _u32(buf, pos)
            tl = head & 31
            delta = head >> 5
            if tl == TYPE_PADDING:
                if delta == 0:
                    break
                ts += delta
                if pos + 8 <= end:
                    pos = pos + 4 + _u32(buf, pos + 4)
                else:
                    pos = end
                continue
            if tl == TYPE_TIME_EXTEND:
                ts += (_u32(buf, pos + 4) << TS_SHIFT) + delta
                pos += 8
                continue
            if tl == TYPE_TIME_STAMP:
                ts = ((_u32(buf, pos + 4) << TS_SHIFT) + delta) | (ts & msb)
                pos += 8
                continue
            ts += delta
            if tl == 0:
                length = (_u32(buf, pos + 4) - 4 + 3) & ~3
                out_ts[n] = ts
                out_off[n] = pos + 8
                n += 1
                pos += 8 + length
            else:
                out_ts[n] = ts
                out_off[n] = pos + 4
                n += 1
                pos += 4 + tl * 4
    return n
