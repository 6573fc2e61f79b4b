"""The ladder of one connection as SVG, drawn from `tcpwhy.report.flow.ladder_view`.

The text ladder (`tcpwhy flow`) and this picture read the same `LadderView`
rows, so they show the same packets, labels and states. The HTML report's
connection table draws ladders in the browser from the same rows
(`view_json`), with the geometry below copied in report/static/report.js
(`LADDER`): keep the two in step.

Every string is XML-escaped: addresses and labels are the capture's.
"""

from __future__ import annotations

from html import escape
from typing import TYPE_CHECKING, Any

from tcpwhy.report.flow import LadderRow, LadderView

if TYPE_CHECKING:
    from tcpwhy.report.flow_pair import PairView

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
    bottom = HEAD + ROW * len(rows)
    o = _start("ladder", WIDTH, bottom + FOOT, title, "lad-arr")
    o.append(_heads(view, CLIENT_X, SERVER_X, 16, 40))
    o += _lifelines(CLIENT_X, SERVER_X, 24, bottom)
    for k, r in enumerate(rows):
        o.append(_row(r, HEAD + ROW * k, highlight))
    o.append(_finals(view, bottom))
    o.append("</svg>")
    return "".join(o)


def _start(cls: str, width: int, height: int, title: str, marker: str) -> list[str]:
    """A ladder's opening: the <svg> element, its title, and the arrowhead `marker`."""
    o = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="{cls}" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'font-family="ui-monospace, SFMono-Regular, Menlo, Consolas, monospace" font-size="12">'
    ]
    if title:
        o.append(f"<title>{_esc(title)}</title>")
    o.append(
        f'<defs><marker id="{marker}" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M0,0L10,5L0,10z" '
        'fill="context-stroke"/></marker></defs>'
    )
    return o


def _heads(
    view: LadderView | PairView, cx: int, sx: int, y: int, y_state: int, right_x: int = 0
) -> str:
    """The column headings at `y` (with a right-hand time/frame column at `right_x` when
    there is one), the two ends' names above their lifelines and their starting states."""
    right = (
        f'<text x="{right_x}" y="{y}" text-anchor="end" class="lad-h">time (s) / frame</text>'
        if right_x
        else ""
    )
    return (
        f'<text x="{TIME_X}" y="{y}" class="lad-h">time (s)</text>'
        f'<text x="{FRAME_X}" y="{y}" text-anchor="end" class="lad-h">frame</text>{right}'
        f'<text x="{cx}" y="{y}" text-anchor="middle" class="lad-h lad-ep">'
        f"{_esc(view.client)}</text>"
        f'<text x="{sx}" y="{y}" text-anchor="middle" class="lad-h lad-ep">'
        f"{_esc(view.server)}</text>"
        f'<text x="{cx - 8}" y="{y_state}" text-anchor="end" class="lad-st">'
        f"{_esc(view.client_start)}</text>"
        f'<text x="{sx + 8}" y="{y_state}" class="lad-st">{_esc(view.server_start)}</text>'
    )


def _lifelines(cx: int, sx: int, top: int, bottom: int) -> list[str]:
    return [
        f'<line x1="{x}" y1="{top}" x2="{x}" y2="{bottom + 6}" stroke="#888" stroke-width="2"/>'
        for x in (cx, sx)
    ]


def _finals(view: LadderView | PairView, bottom: int) -> str:
    return (
        f'<text x="{TIME_X}" y="{bottom + 24}" class="lad-final">final states at end of capture: '
        f"client {_esc(view.client_final)}, server {_esc(view.server_final)}</text>"
    )


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


def render_pair_svg(view: PairView, title: str = "") -> str:
    """A connection between two capture points (`tcpwhy.report.flow_pair.PairView`) as SVG:
    the client-side point's times on the left, the server-side point's (in the left one's
    clock) on the right, one row per departure or arrival as in the text, each arrow a
    straight line from its sending row to its receiving row, so arrows in flight together
    in opposite directions cross. Lost segments stop half-way (✗), injected ones start
    there (◇, dashed); a segment one point did not capture is dotted."""
    from tcpwhy.report.flow_pair import INJECTED, LOST, ONE_POINT, events

    width = WIDTH + 200
    cx, sx = CLIENT_X, SERVER_X + 100
    mid = (cx + sx) // 2
    ev = events(view)
    height = HEAD + 20 + ROW * len(ev) + FOOT + 20
    y0 = HEAD + 20
    o = _start("ladder ladder-pair", width, height, title, "lad-arr2")
    off = (
        "clock offset unknown"
        if view.clock_offset_ms is None
        else f"clock offset {view.clock_offset_ms:+.1f} ms (server side minus client side, "
        "symmetric path assumed): right-hand times in the left-hand clock"
    )
    o.append(
        f'<text x="{TIME_X}" y="14" class="lad-h">{_esc(view.client_point)} (client side) ⇄ '
        f"{_esc(view.server_point)} (server side)</text>"
    )
    o.append(_heads(view, cx, sx, 34, y0 - 6, right_x=width - TIME_X))
    bottom = y0 + ROW * len(ev)
    o += _lifelines(cx, sx, 42, bottom)
    row_of: dict[tuple[int, bool], int] = {(k, arr): r for r, (_, k, arr) in enumerate(ev)}
    for r, (t, k, arrival) in enumerate(ev):  # times and states at each end
        a = view.arrows[k]
        y = y0 + ROW * r + 16
        in_middle = (arrival and a.to_middle) or (not arrival and a.from_middle)
        if in_middle:
            continue
        at_client = arrival != a.to_server
        seen = a.client_t is not None if at_client else a.server_t is not None
        stamp = f"{t:.6f}" if seen else f"~{t:.6f}"
        frame = a.client_frame if at_client else a.server_frame
        states = a.client if at_client else a.server
        if at_client:
            o.append(
                f'<text x="{TIME_X}" y="{y}">{stamp}</text>'
                f'<text x="{FRAME_X}" y="{y}" text-anchor="end">{"" if frame is None else frame}'
                "</text>"
            )
            if states:
                o.append(
                    f'<text x="{cx - 8}" y="{y}" text-anchor="end" class="lad-st" '
                    f'font-weight="bold">{_esc(states)}</text>'
                )
        else:
            o.append(
                f'<text x="{width - TIME_X}" y="{y}" text-anchor="end">{stamp} '
                f"{'' if frame is None else frame}</text>"
            )
            if states:
                o.append(
                    f'<text x="{sx + 8}" y="{y}" class="lad-st" font-weight="bold">'
                    f"{_esc(states)}</text>"
                )
    for k, a in enumerate(view.arrows):
        i, j = row_of[(k, False)], row_of[(k, True)]
        y1, y2 = y0 + ROW * i + 12, y0 + ROW * j + 12
        x1 = mid if a.from_middle else (cx if a.to_server else sx)
        x2 = mid if a.to_middle else (sx if a.to_server else cx)
        rst = "RST" in a.label.split("Seq=")[0]
        colour = "#c62828" if rst else ("#1565c0" if a.to_server else "#2e7d32")
        dash = {INJECTED: ' stroke-dasharray="6 3"', ONE_POINT: ' stroke-dasharray="2 3"'}
        cls = f"lad-pkt lad-{a.status}" + (" lad-hot" if a.flagged else "")
        frame = a.client_frame if a.client_frame is not None else a.server_frame
        parts = [f'<g class="{cls}" data-frame="{frame}" data-status="{a.status}">']
        parts.append(
            f'<line x1="{x1}" y1="{y1}" x2="{x2}" y2="{y2}" stroke="{colour}" '
            f'stroke-width="{2.2 if a.flagged else 1.4}"{dash.get(a.status, "")}'
            + ("" if a.to_middle else ' marker-end="url(#lad-arr2)"')
            + "/>"
        )
        if a.status == LOST:
            parts.append(
                f'<text x="{x2}" y="{y2 + 5}" text-anchor="middle" fill="{colour}" '
                'font-size="16" font-weight="bold">✗</text>'
            )
        if a.status == INJECTED:
            parts.append(f'<circle cx="{x1}" cy="{y1}" r="4" fill="none" stroke="{colour}"/>')
        tag = {LOST: " ✗ lost on the path", INJECTED: " ◇ injected on the path"}.get(a.status, "")
        if a.status == ONE_POINT:
            tag = " (seen at one capture point only)"
        rightward = (x2 > x1) != a.from_middle
        tx = x1 + 6 if rightward else x1 - 6
        anchor = "start" if rightward else "end"
        weight = ' font-weight="bold"' if a.flagged else ""
        parts.append(
            f'<text x="{tx}" y="{y1 - 2}" text-anchor="{anchor}" fill="{colour}" font-size="11"'
            f"{weight}>{_esc(a.label + tag)}</text>"
        )
        parts.append("</g>")
        o.append("".join(parts))
    o.append(_finals(view, bottom))
    o.append(f'<text x="{TIME_X}" y="{bottom + 42}" class="lad-final">{_esc(off)}</text>')
    o.append("</svg>")
    return "".join(o)
