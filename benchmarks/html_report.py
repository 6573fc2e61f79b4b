"""The HTML report on a large capture: its size, the time `analyze --format html` takes, and
the time Chromium takes to load the page until the report says it is ready.

Target: a capture of 240 k connections gives a report of at most 25 MB that loads in under
5 s. Run on the connection-heavy capture that `benchmarks/run.py` records:

    .venv/bin/python benchmarks/html_report.py benchmarks/out/conns-heavy.pcap
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("capture")
    ap.add_argument("--runs", type=int, default=3, help="page loads (the fastest is kept)")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "report.html"
        t0 = time.monotonic()
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "tcpwhy",
                "analyze",
                a.capture,
                "--format",
                "html",
                "-o",
                str(out),
            ],
            capture_output=True,
            text=True,
        )
        build_s = time.monotonic() - t0
        if r.returncode not in (0, 1):
            print(r.stderr, file=sys.stderr)
            return 2
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        size_mb = out.stat().st_size / 1e6
        from playwright.sync_api import sync_playwright

        loads = []
        with sync_playwright() as pw:
            b = pw.chromium.launch(
                executable_path=CHROMIUM, args=["--no-sandbox"] if os.geteuid() == 0 else []
            )
            for _ in range(a.runs):
                page = b.new_page()
                t0 = time.monotonic()
                page.goto(out.as_uri(), wait_until="load")
                page.wait_for_selector("body[data-ready='1']", timeout=120_000)
                loads.append(time.monotonic() - t0)
                page.close()
            b.close()
    print(f"capture           {a.capture}")
    print(f"analyze --format html: {build_s:.1f} s, peak RSS {peak_mb:.0f} MB")
    print(f"report size       {size_mb:.1f} MB (target <= 25 MB)")
    print(
        "page load         "
        + ", ".join(f"{x:.2f} s" for x in loads)
        + f" (fastest {min(loads):.2f} s; target < 5 s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
