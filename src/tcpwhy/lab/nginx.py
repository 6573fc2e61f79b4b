"""nginx (the distribution's package) as a real HTTP server inside a namespace.

The benchmarks record real traffic against it and the live tests of `watch` use its
keep-alive timeout to close pooled connections: one configuration, one way to start it,
wait for it and stop it (by PID), so that every caller runs the same server.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from tcpwhy.errors import EnvironmentProblem
from tcpwhy.lab import ns as nsmod

NGINX = "/usr/sbin/nginx"

_CONF = """\
daemon off;
master_process on;
worker_processes {workers};
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections {connections}; }}
http {{
    access_log off;
    keepalive_timeout {keepalive};
    keepalive_requests {requests};
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    default_type text/plain;
    server {{
        listen {addr}:{port} backlog=4096;
        location / {{ return 200 "{body}"; }}
    }}
}}
"""


def config(
    prefix: str | Path,
    port: int,
    *,
    addr: str = "127.0.0.1",
    keepalive: str = "75s",
    requests: int = 1000,
    workers: int = 1,
    connections: int = 8192,
    body: str = "ok\n",
) -> str:
    """An nginx.conf answering every GET with `body`, its files all under `prefix`."""
    return _CONF.format(
        prefix=prefix,
        port=port,
        addr=addr,
        keepalive=keepalive,
        requests=requests,
        workers=workers,
        connections=connections,
        body=body.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n"),
    )


def start(ns: str, conf: Path, prefix: str | Path) -> subprocess.Popen[bytes]:
    """nginx in namespace `ns` with its own configuration, prefix and error log (stop it
    by its PID with SIGQUIT)."""
    argv = [NGINX, "-c", str(conf), "-p", str(prefix), "-e", f"{prefix}/error.log"]
    return subprocess.Popen(["ip", "netns", "exec", ns, *argv])


def wait_listening(
    ns: str, port: int, proc: subprocess.Popen[bytes], secs: float = 10, addr: str = "127.0.0.1"
) -> None:
    """Return once nginx answers connects from namespace `ns` at `addr`:`port`."""
    end = time.monotonic() + secs
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise EnvironmentProblem("nginx", f"exited with status {proc.returncode}")
        s = nsmod.socket_in(ns)
        try:
            s.connect((addr, port))
            return
        except OSError:
            time.sleep(0.05)
        finally:
            s.close()
    raise EnvironmentProblem("nginx", f"did not start listening on {addr}:{port}")
