"""pmtu-discovery: a packet-too-big ICMP honoured — the sender shrank its segments and the
data went through. Information, not a failure: path MTU discovery doing its job."""

from __future__ import annotations

from tcpwhy.diagnose.common import Group
from tcpwhy.diagnose.context import WHO, Conn, fmt_s
from tcpwhy.diagnose.icmp_unreachable import IcmpHits, IcmpInstance, icmp_errors
from tcpwhy.diagnose.knowledge import Fix, advice
from tcpwhy.diagnose.model import Finding, Severity, Story
from tcpwhy.diagnose.pmtu_black_hole import headers
from tcpwhy.diagnose.registry import Claim, Diag, plural, rule

ORDER = 40

KIND = "pmtu-discovery"


def _honoured(c: Conn, i: int) -> tuple[int, int] | None:
    """(first row after the error, largest payload after it) when the quoted segment's
    sender sent only segments that fit the reported MTU afterwards."""
    ic = c.cap.icmp
    x, ts, mtu = int(ic.side[i]), ic.get("ts_ns", i), ic.get("icmp_mtu", i)
    after = [k for k in range(c.n) if c.side[k] == x and c.ts[k] > ts and c.plen[k] > 0]
    if not after or mtu <= 0:
        return None
    biggest = max(c.plen[k] for k in after)
    if biggest + headers(c, after[0]) > mtu:
        return None
    return after[0], biggest


@rule(KIND)
def detect(diag: Diag) -> list[Finding]:
    ic = diag.cap.icmp
    hits = IcmpHits()
    for c, errs in icmp_errors(diag, too_big=True):
        got = _honoured(c, errs[0])
        if got is None:
            continue  # ignored: pmtu-black-hole says so
        k, biggest = got
        i = errs[0]
        x = WHO[int(ic.side[i])]
        note = f"{ic.label(i)} packet too big from {ic.sender(i)}: MTU {ic.get('icmp_mtu', i)}"
        icmp = [(i, note)] + [(j, "another one, for the next full-size segment") for j in errs[1:3]]
        rows = [(k, f"{x} resends in segments that fit ({biggest} bytes at most)")]
        facts = {
            "mtu": ic.get("icmp_mtu", i),
            "from": ic.sender(i),
            "sender": x,
            "biggest": biggest,
            "errors": len(errs),
            "delay_s": (c.ts[k] - ic.get("ts_ns", i)) / 1e9,
        }
        inst = IcmpInstance(c, rows, icmp, facts)
        diag.claim(c.sid, Claim.RETRANS)  # the resent segments are the discovery, not a timeout
        hits.put((c.server, ic.sender(i), facts["mtu"]), inst)
    return hits.findings(diag, KIND, _tell)


def _tell(g: Group) -> Story:
    ex = g.ex
    c, f, n = ex.conn, ex.facts, g.n
    summary = (
        f"path MTU discovery worked on {plural(n, 'connection')} to {c.server}: "
        f"{f['from']} reported MTU {f['mtu']}, the {f['sender']} sent smaller segments"
    )
    explanation = (
        f"On stream {c.no} the {f['sender']}'s full-size segments did not fit a link on the "
        f"path: the router {f['from']} dropped them and answered with "
        f"{plural(f['errors'], 'packet-too-big error')} carrying MTU {f['mtu']} (RFC 1191, "
        f"RFC 8201). The {f['sender']}'s kernel lowered its path MTU for that destination and "
        f"sent the data again in segments of at most {f['biggest']} bytes "
        f"{fmt_s(f['delay_s'])} later, and the transfer went on: a round trip lost, nothing "
        "failed. Later connections to the same destination start with the smaller size (the "
        "kernel remembers the path MTU for about ten minutes). Were these errors dropped, the "
        "same path would be a black hole (pmtu-black-hole)."
    )
    causes = [f"A link with MTU {f['mtu']} on the path (a tunnel, VPN or overlay)."]
    fixes = [
        advice(
            "Nothing is broken. Keep ICMP type 3 code 4 / ICMPv6 type 2 allowed on every "
            "firewall of this path; MSS clamping on the tunnel (`tcp option maxseg size set rt "
            "mtu`) would save the first round trip.",
            Fix(
                "any",
                None,
                None,
                "Nothing is broken. Keep ICMP type 3 code 4 / ICMPv6 type "
                "2 allowed on every firewall of this path.",
            ),
            Fix(
                "nftables",
                "tcp option maxseg size",
                "rt mtu",
                "nftables on the tunnel's forward chain: tcp flags syn tcp option maxseg size "
                "set rt mtu",
            ),
        ),
    ]
    facts = {"server": c.server, "mtu": f["mtu"], "from": f["from"]}
    return Story(Severity.INFO, summary, explanation, causes, fixes, [], facts)
