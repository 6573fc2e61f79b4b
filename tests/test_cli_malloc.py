"""The command line fixes glibc's allocator thresholds for its own process (per-chunk arrays
were mapped and zeroed afresh hundreds of times a capture); a threshold the user set, and
the library's host process, are left alone."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys

import pytest

PROBE = """
import contextlib, ctypes, io, sys
libc = ctypes.CDLL(None)
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in (
        "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split())]
libc.mallinfo2.restype = Info
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
if sys.argv[1] == "cli":
    from tcpwhy.cli import main
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["--version"]) == 0
else:
    import tcpwhy
before = libc.mallinfo2().hblks
block = libc.malloc(16 << 20)
mapped = libc.mallinfo2().hblks - before
libc.free(block)
print(mapped)
"""


def _glibc() -> bool:
    try:
        libc = ctypes.CDLL(None)
        return hasattr(libc, "gnu_get_libc_version") and hasattr(libc, "mallinfo2")
    except OSError:
        return False


def _mapped_alone(how: str, **env: str) -> int:
    """Whether a 16 MB block is mapped on its own (1) or taken from the heap (0)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    clean.pop("GLIBC_TUNABLES", None)
    out = subprocess.run(
        [sys.executable, "-c", PROBE, how],
        env={**clean, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return int(out.stdout.split()[-1])


@pytest.mark.skipif(not _glibc(), reason="glibc's allocator only")
@pytest.mark.parametrize(
    ("how", "env", "want"),
    [
        ("cli", {}, 0),  # the command's threshold: 32 MB
        ("library", {}, 1),  # glibc's own start: 128 kB, so the block is mapped alone
        ("cli", {"MALLOC_MMAP_THRESHOLD_": "131072"}, 1),  # the user's setting is kept
    ],
)
def test_allocator_thresholds(how: str, env: dict[str, str], want: int) -> None:
    assert _mapped_alone(how, **env) == want
