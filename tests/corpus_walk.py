"""Runs `tcpwhy packets` (or, with --analyze first, `tcpwhy analyze`) in-process over capture
files given on the command line.

Prints one JSON object per file: exit status, stderr lines, seconds, and any
traceback. Used by test_corpus_bad_input.py in worker processes so that a
hang is caught by a timeout and memory is measured per worker.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import resource
import sys
import time
import traceback

from tcpwhy.cli import main

COMMAND = ["packets", "{}", "--format", "jsonl"]


def run(path: str) -> dict[str, object]:
    err = io.StringIO()
    t0 = time.monotonic()
    tb = ""
    status = -1
    with open(os.devnull, "w") as out:
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                status = main([path if a == "{}" else a for a in COMMAND])
        except BaseException:
            tb = traceback.format_exc()
    return {
        "file": path,
        "status": status,
        "stderr": err.getvalue().splitlines(),
        "seconds": round(time.monotonic() - t0, 3),
        "traceback": tb,
        "maxrss_kb": peak_rss_kb(),
    }


def peak_rss_kb() -> int:
    """This process's own peak RSS. ru_maxrss is not: Linux carries the parent's peak across
    fork and exec, so a worker started by a big test process would report the parent's."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


if __name__ == "__main__":
    args = sys.argv[1:]
    if args and args[0] == "--analyze":
        COMMAND = ["analyze", "{}", "--format", "json"]
        args = args[1:]
    elif args and args[0] == "--conns":
        COMMAND = ["conns", "{}", "--format", "zeek"]
        args = args[1:]
    for p in args:
        print(json.dumps(run(p)), flush=True)
