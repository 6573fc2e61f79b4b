"""Fleet benchmark: `tcpwhy analyze DIR` on a fleet of capture points, in this process and on
Dask LocalClusters of 1 and 2 workers.

    flock /tmp/tcpwhy-bench.lock python benchmarks/fleet.py

The fleet (built once, cached in benchmarks/out/fleet/) is real traffic: the connection-heavy
recording (benchmarks/out/conns-heavy.pcap, made by record_conns.py: nginx and wrk on a
namespace's loopback) cut into consecutive slices, as a host's rotated capture files are cut,
and the lab's recordings of the real kernel (src/tcpwhy/data/lab) copied to points of their
own. Slices are whole pcap records, taken as they are. Points:
  heavy-NN.pcap   one slice each (a host with one file)
  rotated-NN/     two consecutive slices (a host whose capture was rotated)
  lab-NN.pcap     one lab recording each
Each configuration runs --runs times (default 2, alternating; the fastest kept) in its own
process, output to /dev/null, after a small analyze that leaves numba's cache warm; the
figures are wall time, the CPU seconds of all its processes, the speed-up of 2 workers over
1, the time a LocalCluster takes to start and stop (the same command on a fleet of one small
point), and the peak RSS of every process of the run (the client, each worker), sampled
every 50 ms, beside that of `analyze` on the fleet's largest point by itself (the memory a
worker should stay within). The target: 2 workers at least 1.7 times as fast as 1. On a machine that other
work shares, the wall times measure the share of the cores the run got; the CPU seconds do
not depend on it.
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import shutil
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
HEAVY = OUT / "conns-heavy.pcap"
LAB = HERE.parent / "src" / "tcpwhy" / "data" / "lab"


def slice_pcap(src: Path, parts: int, dest: list[Path]) -> None:
    """Cut a classic pcap into `parts` consecutive files of about the same number of records."""
    with open(src, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        header = m[:24]
        magic = struct.unpack_from("<I", header)[0]
        endian = "<" if magic in (0xA1B2C3D4, 0xA1B23C4D) else ">"
        rec = struct.Struct(endian + "IIII")
        offsets = []
        off = 24
        size = len(m)
        while off + 16 <= size:
            offsets.append(off)
            off += 16 + rec.unpack_from(m, off)[2]
        offsets.append(min(off, size))
        n = len(offsets) - 1
        for k in range(parts):
            a, b = offsets[k * n // parts], offsets[(k + 1) * n // parts]
            with open(dest[k], "wb") as out:
                out.write(header)
                out.write(m[a:b])


def build(root: Path, slices: int, rotated: int, copies: int = 1) -> Path:
    """The fleet under `root` (kept: rebuilt only when its description changes). With
    `copies` > 1 the heavy slices are also the capture points of copies-1 more hosts
    (hard links: the same real traffic seen at more points, for a fleet with more work)."""
    desc = {"slices": slices, "rotated": rotated, "heavy_size": HEAVY.stat().st_size}
    if copies > 1:
        desc["copies"] = copies
    stamp = root / ".fleet.json"
    if stamp.exists() and json.loads(stamp.read_text()) == desc:
        return root
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    single = slices - 2 * rotated
    dest = [root / f"heavy-{k:02d}.pcap" for k in range(single)]
    for r in range(rotated):
        (root / f"rotated-{r:02d}").mkdir()
        dest += [root / f"rotated-{r:02d}" / f"cap.pcap{i}" for i in range(2)]
    slice_pcap(HEAVY, slices, dest)
    for k, cap in enumerate(sorted(LAB.glob("*.pcap"))):
        shutil.copy(cap, root / f"lab-{k:02d}.pcap")
    for c in range(1, copies):
        for k in range(single):
            os.link(dest[k], root / f"heavy-c{c}-{k:02d}.pcap")
        for r in range(rotated):
            (root / f"rotated-c{c}-{r:02d}").mkdir()
            for i in range(2):
                name = f"cap.pcap{i}"
                os.link(root / f"rotated-{r:02d}" / name, root / f"rotated-c{c}-{r:02d}" / name)
    stamp.write_text(json.dumps(desc))
    return root


def point_files(point: Path) -> list[str]:
    """The files of a capture point (a sub-directory's, in name order, or the file)."""
    return sorted(str(f) for f in point.iterdir()) if point.is_dir() else [str(point)]


def point_size(point: Path) -> int:
    return sum(os.path.getsize(f) for f in point_files(point))


def run(cmd: list[str]) -> dict[str, object]:
    """Wall time, exit status and the peak RSS of each process of the run (sampled)."""
    peaks: dict[int, tuple[str, int]] = {}
    cpu: dict[int, tuple[str, float]] = {}
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    done = threading.Event()

    def sample() -> None:
        top = psutil.Process(p.pid)
        while not done.is_set():
            try:
                procs = [top, *top.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            for q in procs:
                try:
                    rss = q.memory_info().rss
                    cmdline = " ".join(q.cmdline())
                    times = q.cpu_times()
                except psutil.Error:
                    continue
                role = (
                    "client" if q.pid == p.pid else "worker" if "spawn_main" in cmdline else "other"
                )
                if rss > peaks.get(q.pid, ("", 0))[1]:
                    peaks[q.pid] = (role, rss)
                cpu[q.pid] = (role, times.user + times.system)
            time.sleep(0.05)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    _, err = p.communicate()
    wall = time.perf_counter() - t0
    done.set()
    t.join()
    workers = sorted((rss for role, rss in peaks.values() if role == "worker"), reverse=True)
    client = max((rss for role, rss in peaks.values() if role == "client"), default=0)
    return {
        "wall": wall,
        "status": p.returncode,
        "stderr": err.strip().splitlines()[-1:] if p.returncode not in (0, 1) else [],
        "client_mb": client / 2**20,
        "worker_mb": [w / 2**20 for w in workers],
        # CPU seconds each process had used at its last sample (up to 50 ms short)
        "client_cpu": sum(c for role, c in cpu.values() if role == "client"),
        "worker_cpu": sum(c for role, c in cpu.values() if role == "worker"),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--slices", type=int, default=40, help="slices of the heavy capture")
    ap.add_argument("--rotated", type=int, default=4, help="points of two rotated slices")
    ap.add_argument("--runs", type=int, default=2, help="rounds, alternating (best kept)")
    ap.add_argument("--fleet", type=Path, default=OUT / "fleet")
    ap.add_argument(
        "--copies", type=int, default=1, help="hosts per heavy slice (hard links; more work)"
    )
    ap.add_argument("--build-only", action="store_true", help="build the fleet, run nothing")
    args = ap.parse_args()
    if not HEAVY.exists():
        print(
            f"fleet: {HEAVY} is missing: make bench (record_conns.py) records it", file=sys.stderr
        )
        return 1
    t0 = time.perf_counter()
    root = build(args.fleet, args.slices, args.rotated, args.copies)
    points = sorted(p.name for p in root.iterdir() if not p.name.startswith("."))
    size = sum(f.stat().st_size for f in root.rglob("*") if f.is_file()) / 2**20
    print(
        f"fleet: {root}: {len(points)} capture points, {size:.0f} MB (built or checked in "
        f"{time.perf_counter() - t0:.1f} s)"
    )
    if args.build_only:
        return 0
    small = OUT / "fleet-one"
    small.mkdir(exist_ok=True)
    shutil.copy(LAB / "refused.pcap", small / "refused.pcap")
    tcpwhy = [sys.executable, "-m", "tcpwhy", "analyze"]
    fmt = ["--format", "json"]
    load = os.getloadavg()
    print(
        f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} cores"
    )
    largest = max((root / p for p in points), key=point_size)
    configs = [
        # the memory a worker should stay within: analyze of the largest point by itself
        ("analyze, largest point alone", [*tcpwhy, *point_files(largest), *fmt]),
        ("no cluster", [*tcpwhy, str(root), *fmt]),
        ("--workers 1", [*tcpwhy, str(root), "--workers", "1", *fmt]),
        ("--workers 2", [*tcpwhy, str(root), "--workers", "2", *fmt]),
        ("--workers 1, one small point", [*tcpwhy, str(small), "--workers", "1", *fmt]),
        ("--workers 2, one small point", [*tcpwhy, str(small), "--workers", "2", *fmt]),
    ]
    from tcpwhy import native

    print(f"kernels: {native.mode()}")
    warm = [*tcpwhy, str(LAB / "stale-keepalive.pcap"), *fmt]
    best: dict[str, dict[str, object]] = {}
    print(f"{'run':30} {'seconds':>8} {'CPU s':>6} {'client MB':>10}  worker peak RSS MB")
    for _ in range(args.runs):
        for name, cmd in configs:
            # numba's cache warm before every timed run (kernels compiled by the JIT when the
            # ahead-of-time build is stale): no run pays for compiling them
            subprocess.run(warm, stdout=subprocess.DEVNULL, check=False)
            r = run(cmd)
            used = r["client_cpu"] + r["worker_cpu"]  # type: ignore[operator]
            ws = ", ".join(f"{w:.0f}" for w in r["worker_mb"]) or "-"  # type: ignore[attr-defined]
            print(
                f"{name:30} {r['wall']:8.2f} {used:6.1f} {r['client_mb']:10.0f}  {ws}"
                + (f"  status {r['status']} {r['stderr']}" if r["stderr"] else "")
            )
            if name not in best or r["wall"] < best[name]["wall"]:  # type: ignore[operator]
                best[name] = r
    w1, w2 = best["--workers 1"]["wall"], best["--workers 2"]["wall"]
    s1 = best["--workers 1, one small point"]["wall"]
    s2 = best["--workers 2, one small point"]["wall"]
    speedup = w1 / w2  # type: ignore[operator]
    inner = (w1 - s1) / (w2 - s2)  # type: ignore[operator]
    load = os.getloadavg()
    print(f"load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    c1 = best["--workers 1"]["client_cpu"] + best["--workers 1"]["worker_cpu"]  # type: ignore[operator]
    c2 = best["--workers 2"]["client_cpu"] + best["--workers 2"]["worker_cpu"]  # type: ignore[operator]
    print(f"CPU seconds, all processes: 1 worker {c1:.1f}, 2 workers {c2:.1f}")
    alone = best["analyze, largest point alone"]["client_mb"]
    peak = max(
        (w for name in ("--workers 1", "--workers 2") for w in best[name]["worker_mb"]),  # type: ignore[attr-defined]
        default=0.0,
    )
    print(
        f"peak RSS: analyze of the largest point ({largest.name}) alone {alone:.0f} MB, "
        f"largest worker {peak:.0f} MB"
    )
    print(f"speed-up, 2 workers over 1, end to end: {speedup:.2f}x")
    print(
        f"speed-up without the cluster's start and stop (minus the one-small-point run): "
        f"{inner:.2f}x"
    )
    print(
        f"target 2 workers >= 1.7x as fast as 1: {'met' if speedup >= 1.7 else 'not met'} "
        f"({speedup:.2f}x)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
