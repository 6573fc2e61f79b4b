"""An HTTP/1.1 request that asks ``Upgrade: h2c``, then HTTP/2 on the same connection
(RFC 7540 §3.2): the answer to the upgrade request comes on stream 1; the client then
waits SECONDS (default 0), sends stream 3 and reads to EOF.

    python h2c_upgrade_client.py PORT [SECONDS]
"""

import socket
import struct
import sys
import time

port = int(sys.argv[1])
s = socket.create_connection(("127.0.0.1", port))
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
s.settimeout(5)
auth = f"127.0.0.1:{port}".encode()


def frame(t, f, sid, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([t, f]) + struct.pack(">I", sid) + payload


def headers(path):
    # :method GET, :scheme http (static table), :path and :authority as literals
    return b"\x82\x86\x44" + bytes([len(path)]) + path + b"\x41" + bytes([len(auth)]) + auth


buf = b""


def read_until_end_of(sid):
    """Frames until the server ends stream `sid` (END_STREAM on HEADERS or DATA)."""
    global buf
    while True:
        while len(buf) >= 9:
            n = int.from_bytes(buf[:3], "big")
            if len(buf) < 9 + n:
                break
            t, f = buf[3], buf[4]
            got = int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF
            buf = buf[9 + n :]
            if t == 4 and not f & 1:
                s.sendall(frame(4, 1, 0))  # SETTINGS ack
            if got == sid and t in (0, 1) and f & 1:
                return
        d = s.recv(65536)
        if not d:
            raise SystemExit("closed early")
        buf += d


s.sendall(
    b"GET /a HTTP/1.1\r\nHost: " + auth + b"\r\n"
    b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
    b"HTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n\r\n"
)
while b"\r\n\r\n" not in buf:
    buf += s.recv(65536)
head, _, buf = buf.partition(b"\r\n\r\n")
assert head.startswith(b"HTTP/1.1 101"), head
s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(4, 0, 0))
read_until_end_of(1)  # the upgrade request is stream 1
time.sleep(float(sys.argv[2]) if sys.argv[2:] else 0.0)  # the connection idle in a pool
s.sendall(frame(1, 5, 3, headers(b"/b")))
try:
    read_until_end_of(3)
    time.sleep(0.1)
except (SystemExit, OSError):
    pass  # the server ended the connection instead
try:
    while s.recv(65536):
        pass
except OSError:
    pass
s.close()
