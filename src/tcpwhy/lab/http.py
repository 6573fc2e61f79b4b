"""A keep-alive HTTP/1.1 server with an idle timeout and a pooling client, as real apps do it.

The server closes connections idle longer than its timeout (nginx's
`keepalive_timeout`, gunicorn's `keepalive`). The client is the standard
library's `http.client` with a tiny pool in front, like urllib3/requests: it
reuses an idle connection without checking it and retries once on a fresh
connection when a reused one fails, so the exceptions in the story are the
ones a Python service would log.
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import socket
import threading
import time

from tcpwhy.decode.table import endpoint_text
from tcpwhy.lab.env import Lab, describe_exc

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Type: text/plain\r\n\r\nok\n"
STALE_ERRORS = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)


def _fmt(addr: tuple[str, int] | tuple[str, int, int, int]) -> str:
    return endpoint_text(addr[0], addr[1])


class KeepAliveServer:
    """Serves `200 ok` to every request; closes a connection after `idle` seconds of silence."""

    thread_name = "http"  # its threads: "<name>-accept", "<name>-conn"

    def __init__(self, lab: Lab, idle: float, backlog: int = 128) -> None:
        self.lab = lab
        self.idle = idle
        self.listener = lab.listen(backlog)
        self.served = 0
        self.closed_idle = 0
        self._lock = threading.Lock()
        lab.spawn(self._accept_loop, f"{self.thread_name}-accept")

    def _accept_loop(self) -> None:
        while True:
            try:
                conn, peer = self.listener.accept()
            except OSError:
                return
            self.lab.spawn(functools.partial(self._serve, conn, peer), f"{self.thread_name}-conn")

    def _serve(self, conn: socket.socket, peer: tuple[str, int]) -> None:
        self._requests(conn, peer)

    # what a subclass serving another way (TLS) changes: how it closes, and says so
    _closing = "close()"

    def _close(self, conn: socket.socket) -> None:
        conn.close()

    def _eof(self, conn: socket.socket, peer: tuple[str, int]) -> None:
        self.lab.say("server", f"EOF from {_fmt(peer)} → close()")

    def _requests(self, conn: socket.socket, peer: tuple[str, int]) -> None:
        """Answers requests until `idle` seconds of silence, EOF or Connection: close."""
        conn.settimeout(self.idle)
        buf = b""
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    try:
                        chunk = conn.recv(65536)
                    except TimeoutError:
                        self.lab.say(
                            "server",
                            f"connection from {_fmt(peer)} idle for {self.idle:g}s → "
                            f"{self._closing}",
                        )
                        with self._lock:
                            self.closed_idle += 1
                        self._close(conn)
                        return
                    if not chunk:
                        self._eof(conn, peer)
                        return
                    buf += chunk
                head, buf = buf.split(b"\r\n\r\n", 1)
                length = 0
                close = False
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value.strip())
                    if name.strip().lower() == b"connection" and value.strip().lower() == b"close":
                        close = True
                while len(buf) < length:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                buf = buf[length:]
                conn.sendall(RESPONSE)
                with self._lock:
                    self.served += 1
                if close:
                    self.lab.say(
                        "server",
                        f"request with Connection: close from {_fmt(peer)} → {self._closing}",
                    )
                    self._close(conn)
                    return
        except OSError as exc:
            self.lab.say("server", f"{_fmt(peer)}: {describe_exc(exc)}")
        finally:
            with contextlib.suppress(OSError):
                conn.close()

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()


class LabConnection(http.client.HTTPConnection):
    """http.client, but its socket is created in the client's namespace."""

    def __init__(self, lab: Lab) -> None:
        super().__init__(lab.server_ip, lab.opts.port, timeout=5)
        self.lab = lab

    def connect(self) -> None:
        self.sock = self.lab.sock("client")
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.lab.server_addr())

    @property
    def local(self) -> str:
        assert self.sock is not None
        return _fmt(self.sock.getsockname())


class Pool:
    """A minimal connection pool: reuse without checking, retry once on a fresh connection."""

    def __init__(self, lab: Lab, body_pause: float | None = None) -> None:
        self.lab = lab
        self.idle: list[LabConnection] = []
        self.errors: list[BaseException] = []
        self.body_pause = body_pause
        self.connections = 0

    def _new(self) -> LabConnection:
        conn = LabConnection(self.lab)
        conn.connect()
        self.connections += 1
        self.lab.say("client", f"new connection {conn.local} → server")
        return conn

    def _send(self, conn: LabConnection, path: str, close: bool) -> int:
        if self.body_pause is None:
            headers = {"Connection": "close"} if close else {}
            conn.request("GET", path, headers=headers)
        else:
            # Headers and body in two writes, as a client streaming an upload does.
            body = b"x" * 64
            conn.putrequest("POST", path)
            conn.putheader("Content-Length", str(len(body)))
            conn.endheaders()
            time.sleep(self.body_pause)
            conn.send(body)
        resp = conn.getresponse()
        resp.read()
        return resp.status

    def request(self, path: str = "/", close: bool = False) -> int:
        reused = bool(self.idle)
        conn = self.idle.pop() if reused else self._new()
        how = "reused pooled" if reused else "fresh"
        self.lab.say(
            "client",
            f"{'POST' if self.body_pause is not None else 'GET'} {path} on {how} connection {conn.local}",
        )
        try:
            status = self._send(conn, path, close)
        except STALE_ERRORS as exc:
            if not reused:
                raise
            self.errors.append(exc)
            self.lab.say("client", f"request failed: {describe_exc(exc)}")
            conn.close()
            self.lab.say("client", "retrying on a new connection")
            return self.request(path, close)
        self.lab.say("client", f"response {status}")
        if close:
            # The server closes first after "Connection: close": wait for its FIN.
            if conn.sock is not None:
                with contextlib.suppress(OSError):
                    conn.sock.recv(1)
            conn.close()
        else:
            self.idle.append(conn)
        return status

    def close(self) -> None:
        while self.idle:
            conn = self.idle.pop()
            self.lab.say("client", f"pool closes {conn.local}")
            conn.close()
