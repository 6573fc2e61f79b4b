"""Damaged copies of the shipped captures: never a traceback or a hang, whatever the bytes.

The shipped captures (classic pcap) and pcapng files written from them by tcpwhy's own
writer are damaged the way a broken disk, a cut transfer or a buggy tool damages a file:
bits flipped, bytes overwritten, the end cut off, a stretch repeated, and, for pcapng, block
and option lengths that lie. Each copy goes through `packets`, `analyze` and `conns` in two
worker processes under a timeout (tests/corpus_walk.py): each run ends listing what it read
(exit 0, or 1 for `analyze`'s findings) or with exactly one line `tcpwhy: FILE: reason` and
exit 2. The seeds are fixed, so a failure names a file that can be made again.
"""

from __future__ import annotations

import random
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_corpus_bad_input import _walk, ended_cleanly

HERE = Path(__file__).parent
SHIPPED = sorted(
    [*(HERE / "data").rglob("*.pcap"), *(HERE.parent / "src/tcpwhy/data").rglob("*.pcap")]
)
COPIES = 60
"""Damaged copies per kind and mode: 60 of pcap and 60 of pcapng, about 40 s of the suite."""


def _damage_bytes(raw: bytes, rng: random.Random) -> bytes:
    b = bytearray(raw)
    for _ in range(rng.randint(1, 3)):
        if len(b) <= 40:
            break
        k = rng.randrange(5)
        i = rng.randrange(24, len(b))
        if k == 0:
            for _ in range(rng.randint(1, 20)):
                j = rng.randrange(24, len(b))
                b[j] ^= 1 << rng.randrange(8)
        elif k == 1:
            b[i] = rng.randrange(256)
        elif k == 2:
            del b[i:]
        elif k == 3:
            j = min(len(b), i + rng.randrange(2000))
            b[j:j] = b[i:j]
        else:
            b[i : i + rng.randrange(1, 12)] = b"\xff" * rng.randrange(1, 12)
    return bytes(b)


def _blocks(b: bytes) -> list[tuple[int, int, int]]:
    """(offset, type, length) of a little-endian pcapng's blocks."""
    pos, out = 0, []
    while pos + 12 <= len(b):
        bt, bl = struct.unpack("<II", b[pos : pos + 8])
        if bl < 12 or pos + bl > len(b):
            break
        out.append((pos, bt, bl))
        pos += bl
    return out


def _damage_blocks(raw: bytes, rng: random.Random) -> bytes:
    """Lengths and option headers that lie, interface ids out of range, blocks repeated."""
    b = bytearray(raw)
    for _ in range(rng.randint(1, 3)):
        blocks = _blocks(bytes(b))
        if not blocks:
            break
        pos, bt, ln = rng.choice(blocks)
        k = rng.randrange(5)
        if k == 0:
            lie = rng.choice([ln + 4, ln - 4, 12, 16, ln * 2, 0xFFFFFFF0])
            b[pos + 4 : pos + 8] = struct.pack("<I", lie & 0xFFFFFFFF)
        elif k == 1:  # an option header of an interface block, its length a lie
            pos, bt, ln = rng.choice([blk for blk in blocks if blk[1] == 1] or blocks)
            starts, i = [], pos + 16
            while i + 4 <= pos + ln - 4:
                starts.append(i)
                code, n = struct.unpack("<HH", b[i : i + 4])
                if code == 0:
                    break
                i += 4 + n + (-n % 4)
            if not starts:
                continue
            i = rng.choice(starts)
            code = rng.choice([1, 2, 9, 14, 0x8000])
            b[i : i + 4] = struct.pack("<HH", code, rng.choice([1, 3, 8, 255, 0xFFFF]))
        elif k == 2 and bt == 6:
            b[pos + 8 : pos + 12] = struct.pack("<I", rng.choice([1, 7, 0xFFFFFFFF]))
        elif k == 3:
            b[pos + ln - 4 : pos + ln] = struct.pack("<I", rng.randrange(1 << 16))
        else:
            b[pos:pos] = b[pos : pos + ln]
    return bytes(b)


@pytest.fixture(scope="module")
def damaged(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    out = tmp_path_factory.mktemp("damaged")
    rng = random.Random(20261206)
    files = []
    for n in range(COPIES):
        src = rng.choice(SHIPPED)
        p = out / f"bytes{n}-{src.stem}.pcap"
        p.write_bytes(_damage_bytes(src.read_bytes(), rng))
        files.append(p)
    # pcapng written by tcpwhy itself (an annotated copy) from a few shipped captures
    ng = []
    for src in rng.sample(SHIPPED, 6):
        dst = out / f"{src.stem}.pcapng"
        subprocess.run(
            [sys.executable, "-m", "tcpwhy", "analyze", str(src), "--annotate", str(dst)],
            capture_output=True,
            check=False,
        )
        assert dst.read_bytes()[:4] == b"\x0a\x0d\x0d\x0a", src
        ng.append(dst)
    for n in range(COPIES):
        src = rng.choice(ng)
        raw = _damage_blocks(src.read_bytes(), rng)
        if rng.random() < 0.3:
            raw = _damage_bytes(raw, rng)
        p = out / f"blocks{n}-{src.stem}.pcapng"
        p.write_bytes(raw)
        files.append(p)
    return files


@pytest.mark.parametrize(
    "mode", [[], ["--analyze"], ["--conns"]], ids=["packets", "analyze", "conns"]
)
def test_damaged_captures_end_cleanly(damaged: list[Path], mode: list[str]) -> None:
    results = _walk(damaged, *mode)
    assert len(results) == len(damaged)
    listed = (0, 1) if mode == ["--analyze"] else (0,)
    refused = sum(not ended_cleanly(r, listed) for r in results)
    # the damage is not all refused at the door: most copies are read up to the damage
    assert refused < len(damaged) // 2
