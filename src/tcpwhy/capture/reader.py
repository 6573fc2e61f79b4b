"""Streaming capture readers: classic pcap, pcapng, either gzip-compressed, files or stdin.

The file is read in chunks; the compiled walkers find whole records in each
chunk, the decoder turns them into a packet table, and the bytes of an
incomplete last record are carried into the next read. Memory is bounded by
the chunk size, whatever the file's length. Standard input is processed as it
arrives (a short read is decoded at once), so `tcpdump -w - | tcpwhy packets -`
prints packets live.
"""

from __future__ import annotations

import gzip
import os
import struct
import sys
import zlib
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from typing import IO, Any, TypeVar

import numpy as np
import numpy.typing as npt

from tcpwhy.capture.options import reassemble_default
from tcpwhy.decode import kernels as K
from tcpwhy.decode.reassembly import Reassembler, decode_datagrams, merge
from tcpwhy.decode.table import (
    COLUMNS,
    ICMP_COLUMNS,
    CaptureStats,
    PacketTable,
    empty_columns,
    empty_icmp_columns,
)
from tcpwhy.errors import CaptureError

CHUNK_BYTES = 4 << 20
"""Bytes read at a time. 4 MB, not 8: the reader holds a chunk ahead, with its decoded
table, beside the one in use; measured interleaved, `conns` on the connection-heavy
capture peaks at 113-118 MB against 144-147 MB and runs in 0.96-1.14 s against 1.19-1.28
s (the tiled capture 97 against 118 MB; `packets` 10-15 MB lower and as fast; `analyze`
level). 2 MB saved another 25 MB and ran a tenth slower."""
MAX_ROWS_PER_TABLE = 1 << 16
MAX_PCAP_CAPLEN = 262144
MAX_BLOCK = 64 << 20
OFFLOAD_SHARE = 0.05
"""Above this share of TCP packets failing checksums, a warning (Zeek's
find-checksum-offloading script warns above the same share)."""

PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1": (True, False),  # little-endian, microseconds
    b"\xa1\xb2\xc3\xd4": (False, False),
    b"\x4d\x3c\xb2\xa1": (True, True),  # little-endian, nanoseconds
    b"\xa1\xb2\x3c\x4d": (False, True),
}
PCAPNG_SHB = b"\x0a\x0d\x0d\x0a"
GZIP_MAGIC = b"\x1f\x8b"

LINKTYPE_NAMES = {
    6: "Token ring",
    119: "802.11 plus Prism header",
    143: "DOCSIS",
    147: "user-defined",
    189: "USB with Linux header",
    195: "IEEE 802.15.4 with FCS",
    215: "IEEE 802.15.4 with non-ASK PHY data",
    220: "USB with padded Linux header",
    249: "USB with USBPcap header",
    253: "Linux netlink",
}
"""Names of link types tcpwhy does not decode, for its message: libpcap's descriptions
(`pcap_datalink_val_to_description`; tests/test_link_types.py holds them to it)."""


def linktype_name(lt: int) -> str:
    return K.SUPPORTED_LINKTYPES.get(lt) or LINKTYPE_NAMES.get(lt) or f"LINKTYPE {lt}"


# ---- byte sources ------------------------------------------------------------------------


class _Source:
    """A byte stream that returns what is available (short reads on pipes), gzip undone."""

    def __init__(self, name: str) -> None:
        self.name = "<stdin>" if name == "-" else name
        self._pipe = False
        raw: IO[bytes]
        try:
            if name == "-":
                raw = sys.stdin.buffer
                self._pipe = True
            else:
                raw = open(name, "rb")  # noqa: SIM115 -- closed by close()
                # a named pipe (`-r <(…)`, /dev/fd/N) is read as it arrives, as `-` is
                self._pipe = (os.fstat(raw.fileno()).st_mode & 0o170000) == 0o010000
        except FileNotFoundError:
            # `read_table("s3://…")`: the commands and `tcpwhy.open` copy a URL to a file
            why = " (a URL: the reader takes local files; tcpwhy.open copies URLs)"
            raise CaptureError(name, "no such file" + (why if "://" in name else "")) from None
        except IsADirectoryError:
            raise CaptureError(name, "is a directory") from None
        except PermissionError:
            raise CaptureError(name, "permission denied") from None
        except OSError as exc:
            raise CaptureError(name, exc.strerror or str(exc)) from None
        self._raw = raw
        self._pending = b""
        self._stream: Any = raw
        head = self._read_raw(2)
        self._pending = head
        if head == GZIP_MAGIC:
            self._pending = b""
            self._stream = gzip.GzipFile(fileobj=_Prefixed(head, raw), mode="rb")  # type: ignore[call-overload]
        self.compressed = head == GZIP_MAGIC

    def _read_raw(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            more = self._raw_read(n - len(out))
            if not more:
                break
            out += more
        return out

    def _raw_read(self, n: int) -> bytes:
        if self._pipe:
            return os.read(self._raw.fileno(), n)
        return self._raw.read(n)

    def read(self, n: int) -> bytes:
        """Up to n bytes; fewer when that is all a pipe has now; b'' at the end."""
        if self._pending:
            out, self._pending = self._pending, b""
            if len(out) >= n:
                return out
            return out + self.read(n - len(out))
        try:
            if self._stream is self._raw:
                return self._raw_read(n)
            return self._stream.read1(n) if self._pipe else self._stream.read(n)
        except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
            raise _CompressedTruncated(str(exc)) from None
        except OSError as exc:
            raise CaptureError(self.name, exc.strerror or str(exc)) from None

    def readinto(self, view: memoryview) -> int:
        """Fill `view` (fewer bytes from a pipe or at the end); saves a copy on plain files."""
        if self._stream is self._raw and not self._pipe and not self._pending:
            try:
                return self._raw.readinto(view)
            except OSError as exc:
                raise CaptureError(self.name, exc.strerror or str(exc)) from None
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)

    def seekable(self) -> bool:
        """A plain file read as it is: a byte's offset in the stream is its offset in the file."""
        return self._stream is self._raw and not self._pipe and self._raw is not sys.stdin.buffer

    def close(self) -> None:
        if self._raw is not sys.stdin.buffer:
            self._raw.close()


def _read_head(src: _Source) -> bytes:
    """The file header's 24 bytes (fewer only at the end of the file): a pipe may hand them
    over in pieces."""
    head = src.read(24)
    while 0 < len(head) < 24:
        more = src.read(24 - len(head))
        if not more:
            break
        head += more
    return head


class _CompressedTruncated(Exception):
    pass


class _Prefixed:
    """A file object whose first bytes were already read for the magic check."""

    def __init__(self, prefix: bytes, raw: IO[bytes]) -> None:
        self._prefix = prefix
        self._raw = raw
        self._fd = raw.fileno() if raw is sys.stdin.buffer else -1

    def read(self, n: int = -1) -> bytes:
        if self._prefix:
            out, self._prefix = self._prefix, b""
            return out
        if self._fd >= 0:
            return os.read(self._fd, n if n and n > 0 else 1 << 16)
        return self._raw.read(n)


# ---- format parsers ----------------------------------------------------------------------


@dataclass
class _Records:
    off: npt.NDArray[np.int64]
    cap: npt.NDArray[np.int64]
    wire: npt.NDArray[np.int64]
    ts: npt.NDArray[np.int64]
    iface: npt.NDArray[np.int64]

    @staticmethod
    def alloc(n: int) -> _Records:
        return _Records(*(np.zeros(n, np.int64) for _ in range(5)))

    def head(self, n: int) -> _Records:
        return _Records(self.off[:n], self.cap[:n], self.wire[:n], self.ts[:n], self.iface[:n])


# step results
NEED_MORE, BOGUS, OK = 0, 1, 2


@dataclass
class _Interfaces:
    link: list[int] = field(default_factory=list)
    snap: list[int] = field(default_factory=list)
    res_pow: list[int] = field(default_factory=list)
    res_base2: list[bool] = field(default_factory=list)
    offset_s: list[int] = field(default_factory=list)

    def arrays(self) -> tuple[npt.NDArray[Any], ...]:
        return (
            np.array(self.link, np.int64),
            np.array(self.snap, np.int64),
            np.array(self.res_pow, np.int64),
            np.array(self.res_base2, np.bool_),
            np.array(self.offset_s, np.int64),
        )


class _PcapParser:
    def __init__(self, name: str, header: bytes) -> None:
        le, nanos = PCAP_MAGICS[header[:4]]
        if len(header) < 24:
            raise CaptureError(name, "truncated pcap file header")
        e = "<" if le else ">"
        major, _minor, _tz, _sig, snaplen, link = struct.unpack(e + "HHiIII", header[4:24])
        if major != 2:
            raise CaptureError(name, f"unsupported pcap version {major}")
        link &= 0xFFFF  # the upper bits carry FCS information
        if link not in K.SUPPORTED_LINKTYPES:
            raise CaptureError(name, f"unsupported link type {link} ({linktype_name(link)})")
        self.header_len = 24
        self.le, self.nanos = le, nanos
        self.max_caplen = max(MAX_PCAP_CAPLEN, snaplen if snaplen <= MAX_BLOCK else 0)
        self.if_link = np.array([link], np.int64)
        self.linktypes = {link}
        self.message = ""

    def step(self, arr: npt.NDArray[np.uint8], pos: int, recs: _Records) -> tuple[int, int, int]:
        n, newpos, st = K.walk_pcap(
            arr,
            pos,
            arr.shape[0],
            self.le,
            self.nanos,
            self.max_caplen,
            recs.off,
            recs.cap,
            recs.wire,
            recs.ts,
        )
        if st == 1:
            self.message = "bogus record length at byte {off}: stopped reading"
            return n, newpos, BOGUS
        if n == 0:
            return 0, newpos, NEED_MORE
        return n, newpos, OK


def pcapng_options(opts: bytes, e: str) -> Iterator[tuple[int, int, bytes]]:
    """A pcapng block's options as (code, length, value), up to opt_endofopt or the end of
    the bytes; each value padded to 32 bits in the file. An option whose value the block
    cuts short ends them (a malformed block: its value would be read short, and the options
    after it were never there)."""
    i = 0
    while i + 4 <= len(opts):
        code, ln = struct.unpack(e + "HH", opts[i : i + 4])
        if code == 0 or i + 4 + ln > len(opts):
            return
        yield code, ln, opts[i + 4 : i + 4 + ln]
        i += 4 + ln + (-ln % 4)


class _PcapngParser:
    def __init__(self, name: str) -> None:
        self.name = name
        self.header_len = 0
        self.le = True
        self.ifs = _Interfaces()
        self._arrays = self.ifs.arrays()
        self.if_link = self._arrays[0]
        self.linktypes: set[int] = set()
        self.message = ""
        self.seen_shb = False

    def step(self, arr: npt.NDArray[np.uint8], pos: int, recs: _Records) -> tuple[int, int, int]:
        end = arr.shape[0]
        while True:
            if not self.seen_shb:
                nxt = self._control_block(arr, pos, end)
                if nxt < 0:
                    return 0, pos, NEED_MORE if nxt == -1 else BOGUS
                pos = nxt
                continue
            n, newpos, st = K.walk_pcapng(
                arr,
                pos,
                end,
                self.le,
                *self._arrays,
                recs.off,
                recs.cap,
                recs.wire,
                recs.ts,
                recs.iface,
            )
            if n:
                return n, newpos, OK
            pos = newpos
            if st == 0:
                return 0, pos, NEED_MORE
            if st == 1:
                self.message = "bogus pcapng block at byte {off}: stopped reading"
                return 0, pos, BOGUS
            if st == 3:
                self.message = "packet on an undeclared interface at byte {off}: stopped reading"
                return 0, pos, BOGUS
            nxt = self._control_block(arr, pos, end)
            if nxt == -1:
                return 0, pos, NEED_MORE
            if nxt < 0:
                return 0, pos, BOGUS
            pos = nxt

    def _control_block(self, arr: npt.NDArray[np.uint8], pos: int, end: int) -> int:
        """Handle one non-packet block: the new position, -1 for "need more", -3 for bogus."""
        if pos + 12 > end:
            return -1
        raw = arr[pos : pos + 12].tobytes()
        if raw[:4] == PCAPNG_SHB:
            bom = raw[8:12]
            if bom == b"\x4d\x3c\x2b\x1a":
                self.le = True
            elif bom == b"\x1a\x2b\x3c\x4d":
                self.le = False
            else:
                self.message = "bad pcapng byte-order magic at byte {off}: stopped reading"
                if not self.seen_shb:
                    raise CaptureError(self.name, "not a pcapng capture (bad byte-order magic)")
                return -3
            self.seen_shb = True
            self.ifs = _Interfaces()
            self._arrays = self.ifs.arrays()
            self.if_link = self._arrays[0]
        e = "<" if self.le else ">"
        btype, blen = struct.unpack(e + "II", raw[:8])
        if blen < 12 or blen % 4 or blen > MAX_BLOCK:
            self.message = f"bogus pcapng block length {blen} at byte {{off}}: stopped reading"
            if btype == 0x0A0D0D0A and self.header_len == 0 and not self.linktypes and pos == 0:
                raise CaptureError(self.name, f"bogus pcapng section header length {blen}")
            return -3
        if pos + blen > end:
            return -1
        body = arr[pos + 8 : pos + blen - 4].tobytes()
        if btype == 1:
            self._interface(body, e)
        return pos + blen

    def _interface(self, body: bytes, e: str) -> None:
        if len(body) < 8:
            link, snap = 0xFFFF, 0
        else:
            link, _res, snap = struct.unpack(e + "HHI", body[:8])
        res_pow, base2, offset = 6, False, 0
        for code, ln, val in pcapng_options(body[8:], e):
            if code == 9 and ln >= 1:
                res_pow, base2 = val[0] & 0x7F, bool(val[0] & 0x80)
                if (not base2 and res_pow > 18) or (base2 and res_pow > 63):
                    res_pow, base2 = 6, False
            elif code == 14 and ln >= 8:
                offset = struct.unpack(e + "q", val[:8])[0]
                if abs(offset) > 1 << 40:
                    offset = 0
        self.ifs.link.append(link)
        self.ifs.snap.append(snap)
        self.ifs.res_pow.append(res_pow)
        self.ifs.res_base2.append(base2)
        self.ifs.offset_s.append(offset)
        self.linktypes.add(link)
        self._arrays = self.ifs.arrays()
        self.if_link = self._arrays[0]


# ---- decoding ----------------------------------------------------------------------------


def decode_chunk(
    arr: npt.NDArray[np.uint8],
    recs: _Records,
    if_link: npt.NDArray[np.int64],
    frame_base: int,
    counts: npt.NDArray[np.int64],
    reuse: dict[str, npt.NDArray[Any]] | None = None,
    checksums: bool = False,
    teredo_any_port: bool = False,
    reassembler: Reassembler | None = None,
) -> PacketTable:
    """Decode a chunk's records; with a `reassembler`, IP fragments are kept in it and the
    datagrams they complete are decoded and merged in (at the completing fragment's frame)."""
    n = recs.off.shape[0]
    cols = empty_columns(n) if reuse is None else {k: v[:n] for k, v in reuse.items()}
    # written only for ICMP rows, which are copied out below: one set serves every chunk
    icols = {k: v[:n] for k, v in _icmp_buffers(n).items()}
    frag = _frag_buffer(n)
    j, k, nf = K.decode_records(
        arr,
        recs.off,
        recs.cap,
        recs.wire,
        recs.ts,
        recs.iface,
        if_link,
        frame_base,
        counts,
        checksums,
        teredo_any_port,
        *(cols[name] for name in COLUMNS),
        *(icols[name] for name in ICMP_COLUMNS),
        frag,
    )
    icmp = None
    if k:
        # ICMP rows were written from the last row backwards: copy them out in capture order,
        # with their quoted payload bytes (the chunk's buffers are reused)
        sel = np.arange(n - 1, n - 1 - k, -1)
        icmp = _compact_icmp(
            PacketTable(
                {**{c: cols[c][sel] for c in COLUMNS}, **{c: icols[c][sel] for c in ICMP_COLUMNS}},
                arr,
            )
        )
    if j < n:
        cols = {name: v[:j] for name, v in cols.items()}
    table = PacketTable(cols, arr, icmp)
    if nf and reassembler is not None:
        done = reassembler.add(arr, frag[:nf], recs.ts)
        extra = (
            decode_datagrams(done, frame_base, recs, if_link, checksums, teredo_any_port)
            if done
            else None
        )
        if extra is not None and (len(extra) or extra.icmp is not None):
            table = merge(table, extra)
    return table


_FRAG_BUFFERS: list[npt.NDArray[np.uint64]] = []


def _frag_buffer(n: int) -> npt.NDArray[np.uint64]:
    """The decoder's fragment notes, at least n rows, allocated once per process."""
    if not _FRAG_BUFFERS or _FRAG_BUFFERS[0].shape[0] < n:
        _FRAG_BUFFERS[:] = [np.zeros((max(n, MAX_ROWS_PER_TABLE), len(K.FRAG_FIELDS)), np.uint64)]
    return _FRAG_BUFFERS[0]


_ICMP_BUFFERS: list[dict[str, npt.NDArray[Any]]] = []


def _icmp_buffers(n: int) -> dict[str, npt.NDArray[Any]]:
    """The ICMP column group's output buffers, at least n rows, allocated once per process
    (per thread would be needed if chunks were decoded in parallel: they are not)."""
    if not _ICMP_BUFFERS or len(_ICMP_BUFFERS[0]["icmp_type"]) < n:
        _ICMP_BUFFERS[:] = [empty_icmp_columns(max(n, MAX_ROWS_PER_TABLE))]
    return _ICMP_BUFFERS[0]


def _compact_icmp(t: PacketTable) -> PacketTable:
    """ICMP rows with their own copy of the quoted payload bytes."""
    from tcpwhy.decode.kernels import gather_bytes

    caps = t.cols["payload_cap"].astype(np.int64)
    new_off = np.zeros(len(caps), np.int64)
    np.cumsum(caps[:-1], out=new_off[1:])
    data = np.empty(int(caps.sum()), np.uint8)
    gather_bytes(t.data, t.cols["payload_off"].astype(np.int64), caps, data, new_off)
    cols = dict(t.cols)
    cols["payload_off"] = new_off.astype(np.uint64)
    return PacketTable(cols, data)


def iter_tables(
    source: str,
    stats: CaptureStats | None = None,
    chunk_bytes: int = CHUNK_BYTES,
    reuse: bool = False,
    checksums: bool = False,
    teredo_any_port: bool = False,
    reassemble: bool | None = None,
    prefetch: bool = False,
) -> Iterator[PacketTable]:
    """Packet tables of a capture, chunk by chunk, in capture order.

    With `reuse`, every table shares the same column and byte buffers, which
    the next chunk overwrites: for consumers that are done with a table before
    asking for the next (views, the benchmark). It saves the page faults of
    fresh buffers, a fifth of the decoding time. `checksums` checks what Zeek
    checks unless run with -C, into `csum_ok` (Wireshark does not by default):
    each fully captured TCP segment's checksum, and the IPv4 headers and
    tunnels' UDP datagrams on the way to it. `teredo_any_port` decodes Teredo
    between a client and its relay on any UDP ports, as Zeek does (tshark only
    looks inside UDP port 3544, so the default keeps its stream numbers). `reassemble`
    joins IPv4 and IPv6 fragments and decodes the datagrams (as tshark does by default);
    datagrams left incomplete are counted in `stats`. None: the command line's choice
    (`--no-reassemble`), else on.

    Raises CaptureError for files that are not captures we can read; problems
    after the first packet (a cut or corrupt record) end the stream with a
    warning in `stats.warnings` instead, so what was read is still shown.

    `prefetch`: a plain file (not a pipe, not compressed) is read and decoded one table
    ahead, in a thread of its own, while the caller works on the table before: for
    callers whose own work per table is compiled and releases the GIL (`conns`,
    `analyze`, `packets`). With `reuse`, two sets of buffers take turns (`_Slots`);
    `stats` runs a table ahead of what the caller has seen until the iteration ends.
    """
    stats = stats if stats is not None else CaptureStats()
    if reassemble is None:
        reassemble = reassemble_default()
    src = _Source(source)
    try:
        if prefetch and src.seekable():
            slots = _Slots() if reuse else None
            yield from _ahead(
                _iter(
                    src, stats, chunk_bytes, reuse, checksums, teredo_any_port, reassemble, slots
                ),
                slots,
            )
        else:
            yield from _iter(src, stats, chunk_bytes, reuse, checksums, teredo_any_port, reassemble)
    finally:
        src.close()


_DONE = object()


_Ng = TypeVar("_Ng", bound="_PcapngParser")


def _parser_of(src: _Source, head: bytes, pcapng: type[_Ng]) -> tuple[_PcapParser | _Ng, bytes]:
    """The parser of a capture that starts with `head`, and the bytes of `head` it has yet to
    parse: the one place a file is told to be pcap, pcapng (parsed by `pcapng`) or neither."""
    if not head:
        raise CaptureError(src.name, "empty file, not a capture")
    if head[:4] in PCAP_MAGICS:
        return _PcapParser(src.name, head), head[24:]
    if head[:4] == PCAPNG_SHB:
        return pcapng(src.name), head
    what = "gzip-compressed data" if src.compressed else "data"
    raise CaptureError(src.name, f"not a pcap or pcapng capture ({what} starting {head[:4].hex()})")


class _Stopped(Exception):
    """The caller stopped reading: the reading thread ends."""


def _roomy_buffer(size: int) -> npt.NDArray[np.uint8]:
    """A reused chunk buffer, with room for the leftover records that later chunks carry
    over: sized exactly, it was replaced a dozen times a capture, a few bytes larger each
    time, and the allocator kept the old 8 MB blocks resident (the peak of `conns` on the
    connection-heavy capture 162 MB with them, about 146 MB without)."""
    return np.empty(size + (size >> 4), np.uint8)


class _Slots:
    """Two sets of the buffers a reusing reader decodes into, for a reader one table ahead
    (`_ahead`): the thread fills one set while the caller reads the other, and waits before
    refilling a set the caller may still be reading (its column set holds one table, its
    byte buffer every table cut from it). Memory stays that of two sets, as with `reuse`,
    where fresh buffers per table grew the heap by tens of MB."""

    def __init__(self) -> None:
        import threading
        from collections import deque

        self.cv = threading.Condition()
        self.stopped = False
        self.cols = [empty_columns(MAX_ROWS_PER_TABLE) for _ in range(2)]
        self.bufs = [np.empty(0, np.uint8) for _ in range(2)]
        self.cols_busy = [False, False]
        self.buf_busy = [0, 0]
        self.held: deque[tuple[int, int]] = deque()  # (column set, buffer) of tables given out

    def _wait(self, free: Any) -> None:
        with self.cv:
            while not free():
                if self.stopped:
                    raise _Stopped
                self.cv.wait()

    def buffer(self, k: int, size: int) -> npt.NDArray[np.uint8]:
        """Byte buffer k, at least `size` bytes, once no table given out uses it."""
        self._wait(lambda: self.buf_busy[k] == 0)
        if self.bufs[k].shape[0] < size:
            self.bufs[k] = _roomy_buffer(size)
        return self.bufs[k]

    def columns(self, k: int) -> dict[str, npt.NDArray[Any]]:
        """Column set k, once the table decoded into it last is given back."""
        self._wait(lambda: not self.cols_busy[k])
        return self.cols[k]

    def give(self, c: int, b: int) -> None:
        """A table of column set c and buffer b goes out to the caller."""
        with self.cv:
            self.cols_busy[c] = True
            self.buf_busy[b] += 1
            self.held.append((c, b))

    def back(self) -> None:
        """The caller is done with the oldest table given out."""
        with self.cv:
            c, b = self.held.popleft()
            self.cols_busy[c] = False
            self.buf_busy[b] -= 1
            self.cv.notify_all()

    def stop(self) -> None:
        with self.cv:
            self.stopped = True
            self.cv.notify_all()


def _ahead(
    tables: Generator[PacketTable, None, None], slots: _Slots | None = None
) -> Iterator[PacketTable]:
    """`tables`, produced one ahead in a thread: decoding the next chunk (compiled, without
    the GIL) overlaps the caller's work on this one. An error is raised where the caller
    would have met it; a caller that stops early stops the thread before the file closes.
    With `slots`, the reader reuses two sets of buffers, each given back to it when the
    caller asks for the table after the one that used it."""
    import queue
    import threading

    q: queue.Queue[Any] = queue.Queue(maxsize=1)
    stop = threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for t in tables:
                if not put(t):
                    return
            put(_DONE)
        except _Stopped:
            return
        except BaseException as exc:  # handed to the caller, raised there
            put(exc)
        finally:
            tables.close()

    worker = threading.Thread(target=produce, name="tcpwhy-read-ahead", daemon=True)
    worker.start()
    given = False
    try:
        while True:
            if given and slots is not None:
                slots.back()
            item = q.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            given = True
            yield item
    finally:
        stop.set()
        if slots is not None:
            slots.stop()
        worker.join()


def _iter(
    src: _Source,
    stats: CaptureStats,
    chunk_bytes: int,
    reuse: bool,
    checksums: bool,
    teredo_any_port: bool,
    reassemble: bool = True,
    slots: _Slots | None = None,
) -> Generator[PacketTable, None, None]:
    name = src.name
    try:
        head = _read_head(src)
    except _CompressedTruncated as exc:
        raise CaptureError(name, f"corrupt gzip stream ({exc})") from None
    parser, leftover = _parser_of(src, head, _PcapngParser)
    stats.linktypes |= parser.linktypes
    counts = np.zeros(K.N_STATUS, np.int64)
    consumed = parser.header_len if isinstance(parser, _PcapParser) else 0
    frame_base = 0
    eof = False
    recs = _Records.alloc(MAX_ROWS_PER_TABLE)
    shared_cols = empty_columns(MAX_ROWS_PER_TABLE) if reuse and slots is None else None
    shared_buf = np.empty(0, np.uint8)
    nbuf = ncols = 0  # with `slots`: the buffer and column set in use (0 or 1)
    reassembler = Reassembler() if reassemble else None
    bad_sums = 0  # TCP rows failing a checksum check (when asked)
    # a plain file's chunk is its bytes from `consumed` on: tables say so (`origin`), so a
    # consumer can leave their payload bytes in the file (`PacketTable.in_file`)
    in_place = src.seekable()
    try:
        while True:
            # a fresh buffer per chunk: earlier tables keep pointing into theirs
            nleft = len(leftover)
            if slots is not None:
                nbuf ^= 1
                shared_buf = slots.buffer(nbuf, nleft + chunk_bytes)
            elif not reuse:
                shared_buf = np.empty(nleft + chunk_bytes, np.uint8)
            elif shared_buf.shape[0] < nleft + chunk_bytes:
                shared_buf = _roomy_buffer(nleft + chunk_bytes)
            buf = shared_buf
            buf[:nleft] = np.frombuffer(leftover, np.uint8)
            got = 0
            if not eof:
                try:
                    # exactly `chunk_bytes` (a reused buffer may be larger): the tables'
                    # boundaries, and with them the records' idle cuts, whatever the mode
                    view = memoryview(buf)[nleft : nleft + chunk_bytes]  # type: ignore[arg-type]
                    got = src.readinto(view)
                except _CompressedTruncated as exc:
                    stats.warnings.append(f"compressed stream cut short ({exc})")
                    eof = True
                if not got:
                    eof = True
            if not nleft + got and eof:
                break
            arr = buf[: nleft + got]
            pos = 0
            stop = False
            while True:
                n, newpos, st = parser.step(arr, pos, recs)
                if n:
                    if stats.first_ts_ns is None:
                        stats.first_ts_ns = int(recs.ts[0])
                    if slots is not None:
                        ncols ^= 1
                        shared_cols = slots.columns(ncols)
                    table = decode_chunk(
                        arr,
                        recs.head(n),
                        parser.if_link,
                        frame_base,
                        counts,
                        shared_cols,
                        checksums,
                        teredo_any_port,
                        reassembler,
                    )
                    if in_place and table.data is arr:  # not merged with datagrams
                        table.origin = (name, consumed)
                    frame_base += n
                    stats.frames += n
                    stats.linktypes |= parser.linktypes
                    if table.icmp is not None:
                        stats.icmp += len(table.icmp)
                    if len(table) or table.icmp is not None:
                        stats.tcp += len(table)
                        if checksums:
                            c = table["csum_ok"]
                            bad_sums += int(np.count_nonzero((c == 0) | (c == -2)))
                        if slots is not None:
                            slots.give(ncols, nbuf)
                        yield table
                pos = newpos
                if st == BOGUS:
                    stats.warnings.append(parser.message.format(off=consumed + pos))
                    stop = True
                    break
                if st == NEED_MORE:
                    break
            consumed += pos
            stats.bytes_read = consumed
            leftover = arr[pos:].tobytes()
            if stop:
                break
            if eof:
                if leftover:
                    stats.warnings.append(
                        f"file ends in the middle of a record ({len(leftover)} bytes after "
                        f"frame {frame_base}): showing what was read"
                    )
                break
    finally:
        for code, what in enumerate(K.STATUS_NAMES):
            if code != K.ST_TCP and code != K.ST_ICMP_TCP:
                stats.add_skipped(what, int(counts[code]))
        if reassembler is not None:
            _report_reassembly(reassembler, stats)
        if bad_sums > OFFLOAD_SHARE * stats.tcp:
            stats.warnings.append(
                f"{bad_sums} of {stats.tcp} TCP packets fail a checksum check, most likely "
                "from checksum offload on the capturing host: they are left out as Zeek "
                "leaves them out without -C; -C counts them"
            )
    if isinstance(parser, _PcapngParser) and not parser.seen_shb:
        raise CaptureError(name, "not a pcapng capture")
    if stats.frames and stats.frames == stats.skipped.get("unsupported link type", 0):
        lts = ", ".join(f"{lt} ({linktype_name(lt)})" for lt in sorted(stats.linktypes))
        raise CaptureError(name, f"unsupported link type {lts}")


def _report_reassembly(r: Reassembler, stats: CaptureStats) -> None:
    """Counters and a warning for fragments that did not make a whole datagram."""
    r.finish()
    stats.reassembled += r.reassembled
    stats.add_skipped("incomplete IP datagrams", r.incomplete)
    stats.add_skipped("unusable IP fragments", r.unusable)
    if r.incomplete:
        stats.warnings.append(
            f"{r.incomplete} fragmented IP datagram(s) never completed (fragments missing, "
            "timed out or over the reassembly limits): their contents are not decoded"
        )


def read_table(
    source: str,
    stats: CaptureStats | None = None,
    checksums: bool = False,
    teredo_any_port: bool = False,
    reassemble: bool | None = None,
) -> PacketTable:
    """The whole capture as one table (payload bytes compacted)."""
    return PacketTable.concat(
        list(
            iter_tables(
                source,
                stats,
                checksums=checksums,
                teredo_any_port=teredo_any_port,
                reassemble=reassemble,
            )
        )
    )


# ---- records as they are in the file (for writing them out again) -------------------------


@dataclass
class Interface:
    """Where a record was captured: its link type, snap length and timestamp resolution
    (pcapng's if_tsresol byte: 10^-n seconds, or 2^-n with the high bit set)."""

    link: int
    snaplen: int
    tsresol: int
    name: str = ""
    description: str = ""

    @property
    def finer_than_us(self) -> bool:
        pow_, base2 = self.tsresol & 0x7F, bool(self.tsresol & 0x80)
        return pow_ > 19 if base2 else pow_ > 6


@dataclass
class RecordBatch:
    """Whole records of one chunk: record k is frame `first_frame + k`, its captured bytes
    `data[off[k] : off[k] + cap[k]]`, its time `ts[k]` (ns since the epoch) and its
    interface `interfaces[iface[k]]` (numbered across the file's pcapng sections)."""

    data: npt.NDArray[np.uint8]
    first_frame: int
    off: npt.NDArray[np.int64]
    cap: npt.NDArray[np.int64]
    wire: npt.NDArray[np.int64]
    ts: npt.NDArray[np.int64]
    iface: npt.NDArray[np.int64]
    interfaces: list[Interface]


class _RecordPcapngParser(_PcapngParser):
    """The pcapng parser, keeping every interface of every section (with its name and
    resolution) for a writer."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.interfaces: list[Interface] = []
        self.section_base = 0

    def _control_block(self, arr: npt.NDArray[np.uint8], pos: int, end: int) -> int:
        shb = pos + 4 <= end and arr[pos : pos + 4].tobytes() == PCAPNG_SHB
        nxt = super()._control_block(arr, pos, end)
        if shb and nxt >= 0:
            self.section_base = len(self.interfaces)
        return nxt

    def _interface(self, body: bytes, e: str) -> None:
        super()._interface(body, e)
        name = description = ""
        tsresol = 6
        for code, ln, val in pcapng_options(body[8:], e):
            if code == 2:
                name = val.decode("utf-8", "replace")
            elif code == 3:
                description = val.decode("utf-8", "replace")
            elif code == 9 and ln >= 1:
                tsresol = val[0]
        res = self.ifs.res_pow[-1] | (0x80 if self.ifs.res_base2[-1] else 0)
        if res != (tsresol & 0xFF):  # an out-of-range resolution the reader read as µs
            tsresol = 6
        self.interfaces.append(
            Interface(self.ifs.link[-1], self.ifs.snap[-1], tsresol, name, description)
        )


def iter_records(source: str, stats: CaptureStats | None = None) -> Iterator[RecordBatch]:
    """The capture's records as they are in the file, nothing decoded, chunk by chunk: what
    `packets -w` and `analyze --annotate` copy out. Frame numbers are those of `iter_tables`
    (every record counts, TCP or not). Problems after the first record end the walk with a
    warning in `stats`, as `iter_tables` does."""
    stats = stats if stats is not None else CaptureStats()
    src = _Source(source)
    try:
        head = _read_head(src)
        parser, leftover = _parser_of(src, head, _RecordPcapngParser)
        if isinstance(parser, _PcapParser):
            e = "<" if parser.le else ">"
            snap, link = struct.unpack(e + "II", head[16:24])
            pcap_if = [Interface(link & 0xFFFF, snap, 9 if parser.nanos else 6)]
        recs = _Records.alloc(MAX_ROWS_PER_TABLE)
        frame = 1
        eof = False
        while True:
            buf = np.empty(len(leftover) + CHUNK_BYTES, np.uint8)
            buf[: len(leftover)] = np.frombuffer(leftover, np.uint8)
            got = 0
            if not eof:
                try:
                    got = src.readinto(memoryview(buf)[len(leftover) :])  # type: ignore[arg-type]
                except _CompressedTruncated as exc:
                    stats.warnings.append(f"compressed stream cut short ({exc})")
                    eof = True
                eof = eof or not got
            arr = buf[: len(leftover) + got]
            pos, stop = 0, False
            while True:
                n, newpos, st = parser.step(arr, pos, recs)
                if n:
                    r = recs.head(n)
                    if isinstance(parser, _RecordPcapngParser):
                        ifs = parser.interfaces
                        iface = r.iface + parser.section_base
                    else:
                        ifs, iface = pcap_if, np.zeros(n, np.int64)
                    yield RecordBatch(
                        arr, frame, r.off.copy(), r.cap.copy(), r.wire.copy(), r.ts.copy(),
                        iface, ifs,
                    )  # fmt: skip
                    frame += n
                pos = newpos
                if st == BOGUS:
                    stats.warnings.append(parser.message.format(off=pos))
                    stop = True
                    break
                if st == NEED_MORE:
                    break
            leftover = arr[pos:].tobytes()
            if stop or eof:  # at the end every whole record has been walked
                if leftover and not stop:
                    stats.warnings.append(
                        f"file ends in the middle of a record ({len(leftover)} bytes after "
                        f"frame {frame - 1})"
                    )
                break
    finally:
        src.close()
