"""Shared fixtures: the reference corpus in ../shared, and root/namespace gating.

The corpus is never copied into the repository. Where it is absent (a user's
clone) corpus tests skip with a reason; under CI=true its absence fails them.
Tests that need root and network namespaces skip only when those are missing,
and under CI=true (CI runs as root) they must run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TCPWHY_SHARED", REPO.parent / "shared"))
CORPUS = SHARED / "corpus"
IN_CI = os.environ.get("CI", "").lower() == "true"


def _need(condition: bool, reason: str) -> None:
    if condition:
        return
    if IN_CI:
        pytest.fail(f"{reason} (required under CI=true)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def corpus() -> Path:
    _need(CORPUS.is_dir(), f"reference corpus not found at {CORPUS}")
    return CORPUS


@pytest.fixture(scope="session")
def zeek_corpus(corpus: Path) -> Path:
    d = corpus / "zeek"
    _need(d.is_dir(), f"{d} missing")
    return d


@pytest.fixture(scope="session")
def tcpdump_corpus(corpus: Path) -> Path:
    d = corpus / "tcpdump-tests"
    _need(d.is_dir(), f"{d} missing")
    return d


def have_netns() -> bool:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        return False
    name = f"tcpwhy-probe-{os.getpid()}"
    ok = subprocess.run(["ip", "netns", "add", name], capture_output=True).returncode == 0
    if ok:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
    return ok


@pytest.fixture(scope="session")
def netns_ok() -> None:
    _need(have_netns(), "needs root and network namespaces")
