"""Counts, sizes and durations of `watch`, `lab` and `host trace` take the shared argparse
types of positive numbers (`tcpwhy.cli_helpers`): a value below the type's range is one
argparse error line and exit status 2, before anything runs; a good value parses as before."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tcpwhy.cli import build_parser

AT_LEAST_1 = "must be at least 1"
POSITIVE = "must be positive"


@pytest.mark.parametrize(
    ("args", "option", "message"),
    [
        (["watch", "-r", "x.pcap", "--max-conns", "-1"], "--max-conns", AT_LEAST_1),
        (["watch", "-r", "x.pcap", "--max-rows", "0"], "--max-rows", AT_LEAST_1),
        (["watch", "-r", "x.pcap", "--max-groups", "-1"], "--max-groups", AT_LEAST_1),
        (["watch", "-i", "lo", "-s", "-1"], "-s/--snaplen", AT_LEAST_1),
        (["watch", "-i", "lo", "--snaplen", "0"], "-s/--snaplen", AT_LEAST_1),
        # `lab` has an option -6, so argparse reads a bare -1 as an option there: `--count=-1`
        (["lab", "refused", "--count=-1"], "--count", AT_LEAST_1),
        (["lab", "refused", "--count", "0"], "--count", AT_LEAST_1),
        (["lab", "refused", "--idle=-1"], "--idle", POSITIVE),
        (["lab", "refused", "--delay=-1"], "--delay", POSITIVE),
        (["lab", "refused", "--delay", "0"], "--delay", POSITIVE),
        (["host", "trace", "--duration", "-1"], "--duration", POSITIVE),
        (["host", "trace", "--duration", "0"], "--duration", POSITIVE),
    ],
)
def test_bad_value_is_one_argparse_error(args: list[str], option: str, message: str) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "tcpwhy", *args], capture_output=True, text=True, timeout=120
    )
    assert (r.returncode, r.stdout) == (2, ""), r.stderr
    assert "Traceback" not in r.stderr
    errors = [line for line in r.stderr.splitlines() if "error:" in line]
    assert errors == [r.stderr.splitlines()[-1]], r.stderr
    assert errors[0].endswith(f"error: argument {option}: {message}"), r.stderr


@pytest.mark.parametrize(
    ("args", "want"),
    [
        (
            ["watch", "-r", "x.pcap", "--max-conns", "1", "--max-rows", "2", "--max-groups", "3"],
            {"max_conns": 1, "max_rows": 2, "max_groups": 3},
        ),
        (["watch", "-r", "x.pcap"], {"max_conns": 100_000, "max_rows": 500_000, "snaplen": None}),
        (["watch", "-i", "lo", "-s", "64"], {"snaplen": 64}),
        (
            ["lab", "refused", "--count", "1", "--idle", "0.5", "--delay", "0.01"],
            {"count": 1, "idle": 0.5, "delay": 0.01},
        ),
        (["lab", "refused"], {"count": None, "idle": None, "delay": None}),
        (["host", "trace", "--duration", "2.5"], {"duration": 2.5}),
        (["host", "trace"], {"duration": None}),
    ],
)
def test_good_value_parses(args: list[str], want: dict[str, object]) -> None:
    ns = build_parser(args).parse_args(args)
    assert {k: getattr(ns, k) for k in want} == want
