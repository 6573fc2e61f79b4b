import socket
import struct
import sys
import time

port = int(sys.argv[1])
s = socket.create_connection(("127.0.0.1", port))
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def frame(t, f, sid, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([t, f]) + struct.pack(">I", sid) + payload


auth = f"127.0.0.1:{port}".encode()


def headers(path):
    return b"\x82\x86\x44" + bytes([len(path)]) + path + b"\x41" + bytes([len(auth)]) + auth


s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(4, 0, 0))
time.sleep(0.1)
s.sendall(frame(4, 1, 0))  # SETTINGS ack
time.sleep(0.1)
s.sendall(frame(1, 5, 1, headers(b"/a")))
time.sleep(0.1)
f = frame(1, 5, 3, headers(b"/b"))
s.sendall(f[:5])
time.sleep(0.1)
s.sendall(f[5:])  # a frame header cut across two segments
time.sleep(0.1)
f = frame(1, 5, 5, headers(b"/c"))
s.sendall(f[:20])
time.sleep(0.1)
s.sendall(f[20:] + frame(6, 0, 0, b"12345678"))  # body cut; PING after it
time.sleep(0.1)
s.sendall(frame(1, 4, 7, headers(b"/d")))  # no END_STREAM: open
time.sleep(0.1)
s.sendall(frame(3, 0, 7, struct.pack(">I", 8)))  # RST_STREAM CANCEL
if sys.argv[2:] == ["stale"]:
    # reuse after the server's idle timeout: GOAWAY and FIN have come, not yet read
    time.sleep(1.6)
    s.sendall(frame(1, 5, 9, headers(b"/e")))
    time.sleep(0.3)
s.settimeout(5)  # idle: the server sends GOAWAY and closes; the client reads to EOF and closes
data = b""
try:
    while True:
        d = s.recv(65536)
        if not d:
            break
        data += d
except OSError:
    pass
s.close()
print(len(data))
