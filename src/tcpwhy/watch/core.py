"""The watch loop's brain: chunks in, findings out as soon as their connections' fate is known.

Each window of connections that left the tracker (`tracker.ConnTracker`) is diagnosed by
the same rules as `analyze` (`diagnose.engine.run_rules`); its findings are counted into
groups by kind and server (`groups.Groups`) and printed when a group is new or due again.
"""

from __future__ import annotations

import gc
import json
import time
from dataclasses import dataclass, field
from typing import Any, TextIO

import numpy as np

from tcpwhy.decode.table import PacketTable, addr_is_v4, format_addr
from tcpwhy.diagnose.context import Capture
from tcpwhy.diagnose.engine import run_rules
from tcpwhy.diagnose.model import Finding, Severity
from tcpwhy.diagnose.registry import Settings
from tcpwhy.schemas import SCHEMA_VERSION
from tcpwhy.timestamps import rfc3339
from tcpwhy.watch.groups import Group, Groups
from tcpwhy.watch.tracker import NS, ConnTracker, Limits, Window, slim


@dataclass
class Counters:
    packets: int = 0
    resets: int = 0
    retransmissions: int = 0
    refused: int = 0
    connections: int = 0
    drops: int = 0  # the kernel's, from the capture engine
    findings: dict[tuple[str, str], int] = field(default_factory=dict)


GC_ROWS = 200_000
"""Rows diagnosed between two full garbage collections. A window's `Capture` is freed only
by the cyclic collector (its views refer back to it), which numpy-heavy code seldom runs:
without this, the windows of a busy link piled up, hundreds of MB of them."""


def _when(ns: int) -> str:
    t = time.gmtime(ns // NS)
    return time.strftime("%H:%M:%S", t) + f".{ns % NS // 1_000_000:03d}"


class Watcher:
    """Feeds chunks to the tracker, diagnoses the windows it releases, prints findings."""

    def __init__(
        self,
        out: TextIO,
        fmt: str = "text",
        settings: Settings | None = None,
        limits: Limits | None = None,
        groups: Groups | None = None,
        source: str = "-",
        summary_every_s: float = 60.0,
        metrics: Any = None,
        err: TextIO | None = None,
    ) -> None:
        self.out = out
        self.err = err
        self.fmt = fmt
        self.settings = settings or Settings()
        self.tracker = ConnTracker(limits)
        self.groups = groups or Groups()
        self.source = source
        self.summary_every_ns = int(summary_every_s * NS)
        self.next_summary_ns = 0
        self.counters = Counters()
        self.metrics = metrics
        self.worst: Severity | None = None
        self.first_ns = 0
        self.keeper: Any = None  # `keep.Keeper` with --keep: the findings' packets to files
        self._rows_since_gc = 0

    # -- input --------------------------------------------------------------------------

    def chunk(self, t: PacketTable) -> None:
        """A decoded chunk of the capture, in capture order."""
        if len(t):
            self.counters.packets += len(t)
            if not self.first_ns:
                self.first_ns = int(t["ts_ns"][0])
        s = slim(t)
        self.tracker.feed(s)
        self.tick()

    def tick(self, now_ns: int | None = None) -> None:
        """Let time pass (capture time): connections whose fate is known are diagnosed."""
        w = self.tracker.release(now_ns)
        if w is not None:
            self._diagnose(w)
            self._rows_since_gc += len(w.table)
            del w
            if self._rows_since_gc >= GC_ROWS:
                self._rows_since_gc = 0
                gc.collect()
        now = self.tracker.now_ns
        for g in self.groups.due(now):
            self._emit(g, now)
        if self.summary_every_ns and now >= self.next_summary_ns:
            if self.next_summary_ns:
                self.summary(now)
            self.next_summary_ns = now + self.summary_every_ns
        if self.metrics is not None:
            self.metrics.update(self)

    def finish(self) -> None:
        """The capture ended: every open connection's fate is what was seen."""
        w = self.tracker.release(everything=True)
        if w is not None:
            self._diagnose(w)
        now = self.tracker.now_ns
        for g in self.groups.groups.values():
            if g.count > g.announced_count:
                self.groups._announce(g, now)
                self._emit(g, now)
        if self.metrics is not None:
            self.metrics.update(self)

    # -- diagnosis ----------------------------------------------------------------------

    def _diagnose(self, w: Window) -> None:
        t = w.table
        if not len(t):
            return
        cap = Capture(t, np.zeros(len(t), np.int16), [self.source])
        diag = run_rules(cap, self.settings)
        c = self.counters
        c.connections += cap.nstreams
        c.resets += int(cap.n_rst.sum())
        refused = (cap.n_syn[:, 0] > 0) & (cap.n_synack.sum(axis=1) == 0) & (cap.n_rst[:, 1] > 0)
        c.refused += int(refused.sum())
        if int(cap.n_data.sum()):
            c.retransmissions += int(cap.flag("retransmission").sum())
        # window stream ids -> the watch's connection numbers
        first = cap.order[np.minimum(cap.starts, max(len(t) - 1, 0))]
        nos = np.where(cap.ends > cap.starts, w.numbers[first], -1)
        ep = cap.endpoints
        if self.keeper is not None and diag.findings:
            self._keep(cap, diag.findings)
        for f in diag.findings:
            local = [s for s in f.streams if 0 <= s < cap.nstreams]
            server = self._server(ep, local[0]) if local else "?"
            f.streams = [int(nos[s]) for s in local]
            f.examples = [int(nos[s]) for s in f.examples if 0 <= s < cap.nstreams]
            for st in f.timeline:
                if 0 <= st.stream < cap.nstreams:
                    st.stream = int(nos[st.stream])
            key = (f.kind, server)
            c.findings[key] = c.findings.get(key, 0) + f.count
            self.worst = f.severity if self.worst is None else max(self.worst, f.severity)
            g = self.groups.add(f, server, w.now_ns)
            if g is not None:
                self._emit(g, w.now_ns)

    def _keep(self, cap: Capture, findings: list[Finding]) -> None:
        """The frames of the findings' connections (and their first packet times) to the
        keeper, before the stream numbers become the watch's."""
        mark = np.zeros(cap.nstreams, np.bool_)
        for f in findings:
            s = np.asarray(f.streams, np.int64)
            mark[s[(s >= 0) & (s < cap.nstreams)]] = True
        if not mark.any():
            return
        st = cap.stream
        rows = np.flatnonzero((st >= 0) & mark[np.maximum(st, 0)])
        frames = cap.table["frame"][rows].astype(np.int64)
        ic = cap.icmp
        if ic.n and ic.table is not None:  # the ICMP errors about them (tshark's tcp.stream too)
            sid = ic.sid
            at = np.flatnonzero((sid >= 0) & mark[np.clip(sid, 0, max(cap.nstreams - 1, 0))])
            frames = np.concatenate([frames, ic.table["frame"][at].astype(np.int64)])
        self.keeper.keep(frames, cap.first_ns[mark].astype(np.int64))

    @staticmethod
    def _server(ep: Any, sid: int) -> str:
        hi, lo = int(ep.server_hi[sid]), int(ep.server_lo[sid])
        addr = format_addr(hi, lo)
        port = int(ep.server_port[sid])
        return f"{addr}:{port}" if addr_is_v4(hi, lo) else f"[{addr}]:{port}"

    # -- output -------------------------------------------------------------------------

    def _emit(self, g: Group, now_ns: int) -> None:
        f: Finding = g.finding
        if self.fmt == "jsonl":
            d = {"schema_version": SCHEMA_VERSION, **f.to_json()}
            d["ts"] = now_ns / NS  # epoch seconds here (schema 1.x); `time` is RFC 3339
            d["ts_ns"] = now_ns
            d["time"] = rfc3339(now_ns)
            d["group"] = {
                "server": g.server,
                "count": g.count,
                "first_ts": g.first_ns / NS,
                "last_ts": g.last_ns / NS,
                "announcement": g.announcements,
            }
            self.out.write(json.dumps(d, default=str) + "\n")
        else:
            again = "" if g.announcements == 1 else f" again ({g.count} so far)"
            self.out.write(
                f"{_when(now_ns)}  {f.severity.label.upper():7} {f.kind}  {g.server}{again}\n"
                f"    {f.summary}\n"
            )
        self.out.flush()

    def summary_line(self) -> str:
        c, tr = self.counters, self.tracker
        line = (
            f"{c.packets} packets, {c.connections + tr.open} connections ({tr.open} open), "
            f"{len(self.groups.groups)} finding groups ({sum(c.findings.values())} instances), "
            f"{c.resets} resets, {c.retransmissions} retransmissions, {c.refused} refused"
        )
        if c.drops:
            line += f"; warning: {c.drops} packets dropped by the kernel"
        return line

    def summary(self, now_ns: int) -> None:
        line = f"{_when(now_ns)}  summary: {self.summary_line()}\n"
        if self.fmt == "jsonl":
            if self.err is not None:
                self.err.write("tcpwhy: watch: " + line)
                self.err.flush()
        else:
            self.out.write(line)
            self.out.flush()
