"""The `tcpwhy host trace` command: follow the kernel's TCP events, print them, sum them up."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from collections import deque
from types import FrameType
from typing import Any, TextIO

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from tcpwhy.cli_helpers import positive_float
from tcpwhy.errors import TcpwhyError
from tcpwhy.host.trace import (
    Batch,
    Filters,
    Summary,
    TraceEvent,
    TraceSession,
    netns_addresses,
    normalize_host,
    parse_groups,
)

POLL_S = 0.05
LIVE_ROWS = 20
STYLE = {
    "reset_sent": "bold red",
    "reset_received": "red",
    "drop": "yellow",
    "retransmit": "magenta",
}


def add_arguments(t: argparse.ArgumentParser) -> None:
    t.add_argument("--duration", type=positive_float, metavar="S", help="stop after S seconds")
    t.add_argument(
        "--port", type=int, action="append", default=[], metavar="N", help="keep events on port N"
    )
    t.add_argument(
        "--host",
        action="append",
        default=[],
        metavar="ADDR",
        help="keep events whose either end is ADDR",
    )
    t.add_argument(
        "--events",
        default="state,reset,drop,retransmit",
        metavar="LIST",
        help="event groups: state,reset,drop,retransmit (all)",
    )
    t.add_argument(
        "--netns",
        metavar="NAME",
        help="keep the events of the sockets of a named network namespace (by its addresses)",
    )
    t.add_argument("--format", choices=("table", "jsonl"), default="table")


class _Stop:
    """Ctrl-C, SIGTERM and SIGHUP end the loop between two reads, never inside one: pages
    taken from the ring buffer but not yet printed would be lost."""

    requested = False

    @classmethod
    def on_signal(cls, signum: int, frame: FrameType | None) -> None:
        cls.requested = True


def _row(ev: TraceEvent) -> list[Any]:
    what = ev.event
    if ev.event == "state":
        what = f"{ev.old_state} → {ev.new_state}"
    return [
        time.strftime("%H:%M:%S", time.localtime(ev.ts)) + f".{int(ev.ts * 1000) % 1000:03d}",
        Text(ev.event, style=STYLE.get(ev.event, "")),
        ev.tuple_text(),
        what if ev.event == "state" else (ev.state or ""),
        Text(ev.reason or "", style="bold" if ev.reason else ""),
        f"{ev.comm or '?'}/{ev.pid}" + (" (irq)" if ev.context != "task" else ""),
    ]


def _line(ev: TraceEvent) -> Text:
    cells = _row(ev)
    t = Text()
    t.append(cells[0] + " ")
    t.append(cells[1])
    t.append(f" {cells[2]} {cells[3] if isinstance(cells[3], str) else ''}")
    if ev.reason:
        t.append(f" reason={ev.reason}", style="bold")
    t.append(f"  {cells[5]}", style="dim")
    return t


def _live(recent: deque[TraceEvent], summary: Summary, instance: str) -> RenderableType:
    t = Table(title=f"kernel TCP events (ftrace instance {instance})", title_justify="left")
    for col in ("time", "event", "socket (local → remote)", "state", "reason", "task"):
        t.add_column(col)
    for ev in recent:
        t.add_row(*_row(ev))
    counts = ", ".join(
        f"{e}{'/' + r if r else ''} {n}" for (e, r), n in summary.counts.most_common(6)
    )
    return Group(t, Text(f"{summary.total} events: {counts}", style="dim"))


def print_summary(con: Console, summary: Summary, lost: int, notes: list[str]) -> None:
    doc = summary.as_json(lost)
    con.print(Text(f"{doc['events']} events in {doc['seconds']:g} s, {lost} lost", style="bold"))
    if lost:
        con.print(
            Text(
                f"! the ring buffer lost {lost} events: the counts below are lower bounds "
                "(narrow the trace with --port/--host/--events)",
                style="red",
            )
        )
    if summary.counts:
        t = Table(title="by event and reason", title_justify="left")
        t.add_column("event")
        t.add_column("reason / state")
        t.add_column("count", justify="right")
        for (e, r), n in summary.counts.most_common():
            t.add_row(e, r or "", str(n))
        con.print(t)
    if summary.resets_by_socket:
        t = Table(title="sockets with most resets", title_justify="left")
        t.add_column("socket")
        t.add_column("resets", justify="right")
        for sock, n in summary.resets_by_socket.most_common(10):
            t.add_row(sock, str(n))
        con.print(t)
    if summary.meanings:
        con.print(Text("what they mean", style="bold"))
        for (e, r), why in summary.meanings.items():
            con.print(Text(f"· {e}{' ' + r if r else ''}: ", style="bold"), Text(why), sep="")
    for note in notes:
        con.print(Text(f"note: {note}", style="yellow"))


def run(args: argparse.Namespace, con: Console, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    filters = Filters(
        ports=frozenset(args.port),
        hosts=frozenset(normalize_host(h) for h in args.host),
        local=netns_addresses(args.netns) if args.netns else None,
        kinds=parse_groups(args.events),
    )
    for p in args.port:
        if not 0 < p < 65536:
            raise TcpwhyError("--port", f"not a port: {p}")
    session = TraceSession(filters)
    summary = Summary()
    _Stop.requested = False
    old = {
        s: signal.signal(s, _Stop.on_signal) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    }
    jsonl = args.format == "jsonl"
    live: Live | None = None
    recent: deque[TraceEvent] = deque(maxlen=LIVE_ROWS)

    def emit(batch: Batch) -> None:
        if jsonl:
            # the hot path: lines and counts straight from the columns
            summary.add_batch(batch)
            if len(batch):
                out.write(batch.jsonl())
                out.flush()
            return
        events = batch.events()
        for ev in events:
            summary.add(ev)
        if live is not None:
            recent.extend(events)
            live.update(_live(recent, summary, session.instance))
        else:
            for ev in events:
                con.print(_line(ev))

    deadline = None if args.duration is None else time.monotonic() + args.duration
    try:
        with session:
            print(
                f"tcpwhy: host trace: tracing in ftrace instance {session.instance} "
                f"({'until Ctrl-C' if deadline is None else f'{args.duration:g} s'})",
                file=sys.stderr,
                flush=True,
            )
            if not jsonl and con.is_terminal:
                live = Live(
                    _live(recent, summary, session.instance), console=con, refresh_per_second=4
                )
                live.start()
            try:
                while not _Stop.requested and (deadline is None or time.monotonic() < deadline):
                    t0 = time.monotonic()
                    emit(session.poll_batch())
                    # one read per period: large batches keep the fixed cost per read small
                    if not session.inst.more:
                        time.sleep(max(0.0, POLL_S - (time.monotonic() - t0)))
            except KeyboardInterrupt:
                pass
            emit(session.finish_batch())
            lost = session.lost()
    finally:
        if live is not None:
            live.stop()
        for s, h in old.items():
            signal.signal(s, h)
    if jsonl:
        doc = summary.as_json(lost)
        print(
            f"tcpwhy: host trace: {doc['events']} events, {lost} lost"
            + "".join(f"; note: {n}" for n in session.notes),
            file=sys.stderr,
            flush=True,
        )
    else:
        print_summary(con, summary, lost, session.notes)
    return 0
