"""Link types and encapsulations that carry IP, against tshark 4.0: every TCP packet with
the same fields.

The reference corpora hold no TCP over 802.11, radiotap, FDDI, NFLOG, 802.3 LLC/SNAP,
FabricPath or AYIYA, and little over Linux cooked captures or Cisco HDLC, so the captures are written here: a whole connection (IPv4, and IPv6 where the link can say so) framed as each
link type frames it, including the variants the decoder must walk (802.11 QoS data and
A-MSDU, radiotap with present flags, NFLOG with a TLV before the payload and big-endian
TLVs). tshark decodes each; tests/test_decode_tshark.py's field-by-field comparison then
holds tcpwhy's table to it.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tcpwhy.capture import read_table
from tcpwhy.capture.writer import PcapWriter
from tests import craft
from tests.gates import need
from tests.test_decode_tshark import FIELDS, compare_trace

SNAP_IP4 = bytes.fromhex("aaaa03000000") + b"\x08\x00"
SNAP_IP6 = bytes.fromhex("aaaa03000000") + b"\x86\xdd"
MACS = bytes.fromhex("020000000001020000000002020000000003")


def _snap(ip: bytes) -> bytes:
    return (SNAP_IP6 if ip[0] >> 4 == 6 else SNAP_IP4) + ip


def wlan_data(ip: bytes) -> bytes:
    """An 802.11 data frame to the distribution system."""
    return b"\x08\x01\x00\x00" + MACS + b"\x10\x00" + _snap(ip)


def wlan_qos(ip: bytes) -> bytes:
    """QoS data, TID 5."""
    return b"\x88\x01\x00\x00" + MACS + b"\x10\x00" + b"\x05\x00" + _snap(ip)


def wlan_amsdu(ip: bytes) -> bytes:
    """QoS data whose body is an A-MSDU of one subframe (DA, SA, length, LLC/SNAP, IP)."""
    body = _snap(ip)
    sub = MACS[:12] + struct.pack("!H", len(body)) + body
    return b"\x88\x01\x00\x00" + MACS + b"\x10\x00" + b"\x85\x00" + sub


def radiotap(ip: bytes) -> bytes:
    """Radiotap with no fields, then 802.11 data."""
    return b"\x00\x00\x08\x00\x00\x00\x00\x00" + wlan_data(ip)


def radiotap_fields(ip: bytes) -> bytes:
    """Radiotap with flags, rate and channel present (12 + 2 + 4 bytes), then QoS data."""
    hdr = (
        struct.pack("<BBHI", 0, 0, 14, 0x0000000E) + b"\x00\x02" + struct.pack("<HH", 2437, 0x00A0)
    )
    return hdr + wlan_qos(ip)


def fddi(ip: bytes) -> bytes:
    """FDDI LLC frame: frame control, destination, source, LLC/SNAP."""
    return b"\x50" + MACS[:12] + _snap(ip)


def _nflog(ip: bytes, big: bool) -> bytes:
    fam = 10 if ip[0] >> 4 == 6 else 2
    order = ">" if big else "<"
    hdr_tlv = struct.pack(order + "HH", 8, 1) + struct.pack("!HBx", 0x0800, 3)
    payload = struct.pack(order + "HH", 4 + len(ip), 9) + ip
    payload += b"\0" * (-len(payload) % 4)
    return struct.pack("!BBH", fam, 0, 7) + hdr_tlv + payload


def nflog(ip: bytes) -> bytes:
    return _nflog(ip, big=False)


def nflog_big(ip: bytes) -> bytes:
    return _nflog(ip, big=True)


def ethernet_snap(ip: bytes) -> bytes:
    """IEEE 802.3 with a length field, then LLC/SNAP (OUI 0) with the EtherType."""
    body = _snap(ip)
    return MACS[:12] + struct.pack("!H", len(body)) + body


def fabricpath(ip: bytes) -> bytes:
    """Cisco FabricPath (EtherType 0x8903, FTag/TTL) around a customer frame with an FCS,
    as tshark reads it."""
    return MACS[6:18] + b"\x89\x03\x00\x3f" + craft.eth(ip, v6=ip[0] >> 4 == 6) + bytes(4)


OUTER4 = (craft.v4("192.0.2.1"), craft.v4("192.0.2.2"))
OUTER6 = (
    bytes.fromhex("20010db8ffff00000000000000000001"),
    bytes.fromhex("20010db8ffff00000000000000000002"),
)


def _ayiya(ip: bytes, outer: tuple[bytes, bytes]) -> bytes:
    """AYIYA on UDP 5072: a 16-byte identity, a 20-byte SHA-1 signature, opcode forward."""
    nh = 41 if ip[0] >> 4 == 6 else 4
    hdr = struct.pack("!BBBBI", 0x41, 0x52, 0x11, nh, 1_704_067_200) + bytes(16 + 20)
    a, b = outer
    dgram = craft.udp(a, b, 5072, 5072, hdr + ip)
    return craft.eth(craft.ip(a, b, 17, dgram), v6=len(a) == 16)


def ayiya(ip: bytes) -> bytes:
    return _ayiya(ip, OUTER4)


def ayiya_ipv6_outer(ip: bytes) -> bytes:
    return _ayiya(ip, OUTER6)


def ppp_mpls(ip: bytes) -> bytes:
    """PPP in HDLC-like framing, protocol 0x0281 (MPLS unicast), one label, then IP."""
    return b"\xff\x03\x02\x81" + struct.pack("!I", (1000 << 12) | 0x100 | 64) + ip


def _etype(ip: bytes) -> bytes:
    return b"\x86\xdd" if ip[0] >> 4 == 6 else b"\x08\x00"


def linux_sll(ip: bytes) -> bytes:
    """Linux cooked capture v1: packet type, ARPHRD, address length and address, type."""
    return struct.pack("!HHH", 0, 1, 6) + MACS[:6] + b"\x00\x00" + _etype(ip) + ip


def linux_sll2(ip: bytes) -> bytes:
    """Linux cooked capture v2: type first, then interface, ARPHRD, packet type, address."""
    return _etype(ip) + struct.pack("!HIHBB", 0, 2, 1, 0, 6) + MACS[:6] + b"\x00\x00" + ip


def c_hdlc(ip: bytes) -> bytes:
    """Cisco HDLC: address, control, then the ethertype."""
    return b"\x0f\x00" + _etype(ip) + ip


CASES: dict[str, tuple[int, Callable[[bytes], bytes], bool]] = {
    # name: (link type, framing, IPv6 too); big-endian NFLOG TLVs (a big-endian host's
    # capture) are read as little-endian by tshark and Zeek alike: neither decodes them
    "ieee802.11": (105, wlan_data, True),
    "ieee802.11-qos": (105, wlan_qos, True),
    "ieee802.11-amsdu": (105, wlan_amsdu, False),
    "radiotap": (127, radiotap, True),
    "radiotap-fields": (127, radiotap_fields, False),
    "fddi": (10, fddi, True),
    "nflog": (239, nflog, True),
    "nflog-big-endian-tlvs": (239, nflog_big, False),
    # inside Ethernet: 802.3 frames with LLC/SNAP, Cisco FabricPath, and the AYIYA UDP tunnel
    # (Zeek's Ethernet, SNAP and AYIYA analyzers; tshark's llc, cfp and ayiya dissectors)
    "ethernet-802.3-snap": (1, ethernet_snap, True),
    "fabricpath": (1, fabricpath, True),
    "ayiya": (1, ayiya, True),
    "ayiya-ipv6-outer": (1, ayiya_ipv6_outer, True),
    "ppp-mpls": (9, ppp_mpls, True),
    # fixed headers that carry an ethertype (one branch of the decoder)
    "linux-sll": (113, linux_sll, True),
    "linux-sll2": (276, linux_sll2, True),
    "cisco-hdlc": (104, c_hdlc, True),
}


def _write(path: Path, linktype: int, frame: Callable[[bytes], bytes], v6: bool) -> int:
    packets = craft.conversation()
    if v6:
        a = bytes.fromhex("20010db8000000000000000000000001")
        b = bytes.fromhex("20010db8000000000000000000000002")
        packets += craft.conversation(a, b, sport=40002)
    with PcapWriter.open(str(path), linktype) as w:
        for k, p in enumerate(packets):
            w.write(1_704_067_200_000_000_000 + k * 1_000_000, frame(p))
    return len(packets)


def _tshark_tsv(cap: Path, out: Path) -> Path:
    cols = ["frame.number", *FIELDS, "ip.src", "ip.dst", "ipv6.src", "ipv6.dst"]
    cmd = ["tshark", "-n", "-r", str(cap), "-Y", "tcp", "-T", "fields", "-E", "header=y"]
    cmd += ["-E", "occurrence=f"]
    for c in cols:
        cmd += ["-e", c]
    out.write_text(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    return out


@pytest.mark.parametrize("name", list(CASES))
def test_link_type_matches_tshark(tmp_path: Path, name: str) -> None:
    need(shutil.which("tshark") is not None, "tshark not installed")
    linktype, frame, v6 = CASES[name]
    cap = tmp_path / f"{name}.pcap"
    n = _write(cap, linktype, frame, v6)
    compared, problems = compare_trace(cap, _tshark_tsv(cap, tmp_path / "ref.tsv"))
    assert problems == []
    if name == "nflog-big-endian-tlvs":
        n = 0
    assert compared == n  # tshark decodes every packet as TCP, and so does tcpwhy
    assert len(read_table(str(cap))) == n
