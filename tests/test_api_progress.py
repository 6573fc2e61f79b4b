"""The Python API's reading: silent unless asked (`progress=True` draws a bar on stderr),
each view read once, flows kept for the last streams asked, and a missing optional library
named with the command that installs it.

Real recordings only: the lab's captures shipped in the package.
"""

from __future__ import annotations

import builtins
import os
import re
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import tcpwhy

LAB = Path(tcpwhy.__file__).parent / "data" / "lab"
SMALL = LAB / "pmtu-discovery.pcap"  # 67 packets, 2 connections, 2 findings
MANY = LAB / "syn-flood.pcap"  # 201 connections: more streams than `FLOWS_KEPT`


# ---------------------------------------------------------------- silent by default


def test_views_write_nothing_by_default(capfd: pytest.CaptureFixture[str]) -> None:
    cap = tcpwhy.open(SMALL)
    assert cap.progress is False
    assert len(cap.packets) == 67
    assert len(cap.connections) == 2
    assert cap.findings
    assert cap.flow(0).rows
    out, err = capfd.readouterr()  # at the file-descriptor level: rich, numba, C all count
    assert (out, err) == ("", "")


# ---------------------------------------------------------------- progress=True on a terminal


_ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]")


def _under_pty(code: str, timeout: float = 60.0) -> tuple[bytes, bytes, int]:
    """Run `code` in a child Python whose stderr is a terminal (a pseudo-terminal's slave)
    and whose stdout is a pipe: what the terminal showed, what stdout got, the exit status."""
    pty = pytest.importorskip("pty")
    master, slave = pty.openpty()
    env = {**os.environ, "COLUMNS": "120", "TERM": "xterm"}
    for k in ("NO_COLOR", "FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE"):
        env.pop(k, None)
    child = subprocess.Popen(
        [sys.executable, "-c", code],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=slave,
        env=env,
    )
    os.close(slave)
    shown = b""
    end = time.monotonic() + timeout
    try:
        while time.monotonic() < end:
            ready, _, _ = select.select([master], [], [], 0.2)
            if not ready:
                if child.poll() is not None:
                    break
                continue
            try:
                got = os.read(master, 65536)
            except OSError:  # EIO: the child closed its end
                break
            if not got:
                break
            shown += got
        assert child.stdout is not None
        out = child.stdout.read()
        status = child.wait(timeout=max(1.0, end - time.monotonic()))
    finally:
        os.close(master)
        if child.poll() is None:
            child.kill()
            child.wait()
    return shown, out, status


VIEWS = {
    "connections": "cap.connections",
    "packets": "cap.packets",
    "findings": "cap.findings",
    "flow": "cap.flow(0)",
}


@pytest.mark.parametrize("view", VIEWS)
def test_progress_draws_a_bar_on_a_terminal(view: str) -> None:
    code = f"import tcpwhy\ncap = tcpwhy.open({str(SMALL)!r}, progress=True)\n{VIEWS[view]}\n"
    shown, out, status = _under_pty(code)
    assert status == 0, shown.decode(errors="replace")
    assert out == b""  # stdout is the script's own
    text = _ANSI.sub(b"", shown).decode(errors="replace")
    if view == "findings":  # the diagnosis's steps: reading, then diagnosing
        assert re.search(rf"tcpwhy: (reading|diagnosing) {re.escape(SMALL.name)}", text), text
    else:  # the file's size is known: the bar's last drawing is full
        assert re.search(rf"tcpwhy: reading {re.escape(SMALL.name)} [━ ]*100%", text), text


def test_no_progress_on_a_terminal_draws_nothing() -> None:
    code = f"import tcpwhy\ncap = tcpwhy.open({str(SMALL)!r})\ncap.connections\ncap.flow(0)\n"
    shown, out, status = _under_pty(code)
    assert status == 0, shown.decode(errors="replace")
    assert (shown, out) == (b"", b"")


def test_progress_off_a_terminal_writes_nothing(capfd: pytest.CaptureFixture[str]) -> None:
    """With stderr a file or a pipe there is no bar to redraw: each reading wrote an empty
    line there (rich's transient bar), one per view, into a script's log."""
    cap = tcpwhy.open(SMALL, progress=True)
    assert len(cap.connections) == 2 and cap.findings and cap.flow(0).rows
    fleet = tcpwhy.analyze(SMALL, workers=1, progress=True)
    report = tcpwhy.analyze(SMALL, progress=True)
    assert (fleet.exit_status, report.exit_status) == (cap.report.exit_status,) * 2
    out, err = capfd.readouterr()  # at the file-descriptor level
    assert (out, err) == ("", "")


# ---------------------------------------------------------------- optional libraries


@pytest.mark.parametrize(("library", "convert"), [("polars", "to_polars"), ("pandas", "to_pandas")])
def test_missing_library_names_its_install(
    monkeypatch: pytest.MonkeyPatch, library: str, convert: str
) -> None:
    cap = tcpwhy.open(SMALL)
    for table in (cap.connections, cap.packets):
        monkeypatch.setitem(sys.modules, library, None)  # `import polars` raises ImportError
        name = type(table).__name__
        with pytest.raises(ImportError) as got:
            getattr(table, convert)()
        assert str(got.value) == f"{name}.{convert}() needs {library}: pip install {library}"


# ---------------------------------------------------------------- flows kept


class _Opens:
    """`open` of the capture files counted, whoever calls it (the reader opens by path)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, *paths: Path) -> None:
        self.watched = {os.path.realpath(p) for p in paths}
        self.count = 0
        real = builtins.open

        def counting(file: Any, *args: Any, **kwargs: Any) -> Any:
            path = os.fspath(file) if isinstance(file, (str, os.PathLike)) else None
            if path is not None and os.path.realpath(path) in self.watched:
                self.count += 1
            return real(file, *args, **kwargs)

        monkeypatch.setattr(builtins, "open", counting)


def test_flow_is_kept_and_read_once(monkeypatch: pytest.MonkeyPatch) -> None:
    opens = _Opens(monkeypatch, SMALL)
    cap = tcpwhy.open(SMALL)
    first = cap.flow(0)
    assert opens.count == 1
    again = cap.flow(0)
    assert again is first
    assert again.to_text() == first.to_text()
    assert opens.count == 1  # not read again
    other_fold = cap.flow(0, fold=0)  # another ladder of the same stream: read
    assert other_fold is not first
    assert opens.count == 2
    assert "(read)" in repr(cap)


def test_flows_kept_are_the_last_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    kept = tcpwhy.Capture.FLOWS_KEPT
    assert kept == 32
    opens = _Opens(monkeypatch, MANY)
    cap = tcpwhy.open(MANY)
    flows = [cap.flow(s) for s in range(kept)]
    assert opens.count == kept
    assert cap.flow(0) is flows[0]  # stream 0 asked for again: the most recent now
    assert opens.count == kept
    cap.flow(kept)  # the 33rd stream: the least recently asked for (1) leaves
    assert opens.count == kept + 1
    assert cap.flow(0) is flows[0]
    assert cap.flow(kept - 1) is flows[kept - 1]
    assert opens.count == kept + 1
    again = cap.flow(1)  # evicted: read again
    assert opens.count == kept + 2
    assert again is not flows[1]
    assert again.to_dict() == flows[1].to_dict()
