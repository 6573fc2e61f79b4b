"""Real captures edited as a capture point sees them when it misses, repeats or reorders
packets: stream numbers, relative numbers, the scaled window, RTTs and every analysis flag
against the installed tshark, packet by packet.

The shipped and corpus captures are clean; a SYN-ACK captured before its SYN (timestamps
from different queues), a SYN or a segment the capture point missed, or an ACK captured
twice are what users' captures have. Each case below found a disagreement once; the edit
is a new order of the capture's own records (their times kept rising, or their own), nothing
forged.
"""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

import pytest

from tests.craft import pcap_records
from tests.gates import need
from tests.test_analysis_tshark import _compare
from tests.tshark_ref import PACKAGE_DATA, tshark_view

DATA = Path(__file__).parent / "data"


def edited(src: Path, order: list[int], out: Path, own_times: bool = False) -> Path:
    """`src`'s records in `order` (indices from 0; one left out is a packet missed, one
    repeated a packet captured twice), each given the time of the record that stood at its
    position, so that time keeps rising as in most captures; with `own_times`, each keeps
    its own, so that time goes back where the order changed (a capture merged from several
    queues or interfaces)."""
    e, head, recs = pcap_records(src.read_bytes())
    times = sorted(struct.unpack(e + "II", r[:8]) for r in recs)
    parts = [head]
    prev = (-1, 0)
    for pos, k in enumerate(order):
        if own_times:
            parts.append(recs[k])
            continue
        t = times[min(pos, len(times) - 1)]
        if t <= prev:  # a record more than the original: one tick after the last
            t = (prev[0], prev[1] + 1)
        prev = t
        parts.append(struct.pack(e + "II", *t) + recs[k][8:])
    out.write_bytes(b"".join(parts))
    return out


def _order(spec: str, n: int) -> list[int]:
    """'0-3 7 5' -> [0, 1, 2, 3, 7, 5]; '...' stands for the rest of the records."""
    got: list[int] = []
    for part in spec.split():
        if part == "...":
            got.extend(range(got[-1] + 1, n))
        elif "-" in part:
            lo, hi = part.split("-")
            got.extend(range(int(lo), int(hi) + 1))
        else:
            got.append(int(part))
    return got


# (capture, new order of its records, what the edit makes happen, each record keeps its own
# time: `edited`'s `own_times`)
CASES = [
    (
        "tls/clean-tls-resegmented.pcap",
        "1 0 2 ...",
        # the SYN-ACK's window scale holds with the SYN after it: the server's windows are
        # scaled (they were shown unscaled)
        "SYN-ACK captured before its SYN",
        False,
    ),
    (
        "tls/clean-tls-resegmented.pcap",
        "1 ...",
        # a SYN-ACK may carry the option only if the SYN did: the server's scale holds
        "SYN not captured",
        False,
    ),
    (
        "http2/h2-tls-stale.pcap",
        "0-6 9 8 7 10 ...",
        # an ACK of an unseen segment leaves Wireshark's duplicate-ACK count at -1, which
        # its unsigned test takes as two or more: the resend is a fast retransmission
        "a segment captured late, after the ACK of it",
        False,
    ),
    (
        "zeek:pbb.pcap",
        "0-3 7 5 4 6 8 ...",
        # the SYN after its SYN-ACK does not drop the SYN-ACK from what waits for an ACK:
        # the handshake's ACK acknowledges it (ACK RTT and initial RTT shown)
        "data and SYN-ACK captured before the SYN",
        False,
    ),
    (
        "zeek:krb-service-name.pcap",
        "0 1 3 1",
        # after an ACK of an unseen segment the duplicate-ACK count starts at 1
        "a segment missed, an ACK captured twice",
        False,
    ),
    (
        "zeek:pop3-bad-list-retr-crafted.pcap",
        "0-29 31 ...",
        # the ACK beyond what the server was seen to send has an analysis record (and with
        # it the initial RTT) even when it is not flagged again
        "a server segment missed",
        False,
    ),
    (
        "lab:time-wait-reuse.pcap",
        "0-39 41 ...",
        # the SYN-ACK's sequence number is not its side's base: Wireshark keeps the stream,
        # flags the ports reused and numbers the server's side from the SYN-ACK (its
        # numbers were shown relative to the previous connection's)
        "a 4-tuple reused, the new SYN not captured",
        False,
    ),
    (
        "http2/h2c-upgrade-apache-stale.pcap",
        "0-10 12 11 13 ...",
        # the late segment keeps its earlier time: Wireshark's times apart are unsigned, so
        # it is not "within" the out-of-order threshold of the segment before it, and is a
        # retransmission (it was out of order)
        "own times: a segment captured late, stamped before the one before it",
        True,
    ),
]


@pytest.mark.parametrize(("name", "spec", "what", "own_times"), CASES, ids=[c[2] for c in CASES])
def test_edited_capture_agrees_with_tshark(
    request: pytest.FixtureRequest, tmp_path: Path, name: str, spec: str, what: str, own_times: bool
) -> None:
    need(shutil.which("tshark") is not None, "tshark not installed")
    if name.startswith("zeek:"):
        src = request.getfixturevalue("zeek_corpus") / name[5:]
    elif name.startswith("lab:"):
        src = PACKAGE_DATA / "lab" / name[4:]
    else:
        src = DATA / name
    n = len(pcap_records(src.read_bytes())[2])
    cap = edited(src, _order(spec, n), tmp_path / "edited.pcap", own_times=own_times)
    _, fp, fn, bad = _compare([(cap, tshark_view(cap, tmp_path / "view.tsv"))])
    assert (fp, fn) == ({}, {}), what
    assert [line for lines in bad.values() for line in lines] == [], what
