"""Text and JSON output of a report.

Text is built from rich `Text` objects, never from markup strings, so
bytes taken from packets (already escaped by `http.printable`) cannot inject
markup or terminal escapes; colour only when the stream is a terminal.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import uuid
from typing import IO

import numpy as np
import numpy.typing as npt
from rich.console import Console, Group
from rich.padding import Padding
from rich.text import Text

from tcpwhy.console import REPORT_WIDTH, make_console
from tcpwhy.diagnose.context import fmt_s
from tcpwhy.diagnose.model import Finding, Report, Severity, StreamNumbers

STYLE = {Severity.ERROR: "bold red", Severity.WARNING: "bold yellow", Severity.INFO: "cyan"}


LONG_LIST = 1000  # integer lists longer than this are written by `_int_list_parts`


def to_json(report: Report) -> str:
    """The report as indented JSON, exactly as `json.dumps(indent=2)` writes it.

    The encoder spends seconds on a flood's finding that lists millions of stream
    numbers; those long integer lists are put in as placeholders and written by the
    compiled row formatter instead, from the finding's array where it holds one.
    """
    d = report.to_json(arrays=True)
    token = uuid.uuid4().hex
    longs: dict[str, npt.NDArray[np.int64]] = {}
    for i, f in enumerate(d["findings"]):
        for key in ("streams", "frames"):
            v = _long_ints(f[key])
            if v is not None:
                name = f"{token}:{i}:{key}"
                longs[json.dumps(name)] = v
                f[key] = name
    text = json.dumps(d, indent=2, ensure_ascii=False, default=_listed)
    del d
    if not longs:
        return text
    # the placeholders in the order they appear, the text around them copied once
    at = sorted((text.index(name), name) for name in longs)
    out: list[str] = []
    pos = 0
    for i, name in at:
        out.append(text[pos:i])
        out.extend(_int_list_parts(longs.pop(name), 4))
        pos = i + len(name)
    out.append(text[pos:])
    del text
    return "".join(out)


def _listed(v: object) -> list[int]:
    """The list a `StreamNumbers` stands for, where json.dumps meets one."""
    if isinstance(v, StreamNumbers):
        return v.tolist()
    raise TypeError(f"Object of type {type(v).__name__} is not JSON serializable")


def _long_ints(v: object) -> npt.NDArray[np.int64] | None:
    """The int64 array of a list of more than LONG_LIST ints (a `StreamNumbers`' own), else
    None (written by json.dumps)."""
    if isinstance(v, StreamNumbers):
        return np.asarray(v) if len(v) > LONG_LIST else None
    if not isinstance(v, list) or len(v) <= LONG_LIST:
        return None
    if not all(type(x) is int and -(2**63) <= x < 2**63 for x in v):
        return None
    return np.array(v, np.int64)


INT_CHUNK = 1 << 16
"""Integers turned to text at a time by `_int_list_parts` (the text of each piece is held
twice, as bytes and as str, until it is joined with the rest)."""


def _int_list_parts(v: npt.NDArray[np.int64], level: int) -> list[str]:
    """A non-empty list of ints as `json.dumps(indent=2)` writes it at nesting `level`, in
    pieces of INT_CHUNK numbers joined once with the rest of the text. The digits are the
    compiled row formatter's (`tcpwhy.report.conns_kernel`, which writes `conns`' integers):
    `str` of 3 million Python ints took 0.9 s of a flood's `analyze`."""
    from tcpwhy.report import conns_kernel as k

    pad = "  " * level
    sep = f",\n{pad}"
    word = sep.encode()
    vocab, voff = k.vocabulary([word])
    prog = k.program([(k.OP_INT, 0, 0, -1, 0)])  # the number, then the separator
    # no history or fixed-width text in this program: one-row placeholders
    no_hist, no_len, no_fixed = (
        np.zeros((1, 1), np.uint8),
        np.zeros(1, np.int64),
        np.zeros((1, 0), np.uint8),
    )
    rows = min(len(v), INT_CHUNK)
    # 20: the longest int64, "-" and digits; the slack the kernel's word copies may write
    buf = np.empty(rows * (20 + len(word)) + k.WORD_SLACK, np.uint8)
    out = ["[\n" + pad]
    for i in range(0, len(v), INT_CHUNK):
        part = np.ascontiguousarray(v[i : i + INT_CHUNK], np.int64).reshape(1, -1)
        size = k.format_rows(
            prog, part, no_hist, no_len, vocab, voff, no_fixed, buf, 0, part.shape[1]
        )
        assert size >= 0  # integers only: nothing out of range
        last = i + INT_CHUNK >= len(v)
        out.append(buf[: size - len(word) if last else size].tobytes().decode("ascii"))
    out.append("\n" + "  " * (level - 1) + "]")
    return out


def console(file: IO[str], tty: bool) -> Console:
    return make_console(
        file,
        tty=tty,
        highlight=False,
        markup=False,
        emoji=False,
        width=shutil.get_terminal_size((REPORT_WIDTH, 24)).columns if tty else REPORT_WIDTH,
        soft_wrap=False,
    )


def headline(report: Report) -> Text:
    c = report.capture
    names = ", ".join(os.path.basename(f) for f in c.files)
    span = (c.last_ns - c.first_ns) / 1e9 if c.packets else 0.0
    t = Text()
    t.append("tcpwhy analyze ", style="bold")
    t.append(f"{names}: {c.packets:,} TCP packets, {c.connections:,} connections, {fmt_s(span)}\n")
    counts = {s: sum(1 for f in report.findings if f.severity is s) for s in Severity}
    worst = report.worst
    if worst is None or worst is Severity.INFO:
        t.append("Verdict: no problem found", style="bold green")
        if counts[Severity.INFO]:
            t.append(f" ({counts[Severity.INFO]} informational note(s) below)")
        t.append(".")
        return t
    top = report.findings[0]
    parts = [
        f"{counts[s]} {s.label}{'s' if counts[s] != 1 else ''}"
        for s in reversed(Severity)
        if counts[s]
    ]
    t.append("Verdict: ", style="bold")
    t.append(top.kind, style=STYLE[top.severity])
    t.append(f" — {top.summary}.")
    t.append(f"\n({', '.join(parts)})")
    return t


def finding_block(f: Finding, index: int) -> Group:
    head = Text()
    head.append(f"{index}. ", style="bold")
    head.append(f"{f.severity.label.upper()} ", style=STYLE[f.severity])
    head.append(f.kind, style="bold")
    scope = f"{f.count:,} connection{'s' if f.count != 1 else ''}"
    if f.count > 1 and f.last_ns > f.first_ns:
        scope += f" over {fmt_s((f.last_ns - f.first_ns) / 1e9)}"
    ex = ", ".join(str(s) for s in f.examples)
    head.append(f"  ({scope}; stream{'s' if len(f.examples) != 1 else ''} {ex})", style="dim")
    parts: list[object] = [head, Padding(Text(f.summary, style="bold"), (0, 0, 0, 3), expand=False)]
    wireshark = _wireshark_line(f)
    if wireshark is not None:
        parts.append(Padding(wireshark, (0, 0, 0, 3), expand=False))
    parts.append(_section("What happened"))
    for para in f.explanation.split("\n\n"):
        parts.append(Padding(Text(para), (0, 0, 1, 3), expand=False))
    if f.timeline:
        parts.append(
            _section(f"Evidence (stream {f.timeline[0].stream}, times from its first packet)")
        )
        parts.append(Padding(_timeline(f), (0, 0, 1, 3), expand=False))
    if f.causes:
        parts.append(_section("Likely causes, most likely first"))
        for k, c in enumerate(f.causes, 1):
            parts.append(Padding(Text(f"{k}. {c}"), (0, 0, 0, 3), expand=False))
        parts.append(Text(""))
    if f.fixes:
        parts.append(_section("What to change"))
        for fx in f.fixes:
            parts.append(Padding(Text(f"- {fx}"), (0, 0, 0, 3), expand=False))
        parts.append(Text(""))
    if f.errors:
        parts.append(_section("What the applications most likely logged"))
        for e in f.errors:
            parts.append(Padding(Text(f"- {e}"), (0, 0, 0, 3), expand=False))
    return Group(*parts)  # type: ignore[arg-type]


def _wireshark_line(f: Finding) -> Text | None:
    """The finding's display filter, ready to paste after `tshark -r FILE` or into Wireshark;
    a filter too long for a terminal is given for the example streams, saying so."""
    flt, exact = f.short_display_filter()
    if not flt:
        return None
    t = Text("Wireshark: ", style="dim")
    t.append(f"-Y '{flt}'")
    if not exact:
        t.append(
            f"  ({len(f.examples)} example streams of {len(f.streams):,}; the JSON's "
            "display_filter selects them all)",
            style="dim",
        )
    return t


def _section(title: str) -> Padding:
    return Padding(Text(title, style="underline"), (0, 0, 0, 3), expand=False)


def _timeline(f: Finding) -> Text:
    """Two lines per packet: what was on the wire with both states, then what it means."""
    rows = [
        (f"{st.rel_s:.6f}", f"#{st.frame}", st.sender, st.packet, st.client_state, st.server_state)
        for st in f.timeline
    ]
    heads = ("time", "frame", "from", "packet", "client", "server")
    widths = [max(len(h), *(len(r[k]) for r in rows)) for k, h in enumerate(heads)]
    out = Text()
    line = "  ".join(
        h.ljust(w) if k else h.rjust(w) for k, (h, w) in enumerate(zip(heads, widths, strict=True))
    )
    out.append(line.rstrip() + "\n", style="bold")
    indent = " " * (widths[0] + widths[1] + 4)
    for st, r in zip(f.timeline, rows, strict=True):
        cells = [r[0].rjust(widths[0])] + [
            c.ljust(w) for c, w in zip(r[1:], widths[1:], strict=True)
        ]
        out.append("  ".join(cells).rstrip() + "\n")
        out.append(f"{indent}{st.note}\n", style="italic")
    out.rstrip()
    return out


# trailing blanks, also between the colour codes that end a line (kept)
_TRAIL = re.compile(r"(?:[ \t]|\x1b\[[0-9;]*m)*[ \t](?:\x1b\[[0-9;]*m)*$", re.M)
_CODE = re.compile(r"\x1b\[[0-9;]*m")


def _strip_trailing(m: re.Match[str]) -> str:
    return "".join(_CODE.findall(m.group(0)))


def write_text(report: Report, file: IO[str]) -> None:
    tty = file.isatty()
    buf = io.StringIO()
    _render(report, console(buf, tty))
    file.write(_TRAIL.sub(_strip_trailing, buf.getvalue()))


def _render(report: Report, con: Console) -> None:
    con.print(headline(report))
    for w in report.capture.warnings:
        con.print(Text(f"warning: {w}", style="yellow"))
    if report.capture.undecoded:
        skipped = ", ".join(f"{n:,} {k}" for k, n in report.capture.undecoded.items())
        con.print(Text(f"not analysed: {skipped}", style="dim"))
    ordered = sorted(report.findings, key=lambda f: (-f.severity, f.first_ns))
    for k, f in enumerate(ordered, 1):
        con.print()
        con.print(finding_block(f, k))
    if report.endings:
        con.print()
        ends = ", ".join(f"{n:,} {k}" for k, n in report.endings.items())
        con.print(Text(f"Connections by how they ended: {ends}.", style="dim"))
    if report.paths:
        from tcpwhy.diagnose.pairing import json_lines

        con.print()
        con.print(Text("Path between the capture points", style="bold"))
        for line in json_lines(report.paths):
            con.print(Text(line))
