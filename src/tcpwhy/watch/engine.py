"""`watch -i`: the capture engine is `tcpdump -w -` as a child process.

Why tcpdump and not an AF_PACKET ring of our own: libpcap (1.10) already maps a packet
ring, compiles the BPF filter into the kernel, timestamps in nanoseconds and reads the
kernel's drop counters; the child writes pcap to a pipe that
the compiled reader decodes in chunks (`capture.reader`), so no Python runs per packet
and a slow diagnosis step backs up into the ring, where the kernel counts what it drops,
instead of into our memory. Writing the same in Python would only add a ctypes mmap
loop that must be fast. The child is stopped by its PID. Its statistics (captured,
received by filter, dropped by kernel) are asked for with SIGUSR1 and read from its
stderr, and printed again by tcpdump when it exits.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from typing import Any

from tcpwhy.errors import EnvironmentProblem, TcpwhyError

_DROPPED = re.compile(rb"(\d+) packets? dropped by kernel")
_CAPTURED = re.compile(rb"(\d+) packets? captured")
STATS_EVERY_S = 1.0
F_SETPIPE_SZ = 1031
PIPE_BYTES = 1 << 20  # /proc/sys/fs/pipe-max-size's default


def terminate(p: subprocess.Popen[Any], timeout_s: float) -> None:
    """End a child process of ours by its PID: SIGTERM, so that it can say its last (the
    capture's statistics), then SIGKILL after `timeout_s`."""
    if p.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


class TcpdumpEngine:
    def __init__(self, iface: str, bpf: str, snaplen: int, buffer_kib: int = 32768) -> None:
        self.iface = iface
        self.bpf = bpf
        self.snaplen = snaplen
        self.buffer_kib = buffer_kib
        self.proc: subprocess.Popen[bytes] | None = None
        self.drops = 0
        self.captured = 0
        self._err_lines: list[bytes] = []
        self._last_stats = 0.0
        self._lock = threading.Lock()

    def describe(self) -> str:
        flt = f", filter {self.bpf!r}" if self.bpf else ""
        return f"tcpdump, snaplen {self.snaplen}, buffer {self.buffer_kib // 1024} MB{flt}"

    def start(self) -> None:
        """Start the child on standard input's place; one-line errors for what it refuses."""
        if self.snaplen < 64 or self.snaplen > 262144:
            raise TcpwhyError("-s", "snaplen must be between 64 and 262144")
        try:
            socket.if_nametoindex(self.iface)
        except OSError:
            raise TcpwhyError(self.iface, "no such interface") from None
        exe = shutil.which("tcpdump") or next(
            (p for p in ("/usr/sbin/tcpdump", "/usr/bin/tcpdump") if os.path.exists(p)), None
        )
        if exe is None:
            raise EnvironmentProblem("watch", "tcpdump is not installed (the capture engine)")
        cmd = [
            exe,
            "-i", self.iface,
            "-s", str(self.snaplen),
            "-B", str(self.buffer_kib),
            "-U",
            # each packet handed over as it comes: TPACKET_V3 (libpcap's default) holds a
            # quiet link's packets for tcpdump's 1 s block timeout, past a finding's second
            "--immediate-mode",
            "-n",
            "--time-stamp-precision=nano",
            "-w", "-",
        ]  # fmt: skip
        if os.geteuid() == 0:
            cmd[1:1] = ["-Z", "root"]  # no privilege drop: the pipe and ring stay ours
        if self.bpf:
            cmd.append(self.bpf)
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        assert self.proc.stdout is not None and self.proc.stderr is not None
        # a larger pipe than the default 64 KiB: a burst waits there, not in the kernel's ring
        with contextlib.suppress(OSError):
            fcntl.fcntl(self.proc.stdout.fileno(), F_SETPIPE_SZ, PIPE_BYTES)
        # the reader reads standard input as a stream (short reads decoded at once)
        os.dup2(self.proc.stdout.fileno(), 0)
        self.proc.stdout.close()
        # wait for "listening on" or an early exit with its reason
        err = self.proc.stderr
        line = b""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            line = err.readline()
            if not line or b"listening on" in line:
                break
            self._err_lines.append(line)
        if not line or self.proc.poll() is not None:
            self.proc.wait(timeout=5)
            self._fail(b"".join(self._err_lines) + line)
        threading.Thread(target=self._read_err, name="tcpdump-stderr", daemon=True).start()

    def _fail(self, text: bytes) -> None:
        msg = text.decode(errors="replace").strip().splitlines()
        reason = msg[-1].removeprefix("tcpdump: ") if msg else "tcpdump exited"
        low = reason.lower()
        if "permission" in low or "not permitted" in low:
            raise EnvironmentProblem(self.iface, f"not permitted to capture ({reason})")
        if "syntax error" in low or "filter" in low or "expression" in low:
            raise TcpwhyError("-f", f"bad capture filter: {reason}")
        if "no such device" in low or "doesn't exist" in low:
            raise TcpwhyError(self.iface, "no such interface")
        raise TcpwhyError(self.iface, reason)

    def _read_err(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for line in self.proc.stderr:
            m = _DROPPED.search(line)
            if m:
                with self._lock:
                    self.drops = max(self.drops, int(m.group(1)))
            m = _CAPTURED.search(line)
            if m:
                with self._lock:
                    self.captured = max(self.captured, int(m.group(1)))

    def poll(self, watcher: Any) -> None:
        """Ask for the kernel's counters now and then; hand the latest to the watcher."""
        now = time.monotonic()
        if (
            self.proc is not None
            and self.proc.poll() is None
            and now - self._last_stats >= STATS_EVERY_S
        ):
            self._last_stats = now
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGUSR1)
        with self._lock:
            watcher.counters.drops = self.drops

    def stop(self) -> None:
        """Stop the child by its PID; its final statistics arrive on stderr."""
        p = self.proc
        if p is None:
            return
        terminate(p, 5)
        time.sleep(0.05)  # the stderr thread reads the last statistics
