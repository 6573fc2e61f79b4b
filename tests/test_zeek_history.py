"""History letters the Zeek corpus does not hold, against Zeek 6's rules.

The corpus conn.logs (tests/test_conns_zeek.py) exercise S h A a D d F f R r T t G g C and
the ^ of a port-based flip and of a lone SYN-ACK; they hold no zero window (W/w), no FIN+RST
(I), no SYN+FIN or SYN+RST (Q), no SYN from a responder (s) and no SYN/SYN-ACK reversal.
Zeek itself is not available here, so each capture below is written to exercise one rule of
Zeek's TCP analyzer (packet_analysis/protocol/tcp: update_history, update_window, WantConnection,
UpdateInactiveState, Connection::FlipRoles) and the history is the one those rules give:

* update_history: SYN+FIN or SYN+RST is Q, FIN+RST is I (each once per side); a SYN is S or
  H by its ACK bit, in the sender's case (upper: originator).
* update_window: a zero window (after scaling) is W on the 1st, 10th, 100th ... one, unless
  the segment is a RST, the peer has closed, or the sender was reset; checked after the
  history letter of the same segment.
* WantConnection: a first packet without a plain SYN from a likely server port flips the
  roles at once (^ first).
* UpdateInactiveState: the responder's SYN (no ACK) after the originator's SYN-ACK, with the
  sequence number the SYN-ACK acknowledged, is a reversal: its letter (s) is written, then
  the roles flip (^), and the later letters are the new roles'.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tcpwhy.capture import read_table
from tcpwhy.decode.table import RST
from tcpwhy.tcp.connections import build_connections
from tcpwhy.tcp.records import ConnRecord
from tests import craft
from tests.craft import ACK, FIN, PSH, SYN

A, B = craft.v4("10.1.0.1"), craft.v4("10.1.0.2")
ISN_A, ISN_B = 7000, 90000


def _pkt(
    from_a: bool,
    seq: int,
    ack: int,
    flags: int,
    data: bytes = b"",
    win: int = 65535,
    port_a: int = 40001,
    port_b: int = 5555,
) -> bytes:
    """A frame between A and B (port 5555: not a likely server port, so no port flip);
    seq and ack relative to the sender's and the peer's ISN."""
    if from_a:
        seg = craft.tcp(A, B, port_a, port_b, ISN_A + seq, ISN_B + ack, flags, data, win)
        return craft.eth(craft.ip(A, B, 6, seg))
    seg = craft.tcp(B, A, port_b, port_a, ISN_B + seq, ISN_A + ack, flags, data, win)
    return craft.eth(craft.ip(B, A, 6, seg))


HANDSHAKE = [_pkt(True, 0, 0, SYN), _pkt(False, 0, 1, SYN | ACK), _pkt(True, 1, 1, ACK)]

CASES: dict[str, tuple[list[bytes], str, str]] = {
    # name: (frames, history, originator address)
    "zero-windows-scaled": (
        [
            *HANDSHAKE,
            _pkt(True, 1, 1, PSH | ACK, b"x" * 10),
            *[_pkt(False, 1, 11, ACK, win=0)] * 10,  # w on the 1st and the 10th
            _pkt(False, 1, 11, ACK),
            _pkt(True, 11, 1, ACK, win=0),  # the originator's: W (its A was seen)
            _pkt(True, 11, 1, FIN | ACK),
            _pkt(False, 1, 12, FIN | ACK),
            _pkt(False, 1, 12, ACK, win=0),  # the peer has closed: no letter
            _pkt(True, 12, 2, ACK),
        ],
        "ShADawwWFf",
        "10.1.0.1",
    ),
    "zero-window-on-rst": ([*HANDSHAKE, _pkt(True, 1, 1, RST, win=0)], "ShAR", "10.1.0.1"),
    "fin-rst-is-I": (
        [*HANDSHAKE, _pkt(True, 1, 1, FIN | RST | ACK), _pkt(False, 1, 1, FIN | RST | ACK)],
        "ShAIi",
        "10.1.0.1",
    ),
    "syn-fin-is-Q": (
        [_pkt(True, 0, 0, SYN | FIN), _pkt(False, 0, 1, RST | ACK)],
        "Qr",
        "10.1.0.1",
    ),
    # (with ACK: a SYN without one from the responder would be a new connection, IsReuse)
    "syn-rst-is-Q": ([_pkt(True, 0, 0, SYN), _pkt(False, 0, 1, SYN | RST | ACK)], "Sq", "10.1.0.1"),
    "syn-synack-reversal": (
        [
            _pkt(False, 0, 1, SYN | ACK),  # B originates, as far as Zeek knows
            _pkt(True, 0, 0, SYN),  # A's SYN with the ISN B acknowledged: s, then ^
            _pkt(True, 1, 1, ACK),
            _pkt(True, 1, 1, PSH | ACK, b"y" * 5),
            _pkt(False, 1, 6, ACK),
            _pkt(True, 6, 1, FIN | ACK),
            _pkt(False, 1, 7, FIN | ACK),
            _pkt(True, 7, 2, ACK),
        ],
        "Hs^ADaFf",
        "10.1.0.1",
    ),
    "port-flip-at-first-packet": (
        [
            _pkt(False, 1, 1, PSH | ACK, b"z", port_a=40001, port_b=80),
            _pkt(True, 1, 2, ACK, port_a=40001, port_b=80),
        ],
        "^dA",
        "10.1.0.1",
    ),
    "both-ports-likely-lower-source-flips": (
        # both likely server ports and no SYN: flipped only if source port < destination port
        [
            _pkt(False, 1, 1, PSH | ACK, b"z", port_a=443, port_b=80),
            _pkt(True, 1, 2, ACK, port_a=443, port_b=80),
        ],
        "^dA",
        "10.1.0.1",
    ),
    "both-ports-likely-higher-source-stays": (
        [
            _pkt(True, 1, 1, PSH | ACK, b"z", port_a=443, port_b=80),
            _pkt(False, 1, 2, ACK, port_a=443, port_b=80),
        ],
        "Da",
        "10.1.0.1",
    ),
    "both-ports-likely-synack-no-flip": (
        # a SYN-ACK is never flipped by ports when both are likely (stealth scans)
        [_pkt(False, 0, 1, SYN | ACK, port_a=443, port_b=80)],
        "H",
        "10.1.0.2",
    ),
}


def _record(tmp_path: Path, frames: list[bytes]) -> ConnRecord:
    path = craft.write(tmp_path / "history.pcap", frames)
    recs = build_connections(read_table(str(path)), boundaries="zeek")
    assert len(recs) == 1
    return recs[0]


@pytest.mark.parametrize("name", list(CASES))
def test_history_as_zeek_writes_it(tmp_path: Path, name: str) -> None:
    frames, history, orig_h = CASES[name]
    r = _record(tmp_path, frames)
    assert (r.history, r.orig_h) == (history, orig_h)


def test_zero_window_letters_count_every_zero_window(tmp_path: Path) -> None:
    """W marks the 1st, 10th, 100th zero window; 100 zero windows give three letters."""
    frames = [*HANDSHAKE, _pkt(True, 1, 1, PSH | ACK, b"x")]
    frames += [_pkt(False, 1, 2, ACK, win=0)] * 100
    r = _record(tmp_path, frames)
    assert r.history == "ShADawww"
