"""Record a connection-heavy capture from the real Linux stack on loopback.

    sudo python benchmarks/record_conns.py -o benchmarks/out/conns-heavy.pcap

Everything runs inside a network namespace this script creates and removes
(also on error): nginx (Debian's package, a config written to a temporary
directory: 127.0.0.1 only, one worker, access_log off, keepalive_timeout 1s),
wrk as the client and tcpdump recording the namespace's loopback
(`-i lo -s 256 -B 65536`, only the two ports used). No host setting is
touched: the client port range is narrowed with the namespace's own sysctl,
so that `Connection: close` traffic wraps the client ports and reuses the
same 4-tuples many times. The phases, each bounded by a count and a time:

  keep-alive   wrk, many connections, many requests each
  close        wrk -H 'Connection: close': one request per connection
  idle         a few hundred connections send one request each and wait;
               nginx closes them after its keep-alive timeout
  refused      a few thousand connects to a closed port (RSTs)

The script fails, and leaves no capture, when tcpdump reports that the kernel
dropped packets.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from tcpwhy.lab import nginx
from tcpwhy.lab import ns as nsmod

PORT_RANGE = (40000, 40999)
"""Client ports inside the namespace: 1,000, so each 4-tuple is used about 200 times."""


# after LIMIT responses (`-- LIMIT`) wrk's thread stops and says so; the script then ends wrk
# with SIGINT (its summary is printed); -d bounds the time
WRK_LUA = """\
local n, limit = 0, 0
function init(args) limit = tonumber(args[1]) end
function response(status, headers, body)
  n = n + 1
  if n == limit then
    io.write("limit reached\\n")
    io.flush()
    wrk.thread:stop()
  end
end
"""


def free_port(ns: str, avoid: set[int], start: int = 18080) -> int:
    """A port nothing in the namespace is bound to (outside the client port range)."""
    for port in range(start, 30000):
        if port in avoid:
            continue
        s = nsmod.socket_in(ns)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            s.close()
        return port
    raise SystemExit("no free port in the namespace")


def wrk(ns: str, lua: str, url: str, conns: int, limit: int, secs: int, close: bool) -> str:
    """One wrk run in the namespace: one thread, `conns` connections, `limit` responses."""
    cmd = ["ip", "netns", "exec", ns, "wrk", "-t1", f"-c{conns}", f"-d{secs}s", "-s", lua]
    if close:
        cmd += ["-H", "Connection: close"]
    p = subprocess.Popen([*cmd, url, "--", str(limit)], stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None
    lines = []
    for line in p.stdout:
        if line.startswith("limit reached"):
            p.send_signal(signal.SIGINT)  # by its PID: `ip netns exec` runs wrk in its place
            continue
        lines.append(line)
    if p.wait() != 0:
        raise SystemExit(f"wrk failed with status {p.returncode}")
    return "".join(lines)


def idle_phase(ns: str, port: int, conns: int, wait: float) -> int:
    """Open `conns` keep-alive connections, one request each, then wait: nginx closes them
    after its keep-alive timeout. Returns how many nginx closed."""
    socks = []
    req = f"GET /idle HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
    for _ in range(conns):
        s = nsmod.socket_in(ns)
        s.connect(("127.0.0.1", port))
        s.sendall(req)
        socks.append(s)
    closed = 0
    pending = {s.fileno(): s for s in socks}
    end = time.monotonic() + wait
    while pending and time.monotonic() < end:
        ready, _, _ = select.select(list(pending), [], [], 0.5)
        for fd in ready:
            if not pending[fd].recv(65536):  # end of stream: nginx closed it
                closed += 1
                pending.pop(fd).close()
    for s in pending.values():
        s.close()
    return closed


def refused_phase(ns: str, port: int, count: int) -> int:
    refused = 0
    for _ in range(count):
        s = nsmod.socket_in(ns)
        try:
            s.connect(("127.0.0.1", port))
        except ConnectionRefusedError:
            refused += 1
        finally:
            s.close()
    return refused


def stop(proc: subprocess.Popen[bytes], sig: int, secs: float = 30) -> None:
    """Stop one process we started, by its PID."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(secs)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def record(out: Path, a: argparse.Namespace) -> dict[str, Any]:
    nsmod.check_root()
    for tool in ("nginx", "wrk", "tcpdump"):
        if not any(Path(d, tool).exists() for d in [*os.environ["PATH"].split(":"), "/usr/sbin"]):
            raise SystemExit(f"{tool} is missing: run `make benchdeps` (as root)")
    ns = nsmod.new_name("bench")
    nsmod.create_namespace(ns)
    procs: list[tuple[subprocess.Popen[bytes], int]] = []
    tmp = tempfile.mkdtemp(prefix="tcpwhy-bench-")
    try:
        port = free_port(ns, set())
        closed_port = free_port(ns, {port}, port + 1)
        nsmod.sysctl(ns, {"net.ipv4.ip_local_port_range": f"{PORT_RANGE[0]} {PORT_RANGE[1]}"})
        prefix = Path(tmp)
        conf = prefix / "nginx.conf"
        conf.write_text(
            nginx.config(tmp, port, keepalive="1s", requests=1000000, body="x" * 200 + "\n")
        )
        lua = prefix / "limit.lua"
        lua.write_text(WRK_LUA)
        partial = out.with_suffix(".partial")
        dump = subprocess.Popen(
            [
                *("ip", "netns", "exec", ns, "tcpdump", "-i", "lo", "-s", "256", "-B", "65536"),
                *("-w", str(partial), f"tcp port {port} or tcp port {closed_port}"),
            ],
            stderr=subprocess.PIPE,
        )
        procs.append((dump, signal.SIGINT))
        assert dump.stderr is not None
        line = dump.stderr.readline().decode()  # "listening on lo, ..." once the ring is open
        if "listening" not in line:
            raise SystemExit(f"tcpdump did not start: {line.strip()}")
        err_lines: list[bytes] = []
        drain = threading.Thread(target=lambda: err_lines.extend(dump.stderr or []), daemon=True)
        drain.start()
        server = nginx.start(ns, conf, tmp)
        procs.append((server, signal.SIGQUIT))
        nginx.wait_listening(ns, port, server)
        url = f"http://127.0.0.1:{port}/"
        t0 = time.monotonic()
        phases: dict[str, Any] = {}
        print(
            f"keep-alive: wrk, {a.keepalive_conns} connections, {a.keepalive_requests:,} requests"
        )
        phases["keep-alive"] = wrk(
            ns, str(lua), url, a.keepalive_conns, a.keepalive_requests, a.phase_secs, False
        )
        print(f"close: wrk -H 'Connection: close', {a.close_conns:,} connections")
        phases["close"] = wrk(ns, str(lua), url, 64, a.close_conns, a.phase_secs, True)
        print(f"idle: {a.idle_conns} keep-alive connections left idle until nginx closes them")
        phases["idle closed by nginx"] = idle_phase(ns, port, a.idle_conns, 10.0)
        print(f"refused: {a.refused:,} connects to closed port {closed_port}")
        phases["refused"] = refused_phase(ns, closed_port, a.refused)
        secs = time.monotonic() - t0
        time.sleep(0.5)
        stop(server, signal.SIGQUIT)
        time.sleep(0.5)
        stop(dump, signal.SIGINT)
        drain.join(10)
        err = b"".join(err_lines).decode()
        got = {
            k: int(v)
            for v, k in re.findall(
                r"(\d+) packets? (captured|received by filter|dropped by kernel)", err
            )
        }
        if "dropped by kernel" not in got:
            raise SystemExit(f"tcpdump printed no drop counter:\n{err}")
        if got["dropped by kernel"]:
            partial.unlink(missing_ok=True)
            raise SystemExit(
                f"tcpdump: {got['dropped by kernel']:,} packets dropped by kernel "
                f"({got.get('captured', 0):,} captured): the capture is incomplete, not kept"
            )
        partial.rename(out)
        return {"seconds": secs, "tcpdump": got, "phases": phases}
    finally:
        for p, sig in reversed(procs):
            stop(p, sig)
        nsmod.delete_namespace(ns)
        with contextlib.suppress(OSError):
            for f in sorted(Path(tmp).rglob("*"), reverse=True):
                f.rmdir() if f.is_dir() else f.unlink()
            Path(tmp).rmdir()


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("-o", "--output", type=Path, default=Path("benchmarks/out/conns-heavy.pcap"))
    ap.add_argument("--keepalive-conns", type=int, default=400)
    ap.add_argument("--keepalive-requests", type=int, default=1_100_000)
    ap.add_argument("--close-conns", type=int, default=210_000)
    ap.add_argument("--idle-conns", type=int, default=300)
    ap.add_argument("--refused", type=int, default=5_000)
    ap.add_argument("--phase-secs", type=int, default=180, help="time bound of each wrk phase")
    a = ap.parse_args()
    a.output.parent.mkdir(parents=True, exist_ok=True)
    r = record(a.output, a)
    for k, v in r["phases"].items():
        print(f"--- {k}\n{v}" if isinstance(v, str) else f"--- {k}: {v}")
    t = r["tcpdump"]
    print(
        f"{a.output}: {t['captured']:,} packets captured, {t['dropped by kernel']} dropped by "
        f"kernel, {a.output.stat().st_size / 1e6:.0f} MB, traffic {r['seconds']:.0f} s"
    )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
