"""IP reassembly against tshark 4.0 on a capture with real fragmentation.

tests/fragment_lab.py records TCP over a GTP-U tunnel whose outer UDP datagrams the
kernel fragments (IPv4 and IPv6) plus a fragmented plain UDP datagram. tshark reassembles
by default: every TCP packet it decodes, at the frame it shows it, must be in the table
with the same fields and stream number. Without reassembly (tshark's ip.defragment and
ipv6.defragment off, tcpwhy's reassemble=False) both decode only the unfragmented ones.
"""

from __future__ import annotations

import csv
import io
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tcpwhy.capture import read_table
from tcpwhy.decode.table import CaptureStats, format_addr
from tcpwhy.tcp.streams import StreamTracker
from tests import fragment_lab

FIELDS = (
    "frame.number",
    "tcp.stream",
    "tcp.srcport",
    "tcp.dstport",
    "tcp.seq_raw",
    "tcp.ack_raw",
    "tcp.len",
    "tcp.flags",
    "frame.len",
)


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    why = fragment_lab.available()
    if why:
        pytest.skip(why)
    out = tmp_path_factory.mktemp("frag") / "frag.pcap"
    fragment_lab.record(out)
    return out


def _tshark(cap: Path, *opts: str) -> list[dict[str, str]]:
    cmd = ["tshark", "-r", str(cap), "-Y", "tcp", "-T", "fields", "-E", "header=y"]
    cmd += [*opts, "-E", "occurrence=l"]
    for f in (*FIELDS, "ip.src", "ipv6.src"):
        cmd += ["-e", f]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return list(csv.DictReader(io.StringIO(out), delimiter="\t"))


def _ours(cap: Path, reassemble: bool) -> tuple[list[dict[str, str]], CaptureStats]:
    stats = CaptureStats()
    t = read_table(str(cap), stats, reassemble=reassemble)
    s = StreamTracker().feed(t)
    out = []
    for i in range(len(t)):
        out.append(
            {
                "frame.number": str(int(t["frame"][i])),
                "tcp.stream": str(int(s["stream"][i])),
                "tcp.srcport": str(int(t["sport"][i])),
                "tcp.dstport": str(int(t["dport"][i])),
                "tcp.seq_raw": str(int(t["seq"][i])),
                "tcp.ack_raw": str(int(t["ack"][i])),
                "tcp.len": str(int(t["payload_len"][i])),
                "tcp.flags": f"0x{int(t['flags'][i]):04x}",
                "frame.len": str(int(t["frame_len"][i])),
                "src": format_addr(t["src_hi"][i], t["src_lo"][i]),
            }
        )
    return out, stats


def _want(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    # occurrence=l: the innermost source address (the TCP endpoint's)
    return [{**{f: r[f] for f in FIELDS}, "src": r["ip.src"] or r["ipv6.src"]} for r in rows]


def test_reassembled_tcp_matches_tshark(capture: Path) -> None:
    want = _want(_tshark(capture))
    ours, stats = _ours(capture, reassemble=True)
    assert ours == want
    # the lab's TCP: both connections (IPv4, IPv6), a third of their packets from fragments
    assert {r["tcp.stream"] for r in ours} == {"0", "1"}
    v4 = sum(":" not in r["src"] for r in ours)
    assert 0 < v4 < len(ours)
    # 14 data segments (7 per connection) ride in fragmented datagrams, and one UDP datagram
    assert stats.reassembled == 15
    assert "incomplete IP datagrams" not in stats.skipped


def _first_fragments(capture: Path) -> set[int]:
    """Frames holding the first fragment of a datagram (IPv4 or IPv6), per tshark."""
    out = set()
    for flt in (
        "ip.flags.mf == 1 && ip.frag_offset == 0",
        "ipv6.fraghdr.offset == 0 && ipv6.fraghdr.more == 1",
    ):
        cmd = ["tshark", "-r", str(capture), "-Y", flt, "-o", "ip.defragment:FALSE"]
        cmd += ["-o", "ipv6.defragment:FALSE", "-T", "fields", "-e", "frame.number"]
        res = subprocess.run(cmd, check=True, capture_output=True, text=True)
        out |= {int(x) for x in res.stdout.split()}
    return out


def test_no_reassembly_matches_tshark_without_defragmenting(capture: Path) -> None:
    """Without defragmenting, tshark still dissects what a first fragment holds (a cut
    segment); tcpwhy counts fragments and decodes none of them."""
    want = _want(_tshark(capture, "-o", "ip.defragment:FALSE", "-o", "ipv6.defragment:FALSE"))
    firsts = _first_fragments(capture)
    ours, stats = _ours(capture, reassemble=False)
    assert ours == [r for r in want if int(r["frame.number"]) not in firsts]
    assert len(want) - len(ours) == 14  # the TCP segments' first fragments
    assert len(ours) == len(_tshark(capture)) - 14
    assert stats.reassembled == 0
    assert stats.skipped["IP fragments"] == 14 * 2 + 3  # the 3000-byte UDP datagram: 3


def _drop_frames(src: Path, dst: Path, drop: set[int]) -> None:
    """Copy a classic pcap without the given frames (1-based)."""
    raw = src.read_bytes()
    out = [raw[:24]]
    pos, n = 24, 0
    le = raw[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1")
    while pos + 16 <= len(raw):
        incl = struct.unpack(("<" if le else ">") + "I", raw[pos + 8 : pos + 12])[0]
        n += 1
        if n not in drop:
            out.append(raw[pos : pos + 16 + incl])
        pos += 16 + incl
    dst.write_bytes(b"".join(out))


def test_missing_fragments_are_counted_not_decoded(capture: Path, tmp_path: Path) -> None:
    """Drop the first fragment of every datagram: nothing can be reassembled, as in tshark,
    and each datagram is reported as incomplete."""
    firsts = _first_fragments(capture)
    assert len(firsts) == 15
    cut = tmp_path / "cut.pcap"
    _drop_frames(capture, cut, firsts)
    want = _want(_tshark(cut))
    ours, stats = _ours(cut, reassemble=True)
    assert [r["frame.number"] for r in ours] == [r["frame.number"] for r in want]
    assert ours == want
    assert stats.reassembled == 0
    assert stats.skipped["incomplete IP datagrams"] == 15
    assert any("never completed" in w for w in stats.warnings)
    np.testing.assert_equal(len(ours), len(_tshark(capture)) - 14)
