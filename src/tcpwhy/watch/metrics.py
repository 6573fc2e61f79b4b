"""`watch --metrics HOST:PORT`: what node_exporter cannot say about connections — why.

A registry of its own (not the process-wide default): only tcpwhy's series are served.
Every series is defined once, in `METRICS` (docs/watch.md's table is made from it, and a
test keeps the two the same). The watcher hands a snapshot of its running totals after
each step; a scrape reads the latest snapshot, so the endpoint never lags behind the
printed findings by more than one chunk, and totals are exposed as true counters.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import start_http_server

from tcpwhy.errors import EnvironmentProblem, TcpwhyError


@dataclass(frozen=True)
class Series:
    name: str
    type: str  # "counter" or "gauge"
    labels: tuple[str, ...]
    help: str


METRICS: tuple[Series, ...] = (
    Series(
        "tcpwhy_findings_total",
        "counter",
        ("kind", "server"),
        "Connections (or events) with a finding, by kind and server (ip:port); a group "
        "pushed out by --max-groups loses its series",
    ),
    Series(
        "tcpwhy_connections",
        "gauge",
        ("state",),
        "Open connections followed, by state: handshake, established, closing, reset",
    ),
    Series(
        "tcpwhy_connections_ended_total",
        "counter",
        ("why",),
        "Connections diagnosed, by why they left: reset, closed, idle, evicted (over a cap), "
        "end (the capture ended)",
    ),
    Series("tcpwhy_resets_total", "counter", (), "TCP segments with RST"),
    Series(
        "tcpwhy_retransmissions_total",
        "counter",
        (),
        "Retransmitted TCP segments (as tcp.analysis.retransmission)",
    ),
    Series(
        "tcpwhy_refused_connects_total",
        "counter",
        (),
        "Connection attempts answered by a RST instead of a SYN-ACK",
    ),
    Series("tcpwhy_packets_total", "counter", (), "TCP packets read"),
    Series(
        "tcpwhy_capture_drops_total",
        "counter",
        (),
        "Packets the kernel dropped before capture (-i only; the number the summary warns of)",
    ),
    Series("tcpwhy_finding_groups", "gauge", (), "Finding groups held (at most --max-groups)"),
)


def metrics_table() -> str:
    """The Markdown table of docs/watch.md's metrics section."""
    rows = ["| metric | type | labels | meaning |", "|---|---|---|---|"]
    for s in METRICS:
        labels = ", ".join(f"`{x}`" for x in s.labels) or "—"
        rows.append(f"| `{s.name}` | {s.type} | {labels} | {s.help} |")
    return "\n".join(rows) + "\n"


def parse_hostport(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise TcpwhyError("--metrics", f"{text!r} is not HOST:PORT")
    return host.strip("[]") or "0.0.0.0", int(port)


Values = dict[str, dict[tuple[str, ...], float]]


class Metrics:
    """The collector of the registry: yields the latest snapshot's series."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self._server: Any = None
        self._lock = threading.Lock()
        # unlabelled series read 0 before the first packet
        self._values: Values = {s.name: {} if s.labels else {(): 0.0} for s in METRICS}
        registry.register(self)

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            values = self._values
        for s in METRICS:
            fam: Metric
            if s.type == "counter":
                fam = CounterMetricFamily(s.name, s.help, labels=list(s.labels))
            else:
                fam = GaugeMetricFamily(s.name, s.help, labels=list(s.labels))
            for key, v in values[s.name].items():
                fam.add_metric(list(key), v)
            yield fam

    @classmethod
    def serve(cls, hostport: str) -> Metrics:
        host, port = parse_hostport(hostport)
        m = cls(CollectorRegistry())
        try:
            m._server = start_http_server(port, addr=host, registry=m.registry)
        except socket.gaierror:
            raise TcpwhyError("--metrics", f"unknown host {host}") from None
        except PermissionError:
            raise EnvironmentProblem(
                "--metrics", f"not permitted to listen on {hostport}"
            ) from None
        except OSError as exc:
            raise EnvironmentProblem("--metrics", f"{hostport}: {exc.strerror or exc}") from None
        return m

    @property
    def port(self) -> int:
        server = self._server[0] if isinstance(self._server, tuple) else self._server
        return int(server.server_port)

    def update(self, w: Any) -> None:
        """A new snapshot from the watcher's running totals."""
        c, tr = w.counters, w.tracker
        held = set(w.groups.groups)
        for key in [k for k in c.findings if k not in held]:  # a group that made room
            c.findings.pop(key, None)
        v: Values = {
            "tcpwhy_findings_total": {k: float(n) for k, n in c.findings.items()},
            "tcpwhy_connections": {(s,): float(n) for s, n in tr.states().items()},
            "tcpwhy_connections_ended_total": {(k,): float(n) for k, n in tr.ended.items()},
            "tcpwhy_resets_total": {(): float(c.resets)},
            "tcpwhy_retransmissions_total": {(): float(c.retransmissions)},
            "tcpwhy_refused_connects_total": {(): float(c.refused)},
            "tcpwhy_packets_total": {(): float(c.packets)},
            "tcpwhy_capture_drops_total": {(): float(c.drops)},
            "tcpwhy_finding_groups": {(): float(len(w.groups.groups))},
        }
        with self._lock:
            self._values = v

    def close(self) -> None:
        if isinstance(self._server, tuple):
            server, thread = self._server
            server.shutdown()
            server.server_close()
            thread.join(timeout=2)
        elif self._server is not None:
            self._server.shutdown()
