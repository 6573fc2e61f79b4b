"""The compiled payload classifier and Host search of `tcpwhy.tcp.server_names` against their
whole-array numpy definitions (`_kinds_numpy`, `_host_numpy`): on every payload of the lab
recordings and the Zeek corpus, and on payloads built around the cases the search has rules
for (case, blanks, ports, bracketed IPv6 addresses, bytes cut short, headers ending first)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from tcpwhy.capture import iter_tables
from tcpwhy.decode.table import CaptureStats
from tcpwhy.tcp import server_names as sn

HERE = Path(__file__).resolve().parent
LAB = HERE.parent / "src" / "tcpwhy" / "data" / "lab"


class _Payloads:
    """The two columns and the bytes the search reads, as a packet table holds them."""

    def __init__(self, parts: list[bytes], caps: list[int]) -> None:
        offs = np.cumsum([0] + [len(p) for p in parts[:-1]]).astype(np.uint64)
        self.cols = {"payload_off": offs, "payload_cap": np.array(caps, np.uint32)}
        # bytes after the last payload: a read past a payload's end would find a name there
        self.data = np.frombuffer(b"".join(parts) + b"\r\nHost: past.end\r\n", np.uint8).copy()

    def __getitem__(self, name: str) -> npt.NDArray[Any]:
        return self.cols[name]


def _same(table: Any, rows: npt.NDArray[np.int64]) -> tuple[int, int]:
    hello, request = sn.kinds(table, rows)
    h2, r2 = sn._kinds_numpy(table, rows)
    assert np.array_equal(hello, h2) and np.array_equal(request, r2)
    off, length = sn._host(table, rows)
    off2, length2 = sn._host_numpy(table, rows)
    assert np.array_equal(off, off2) and np.array_equal(length, length2)
    return int(request.sum()), int((length > 0).sum())


def _captures(corpus_dir: Path | None) -> list[Path]:
    files = sorted(LAB.glob("*.pcap"))
    if corpus_dir is not None:
        files += sorted(corpus_dir.glob("*.pcap*"))
    return files


def test_compiled_search_matches_numpy_on_recordings(zeek_corpus: Path) -> None:
    requests = names = 0
    for path in _captures(zeek_corpus):
        for t in iter_tables(str(path), CaptureStats()):
            rows = np.flatnonzero(t["payload_len"] > 0)
            if not len(rows) or not t.data.size:
                continue
            # every payload, not only requests: the Host search must not care what it reads
            r, n = _same(t, rows)
            requests += r
            names += n
    assert requests > 20 and names > 20  # the recordings do hold requests with names


@pytest.mark.parametrize("seed", range(4))
def test_compiled_search_matches_numpy_on_built_payloads(seed: int) -> None:
    rng = random.Random(seed)
    pieces = [
        b"\r\n", b"\r", b"\n", b"Host:", b"host:", b"HOST:", b"hOsT:", b" ", b"\t", b":", b"[",
        b"]", b"a", b"example.com", b"::1", b"8080", b"\r\n\r\n", b"x" * 300,
        b"\x16\x03\x01\x02\x00\x01", b"\x16\x03\x05\x00\x10\x01", b"GET", b"PROPPATCH ",
    ]  # fmt: skip
    heads = [b"GET / HTTP/1.1\r\nHost:", b"POST /x HTTP/1.1\r\nUser-Agent: t\r\nhost: ", b""]
    parts, caps = [], []
    for _ in range(2000):
        p = rng.choice(heads) + b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 25)))
        parts.append(p)
        caps.append(len(p) if rng.random() < 0.7 else rng.randint(0, len(p)))
    requests, names = _same(_Payloads(parts, caps), np.arange(len(parts)))
    assert requests > 500 and names > 100


def _same_distinct(data: npt.NDArray[np.uint8], off: Any, length: Any) -> int:
    words, code = sn.distinct(data, np.asarray(off, np.int64), np.asarray(length, np.int64))
    want_words, want_code = sn._distinct_numpy(
        data, np.asarray(off, np.int64), np.asarray(length, np.int64)
    )
    assert words == want_words
    assert np.array_equal(code, want_code)
    return len(words) - 1


def test_hashed_distinct_matches_sorted_rows_on_recordings(zeek_corpus: Path) -> None:
    """The names the connection builder groups, chunk by chunk, as it finds them."""
    distinct = 0
    for path in _captures(zeek_corpus):
        for t in iter_tables(str(path), CaptureStats()):
            rows = np.flatnonzero(t["payload_len"] > 0)
            if not len(rows) or not t.data.size:
                continue
            off, length = sn.locate(t, rows, *sn.kinds(t, rows))
            distinct += _same_distinct(t.data, off, length)
    assert distinct > 10  # the recordings name several servers


@pytest.mark.parametrize("seed", range(4))
def test_hashed_distinct_matches_sorted_rows_on_built_names(seed: int) -> None:
    """Names that repeat, share prefixes, differ in one byte or in length only, hold zero
    bytes, run to 255 bytes or past the end of the data (clipped there, as before)."""
    rng = random.Random(seed)
    stems = [b"a", b"ab", b"a\x00", b"example.com", b"example.co", b"example.con", b"x" * 255]
    stems += [bytes(rng.randrange(256) for _ in range(rng.randint(1, 40))) for _ in range(30)]
    data = b"".join(rng.choice(stems) for _ in range(3000))
    arr = np.frombuffer(data, np.uint8).copy()
    off, length = [], []
    for _ in range(5000):
        if rng.random() < 0.1:
            off.append(rng.randrange(len(data)))
            length.append(0)  # no name
            continue
        s = rng.choice(stems)
        at = data.find(s, rng.randrange(len(data)))
        at = at if at >= 0 else data.find(s)
        off.append(at if rng.random() < 0.95 else len(data) - rng.randint(1, 5))
        length.append(len(s))
    assert _same_distinct(arr, off, length) > 30
    arr.flags.writeable = False  # as a file's bytes may be: the names are gathered first
    assert _same_distinct(arr, off, length) > 30
