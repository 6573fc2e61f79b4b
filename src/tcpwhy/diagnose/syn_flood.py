"""syn-flood and port-scan: thousands of handshakes that never complete, told as one finding each.

Both are found with numpy over the per-connection counts of `context.Capture`
(no Python loop per connection): a capture of a flood holds millions of
connections. A handshake "never completed" when the client sent SYNs (and
perhaps RSTs) but never an ACK of a SYN-ACK nor data.

syn-flood, per listener (address and port): the seconds in which at least
FLOOD_MIN_RATE handshakes to it began that never completed make the flood
window (from the first such second to the last); in that window at least
FLOOD_MIN_HANDSHAKES of them, from at least FLOOD_MIN_SOURCES distinct
addresses, and at least half of all handshakes begun with that listener.

port-scan, per source address: SYNs without data to at least SCAN_MIN_PORTS
distinct destination ports, at least half of them answered by RST or not at
all.

The connections of a flood or a scan are claimed (their SYNs and RSTs), so
syn-timeout, connection-refused and the RST rules leave them alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from tcpwhy.arrays import group_ids, key_counts
from tcpwhy.decode.table import ACK, COLUMNS, RST, SYN, format_addr, format_endpoint
from tcpwhy.diagnose import kernels, knowledge
from tcpwhy.diagnose.common import needs_streams
from tcpwhy.diagnose.context import CLIENT, SERVER, Capture, Conn, fmt_between, fmt_s
from tcpwhy.diagnose.model import Finding, Severity, Step, Story, StreamNumbers
from tcpwhy.diagnose.registry import Claim, Diag, plural, rule

ORDER = 10

KIND = "syn-flood"
SCAN_KIND = "port-scan"

FLOOD_MIN_HANDSHAKES = 100  # never-completed handshakes in the flood window
FLOOD_MIN_SOURCES = 10  # distinct source addresses among them
FLOOD_MIN_RATE = 10  # never-completed handshakes begun in one second: a flood second
FLOOD_MIN_SHARE = 0.5  # of all handshakes begun with the listener in the window
SCAN_MIN_PORTS = 20  # distinct destination ports from one source
SCAN_MIN_SHARE = 0.5  # of its attempts answered by RST or not at all
SYNACK_RETRY_S = 1.5  # a queued SYN-ACK is resent after 1 s (tcp_synack_retries)
TOP = 5

I64 = npt.NDArray[np.int64]
U64 = npt.NDArray[np.uint64]
B = npt.NDArray[np.bool_]


@dataclass
class Cols:
    """Per stream: the endpoints (`Capture.endpoints`, not copied) and how far the
    handshake got."""

    c_hi: U64
    c_lo: U64
    s_hi: U64
    s_lo: U64
    s_port: I64
    attempt: B  # the client sent a SYN
    half_open: B  # ... and then nothing but SYNs and RSTs: never completed


def _cols(diag: Diag) -> Cols:
    got: Cols | None = diag.cache.get("syn_flood_cols")
    if got is not None:
        return got
    cap = diag.cap
    ep = cap.endpoints
    attempt = cap.n_syn[:, CLIENT] > 0
    half_open = attempt & (cap.n_pkts[:, CLIENT] == cap.n_syn[:, CLIENT] + cap.n_rst[:, CLIENT])
    got = Cols(
        ep.client_hi,
        ep.client_lo,
        ep.server_hi,
        ep.server_lo,
        ep.server_port,
        attempt,
        half_open,
    )
    diag.cache["syn_flood_cols"] = got
    return got


def _addr(hi: int, lo: int, port: int | None = None) -> str:
    return format_addr(hi, lo) if port is None else format_endpoint(hi, lo, port)


def _top(n: int = TOP, *, counted: tuple[list[npt.NDArray[Any]], I64]) -> list[tuple[str, int]]:
    """The n most frequent addresses, with their counts (ties: lower address first), of
    `key_counts(hi, lo, ...)` of the addresses."""
    (g_hi, g_lo), counts = counted
    best = _most(counts, n)
    return [(_addr(int(g_hi[g]), int(g_lo[g])), int(counts[g])) for g in best.tolist()]


def _most(counts: I64, n: int) -> I64:
    """The indices of the n largest counts, largest first, equal counts in index order: the
    first n of a stable argsort of the negated counts. Only the counts that can be among
    the n are sorted (a flood has millions of sources), found from a histogram of the
    counts (the n-th largest is the largest c that at least n counts reach), where a
    partition of millions of counts took a tenth of a second."""
    if len(counts) > n:
        reach = np.cumsum(np.bincount(counts)[::-1])[::-1]  # reach[c]: how many are >= c
        cand = np.flatnonzero(counts >= int(np.flatnonzero(reach >= n)[-1]))
    else:
        cand = np.arange(len(counts))
    return cand[np.argsort(-counts[cand], kind="stable")][:n]


def _top_text(top: list[tuple[str, int]]) -> str:
    return ", ".join(f"{a} ({n:,})" for a, n in top)


def _rows_of(cap: Capture, sids: I64) -> B:
    m = np.zeros(cap.nstreams, np.bool_)
    m[sids] = True
    return m[cap.stream]


def _syns(cap: Capture, sids: I64) -> tuple[int, float, float, int]:
    """The client's SYNs in the streams `sids`: how many, over how long (s), per second, and
    the most in one second of the capture (`kernels.member_syns`: one pass over the rows,
    where numpy's masks and the SYNs' times were capture-sized temporaries)."""
    member = np.zeros(cap.nstreams, np.bool_)
    member[sids] = True
    out = np.zeros(4, np.int64)
    t = cap.table
    kernels.member_syns(
        np.ascontiguousarray(cap.stream, np.int64),
        np.ascontiguousarray(t["flags"], COLUMNS["flags"][0]),
        np.ascontiguousarray(cap.side, np.int8),
        np.ascontiguousarray(t["ts_ns"], COLUMNS["ts_ns"][0]),
        member,
        CLIENT,
        cap.start_ns,
        out,
    )
    n, lo, hi, peak = (int(x) for x in out)
    if not n:
        return 0, 0.0, 0.0, 0
    dur = (hi - lo) / 1e9
    return n, dur, n / max(dur, 1.0), peak


class _ByTime(NamedTuple):
    """Streams of a finding by when they began: the first few, the first start, the last end."""

    first: I64  # positions in the streams given, earliest first (ties in their order)
    first_ns: int
    last_ns: int


def _by_time(first_ns: I64, last_ns: I64, sids: I64, n: int) -> _ByTime:
    """The `n` of `sids` that began first, as the first n of a stable argsort of their start
    times (`kernels.earliest`, one pass: a flood's 3 million times were gathered, partitioned
    and sorted in numpy), and the span of them all."""
    pos = np.empty(max(n, 1), np.int64)
    span = np.zeros(2, np.int64)
    k = kernels.earliest(
        np.ascontiguousarray(first_ns, np.int64),
        np.ascontiguousarray(last_ns, np.int64),
        np.ascontiguousarray(sids, np.int64),
        n,
        pos,
        span,
    )
    return _ByTime(pos[:k], int(span[0]), int(span[1]))


def _when(diag: Diag, sids: I64) -> tuple[_ByTime, str]:
    """The streams by time (`_by_time`, the first of them a finding's examples) and when
    they were seen, in words."""
    cap = diag.cap
    by_time = _by_time(cap.first_ns, cap.last_ns, sids, max(20, diag.settings.examples))
    return by_time, fmt_between(cap.start_ns, by_time.first_ns, by_time.last_ns)


def _finding(
    diag: Diag, kind: str, sids: I64, story: Story, timeline: list[Step], by_time: _ByTime
) -> Finding:
    """The finding of streams `sids` (ascending), `by_time` as `_when` gives it."""
    cap = diag.cap
    earliest = sids[by_time.first]
    # each stream's own number without a filter: no gather of a flood's millions
    nos = sids if cap.numbers_are_ids else cap.stream_numbers[sids]
    frames = [s.frame for s in timeline]
    rows = cap.order[cap.starts[earliest[:20]]]
    frames += [int(f) for f in cap.table["frame"][rows] if int(f) not in frames]
    return Finding(
        kind=kind,
        severity=story.severity,
        summary=story.summary,
        streams=StreamNumbers(nos if bool((nos[1:] >= nos[:-1]).all()) else np.sort(nos)),
        frames=frames,
        timeline=timeline,
        explanation=story.explanation,
        causes=story.causes,
        fixes=story.fixes,
        errors=story.errors,
        count=len(sids),
        first_ns=by_time.first_ns,
        last_ns=by_time.last_ns,
        examples=[int(cap.stream_numbers[s]) for s in earliest[: diag.settings.examples]],
        facts=dict(story.facts),
    )


def _claim(diag: Diag, sids: I64) -> None:
    diag.claim_streams(sids, Claim.SYN)
    diag.claim_streams(sids, Claim.RST)
    diag.claim_streams(sids, Claim.RETRANS)


# -- syn-flood -------------------------------------------------------------------------------


@rule(KIND)
@needs_streams
def detect_flood(diag: Diag) -> list[Finding]:
    cap = diag.cap
    k = _cols(diag)
    ho = np.flatnonzero(k.half_open & ~diag.claimed_mask(Claim.SYN))
    inv, ng = group_ids(k.s_hi, k.s_lo, k.s_port, at=ho)
    big = np.flatnonzero(np.bincount(inv, minlength=ng) >= FLOOD_MIN_HANDSHAKES)
    # one listener (a flood's usual case): its streams are `ho` itself, not a copy
    listeners = [ho] if ng == 1 and len(big) else [ho[inv == g] for g in big.tolist()]
    del ho, inv
    out = []
    window = np.zeros(2, np.int64)
    while listeners:
        sids = listeners.pop(0)  # not held once its members are picked
        # the seconds in which FLOOD_MIN_RATE of them began, from the first to the last
        # such; its members written over `sids` (each at or before its own place)
        m = kernels.flood_window(
            np.ascontiguousarray(cap.first_ns, np.int64),
            sids,
            cap.start_ns,
            FLOOD_MIN_RATE,
            sids,
            window,
        )
        if m < 0:
            continue
        members = sids[:m]
        del sids
        # the window's seconds as capture times: [lo_ns, hi_ns) holds exactly the streams
        # whose second is the first to the last, tested without a second number per stream
        lo_ns = cap.start_ns + int(window[0]) * 1_000_000_000
        hi_ns = cap.start_ns + (int(window[1]) + 1) * 1_000_000_000
        if len(members) < FLOOD_MIN_HANDSHAKES:
            continue
        # every handshake begun with the listener in the window, as a mask (a flood's
        # millions as index arrays were 100 MB at the peak of `analyze`)
        s0 = members[0]
        same = k.attempt & (k.s_hi == k.s_hi[s0]) & (k.s_lo == k.s_lo[s0])
        same &= k.s_port == k.s_port[s0]
        same &= cap.first_ns >= lo_ns
        same &= cap.first_ns < hi_ns
        if len(members) < FLOOD_MIN_SHARE * int(np.count_nonzero(same)):
            continue
        completed = np.flatnonzero(same & ~k.half_open)
        del same
        counted = key_counts(k.c_hi, k.c_lo, at=members)
        nsrc = len(counted[1])
        if nsrc < FLOOD_MIN_SOURCES:
            continue
        # what the finding tells of the sources, before its own temporaries are made
        sources = _Sources(nsrc, int(np.count_nonzero(counted[1] == 1)), _top(counted=counted))
        del counted
        server = _addr(int(k.s_hi[s0]), int(k.s_lo[s0]), int(k.s_port[s0]))
        out.append(_flood(diag, server, members, sources, completed))
        _claim(diag, members)
    return out


class _Sources(NamedTuple):
    """A flood's source addresses: how many, how many sent one attempt, the most active."""

    n: int
    once: int
    top: list[tuple[str, int]]


def _flood(diag: Diag, server: str, members: I64, sources: _Sources, completed: I64) -> Finding:
    cap = diag.cap
    t = cap.table
    nsrc, once_src, top = sources
    nsyn, dur, rate, peak = _syns(cap, members)
    n = len(members)
    # how the server answered, and what the clients did, counted in one pass over the members
    said = np.zeros(5, np.int64)
    counts = (cap.n_synack, cap.n_rst, cap.n_pkts, cap.n_syn)
    count16 = all(c.dtype == np.int16 for c in counts)
    (kernels.member_answers16 if count16 else kernels.member_answers)(
        members,
        *(np.ascontiguousarray(c, np.int16 if count16 else np.int32) for c in counts),
        CLIENT,
        said,
    )
    answered, reset, silent, syn_again, client_rst = (int(x) for x in said)
    # SYN cookies on the wire: a cookie keeps window scale and SACK-permitted only inside a
    # timestamp, so a SYN offering them without timestamps gets a SYN-ACK without them.
    # Asked only of the members answered with one (an unanswered flood's per-member
    # arrays of rows and times were 90 MB at the peak of `analyze`, for no SYN-ACK at all)
    if answered:
        n_sa = cap.n_synack[members, SERVER]
        got_sa = n_sa > 0
        with_synack, n_sa = members[got_sa], n_sa[got_sa]
        # per-packet masks: in the table's own dtype, and dropped once the members' are made
        flags = t["flags"] & (SYN | ACK | RST)
        rows = _rows_of(cap, with_synack)
        fsyn = cap.first_rows(rows & (flags == SYN) & (cap.side == CLIENT))[with_synack]
        fsa = cap.first_rows(rows & (flags == (SYN | ACK)) & (cap.side == SERVER))[with_synack]
        del flags, rows
    else:
        with_synack = n_sa = np.zeros(0, np.int64)
        fsyn = fsa = np.zeros(0, np.int32)
    has = fsyn >= 0
    ws_syn = np.where(has, t["opt_ws"][fsyn], -1) >= 0
    sack_syn = np.where(has, t["opt_sack_perm"][fsyn], False)
    ts_syn = np.where(has, t["opt_ts"][fsyn], True)
    ws_sa = np.where(has, t["opt_ws"][fsa], -1) >= 0
    sack_sa = np.where(has, t["opt_sack_perm"][fsa], False)
    judged = has & ~ts_syn & (ws_syn | sack_syn)
    stripped = judged & ((ws_syn & ~ws_sa) | (sack_syn & ~sack_sa))
    kept = judged & ~stripped
    # a queued SYN-ACK is resent after 1 s without an ACK; a cookie never is
    sa_ts = np.where(has, t["ts_ns"][fsa], cap.end_ns)
    old = cap.end_ns - sa_ts >= SYNACK_RETRY_S * 1e9
    resent = int((old & (n_sa > 1)).sum())
    once = int((old & (n_sa == 1)).sum())
    # the per-member temporaries go before the finding's text and facts are made
    del fsyn, fsa, has, ws_syn, sack_syn, ts_syn, ws_sa, sack_sa, sa_ts, old
    by_time, between = _when(diag, members)
    facts: dict[str, Any] = {
        "server": server,
        "handshakes": n,
        "syns": nsyn,
        "sources": nsrc,
        "sources_seen_once": once_src,
        "duration_s": round(dur, 6),
        "syn_per_s": round(rate, 1),
        "peak_syn_per_s": peak,
        "top_sources": [[a, c] for a, c in top],
        "answered_synack": answered,
        "answered_rst": reset,
        "unanswered": silent,
        "synack_without_offered_options": int(stripped.sum()),
        "synack_with_offered_options": int(kept.sum()),
        "synack_retransmitted": resent,
        "synack_not_retransmitted": once,
        "syn_retransmitted": syn_again,
        "client_rst": client_rst,
        "completed_during": len(completed),
    }
    pace = f"{rate:,.0f} SYN/s, " if dur >= 1 else ""
    summary = (
        f"SYN flood on {server}: {plural(n, 'handshake')} never completed, from "
        f"{plural(nsrc, 'source address', 'source addresses')} in {fmt_s(dur)} "
        f"({pace}peak {peak:,} SYNs in one second)"
    )
    if answered:
        summary += f"; the server answered {answered:,} with SYN-ACK"
        if stripped.any():
            summary += f" ({int(stripped.sum()):,} look like SYN cookies)"
    if silent:
        summary += f"; {silent:,} got no answer"
    paras = [
        f"{between[0].upper()}{between[1:]}, {plural(n, 'connection attempt')} "
        f"to {server} sent {plural(nsyn, 'SYN')} and never completed the handshake: no ACK of "
        f"a SYN-ACK, no data. They came from {plural(nsrc, 'address', 'addresses')}"
        + (
            f" ({once_src:,} of them seen only once, as spoofed source addresses are)"
            if once_src
            else ""
        )
        + (
            f"; the most active: {_top_text(top)}. "
            if top[0][1] > 1
            else "; each sent one attempt. "
        )
        + (
            f"{plural(len(completed), 'other connection')} to {server} completed "
            f"{'its handshake' if len(completed) == 1 else 'their handshakes'} in the same time."
            if len(completed)
            else f"No connection to {server} completed its handshake in that time."
        )
    ]
    ans = (
        f"The server answered {answered:,} with a SYN-ACK, {reset:,} with "
        f"a RST, and {silent:,} not at all (as far as this capture shows)."
    )
    if answered:
        ans += (
            " Each SYN-ACK to an address that does not answer leaves a half-open entry "
            "(SYN_RECV) in the listener's SYN queue until tcp_synack_retries run out "
            "(default 5: about a minute) — unless it was a SYN cookie, for which the kernel "
            "keeps nothing."
        )
    paras.append(ans)
    if judged.any():
        cookie = (
            f"{plural(int(stripped.sum()), 'SYN-ACK')} left out the window scale or "
            "SACK-permitted option that their SYNs offered (without timestamps), "
            f"{int(kept.sum()):,} kept them. "
        )
        if stripped.any():
            cookie += (
                "Leaving them out is what a Linux SYN cookie does: the cookie lives in the "
                "sequence number and can carry those options only inside a TCP timestamp, so "
                "the listener's SYN queue was full and tcp_syncookies was answering for it. "
            )
        paras.append(cookie.strip())
    if resent or once:
        paras.append(
            f"Of the SYN-ACKs sent at least {SYNACK_RETRY_S:g} s before the capture ended, "
            f"{resent} were retransmitted (the server kept those half-open connections in its "
            f"SYN queue) and {once} were not (a SYN cookie is never retransmitted; a SYN-ACK "
            "lost beyond the capture point would also look so)."
        )
    paras.append(
        "The wire cannot prove SYN cookies: the cookie is the SYN-ACK's sequence number, "
        "which looks random either way, and a SYN that offers timestamps keeps all its options "
        "in a cookie SYN-ACK. The server's counters can: `nstat -az TcpExtSyncookiesSent "
        "TcpExtSyncookiesRecv TcpExtListenDrops`, and dmesg 'Possible SYN flooding on port'."
    )
    if silent:
        paras.append(
            f"{plural(silent, 'attempt')} drew no answer at all: a listener whose "
            "SYN queue is full drops SYNs when cookies are off (tcp_syncookies=0), or a "
            "firewall or the capture's position hides the answers. A legitimate client among "
            "them retransmits its SYN and its connect() fails with ETIMEDOUT."
        )
    if syn_again:
        paras.append(
            f"{plural(syn_again, 'attempt')} retransmitted its SYN: a real TCP stack (a "
            "legitimate client caught in the flood, or a bot using real sockets); a spoofing "
            "flood tool sends each SYN once."
        )
    if client_rst:
        paras.append(
            f"{plural(client_rst, 'source')} answered the SYN-ACK with a RST: a host that "
            "really owns that address and never sent the SYN (its address was spoofed)."
        )
    causes = [
        "A SYN flood (denial of service), usually with spoofed source addresses: the "
        "SYN-ACKs go to hosts that never asked, and the SYN queue fills with half-open "
        "connections.",
        "Real clients whose handshakes cannot complete: the SYN-ACKs are lost on the way "
        "back (asymmetric routing, NAT, a firewall dropping them) while clients keep "
        "connecting.",
        "A load test or a scanner opening connections without completing them.",
    ]
    fixes = [
        knowledge.advice(
            "Keep net.ipv4.tcp_syncookies=1 (the Linux default: cookies once the SYN queue "
            "overflows; 2 sends them always), so the listener keeps admitting real clients "
            "during a flood.",
            knowledge.sysctl(
                "net.ipv4.tcp_syncookies",
                "1",
                "cookies once the SYN queue overflows (the default; 2 sends them always)",
            ),
        ),
        knowledge.advice(
            "Give the SYN queue room: it is bounded by the listen() backlog (capped by "
            "net.core.somaxconn) and by net.ipv4.tcp_max_syn_backlog; raise both, and the "
            "application's backlog (nginx `listen … backlog=N`, systemd `Backlog=`).",
            knowledge.sysctl("net.core.somaxconn", None, "caps every listen() backlog"),
            knowledge.sysctl("net.ipv4.tcp_max_syn_backlog", None, "bounds the SYN queue"),
            knowledge.Fix("nginx", "listen backlog", None, "nginx `listen … backlog=N`"),
            knowledge.Fix("systemd", "Backlog", None, "systemd socket units: `Backlog=`"),
        ),
        knowledge.advice(
            "Free half-open entries sooner: net.ipv4.tcp_synack_retries (default 5, about 63 s "
            "in SYN_RECV; 2 gives about 7 s).",
            knowledge.sysctl(
                "net.ipv4.tcp_synack_retries",
                "2",
                "default 5, about 63 s in SYN_RECV; 2 gives about 7 s",
            ),
        ),
        knowledge.advice(
            "Filter before the host: SYN rate limits per source (nft `meter`/`limit rate`), a "
            "SYN proxy (nft `synproxy`, iptables SYNPROXY) or the provider's DDoS protection; "
            "reverse-path filtering (net.ipv4.conf.all.rp_filter=1) at the edge drops spoofed "
            "sources.",
            knowledge.Fix(
                "nftables",
                None,
                None,
                "SYN rate limits per source (`meter`/`limit rate`) or a SYN proxy (`synproxy`) before the host",
            ),
            knowledge.sysctl(
                "net.ipv4.conf.all.rp_filter",
                "1",
                "reverse-path filtering at the edge drops spoofed sources",
            ),
            knowledge.Fix("any", None, None, "the provider's DDoS protection"),
        ),
    ]
    errors = knowledge.TIMEOUT + knowledge.SYN_FLOOD_LOG
    severity = Severity.ERROR if silent or syn_again else Severity.WARNING
    story = Story(severity, summary, "\n\n".join(paras), causes, fixes, errors, facts)
    cookies = with_synack[stripped]
    # the earliest member's handshake, unless a SYN cookie seems to have answered one
    first = int(members[by_time.first[0]]) if not len(cookies) else _earliest_of(cap, cookies)
    timeline = _handshake_steps(cap.conn(first))
    return _finding(diag, KIND, members, story, timeline, by_time)


def _earliest_of(cap: Capture, sids: I64) -> int:
    """The stream of `sids` that began first (the first of them, of equal times)."""
    return int(sids[np.argmin(cap.first_ns[sids])])


def _opts(t: Any, row: int) -> list[str]:
    have = (
        ("MSS", int(t["opt_mss"][row]) >= 0),
        ("SACK_PERM", bool(t["opt_sack_perm"][row])),
        ("TS", bool(t["opt_ts"][row])),
        ("WS", int(t["opt_ws"][row]) >= 0),
    )
    return [name for name, ok in have if ok]


def _handshake_steps(c: Conn) -> list[Step]:
    """The opening packets of one connection, each with what it shows."""
    t = c.cap.table
    steps = []
    offered: list[str] = []
    for i in range(min(c.n, 8)):
        f = c.flags[i] & (SYN | ACK | RST)
        row = int(c.rows[i])
        if c.side[i] == CLIENT and f == SYN:
            offered = _opts(t, row)
            note = f"SYN from {c.client_ip}, one of the flood's sources, offering " + (
                " ".join(offered) or "no options"
            )
        elif c.side[i] == SERVER and f == (SYN | ACK):
            got = _opts(t, row)
            note = "server answers with SYN-ACK: " + (" ".join(got) or "no options")
            left = [o for o in offered if o in ("SACK_PERM", "WS") and o not in got]
            if left and "TS" not in offered:
                note += f" ({' and '.join(left)} left out: a SYN cookie)"
        elif c.side[i] == CLIENT and f & RST:
            note = "the source resets: it never sent that SYN"
        else:
            continue
        steps.append(c.step(i, note))
    return steps


# -- port-scan -------------------------------------------------------------------------------


@rule(SCAN_KIND)
@needs_streams
def detect_scan(diag: Diag) -> list[Finding]:
    cap = diag.cap
    k = _cols(diag)
    att = np.flatnonzero(k.attempt & (cap.n_data[:, CLIENT] == 0) & ~diag.claimed_mask(Claim.SYN))
    src, nsrc = group_ids(k.c_hi, k.c_lo, at=att)
    pair, npair = group_ids(src, k.s_port[att])
    pair_src = np.zeros(npair, np.int64)
    pair_src[pair] = src
    ports = np.bincount(pair_src, minlength=nsrc)
    out = []
    for g in np.flatnonzero(ports >= SCAN_MIN_PORTS):
        sids = att[src == g]
        opened = cap.n_synack[sids, SERVER] > 0
        if int((~opened).sum()) < SCAN_MIN_SHARE * len(sids):
            continue
        out.append(_scan(diag, sids, int(ports[g])))
        _claim(diag, sids)
    return out


def _scan(diag: Diag, sids: I64, nports: int) -> Finding:
    cap = diag.cap
    k = _cols(diag)
    n = len(sids)
    opened = cap.n_synack[sids, SERVER] > 0
    closed = ~opened & (cap.n_rst[sids, SERVER] > 0)
    filtered = ~opened & ~closed
    # after a SYN-ACK, a SYN (half-open) scan resets at once; a connect() scan ACKs first
    half = opened & (cap.n_pkts[sids, CLIENT] == cap.n_syn[sids, CLIENT] + cap.n_rst[sids, CLIENT])
    syn_again = int((cap.n_syn[sids, CLIENT] > 1).sum())
    _, dur, rate, peak = _syns(cap, sids)
    s0 = int(sids[0])
    scanner = _addr(int(k.c_hi[s0]), int(k.c_lo[s0]))
    hosts_counted = key_counts(k.s_hi, k.s_lo, at=sids)
    nhosts = len(hosts_counted[1])
    targets = _top(counted=hosts_counted)
    port_list = k.s_port[sids]
    open_ports = sorted({int(p) for p in port_list[opened]})
    by_time, between = _when(diag, sids)
    facts: dict[str, Any] = {
        "scanner": scanner,
        "attempts": n,
        "ports": nports,
        "port_range": [int(port_list.min()), int(port_list.max())],
        "hosts": nhosts,
        "top_targets": [[a, c] for a, c in targets],
        "open": int(opened.sum()),
        "open_ports": open_ports[:50],
        "closed": int(closed.sum()),
        "filtered": int(filtered.sum()),
        "half_open_scan": int(half.sum()),
        "syn_retransmitted": syn_again,
        "duration_s": round(dur, 6),
        "syn_per_s": round(rate, 1),
        "peak_syn_per_s": peak,
    }
    hosts = targets[0][0] if nhosts == 1 else plural(nhosts, "host")
    summary = (
        f"port scan from {scanner}: {plural(n, 'SYN probe')} to {nports:,} ports of {hosts} in "
        f"{fmt_s(dur)} — {int(opened.sum()):,} open, {int(closed.sum()):,} closed (RST), "
        f"{int(filtered.sum()):,} no answer"
    )
    shown = ", ".join(str(p) for p in open_ports[:10]) + (" …" if len(open_ports) > 10 else "")
    paras = [
        f"{between[0].upper()}{between[1:]}, {scanner} sent SYNs to "
        f"{nports:,} different ports (from {port_list.min()} to {port_list.max()}) on "
        f"{plural(nhosts, 'host')} ({_top_text(targets)}), {rate:,.0f} per second at peak "
        f"{peak:,} in one second, and sent no data on any of them. That is a port scan: a "
        "client with work to do connects to the few ports its service uses.",
        f"{int(closed.sum()):,} were answered by RST (closed: nothing listens there), "
        f"{int(filtered.sum()):,} not at all (filtered: a firewall drops them, or nothing at "
        f"that address) and {int(opened.sum()):,} with a SYN-ACK (open"
        + (f": {shown}" if open_ports else "")
        + ")."
        + (
            f" On {int(half.sum()):,} of the open ones the scanner reset right after the "
            "SYN-ACK without completing the handshake: a SYN (half-open) scan, such as "
            "nmap -sS or masscan, which never reaches the application."
            if half.any()
            else ""
        ),
    ]
    if syn_again:
        paras.append(
            f"{plural(syn_again, 'probe')} sent its SYN again after no answer: scanners "
            "retry filtered ports once or twice."
        )
    paras.append(
        "These refused and unanswered SYNs are the scanner's, not failing clients': they "
        "are not reported as connection-refused or syn-timeout."
    )
    causes = [
        "A security or inventory scan (nmap, masscan, a vulnerability scanner) by your own "
        "team or provider.",
        "Reconnaissance from outside, or from a compromised host inside the network.",
        "Monitoring or service discovery misconfigured to probe a range of ports.",
    ]
    fixes = [
        f"Find out who owns {scanner} and whether the scan is expected; if not, block it "
        "at the edge and look at that host.",
        "Expose only the ports a host serves (default-deny firewall); a DROP policy answers "
        "nothing and makes scans slow, a closed port's RST tells the scanner the host is up.",
        "Rate-limit new connections per source (nft `meter`/`limit rate`) to slow scans "
        "down; the kernel's RSTs for closed ports are rate-limited by "
        "net.ipv4.icmp_ratelimit only for ICMP, not for TCP.",
    ]
    errors = [
        "the scanned services usually log nothing: the kernel answers closed ports with RST "
        "and a SYN scan never completes a handshake; a connect() scan shows up as "
        "connections closed or reset right after accept() with no request",
        "the scanning tool reports each port as open, closed or filtered",
    ]
    story = Story(Severity.WARNING, summary, "\n\n".join(paras), causes, fixes, errors, facts)
    timeline = _scan_timeline(diag, sids, opened, closed)
    return _finding(diag, SCAN_KIND, sids, story, timeline, by_time)


def _scan_timeline(diag: Diag, sids: I64, opened: B, closed: B) -> list[Step]:
    cap = diag.cap
    steps: list[Step] = []
    for sel, note in (
        (closed, "closed port: the server's kernel answers with RST"),
        (opened, "open port: SYN-ACK"),
    ):
        if not sel.any():
            continue
        c = cap.conn(_earliest_of(cap, sids[sel]))
        for i in range(min(c.n, 4)):
            f = c.flags[i] & (SYN | ACK | RST)
            if c.side[i] == CLIENT and f == SYN and i == 0:
                steps.append(c.step(i, f"probe: SYN to port {c.server_addr.rsplit(':', 1)[1]}"))
            elif c.side[i] == SERVER:
                steps.append(c.step(i, note))
            elif c.side[i] == CLIENT and f & RST:
                steps.append(c.step(i, "the scanner resets without completing the handshake"))
    return sorted(steps, key=lambda s: (s.ts_ns, s.frame))
