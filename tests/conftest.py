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
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.gates import IN_CI, need

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TCPWHY_SHARED", REPO.parent / "shared"))
CORPUS = SHARED / "corpus"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Under CI=true a skip, whatever raised it, is a failure (see tests/gates.py)."""
    outcome = yield
    rep = outcome.get_result()
    if IN_CI and rep.skipped and not hasattr(rep, "wasxfail"):
        reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
        rep.outcome = "failed"
        rep.longrepr = f"skipped under CI=true, where every test must run: {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Iterator[None]:
    """The same for a whole module skipped while it is collected."""
    outcome = yield
    rep = outcome.get_result()
    if IN_CI and rep.skipped:
        rep.outcome = "failed"
        rep.longrepr = f"module skipped under CI=true, where every test must run: {rep.longrepr}"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests on the live kernel run on one xdist worker of their own (`--dist loadgroup`), one
    after the other, so CPU-heavy tests on the other worker do not share a core with them."""
    for item in items:
        if "netns_ok" in getattr(item, "fixturenames", ()) or item.get_closest_marker("root"):
            item.add_marker(pytest.mark.xdist_group("live"))


@pytest.fixture(scope="session", autouse=True)
def json_outputs_checked() -> Iterator[None]:
    """Every JSON document a test makes tcpwhy print is validated against its published
    schema, however the test runs it (tests/json_contract.py)."""
    from tests.json_contract import install

    with pytest.MonkeyPatch.context() as mp:
        install(mp.setattr)
        yield


@pytest.fixture(scope="session")
def corpus() -> Path:
    need(CORPUS.is_dir(), f"reference corpus not found at {CORPUS}")
    return CORPUS


@pytest.fixture(scope="session")
def zeek_corpus(corpus: Path) -> Path:
    d = corpus / "zeek"
    need(d.is_dir(), f"{d} missing")
    return d


@pytest.fixture(scope="session")
def tcpdump_corpus(corpus: Path) -> Path:
    d = corpus / "tcpdump-tests"
    need(d.is_dir(), f"{d} missing")
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
    need(have_netns(), "needs root and network namespaces")
