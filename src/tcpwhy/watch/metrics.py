"""`watch --metrics HOST:PORT`: what node_exporter cannot say about connections — why.

A registry of its own (not the process-wide default): only tcpwhy's series are served.
Counters are set from the watcher's running totals after each step, so the endpoint never
lags behind the printed findings by more than one chunk.
"""

from __future__ import annotations

import socket
from typing import Any

from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.exposition import start_http_server

from tcpwhy.errors import EnvironmentProblem, TcpwhyError


def parse_hostport(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise TcpwhyError("--metrics", f"{text!r} is not HOST:PORT")
    return host.strip("[]") or "0.0.0.0", int(port)


class Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.registry = r
        self._server: Any = None
        # totals are gauges set from the watcher's counters (they only grow, as counters)
        self.findings = Gauge(
            "tcpwhy_findings_total",
            "Connections (or events) with a finding, by kind and server",
            ["kind", "server"],
            registry=r,
        )
        self.conns = Gauge(
            "tcpwhy_connections", "Open connections followed, by state", ["state"], registry=r
        )
        self.ended = Gauge(
            "tcpwhy_connections_ended_total",
            "Connections diagnosed, by why they left (reset, closed, idle, evicted, end)",
            ["why"],
            registry=r,
        )
        self.resets = Gauge("tcpwhy_resets_total", "TCP segments with RST", registry=r)
        self.retrans = Gauge(
            "tcpwhy_retransmissions_total", "Retransmitted TCP segments", registry=r
        )
        self.refused = Gauge(
            "tcpwhy_refused_connects_total", "Connection attempts answered by a RST", registry=r
        )
        self.packets = Gauge("tcpwhy_packets_total", "TCP packets read", registry=r)
        self.drops = Gauge(
            "tcpwhy_capture_drops_total", "Packets the kernel dropped before capture", registry=r
        )
        self.groups = Gauge("tcpwhy_finding_groups", "Finding groups held", registry=r)
        self._labels: set[tuple[str, str]] = set()

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
        c, tr = w.counters, w.tracker
        held = set(w.groups.groups)
        for key, n in c.findings.items():
            if key in held:
                self.findings.labels(*key).set(n)
                self._labels.add(key)
        for key in self._labels - held:  # a group that made room: its series goes too
            self.findings.remove(*key)
            c.findings.pop(key, None)
        self._labels &= held
        for state, n in tr.states().items():
            self.conns.labels(state).set(n)
        for why, n in tr.ended.items():
            self.ended.labels(why).set(n)
        self.resets.set(c.resets)
        self.retrans.set(c.retransmissions)
        self.refused.set(c.refused)
        self.packets.set(c.packets)
        self.drops.set(c.drops)
        self.groups.set(len(w.groups.groups))

    def close(self) -> None:
        if isinstance(self._server, tuple):
            server, thread = self._server
            server.shutdown()
            server.server_close()
            thread.join(timeout=2)
        elif self._server is not None:
            self._server.shutdown()
