"""The ladder of one connection as SVG, drawn from `tcpwhy.report.flow.ladder_view`.

The text ladder (`tcpwhy flow`) and this picture read the same `LadderView`
rows, so they show the same packets, labels and states. The HTML report's
connection table draws ladders in the browser from the same rows
(`view_json`), with the geometry below copied in report/static/report.js
(`LADDER`): keep the two in step.

Every string is XML-escaped: addresses and labels are the capture's.
"""

from __future__ import annotations

import argparse
import sys
from html import escape
from typing import Any

from tcpwhy.report.flow import LadderRow, LadderView

# geometry (report.js LADDER has the same numbers)
WIDTH = 900
TIME_X = 8  # time column (left aligned)
FRAME_X = 118  # frame column (right aligned)
CLIENT_X = 330  # client lifeline
SERVER_X = 690  # server lifeline
HEAD = 56  # header height: endpoint names and starting states
ROW = 26  # one packet row
FOOT = 34


def _esc(s: object) -> str:
    return escape(str(s), quote=True)


def render_svg(view: LadderView, highlight: set[int] | None = None, title: str = "") -> str:
    """The ladder as an SVG document fragment (inline in HTML, or a file of its own).

    `highlight`: frames to mark as decisive (a finding's evidence); without it, every
    packet that changes a state, carries SYN/FIN/RST or an analysis flag is marked.
    """
    rows = view.rows
    height = HEAD + ROW * len(rows) + FOOT
    o: list[str] = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="ladder" width="{WIDTH}" '
        f'height="{height}" viewBox="0 0 {WIDTH} {height}" role="img" '
        f'font-family="ui-monospace, SFMono-Regular, Menlo, Consolas, monospace" font-size="12">'
    ]
    if title:
        o.append(f"<title>{_esc(title)}</title>")
    o.append(
        '<defs><marker id="lad-arr" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M0,0L10,5L0,10z" '
        'fill="context-stroke"/></marker></defs>'
    )
    o.append(
        f'<text x="{TIME_X}" y="16" class="lad-h">time (s)</text>'
        f'<text x="{FRAME_X}" y="16" text-anchor="end" class="lad-h">frame</text>'
        f'<text x="{CLIENT_X}" y="16" text-anchor="middle" class="lad-h lad-ep">'
        f"{_esc(view.client)}</text>"
        f'<text x="{SERVER_X}" y="16" text-anchor="middle" class="lad-h lad-ep">'
        f"{_esc(view.server)}</text>"
        f'<text x="{CLIENT_X - 8}" y="40" text-anchor="end" class="lad-st">'
        f"{_esc(view.client_start)}</text>"
        f'<text x="{SERVER_X + 8}" y="40" class="lad-st">{_esc(view.server_start)}</text>'
    )
    bottom = HEAD + ROW * len(rows)
    for x in (CLIENT_X, SERVER_X):
        o.append(
            f'<line x1="{x}" y1="24" x2="{x}" y2="{bottom + 6}" stroke="#888" stroke-width="2"/>'
        )
    for k, r in enumerate(rows):
        o.append(_row(r, HEAD + ROW * k, highlight))
    o.append(
        f'<text x="{TIME_X}" y="{bottom + 24}" class="lad-final">final states at end of capture: '
        f"client {_esc(view.client_final)}, server {_esc(view.server_final)}</text>"
    )
    o.append("</svg>")
    return "".join(o)


def _row(r: LadderRow, y: int, highlight: set[int] | None) -> str:
    mid = (CLIENT_X + SERVER_X) // 2
    if r.kind in ("fold", "hidden"):
        return (
            f'<text x="{mid}" y="{y + 17}" text-anchor="middle" class="lad-fold" '
            f'fill="#666" font-style="italic">{_esc(r.label)}</text>'
        )
    if r.kind == "timer":
        return (
            f'<g class="lad-timer"><text x="{TIME_X}" y="{y + 17}">{r.rel_s:.6f}</text>'
            f'<text x="{mid}" y="{y + 17}" text-anchor="middle" fill="#555">'
            f"{_esc(r.label)}</text></g>"
        )
    hot = r.flagged if highlight is None else r.frame in highlight
    rst = "RST" in r.label.split("Seq=")[0]
    colour = "#c62828" if rst else ("#1565c0" if r.to_server else "#2e7d32")
    x1, x2 = (CLIENT_X, SERVER_X) if r.to_server else (SERVER_X, CLIENT_X)
    cls = "lad-pkt lad-hot" if hot else "lad-pkt"
    weight = ' font-weight="bold"' if hot else ""
    parts = [f'<g class="{cls}" data-frame="{r.frame}">']
    if hot:
        parts.append(
            f'<rect x="{TIME_X - 4}" y="{y + 2}" width="{WIDTH - 2 * TIME_X + 8}" '
            f'height="{ROW - 2}" fill="#fff3c4" rx="3"/>'
        )
    parts.append(
        f'<text x="{TIME_X}" y="{y + 17}">{r.rel_s:.6f}</text>'
        f'<text x="{FRAME_X}" y="{y + 17}" text-anchor="end">{r.frame}</text>'
        f'<line x1="{x1}" y1="{y + 16}" x2="{x2}" y2="{y + 22}" stroke="{colour}" '
        f'stroke-width="{2.2 if hot else 1.4}" marker-end="url(#lad-arr)"/>'
        f'<text x="{mid}" y="{y + 12}" text-anchor="middle" fill="{colour}" '
        f'font-size="11"{weight}>'
        f"{_esc(r.label)}</text>"
    )
    if r.client:
        parts.append(
            f'<text x="{CLIENT_X - 8}" y="{y + 17}" text-anchor="end" class="lad-st" '
            f'font-weight="bold">{_esc(r.client)}</text>'
        )
    if r.server:
        parts.append(
            f'<text x="{SERVER_X + 8}" y="{y + 17}" class="lad-st" font-weight="bold">'
            f"{_esc(r.server)}</text>"
        )
    parts.append("</g>")
    return "".join(parts)


def view_json(view: LadderView) -> list[Any]:
    """The view as compact JSON for report.js: [client, server, client_start, server_start,
    client_final, server_final, rows], each row [kind, rel_s, frame, to_server, label,
    client, server, flagged] with kind 0 packet, 1 fold, 2 hidden, 3 timer."""
    kinds = {"packet": 0, "fold": 1, "hidden": 2, "timer": 3}
    return [
        view.client,
        view.server,
        view.client_start,
        view.server_start,
        view.client_final,
        view.server_final,
        [
            [
                kinds[r.kind],
                round(r.rel_s, 6),
                r.frame,
                int(r.to_server),
                r.label,
                r.client,
                r.server,
                int(r.flagged),
            ]
            for r in view.rows
        ],
    ]


def write_flow_svg(args: argparse.Namespace) -> None:
    """`tcpwhy flow FILE STREAM --format svg`: a standalone SVG file."""
    from tcpwhy.decode.table import CaptureStats
    from tcpwhy.filter import filter_from_args
    from tcpwhy.report.flow import build_ladder, ladder_view

    stats = CaptureStats()
    lad = build_ladder(args.file, args.stream, stats, filter_from_args(args))
    body = render_svg(ladder_view(lad, args.fold), title=f"tcp.stream {args.stream}")
    sys.stdout.write('<?xml version="1.0" encoding="UTF-8"?>\n' + body + "\n")
    from tcpwhy.report.commands import report_stats

    report_stats(args.file, stats)
