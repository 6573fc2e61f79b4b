"""The kernel's account of a lab run: its TCP tracepoints, written beside the capture.

`tcpwhy lab NAME -w x.pcap` also writes `x.trace.jsonl`: the events (state changes, resets
with their reasons, drops, retransmissions) of the sockets on the lab's addresses, recorded
by a `host trace` session in a private ftrace instance while the scenario plays.
"""

from __future__ import annotations

import threading
from pathlib import Path

from tcpwhy.host.trace import Filters, TraceEvent, TraceSession, normalize_host, write_jsonl

POLL_S = 0.05


def trace_path(capture: str) -> str:
    """x.pcap → x.trace.jsonl (any other name gets .trace.jsonl appended)."""
    p = Path(capture)
    base = p.with_suffix("") if p.suffix in (".pcap", ".pcapng", ".cap") else p
    return str(base) + ".trace.jsonl"


class KernelTrace:
    """Follows the tracepoints in a thread from start() until stop(), which writes the file."""

    def __init__(self, addresses: list[str], path: str) -> None:
        self.path = path
        local = frozenset(normalize_host(a) for a in addresses)  # fd00:77:0::1 → fd00:77::1
        self.session = TraceSession(Filters(local=local))
        self.events: list[TraceEvent] = []
        self.lost = 0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tcpwhy-ktrace", daemon=True)
        self._entered = False

    def start(self) -> KernelTrace:
        self.session.__enter__()
        self._entered = True
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                got = self.session.poll()
                self.events.extend(got)
                if not got:
                    self._stop.wait(POLL_S)
        except BaseException as exc:  # reported by stop(), in the caller's thread
            self.error = exc

    def stop(self) -> None:
        """Stop, drain, remove the instance and write the events (idempotent)."""
        if not self._entered:
            return
        self._stop.set()
        self._thread.join(timeout=10)
        try:
            self.events.extend(self.session.finish())
            self.lost = self.session.lost()
        finally:
            self.session.__exit__(None, None, None)
            self._entered = False
        self.events.sort(key=lambda e: e.ts)
        write_jsonl(self.path, self.events)
