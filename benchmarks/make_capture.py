"""Build a large realistic capture by tiling real captures.

Every copy of the seed packets gets its own addresses (10.x.y.z pairs derived
from the copy number), its own ports and a later timestamp, so the result is
a distinct set of connections per copy, not the same connection repeated.
Only Ethernet/IPv4/TCP records of the seeds are used; each record is cut to
the snap length, as `tcpdump -s 256` would.

    python benchmarks/make_capture.py --packets 3000000 --snaplen 256 -o /tmp/big.pcap
"""

from __future__ import annotations

import argparse
import struct
from pathlib import Path

import numpy as np

from tcpwhy.capture import read_table

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SEEDS = [
    REPO.parent / "shared/corpus/zeek/http-no-crlf.pcap",
    REPO.parent / "shared/corpus/zeek/ssh-basic.pcap",
    REPO.parent / "shared/corpus/zeek/ftp-cwd-navigation.pcap",
]


def seed_records(paths: list[Path], snaplen: int) -> tuple[bytes, np.ndarray, np.ndarray]:
    """Concatenated pcap records (header + bytes) of the Ethernet/IPv4/TCP packets of the seeds.

    Returns the bytes, the record offsets, and the record timestamps relative to the seed start.
    """
    parts: list[bytes] = []
    offs: list[int] = []
    tss: list[int] = []
    pos = 0
    t_base = 0
    for path in paths:
        raw = path.read_bytes()
        table = read_table(str(path))
        keep = set(
            table["frame"][
                (table["linktype"] == 1) & (table["ip_version"] == 4) & (table["tunnel"] == 0)
            ].tolist()
        )
        magic = struct.unpack("<I", raw[:4])[0]
        assert magic == 0xA1B2C3D4, f"{path}: seeds must be little-endian microsecond pcaps"
        p = 24
        frame = 0
        first = None
        last = 0
        while p + 16 <= len(raw):
            sec, usec, incl, orig = struct.unpack("<IIII", raw[p : p + 16])
            data = raw[p + 16 : p + 16 + incl]
            p += 16 + incl
            frame += 1
            if frame not in keep:
                continue
            ts = sec * 10**6 + usec
            first = ts if first is None else first
            last = ts - first
            cap = data[:snaplen]
            rel = t_base + ts - first
            parts.append(struct.pack("<IIII", 0, 0, len(cap), orig) + cap)
            offs.append(pos)
            tss.append(rel)
            pos += 16 + len(cap)
        t_base += last + 1_000_000
    return b"".join(parts), np.array(offs, np.int64), np.array(tss, np.int64)


def build(out: Path, packets: int, snaplen: int, seeds: list[Path]) -> int:
    blob, offs, tss = seed_records(seeds, snaplen)
    per_copy = len(offs)
    span_us = int(tss[-1]) + 1_000_000
    copies = -(-packets // per_copy)
    tmpl = np.frombuffer(blob, np.uint8)
    with out.open("wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, snaplen, 1))
        written = 0
        batch = max(1, 2_000_000 // len(blob))  # copies per numpy batch (~2 MB)
        for start in range(0, copies, batch):
            n = min(batch, copies - start)
            block = np.tile(tmpl, n).reshape(n, -1)
            k = np.arange(start, start + n, dtype=np.int64)
            ts = (k[:, None] * span_us + tss[None, :]) + 1_700_000_000 * 10**6
            sec = (ts // 10**6).astype("<u4")
            usec = (ts % 10**6).astype("<u4")
            rec = offs[None, :]
            rows = np.arange(n)[:, None]
            for b in range(4):
                block[rows, rec + b] = (sec >> (8 * b)) & 0xFF
                block[rows, rec + 4 + b] = (usec >> (8 * b)) & 0xFF
            # IPv4 addresses: 10.<k>.<k>.<orig last octet> for each copy; ports shifted by k
            hi = ((k >> 8) & 0xFF).astype(np.uint8)[:, None]
            lo = (k & 0xFF).astype(np.uint8)[:, None]
            ip = rec + 16 + 14
            for field in (12, 16):
                block[rows, ip + field] = 10
                block[rows, ip + field + 1] = hi
                block[rows, ip + field + 2] = lo
            ihl = (tmpl[offs + 16 + 14] & 15).astype(np.int64) * 4
            tcp = ip + ihl[None, :]
            for port in (0, 2):
                v = (block[rows, tcp + port].astype(np.int64) << 8) | block[rows, tcp + port + 1]
                v = (v + (k[:, None] >> 16) * 7) % 65536
                block[rows, tcp + port] = (v >> 8).astype(np.uint8)
                block[rows, tcp + port + 1] = (v & 0xFF).astype(np.uint8)
            if written + n * per_copy > packets:
                keep = packets - written
                flat = block.reshape(-1)
                full, part = divmod(keep, per_copy)
                end = full * len(blob) + (int(offs[part]) if part else 0)
                f.write(flat[:end].tobytes())
                written += keep
                break
            f.write(block.tobytes())
            written += n * per_copy
    return written


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--packets", type=int, default=3_000_000)
    ap.add_argument("--snaplen", type=int, default=256)
    ap.add_argument("-o", "--output", type=Path, default=Path("benchmarks/out/big.pcap"))
    ap.add_argument("--seed", type=Path, action="append", help="seed capture (repeatable)")
    a = ap.parse_args()
    a.output.parent.mkdir(parents=True, exist_ok=True)
    n = build(a.output, a.packets, a.snaplen, a.seed or DEFAULT_SEEDS)
    print(f"{a.output}: {n} packets, {a.output.stat().st_size / 1e6:.0f} MB")


if __name__ == "__main__":
    main()
