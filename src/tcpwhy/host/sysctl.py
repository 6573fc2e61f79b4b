"""TCP settings that decide connection lifecycles: value, kernel default, meaning, risk.

Strictly read-only. Most of these are per network namespace (read inside
it); a few (tcp_max_orphans) exist only in the initial namespace.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROC_SYS = Path("/proc/sys")


def model_timeout(retries: int, rto_base: float, rto_max: float = 120.0) -> float:
    """Seconds until `retries` exponential-backoff retransmissions give up (tcp_model_timeout)."""
    thresh = int(math.log2(rto_max / rto_base))
    if retries <= thresh:
        return ((2 << retries) - 1) * rto_base
    return ((2 << thresh) - 1) * rto_base + (retries - thresh) * rto_max


def human(seconds: float) -> str:
    if seconds < 300:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


Values = dict[str, str | None]
NoteFn = Callable[[int, Values], list[str]]

LEVELS = ("note", "info", "warning")
"""A note's level: "note" explains the value and is never an alert; "info" and "warning" are
risks, what `host sysctl --fail-on` counts."""


class Risk(str):
    """A note that is a risk, with its level (a plain `str` note only explains the value)."""

    level: str

    def __new__(cls, text: str, level: str = "warning") -> Risk:
        obj = super().__new__(cls, text)
        obj.level = level
        return obj


def note_level(note: str) -> str:
    return note.level if isinstance(note, Risk) else "note"


def _int(values: Values, key: str) -> int | None:
    v = values.get(key)
    if v is None:
        return None
    try:
        return int(v.split()[0])
    except (ValueError, IndexError):
        return None


def _somaxconn(v: int, values: Values) -> list[str]:
    notes: list[str] = []
    if v < 1024:
        notes.append(
            Risk(
                f"server: every listen() backlog is capped at {v}; a burst of connections overflows "
                "the accept queue (ListenOverflows) — 4096 is the default since Linux 5.4"
            )
        )
    return notes


def _syn_backlog(v: int, values: Values) -> list[str]:
    cookies = _int(values, "net.ipv4.tcp_syncookies")
    if cookies == 0 and v < 1024:
        return [
            Risk(
                f"server: SYN queue of {v} with syncookies off: a SYN burst drops handshakes (TCPReqQFullDrop)"
            )
        ]
    return []


def _abort_on_overflow(v: int, values: Values) -> list[str]:
    if v:
        return [
            Risk(
                "server: a full accept queue answers with RST instead of letting the client retry: "
                "overload shows up as 'connection reset by peer' on clients"
            )
        ]
    return []


def _syncookies(v: int, values: Values) -> list[str]:
    if v == 0:
        return [
            Risk(
                "server: without syncookies a SYN flood or burst fills the SYN queue and handshakes are dropped"
            )
        ]
    if v == 2:
        return [
            Risk(
                "cookies for every SYN even without overflow: options (window scale, SACK) survive only with timestamps",
                "info",
            )
        ]
    return []


def _fin_timeout(v: int, values: Values) -> list[str]:
    notes = ["does not shorten TIME_WAIT (always 60 s); it bounds FIN_WAIT_2 orphans only"]
    if v > 60:
        notes.append(Risk(f"FIN_WAIT_2 orphans whose peer never closes linger {v} s each", "info"))
    return notes


def _tw_reuse(v: int, values: Values) -> list[str]:
    if v == 0:
        return [
            Risk(
                "client: connect() never reuses a TIME_WAIT 4-tuple; many short connections to one "
                "server exhaust ip_local_port_range (EADDRNOTAVAIL)",
                "info",
            )
        ]
    if v == 2:
        return ["TIME_WAIT reuse for loopback only; clients of remote servers do not benefit"]
    return []


def _tw_buckets(v: int, values: Values) -> list[str]:
    rng = values.get("net.ipv4.ip_local_port_range")
    ports = _port_count(rng)
    if ports is not None and v < ports:
        return [
            Risk(
                f"below the {ports} ephemeral ports: a busy client hits TCPTimeWaitOverflow and "
                "connections close without TIME_WAIT protection"
            )
        ]
    return []


def _port_count(rng: str | None) -> int | None:
    if not rng:
        return None
    try:
        lo, hi = (int(x) for x in rng.split()[:2])
    except ValueError:
        return None
    return hi - lo + 1


def _port_range(v: int, values: Values) -> list[str]:
    text = values.get("net.ipv4.ip_local_port_range") or ""
    ports = _port_count(text)
    notes: list[str] = []
    if ports is not None:
        notes.append(
            f"client: {ports} ports per destination address:port; with TIME_WAIT holding each for 60 s "
            f"that is about {ports // 60} new connections/s to one server before EADDRNOTAVAIL"
        )
        if ports < 16384:
            notes.append(Risk("narrow range: connection-heavy clients run out of ports"))
    if v < 1024:
        notes.append(Risk("starts below 1024: ephemeral ports collide with privileged services"))
    return notes


def port_set(text: str | None) -> list[tuple[int, int]]:
    """The kernel's port-list format ("8080,9000-9010", empty when none) as ranges.

    Hand-written: the format is the kernel's own bitmap syntax for this one file,
    and a malformed value is read as no ranges rather than an error.
    """
    out = []
    for part in (text or "").replace(" ", ",").split(","):
        lo, _, hi = part.partition("-")
        try:
            out.append((int(lo), int(hi or lo)))
        except ValueError:
            continue
    return out


def in_ports(port: int, ranges: list[tuple[int, int]]) -> bool:
    return any(lo <= port <= hi for lo, hi in ranges)


def _keepalive_time(v: int, values: Values) -> list[str]:
    intvl = _int(values, "net.ipv4.tcp_keepalive_intvl") or 0
    probes = _int(values, "net.ipv4.tcp_keepalive_probes") or 0
    notes = [
        f"a dead idle peer is detected after {human(v + intvl * probes)} (only sockets with SO_KEEPALIVE)"
    ]
    if v >= 600:
        notes.append(
            Risk(
                "NAT, load balancers and firewalls often drop idle flows sooner (350 s – 1 h): idle "
                "pool connections die silently; set TCP_KEEPIDLE below that timeout",
                "info",
            )
        )
    return notes


def _retries(
    first_rto: float,
    gives_up: str,
    short_below: int,
    short: str,
    long_from: int | None = None,
    long: str = "",
) -> NoteFn:
    """The notes of a retransmission count: how long the retries last (`gives_up` has a
    ``{}`` for it, from a first timeout of `first_rto` s), the risk of too few (below
    `short_below`) and, from `long_from` on, of too many."""

    def notes_for(v: int, values: Values) -> list[str]:
        notes = [gives_up.format(human(model_timeout(v, first_rto)))]
        if long_from is not None and v >= long_from:
            notes.append(Risk(long, "info"))
        if v < short_below:
            notes.append(Risk(short))
        return notes

    return notes_for


_syn_retries = _retries(
    1.0,
    "client: connect() to a silent address gives up after ~{}",
    3,
    "short: a few lost SYNs fail the connection",
    6,
    "long: set an application connect timeout rather than waiting for the kernel",
)
_synack_retries = _retries(
    1.0,
    "server: a half-open connection is kept ~{} waiting for the final ACK",
    2,
    "short: clients whose final ACK is lost fail",
)
_retries2 = _retries(
    0.2,
    "a peer that stops ACKing data is declared dead after ~{} (TCPAbortOnTimeout)",
    8,
    "below RFC 1122's 100 s: short outages kill established connections",
    15,
    "long: requests hang for many minutes on a dead peer; TCP_USER_TIMEOUT per socket helps",
)


def _orphan_retries(v: int, values: Values) -> list[str]:
    n = v or 8
    t = model_timeout(n, 0.2)
    msg = f"closed sockets retransmit their FIN for ~{human(t)}"
    return [f"0 means 8: {msg}" if v == 0 else msg]


def _max_orphans(v: int, values: Values) -> list[str]:
    return ["beyond this, closing sockets are reset at once (TCPAbortOnMemory)"]


@dataclass(frozen=True)
class Setting:
    key: str
    default: str
    meaning: str
    notes: NoteFn | None = None

    @property
    def path(self) -> Path:
        return PROC_SYS / self.key.replace(".", "/")


SETTINGS: tuple[Setting, ...] = (
    Setting("net.core.somaxconn", "4096 (128 before 5.4)",
            "upper bound on every listener's accept queue: the limit is min(listen() backlog, this)", _somaxconn),
    Setting("net.ipv4.tcp_max_syn_backlog", "128…(memory-dependent)",
            "how many half-open (SYN_RECV) connections a listener queues", _syn_backlog),
    Setting("net.ipv4.tcp_abort_on_overflow", "0",
            "1: answer a full accept queue with RST instead of dropping the handshake", _abort_on_overflow),
    Setting("net.ipv4.tcp_syncookies", "1",
            "answer SYNs with cookies when the SYN queue is full (2: always)", _syncookies),
    Setting("net.ipv4.tcp_fin_timeout", "60",
            "seconds an orphaned FIN_WAIT_2 socket waits for the peer's FIN", _fin_timeout),
    Setting("net.ipv4.tcp_tw_reuse", "2",
            "let connect() take over a TIME_WAIT 4-tuple (1: always, 2: loopback only)", _tw_reuse),
    Setting("net.ipv4.tcp_max_tw_buckets", "(memory-dependent)",
            "most TIME_WAIT sockets (FIN_WAIT_2 orphans included) kept; beyond it connections close without TIME_WAIT",
            _tw_buckets),
    Setting("net.ipv4.ip_local_port_range", "32768 60999",
            "ephemeral ports connect() picks from", _port_range),
    Setting("net.ipv4.ip_local_reserved_ports", "(empty)",
            "ports in that range connect() never picks (bind() still can): list service ports here"),
    Setting("net.ipv4.tcp_keepalive_time", "7200",
            "idle seconds before the first keepalive probe (SO_KEEPALIVE sockets)", _keepalive_time),
    Setting("net.ipv4.tcp_keepalive_intvl", "75", "seconds between keepalive probes"),
    Setting("net.ipv4.tcp_keepalive_probes", "9", "unanswered keepalive probes before the connection is dropped"),
    Setting("net.ipv4.tcp_syn_retries", "6", "SYN retransmissions before connect() fails", _syn_retries),
    Setting("net.ipv4.tcp_synack_retries", "5", "SYN-ACK retransmissions before a half-open connection is dropped",
            _synack_retries),
    Setting("net.ipv4.tcp_retries2", "15", "data retransmissions before an established connection is killed",
            _retries2),
    Setting("net.ipv4.tcp_orphan_retries", "0 (= 8)", "FIN retransmissions for sockets already closed by their process",
            _orphan_retries),
    Setting("net.ipv4.tcp_max_orphans", "(memory-dependent)",
            "most sockets kept after close() (FIN_WAIT, LAST_ACK, CLOSING orphans)", _max_orphans),
)  # fmt: skip


@dataclass
class SysctlRow:
    key: str
    value: str | None
    default: str
    meaning: str
    notes: list[str] = field(default_factory=list)

    @property
    def risks(self) -> list[dict[str, str]]:
        """The notes that are risks (level info or warning), the alerts of `host sysctl`."""
        return [{"level": note_level(n), "text": str(n)} for n in self.notes if isinstance(n, Risk)]

    def as_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "value": self.value,
            "default": self.default,
            "meaning": self.meaning,
            "notes": [str(n) for n in self.notes],
            "note_levels": [note_level(n) for n in self.notes],
            "risks": self.risks,
        }


def read_values(root: Path = PROC_SYS) -> Values:
    """Raw values as the caller's namespace sees them; None where the file is absent here."""
    out: Values = {}
    for s in SETTINGS:
        try:
            out[s.key] = " ".join((root / s.key.replace(".", "/")).read_text().split())
        except OSError:
            out[s.key] = None
    return out


def evaluate(values: Values) -> list[SysctlRow]:
    rows = []
    for s in SETTINGS:
        value = values.get(s.key)
        notes: list[str] = []
        if value is None:
            notes.append(
                "not visible here (a setting of the initial network namespace only, or an older kernel)"
            )
        elif s.notes is not None:
            n = _int(values, s.key)
            if n is not None:
                notes = s.notes(n, values)
        rows.append(SysctlRow(s.key, value, s.default, s.meaning, notes))
    return rows
