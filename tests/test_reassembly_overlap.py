"""Overlapping, repeated and conflicting IP fragments against tshark 4.0.

Each case is a TCP segment carried in hand-made IPv4 or IPv6 fragments (bytes that differ
where fragments overlap, the same offset sent twice, a second last fragment with another
length, a datagram never completed...). With reassembly on, every TCP packet tshark decodes
must be in tcpwhy's table at the same frame with the same seq, length and payload bytes;
with it off (tshark's ip.defragment and ipv6.defragment off), both decode only the
unfragmented packets.
"""

from __future__ import annotations

import csv
import io
import shutil
import struct
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tcpwhy.capture import read_table
from tcpwhy.decode.table import CaptureStats
from tests import craft

pytestmark = pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")

A4, B4 = craft.v4("10.0.0.1"), craft.v4("10.0.0.2")
A6 = bytes.fromhex("fd000000000000000000000000000001")
B6 = bytes.fromhex("fd000000000000000000000000000002")
PAYLOAD = bytes(range(32, 112))  # 80 bytes: a 100-byte TCP segment
MF = True

# (offset, more fragments, bytes) of one datagram, in arrival order; `alt` bytes differ
# from the segment's (the TCP payload starts at byte 20, so bytes from 24 on are payload)
Frag = tuple[int, bool, bytes]


def _segment(src: bytes, dst: bytes, seq: int = 1000) -> bytes:
    return craft.tcp(src, dst, 40000, 80, seq, 1, craft.PSH | craft.ACK, PAYLOAD)


def _alt(seg: bytes, fill: int) -> bytes:
    """The segment with every payload byte from 24 on replaced by `fill`."""
    return seg[:24] + bytes([fill]) * (len(seg) - 24)


def _cases(seg: bytes) -> dict[str, list[Frag]]:
    x, y = _alt(seg, 0xAA), _alt(seg, 0xBB)
    return {
        "partial_overlap": [(0, MF, seg[:48]), (40, MF, x[40:72]), (72, False, seg[72:])],
        "partial_overlap_late": [(40, MF, x[40:72]), (0, MF, seg[:48]), (72, False, seg[72:])],
        "inside_after": [(0, MF, seg[:64]), (32, MF, x[32:48]), (64, False, seg[64:])],
        "inside_before": [(32, MF, x[32:48]), (0, MF, seg[:64]), (64, False, seg[64:])],
        "same_offset": [
            (48, MF, x[48:80]),
            (48, MF, y[48:80]),
            (0, MF, seg[:48]),
            (80, False, seg[80:]),
        ],
        "retransmitted": [(0, MF, seg[:48]), (0, MF, seg[:48]), (48, False, seg[48:])],
        "out_of_order": [(48, False, seg[48:]), (24, MF, seg[24:48]), (0, MF, seg[:24])],
        "second_tail_shorter": [
            (56, False, seg[56:]),
            (16, False, x[16:40]),
            (0, MF, seg[:24]),
            (40, MF, seg[40:56]),
        ],
        "second_tail_longer": [
            (40, False, seg[40:64]),
            (64, False, seg[64:]),
            (0, MF, seg[:40]),
        ],
        "past_the_end": [
            (64, MF, seg[64:] + b"\xcc" * 12),
            (48, False, x[48:64]),
            (0, MF, seg[:48]),
        ],
        "never_completed": [(0, MF, seg[:48]), (80, False, seg[80:])],
        "lone_repeat_after_completion": [
            (0, MF, seg[:48]),
            (48, False, seg[48:]),
            (0, MF, x[:48]),
        ],
        "repeat_after_completion": [
            (0, MF, seg[:48]),
            (48, False, seg[48:]),
            (0, MF, x[:48]),
            (48, False, y[48:]),
        ],
    }


def _frag4(src: bytes, dst: bytes, ident: int, f: Frag) -> bytes:
    off, more, data = f
    return craft.ip(src, dst, 6, data, ident, (off // 8) | (more << 13))


def _frag6(src: bytes, dst: bytes, ident: int, f: Frag) -> bytes:
    off, more, data = f
    fh = struct.pack("!BBHI", 6, 0, off | int(more), ident)
    return struct.pack("!IHBB", 6 << 28, 8 + len(data), 44, 64) + src + dst + fh + data


def _frames(case: str, v6: bool) -> list[bytes]:
    """An unfragmented segment before and after the fragments (so that both modes have
    rows), the fragments of one datagram in between."""
    a, b = (A6, B6) if v6 else (A4, B4)
    make: Callable[[bytes, bytes, int, Frag], bytes] = _frag6 if v6 else _frag4
    seg = _segment(a, b)
    out = [craft.eth(craft.ip(a, b, 6, _segment(a, b, 900), ident=7), v6)]
    out += [craft.eth(make(a, b, 0x1234, f), v6) for f in _cases(seg)[case]]
    out.append(craft.eth(craft.ip(a, b, 6, _segment(a, b, 2000), ident=8), v6))
    return out


FIELDS = ("frame.number", "tcp.seq_raw", "tcp.len", "tcp.payload")
CSUM = {1: "1", 0: "0", -1: "2"}  # tcpwhy's csum_ok as tshark's tcp.checksum.status


def _tshark(
    cap: Path, *opts: str, flt: str = "tcp", fields: tuple[str, ...] = FIELDS
) -> list[dict[str, str]]:
    cmd = ["tshark", "-r", str(cap), "-Y", flt, "-T", "fields", "-E", "header=y", *opts]
    for f in fields:
        cmd += ["-e", f]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    rows = list(csv.DictReader(io.StringIO(out), delimiter="\t"))
    return [{k: v.replace(":", "") for k, v in r.items()} for r in rows]


def _ours(
    cap: Path, reassemble: bool, checksums: bool = False
) -> tuple[list[dict[str, str]], CaptureStats]:
    stats = CaptureStats()
    t = read_table(str(cap), stats, checksums=checksums, reassemble=reassemble)
    rows = []
    for i in range(len(t)):
        row = {
            "frame.number": str(int(t["frame"][i])),
            "tcp.seq_raw": str(int(t["seq"][i])),
            "tcp.len": str(int(t["payload_len"][i])),
            "tcp.payload": t.payload(i).hex(),
        }
        if checksums:
            row["tcp.checksum.status"] = CSUM[int(t["csum_ok"][i])]
        rows.append(row)
    return rows, stats


CASES = list(_cases(_segment(A4, B4)))


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
@pytest.mark.parametrize("case", CASES)
def test_reassembled_like_tshark(case: str, v6: bool, tmp_path: Path) -> None:
    cap = craft.write(tmp_path / f"{case}.pcap", _frames(case, v6))
    want = _tshark(cap)
    ours, stats = _ours(cap, reassemble=True)
    assert ours == want
    # the two unfragmented segments, then one row per datagram tshark reassembled
    assert stats.reassembled == len(ours) - 2
    # a datagram left without its last bytes is counted (a lone repeat after completion
    # starts one, as in tshark)
    left = 1 if case in ("never_completed", "lone_repeat_after_completion") else 0
    assert stats.skipped.get("incomplete IP datagrams", 0) == left
    # checked checksums: overlapping bytes that differ spoil the segment's in both
    fields = (*FIELDS, "tcp.checksum.status")
    want = _tshark(cap, "-o", "tcp.check_checksum:TRUE", fields=fields)
    ours, _stats = _ours(cap, reassemble=True, checksums=True)
    assert ours == want


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
@pytest.mark.parametrize("case", CASES)
def test_not_reassembled_like_tshark(case: str, v6: bool, tmp_path: Path) -> None:
    """Without defragmenting, tshark still dissects a first fragment's cut segment;
    tcpwhy decodes no fragment: both agree on every unfragmented packet."""
    cap = craft.write(tmp_path / f"{case}.pcap", _frames(case, v6))
    flt = "tcp && !(ip.flags.mf == 1 || ip.frag_offset > 0 || ipv6.fraghdr)"
    want = _tshark(cap, "-o", "ip.defragment:FALSE", "-o", "ipv6.defragment:FALSE", flt=flt)
    ours, stats = _ours(cap, reassemble=False)
    assert ours == want
    assert [r["frame.number"] for r in ours] == ["1", str(len(_frames(case, v6)))]
    assert stats.reassembled == 0
