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


def ipoib(ip: bytes) -> bytes:
    """IP over InfiniBand (RFC 4391): source and destination hardware addresses (a queue
    pair number and a GID, 20 bytes each), the type, 2 reserved bytes."""
    gid = bytes.fromhex("fe800000000000000010e000664ab451")
    return (b"\x00\x00\x00\x48" + gid) + (b"\x80\x00\x05\x50" + gid) + _etype(ip) + bytes(2) + ip


def arcnet_rfc1051(ip: bytes) -> bytes:
    """Linux ARCNET: source, destination, offset, RFC 1051's IP protocol id."""
    return b"\xbe\x50\xcb\x08\xf0" + ip


def arcnet_rfc1201(ip: bytes) -> bytes:
    """Linux ARCNET with RFC 1201's ids (IPv4 0xd4, IPv6 0xc4), split flag 0, sequence."""
    return b"\xbe\x50\xc0\x00" + (b"\xc4" if ip[0] >> 4 == 6 else b"\xd4") + b"\x00\x01\x6b" + ip


def juniper_ether(ip: bytes) -> bytes:
    """Juniper's header as a router writes it ("MGC", flags with extensions present, their
    length, four TLVs: media type, encapsulation, interface indexes), then Ethernet."""
    tlvs = bytes.fromhex("03010106010e01028c0004044c010000")
    return b"MGC\x80" + struct.pack("!H", len(tlvs)) + tlvs + craft.eth(ip, v6=ip[0] >> 4 == 6)


def juniper_ether_plain(ip: bytes) -> bytes:
    """Juniper's header without extensions (flags 1: packet in)."""
    return b"MGC\x01" + craft.eth(ip, v6=ip[0] >> 4 == 6)


def _gre_wccp(ip: bytes, redirect: bytes) -> bytes:
    a, b = OUTER4
    return craft.eth(craft.ip(a, b, 47, b"\x00\x00\x88\x3e" + redirect + ip))


def wccp2(ip: bytes) -> bytes:
    """WCCP 2 redirection: GRE protocol 0x883e, the 4-byte redirect header, then IPv4."""
    return _gre_wccp(ip, b"\x05\x59\x00\x48")


def wccp1(ip: bytes) -> bytes:
    """WCCP 1: GRE protocol 0x883e straight to the IPv4 header."""
    return _gre_wccp(ip, b"")


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
    "ipoib": (242, ipoib, True),
    # link types and an encapsulation tshark decodes and Zeek does not
    "arcnet-rfc1051": (129, arcnet_rfc1051, False),
    "arcnet-rfc1201": (129, arcnet_rfc1201, True),
    "juniper-ether": (178, juniper_ether, True),
    "juniper-ether-plain": (178, juniper_ether_plain, True),
    "wccp2": (1, wccp2, False),
    "wccp1": (1, wccp1, False),
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


# tcpdump's test captures in these framings (real captures: ARCNET from a Linux host, Juniper
# from a router, IPoIB from an InfiniBand host, WCCP from a Cisco redirection)
CORPUS = {
    "ipoib.pcap": 20,
    "arcnet-rfc1051-arp-icmp-http.pcap": 14,
    "arcnet-rfc1201-arp-icmp-http.pcap": 14,
    "bgp-aigp.pcap": 1,
    "wccp_redirect_gre.pcap": 1,
}


@pytest.mark.parametrize("name", list(CORPUS))
def test_corpus_capture_matches_tshark(tmp_path: Path, tcpdump_corpus: Path, name: str) -> None:
    need(shutil.which("tshark") is not None, "tshark not installed")
    cap = tcpdump_corpus / name
    compared, problems = compare_trace(cap, _tshark_tsv(cap, tmp_path / "ref.tsv"))
    assert problems == []
    assert compared == CORPUS[name] == len(read_table(str(cap)))


@pytest.mark.parametrize(
    ("linktype", "frame", "what"),
    [
        # an RFC 1201 packet split in fragments (flag 3: the first of three): not reassembled
        (129, lambda ip: b"\xbe\x50\xc0\x00\xd4\x03\x01\x6b" + ip, "non-IP"),
        # an RFC 1201 exception packet (flag 0xff)
        (129, lambda ip: b"\xbe\x50\xc0\x00\xd4\xff\xff\xff\xd4\x00\x01\x6b" + ip, "non-IP"),
        (129, lambda ip: b"\xbe\x50\xc0\x00\xf1" + ip, "non-IP"),  # ARP's id
        (178, lambda ip: b"MGC\x02" + bytes(4) + ip, "non-IP"),  # no link header
        (178, lambda ip: b"XYZ\x00" + craft.eth(ip), "non-IP"),  # no magic
        (178, lambda ip: b"MGC\x80\x01\x00" + craft.eth(ip), "undecodable"),  # TLVs cut
    ],
)
def test_framings_not_decoded_are_counted(
    tmp_path: Path, linktype: int, frame: Callable[[bytes], bytes], what: str
) -> None:
    """What these link types carry that tcpwhy does not decode is skipped and counted,
    never read as IP."""
    from tcpwhy.decode.table import CaptureStats

    cap = tmp_path / "x.pcap"
    n = _write(cap, linktype, frame, False)
    stats = CaptureStats()
    assert len(read_table(str(cap), stats)) == 0
    assert stats.skipped == {what: n}


@pytest.mark.parametrize("name", ["ipoib", "arcnet-rfc1201", "juniper-ether", "wccp2"])
def test_cut_frames_are_undecodable(tmp_path: Path, name: str) -> None:
    """Each frame cut at every length up to its TCP header: no row, no read past the end."""
    from tcpwhy.decode.table import CaptureStats

    linktype, frame, _ = CASES[name]
    whole = frame(craft.conversation()[0])
    cap = tmp_path / "cut.pcap"
    with PcapWriter.open(str(cap), linktype) as w:
        for k in range(len(whole) - 20):
            w.write(1_704_067_200_000_000_000 + k, whole[:k])
    stats = CaptureStats()
    assert len(read_table(str(cap), stats)) == 0
    assert sum(stats.skipped.values()) == len(whole) - 20


def test_unsupported_link_types_are_named_as_libpcap_names_them() -> None:
    """The message for a link type tcpwhy does not decode names it in libpcap's words."""
    import ctypes
    import ctypes.util

    from tcpwhy.capture.reader import LINKTYPE_NAMES

    lib = ctypes.util.find_library("pcap")
    need(lib is not None, "libpcap not installed (it comes with tcpdump)")
    pcap = ctypes.CDLL(lib)
    pcap.pcap_datalink_val_to_description.restype = ctypes.c_char_p
    for value, name in LINKTYPE_NAMES.items():
        want = pcap.pcap_datalink_val_to_description(value)
        assert name == (want.decode() if want is not None else "user-defined"), value
