"""Checksums as Zeek checks them, for Zeek's records (`conns --boundaries zeek`).

Zeek (without -C) drops a packet whose IPv4 header checksum fails, whose IPv4 total length
is 0, or whose tunnel rides a UDP datagram with a bad checksum, before TCP sees it: no
letter, no count, no connection. A TCP segment with a bad checksum is noted (C/c in the
history) and otherwise ignored. -C ignores all of them.

The decoder's verdicts (`csum_ok`) are held to tshark's own checksum verification, on
every TCP packet of the Zeek corpus and on captures of tcpdump's suite that have bad
checksums of each kind. The records are held to what Zeek's rules give, without a copy of
Zeek: a capture with spoiled packets must give the records of the same capture without
those packets (or with a C where a TCP checksum failed), and with -C those of the
unspoiled capture.
"""

from __future__ import annotations

import csv
import io
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tcpwhy.capture import read_table
from tcpwhy.tcp.connections import build_connections
from tests import craft
from tests.gates import need

# --- the decoder against tshark ------------------------------------------------------------

TCPDUMP_FILES = (
    "kday3.pcap",  # IPv4 header checksums and TCP checksums that fail
    "gso-ipv6-vxlan-ipv4.pcap",  # VXLAN
    "gso-ipv6-vxlan-ipv6.pcap",
    "ipv4_tcp_http_xml_tso.pcap",
    "of10_inv_OFPST_FLOW.pcap",
    "tcp-auth-heapoverflow.pcap",
    "mptcp-v1.pcap",
    "print-flags.pcap",
    "whois.pcap",
    "bigtcp-ipv4.pcap",
)
"""Captures of tcpdump's test suite with checksums that fail, of each kind."""

DOCUMENTED = {
    ("pppoe-over-qinq.pcap", 1, 0): (
        6,
        "the IP length says 6 bytes more than the PPPoE length: tshark checks the TCP "
        "checksum over the PPPoE length, Zeek (and tcpwhy's Zeek verdict) over the IP length",
    ),
    ("bigtcp-ipv4.pcap", -2, 0): (
        1,
        "an IPv4 total length of 0 (BIG TCP / segmentation offload): Zeek drops the packet "
        "without -C, tshark checks what was captured",
    ),
}
"""(trace, tcpwhy verdict, tshark verdict) -> (frames, why)."""


def _tshark_verdicts(path: Path) -> dict[int, int]:
    """Per TCP frame: -2 if tshark finds a bad IPv4 header or UDP checksum on the way,
    else 0/1 for a bad/good TCP checksum, -1 when it does not verify it."""
    cmd = [
        "tshark", "-n", "-r", str(path), "-Y", "tcp && !icmp && !icmpv6",
        "-o", "tcp.check_checksum:TRUE", "-o", "ip.check_checksum:TRUE",
        "-o", "udp.check_checksum:TRUE", "-T", "fields", "-E", "header=y",
        "-E", "occurrence=a", "-E", "aggregator=,", "-e", "frame.number",
        "-e", "ip.checksum.status", "-e", "udp.checksum.status", "-e", "tcp.checksum.status",
    ]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    verdicts = {}
    for r in csv.DictReader(io.StringIO(out), delimiter="\t"):
        # Wireshark's PROTO_CHECKSUM_E_BAD is 0, _GOOD 1
        below = r["ip.checksum.status"].split(",") + r["udp.checksum.status"].split(",")
        tcp = r["tcp.checksum.status"].split(",")[0]
        verdicts[int(r["frame.number"])] = -2 if "0" in below else {"0": 0, "1": 1}.get(tcp, -1)
    return verdicts


def test_decoder_verdicts_match_tshark(zeek_corpus: Path, tcpdump_corpus: Path) -> None:
    need(shutil.which("tshark") is not None, "tshark not installed")
    paths = sorted(zeek_corpus.glob("*.pcap*")) + [tcpdump_corpus / n for n in TCPDUMP_FILES]
    agree: dict[int, int] = {}
    differ: dict[tuple[str, int, int], int] = {}
    for path in paths:
        t = read_table(str(path), checksums=True)
        ours = {int(f): int(c) for f, c in zip(t["frame"], t["csum_ok"], strict=True)}
        for frame, want in _tshark_verdicts(path).items():
            got = ours.get(frame)
            if got is None:
                continue  # not TCP to tcpwhy: test_decode_tshark.py's business
            if got == want:
                agree[got] = agree.get(got, 0) + 1
            else:
                key = (path.name, got, want)
                differ[key] = differ.get(key, 0) + 1
    assert differ == {k: n for k, (n, _) in DOCUMENTED.items()}
    # every verdict occurs, many times
    assert agree[1] > 15000 and agree[0] > 20 and agree[-2] > 20, agree


# --- the records: spoiled packets against packets left out ------------------------------

FIELDS = (
    "orig_h", "orig_p", "resp_h", "resp_p", "conn_state", "history", "orig_pkts", "resp_pkts",
    "orig_bytes", "resp_bytes", "orig_ip_bytes", "resp_ip_bytes", "duration", "continued",
    "zeek_orig_state", "zeek_resp_state",
)  # fmt: skip


def _zeek(path: Path, check: bool = True) -> list[tuple[object, ...]]:
    t = read_table(str(path), checksums=check)
    recs = build_connections(t, boundaries="zeek", check_checksums=check)
    return [tuple(getattr(r, f) for f in FIELDS) for r in recs]


def _frames(ip_packets: list[bytes]) -> list[bytes]:
    return [craft.eth(p, v6=(p[0] >> 4) == 6) for p in ip_packets]


@pytest.fixture
def base() -> list[bytes]:
    return _frames(craft.conversation())


def test_bad_ipv4_header_checksum_drops_the_packet(tmp_path: Path, base: list[bytes]) -> None:
    """The request and the server's FIN with spoiled IPv4 header checksums: as if absent."""
    spoiled = [craft.spoil_ip_checksum(f) if k in (3, 8) else f for k, f in enumerate(base)]
    got = _zeek(craft.write(tmp_path / "bad.pcap", spoiled))
    assert got == _zeek(craft.write(tmp_path / "without.pcap", craft.without(base, (3, 8))))
    assert got != _zeek(craft.write(tmp_path / "good.pcap", base))
    # -C: as the unspoiled capture
    assert _zeek(tmp_path / "bad.pcap", check=False) == _zeek(tmp_path / "good.pcap")


def test_dropped_first_packet_starts_no_connection(tmp_path: Path, base: list[bytes]) -> None:
    """The SYN dropped: the connection starts at the SYN-ACK, as Zeek starts it (flipped by
    the likely server port), and is not a continuation."""
    spoiled = [craft.spoil_ip_checksum(base[0]), *base[1:]]
    got = _zeek(craft.write(tmp_path / "bad.pcap", spoiled))
    assert got == _zeek(craft.write(tmp_path / "without.pcap", craft.without(base, (0,))))
    assert len(got) == 1 and got[0][FIELDS.index("history")].startswith("^h")
    assert got[0][FIELDS.index("continued")] is False


def test_bad_tcp_checksum_is_a_letter(tmp_path: Path, base: list[bytes]) -> None:
    """A request and a response with bad TCP checksums: C and c, nothing else of them."""
    spoiled = [craft.spoil_last_byte(f) if k in (3, 5) else f for k, f in enumerate(base)]
    got = _zeek(craft.write(tmp_path / "bad.pcap", spoiled))
    without = _zeek(craft.write(tmp_path / "without.pcap", craft.without(base, (3, 5))))
    h = FIELDS.index("history")
    assert "C" in got[0][h] and "c" in got[0][h]
    assert got[0][h].replace("C", "").replace("c", "") == without[0][h]
    assert got[0][:h] + got[0][h + 1 :] == without[0][:h] + without[0][h + 1 :]
    assert _zeek(tmp_path / "bad.pcap", check=False) == _zeek(
        craft.write(tmp_path / "g.pcap", base)
    )


def test_ip_total_length_zero_drops_the_packet(tmp_path: Path, base: list[bytes]) -> None:
    """Segmentation offload left the request's IPv4 total length 0 (header checksum made
    over it): Zeek drops the packet without -C."""
    b = bytearray(base[3])
    b[16:18] = b"\0\0"
    b[24:26] = b"\0\0"
    b[24:26] = craft.csum(bytes(b[14:34])).to_bytes(2, "big")
    spoiled = [*base[:3], bytes(b), *base[4:]]
    got = _zeek(craft.write(tmp_path / "tso.pcap", spoiled))
    assert got == _zeek(craft.write(tmp_path / "without.pcap", craft.without(base, (3,))))
    # -C: counted, as in the unspoiled capture (Zeek's orig_ip_bytes would add 0 for it,
    # tcpwhy the captured length: a difference docs/conns.md lists)
    good = _zeek(craft.write(tmp_path / "good.pcap", base))
    assert _zeek(tmp_path / "tso.pcap", check=False) == good


def _tunnel(inner: list[bytes], kind: str, outer_v6: bool, zero: bool) -> list[bytes]:
    """Ethernet frames of each inner packet in VXLAN or Geneve over UDP over IPv4/IPv6."""
    if outer_v6:
        a = bytes.fromhex("fd000000000000000000000000000001")
        b = bytes.fromhex("fd000000000000000000000000000002")
    else:
        a, b = craft.v4("192.0.2.1"), craft.v4("192.0.2.2")
    port = 4789 if kind == "vxlan" else 6081
    wrap = craft.vxlan if kind == "vxlan" else craft.geneve
    out = []
    for k, p in enumerate(inner):
        d = craft.udp(a, b, 50000 + k, port, wrap(craft.eth(p)), zero=zero)
        out.append(craft.eth(craft.ip(a, b, 17, d, ident=100 + k), v6=outer_v6))
    return out


@pytest.mark.parametrize("outer_v6", [False, True])
@pytest.mark.parametrize("kind", ["vxlan", "geneve"])
def test_tunnel_udp_checksums(tmp_path: Path, kind: str, outer_v6: bool) -> None:
    """A bad UDP checksum on the datagram carrying a tunnel drops the packet inside; a
    checksum of 0 is none over IPv4, and allowed to VXLAN over IPv6 too."""
    inner = craft.conversation()
    good = _zeek(craft.write(tmp_path / "good.pcap", _tunnel(inner, kind, outer_v6, False)))
    assert len(good) == 1 and good[0][FIELDS.index("conn_state")] == "SF"
    frames = _tunnel(inner, kind, outer_v6, False)
    spoiled = [craft.spoil_last_byte(f) if k == 3 else f for k, f in enumerate(frames)]
    # the inner TCP checksum fails too, but Zeek never gets that far: no C
    got = _zeek(craft.write(tmp_path / "bad.pcap", spoiled))
    assert got == _zeek(craft.write(tmp_path / "without.pcap", craft.without(frames, (3,))))
    zero = _zeek(craft.write(tmp_path / "zero.pcap", _tunnel(inner, kind, outer_v6, True)))
    if outer_v6 and kind == "geneve":
        assert zero == []  # IPv6 makes the UDP checksum mandatory
    else:
        assert zero == good
    assert _zeek(tmp_path / "zero.pcap", check=False) == good


def test_fragment_with_bad_header_is_not_reassembled(tmp_path: Path, base: list[bytes]) -> None:
    """A request in three IPv4 fragments: reassembled and counted (the rebuilt header
    passes); with one fragment's header checksum spoiled, Zeek drops that fragment and
    the datagram never completes."""
    frags = _frames(craft.fragments(base[3][14:], 16))  # the request's IP packet
    assert len(frags) == 3
    whole = _zeek(craft.write(tmp_path / "frag.pcap", [*base[:3], *frags, *base[4:]]))
    # the reassembled request counts at its last fragment
    good = [*base[:3], None, None, base[3], *base[4:]]
    assert whole == _zeek(craft.write(tmp_path / "good.pcap", good))
    spoiled = [frags[0], craft.spoil_ip_checksum(frags[1]), frags[2]]
    got = _zeek(craft.write(tmp_path / "bad.pcap", [*base[:3], *spoiled, *base[4:]]))
    gone = [*base[:3], None, None, None, *base[4:]]
    assert got == _zeek(craft.write(tmp_path / "without.pcap", gone))
    # -C: the spoiled fragment is used, the request reassembled
    assert _zeek(tmp_path / "bad.pcap", check=False) == whole


# --- the command line ------------------------------------------------------------------------


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tcpwhy", "conns", *args], capture_output=True, text=True
    )


def test_cli_checks_as_zeek_by_default_and_C_ignores(tmp_path: Path, base: list[bytes]) -> None:
    spoiled = [craft.spoil_last_byte(f) if k == 3 else f for k, f in enumerate(base)]
    cap = str(craft.write(tmp_path / "bad.pcap", spoiled))

    def history(*args: str) -> str:
        out = _cli(cap, "--format", "zeek-json", "--seed", "1", *args)
        assert out.returncode == 0, out.stderr
        import json

        return str(json.loads(out.stdout.splitlines()[0])["history"])

    assert "C" in history()
    assert "C" not in history("-C")
    assert "C" not in history("--ignore-checksums")
    assert "C" not in history("--boundaries", "stream")  # records per stream, as tshark
    assert "C" in history("--boundaries", "stream", "--check-checksums")
    clash = _cli(cap, "-C", "--check-checksums")
    assert clash.returncode == 2 and "not allowed with" in clash.stderr
