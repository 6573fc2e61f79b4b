"""`tcpwhy host …` sub-commands: states, listen, counters, sysctl, watch, trace.

All of them only read: sockets through sock_diag, /proc/net counters, /proc/sys; `trace`
enables tracepoints in a private ftrace instance that it removes when it ends.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from tcpwhy.cli_helpers import Subcommands, positive_float, positive_int
from tcpwhy.console import TABLE_WIDTH, make_console
from tcpwhy.errors import TcpwhyError
from tcpwhy.host import alerts
from tcpwhy.host import nstat as ctr
from tcpwhy.host import sysctl as sc
from tcpwhy.host.explain import Finding, analyze, group_key, listeners, owner_label, state_counts
from tcpwhy.host.netns import run_in_netns
from tcpwhy.host.snapshot import Snapshot, collect
from tcpwhy.host.sockets import STATES
from tcpwhy.schemas import SCHEMA_VERSION
from tcpwhy.timestamps import stamp


def _console() -> Console:
    return make_console(highlight=False, pipe_width=TABLE_WIDTH)


def _emit_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2), flush=True)


def register(sub: Subcommands) -> None:
    p = sub.add_parser(
        "host",
        help="inspect the live host: socket states, accept queues, counters, sysctls",
        description="Read-only views of the live host's TCP stack (or of another network namespace).",
    )

    def usage(args: argparse.Namespace) -> int:
        p.print_help()
        return 2

    p.set_defaults(func=usage)
    hs = p.add_subparsers(dest="host_command", metavar="VIEW")

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--netns", metavar="NAME", help="inspect a named network namespace (see `ip netns list`)"
    )
    common.add_argument(
        "--format", choices=("table", "json"), default="table", help="output format"
    )
    failing = argparse.ArgumentParser(add_help=False)
    failing.add_argument(
        "--fail-on",
        choices=alerts.LEVELS,
        metavar="LEVEL",
        help="exit 1 when an alert of LEVEL (info, warning, error) or above is present",
    )

    s = hs.add_parser(
        "states",
        parents=[common, failing],
        help="TCP sockets per state, grouped, with the reason a group looks wrong",
    )
    s.add_argument(
        "--by",
        choices=("port", "remote", "process"),
        help="group by local port, remote endpoint or owner",
    )
    s.add_argument("--list", action="store_true", help="also list every socket (table format)")
    s.set_defaults(func=cmd_states)

    lp = hs.add_parser(
        "listen",
        parents=[common, failing],
        help="listening sockets with accept-queue fill and limit",
    )
    lp.set_defaults(func=cmd_listen)

    c = hs.add_parser(
        "counters",
        parents=[common, failing],
        help="kernel counters for connection lifecycles, explained",
    )
    c.add_argument(
        "--interval", type=positive_float, metavar="S", help="print deltas every S seconds"
    )
    c.add_argument("--count", type=positive_int, metavar="N", help="stop after N intervals")
    c.add_argument(
        "--all", action="store_true", help="show every counter, not only the explained ones"
    )
    c.set_defaults(func=cmd_counters)

    y = hs.add_parser(
        "sysctl", parents=[common, failing], help="TCP settings: value, default, meaning, risk"
    )
    y.set_defaults(func=cmd_sysctl)

    w = hs.add_parser(
        "watch", parents=[common], help="live view: state trends, queues, counter deltas, alerts"
    )
    w.add_argument(
        "--interval",
        type=positive_float,
        default=2.0,
        metavar="S",
        help="seconds between samples (2)",
    )
    w.add_argument("--count", type=positive_int, metavar="N", help="stop after N samples")
    w.add_argument("--once", action="store_true", help="one sample, printed, for scripts")
    w.set_defaults(func=cmd_watch)

    from tcpwhy.host import trace_view

    t = hs.add_parser(
        "trace",
        help="the kernel's own account, live: state changes, resets and drops with its reasons",
        description=(
            "Follow the kernel's TCP tracepoints (state changes, resets sent and received, "
            "drops, retransmissions) in a private ftrace instance, with the reason the kernel "
            "gives for each reset and drop and what it means. Needs root; the host's tracing "
            "settings are not changed."
        ),
    )
    trace_view.add_arguments(t)
    t.set_defaults(func=cmd_trace)


# ---------------------------------------------------------------- states


def cmd_states(args: argparse.Namespace) -> int:
    if args.format == "json":
        from tcpwhy.host.documents import states as states_document

        doc = states_document(args.netns, args.by)
        _emit_json(doc)
        return _status(doc["alerts"], args.fail_on)
    snap = collect(args.netns, counters_=False)
    socks = snap.sockets
    counts = state_counts(socks)
    findings = analyze(socks, snap.sysctls, limits_known=snap.limits_known)
    groups: list[dict[str, Any]] = []
    if args.by:
        key = group_key(args.by, socks, snap.sysctls)
        buckets: dict[str, list[Any]] = {}
        for sock in socks:
            buckets.setdefault(key(sock), []).append(sock)
        for name, members in sorted(buckets.items(), key=lambda kv: (-len(kv[1]), kv[0])):
            groups.append(
                {
                    "group": name,
                    "total": len(members),
                    "states": {k: v for k, v in state_counts(members).items() if v},
                    "findings": analyze(
                        members, snap.sysctls, all_sockets=socks, limits_known=snap.limits_known
                    ),
                }
            )
    con = _console()
    con.print(_title("TCP sockets", args.netns, snap))
    line = Text()
    for st in STATES:
        n = counts[st]
        line.append(
            f"{st} {n}  ", style=("bold red" if st == "CLOSE_WAIT" and n else "" if n else "dim")
        )
    con.print(line)
    con.print(f"total {len(socks)}")
    if args.list:
        t = Table()
        for col in ("state", "recv_q", "send_q", "local", "remote", "process"):
            t.add_column(col, justify="right" if col.endswith("_q") else "left")
        for sock in sorted(
            socks, key=lambda x: (STATES.index(x.state) if x.state in STATES else 99, x.local)
        ):
            t.add_row(
                sock.state,
                str(sock.recv_q),
                str(sock.send_q),
                sock.local,
                sock.remote,
                owner_label(sock),
            )
        con.print(t)
    if args.by:
        t = Table(title=f"by {args.by}", title_justify="left")
        t.add_column(args.by)
        t.add_column("total", justify="right")
        t.add_column("states")
        t.add_column("why")
        for g in groups:
            states = ", ".join(f"{k} {v}" for k, v in g["states"].items())
            why = "\n".join(
                f"{'!' if f.severity == 'warning' else '·'} {f.title} ({f.count})"
                for f in g["findings"]
            )
            t.add_row(g["group"], str(g["total"]), states, Text(why, style="red" if why else ""))
        con.print(t)
    _print_findings(con, findings)
    _print_notes(con, snap.notes)
    return _status(alerts.from_findings(f.as_json() for f in findings), args.fail_on)


def _status(found: list[dict[str, Any]], fail_on: str | None) -> int:
    """The exit status of a host view: 1 when --fail-on is given and reached."""
    return 1 if alerts.reaches(found, fail_on) else 0


def _title(what: str, netns: str | None, snap: Snapshot | None = None) -> Text:
    where = f"network namespace {netns}" if netns else "this host's network namespace"
    src = f" (via {snap.source})" if snap is not None and snap.source else ""
    return Text(f"{what} — {where}{src}", style="bold")


def _print_findings(con: Console, findings: list[Finding]) -> None:
    if not findings:
        con.print(Text("nothing looks wrong", style="green"))
        return
    con.print(Text("why", style="bold"))
    for f in findings:
        mark = "!" if f.severity == "warning" else "·"
        con.print(
            Text(f"{mark} {f.subject}: ", style="bold red" if mark == "!" else "bold"),
            Text(f.why),
            sep="",
        )


def _print_notes(con: Console, notes: list[str]) -> None:
    for n in notes:
        con.print(Text(f"note: {n}", style="yellow"))


# ---------------------------------------------------------------- listen


def cmd_listen(args: argparse.Namespace) -> int:
    if args.format == "json":
        from tcpwhy.host.documents import listen

        doc = listen(args.netns)
        _emit_json(doc)
        return _status(doc["alerts"], args.fail_on)
    snap = collect(args.netns)
    lsts = listeners(snap.sockets, snap.sysctls, snap.limits_known)
    from tcpwhy.host.documents import listen_notes

    notes = listen_notes(snap.notes, snap.counters.get("TcpExtListenOverflows"))
    con = _console()
    con.print(_title("listening sockets", args.netns, snap))
    t = Table()
    for col in ("local", "process", "accept queue", "limit", "syn_recv", "status"):
        t.add_column(
            col, justify="right" if col in ("accept queue", "limit", "syn_recv") else "left"
        )
    for lst in lsts:
        m = lst.accept_queue_max
        style = {"full": "bold red", "filling": "yellow"}.get(lst.status, "green")
        t.add_row(
            lst.sock.local,
            owner_label(lst.sock),
            str(lst.accept_queue),
            "?" if m is None else str(m),
            str(lst.syn_recv),
            Text(lst.status, style=style),
        )
    con.print(t)
    for lst in lsts:
        con.print(Text(f"{lst.sock.local}: ", style="bold"), Text(lst.backlog_explained()), sep="")
        for w in lst.warnings:
            con.print(Text(f"  ! {w}", style="red"))
    if not lsts:
        con.print("no listening TCP sockets")
    _print_notes(con, notes)
    return _status(alerts.from_listeners(lst.as_json() for lst in lsts), args.fail_on)


# ---------------------------------------------------------------- counters


def _read_counters(netns: str | None) -> dict[str, int]:
    from tcpwhy.host.documents import read_counters

    return read_counters(netns)


def cmd_counters(args: argparse.Namespace) -> int:
    if args.count is not None and args.interval is None:
        raise TcpwhyError("--count", "needs --interval")
    if args.fail_on is not None and args.interval is None:
        raise TcpwhyError("--fail-on", "needs --interval (totals since boot are not alerts)")
    totals = _read_counters(args.netns)
    names = _counter_names(totals, args.all)
    con = _console()
    if args.format == "json":
        from tcpwhy.host.documents import counters_record

        print(json.dumps(counters_record(args.netns, totals)), flush=True)
    else:
        con.print(
            Text(
                f"kernel counters — {'netns ' + args.netns if args.netns else 'this namespace'}",
                style="bold",
            )
        )
        _print_totals(con, totals, names)
    if args.interval is None:
        return 0
    prev, n, seen = totals, 0, []
    try:
        while args.count is None or n < args.count:
            time.sleep(args.interval)
            cur = _read_counters(args.netns)
            moved = ctr.deltas(prev, cur)
            n += 1
            found = alerts.from_deltas(moved)
            seen += found
            if args.format == "json":
                explained = {k: ctr.explain(k) for k in moved if k in ctr.BY_NAME}
                print(
                    json.dumps(
                        {
                            "schema_version": SCHEMA_VERSION,
                            "netns": args.netns,
                            "sample": n,
                            **stamp(),
                            "interval_s": args.interval,
                            "deltas": moved,
                            "explained": explained,
                            "alerts": found,
                        }
                    ),
                    flush=True,
                )
            else:
                _print_deltas(con, n, args.interval, moved, args.all)
            prev = cur
    except KeyboardInterrupt:
        pass
    return _status(seen, args.fail_on)


def _counter_names(totals: dict[str, int], show_all: bool) -> list[str]:
    names = [c.name for c in ctr.CATALOG if c.name in totals]
    if show_all:
        names += sorted(n for n in totals if n not in ctr.BY_NAME and n not in ctr.CONSTANTS)
    return names


def _print_totals(con: Console, totals: dict[str, int], names: list[str]) -> None:
    t = Table()
    t.add_column("counter")
    t.add_column("total", justify="right")
    t.add_column("meaning")
    group = None
    for name in names:
        info = ctr.BY_NAME.get(name)
        g = info.group if info else "other"
        if g != group:
            t.add_row(Text(ctr.GROUP_TITLES.get(g, g), style="bold"), "", "")
            group = g
        v = totals[name]
        t.add_row(name, Text(str(v), style="" if v else "dim"), info.meaning if info else "")
    con.print(t)
    con.print(
        Text(
            "totals since the namespace was created (boot for the host); use --interval for deltas",
            style="dim",
        )
    )


def _print_deltas(
    con: Console, n: int, interval: float, moved: dict[str, int], show_all: bool
) -> None:
    stamp = time.strftime("%H:%M:%S")
    shown = {k: v for k, v in moved.items() if show_all or k in ctr.BY_NAME}
    if not shown:
        con.print(Text(f"[{stamp}] +{interval:g}s: no lifecycle counter moved", style="dim"))
        return
    con.print(Text(f"[{stamp}] +{interval:g}s:", style="bold"))
    for name in sorted(shown, key=lambda k: (k not in ctr.BY_NAME, -shown[k])):
        why = ctr.explain(name)
        con.print(Text(f"  {name} +{shown[name]}", style="bold"), Text(f"  {why}" if why else ""))


# ---------------------------------------------------------------- sysctl


def cmd_sysctl(args: argparse.Namespace) -> int:
    values = run_in_netns(args.netns, sc.read_values)
    rows = sc.evaluate(values)
    found = alerts.from_sysctls(rows)
    if args.format == "json":
        _emit_json(
            {
                "schema_version": SCHEMA_VERSION,
                "netns": args.netns,
                "sysctls": [r.as_json() for r in rows],
                "alerts": found,
            }
        )
        return _status(found, args.fail_on)
    con = _console()
    con.print(
        Text(
            f"TCP settings — {'netns ' + args.netns if args.netns else 'this namespace'} (read-only)",
            style="bold",
        )
    )
    t = Table()
    t.add_column("setting")
    t.add_column("value")
    t.add_column("default")
    t.add_column("controls / notes")
    for r in rows:
        text = Text(r.meaning)
        for note in r.notes:
            text.append(f"\n· {note}", style="yellow")
        value = "(absent)" if r.value is None else r.value
        t.add_row(r.key, Text(value, style="" if r.value is not None else "dim"), r.default, text)
    con.print(t)
    return _status(found, args.fail_on)


# ---------------------------------------------------------------- watch


def cmd_watch(args: argparse.Namespace) -> int:
    from tcpwhy.host import watch

    count = 1 if args.once else args.count
    return watch.run(
        args.netns,
        args.interval,
        count,
        args.format,
        _console(),
        out=lambda line: print(line, flush=True),
    )


# ---------------------------------------------------------------- trace


def cmd_trace(args: argparse.Namespace) -> int:
    from tcpwhy.host import trace_view

    return trace_view.run(args, _console())
