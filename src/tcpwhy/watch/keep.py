"""`watch --keep DIR`: the packets of the connections that had findings, as rotating captures.

The diagnosis works on decoded rows; the files must hold the records as they were on the
wire. So the records are read a second time, as they are (`capture.reader.iter_records`),
into a bounded ring of recent records: one compact byte buffer per chunk with its offset,
length, time and interface columns, keyed by frame number (the numbers the decoded rows
carry). When a window's findings are made, the frames of their connections (and every
record of the few seconds before each one's first packet: what the wire carried just
before) are copied from the ring into the current file by the capture writers, one buffer
per chunk: no Python per packet. A file is closed at `rotate_bytes` and the oldest files
are removed while the files together exceed `max_bytes`.

A regular file is read twice in lockstep (`Lockstep`); a stream (`-r -`, `-i`) is read
once and its bytes are handed to both readers (`Tee`), the records side on a thread.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections import deque
from collections.abc import Iterator
from typing import IO, Any

import numpy as np
import numpy.typing as npt

from tcpwhy.capture.reader import RecordBatch, iter_records
from tcpwhy.capture.writer import PcapngWriter, PcapWriter
from tcpwhy.errors import TcpwhyError

NS = 1_000_000_000
MB = 1 << 20
RING_BYTES = 64 * MB
"""Record bytes held for `--keep` (the kept connections' packets and the seconds before):
a connection that began before the ring's oldest record is kept from there on."""


def _compact(b: RecordBatch) -> RecordBatch:
    """The batch with its own right-sized buffer: a chunk's buffer is sized for a full read,
    and a stream's short reads would pin most of it empty."""
    if not len(b.off):
        return b
    lo = int(b.off[0])
    hi = int(b.off[-1] + b.cap[-1])
    data = b.data[lo:hi].copy()
    return RecordBatch(data, b.first_frame, b.off - lo, b.cap, b.wire, b.ts, b.iface, b.interfaces)


class Ring:
    """Recent records, chunk by chunk, bounded by their bytes; safe to fill from a thread."""

    def __init__(self, max_bytes: int = RING_BYTES) -> None:
        self.max_bytes = max_bytes
        self.batches: deque[RecordBatch] = deque()
        self.nbytes = 0
        self.last_frame = 0  # the newest record's frame number
        self.done = False
        self.error: BaseException | None = None
        self.cond = threading.Condition()

    def add(self, b: RecordBatch) -> None:
        b = _compact(b)
        with self.cond:
            self.batches.append(b)
            self.nbytes += len(b.data)
            while self.nbytes > self.max_bytes and len(self.batches) > 1:
                self.nbytes -= len(self.batches.popleft().data)
            self.last_frame = b.first_frame + len(b.off) - 1
            self.cond.notify_all()

    def finish(self, error: BaseException | None = None) -> None:
        with self.cond:
            self.done = True
            self.error = error
            self.cond.notify_all()

    def wait_for(self, frame: int, timeout: float = 5.0) -> None:
        """Until the record `frame` is in (the records reader is a little behind the
        decoder on a stream), the records reader ended, or `timeout` passed."""
        with self.cond:
            self.cond.wait_for(lambda: self.last_frame >= frame or self.done, timeout)

    def first_frame(self) -> int:
        with self.cond:
            return self.batches[0].first_frame if self.batches else self.last_frame + 1

    def snapshot(self) -> list[RecordBatch]:
        with self.cond:
            return list(self.batches)


class Lockstep:
    """A regular file's records, read alongside its decoded chunks."""

    def __init__(self, path: str, ring: Ring) -> None:
        self.ring = ring
        self._it: Iterator[RecordBatch] | None = iter_records(path)

    def advance(self, frame: int) -> None:
        """Read records until `frame` is in the ring."""
        while self._it is not None and self.ring.last_frame < frame:
            b = next(self._it, None)
            if b is None:
                self._it = None
                self.ring.finish()
            else:
                self.ring.add(b)


class Tee:
    """A stream read once: its bytes go on to standard input (where the decoder reads it,
    as without --keep) and to a pipe whose records a thread puts in the ring."""

    def __init__(self, ring: Ring) -> None:
        self.ring = ring
        self.src = os.dup(0)
        self.saved_stdin = os.dup(0)
        a_r, self.a_w = os.pipe()
        self.b_r, self.b_w = os.pipe()
        os.dup2(a_r, 0)
        os.close(a_r)
        threading.Thread(target=self._copy, name="watch-keep-tee", daemon=True).start()
        threading.Thread(target=self._records, name="watch-keep-records", daemon=True).start()

    def _copy(self) -> None:
        outs = [self.a_w, self.b_w]
        try:
            while outs:
                data = os.read(self.src, 1 << 16)
                if not data:
                    break
                for fd in list(outs):
                    try:
                        view = memoryview(data)
                        while view:
                            view = view[os.write(fd, view) :]
                    except OSError:  # that reader has gone
                        outs.remove(fd)
        finally:
            for fd in (self.a_w, self.b_w, self.src):
                with contextlib.suppress(OSError):
                    os.close(fd)

    def _records(self) -> None:
        err: BaseException | None = None
        try:
            for b in iter_records(f"/dev/fd/{self.b_r}"):
                self.ring.add(b)
        except BaseException as exc:  # the decoder reports a bad stream; keeping just stops
            err = exc
        finally:
            with contextlib.suppress(OSError):
                os.close(self.b_r)
            self.ring.finish(err)

    def close(self) -> None:
        """Standard input back as it was."""
        with contextlib.suppress(OSError):
            os.dup2(self.saved_stdin, 0)
            os.close(self.saved_stdin)


def check_dir(path: str) -> None:
    """The directory exists (made if missing) and takes files, or the one-line error."""
    if os.path.exists(path) and not os.path.isdir(path):  # makedirs would say "File exists"
        raise TcpwhyError(path, "is not a directory")
    try:
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, f".tcpwhy-probe-{os.getpid()}")
        with open(probe, "wb"):
            pass
        os.unlink(probe)
    except OSError as exc:
        raise TcpwhyError(path, f"cannot write: {exc.strerror or exc}") from None


def _merge(starts: npt.NDArray[np.int64], ends: npt.NDArray[np.int64]) -> tuple[Any, Any]:
    """Intervals [start, end) joined where they overlap, sorted."""
    o = np.argsort(starts, kind="stable")
    s, e = starts[o], np.maximum.accumulate(ends[o])
    new = np.ones(len(s), np.bool_)
    new[1:] = s[1:] > e[:-1]
    grp = np.cumsum(new) - 1
    out_e = np.zeros(int(grp[-1]) + 1 if len(grp) else 0, np.int64)
    np.maximum.at(out_e, grp, e)
    return s[new], out_e


class Keeper:
    """Copies the kept connections' records from the ring into rotating files in `dir`."""

    def __init__(
        self,
        directory: str,
        max_bytes: int = 100 * MB,
        before_s: float = 5.0,
        rotate_bytes: int = 10 * MB,
        ring: Ring | None = None,
        err: IO[str] | None = None,
    ) -> None:
        self.dir = directory
        self.max_bytes = max_bytes
        self.rotate_bytes = max(min(rotate_bytes, max_bytes // 4), 4096)
        self.before_ns = int(before_s * NS)
        self.ring = ring or Ring()
        self.err = err
        self.files: deque[str] = deque()  # ours, oldest first (the last one is open)
        self.sizes: dict[str, int] = {}
        self._f: IO[bytes] | None = None
        self._w: PcapWriter | PcapngWriter | None = None
        self._link = -1
        self._png_if: dict[int, int] = {}
        self._seq = 0
        self.written = np.zeros(0, np.int64)  # frames already kept (of the ring's span)
        self.packets = 0
        self.removed = 0  # files removed to stay under max_bytes
        self.missed = 0  # frames of kept connections that had left the ring
        self.failed = False
        self.lockstep: Lockstep | None = None  # a regular file: records read on demand

    # -- what to keep ------------------------------------------------------------------

    def keep(self, frames: npt.NDArray[np.int64], first_ns: npt.NDArray[np.int64]) -> None:
        """The frames of connections with findings, and the first packet time of each such
        connection (every record of the `before` seconds up to it is kept too)."""
        if self.failed or not len(frames):
            return
        sel = np.sort(frames.astype(np.int64))  # np.unique hashes: slower by far here
        if len(sel) > 1:
            sel = sel[np.concatenate(([True], sel[1:] != sel[:-1]))]
        if self.lockstep is not None:
            self.lockstep.advance(int(sel[-1]))
        else:
            self.ring.wait_for(int(sel[-1]))
        if self.before_ns and len(first_ns):
            lo, hi = _merge(first_ns - self.before_ns, first_ns.astype(np.int64))
        else:
            lo = hi = np.zeros(0, np.int64)
        batches = self.ring.snapshot()
        oldest = batches[0].first_frame if batches else self.ring.last_frame + 1
        self.missed += int(np.count_nonzero(sel < oldest))
        self.written = self.written[self.written >= oldest]
        picked: list[npt.NDArray[np.int64]] = []
        for b in batches:
            n = len(b.off)
            a, z = np.searchsorted(sel, [b.first_frame, b.first_frame + n])
            t0, t1 = int(b.ts.min()), int(b.ts.max())
            k0 = int(np.searchsorted(lo, t1, side="right"))  # intervals starting by t1
            near = k0 > 0 and int(hi[:k0].max()) > t0
            if a == z and not near:  # most batches of a long ring: nothing of theirs
                continue
            mask = np.zeros(n, np.bool_)
            mask[sel[a:z] - b.first_frame] = True
            if near:
                k = np.searchsorted(lo, b.ts, side="right") - 1
                mask |= (k >= 0) & (b.ts < hi[np.maximum(k, 0)])
            if len(self.written):
                fr = np.arange(b.first_frame, b.first_frame + n, dtype=np.int64)
                pos = np.minimum(np.searchsorted(self.written, fr), len(self.written) - 1)
                mask &= self.written[pos] != fr
            idx = np.flatnonzero(mask).astype(np.int64)
            if len(idx):
                # pieces that fit a file: a file never holds much more than rotate_bytes
                cut = np.cumsum(b.cap[idx] + 36) // self.rotate_bytes
                bounds = np.flatnonzero(np.diff(cut)) + 1
                try:
                    for piece in np.split(idx, bounds):
                        self._write(b, piece)
                except OSError as exc:
                    self._fail(exc)
                    return
                picked.append(idx + b.first_frame)
        if picked:
            # two sorted runs of distinct frames (what was written is never picked again)
            self.written = np.sort(np.concatenate([self.written, *picked]), kind="stable")
            if self._f is not None:
                try:
                    self._f.flush()
                except OSError as exc:
                    self._fail(exc)

    # -- files -------------------------------------------------------------------------

    def _write(self, b: RecordBatch, idx: npt.NDArray[np.int64]) -> None:
        ifs = b.iface[idx]
        links = np.array([itf.link for itf in b.interfaces], np.int64)[ifs]
        one_link = bool((links == links[0]).all())
        want_png = not one_link or (self._w is not None and isinstance(self._w, PcapngWriter))
        if self._w is not None and not want_png and int(links[0]) != self._link:
            want_png = True  # a pcap holds one link type: go on in pcapng
        size = int((b.cap[idx] + 36).sum())
        cur = self.sizes.get(self.files[-1], 0) if self.files and self._f else 0
        if (
            self._w is None
            or (cur and cur + size > self.rotate_bytes)
            or (want_png and isinstance(self._w, PcapWriter))
        ):
            self._open(b, int(ifs[0]), want_png)
        assert self._w is not None and self._f is not None
        if isinstance(self._w, PcapngWriter):
            for g in np.unique(ifs).tolist():
                if g not in self._png_if:
                    itf = b.interfaces[g]
                    self._png_if[g] = self._w.add_interface(
                        itf.link, itf.snaplen, itf.tsresol, itf.name, itf.description
                    )
            lookup = np.zeros(len(b.interfaces), np.int64)
            for g, o in self._png_if.items():
                lookup[g] = o
            self._w.write_batch(b, idx, lookup[ifs], {})
        else:
            self._w.write_batch(b, idx)
        self.packets += len(idx)
        self.sizes[self.files[-1]] = self._f.tell()
        self._bound()

    def _open(self, b: RecordBatch, iface: int, pcapng: bool) -> None:
        self._close_file()
        self._seq += 1
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(int(b.ts[0]) // NS))
        ext = "pcapng" if pcapng else "pcap"
        path = os.path.join(self.dir, f"tcpwhy-keep-{stamp}-{self._seq:04d}.{ext}")
        self._f = open(path, "wb")  # noqa: SIM115 -- closed by _close_file
        self._png_if = {}
        if pcapng:
            self._w = PcapngWriter(self._f)
            self._link = -1
        else:
            itf = b.interfaces[iface]
            ns = any(i.finer_than_us for i in b.interfaces)
            self._w = PcapWriter(self._f, itf.link, itf.snaplen or 262144, nanosecond=ns)
            self._link = itf.link
        self.files.append(path)
        self.sizes[path] = self._f.tell()

    def _bound(self) -> None:
        """Oldest files out while all of them exceed the bound (the open one stays)."""
        while len(self.files) > 1 and sum(self.sizes.values()) > self.max_bytes:
            old = self.files.popleft()
            self.removed += 1
            self.sizes.pop(old, None)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(old)

    def _close_file(self) -> None:
        if self._f is not None:
            with contextlib.suppress(OSError):
                self._f.close()
        self._f = None
        self._w = None

    def _fail(self, exc: OSError) -> None:
        self.failed = True
        self._close_file()
        if self.err is not None:
            self.err.write(
                f"tcpwhy: {self.dir}: warning: cannot write ({exc.strerror or exc}): "
                "no more packets kept\n"
            )
            self.err.flush()

    def close(self) -> None:
        self._close_file()

    def summary(self) -> str:
        line = f"kept {self.packets} packets in {len(self.files)} files in {self.dir}"
        if self.removed:
            line += f" ({self.removed} older files removed under --keep-max)"
        if self.missed:
            line += f" ({self.missed} packets of kept connections had left the record ring)"
        return line
