"""How many kernel events `tcpwhy host trace` follows, and at what CPU cost.

    sudo python benchmarks/trace_throughput.py [--seconds 10] [--conns 64] [--workers 1]

In a network namespace made for the run (loopback only), nginx serves a tiny response and
wrk requests it with `Connection: close`, so every request is a new connection: about ten
state changes each, on both ends. Meanwhile `tcpwhy host trace --format jsonl` follows every
TCP event of the host (no filter) into /dev/null. It prints the events per second that
tcpwhy followed, the events the ring buffer lost, and tcpwhy's CPU use in cores (user +
system time of its process over wall time). nginx, wrk and tcpwhy are started and stopped
by PID; the namespace is removed at the end, also on error.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tcpwhy.lab import nginx
from tcpwhy.lab import ns as nsmod


def cpu_seconds(pid: int) -> float:
    """User + system time of a process so far (its threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--conns", type=int, default=64)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--profile", metavar="FILE", help="run tcpwhy under cProfile into FILE")
    a = ap.parse_args()
    nsmod.check_root()
    for tool in ("nginx", "wrk"):
        if shutil.which(tool) is None and not Path("/usr/sbin", tool).exists():
            raise SystemExit(f"{tool} is missing: run `make benchdeps` (as root)")
    ns = nsmod.new_name("tbench")
    nsmod.create_namespace(ns)
    tmp = tempfile.mkdtemp(prefix="tcpwhy-tbench-")
    procs: list[tuple[subprocess.Popen[bytes], int]] = []
    port = 8088
    try:
        nsmod.run(["ip", "link", "set", "lo", "up"], ns)
        nsmod.sysctl(
            ns, {"net.ipv4.ip_local_port_range": "10000 65000", "net.ipv4.tcp_tw_reuse": "1"}
        )
        conf = Path(tmp) / "nginx.conf"
        conf.write_text(nginx.config(tmp, port, workers=a.workers))
        server = nginx.start(ns, conf, tmp)
        procs.append((server, signal.SIGQUIT))
        nginx.wait_listening(ns, port, server)
        tracer = subprocess.Popen(
            [
                sys.executable,
                *(("-m", "cProfile", "-o", a.profile) if a.profile else ()),
                *("-m", "tcpwhy", "host", "trace", "--format", "jsonl"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            # the load saturates both cores; a reader that gets no CPU loses events by design
            preexec_fn=lambda: os.nice(-10),
        )
        procs.append((tracer, signal.SIGINT))  # type: ignore[arg-type]
        assert tracer.stderr is not None
        banner = tracer.stderr.readline()
        if "tracing" not in banner:
            raise SystemExit(f"tcpwhy did not start: {banner.strip()}")
        cpu0, t0 = cpu_seconds(tracer.pid), time.monotonic()
        wrk = subprocess.run(
            [
                *("ip", "netns", "exec", ns, "wrk", "-t1", f"-c{a.conns}", f"-d{a.seconds:g}s"),
                *("-H", "Connection: close", f"http://127.0.0.1:{port}/"),
            ],
            capture_output=True,
            text=True,
        )
        time.sleep(0.5)  # the last events reach the reader
        cpu1, t1 = cpu_seconds(tracer.pid), time.monotonic()
        tracer.send_signal(signal.SIGINT)
        _, err = tracer.communicate(timeout=60)
        procs.remove((tracer, signal.SIGINT))  # type: ignore[arg-type]
        m = re.search(r"(\d+) events, (\d+) lost", err)
        if tracer.returncode != 0 or not m:
            raise SystemExit(f"tcpwhy failed: {err.strip()}")
        events, lost = int(m.group(1)), int(m.group(2))
        reqs = re.search(r"(\d+) requests in", wrk.stdout)
        wall = t1 - t0
        print(
            f"wrk: {reqs.group(1) if reqs else '?'} requests (one connection each) in {a.seconds:g} s"
        )
        print(
            f"tcpwhy host trace: {events:,} events in {wall:.1f} s = {events / wall:,.0f} events/s"
        )
        print(f"the load produced: {(events + lost) / wall:,.0f} events/s (followed + lost)")
        print(f"lost by the ring buffer: {lost}")
        print(f"tcpwhy CPU: {(cpu1 - cpu0) / wall:.2f} cores")
        return 0 if lost == 0 else 1
    finally:
        for p, sig in reversed(procs):
            if p.poll() is None:
                p.send_signal(sig)
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        nsmod.delete_namespace(ns)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
