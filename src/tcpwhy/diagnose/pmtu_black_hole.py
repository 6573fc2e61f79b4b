"""pmtu-black-hole: full-size segments vanish on the path while small ones pass, and the
packet-too-big ICMP that should shrink them never arrives (or is ignored).

Two views of the same failure. At the sender: full-size segments are retransmitted
with backoff and never acknowledged, while the peer still answers and smaller
segments got through. At the receiver: the sender's sequence numbers jump past
data that never arrives (a hole that no retransmission fills) while its small
packets keep coming. Either way the connection hangs until a timeout, and what
it looks like otherwise (a retransmission timeout, a peer that never closes)
is a consequence.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from tcpwhy.decode.table import ACK, SYN
from tcpwhy.diagnose import knowledge
from tcpwhy.diagnose.common import Group, needs_streams
from tcpwhy.diagnose.context import CLIENT, SERVER, WHO, Conn, fmt_s
from tcpwhy.diagnose.icmp_unreachable import IcmpHits, IcmpInstance
from tcpwhy.diagnose.model import Finding, Severity, Story
from tcpwhy.diagnose.registry import Claim, Diag, plural, rule
from tcpwhy.tcp.seq import HALF, U32, seq_add, seq_diff, seq_gt, seq_offset

ORDER = 30

KIND = "pmtu-black-hole"
MIN_FULL = 536  # payload of the smallest segment a black hole can swallow (576-byte packets)
HOLE_WAIT_S = 1.0  # a hole older than this, never filled, is not ordinary loss


def headers(c: Conn, i: int) -> int:
    """IP and TCP header bytes of row i (timestamps option assumed when present)."""
    t = c.cap.table
    row = int(c.rows[i])
    v4 = int(t["src_hi"][row]) == 0 and (int(t["src_lo"][row]) >> 32) == 0xFFFF
    return (20 if v4 else 40) + 20 + (12 if bool(t["opt_ts"][row]) else 0)


def _mss(c: Conn, who: int) -> int | None:
    """The MSS `who` announced in its SYN."""
    t = c.cap.table
    for k in range(c.n):
        if c.side[k] == who and c.flags[k] & SYN:
            v = int(t["opt_mss"][int(c.rows[k])])
            return v if v > 0 else None
    return None


def _icmp_about(c: Conn, x: int) -> list[int]:
    ic = c.cap.icmp
    return [i for i in ic.rows_of(c.sid) if ic.too_big[i] and ic.side[i] == x]


def _seq_top(values: Any) -> int:
    """The last value a scan keeps that replaces its top with any value after it (seq_gt):
    the numeric maximum when the values lie within half the sequence space (then seq_gt
    orders them as numbers), else the scan itself."""
    lo, hi = int(values.min()), int(values.max())
    if hi - lo < HALF:
        return hi
    top = int(values[0])
    for a in values.tolist():
        if seq_gt(a, top):
            top = a
    return top


def at_sender(c: Conn, x: int) -> dict[str, Any] | None:
    """`x`'s full-size segments retransmitted and never acknowledged, the peer still alive.
    Columns, not lists: a long connection with a retransmission is a candidate, and a
    capture of long flows has thousands."""
    y = 1 - x
    side, flags = c._np_side, c._np_flags
    acks = c._np_rack[(side == y) & ((flags & ACK) != 0)]
    if not len(acks):
        return None
    top = _seq_top(acks)
    plen, rseq = c._np_plen, c._np_rseq
    data = c._np_data & (side == x)
    beyond = seq_gt(seq_add(rseq, plen), top)
    stuck = np.flatnonzero(data & beyond)
    if not len(stuck):
        return None
    at = stuck[int(np.argmin(seq_offset(rseq[stuck], top)))]
    s0 = int(rseq[at])
    send_rows = stuck[rseq[stuck] == s0]
    if len(send_rows) < 2 or int(plen[send_rows].min()) < MIN_FULL:
        return None
    size = int(plen[send_rows].min())
    acked = data & ~beyond
    passed = int(plen[acked].max()) if acked.any() else 0
    if passed >= size:
        return None  # segments as large got through: not a size problem
    sends: list[int] = send_rows.tolist()
    icmp = _icmp_about(c, x)
    ic = c.cap.icmp
    ignored = [i for i in icmp if ic.get("ts_ns", i) < c.ts[sends[-1]]]
    after = [k for k in range(sends[0] + 1, c.n) if c.side[k] == y]
    if not after and not ignored:
        return None  # nothing came back at all: a dead path (retransmission-timeout)
    if icmp and not ignored:
        return None
    return {
        "view": "sender",
        "who": x,
        "first": sends[0],
        "sends": sends,
        "size": size,
        "passed": passed,
        "peer_alive": after[0] if after else None,
        "icmp": ignored,
        "hdr": headers(c, sends[0]),
    }


def at_receiver(c: Conn, x: int) -> dict[str, Any] | None:
    """A hole in `x`'s data that no retransmission fills, while x's small packets arrive."""
    data_rows = np.flatnonzero(c._np_data & (c._np_side == x))
    if len(data_rows) < 2:
        return None
    mss = _mss(c, 1 - x)  # what the receiver allowed
    biggest = int(c._np_plen[data_rows].max())
    if mss is not None and biggest >= mss - 40:
        return None  # full-size segments did arrive (checked first: no hole search needed)
    seq = c._np_rseq[data_rows]
    hole = unfilled_hole(seq, c._np_plen[data_rows])
    if hole is None:
        return None
    start, end, i = hole
    k = int(data_rows[i])
    gap = seq_diff(end, start)  # end after start: the hole's length
    if gap < MIN_FULL:
        return None
    waited = (c.cap.end_ns - c.ts[k]) / 1e9
    if waited < HOLE_WAIT_S:
        return None
    later = np.flatnonzero(c._np_side[k + 1 :] == x)
    return {
        "view": "receiver",
        "who": x,
        "first": k,
        "gap": gap,
        "hole": start,
        "passed": biggest,
        "mss": mss,
        "later": k + 1 + int(later[-1]) if len(later) else None,
        "waited": waited,
        "hdr": headers(c, k),
    }


def unfilled_hole(
    seq: npt.NDArray[np.int64], plen: npt.NDArray[np.int64]
) -> tuple[int, int, int] | None:
    """The first hole in a direction's data segments (relative sequence numbers and
    lengths, in capture order) as (its start, its end, the segment after it), None when
    there is none or a later segment covers its start (ordinary loss, repaired).

    Until the first hole every segment starts within what came before, so what came before
    reaches the largest end so far: a running maximum finds the hole, where the segments
    lie within half the sequence space (numbers then order as RFC 1982 orders them), as
    almost all connections' do. Else the segments are walked one by one (`_walk_hole`). The
    walk alone, in Python, was 1.5 s of `analyze` on a capture of long flows with losses."""
    end = seq + plen
    if len(seq) and int(end.max()) - int(seq.min()) < HALF:
        reach = np.maximum.accumulate(end)
        jumps = np.flatnonzero(seq[1:] > reach[:-1])
        if not len(jumps):
            return None
        i = int(jumps[0]) + 1
        start = int(reach[i - 1])
        if ((seq[i:] <= start) & (end[i:] > start)).any():
            return None
        return start & U32, int(seq[i]), i
    return _walk_hole(seq.tolist(), plen.tolist())


def _walk_hole(seq: list[int], plen: list[int]) -> tuple[int, int, int] | None:
    """`unfilled_hole` segment by segment in sequence space (wrapping): for a direction
    whose segments span half the space or more, and the reference its fast way is held to."""
    nxt = seq_add(seq[0], plen[0])
    hole = None
    for k in range(1, len(seq)):
        s, e = seq[k], seq_add(seq[k], plen[k])
        if hole is None and seq_gt(s, nxt):
            hole = (nxt, s, k)
        if hole is not None and not seq_gt(s, hole[0]) and seq_gt(e, hole[0]):
            return None  # filled: ordinary loss, repaired
        if not seq_gt(s, nxt) and seq_gt(e, nxt):
            nxt = e
    return hole


@rule(KIND)
@needs_streams
def detect(diag: Diag) -> list[Finding]:
    cap = diag.cap
    retrans = cap.flag("retransmission") | cap.flag("lost_segment")
    cand = np.zeros(cap.nstreams, np.bool_)
    cand[cap.stream[retrans]] = True
    cand &= ~diag.claimed_mask(Claim.RETRANS)
    hits = IcmpHits()
    for c in cap.conns_where(cand):
        if c.on_one_host:
            continue  # what goes missing there was lost by the capture
        for x in (CLIENT, SERVER):
            got = at_sender(c, x) or at_receiver(c, x)
            if got is None:
                continue
            rows, icmp = _rows(c, got)
            hits.put((c.server, x, got["view"]), IcmpInstance(c, rows, icmp, got))
            diag.claim(c.sid, Claim.RETRANS)
            diag.claim(c.sid, Claim.CLOSE)
            diag.claim(c.sid)
            break
    return hits.findings(diag, KIND, _tell)


def _rows(c: Conn, f: dict[str, Any]) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    x = WHO[f["who"]]
    if f["view"] == "sender":
        sends = f["sends"]
        rows = [(sends[0], f"{x} sends a full-size segment ({f['size']} bytes)")]
        for n, k in enumerate(sends[1:5], 1):
            rows.append((k, f"the same {f['size']} bytes again ({n}), never acknowledged"))
        if f["peer_alive"] is not None:
            rows.append((f["peer_alive"], f"{WHO[1 - f['who']]} is alive: small packets pass"))
        icmp = [(i, "packet too big: ignored, the segments stay full-size") for i in f["icmp"]]
        return rows, icmp[:3]
    rows = [
        (f["first"], f"{x}'s segment {f['gap']} bytes past the last one received: a hole"),
    ]
    if f["later"] is not None and f["later"] != f["first"]:
        rows.append((f["later"], f"{x}'s later packet: its sequence number is past the hole"))
    return rows, []


def _tell(g: Group) -> Story:
    ex = g.ex
    c, f, n = ex.conn, ex.facts, g.n
    x, y = WHO[f["who"]], WHO[1 - f["who"]]
    hdr = f["hdr"]
    if f["view"] == "sender":
        big = f["size"] + hdr
        mtu_text = f"below the {big}-byte packets that vanish"
        summary = (
            f"{plural(n, 'connection')} to {c.server}: the {x}'s full-size segments "
            f"({f['size']} bytes) retransmitted and never acknowledged while small packets "
            "pass — a path MTU black hole"
        )
        sends = f["sends"]
        what = (
            f"On stream {c.no} the {x} sent {f['size']} bytes at seq {c.rseq[sends[0]]} (frame "
            f"{c.frame[sends[0]]}) and sent them {len(sends) - 1} more times over "
            f"{fmt_s(c.dt(sends[0], sends[-1]))}, always the same size; none was acknowledged. "
            + (
                f"The {y} was not gone: it still sent packets afterwards (frame "
                f"{c.frame[f['peer_alive']]}), and the {x}'s smaller segments (up to "
                f"{f['passed']} bytes) had been acknowledged. "
                if f["peer_alive"] is not None
                else f"The {x}'s smaller segments (up to {f['passed']} bytes) were acknowledged. "
            )
        )
        if f["icmp"]:
            ic = c.cap.icmp
            i = f["icmp"][0]
            mtu = ic.get("icmp_mtu", i)
            what += (
                f"A router ({ic.sender(i)}) did say so: {ic.label(i)} packet too big, MTU {mtu} "
                f"(frame {ic.get('frame', i)}), but the {x} kept sending full-size segments: "
                "the error was ignored or dropped after the capture point (a host firewall "
                "that drops ICMP, or a tunnel that never passes it on). "
            )
            mtu_text = f"{mtu} bytes (the router's packet-too-big)"
        else:
            what += "No ICMP packet too big / fragmentation needed came back. "
    else:
        small = f["passed"] + hdr
        if f["mss"] is not None:
            mtu_text = (
                f"between {small} bytes, which arrived, and the {f['mss'] + hdr}-byte "
                "full-size packets"
            )
        else:
            mtu_text = f"above {small} bytes, which arrived"
        summary = (
            f"{plural(n, 'connection')} to {c.server}: {f['gap']} bytes from the {x} never "
            "arrived while its small packets did — a path MTU black hole"
        )
        k = f["first"]
        what = (
            f"On stream {c.no} the {x}'s segment at frame {c.frame[k]} starts {f['gap']} bytes "
            f"past the last byte received: that data was sent (the {x}'s sequence numbers "
            f"moved past it) but never arrived, and no retransmission filled the hole in the "
            f"{fmt_s(f['waited'])} the capture followed it. Everything the {x} sent that did "
            f"arrive was small (at most {f['passed']} bytes of payload), while the {y} allowed "
            + (
                f"segments of {f['mss']} bytes"
                if f["mss"] is not None
                else "larger segments (its MSS is unknown: its SYN is not in the capture, or "
                "had no MSS option)"
            )
            + ": the full-size ones are lost on the way, every time. "
            f"The {y}'s application waits for data that cannot come until a timeout; what "
            "follows (a close, a peer that never sends its FIN because its queue is stuck "
            "behind the lost data) is a consequence. "
        )
    what += (
        f"The path's MTU is smaller than the endpoints' ({mtu_text}), and the ICMP "
        '"fragmentation needed" / "packet too big" that path MTU discovery relies on does '
        "not reach the sender: a firewall or security group drops all ICMP, or a tunnel "
        "(VPN, GRE, IPsec, VXLAN, PPPoE) lowers the MTU silently."
    )
    if n > 1:
        what += f"\n\n{plural(n, 'connection')} show it."
    causes = [
        "ICMP type 3 code 4 (IPv4 fragmentation needed) or ICMPv6 type 2 (packet too big) "
        "dropped by a firewall, security group or ACL between the hosts.",
        "A tunnel or overlay on the path (VPN, GRE, IPsec, WireGuard, VXLAN, PPPoE) with a "
        "smaller MTU that does not clamp the MSS.",
        "A host whose own firewall drops incoming ICMP (the error reaches it, the kernel never "
        "sees it).",
    ]
    fixes = [
        knowledge.advice(
            "Clamp the MSS on the router or tunnel endpoint: `nft add rule inet filter forward "
            "tcp flags syn tcp option maxseg size set rt mtu` (iptables: -j TCPMSS "
            "--clamp-mss-to-pmtu), or a fixed `... maxseg size set 1240` for a 1280-byte link.",
            knowledge.Fix(
                "nftables",
                "tcp option maxseg size",
                "rt mtu",
                "on the router or tunnel endpoint: `nft add rule inet filter forward tcp flags syn tcp option maxseg size set rt mtu` (iptables: -j TCPMSS --clamp-mss-to-pmtu)",
            ),
        ),
        knowledge.advice(
            "On the hosts: net.ipv4.tcp_mtu_probing=1 (probe smaller segments when full-size ones "
            "vanish; =2 always), and net.ipv4.tcp_base_mss for its starting point.",
            knowledge.sysctl(
                "net.ipv4.tcp_mtu_probing",
                "1",
                "probe smaller segments when full-size ones vanish; =2 always",
            ),
            knowledge.sysctl("net.ipv4.tcp_base_mss", None, "the probing's starting point"),
        ),
        knowledge.advice(
            "Let ICMP type 3 code 4 and ICMPv6 type 2 through every firewall and security group "
            "on the path (`nft add rule inet filter input icmp type destination-unreachable "
            "accept; ... icmpv6 type packet-too-big accept`).",
            knowledge.Fix(
                "nftables",
                None,
                None,
                "`nft add rule inet filter input icmp type destination-unreachable accept; ... icmpv6 type packet-too-big accept`, on every firewall and security group on the path",
            ),
        ),
        "Or lower the interface MTU on the hosts to the path's (`ip link set dev eth0 mtu "
        "1280`), or `ip route ... mtu lock 1280` for the affected destinations.",
    ]
    errors = [
        "Python: TimeoutError / socket.timeout: timed out (requests: ReadTimeout) — the "
        "transfer hangs after its first bytes",
        "Go: read tcp …: i/o timeout, or context deadline exceeded",
        "Java: java.net.SocketTimeoutException: Read timed out",
        "Node.js: Error: read ETIMEDOUT, or the request never completes",
        "curl: (28) Operation timed out after … with N out of M bytes received",
        "nginx: upstream timed out (110: Connection timed out) while reading response header "
        "from upstream; ssh: hangs after 'expecting SSH2_MSG_KEX_ECDH_REPLY'",
    ]
    facts = {"server": c.server, "view": f["view"], "sender": x, "path_mtu": mtu_text}
    return Story(Severity.ERROR, summary, what, causes, fixes, errors, facts)
