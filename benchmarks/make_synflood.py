"""Synthesise a SYN flood capture: SYNs from random sources to one server port.

    python benchmarks/make_synflood.py --packets 3000000 -o benchmarks/out/synflood-3000000.pcap

The flood is unanswered SYNs (the server's backlog is full) from random IPv4
sources and ports, random sequence numbers and IP ids, at 100,000 SYNs/s, to
198.51.100.10:443; a few hundred ordinary connections to the same server and
port (handshake, a request, a response of a few segments, FIN both ways) are
mixed in through the flood. Every header has correct IPv4 and TCP checksums.
The records are built as numpy arrays and written directly (a pcap, Ethernet,
microsecond timestamps). The same arguments give the same file.
"""

from __future__ import annotations

import argparse
import struct
from pathlib import Path

import numpy as np

from tcpwhy.lab.packets import internet_checksum, transport_checksum

SERVER = 0xC6336400 + 10  # 198.51.100.10
PORT = 443
RATE = 100_000  # flood SYNs per second
T0 = 1_700_000_000 * 10**6  # first timestamp, µs
MAC_SERVER = bytes.fromhex("020000000001")
MAC_GATEWAY = bytes.fromhex("020000000002")

SYN = np.dtype(
    [
        ("sec", "<u4"),
        ("usec", "<u4"),
        ("incl", "<u4"),
        ("orig", "<u4"),
        ("dmac", "V6"),
        ("smac", "V6"),
        ("etype", ">u2"),
        ("vihl", "u1"),
        ("tos", "u1"),
        ("tlen", ">u2"),
        ("id", ">u2"),
        ("frag", ">u2"),
        ("ttl", "u1"),
        ("proto", "u1"),
        ("ipsum", ">u2"),
        ("src", ">u4"),
        ("dst", ">u4"),
        ("sport", ">u2"),
        ("dport", ">u2"),
        ("seq", ">u4"),
        ("ack", ">u4"),
        ("off", "u1"),
        ("flags", "u1"),
        ("win", ">u2"),
        ("tcpsum", ">u2"),
        ("urg", ">u2"),
    ]
)
assert SYN.itemsize == 16 + 14 + 20 + 20


def _fold(total: np.ndarray) -> np.ndarray:
    while (total >> 16).any():
        total = (total & 0xFFFF) + (total >> 16)
    return (~total & 0xFFFF).astype(np.uint16)


def flood(ts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One SYN record per timestamp (µs), with checksums."""
    n = len(ts)
    r = np.zeros(n, SYN)
    r["sec"] = ts // 10**6
    r["usec"] = ts % 10**6
    r["incl"] = r["orig"] = 54
    r["dmac"] = np.void(MAC_SERVER)
    r["smac"] = np.void(MAC_GATEWAY)
    r["etype"] = 0x0800
    r["vihl"] = 0x45
    r["tlen"] = 40
    r["id"] = rng.integers(0, 1 << 16, n)
    r["ttl"] = rng.integers(32, 255, n)
    r["proto"] = 6
    # random unicast sources 1.0.0.0 - 223.255.255.255
    r["src"] = rng.integers(0x01000000, 0xE0000000, n, dtype=np.uint32)
    r["dst"] = SERVER
    r["sport"] = rng.integers(1024, 65536, n)
    r["dport"] = PORT
    r["seq"] = rng.integers(0, 1 << 32, n, dtype=np.uint32)
    r["off"] = 5 << 4
    r["flags"] = 0x02
    r["win"] = 1024
    raw = r.view(np.uint8).reshape(n, SYN.itemsize)
    ip = raw[:, 30:50].copy().view(">u2").astype(np.int64)
    r["ipsum"] = _fold(ip.sum(axis=1))
    tcp = raw[:, 50:70].copy().view(">u2").astype(np.int64)
    pseudo = ip[:, 6] + ip[:, 7] + ip[:, 8] + ip[:, 9] + 6 + 20  # addresses, protocol, length
    r["tcpsum"] = _fold(tcp.sum(axis=1) + pseudo)
    return r


def packet(
    ts: int, src: int, dst: int, sport: int, dport: int, seq: int, ack: int, flags: int, data: bytes
) -> tuple[int, bytes]:
    """(timestamp, pcap record) of one ordinary segment."""
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, flags, 64240, 0, 0) + data
    addrs = struct.pack("!II", src, dst)
    tcp = tcp[:16] + struct.pack("!H", transport_checksum(addrs[:4], addrs[4:], 6, tcp)) + tcp[18:]
    ip = struct.pack(
        "!BBHHHBBHII", 0x45, 0, 20 + len(tcp), seq & 0xFFFF, 0x4000, 64, 6, 0, src, dst
    )
    ip = ip[:10] + struct.pack("!H", internet_checksum(ip)) + ip[12:]
    toward_server = dst == SERVER
    eth = (MAC_SERVER + MAC_GATEWAY) if toward_server else (MAC_GATEWAY + MAC_SERVER)
    frame = eth + b"\x08\x00" + ip + tcp
    hdr = struct.pack("<IIII", ts // 10**6, ts % 10**6, len(frame), len(frame))
    return ts, hdr + frame


# one ordinary connection: (µs after the previous segment, from the client?, flags, payload)
SCRIPT = [
    (0, True, 0x02, b""),  # SYN
    (400, False, 0x12, b""),  # SYN-ACK
    (400, True, 0x10, b""),
    (20, True, 0x18, b"GET / HTTP/1.1\r\nHost: example\r\n\r\n"),
    (400, False, 0x10, b""),
    (50, False, 0x18, b"y" * 1200),
    (50, False, 0x18, b"y" * 1200),
    (50, False, 0x18, b"y" * 1200),
    (400, True, 0x10, b""),
    (1000, True, 0x11, b""),  # FIN
    (400, False, 0x11, b""),
    (400, True, 0x10, b""),
]


def ordinary(conns: int, span_us: int, rng: np.random.Generator) -> list[tuple[int, bytes]]:
    """`conns` complete connections from 192.0.2.0/24 clients, spread over the flood."""
    out: list[tuple[int, bytes]] = []
    for i in range(conns):
        t = T0 + int(rng.integers(0, max(1, span_us - 50_000)))
        cli, port = 0xC0000200 + 1 + i % 250, 20_000 + i
        nxt = {True: int(rng.integers(0, 1 << 32)), False: int(rng.integers(0, 1 << 32))}
        for dt, up, flags, data in SCRIPT:
            t += dt
            ack = nxt[not up] if flags & 0x10 else 0
            if up:
                out.append(packet(t, cli, SERVER, port, PORT, nxt[up], ack, flags, data))
            else:
                out.append(packet(t, SERVER, cli, PORT, port, nxt[up], ack, flags, data))
            nxt[up] = (nxt[up] + len(data) + (1 if flags & 0x03 else 0)) & 0xFFFFFFFF
    out.sort(key=lambda p: p[0])
    return out


def build(out: Path, packets: int, conns: int, seed: int) -> int:
    rng = np.random.default_rng(seed)
    normal = ordinary(conns, packets * 10**6 // RATE, rng)
    n_flood = packets - len(normal)
    ts = T0 + np.arange(n_flood, dtype=np.int64) * 10**6 // RATE
    ts += rng.integers(0, 10**6 // RATE, n_flood)  # jitter within each slot keeps them sorted
    at = np.searchsorted(ts, np.array([t for t, _ in normal], np.int64), side="right")
    with out.open("wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        chunk = 1_000_000
        j = 0
        for lo in range(0, n_flood, chunk):
            hi = min(n_flood, lo + chunk)
            recs = flood(ts[lo:hi], rng).view(np.uint8).reshape(hi - lo, SYN.itemsize)
            pos = lo
            while j < len(normal) and (at[j] < hi or hi == n_flood):
                f.write(recs[pos - lo : at[j] - lo].tobytes())
                f.write(normal[j][1])
                pos = int(at[j])
                j += 1
            f.write(recs[pos - lo :].tobytes())
    return packets


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--packets", type=int, default=3_000_000)
    ap.add_argument("--conns", type=int, default=300, help="ordinary connections mixed in")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("-o", "--output", type=Path, default=Path("benchmarks/out/synflood.pcap"))
    a = ap.parse_args()
    a.output.parent.mkdir(parents=True, exist_ok=True)
    n = build(a.output, a.packets, a.conns, a.seed)
    print(f"{a.output}: {n} packets, {a.output.stat().st_size / 1e6:.0f} MB")


if __name__ == "__main__":
    main()
