"""`tcpwhy lab …`: run an incident scenario on the real kernel and record it."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import textwrap
from dataclasses import fields
from types import FrameType
from typing import TYPE_CHECKING, Any

from tcpwhy.cli_helpers import Subcommands, nonnegative_float, positive_float, positive_int
from tcpwhy.errors import EXIT_BAD_INPUT, ScenarioFailed, TcpwhyError
from tcpwhy.lab.env import Options

if TYPE_CHECKING:
    from tcpwhy.lab.runner import LabResult, Scenario


def register(sub: Subcommands) -> None:
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
    p.add_argument("--count", type=positive_int, help="connections/requests/clients, per scenario")
    p.add_argument(
        "--idle",
        type=positive_float,
        help="idle time in seconds (server idle timeout, keepalive idle …)",
    )
    p.add_argument(
        "--timeout",
        type=nonnegative_float,
        help="the scenario's timeout in seconds (user timeout, fin timeout …)",
    )
    p.add_argument(
        "--delay",
        type=positive_float,
        help="delay in seconds (relay delay, pause between writes …)",
    )
    p.add_argument(
        "--watch",
        action="store_true",
        help="run `tcpwhy watch` on the client's interface while the scenario plays",
    )
    p.add_argument(
        "--format",
        choices=("text", "json"),
        default="text",
        help="text (default), or json: the outcome, the finding kinds `analyze` sees in the "
        "recording, and the recordings' paths (docs/json.md)",
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
    where = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(where):  # before the namespaces are made and the scenario plays
        raise TcpwhyError(out, f"no such directory: {where}")
    # each of the scenarios' knobs is the option of the same name (-6: dest="ipv6")
    opts = Options(**{f.name: getattr(args, f.name) for f in fields(Options)})
    old = signal.signal(signal.SIGTERM, _on_term)
    try:
        from tcpwhy.watch.lab import start as start_watch

        watch = start_watch if getattr(args, "watch", False) else None
        result = run_scenario(sc.name, opts, out, watch=watch)
    finally:
        signal.signal(signal.SIGTERM, old)
    if getattr(args, "format", "text") == "json":
        print(json.dumps(lab_document(sc, result), indent=2, ensure_ascii=False))
        if not result.ok:
            raise ScenarioFailed(sc.name, result.reason)
        return 0
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


def recordings(result: LabResult) -> list[str]:
    """The files a run left: its capture, the server side's of a two-ended scenario, the
    kernel's trace."""
    from tcpwhy.lab.scenarios_pair import server_capture_path

    if result.capture is None:
        return []
    files = [result.capture]
    server = server_capture_path(result.capture)
    if server != result.capture and os.path.exists(server):
        files.append(server)
    if result.trace and os.path.exists(result.trace):
        files.append(result.trace)
    return [f for f in files if os.path.exists(f)]


def lab_document(sc: Scenario, result: LabResult) -> dict[str, Any]:
    """``tcpwhy lab NAME --format json`` (lab.schema.json): what a script checking a
    reproduction needs: did the kernel do what the scenario expects, what `analyze` finds
    in the recording, and where the files are."""
    from tcpwhy.diagnose.engine import diagnose_files
    from tcpwhy.schemas import SCHEMA_VERSION

    files = recordings(result)
    pcaps = [f for f in files if f.endswith((".pcap", ".pcapng"))]
    kinds: list[str] = []
    if pcaps and result.packets:
        report = diagnose_files(pcaps)
        kinds = sorted({f.kind for f in report.findings})
    return {
        "schema_version": SCHEMA_VERSION,
        "scenario": sc.name,
        "summary": sc.summary,
        "outcome": "as_designed" if result.ok else "differed",
        "reason": result.reason or None,
        "finding_kinds": kinds,
        "recordings": files,
        "packets": result.packets,
        "dropped": result.drops,
        "kernel_trace": (
            {"path": result.trace, "events": result.trace_events, "lost": result.trace_lost}
            if result.trace
            else None
        ),
        "events": [{"t_s": round(e.t, 6), "actor": e.actor, "text": e.text} for e in result.events],
    }
