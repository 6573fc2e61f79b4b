"""`tcpwhy packets` as text against tshark and tcpdump, in the same run on the same captures.

For each capture: `tcpwhy packets` in the table, csv and jsonl formats, `tcpdump -nn -r`
and `tshark -T fields -e frame.number -e tcp.seq -e tcp.ack`, each writing to /dev/null;
packets per second end to end (process start included), CPU seconds (user + system) and
peak RSS of each process; the load average before each capture (the machine is shared).
tshark is about thirty times slower than the target, so it reads the first
``--tshark-packets`` packets (``-c``) and its rate is taken from those.

    .venv/bin/python benchmarks/packets_bench.py [CAPTURE ...]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

OUT = Path(__file__).parent / "out"
DEFAULT = (OUT / "tiled-3000000-s256.pcap", OUT / "conns-heavy.pcap")


def run(cmd: list[str]) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds and peak RSS (MB) of one command, its output discarded."""
    with open(os.devnull, "wb") as null:
        t = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=null, stderr=subprocess.DEVNULL)
        _, status, usage = os.wait4(p.pid, 0)
        elapsed = time.perf_counter() - t
        p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        raise SystemExit(f"packets_bench: {' '.join(cmd)}: exit status {p.returncode}")
    return elapsed, usage.ru_utime + usage.ru_stime, usage.ru_maxrss // 1024


def count_packets(cap: Path) -> int:
    """Frames in the capture, as capinfos counts them."""
    out = subprocess.run(
        ["capinfos", "-c", "-M", str(cap)], capture_output=True, text=True, check=True
    ).stdout
    for line in out.splitlines():
        if "Number of packets" in line:
            return int(line.split(":")[1].strip())
    raise SystemExit(f"packets_bench: {cap}: no packet count from capinfos")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("captures", nargs="*", type=Path, default=list(DEFAULT))
    ap.add_argument("--tshark-packets", type=int, default=300_000)
    args = ap.parse_args()
    tcpwhy = [sys.executable, "-m", "tcpwhy", "packets"]
    mode = subprocess.run(
        [sys.executable, "-m", "tcpwhy.native", "mode"], capture_output=True, text=True
    ).stdout.strip()
    print(f"tcpwhy kernels: {mode}")
    print(f"{'capture':<28} {'tool':<34} {'Mpkt/s':>7} {'seconds':>8} {'CPU s':>6} {'RSS MB':>7}")
    for cap in args.captures:
        n = count_packets(cap)
        print(f"{cap.name}: {n:,} packets; load average {os.getloadavg()[0]:.2f}")
        rates: dict[str, float] = {}
        for name, cmd, packets in (
            *(
                (f"tcpwhy packets --format {fmt}", [*tcpwhy, str(cap), "--format", fmt], n)
                for fmt in ("table", "csv", "jsonl")
            ),
            ("tcpdump -nn -r", ["tcpdump", "-nn", "-r", str(cap)], n),
            (
                "tshark -T fields (3 fields)",
                [
                    "tshark",
                    "-r",
                    str(cap),
                    "-c",
                    str(args.tshark_packets),
                    "-T",
                    "fields",
                    "-e",
                    "frame.number",
                    "-e",
                    "tcp.seq",
                    "-e",
                    "tcp.ack",
                ],
                min(n, args.tshark_packets),
            ),
        ):
            secs, cpu, rss = run(cmd)
            rates[name] = packets / secs
            print(
                f"{cap.name:<28} {name:<34} {packets / secs / 1e6:>7.3f} {secs:>8.2f} "
                f"{cpu:>6.2f} {rss:>7}"
            )
        slowest = min(v for k, v in rates.items() if k.startswith("tcpwhy"))
        print(
            f"{cap.name:<28} slowest tcpwhy format: {slowest / 1e6:.2f} M/s, "
            f"{slowest / rates['tshark -T fields (3 fields)']:.0f}x tshark, "
            f"{slowest / rates['tcpdump -nn -r']:.1f}x tcpdump"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
