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

from tcpwhy.arrays import group_ids, unique_sorted
from tcpwhy.decode.table import ACK, RST, SYN
from tcpwhy.diagnose import knowledge
from tcpwhy.diagnose.common import by_server, first_positions
from tcpwhy.diagnose.context import CLIENT, NO_FIN, SERVER, Conn, fmt_s
from tcpwhy.diagnose.handshake import first_syn_positions
from tcpwhy.diagnose.model import Finding, Severity, Story, StreamNumbers
from tcpwhy.diagnose.registry import (
    FRAME_INSTANCES,
    Diag,
    Instance,
    finding_from_columns,
    make_finding,
    plural,
    rule,
)
from tcpwhy.tcp.state import TIME_WAIT_NS

ORDER = 120

REUSE = "time-wait-reuse"
PILEUP = "time-wait-accumulation"
PORTS = 28232  # default ip_local_port_range 32768-60999
MIN_CONNS = 5


@rule(REUSE)
def detect_reuse(diag: Diag) -> list[Finding]:
    """Vectorised over the reusing SYNs: a connection-heavy capture reuses its few 4-tuples
    hundreds of thousands of times; Conn views are built only for the examples."""
    cap = diag.cap
    if not cap.nstreams or not cap.reused.any():
        return []
    t = cap.table
    rows = np.flatnonzero(cap.reused)
    # the SYNs that started a stream (a reused flag on a SYN-ACK renumbers a side only)
    rows = rows[(t["flags"][rows] & (SYN | ACK)) == SYN]
    sid = cap.stream[rows]
    # the previous stream on the same conversation: the one before in (conversation, id) order
    conv_of = cap.stream_conv
    by_conv = np.lexsort((np.arange(cap.nstreams), conv_of))
    prev_of = np.full(cap.nstreams, -1, np.int64)
    same = conv_of[by_conv[1:]] == conv_of[by_conv[:-1]]
    prev_of[by_conv[1:][same]] = by_conv[:-1][same]
    prev = prev_of[sid]
    ok = prev >= 0
    p = np.where(ok, prev, 0)
    gap_ns = t["ts_ns"][rows].astype(np.int64) - cap.last_ns[p]
    ok &= (gap_ns < TIME_WAIT_NS) & (cap.n_fin[p].min(1) > 0)
    # the client's SYNs (syn_rows) and the server's first packet after the first one
    nsyn = cap.n_syn[sid, CLIENT]
    ok &= nsyn > 0
    rows, sid, p, gap_ns, nsyn = rows[ok], sid[ok], p[ok], gap_ns[ok], nsyn[ok]
    if not len(rows):
        return []
    flags = t["flags"]  # its narrow type: whole-capture temporaries below are 2 bytes a row
    first_syn = first_syn_positions(cap, sid)  # positions in cap.order (nsyn > 0: found)
    answer = first_positions(cap, sid, cap.in_order("side") == SERVER, after=first_syn)
    has_answer = answer >= 0
    syn_row = cap.order[first_syn]
    ans_row = np.where(has_answer, cap.order[np.maximum(answer, 0)], syn_row)
    af = np.where(has_answer, flags[ans_row], 0)
    outcome = np.where(
        has_answer & ((af & (SYN | ACK)) == (SYN | ACK)) & (nsyn == 1),
        0,
        np.where(has_answer & ((af & (SYN | RST)) == 0), 1, np.where(nsyn > 1, 2, 3)),
    )
    ts = t["ts_ns"]
    first_ns = np.minimum(ts[syn_row], ts[ans_row])
    last_ns = np.maximum(ts[syn_row], ts[ans_row])
    # one finding per server, in the order each server first shows up
    out = []
    for server, idx in by_server(cap, sid):
        idx = idx[np.argsort(first_ns[idx], kind="stable")]
        inst = [
            _reuse_instance(
                cap.conn(int(sid[k])),
                int(first_syn[k] - cap.starts[sid[k]]),
                int(answer[k] - cap.starts[sid[k]]) if answer[k] >= 0 else None,
                int(gap_ns[k]),
                int(outcome[k]),
                int(cap.stream_numbers[p[k]]),  # named by the number the user sees
            )
            for k in idx[:FRAME_INSTANCES]
        ]
        nbad = int((outcome[idx] != 0).sum())
        story = _tell_reuse(server, len(idx), nbad, inst[0])
        nos = cap.stream_numbers[sid[idx]]
        out.append(
            finding_from_columns(
                diag, REUSE, story, inst, nos, int(first_ns[idx].min()), int(last_ns[idx].max())
            )
        )
    return out


OUTCOMES = ("accepted", "ack", "dropped", "other")


def _reuse_instance(
    c: Conn, syn: int, answer: int | None, gap_ns: int, outcome: int, previous: int
) -> Instance:
    """The evidence of one reusing connection: its first SYN and the server's answer."""
    note = (
        "server accepts the new connection (SYN-ACK)",
        "server answers with a bare ACK of the old connection (TIME_WAIT/CLOSE_WAIT)",
        "SYN retransmitted: the first one was ignored",
        "answer to the SYN",
    )[outcome]
    rows = [(syn, f"new SYN on the same 4-tuple {fmt_s(gap_ns / 1e9)} after the last one closed")]
    if answer is not None:
        rows.append((answer, note))
    return Instance(
        c, rows, {"gap_s": gap_ns / 1e9, "outcome": OUTCOMES[outcome], "previous": previous}
    )


def _tell_reuse(server: str, n: int, nbad: int, ex: Instance) -> Story:
    c = ex.conn
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
        knowledge.advice(
            "Do not bind fixed client source ports; widen net.ipv4.ip_local_port_range.",
            knowledge.Fix("any", None, None, "Do not bind fixed client source ports."),
            knowledge.sysctl("net.ipv4.ip_local_port_range", None, "widen it"),
        ),
        knowledge.advice(
            "Keep TCP timestamps on (net.ipv4.tcp_timestamps=1) and use net.ipv4.tcp_tw_reuse=1 "
            "on client hosts; reuse connections instead of opening one per request.",
            knowledge.sysctl(
                "net.ipv4.tcp_timestamps", "1", "keep TCP timestamps on (tcp_tw_reuse needs them)"
            ),
            knowledge.sysctl("net.ipv4.tcp_tw_reuse", "1", "on client hosts"),
            knowledge.Fix(
                "any", None, None, "reuse connections instead of opening one per request"
            ),
        ),
    ]
    facts = {"server": server, "not_accepted": nbad}
    errors = knowledge.TIMEOUT if nbad else knowledge.NONE_VISIBLE
    return Story(sev, summary, explanation, causes, fixes, errors, facts)


@rule(PILEUP)
def detect_pileup(diag: Diag) -> list[Finding]:
    cap = diag.cap
    if not cap.nstreams:
        return []
    f = cap.fins  # (only streams with a FIN can hold)
    ff = f.ns
    m = (ff[:, CLIENT] < NO_FIN) & (ff[:, SERVER] < NO_FIN) & (ff[:, CLIENT] <= ff[:, SERVER])
    m &= ~cap.has_rst[f.sids]
    m &= cap.n_syn[f.sids, CLIENT] > 0
    sids = f.sids[m]
    client_fin = ff[m, CLIENT]  # per stream of `sids`
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
    inv, ngroups = group_ids(key_c, key_s)
    for g in range(ngroups):
        mine = inv == g
        members = sids[mine]
        if len(members) < MIN_CONNS:
            continue
        fins = client_fin[mine]
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
        if projected > PORTS:
            # more than the ports there are: the rate cannot last, say what it would do
            at_rate = (
                f"Sustained, this rate would need about {projected:,.0f} TIME_WAIT sockets to "
                f"this one server port, more than the {PORTS:,} ephemeral ports of the default "
                "range: new connects would then fail with 'Cannot assign requested address'. "
                "TIME_WAIT itself is the normal end of a connection; only such a rate, kept up, "
                "makes it a problem."
            )
        else:
            at_rate = (
                f"At this rate the client holds about {projected:,.0f} TIME_WAIT sockets to this "
                f"one server port, out of {PORTS:,} ephemeral ports in the default range. "
                "TIME_WAIT itself is the normal end of a connection; it becomes a problem only "
                "when new connects fail with 'Cannot assign requested address'."
            )
        explanation = (
            f"The client opened {len(members)} connections to {c.server} within {fmt_s(span)} "
            f"(about {rate:,.0f} per second) and closed each one first, so its kernel keeps "
            "every 4-tuple in TIME_WAIT for a fixed 60 s (TCP_TIMEWAIT_LEN; tcp_fin_timeout "
            f"does not shorten it). {at_rate}"
        )
        causes = [
            "Connection reuse is off or ineffective: a new client object per request, "
            "Connection: close, or a pool too small for the concurrency (Go "
            "MaxIdleConnsPerHost default 2, HttpClient defaultMaxPerRoute 2).",
        ]
        fixes = [
            knowledge.advice(
                "Reuse connections: keep-alive pools sized for the concurrency (Go "
                "Transport.MaxIdleConnsPerHost, HttpClient setDefaultMaxPerRoute, OkHttp "
                "ConnectionPool, urllib3 PoolManager(maxsize=…)).",
                knowledge.Fix(
                    "go",
                    "http.Transport.MaxIdleConnsPerHost",
                    None,
                    "Go Transport.MaxIdleConnsPerHost",
                ),
                knowledge.Fix(
                    "java-apache-httpclient",
                    "setDefaultMaxPerRoute",
                    None,
                    "HttpClient setDefaultMaxPerRoute",
                ),
                knowledge.Fix(
                    "java-okhttp",
                    "ConnectionPool.maxIdleConnections",
                    None,
                    "OkHttp ConnectionPool",
                ),
                knowledge.Fix(
                    "python-requests", "PoolManager.maxsize", None, "urllib3 PoolManager(maxsize=…)"
                ),
            ),
            knowledge.advice(
                "On client hosts: net.ipv4.tcp_tw_reuse=1 (needs TCP timestamps) and a wider "
                "net.ipv4.ip_local_port_range; never SO_LINGER 0 to avoid TIME_WAIT.",
                knowledge.sysctl(
                    "net.ipv4.tcp_tw_reuse", "1", "on client hosts (needs TCP timestamps)"
                ),
                knowledge.sysctl("net.ipv4.ip_local_port_range", None, "a wider range"),
                knowledge.Fix("any", None, None, "never SO_LINGER 0 to avoid TIME_WAIT"),
            ),
        ]
        errors = knowledge.NO_PORT if sev >= Severity.WARNING else knowledge.NONE_VISIBLE
        facts = {"connections": len(members), "rate_per_s": round(rate, 1), "max_time_wait": alive}
        story = Story(sev, summary, explanation, causes, fixes, errors, facts)
        out.append(make_finding(diag, PILEUP, inst, story))
        # every member, by the numbers the user filters on (a watch window's stream ids are
        # not the watch's connection numbers)
        nos = unique_sorted(cap.stream_numbers[members])
        out[-1].count = len(nos)
        out[-1].streams = StreamNumbers(nos)
    return out
