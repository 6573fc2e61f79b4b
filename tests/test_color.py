"""Colour: --color auto|always|never, NO_COLOR and FORCE_COLOR as no-color.org and
force-color.org say, one decision for every command (analyze's report, host's tables)."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest

from tcpwhy import console
from tcpwhy.cli import main

CAPTURE = Path(console.__file__).parent / "data" / "lab" / "zero-window.pcap"
ESC = "\x1b["


@pytest.fixture(autouse=True)
def _auto() -> None:
    console.set_color(None)


@pytest.mark.parametrize(
    ("env", "tty", "want"),
    [
        ({}, True, True),
        ({}, False, False),
        ({"NO_COLOR": "1"}, True, False),
        ({"NO_COLOR": "0"}, True, False),  # any value but empty
        ({"NO_COLOR": ""}, True, True),  # empty: as if unset
        ({"FORCE_COLOR": "1"}, False, True),
        ({"FORCE_COLOR": "0"}, False, True),  # any value but empty
        ({"FORCE_COLOR": ""}, False, False),
        ({"NO_COLOR": "1", "FORCE_COLOR": "1"}, True, False),
    ],
)
def test_the_environment_decides_with_color_auto(
    env: dict[str, str], tty: bool, want: bool
) -> None:
    assert console.color_wanted(tty, env) is want


def test_the_option_overrides_the_environment() -> None:
    console.set_color("always")
    assert console.color_wanted(False, {"NO_COLOR": "1"})
    console.set_color("never")
    assert not console.color_wanted(True, {"FORCE_COLOR": "1"})
    with pytest.raises(ValueError, match="--color sometimes"):
        console.set_color("sometimes")


def _run(args: list[str], **env: str) -> str:
    full = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR", "COLUMNS")}
    p = subprocess.run(
        [sys.executable, "-m", "tcpwhy", *args],
        env={**full, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode in (0, 1), p.stderr
    assert p.stdout.strip()
    return p.stdout


def test_analyze_colours_a_pipe_only_when_asked() -> None:
    cap = str(CAPTURE)
    plain = _run(["analyze", cap])
    assert ESC not in plain
    assert ESC in _run(["analyze", "--color", "always", cap])
    assert ESC in _run(["--color=always", "analyze", cap])  # before the command too
    assert ESC in _run(["analyze", cap], FORCE_COLOR="1")
    assert ESC not in _run(["analyze", cap], FORCE_COLOR="")
    assert ESC not in _run(["analyze", cap], FORCE_COLOR="1", NO_COLOR="1")
    assert ESC not in _run(["analyze", "--color", "never", cap], FORCE_COLOR="1")
    coloured = _run(["analyze", "--color", "always", cap], NO_COLOR="1")
    assert ESC in coloured
    # the same text, only coloured
    import re

    assert re.sub(r"\x1b\[[0-9;]*m", "", coloured) == plain


def test_host_tables_follow_the_same_decision() -> None:
    assert ESC not in _run(["host", "states"])
    assert ESC in _run(["host", "states", "--color", "always"])
    assert ESC in _run(["host", "--color", "always", "states"])
    assert ESC in _run(["host", "states"], FORCE_COLOR="1")


def _on_a_terminal(args: list[str], **env: str) -> str:
    """Run tcpwhy with its stdout on a pseudo-terminal; what it wrote there."""
    leader, follower = pty.openpty()
    full = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR")}
    full.update(TERM="xterm-256color", COLUMNS="100", **env)
    p = subprocess.Popen(
        [sys.executable, "-m", "tcpwhy", *args], stdout=follower, stderr=subprocess.PIPE, env=full
    )
    os.close(follower)
    out = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the terminal's other end is closed
            break
        if not chunk:
            break
        out += chunk
    p.wait(timeout=120)
    os.close(leader)
    return out.decode(errors="replace")


def test_a_terminal_is_coloured_unless_no_color_or_never() -> None:
    cap = str(CAPTURE)
    assert ESC in _on_a_terminal(["analyze", cap])
    assert "\x1b[1;33m" not in _on_a_terminal(["analyze", cap], NO_COLOR="1")
    assert "\x1b[1;33m" not in _on_a_terminal(["analyze", "--color", "never", cap])
    assert "\x1b[1;33m" in _on_a_terminal(["analyze", cap])  # the verdict's colour


def test_an_unknown_choice_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["analyze", "--color", "sometimes", str(CAPTURE)]) == 2
    assert "invalid choice" in capsys.readouterr().err
