"""`tcpwhy lab …`: run an incident scenario on the real kernel and record it."""

from __future__ import annotations

import argparse
import signal
import sys
import textwrap
from types import FrameType

from tcpwhy.errors import EXIT_BAD_INPUT, ScenarioFailed, TcpwhyError
from tcpwhy.lab.env import Options


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "lab",
        help="reproduce a connection incident on the real kernel and record it",
        description=(
            "Play a connection incident with real sockets inside throw-away network "
            "namespaces, record its packets, and tell what each application and kernel saw. "
            "Needs root."
        ),
    )
    p.add_argument("scenario", nargs="?", help="scenario name (see --list)")
    p.add_argument("--list", action="store_true", help="list the scenarios and exit")
    p.add_argument(
        "-w", "--write", metavar="FILE", help="capture file (default tcpwhy-lab-SCENARIO.pcap)"
    )
    p.add_argument("--explain", action="store_true", help="explain what the scenario shows and why")
    p.add_argument("-6", dest="ipv6", action="store_true", help="use IPv6 addresses")
    p.add_argument("--port", type=int, default=8080, help="server port (default 8080)")
    p.add_argument("--count", type=int, help="connections/requests/clients, per scenario")
    p.add_argument(
        "--idle", type=float, help="idle time in seconds (server idle timeout, keepalive idle …)"
    )
    p.add_argument(
        "--timeout",
        type=float,
        help="the scenario's timeout in seconds (user timeout, fin timeout …)",
    )
    p.add_argument(
        "--delay", type=float, help="delay in seconds (relay delay, pause between writes …)"
    )
    p.add_argument(
        "--watch",
        action="store_true",
        help="run `tcpwhy watch` on the client's interface while the scenario plays",
    )
    p.set_defaults(func=run)


def _list() -> int:
    from tcpwhy.lab.runner import all_scenarios

    scs = all_scenarios()
    width = max(len(s.name) for s in scs)
    for s in scs:
        print(f"{s.name:<{width}}  {s.summary}")
    return 0


def _on_term(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    from tcpwhy.lab.runner import get, run_scenario

    if args.list:
        return _list()
    if not args.scenario:
        print("tcpwhy: lab: name a scenario (see tcpwhy lab --list)", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        sc = get(args.scenario)
    except KeyError:
        raise TcpwhyError("lab", f"no scenario {args.scenario!r} (see tcpwhy lab --list)") from None
    out = args.write or f"tcpwhy-lab-{sc.name}.pcap"
    opts = Options(
        ipv6=args.ipv6,
        port=args.port,
        count=args.count,
        idle=args.idle,
        timeout=args.timeout,
        delay=args.delay,
    )
    old = signal.signal(signal.SIGTERM, _on_term)
    try:
        from tcpwhy.watch.lab import start as start_watch

        watch = start_watch if getattr(args, "watch", False) else None
        result = run_scenario(sc.name, opts, out, watch=watch)
    finally:
        signal.signal(signal.SIGTERM, old)
    print(f"{sc.name}: {sc.summary}")
    print(result.story)
    if args.explain:
        print()
        print(textwrap.fill(sc.explain, width=88))
    print()
    print(
        f"capture: {result.capture} ({result.packets} packets, {result.drops} dropped by the kernel)"
    )
    if result.trace:
        print(
            f"kernel trace: {result.trace} ({result.trace_events} events, {result.trace_lost} lost)"
        )
    if not result.ok:
        raise ScenarioFailed(sc.name, result.reason)
    return 0
