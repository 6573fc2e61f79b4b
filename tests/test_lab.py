"""The lab on the real kernel, checked packet by packet.

Each scenario runs in its own namespaces (root; skipped only without root or
namespaces, required under CI=true) and its capture is checked with plain
packet-level assertions on the packet table: which side sent SYN/FIN/RST/data
in which order, with which sequence and acknowledgment numbers and timing. The
same checks run, without root, on the captures shipped in tcpwhy/data/lab; there
timing is held to tight bounds, on a live run its upper bounds get a documented
slack (tests/gates.py) since the machine is loaded by the rest of the suite.
"""

from __future__ import annotations

import itertools
import os
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tcpwhy.capture import read_table
from tcpwhy.decode.table import ACK, FIN, RST, SYN
from tcpwhy.lab import ns as nsmod
from tcpwhy.lab.env import Options
from tcpwhy.lab.record import DATA_DIR, options_for
from tcpwhy.lab.runner import all_scenarios, run_scenario
from tests import lab_path_checks
from tests.gates import LIVE_SLACK_S
from tests.lab_path_checks import PATH_IPV6
from tests.lab_trace_checks import check_kernel_trace

PORT = 8080


@dataclass(frozen=True)
class P:
    """One TCP packet of the capture, seen from the scenario's client/server roles."""

    i: int
    t: float
    c2s: bool
    flags: int
    seq: int
    ack: int
    n: int
    win: int
    cport: int
    sport: int
    ttl: int = 0  # IPv4 TTL or IPv6 hop limit

    def has(self, f: int) -> bool:
        return bool(self.flags & f)

    @property
    def pure_ack(self) -> bool:
        return self.flags & (SYN | FIN | RST) == 0 and self.n == 0

    @property
    def tag(self) -> str:
        s = "".join(c for f, c in ((SYN, "S"), (FIN, "F"), (RST, "R")) if self.flags & f)
        s += "." if self.flags & ACK else ""
        s += f"+{self.n}" if self.n else ""
        return ("c:" if self.c2s else "s:") + s


def packets(path: str | Path, port: int = PORT) -> list[P]:
    t = read_table(str(path))
    out = []
    t0 = int(t.ts_ns[0]) if len(t) else 0
    for i in range(len(t)):
        sp, dp = int(t.sport[i]), int(t.dport[i])
        if port not in (sp, dp):
            continue
        c2s = dp == port
        out.append(
            P(
                i,
                (int(t.ts_ns[i]) - t0) / 1e9,
                c2s,
                int(t.flags[i]),
                int(t.seq[i]),
                int(t.ack[i]),
                int(t.payload_len[i]),
                int(t.win[i]),
                sp if c2s else dp,
                sp,
                int(t.ip_ttl[i]),
            )
        )
    return out


def conns(pk: list[P]) -> list[list[P]]:
    """Packets per client port, in order of the connections' first packet."""
    by: dict[int, list[P]] = {}
    for p in pk:
        by.setdefault(p.cport, []).append(p)
    return list(by.values())


def incarnations(pk: list[P]) -> list[list[P]]:
    """Like conns(), but a new client SYN on a 4-tuple starts a new connection."""
    out: list[list[P]] = []
    cur: dict[int, list[P]] = {}
    for p in pk:
        conn = cur.get(p.cport)
        if conn is None or (p.c2s and p.has(SYN) and p.seq != conn[0].seq):
            conn = cur[p.cport] = []
            out.append(conn)
        conn.append(p)
    return out


def flow(conn: list[P]) -> list[str]:
    return [p.tag for p in conn]


def first(conn: list[P], pred: Callable[[P], bool], after: int = -1) -> P:
    for p in conn:
        if p.i > after and pred(p):
            return p
    raise AssertionError(f"no such packet in {flow(conn)}")


def handshake_ok(conn: list[P]) -> None:
    assert flow(conn)[:3] == ["c:S", "s:S.", "c:."], flow(conn)


def no_rst(conn: list[P]) -> None:
    assert not any(p.has(RST) for p in conn), flow(conn)


def clean_close(conn: list[P]) -> None:
    """Both FINs, each acknowledged, no RST."""
    no_rst(conn)
    for c2s in (True, False):
        fin = first(conn, lambda p, c2s=c2s: p.c2s == c2s and p.has(FIN))
        first(
            conn, lambda p, c2s=c2s, fin=fin: p.c2s != c2s and p.ack == (fin.seq + 1) % 2**32, fin.i
        )


# -- per-scenario checks --------------------------------------------------------------------


def check_stale_keepalive(path: Path, o: Options, slack: float = 0.0) -> None:
    pk = packets(path, o.port)
    old, new = conns(pk)
    handshake_ok(old)
    fin = first(old, lambda p: not p.c2s and p.has(FIN))
    last_resp = [p for p in old if not p.c2s and p.n and p.i < fin.i][-1]
    idle = o.idle or 1.0
    assert idle - 0.05 <= fin.t - last_resp.t <= idle + 0.5 + slack, (
        "FIN after the server's idle timeout"
    )
    ack = first(old, lambda p: p.c2s, fin.i)
    assert ack.pure_ack and ack.ack == fin.seq + 1, "client kernel ACKs the FIN"
    req = first(old, lambda p: p.c2s and p.n > 0, fin.i)
    assert req.ack == fin.seq + 1, "the reused request acknowledges the server's FIN"
    assert not any(p.c2s and p.has(FIN) for p in old if p.i < req.i), (
        "client never sent FIN before reuse"
    )
    rst = first(old, lambda p: not p.c2s and p.has(RST), req.i)
    assert rst.seq == req.ack and not rst.has(ACK), "[R] with seq = the request's ACK"
    handshake_ok(new)
    assert new[0].i > rst.i, "retry on a new connection after the reset"
    assert any(not p.c2s and p.n for p in new), "the retry got a response"
    clean_close(new)


def check_clean(path: Path, o: Options, slack: float = 0.0) -> None:
    pk = packets(path, o.port)
    cs = conns(pk)
    assert len(cs) == 2
    for conn in cs:
        handshake_ok(conn)
        clean_close(conn)
    short, ka = cs
    assert first(short, lambda p: p.has(FIN)).c2s is False, (
        "server closes the Connection: close one"
    )
    assert first(ka, lambda p: p.has(FIN)).c2s is True, "client closes the keep-alive one"
    assert sum(1 for p in ka if p.c2s and p.n) == (o.count or 3)


def check_close_wait_leak(path: Path, o: Options, slack: float = 0.0) -> None:
    pk = packets(path, o.port)
    cs = conns(pk)
    assert len(cs) == (o.count or 3)
    for conn in cs:
        handshake_ok(conn)
        no_rst(conn)
        cfin = first(conn, lambda p: p.c2s and p.has(FIN))
        first(conn, lambda p, f=cfin: not p.c2s and p.ack == f.seq + 1, cfin.i)
        assert not any(not p.c2s and p.has(FIN) for p in conn), "the server never sends FIN"


def check_time_wait(path: Path, o: Options, slack: float = 0.0) -> None:
    pk = packets(path, o.port)
    cs = conns(pk)
    assert len(cs) == (o.count or 20)
    for conn in cs:
        handshake_ok(conn)
        clean_close(conn)
        fins = [p for p in conn if p.has(FIN)]
        assert fins[0].c2s, "client is the active closer (keeps TIME-WAIT)"
        assert conn[-1].c2s and conn[-1].pure_ack, "client's final ACK ends the connection"


def tw_isn(fin: P) -> int:
    """The ISN Linux gives a connection that replaces a TIME-WAIT: old snd_nxt + 65535 + 2."""
    return (fin.seq + 1 + 65537) % 2**32


def check_time_wait_reuse(path: Path, o: Options, slack: float = 0.0) -> None:
    pk = packets(path, o.port)
    cs = incarnations(pk)
    assert [c[0].cport for c in cs][:3] == [cs[0][0].cport] * 3, "three on one 4-tuple (bind)"
    assert len(cs) == 5 and cs[3][0].cport == cs[4][0].cport != cs[0][0].cport
    for conn in cs:
        handshake_ok(conn)
        clean_close(conn)
    # A: the server closes first; the next SYN meets its TIME-WAIT and is accepted.
    a, b, b2, c, c2 = cs
    sfin = first(a, lambda p: p.has(FIN))
    assert not sfin.c2s, "server closes first (keeps TIME-WAIT)"
    assert b[0].t - a[-1].t < 60, "the second SYN within 2 MSL of the close"
    assert b[1].seq == tw_isn(sfin), "SYN-ACK ISN = TIME-WAIT's snd_nxt + 65537"
    # B: the client closes first and takes over its own TIME-WAIT (explicit bind).
    cfin = first(b, lambda p: p.has(FIN))
    assert cfin.c2s, "client closes first"
    assert b2[0].t - b[-1].t < 60
    assert b2[0].seq == tw_isn(cfin), "client's SYN ISN = its TIME-WAIT's snd_nxt + 65537"
    # C: the same with an unbound connect() and tcp_tw_reuse=1, after tcp_tw_reuse_delay.
    cfin = first(c, lambda p: p.has(FIN))
    assert cfin.c2s
    assert 0.2 <= c2[0].t - c[-1].t < 60
    assert c2[0].seq == tw_isn(cfin)
    for conn in cs:
        assert sum(1 for p in conn if p.c2s and p.n) == 1
        assert sum(1 for p in conn if not p.c2s and p.n) == 1


def check_middlebox_reset(path: Path, o: Options, slack: float = 0.0) -> None:
    pk = packets(path, o.port)
    (conn,) = conns(pk)
    handshake_ok(conn)
    n = o.count or 2
    reqs = [p for p in conn if p.c2s and p.n]
    resps = [p for p in conn if not p.c2s and p.n]
    assert len(reqs) == n + 1 and len(resps) == n, "data flowing, then one more request"
    fw_timeout = max(1, round(o.timeout or 2))
    req = reqs[-1]
    before = [p for p in conn if p.i < req.i]
    assert req.t - before[-1].t >= fw_timeout, "idle longer than the firewall's timeout"
    rst = conn[-1]
    assert rst.tag == "s:R" and rst.seq == req.ack, "[R] with seq = the request's ACK"
    assert rst.t - req.t < 0.01 + slack
    server_ttls = {p.ttl for p in conn if not p.c2s and p is not rst}
    assert len(server_ttls) == 1 and rst.ttl not in server_ttls, (rst.ttl, server_ttls)
    assert rst.ttl == 64 and server_ttls == {62}, "made in the middle, one router closer"
    assert {p.ttl for p in conn if p.c2s} == {64}
    assert not any(p.has(FIN) for p in conn), "the server never closed"


def check_refused(path: Path, o: Options, slack: float = 0.0) -> None:
    pk = packets(path, o.port)
    cs = conns(pk)
    assert len(cs) == (o.count or 1)
    for conn in cs:
        assert flow(conn) == ["c:S", "s:R."]
        assert conn[1].ack == conn[0].seq + 1 and conn[1].seq == 0


def check_abortive_close(path: Path, o: Options, slack: float = 0.0) -> None:
    pk = packets(path, o.port)
    unread, linger = conns(pk)
    for conn in (unread, linger):
        handshake_ok(conn)
        assert not any(not p.c2s and p.has(FIN) for p in conn), "RST instead of FIN"
        rst = first(conn, lambda p: not p.c2s and p.has(RST))
        assert rst.has(ACK), "application abort is [R.]"
        data = [p for p in conn if p.c2s and p.n]
        assert data and data[0].i < rst.i
    req = [p for p in unread if p.c2s and p.n]
    assert sum(p.n for p in req) > 1000, "request body sent"
    assert not any(not p.c2s and p.n for p in unread), "the server never answered (it did not read)"
    rst = first(unread, lambda p: not p.c2s and p.has(RST))
    assert rst.ack == req[-1].seq + req[-1].n, "RST acknowledges the unread bytes"
    assert any(not p.c2s and p.n for p in linger), "linger-0: response, then RST"


def check_keepalive_race(path: Path, o: Options, slack: float = 0.0) -> None:
    pk = packets(path, o.port)
    old, new = conns(pk)
    handshake_ok(old)
    fin = first(old, lambda p: not p.c2s and p.has(FIN))
    req = [p for p in old if p.c2s and p.n][-1]
    assert req.i < fin.i, "the request left before the FIN arrived"
    assert req.ack == fin.seq, "the request does not acknowledge the FIN (crossed)"
    rst = first(old, lambda p: not p.c2s and p.has(RST), req.i)
    assert rst.seq == req.ack and not rst.has(ACK), "[R] with seq = the request's ACK"
    handshake_ok(new)
    assert any(not p.c2s and p.n for p in new)
    clean_close(new)


def check_simultaneous_close(path: Path, o: Options, slack: float = 0.0) -> None:
    pk = packets(path, o.port)
    (conn,) = conns(pk)
    handshake_ok(conn)
    no_rst(conn)
    cfin = first(conn, lambda p: p.c2s and p.has(FIN))
    sfin = first(conn, lambda p: not p.c2s and p.has(FIN))
    assert cfin.ack == sfin.seq, "the client's FIN does not acknowledge the server's"
    assert sfin.ack == cfin.seq, "the server's FIN does not acknowledge the client's"
    after = max(cfin.i, sfin.i)
    first(conn, lambda p: p.c2s and p.pure_ack and p.ack == sfin.seq + 1, after)
    first(conn, lambda p: not p.c2s and p.pure_ack and p.ack == cfin.seq + 1, after)


def check_lost_final_ack(path: Path, o: Options, slack: float = 0.0) -> None:
    pk = packets(path, o.port)
    (conn,) = conns(pk)
    handshake_ok(conn)
    no_rst(conn)
    cfin = first(conn, lambda p: p.c2s and p.has(FIN))
    sfins = [p for p in conn if not p.c2s and p.has(FIN)]
    assert len(sfins) == 2 and sfins[0].seq == sfins[1].seq, "server FIN retransmitted once"
    assert cfin.i < sfins[0].i
    assert sfins[1].t - sfins[0].t >= 0.19, "after an RTO (min 200 ms)"
    acks = [p for p in conn if p.c2s and p.pure_ack and p.ack == sfins[0].seq + 1]
    assert len(acks) == 2, "the final ACK, then again from TIME-WAIT"
    assert acks[0].i < sfins[1].i < acks[1].i


def check_fin_wait_2(path: Path, o: Options, slack: float = 0.0) -> None:
    pk = packets(path, o.port)
    a, b = conns(pk)
    fin_timeout = max(1, round(o.timeout or 2))
    for conn in (a, b):
        handshake_ok(conn)
    afin = first(a, lambda p: p.c2s and p.has(FIN))
    sfin_a = first(a, lambda p: not p.c2s and p.has(FIN))
    assert sfin_a.t - afin.t >= fin_timeout, "server's FIN only after the orphan expired"
    rst = first(a, lambda p: p.c2s and p.has(RST), sfin_a.i)
    assert rst.seq == sfin_a.ack and not rst.has(ACK), "no socket left: [R] answers the late FIN"
    no_rst(b)
    bfin = first(b, lambda p: p.c2s and p.has(FIN))
    sfin_b = first(b, lambda p: not p.c2s and p.has(FIN))
    assert sfin_b.t - bfin.t >= fin_timeout, "half-closed FIN-WAIT-2 outlived tcp_fin_timeout"
    assert b[-1].c2s and b[-1].pure_ack and b[-1].ack == sfin_b.seq + 1


def check_syn_timeout(path: Path, o: Options, slack: float = 0.0) -> None:
    pk = packets(path, o.port)
    (conn,) = conns(pk)
    retries = o.count or 2
    assert flow(conn) == ["c:S"] * (retries + 1), "SYNs only, never an answer"
    assert len({p.seq for p in conn}) == 1, "retransmissions of the same SYN"
    gaps = [b.t - a.t for a, b in itertools.pairwise(conn)]
    for k, g in enumerate(gaps):
        assert 2**k - 0.3 < g < 2**k + 0.3 + slack, f"exponential backoff: {gaps}"


def check_accept_queue_overflow(path: Path, o: Options, slack: float = 0.0) -> None:
    pk = packets(path, o.port)
    part1 = conns(pk)
    # abort_on_overflow=0, port 8080: 3 clients completed the handshake, one SYN-only client.
    synacks = {id(c): [p for p in c if p.has(SYN) and not p.c2s] for c in part1}
    retrans = [c for c in part1 if len(synacks[id(c)]) >= 2]
    assert len(retrans) == 1, "SYN-ACK retransmitted to the overflowing client"
    over = retrans[0]
    s1, s2 = synacks[id(over)][:2]
    assert s1.seq == s2.seq and s2.t - s1.t >= 0.9, "same SYN-ACK again after ~1 s"
    assert not any(not p.c2s and p.n for p in over), "nothing ever answered"
    assert sum(1 for p in over if p.c2s and p.n) >= 2, "its request was retransmitted (dropped)"
    assert not any(p.has(RST) for p in over if p.t < s2.t), "no RST with abort_on_overflow=0"
    syn_only = [c for c in part1 if not synacks[id(c)]]
    assert len(syn_only) == 1 and len(syn_only[0]) >= 2, "a client whose SYNs were dropped"
    # its SYNs only; a SYN resent after the listener closed at the end is refused (RST)
    assert all(p.tag == "c:S" for p in syn_only[0] if p.c2s)
    answers = [p for p in syn_only[0] if not p.c2s]
    assert all(p.has(RST) and p.ack == syn_only[0][0].seq + 1 for p in answers)
    assert len(answers) <= 1
    # abort_on_overflow=1, port 8081: the overflowing final ACK is answered with RST.
    part2 = conns(packets(path, o.port + 1))
    for c in part2:
        handshake_ok(c)
    # Closing the listener aborts the queued ones with [R.]; the overflow reset is [R].
    resets = [c for c in part2 if len(c) > 3 and c[3].tag == "s:R"]
    assert len(resets) == 1, "exactly one client reset right after its handshake"
    c = resets[0]
    assert c[3].tag == "s:R" and c[3].seq == c[2].ack, "[R] answering the final ACK"


def check_zero_window(path: Path, o: Options, slack: float = 0.0) -> None:
    pk = packets(path, o.port)
    (conn,) = conns(pk)
    handshake_ok(conn)
    no_rst(conn)
    zero = first(conn, lambda p: not p.c2s and p.win == 0 and p.pure_ack)
    probes = [p for p in conn if p.c2s and p.pure_ack and p.i > zero.i and p.seq == zero.ack - 1]
    assert len(probes) >= 2, "zero-window probes with seq = next-1"
    gaps = [b.t - a.t for a, b in itertools.pairwise(probes)]
    assert all(b + slack > a * 1.5 for a, b in itertools.pairwise(gaps)), f"backoff {gaps}"
    update = first(conn, lambda p: not p.c2s and p.win > 0, probes[-1].i)
    more = first(conn, lambda p: p.c2s and p.n > 0, update.i)
    assert more.seq == zero.ack, "transfer resumes where it stopped"
    total = (o.count or 64) * 1024
    delivered = max((p.seq + p.n) for p in conn if p.c2s and p.n) - conn[0].seq - 1
    assert delivered == total
    clean_close(conn)


def check_half_open(path: Path, o: Options, slack: float = 0.0) -> None:
    pk = packets(path, o.port)
    (conn,) = conns(pk)
    handshake_ok(conn)
    reqs = [p for p in conn if p.c2s and p.n]
    assert len(reqs) == 2
    resp = [p for p in conn if not p.c2s and p.n]
    assert len(resp) == 1 and resp[0].i < reqs[1].i
    between = [p for p in conn if not p.c2s and resp[0].i < p.i < reqs[1].i and not p.pure_ack]
    assert not between, "nothing from the server reached the client (its RST was lost)"
    rst = first(conn, lambda p: not p.c2s and p.has(RST), reqs[1].i)
    assert not rst.has(ACK) and rst.seq == reqs[1].ack, "[R] from a host without the socket"
    assert not any(p.has(FIN) for p in conn)


def check_keepalive_dead_peer(path: Path, o: Options, slack: float = 0.0) -> None:
    pk = packets(path, o.port)
    (conn,) = conns(pk)
    handshake_ok(conn)
    cnt = o.count or 3
    last_data = [p for p in conn if p.n][-1]
    nxt = last_data.ack if not last_data.c2s else last_data.seq + last_data.n
    probes = [p for p in conn if p.c2s and p.pure_ack and p.i > last_data.i and p.seq == nxt - 1]
    server_after = [p for p in conn if not p.c2s and p.i > last_data.i + 1]
    assert len(probes) == cnt, f"{cnt} keepalive probes (seq = next-1): {flow(conn)}"
    gaps = [b.t - a.t for a, b in itertools.pairwise(probes)]
    assert all(0.8 < g < 1.3 + slack for g in gaps), gaps
    assert probes[0].t - last_data.t >= 0.9, "first probe after TCP_KEEPIDLE"
    assert not [p for p in server_after if p.i > probes[0].i], "no answer from the vanished peer"
    rst = conn[-1]
    assert rst.c2s and rst.has(RST) and rst.t - probes[-1].t > 0.8, "RST when keepalive gives up"


def check_retransmission_timeout(path: Path, o: Options, slack: float = 0.0) -> None:
    pk = packets(path, o.port)
    (conn,) = conns(pk)
    handshake_ok(conn)
    ut = o.timeout or 3.0
    reqs = [p for p in conn if p.c2s and p.n]
    first_req, lost = reqs[0], reqs[1:]
    assert len(lost) >= 4 and len({p.seq for p in lost}) == 1, "one segment retransmitted"
    gaps = [b.t - a.t for a, b in itertools.pairwise(lost)]
    # The first retransmission may be a tail loss probe; the RTO backoff doubles after it.
    assert gaps[0] >= 0.19 and all(b + slack > 1.6 * a for a, b in itertools.pairwise(gaps[1:])), (
        gaps
    )
    assert lost[-1].t - lost[0].t < ut + 0.5 + slack, "retransmissions stop at TCP_USER_TIMEOUT"
    assert not any(not p.c2s and p.i > lost[0].i for p in conn), "no answer"
    assert not any(p.has(RST) or p.has(FIN) for p in conn), "given up without RST"
    assert first_req.i < lost[0].i


def check_syn_flood(path: Path, o: Options, slack: float = 0.0) -> None:
    n = o.count or 200
    t = read_table(str(path))
    pk = packets(path, o.port)
    src = t.src_lo & 0xFFFFFFFF
    spoofed = (src >> 17) == ((198 << 7) | (18 >> 1))  # sent from 198.18.0.0/15
    assert int(spoofed.sum()) == n and len({int(a) for a in src[spoofed]}) == n, (
        "one SYN from each spoofed address"
    )
    rows = {int(i) for i in spoofed.nonzero()[0]}
    # by client address and port: a flood port is now and then the real client's own
    # ephemeral port (1 run in a few hundred), and by port alone the two would be one
    by: dict[tuple[int, int, int], list[P]] = {}
    for p in pk:
        hi, lo = (t.src_hi, t.src_lo) if p.c2s else (t.dst_hi, t.dst_lo)
        by.setdefault((int(hi[p.i]), int(lo[p.i]), p.cport), []).append(p)
    flood = [c for c in by.values() if c[0].i in rows]
    legit = [c for c in by.values() if c[0].i not in rows]
    assert len(flood) == n and len(legit) == 1
    queued, cookies = [], []
    for c in flood:
        syn = c[0]
        assert syn.tag == "c:S" and all(not p.c2s for p in c[1:]), (
            "the spoofed source says nothing more"
        )
        assert t.opt_ws[syn.i] == 7 and t.opt_sack_perm[syn.i] and not t.opt_ts[syn.i]
        sas = c[1:]
        assert sas and all(p.tag == "s:S." and p.ack == syn.seq + 1 for p in sas), flow(c)
        (queued if t.opt_sack_perm[sas[0].i] else cookies).append(c)
    # the SYN queue holds backlog + 1 = 9: those SYN-ACKs keep the offered options and are
    # resent once after 1 s (tcp_synack_retries=1); every later one is a cookie: MSS only,
    # never resent
    assert [c[0].i for c in queued] == sorted(c[0].i for c in flood)[:9]
    for c in queued:
        first_sa, again = c[1:]
        assert t.opt_ws[first_sa.i] >= 0 and t.opt_mss[first_sa.i] == 1460
        assert again.seq == first_sa.seq and 1.0 <= again.t - first_sa.t < 1.2 + slack
    for c in cookies:
        (sa,) = c[1:]
        assert t.opt_ws[sa.i] < 0 and not t.opt_sack_perm[sa.i] and not t.opt_ts[sa.i]
        assert t.opt_mss[sa.i] == 1460
    (c,) = legit
    first_flood, last_flood = min(f[0].t for f in flood), max(f[0].t for f in flood)
    assert first_flood < c[0].t < last_flood, "the client connects during the flood"
    handshake_ok(c)
    syn, sa = c[0], c[1]
    assert t.opt_ts[syn.i] and t.opt_ts[sa.i] and t.opt_ws[sa.i] >= 0, (
        "with timestamps a cookie keeps every option"
    )
    assert sum(1 for p in c if p.c2s and p.n) == 1 and sum(1 for p in c if not p.c2s and p.n) == 1
    clean_close(c)
    assert c[-1].t - last_flood >= 2.0, "the capture outlasts the cookies' would-be resends"


def one_exchange(conn: list[P]) -> None:
    """A request from the connecting side, then a response, each in one segment."""
    data = [p.c2s for p in conn if p.n]
    assert data == [True, False], flow(conn)


def check_addr_in_use_restart(path: Path, o: Options, slack: float = 0.0) -> None:
    """Every connection to the port is closed first by the server (its TIME-WAIT stays on the
    listening port); the connections after the restart are accepted, none refused."""
    n = o.count or 3
    cs = conns(packets(path, o.port))
    assert len(cs) == n + 2, [flow(c) for c in cs]
    for conn in cs:
        handshake_ok(conn)
        one_exchange(conn)
        clean_close(conn)
        assert first(conn, lambda p: p.has(FIN)).c2s is False, "the server closes first"
    assert all(a[-1].i < b[0].i for a, b in itertools.pairwise(cs)), "one connection at a time"
    other = o.port + 1 if o.port < 65535 else o.port - 1
    (old,) = conns(packets(path, other))
    handshake_ok(old)
    clean_close(old)
    assert first(old, lambda p: p.has(FIN)).c2s is False
    assert old[0].i > cs[-1][-1].i


def check_ephemeral_overlap(path: Path, o: Options, slack: float = 0.0) -> None:
    """The server host's outgoing connections to the backend, seen with the backend as the
    "server": the first comes from the service's own port, the second (port reserved) from
    the next one; the service's connection lies between them."""
    from tcpwhy.lab.scenarios_socket import BACKEND_PORT

    bport = BACKEND_PORT if o.port != BACKEND_PORT else BACKEND_PORT + 1
    other = o.port + 1 if o.port < 65535 else o.port - 1
    out = conns(packets(path, bport))
    assert [c[0].cport for c in out] == [o.port, other], [flow(c) for c in out]
    first_out, second_out = out
    for conn in out:
        handshake_ok(conn)
        clean_close(conn)
    assert not any(p.n for c in out for p in c), "no data on the outgoing connections"
    assert first(first_out, lambda p: p.has(FIN)).c2s is False, "the backend closes the first"
    assert first(second_out, lambda p: p.has(FIN)).c2s is True, "the host closes the second"
    svc = [c for c in conns(packets(path, o.port)) if c[0].cport != bport]
    assert len(svc) == 1, [flow(c) for c in svc]
    (conn,) = svc
    handshake_ok(conn)
    one_exchange(conn)
    clean_close(conn)
    assert first(conn, lambda p: p.has(FIN)).c2s is True, "the client closes first"
    assert first_out[-1].i < second_out[2].i < conn[0].i, (
        "the service is reached only after the port was freed and the second connection is up"
    )
    assert conn[-1].i < first(second_out, lambda p: p.has(FIN)).i


def check_middlebox_idle_reset_path(path: Path, o: Options, slack: float = 0.0) -> None:
    """Both ends of the path: at the client a request lost once and resent, two requests
    answered by a RST that looks like the server's (same TTL) half a round trip later; at
    the server the resent copy only, no RST, and neither reset request."""
    from tcpwhy.lab.scenarios_pair import server_capture_path

    delay = o.delay if o.delay is not None else 0.03
    cs = conns(packets(path, o.port))
    ss = conns(packets(server_capture_path(str(path)), o.port))
    assert len(cs) == len(ss) == 4
    for c in cs:
        handshake_ok(c)
    rtt = cs[0][1].t - cs[0][0].t
    assert 2 * delay <= rtt < 2 * delay + 0.01 + slack
    c1_reqs = [p for p in cs[0] if p.c2s and p.n]
    assert c1_reqs[0].seq == c1_reqs[1].seq and c1_reqs[1].t - c1_reqs[0].t >= 0.2, "resent"
    assert [p.seq for p in ss[0] if p.c2s and p.n] == [c1_reqs[0].seq], "one copy arrived"
    for k in (1, 2):
        c, s = cs[k], ss[k]
        rst, req = c[-1], c[-2]
        assert rst.tag == "s:R" and rst.seq == req.ack and req.c2s and req.n
        assert rst.ttl == {p.ttl for p in c if not p.c2s and p is not rst}.pop() == 62
        assert delay <= rst.t - req.t < delay + 0.01 + slack, "half the round trip"
        assert req.seq not in {p.seq for p in s if p.c2s and p.n}, "never reached the server"
        assert not any(p.has(RST | FIN) for p in s)
    for c in (cs[0], cs[3]):
        assert not any(p.has(RST) for p in c) and sum(p.has(FIN) for p in c) == 2
    assert sum(p.has(RST) for c in ss for p in c) == 0


def check_stale_keepalive_tls(path: Path, o: Options, slack: float = 0.0) -> None:
    pk = packets(path, o.port)
    old, new = conns(pk)
    handshake_ok(old)
    fin = first(old, lambda p: not p.c2s and p.has(FIN))
    alert = [p for p in old if not p.c2s and p.n and p.i < fin.i][-1]
    assert alert.n == 24, "a 19-byte encrypted alert record (close_notify) before the FIN"
    resp = [p for p in old if not p.c2s and p.n and p.i < alert.i][-1]
    idle = o.idle or 1.0
    assert idle - 0.05 <= alert.t - resp.t <= idle + 0.5 + slack, "closed after the idle timeout"
    req = first(old, lambda p: p.c2s and p.n > 0, fin.i)
    assert req.ack == fin.seq + 1, "the reused request acknowledges the server's FIN"
    rst = first(old, lambda p: not p.c2s and p.has(RST), req.i)
    assert rst.seq == req.ack, "[R] with seq = the request's ACK"
    handshake_ok(new)
    assert new[0].i > rst.i and any(not p.c2s and p.n for p in new), "answered retry"


def check_keepalive_race_tls(path: Path, o: Options, slack: float = 0.0) -> None:
    pk = packets(path, o.port)
    old, new = conns(pk)
    handshake_ok(old)
    fin = first(old, lambda p: not p.c2s and p.has(FIN))
    req = [p for p in old if p.c2s and p.n][-1]
    alert = first(old, lambda p: not p.c2s and p.n > 0, req.i)
    assert alert.n == 24 and req.i < alert.i < fin.i, "close_notify and FIN after the request"
    assert req.ack == alert.seq, "the request acknowledges neither (crossed)"
    first(old, lambda p: not p.c2s and p.has(RST), req.i)
    handshake_ok(new)
    assert any(not p.c2s and p.n for p in new)


def check_clean_tls(path: Path, o: Options, slack: float = 0.0) -> None:
    pk = packets(path, o.port)
    short, ka = conns(pk)
    handshake_ok(short)
    handshake_ok(ka)
    alert = [p for p in short if not p.c2s and p.n][-1]
    assert alert.n == 24, "the server's last record is a 19-byte alert (close_notify)"
    rst = first(short, lambda p: p.c2s and p.has(RST), alert.i)
    # the client's [R.] acknowledges the alert (and the server's FIN, when it came first);
    # when the client had already sent its own FIN (the two closes crossed), its socket is
    # gone for reading and the kernel answers the late alert with a bare [R] at its own FIN's
    # sequence end instead
    if rst.has(ACK):
        assert rst.ack - (alert.seq + alert.n) in (0, 1), "[R.] after the alert"
    else:
        fin = first(short, lambda p: p.c2s and p.has(FIN))
        assert fin.i < alert.i and rst.seq == fin.seq + 1, "[R] after a crossing close"
    clean_close(ka)
    assert first(ka, lambda p: p.has(FIN)).c2s is True, "client closes the keep-alive one"


def check_tls_fatal_alert(path: Path, o: Options, slack: float = 0.0) -> None:
    """Two handshakes that end in a 7-byte alert record (5-byte header, level, description):
    the client's after the server's flight, then the server's right after a ClientHello."""
    refused, old = conns(packets(path, o.port))
    for c in (refused, old):
        handshake_ok(c)
        # closed after the alert: a FIN, or a RST when the closing side still had unread
        # bytes (the peer's flight or ticket arriving just before close(): timing decides)
        assert any(p.has(FIN) or p.has(RST) for p in c)
    _hello, alert = [p for p in refused if p.c2s and p.n]
    flight = [p for p in refused if not p.c2s and p.n]
    assert alert.n == 7 and flight and flight[-1].i < alert.i, "the client's alert answers it"
    assert [p.n for p in old if not p.c2s and p.n] == [7], "the server's one alert record"
    assert len([p for p in old if p.c2s and p.n]) == 1, "no more than the ClientHello"


def check_tls_truncation(path: Path, o: Options, slack: float = 0.0) -> None:
    """The server's FIN comes right after its response on the first connection, 1 s after it
    on the idle second, with no 24-byte alert segment (close_notify) before either."""
    short, idle_conn = conns(packets(path, o.port))
    idle = o.idle or 1.0
    for c, lo, hi in ((short, 0.0, 0.5), (idle_conn, idle - 0.05, idle + 0.5 + slack)):
        handshake_ok(c)
        fin = first(c, lambda p: not p.c2s and p.has(FIN))
        last = [p for p in c if not p.c2s and p.n and p.i < fin.i][-1]
        assert last.n != 24, "no close_notify before the server's FIN"
        assert lo <= fin.t - last.t < hi, (fin.t - last.t, lo, hi)
    clean_close(idle_conn)
    assert first(idle_conn, lambda p: p.has(FIN)).c2s is False, "the server closes the idle one"


def _checks() -> dict[str, Callable[[Path, Options, float], None] | None]:
    """Each scenario's packet-level check, found by name: `check_<scenario>` here or in
    tests/lab_path_checks.py (ICMP errors and path MTU); None for a scenario without one."""
    return {
        s.name: globals().get(f"check_{s.name.replace('-', '_')}")
        or getattr(lab_path_checks, f"check_{s.name.replace('-', '_')}", None)
        for s in all_scenarios()
    }


CHECKS = _checks()

IPV6 = [
    "stale-keepalive",
    "simultaneous-close",
    "refused",
    "half-open",
    "accept-queue-overflow",
    "time-wait-reuse",
    "middlebox-reset",
    "addr-in-use-restart",
    "ephemeral-overlap",
]

IPV6 += PATH_IPV6


def check_capture(name: str, path: Path, o: Options, live: bool = False) -> None:
    """Timing is exact on the recorded captures; on a live run upper bounds get LIVE_SLACK_S
    (lower bounds are the kernel's timers, which never fire early, and stay as they are)."""
    check = CHECKS[name]
    assert check is not None, f"no check_{name.replace('-', '_')} for scenario {name}"
    check(path, o, LIVE_SLACK_S if live else 0.0)


def orphans() -> list[str]:
    """Lab namespaces whose process is gone (what a run must never leave)."""
    out = []
    for n in nsmod.list_lab_namespaces():
        pid = int(n[len(nsmod.PREFIX) :].split("-")[0])
        if not os.path.exists(f"/proc/{pid}"):
            out.append(n)
    return out


def mine() -> list[str]:
    return [n for n in nsmod.list_lab_namespaces() if n.startswith(f"{nsmod.PREFIX}{os.getpid()}-")]


# -- tests ----------------------------------------------------------------------------------


def test_every_scenario_has_a_check() -> None:
    missing = [name for name, check in CHECKS.items() if check is None]
    assert not missing, f"scenarios without check_<name>: {missing}"


def test_list_shows_every_scenario() -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from tcpwhy.cli import main; sys.exit(main(['lab', '--list']))",
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    for name in CHECKS:
        assert any(line.split()[0] == name for line in out.stdout.splitlines() if line.strip())


def test_not_root_is_an_environment_problem(monkeypatch: pytest.MonkeyPatch) -> None:
    from tcpwhy.errors import EXIT_ENVIRONMENT, EnvironmentProblem

    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(EnvironmentProblem) as info:
        run_scenario("refused")
    assert info.value.exit_status == EXIT_ENVIRONMENT and "root" in info.value.reason


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_shipped_capture(name: str) -> None:
    """The captures in the package data show the expected sequence (no root needed)."""
    path = DATA_DIR / f"{name}.pcap"
    assert path.is_file(), f"missing {path}: run python -m tcpwhy.lab.record"
    assert path.stat().st_size < 64 * 1024
    check_capture(name, path, options_for(name))


def test_syn_flood_check_tells_a_client_on_a_flood_port(tmp_path: Path) -> None:
    """The real client's ephemeral port is now and then one the flood's spoofed SYNs came
    from: the check still finds 200 flood connections and one real one."""
    src = DATA_DIR / "syn-flood.pcap"
    o = options_for("syn-flood")
    t = read_table(str(src))
    spoofed = ((t.src_lo & 0xFFFFFFFF) >> 17) == ((198 << 7) | (18 >> 1))
    flood_port = int(t.sport[np.flatnonzero(spoofed)[0]])
    client_port = next(
        int(t.sport[i]) for i in range(len(t)) if not spoofed[i] and int(t.dport[i]) == o.port
    )
    raw = bytearray(src.read_bytes())
    pos = 24  # the shipped lab captures: pcap, Ethernet, IPv4 or IPv6
    while pos + 16 <= len(raw):
        (incl,) = struct.unpack_from("<I", raw, pos + 8)
        frame = pos + 16
        ip = frame + 14
        ihl = (raw[ip] & 0x0F) * 4 if raw[ip] >> 4 == 4 else 40
        tcp = ip + ihl
        for at in (tcp, tcp + 2):  # the client's port, as source or as destination
            if struct.unpack_from("!H", raw, at)[0] == client_port:
                struct.pack_into("!H", raw, at, flood_port)
        pos = frame + incl
    moved = tmp_path / "syn-flood.pcap"
    moved.write_bytes(bytes(raw))
    assert client_port not in read_table(str(moved)).sport.tolist()
    check_syn_flood(moved, o)


@pytest.mark.root
@pytest.mark.parametrize(
    "name,ipv6",
    [(n, False) for n in sorted(CHECKS)] + [(n, True) for n in IPV6],
)
def test_scenario_on_the_kernel(netns_ok: None, tmp_path: Path, name: str, ipv6: bool) -> None:
    # a port of its own per run: a namespace is torn down by the kernel some time after the
    # previous run removed it, and the resets of its last sockets (same addresses) must not
    # count as this run's in its kernel trace
    o = Options(ipv6=ipv6, port=20000 + 10 * sorted(CHECKS).index(name) + (5 if ipv6 else 0))
    out = tmp_path / f"{name}.pcap"
    result = run_scenario(name, o, str(out))
    assert result.ok, f"{result.reason}\n{result.story}"
    assert result.drops == 0 and result.packets > 0
    assert not mine(), "namespaces left behind"
    check_capture(name, out, o, live=True)
    assert all((p.sport == o.port) != p.c2s for p in packets(out, o.port))
    check_kernel_trace(
        name,
        result.trace,
        result.trace_lost,
        o.port,
        [(p.c2s, p.cport) for p in packets(out, o.port) if p.has(RST)],
    )


CLI = "import sys; from tcpwhy.cli import main; sys.exit(main(sys.argv[1:]))"


def _wait_for_namespaces(pid: int, n: int, timeout: float = 10) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [x for x in nsmod.list_lab_namespaces() if x.startswith(f"{nsmod.PREFIX}{pid}-")]
        if len(found) >= n:
            return found
        time.sleep(0.05)
    raise AssertionError(f"run {pid} never created its namespaces")


def _sigint_default() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.root
def test_ctrl_c_removes_everything(netns_ok: None, tmp_path: Path) -> None:
    p = subprocess.Popen(
        [
            sys.executable,
            "-c",
            CLI,
            "lab",
            "accept-queue-overflow",
            "--port",
            "9097",
            "-w",
            str(tmp_path / "i.pcap"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # as started from a terminal: a shell's background job (as the suite may be run)
        # ignores SIGINT, and Python then leaves it ignored in every process it starts
        preexec_fn=_sigint_default,
    )
    created = _wait_for_namespaces(p.pid, 3)
    time.sleep(1.0)  # inside the scenario: relay, TUN, capture and clients all running
    sent = time.monotonic()
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=20)
    # what the run did before the signal, and how long after it, if it did not stop
    assert p.returncode == 130, (err, out, time.monotonic() - sent)
    assert not set(created) & set(nsmod.list_lab_namespaces())


@pytest.mark.root
def test_leftovers_of_a_killed_run_are_removed(netns_ok: None, tmp_path: Path) -> None:
    """SIGKILL leaves namespaces behind; the next run removes them (their owner is dead)."""
    p = subprocess.Popen(
        [
            sys.executable,
            "-c",
            CLI,
            "lab",
            "keepalive-race",
            "--port",
            "9096",
            "-w",
            str(tmp_path / "k.pcap"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    created = _wait_for_namespaces(p.pid, 3)
    time.sleep(0.5)
    p.kill()
    p.wait()
    assert set(created) <= set(nsmod.list_lab_namespaces()), "SIGKILL cannot clean up"
    result = run_scenario("refused", Options(port=9096))
    assert result.ok
    assert not set(created) & set(nsmod.list_lab_namespaces())
    assert not orphans()


@pytest.mark.root
def test_cli_exit_status_and_explain(netns_ok: None, tmp_path: Path) -> None:
    out = tmp_path / "r.pcap"
    p = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from tcpwhy.cli import main; sys.exit(main(sys.argv[1:]))",
            "lab",
            "refused",
            "--explain",
            "-w",
            str(out),
            "--port",
            "9099",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert p.returncode == 0, p.stderr
    assert "ConnectionRefusedError" in p.stdout and "Connection refused" in p.stdout
    assert str(out) in p.stdout and "0 dropped" in p.stdout
    assert "RST" in p.stdout  # the --explain paragraph
    check_refused(out, Options(port=9099), LIVE_SLACK_S)
    tshark = subprocess.run(["tshark", "-r", str(out)], capture_output=True, text=True)
    assert tshark.returncode == 0, tshark.stderr
    assert "[SYN]" in tshark.stdout and "[RST, ACK]" in tshark.stdout


BROKEN = """
import sys
from tcpwhy.cli import main
from tcpwhy.lab.runner import scenario

@scenario("expects-a-listener", "connects to a closed port and insists on success", "-", finds=None)
def play(lab):
    c = lab.sock("client")
    c.settimeout(2)
    try:
        c.connect(lab.server_addr())
    except ConnectionRefusedError:
        lab.expect(False, "connect() refused: nobody listens")

sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.root
def test_scenario_that_does_not_play_out_fails_with_exit_3(netns_ok: None, tmp_path: Path) -> None:
    """The kernel contradicting a scenario's design ends with ScenarioFailed (exit 3), cleaned up."""
    p = subprocess.run(
        [sys.executable, "-c", BROKEN, "lab", "expects-a-listener", "-w", str(tmp_path / "b.pcap")],
        capture_output=True,
        text=True,
    )
    assert p.returncode == 3, (p.returncode, p.stdout, p.stderr)
    assert "tcpwhy: expects-a-listener: connect() refused: nobody listens" in p.stderr
    assert "NOT AS DESIGNED" in p.stdout
    assert not orphans(), "namespaces of a finished run left behind"
