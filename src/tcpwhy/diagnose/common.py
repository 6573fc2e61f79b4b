"""What the finding kinds share: collecting per-connection hits into findings, and RST walks.

A rule finds connections showing its kind, one `Instance` each (the decisive
rows with a note per row, and a few facts), and files them under a key (the
server, the side, a cause). `Hits.findings` then writes one finding per key:
the rule's `tell` function gets the `Group` (its connections and the example
the text speaks of) and returns the `Story`; counts, time range, example
streams and the timeline come from `registry.make_finding`.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from tcpwhy.arrays import SCAN_ROWS, group_ids
from tcpwhy.diagnose.context import Capture, Conn
from tcpwhy.diagnose.model import Finding, Story
from tcpwhy.diagnose.registry import Diag, Instance, Rule, make_finding


@dataclass
class Group:
    """The connections one finding reports together, and the one its text tells about."""

    key: Any
    inst: list[Instance]
    ex: Instance

    @property
    def c(self) -> Conn:
        return self.ex.conn

    @property
    def n(self) -> int:
        return len(self.inst)

    @property
    def facts(self) -> dict[str, Any]:
        return self.ex.facts

    @property
    def first_ns(self) -> int:
        return min(i.first_ns for i in self.inst)

    @property
    def last_ns(self) -> int:
        return max(i.last_ns for i in self.inst)

    def count(self, fact: str) -> int:
        """How many of the connections have `fact` set."""
        return sum(1 for i in self.inst if i.facts[fact])

    def values(self, fact: str) -> list[Any]:
        return [i.facts[fact] for i in self.inst]


def earliest(i: Instance) -> Any:
    return i.first_ns


@dataclass
class CountedGroup(Group):
    """A `Group` of a kind found with numpy: `inst` holds only the first instances (the
    examples and frames), the count and time range are of all of them."""

    total: int = 0
    first: int = 0
    last: int = 0

    @property
    def n(self) -> int:
        return self.total

    @property
    def first_ns(self) -> int:
        return self.first

    @property
    def last_ns(self) -> int:
        return self.last


def needs_streams(detect: Rule) -> Rule:
    """A rule whose work is numpy over the per-stream columns finds nothing in a capture
    without TCP streams, and is not asked to: its arithmetic need not handle empty columns."""

    @functools.wraps(detect)
    def run(diag: Diag) -> list[Finding]:
        return detect(diag) if diag.cap.nstreams else []

    return run


def late_fin(cap: Capture, first: int, limit_s: float) -> npt.NDArray[np.bool_]:
    """Per stream: `first` sent its FIN before the other side, whose FIN came more than
    `limit_s` later or never: the other side's CLOSE_WAIT, `first`'s FIN_WAIT_2."""
    f = cap.fins  # only streams with a FIN can hold (a flood's millions have none)
    mine, peer = f.ns[:, first], f.ns[:, 1 - first]
    return f.per_stream(cap.nstreams, (mine < peer) & (peer - mine > int(limit_s * 1e9)))


def first_positions(
    cap: Capture,
    sids: npt.NDArray[np.int64],
    at: npt.NDArray[np.bool_],
    after: npt.NDArray[np.int64] | None = None,
) -> npt.NDArray[np.int64]:
    """Per stream of `sids`, the position (in `cap.order`) of its first packet where `at`
    (one value per position of `cap.order`) holds, or -1: a rule's "first SYN", "first RST
    from the server" for every candidate at once. With `after` (a position per stream), the
    first one after it: "the server's answer to that SYN".

    The positions where `at` holds are listed a block at a time: listed at once they were
    8 bytes for each (a mask such as "sent by the server" holds on half the rows: 17 MB at
    4 M packets, at `analyze`'s peak)."""
    out = np.full(len(sids), -1, np.int64)
    lo = cap.starts[sids] if after is None else after + 1
    hi = cap.ends[sids]
    open_ = np.ones(len(sids), np.bool_)  # not yet found, nor known to be absent
    block = SCAN_ROWS // 4  # a quarter of the usual block: `analyze` is at its peak here
    for b in range(0, len(at), block):
        e = min(len(at), b + block)
        k = np.flatnonzero(open_ & (lo < e) & (hi > b))
        if not len(k):
            continue
        pos = b + np.flatnonzero(at[b:e])
        j = np.searchsorted(pos, np.maximum(lo[k], b))
        got = pos[np.minimum(j, max(len(pos) - 1, 0))] if len(pos) else j
        found = (j < len(pos)) & (got < hi[k])
        out[k[found]] = got[found]
        # found, or its positions end in this block: either way no later block holds it
        open_[k[found | (hi[k] <= e)]] = False
    return out


def by_server(cap: Capture, sids: npt.NDArray[np.int64]) -> list[tuple[str, npt.NDArray[np.int64]]]:
    """`sids`' indices grouped by server, as `Conn.server` names it, in the order each
    server first shows up in `sids`; one `Conn` is built per server, not per stream."""
    ep = cap.endpoints
    gid, ng = group_ids(ep.server_hi[sids], ep.server_lo[sids], ep.server_port[sids])
    firsts = np.full(ng, len(gid), np.int64)
    np.minimum.at(firsts, gid, np.arange(len(gid)))
    order = np.argsort(gid, kind="stable")
    bounds = np.searchsorted(gid[order], np.arange(ng + 1))
    members: dict[str, list[npt.NDArray[np.int64]]] = {}
    for g in np.argsort(firsts, kind="stable").tolist():
        c = cap.conn(int(sids[int(firsts[g])]))
        members.setdefault(c.server, []).append(order[bounds[g] : bounds[g + 1]])
    return [(server, np.sort(np.concatenate(parts))) for server, parts in members.items()]


class Hits:
    """Per-connection hits of one kind, filed by key; one finding per key."""

    def __init__(self) -> None:
        self.groups: dict[Hashable, list[Instance]] = defaultdict(list)

    def add(
        self,
        key: Hashable,
        conn: Conn,
        rows: list[tuple[int, str]],
        facts: dict[str, Any] | None = None,
    ) -> None:
        self.put(key, Instance(conn, rows, facts or {}))

    def put(self, key: Hashable, inst: Instance) -> None:
        """Files an instance made by the rule (one of `Instance`'s subclasses)."""
        self.groups[key].append(inst)

    def findings(
        self,
        diag: Diag,
        kind: str,
        tell: Callable[[Group], Story],
        example: Callable[[Instance], Any] = earliest,
    ) -> list[Finding]:
        """One finding per key; `example` ranks the connections (lowest first) to pick the
        one the text tells about (by default the earliest)."""
        out = []
        for key, inst in self.groups.items():
            story = tell(Group(key, inst, min(inst, key=example)))
            out.append(self.finding(diag, kind, inst, story))
        return out

    def finding(self, diag: Diag, kind: str, inst: list[Instance], story: Story) -> Finding:
        """The finding of one key's instances (in filing order): `registry.make_finding`, which
        a subclass extends (`icmp_unreachable.IcmpHits` adds the ICMP errors' frames)."""
        return make_finding(diag, kind, inst, story)


def first_resets(diag: Diag) -> Iterator[tuple[Conn, int]]:
    """Connections with a RST that no earlier rule explained, each with its first RST's row."""
    cap = diag.cap
    for sid in np.flatnonzero(cap.has_rst):
        if diag.is_claimed(int(sid)):
            continue
        c = cap.conn(int(sid))
        r = c.first_rst()
        assert r is not None
        yield c, r


def resets_before_fin(diag: Diag) -> Iterator[tuple[Conn, int, int]]:
    """`first_resets` that their sender sent before its own FIN (after it, the RST ends a
    close, not an open connection), each with that sender."""
    for c, r in first_resets(diag):
        x = c.at("side", r)
        xf = c.first_fin(x)
        if xf is None or xf >= r:
            yield c, r, x
