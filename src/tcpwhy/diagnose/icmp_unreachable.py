"""icmp-unreachable: connections refused or cut by an ICMP error (unreachable, time exceeded,
parameter problem) from the destination, a router or a firewall."""

from __future__ import annotations

import errno
from collections.abc import Iterator
from typing import Any

from tcpwhy.decode.table import ACK, RST, SYN
from tcpwhy.diagnose import knowledge
from tcpwhy.diagnose.common import Group, Hits
from tcpwhy.diagnose.context import CLIENT, SERVER, Conn, fmt_s
from tcpwhy.diagnose.icmp import errno_name, errno_text
from tcpwhy.diagnose.model import Finding, Severity, Step, Story
from tcpwhy.diagnose.registry import (
    FRAME_INSTANCES,
    Claim,
    Diag,
    Instance,
    plural,
    rule,
)

ORDER = 20

KIND = "icmp-unreachable"


class IcmpInstance(Instance):
    """A connection and the ICMP errors about it, which join its timeline."""

    def __init__(
        self,
        conn: Conn,
        rows: list[tuple[int, str]],
        icmp: list[tuple[int, str]],
        facts: dict[str, Any],
    ) -> None:
        super().__init__(conn, rows, facts)
        self.icmp = icmp
        ic = conn.cap.icmp
        for i, _ in icmp:
            ts = ic.get("ts_ns", i)
            self.first_ns = min(self.first_ns, ts)
            self.last_ns = max(self.last_ns, ts)

    def timeline(self) -> list[Step]:
        c = self.conn
        ic = c.cap.icmp
        steps = [c.step(i, note) for i, note in self.rows]
        steps += [ic.step(c, i, note) for i, note in self.icmp]
        return sorted(steps, key=lambda s: (s.ts_ns, s.frame))


def icmp_errors(diag: Diag, too_big: bool) -> Iterator[tuple[Conn, list[int]]]:
    """The connections ICMP errors are about, each with the rows (`cap.icmp`) of its errors:
    the "packet too big" ones (path MTU), or those of every other kind."""
    ic = diag.cap.icmp
    if not ic.n:
        return
    for s in ic.too_big_streams if too_big else ic.err_streams:
        sid = int(s)
        yield diag.cap.conn(sid), [i for i in ic.rows_of(sid) if bool(ic.too_big[i]) == too_big]


class IcmpHits(Hits):
    """`common.Hits` for the kinds told with the ICMP errors about each connection (filed
    with `put`): each finding's frames add the errors of its first connections."""

    def finding(self, diag: Diag, kind: str, inst: list[Instance], story: Story) -> Finding:
        f = super().finding(diag, kind, inst, story)
        ic = diag.cap.icmp
        icmp = [i for x in inst[:FRAME_INSTANCES] if isinstance(x, IcmpInstance) for i, _ in x.icmp]
        f.frames = sorted(set(f.frames) | {ic.get("frame", i) for i in icmp})
        return f


def who_answered(c: Conn, sender: str, quoted_side: int) -> str:
    """'the server itself', 'the client itself' or 'a router or firewall on the path'."""
    target = c.server_ip if quoted_side == CLIENT else c.client_ip
    if sender == target:
        return "the server itself" if quoted_side == CLIENT else "the client itself"
    return "a router or firewall on the path"


@rule(KIND)
def detect(diag: Diag) -> list[Finding]:
    ic = diag.cap.icmp
    hits = IcmpHits()
    for c, errs in icmp_errors(diag, too_big=False):
        first = errs[0]
        m = ic.meaning(first)
        ts = ic.get("ts_ns", first)
        side = int(ic.side[first])
        connect = bool(ic.quotes_syn[first])
        answered = any(
            c.side[k] == SERVER and (c.flags[k] & (SYN | ACK)) == (SYN | ACK) and c.ts[k] <= ts
            for k in range(c.n)
        )
        if connect and answered:
            connect = False  # the handshake had completed: an old SYN's error
        quoted_rows = [
            k
            for k in range(c.n)
            if c.side[k] == side
            and c.seq[k] == ic.get("seq", first)
            and c.ts[k] <= ts
            and not c.flags[k] & RST
        ]
        rows: list[tuple[int, str]] = []
        if quoted_rows:
            k = quoted_rows[-1]
            what = "SYN" if connect else f"segment seq={c.rseq[k]} len={c.plen[k]}"
            rows.append((k, f"{('client', 'server')[side]} sends: {what}"))
        sender = ic.sender(first)
        who = who_answered(c, sender, side)
        later = [k for k in range(c.n) if c.ts[k] > ts]
        note = f"{ic.label(first)} {m.name} from {sender} ({who})"
        icmp_rows = [(first, note)] + [
            (i, f"again: {ic.label(i)} {ic.meaning(i).name}") for i in errs[1:4]
        ]
        if later and not connect:
            rows.append((later[-1], "the connection's last packet in the capture"))
        facts = {
            "errno": errno_name(m.errno),
            "icmp": ic.label(first),
            "icmp_name": m.name,
            "from": sender,
            "answered_by": who,
            "hops": ic.hops(first),
            "connect": connect,
            "retries_after": len([k for k in later if c.side[k] == side]),
            "errors": len(errs),
        }
        key = (errno_name(m.errno), m.errno, m.name, sender)
        hits.put(key, IcmpInstance(c, rows, icmp_rows, facts))
        diag.claim(c.sid, Claim.SYN)
        diag.claim(c.sid, Claim.RETRANS)
        diag.claim(c.sid)
    return hits.findings(diag, KIND, _tell)


_WHY = {
    errno.EHOSTUNREACH: (
        "the host could not be reached, or a firewall REJECTs with host-unreachable or "
        "admin-prohibited"
    ),
    errno.ENETUNREACH: "a router has no route to the destination's network",
    errno.ECONNREFUSED: "a firewall REJECTs the port with port-unreachable",
    errno.EACCES: "a firewall or route policy prohibits it (ICMPv6 administratively prohibited)",
}


def _tell(g: Group) -> Story:
    ex = g.ex
    assert isinstance(ex, IcmpInstance)
    c, n, f = ex.conn, g.n, ex.facts
    ic = c.cap.icmp
    first = ex.icmp[0][0]
    e = getattr(errno, f["errno"], errno.EPROTO)
    connects = sum(1 for x in g.inst if x.facts["connect"])
    summary = (
        f"{plural(n, 'connection')} to {c.server} {'rejected' if f['connect'] else 'cut'} by "
        f"{f['icmp']} {f['icmp_name']} from {f['from']} ({f['answered_by']}): "
        f"{errno_text(e)}"
    )
    hops = f["hops"]
    where = (
        f"{f['from']} is the destination itself: the host is up and answered for the port, "
        "so the reject comes from its own firewall (nft/iptables REJECT, firewalld) or its "
        "stack"
        if f["answered_by"].endswith("itself")
        else f"{f['from']} is not the destination ({c.server_ip}): a router or firewall on "
        "the path answered"
        + (f", {plural(hops, 'hop')} before the capture point (its TTL)" if hops else "")
    )
    t_icmp = ic.get("ts_ns", first)
    sent = [i for i, _ in ex.rows]
    delay = f" {fmt_s((t_icmp - c.ts[sent[0]]) / 1e9)} after it" if sent else ""
    explanation = (
        f"On stream {c.no} the {'client ' + c.client + ' sent a SYN to ' if f['connect'] else ''}"
        f"{c.server if f['connect'] else 'connection ' + c.label()}"
        f"{' and got' if f['connect'] else ' got'} {f['icmp']} ({f['icmp_name']}) back "
        f"from {f['from']} (frame {ic.get('frame', first)}){delay}, quoting the segment. "
        f"{where}. "
    )
    if f["connect"]:
        explanation += (
            f"Linux ends a connect() in SYN_SENT at once on this error: it fails with "
            f"{errno_text(e)}, without retrying — unlike a dropped SYN (ETIMEDOUT after "
            "about two minutes) or a RST (ECONNREFUSED from the port's host). "
        )
        if e == errno.ECONNREFUSED:
            explanation += (
                "Port unreachable reads like a refused connection to the application, but "
                "no RST came: a firewall, not an empty port, refused it. "
            )
    else:
        explanation += (
            "On an established connection Linux keeps the error as a soft error and goes on "
            "retransmitting; when the retransmissions run out (tcp_retries2) the "
            f"application's read or write fails with {errno_text(e)} instead of ETIMEDOUT "
            "(at once, if the socket set IP_RECVERR). "
        )
    if n > 1:
        explanation += f"{plural(n, 'connection')} got this error ({connects} in connect())."
    explanation = explanation.rstrip()
    causes = [f"{_WHY.get(e, 'the path rejected the packet')}."]
    if e in (errno.EHOSTUNREACH, errno.EACCES, errno.ECONNREFUSED):
        causes.append(
            "A firewall rule on the destination host or on the path that rejects instead of "
            "dropping (nft `reject with icmp type host-unreachable|admin-prohibited|"
            "port-unreachable`, iptables REJECT --reject-with icmp-host-prohibited, firewalld's "
            "default reject), a cloud network ACL, or a security group on the way."
        )
    if e in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        causes.append(
            "Routing: a missing or withdrawn route on a router (network unreachable), or the "
            "last router could not resolve the host on its link (ARP/ND failed: host "
            "unreachable), e.g. the host is down or its address moved."
        )
    if f["icmp"].endswith(("11/0", "3/0")) and "exceeded" in f["icmp_name"]:
        causes.append("A routing loop, or a TTL/hop limit too small for the path.")
    port = c.server.rsplit(":", 1)[-1].rstrip(")")
    fixes = [
        f"Find the rule that rejects: on {f['from']} run `nft list ruleset | grep -n reject` "
        "(or `iptables -S | grep REJECT`, `firewall-cmd --list-all`); in a cloud, the "
        "security group and network ACL of the destination's subnet.",
        knowledge.advice(
            f"Open the port where it is meant to be reachable, e.g. `nft add rule inet filter "
            f"input tcp dport {port} accept` before the reject, or a security-group rule "
            "allowing the client's address.",
            knowledge.Fix(
                "nftables",
                "tcp dport",
                port,
                f"nft add rule inet filter input tcp dport {port} accept (before the reject)",
            ),
            knowledge.Fix(
                "any", None, None, "in a cloud: a security-group rule allowing the client's address"
            ),
        ),
        f"Check the route where the error came from: `ip route get {c.server_ip}` "
        f"on {f['from']} (and on the client); add the missing route or fix the address the "
        "client uses (configuration, DNS).",
        knowledge.advice(
            "Clients: treat EHOSTUNREACH/ENETUNREACH from connect() as a fast failure to "
            "another address, not as something to retry at once.",
            knowledge.Fix(
                "any",
                None,
                None,
                "Clients: treat EHOSTUNREACH/ENETUNREACH from "
                "connect() as a fast failure to another address.",
            ),
            knowledge.Fix(
                "go",
                "net.Dialer.FallbackDelay",
                None,
                "Go: net.Dialer tries the next address (FallbackDelay for the other family)",
            ),
            knowledge.Fix(
                "node",
                "autoSelectFamily",
                "true",
                "Node.js: net.connect({autoSelectFamily: true}) tries each address",
            ),
            knowledge.Fix(
                "python",
                "happy_eyeballs_delay",
                None,
                "Python asyncio: open_connection(happy_eyeballs_delay=…)",
            ),
        ),
    ]
    errors = (
        knowledge.REFUSED
        if e == errno.ECONNREFUSED
        else knowledge.NET_UNREACH
        if e == errno.ENETUNREACH
        else knowledge.ACCESS_DENIED
        if e == errno.EACCES
        else knowledge.HOST_UNREACH
    )
    facts = {
        "server": c.server,
        "errno": f["errno"],
        "icmp": f["icmp"],
        "from": f["from"],
        "answered_by": f["answered_by"],
    }
    return Story(Severity.ERROR, summary, explanation, causes, fixes, errors, facts)
