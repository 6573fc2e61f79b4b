"""Benchmark runner: tcpwhy against tshark on the same captures, in the same run.

    python benchmarks/run.py --packets 3000000

Three captures, each built once and cached in benchmarks/out/ (with a copy
of its first half, and of its second half where the two halves differ):
  conns-heavy  recorded from the Linux stack on a namespace's loopback by
               record_conns.py (nginx and wrk: keep-alive, `Connection:
               close`, idle connections closed by nginx, refused connects;
               needs root, `make benchdeps` installs nginx and wrk)
  tiled        N packets tiling real captures (make_capture.py): long flows
  synflood     3 M SYNs from random sources with a few hundred ordinary
               connections mixed in (make_synflood.py)
On each, every command in its own process, on both cores as a user runs it (`--pin`: pinned
to one core, steadier figures on a shared machine, but tcpwhy's reading and writing threads
then share that core):
  decode   tcpwhy: the whole file into the packet table (chunks discarded)
  conns    tcpwhy conns --format jsonl > /dev/null     (connection records)
  analyze  tcpwhy analyze --format json > /dev/null    (the diagnosis)
  tshark   tshark -q -z conv,tcp and tshark -q -z expert, once each
Each line reports seconds end to end (start-up included), packets/s, MB/s,
the peak RSS on the whole file and on its halves (memory should follow the
connections open at once, not the file: the whole file should peak no higher
than the higher of its halves), then the ratios and the targets,
`met` or `not met`. The per-packet rate without start-up is the time the
second half of the packets adds (whole file minus half file). Each tcpwhy
figure is the fastest of --runs runs (default 3; a run longer than
--repeat-below seconds is not repeated): on a shared machine the other runs
measure the neighbours. Every tcpwhy run has a time and a memory limit: a run
that exceeds one is killed and reported as such. The kernels' mode is printed
first: `aot` when `make native` (run by `make bench`) compiled them ahead of
time, `jit` when numba compiles or loads them at start-up.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
DECODE = """
import sys, time
from tcpwhy.capture import iter_tables
# load the compiled loops once (numba's on-disk cache): a fixed cost, not a per-packet one
for t in iter_tables(sys.argv[1], reuse=True):
    break
t0 = time.perf_counter()
n = 0
for t in iter_tables(sys.argv[1], reuse=True):
    n += len(t)
print(n, time.perf_counter() - t0)
"""

COUNT_TUPLES = """
import json, sys
n, seen = 0, set()
with open(sys.argv[1]) as f:
    for line in f:
        c = json.loads(line)
        n += 1
        seen.add((c["orig_h"], c["orig_p"], c["resp_h"], c["resp_p"]))
print(n, len(seen))
"""

HALF_PCAP = """
import mmap, struct, sys
from pathlib import Path
# the first or the second half of a pcap's records (little-endian, as tcpdump and our
# builders write), with the file's header
src, dst, which = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
with src.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
    assert m[:4] == b"\\xd4\\xc3\\xb2\\xa1", f"{src}: expected a little-endian pcap"
    unpack = struct.Struct("<I").unpack_from
    ends, pos = [], 24
    while pos + 16 <= len(m):
        pos += 16 + unpack(m, pos + 8)[0]
        ends.append(pos)
    mid = ends[len(ends) // 2 - 1] if len(ends) > 1 else 24
    tmp = dst.with_suffix(".partial")
    tmp.write_bytes(m[:mid] if which == "first" else m[:24] + m[mid:])
    tmp.rename(dst)
"""

CORE = str((os.cpu_count() or 1) - 1)
"""The core every measured process is pinned to with `--pin`: the last one, which on this
kind of machine takes fewer interrupts than core 0 (measured: decoding 0.39 s there, 0.7 s
on 0)."""
PIN = False  # set by --pin


@dataclass
class Run:
    secs: float
    rss: int  # peak RSS, MB
    out: str
    killed: str = ""  # why the limits ended it, "" when it finished


def timed(
    cmd: list[str],
    limit_s: float,
    limit_mb: int,
    keep: bool = False,
    ok: tuple[int, ...] = (0,),
) -> Run:
    """One child (pinned to one core with `--pin`): seconds, peak RSS, its stdout when `keep`
    (else /dev/null). Killed when it runs longer than `limit_s` or its RSS exceeds `limit_mb`."""
    if PIN and shutil.which("taskset"):
        cmd = ["taskset", "-c", CORE, *cmd]
    with (
        tempfile.TemporaryFile("w+") if keep else open(os.devnull, "w") as sink,
        tempfile.TemporaryFile("w+") as err,
    ):
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=sink, stderr=err, text=True)
        killed = ""
        while True:
            pid, status, ru = os.wait4(p.pid, os.WNOHANG)
            if pid:
                break
            dt = time.perf_counter() - t0
            if not killed:
                if dt > limit_s:
                    killed = f"killed at the {limit_s:.0f} s time limit"
                elif _rss_mb(p.pid) > limit_mb:
                    killed = f"killed at the {limit_mb} MB memory limit"
                if killed:
                    p.kill()
            time.sleep(0.05)
        dt = time.perf_counter() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        # an exit status a finding gives (analyze: 1) is also a crash's: the traceback tells
        crashed = "Traceback (most recent call last)" in err.read()
        if not killed and (p.returncode not in ok or crashed):
            raise SystemExit(f"{' '.join(cmd)} failed with status {p.returncode}")
        out = ""
        if keep:
            sink.seek(0)
            out = sink.read()
    return Run(dt, ru.ru_maxrss // 1024, out, killed)


def _rss_mb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) // 1024
    except OSError:
        pass
    return 0


def best(
    cmd: list[str], a: argparse.Namespace, ok: tuple[int, ...] = (0,), keep: bool = False
) -> Run:
    """The fastest of up to `a.runs` runs (the least disturbed by the rest of a shared
    machine), with the highest peak RSS seen. A slow or killed run is not repeated."""
    got = [timed(cmd, a.time_limit, a.mem_limit, keep, ok)]
    while len(got) < a.runs and not got[-1].killed and got[-1].secs < a.repeat_below:
        got.append(timed(cmd, a.time_limit, a.mem_limit, keep, ok))
    done = [g for g in got if not g.killed] or got
    fastest = min(done, key=lambda g: g.secs)
    return Run(fastest.secs, max(g.rss for g in got), fastest.out, fastest.killed)


def build(name: str, a: argparse.Namespace) -> tuple[Path, Path, Path | None] | None:
    """(whole, first half, second half or None) of one capture, built once; None when it
    cannot be built here. The synthetic captures' halves are built as captures of half as
    many packets, of the same mix throughout; the recorded one's first half is its
    keep-alive phase only (403 connections), its short connections all in the second, so
    that one is cut too: memory is flat when the whole peaks no higher than its halves."""
    py = sys.executable
    if name == "tiled":
        paths = []
        for n in (a.packets, a.packets // 2):
            path = OUT / f"tiled-{n}-s{a.snaplen}.pcap"
            if not path.exists():
                cmd = [py, str(HERE / "make_capture.py"), "--packets", str(n)]
                subprocess.run([*cmd, "--snaplen", str(a.snaplen), "-o", str(path)], check=True)
            paths.append(path)
        return paths[0], paths[1], None
    if name == "synflood":
        paths = []
        for n in (a.synflood_packets, a.synflood_packets // 2):
            path = OUT / f"synflood-{n}.pcap"
            if not path.exists():
                cmd = [py, str(HERE / "make_synflood.py"), "--packets", str(n), "-o", str(path)]
                subprocess.run(cmd, check=True)
            paths.append(path)
        return paths[0], paths[1], None
    whole, half = OUT / "conns-heavy.pcap", OUT / "conns-heavy-half.pcap"
    second = OUT / "conns-heavy-second-half.pcap"
    if not whole.exists():
        if os.geteuid() != 0:
            print(f"{name}: skipped: recording it needs root (sudo make bench)")
            return None
        subprocess.run([py, str(HERE / "record_conns.py"), "-o", str(whole)], check=True)
        half.unlink(missing_ok=True)
        second.unlink(missing_ok=True)
    for path, which in ((half, "first"), (second, "second")):
        if not path.exists():
            # in a child: mapping the file here raised this process's high-water mark to
            # the file's size, which every later child inherits in its ru_maxrss (`bench`)
            subprocess.run([py, "-c", HALF_PCAP, str(whole), str(path), which], check=True)
    return whole, half, second


def fmt(
    what: str,
    r: Run | None,
    packets: int,
    size_mb: float,
    half: Run | None = None,
    second: Run | None = None,
) -> str:
    if r is None:
        return f"{what:<17}{'not run':>9}"
    halves = f"{half.rss}" + (f"/{second.rss}" if second else "") if half else ""
    h = f"{halves:>12}"
    if r.killed:
        return f"{what:<17}{r.secs:>9.2f}  {r.killed}, peak RSS {r.rss} MB"
    return (
        f"{what:<17}{r.secs:>9.2f}{packets / r.secs:>13,.0f}{size_mb / r.secs:>7.0f}{r.rss:>10}{h}"
    )


def verdict(ok: bool) -> str:
    return "met" if ok else "not met"


def bench(name: str, whole: Path, half: Path, second: Path | None, a: argparse.Namespace) -> None:
    size_mb = whole.stat().st_size / 1e6
    py = [sys.executable, "-c", DECODE]
    lim = (a.time_limit, a.mem_limit)
    timed([*py, str(half)], *lim)  # warm the compiled-code cache and the page cache
    dec = best([*py, str(whole)], a, keep=True)
    count, inner = dec.out.split()
    packets, packets_half = int(count), int(best([*py, str(half)], a, keep=True).out.split()[0])
    tcpwhy = [sys.executable, "-m", "tcpwhy"]
    # one untimed run for the capture's figures: connections and distinct 4-tuples, counted
    # in a child of its own: a set of 3 M tuples here would raise this process's peak RSS,
    # which every later child inherits in its ru_maxrss (vfork + exec keep the parent's
    # high-water mark), so the figures after it would read high
    with tempfile.NamedTemporaryFile("w+", dir=OUT, suffix=".jsonl") as f:
        subprocess.run([*tcpwhy, "conns", str(whole), "--format", "jsonl"], stdout=f, check=True)
        counted = subprocess.run(
            [sys.executable, "-c", COUNT_TUPLES, f.name], capture_output=True, text=True, check=True
        ).stdout.split()
    conns, tuples = int(counted[0]), int(counted[1])
    conns_cmd = [*tcpwhy, "conns", "--format", "jsonl"]
    analyze_cmd = [*tcpwhy, "analyze", "--format", "json"]
    c_full = best([*conns_cmd, str(whole)], a)
    c_half = best([*conns_cmd, str(half)], a)
    an_full = best([*analyze_cmd, str(whole)], a, ok=(0, 1))
    an_half = best([*analyze_cmd, str(half)], a, ok=(0, 1))
    c_second = best([*conns_cmd, str(second)], a) if second else None
    an_second = best([*analyze_cmd, str(second)], a, ok=(0, 1)) if second else None
    conv = expert = None
    tshark = shutil.which("tshark")
    if tshark and not a.no_tshark:
        t_lim = (a.tshark_time_limit, a.tshark_mem_limit)
        conv = timed([tshark, "-n", "-q", "-r", str(whole), "-z", "conv,tcp"], *t_lim)
        expert = timed([tshark, "-n", "-q", "-r", str(whole), "-z", "expert"], *t_lim)
    print(
        f"\n== {name}: {whole.name}: {packets:,} packets, {conns:,} connections "
        f"({tuples:,} distinct 4-tuples), {size_mb:.0f} MB"
    )
    halves = "halves RSS" if second else "half RSS"
    print(f"{'what':<17}{'seconds':>9}{'packets/s':>13}{'MB/s':>7}{'peak RSS':>10}{halves:>12}")
    print(fmt("tcpwhy decode", dec, packets, size_mb))
    print(fmt("tcpwhy conns", c_full, packets, size_mb, c_half, c_second))
    print(fmt("tcpwhy analyze", an_full, packets, size_mb, an_half, an_second))
    print(fmt("tshark conv,tcp", conv, packets, size_mb))
    print(fmt("tshark expert", expert, packets, size_mb))
    print(f"tcpwhy decode inside the process: {packets / float(inner):,.0f} packets/s")
    extra = packets - packets_half
    rates = []
    for what, full, hal in (("conns", c_full, c_half), ("analyze", an_full, an_half)):
        if not (full.killed or hal.killed) and full.secs > hal.secs:
            rates.append(f"{what} {extra / (full.secs - hal.secs):,.0f} packets/s")
    if rates:
        print("per-packet rate without start-up (whole minus half file): " + ", ".join(rates))

    def rate(r: Run) -> float:
        return 0.0 if r.killed else packets / r.secs

    def ratio(ours: Run, theirs: Run | None) -> float | None:
        if theirs is None or theirs.killed:
            return None
        return 0.0 if ours.killed else theirs.secs / ours.secs

    r_conv, r_exp = ratio(c_full, conv), ratio(an_full, expert)
    if r_conv is not None:
        print(f"ratio conns vs tshark conv,tcp: {r_conv:.1f}x as fast")
    if r_exp is not None:
        print(f"ratio analyze vs tshark expert: {r_exp:.1f}x as fast")
    targets = {"conns-heavy": (3e6, 30, 1e6, 15), "synflood": (2e6, None, 1e6, 15)}
    t_conns, t_conv, t_an, t_exp = targets.get(name, (2e6, None, None, None))
    print(
        f"target conns >= {t_conns:,.0f} packets/s end to end: "
        f"{verdict(rate(c_full) >= t_conns)} ({rate(c_full):,.0f})"
    )
    if t_conv and r_conv is not None:
        print(
            f"target conns >= {t_conv}x tshark conv,tcp: {verdict(r_conv >= t_conv)} ({r_conv:.1f}x)"
        )
    if t_an:
        print(
            f"target analyze >= {t_an:,.0f} packets/s end to end: "
            f"{verdict(rate(an_full) >= t_an)} ({rate(an_full):,.0f})"
        )
    if t_exp and r_exp is not None:
        print(f"target analyze >= {t_exp}x tshark expert: {verdict(r_exp >= t_exp)} ({r_exp:.1f}x)")
    for what, full, hal, sec in (
        ("conns", c_full, c_half, c_second),
        ("analyze", an_full, an_half, an_second),
    ):
        parts = [hal] if sec is None else [hal, sec]
        flat = full.rss <= max(p.rss for p in parts) * 1.1 + 10
        killed = any(r.killed for r in (full, *parts))
        ok = full.rss <= 500 and all(p.rss <= 500 for p in parts) and flat and not killed
        each = " and ".join(f"{p.rss} MB" for p in parts)
        print(
            f"target {what} peak RSS <= 500 MB, whole file as half: {verdict(ok)} "
            f"({full.rss} MB whole, {each} {'halves' if sec else 'half'})"
        )
    sys.stdout.flush()


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--packets", type=int, default=3_000_000, help="packets of the tiled capture")
    ap.add_argument("--snaplen", type=int, default=256, help="snap length of the tiled capture")
    ap.add_argument("--synflood-packets", type=int, default=3_000_000)
    ap.add_argument(
        "--capture",
        action="append",
        choices=["conns-heavy", "tiled", "synflood"],
        help="only these captures (repeatable; default all three)",
    )
    ap.add_argument("--no-tshark", action="store_true")
    ap.add_argument(
        "--runs", type=int, default=3, help="tcpwhy runs per measurement (fastest kept)"
    )
    ap.add_argument(
        "--repeat-below", type=float, default=20, help="repeat only runs shorter than this (s)"
    )
    ap.add_argument("--time-limit", type=float, default=1200, help="per tcpwhy run, seconds")
    ap.add_argument("--mem-limit", type=int, default=4096, help="per tcpwhy run, MB of RSS")
    ap.add_argument("--tshark-time-limit", type=float, default=3600)
    ap.add_argument("--tshark-mem-limit", type=int, default=16384)
    ap.add_argument("--pin", action="store_true", help="pin every process to the last core")
    a = ap.parse_args()
    global PIN
    PIN = a.pin
    OUT.mkdir(exist_ok=True)
    names = a.capture or ["conns-heavy", "tiled", "synflood"]
    built = {name: build(name, a) for name in names}
    mode = subprocess.run(
        [sys.executable, "-m", "tcpwhy.native", "mode"], capture_output=True, text=True, check=True
    ).stdout.strip()
    how = "compiled ahead of time" if mode == "aot" else "numba JIT (run `make native`)"
    tshark = shutil.which("tshark")
    ver = ""
    if tshark and not a.no_tshark:
        v = subprocess.run([tshark, "--version"], capture_output=True, text=True).stdout
        m = re.search(r"\d+\.\d+\.\d+", v)
        ver = f"tshark {m.group(0) if m else ''}"
    where = f"pinned to core {CORE}" if PIN else f"on all {os.cpu_count()} cores"
    print(f"kernels: {mode}, {how}; {where}")
    print(
        f"tcpwhy: fastest of up to {a.runs} runs (runs over {a.repeat_below:.0f} s not repeated), "
        f"each limited to {a.time_limit:.0f} s and {a.mem_limit} MB; {ver or 'no tshark'}, once"
    )
    for name in names:
        paths = built[name]
        if paths:
            bench(name, *paths, a)


if __name__ == "__main__":
    main()
