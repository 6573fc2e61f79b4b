"""`tcpwhy host watch`: a live view whose alerts come from trends, not single readings.

A CLOSE_WAIT count means little once; the same count growing sample after
sample is a leak. The watcher keeps the history that a one-shot command lacks.
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from tcpwhy.host import nstat as ctr
from tcpwhy.host.explain import Listener, listeners, owner_label, state_counts
from tcpwhy.host.snapshot import Snapshot, collect
from tcpwhy.host.sockets import STATES
from tcpwhy.schemas import SCHEMA_VERSION
from tcpwhy.timestamps import rfc3339, stamp

HISTORY = 30
SPARK = "▁▂▃▄▅▆▇█"
RETRANS_MIN = 10  # retransmitted segments per sample before a ratio is meaningful
RETRANS_RATIO = 0.02


@dataclass
class Alert:
    kind: str
    message: str

    def as_json(self) -> dict[str, str]:
        return {"kind": self.kind, "message": self.message}


def _local_clock(ns: int | None) -> str:
    """The local HH:MM:SS the text view prints (a person reads the wall clock); "" for none."""
    return "" if ns is None else datetime.fromtimestamp(ns / 1e9).strftime("%H:%M:%S")


def _seen_full(ns: int | None) -> dict[str, str | int | None]:
    """A listener's `seen_full` by the time convention: RFC 3339 UTC and epoch nanoseconds."""
    return {"seen_full": None if ns is None else rfc3339(ns), "seen_full_ns": ns}


@dataclass
class Frame:
    sample: int
    elapsed: float
    wall: str
    counts: dict[str, int]
    previous: dict[str, int] | None
    first: dict[str, int]
    history: dict[str, list[int]]
    listeners: list[Listener]
    seen_full: dict[str, int]  # per listener, when its queue was first seen full (epoch ns)
    deltas: dict[str, int]
    alerts: list[Alert]
    notes: list[str]
    netns: str | None
    kernel: dict[str, float] | None = None  # resets and drops per second, by reason
    ts_ns: int = 0  # when the sample was read (epoch nanoseconds)

    def as_json(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "sample": self.sample,
            **stamp(self.ts_ns),
            "elapsed_s": round(self.elapsed, 3),
            "netns": self.netns,
            "states": self.counts,
            "change": {
                s: self.counts[s] - (self.previous or self.counts).get(s, 0) for s in STATES
            },
            "listeners": [
                {**lst.as_json(), **_seen_full(self.seen_full.get(lst.sock.local))}
                for lst in self.listeners
            ],
            "deltas": self.deltas,
            "alerts": [a.as_json() for a in self.alerts],
            "notes": self.notes,
            "kernel_per_s": self.kernel,
        }


@dataclass
class Watcher:
    """Turns successive snapshots into frames; pure given the snapshots, so it is testable."""

    start: float | None = None
    samples: int = 0
    first: dict[str, int] | None = None
    previous: dict[str, int] | None = None
    prev_counters: dict[str, int] | None = None
    history: dict[str, deque[int]] = field(default_factory=dict)
    seen_full: dict[str, int] = field(default_factory=dict)

    def step(self, snap: Snapshot) -> Frame:
        if self.start is None:
            self.start = snap.time
        self.samples += 1
        counts = state_counts(snap.sockets)
        for s in STATES:
            self.history.setdefault(s, deque(maxlen=HISTORY)).append(counts[s])
        if self.first is None:
            self.first = counts
        lsts = listeners(snap.sockets, snap.sysctls, snap.limits_known)
        now_ns = time.time_ns()
        wall = _local_clock(now_ns)
        for lst in lsts:
            if lst.full:
                self.seen_full.setdefault(lst.sock.local, now_ns)
        deltas = (
            ctr.deltas(self.prev_counters, snap.counters) if self.prev_counters is not None else {}
        )
        alerts = self._alerts(snap, counts, lsts, deltas)
        frame = Frame(
            sample=self.samples,
            elapsed=snap.time - self.start,
            wall=wall,
            ts_ns=now_ns,
            counts=counts,
            previous=self.previous,
            first=self.first,
            history={s: list(v) for s, v in self.history.items()},
            listeners=lsts,
            seen_full=dict(self.seen_full),
            deltas=deltas,
            alerts=alerts,
            notes=snap.notes,
            netns=snap.netns,
        )
        self.previous = counts
        self.prev_counters = snap.counters
        return frame

    def _alerts(
        self, snap: Snapshot, counts: dict[str, int], lsts: list[Listener], deltas: dict[str, int]
    ) -> list[Alert]:
        alerts: list[Alert] = []
        cw = list(self.history["CLOSE_WAIT"])
        if (
            len(cw) >= 2
            and cw[-1] > cw[-2]
            and cw[-1] > cw[0]
            and (len(cw) < 3 or cw[-2] >= cw[-3])
        ):
            holders: dict[str, int] = {}
            for s in snap.sockets:
                if s.state == "CLOSE_WAIT":
                    key = f"{owner_label(s)} → {s.remote}"
                    holders[key] = holders.get(key, 0) + 1
            top = max(holders.items(), key=lambda kv: kv[1]) if holders else ("?", 0)
            alerts.append(
                Alert(
                    "close_wait_growing",
                    f"CLOSE_WAIT keeps growing: {cw[0]} → {cw[-1]} in {self.samples} samples; most held by "
                    f"{top[0]} ({top[1]}): peers closed, the process does not call close() — a leak",
                )
            )
        for lst in lsts:
            if lst.full:
                alerts.append(
                    Alert(
                        "accept_queue_full",
                        f"accept queue of {lst.sock.local} ({owner_label(lst.sock)}) full: "
                        f"{lst.accept_queue}/{lst.accept_queue_max}; new handshakes are dropped",
                    )
                )
            elif lst.sock.local in self.seen_full:
                alerts.append(
                    Alert(
                        "accept_queue_was_full",
                        f"accept queue of {lst.sock.local} was full at {_local_clock(self.seen_full[lst.sock.local])}, "
                        f"now {lst.accept_queue}/{lst.accept_queue_max}",
                    )
                )
        alerts += _moved("listen_overflows", "TcpExtListenOverflows", deltas)
        rs, out = deltas.get("TcpRetransSegs", 0), deltas.get("TcpOutSegs", 0)
        if rs >= RETRANS_MIN and out and rs / out >= RETRANS_RATIO:
            alerts.append(
                Alert(
                    "retransmissions",
                    f"retransmission spike: {rs} of {out} segments ({100 * rs / out:.1f}%) resent; "
                    f"RTO timeouts +{deltas.get('TcpExtTCPTimeouts', 0)}",
                )
            )
        alerts += _moved("syn_retrans", "TcpExtTCPSynRetrans", deltas)
        return alerts


def _moved(kind: str, name: str, deltas: dict[str, int]) -> list[Alert]:
    """An alert when counter `name` moved in the interval, with what its move means."""
    n = deltas.get(name, 0)
    if not n:
        return []
    return [Alert(kind, f"{name.removeprefix('TcpExt')} +{n}: {ctr.explain(name)}")]


def spark(values: list[int]) -> str:
    if not values:
        return ""
    lo, hi = min(values), max(values)
    if hi == lo:
        return SPARK[0] * len(values) if hi == 0 else SPARK[3] * len(values)
    return "".join(SPARK[(v - lo) * (len(SPARK) - 1) // (hi - lo)] for v in values)


def _signed(n: int) -> Text:
    if n > 0:
        return Text(f"+{n}", style="red")
    if n < 0:
        return Text(str(n), style="green")
    return Text("0", style="dim")


def render(frame: Frame) -> RenderableType:
    where = f"netns {frame.netns}" if frame.netns else "this namespace"
    header = Text(
        f"tcpwhy host watch — {where} — sample {frame.sample} at {frame.wall}", style="bold"
    )
    st = Table(title="TCP states", title_justify="left")
    st.add_column("state")
    st.add_column("count", justify="right")
    st.add_column("Δ last", justify="right")
    st.add_column("Δ start", justify="right")
    st.add_column("trend")
    for s in STATES:
        n = frame.counts[s]
        hist = frame.history.get(s, [])
        if n == 0 and not any(hist):
            continue
        prev = (frame.previous or frame.counts)[s]
        style = "bold red" if s == "CLOSE_WAIT" and n else ""
        st.add_row(
            Text(s, style=style),
            str(n),
            _signed(n - prev),
            _signed(n - frame.first[s]),
            spark(hist),
        )
    parts: list[RenderableType] = [header, st]
    if frame.listeners:
        lt = Table(title="listeners", title_justify="left")
        for col in ("local", "process", "queue", "limit", "fill", "syn_recv", "seen full"):
            lt.add_column(col, justify="right" if col in ("queue", "limit", "syn_recv") else "left")
        for lst in frame.listeners:
            m = lst.accept_queue_max
            fill = ""
            if m:
                width = 10
                k = min(width, round(width * lst.accept_queue / m))
                fill = "█" * k + "·" * (width - k)
            style = "bold red" if lst.full else ("yellow" if lst.at_limit else "")
            lt.add_row(
                lst.sock.local,
                owner_label(lst.sock),
                str(lst.accept_queue),
                "?" if m is None else str(m),
                Text(fill, style=style),
                str(lst.syn_recv),
                _local_clock(frame.seen_full.get(lst.sock.local)),
            )
        parts.append(lt)
    if frame.sample > 1:
        if frame.deltas:
            ct = Table(title="counters moved since last sample", title_justify="left")
            ct.add_column("counter")
            ct.add_column("Δ", justify="right")
            ct.add_column("meaning")
            known = [n for n in frame.deltas if n in ctr.BY_NAME]
            for name in sorted(known, key=lambda n: -frame.deltas[n]):
                ct.add_row(name, f"+{frame.deltas[name]}", ctr.BY_NAME[name].meaning)
            parts.append(ct)
        else:
            parts.append(Text("no lifecycle counter moved since the last sample", style="dim"))
    if frame.alerts:
        parts.append(Text("alerts", style="bold red"))
        for a in frame.alerts:
            parts.append(Text(f"  ! {a.message}", style="red"))
    if frame.kernel:
        kt = Table(title="kernel resets and drops per second (host trace)", title_justify="left")
        kt.add_column("event")
        kt.add_column("reason")
        kt.add_column("/s", justify="right")
        for key, rate in sorted(frame.kernel.items(), key=lambda kv: -kv[1]):
            event, _, reason = key.partition(" ")
            kt.add_row(event, reason, f"{rate:.1f}")
        parts.append(kt)
    elif frame.kernel is not None and frame.sample > 1:
        parts.append(Text("the kernel sent no reset and dropped nothing", style="dim"))
    for note in frame.notes:
        parts.append(Text(f"note: {note}", style="dim"))
    return Group(*parts)


class KernelRates:
    """The kernel's resets and drops per reason per second, from `host trace`'s tracepoints;
    without root or tracefs, `note` says why there are none and watch goes on without."""

    def __init__(self, netns: str | None) -> None:
        self.session: Any = None
        self.note: str | None = None
        self.last = time.monotonic()
        try:
            from tcpwhy.errors import TcpwhyError
            from tcpwhy.host.trace import Filters, TraceSession, netns_addresses

            local = netns_addresses(netns) if netns else None
            session = TraceSession(
                Filters(local=local, kinds=frozenset({"reset_sent", "drop", "reset_received"}))
            )
            session.__enter__()
            self.session = session
        except TcpwhyError as exc:
            self.note = f"no kernel resets/drops by reason: {exc.reason}"

    def rates(self) -> dict[str, float] | None:
        if self.session is None:
            return None
        now = time.monotonic()
        batch = self.session.poll_batch()
        dt = max(now - self.last, 1e-3)
        self.last = now
        return {f"{e} {r or ''}".strip(): n / dt for (e, r), n in batch.counts().items()}

    def close(self) -> None:
        if self.session is not None:
            self.session.__exit__(None, None, None)
            self.session = None


def run(
    netns: str | None,
    interval: float,
    count: int | None,
    fmt: str,
    console: Console,
    out: Callable[[str], None] = print,
) -> int:
    """Sample until `count` frames were shown or Ctrl-C; returns the exit status."""
    watcher = Watcher()
    live_view = fmt == "table" and console.is_terminal and count != 1
    shown = 0
    kernel = KernelRates(netns)
    base_step = watcher.step

    def step(snap: Snapshot) -> Frame:
        frame = base_step(snap)
        frame.kernel = kernel.rates()
        if kernel.note:
            frame.notes = [*frame.notes, kernel.note]
        return frame

    watcher.step = step  # type: ignore[method-assign]
    try:
        if live_view:
            with Live(console=console, auto_refresh=False, transient=False) as live:
                while True:
                    t0 = time.monotonic()
                    frame = watcher.step(collect(netns))
                    live.update(render(frame), refresh=True)
                    shown += 1
                    if count is not None and shown >= count:
                        break
                    time.sleep(max(0.0, interval - (time.monotonic() - t0)))
        else:
            while True:
                t0 = time.monotonic()
                frame = watcher.step(collect(netns))
                if fmt == "json":
                    out(json.dumps(frame.as_json()))
                else:
                    if shown:
                        console.rule()
                    console.print(render(frame))
                shown += 1
                if count is not None and shown >= count:
                    break
                time.sleep(max(0.0, interval - (time.monotonic() - t0)))
    except KeyboardInterrupt:
        pass
    finally:
        kernel.close()
    return 0
