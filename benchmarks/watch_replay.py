"""Replay a capture through `tcpwhy watch -r FILE --format jsonl`: packets/s and peak RSS.

    .venv/bin/python benchmarks/watch_replay.py [benchmarks/out/conns-heavy.pcap]

The watcher runs as a child process (its own interpreter, as users run it), `--runs` times
(3): the fastest run is reported, as `benchmarks/run.py` reports its commands, with every
run's time listed (this shared machine varies by a fifth from run to run). The peak RSS is
the largest of the runs' own maximum resident sets, and the CPU time (user + system) of the
fastest is printed too.
Targets: >= 1 M packets/s, <= 500 MB.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT = HERE / "out" / "conns-heavy.pcap"


def _run(capture: str) -> tuple[float, float, float, str, str, int]:
    """One replay in a child process: wall seconds, CPU seconds, peak RSS (MB), stdout,
    stderr and exit status, the usage being that child's own (`os.wait4`)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t0 = time.perf_counter()
        p = subprocess.Popen(
            [sys.executable, "-m", "tcpwhy", "watch", "-r", capture, "--format", "jsonl"],
            stdout=out,
            stderr=err,
            text=True,
        )
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return (
            wall,
            ru.ru_utime + ru.ru_stime,
            ru.ru_maxrss / 1024,
            out.read(),
            err.read(),
            p.returncode,
        )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("capture", nargs="?", default=str(DEFAULT))
    ap.add_argument("--runs", type=int, default=3, help="runs; the fastest is reported")
    args = ap.parse_args()
    if not Path(args.capture).is_file():
        print(f"watch_replay: {args.capture}: no such file", file=sys.stderr)
        return 2
    runs = []
    for _ in range(max(args.runs, 1)):
        got = _run(args.capture)
        if got[5] not in (0, 1) or "Traceback (most recent call last)" in got[4]:
            print(got[4], file=sys.stderr)
            return got[5] or 1
        runs.append(got)
    wall, cpu, _, stdout, stderr, _ = min(runs, key=lambda r: r[0])
    m = re.search(r"tcpwhy: watch: ([\d,]+) packets?, ([\d,]+) connections?", stderr)
    packets, conns = (int(g.replace(",", "")) for g in m.groups()) if m else (0, 0)
    findings = len(stdout.splitlines())
    print(f"capture      {args.capture}")
    print(f"packets      {packets:,} in {conns:,} connections")
    print(f"runs         {', '.join(f'{r[0]:.2f}' for r in runs)} s (the fastest below)")
    print(f"time         {wall:.2f} s")
    print(f"cpu          {cpu:.2f} s (user + system)")
    print(f"packets/s    {packets / wall:,.0f}")
    print(f"peak RSS     {max(r[2] for r in runs):,.0f} MB (the largest of the runs)")
    print(f"finding announcements  {findings}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
