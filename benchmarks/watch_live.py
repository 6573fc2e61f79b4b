"""`tcpwhy watch -i` under load: packets/s followed and the kernel's drops.

    sudo .venv/bin/python benchmarks/watch_live.py [--seconds 10] [--conns 100] [--close]

Two network namespaces this script creates and removes (also on error), joined by a veth
pair: nginx (the distribution's package, a config written to a temporary directory, one
worker, access_log off) in the server's, wrk and `tcpwhy watch -i c0 --format jsonl` in
the client's, watching the client's veth as a user would on a client host. Every process
is stopped by its PID. Printed: the packets watch followed, per second of load, the
kernel's drop count (tcpdump's, as watch reports it), wrk's requests/s and the CPU
seconds of watch (Python) and of its tcpdump child.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tcpwhy.lab import nginx
from tcpwhy.lab import ns as nsmod

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from record_conns import stop  # noqa: E402

CLIENT, SERVER, PORT = "10.99.0.1", "10.99.0.2", 8080


def cpu_s(pid: int) -> float:
    """User + system seconds of a live process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    p = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(x) for x in p.read_text().split()] if p.exists() else []


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=10, help="wrk's duration")
    ap.add_argument("--conns", type=int, default=100, help="wrk's connections")
    ap.add_argument("--close", action="store_true", help="Connection: close (one per request)")
    ap.add_argument("--buffer-size", default="32", help="watch -B MB")
    args = ap.parse_args()
    nsmod.check_root()
    cns, sns = nsmod.new_name("wlc"), nsmod.new_name("wls")
    procs: list[tuple[subprocess.Popen[bytes], int]] = []
    tmp = tempfile.TemporaryDirectory(prefix="tcpwhy-watch-live-")
    try:
        for ns in (cns, sns):
            nsmod.create_namespace(ns)
        nsmod.veth_pair(cns, sns, CLIENT, SERVER)
        nsmod.sysctl(cns, {"net.ipv4.ip_local_port_range": "20000 60999"})
        conf = Path(tmp.name) / "nginx.conf"
        conf.write_text(
            nginx.config(
                tmp.name, PORT, addr=SERVER, keepalive="65s", requests=1000000,
                body="hello from nginx\n",
            )
        )  # fmt: skip
        server = nginx.start(sns, conf, tmp.name)
        procs.append((server, signal.SIGQUIT))
        nginx.wait_listening(cns, PORT, server, addr=SERVER)
        env = {**os.environ, "PYTHONPATH": str(HERE.parent / "src")}
        watch = subprocess.Popen(
            ["ip", "netns", "exec", cns, sys.executable, "-m", "tcpwhy", "watch", "-i", "c0",
             "-B", args.buffer_size, "--format", "jsonl", "--summary-every", "0"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
        )  # fmt: skip
        procs.append((watch, signal.SIGTERM))
        assert watch.stderr is not None
        first = watch.stderr.readline().decode()
        if "tcpwhy: watching" not in first:
            raise SystemExit(f"watch did not start: {first.strip()}")
        time.sleep(0.5)
        wrk_cmd = ["ip", "netns", "exec", cns, "wrk", "-t1", f"-c{args.conns}",
                   f"-d{args.seconds}s"]  # fmt: skip
        if args.close:
            wrk_cmd += ["-H", "Connection: close"]
        t0 = time.monotonic()
        wrk = subprocess.run([*wrk_cmd, f"http://{SERVER}:{PORT}/"], capture_output=True, text=True)
        load_s = time.monotonic() - t0
        time.sleep(2.5)  # the last connections' linger: watch catches up
        kids = children(watch.pid)
        watch_cpu = cpu_s(watch.pid)
        tcpdump_cpu = sum(cpu_s(k) for k in kids)
        watch.send_signal(signal.SIGTERM)
        err = watch.stderr.read().decode()
        watch.wait(30)
        m = re.search(r"tcpwhy: watch: ([\d,]+) packets?, ([\d,]+) connections?", err)
        if not m:
            raise SystemExit(f"no summary from watch:\n{err}")
        packets, conns = (int(g.replace(",", "")) for g in m.groups())
        d = re.search(r"([\d,]+) packets? dropped by the kernel", err)
        drops = int(d.group(1).replace(",", "")) if d else 0
        rps = re.search(r"Requests/sec:\s+([\d.]+)", wrk.stdout)
        print(f"load         wrk -t1 -c{args.conns} -d{args.seconds}s"
              f"{' Connection: close' if args.close else ''} against nginx, "
              f"{load_s:.1f} s")  # fmt: skip
        print(f"requests/s   {float(rps.group(1)) if rps else 0:,.0f}")
        print(f"followed     {packets:,} packets in {conns:,} connections")
        print(f"packets/s    {packets / load_s:,.0f}")
        print(f"kernel drops {drops}")
        print(f"CPU          watch {watch_cpu:.1f} s, tcpdump {tcpdump_cpu:.1f} s")
        print(f"load average {os.getloadavg()[0]:.1f} (the machine's, at the end)")
        return 0 if drops == 0 else 1
    finally:
        for p, sig in reversed(procs):
            stop(p, sig)
        for ns in (cns, sns):
            nsmod.delete_namespace(ns)
        tmp.cleanup()


if __name__ == "__main__":
    raise SystemExit(main())
