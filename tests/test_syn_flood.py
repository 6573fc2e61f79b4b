"""syn-flood and port-scan on synthesized captures: one finding each, exact counts, and the
flood's or scan's connections kept out of the per-connection rules."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import numpy.typing as npt

from tcpwhy.decode.table import ACK, PSH, RST, SYN
from tcpwhy.diagnose.engine import diagnose_files
from tcpwhy.diagnose.model import Finding

NOPS = bytes([1] * 12)
FULL = struct.pack("!BBHBBBBBBBB", 2, 4, 1460, 1, 1, 4, 2, 1, 3, 3, 7)  # MSS SACK_PERM WS
MSS_ONLY = struct.pack("!BBH", 2, 4, 1460) + bytes([1] * 8)
T0 = 1_700_000_000 * 10**9
SERVER = (192 << 24) | (0 << 16) | (2 << 8) | 10  # 192.0.2.10

REC = np.dtype(
    [
        ("sec", "<u4"),
        ("nsec", "<u4"),
        ("caplen", "<u4"),
        ("len", "<u4"),
        ("vihl", "u1"),
        ("tos", "u1"),
        ("tlen", ">u2"),
        ("id", ">u2"),
        ("frag", ">u2"),
        ("ttl", "u1"),
        ("proto", "u1"),
        ("ipsum", ">u2"),
        ("src", ">u4"),
        ("dst", ">u4"),
        ("sport", ">u2"),
        ("dport", ">u2"),
        ("seq", ">u4"),
        ("ack", ">u4"),
        ("doff", "u1"),
        ("flags", "u1"),
        ("win", ">u2"),
        ("sum", ">u2"),
        ("urp", ">u2"),
        ("opt", "u1", (12,)),
    ]
)


class Pkts:
    """Packets as columns; written sorted by time as raw-IPv4 pcap records of one size."""

    def __init__(self) -> None:
        self.parts: list[dict[str, npt.NDArray[np.int64]]] = []
        self.opts: list[npt.NDArray[np.uint8]] = []

    def add(
        self,
        ts: npt.ArrayLike,
        src: npt.ArrayLike,
        dst: npt.ArrayLike,
        sport: npt.ArrayLike,
        dport: npt.ArrayLike,
        flags: int,
        seq: npt.ArrayLike = 1000,
        ack: npt.ArrayLike = 0,
        opt: bytes = NOPS,
    ) -> None:
        cols = {"ts": np.atleast_1d(np.asarray(ts, np.int64))}
        n = len(cols["ts"])
        for name, v in (
            ("src", src),
            ("dst", dst),
            ("sport", sport),
            ("dport", dport),
            ("seq", seq),
            ("ack", ack),
        ):
            cols[name] = np.broadcast_to(np.asarray(v, np.int64), (n,))
        cols["flags"] = np.full(n, flags, np.int64)
        self.parts.append(cols)
        self.opts.append(np.broadcast_to(np.frombuffer(opt, np.uint8), (n, 12)))

    def write(self, path: Path) -> None:
        c = {k: np.concatenate([p[k] for p in self.parts]) for k in self.parts[0]}
        opts = np.concatenate(self.opts)
        order = np.argsort(c["ts"], kind="stable")
        r = np.zeros(len(order), REC)
        r["sec"], r["nsec"] = np.divmod(c["ts"][order], 10**9)
        r["caplen"] = r["len"] = 52
        r["vihl"], r["tlen"], r["ttl"], r["proto"] = 0x45, 52, 64, 6
        for k in ("src", "dst", "sport", "dport", "seq", "ack", "flags"):
            r[k] = c[k][order]
        r["doff"], r["win"] = 8 << 4, 64240
        r["opt"] = opts[order]
        hdr = struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 262144, 101)
        path.write_bytes(hdr + r.tobytes())


def ip(a: int) -> str:
    return ".".join(str((a >> s) & 255) for s in (24, 16, 8, 0))


def flood_capture(path: Path) -> dict[str, object]:
    """50,000 spoofed SYNs in 10 s from 20,000 addresses to 192.0.2.10:443. The server keeps
    256 half-open (full options, SYN-ACK resent after 1 s), answers 30,000 more with cookies
    (MSS only), the rest not at all. 50 real clients complete their handshake meanwhile, and 3
    others, a minute earlier, get no answer at all (a syn-timeout of their own)."""
    rng = np.random.default_rng(7)
    n, nsrc = 50_000, 20_000
    addrs = (10 << 24) + rng.choice(1 << 24, nsrc, replace=False)
    i = np.arange(n)
    src = addrs[i % nsrc]
    sport = 10_000 + i // nsrc
    ts = T0 + 60 * 10**9 + np.sort(rng.integers(0, 10 * 10**9, n))
    p = Pkts()
    p.add(ts, src, SERVER, sport, 443, SYN, opt=FULL)
    q, ck = slice(0, 256), slice(256, 30_256)
    p.add(ts[q] + 20_000, SERVER, src[q], 443, sport[q], SYN | ACK, 5000, 1001, FULL)
    p.add(ts[q] + 10**9 + 20_000, SERVER, src[q], 443, sport[q], SYN | ACK, 5000, 1001, FULL)
    p.add(ts[ck] + 20_000, SERVER, src[ck], 443, sport[ck], SYN | ACK, 5000, 1001, MSS_ONLY)
    legit = (203 << 24) + (113 << 8) + np.arange(1, 51)
    lt = T0 + 61 * 10**9 + np.arange(50) * 100_000_000
    p.add(lt, legit, SERVER, 40_000, 443, SYN, opt=FULL)
    p.add(lt + 30_000, SERVER, legit, 443, 40_000, SYN | ACK, 5000, 1001, MSS_ONLY)
    p.add(lt + 60_000, legit, SERVER, 40_000, 443, ACK, 1001, 5001)
    early = (203 << 24) + (113 << 8) + np.arange(101, 104)
    for off in (0, 1, 3):  # each SYN sent again after 1 s and 2 s more
        p.add(T0 + np.arange(3) * 10**6 + off * 10**9, early, SERVER, 41_000, 443, SYN, opt=FULL)
    p.write(path)
    sec = (ts - T0) // 10**9
    return {
        "src": src,
        "ts": ts,
        "peak": int(np.bincount(sec).max()),
        "top": sorted(
            zip(*np.unique(src, return_counts=True), strict=True), key=lambda x: (-x[1], x[0])
        )[:5],
    }


def by_kind(findings: list[Finding]) -> dict[str, list[Finding]]:
    out: dict[str, list[Finding]] = {}
    for f in findings:
        out.setdefault(f.kind, []).append(f)
    return out


def test_flood_is_one_finding_with_exact_counts(tmp_path: Path) -> None:
    path = tmp_path / "flood.pcap"
    exp = flood_capture(path)
    report = diagnose_files([str(path)])
    kinds = by_kind(report.findings)
    assert sorted(kinds) == ["syn-flood", "syn-timeout"]
    (f,) = kinds["syn-flood"]
    assert f.count == 50_000 and f.severity.label == "error"
    fx = f.facts
    assert fx["server"] == "192.0.2.10:443"
    assert (fx["handshakes"], fx["syns"], fx["sources"]) == (50_000, 50_000, 20_000)
    assert fx["sources_seen_once"] == 0
    assert fx["peak_syn_per_s"] == exp["peak"]
    ts = exp["ts"]
    assert isinstance(ts, np.ndarray)
    dur = (int(ts.max()) - int(ts.min())) / 1e9
    assert fx["duration_s"] == round(dur, 6) and fx["syn_per_s"] == round(50_000 / dur, 1)
    top = exp["top"]
    assert isinstance(top, list)
    assert fx["top_sources"] == [[ip(int(a)), int(c)] for a, c in top]
    assert all(c == 3 for _, c in fx["top_sources"])
    assert (fx["answered_synack"], fx["answered_rst"], fx["unanswered"]) == (30_256, 0, 19_744)
    assert fx["synack_without_offered_options"] == 30_000
    assert fx["synack_with_offered_options"] == 256
    assert (fx["synack_retransmitted"], fx["synack_not_retransmitted"]) == (256, 30_000)
    assert fx["syn_retransmitted"] == 0 and fx["client_rst"] == 0
    assert fx["completed_during"] == 50
    assert "192.0.2.10:443" in f.summary and "50,000 handshakes" in f.summary
    assert "30,000 look like SYN cookies" in f.summary and "19,744 got no answer" in f.summary
    assert "50 other connections to 192.0.2.10:443 completed their handshakes in the same" in (
        f.explanation.replace("\n", " ")
    )
    from tcpwhy.diagnose.render import finding_block, headline

    assert f": {report.capture.packets:,} TCP packets, " in headline(report).plain
    assert report.capture.packets > 50_000
    assert "(50,000 connections over" in _plain(finding_block(f, 1))
    for knob in ("tcp_syncookies", "tcp_max_syn_backlog", "somaxconn", "tcp_synack_retries"):
        assert any(knob in x for x in f.fixes), knob
    assert any("Connection timed out" in e for e in f.errors)
    assert len(f.streams) == 50_000
    # the three early, unanswered clients are syn-timeout; no flood connection is
    (st,) = kinds["syn-timeout"]
    assert st.count == 3 and not set(st.streams) & set(f.streams)
    assert f.timeline[0].packet.startswith("[SYN]") and "SYN cookie" in f.timeline[1].note


def test_below_the_thresholds_is_no_flood(tmp_path: Path) -> None:
    """99 unanswered SYNs from 99 sources in one second: syn-timeout, not a flood; 100 from
    9 sources: not a flood either."""
    for n, nsrc, flood in ((99, 99, False), (100, 9, False), (100, 10, True)):
        i = np.arange(n)
        src = (10 << 24) + i % nsrc
        p = Pkts()
        p.add(T0 + i * 1_000_000, src, SERVER, 20_000 + i, 443, SYN, opt=FULL)
        p.add(T0 + 5 * 10**9, SERVER + 1, SERVER + 2, 1, 2, SYN)  # the capture goes on 5 s
        path = tmp_path / f"f{n}-{nsrc}.pcap"
        p.write(path)
        kinds = by_kind(diagnose_files([str(path)]).findings)
        assert ("syn-flood" in kinds) is flood
        assert [f.count for f in kinds.get("syn-timeout", [])] == ([] if flood else [n])


def scan_capture(path: Path) -> None:
    """198.51.100.7 probes ports 1-1024 of 192.0.2.20: 22, 80, 443 answer SYN-ACK (the scanner
    resets), 1-900 otherwise RST, 901-1024 nothing (the SYN is sent again after 1 s). A real
    client talks to port 80 meanwhile."""
    scanner, target = (198 << 24) | (51 << 16) | (100 << 8) | 7, SERVER + 10
    ports = np.arange(1, 1025)
    ts = T0 + ports * 2_000_000
    p = Pkts()
    p.add(ts, scanner, target, 50_000, ports, SYN, opt=FULL)
    op = np.isin(ports, (22, 80, 443))
    closed = (ports <= 900) & ~op
    filt = ports > 900
    p.add(ts[op] + 50_000, target, scanner, ports[op], 50_000, SYN | ACK, 7000, 1001, FULL)
    p.add(ts[op] + 80_000, scanner, target, 50_000, ports[op], RST, 1001)
    p.add(ts[closed] + 50_000, target, scanner, ports[closed], 50_000, RST | ACK, 0, 1001)
    p.add(ts[filt] + 10**9, scanner, target, 50_000, ports[filt], SYN, opt=FULL)
    c = (203 << 24) + (113 << 8) + 9
    t1 = T0 + 500_000_000
    p.add([t1], c, target, 40_000, 80, SYN, opt=FULL)
    p.add([t1 + 1000], target, c, 80, 40_000, SYN | ACK, 9000, 1001, FULL)
    p.add([t1 + 2000], c, target, 40_000, 80, ACK | PSH, 1001, 9001)
    p.write(path)


def test_port_scan_is_one_finding(tmp_path: Path) -> None:
    path = tmp_path / "scan.pcap"
    scan_capture(path)
    report = diagnose_files([str(path)])
    assert [f.kind for f in report.findings] == ["port-scan"]
    (f,) = report.findings
    assert f.count == 1024 and f.severity.label == "warning"
    fx = f.facts
    assert fx["scanner"] == "198.51.100.7" and fx["ports"] == 1024 and fx["hosts"] == 1
    assert fx["port_range"] == [1, 1024] and fx["top_targets"] == [["192.0.2.20", 1024]]
    assert (fx["open"], fx["closed"], fx["filtered"]) == (3, 897, 124)
    assert fx["open_ports"] == [22, 80, 443] and fx["half_open_scan"] == 3
    assert fx["syn_retransmitted"] == 124
    # seconds count from the capture's first packet (port 1's SYN): ports 1-500 in the first
    assert fx["peak_syn_per_s"] == 500
    assert f.summary.startswith("port scan from 198.51.100.7: 1,024 SYN probes to 1,024 ports")


def test_few_ports_is_no_scan(tmp_path: Path) -> None:
    """19 refused ports from one source: connection-refused as usual (one finding per port),
    no port-scan."""
    scanner, target = (198 << 24) | 7, SERVER + 10
    ports = np.arange(1, 20)
    ts = T0 + ports * 2_000_000
    p = Pkts()
    p.add(ts, scanner, target, 50_000, ports, SYN)
    p.add(ts + 50_000, target, scanner, ports, 50_000, RST | ACK, 0, 1001)
    path = tmp_path / "few.pcap"
    p.write(path)
    fs = diagnose_files([str(path)]).findings
    assert [(f.kind, f.count) for f in fs] == [("connection-refused", 1)] * 19


def test_explain_names_both_kinds() -> None:
    from tcpwhy.diagnose.explain import explain

    def kinds(message: str) -> list[str]:
        return [k for m in explain(message) for k, _ in m.kinds]

    assert "syn-flood" in kinds("dial tcp 10.0.0.1:443: connect: connection timed out")
    assert "port-scan" in kinds("connect ECONNREFUSED 10.0.0.1:25")
    kernel = "TCP: request_sock_TCP: Possible SYN flooding on port 0.0.0.0:8080. Sending cookies."
    assert kinds(kernel) == ["syn-flood", "accept-queue-overflow"]


def test_most_frequent_as_a_stable_sort_ranks_them() -> None:
    """The top sources and targets: the n largest counts, ties in address order, as the
    first n of a stable argsort of the negated counts, whatever the ties at the cut."""
    from tcpwhy.diagnose.syn_flood import _most

    rng = np.random.default_rng(3)
    for size, high, n in (
        (0, 1, 5),
        (3, 2, 5),
        (5, 2, 5),
        (1000, 3, 5),
        (50_000, 1, 5),
        (400, 40, 20),
    ):
        counts = rng.integers(1, high + 1, size).astype(np.int64)
        want = np.argsort(-counts, kind="stable")[:n]
        assert _most(counts, n).tolist() == want.tolist(), (size, high, n)


def _plain(block: object) -> str:
    """A rendered finding as plain text, as a terminal without colour shows it."""
    from rich.console import Console

    con = Console(width=200, color_system=None, record=True)
    con.print(block)
    return con.export_text()


def test_compiled_passes_agree_with_numpy() -> None:
    """The flood's window, its members and the client SYNs' counts as the compiled passes
    find them, against numpy's formulation of the same, on random streams and times: the
    seconds counted one by one, and sorted where they span more seconds than there are
    streams (a packet stamped decades off)."""
    from tcpwhy.diagnose import kernels

    rng = np.random.default_rng(11)
    start = T0
    # seconds 3 and 4 hot (20 streams each), the others 2: the window is exactly [3, 4], and
    # the streams on its edges (3.000000000 s in, 4.999999999 s, 5.000000000 s) fall as they must
    secs = np.r_[np.repeat(np.arange(10), 2), np.full(18, 3), np.full(18, 4)]
    first = start + secs * 10**9 + 500_000_000
    first[:2] = start + 3 * 10**9, start + 5 * 10**9 - 1
    first[2:4] = start + 5 * 10**9, start + 3 * 10**9 - 1
    sids = np.arange(len(first), dtype=np.int64)
    window = np.zeros(2, np.int64)
    got = sids.copy()
    m = kernels.flood_window(first, got, start, 10, got, window)
    assert window.tolist() == [3, 4]
    true_secs = (first - start) // 10**9
    want = np.flatnonzero((true_secs >= 3) & (true_secs <= 4))
    assert got[:m].tolist() == want.tolist() and want[:2].tolist() == [0, 1] and 2 not in want
    for n, spread_s, far in ((500, 5, 0), (3000, 40, 0), (300, 3, 1), (50, 2, 1), (50, 2, 2)):
        # times on and just before second boundaries, and anywhere; a dense second or two
        # (hot at every rate tried) among sparse ones
        first = start + rng.integers(0, spread_s * 4, n) * 250_000_000 - rng.integers(0, 2, n)
        first[::2] = start + rng.integers(0, spread_s * 10**9, len(first[::2]))
        first[1::4] = start + 2 * 10**9 + rng.integers(0, 8, len(first[1::4])) * 250_000_000
        if far == 1:
            first[rng.integers(0, n)] = start + 40 * 365 * 86400 * 10**9
        if far == 2:  # seconds whose nanoseconds from the start are at the end of int64
            first[:2] = start + (2**63 - 1 - start) - np.array([5, 10**9 + 5])
        sids = np.sort(rng.choice(n, n // 2, replace=False)).astype(np.int64)
        if far == 2:
            sids = np.union1d(sids, [0, 1]).astype(np.int64)
        for rate in (1, 5, 10, 10**6):
            sec = (first[sids] - start) // 10**9
            u, c = np.unique(sec, return_counts=True)
            hot = u[c >= rate]
            window = np.zeros(2, np.int64)
            got = sids.copy()
            m = kernels.flood_window(first, got, start, rate, got, window)
            if not len(hot):
                assert m == -1
                continue
            assert window.tolist() == [hot[0], hot[-1]]
            want = sids[(sec >= hot[0]) & (sec <= hot[-1])]
            assert got[:m].tolist() == want.tolist()
        # the client's SYNs of the member streams, over rows of several streams
        rows = 4 * n
        stream = rng.integers(0, n, rows).astype(np.int64)
        flags = rng.choice([SYN, SYN | ACK, ACK, RST, SYN | RST, ACK | PSH], rows).astype(np.uint16)
        side = rng.integers(0, 2, rows).astype(np.int8)
        ts = first[stream] + rng.integers(0, 10**9, rows)
        member = np.zeros(n, np.bool_)
        member[sids] = True
        out = np.zeros(4, np.int64)
        kernels.member_syns(stream, flags, side, ts, member, 0, start, out)
        syn = member[stream] & (side == 0) & ((flags & (SYN | ACK | RST)) == SYN)
        t = ts[syn]
        peak = int(np.unique((t - start) // 10**9, return_counts=True)[1].max())
        assert out.tolist() == [len(t), int(t.min()), int(t.max()), peak]
