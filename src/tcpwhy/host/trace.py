"""`tcpwhy host trace`: the kernel's own account of TCP — state changes, resets, drops,
retransmissions — with the reasons the kernel gives, read live from its tracepoints.

Tracepoints need no compiler and no BPF: the events land in a private ftrace instance
(see tracefs.py) and are decoded here from the raw ring buffer with the field layout and
the reason names that the running kernel publishes in each event's `format` file.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import ipaddress
import json
import socket
import sys
import time
from collections import Counter, OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from tcpwhy.decode.table import endpoint_text
from tcpwhy.errors import EnvironmentProblem, TcpwhyError
from tcpwhy.host import tracefs as tf
from tcpwhy.host.trace_kernel import walk_pages

WHERE = tf.WHERE

# `--events` groups → the event names they produce.
GROUPS: dict[str, tuple[str, ...]] = {
    "state": ("state",),
    "reset": ("reset_sent", "reset_received"),
    "drop": ("drop",),
    "retransmit": ("retransmit", "synack_retransmit"),
}
KINDS = tuple(k for g in GROUPS.values() for k in g)

# tracepoint → the event name it produces
TRACEPOINTS: dict[tuple[str, str], str] = {
    ("sock", "inet_sock_set_state"): "state",
    ("tcp", "tcp_send_reset"): "reset_sent",
    ("tcp", "tcp_receive_reset"): "reset_received",
    ("tcp", "tcp_retransmit_skb"): "retransmit",
    ("tcp", "tcp_retransmit_synack"): "synack_retransmit",
    ("skb", "kfree_skb"): "drop",
}
FIELDS = [
    "common_flags",
    "common_pid",
    "skaddr",
    "skbaddr",
    "rx_sk",
    "oldstate",
    "newstate",
    "state",
    "reason",
    "sport",
    "dport",
    "family",
    "protocol",
    "saddr",
    "daddr",
    "saddr_v6",
    "daddr_v6",
]
# common_flags bits (include/linux/trace_events.h, stable since tracing began)
FLAG_HARDIRQ = 0x08
FLAG_SOFTIRQ = 0x10
SOCK_MEMORY = 1 << 16  # sockets remembered to give drops their 4-tuple
RST_MEMORY = 1024  # recent reset skbs: the drop of the same skb follows the reset
BUFFER_KB = 16384  # per CPU: about two seconds of a 100,000 events/s load


# ---------------------------------------------------------------- what the reasons mean

# Reason names are the kernel's (enum sk_rst_reason, enum skb_drop_reason); the numbers
# behind them are never used here: they are read per kernel from the format files.
RESET_MEANING: dict[str, tuple[str, str]] = {
    "NO_SOCKET": (
        "no socket owns this 4-tuple: nobody listens on the port, or the connection is "
        "already gone on this side (closed and forgotten, host restarted)",
        "connection-refused / half-open-reset",
    ),
    "TCP_TIMEWAIT_SOCKET": (
        "a segment reached a connection this side had already closed (TIME_WAIT, or an "
        "orphaned FIN_WAIT2): the peer wrote on a connection after this side closed it",
        "stale-keepalive-reuse",
    ),
    "TCP_ABORT_ON_CLOSE": (
        "the application closed the socket with unread data in its receive buffer: the "
        "kernel resets instead of sending FIN, and the peer loses data in flight",
        "abortive-close",
    ),
    "TCP_ABORT_ON_LINGER": (
        "the socket was closed with tcp_linger2 < 0 (or SO_LINGER2 negative): reset "
        "instead of waiting in FIN_WAIT2",
        "abortive-close",
    ),
    "TCP_ABORT_ON_DATA": (
        "data arrived after the application had closed (or shut down reading): the kernel "
        "cannot deliver it and resets",
        "data-after-fin",
    ),
    "TCP_ABORT_ON_MEMORY": (
        "the kernel killed the connection under memory pressure or too many orphaned "
        "sockets (tcp_mem, tcp_max_orphans)",
        "abortive-close",
    ),
    "TCP_STATE": (
        "an abort by the application: close() with SO_LINGER {1, 0}, or a listener closed "
        "with connections it never accepted",
        "abortive-close",
    ),
    "TCP_KEEPALIVE_TIMEOUT": (
        "keep-alive probes went unanswered: the peer is gone and the connection is dropped",
        "keepalive-dead-peer",
    ),
    "TCP_DISCONNECT_WITH_DATA": (
        "the application disconnected (connect AF_UNSPEC) with unread data",
        "abortive-close",
    ),
    "TCP_INVALID_ACK_SEQUENCE": (
        "the peer acknowledged data this side never sent: the two ends disagree about the "
        "connection (a half-open connection, or a box rewriting sequence numbers)",
        "half-open-reset",
    ),
    "TCP_TOO_OLD_ACK": (
        "the peer acknowledged data far in the past: the connection is out of sync",
        "half-open-reset",
    ),
    "TCP_OLD_ACK": ("an old acknowledgement for this connection's state", "half-open-reset"),
    "TCP_ACK_UNSENT_DATA": ("an acknowledgement for data never sent", "half-open-reset"),
    "TCP_RFC7323_PAWS": (
        "a segment with an old timestamp was rejected (PAWS): a reused 4-tuple or a NAT "
        "mixing hosts",
        "half-open-reset",
    ),
    "TCP_FLAGS": ("a segment with flags invalid for this state", "middlebox-reset"),
    "INVALID_SYN": (
        "a SYN arrived on an established connection: the peer restarted and reuses the port",
        "half-open-reset",
    ),
    "NOT_SPECIFIED": ("the kernel gave no reason for this reset", "resets"),
}

DROP_MEANING: dict[str, tuple[str, str]] = {
    "NO_SOCKET": (
        "a segment for a port or connection that has no socket (answered by a reset)",
        "connection-refused",
    ),
    "TCP_LISTEN_OVERFLOW": (
        "the listener's accept queue was full: the application does not accept() fast enough",
        "accept-queue-overflow",
    ),
    "SOCKET_BACKLOG": (
        "the socket's backlog was full while the application held the socket lock",
        "zero-window-stall",
    ),
    "TCP_ZEROWINDOW": (
        "data sent into a zero window: the receiver is not reading",
        "zero-window-stall",
    ),
    "TCP_OVERWINDOW": ("data beyond the receive window", "zero-window-stall"),
    "TCP_OLD_DATA": (
        "data already received (a retransmission the receiver did not need)",
        "retransmission-timeout",
    ),
    "TCP_OLD_SEQUENCE": ("a segment before the receive window", "half-open-reset"),
    "TCP_INVALID_SEQUENCE": ("a segment outside the receive window", "half-open-reset"),
    "TCP_INVALID_END_SEQUENCE": ("a segment ending outside the receive window", "half-open-reset"),
    "TCP_INVALID_ACK_SEQUENCE": ("an acknowledgement for data never sent", "half-open-reset"),
    "TCP_RESET": ("a reset was received and ended the connection", "resets"),
    "TCP_INVALID_SYN": ("a SYN that does not fit the connection", "half-open-reset"),
    "TCP_CLOSE": ("a segment for a socket already closed", "data-after-fin"),
    "TCP_FLAGS": ("a segment with invalid flags", "middlebox-reset"),
    "TCP_ABORT_ON_DATA": ("data after the application closed", "data-after-fin"),
    "TCP_CSUM": (
        "bad TCP checksum: corrupted on the path (or a checksum offload bug)",
        "retransmission-timeout",
    ),
    "TCP_RFC7323_PAWS": ("an old timestamp (PAWS): a reused 4-tuple or NAT", "half-open-reset"),
    "TCP_OFO_DROP": ("out-of-order data dropped for lack of memory", "retransmission-timeout"),
    "TCP_OFOMERGE": ("out-of-order data already queued", "retransmission-timeout"),
    "PROTO_MEM": ("TCP memory limit reached (tcp_mem)", "retransmission-timeout"),
    "QUEUE_PURGE": (
        "queued data or unaccepted connections discarded when the socket was closed",
        "abortive-close",
    ),
    "NETFILTER_DROP": ("a firewall rule (nftables/iptables) dropped it", "syn-timeout"),
    "SOCKET_RCVBUFF": ("the socket's receive buffer was full", "zero-window-stall"),
    "SOCKET_FILTER": ("a socket filter (BPF) refused it", "syn-timeout"),
}

OTHER_MEANING: dict[str, tuple[str, str]] = {
    "reset_received": (
        "the peer (or a box on the path) reset this connection; the application sees "
        "ECONNRESET or EPIPE",
        "resets",
    ),
    "reset_received_SYN_SENT": (
        "the peer answered the SYN with a reset: nothing listens there (ECONNREFUSED)",
        "connection-refused",
    ),
    "synack_retransmit": (
        "the listener re-sent its SYN-ACK: the client's final ACK did not arrive (lost, or "
        "dropped because the accept queue was full)",
        "accept-queue-overflow / syn-flood",
    ),
    "retransmit_SYN_SENT": (
        "the client re-sent its SYN: no answer (a full accept queue drops SYNs silently, a "
        "firewall drops them, or the host is down)",
        "accept-queue-overflow / syn-timeout",
    ),
    "retransmit": (
        "data re-sent: not acknowledged in time (loss, or a peer that went silent)",
        "retransmission-timeout",
    ),
}


def explanation(event: str, reason: str | None, state: str | None = None) -> str | None:
    """One line: what the kernel's reason means for the application, and the finding kind."""
    if event == "reset_sent":
        got = RESET_MEANING.get(reason or "")
        if got is None:
            return f"the kernel sent a reset ({reason})" if reason else None
    elif event == "drop":
        got = DROP_MEANING.get(reason or "")
        if got is None:
            return f"the kernel dropped a packet ({reason})" if reason else None
    elif event == "reset_received" and state == "SYN_SENT":
        got = OTHER_MEANING["reset_received_SYN_SENT"]
    elif event == "retransmit" and state == "SYN_SENT":
        got = OTHER_MEANING["retransmit_SYN_SENT"]
    elif event in OTHER_MEANING:
        got = OTHER_MEANING[event]
    else:
        return None
    return f"{got[0]} → {got[1]}"


# ---------------------------------------------------------------- events


@dataclass(slots=True)
class TraceEvent:
    ts: float
    event: str
    src: str | None = None
    sport: int | None = None
    dst: str | None = None
    dport: int | None = None
    old_state: str | None = None
    new_state: str | None = None
    state: str | None = None
    reason: str | None = None
    pid: int = 0
    comm: str | None = None
    context: str = "task"
    explanation: str | None = None
    ts_ns: int | None = None  # the same instant in epoch nanoseconds (from `ts` when unset)

    def as_json(self) -> dict[str, Any]:
        from tcpwhy.schemas import SCHEMA_VERSION

        ns = self.ts_ns if self.ts_ns is not None else round(self.ts * 1e9)
        d: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "ts": _time_text(ns),
            "ts_ns": ns,
            "event": self.event,
            "src": self.src,
            "sport": self.sport,
            "dst": self.dst,
            "dport": self.dport,
        }
        if self.event == "state":
            d["old_state"] = self.old_state
            d["new_state"] = self.new_state
        d.update(
            state=self.state,
            reason=self.reason,
            pid=self.pid,
            comm=self.comm,
            context=self.context,
            explanation=self.explanation,
        )
        return d

    def tuple_text(self) -> str:
        if self.src is None:
            return "?"
        return f"{_hp(self.src, self.sport)} → {_hp(self.dst, self.dport)}"


def _hp(addr: str | None, port: int | None) -> str:
    if addr is None or port is None:
        return "?"
    return endpoint_text(addr, port)


def state_name(kernel: str) -> str:
    """Kernel names (TCP_FIN_WAIT1) as tcpwhy names them elsewhere (FIN_WAIT_1)."""
    name = kernel[4:] if kernel.startswith("TCP_") else kernel
    if name.startswith("FIN_WAIT") and name[-1].isdigit() and name[-2] != "_":
        name = name[:-1] + "_" + name[-1]
    return name


_addr_cache: dict[bytes, str] = {}


def _ip(raw: bytes) -> str:
    s = _addr_cache.get(raw)
    if s is None:
        if len(raw) == 4:
            s = socket.inet_ntop(socket.AF_INET, raw)
        else:
            a = ipaddress.IPv6Address(raw)
            s = str(a.ipv4_mapped) if a.ipv4_mapped is not None else str(a)
        if len(_addr_cache) > 100_000:
            _addr_cache.clear()
        _addr_cache[raw] = s
    return s


def record_dtype(ev: tf.EventFormat, names: list[str]) -> np.dtype[Any]:
    """The named fields of one event's record as a numpy structured dtype, at the offsets its
    `format` file gives on this kernel (none is assumed): a whole batch decodes in one view."""
    chosen = [ev.fields[n] for n in names if n in ev.fields]
    spec: dict[str, list[Any]] = {"names": [], "formats": [], "offsets": []}
    for f in chosen:
        if f.array:
            fmt: Any = (np.uint8, (f.size,))
        elif f.size in (1, 2, 4, 8):
            fmt = np.dtype(f"{'i' if f.signed else 'u'}{f.size}")
        else:
            continue
        spec["names"].append(f.name)
        spec["formats"].append(fmt)
        spec["offsets"].append(f.offset)
    itemsize = max((f.offset + f.size for f in chosen), default=8)
    return np.dtype({**spec, "itemsize": itemsize})  # type: ignore[call-overload]


@dataclass
class Decoder:
    """One tracepoint's records → columns, with the layout and the names of this kernel."""

    kind: str
    dtype: np.dtype[Any]
    fmt: tf.EventFormat

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.dtype.names or ())

    def sym(self, fname: str, value: int) -> str | None:
        table = self.fmt.symbols.get(fname)
        if table is None:
            return None
        return table.get(value, str(value))

    def syms(self, fname: str, values: np.ndarray[Any, Any], states: bool = False) -> Any:
        """Names of a column's values (an object array), one lookup per distinct value."""
        table = self.fmt.symbols.get(fname)
        if table is None:
            return np.full(len(values), None, dtype=object)
        uniq, inv = np.unique(values, return_inverse=True)
        out = []
        for v in uniq.tolist():
            name = table.get(v, str(v))
            out.append(None if states and v == 0 else state_name(name) if states else name)
        return np.array(out, dtype=object)[inv.reshape(-1)]


def _mapped(v4: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """IPv4 addresses (n, 4) as IPv4-mapped IPv6 (n, 16): one key space for both families."""
    out = np.zeros((len(v4), 16), dtype=np.uint8)
    out[:, 10:12] = 0xFF
    out[:, 12:16] = v4
    return out


@dataclass
class Batch:
    """Decoded events in time order, column by column: one Python object per value only when
    asked (`events()`), the lines of `--format jsonl` written straight from the columns."""

    ts: list[float] = field(default_factory=list)
    event: list[str] = field(default_factory=list)
    src: list[str | None] = field(default_factory=list)
    sport: list[int | None] = field(default_factory=list)
    dst: list[str | None] = field(default_factory=list)
    dport: list[int | None] = field(default_factory=list)
    old_state: list[str | None] = field(default_factory=list)
    new_state: list[str | None] = field(default_factory=list)
    state: list[str | None] = field(default_factory=list)
    reason: list[str | None] = field(default_factory=list)
    pid: list[int] = field(default_factory=list)
    comm: list[str | None] = field(default_factory=list)
    context: list[str] = field(default_factory=list)
    explanation: list[str | None] = field(default_factory=list)
    ts_ns: list[int | None] = field(default_factory=list)  # empty: taken from `ts`

    def __len__(self) -> int:
        return len(self.ts)

    def _ts_ns_column(self) -> list[int | None]:
        return self.ts_ns if len(self.ts_ns) == len(self.ts) else [None] * len(self.ts)

    def _ts_ns(self) -> list[int]:
        """Epoch nanoseconds of each event (from `ts` where the column has none)."""
        return [
            round(t * 1e9) if ns is None else ns
            for t, ns in zip(self.ts, self._ts_ns_column(), strict=True)
        ]

    def _columns(self) -> tuple[list[Any], ...]:
        return (
            self.ts,
            self.event,
            self.src,
            self.sport,
            self.dst,
            self.dport,
            self.old_state,
            self.new_state,
            self.state,
            self.reason,
            self.pid,
            self.comm,
            self.context,
            self.explanation,
            self._ts_ns_column(),
        )

    def events(self) -> list[TraceEvent]:
        return [TraceEvent(*row) for row in zip(*self._columns(), strict=True)]

    def counts(self) -> Counter[tuple[str, str | None]]:
        """Events by (event, reason), retransmissions by state: Summary's keys."""
        return Counter(
            zip(
                self.event,
                [
                    s if e == "retransmit" else r
                    for e, r, s in zip(self.event, self.reason, self.state, strict=True)
                ],
                strict=True,
            )
        )

    def jsonl(self) -> str:
        """The `--format jsonl` lines, as TraceEvent.as_json would write them."""
        if not self.ts:
            return ""
        with _no_gc():
            return self._jsonl()

    def _jsonl(self) -> str:
        tok: dict[Any, str] = {None: "null"}

        def j(col: list[Any]) -> list[str]:
            for v in set(col).difference(tok):
                tok[v] = json.dumps(v)
            return list(map(tok.__getitem__, col))

        pairs: dict[tuple[str | None, str | None], str] = {}
        mid = []
        for e, o, n in zip(self.event, self.old_state, self.new_state, strict=True):
            if e != "state":
                mid.append("")
                continue
            m = pairs.get((o, n))
            if m is None:
                m = pairs[(o, n)] = f', "old_state": {json.dumps(o)}, "new_state": {json.dumps(n)}'
            mid.append(m)
        from tcpwhy.schemas import SCHEMA_VERSION

        head = f'{{"schema_version": {json.dumps(SCHEMA_VERSION)}, "ts": '
        ns_col = self._ts_ns()
        rows = zip(
            map(_time_text, ns_col),
            ns_col,
            self.event,
            j(self.src),
            j(self.sport),
            j(self.dst),
            j(self.dport),
            mid,
            j(self.state),
            j(self.reason),
            self.pid,
            j(self.comm),
            self.context,
            j(self.explanation),
            strict=True,
        )
        return "".join(
            [
                f'{head}"{tt}", "ts_ns": {ns}, "event": "{e}", "src": {s}, '
                f'"sport": {sp}, "dst": {d}, '
                f'"dport": {dp}{m}, "state": {st}, "reason": {r}, "pid": {p}, "comm": {c}, '
                f'"context": "{cx}", "explanation": {x}}}\n'
                for tt, ns, e, s, sp, d, dp, m, st, r, p, c, cx, x in rows
            ]
        )


_MISSING = object()


@functools.lru_cache(maxsize=4)
def _second_text(sec: int) -> str:
    from tcpwhy.timestamps import rfc3339

    return rfc3339(sec * 1_000_000_000)[:-11]  # "YYYY-MM-DDTHH:MM:SS"


def _time_text(ns: int) -> str:
    """`tcpwhy.timestamps.rfc3339`, one date formatting per second (events come in order)."""
    sec, frac = divmod(ns, 1_000_000_000)
    return f"{_second_text(sec)}.{frac:09d}Z"


@contextlib.contextmanager
def _no_gc() -> Iterator[None]:
    """No cyclic garbage collection while a batch is built: its hundred thousand tuples and
    strings hold no cycles, and each collection pass over the interpreter's objects (numpy,
    numba) would cost more than the decoding itself."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


# ---------------------------------------------------------------- the session


@dataclass
class Filters:
    ports: frozenset[int] = frozenset()
    hosts: frozenset[str] = frozenset()
    local: frozenset[str] | None = None  # --netns: the namespace's own addresses
    kinds: frozenset[str] = frozenset(KINDS)

    def keep(self, ev: TraceEvent) -> bool:
        return self.keep_row(ev.event, ev.src, ev.sport, ev.dst, ev.dport, ev.reason)

    def keep_row(
        self,
        event: str,
        src: str | None,
        sport: int | None,
        dst: str | None,
        dport: int | None,
        reason: str | None,
    ) -> bool:
        if event not in self.kinds:
            return False
        if src is None:
            # a drop that could not be tied to a socket: TCP's own reasons only, no filters
            return (
                not self.ports
                and not self.hosts
                and self.local is None
                and (reason or "").startswith("TCP_")
            )
        if self.ports and sport not in self.ports and dport not in self.ports:
            return False
        if self.hosts and src not in self.hosts and dst not in self.hosts:
            return False
        return self.local is None or src in self.local


def normalize_host(text: str) -> str:
    try:
        a = ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        raise TcpwhyError("--host", f"not an IP address: {text!r}") from None
    if isinstance(a, ipaddress.IPv6Address) and a.ipv4_mapped is not None:
        return str(a.ipv4_mapped)
    return str(a)


def parse_groups(text: str) -> frozenset[str]:
    kinds: set[str] = set()
    for part in text.split(","):
        part = part.strip()
        if part not in GROUPS:
            raise TcpwhyError("--events", f"unknown event group {part!r} (use {','.join(GROUPS)})")
        kinds.update(GROUPS[part])
    return frozenset(kinds)


class TraceSession:
    """Enable the TCP tracepoints in a private instance and hand back decoded events.

    Use as a context manager; `poll_batch()` returns what arrived since the last call,
    `finish_batch()` stops tracing and returns the rest (`poll()`/`finish()`: the same as
    TraceEvent objects). The instance is removed on exit.
    """

    def __init__(self, filters: Filters | None = None, buffer_kb: int = BUFFER_KB) -> None:
        self.filters = filters or Filters()
        self.root = tf.tracefs_root()
        self.notes: list[str] = []
        formats: dict[tuple[str, str], tf.EventFormat] = {}
        for sysname, name in TRACEPOINTS:
            ev = tf.read_format(self.root, sysname, name)
            if ev is not None:
                formats[(sysname, name)] = ev
        tf.resolve_identifiers(list(formats.values()))
        wanted = set(self.filters.kinds)
        # drops get their 4-tuple from the sockets seen in state changes and resets
        needed = set(wanted) | ({"state", "reset_sent"} if "drop" in wanted else set())
        self.decoders: dict[int, Decoder] = {}
        for key, kind in TRACEPOINTS.items():
            if kind not in needed:
                continue
            ev = formats.get(key)
            if ev is None:
                if kind in wanted:
                    self.notes.append(f"this kernel has no {key[0]}:{key[1]} tracepoint")
                continue
            self.decoders[ev.id] = Decoder(kind, record_dtype(ev, FIELDS), ev)
            if kind in ("reset_sent", "drop") and "reason" not in ev.fields:
                self.notes.append(f"this kernel's {key[1]} has no reason field: reasons are null")
        if not self.decoders:
            raise EnvironmentProblem(WHERE, "this kernel has none of the TCP tracepoints")
        self.emit = wanted
        self.inst = tf.Instance(self.root, [d.fmt for d in self.decoders.values()], buffer_kb)
        # socket address → (src, sport, dst, dport, state), None once closed; two generations
        self._socks: dict[int, tuple[str, int, str, int, str | None] | None] = {}
        self._socks_old: dict[int, tuple[str, int, str, int, str | None] | None] = {}
        self._rst_skbs: OrderedDict[int, tuple[str, int, str, int]] = OrderedDict()
        self._comm: dict[int, str | None] = {}
        self._explained: dict[tuple[str, str | None, str | None], str | None] = {}
        self.decoded = 0
        self.kept = 0
        self._offset = 0.0  # instance clock (s) → epoch (s)

    # -- lifecycle
    def __enter__(self) -> TraceSession:
        # the compiled walk is loaded (or compiled) now, before the events start to come
        nothing = np.zeros(1, np.int64)
        walk_pages(
            np.zeros(1, np.uint8), nothing[:0], 1, 0, 1, 1, nothing, nothing.copy(), nothing.copy()
        )
        self.inst.create(self._kernel_filters())
        self._offset = self.inst.epoch_offset()
        return self

    def __exit__(self, *exc: object) -> None:
        self.inst.remove()

    @property
    def instance(self) -> str:
        return self.inst.name

    def _kernel_filters(self) -> dict[int, str]:
        """Filters the kernel applies before an event reaches the buffer (less to read)."""
        out: dict[int, str] = {}
        for eid, d in self.decoders.items():
            clauses = []
            if d.kind == "state" and "protocol" in d.fmt.fields:
                tcp = [
                    k for k, v in d.fmt.symbols.get("protocol", {}).items() if v == "IPPROTO_TCP"
                ]
                if tcp:
                    clauses.append(f"protocol == {tcp[0]}")
            if self.filters.ports and d.kind != "drop" and "sport" in d.fmt.fields:
                ports = " || ".join(
                    f"sport == {p} || dport == {p}" for p in sorted(self.filters.ports)
                )
                clauses.append(f"({ports})")
            if clauses:
                out[eid] = " && ".join(clauses)
        return out

    def lost(self) -> int:
        return self.inst.lost()

    def poll(self) -> list[TraceEvent]:
        return self.poll_batch().events()

    def finish(self) -> list[TraceEvent]:
        """Stop recording, return what is left in the buffer."""
        return self.finish_batch().events()

    def finish_batch(self) -> Batch:
        self.inst.stop()
        return self.poll_batch()

    def poll_batch(self) -> Batch:
        """Everything in the ring buffers now, decoded, filtered and in time order."""
        with _no_gc():
            return self._poll_batch()

    def _poll_batch(self) -> Batch:
        inst = self.inst
        buf, lens = inst.read_batch()
        if not lens:
            return Batch()
        lens_a = np.array(lens, dtype=np.int64)
        cap = int(lens_a.sum()) // 8 + 1
        ts = np.empty(cap, dtype=np.int64)
        offs = np.empty(cap, dtype=np.int64)
        missed = np.empty(len(lens), dtype=np.int64)
        n = walk_pages(
            buf,
            lens_a,
            inst.page_size,
            inst.commit_off,
            inst.commit_size,
            inst.data_off,
            ts,
            offs,
            missed,
        )
        inst.missed_pages += int(np.count_nonzero(missed))
        inst.missed_counted += int(missed[missed > 0].sum())
        ts, offs = ts[:n], offs[:n]
        ids = buf[offs].astype(np.int64) | (buf[offs + 1].astype(np.int64) << 8)
        parts = []
        for eid, d in self.decoders.items():
            sel = np.flatnonzero(ids == eid)
            if len(sel):
                # every 4-byte aligned offset of the buffer seen as a record start (records
                # are 4-byte aligned): the batch's records are rows of that view
                rows = np.ndarray(
                    (len(buf) - d.dtype.itemsize) // 4 + 1, d.dtype, buf.data, 0, (4,)
                )
                parts.append(self._columns(d, rows[offs[sel] // 4], ts[sel]))
        if not parts:
            return Batch()
        batch = self._assemble(parts)
        self.kept += len(batch)
        return batch

    # -- decoding
    def _columns(self, d: Decoder, r: np.ndarray[Any, Any], ts: np.ndarray[Any, Any]) -> Cols:
        """One tracepoint's records as columns (addresses as 16 bytes, IPv4 mapped)."""
        m = len(r)
        names = d.names
        none = np.full(m, None, dtype=object)
        zero = np.zeros(m, dtype=np.uint64)
        c = Cols(
            ts=ts,
            kind=np.full(m, KINDS.index(d.kind), dtype=np.int8),
            pid=r["common_pid"].astype(np.int64) if "common_pid" in names else zero.view(np.int64),
            flags=r["common_flags"].astype(np.int64) if "common_flags" in names else zero,
            src=np.zeros((m, 16), np.uint8),
            dst=np.zeros((m, 16), np.uint8),
            has_addr=np.zeros(m, dtype=bool),
            sport=np.full(m, -1, dtype=np.int64),
            dport=np.full(m, -1, dtype=np.int64),
            old=none,
            new=none,
            state=none,
            reason=d.syms("reason", r["reason"]) if "reason" in names else none,
            sk=r["skaddr"].astype(np.uint64) if "skaddr" in names else zero,
            skb=r["skbaddr"].astype(np.uint64) if "skbaddr" in names else zero,
            rx_sk=r["rx_sk"].astype(np.uint64) if "rx_sk" in names else zero,
            has_state=np.full(m, "state" in names or d.kind == "state", dtype=bool),
        )
        if d.kind == "drop":
            return c
        if "saddr" in names and r.dtype["saddr"].shape[0] > 16:  # sockaddr layout (5.x+)
            for end, col, pcol in (("saddr", c.src, c.sport), ("daddr", c.dst, c.dport)):
                sa = r[end]
                fam = sa[:, 0].astype(np.int64) | (sa[:, 1].astype(np.int64) << 8)
                v4, v6 = fam == socket.AF_INET, fam == socket.AF_INET6
                col[v4] = _mapped(sa[v4, 4:8])
                if sa.shape[1] >= 24:
                    col[v6] = sa[v6, 8:24]
                else:
                    v6[:] = False
                pcol[:] = (sa[:, 2].astype(np.int64) << 8) | sa[:, 3]
                if end == "saddr":
                    c.has_addr = v4 | v6
            c.sport[~c.has_addr] = -1
            c.dport[~c.has_addr] = -1
        elif "sport" in names:
            fams = d.syms("family", r["family"]) if "family" in names else none
            v6 = fams == "AF_INET6"
            if "saddr_v6" in names:
                c.src[v6], c.dst[v6] = r["saddr_v6"][v6], r["daddr_v6"][v6]
            else:
                v6[:] = False
            if "saddr" in names:
                c.src[~v6], c.dst[~v6] = _mapped(r["saddr"][~v6]), _mapped(r["daddr"][~v6])
                c.has_addr[:] = True
            else:
                c.has_addr = v6
            c.sport[:] = r["sport"]
            c.dport[:] = r["dport"]
        if d.kind == "state":
            c.old = d.syms("oldstate", r["oldstate"], states=True)
            c.new = c.state = d.syms("newstate", r["newstate"], states=True)
        elif "state" in names:
            c.state = d.syms("state", r["state"], states=True)
        return c

    def _mem(self, sk: int) -> tuple[str, int, str, int, str | None] | None:
        got = self._socks.get(sk, _MISSING)
        if got is _MISSING:
            return self._socks_old.get(sk)
        return got  # type: ignore[return-value]

    def _assemble(self, parts: list[Cols]) -> Batch:
        """Merge the tracepoints' columns in time order, give drops and stateless events the
        socket they belong to, filter, and name everything."""
        cat = Cols(**{k: np.concatenate([getattr(p, k) for p in parts]) for k in Cols.KEYS})
        order = np.argsort(cat.ts, kind="stable")
        c = Cols(**{k: getattr(cat, k)[order] for k in Cols.KEYS})
        n = len(c.ts)
        self.decoded += n
        # addresses → text, one conversion per distinct address
        both = np.concatenate([c.src, c.dst])
        halves = both.view(np.uint64)
        if not halves[:, 0].any():  # IPv4 (mapped) only: the high half is the whole key
            uniq, inv = np.unique(halves[:, 1], return_inverse=True)
            raw = [b"\0" * 8 + int(u).to_bytes(8, sys.byteorder) for u in uniq.tolist()]
        else:
            uniq, inv = np.unique(both.view("V16").reshape(-1), return_inverse=True)
            raw = [bytes(u) for u in uniq.tolist()]
        texts = np.array([_ip(r) for r in raw] + [None], dtype=object)
        inv = inv.reshape(-1)
        src_i, dst_i = inv[:n], inv[n:]
        src = texts[src_i]
        dst = texts[dst_i]
        src[~c.has_addr] = None
        dst[~c.has_addr] = None
        kind = np.array(KINDS, dtype=object)[c.kind]
        # the sockets' memory, in time order: plain events update it in slices (C speed), the
        # few that read it (drops, resets, events without a state field) one by one
        k_state, k_drop, k_synack = (KINDS.index(k) for k in ("state", "drop", "synack_retransmit"))
        k_rst = KINDS.index("reset_sent")
        upd = (c.sk != 0) & c.has_addr & (c.kind != k_synack)
        keys = np.where(upd, c.sk, 0).tolist()
        special = np.flatnonzero((c.kind == k_drop) | (c.kind == k_rst) | ~c.has_state).tolist()
        sport_l, dport_l = c.sport.tolist(), c.dport.tolist()
        src_l, dst_l, state_l = src.tolist(), dst.tolist(), c.state.tolist()
        tups: list[Any] = list(zip(src_l, sport_l, dst_l, dport_l, state_l, strict=True))
        for i in np.flatnonzero((c.kind == k_state) & (c.new == "CLOSE")).tolist():
            tups[i] = None
        socks = self._socks
        a = 0
        for p in special:
            if p > a:
                socks.update(zip(keys[a:p], tups[a:p], strict=True))
            a = p
            if c.kind[p] == k_drop:
                skb, rx = int(c.skb[p]), int(c.rx_sk[p])
                tup: tuple[Any, ...] | None = None
                if skb and skb in self._rst_skbs:
                    tup = (*self._rst_skbs[skb], None)  # reversed: src is this host's end
                elif rx:
                    tup = self._mem(rx)
                if tup is not None:
                    src[p], sport_l[p], dst[p], dport_l[p], c.state[p] = tup
                    c.has_addr[p] = True
                continue
            if not c.has_state[p]:
                sk = int(c.sk[p])
                got = self._mem(sk) if sk else None
                if got is not None:
                    c.state[p] = got[4]
            if c.kind[p] == k_rst and c.skb[p] and c.has_addr[p]:
                self._rst_skbs[int(c.skb[p])] = (src[p], sport_l[p], dst[p], dport_l[p])
                if len(self._rst_skbs) > RST_MEMORY:
                    self._rst_skbs.popitem(last=False)
            if keys[p]:
                tups[p] = (src[p], sport_l[p], dst[p], dport_l[p], c.state[p])
        socks.update(zip(keys[a:], tups[a:], strict=True))
        if len(socks) > SOCK_MEMORY:
            self._socks_old, self._socks = socks, {}
        # filters: the plain events in numpy, the rest (drops, addressless) one by one
        f = self.filters
        keep = np.isin(c.kind, [KINDS.index(k) for k in self.emit & f.kinds])
        plain = c.has_addr & (c.kind != k_drop)
        mask = keep & plain
        if f.ports:
            ports = np.array(sorted(f.ports))
            mask &= np.isin(c.sport, ports) | np.isin(c.dport, ports)
        if f.hosts:
            hit = np.array([t in f.hosts for t in texts.tolist()], dtype=bool)
            mask &= hit[src_i] | hit[dst_i]
        if f.local is not None:
            mask &= np.array([t in f.local for t in texts.tolist()], dtype=bool)[src_i]
        for p in np.flatnonzero(keep & ~plain).tolist():
            mask[p] = f.keep_row(kind[p], src[p], sport_l[p], dst[p], dport_l[p], c.reason[p])
        idx = np.flatnonzero(mask)
        if not len(idx):
            return Batch()
        sel = idx.tolist()
        pids = c.pid[idx]
        upids, pinv = np.unique(pids, return_inverse=True)
        comms = np.array([self._comm_of(p) for p in upids.tolist()] + [None], dtype=object)
        flags = c.flags[idx]
        ctx = np.where(
            flags & FLAG_HARDIRQ, "hardirq", np.where(flags & FLAG_SOFTIRQ, "softirq", "task")
        ).astype(object)
        b = Batch(
            ts=(c.ts[idx] / 1e9 + self._offset).tolist(),
            ts_ns=(c.ts[idx] + round(self._offset * 1e9)).tolist(),
            event=kind[idx].tolist(),
            src=src[idx].tolist(),
            sport=[sport_l[i] for i in sel],
            dst=dst[idx].tolist(),
            dport=[dport_l[i] for i in sel],
            old_state=c.old[idx].tolist(),
            new_state=c.new[idx].tolist(),
            state=c.state[idx].tolist(),
            reason=c.reason[idx].tolist(),
            pid=pids.tolist(),
            comm=comms[pinv.reshape(-1)].tolist(),
            context=ctx.tolist(),
        )
        for i in np.flatnonzero(~c.has_addr[idx]).tolist():
            b.sport[i] = b.dport[i] = None
        expl = self._explained
        out_x: list[str | None] = []
        for e, r, s in zip(b.event, b.reason, b.state, strict=True):
            if e == "state":
                out_x.append(None)
                continue
            key = (e, r, s)
            if key not in expl:
                expl[key] = explanation(e, r, s)
            out_x.append(expl[key])
        b.explanation = out_x
        return b

    def _comm_of(self, pid: int) -> str | None:
        if pid in self._comm:
            return self._comm[pid]
        if pid == 0:
            name: str | None = "swapper"
        else:
            try:
                name = Path(f"/proc/{pid}/comm").read_text().strip()
            except OSError:
                name = None
        if len(self._comm) > 50_000:
            self._comm.clear()
        self._comm[pid] = name
        return name


@dataclass
class Cols:
    """A batch of events as numpy columns, before names and filters."""

    KEYS: ClassVar[tuple[str, ...]] = (
        "ts",
        "kind",
        "pid",
        "flags",
        "src",
        "dst",
        "has_addr",
        "sport",
        "dport",
        "old",
        "new",
        "state",
        "reason",
        "sk",
        "skb",
        "rx_sk",
        "has_state",
    )
    ts: np.ndarray[Any, Any]
    kind: np.ndarray[Any, Any]
    pid: np.ndarray[Any, Any]
    flags: np.ndarray[Any, Any]
    src: np.ndarray[Any, Any]
    dst: np.ndarray[Any, Any]
    has_addr: np.ndarray[Any, Any]
    sport: np.ndarray[Any, Any]
    dport: np.ndarray[Any, Any]
    old: np.ndarray[Any, Any]
    new: np.ndarray[Any, Any]
    state: np.ndarray[Any, Any]
    reason: np.ndarray[Any, Any]
    sk: np.ndarray[Any, Any]
    skb: np.ndarray[Any, Any]
    rx_sk: np.ndarray[Any, Any]
    has_state: np.ndarray[Any, Any]


# ---------------------------------------------------------------- namespace addresses


def _local_addresses() -> list[str]:
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        return [str(a.get_attr("IFA_ADDRESS")) for a in ipr.get_addr()]


def netns_addresses(name: str) -> frozenset[str]:
    """The namespace's own addresses, loopback excepted (every namespace has 127.0.0.1)."""
    from tcpwhy.host.netns import run_in_netns

    addrs = run_in_netns(name, _local_addresses)
    out = set()
    for a in addrs:
        ip = ipaddress.ip_address(a.split("%")[0])
        if not ip.is_loopback:
            out.add(str(ip))
    if not out:
        raise TcpwhyError(
            "--netns",
            f"{name!r} has no address but loopback: its sockets cannot be told apart from "
            "other namespaces' in the kernel's events",
        )
    return frozenset(out)


# ---------------------------------------------------------------- summary


@dataclass
class Summary:
    started: float = field(default_factory=time.monotonic)
    counts: Counter[tuple[str, str | None]] = field(default_factory=Counter)
    resets_by_socket: Counter[str] = field(default_factory=Counter)
    meanings: dict[tuple[str, str | None], str] = field(default_factory=dict)
    total: int = 0

    def add(self, ev: TraceEvent) -> None:
        self.total += 1
        key = (ev.event, ev.reason if ev.event != "retransmit" else ev.state)
        self.counts[key] += 1
        if ev.event in ("reset_sent", "reset_received"):
            self.resets_by_socket[f"{ev.event} {ev.tuple_text()}"] += 1
        if ev.explanation and key not in self.meanings and ev.event != "state":
            self.meanings[key] = ev.explanation

    def add_batch(self, batch: Batch) -> None:
        """Like add() for every event of the batch, counted column-wise."""
        self.total += len(batch)
        counts = batch.counts()
        self.counts.update(counts)
        if any(k[0] in ("reset_sent", "reset_received") for k in counts):
            for i, e in enumerate(batch.event):
                if e in ("reset_sent", "reset_received"):
                    t = TraceEvent(
                        0.0, e, batch.src[i], batch.sport[i], batch.dst[i], batch.dport[i]
                    )
                    self.resets_by_socket[f"{e} {t.tuple_text()}"] += 1
        for key in counts:
            if key not in self.meanings and key[0] != "state":
                i = next(
                    i
                    for i, e in enumerate(batch.event)
                    if e == key[0]
                    and (batch.state[i] if e == "retransmit" else batch.reason[i]) == key[1]
                )
                if batch.explanation[i]:
                    self.meanings[key] = batch.explanation[i]  # type: ignore[assignment]

    def as_json(self, lost: int) -> dict[str, Any]:
        return {
            "events": self.total,
            "lost": lost,
            "seconds": round(time.monotonic() - self.started, 3),
            "counts": [
                {"event": e, "reason": r, "count": n} for (e, r), n in self.counts.most_common()
            ],
            "top_reset_sockets": [
                {"socket": s, "resets": n} for s, n in self.resets_by_socket.most_common(10)
            ],
        }


def read_jsonl(path: str) -> list[dict[str, Any]]:
    """Events written by `host trace --format jsonl` (or by the lab); bad input is one line."""
    out: list[dict[str, Any]] = []
    try:
        with open(path, encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                line = line.strip()
                if not line:
                    continue
                try:
                    obj = json.loads(line)
                except (json.JSONDecodeError, RecursionError, ValueError):
                    # ValueError: an integer of thousands of digits; RecursionError: nesting
                    raise TcpwhyError(path, f"line {n}: not JSON") from None
                if not isinstance(obj, dict) or "event" not in obj or "ts" not in obj:
                    raise TcpwhyError(path, f"line {n}: not a tcpwhy kernel trace event")
                out.append(obj)
    except OSError as exc:
        raise TcpwhyError(path, exc.strerror or str(exc)) from None
    except UnicodeDecodeError:
        raise TcpwhyError(path, "not a tcpwhy kernel trace (not UTF-8 text)") from None
    return out


def write_jsonl(path: str, events: Iterable[TraceEvent]) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        for ev in events:
            fh.write(json.dumps(ev.as_json()) + "\n")
