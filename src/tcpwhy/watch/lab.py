"""`tcpwhy lab NAME --watch`: `tcpwhy watch` on the client's interface while the scenario plays.

The watcher is a child process inside the client's namespace (`ip netns exec`), printing
to the same terminal, so the findings appear while the scenario runs. It is stopped by its
PID with SIGTERM after the scenario, once the last connections' linger has passed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable

from tcpwhy.errors import EnvironmentProblem
from tcpwhy.lab.env import CLIENT_IF, Lab
from tcpwhy.watch.engine import terminate

LINGER_S = 2.5  # a FIN-closed connection's findings come after its linger (tracker.Limits)


def watch_command(ns: str, fmt: str = "text") -> list[str]:
    return [
        "ip", "netns", "exec", ns,
        sys.executable, "-m", "tcpwhy", "watch", "-i", CLIENT_IF,
        "--format", fmt, "--summary-every", "0",
    ]  # fmt: skip


def start(lab: Lab, fmt: str = "text") -> Callable[[], None]:
    """Start watching the client's interface; returns the function that stops it."""
    env = dict(os.environ)
    src = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    proc = subprocess.Popen(watch_command(lab.client_ns, fmt), stderr=subprocess.PIPE, env=env)
    assert proc.stderr is not None
    line = proc.stderr.readline().decode(errors="replace")
    if "tcpwhy: watching" not in line:
        proc.wait(timeout=10)
        raise EnvironmentProblem("lab --watch", line.strip() or "tcpwhy watch did not start")
    sys.stderr.write(line)

    def stop() -> None:
        time.sleep(LINGER_S)
        terminate(proc, 30)
        assert proc.stderr is not None
        sys.stderr.write(proc.stderr.read().decode(errors="replace"))

    return stop
