"""A private ftrace instance and its raw per-CPU ring buffer, for `tcpwhy host trace`.

Everything here reads or writes only inside `instances/tcpwhy-<pid>`: the events are
enabled there, never in the global buffer, so whatever else traces this host is not
disturbed. The instance is removed on exit; one left by a killed run is removed by the
next run (its process is gone, or its PID now belongs to a process started later).

Written by hand, not through libtracefs/libtraceevent: no maintained Python binding of
those is packaged. What is parsed is the kernel's documented tracing ABI — each event's
`format` file (field offsets, `__print_symbolic` name tables), `events/header_page` and
the ring buffer's sub-buffer layout (Documentation/trace/ring-buffer-design.rst).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import os
import re
import signal
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tcpwhy.errors import EnvironmentProblem

WHERE = "host trace"
MOUNT_POINT = Path("/sys/kernel/tracing")
TRACEFS_DIRS = (MOUNT_POINT, Path("/sys/kernel/debug/tracing"))
PREFIX = "tcpwhy-"
_NAME_RE = re.compile(r"^tcpwhy-(\d+)(?:-\d+)?$")

# Ring-buffer event header (events/header_event): type_len 5 bits, time_delta 27 bits.
TYPE_PADDING = 29
TYPE_TIME_EXTEND = 30
TYPE_TIME_STAMP = 31
TS_SHIFT = 27
TS_MSB = 0xF8 << 56  # absolute time stamps carry no top 5 bits: taken from the running clock
MISSED_EVENTS = 1 << 31  # sub-buffer commit flags: events were lost before this page
MISSED_STORED = 1 << 30  # … and their number is stored after the data
COMMIT_MASK = (1 << 27) - 1

_U32 = struct.Struct("=I")
_U64 = struct.Struct("=Q")


# ---------------------------------------------------------------- tracefs itself


def _mount_tracefs() -> None:
    """Mount tracefs where the kernel documents it, as trace-cmd does when it is missing."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if libc.mount(b"nodev", str(MOUNT_POINT).encode(), b"tracefs", 0, None) != 0:
        err = ctypes.get_errno()
        raise EnvironmentProblem(
            WHERE, f"tracefs is not mounted and mounting it failed: {os.strerror(err)}"
        )


def tracefs_root() -> Path:
    """The tracefs directory, mounted if needed; one clear error without root or tracefs."""
    if os.geteuid() != 0:
        raise EnvironmentProblem(
            WHERE, "needs root: the kernel's tracepoints are read through tracefs (run with sudo)"
        )
    for d in TRACEFS_DIRS:
        if (d / "instances").is_dir():
            return d
    if not MOUNT_POINT.is_dir():
        raise EnvironmentProblem(WHERE, f"{MOUNT_POINT} missing: this kernel has no tracefs")
    _mount_tracefs()
    if not (MOUNT_POINT / "instances").is_dir():
        raise EnvironmentProblem(WHERE, "tracefs has no instances/ directory (kernel too old)")
    return MOUNT_POINT


def _process_start(pid: int) -> float | None:
    """Epoch seconds at which `pid` started, or None when no such process exists."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    ticks = int(stat.rsplit(")", 1)[1].split()[19])
    boot = time.time() - time.clock_gettime(time.CLOCK_BOOTTIME)
    return boot + ticks / os.sysconf("SC_CLK_TCK")


def is_stale(inst: Path) -> bool:
    """An instance of ours whose process is gone (or whose PID was reused since)."""
    m = _NAME_RE.match(inst.name)
    if not m:
        return False
    started = _process_start(int(m.group(1)))
    if started is None:
        return True
    try:
        created = inst.stat().st_ctime
    except OSError:
        return False
    return started > created + 1.0  # the PID now belongs to a process younger than the instance


def remove_stale(root: Path) -> list[str]:
    """Remove instances left by killed runs; busy ones (still open somewhere) are kept."""
    removed = []
    for inst in sorted((root / "instances").glob(PREFIX + "*")):
        if is_stale(inst):
            try:
                inst.rmdir()
                removed.append(inst.name)
            except OSError:
                pass
    return removed


def our_instances(root: Path | None = None) -> list[str]:
    base = (root or MOUNT_POINT) / "instances"
    if not base.is_dir():
        return []
    return sorted(p.name for p in base.iterdir() if _NAME_RE.match(p.name))


# ---------------------------------------------------------------- event formats


@dataclass(frozen=True)
class Field:
    name: str
    offset: int
    size: int
    signed: bool
    array: bool


@dataclass
class EventFormat:
    """One event's `format` file: its id, fields, and the names its `__print_symbolic` tables
    give to field values (keyed by field name)."""

    system: str
    name: str
    id: int
    fields: dict[str, Field]
    symbols: dict[str, dict[int, str]] = field(default_factory=dict)
    unresolved: dict[str, list[tuple[str, str]]] = field(default_factory=dict)


_FIELD_RE = re.compile(
    r"field:(?P<decl>[^;]+);\s*offset:(?P<off>\d+);\s*size:(?P<size>\d+);\s*signed:(?P<signed>\d+);"
)
_SYM_START = re.compile(r"__print_symbolic\(\s*REC->(\w+)\s*,")
_SYM_ENTRY = re.compile(r'\{\s*([^,{}]+?)\s*,\s*"([^"]*)"\s*\}')


def _symbolic_tables(fmt: str) -> Iterator[tuple[str, str]]:
    """Yield (field, body) for every `__print_symbolic(REC->field, {…}, …)` in a print fmt."""
    for m in _SYM_START.finditer(fmt):
        depth, i = 1, m.end()
        while i < len(fmt) and depth:
            depth += {"(": 1, ")": -1}.get(fmt[i], 0)
            i += 1
        yield m.group(1), fmt[m.end() : i - 1]


def parse_format(system: str, name: str, text: str) -> EventFormat:
    m = re.search(r"^ID:\s*(\d+)", text, re.M)
    if not m:
        raise ValueError(f"{system}/{name}: no ID in format")
    fields: dict[str, Field] = {}
    for fm in _FIELD_RE.finditer(text):
        decl = fm.group("decl").strip()
        array = decl.endswith("]")
        base = decl.split("[", 1)[0].strip() if array else decl
        fname = re.split(r"[\s*]+", base)[-1]
        fields[fname] = Field(
            fname, int(fm.group("off")), int(fm.group("size")), fm.group("signed") == "1", array
        )
    ev = EventFormat(system, name, int(m.group(1)), fields)
    pm = re.search(r"^print fmt:(.*)$", text, re.M | re.S)
    for fname, body in _symbolic_tables(pm.group(1) if pm else ""):
        table = ev.symbols.setdefault(fname, {})
        for key, label in _SYM_ENTRY.findall(body):
            try:
                table[int(key, 0)] = label
            except ValueError:  # an enum identifier the kernel did not resolve in this file
                ev.unresolved.setdefault(fname, []).append((key, label))
    return ev


def resolve_identifiers(formats: list[EventFormat]) -> None:
    """Some tables name enum constants instead of numbers (`{ TCP_ESTABLISHED, "…" }`): take
    their values from another event's table that spells the same name with a number."""
    known: dict[str, int] = {}
    for ev in formats:
        for table in ev.symbols.values():
            for value, label in table.items():
                known.setdefault(label, value)
    for ev in formats:
        for fname, pairs in ev.unresolved.items():
            table = ev.symbols.setdefault(fname, {})
            for ident, label in pairs:
                if ident in known:
                    table[known[ident]] = label


def read_format(root: Path, system: str, name: str) -> EventFormat | None:
    try:
        text = (root / "events" / system / name / "format").read_text()
    except OSError:
        return None
    return parse_format(system, name, text)


def header_layout(root: Path) -> tuple[int, int, int]:
    """(commit offset, commit size, data offset) of a sub-buffer, from events/header_page."""
    hp = parse_format("header", "page", "ID: 0\n" + (root / "events" / "header_page").read_text())
    commit, data = hp.fields["commit"], hp.fields["data"]
    return commit.offset, commit.size, data.offset


def struct_for(ev: EventFormat, names: list[str]) -> tuple[struct.Struct, list[str]]:
    """One Struct that unpacks the named fields (those the event has) in a single call."""
    chosen = sorted((ev.fields[n] for n in names if n in ev.fields), key=lambda f: f.offset)
    parts, pos = ["="], 0
    for f in chosen:
        if f.offset < pos:
            continue
        parts.append(f"{f.offset - pos}x" if f.offset > pos else "")
        if f.array:
            parts.append(f"{f.size}s")
        else:
            code = {1: "b", 2: "h", 4: "i", 8: "q"}[f.size]
            parts.append(code if f.signed else code.upper())
        pos = f.offset + f.size
    return struct.Struct("".join(parts)), [f.name for f in chosen]


# ---------------------------------------------------------------- the instance


_in_process = iter(range(1, 1 << 30))
_lock = threading.Lock()


def _now(read: Callable[..., Any], *args: Any) -> Any:
    """`read(*args)` of a non-blocking trace pipe, or None when it has nothing now."""
    try:
        return read(*args)
    except BlockingIOError:
        return None
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EINTR):
            return None
        raise


class Instance:
    """`instances/tcpwhy-<pid>` with the given events enabled, read per CPU, raw."""

    def __init__(self, root: Path, events: list[EventFormat], buffer_kb: int = 16384) -> None:
        self.root = root
        self.events = events
        self.buffer_kb = buffer_kb
        self.path: Path | None = None
        self.fds: list[tuple[int, int]] = []
        self.page_size = 4096
        self.commit_off, self.commit_size, self.data_off = header_layout(root)
        self.missed_pages = 0
        self.missed_counted = 0
        self.clock = "local"
        self._buf: np.ndarray[Any, Any] | None = None
        self._views: list[memoryview] = []
        self.more = False

    def _write(self, rel: str, value: str) -> None:
        assert self.path is not None
        (self.path / rel).write_text(value)

    def create(self, filters: dict[int, str] | None = None) -> None:
        remove_stale(self.root)
        base = self.root / "instances"
        with _lock:
            name = f"{PREFIX}{os.getpid()}"
            while True:
                try:
                    (base / name).mkdir()
                    break
                except FileExistsError:
                    name = f"{PREFIX}{os.getpid()}-{next(_in_process)}"
                except PermissionError:
                    raise EnvironmentProblem(WHERE, f"cannot create {base / name}") from None
        self.path = base / name
        try:
            self._setup(filters or {})
        except BaseException:
            self.remove()
            raise

    def _setup(self, filters: dict[int, str]) -> None:
        assert self.path is not None
        avail = (self.path / "trace_clock").read_text().replace("[", "").replace("]", "").split()
        # A clock shared by all CPUs, convertible to wall time: per-CPU streams merge in order.
        self.clock = next((c for c in ("boot", "mono") if c in avail), "local")
        self._write("trace_clock", self.clock)
        # the default size still works if refused: lost events are counted either way
        with contextlib.suppress(OSError):
            self._write("buffer_size_kb", str(self.buffer_kb))
        sub = self.path / "buffer_subbuf_size_kb"
        if sub.exists():
            self.page_size = int(sub.read_text().strip()) * 1024
        for ev in self.events:
            flt = filters.get(ev.id)
            if flt:
                self._write(f"events/{ev.system}/{ev.name}/filter", flt)
            self._write(f"events/{ev.system}/{ev.name}/enable", "1")
        for cpu_dir in sorted((self.path / "per_cpu").glob("cpu*"), key=lambda p: int(p.name[3:])):
            fd = os.open(cpu_dir / "trace_pipe_raw", os.O_RDONLY | os.O_NONBLOCK)
            self.fds.append((int(cpu_dir.name[3:]), fd))

    @property
    def name(self) -> str:
        return self.path.name if self.path else ""

    def boot_to_epoch(self) -> Callable[[int], float]:
        """Ring-buffer time stamps (ns of the instance's clock) → epoch seconds."""
        clk = {"boot": time.CLOCK_BOOTTIME, "mono": time.CLOCK_MONOTONIC}.get(self.clock)
        offset = time.time() - (time.clock_gettime(clk) if clk is not None else time.monotonic())
        return lambda ns: ns / 1e9 + offset

    def epoch_offset(self) -> float:
        """Seconds to add to the instance's clock (ring-buffer time stamps) for epoch time."""
        clk = {"boot": time.CLOCK_BOOTTIME, "mono": time.CLOCK_MONOTONIC}.get(self.clock)
        return time.time() - (time.clock_gettime(clk) if clk is not None else time.monotonic())

    def read_batch(self, max_pages: int = 1024) -> tuple[np.ndarray[Any, Any], list[int]]:
        """Sub-buffers available now, CPU by CPU, read straight into one array: page i at
        `i * page_size`, `lens[i]` bytes of it read (a partly filled page comes too)."""
        total = max_pages * max(1, len(self.fds))
        if self._buf is None or len(self._buf) < total * self.page_size:
            self._buf = np.zeros(total * self.page_size, dtype=np.uint8)
            self._views = [
                memoryview(self._buf.data)[i * self.page_size : (i + 1) * self.page_size]
                for i in range(total)
            ]
        views = self._views
        lens: list[int] = []
        self.more = False
        readv = os.readv
        for _cpu, fd in self.fds:
            for _ in range(max_pages):
                got = _now(readv, fd, [views[len(lens)]])
                if not got:
                    break
                lens.append(got)
            else:
                self.more = True  # this CPU has more: read again without waiting
        return self._buf, lens

    def read_pages(self, max_pages: int = 256) -> Iterator[bytes]:
        """Sub-buffers available now, CPU by CPU (non-blocking; a partly filled one comes too)."""
        for _cpu, fd in self.fds:
            for _ in range(max_pages):
                page = _now(os.read, fd, self.page_size)
                if not page:
                    break
                yield page

    def stop(self) -> None:
        if self.path is not None:
            with contextlib.suppress(OSError):
                self._write("tracing_on", "0")

    def lost(self) -> int:
        """Events the ring buffer lost (overwritten or dropped), from the per-CPU stats."""
        total = 0
        if self.path is None:
            return max(self.missed_counted, self.missed_pages)
        for st in (self.path / "per_cpu").glob("cpu*/stats"):
            try:
                text = st.read_text()
            except OSError:
                continue
            for key in ("overrun", "commit overrun", "dropped events"):
                m = re.search(rf"^{key}:\s*(\d+)", text, re.M)
                if m:
                    total += int(m.group(1))
        return max(total, self.missed_counted, self.missed_pages)

    def remove(self) -> None:
        """Close the readers and remove the instance; signals wait until it is done."""
        blocked = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
        old = (
            signal.pthread_sigmask(signal.SIG_BLOCK, blocked)
            if threading.current_thread() is threading.main_thread()
            else None
        )
        try:
            for _cpu, fd in self.fds:
                os.close(fd)
            self.fds = []
            if self.path is not None:
                for _ in range(50):
                    try:
                        self.path.rmdir()
                        break
                    except FileNotFoundError:
                        break
                    except OSError as exc:
                        if exc.errno != errno.EBUSY:
                            raise
                        time.sleep(0.02)
                self.path = None
        finally:
            if old is not None:
                signal.pthread_sigmask(signal.SIG_SETMASK, old)


def walk_page(
    page: bytes, commit_off: int, commit_size: int, data_off: int
) -> tuple[int, int, list[tuple[int, int, int]]]:
    """Events in one sub-buffer: (missed flag/count, page time stamp, [(ts, offset, length)]).

    missed is -1 when events were lost but their number was not stored, else the number.
    """
    if len(page) < data_off:
        return 0, 0, []
    ts = _U64.unpack_from(page, 0)[0]
    commit = int.from_bytes(page[commit_off : commit_off + commit_size], "little", signed=False)
    size = commit & COMMIT_MASK
    missed = 0
    if commit & MISSED_EVENTS:
        missed = -1
        if commit & MISSED_STORED and len(page) >= data_off + size + commit_size:
            start = data_off + size
            missed = int.from_bytes(page[start : start + commit_size], "little")
    out: list[tuple[int, int, int]] = []
    pos, end = data_off, min(data_off + size, len(page))
    unpack = _U32.unpack_from
    while pos + 4 <= end:
        head = unpack(page, pos)[0]
        tl, delta = head & 31, head >> 5
        if tl == TYPE_PADDING:
            if delta == 0:
                break  # the rest of the sub-buffer is padding
            ts += delta
            pos = pos + 4 + unpack(page, pos + 4)[0] if pos + 8 <= end else end
            continue
        if tl == TYPE_TIME_EXTEND:
            ts += (unpack(page, pos + 4)[0] << TS_SHIFT) + delta
            pos += 8
            continue
        if tl == TYPE_TIME_STAMP:
            ts = ((unpack(page, pos + 4)[0] << TS_SHIFT) + delta) | (ts & TS_MSB)
            pos += 8
            continue
        ts += delta
        if tl == 0:
            length = (unpack(page, pos + 4)[0] - 4 + 3) & ~3
            out.append((ts, pos + 8, length))
            pos += 8 + length
        else:
            out.append((ts, pos + 4, tl * 4))
            pos += 4 + tl * 4
    return missed, _U64.unpack_from(page, 0)[0], out
