"""The fleet's resource tracker keeps its leak warnings to itself: after a Ctrl-C stops the
workers by PID, it cleans up their queues' semaphores, and its words came after tcpwhy's
one line. The process that starts it keeps its own warning settings."""

from __future__ import annotations

import subprocess
import sys

import pytest

# a semaphore the tracker is told of and never told is gone: what a killed worker leaves
LEAK = """
import sys, warnings
from multiprocessing import resource_tracker
if sys.argv[1] == "fleet":
    from tcpwhy.diagnose.fleet import _start_resource_tracker
    _start_resource_tracker()
else:
    resource_tracker.ensure_running()
resource_tracker.register("/tcpwhy-test-leak", "semaphore")
warnings.warn("this process still warns")
"""


@pytest.mark.parametrize("how", ["fleet", "plain"])
def test_tracker_leak_warning(how: str) -> None:
    got = subprocess.run(
        [sys.executable, "-c", LEAK, how], capture_output=True, text=True, timeout=60
    )
    assert got.returncode == 0, got.stderr
    assert "this process still warns" in got.stderr
    leaked = "leaked semaphore" in got.stderr
    assert leaked == (how == "plain"), got.stderr
