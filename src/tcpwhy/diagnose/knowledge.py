"""What applications log for each wire-level event, and fixes shared by several kinds.

Error texts are given per runtime (Python, Go, Java, Node, curl, nginx, ...);
wording varies across versions, so `explain` matches on keywords.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

STACKS = (
    "any",
    "linux",
    "nftables",
    "nginx",
    "apache-httpd",
    "haproxy",
    "go",
    "java",
    "java-apache-httpclient",
    "java-okhttp",
    "python",
    "python-requests",
    "python-aiohttp",
    "gunicorn",
    "uvicorn",
    "node",
    "systemd",
)
"""The `Fix.stack` codes: "any" is advice for whatever runs there, "linux" the kernel."""


@dataclass(frozen=True)
class Fix:
    """One change a script can pick by its stack: `knob` is the setting's name as that stack
    spells it (None when the change is not one setting), `value` what to set it to when the
    finding says (None otherwise), `text` the advice in words."""

    stack: str
    knob: str | None
    value: str | None
    text: str

    def __post_init__(self) -> None:
        if self.stack not in STACKS:
            raise ValueError(f"unknown stack {self.stack!r}")

    def with_value(self, value: str | None) -> Fix:
        return Fix(self.stack, self.knob, value, self.text)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class Advice(str):
    """A fix as the text report prints it (one sentence, so it is a `str` everywhere a fix
    was prose) with its per-stack parts, `fixes`, for the JSON."""

    fixes: tuple[Fix, ...]

    def __new__(cls, text: str, fixes: Iterable[Fix] = ()) -> Advice:
        self = super().__new__(cls, text)
        self.fixes = tuple(fixes)
        return self

    def __reduce__(self) -> tuple[Any, ...]:  # copy and pickle keep the parts
        return (Advice, (str(self), self.fixes))


def advice(text: str, *fixes: Fix) -> str:
    """A fix sentence with its parts (an `Advice`, typed as the `str` a rule's fixes are);
    with no parts, the sentence is one "any" fix."""
    return Advice(text, fixes)


def sysctl(name: str, value: str | None, text: str) -> Fix:
    """A Linux sysctl as a fix."""
    return Fix("linux", name, value, text)


def fixes_of(fix: str) -> tuple[Fix, ...]:
    """The structured form of one fix sentence: its parts, or the sentence itself as advice
    for any stack when it has none."""
    parts = getattr(fix, "fixes", ())
    return parts if parts else (Fix("any", None, None, str(fix)),)


def seconds(text: str | None) -> str | None:
    """A duration as fixes give it in words ("4.8 s") as a `Fix.value` ("4.8s")."""
    return None if text is None else text.replace(" ", "")


# wire meaning -> what each runtime logs
EOF_ON_REUSE = [
    "Python: http.client.RemoteDisconnected: Remote end closed connection without response "
    "(requests: ConnectionError('Connection aborted.', RemoteDisconnected(...)); "
    "aiohttp: ServerDisconnectedError)",
    'Go: Get "…": EOF, or "http: server closed idle connection"',
    "Java: Apache HttpClient NoHttpResponseException: <host:port> failed to respond; "
    "OkHttp: IOException: unexpected end of stream; "
    "reactor-netty: PrematureCloseException: Connection prematurely closed BEFORE response",
    "Node.js: Error: socket hang up (code ECONNRESET); undici: SocketError: other side closed",
    "curl: (52) Empty reply from server, or 'Connection died, retrying a fresh connect'",
    "nginx (as proxy): upstream prematurely closed connection while reading response header "
    "from upstream (502)",
]
RESET = [
    "Python: ConnectionResetError: [Errno 104] Connection reset by peer",
    "Go: read: connection reset by peer",
    "Java: java.net.SocketException: Connection reset",
    "Node.js: Error: read ECONNRESET",
    "curl: (56) Recv failure: Connection reset by peer",
    "nginx: recv() failed (104: Connection reset by peer) while reading response header from upstream",
]
BROKEN_PIPE = [
    "Python: BrokenPipeError: [Errno 32] Broken pipe",
    "Go: write: broken pipe",
    "Java: java.net.SocketException: Broken pipe (Write failed)",
    "Node.js: Error: write EPIPE",
    "curl: (55) Send failure: Broken pipe",
    "nginx: writev() failed (32: Broken pipe) while sending request to upstream",
]
REFUSED = [
    "Python: ConnectionRefusedError: [Errno 111] Connection refused",
    "Go: dial tcp …: connect: connection refused",
    "Java: java.net.ConnectException: Connection refused",
    "Node.js: Error: connect ECONNREFUSED",
    "curl: (7) Failed to connect … Connection refused",
    "nginx: connect() failed (111: Connection refused) while connecting to upstream",
]
TIMEOUT = [
    "Python: TimeoutError: [Errno 110] Connection timed out (requests: ConnectTimeout / ReadTimeout)",
    "Go: dial tcp …: i/o timeout, or connect: connection timed out",
    "Java: java.net.SocketTimeoutException: connect timed out / Read timed out, "
    "or ConnectException: Connection timed out",
    "Node.js: Error: connect ETIMEDOUT",
    "curl: (28) Connection timed out / Operation timed out",
    "nginx: upstream timed out (110: Connection timed out) while connecting to upstream",
]
SYN_FLOOD_LOG = [
    "kernel (dmesg) on the server: TCP: request_sock_TCP: Possible SYN flooding on port "
    "…:PORT. Sending cookies. (or: Dropping request)  Check SNMP counters.",
]
NO_PORT = [
    "Python: OSError: [Errno 99] Cannot assign requested address",
    "Go: connect: cannot assign requested address",
    "Java: java.net.NoRouteToHostException: Cannot assign requested address",
    "Node.js: Error: connect EADDRNOTAVAIL",
    "curl: (7) … Cannot assign requested address",
]
ADDR_IN_USE = [
    "Python: OSError: [Errno 98] Address already in use",
    "Go: listen tcp :8080: bind: address already in use",
    "Java: java.net.BindException: Address already in use",
    "Node.js: Error: listen EADDRINUSE: address already in use :::8080",
    "nginx: bind() to 0.0.0.0:80 failed (98: Address already in use)",
]
# Whether each stack's listening sockets get SO_REUSEADDR without being asked (from each
# project's documentation or source): the restart-after-TIME_WAIT case only hits the others.
REUSEADDR_DEFAULTS = (
    "nginx, Go's net.Listen, Node.js (libuv) and Python's asyncio create_server set "
    "SO_REUSEADDR on listening sockets themselves; Python's socket.socket and "
    "socketserver.TCPServer do not (set allow_reuse_address = True, or "
    "setsockopt(SOL_SOCKET, SO_REUSEADDR, 1) before bind()); Java leaves the initial "
    "setting of a ServerSocket undefined: call setReuseAddress(true) before bind()"
)
HOST_UNREACH = [
    "Python: OSError: [Errno 113] No route to host",
    "Go: dial tcp …: connect: no route to host",
    "Java: java.net.NoRouteToHostException: No route to host",
    "Node.js: Error: connect EHOSTUNREACH",
    "curl: (7) Failed to connect to … port …: No route to host (Couldn't connect to server)",
    "nginx: connect() failed (113: No route to host) while connecting to upstream",
]
NET_UNREACH = [
    "Python: OSError: [Errno 101] Network is unreachable",
    "Go: dial tcp …: connect: network is unreachable",
    "Java: java.net.ConnectException: Network is unreachable (connect failed)",
    "Node.js: Error: connect ENETUNREACH",
    "curl: (7) Failed to connect to … port …: Network is unreachable",
    "nginx: connect() failed (101: Network is unreachable) while connecting to upstream",
]
ACCESS_DENIED = [
    "Python: PermissionError: [Errno 13] Permission denied (or [Errno 1] Operation not "
    "permitted when this host's own firewall drops the SYN)",
    "Go: dial tcp …: connect: permission denied (or operation not permitted)",
    "Java: java.net.SocketException: Permission denied (or Operation not permitted)",
    "Node.js: Error: connect EACCES (or EPERM)",
    "curl: (7) Failed to connect to … port …: Permission denied",
    "nginx: connect() failed (13: Permission denied) while connecting to upstream",
]
NONE_VISIBLE = ["usually nothing: the kernel handles it without telling the application"]

CLIENT_IDLE = (
    Fix("go", "http.Transport.IdleConnTimeout", None,
        "Go: http.Transport{IdleConnTimeout: …} (default 90 s)"),
    Fix("java-apache-httpclient", "evictIdleConnections", None,
        "Apache HttpClient: evictIdleConnections(…) / setValidateAfterInactivity(…) "
        "(or evictExpiredConnections and setConnectionTimeToLive)"),
    Fix("java-okhttp", "ConnectionPool.keepAliveDuration", None,
        "OkHttp: ConnectionPool(maxIdle, keepAliveDuration, unit) (default 5 min)"),
    Fix("python-requests", None, None,
        "Python urllib3/requests: a pool whose idle connections are dropped sooner "
        "(there is no idle timeout knob: recycle the Session, or retry as below)"),
    Fix("node", "http.Agent.timeout", None,
        "Node.js: http.Agent({keepAlive: true, timeout: …}) or agentkeepalive freeSocketTimeout"),
    Fix("python-aiohttp", "TCPConnector.keepalive_timeout", None,
        "aiohttp: TCPConnector(keepalive_timeout=…)"),
    Fix("nginx", "keepalive_timeout", None,
        "nginx as proxy: upstream { keepalive_timeout …; }"),
)  # fmt: skip
"""Where each client stack sets how long an idle pooled connection is kept."""
CLIENT_IDLE_KNOBS = "; ".join(f.text for f in CLIENT_IDLE)

RETRY = (
    Fix("python-requests", "HTTPAdapter.max_retries", None,
        "Python requests/urllib3: HTTPAdapter(max_retries=Retry(total=2, allowed_methods=…)) "
        "(requests' default is max_retries=0)"),
    Fix("go", None, None,
        "Go retries idempotent requests on a reused connection itself (set GetBody / "
        "Idempotency-Key for POST)"),
    Fix("java-apache-httpclient", "setRetryHandler", None,
        "Apache HttpClient: DefaultHttpRequestRetryHandler / setRetryHandler"),
    Fix("java-okhttp", "retryOnConnectionFailure", "true",
        "OkHttp: retryOnConnectionFailure(true) (the default)"),
    Fix("node", None, None,
        "Node.js: retry on ECONNRESET/'socket hang up' when req.reusedSocket is true"),
    Fix("nginx", "proxy_next_upstream", "error",
        "nginx: proxy_next_upstream error (non_idempotent to include POST)"),
)  # fmt: skip
"""How each client stack retries a request that failed on a reused connection."""
RETRY_KNOBS = "; ".join(f.text for f in RETRY)

SERVER_IDLE = (
    Fix("nginx", "keepalive_timeout", None,
        "nginx: keepalive_timeout (default 75 s) and keepalive_requests"),
    Fix("apache-httpd", "KeepAliveTimeout", None, "Apache httpd: KeepAliveTimeout (default 5 s)"),
    Fix("node", "server.keepAliveTimeout", None,
        "Node.js: server.keepAliveTimeout (default 5 s; also headersTimeout above it)"),
    Fix("go", "http.Server.IdleTimeout", None, "Go: http.Server{IdleTimeout: …}"),
    Fix("gunicorn", "--keep-alive", None, "gunicorn: --keep-alive (default 2 s)"),
    Fix("uvicorn", "--timeout-keep-alive", None, "uvicorn: --timeout-keep-alive (default 5 s)"),
)  # fmt: skip
"""Where each server stack sets how long it keeps an idle keep-alive connection."""
SERVER_IDLE_KNOBS = "; ".join(f.text for f in SERVER_IDLE)

REUSEADDR = (
    Fix("nginx", None, None, "nginx sets SO_REUSEADDR on its listening sockets itself"),
    Fix("go", None, None, "Go's net.Listen sets SO_REUSEADDR on listening sockets itself"),
    Fix("node", None, None, "Node.js (libuv) sets SO_REUSEADDR on listening sockets itself"),
    Fix("python", "allow_reuse_address", "True",
        "Python's asyncio create_server sets SO_REUSEADDR itself; socket.socket and "
        "socketserver.TCPServer do not: set allow_reuse_address = True, or "
        "setsockopt(SOL_SOCKET, SO_REUSEADDR, 1) before bind()"),
    Fix("java", "setReuseAddress", "true",
        "Java leaves the initial setting of a ServerSocket undefined: call "
        "setReuseAddress(true) before bind()"),
    Fix("linux", "net.ipv4.ip_local_reserved_ports", None,
        "list service ports in net.ipv4.ip_local_reserved_ports (or move "
        "net.ipv4.ip_local_port_range away from them)"),
)  # fmt: skip
"""SO_REUSEADDR per stack, for a restart that finds its port held (EADDRINUSE)."""


def with_value(fixes: Iterable[Fix], value: str | None) -> list[Fix]:
    """`fixes` with the value the finding measured (e.g. the client idle timeout to set)."""
    return [f.with_value(value) if f.knob is not None else f for f in fixes]


def client_idle_advice(lead: str, value: str | None = None) -> str:
    """The fix "shorten the client's idle timeout": `lead` as its sentence (a period added
    where it has none), then where each client stack sets it, with the value the finding
    measured."""
    sentence = lead if lead.endswith(".") else lead + "."
    return advice(
        f"{sentence} {CLIENT_IDLE_KNOBS}.",
        Fix("any", "client idle timeout", value, lead),
        *with_value(CLIENT_IDLE, value),
    )


def retry_advice(when: str) -> str:
    """The fix "retry idempotent requests once `when`", with how each client stack does."""
    return advice(f"Retry idempotent requests once {when}: {RETRY_KNOBS}.", *RETRY)
