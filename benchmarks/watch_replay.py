"""Replay a capture through `tcpwhy watch -r FILE --format jsonl`: packets/s and peak RSS.

    .venv/bin/python benchmarks/watch_replay.py [benchmarks/out/conns-heavy.pcap]

The watcher runs as a child process (its own interpreter, as users run it); the peak RSS
is the kernel's maximum resident set of that child, and its CPU time (user + system) is
printed too: on a shared machine it says more than the wall time does.
Targets: >= 1 M packets/s, <= 500 MB.
"""

from __future__ import annotations

import argparse
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT = HERE / "out" / "conns-heavy.pcap"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("capture", nargs="?", default=str(DEFAULT))
    args = ap.parse_args()
    if not Path(args.capture).is_file():
        print(f"watch_replay: {args.capture}: no such file", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    r = subprocess.run(
        [sys.executable, "-m", "tcpwhy", "watch", "-r", args.capture, "--format", "jsonl"],
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - t0
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    peak_mb = ru.ru_maxrss / 1024
    if r.returncode not in (0, 1):
        print(r.stderr, file=sys.stderr)
        return r.returncode
    m = re.search(r"tcpwhy: watch: (\d+) packets, (\d+) connections", r.stderr)
    packets = int(m.group(1)) if m else 0
    conns = int(m.group(2)) if m else 0
    findings = len(r.stdout.splitlines())
    print(f"capture      {args.capture}")
    print(f"packets      {packets:,} in {conns:,} connections")
    print(f"time         {wall:.2f} s")
    print(f"cpu          {ru.ru_utime + ru.ru_stime:.2f} s (user + system)")
    print(f"packets/s    {packets / wall:,.0f}")
    print(f"peak RSS     {peak_mb:,.0f} MB")
    print(f"finding announcements  {findings}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
