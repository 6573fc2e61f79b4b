"""The README's exit-status tables cover every command and every status tcpwhy returns."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tcpwhy import errors
from tcpwhy.cli import GROUPS, main

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def _section() -> str:
    start = README.index("\n## Exit status\n")
    return README[start : README.index("\n## ", start + 1)]


def _table(text: str, header: str) -> dict[str, str]:
    """A markdown table's rows under `header` (its first column to the rest of the row)."""
    rows: dict[str, str] = {}
    lines = text[text.index(header) :].splitlines()
    for line in lines[2:]:
        if not line.startswith("|"):
            break
        first, rest = line.strip("|").split(" | ", 1)
        rows[first.strip()] = rest
    return rows


def test_every_status_is_explained() -> None:
    codes = {v for k, v in vars(errors).items() if k.startswith("EXIT_")} | {130, 143}
    table = _table(_section(), "| status | meaning |")
    assert {int(k) for k in table} == codes


def test_every_command_has_its_statuses() -> None:
    table = _table(_section(), "| command | statuses |")
    named = {m for row in table for m in re.findall(r"`(\w+)", row)}
    assert set(GROUPS) <= named, set(GROUPS) - named
    explain = next(v for k, v in table.items() if k == "`explain`")
    assert "1 none does" in explain


@pytest.mark.parametrize(
    ("message", "status"), [("Connection reset by peer", 0), ("all good here", 1)]
)
def test_explain_returns_what_the_readme_says(message: str, status: int) -> None:
    assert main(["explain", message]) == status
