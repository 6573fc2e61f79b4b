"""Packet-level checks of the path scenarios (tcpwhy.lab.scenarios_path): ICMP errors and
path MTU, on the shipped recordings and on fresh runs (tests/test_lab.py calls them)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

from tcpwhy.capture import read_table
from tcpwhy.decode.table import ACK, FIN, RST, SYN, PacketTable, format_addr
from tcpwhy.lab.env import Options


@dataclass(frozen=True)
class Seg:
    t: float
    v6: bool
    src: str
    dst: str
    sport: int
    dport: int
    flags: int
    seq: int
    ack: int
    n: int
    ip_len: int


@dataclass(frozen=True)
class Icmp:
    t: float
    v6: bool
    sender: str
    type: int
    code: int
    mtu: int
    quoted: Seg  # the quoted segment, as its sender sent it


def read(path: Path) -> tuple[list[Seg], list[Icmp]]:
    t = read_table(str(path))
    ic = t.icmp
    firsts = [int(t["ts_ns"][0])] if len(t) else []
    if ic is not None and len(ic):
        firsts.append(int(ic["ts_ns"][0]))
    t0 = min(firsts) if firsts else 0

    def seg(tb: PacketTable, i: int) -> Seg:
        g = tb.__getitem__
        return Seg(
            (int(g("ts_ns")[i]) - t0) / 1e9,
            int(g("ip_version")[i]) == 6,
            format_addr(g("src_hi")[i], g("src_lo")[i]),
            format_addr(g("dst_hi")[i], g("dst_lo")[i]),
            int(g("sport")[i]),
            int(g("dport")[i]),
            int(g("flags")[i]),
            int(g("seq")[i]),
            int(g("ack")[i]),
            int(g("payload_len")[i]),
            int(g("ip_len")[i]),
        )

    segs = [seg(t, i) for i in range(len(t))]
    errs = []
    if ic is not None:
        for i in range(len(ic)):
            q = seg(ic, i)
            errs.append(
                Icmp(
                    q.t,
                    q.v6,
                    format_addr(ic["icmp_src_hi"][i], ic["icmp_src_lo"][i]),
                    int(ic["icmp_type"][i]),
                    int(ic["icmp_code"][i]),
                    int(ic["icmp_mtu"][i]),
                    q,
                )
            )
    return segs, errs


def _same(a: Seg, b: Seg) -> bool:
    return (a.src, a.dst, a.sport, a.dport, a.seq, a.flags) == (
        b.src,
        b.dst,
        b.sport,
        b.dport,
        b.seq,
        b.flags,
    )


def check_icmp_reject(path: Path, o: Options, slack: float = 0.0) -> None:
    segs, errs = read(path)
    assert all(s.flags == SYN for s in segs), "nothing but SYNs: no SYN-ACK, no RST"
    assert len(segs) == 6 and len(errs) == 6, "three ports, each over IPv4 and IPv6"
    assert [s.dport for s in segs] == [o.port, o.port, o.port + 1, o.port + 1] + [o.port + 2] * 2
    assert [s.v6 for s in segs] == [o.ipv6, not o.ipv6] * 3, "each port over both families"
    want = {
        (0, False): (3, 1, "server"),
        (0, True): (1, 3, "server"),
        (1, False): (3, 13, "router"),
        (1, True): (1, 1, "router"),
        (2, False): (3, 3, "server"),
        (2, True): (1, 4, "server"),
    }
    for s, e in zip(segs, errs, strict=True):
        assert _same(s, e.quoted), "each error quotes the SYN before it"
        assert 0 < e.t - s.t < 0.05 + slack, "answered at once"
        ty, code, who = want[(s.dport - o.port, s.v6)]
        assert (e.type, e.code, e.v6) == (ty, code, s.v6)
        router = "fd00:77:1::1" if s.v6 else "10.77.1.1"
        assert e.sender == (s.dst if who == "server" else router), (e.sender, who)
        assert e.mtu == 0


def check_icmp_no_route(path: Path, o: Options, slack: float = 0.0) -> None:
    segs, errs = read(path)
    lost = [s for s in segs if s.dst in ("10.77.3.2", "fd00:77:3::2")]
    assert [s.flags for s in lost] == [SYN, SYN] and len(errs) == 2
    for s, e in zip(lost, errs, strict=True):
        assert _same(s, e.quoted) and 0 < e.t - s.t < 0.05 + slack
        assert (e.type, e.code) == ((1, 0) if s.v6 else (3, 0)), "network unreachable / no route"
        assert e.sender == ("fd00:77:1::1" if s.v6 else "10.77.1.1"), "from the router"
    rest = [s for s in segs if s not in lost]
    tags = [s.flags & (SYN | FIN | RST | ACK) for s in rest]
    assert tags[:3] == [SYN, SYN | ACK, ACK] and not any(f & RST for f in tags)
    assert sum(1 for f in tags if f & FIN) == 2, "the reachable server: a clean exchange"


def _conns(segs: list[Seg], port: int) -> list[list[Seg]]:
    by: dict[int, list[Seg]] = {}
    for s in segs:
        by.setdefault(s.sport if s.dport == port else s.dport, []).append(s)
    return list(by.values())


FULL = 1448  # MSS 1460 less the timestamp option: 1500-byte packets


def check_pmtu_black_hole(path: Path, o: Options, slack: float = 0.0) -> None:
    segs, errs = read(path)
    assert errs == [], "the router's errors were dropped: none reaches the client"
    up, down = _conns(segs, o.port)
    c2s = [s for s in up if s.dport == o.port]
    s2c = [s for s in up if s.sport == o.port]
    full = [s for s in c2s if s.n == FULL - (20 if o.ipv6 else 0)]
    assert len(full) >= 8, "full-size segments sent and resent"
    first_full = min(s.seq for s in full)
    assert all(((s.ack - first_full) & 0xFFFFFFFF) == 0 for s in s2c if s.t > full[0].t), (
        "the server never acknowledges past the first full-size segment"
    )
    resent = [s for s in full if s.seq == first_full]
    assert len(resent) >= 4, "the first full-size segment retransmitted with backoff"
    gaps = [b.t - a.t for a, b in itertools.pairwise(resent[1:])]
    assert all(g2 > 1.5 * g1 for g1, g2 in itertools.pairwise(gaps)), gaps
    small = [s for s in c2s if 0 < s.n < 200]
    assert small and small[0].t < full[0].t, "the small request went through first"
    assert any(s.ip_len > 1280 for s in full) and all(s.ip_len <= 1500 for s in c2s)
    # download: header, then only the short tail far past it, then the server's ACK of the
    # client's FIN with a sequence number past everything the client received
    # (a copy of the tail may follow it: the server's tail loss probe, when the client's ACK
    # of the out-of-order tail is slow to come on a busy machine)
    d_s2c: list[Seg] = []
    for s in down:
        if s.sport == o.port and s.n and all((s.seq, s.n) != (d.seq, d.n) for d in d_s2c):
            d_s2c.append(s)
    assert len(d_s2c) == 2, "the header and the body's short last segment, nothing between"
    hdr, tail = d_s2c
    assert hdr.n < 100 and 0 < tail.n < 1200 - (20 if o.ipv6 else 0)
    assert tail.seq - (hdr.seq + hdr.n) >= 5 * (FULL - 60), "the tail is far past the header"
    fin = next(s for s in down if s.dport == o.port and s.flags & FIN)
    assert fin.t - tail.t > 1.5, "the client gave up after its read timeout"
    after = [s for s in down if s.sport == o.port and s.t > fin.t]
    assert after and after[0].seq == tail.seq + tail.n, "the ACK of the FIN reveals the end"


def check_pmtu_discovery(path: Path, o: Options, slack: float = 0.0) -> None:
    segs, errs = read(path)
    up, down = _conns(segs, o.port)
    c2s = [s for s in up if s.dport == o.port]
    full = [s for s in c2s if s.ip_len > 1280]
    assert full and errs, "full-size segments, answered by the router's errors"
    for e in errs:
        assert (e.type, e.code) == ((2, 0) if o.ipv6 else (3, 4)) and e.mtu == 1280
        assert e.sender == ("fd00:77:1::1" if o.ipv6 else "10.77.1.1"), "from the router"
        assert any(_same(s, e.quoted) for s in full), "each quotes a full-size segment"
    after = [s for s in c2s if s.t > errs[0].t and s.n]
    assert after and all(s.ip_len <= 1280 for s in after), "then segments that fit"
    last = max(s.seq + s.n for s in c2s if s.n)
    assert any(s.sport == o.port and s.ack == last for s in up), "all of it acknowledged"
    syn = next(s for s in down if s.flags == SYN)
    d = [s for s in down if s.sport == o.port and s.n]
    assert sum(s.n for s in d) > 8000 and all(s.ip_len <= 1280 for s in d), (
        "the download needs no error: the client remembered the path MTU"
    )
    assert syn.t > errs[-1].t


PATH_IPV6 = ["icmp-reject", "icmp-no-route", "pmtu-black-hole", "pmtu-discovery"]
