"""One capture, the timing it already has: a RST that comes back sooner after the segment it
answers than a round trip to its sender allows was made on the path (`middlebox-reset`,
likely), and the rules that read a RST as "the peer's kernel answered" leave it alone.

The captures are lab recordings (loopback: round trips in microseconds, where timing decides
nothing) retimed as a capture beside the RST's receiver would show them over a 60 ms path:
every packet from the far end that follows one from the near end arrives 60 ms later, except
the RST looked at, which arrives `share` × 60 ms later. With share 1 it is the peer's answer;
with 0.4 (24 ms) it cannot be. lost-final-ack's recording ends with the client's duplicate
ACK of the retransmitted FIN; that ACK is replaced by the bare RST a client without its
TIME_WAIT socket sends (the rule's reset case), built with the tests' packet helpers.
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from tcpwhy.diagnose.engine import diagnose_files
from tcpwhy.lab.record import DATA_DIR
from tests import craft
from tests.test_lab import RST, packets

RTT = 0.060


def records(raw: bytes) -> list[tuple[int, bytes]]:
    """A little-endian nanosecond pcap's records: (time in ns, frame)."""
    assert raw[:4] == b"\x4d\x3c\xb2\xa1", "a little-endian nanosecond pcap"
    out, off = [], 24
    while off < len(raw):
        sec, nsec, incl, _ = struct.unpack_from("<IIII", raw, off)
        out.append((sec * 10**9 + nsec, raw[off + 16 : off + 16 + incl]))
        off += 16 + incl
    return out


def write_records(dst: Path, header: bytes, recs: list[tuple[int, bytes]]) -> Path:
    out = [header]
    for t, f in recs:
        out.append(struct.pack("<IIII", t // 10**9, t % 10**9, len(f), len(f)) + f)
    dst.write_bytes(b"".join(out))
    return dst


def forged(
    frame: bytes,
    flags: int,
    ack: int = 0,
    payload: bytes = b"",
    seq: int | None = None,
    ttl: int | None = None,
) -> bytes:
    """A segment between the endpoints of `frame` (Ethernet, IPv4), in its direction, with
    its sequence number unless `seq` is given, and the flags, acknowledgment and payload
    given: what a box on the path would forge in that endpoint's name."""
    ihl = (frame[14] & 0x0F) * 4
    iph = frame[14 : 14 + ihl]
    src, dst = iph[12:16], iph[16:20]
    sport, dport, own_seq = struct.unpack_from("!HHI", frame, 14 + ihl)
    seg = craft.tcp(src, dst, sport, dport, own_seq if seq is None else seq, ack, flags, payload)
    pkt = craft.ip(src, dst, 6, seg, ttl=iph[8] if ttl is None else ttl)
    return craft.eth(pkt, src=frame[6:12], dst=frame[0:6])


def rst_for_lost_final_ack(dst: Path) -> Path:
    """lost-final-ack's recording with the client's last packet (its duplicate ACK of the
    retransmitted FIN) replaced by a bare RST of the same sequence number."""
    src = DATA_DIR / "lost-final-ack.pcap"
    raw = src.read_bytes()
    recs = records(raw)
    last = max(p.i for p in packets(src) if p.c2s)
    t, f = recs[last]
    recs[last] = (t, forged(f, RST))
    return write_records(dst, raw[:24], recs)


def retime(src: Path, dst: Path, share: float, rst: int | None = None, port: int = 8080) -> None:
    """`src` (a nanosecond pcap) as seen beside the receiver of a RST (the record index
    `rst`, else the first RST) over a path of RTT; only the packets of the server `port`
    are looked at (those of other ports before them keep their times)."""
    raw = src.read_bytes()
    assert raw[:4] == b"\x4d\x3c\xb2\xa1", "a little-endian nanosecond pcap"
    pk = {p.i: p for p in packets(src, port)}
    first_rst = min(i for i, p in pk.items() if p.flags & RST) if rst is None else rst
    assert pk[first_rst].flags & RST
    far = pk[first_rst].c2s  # the RST's sender is the far end
    out, off, i, shift, prev = [raw[:24]], 24, 0, 0, None
    while off < len(raw):
        sec, nsec, incl, orig = struct.unpack_from("<IIII", raw, off)
        p = pk.get(i)
        if p is not None:
            if prev is not None and p.c2s == far and prev != far:
                shift += round(RTT * (share if i == first_rst else 1.0) * 1e9)
            prev = p.c2s
        t = sec * 10**9 + nsec + shift
        out.append(struct.pack("<IIII", t // 10**9, t % 10**9, incl, orig))
        out.append(raw[off + 16 : off + 16 + incl])
        off += 16 + incl
        i += 1
    dst.write_bytes(b"".join(out))


def kinds(path: Path) -> list[tuple[str, str | None]]:
    return [(f.kind, f.facts.get("certainty")) for f in diagnose_files([str(path)]).findings]


def findings(path: Path) -> list[tuple[str, str | None, list[int], dict[str, object]]]:
    return [
        (f.kind, f.facts.get("certainty"), list(f.streams), dict(f.facts))
        for f in diagnose_files([str(path)]).findings
    ]


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("half-open", "half-open-reset"),
        ("stale-keepalive", "stale-keepalive-reuse"),
        ("stale-keepalive-tls", "stale-keepalive-reuse"),
        ("clean-tls", "tls-close-notify-reset"),
        ("fin-wait-2", "fin-wait-2-stall"),
    ],
)
def test_a_reset_faster_than_the_round_trip_is_the_paths(
    tmp_path: Path, name: str, kind: str
) -> None:
    src = DATA_DIR / f"{name}.pcap"
    peer, fast = tmp_path / "peer.pcap", tmp_path / "fast.pcap"
    retime(src, peer, 1.0)
    retime(src, fast, 0.4)
    # a full round trip: the peer may have sent it, the diagnosis is the recording's own
    assert [k for k, _ in kinds(peer)] == [f.kind for f in diagnose_files([str(src)]).findings]
    assert (kind, None) in kinds(peer)
    got = kinds(fast)
    assert ("middlebox-reset", "likely") in got, got
    assert kind not in [k for k, _ in got], got


def test_accept_queue_abort_faster_than_the_round_trip_is_the_paths(tmp_path: Path) -> None:
    """The listener on :8081 answers a handshake's ACK with a bare RST
    (tcp_abort_on_overflow=1); 24 ms after that ACK on a 60 ms path it cannot have."""
    src = DATA_DIR / "accept-queue-overflow.pcap"
    pk = packets(src, port=8081)
    abort = next(
        q.i
        for k, q in enumerate(pk)
        if q.flags == RST and not q.c2s and k and pk[k - 1].c2s and pk[k - 1].cport == q.cport
    )
    peer, fast = tmp_path / "peer.pcap", tmp_path / "fast.pcap"
    retime(src, peer, 1.0, rst=abort, port=8081)
    retime(src, fast, 0.4, rst=abort, port=8081)
    before = findings(peer)
    assert [k for k, *_ in before] == [f.kind for f in diagnose_files([str(src)]).findings]
    aborted = [f for f in before if f[0] == "accept-queue-overflow" and f[3].get("abort")]
    assert len(aborted) == 1, before
    got = findings(fast)
    mb = [f for f in got if f[:2] == ("middlebox-reset", "likely")]
    assert len(mb) == 1, got
    (stream,) = mb[0][2]
    assert stream in aborted[0][2]  # the stream the abort was told on, now the path's
    for k, _, streams, facts in got:
        if k == "accept-queue-overflow":
            assert stream not in streams and not facts.get("abort"), got
    # the listener on :8080 is told as before
    assert [f[3] for f in got if f[3].get("server") == "10.77.2.2:8080"] == [
        f[3] for f in before if f[3].get("server") == "10.77.2.2:8080"
    ]


def test_lost_final_ack_reset_faster_than_the_round_trip_is_the_paths(tmp_path: Path) -> None:
    """The client answers the server's retransmitted FIN with a bare RST (its TIME_WAIT
    socket gone): the peer's answer after a round trip, a box's after 24 ms. The FIN
    retransmitted from LAST_ACK stays lost-final-ack's; only the RST moves."""
    src = rst_for_lost_final_ack(tmp_path / "rst.pcap")
    peer, fast = tmp_path / "peer.pcap", tmp_path / "fast.pcap"
    retime(src, peer, 1.0)
    retime(src, fast, 0.4)
    before = findings(peer)
    assert [(k, f["reset"]) for k, _, _, f in before] == [("lost-final-ack", 1)], before
    got = {k: (c, streams, f) for k, c, streams, f in findings(fast)}
    assert sorted(got) == ["lost-final-ack", "middlebox-reset"], got
    assert got["middlebox-reset"][0] == "likely"
    assert got["lost-final-ack"][2]["reset"] == 0
    assert got["lost-final-ack"][1] == got["middlebox-reset"][1] == before[0][2]
