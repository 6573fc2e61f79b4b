"""One capture, the timing it already has: a RST that comes back sooner after the segment it
answers than a round trip to its sender allows was made on the path (`middlebox-reset`,
likely), and the rules that read a RST as "the peer's kernel answered" leave it alone.

The captures are lab recordings (loopback: round trips in microseconds, where timing decides
nothing) retimed as a capture beside the RST's receiver would show them over a 60 ms path:
every packet from the far end that follows one from the near end arrives 60 ms later, except
the first RST, which arrives `share` × 60 ms later. With share 1 it is the peer's answer;
with 0.4 (24 ms) it cannot be.
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from tcpwhy.diagnose.engine import diagnose_files
from tcpwhy.lab.record import DATA_DIR
from tests.test_lab import RST, packets

RTT = 0.060


def retime(src: Path, dst: Path, share: float) -> None:
    """`src` (a nanosecond pcap) as seen beside the first RST's receiver over a path of RTT."""
    raw = src.read_bytes()
    assert raw[:4] == b"\x4d\x3c\xb2\xa1", "a little-endian nanosecond pcap"
    pk = {p.i: p for p in packets(src)}
    first_rst = min(i for i, p in pk.items() if p.flags & RST)
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


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("half-open", "half-open-reset"),
        ("stale-keepalive", "stale-keepalive-reuse"),
        ("stale-keepalive-tls", "stale-keepalive-reuse"),
        ("clean-tls", "tls-close-notify-reset"),
        pytest.param(
            "fin-wait-2",
            "fin-wait-2-stall",
            marks=pytest.mark.xfail(
                strict=True,
                reason="fin-wait-2-stall still reads a too-fast RST as the peer's kernel",
            ),
        ),
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
