"""accept-queue-overflow: a listener whose accept queue is full drops handshakes.

Linux drops a SYN outright while the accept queue is full, so the commonest
sign is SYNs retransmitted without answer while the same listener admits
other clients. A queue that fills between SYN and final ACK drops that ACK
instead: the server retransmits its SYN-ACK after the client's ACK and the
client's first data goes unacknowledged. With tcp_abort_on_overflow=1 the
final ACK draws a RST. Connections still queued when the listener closes are
reset; those RSTs belong to this story too.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

from tcpwhy.decode.table import ACK, RST, SYN
from tcpwhy.diagnose import knowledge
from tcpwhy.diagnose.common import earliest, needs_streams
from tcpwhy.diagnose.context import CLIENT, SERVER, Conn, fmt_s
from tcpwhy.diagnose.handshake import admitted, ladder, syn_rows, unanswered_syn_streams
from tcpwhy.diagnose.model import Finding, Severity, Story
from tcpwhy.diagnose.registry import Claim, Diag, Instance, make_finding, plural, rule
from tcpwhy.diagnose.resets import too_fast

ORDER = 90

KIND = "accept-queue-overflow"
WINDOW_NS = 10_000_000_000


def _final_ack_dropped(c: Conn) -> list[tuple[int, str]] | None:
    """The client's handshake ACK, its request, and the server's SYN-ACK sent again after
    them: the listener dropped that ACK."""
    got = _synack_after_ack(c)
    if got is None:
        return None
    ack, sa2 = got
    rows = [
        (ack, "client completes the handshake (ACK): its connect() returns"),
        (
            sa2,
            f"server retransmits its SYN-ACK {fmt_s(c.dt(ack, sa2))} later: "
            "it dropped that ACK, the accept queue was full",
        ),
    ]
    data = next((i for i in range(ack + 1, c.n) if c.side[i] == CLIENT and c.plen[i]), None)
    if data is not None:
        rows.insert(1, (data, "client sends its request; the server does not acknowledge it"))
    return rows


def _synack_after_ack(c: Conn) -> tuple[int, int] | None:
    """(client's handshake ACK, server's later SYN-ACK): the ACK was dropped by the listener."""
    first_sa = None
    ack = None
    for i in range(c.n):
        f = c.flags[i]
        if f & RST:
            continue
        if c.side[i] == SERVER and (f & (SYN | ACK)) == (SYN | ACK):
            if first_sa is None:
                first_sa = i
            elif ack is not None:
                return ack, i
        elif (
            c.side[i] == CLIENT and first_sa is not None and ack is None and f & ACK and not f & SYN
        ):
            ack = i
    return None


def _reset_after_handshake(c: Conn) -> list[tuple[int, str]] | None:
    """The client's handshake ACK and the server's RST (no ACK flag) right after it, with no
    server data: tcp_abort_on_overflow=1."""
    if c.n_server_data() > 0:
        return None
    sa = next(
        (
            i
            for i in range(c.n)
            if c.side[i] == SERVER and (c.flags[i] & (SYN | ACK)) == (SYN | ACK)
        ),
        None,
    )
    if sa is None:
        return None
    ack = next((i for i in range(sa + 1, c.n) if c.side[i] == CLIENT and c.flags[i] & ACK), None)
    if ack is None:
        return None
    rtt = c.rtt or 0.001
    for j in range(ack + 1, c.n):
        if c.side[j] == SERVER:
            if (
                c.is_rst(j)
                and not c.flags[j] & ACK
                and c.dt(ack, j) <= max(0.05, 10 * rtt)
                and not too_fast(c, j)  # too quick for the server's kernel: middlebox-reset
            ):
                return [
                    (ack, "client completes the handshake (ACK)"),
                    (
                        j,
                        "server answers the ACK with RST: accept queue full, tcp_abort_on_overflow=1",
                    ),
                ]
            return None
    return None


@rule(KIND)
@needs_streams
def detect(diag: Diag) -> list[Finding]:
    cap = diag.cap
    groups: dict[str, dict[str, list[Instance]]] = defaultdict(lambda: defaultdict(list))
    # (a) SYNs dropped while the listener admits others
    for c in diag.conns(unanswered_syn_streams(diag)):
        syns = syn_rows(c)
        if len(syns) < 2:
            continue
        lo, hi = c.ts[syns[0]] - WINDOW_NS, c.ts[syns[-1]] + WINDOW_NS
        # (the listeners' SYN-ACK index is built for the first connection that needs it)
        others = admitted(diag).near(c, lo, hi)
        if others == 0:
            continue
        off = ladder(c, syns)
        rows = [
            (i, "SYN" if k == 0 else f"SYN retransmitted (+{off[k]:g} s), still no answer")
            for k, i in enumerate(syns)
        ]
        groups[c.server]["syn"].append(Instance(c, rows, {"others": others, "ladder_s": off}))
        diag.claim(c.sid, Claim.SYN)
    # (b) the final ACK dropped: SYN-ACK retransmitted after it
    for c in cap.conns_where(cap.n_synack[:, SERVER] > 1):
        dropped = _final_ack_dropped(c)
        if dropped:
            groups[c.server]["ack"].append(Instance(c, dropped))
            diag.claim(c.sid, Claim.RETRANS)
            diag.claim(c.sid)
    # (c) tcp_abort_on_overflow=1: RST right after the handshake
    for c in cap.conns_where((cap.n_synack[:, SERVER] > 0) & (cap.n_rst[:, SERVER] > 0)):
        reset = _reset_after_handshake(c)
        if reset:
            groups[c.server]["abort"].append(Instance(c, reset))
            diag.claim(c.sid)
    out = []
    for server, parts in groups.items():
        # connections still queued when the listener closed are reset without data
        for c in cap.conns_where((cap.n_rst[:, SERVER] > 0) & (cap.bytes[:, SERVER] == 0)):
            if c.server != server or diag.is_claimed(c.sid):
                continue
            r = c.first_rst(SERVER)
            if r is None or not c.flags[r] & ACK or c.n_synack_server() == 0:
                continue
            if too_fast(c, r):
                continue  # too quick for the server's kernel: middlebox-reset tells it
            parts["closed"].append(
                Instance(c, [(r, "server resets a connection it never accepted (listener closed)")])
            )
            diag.claim(c.sid)
        out.append(_finding(diag, server, parts))
    return out


# the kinds of evidence, in the order the text gives them: (key, what one is called, what
# befell them)
_PARTS = (
    ("syn", "SYN", "dropped while other clients were admitted"),
    ("ack", "handshake", "whose final ACK was dropped"),
    ("abort", "handshake", "reset (tcp_abort_on_overflow)"),
    ("closed", "queued connection", "reset when the listener closed"),
)


def _syn_text(x: Instance) -> str:
    return (
        f"Stream {x.conn.no}: the client {x.conn.client} sent SYNs at +"
        + ", +".join(f"{o:g}" for o in x.facts["ladder_s"])
        + f" s and got no answer, while the same listener answered "
        f"{plural(x.facts['others'], 'other connection')} around that time. A listener that "
        "answers some handshakes and silently ignores others is not firewalled or down: "
        "since Linux 4.10 the kernel drops a SYN when the listener's accept queue is full "
        "(the application is not calling accept() fast enough)."
    )


def _ack_text(x: Instance) -> str:
    ack_i, sa2 = x.rows[0][0], x.rows[-1][0]
    return (
        f"Stream {x.conn.no}: the handshake completed from the client's view (frame "
        f"{x.conn.frame[ack_i]}), so its connect() returned and it sent its request, but "
        f"the server retransmitted its SYN-ACK (frame {x.conn.frame[sa2]}): it had dropped "
        "the final ACK because the accept queue was full, leaving the connection in "
        "SYN_RECV. The client's data is not acknowledged and is retransmitted until a "
        "queue slot frees (SYN-ACK retries at 1, 3, 7, 15, 31 s; tcp_synack_retries=5)."
    )


def _abort_text(x: Instance) -> str:
    return (
        f"Stream {x.conn.no}: the server answered the client's final ACK with a RST "
        f"right away (frame {x.conn.frame[x.rows[-1][0]]}): with "
        "net.ipv4.tcp_abort_on_overflow=1 an overflowing accept queue resets the "
        "connection instead of dropping the ACK; the client's first read or write fails "
        "with 'Connection reset by peer'."
    )


# the kinds told by their earliest connection, each a paragraph, in the order of `_PARTS`
_EXAMPLE_TEXT: dict[str, Callable[[Instance], str]] = {
    "syn": _syn_text,
    "ack": _ack_text,
    "abort": _abort_text,
}


def _finding(diag: Diag, server: str, parts: dict[str, list[Instance]]) -> Finding:
    allinst = [x for v in parts.values() for x in v]
    bits = [f"{plural(len(parts[k]), one)} {what}" for k, one, what in _PARTS if parts.get(k)]
    summary = f"listener {server} overflowed its accept queue: " + "; ".join(bits)
    paras = [text(min(parts[k], key=earliest)) for k, text in _EXAMPLE_TEXT.items() if parts.get(k)]
    if parts.get("closed"):
        paras.append(
            f"{plural(len(parts['closed']), 'connection')} that completed the handshake but "
            "never received data from the server were reset by it with [R.] — what the "
            "kernel does to connections still in the accept queue when the listening socket "
            "is closed: the application never accepted them."
        )
    paras.append(
        f"Confirm on the server: `ss -lnt 'sport = :{server.rsplit(':', 1)[1]}'` shows "
        "Recv-Q (queued connections) at or above Send-Q (the queue limit), and "
        "`nstat -az TcpExtListenOverflows TcpExtListenDrops` increases between two samples."
    )
    causes = [
        "The application accepts connections more slowly than they arrive (a single "
        "acceptor thread, a blocked event loop, GC pauses, a hand-off that blocks).",
        "The accept queue is small: the listen() backlog is capped by net.core.somaxconn "
        "(128 before Linux 5.4); frameworks often default to 50–511.",
        "Bursts of reconnects (after a deploy or a network blip) arriving at once.",
    ]
    fixes = [
        knowledge.advice(
            "Accept faster: more acceptor threads or processes (SO_REUSEPORT), never block in "
            "the accept loop.",
            knowledge.Fix(
                "any",
                None,
                None,
                "Accept faster: more acceptor threads or processes (SO_REUSEPORT), never block in the accept loop.",
            ),
        ),
        knowledge.advice(
            "Raise net.core.somaxconn, then the application's backlog (nginx `listen … "
            "backlog=N`, systemd `Backlog=`, Node server.listen({backlog}), Java ServerSocket "
            "backlog), and re-create the listener.",
            knowledge.sysctl(
                "net.core.somaxconn", None, "caps every listen() backlog; raise it first"
            ),
            knowledge.Fix("nginx", "listen backlog", None, "nginx `listen … backlog=N`"),
            knowledge.Fix("systemd", "Backlog", None, "systemd socket units: `Backlog=`"),
            knowledge.Fix("node", "server.listen backlog", None, "Node server.listen({backlog})"),
            knowledge.Fix("java", "ServerSocket backlog", None, "Java ServerSocket backlog"),
        ),
        knowledge.advice(
            "Keep net.ipv4.tcp_abort_on_overflow=0 except to diagnose; clients should use "
            "connect and read timeouts with retries.",
            knowledge.sysctl("net.ipv4.tcp_abort_on_overflow", "0", "keep 0 except to diagnose"),
            knowledge.Fix(
                "any", None, None, "clients should use connect and read timeouts with retries"
            ),
        ),
    ]
    errors = knowledge.TIMEOUT + (
        knowledge.RESET if parts.get("abort") or parts.get("closed") else []
    )
    facts = {"server": server, **{k: len(v) for k, v in parts.items()}}
    story = Story(Severity.ERROR, summary, "\n\n".join(paras), causes, fixes, errors, facts)
    return make_finding(diag, KIND, allinst, story)
