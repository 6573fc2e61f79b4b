"""Content gaps (history G/g, missed_bytes) as Zeek's reassembler counts them.

Zeek's TCP_Reassembler delivers each side's data in order; when the peer acknowledges
data it never saw (up to a FIN, not past it), the holes below the acknowledgment are
content gaps: a G (originator's data) or g on the 1st, 10th, 100th ... one, and their
bytes in missed_bytes, counted only while both sides are established or closing cleanly.
The Zeek corpus holds one such connection (tests/test_conns_zeek.py matches it: ShAdDaGg,
233 bytes); the captures here are written with holes placed to exercise each rule.
"""

from __future__ import annotations

from pathlib import Path

from tcpwhy.capture import read_table
from tcpwhy.capture.writer import LINKTYPE_ETHERNET, PcapWriter
from tcpwhy.tcp.connections import build_connections
from tcpwhy.tcp.records import ConnRecord
from tests import craft
from tests.craft import ACK, FIN, PSH, SYN

A, B = craft.v4("10.1.0.1"), craft.v4("10.1.0.2")
CPORT, SPORT = 40001, 80
ISN_C, ISN_S = 7000, 90000


def _pkt(client: bool, seq: int, ack: int, flags: int, data: bytes = b"") -> bytes:
    """A frame of the connection; seq and ack relative to the sender's and peer's ISN."""
    if client:
        seg = craft.tcp(A, B, CPORT, SPORT, ISN_C + seq, ISN_S + ack, flags, data)
        return craft.eth(craft.ip(A, B, 6, seg))
    seg = craft.tcp(B, A, SPORT, CPORT, ISN_S + seq, ISN_C + ack, flags, data)
    return craft.eth(craft.ip(B, A, 6, seg))


def _handshake() -> list[bytes]:
    return [
        _pkt(True, 0, 0, SYN),
        _pkt(False, 0, 1, SYN | ACK),
        _pkt(True, 1, 1, ACK),
    ]


def _close(cseq: int, sseq: int) -> list[bytes]:
    """FINs both ways and the last ACK, from the client's and server's next seq."""
    return [
        _pkt(True, cseq, sseq, FIN | ACK),
        _pkt(False, sseq, cseq + 1, FIN | ACK),
        _pkt(True, cseq + 1, sseq + 1, ACK),
    ]


def _server_data(n: int, size: int = 100) -> list[tuple[int, bytes]]:
    """n server segments of `size` bytes: (relative seq, frame) each, client seq 1."""
    return [(1 + k * size, _pkt(False, 1 + k * size, 1, PSH | ACK, bytes(size))) for k in range(n)]


def _record(tmp_path: Path, frames: list[bytes], snaplen: int = 262144) -> ConnRecord:
    path = tmp_path / "gaps.pcap"
    with PcapWriter.open(str(path), LINKTYPE_ETHERNET, snaplen=snaplen) as w:
        for k, f in enumerate(frames):
            w.write(1_704_067_200_000_000_000 + k * 1_000_000, f)
    recs = build_connections(read_table(str(path)), boundaries="zeek")
    assert len(recs) == 1
    return recs[0]


def test_no_hole_no_gap(tmp_path: Path) -> None:
    data = [f for _, f in _server_data(3)]
    r = _record(tmp_path, [*_handshake(), *data, _pkt(True, 1, 301, ACK), *_close(1, 301)])
    assert (r.history, r.missed_bytes) == ("ShAdFf", 0)


def test_responder_hole_acked_is_a_gap(tmp_path: Path) -> None:
    data = _server_data(3)
    frames = [*_handshake(), data[0][1], data[2][1], _pkt(True, 1, 301, ACK), *_close(1, 301)]
    r = _record(tmp_path, frames)
    assert "g" in r.history and "G" not in r.history
    assert r.missed_bytes == 100


def test_originator_hole_acked_is_a_gap(tmp_path: Path) -> None:
    reqs = [_pkt(True, 1 + 50 * k, 1, PSH | ACK, bytes(50)) for k in range(4)]
    frames = [*_handshake(), reqs[0], reqs[3], _pkt(False, 1, 201, ACK), *_close(201, 1)]
    r = _record(tmp_path, frames)
    assert "G" in r.history and "g" not in r.history
    assert r.missed_bytes == 100


def test_hole_filled_before_the_ack_is_no_gap(tmp_path: Path) -> None:
    """Out of order: the missing segment arrives (late) before the acknowledgment."""
    data = _server_data(3)
    frames = [*_handshake(), data[0][1], data[2][1], data[1][1], _pkt(True, 1, 301, ACK)]
    r = _record(tmp_path, [*frames, *_close(1, 301)])
    assert "g" not in r.history and r.missed_bytes == 0


def test_ack_below_the_hole_then_past_it(tmp_path: Path) -> None:
    """Only what the acknowledgment passes counts: an ACK below the hole reports nothing."""
    data = _server_data(4)
    head = [*_handshake(), data[0][1], data[1][1], data[3][1]]
    r = _record(tmp_path, [*head, _pkt(True, 1, 201, ACK), *_close(1, 201)])
    assert "g" not in r.history and r.missed_bytes == 0
    r = _record(tmp_path, [*head, _pkt(True, 1, 401, ACK), *_close(1, 401)])
    assert "g" in r.history and r.missed_bytes == 100


def test_snaplen_cut_segment_is_missed(tmp_path: Path) -> None:
    """A segment the snaplen cut is not data seen: acknowledged, it is a gap of its length."""
    big = _pkt(False, 1, 1, PSH | ACK, bytes(1000))
    frames = [*_handshake(), big, _pkt(True, 1, 1001, ACK), *_close(1, 1001)]
    r = _record(tmp_path, frames, snaplen=200)
    assert r.missed_bytes == 1000 and "g" in r.history
    assert _record(tmp_path, frames).missed_bytes == 0


def test_fin_octet_is_not_missed(tmp_path: Path) -> None:
    """A hole before the server's FIN: the client's ACK of the FIN passes the FIN's octet,
    which is not data: only the hole counts."""
    data = _server_data(2)
    frames = [
        *_handshake(),
        data[0][1],
        _pkt(False, 201, 1, FIN | ACK),  # its data [101, 201) never seen
        _pkt(True, 1, 202, FIN | ACK),
        _pkt(False, 202, 2, ACK),
    ]
    r = _record(tmp_path, frames)
    assert r.missed_bytes == 100 and "g" in r.history


def test_no_gap_without_a_handshake(tmp_path: Path) -> None:
    """A connection whose start the capture missed: not established both ways in Zeek's
    terms, so its holes are not content gaps."""
    data = _server_data(3)
    frames = [data[0][1], data[2][1], _pkt(True, 1, 301, ACK), data[2][1]]
    r = _record(tmp_path, frames)
    assert "g" not in r.history.lower() and r.missed_bytes == 0


def test_gap_letters_scale(tmp_path: Path) -> None:
    """Twelve holes, each acknowledged: g on the 1st and the 10th, every byte counted."""
    frames = _handshake()
    seq = 1
    for _ in range(12):
        frames.append(_pkt(False, seq + 10, 1, PSH | ACK, bytes(10)))  # [seq, seq+10) missing
        seq += 20
        frames.append(_pkt(True, 1, seq, ACK))
    r = _record(tmp_path, [*frames, *_close(1, seq)])
    assert r.history.count("g") == 2 and r.missed_bytes == 120
