"""The watch loop's brain: chunks in, findings out as soon as their connections' fate is known.

Each window of connections that left the tracker (`tracker.ConnTracker`) is diagnosed by
the same rules as `analyze` (`diagnose.engine.run_rules`); its findings are counted into
groups by kind and server (`groups.Groups`) and printed when a group is new or due again.
"""

from __future__ import annotations

import gc
import io
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import numpy.typing as npt

from tcpwhy.decode.table import RST, PacketTable, format_endpoint
from tcpwhy.diagnose import request_retried
from tcpwhy.diagnose.context import CLIENT, SERVER, Capture
from tcpwhy.diagnose.engine import release_freed
from tcpwhy.diagnose.model import Finding, Severity
from tcpwhy.diagnose.registry import Diag, Settings, load, plural
from tcpwhy.schemas import SCHEMA_VERSION
from tcpwhy.timestamps import rfc3339
from tcpwhy.watch.groups import Group, Groups
from tcpwhy.watch.tracker import NS, ConnTracker, Limits, Window, concat_slim, slim, take_compact


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


WARM_CAPTURES = (
    "stale-keepalive",
    "stale-keepalive-tls",
    "keepalive-race",
    "refused",
    "middlebox-reset",
    "abortive-close",
)
"""Bundled lab captures diagnosed once before a live watch starts (`warm`)."""


def warm(settings: Settings | None = None) -> None:
    """Diagnose a few bundled lab captures, output thrown away, before the capture starts.
    A process's first diagnosis imports the rules' modules and loads their compiled loops:
    half a second and more on a loaded machine, which on the wire would delay the first
    finding past its second (measured live: 0.55 s for the first 20-row window)."""
    from tcpwhy.capture import iter_tables

    lab = Path(__file__).resolve().parents[1] / "data" / "lab"
    for name in WARM_CAPTURES:
        path = lab / f"{name}.pcap"
        if not path.exists():
            continue
        w = Watcher(io.StringIO(), "jsonl", settings, summary_every_s=0)
        for t in iter_tables(str(path)):
            w.chunk(t)
        w.finish()


EARLY_FRAMES = 2_000_000
"""--keep: frame numbers (8 bytes each) held of connections that left idle or evicted, so that
a finding on their later packets keeps them from their first packet."""

CARRY_NS = request_retried.WINDOW_NS
"""A failed request's connection waits this long (capture time, from its RST) for its retry:
the rule's own window."""
CARRY_CONNS = 256  # failed connections waiting for their retry; the oldest go first
CARRY_CONN_ROWS = 64  # rows kept of one: its first (the handshake) and its last (the failure)
RETRY_CANDIDATES = 8  # new connections matched against one failed request, per window
CARRY_HEAD_ROWS = 8


@dataclass
class Failed:
    """A connection whose request failed (a RST after the client's data), diagnosed already,
    kept for `request-retried`: its retry is a new connection that usually ends (and leaves
    the tracker) seconds after the failure, in a later window."""

    number: int  # the watch's connection number
    table: PacketTable  # its rows (slim, at most CARRY_CONN_ROWS)
    first_ns: int
    rst_ns: int
    key: int  # client address and server address:port, hashed (`_pair_keys`)


def _pair_keys(ep: Any) -> npt.NDArray[np.uint64]:
    """Per stream: a 64-bit hash of its client's address and its server's address and port
    (a retry comes from the same client to the same server)."""
    h = np.full(len(ep.server_port), 0x243F6A8885A308D3, np.uint64)
    with np.errstate(over="ignore"):
        for v in (ep.client_hi, ep.client_lo, ep.server_hi, ep.server_lo, ep.server_port):
            h = (h ^ np.asarray(v).astype(np.uint64)) * np.uint64(0x9E3779B97F4A7C15)
            h ^= h >> np.uint64(29)
    return h


def run_rules(cap: Capture, settings: Settings) -> Diag:
    """Every rule on a window, as `diagnose.engine.run_rules` runs them on a capture, without
    giving the heap back after each rule: a window is small, and 30 `malloc_trim` calls per
    window were a tenth of a busy watch's time (the heap is trimmed after each collection,
    `GC_ROWS`)."""
    diag = Diag(cap, settings)
    for fn in load().values():
        diag.findings.extend(fn(diag))
    diag.findings.sort(key=lambda f: (-f.severity, f.first_ns))
    return diag


def _sids(nos: npt.NDArray[np.int64], numbers: Sequence[int]) -> npt.NDArray[np.int64]:
    """The window's stream ids whose connection numbers are among `numbers` (a connection
    whose 4-tuple was reused while it lingered is several streams of the window)."""
    return np.flatnonzero(np.isin(nos, np.asarray(numbers, np.int64)) & (nos >= 0))


def unanswered(cap: Capture, sids: npt.NDArray[np.int64]) -> npt.NDArray[np.bool_]:
    """Per stream of `sids` (each with a RST): whether its last request may have gone
    unanswered, as `request-retried` reads a failed request. False only where the rule
    surely passes it by: no client data before the first RST, or server data after the
    client's last that is not a lone TLS closing alert (a record starting 0x15, or 0x17 in
    TLS 1.3, and at most one such row). Only such connections wait for their retry: those
    answered (a client's abortive close) were each matched again by the rule in every
    window for ten seconds, a third of a busy watch's time."""
    t = cap.table
    flags, plen, side = t["flags"], t["payload_len"], cap.side
    data, off, pcap = t.data, t["payload_off"], t["payload_cap"]
    out = np.zeros(len(sids), np.bool_)
    for k, sid in enumerate(sids.tolist()):
        rows = cap.order[cap.starts[sid] : cap.ends[sid]]
        rst = np.flatnonzero(flags[rows] & RST)
        if not len(rst):
            continue
        before = rows[: int(rst[0])]
        d = plen[before] > 0
        s = side[before]
        cd = np.flatnonzero(d & (s == CLIENT))
        if not len(cd):
            continue
        after = before[int(cd[-1]) + 1 :]
        srv = after[(plen[after] > 0) & (side[after] == SERVER)]
        if len(srv) > 1:
            continue
        if len(srv) == 1 and pcap[srv[0]] > 0 and int(data[int(off[srv[0]])]) not in (0x15, 0x17):
            continue
        out[k] = True
    return out


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
        self.failed: list[Failed] = []  # failed requests waiting for their retry (oldest first)
        # --keep: frames (and first packet time) of connections that left idle or evicted,
        # by 4-tuple key, oldest first (`_remember`)
        self.early: dict[int, tuple[list[npt.NDArray[np.int64]], int]] = {}
        self.early_frames = 0
        self._rows_since_gc = 0

    # -- input --------------------------------------------------------------------------

    def chunk(self, t: PacketTable, tick: bool = True) -> None:
        """A decoded chunk of the capture, in capture order (`tick` False: more follow at
        once, time passes after the last)."""
        if len(t):
            self.counters.packets += len(t)
            if not self.first_ns:
                self.first_ns = int(t["ts_ns"][0])
        self.tracker.feed(slim(t))
        if tick:
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
                release_freed()
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
        # the rules name connections by the watch's numbers (findings' texts included)
        nos = self._distinct(self._numbers(cap, w.numbers))
        cap.stream_numbers = nos
        diag = run_rules(cap, self.settings)
        c = self.counters
        c.connections += cap.nstreams
        c.resets += int(cap.n_rst.sum())
        refused = (cap.n_syn[:, 0] > 0) & (cap.n_synack.sum(axis=1) == 0) & (cap.n_rst[:, 1] > 0)
        c.refused += int(refused.sum())
        if int(cap.n_data.sum()):
            c.retransmissions += int(cap.flag("retransmission").sum())
        retried = np.zeros(cap.nstreams, np.bool_)
        for f in diag.findings:
            if f.kind == request_retried.KIND:
                retried[_sids(nos, f.streams)] = True
        later = self._across_windows(cap, nos, retried, w.now_ns)
        if self.keeper is not None:
            first = cap.order[np.minimum(cap.starts, max(len(t) - 1, 0))]
            keys = np.where(cap.ends > cap.starts, w.keys[first], np.uint64(0))
            kept = self._keep(cap, nos, diag.findings, keys)
            self._remember(cap, keys, kept, w.unended)
        self._report(cap, nos, diag.findings, w.now_ns)
        if later is not None:
            if self.keeper is not None:
                self._keep(*later)
            self._report(*later, w.now_ns)

    @staticmethod
    def _numbers(cap: Capture, row_numbers: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        """Per stream of `cap`: the watch's connection number (-1: no TCP row)."""
        first = cap.order[np.minimum(cap.starts, max(len(cap.table) - 1, 0))]
        return np.where(cap.ends > cap.starts, row_numbers[first], -1)

    def _distinct(self, nos: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        """`nos` with a number of its own for each later stream of a 4-tuple reused while
        its connection lingered in the tracker (one number there, several streams here,
        as analyze counts them): a finding's count is of streams."""
        if len(nos) < 2:
            return nos
        order = np.argsort(nos, kind="stable")
        s = nos[order]
        dup = np.zeros(len(nos), np.bool_)
        dup[order[1:]] = (s[1:] == s[:-1]) & (s[1:] >= 0)
        k = int(np.count_nonzero(dup))
        if k:
            tr = self.tracker
            nos = nos.copy()
            nos[dup] = np.arange(tr.next_no, tr.next_no + k)
            tr.next_no += k
        return nos

    def _report(
        self, cap: Capture, nos: npt.NDArray[np.int64], findings: list[Finding], now_ns: int
    ) -> None:
        """Findings of `cap` (already in the watch's connection numbers) counted into their
        groups and printed when due."""
        c = self.counters
        ep = cap.endpoints
        for f in findings:
            local = _sids(nos, f.streams[:1])
            server = self._server(ep, int(local[0])) if len(local) else "?"
            key = (f.kind, server)
            c.findings[key] = c.findings.get(key, 0) + f.count
            self.worst = f.severity if self.worst is None else max(self.worst, f.severity)
            g = self.groups.add(f, server, now_ns)
            if g is not None:
                self._emit(g, now_ns)

    # -- request-retried across windows ------------------------------------------------

    def _across_windows(
        self,
        cap: Capture,
        nos: npt.NDArray[np.int64],
        retried: npt.NDArray[np.bool_],
        now_ns: int,
    ) -> tuple[Capture, npt.NDArray[np.int64], list[Finding]] | None:
        """`request-retried` across windows: the carried failed requests whose retry can no
        longer come (their RST older than the rule's window, `CARRY_NS`) let go, those
        retried by a new connection of this window found (`_retries`), then this window's
        own failed requests whose retry was not in it carried (`_carry`)."""
        self.failed = [f for f in self.failed if f.rst_ns + CARRY_NS >= now_ns]
        if not cap.nstreams:
            return None
        later = self._retries(cap, nos, retried) if self.failed else None
        self._carry(cap, nos, retried)
        return later

    def _carry(
        self, cap: Capture, nos: npt.NDArray[np.int64], retried: npt.NDArray[np.bool_]
    ) -> None:
        """Keep the window's failed requests whose retry was not in it (`Failed`)."""
        failed = (cap.n_rst.sum(axis=1) > 0) & (cap.n_data[:, CLIENT] > 0) & ~retried & (nos >= 0)
        sids = np.flatnonzero(failed)
        if len(sids):
            sids = sids[unanswered(cap, sids)]
        if not len(sids):
            return
        keys = _pair_keys(cap.endpoints)
        rst = cap.table["ts_ns"].astype(np.int64)
        is_rst = (cap.table["flags"].astype(np.int64) & 0x04) != 0
        for sid in sids[-CARRY_CONNS:].tolist():
            rows = cap.order[cap.starts[sid] : cap.ends[sid]]
            at = rows[is_rst[rows]]
            if len(rows) > CARRY_CONN_ROWS:
                tail = CARRY_CONN_ROWS - CARRY_HEAD_ROWS
                rows = np.concatenate([rows[:CARRY_HEAD_ROWS], rows[-tail:]])
            part = take_compact(cap.table, np.sort(rows))
            part.icmp = None
            self.failed.append(
                Failed(
                    int(nos[sid]), part, int(cap.first_ns[sid]), int(rst[at].min()), int(keys[sid])
                )
            )
        if len(self.failed) > CARRY_CONNS:
            del self.failed[: len(self.failed) - CARRY_CONNS]

    def _retries(
        self, cap: Capture, nos: npt.NDArray[np.int64], retried: npt.NDArray[np.bool_]
    ) -> tuple[Capture, npt.NDArray[np.int64], list[Finding]] | None:
        """`request-retried` for the failed requests of earlier windows whose retry is a new
        connection of this one: the rule run on those and this window's new connections to
        the same servers from the same clients. None when there is nothing to match."""
        fresh = np.flatnonzero((cap.n_syn[:, CLIENT] > 0) & (cap.n_data[:, CLIENT] > 0) & ~retried)
        if not len(fresh):
            return None
        # per failed request, its first few candidates: new connections of the same pair
        # that began after it did and within the rule's window after its RST (the rule
        # takes the earliest that repeats the request)
        keys = _pair_keys(cap.endpoints)[fresh]
        by = np.lexsort((cap.first_ns[fresh], keys))
        fresh, keys, starts = fresh[by], keys[by], cap.first_ns[fresh][by]
        picked: list[npt.NDArray[np.int64]] = []
        matched: list[Failed] = []
        for f in self.failed:
            a, z = (
                np.searchsorted(keys, np.uint64(f.key)),
                np.searchsorted(keys, np.uint64(f.key), side="right"),
            )
            if a == z:
                continue
            a += int(np.searchsorted(starts[a:z], f.first_ns))
            z = a + int(np.searchsorted(starts[a:z], f.rst_ns + CARRY_NS, side="right"))
            if a < z:
                picked.append(fresh[a : min(z, a + RETRY_CANDIDATES)])
                matched.append(f)
        if not picked:
            return None
        sel = np.zeros(cap.nstreams, np.bool_)
        sel[np.concatenate(picked)] = True
        rows = np.flatnonzero(sel[np.maximum(cap.stream, 0)] & (cap.stream >= 0))
        mine = take_compact(cap.table, rows)
        mine.icmp = None
        t = concat_slim([f.table for f in matched] + [mine])
        numbers = np.concatenate(
            [np.full(len(f.table), f.number, np.int64) for f in matched] + [nos[cap.stream[rows]]]
        )
        order = np.argsort(t["ts_ns"], kind="stable")
        t = take_compact(t, order)
        t.icmp = None
        numbers = numbers[order]
        cap2 = Capture(t, np.zeros(len(t), np.int16), [self.source])
        nos2 = self._numbers(cap2, numbers)
        cap2.stream_numbers = nos2
        found = load()[request_retried.KIND](Diag(cap2, self.settings))
        if not found:
            return None
        done = {int(s) for f in found for s in f.streams}
        self.failed = [f for f in self.failed if f.number not in done]
        return cap2, nos2, found

    def _keep(
        self,
        cap: Capture,
        nos: npt.NDArray[np.int64],
        findings: list[Finding],
        keys: npt.NDArray[np.uint64] | None = None,
    ) -> npt.NDArray[np.bool_]:
        """The frames of the findings' connections (and their first packet times) to the
        keeper; with `keys` (per stream), also the frames their connections had before they
        last left idle or evicted (`early`). Returns which streams were kept."""
        mark = np.zeros(cap.nstreams, np.bool_)
        for f in findings:
            mark[_sids(nos, f.streams)] = True
        if not mark.any():
            return mark
        st = cap.stream
        rows = np.flatnonzero((st >= 0) & mark[np.maximum(st, 0)])
        frames = [cap.table["frame"][rows].astype(np.int64)]
        ic = cap.icmp
        if ic.n and ic.table is not None:  # the ICMP errors about them (tshark's tcp.stream too)
            sid = ic.sid
            at = np.flatnonzero((sid >= 0) & mark[np.clip(sid, 0, max(cap.nstreams - 1, 0))])
            frames.append(ic.table["frame"][at].astype(np.int64))
        first_ns = cap.first_ns[mark].astype(np.int64)
        if keys is not None and self.early:
            for j, k in enumerate(keys[mark].tolist()):
                got = self.early.pop(int(k), None)
                if got is not None:
                    frames.extend(got[0])
                    first_ns[j] = got[1]
                    self.early_frames -= sum(len(x) for x in got[0])
        self.keeper.keep(np.concatenate(frames), first_ns)
        return mark

    def _remember(
        self,
        cap: Capture,
        keys: npt.NDArray[np.uint64],
        kept: npt.NDArray[np.bool_],
        unended: npt.NDArray[np.uint64],
    ) -> None:
        """With --keep: the frames of the connections that left without ending (idle,
        evicted) and without a finding, by 4-tuple, for when their later packets (followed as
        a connection of their own) have one; the frames of those that ended, forgotten."""
        if not cap.nstreams:
            return
        live = cap.ends > cap.starts
        later = live & ~kept & np.isin(keys, unended)
        if self.early:
            for k in keys[live & ~later].tolist():  # ended (or kept): nothing more to add
                got = self.early.pop(int(k), None)
                if got is not None:
                    self.early_frames -= sum(len(x) for x in got[0])
        frame = cap.table["frame"]
        for sid in np.flatnonzero(later).tolist():
            fr = frame[cap.order[cap.starts[sid] : cap.ends[sid]]].astype(np.int64)
            k = int(keys[sid])
            parts, first = self.early.pop(k, ([], int(cap.first_ns[sid])))
            self.early[k] = ([*parts, fr], min(first, int(cap.first_ns[sid])))
            self.early_frames += len(fr)
        while self.early_frames > EARLY_FRAMES and self.early:  # the oldest go first
            got = self.early.pop(next(iter(self.early)))
            self.early_frames -= sum(len(x) for x in got[0])

    @staticmethod
    def _server(ep: Any, sid: int) -> str:
        return format_endpoint(ep.server_hi[sid], ep.server_lo[sid], ep.server_port[sid])

    # -- output -------------------------------------------------------------------------

    def _emit(self, g: Group, now_ns: int) -> None:
        f: Finding = g.finding
        if self.fmt == "jsonl":
            d = {"schema_version": SCHEMA_VERSION, **f.to_json()}
            d["ts"] = rfc3339(now_ns)  # when it was announced (docs/json.md: time)
            d["ts_ns"] = now_ns
            d["group"] = {
                "server": g.server,
                "count": g.count,
                "first_ts": rfc3339(g.first_ns),
                "first_ts_ns": g.first_ns,
                "last_ts": rfc3339(g.last_ns),
                "last_ts_ns": g.last_ns,
                "announcement": g.announcements,
            }
            self.out.write(json.dumps(d, default=str) + "\n")
        else:
            again = "" if g.announcements == 1 else f" again ({g.count:,} so far)"
            self.out.write(
                f"{_when(now_ns)}  {f.severity.label.upper():7} {f.kind}  {g.server}{again}\n"
                f"    {f.summary}\n"
            )
        self.out.flush()

    def summary_line(self) -> str:
        c, tr = self.counters, self.tracker
        line = (
            f"{plural(c.packets, 'packet')}, {plural(c.connections + tr.open, 'connection')} "
            f"({tr.open:,} open), {plural(len(self.groups.groups), 'finding group')} "
            f"({plural(sum(c.findings.values()), 'instance')}), {plural(c.resets, 'reset')}, "
            f"{plural(c.retransmissions, 'retransmission')}, {c.refused:,} refused"
        )
        if c.drops:
            line += f"; warning: {plural(c.drops, 'packet')} dropped by the kernel"
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
