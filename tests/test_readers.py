"""Readers: the same real packets framed every way a capture can be framed must decode alike."""

from __future__ import annotations

import gzip
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tcpwhy.capture import read_table
from tcpwhy.capture.reader import iter_tables
from tcpwhy.decode.table import CaptureStats

SAME = ("frame", "sport", "dport", "seq", "ack", "flags", "payload_len", "win", "opt_mss", "src_lo")


def records(path: Path) -> tuple[int, list[tuple[int, bytes, int]]]:
    """(linktype, [(ts_ns, frame bytes, orig_len)]) of a little-endian microsecond pcap."""
    raw = path.read_bytes()
    magic, _, _, _, _, _, link = struct.unpack("<IHHiIII", raw[:24])
    assert magic == 0xA1B2C3D4
    out = []
    pos = 24
    while pos + 16 <= len(raw):
        sec, usec, incl, orig = struct.unpack("<IIII", raw[pos : pos + 16])
        out.append((sec * 10**9 + usec * 1000, raw[pos + 16 : pos + 16 + incl], orig))
        pos += 16 + incl
    return link, out


def write_pcap(
    path: Path, link: int, recs: list[tuple[int, bytes, int]], le: bool, ns: bool
) -> None:
    e = "<" if le else ">"
    magic = 0xA1B23C4D if ns else 0xA1B2C3D4
    parts = [struct.pack(e + "IHHiIII", magic, 2, 4, 0, 0, 65535, link)]
    for ts, data, orig in recs:
        sec, frac = divmod(ts, 10**9)
        parts.append(struct.pack(e + "IIII", sec, frac if ns else frac // 1000, len(data), orig))
        parts.append(data)
    path.write_bytes(b"".join(parts))


def _block(e: str, btype: int, body: bytes) -> bytes:
    body += b"\0" * (-len(body) % 4)
    n = len(body) + 12
    return struct.pack(e + "II", btype, n) + body + struct.pack(e + "I", n)


def _opt(e: str, code: int, val: bytes) -> bytes:
    return struct.pack(e + "HH", code, len(val)) + val + b"\0" * (-len(val) % 4)


def write_pcapng(path: Path, recs: list[tuple[int, bytes, int]], le: bool) -> None:
    """Two sections; interfaces of two link types and three time resolutions; EPB, PB, SPB;
    an unknown block type in between."""
    e = "<" if le else ">"
    out = []
    half = len(recs) // 2
    for section in (recs[:half], recs[half:]):
        out.append(_block(e, 0x0A0D0D0A, struct.pack(e + "IHHq", 0x1A2B3C4D, 1, 0, -1)))
        # if 0: Ethernet, nanoseconds; if 1: raw IP, 2^-20 s with a +10 s offset; if 2: Ethernet, us
        out.append(
            _block(e, 1, struct.pack(e + "HHI", 1, 0, 0) + _opt(e, 9, b"\x09") + _opt(e, 0, b""))
        )
        out.append(
            _block(
                e,
                1,
                struct.pack(e + "HHI", 101, 0, 0)
                + _opt(e, 9, bytes([0x80 | 20]))
                + _opt(e, 14, struct.pack(e + "q", 10))
                + _opt(e, 0, b""),
            )
        )
        out.append(_block(e, 1, struct.pack(e + "HHI", 1, 0, 0)))
        out.append(_block(e, 0x0BAD, b"unknown block, skipped"))
        for k, (ts, data, orig) in enumerate(section):
            kind = k % 4
            if kind == 0:
                out.append(
                    _block(
                        e,
                        6,
                        struct.pack(e + "IIIII", 0, ts >> 32, ts & 0xFFFFFFFF, len(data), orig)
                        + data,
                    )
                )
            elif kind == 1:
                ticks = ((ts - 10 * 10**9) << 20) // 10**9
                ip = data[14:]
                out.append(
                    _block(
                        e,
                        6,
                        struct.pack(
                            e + "IIIII", 1, ticks >> 32, ticks & 0xFFFFFFFF, len(ip), orig - 14
                        )
                        + ip,
                    )
                )
            elif kind == 2:
                us = ts // 1000
                out.append(
                    _block(
                        e,
                        2,
                        struct.pack(e + "HHIIII", 2, 0, us >> 32, us & 0xFFFFFFFF, len(data), orig)
                        + data,
                    )
                )
            else:
                out.append(
                    _block(
                        e,
                        6,
                        struct.pack(
                            e + "IIIII",
                            2,
                            (ts // 1000) >> 32,
                            (ts // 1000) & 0xFFFFFFFF,
                            len(data),
                            orig,
                        )
                        + data,
                    )
                )
    path.write_bytes(b"".join(out))


@pytest.fixture(scope="module")
def base(zeek_corpus: Path) -> tuple[int, list[tuple[int, bytes, int]]]:
    return records(zeek_corpus / "ftp-gridftp.pcap")


def _check_same(a, b) -> None:  # type: ignore[no-untyped-def]
    assert len(a) == len(b) == 61  # the TCP packets tshark decodes in ftp-gridftp.pcap
    for k in SAME:
        assert np.array_equal(a[k], b[k]), k
    assert a.data.tobytes() == b.data.tobytes()


@pytest.mark.parametrize("le", [True, False])
@pytest.mark.parametrize("ns", [True, False])
def test_pcap_byte_orders_and_resolutions(tmp_path: Path, base, le: bool, ns: bool) -> None:  # type: ignore[no-untyped-def]
    link, recs = base
    ref = tmp_path / "ref.pcap"
    write_pcap(ref, link, recs, True, False)
    p = tmp_path / "x.pcap"
    write_pcap(p, link, recs, le, ns)
    a, b = read_table(str(ref)), read_table(str(p))
    _check_same(a, b)
    assert np.array_equal(a["ts_ns"], b["ts_ns"])


@pytest.mark.parametrize("le", [True, False])
def test_pcapng_sections_interfaces_resolutions(tmp_path: Path, base, le: bool) -> None:  # type: ignore[no-untyped-def]
    link, recs = base
    ref = tmp_path / "ref.pcap"
    write_pcap(ref, link, recs, True, False)
    p = tmp_path / "x.pcapng"
    write_pcapng(p, recs, le)
    a, b = read_table(str(ref)), read_table(str(p))
    _check_same(a, b)
    assert set(b["linktype"].tolist()) == {1, 101}
    # 2^-20 s ticks are exact to within one tick (< 1 us)
    assert np.all(np.abs(a["ts_ns"] - b["ts_ns"]) < 1000)


def test_gzip_detected_by_magic_not_name(tmp_path: Path, base) -> None:  # type: ignore[no-untyped-def]
    link, recs = base
    ref = tmp_path / "ref.pcap"
    write_pcap(ref, link, recs, True, False)
    z = tmp_path / "capture.bin"
    z.write_bytes(gzip.compress(ref.read_bytes()))
    _check_same(read_table(str(ref)), read_table(str(z)))
    zng = tmp_path / "ng.data"
    write_pcapng(tmp_path / "n.pcapng", recs, True)
    zng.write_bytes(gzip.compress((tmp_path / "n.pcapng").read_bytes()))
    _check_same(read_table(str(ref)), read_table(str(zng)))


def test_stdin_streams_as_it_arrives(tmp_path: Path, base) -> None:  # type: ignore[no-untyped-def]
    """Packets written to the pipe are printed before the writer closes it."""
    link, recs = base
    ref = tmp_path / "ref.pcap"
    write_pcap(ref, link, recs, True, False)
    raw = ref.read_bytes()
    first_two = 24 + sum(16 + len(d) for _, d, _ in recs[:2])
    proc = subprocess.Popen(
        [sys.executable, "-m", "tcpwhy", "packets", "-"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdin and proc.stdout
    proc.stdin.write(raw[:first_two])
    proc.stdin.flush()
    line1 = proc.stdout.readline()  # arrives while stdin is still open
    assert b"[SYN]" in line1
    proc.stdin.write(raw[first_two:])
    proc.stdin.close()
    rest = proc.stdout.read()
    assert proc.wait(timeout=60) == 0
    assert len(rest.splitlines()) == len(recs) - 1


def test_memory_does_not_grow_with_the_file(tmp_path: Path, base) -> None:  # type: ignore[no-untyped-def]
    """Chunks are independent: a chunk's table never holds more than MAX_ROWS_PER_TABLE rows."""
    from tcpwhy.capture.reader import MAX_ROWS_PER_TABLE

    link, recs = base
    big = (recs * 3000)[:150_000]
    p = tmp_path / "big.pcap"
    write_pcap(p, link, big, True, False)
    stats = CaptureStats()
    sizes = [len(t) for t in iter_tables(str(p), stats, chunk_bytes=1 << 20)]
    assert sum(sizes) == len(big)
    assert max(sizes) <= MAX_ROWS_PER_TABLE
    assert len(sizes) > 10


def test_checksums_verified_only_when_asked(tmp_path: Path, base) -> None:  # type: ignore[no-untyped-def]
    link, recs = base
    ref = tmp_path / "ref.pcap"
    write_pcap(ref, link, recs, True, False)
    assert set(read_table(str(ref))["csum_ok"].tolist()) == {-1}
    good = read_table(str(ref), checksums=True)
    assert (good["csum_ok"] == 1).all()
    # flip one payload byte of the first data packet: only that packet turns bad
    i = int(np.flatnonzero(good["payload_len"] > 0)[0])
    frame = int(good["frame"][i])
    ts, data, orig = recs[frame - 1]
    bad = bytearray(data)
    bad[-1] ^= 0xFF
    recs2 = [*recs[: frame - 1], (ts, bytes(bad), orig), *recs[frame:]]
    p = tmp_path / "bad.pcap"
    write_pcap(p, link, recs2, True, False)
    t = read_table(str(p), checksums=True)
    assert np.flatnonzero(t["csum_ok"] == 0).tolist() == [i]


def test_stdin_errors_name_stdin() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "tcpwhy", "packets", "-"], input=b"", capture_output=True
    )
    assert r.returncode == 2
    assert r.stderr.decode().strip() == "tcpwhy: <stdin>: empty file, not a capture"


@pytest.mark.parametrize(
    "cut",
    [
        pytest.param(struct.pack("<HH", 9, 1), id="tsresol-without-its-byte"),
        pytest.param(struct.pack("<HH", 14, 8) + b"\0\0\0\0", id="tsoffset-cut-short"),
    ],
)
def test_pcapng_interface_option_cut_short(tmp_path: Path, base, cut: bytes) -> None:  # type: ignore[no-untyped-def]
    """An interface block that ends in the middle of an option (a malformed block, as a
    corrupted file has) is read with the options before it: a traceback before."""
    link, recs = base
    ref = tmp_path / "ref.pcap"
    write_pcap(ref, link, recs, True, False)
    e = "<"
    out = [_block(e, 0x0A0D0D0A, struct.pack(e + "IHHq", 0x1A2B3C4D, 1, 0, -1))]
    # the cut option is the body's last bytes: its value runs past the block's end
    out.append(_block(e, 1, struct.pack(e + "HHI", link, 0, 0) + _opt(e, 2, b"eth0") + cut))
    for ts, data, orig in recs:
        us = ts // 1000
        body = struct.pack(e + "IIIII", 0, us >> 32, us & 0xFFFFFFFF, len(data), orig) + data
        out.append(_block(e, 6, body))
    p = tmp_path / "cut.pcapng"
    p.write_bytes(b"".join(out))
    a, b = read_table(str(ref)), read_table(str(p))
    _check_same(a, b)
    assert np.array_equal(a["ts_ns"], b["ts_ns"])  # microseconds, no offset: the defaults
    for argv in (["analyze", "--format", "json"], ["packets", "-w", str(tmp_path / "o.pcapng")]):
        r = subprocess.run(
            [sys.executable, "-m", "tcpwhy", *argv, str(p)], capture_output=True, text=True
        )
        assert r.returncode in (0, 1) and "Traceback" not in r.stderr, r.stderr
