"""When a test may skip, read in one place.

Under CI=true (CI runs as root, with ../shared beside the clone) nothing may
skip: a missing corpus, root, namespace, tool or build is a failure there, so a
broken import or a lost install step can never pass as a skip. conftest turns
every skip, however raised, into a failure under CI.
"""

from __future__ import annotations

import os

import pytest

IN_CI = os.environ.get("CI", "").strip().lower() == "true"

LIVE_SLACK_S = 2.0
"""Added to every upper bound on the timing of a live run (a scenario played on the kernel
now, on a 2-core machine shared with the rest of the suite). A user-space timer or a process
can be late by that much under load; such a bound only catches gross errors. Exact timing is
checked on the recorded captures, which are deterministic."""


def need(condition: bool, reason: str) -> None:
    """Skip when `condition` is false (conftest makes that a failure under CI=true)."""
    if not condition:
        pytest.skip(reason)
