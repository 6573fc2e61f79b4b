"""Rules register here, one per finding kind; they run in order and may claim connections.

A rule that explains a connection (say, stale keep-alive reuse explains its
RST) claims that stream's event so that generic rules that run later
(abortive close, middlebox reset, data after FIN) do not report it again.
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np
import numpy.typing as npt

from tcpwhy.arrays import unique_sorted
from tcpwhy.diagnose.context import Capture, Conn
from tcpwhy.diagnose.model import Finding, Step, Story, StreamNumbers

_ORDER = re.compile(r"^ORDER = (\d+)$", re.M)


def _rule_modules() -> tuple[str, ...]:
    """The rule modules, in the order each declares with a line ``ORDER = N`` of its own.

    Read from the modules' text, so that listing them imports nothing and a new rule module
    needs no entry anywhere else; earlier rules claim connections before later, more generic
    ones (so a new specific rule takes an ORDER below the generic rules it pre-empts)."""
    here = os.path.dirname(os.path.abspath(__file__))
    found: dict[int, str] = {}
    for name in sorted(os.listdir(here)):
        if not name.endswith(".py"):
            continue
        with open(os.path.join(here, name), encoding="utf-8") as f:
            m = _ORDER.search(f.read())
        if m:
            order = int(m.group(1))
            if order in found:
                raise ImportError(
                    f"rule modules {found[order]} and {name[:-3]} share ORDER {order}"
                )
            found[order] = name[:-3]
    return tuple(found[o] for o in sorted(found))


RULE_MODULES = _rule_modules()


class Claim(StrEnum):
    """What a rule may claim of a stream, so that later rules do not report it again (rules
    pass these members; a string that is no member's value is an error, not a silent new
    mask)."""

    SYN = "syn"  # the handshake: its SYNs, unanswered or refused
    RST = "rst"  # the RST(s) that ended it
    RETRANS = "retrans"  # its retransmissions
    CLOSE = "close"  # a late or missing close (CLOSE_WAIT leak, FIN_WAIT_2 stall)


@dataclass
class Settings:
    close_wait_s: float = 10.0  # CLOSE_WAIT longer than this (or until the end) is a leak
    fin_wait_2_s: float = 5.0  # FIN_WAIT_2 longer than this is a stall
    zero_window_s: float = 1.0  # a zero window held longer than this is a stall
    examples: int = 3


@dataclass
class Diag:
    cap: Capture
    settings: Settings = field(default_factory=Settings)
    findings: list[Finding] = field(default_factory=list)
    cache: dict[str, Any] = field(default_factory=dict)
    # per `what` (`Claim`): which streams a rule has already explained, so later rules do
    # not report them again; one mask, whether claimed one by one or in bulk
    # (a flood's or a scan's millions of connections)
    claimed: dict[Claim, npt.NDArray[np.bool_]] = field(default_factory=dict)

    def _mask(self, what: Claim) -> npt.NDArray[np.bool_]:
        m = self.claimed.get(what)
        if m is None:
            m = self.claimed[Claim(what)] = np.zeros(self.cap.nstreams, np.bool_)
        return m

    def claim(self, sid: int, what: Claim = Claim.RST) -> None:
        self._mask(what)[sid] = True

    def claim_streams(self, sids: npt.NDArray[np.int64], what: Claim = Claim.RST) -> None:
        self._mask(what)[sids] = True

    def is_claimed(self, sid: int, what: Claim = Claim.RST) -> bool:
        m = self.claimed.get(what)
        if m is None:
            Claim(what)  # a misspelt key raises instead of reading as "never claimed"
            return False
        return bool(m[sid])

    def claimed_mask(self, what: Claim = Claim.RST) -> npt.NDArray[np.bool_]:
        """Per stream: claimed for `what` (a copy)."""
        return self._mask(what).copy()

    def conns(self, sids: Iterable[int]) -> Iterator[Conn]:
        """The view (`Capture.conn`) of each of `sids`, made as the loop reaches it."""
        for s in sids:
            yield self.cap.conn(s)


class Instance:
    """One connection showing a kind: its decisive rows (local indices) with what each means.

    It keeps the stream id, not the `Conn`: a rule may hold thousands of instances while it
    runs, and a long connection's view is megabytes; `conn` is fetched again (from the
    capture's small cache, else rebuilt) for the few examples a finding shows.
    """

    def __init__(
        self, conn: Conn, rows: list[tuple[int, str]], facts: dict[str, Any] | None = None
    ) -> None:
        self._cap = conn.cap
        self.sid = conn.sid
        self.no = conn.no
        self.rows = rows
        self.facts: dict[str, Any] = {} if facts is None else facts
        at = [conn.at("ts", i) for i, _ in rows]  # not the whole `ts` list of a long one
        self.first_ns: int = min(at, default=conn.at("ts", 0))
        self.last_ns: int = max(at, default=conn.at("ts", conn.n - 1))

    @property
    def conn(self) -> Conn:
        return self._cap.conn(self.sid)

    def timeline(self) -> list[Step]:
        """The decisive packets in capture order, each with both endpoints' states after it."""
        c = self.conn
        return [c.step(i, note) for i, note in sorted(self.rows)]


Rule = Callable[[Diag], list[Finding]]
RULES: dict[str, Rule] = {}


def rule(kind: str) -> Callable[[Rule], Rule]:
    def deco(fn: Rule) -> Rule:
        RULES[kind] = fn
        return fn

    return deco


def load() -> dict[str, Rule]:
    """Every rule, in the order the modules declare (`RULE_MODULES`), a module's rules in the
    order it defines them. Ordered here, not by registration: a module imported early (by a
    caller that wants one of its helpers) registers first, and the rules' claims make the
    order matter."""
    for m in RULE_MODULES:
        importlib.import_module(f"tcpwhy.diagnose.{m}")
    rank = {m: i for i, m in enumerate(RULE_MODULES)}
    return dict(sorted(RULES.items(), key=lambda kv: rank[kv[1].__module__.rpartition(".")[2]]))


FRAME_INSTANCES = 20
"""A finding's `frames` are the decisive rows of its first this many connections (by time):
what a display filter and an annotated capture show, bounded."""


def make_finding(diag: Diag, kind: str, inst: list[Instance], story: Story) -> Finding:
    """One finding for many connections: counts, time range, a few examples, and the timeline
    of the earliest one."""
    inst = sorted(inst, key=lambda x: x.first_ns)
    return finding_from_columns(
        diag,
        kind,
        story,
        inst,
        np.array([x.no for x in inst], np.int64),
        min(x.first_ns for x in inst),
        max(x.last_ns for x in inst),
    )


def finding_from_columns(
    diag: Diag,
    kind: str,
    story: Story,
    head: list[Instance],
    nos: npt.NDArray[np.int64],
    first_ns: int,
    last_ns: int,
) -> Finding:
    """`make_finding` for a kind whose connections were found with numpy: `nos` the stream
    numbers of all instances in `make_finding`'s order (by first time, stable), `head` the
    first instances of that order (at least the 20 whose rows make `frames`), built as
    objects for the timeline and frames only."""
    frames: list[int] = []
    for x in head[:FRAME_INSTANCES]:
        frames.extend(x.conn.at("frame", i) for i, _ in x.rows)
    uniq = unique_sorted(nos)
    return Finding(
        kind=kind,
        severity=story.severity,
        summary=story.summary,
        streams=StreamNumbers(uniq),
        frames=frames,
        timeline=head[0].timeline(),
        explanation=story.explanation,
        causes=story.causes,
        fixes=story.fixes,
        errors=story.errors,
        count=len(uniq),
        first_ns=first_ns,
        last_ns=last_ns,
        examples=[int(s) for s in nos[: diag.settings.examples]],
        facts=dict(story.facts),
    )


def plural(n: int, word: str, many: str | None = None) -> str:
    """`n` and the word for one or many, the count grouped in thousands (5,000)."""
    return f"{n:,} {word if n == 1 else (many or word + 's')}"
