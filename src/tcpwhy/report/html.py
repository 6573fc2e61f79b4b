"""`tcpwhy analyze --format html`: the diagnosis as one self-contained page for an incident ticket.

The page is built from the same `Report` the text view prints, plus the
diagnosis' capture contexts (`Report.diags`): per-connection columns for the
connection table, the sockets-per-state curves from the compiled state
machine (`run_connections`), and ladders drawn from `flow.ladder_view`, the
model of `tcpwhy flow`. Data goes in as compact columns inside a
`<script type="application/json">` block, escaped so that nothing taken from
a capture can close it; every other capture string goes through jinja2's
autoescaping, and the page's script writes text with `textContent` only.

Charts: plotly.js, inlined from the `plotly` wheel's own `plotly.min.js` (MIT,
about 4.8 MB): a maintained library with every chart kind the report needs
(step lines, stacked bars, histograms with marker lines) in one offline file,
loaded by Chromium in a few hundred milliseconds. Lighter bundles (uPlot,
Chart.js) ship on npm, not inside a PyPI package, and would have to be vendored
by hand. A Content-Security-Policy meta tag forbids any remote load; inline
scripts are allowed by their hashes only.

Notebooks (`tcpwhy.api`'s `_repr_html_`) show the page's own components: the
verdict, finding cards and one-line findings are macros of
templates/components.html.j2 that the page calls too (`verdict_html`,
`finding_card`, `more_findings_html`), styled by the page's CSS scoped under
`.tcpwhy` (`notebook_css`). Cards need no script (their ladders are inline SVG),
so notebooks get neither the charts nor the connection table.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import os
from dataclasses import dataclass
from importlib import resources
from typing import IO, TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from tcpwhy.arrays import group_firsts, group_ids
from tcpwhy.decode.table import ACK, RST, SYN, format_addr
from tcpwhy.diagnose.model import Finding, Report, Severity
from tcpwhy.tcp.state import NO_ANSWER, NO_SOCKET, State

if TYPE_CHECKING:
    import jinja2

LADDER_ROWS = 60_000
"""Ladder rows embedded for the connection table (about 50 bytes each): every connection of
a small capture, a sample of a large one (findings' connections first)."""
TABLE_ROWS = 250_000
"""Connections listed in the page's table, over all capture points: every connection of a
capture of up to that many (the connection-heavy benchmark's 216,000), else the findings'
first (the smaller findings whole) and then the earliest. A 3 M-SYN flood listed whole made
a 211 MB page, which took 40 s and 4.2 GB to write; `tcpwhy conns` lists every one."""
LADDER_CONNS = 8_000
"""Connections whose ladders are embedded, at most. Each is worked out in Python (the
model `tcpwhy flow` draws, 0.1 ms a connection): a 3 M-SYN flood's one-packet connections
fitted 55,000 ladders in the row budget, 5.6 s of its page; the connection-heavy capture's
rows fit 6,200."""
LADDER_CONN_ROWS = 400  # at most this many rows of one connection's ladder are embedded
EXAMPLE_LADDER_ROWS = 400  # rows of a finding's example ladder drawn inline
BINS = 240  # time bins of the charts
DETAILED = 60  # findings shown in full (worst first); the rest one line each
DETAILED_LADDERS = 20  # findings whose example ladders are drawn inline

STATE_NAMES = [s.name for s in State] + [NO_SOCKET, NO_ANSWER]


@dataclass
class Verdict:
    """The verdict line: the worst finding when it is a warning or an error."""

    severity: str  # "ok" without one
    kind: str  # "" without one
    text: str
    counts: str  # findings per severity, e.g. "1 error, 2 infos"


@dataclass
class Page:
    """What the template shows."""

    title: str
    headline: str
    verdict: Verdict
    capture: dict[str, Any]
    findings: list[dict[str, Any]]
    endings: list[tuple[str, int]]
    more: list[dict[str, Any]]  # findings past DETAILED: one line each
    paths: list[str]
    data_json: str


def write_html(report: Report, out: IO[str]) -> None:
    out.write(render_html(report))


def render_html(report: Report) -> str:
    """The whole page as one string."""
    import jinja2

    from tcpwhy.diagnose.render import headline

    data = page_data(report)
    page = Page(
        title="tcpwhy: " + ", ".join(os.path.basename(f) for f in report.capture.files),
        headline=headline(report).plain.split("\n")[0],
        verdict=verdict_of(report),
        capture=_capture(report),
        findings=[
            _finding(report, f, k, ladders=k <= DETAILED_LADDERS)
            for k, f in enumerate(_ordered(report)[:DETAILED], 1)
        ],
        more=_more(_ordered(report)[DETAILED:]),
        endings=list(report.endings.items()),
        paths=_paths(report),
        data_json=safe_json(data),
    )
    static = resources.files("tcpwhy.report") / "static"
    plotly_js = _plotly_js()
    report_js = (static / "report.js").read_text("utf-8")
    css = _page_css()
    env = _env()
    scripts = [plotly_js, report_js]
    csp = (
        "default-src 'none'; img-src data:; font-src data:; style-src 'unsafe-inline'; "
        "script-src " + " ".join(f"'sha256-{_sha256(s)}'" for s in scripts) + "; "
        "connect-src 'none'; form-action 'none'; base-uri 'none'"
    )
    return env.get_template("report.html.j2").render(
        page=page,
        css=jinja2.utils.markupsafe.Markup(css),
        plotly_js=jinja2.utils.markupsafe.Markup(plotly_js),
        report_js=jinja2.utils.markupsafe.Markup(report_js),
        csp=csp,
    )


@functools.cache
def _env() -> jinja2.Environment:
    """The one template environment: autoescaped, so every capture string that reaches a
    template is text; the page and the notebook components both render through it."""
    import jinja2

    return jinja2.Environment(
        loader=jinja2.PackageLoader("tcpwhy.report", "templates"),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )


def _components() -> Any:
    """components.html.j2's macros (the page imports the same ones)."""
    return _env().get_template("components.html.j2").module


def _page_css() -> str:
    """static/report.css: the one source of the page's style and the notebook's."""
    return (resources.files("tcpwhy.report") / "static" / "report.css").read_text("utf-8")


def verdict_of(report: Report) -> Verdict:
    """The page's verdict: its worst finding when that is a warning or an error."""
    counts = {s: sum(1 for f in report.findings if f.severity is s) for s in Severity}
    said = ", ".join(
        f"{counts[s]} {s.label}{'s' if counts[s] != 1 else ''}"
        for s in reversed(Severity)
        if counts[s]
    )
    worst = report.worst
    if worst is not None and worst is not Severity.INFO:
        top = report.findings[0]
        return Verdict(top.severity.label, top.kind, top.summary, said)
    return Verdict("ok", "", "no problem found", said)


def verdict_html(report: Report) -> str:
    """The page's verdict line (`<p class="verdict" id="verdict">`), alone."""
    return str(_components().verdict(verdict_of(report)))


def finding_card(report: Report | None, f: Finding) -> str:
    """One finding's `<article>` as the page draws it: the same macro, the same data, the same
    number (its place, worst first) and, as on the page, example ladders for the first
    DETAILED_LADDERS only (a finding without its report has none)."""
    k = 1
    if report is not None:
        k = next((i for i, g in enumerate(_ordered(report), 1) if g is f), len(report.findings))
    card = _finding(report, f, k, ladders=report is not None and k <= DETAILED_LADDERS)
    return str(_components().finding_card(card))


def more_findings_html(findings: list[Finding]) -> str:
    """The page's one-line table of the findings past DETAILED."""
    return str(_components().more_findings(_more(findings))) if findings else ""


def findings_html(report: Report) -> str:
    """The findings as the page lists them: a card for each of the DETAILED worst, one line
    for each other (a capture can have thousands of findings)."""
    ordered = _ordered(report)
    cards = [finding_card(report, f) for f in ordered[:DETAILED]]
    return "\n".join(
        cards + ([more_findings_html(ordered[DETAILED:])] if ordered[DETAILED:] else [])
    )


SCOPE = "tcpwhy"
"""Class of the notebook's wrapper `<div>`: every rule of `notebook_css` is under it."""


@functools.cache
def notebook_css() -> str:
    """The page's CSS with every rule under `.tcpwhy`, so a card in a notebook looks as on the
    page without restyling the notebook around it."""
    return scope_css(_page_css(), "." + SCOPE)


def notebook_html(body: str) -> str:
    """`body` (components of the page) in the notebook's styled wrapper."""
    return f'<div class="{SCOPE}"><style>{notebook_css()}</style>{body}</div>'


def scope_css(css: str, scope: str) -> str:
    """`css` with each selector under `scope` (`:root`, `html` and `body` become `scope`
    itself), one rule a line; @media and @supports blocks are scoped inside. Any other
    at-rule raises: its names (keyframes, fonts) would still be global. Written here, not
    with a CSS parser package: the one stylesheet it reads is ours and plain (rules and
    @media), and a test scopes it whole, where a parser would be a dependency for it alone."""
    import re

    return "\n".join(_scope_rules(re.sub(r"/\*.*?\*/", "", css, flags=re.S), scope))


def _scope_rules(css: str, scope: str) -> list[str]:
    out: list[str] = []
    i = 0
    while True:
        j = css.find("{", i)
        if j < 0:
            if css[i:].strip():
                raise ValueError(f"CSS without a block: {css[i:].strip()[:60]!r}")
            return out
        head = css[i:j].strip()
        depth, k = 1, j + 1
        while depth:
            if k >= len(css):
                raise ValueError(f"unbalanced CSS after {head[:60]!r}")
            depth += {"{": 1, "}": -1}.get(css[k], 0)
            k += 1
        body = css[j + 1 : k - 1].strip()
        if head.startswith("@"):
            if not head.startswith(("@media", "@supports")) or ";" in head:
                raise ValueError(f"cannot scope {head[:60]!r}")
            out.append(head + " { " + " ".join(_scope_rules(body, scope)) + " }")
        else:
            sels = [_scoped(s, scope) for s in _split_selectors(head)]
            out.append(", ".join(sels) + " { " + body + " }")
        i = k


def _split_selectors(head: str) -> list[str]:
    """A selector list at its top-level commas (not those inside `:is(…)` or `[…]`)."""
    parts: list[str] = []
    depth, start = 0, 0
    for n, ch in enumerate(head):
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(head[start:n])
            start = n + 1
    parts.append(head[start:])
    return [p.strip() for p in parts if p.strip()]


def _scoped(sel: str, scope: str) -> str:
    if sel in (":root", "html", "body"):
        return scope
    return f"{scope} {sel}"


def _plotly_js() -> str:
    """plotly.min.js from the installed `plotly` package (never fetched)."""
    from tcpwhy.errors import EnvironmentProblem

    try:
        src = resources.files("plotly") / "package_data" / "plotly.min.js"
        text = src.read_text("utf-8")
    except (ModuleNotFoundError, FileNotFoundError, OSError):
        raise EnvironmentProblem(
            "--format html", "the plotly package is not installed (pip install tcpwhy)"
        ) from None
    # an inline script ends at the first "</script": the bundle has none, keep it that way
    return text.replace("</script", "<\\/script")


def _sha256(text: str) -> str:
    return base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii")


def safe_json(data: Any) -> str:
    """JSON that can sit inside `<script type="application/json">`: no `<`, `>` or `&` (so no
    `</script>` or `<!--` from a capture can end the block) and no line separators."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return (
        text.replace("&", "\\u0026")
        .replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


def _kinds(report: Report) -> list[str]:
    """The finding kinds of the report, worst first (at most 52: the page's bit masks)."""
    return list(dict.fromkeys(f.kind for f in _ordered(report)))[:52]


def _ordered(report: Report) -> list[Finding]:
    return sorted(report.findings, key=lambda f: (-f.severity, f.first_ns))


def _capture(report: Report) -> dict[str, Any]:
    from tcpwhy.diagnose.context import fmt_s

    c = report.capture
    span = (c.last_ns - c.first_ns) / 1e9 if c.packets else 0.0
    return {
        "files": [os.path.basename(f) for f in c.files],
        "packets": c.packets,
        "frames": c.frames,
        "connections": c.connections,
        "duration": fmt_s(span),
        "warnings": c.warnings,
        "undecoded": ", ".join(f"{n} {k}" for k, n in c.undecoded.items()),
    }


def _paths(report: Report) -> list[str]:
    if not report.paths:
        return []
    from tcpwhy.diagnose.pairing import json_lines

    return list(json_lines(report.paths))


def display_filter(f: Finding) -> str:
    """Wireshark's display filter for exactly a finding's connections (`Finding.display_filter`,
    the JSON's and the text report's)."""
    return f.display_filter


def _more(findings: list[Finding]) -> list[dict[str, Any]]:
    return [
        {"kind": f.kind, "severity": f.severity.label, "summary": f.summary, "count": f.count}
        for f in findings
    ]


def _finding(report: Report | None, f: Finding, index: int, ladders: bool = True) -> dict[str, Any]:
    from markupsafe import Markup

    from tcpwhy.diagnose.context import fmt_s

    scope = f"{f.count} connection{'s' if f.count != 1 else ''}"
    if f.count > 1 and f.last_ns > f.first_ns:
        scope += f" over {fmt_s((f.last_ns - f.first_ns) / 1e9)}"
    shown_filter, exact_filter = f.short_display_filter()
    drawn = []
    if ladders and report is not None:
        for stream in f.examples[:3]:
            svg = _example_svg(report, f, stream)
            if svg is not None:
                drawn.append({"stream": stream, "svg": Markup(svg)})
    return {
        "index": index,
        "kind": f.kind,
        "severity": f.severity.label,
        "summary": f.summary,
        "scope": scope,
        "examples": ", ".join(str(s) for s in f.examples),
        "paragraphs": [p for p in f.explanation.split("\n\n") if p.strip()],
        "timeline": f.timeline,
        "evidence_stream": f.timeline[0].stream if f.timeline else None,
        "causes": f.causes,
        "fixes": f.fixes,
        "errors": f.errors,
        "filter": shown_filter,
        "ladders": drawn,
        "sampled": not exact_filter,
    }


# ---------------------------------------------------------------------------------------
# ladders
# ---------------------------------------------------------------------------------------


def _point_of(report: Report, f: Finding, stream: int) -> tuple[int, int] | None:
    """(capture point, stream id) of a finding's tcp.stream number."""
    seen = f.facts.get("seen_at") if isinstance(f.facts, dict) else None
    order = list(range(len(report.diags)))
    if seen:
        names = [", ".join(d.cap.files) for d in report.diags]
        order.sort(key=lambda k: names[k] != seen[0])
    for k in order:
        cap = report.diags[k].cap
        nums = np.asarray(cap.stream_numbers)
        i = int(np.searchsorted(nums, stream))
        if i < len(nums) and int(nums[i]) == stream:
            return k, i
    return None


def _example_svg(report: Report, f: Finding, stream: int) -> str | None:
    from tcpwhy.report.svg import render_svg

    where = _point_of(report, f, stream)
    if where is None:
        return None
    k, sid = where
    views = ladder_views(report.diags[k].cap, np.array([sid]))
    if sid not in views:
        return None
    view = views[sid]
    if len(view.rows) > EXAMPLE_LADDER_ROWS:
        view.rows = view.rows[:EXAMPLE_LADDER_ROWS]
    hot = {st.frame for st in f.timeline if st.stream == stream}
    return render_svg(view, hot or None, title=f"{f.kind}: tcp.stream {stream}")


def ladder_views(cap: Any, sids: npt.NDArray[np.int64]) -> dict[int, Any]:
    """`flow.ladder_view` of some streams of a diagnosis capture, as `tcpwhy flow` builds them:
    the streams' packets are tracked and analysed on their own (the analysis of one
    conversation never depends on another's), states from `run_rows`."""
    from tcpwhy.decode.table import icmp_kept
    from tcpwhy.report.flow import Ladder, icmp_errors_of, icmp_rows, ladder_view
    from tcpwhy.tcp.analysis import analyze
    from tcpwhy.tcp.sides import client_dir
    from tcpwhy.tcp.state import icmp_errors, run_rows
    from tcpwhy.tcp.streams import StreamTracker

    if not len(sids):
        return {}
    keep = np.zeros(cap.nstreams, np.bool_)
    keep[sids] = True
    kept_rows = keep[cap.stream]
    rows = np.flatnonzero(kept_rows)
    sub = cap.table.take(rows)
    # the ICMP errors about them come along, as `flow` draws them and runs them
    isid = cap.icmp.sid
    known = (isid >= 0) & (isid < len(keep))
    known[known] = keep[isid[known]]
    sub.icmp = icmp_kept(cap.table, kept_rows, known)
    tracker = StreamTracker()
    s = tracker.feed(sub)
    errors = icmp_errors(sub.icmp, tracker.icmp_out)
    a = analyze(sub, s)
    local = s["stream"]
    order = np.argsort(local, kind="stable")
    ls = local[order]
    n_local = int(ls[-1]) + 1 if len(ls) else 0
    starts = np.searchsorted(ls, np.arange(n_local), side="left")
    ends = np.searchsorted(ls, np.arange(n_local), side="right")
    out: dict[int, Any] = {}
    for k in range(n_local):
        r = order[starts[k] : ends[k]]
        sid = int(cap.stream[rows[r[0]]])
        if sid in out:  # the tracker split one stream in two: keep the first part
            continue
        cdir = s["dir"][r]
        client = client_dir(sub, r, cdir)
        direction = (cdir != client).astype(np.int8)
        st = run_rows(sub, r, direction, end_ns=cap.end_ns, icmp=icmp_errors_of(errors, k, client))
        lad = Ladder(
            sub,
            r,
            direction,
            s["rel_seq"],
            s["rel_ack"],
            a,
            st.originator,
            st.responder,
            cap.start_ns,
            cap.end_ns,
            icmp=icmp_rows(sub, tracker, k, client),
        )
        out[sid] = ladder_view(lad)
    return out


# ---------------------------------------------------------------------------------------
# the page's data: connection table, charts, embedded ladders
# ---------------------------------------------------------------------------------------


def page_data(report: Report) -> dict[str, Any]:
    """Compact columns for the page's script (see report.js for their use)."""
    from tcpwhy.diagnose.context import ENDING_WORDS

    points = []
    kinds = _kinds(report)
    t0 = report.capture.first_ns
    listed: list[npt.NDArray[np.int64]] = []
    room = TABLE_ROWS
    for d in report.diags:
        listed.append(_table_choice(report, d.cap, room))
        room -= len(listed[-1])
        points.append(_point(report, d, t0, listed[-1]))
    budget = LADDER_ROWS
    ladders: dict[str, Any] = {}
    sampled = 0
    total = sum(int(d.cap.nstreams) for d in report.diags)
    for k, d in enumerate(report.diags):
        chosen = _ladder_choice(report, d.cap, budget, LADDER_CONNS - len(ladders), listed[k])
        views = ladder_views(d.cap, chosen)
        from tcpwhy.report.svg import view_json

        for sid, v in views.items():
            if len(v.rows) > LADDER_CONN_ROWS:
                continue
            budget -= len(v.rows)
            ladders[f"{k}:{int(d.cap.stream_numbers[sid])}"] = view_json(v)
        sampled += len(views)
    return {
        "files": report.capture.files,
        "kinds": kinds,
        "states": STATE_NAMES,
        "endings": list(ENDING_WORDS),
        "points": points,
        "ladders": ladders,
        "ladders_embedded": len(ladders),
        "connections": total,
        "listed": sum(p["n"] for p in points),
        "charts": _charts(report, t0),
    }


def _endings(cap: Any) -> npt.NDArray[np.int8]:
    """Per stream: its index in `ENDING_WORDS`, from `Capture.ending_index`: the one
    classification the text report counts too."""
    got: npt.NDArray[np.int8] = cap.ending_index()
    return got


def _timelines(cap: Any) -> Any:
    """Both endpoints' state timelines of every connection, in one compiled call."""
    o = cap.order
    return cap.run_states(o, np.arange(1, len(o) + 1), np.append(cap.starts, len(o)))


def _table_choice(report: Report, cap: Any, room: int) -> npt.NDArray[np.int64]:
    """The streams of one capture point listed in the page's table (at most `room`), in
    stream order: all of them if they fit, else the findings' (the smaller findings first,
    so a flood's millions do not crowd out a handful of resets), then the earliest."""
    from tcpwhy.diagnose.engine import _sids_of

    n = int(cap.nstreams)
    if n <= room:
        return np.arange(n, dtype=np.int64)
    picked = [_sids_of(cap, f.streams) for f in sorted(report.findings, key=lambda f: f.count)]
    picked.append(np.arange(n, dtype=np.int64))
    streams, first = np.unique(np.concatenate(picked), return_index=True)
    # each stream once, at its first place in that order
    return np.sort(streams[np.argsort(first, kind="stable")][: max(room, 0)])


def _point(report: Report, d: Any, t0: int, rows: npt.NDArray[np.int64]) -> dict[str, Any]:
    """The connection table's columns of one capture point, for its streams `rows`."""
    cap = d.cap
    n = cap.nstreams
    name = ", ".join(os.path.basename(f) for f in cap.files)
    m = len(rows)
    if not m:  # no connection, or the table's room went to the points before
        return {"name": name, "n": 0, "of": n}
    ep = cap.endpoints
    hi = np.concatenate([ep.client_hi[rows], ep.server_hi[rows]])
    lo = np.concatenate([ep.client_lo[rows], ep.server_lo[rows]])
    inv, naddr = group_ids(hi, lo)
    first_of = group_firsts(inv, naddr)
    addrs = [
        format_addr(int(h), int(lw))
        for h, lw in zip(hi[first_of].tolist(), lo[first_of].tolist(), strict=True)
    ]
    first = cap.order[cap.starts[rows]]
    t = cap.table
    from_client = cap.side[first] == 0
    cport = np.where(from_client, t["sport"][first], t["dport"][first]).astype(np.int64)
    start_us = (cap.first_ns[rows] - t0) // 1000
    dur_us = (cap.last_ns[rows] - cap.first_ns[rows]) // 1000
    tl = _timelines(cap)
    d.cache["html_timelines"] = tl
    final = tl.final.astype(np.int64)
    # a side CLOSED throughout never existed; a silent side never answered (state_label)
    seen = np.zeros((n, 2), np.int64)
    np.maximum.at(seen, (tl.conn, tl.side.astype(np.int64)), tl.state.astype(np.int64))
    final = np.where((final == State.CLOSED) & (seen == 0), len(State), final)
    silent = cap.n_pkts == 0
    final = np.where((final == State.SYN_RECEIVED) & silent, len(State) + 1, final)
    from tcpwhy.diagnose.engine import _sids_of

    kinds = np.zeros(n, np.int64)
    index = {k: i for i, k in enumerate(_kinds(report))}
    for f in _ordered(report):
        i = index.get(f.kind)
        if i is not None:
            kinds[_sids_of(cap, f.streams)] |= 1 << i
    nbytes = cap.bytes[rows]
    return {
        "name": name,
        "files": cap.files,
        "n": m,
        "of": n,
        "addrs": addrs,
        "stream": _delta(np.asarray(cap.stream_numbers, np.int64)[rows]),
        "client": inv[:m].tolist(),
        "cport": cport.tolist(),
        "server": inv[m:].tolist(),
        "sport": np.asarray(ep.server_port)[rows].tolist(),
        "start_us": _delta(start_us.astype(np.int64)),
        "dur_us": dur_us.astype(np.int64).tolist(),
        "pkts_c": cap.n_pkts[rows, 0].tolist(),
        "pkts_s": cap.n_pkts[rows, 1].tolist(),
        "bytes_c": nbytes[:, 0].astype(np.int64).tolist(),
        "bytes_s": nbytes[:, 1].astype(np.int64).tolist(),
        "ending": _endings(cap)[rows].tolist(),
        "final_c": final[rows, 0].tolist(),
        "final_s": final[rows, 1].tolist(),
        "kinds": kinds[rows].tolist(),
    }


def _delta(a: npt.NDArray[np.int64]) -> list[int]:
    """Deltas (the page adds them up): start times and stream numbers grow, so the deltas
    are short numbers."""
    if not len(a):
        return []
    d: list[int] = np.diff(a, prepend=0).tolist()
    return d


def _ladder_choice(
    report: Report, cap: Any, budget: int, conns: int, listed: npt.NDArray[np.int64]
) -> npt.NDArray[np.int64]:
    """Streams whose ladders are embedded, among those the table lists (`listed`): the
    findings' streams (examples first), then the rest in capture order, until the row
    budget or `conns` connections are spent. A connection's rows are counted as its
    packets (folding only makes a ladder shorter)."""
    from tcpwhy.diagnose.engine import _sids_of

    picked: list[npt.NDArray[np.int64]] = []
    for f in _ordered(report):
        picked.append(_sids_of(cap, f.examples))
    for f in _ordered(report):
        picked.append(_sids_of(cap, f.streams[:200]))
    picked.append(listed)
    order = np.concatenate(picked)
    _, first = np.unique(order, return_index=True)
    order = order[np.sort(first)]
    shown = np.zeros(cap.nstreams, np.bool_)
    shown[listed] = True
    order = order[shown[order]]
    size = cap.n_pkts.sum(1)[order]
    size = np.where(size > LADDER_CONN_ROWS, 0, size)  # too long: not embedded
    fits = np.cumsum(size) <= budget
    chosen = order[fits & (cap.n_pkts.sum(1)[order] <= LADDER_CONN_ROWS)]
    return np.asarray(chosen[: max(conns, 0)], np.int64)


def _charts(report: Report, t0: int) -> dict[str, Any]:
    """Pre-binned series for the charts (the page never gets per-packet arrays)."""
    span = max(report.capture.last_ns - t0, 1)
    edges = np.linspace(0, span, BINS + 1)
    width = span / BINS
    out: dict[str, Any] = {
        "t": (edges[1:] / 1e9).round(6).tolist(),
        "bin_s": width / 1e9,
        "states": {"client": {}, "server": {}},
        "events": {},
        "idle": None,
        "rtt": None,
    }
    for d in report.diags:
        cap = d.cap
        if not cap.nstreams:
            continue
        tl = d.cache.get("html_timelines")
        if tl is None:
            tl = _timelines(cap)
        _state_counts(cap, tl, t0, edges, out["states"])
        _events(cap, t0, edges, out["events"])
    for side in ("client", "server"):
        out["states"][side] = {k: v.tolist() for k, v in out["states"][side].items() if np.any(v)}
    out["events"] = {k: v.tolist() for k, v in out["events"].items()}
    out["idle"] = _idle(report)
    out["rtt"] = _rtt(report)
    return out


def _state_counts(
    cap: Any, tl: Any, t0: int, edges: npt.NDArray[np.float64], acc: dict[str, Any]
) -> None:
    """Sockets in each state at the end of every time bin, per side: +1 where a state is
    entered, -1 where the previous one is left, summed up (what `netstat` would have counted
    at that moment)."""
    from tcpwhy.report.html_kernel import state_deltas

    nst = len(State)
    delta = np.zeros((2, nst, BINS), np.int64)
    conn = np.ascontiguousarray(tl.conn, np.int64)
    nconn = int(conn.max()) + 1 if len(conn) else 0
    state_deltas(
        conn,
        np.ascontiguousarray(tl.side, np.uint8),
        np.ascontiguousarray(tl.state, np.uint8),
        np.ascontiguousarray(tl.ts_ns, np.int64),
        t0,
        np.ascontiguousarray(edges, np.float64),
        nconn,
        delta,
    )
    counts = np.cumsum(delta, axis=2)
    for s_i, name in ((0, "client"), (1, "server")):
        for st in State:
            if st in (State.CLOSED, State.LISTEN):
                continue
            v = counts[s_i, int(st)]
            have = acc[name].get(st.name)
            acc[name][st.name] = v if have is None else have + v


def _events(cap: Any, t0: int, edges: npt.NDArray[np.float64], acc: dict[str, Any]) -> None:
    """Resets, retransmissions, refused connects and zero windows per time bin."""
    from tcpwhy.diagnose.context import SERVER

    t = cap.table
    ts = t["ts_ns"] - t0
    flags = t["flags"]
    retrans = (
        cap.flag("retransmission")
        | cap.flag("fast_retransmission")
        | cap.flag("spurious_retransmission")
    )
    refused = _endings(cap) == 0
    ref_rows = (
        refused[cap.stream] & (cap.side == SERVER) & ((flags & RST) != 0)
        if len(t)
        else np.zeros(0, np.bool_)
    )
    # one refused connect per stream: its server's first RST
    ref_ts = np.full(cap.nstreams, -1, np.int64)
    idx = np.flatnonzero(ref_rows)[::-1]
    ref_ts[cap.stream[idx]] = ts[idx]
    series = {
        "resets": ts[(flags & RST) != 0],
        "retransmissions": ts[retrans],
        "refused connects": ref_ts[ref_ts >= 0],
        "zero windows": ts[cap.flag("zero_window")],
    }
    for name, v in series.items():
        h = np.histogram(v, bins=edges)[0]
        have = acc.get(name)
        acc[name] = h if have is None else have + h


def _idle(report: Report) -> dict[str, Any] | None:
    """Idle time before the server's FIN: from the last data to the FIN of every connection
    the server closed first, with the idle timeouts the diagnosis inferred
    (`closing.server_idle_timeout`, per server) marked."""
    from tcpwhy.diagnose.context import SERVER

    gaps: list[npt.NDArray[np.float64]] = []
    marks: list[dict[str, Any]] = []
    for d in report.diags:
        cap = d.cap
        if not cap.nstreams:
            continue
        fin = cap.first_fin_ns[:, SERVER]
        first = cap.closes_first(SERVER) & (fin != np.iinfo(np.int64).max)
        t = cap.table
        data = t.data_mask()
        before = data & (t["ts_ns"] < fin[cap.stream]) & first[cap.stream]
        last = np.full(cap.nstreams, -1, np.int64)
        np.maximum.at(last, cap.stream[before], t["ts_ns"][before])
        ok = first & (last >= 0)
        g = (fin[ok] - last[ok]) / 1e9
        gaps.append(g[g >= 0.05])
        for server, st in _idle_stats(d).items():
            if st is not None:
                marks.append(
                    {"server": server, "median_s": st.median_s, "n": st.n, "text": st.text()}
                )
    allg = np.concatenate(gaps) if gaps else np.zeros(0)
    if not len(allg):
        return None
    hi = float(allg.max()) * 1.05 + 1e-3
    counts, e = np.histogram(allg, bins=min(80, max(10, len(allg))), range=(0.0, hi))
    return {
        "x": ((e[:-1] + e[1:]) / 2).round(6).tolist(),
        "y": counts.tolist(),
        "width": float(e[1] - e[0]),
        "n": len(allg),
        "marks": marks[:8],
    }


def _idle_stats(d: Any) -> dict[str, Any]:
    """The idle timeouts the rules inferred (cached per server); when none did, the busiest
    server's, if few enough connections make that quick."""
    from tcpwhy.diagnose.closing import server_idle_timeout

    got: dict[str, Any] = dict(d.cache.get("idle", {}))
    if any(v is not None for v in got.values()):
        return got
    cap = d.cap
    cand = np.flatnonzero((cap.n_fin[:, 1] > 0) & (cap.bytes[:, 1] > 0))
    if 0 < len(cand) <= 5000:
        server = cap.conn(int(cand[0])).server
        got[server] = server_idle_timeout(d, server)
    return got


def _rtt(report: Report) -> dict[str, Any] | None:
    """Handshake round trips (SYN → the client's first packet after the SYN-ACK), as
    `Conn.rtt` measures them, for every connection at once."""
    from tcpwhy.diagnose.context import CLIENT, SERVER

    rtts = []
    for d in report.diags:
        cap = d.cap
        if not cap.nstreams:
            continue
        t = cap.table
        f = t["flags"]
        ts = t["ts_ns"]
        big = np.iinfo(np.int64).max
        kind = f & (SYN | ACK | RST)
        syn = np.full(cap.nstreams, big, np.int64)
        m = (cap.side == CLIENT) & (kind == SYN)
        np.minimum.at(syn, cap.stream[m], ts[m])
        synack = np.full(cap.nstreams, big, np.int64)
        m = (cap.side == SERVER) & (kind == (SYN | ACK))
        np.minimum.at(synack, cap.stream[m], ts[m])
        nxt = np.full(cap.nstreams, big, np.int64)
        m = (
            (cap.side == CLIENT)
            & ((f & (SYN | RST)) == 0)
            & (ts >= synack[cap.stream])
            & (synack[cap.stream] != big)
        )
        np.minimum.at(nxt, cap.stream[m], ts[m])
        ok = (syn != big) & (nxt != big) & (synack >= syn)
        rtts.append(np.maximum((nxt[ok] - syn[ok]) / 1e6, 1e-3))  # ms
    allr = np.concatenate(rtts) if rtts else np.zeros(0)
    if not len(allr):
        return None
    lo, hi = float(allr.min()), float(allr.max())
    edges = np.geomspace(max(lo * 0.9, 1e-3), hi * 1.1 + 1e-3, 41)
    counts = np.histogram(allr, bins=edges)[0]
    return {
        "edges": edges.round(6).tolist(),
        "y": counts.tolist(),
        "n": len(allr),
        "median_ms": float(np.median(allr)),
        "p99_ms": float(np.percentile(allr, 99)),
    }
