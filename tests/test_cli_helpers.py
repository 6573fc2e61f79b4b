"""The command line's shared pieces (`tcpwhy.cli_helpers`): one set of argparse types for
positive numbers, used by every command that takes one; `demo` dispatched to its own module."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest

from tcpwhy.cli_helpers import positive_float, positive_int


def test_types() -> None:
    assert positive_int("3") == 3
    assert positive_float("0.25") == 0.25
    for bad, why in (("0", "must be at least 1"), ("-2", "must be at least 1"), ("1.5", "whole")):
        with pytest.raises(argparse.ArgumentTypeError, match=why):
            positive_int(bad)
    assert positive_float("1e9") == 1e9
    for bad, why in (
        ("0", "positive"),
        ("-1", "positive"),
        ("nan", "positive"),
        ("x", "number"),
        ("inf", "at most 1000000000"),
        ("1e400", "at most 1000000000"),
        ("1.5e9", "at most 1000000000"),
    ):
        with pytest.raises(argparse.ArgumentTypeError, match=why):
            positive_float(bad)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["packets", "-c", "0", "x.pcap"], "argument -c/--count: must be at least 1"),
        (["conns", "--max-active", "0", "x.pcap"], "argument --max-active: must be at least 1"),
        (["analyze", "--close-wait", "0", "x.pcap"], "argument --close-wait: must be positive"),
        (["analyze", "--workers", "x", "d"], "argument --workers: not a whole number: 'x'"),
        (["watch", "-r", "x.pcap", "--idle", "-1"], "argument --idle: must be positive"),
        (["host", "counters", "--interval", "0"], "argument --interval: must be positive"),
        (["host", "watch", "--count", "0"], "argument --count: must be at least 1"),
        # infinity reached the rules as nanoseconds: a traceback
        (
            ["analyze", "--close-wait", "inf", "x.pcap"],
            "argument --close-wait: must be at most 1000000000",
        ),
    ],
)
def test_every_command_rejects_alike(args: list[str], message: str) -> None:
    """Bad input is refused by argparse (exit status 2, the usage and one message line)."""
    r = subprocess.run(
        [sys.executable, "-m", "tcpwhy", *args], capture_output=True, text=True, timeout=120
    )
    assert (r.returncode, r.stdout) == (2, "")
    assert r.stderr.splitlines()[-1].endswith(f"error: {message}"), r.stderr


def test_demo_is_its_own_command() -> None:
    """`tcpwhy demo` imports its own module, not the capture views' nor the diagnosis'."""
    code = (
        "import sys; from tcpwhy.cli import build_parser; "
        "a = build_parser(['demo']).parse_args(['demo']); "
        "print(a.func.__module__, sorted(m for m in sys.modules "
        "if m.startswith(('tcpwhy.report', 'tcpwhy.diagnose', 'tcpwhy.lab'))))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.split(" ", 1) == ["tcpwhy.demo", "[]\n"]


def test_an_input_is_never_overwritten(tmp_path: Path) -> None:
    """`conns -o trace.pcap trace.pcap` replaced the capture with its table: an output that
    is one of the command's inputs (by any spelling, or a hard link to it) is refused before
    anything is read or written."""
    src = Path(str(resources.files("tcpwhy") / "data" / "lab" / "time-wait.pcap"))
    cap = tmp_path / "trace.pcap"
    shutil.copy(src, cap)
    os.link(cap, tmp_path / "link.pcap")
    spelled = f"{tmp_path}/./trace.pcap"
    for args in (
        ["conns", "-o", spelled, str(cap)],
        ["packets", "-w", str(tmp_path / "link.pcap"), "-r", str(cap)],
        ["analyze", "--annotate", str(cap), str(cap)],
        ["analyze", "-o", str(cap), str(src), str(cap)],
        ["analyze", "--kernel-trace", str(cap), "-o", str(cap), str(src)],
        ["flow", "-o", str(cap), str(cap), "0"],
    ):
        r = subprocess.run([sys.executable, "-m", "tcpwhy", *args], capture_output=True, text=True)
        out = args[args.index(next(a for a in args if a in ("-o", "-w", "--annotate"))) + 1]
        reason = f"is also read by this command ({cap}): not overwritten"
        assert (r.returncode, r.stdout, r.stderr) == (2, "", f"tcpwhy: {out}: {reason}\n"), args
        assert cap.read_bytes() == src.read_bytes()
    # a new file beside it is written as before
    r = subprocess.run(
        [sys.executable, "-m", "tcpwhy", "conns", "-o", str(tmp_path / "t.txt"), str(cap)],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0 and (tmp_path / "t.txt").read_text().startswith("stream")


def test_two_outputs_are_never_one_file(tmp_path: Path) -> None:
    """`analyze --annotate x.pcapng -o x.pcapng` wrote the report over the annotated capture:
    one file named by two outputs (by any spelling) is refused and nothing is written."""
    src = str(resources.files("tcpwhy") / "data" / "lab" / "time-wait.pcap")
    out = tmp_path / "x.pcapng"
    for second in (str(out), f"{tmp_path}/./x.pcapng"):
        r = subprocess.run(
            [sys.executable, "-m", "tcpwhy", "analyze", "--annotate", str(out), "-o", second, src],
            capture_output=True,
            text=True,
        )
        assert r.returncode == 2, r.stderr
        assert r.stderr == f"tcpwhy: {out}: is named by both -o and --annotate: one would be lost\n"
        assert not out.exists()


@pytest.mark.parametrize(
    "args",
    [
        ["analyze", "-o", ""],
        ["conns", "-o", ""],
        ["packets", "-w", ""],
        ["analyze", "--annotate", ""],
        ["analyze", "--parquet", ""],
    ],
    ids=lambda a: " ".join(a[:2]),
)
def test_an_empty_output_name_is_refused(args: list[str]) -> None:
    """`-o "$OUT"` with OUT unset wrote to standard output, and `--parquet ""` was ignored
    (the user waits for a dataset that never comes): an empty output name is bad input."""
    src = str(resources.files("tcpwhy") / "data" / "lab" / "time-wait.pcap")
    r = subprocess.run([sys.executable, "-m", "tcpwhy", *args, src], capture_output=True, text=True)
    flag = args[1]
    assert (r.returncode, r.stdout) == (2, ""), r.stderr
    assert r.stderr == f"tcpwhy: {flag}: an empty name: give a path\n"
