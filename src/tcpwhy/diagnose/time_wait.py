"""time-wait-reuse and time-wait-accumulation: TIME_WAIT seen from the wire.

Reuse: a SYN on a 4-tuple whose previous connection ended less than 2 MSL
(Linux: 60 s) before — harmless when the server answers with a SYN-ACK,
trouble when it answers with a bare ACK or not at all. Accumulation: many
short connections to one server that the client closes first, each leaving
a TIME_WAIT socket on the client for 60 s; at a high rate they exhaust the
ephemeral ports.
"""

from __future__ import annotations

import numpy as np

from tcpwhy.decode.table import ACK, RST, SYN
from tcpwhy.diagnose import knowledge
from tcpwhy.diagnose.common import Group, Hits
from tcpwhy.diagnose.context import CLIENT, NO_FIN, SERVER, fmt_s
from tcpwhy.diagnose.handshake import syn_rows
from tcpwhy.diagnose.model import Finding, Severity, Story
from tcpwhy.diagnose.registry import Diag, Instance, make_finding, plural, rule
from tcpwhy.tcp.state import TIME_WAIT_NS

REUSE = "time-wait-reuse"
PILEUP = "time-wait-accumulation"
PORTS = 28232  # default ip_local_port_range 32768-60999
MIN_CONNS = 5


@rule(REUSE)
def detect_reuse(diag: Diag) -> list[Finding]:
    cap = diag.cap
    if not cap.nstreams or not cap.reused.any():
        return []
    conv_of = cap.conv[cap.order[cap.starts]]
    hits = Hits()
    for row in np.flatnonzero(cap.reused):
        sid = int(cap.stream[row])
        prev = np.flatnonzero((conv_of == conv_of[sid]) & (np.arange(cap.nstreams) < sid))
        if not len(prev):
            continue
        p = int(prev[-1])
        gap_ns = int(cap.ts_of(int(row))) - int(cap.last_ns[p])
        if gap_ns >= TIME_WAIT_NS or cap.n_fin[p].min() == 0:
            continue
        c = cap.conn(sid)
        syns = syn_rows(c)
        if not syns:
            continue
        answer = c.next_from(SERVER, syns[0] + 1)
        if answer is not None and (c.flags[answer] & (SYN | ACK)) == (SYN | ACK) and len(syns) == 1:
            outcome = "accepted"
            note = "server accepts the new connection (SYN-ACK)"
        elif answer is not None and not c.flags[answer] & (SYN | RST):
            outcome = "ack"
            note = "server answers with a bare ACK of the old connection (TIME_WAIT/CLOSE_WAIT)"
        elif len(syns) > 1:
            outcome = "dropped"
            note = "SYN retransmitted: the first one was ignored"
        else:
            outcome = "other"
            note = "answer to the SYN"
        rows = [
            (
                syns[0],
                f"new SYN on the same 4-tuple {fmt_s(gap_ns / 1e9)} after the last one closed",
            )
        ]
        if answer is not None:
            rows.append((answer, note))
        hits.add(c.server, c, rows, {"gap_s": gap_ns / 1e9, "outcome": outcome, "previous": p})
    return hits.findings(diag, REUSE, _tell_reuse)


def _tell_reuse(g: Group) -> Story:
    server, ex, c, n = g.key, g.ex, g.c, g.n
    nbad = sum(1 for v in g.values("outcome") if v != "accepted")
    sev = Severity.WARNING if nbad else Severity.INFO
    summary = (
        f"{plural(n, 'connection')} to {server} reused a 4-tuple still within 2 MSL (60 s) "
        f"of its previous connection"
        + (f"; {nbad} not accepted at once" if nbad else "; all accepted")
    )
    explanation = (
        f"Stream {c.no} opened with a SYN from {c.client} to {server} "
        f"{fmt_s(ex.facts['gap_s'])} after stream {ex.facts['previous']} on the same "
        "addresses and ports had ended. The side that closed that connection first keeps "
        "the 4-tuple in TIME_WAIT for 60 s (Linux TCP_TIMEWAIT_LEN). Linux accepts a new "
        "SYN in TIME_WAIT when its sequence number or timestamp is newer; otherwise the "
        "old socket answers with a bare ACK, the client resets it and retries after about "
        "a second — a one-second connect latency spike. A SYN silently dropped instead "
        "points at PAWS/timestamp rejection or stale state on a NAT or firewall."
    )
    causes = [
        "A client binding a fixed source port, or cycling through a small port range fast.",
        "NAT mapping many clients onto few source ports.",
        "tcp_tw_recycle on old kernels (removed in 4.12) or timestamps disabled.",
    ]
    fixes = [
        "Do not bind fixed client source ports; widen net.ipv4.ip_local_port_range.",
        "Keep TCP timestamps on (net.ipv4.tcp_timestamps=1) and use net.ipv4.tcp_tw_reuse=1 "
        "on client hosts; reuse connections instead of opening one per request.",
    ]
    facts = {"server": server, "not_accepted": nbad}
    errors = knowledge.TIMEOUT if nbad else knowledge.NONE_VISIBLE
    return Story(sev, summary, explanation, causes, fixes, errors, facts)


@rule(PILEUP)
def detect_pileup(diag: Diag) -> list[Finding]:
    cap = diag.cap
    if not cap.nstreams:
        return []
    ff = cap.first_fin_ns
    m = (ff[:, CLIENT] < NO_FIN) & (ff[:, SERVER] < NO_FIN) & (ff[:, CLIENT] <= ff[:, SERVER])
    m &= cap.n_rst.sum(1) == 0
    m &= cap.n_syn[:, CLIENT] > 0
    sids = np.flatnonzero(m)
    if len(sids) < MIN_CONNS:
        return []
    # group by (client address, server endpoint) without building every connection
    t = cap.table
    first = cap.order[cap.starts[sids]]
    cdir = cap.side[first] == CLIENT
    key_c = np.where(cdir, t["src_lo"][first], t["dst_lo"][first]) ^ np.where(
        cdir, t["src_hi"][first], t["dst_hi"][first]
    )
    key_s = (
        np.where(cdir, t["dst_lo"][first], t["src_lo"][first])
        ^ np.where(cdir, t["dst_hi"][first], t["src_hi"][first])
    ) * np.uint64(65536) + np.where(cdir, t["dport"][first], t["sport"][first]).astype(np.uint64)
    out = []
    keys = np.stack([key_c, key_s], 1)
    uniq, inv = np.unique(keys, axis=0, return_inverse=True)
    for g in range(len(uniq)):
        members = sids[inv.ravel() == g]
        if len(members) < MIN_CONNS:
            continue
        fins = ff[members, CLIENT]
        span = (int(fins.max()) - int(fins.min())) / 1e9
        # the most TIME_WAIT sockets alive at once within any 60 s window
        srt = np.sort(fins)
        alive = int(
            (np.searchsorted(srt, srt + TIME_WAIT_NS, side="left") - np.arange(len(srt))).max()
        )
        if alive < MIN_CONNS:
            continue  # spread out in time: never many TIME_WAIT sockets at once
        rate = len(members) / span if span > 0 else float(len(members))
        inst = []
        for sid in members[: diag.settings.examples]:
            c = cap.conn(int(sid))
            cf = c.first_fin(CLIENT)
            sf = c.first_fin(SERVER)
            rows = [(0, "client opens a new connection")]
            if cf is not None:
                rows.append((cf, "client closes first (FIN): it will hold TIME_WAIT for 60 s"))
            if sf is not None:
                rows.append((sf, "server closes too"))
            inst.append(Instance(c, rows))
        c = inst[0].conn
        projected = min(rate, 1e6) * 60
        sev = Severity.WARNING if projected > PORTS / 2 and len(members) >= 100 else Severity.INFO
        summary = (
            f"{len(members)} short connections from {c.client_ip} to {c.server}, each closed "
            f"first by the client: up to {alive} TIME_WAIT sockets at once on the client"
        )
        explanation = (
            f"The client opened {len(members)} connections to {c.server} within {fmt_s(span)} "
            f"(about {rate:.0f} per second) and closed each one first, so its kernel keeps every "
            "4-tuple in TIME_WAIT for a fixed 60 s (TCP_TIMEWAIT_LEN; tcp_fin_timeout does not "
            f"shorten it). At this rate the client holds about {projected:.0f} TIME_WAIT sockets "
            f"to this one server port, out of {PORTS} ephemeral ports in the default range. "
            "TIME_WAIT itself is the normal end of a connection; it becomes a problem only when "
            "new connects fail with 'Cannot assign requested address'."
        )
        causes = [
            "Connection reuse is off or ineffective: a new client object per request, "
            "Connection: close, or a pool too small for the concurrency (Go "
            "MaxIdleConnsPerHost default 2, HttpClient defaultMaxPerRoute 2).",
        ]
        fixes = [
            "Reuse connections: keep-alive pools sized for the concurrency (Go "
            "Transport.MaxIdleConnsPerHost, HttpClient setDefaultMaxPerRoute, OkHttp "
            "ConnectionPool, urllib3 PoolManager(maxsize=…)).",
            "On client hosts: net.ipv4.tcp_tw_reuse=1 (needs TCP timestamps) and a wider "
            "net.ipv4.ip_local_port_range; never SO_LINGER 0 to avoid TIME_WAIT.",
        ]
        errors = knowledge.NO_PORT if sev >= Severity.WARNING else knowledge.NONE_VISIBLE
        facts = {"connections": len(members), "rate_per_s": round(rate, 1), "max_time_wait": alive}
        story = Story(sev, summary, explanation, causes, fixes, errors, facts)
        out.append(make_finding(diag, PILEUP, inst, story))
        out[-1].count = len(members)
        out[-1].streams = [int(s) for s in members]
    return out
