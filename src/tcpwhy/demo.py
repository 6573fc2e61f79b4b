"""`tcpwhy demo`: the seed incident end to end. Record the stale keep-alive scenario on this
kernel (or use the shipped recording) and print its diagnosis. A command of its own: it uses
the lab, the diagnosis and the HTML report, and belongs to none of them."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from importlib import resources
from typing import IO, TYPE_CHECKING

from tcpwhy.cli_helpers import Subcommands

if TYPE_CHECKING:
    from tcpwhy.diagnose.model import Report


def register(sub: Subcommands) -> None:
    d = sub.add_parser(
        "demo",
        help="diagnose the stale keep-alive incident (recorded live as root, else the shipped capture)",
    )
    d.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    """Recorded live when root, else the shipped recording."""
    return run_demo()


def shipped_capture() -> str:
    return str(resources.files("tcpwhy") / "data" / "lab" / "stale-keepalive.pcap")


def record(path: str) -> str | None:
    """Record the scenario on the real kernel; None (with the reason) when that is not possible."""
    if os.geteuid() != 0:
        return "not root"
    try:
        from tcpwhy.lab.env import Options
        from tcpwhy.lab.runner import run_scenario

        res = run_scenario("stale-keepalive", Options(), out=path)
    except Exception as exc:  # no namespaces, no ip(8): fall back to the recording
        return f"{type(exc).__name__}: {exc}"
    return None if res.ok else (res.reason or "the scenario did not play out as designed")


def run_demo(out: IO[str] | None = None) -> int:
    """Print where the capture comes from, then the diagnosis. Returns 0 when it ran."""
    from tcpwhy.diagnose.engine import diagnose_files
    from tcpwhy.diagnose.render import write_text

    out = out or sys.stdout
    with tempfile.TemporaryDirectory(prefix="tcpwhy-demo-") as tmp:
        path = os.path.join(tmp, "stale-keepalive.pcap")
        why = record(path)
        if why is None:
            out.write(
                "# tcpwhy demo: recorded the stale-keepalive lab scenario just now on this "
                "kernel (a pooled HTTP keep-alive connection reused after the server closed it)\n"
            )
        else:
            path = shipped_capture()
            out.write(
                f"# tcpwhy demo: using the recording shipped in the package ({why}; run as root "
                "to record it live): a pooled HTTP keep-alive connection reused after the "
                "server closed it\n"
            )
        out.write(f"# tcpwhy analyze {os.path.basename(path)}\n\n")
        out.flush()
        report = diagnose_files([path])
        write_text(report, out)
        html = write_demo_html(report)
    out.write(f"\n# the same diagnosis as one page for an incident ticket: {html}\n")
    return 0


def write_demo_html(report: Report) -> str:
    """The demo's HTML report (`analyze --format html`) as tcpwhy-demo.html in the temporary
    directory (never inside a clone); returns its path."""
    from tcpwhy.report.html import render_html

    page = render_html(report)
    for folder in (tempfile.gettempdir(),):
        path = os.path.join(folder, "tcpwhy-demo.html")
        try:
            with open(path, "w", encoding="utf-8") as f:
                f.write(page)
            return path
        except OSError:
            continue
    return "(not written: no writable folder)"
