"""What applications log for each wire-level event, and fixes shared by several kinds.

Error texts are given per runtime (Python, Go, Java, Node, curl, nginx, ...);
wording varies across versions, so `explain` matches on keywords.
"""

from __future__ import annotations

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

CLIENT_IDLE_KNOBS = (
    "Go: http.Transport{IdleConnTimeout: …} (default 90 s); "
    "Apache HttpClient: evictIdleConnections(…) / setValidateAfterInactivity(…) "
    "(or evictExpiredConnections and setConnectionTimeToLive); "
    "OkHttp: ConnectionPool(maxIdle, keepAliveDuration, unit) (default 5 min); "
    "Python urllib3/requests: a pool whose idle connections are dropped sooner "
    "(there is no idle timeout knob: recycle the Session, or retry as below); "
    "Node.js: http.Agent({keepAlive: true, timeout: …}) or agentkeepalive freeSocketTimeout; "
    "aiohttp: TCPConnector(keepalive_timeout=…); nginx as proxy: upstream { keepalive_timeout …; }"
)
RETRY_KNOBS = (
    "Python requests/urllib3: HTTPAdapter(max_retries=Retry(total=2, allowed_methods=…)) "
    "(requests' default is max_retries=0); "
    "Go retries idempotent requests on a reused connection itself (set GetBody / Idempotency-Key "
    "for POST); Apache HttpClient: DefaultHttpRequestRetryHandler / setRetryHandler; "
    "OkHttp: retryOnConnectionFailure(true) (the default); "
    "Node.js: retry on ECONNRESET/'socket hang up' when req.reusedSocket is true; "
    "nginx: proxy_next_upstream error (non_idempotent to include POST)"
)
SERVER_IDLE_KNOBS = (
    "nginx: keepalive_timeout (default 75 s) and keepalive_requests; "
    "Apache httpd: KeepAliveTimeout (default 5 s); Node.js: server.keepAliveTimeout "
    "(default 5 s; also headersTimeout above it); Go: http.Server{IdleTimeout: …}; "
    "gunicorn: --keep-alive (default 2 s); uvicorn: --timeout-keep-alive (default 5 s)"
)
