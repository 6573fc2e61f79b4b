"""The packet table against tshark 4.0's decoding of every TCP packet of the Zeek corpus.

../shared/corpus/zeek/tshark/<trace>.tshark.tsv holds tshark's fields for each
frame that carries TCP. Every packet tshark decodes must be in our table with
the same values; the only accepted differences are listed in DOCUMENTED below
(also in the README) and counted, not hidden.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from tcpwhy.capture import read_table
from tcpwhy.decode.table import CaptureStats, format_addr
from tests.tshark_ref import package_pairs

FIELDS = {
    # tshark column -> (our column, converter of the tshark text)
    "frame.len": ("frame_len", int),
    "tcp.srcport": ("sport", int),
    "tcp.dstport": ("dport", int),
    "tcp.flags": ("flags", lambda s: int(s, 16)),
    "tcp.seq_raw": ("seq", int),
    "tcp.ack_raw": ("ack", int),
    "tcp.len": ("payload_len", int),
    "tcp.window_size_value": ("win", int),
    "tcp.options.mss_val": ("opt_mss", int),
    "tcp.options.wscale.shift": ("opt_ws", int),
    "tcp.options.timestamp.tsval": ("opt_tsval", int),
    "tcp.options.timestamp.tsecr": ("opt_tsecr", int),
}

# our value where tshark shows none (the option is absent); any other empty field is a difference
ABSENT = {"opt_mss": -1, "opt_ws": -1, "opt_tsval": 0, "opt_tsecr": 0}


# Deliberate differences, counted exactly (also in the README, "Agreement with Wireshark and Zeek").
# (none today: the GTP trace whose outer UDP datagrams are IP fragments agrees since tcpwhy
# reassembles IP, as tshark does)
DOCUMENTED: dict[tuple[str, str], tuple[int, str]] = {}


def _rows(tsv: Path) -> list[dict[str, str]]:
    with tsv.open(newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def _traces(zeek: Path) -> list[Path]:
    return sorted(p for p in zeek.iterdir() if p.suffix in (".pcap", ".pcapng"))


def compare_trace(trace: Path, tsv: Path) -> tuple[int, list[str]]:
    """(packets compared, list of mismatch descriptions)."""
    stats = CaptureStats()
    t = read_table(str(trace), stats)
    by_frame = {int(f): i for i, f in enumerate(t["frame"])}
    problems: list[str] = []
    # ICMP errors about TCP are rows of t.icmp (tests/test_icmp.py compares them)
    icmp = set() if t.icmp is None else {int(f) for f in t.icmp["frame"]}
    rows = [r for r in _rows(tsv) if int(r["frame.number"]) not in icmp]
    for r in rows:
        fno = int(r["frame.number"])
        i = by_frame.get(fno)
        if i is None:
            problems.append(f"{trace.name} frame {fno}: missing from the table")
            continue
        for tcol, (col, conv) in FIELDS.items():
            text = r[tcol].split(",")[0]
            if text == "" and col not in ABSENT:
                problems.append(f"{trace.name} frame {fno}: {col}={t[col][i]}, tshark none")
            elif int(t[col][i]) != (ABSENT[col] if text == "" else conv(text)):
                problems.append(f"{trace.name} frame {fno}: {col}={t[col][i]}, tshark {text!r}")
        # a TSval or TSecr of 0 is legal: presence is its own column
        has_ts = r["tcp.options.timestamp.tsval"] != ""
        if bool(t["opt_ts"][i]) != has_ts:
            problems.append(f"{trace.name} frame {fno}: opt_ts={t['opt_ts'][i]}, tshark {has_ts}")
        # tshark's view holds the first ip.src/ipv6.src of a packet (occurrence=f): its
        # outermost IPv4 and IPv6 headers. A tunnelled packet's outer addresses are in the
        # outer_* columns, the TCP endpoints in src/dst.
        pre = "outer_" if t["tunnel"][i] else ""
        ours = (
            format_addr(t[pre + "src_hi"][i], t[pre + "src_lo"][i]),
            format_addr(t[pre + "dst_hi"][i], t[pre + "dst_lo"][i]),
        )
        v4 = (r["ip.src"], r["ip.dst"])
        v6 = (r["ipv6.src"], r["ipv6.dst"])
        if v4[0] and v6[0]:
            # IPv6 in IPv4 (or the reverse): one is the outer header, the other the inner one
            inner = (
                format_addr(t["src_hi"][i], t["src_lo"][i]),
                format_addr(t["dst_hi"][i], t["dst_lo"][i]),
            )
            if {ours, inner} != {v4, v6}:
                problems.append(f"{trace.name} frame {fno}: addresses {ours} tshark {v4} {v6}")
        elif ours != (v4 if v4[0] else v6):
            problems.append(f"{trace.name} frame {fno}: addresses {ours} tshark {v4} {v6}")
    extra = set(by_frame) - {int(r["frame.number"]) for r in rows}
    for fno in sorted(extra):
        problems.append(f"{trace.name} frame {fno}: in the table, not decoded as TCP by tshark")
    return len(rows), problems


def test_every_tcp_packet_matches_tshark(zeek_corpus: Path) -> None:
    total = 0
    problems: list[str] = []
    tshark_dir = zeek_corpus / "tshark"
    for trace in _traces(zeek_corpus):
        tsv = tshark_dir / f"{trace.name}.tshark.tsv"
        assert tsv.exists(), tsv
        n, p = compare_trace(trace, tsv)
        total += n
        problems += p
    kinds: dict[tuple[str, str], int] = {}
    unexplained = []
    for p in problems:
        trace, rest = p.split(" frame ", 1)
        key = (trace, rest.split(": ", 1)[1].split("=")[0])
        if key in DOCUMENTED:
            kinds[key] = kinds.get(key, 0) + 1
        else:
            unexplained.append(p)
    print(f"compared {total} TCP packets; {len(problems)} differences")
    for key, n in kinds.items():
        print(f"  documented: {key[0]}: {n} x {key[1]} ({DOCUMENTED[key][1]})")
    for p in unexplained[:50]:
        print(" ", p)
    assert total == 15268  # every TCP packet tshark decodes in the corpus
    assert unexplained == []
    assert kinds == {k: v[0] for k, v in DOCUMENTED.items()}


def test_lab_recordings_match_tshark() -> None:
    """The shipped recordings carry timestamp options on nearly every packet (loopback
    Linux, where a SYN's TSecr is 0 and present), so TSval/TSecr and their presence are
    compared where they are set, not only where they are absent."""
    pairs = list(package_pairs())
    # 32 lab recordings (5 over TLS, 2 at both ends of a path, 4 ICMP/MTU) and the demo
    assert len(pairs) == 33
    total, problems, with_ts = 0, [], 0
    for cap, tsv in pairs:
        n, p = compare_trace(cap, tsv)
        total += n
        problems += p
        with_ts += sum(r["tcp.options.timestamp.tsval"] != "" for r in _rows(tsv))
    assert problems == []
    assert (total, with_ts) == (1268, 856)


def test_timestamps_nanosecond_and_relative(zeek_corpus: Path) -> None:
    trace = zeek_corpus / "ftp-gridftp.pcap"
    t = read_table(str(trace))
    rows = _rows(zeek_corpus / "tshark" / f"{trace.name}.tshark.tsv")
    rel = (t["ts_ns"] - t["ts_ns"][0]) / 1e9
    want = np.array([float(r["frame.time_relative"]) for r in rows])
    assert np.allclose(rel[: len(want)], want, atol=1e-9)


@pytest.mark.parametrize("name", ["ftp-gridftp.pcap"])
def test_chunking_does_not_change_the_table(zeek_corpus: Path, name: str) -> None:
    from tcpwhy.capture.reader import iter_tables
    from tcpwhy.decode.table import PacketTable

    whole = read_table(str(zeek_corpus / name))
    small = PacketTable.concat(list(iter_tables(str(zeek_corpus / name), chunk_bytes=97)))
    for k in whole.cols:
        assert np.array_equal(whole[k], small[k]) or k == "payload_off", k
    assert whole.data.tobytes() == small.data.tobytes()


def test_teredo_on_any_port_as_zeek_does(zeek_corpus: Path) -> None:
    """tshark looks inside UDP port 3544 only; Zeek also decodes Teredo between a client and
    its relay on other ports, which tcpwhy does when asked (conns --format zeek)."""
    for name in ("tunnels-teredo.pcap", "tunnels-teredo-bubble-with-payload.pcap"):
        plain = read_table(str(zeek_corpus / name))
        zeekish = read_table(str(zeek_corpus / name), teredo_any_port=True)
        extra = np.setdiff1d(zeekish["frame"], plain["frame"])
        assert len(extra) == 22, name
        inner = zeekish.take(np.isin(zeekish["frame"], extra))
        assert set(inner["tunnel"].tolist()) == {5}  # TUNNEL_TEREDO
        assert set(inner["ip_version"].tolist()) == {6}
        assert {
            format_addr(h, lo) for h, lo in zip(inner["src_hi"], inner["src_lo"], strict=True)
        } >= {"2001:0:4137:9e50:8000:f12a:b9c8:2815"}
