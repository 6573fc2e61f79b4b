"""The Python API's connection table against the command line and against reading the capture
with dpkt or scapy into a DataFrame of flows.

Measured, each in a fresh process (the fastest of `--runs`, and the median of their wall
times: on a shared machine one lucky run can decide a fastest-of comparison of two figures a
few hundredths of a second apart), as wall and CPU (user + system) seconds and packets per
second of each:
  api-arrow   tcpwhy.open(CAPTURE).connections.to_arrow()
  api-pandas  tcpwhy.open(CAPTURE).connections.to_pandas()
  cli-jsonl   tcpwhy conns --format jsonl CAPTURE > /dev/null
  dpkt        dpkt reads the first --prefix-packets packets into a pandas DataFrame of
  scapy       5-tuple flows (packets, bytes, first/last time); the time is extrapolated to the
              whole capture by its packet count (printed as such)

dpkt and scapy are not tcpwhy's dependencies; install them to compare:

    .venv/bin/pip install dpkt scapy
    .venv/bin/python benchmarks/api.py benchmarks/out/conns-heavy.pcap
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

API = """
import sys, time, tcpwhy
t = time.perf_counter()
c = tcpwhy.open(sys.argv[1]).connections
out = c.to_arrow() if sys.argv[2] == "arrow" else c.to_pandas()
print(time.perf_counter() - t, len(out))
"""

FLOWS = """
import sys, time, socket
import pandas as pd
t = time.perf_counter()
path, n, lib = sys.argv[1], int(sys.argv[2]), sys.argv[3]
flows = {}
def add(key, ts, size):
    f = flows.get(key)
    if f is None:
        flows[key] = [ts, ts, 1, size]
    else:
        f[1] = ts; f[2] += 1; f[3] += size
seen = 0
if lib == "dpkt":
    import dpkt
    with open(path, "rb") as fh:
        for ts, buf in dpkt.pcap.Reader(fh):
            seen += 1
            if seen > n:
                break
            eth = dpkt.ethernet.Ethernet(buf)
            ip = eth.data
            if isinstance(ip, (dpkt.ip.IP, dpkt.ip6.IP6)) and isinstance(ip.data, dpkt.tcp.TCP):
                tcp = ip.data
                a, b = (bytes(ip.src), tcp.sport), (bytes(ip.dst), tcp.dport)
                add((min(a, b), max(a, b)), ts, len(tcp.data))
else:
    from scapy.all import PcapReader, TCP, IP, IPv6
    for pkt in PcapReader(path):
        seen += 1
        if seen > n:
            break
        ip = pkt.getlayer(IP) or pkt.getlayer(IPv6)
        tcp = pkt.getlayer(TCP)
        if ip is None or tcp is None:
            continue
        a, b = (ip.src, tcp.sport), (ip.dst, tcp.dport)
        add((min(a, b), max(a, b)), float(pkt.time), len(tcp.payload))
df = pd.DataFrame(
    [(k[0][0], k[0][1], k[1][0], k[1][1], *v) for k, v in flows.items()],
    columns=["a_h", "a_p", "b_h", "b_p", "first", "last", "pkts", "bytes"],
)
print(time.perf_counter() - t, min(seen, n), len(df))
"""


def _cpu() -> float:
    """User + system seconds of the finished children: on a shared machine the wall clock
    counts other people's work, this does not."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _run(args: list[str], runs: int, stdout: int | None = None) -> tuple[float, float, str]:
    """(wall, cpu, stdout) of the fastest of `runs` runs (by wall)."""
    best, best_cpu, out = float("inf"), 0.0, ""
    for _ in range(runs):
        t, c = time.perf_counter(), _cpu()
        p = subprocess.run(
            args, stdout=stdout if stdout is not None else subprocess.PIPE, text=True, check=True
        )
        wall, cpu = time.perf_counter() - t, _cpu() - c
        if wall < best:
            best, best_cpu, out = wall, cpu, p.stdout or ""
    return best, best_cpu, out


def _rates(wall: float, cpu: float, packets: int) -> dict[str, float]:
    return {
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "packets_per_s_wall": round(packets / wall),
        "packets_per_s_cpu": round(packets / cpu),
    }


def _packets(path: str) -> int:
    """Frames of the capture, from `tcpwhy analyze --format json`'s own count would cost a
    diagnosis: counted here from the pcap record headers instead."""
    import struct

    n = 0
    with open(path, "rb") as f:
        head = f.read(24)
        endian = "<" if head[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
        while True:
            rec = f.read(16)
            if len(rec) < 16:
                return n
            caplen = struct.unpack(endian + "IIII", rec)[2]
            f.seek(caplen, os.SEEK_CUR)
            n += 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("capture", nargs="?", default="benchmarks/out/conns-heavy.pcap")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--prefix-packets", type=int, default=200_000)
    a = ap.parse_args()
    if not os.path.exists(a.capture):
        print(f"{a.capture}: missing (benchmarks/run.py records it)", file=sys.stderr)
        return 1
    py = sys.executable
    results: dict[str, object] = {"capture": a.capture, "bytes": os.path.getsize(a.capture)}
    total = _packets(a.capture)
    results["packets"] = total
    # the three are run in turn, run after run, so that a busy spell of a shared machine
    # falls on all of them alike; each keeps its fastest run
    cmds = {
        "cli-jsonl": [py, "-m", "tcpwhy", "conns", "--format", "jsonl", a.capture],
        "api-arrow": [py, "-c", API, a.capture, "arrow"],
        "api-pandas": [py, "-c", API, a.capture, "pandas"],
    }
    best: dict[str, tuple[float, float, str]] = {}
    walls: dict[str, list[float]] = {name: [] for name in cmds}
    with open(os.devnull, "w") as null:
        for _ in range(a.runs):
            for name, cmd in cmds.items():
                got = _run(cmd, 1, null.fileno() if name == "cli-jsonl" else None)
                walls[name].append(got[0])
                if name not in best or got[0] < best[name][0]:
                    best[name] = got
    median = {name: statistics.median(w) for name, w in walls.items()}
    wall, cpu, _ = best["cli-jsonl"]
    cli = {**_rates(wall, cpu, total), "median_wall_s": round(median["cli-jsonl"], 2)}
    results["cli-jsonl"] = cli
    for kind in ("arrow", "pandas"):
        name = f"api-{kind}"
        wall, cpu, out = best[name]
        inner, rows = out.split()
        results[name] = {
            **_rates(wall, cpu, total),
            "median_wall_s": round(median[name], 2),
            "in_python_s": round(float(inner), 2),
            "rows": int(rows),
            "cpu_vs_cli_jsonl": round(cpu / cli["cpu_s"], 2),
            "wall_vs_cli_jsonl": round(wall / cli["wall_s"], 2),
            "median_wall_vs_cli_jsonl": round(median[name] / median["cli-jsonl"], 2),
        }
    for lib in ("dpkt", "scapy"):
        try:
            __import__(lib)
        except ImportError:
            results[lib] = "not installed (pip install dpkt scapy)"
            continue
        wall, _, out = _run([py, "-c", FLOWS, a.capture, str(a.prefix_packets), lib], 1)
        inner, seen, flows = out.split()
        per_packet = float(inner) / int(seen)
        results[lib] = {
            "prefix_packets": int(seen),
            "prefix_s": round(float(inner), 2),
            "flows_in_prefix": int(flows),
            "extrapolated_whole_capture_s": round(per_packet * total, 1),
        }
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
