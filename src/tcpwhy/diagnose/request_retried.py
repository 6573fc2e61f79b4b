"""request-retried: the same request again on a new connection right after a failed one.

Matched on the first bytes of the client's first payload: the application
(or its HTTP library) retried. Worth knowing whether a non-idempotent
request was retried after the server's kernel had accepted the original.
"""

from __future__ import annotations

import numpy as np

from tcpwhy.diagnose import http, tls
from tcpwhy.diagnose.common import Group, Hits
from tcpwhy.diagnose.context import CLIENT, SERVER, fmt_s
from tcpwhy.diagnose.knowledge import Fix, advice
from tcpwhy.diagnose.model import Finding, Severity, Story
from tcpwhy.diagnose.registry import Diag, plural, rule
from tcpwhy.tcp.seq import seq_add

ORDER = 240

KIND = "request-retried"
PREFIX = 64
WINDOW_NS = 10_000_000_000


@rule(KIND)
def detect(diag: Diag) -> list[Finding]:
    cap = diag.cap
    if not cap.nstreams:
        return []
    failed = np.flatnonzero(cap.has_rst & (cap.n_data[:, CLIENT] > 0))
    if not len(failed):
        return []
    fresh = np.flatnonzero((cap.n_syn[:, CLIENT] > 0) & (cap.n_data[:, CLIENT] > 0))
    hits = Hits()
    ep = cap.endpoints
    for sid in failed:
        c = cap.conn(int(sid))
        r = c.first_rst()
        assert r is not None
        last = c.last_data_before(r + 1, CLIENT)
        if last is None:
            continue
        # the start of the failed message: a parsed request, else the last client segment
        m = http.request_at(c, last)
        start = m.i if m is not None else last
        closing = tls.closing_rows(c)  # a close_notify is no answer
        # the server's data between the request and the reset, from the connection's kept
        # columns: its lists of every row's side and length were a fifth of the rule's time
        # on wrk's keep-alive connections (thousands of requests each)
        between = (c._np_side[start:r] == SERVER) & (c._np_plen[start:r] > 0)
        if any(j + start not in closing for j in np.flatnonzero(between).tolist()):
            continue  # the request was answered: not a failed request
        head = c.payload(start, PREFIX)
        sizes = m.tls_sizes if m is not None else ()
        if len(head) < 4:
            continue
        t_fail = c.ts[r]
        later = fresh[
            (cap.first_ns[fresh] >= c.ts[start]) & (cap.first_ns[fresh] <= t_fail + WINDOW_NS)
        ]
        # the same server and client address (what the checks below compare as text), by
        # numpy: a busy capture opens thousands of connections in the window
        s1 = int(c.sid)
        later = later[
            (ep.server_hi[later] == ep.server_hi[s1])
            & (ep.server_lo[later] == ep.server_lo[s1])
            & (ep.server_port[later] == ep.server_port[s1])
            & (ep.client_hi[later] == ep.client_hi[s1])
            & (ep.client_lo[later] == ep.client_lo[s1])
        ]
        for s2 in later:
            if int(s2) == c.sid:
                continue
            c2 = cap.conn(int(s2))
            if c2.server != c.server or c2.client_ip != c.client_ip:
                continue
            first: int | None
            if sizes:
                # encrypted: the retry's first request has the same record sizes, on a
                # connection to the same server name
                m2 = tls.first_request(c2)
                t1, t2 = tls.of(c), tls.of(c2)
                if m2 is None or m2.tls_sizes != sizes or t1 is None or t2 is None:
                    continue
                if t1.sni != t2.sni:
                    continue
                first = m2.i
            else:
                first = next(
                    (i for i in range(c2.n) if c2.side[i] == CLIENT and c2.plen[i] > 0), None
                )
                if first is None or c2.payload(first, PREFIX)[: len(head)] != head:
                    continue
            reply = next(
                (i for i in range(first, c2.n) if c2.side[i] == SERVER and c2.plen[i] > 0), None
            )
            resp = http.messages(c2)
            status = next(
                (
                    (f"a response {x.line}" if x.encrypted else x.line)
                    for x in resp
                    if not x.is_request
                ),
                None,
            )
            accepted = any(
                c.side[j] == SERVER and c.acks(j, seq_add(c.seq[start], c.plen[start]))
                for j in range(start, c.n)
                if not c.is_rst(j)
            )
            rows = [
                (start, f"{http.describe_request(c, start)} sent on the failing connection"),
                (r, "connection reset"),
            ]
            hits.add(
                c.server,
                c,
                rows,
                {
                    "retry_stream": c2.no,
                    "after_s": round((c2.ts[first] - t_fail) / 1e9, 6),
                    "request": http.describe_request(c, start),
                    "method": m.method if m else "",
                    "answered": status
                    or (f"{c2.plen[reply]} bytes" if reply is not None else None),
                    "server_acked_original": accepted,
                    "encrypted": bool(sizes),
                },
            )
            break
    return hits.findings(diag, KIND, _tell)


def _tell(g: Group) -> Story:
    server, c, n, f = g.key, g.c, g.n, g.facts
    risky = [
        i
        for i in g.inst
        if i.facts["method"]
        and i.facts["method"] not in http.IDEMPOTENT
        and i.facts["server_acked_original"]
    ]
    summary = f"{plural(n, 'failed request')} to {server} retried on a new connection" + (
        f" (answered: {f['answered']})" if f["answered"] else ""
    )
    same = (
        "a request of the same size (likely the same request: it is encrypted)"
        if f["encrypted"]
        else f"the same request (its first {PREFIX} bytes match)"
    )
    explanation = (
        f"{f['request']} failed on stream {c.no} and {same} left again {fmt_s(f['after_s'])} later on a new connection, "
        f"stream {f['retry_stream']}"
        + (f", which was answered ({f['answered']})" if f["answered"] else "")
        + ". The client library or the application retried; the user may never have seen "
        "the failure, only its latency."
    )
    if risky:
        explanation += (
            f" {plural(len(risky), 'retried request')} used a non-idempotent method whose "
            "original the server's kernel had acknowledged: the server application may have "
            "processed it twice."
        )
    elif f["method"] and not f["server_acked_original"]:
        explanation += (
            " The server never acknowledged the original, so it cannot have processed it: "
            "the retry was safe."
        )
    fixes = [
        advice(
            "Keep retries limited to idempotent requests, or send an Idempotency-Key so the "
            "server can drop duplicates.",
            Fix("any", None, None, "send an Idempotency-Key so the server can drop duplicates"),
            Fix(
                "python-requests",
                "Retry.allowed_methods",
                None,
                "Python requests/urllib3: Retry(allowed_methods=…) (its default leaves POST out)",
            ),
            Fix(
                "nginx",
                "proxy_next_upstream",
                None,
                "nginx: proxy_next_upstream without non_idempotent (the default: POST is not "
                "passed to the next upstream)",
            ),
            Fix(
                "go",
                None,
                None,
                "Go's http.Transport retries only idempotent requests (or ones with an "
                "Idempotency-Key header) itself",
            ),
        ),
        "Remove the cause of the first failure (see the other findings) rather than relying "
        "on the retry.",
    ]
    facts = {"server": server, "non_idempotent": len(risky)}
    errors = ["none, if the retry succeeded; a latency spike"]
    sev = Severity.WARNING if risky else Severity.INFO
    return Story(
        sev,
        summary,
        explanation,
        ["A failure on the first connection (see the other findings)."],
        fixes,
        errors,
        facts,
    )
