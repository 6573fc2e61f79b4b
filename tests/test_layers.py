"""The stages import as the README draws them: capture → decode → tcp → diagnose → views.
`tcp/` reads no files and knows nothing of the diagnosis, the filters or the reports;
`decode/` knows nothing of what comes after it but the sequence arithmetic it reassembles
TLS and HTTP/2 with (`tcp/seq.py`, a module that imports nothing of tcpwhy)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "tcpwhy"
SHARED = {"native", "intrinsics", "arrays", "errors", "timestamps", "schemas"}
"""Helpers every stage may use."""


def _imports(f: Path) -> set[str]:
    """The tcpwhy modules a file imports (anywhere in it, lazily or not)."""
    got: set[str] = set()
    for node in ast.walk(ast.parse(f.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            mods = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            mods = [a.name for a in node.names]
        else:
            continue
        got.update(m for m in mods if m.startswith("tcpwhy."))
    return got


def _stage(mod: str) -> str:
    return mod.split(".")[1]


def test_tcp_imports_no_later_stage() -> None:
    allowed = {"tcp", "decode", *SHARED}
    bad = {
        f"{f.name}: {m}"
        for f in (SRC / "tcp").glob("*.py")
        for m in _imports(f)
        if _stage(m) not in allowed
    }
    assert not bad, sorted(bad)


def test_decode_imports_no_later_stage_but_sequence_arithmetic() -> None:
    allowed = {"decode", *SHARED}
    bad = {
        f"{f.name}: {m}"
        for f in (SRC / "decode").glob("*.py")
        for m in _imports(f)
        if _stage(m) not in allowed and not m.startswith("tcpwhy.tcp.seq")
    }
    assert not bad, sorted(bad)
    assert not _imports(SRC / "tcp" / "seq.py")


def test_tcp_reads_no_files() -> None:
    """Callers pass tables: no open(), no capture reader, no path handling in tcp/."""
    for f in (SRC / "tcp").glob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Call):
                name = ast.unparse(node.func)
                assert name not in ("open", "read_table", "iter_tables", "Path"), (f.name, name)
        assert not any(_stage(m) == "capture" for m in _imports(f)), f.name
