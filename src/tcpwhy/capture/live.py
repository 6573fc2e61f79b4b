"""Live capture on one interface with an AF_PACKET socket, written by the project's pcap writer.

Why not libpcap: the lab captures a handful of packets per scenario, and an
AF_PACKET socket gives the two things that matter without a dependency:
kernel timestamps (SO_TIMESTAMPNS) and exact drop counters
(PACKET_STATISTICS). A recording with kernel drops is not evidence, so the
counters are summed over the whole capture and reported to the caller.
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import threading
import time
from collections.abc import Callable

from tcpwhy.capture.writer import LINKTYPE_ETHERNET, PcapWriter

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_STATISTICS = 6
SO_TIMESTAMPNS = 35
SO_RCVBUFFORCE = 33
PACKET_OUTGOING = 4
_TS = struct.Struct("qq")

FrameFilter = Callable[[bytes], bool]


def tcp_only(frame: bytes) -> bool:
    """Keep Ethernet frames carrying TCP over IPv4/IPv6, and ICMP/ICMPv6 errors (which quote
    a packet: unreachable, too big, time exceeded, parameter problem); drops ARP/ND/MLD
    chatter."""
    if len(frame) < 14:
        return False
    et = int.from_bytes(frame[12:14], "big")
    if et == 0x0800 and len(frame) >= 34:
        ihl = (frame[14] & 15) * 4
        return frame[23] == 6 or (
            frame[23] == 1 and len(frame) > 14 + ihl and frame[14 + ihl] in (3, 11, 12)
        )
    if et == 0x86DD and len(frame) >= 54:
        return frame[20] == 6 or (frame[20] == 58 and len(frame) > 54 and 1 <= frame[54] <= 4)
    return False


class LiveCapture:
    """Captures frames of one interface into a pcap file on a background thread.

    `sock` must be an AF_PACKET socket created in the interface's namespace
    (see `open_socket`); interface indexes are resolved in that namespace.
    """

    def __init__(
        self,
        sock: socket.socket,
        path: str,
        snaplen: int = 262144,
        keep: FrameFilter | None = tcp_only,
    ) -> None:
        self._sock = sock
        self._writer = PcapWriter.open(path, LINKTYPE_ETHERNET, snaplen=snaplen)
        self._keep = keep
        self.path = path
        self.packets = 0  # kernel's count of frames delivered to the socket
        self.drops = 0  # kernel's count of frames it could not queue
        self.written = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="capture", daemon=True)
        self._lock = threading.Lock()
        self._stopped = False

    @staticmethod
    def open_socket(ifname: str, rcvbuf: int = 32 << 20) -> socket.socket:
        """An AF_PACKET socket bound to `ifname` in the calling thread's namespace."""
        # Protocol 0 until bound: otherwise frames of every interface queue up before bind().
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        try:
            try:
                s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)
            except OSError:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            s.bind((ifname, ETH_P_ALL))
        except BaseException:
            s.close()
            raise
        return s

    def start(self) -> LiveCapture:
        self._read_stats()  # reset the counters: they are read-and-clear
        self.packets = self.drops = 0
        self._thread.start()
        return self

    def _read_stats(self) -> None:
        raw = self._sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)
        packets, drops = struct.unpack("II", raw)
        self.packets += packets
        self.drops += drops

    def _drain_one(self) -> bool:
        try:
            data, anc, _flags, _addr = self._sock.recvmsg(65536 + 64, 64, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return False
        ts = time.time_ns()
        for level, kind, payload in anc:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(payload) >= 16:
                sec, nsec = _TS.unpack_from(payload)
                ts = sec * 1_000_000_000 + nsec
        if self._keep is None or self._keep(data):
            with self._lock:
                self._writer.write(ts, data)
                self.written += 1
        return True

    def _loop(self) -> None:
        while not self._stop.is_set():
            r, _, _ = select.select([self._sock], [], [], 0.05)
            if r:
                while self._drain_one():
                    pass
                with self._lock:
                    self._writer.flush()

    def stop(self) -> None:
        """Stop, drain what the kernel still holds, read the final drop counters, close."""
        if self._stopped:
            return
        self._stopped = True
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        while self._drain_one():
            pass
        with contextlib.suppress(OSError):
            self._read_stats()
        self._writer.close()
        self._sock.close()
