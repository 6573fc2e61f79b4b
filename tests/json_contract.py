"""Every JSON document the test suite makes tcpwhy print is checked against its schema.

`tests/conftest.py` installs the checks for the whole session, so a new test cannot produce
an unchecked document, whichever way it runs tcpwhy:

* in process, `tcpwhy.cli.main([...])` (the command's function is wrapped: what it writes to
  standard output, or to `-o FILE`, is read back, checked, and passed on unchanged);
* as a program, `subprocess.run([sys.executable, "-m", "tcpwhy", ...])` or the `tcpwhy`
  script, with its output captured (the tests' `tcpwhy(...)` helpers);
* through the API: `Report.to_json`, `FleetReport.to_json`, `Flow.to_dict`.

The schema is picked from the command and `--format` (`SCHEMA_OF`); output that is not JSON
(text, tables, csv, Zeek's formats, html, svg) is left alone. A document that breaks its
schema fails the test that made it, with the command line in the message.
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tests.schema_check import validate

SCHEMA_OF = {
    ("analyze", "json"): "analyze",  # or fleet (a directory): told apart by the document
    ("conns", "jsonl"): "conns",
    ("packets", "jsonl"): "packets",
    ("explain", "json"): "explain",
    ("flow", "json"): "flow",
    ("watch", "jsonl"): "watch",
    ("lab", "json"): "lab",
    ("host states", "json"): "host-states",
    ("host listen", "json"): "host-listen",
    ("host counters", "json"): "host-counters",
    ("host sysctl", "json"): "host-sysctl",
    ("host watch", "json"): "host-watch",
    ("host trace", "jsonl"): "host-trace",
}
"""(command, --format) → schema name; every JSON output of tcpwhy is here."""

JSONL = {"conns", "packets", "watch", "host-counters", "host-watch", "host-trace"}
"""Schemas of one record per line (the others: one document)."""

checked: dict[str, int] = {}
"""Documents checked this session, by schema (what the hook's own test looks at)."""


def _format(argv: Sequence[str]) -> str | None:
    """The value of `--format` (last one wins, as argparse reads it)."""
    fmt = None
    for i, a in enumerate(argv):
        if a == "--format" and i + 1 < len(argv):
            fmt = argv[i + 1]
        elif a.startswith("--format="):
            fmt = a.split("=", 1)[1]
    return fmt


def schema_of(argv: Sequence[str]) -> str | None:
    """The schema of what `tcpwhy ARGV` prints, or None when it prints no JSON."""
    commands = {c.split()[0] for c, _ in SCHEMA_OF}
    views = {c.split()[1] for c, _ in SCHEMA_OF if c.startswith("host ")}
    words = [str(a) for a in argv]
    cmd = next((w for w in words if w in commands), None)  # options may come first
    if cmd == "host":
        rest = words[words.index("host") + 1 :]
        cmd = next((f"host {w}" for w in rest if w in views), None)
    return None if cmd is None else SCHEMA_OF.get((cmd, _format(words) or ""))


def _output_file(argv: Sequence[str]) -> str | None:
    for i, a in enumerate(argv):
        if a in ("-o", "--output") and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith("--output="):
            return a.split("=", 1)[1]
    return None


def check_text(name: str, text: str, where: str) -> None:
    """Every document (JSON lines: every line) of `text` against schema `name`."""
    if name in JSONL:
        docs = [json.loads(line) for line in text.splitlines() if line.strip()]
    elif text.strip():
        docs = [json.loads(text)]
    else:
        docs = []
    for doc in docs:
        schema = name
        if name == "analyze" and isinstance(doc, dict) and "capture" not in doc:
            schema = "fleet"  # a directory: capture points apart
        try:
            validate(schema, doc)
        except AssertionError as exc:
            raise AssertionError(f"{where}: {exc}") from None
        checked[schema] = checked.get(schema, 0) + 1


def check_run(argv: Sequence[str], stdout: str | bytes | None, status: int) -> None:
    """After `tcpwhy ARGV` ran: its JSON output (standard output or `-o FILE`) checked.
    Output of a run that failed (status 2 and above: bad input, interrupted) is not a
    document; a lab run that differed (3) still writes its document."""
    name = schema_of(argv)
    if name is None or (status >= 2 and not (name == "lab" and status == 3)):
        return
    where = "tcpwhy " + " ".join(map(str, argv))
    path = _output_file(argv)
    if path and path != "-":
        if not os.path.isfile(path):
            return  # a device (-o /dev/null) or a file the test removed
        text = Path(path).read_text(encoding="utf-8")
    elif stdout is None:
        return  # not captured: went to the terminal or a file the caller gave
    else:
        text = stdout.decode("utf-8") if isinstance(stdout, bytes) else stdout
    check_text(name, text, where)
    if name == "lab" and text.strip():  # the kernel trace a lab run writes beside its capture
        trace = (json.loads(text).get("kernel_trace") or {}).get("path")
        if trace and os.path.isfile(trace):
            check_text("host-trace", Path(trace).read_text(encoding="utf-8"), trace)


# -- in process: tcpwhy.cli.main ------------------------------------------------------------


def _run_checked(func: Callable[[argparse.Namespace], int], argv: Sequence[str]) -> Any:
    """`func` (a command) with standard output sent to a file, checked, then passed on."""

    def run(args: argparse.Namespace) -> int:
        if schema_of(argv) is None:
            return func(args)
        saved = sys.stdout
        with tempfile.TemporaryFile() as raw:
            text = io.TextIOWrapper(raw, encoding="utf-8", newline="", write_through=True)
            sys.stdout = text
            status: int = 0
            try:
                status = func(args)
            finally:
                sys.stdout = saved
                if not text.closed:
                    text.flush()
                    text.detach()  # the file stays open to be read back
                raw.seek(0)
                data = raw.read()
                if hasattr(saved, "buffer"):
                    saved.flush()
                    saved.buffer.write(data)
                    saved.buffer.flush()
                else:
                    saved.write(data.decode("utf-8"))
        check_run(argv, data.decode("utf-8"), int(status or 0))
        return status

    return run


def install(patch: Callable[[Any, str, Any], None]) -> None:
    """Wraps tcpwhy's entry points for the session (`patch` is `MonkeyPatch.setattr`)."""
    import tcpwhy.api as api
    import tcpwhy.cli as cli

    build = cli.build_parser

    def build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
        parser = build(argv)
        parse = parser.parse_args

        def parse_args(args: Any = None, namespace: Any = None) -> argparse.Namespace:
            ns = parse(args, namespace)
            func = getattr(ns, "func", None)
            if func is not None:
                ns.func = _run_checked(func, list(argv if args is None else args))
            return ns

        parser.parse_args = parse_args  # type: ignore[method-assign]
        return parser

    patch(cli, "build_parser", build_parser)

    real_run = subprocess.run

    def run(*popenargs: Any, **kwargs: Any) -> Any:
        done = real_run(*popenargs, **kwargs)
        argv = _tcpwhy_argv(popenargs[0] if popenargs else kwargs.get("args"))
        if argv is not None and not isinstance(done.stdout, int):
            check_run(argv, done.stdout, done.returncode)
        return done

    patch(subprocess, "run", run)

    def wrap(cls: Any, meth: str, schema: str, as_text: bool) -> None:
        real = getattr(cls, meth)

        @functools.wraps(real)  # the API's signatures stay what its own test pins
        def checked_call(self: Any, *a: Any, **k: Any) -> Any:
            out = real(self, *a, **k)
            validate(schema, json.loads(out) if as_text else out)
            checked[schema] = checked.get(schema, 0) + 1
            return out

        patch(cls, meth, checked_call)

    wrap(api.Report, "to_json", "analyze", True)
    wrap(api.FleetReport, "to_json", "fleet", True)
    wrap(api.Flow, "to_dict", "flow", False)


def _tcpwhy_argv(cmd: Any) -> list[str] | None:
    """The arguments after `tcpwhy` when `cmd` runs tcpwhy (`python -m tcpwhy`, the script)."""
    if isinstance(cmd, (str, bytes, os.PathLike)):
        return None  # a shell line: not how the tests run tcpwhy
    try:
        words = [os.fsdecode(w) for w in cmd]
    except TypeError:
        return None
    if len(words) >= 3 and words[1:3] == ["-m", "tcpwhy"]:
        return words[3:]
    if words and Path(words[0]).name == "tcpwhy":
        return words[1:]
    return None
