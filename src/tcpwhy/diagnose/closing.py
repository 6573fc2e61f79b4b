"""Data written into a connection the peer had already closed: the facts three kinds share.

For each connection in which one side (the closer) sent a FIN and the other
(the writer) sent data the closer had not acknowledged when it sent the FIN,
followed by a RST from the closer. `covers` tells the two orderings apart by
ACK numbers, not timestamps (so it holds wherever the capture was taken): the
data acknowledges the FIN (the writer had received it: stale reuse or data
after FIN) or does not (the two crossed in flight: a race).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

import numpy as np

from tcpwhy.decode.table import RST
from tcpwhy.diagnose import http
from tcpwhy.diagnose.context import CLIENT, SERVER, Capture, Conn
from tcpwhy.diagnose.registry import Diag
from tcpwhy.tcp.seq import seq_add, seq_geq

PROMPT_S = 0.01
"""Time an application takes, at most, to act on the peer's FIN when it does so at once
(read() returns 0, then close() or a last write): on top of the round trip between the
capture point and that endpoint, this bounds when its reaction can show up in a capture."""


@dataclass
class AfterFin:
    cap: Capture  # the connection by capture and stream id, not its (big) `Conn` view
    sid: int
    closer: int
    fin: int  # local row of the closer's FIN
    data: int  # local row of the writer's data
    rst: int  # local row of the closer's RST answering it
    covers: bool  # the data acknowledges the FIN
    reused: bool  # the writer had sent data before (a pooled, reused connection)
    last_reply: int | None  # the closer's last data before its FIN (the last response)

    @property
    def conn(self) -> Conn:
        return self.cap.conn(self.sid)


def after_fin(diag: Diag) -> list[AfterFin]:
    got: list[AfterFin] | None = diag.cache.get("after_fin")
    if got is not None:
        return got
    cap = diag.cap
    out: list[AfterFin] = []
    if cap.nstreams:
        fin, data, rst = cap.n_fin, cap.n_data, cap.n_rst
        cand = ((fin[:, 1] > 0) & (data[:, 0] > 0) & (rst[:, 1] > 0)) | (
            (fin[:, 0] > 0) & (data[:, 1] > 0) & (rst[:, 0] > 0)
        )
        for sid in np.flatnonzero(cand):
            c = cap.conn(int(sid))
            for closer in (SERVER, CLIENT):
                ev = _find(c, closer)
                if ev is not None:
                    out.append(ev)
                    break
    diag.cache["after_fin"] = out
    return out


def _find(c: Conn, closer: int) -> AfterFin | None:
    f = c.first_fin(closer)
    if f is None:
        return None
    writer = 1 - closer
    fin_ack = c.ack[f]
    fin_end = c.fin_end(f)
    # the writer's first data the FIN did not acknowledge (new to the closer when it closed);
    # a TLS closing alert is the writer's own close, not data (answering the closer's
    # close_notify with its own is how TLS ends)
    from tcpwhy.diagnose.tls import closing_rows

    alerts = closing_rows(c)
    d = None
    for i in range(c.n):
        if c.side[i] != writer or c.plen[i] == 0 or c.flags[i] & RST or i in alerts:
            continue
        if seq_geq(fin_ack, seq_add(c.seq[i], c.plen[i])):
            continue
        # the writer's own FIN before this data means it is a retransmission, not news
        wf = c.first_fin(writer)
        if wf is not None and wf < i and c.seq[i] == c.seq[wf]:
            continue
        d = i
        break
    if d is None:
        return None
    r = next((j for j in range(max(d, f) + 1, c.n) if c.side[j] == closer and c.is_rst(j)), None)
    if r is None:
        return None
    covers = c.acks(d, fin_end)
    earlier = any(c.side[j] == writer and c.plen[j] > 0 and not c.flags[j] & RST for j in range(d))
    last_reply = c.last_data_before(f, closer)
    if not earlier and last_reply is not None and c.cap.n_syn[c.sid, CLIENT] == 0:
        # a capture that starts inside the connection: the closer's reply to a request sent
        # before the capture began shows an earlier exchange just as well (a server speaks
        # first only after a handshake, which this capture would show)
        earlier = True
    return AfterFin(c.cap, c.sid, closer, f, d, r, covers, earlier, last_reply)


@dataclass
class IdleStats:
    n: int
    min_s: float
    median_s: float
    max_s: float
    announced: int | None  # Keep-Alive: timeout=N seen in responses

    def text(self) -> str:
        return (
            f"the server closes connections idle for {self.median_s:.2f} s: "
            f"min {self.min_s:.2f}, median {self.median_s:.2f}, max {self.max_s:.2f}, n={self.n}"
        )


def server_idle_timeout(diag: Diag, server: str) -> IdleStats | None:
    """The server's idle timeout, from every connection to it that the server closed first.

    The gap from the last data on the connection to the server's FIN, when
    that last data was not a response saying `Connection: close` (whose FIN
    follows at once and says nothing about idleness).
    """
    cache: dict[str, IdleStats | None] = diag.cache.setdefault("idle", {})
    if server in cache:
        return cache[server]
    cap = diag.cap
    gaps: list[float] = []
    announced: int | None = None
    cand = np.flatnonzero((cap.n_fin[:, SERVER] > 0) & (cap.bytes[:, SERVER] > 0))
    for sid in cand:
        c = cap.conn(int(sid))
        if c.server != server:
            continue
        for m in http.messages(c):
            if not m.is_request and m.keep_alive_timeout is not None:
                announced = m.keep_alive_timeout
        f = c.first_fin(SERVER)
        cf = c.first_fin(CLIENT)
        if f is None or (cf is not None and cf < f):
            continue
        # an HTTP/2 GOAWAY right before the FIN is the close, not data; a client's HTTP/2
        # control frame (RST_STREAM, PING, …) after the last stream ended starts no exchange
        from tcpwhy.diagnose.stale_keepalive import idle_start

        last = idle_start(c, f)
        if last is None:
            continue
        resp = http.last_response_before(c, f)
        if resp is not None and "close" in resp.connection:
            continue
        gap = c.dt(last, f)
        if gap >= 0.05:
            gaps.append(gap)
    st = (
        IdleStats(len(gaps), min(gaps), statistics.median(gaps), max(gaps), announced)
        if gaps
        else None
    )
    cache[server] = st
    return st


def recommend_below(t: float) -> str:
    v = t * 0.8 if t <= 10 else t - max(2.0, 0.1 * t)
    return f"{v:.1f} s" if v < 10 else f"{int(v)} s"
