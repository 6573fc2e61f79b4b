"""The keep-alive scenarios over TLS: the same incidents as their cleartext twins, encrypted.

The server is the keep-alive server of `tcpwhy.lab.http` behind Python's ssl
module, with a self-signed certificate for api.tcpwhy.test made at run time by
the `openssl` command; the client is http.client's HTTPSConnection in the same
pooling wrapper, sending SNI api.tcpwhy.test. On an idle timeout the server
sends close_notify and then closes (a TLS server's orderly close, as nginx
does); a pooled connection reused afterwards meets the RST exactly as in
cleartext, but nothing on the wire says which request it was.
"""

from __future__ import annotations

import contextlib
import http.client
import select
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from tcpwhy.decode.table import FIN
from tcpwhy.errors import ScenarioFailed
from tcpwhy.lab.env import Lab, describe_exc
from tcpwhy.lab.http import STALE_ERRORS, KeepAliveServer, LabConnection, Pool, _fmt
from tcpwhy.lab.runner import scenario
from tcpwhy.lab.scenarios import Crossing, idle_timeout, race_retried, relay_of, wait_until

SNI = "api.tcpwhy.test"


class Certs:
    """A throw-away CA-less self-signed certificate for SNI, in a temporary directory."""

    def __init__(self) -> None:
        if shutil.which("openssl") is None:
            raise ScenarioFailed(
                "lab", "the openssl command is needed to make the test certificate"
            )
        self._dir = tempfile.TemporaryDirectory(prefix="tcpwhy-lab-tls-")
        d = Path(self._dir.name)
        self.cert, self.key = d / "cert.pem", d / "key.pem"
        subprocess.run(
            [
                "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                "ec_paramgen_curve:P-256", "-nodes", "-days", "1", "-subj", f"/CN={SNI}",
                "-addext", f"subjectAltName=DNS:{SNI}",
                "-keyout", str(self.key), "-out", str(self.cert),
            ],
            check=True,
            capture_output=True,
            timeout=30,
        )  # fmt: skip

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.cert, self.key)
        return ctx

    def client_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.cert))
        ctx.set_alpn_protocols(["http/1.1"])
        return ctx

    def close(self) -> None:
        self._dir.cleanup()


def close_notify_and_close(sock: ssl.SSLSocket) -> None:
    """Send close_notify, then close without waiting for the peer's (TLS allows it, and
    servers do it): unwrap() on a non-blocking socket writes the alert and stops where it
    would wait."""
    with contextlib.suppress(OSError, ValueError):
        sock.setblocking(False)
        sock.unwrap()
    with contextlib.suppress(OSError):
        sock.close()


class TLSKeepAliveServer(KeepAliveServer):
    """`tcpwhy.lab.http.KeepAliveServer` over TLS: close_notify then FIN after `idle` s
    (a bare FIN when `close_notify` is False: close() without a TLS shutdown)."""

    thread_name = "https"

    def __init__(self, lab: Lab, certs: Certs, idle: float, close_notify: bool = True) -> None:
        self.close_notify = close_notify
        self.ctx = certs.server_context()  # before the accept loop starts
        super().__init__(lab, idle)

    def _serve(self, raw: socket.socket, peer: tuple[str, int]) -> None:
        try:
            raw.settimeout(5)
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as nginx's tcp_nodelay
            conn = self.ctx.wrap_socket(raw, server_side=True)
        except (OSError, ssl.SSLError) as exc:
            self.lab.say("server", f"TLS handshake with {_fmt(peer)} failed: {describe_exc(exc)}")
            raw.close()
            return
        self._requests(conn, peer)

    def _eof(self, conn: socket.socket, peer: tuple[str, int]) -> None:
        # read until the client's FIN too, so that the client closes first
        select.select([conn], [], [], 1.0)
        self.lab.say("server", f"close_notify and EOF from {_fmt(peer)} → close()")

    @property
    def _closing(self) -> str:  # type: ignore[override]
        return "close_notify, close()" if self.close_notify else "close() without close_notify"

    def _close(self, conn: socket.socket) -> None:
        if self.close_notify and isinstance(conn, ssl.SSLSocket):
            close_notify_and_close(conn)
        else:
            conn.close()  # Python's close() sends no alert: a bare FIN


class LabTLSConnection(http.client.HTTPSConnection):
    """HTTPSConnection whose socket lives in the client's namespace; SNI and Host are SNI."""

    def __init__(self, lab: Lab, ctx: ssl.SSLContext) -> None:
        super().__init__(SNI, lab.opts.port, timeout=5, context=ctx)
        self.lab = lab
        self.ctx = ctx

    def connect(self) -> None:
        raw = self.lab.sock("client")
        raw.settimeout(self.timeout)
        raw.connect(self.lab.server_addr())
        self.sock = self.ctx.wrap_socket(raw, server_hostname=SNI)

    @property
    def local(self) -> str:
        assert self.sock is not None
        return _fmt(self.sock.getsockname())


class TLSPool(Pool):
    """The lab's pool over TLS. A failed TLS read on a reused connection counts as the
    stale-connection errors of cleartext; `drain_close` False closes a Connection: close
    exchange without reading the server's close_notify (as most clients do: the kernel
    then answers it with RST); `close` sends the client's own close_notify first."""

    def __init__(self, lab: Lab, certs: Certs, drain_close: bool = True) -> None:
        super().__init__(lab)
        self.ctx = certs.client_context()
        self.drain_close = drain_close

    def _new(self) -> LabConnection:
        conn = LabTLSConnection(self.lab, self.ctx)
        conn.connect()
        self.connections += 1
        self.lab.say("client", f"new TLS connection {conn.local} → server (SNI {SNI})")
        return conn  # type: ignore[return-value]

    def _send(self, conn: LabConnection, path: str, close: bool) -> int:
        try:
            if close and not self.drain_close:
                conn.request("GET", path, headers={"Connection": "close"})
                resp = conn.getresponse()
                resp.read()
                self.lab.say("client", "response read; close() without reading close_notify")
                raw = conn.sock
                conn.sock = None  # the pool's recv(1) is skipped
                if raw is not None:
                    raw.close()
                return resp.status
            return super()._send(conn, path, close)
        except ssl.SSLError as exc:
            raise ConnectionResetError(describe_exc(exc)) from exc

    def close(self) -> None:
        while self.idle:
            conn = self.idle.pop()
            self.lab.say("client", f"pool closes {conn.local}: close_notify, close()")
            if isinstance(conn.sock, ssl.SSLSocket):
                close_notify_and_close(conn.sock)
            conn.close()


@contextlib.contextmanager
def _tls_server(
    lab: Lab, idle: float, close_notify: bool = True
) -> Iterator[tuple[Certs, TLSKeepAliveServer]]:
    """A scenario's certificate and TLS keep-alive server: the server stopped once the
    scenario's steps are done, the certificate's directory removed even when they fail."""
    certs = Certs()
    try:
        server = TLSKeepAliveServer(lab, certs, idle, close_notify)
        yield certs, server
        server.stop()
    finally:
        certs.close()


@scenario(
    "stale-keepalive-tls",
    "stale-keepalive over TLS: close_notify and FIN at the idle timeout, reuse meets RST",
    """
    The stale keep-alive incident with HTTPS (SNI api.tcpwhy.test, certificate made at
    run time). After its idle timeout the server sends an encrypted alert (close_notify)
    and its FIN; the client's pool does not read idle sockets, so it notices neither and
    writes its next request 0.5 s later into the closed connection. The server's kernel
    answers with RST and the pool retries on a new TLS connection. On the wire only
    record sizes and directions tell requests from responses: the same diagnosis must
    come from them as from the cleartext recording.
    """,
    finds="stale-keepalive-reuse",
    shows="(as its cleartext twin, the request a 101-byte record)",
)
def stale_keepalive_tls(lab: Lab) -> None:
    idle = idle_timeout(lab)
    with _tls_server(lab, idle) as (certs, server):
        pool = TLSPool(lab, certs)
        lab.check(pool.request("/first") == 200, "first request answered")
        lab.expect(
            lab.wait_state("client", "CLOSE-WAIT", timeout=idle + 3),
            "client socket never reached CLOSE-WAIT",
        )
        time.sleep(0.5 - 0.05)
        lab.ss("client", "pooled socket after the server's close_notify and FIN")
        status = pool.request("/second")
        lab.check(status == 200, "retry on a new TLS connection answered")
        lab.check(
            len(pool.errors) == 1 and isinstance(pool.errors[0], STALE_ERRORS),
            "the reused connection failed (EOF, Broken pipe or reset)",
        )
        lab.check(server.closed_idle == 1, "the server closed exactly one idle connection")
        pool.close()
        lab.wait_state("client", "TIME-WAIT", timeout=2)


@scenario(
    "clean-tls",
    "ordinary HTTPS traffic that ends properly, one close_notify left unread (no finding)",
    """
    The clean baseline over TLS. One short request with "Connection: close": the server
    answers, sends close_notify and closes; the client reads the response and closes
    without reading the close_notify, so its kernel, finding unread bytes, ends the
    connection with RST — what most HTTPS clients do, and harmless. Then three requests
    on one keep-alive connection that the client ends with its own close_notify and FIN.
    """,
    finds="tls-close-notify-reset",
    shows="(info: the RST of a client that leaves the server's close_notify unread)",
)
def clean_tls(lab: Lab) -> None:
    with _tls_server(lab, idle=5.0) as (certs, _):
        pool = TLSPool(lab, certs, drain_close=False)
        lab.check(pool.request("/short", close=True) == 200, "short request answered")
        for i in range(lab.opts.count or 3):
            lab.expect(pool.request(f"/keepalive/{i}") == 200, "keep-alive request failed")
        lab.check(pool.connections == 2, "two connections, the second reused")
        pool.close()
        lab.expect(
            lab.wait_state("client", "TIME-WAIT", timeout=2), "client never reached TIME-WAIT"
        )
        time.sleep(0.1)
        lab.ss("client", "after both connections ended")
        lab.ss("server", "after both connections ended")
        lab.check(not pool.errors, "no request failed")


@scenario(
    "keepalive-race-tls",
    "keepalive-race over TLS: the request crosses the server's close_notify and FIN",
    """
    The keep-alive race with HTTPS: the relay holds the server's close_notify and FIN
    until the client's reused request has passed them, so the two cross on the path and
    neither side had seen the other's bytes. The server's kernel answers the request
    with RST; the pool retries on a new TLS connection.
    """,
    relay=True,
    finds="keepalive-race",
    shows="(as its cleartext twin, the request a 101-byte record)",
)
def keepalive_race_tls(lab: Lab) -> None:
    idle = idle_timeout(lab)
    rule = Crossing(lambda seg: seg.flags & FIN or seg.payload_len)  # close_notify, then FIN
    held = rule.held
    with _tls_server(lab, idle) as (certs, _):
        pool = TLSPool(lab, certs)
        lab.check(pool.request("/first") == 200, "first request answered")
        time.sleep(0.05)  # the server's session tickets and the response have passed
        relay_of(lab).rule = rule
        wait_until(lambda: any(s.flags & FIN for s in held), idle + 3, 0.005)
        lab.expect(any(s.flags & FIN for s in held), "the server never sent its idle-close FIN")
        lab.say("relay", f"holding the server's close_notify and FIN: {len(held)} segment(s)")
        race_retried(
            lab,
            pool,
            rule,
            passed="them",
            released="released",
            unacked="acknowledges neither the close_notify nor the FIN",
            conn="TLS connection",
        )


def _handshake(lab: Lab, ctx: ssl.SSLContext) -> Exception | None:
    """One TLS handshake from the client to the lab's server; the error it ended with (the
    socket is closed either way, as a client does after a failed connect)."""
    raw = lab.sock("client")
    raw.settimeout(5)
    raw.connect(lab.server_addr())
    try:
        conn = ctx.wrap_socket(raw, server_hostname=SNI)
    except (OSError, ssl.SSLError) as exc:
        raw.close()
        return exc
    close_notify_and_close(conn)
    return None


def _outcome(err: Exception | None) -> str:
    return "handshake completed" if err is None else describe_exc(err)


@scenario(
    "tls-fatal-alert",
    "TLS 1.2 handshakes refused by fatal alerts: unknown_ca from the client, protocol_version "
    "from the server",
    """
    Two HTTPS connections that never carry a request. In the first the client offers TLS 1.2
    at most and does not trust the server's self-signed certificate: it answers the
    server's Certificate with the fatal alert unknown_ca, in clear (TLS 1.2 encrypts only
    after ChangeCipherSpec), and closes. In the second the server accepts TLS 1.3 only
    and the client still offers 1.2 at most: the server answers the ClientHello with the
    fatal alert protocol_version. Each side's application gets an SSL error naming the
    alert; on the wire the alert's description says which side refused what.
    """,
    finds="tls-fatal-alert",
    shows="× 2 (the client's unknown_ca, the server's protocol_version)",
)
def tls_fatal_alert(lab: Lab) -> None:
    with _tls_server(lab, idle=5.0) as (certs, server):
        untrusting = ssl.create_default_context()  # the system's CAs: not the lab's certificate
        untrusting.maximum_version = ssl.TLSVersion.TLSv1_2
        err = _handshake(lab, untrusting)
        lab.say("client", f"TLS 1.2 handshake, certificate not trusted: {_outcome(err)}")
        lab.check(
            isinstance(err, ssl.SSLCertVerificationError), "the client refused the certificate"
        )
        time.sleep(0.1)
        strict = certs.server_context()
        strict.minimum_version = ssl.TLSVersion.TLSv1_3
        server.ctx = strict
        old = certs.client_context()
        old.maximum_version = ssl.TLSVersion.TLSv1_2
        err = _handshake(lab, old)
        lab.say("client", f"TLS 1.2 at most to a TLS 1.3-only server: {_outcome(err)}")
        lab.check(
            isinstance(err, ssl.SSLError) and "VERSION" in str(err).upper(),
            "the server refused the protocol version",
        )
        time.sleep(0.1)
        lab.check(server.served == 0, "no request was served")


@scenario(
    "tls-truncation",
    "HTTPS server closing without close_notify: right after a response, and when idle",
    """
    A TLS server that ends connections with close() alone, no TLS shutdown: its FIN comes
    without the close_notify alert that tells a complete stream from a cut one. The first
    request has "Connection: close": the server's FIN follows its response at once, and the
    client cannot tell from TLS whether the response was whole (only HTTP's Content-Length
    says so). The second connection is left idle until the server's 1 s idle timeout closes
    it, again without close_notify: nothing was cut, but a strict TLS client (OpenSSL 3)
    reports an unexpected EOF. The client closes both without close_notify either.
    """,
    finds="tls-truncation",
    shows="× 2 (warning: FIN right after the response; info: an idle close)",
)
def tls_truncation(lab: Lab) -> None:
    idle = idle_timeout(lab)
    with _tls_server(lab, idle, close_notify=False) as (certs, server):
        pool = TLSPool(lab, certs)
        lab.check(pool.request("/short", close=True) == 200, "short request answered")
        lab.check(pool.request("/idle") == 200, "keep-alive request answered")
        lab.expect(
            lab.wait_state("client", "CLOSE-WAIT", timeout=idle + 3),
            "the server never closed the idle connection",
        )
        conn = pool.idle.pop()
        lab.say("client", f"pool drops {conn.local}: close() without close_notify")
        conn.close()
        lab.expect(
            lab.wait_state("server", "TIME-WAIT", timeout=2), "server never reached TIME-WAIT"
        )
        lab.check(server.closed_idle == 1, "the server closed one idle connection")
        lab.check(not pool.errors, "no request failed")
