"""The seed incident end to end: record the stale keep-alive scenario (or use the shipped
recording) and print its diagnosis."""

from __future__ import annotations

import os
import sys
import tempfile
from importlib import resources
from typing import IO


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
        write_text(diagnose_files([path]), out)
    return 0
