"""Capture writers: classic pcap (nanosecond magic), what the lab records into, and pcapng
with packet comments, what `packets -w` and `analyze --annotate` write (`copy_records`)."""

from __future__ import annotations

import os
import stat
import struct
import sys
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from types import TracebackType
from typing import TYPE_CHECKING, Any, BinaryIO, Self

import numpy as np
import numpy.typing as npt

from tcpwhy.errors import TcpwhyError

if TYPE_CHECKING:
    from tcpwhy.capture.reader import RecordBatch

PCAP_MAGIC_NS = 0xA1B23C4D
PCAP_MAGIC_US = 0xA1B2C3D4
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LINUX_SLL = 113
LINKTYPE_LINUX_SLL2 = 276

_HDR = struct.Struct("<IHHiIII")
_REC = struct.Struct("<IIII")


class _RecordWriter:
    """What both formats' writers share: the file, the record count, a batch's buffer written
    in one call, closing (also as a context manager)."""

    _f: BinaryIO
    count: int

    def _write_buffer(self, buf: npt.NDArray[np.uint8], records: int) -> None:
        self._f.write(buf.data)
        self.count += records

    def flush(self) -> None:
        self._f.flush()

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        et: type[BaseException] | None,
        ev: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class PcapWriter(_RecordWriter):
    """Writes one record per `write()`, flushing so a reader can follow the file live."""

    def __init__(
        self,
        fileobj: BinaryIO,
        linktype: int = LINKTYPE_ETHERNET,
        snaplen: int = 262144,
        nanosecond: bool = True,
    ) -> None:
        self._f = fileobj
        self._ns = nanosecond
        self.snaplen = snaplen
        magic = PCAP_MAGIC_NS if nanosecond else PCAP_MAGIC_US
        self._f.write(_HDR.pack(magic, 2, 4, 0, 0, snaplen, linktype))
        self.count = 0

    @classmethod
    def open(cls, path: str, linktype: int = LINKTYPE_ETHERNET, **kw: object) -> PcapWriter:
        return cls(open(path, "wb"), linktype, **kw)  # type: ignore[arg-type]

    def write(self, ts_ns: int, frame: bytes, orig_len: int | None = None) -> None:
        cap = frame[: self.snaplen]
        sec, frac = divmod(int(ts_ns), 1_000_000_000)
        if not self._ns:
            frac //= 1000
        self._f.write(_REC.pack(sec, frac, len(cap), len(frame) if orig_len is None else orig_len))
        self._f.write(cap)
        self.count += 1

    def write_batch(self, b: RecordBatch, idx: npt.NDArray[np.int64]) -> None:
        """Records `idx` of a batch (`reader.iter_records`), whole: one buffer, one write."""
        cap = b.cap[idx]
        start, buf = _layout(16 + cap)
        sec, frac = np.divmod(b.ts[idx], 1_000_000_000)
        if not self._ns:
            frac //= 1000
        _put_words(buf, start, [sec, frac, cap, b.wire[idx]])
        _gather(b, idx, buf, start + 16)
        self._write_buffer(buf, len(idx))


# ---- pcapng, and copying a capture's records out --------------------------------------------

_BLOCK_HEAD = struct.Struct("<II")
_EPB = struct.Struct("<IIIIIII")  # type, length, interface, ts high, ts low, caplen, origlen
_OPT = struct.Struct("<HH")
SHB_TYPE, IDB_TYPE, EPB_TYPE = 0x0A0D0D0A, 1, 6
OPT_COMMENT, IF_NAME, IF_DESCRIPTION, IF_TSRESOL, SHB_USERAPPL = 1, 2, 3, 9, 4


def _option(code: int, value: bytes) -> bytes:
    return _OPT.pack(code, len(value)) + value + b"\0" * (-len(value) % 4)


def _options(opts: list[bytes]) -> bytes:
    return b"".join(opts) + _OPT.pack(0, 0) if opts else b""


def _block(btype: int, body: bytes) -> bytes:
    n = 12 + len(body)
    return _BLOCK_HEAD.pack(btype, n) + body + struct.pack("<I", n)


class PcapngWriter(_RecordWriter):
    """pcapng (little-endian, one section): an interface description block per interface
    with its `if_tsresol`, then enhanced packet blocks, each with its comments
    (`opt_comment`, which Wireshark shows as `frame.comment` and in its Expert Info)."""

    def __init__(self, fileobj: BinaryIO, application: str = "tcpwhy") -> None:
        self._f = fileobj
        self._div: list[int] = []  # per interface: ns per timestamp unit
        body = struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1)
        body += _options([_option(SHB_USERAPPL, application.encode())])
        self._f.write(_block(SHB_TYPE, body))
        self.count = 0

    def add_interface(
        self,
        linktype: int,
        snaplen: int = 262144,
        tsresol: int = 9,
        name: str = "",
        description: str = "",
    ) -> int:
        """Declare an interface; its number for `write`. Timestamps are kept in nanoseconds,
        so a resolution pcapng writes exactly from them is kept (10^-n, n ≤ 9); any other
        is written as nanoseconds."""
        if tsresol & 0x80 or tsresol > 9:
            tsresol = 9
        opts = [_option(IF_NAME, name.encode())] if name else []
        if description:
            opts.append(_option(IF_DESCRIPTION, description.encode()))
        opts.append(_option(IF_TSRESOL, bytes([tsresol])))
        body = struct.pack("<HHI", linktype & 0xFFFF, 0, snaplen) + _options(opts)
        self._f.write(_block(IDB_TYPE, body))
        self._div.append(10 ** (9 - tsresol))
        return len(self._div) - 1

    def write(
        self,
        iface: int,
        ts_ns: int,
        frame: bytes | memoryview,
        orig_len: int | None = None,
        comments: list[str] | tuple[str, ...] = (),
    ) -> None:
        ticks = max(int(ts_ns), 0) // self._div[iface]
        cap = len(frame)
        opts = _options([_option(OPT_COMMENT, c.encode()) for c in comments])
        pad = -cap % 4
        n = 32 + cap + pad + len(opts)
        self._f.write(
            _EPB.pack(
                EPB_TYPE, n, iface, ticks >> 32, ticks & 0xFFFFFFFF, cap,
                cap if orig_len is None else orig_len,
            )
        )  # fmt: skip
        self._f.write(frame)
        self._f.write(b"\0" * pad + opts + struct.pack("<I", n))
        self.count += 1

    def write_batch(
        self,
        b: RecordBatch,
        idx: npt.NDArray[np.int64],
        iface: npt.NDArray[np.int64],
        notes: Mapping[int, list[str]],
    ) -> None:
        """Records `idx` of a batch as EPBs on interfaces `iface` (numbers from
        `add_interface`), comments by position in `idx`: one buffer, one write."""
        cap = b.cap[idx]
        pad = -cap % 4
        optlen = np.zeros(len(idx), np.int64)
        opts = {}
        for k, texts in notes.items():
            opts[k] = _options([_option(OPT_COMMENT, c.encode()) for c in texts])
            optlen[k] = len(opts[k])
        blen = 32 + cap + pad + optlen
        start, buf = _layout(blen)
        ticks = np.maximum(b.ts[idx], 0) // np.array(self._div, np.int64)[iface]
        words = [EPB_TYPE, blen, iface, ticks >> 32, ticks & 0xFFFFFFFF, cap, b.wire[idx]]
        _put_words(buf, start, words)
        _gather(b, idx, buf, start + 28)
        for k, o in opts.items():
            at = int(start[k] + 28 + cap[k] + pad[k])
            buf[at : at + len(o)] = np.frombuffer(o, np.uint8)
        _put_words(buf, start + blen - 4, [blen])
        self._write_buffer(buf, len(idx))


def copy_records(
    batches: Iterable[RecordBatch],
    out: BinaryIO,
    path: str,
    pcapng: bool,
    select: npt.NDArray[np.int64] | None = None,
    comments: Mapping[int, list[str]] | None = None,
) -> int:
    """Copy records (`reader.iter_records`) to `out`: those whose frame numbers are in the
    sorted array `select` (all when None), bytes, timestamps and link types as they were;
    `comments` by frame number (pcapng only). As pcap, the nanosecond format when the
    capture has finer than microsecond timestamps; a pcap holds one link type, so records
    of another are an error (`path` names the output in it). Returns the records written.

    Each chunk's records are laid out in one buffer, headers written column-wise and the
    bytes gathered by the compiled copy: no Python per record."""
    comments = comments or {}
    png: PcapngWriter | None = None
    pcap: PcapWriter | None = None
    link = -1
    out_if: dict[int, int] = {}
    n_out = 0
    for b in batches:
        n = len(b.off)
        if select is None:
            idx = np.arange(n, dtype=np.int64)
        else:
            lo, hi = np.searchsorted(select, [b.first_frame, b.first_frame + n])
            idx = select[lo:hi] - b.first_frame
        if not len(idx):
            continue
        ifs = b.iface[idx]
        if pcapng:
            if png is None:
                png = PcapngWriter(out)
            for g in np.unique(ifs).tolist():
                if g not in out_if:
                    itf = b.interfaces[g]
                    out_if[g] = png.add_interface(
                        itf.link, itf.snaplen, itf.tsresol, itf.name, itf.description
                    )
            lookup = np.zeros(len(b.interfaces), np.int64)
            for g, o in out_if.items():
                lookup[g] = o
            frames = (idx + b.first_frame).tolist() if comments else []
            notes = {k: comments[fr] for k, fr in enumerate(frames) if fr in comments}
            png.write_batch(b, idx, lookup[ifs], notes)
        else:
            links = np.array([itf.link for itf in b.interfaces], np.int64)[ifs]
            if pcap is None:
                first = b.interfaces[int(ifs[0])]
                ns = any(itf.finer_than_us for itf in b.interfaces)
                pcap = PcapWriter(out, first.link, first.snaplen or 262144, nanosecond=ns)
                link = first.link
            other = links[links != link]
            if len(other):
                raise TcpwhyError(
                    path,
                    f"the packets have several link types ({link} and {int(other[0])}) and "
                    "a pcap file holds one: write pcapng (a name ending in .pcapng)",
                )
            pcap.write_batch(b, idx)
        n_out += len(idx)
    if pcapng and png is None:  # nothing selected: still a valid, empty capture
        png = PcapngWriter(out)
    if not pcapng and pcap is None:
        PcapWriter(out)
    return n_out


def _layout(sizes: npt.NDArray[np.int64]) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.uint8]]:
    """Start offsets of records of these sizes laid end to end, and a zeroed buffer for them."""
    start = np.zeros(len(sizes), np.int64)
    np.cumsum(sizes[:-1], out=start[1:])
    return start, np.zeros(int(sizes.sum()), np.uint8)


def _put_words(buf: npt.NDArray[np.uint8], at: npt.NDArray[np.int64], words: list[Any]) -> None:
    """Little-endian 32-bit words at these offsets, one row of words per record (any
    alignment)."""
    hdr = np.empty((len(at), len(words)), "<u4")
    for k, w in enumerate(words):
        hdr[:, k] = w
    width = 4 * len(words)
    buf[at[:, None] + np.arange(width)] = hdr.view(np.uint8).reshape(len(at), width)


def _gather(
    b: RecordBatch, idx: npt.NDArray[np.int64], buf: npt.NDArray[np.uint8], at: Any
) -> None:
    """The records' captured bytes into `buf` at offsets `at` (the decoder's compiled copy)."""
    from tcpwhy.decode.kernels import gather_bytes

    gather_bytes(b.data, b.off[idx], b.cap[idx], buf, np.ascontiguousarray(at, dtype=np.int64))


def written_in_place(path: str) -> bool:
    """Whether `path` is an existing name that is not a regular file (/dev/null, a FIFO,
    /dev/stdout, /dev/fd/N, a terminal, a symbolic link): those are opened and written where
    they are, because renaming a finished file over them would replace the device or the
    link itself (as root, `-o /dev/null` would leave a regular file at /dev/null)."""
    try:
        return not stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


@contextmanager
def atomic_output(path: str) -> Iterator[BinaryIO]:
    """A binary file for `path`, written beside it and renamed into place on success, so a
    failed run leaves no partial file; `-` is standard output. A path that cannot be written
    (missing directory, no permission) is `tcpwhy: PATH: cannot write: reason` (exit 2),
    raised before anything is read."""
    if path == "-":
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    if os.path.isdir(path):
        raise TcpwhyError(path, "is a directory")
    if written_in_place(path):
        try:
            with open(path, "wb") as f:
                yield f
        except OSError as exc:
            raise TcpwhyError(path, f"cannot write: {exc.strerror or exc}") from None
        return
    where = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(prefix=".tcpwhy-", suffix=".part", dir=where)
    except OSError as exc:
        raise TcpwhyError(path, f"cannot write: {exc.strerror or exc}") from None
    ok = False
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)
        os.replace(tmp, path)
        ok = True
    except OSError as exc:
        raise TcpwhyError(path, f"cannot write: {exc.strerror or exc}") from None
    finally:
        if not ok and os.path.exists(tmp):
            os.unlink(tmp)
