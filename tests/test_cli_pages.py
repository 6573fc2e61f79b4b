"""Every command asks numpy not to advise huge pages for its own arrays (a first touch
anywhere in a large array then maps 4 kB, not 2 MB); a choice the user made and the
library's host process keep numpy's advice."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest

PROBE = """
import contextlib, io, sys
import numpy as np
if sys.argv[1] != "library":
    from tcpwhy.cli import main
    with contextlib.redirect_stdout(io.StringIO()):
        assert main([sys.argv[1], sys.argv[2]]) in (0, 1)
else:
    import tcpwhy
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096
a = np.zeros(64 << 20, np.uint8)
before = rss()
a[:: 8 << 20] = 1  # one byte in each 8 MB
touched = rss() - before
import numpy._core.multiarray as m
print(touched, int(m._set_madvise_hugepage(True)))  # (returns numpy's setting until now)
"""

THP = Path("/sys/kernel/mm/transparent_hugepage/enabled")
DEMO = Path(str(resources.files("tcpwhy") / "data" / "demo-stale-keepalive.pcap"))


def _touched(how: str, **env: str) -> tuple[int, bool]:
    """Bytes made resident by writing one byte in each 8 MB of a fresh 64 MB array, and
    whether numpy advised huge pages."""
    clean = {k: v for k, v in os.environ.items() if k != "NUMPY_MADVISE_HUGEPAGE"}
    out = subprocess.run(
        [sys.executable, "-c", PROBE, how, str(DEMO)],
        env={**clean, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    touched, advised = out.stdout.split()[-2:]
    return int(touched), advised == "1"


def _advised_only() -> bool:
    """Huge pages where a process advises them, and nowhere else (Debian's default)."""
    try:
        return "[madvise]" in THP.read_text()
    except OSError:
        return False


@pytest.mark.parametrize(
    ("how", "env", "huge"),
    [
        ("conns", {}, False),  # its batches and tables, filled part by part: 4 kB pages
        ("analyze", {}, False),  # whole-capture columns too: no compaction at a first touch
        ("library", {}, True),  # numpy's own default
        ("conns", {"NUMPY_MADVISE_HUGEPAGE": "1"}, True),  # the user's setting is kept
        ("analyze", {"NUMPY_MADVISE_HUGEPAGE": "1"}, True),
    ],
)
def test_huge_pages_advised(how: str, env: dict[str, str], huge: bool) -> None:
    touched, advised = _touched(how, **env)
    assert advised == huge
    if _advised_only():  # where the kernel follows the advice, and only then, it shows
        assert (touched >= 8 << 20) == huge, touched
