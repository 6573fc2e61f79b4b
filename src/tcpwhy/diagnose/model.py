"""What a diagnosis produces: findings with evidence, explanation, fixes and likely errors."""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, fields
from enum import IntEnum
from typing import Any, overload

import numpy as np
import numpy.typing as npt

from tcpwhy.tcp.endings import ENDING_SUMMARY


class Severity(IntEnum):
    INFO = 0
    WARNING = 1
    ERROR = 2

    @property
    def label(self) -> str:
        return self.name.lower()


MAX_FILTER_CHARS = 200
"""A display filter longer than this is shown (text report, HTML page) for the examples only;
the JSON's `display_filter` is always the exact one."""


def display_filter(streams: Sequence[int], frames: Sequence[int] = ()) -> str:
    """A Wireshark display filter selecting the frames of these tcp.stream numbers (tshark's
    numbering): runs of consecutive numbers become ranges, `tcp.stream in {0..199, 204}`, so
    a flood's filter stays short. Without streams, the frames themselves (`frame.number`);
    "" when there is neither."""
    if len(streams):
        field_name, values = "tcp.stream", streams
    elif len(frames):
        field_name, values = "frame.number", frames
    else:
        return ""
    v = np.asarray(values, dtype=np.int64)
    if len(v) > 1 and (v[1:] < v[:-1]).any():
        # (a finding's streams come ascending: a flood's 3 million took 0.2 s to sort again)
        v = np.sort(v)  # numpy.unique hashes: slow on 200,000
    if len(v) > 1 and (v[1:] == v[:-1]).any():
        v = v[np.concatenate(([True], v[1:] != v[:-1]))]
    if len(v) == 1:
        return f"{field_name} == {int(v[0])}"
    breaks = np.flatnonzero(np.diff(v) != 1) + 1
    starts = np.concatenate(([0], breaks))
    ends = np.concatenate((breaks, [len(v)])) - 1
    parts = [
        str(int(v[a])) if a == b else f"{int(v[a])}..{int(v[b])}"
        for a, b in zip(starts.tolist(), ends.tolist(), strict=True)
    ]
    return f"{field_name} in {{" + ", ".join(parts) + "}"


class StreamNumbers(Sequence[int]):
    """A finding's tcp.stream numbers, ascending, held as one int64 array: a flood's finding
    has millions, which as a list of Python ints were 108 MB at `analyze`'s peak. It reads
    as the list it stands for (an index gives an int, a slice a list; iteration, `in`,
    equality with a list); `numpy.asarray` gives the array and `tolist` the list."""

    __slots__ = ("_a",)

    def __init__(self, ascending: npt.ArrayLike) -> None:
        self._a = np.asarray(ascending, dtype=np.int64)

    def __len__(self) -> int:
        return len(self._a)

    @overload
    def __getitem__(self, i: int) -> int: ...
    @overload
    def __getitem__(self, i: slice) -> list[int]: ...
    def __getitem__(self, i: int | slice) -> int | list[int]:
        if isinstance(i, slice):
            got: list[int] = self._a[i].tolist()
            return got
        return int(self._a[i])

    def __iter__(self) -> Iterator[int]:
        for lo in range(0, len(self._a), 1 << 16):
            yield from self._a[lo : lo + (1 << 16)].tolist()

    def __contains__(self, x: object) -> bool:
        if not isinstance(x, (int, np.integer)):
            return False
        i = int(np.searchsorted(self._a, x))
        return i < len(self._a) and int(self._a[i]) == x

    def __eq__(self, other: object) -> bool:
        if isinstance(other, StreamNumbers):
            return bool(np.array_equal(self._a, other._a))
        if isinstance(other, list):
            return len(other) == len(self._a) and self.tolist() == other
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # compared by value, as the list was

    def __repr__(self) -> str:
        return repr(self.tolist())

    def __array__(self, dtype: Any = None, copy: Any = None) -> npt.NDArray[Any]:
        return self._a if dtype is None else self._a.astype(dtype)

    def tolist(self) -> list[int]:
        got: list[int] = self._a.tolist()
        return got


@dataclass
class Step:
    """One decisive packet of a finding's timeline, with both endpoints' states after it."""

    ts_ns: int
    rel_s: float  # seconds since the connection's first packet
    frame: int
    file: str
    stream: int
    sender: str  # "client" or "server"
    packet: str  # e.g. "[FIN, ACK] seq=68 ack=73 len=0"
    note: str
    client_state: str
    server_state: str


_STEP_FIELDS = tuple(f.name for f in fields(Step))


@dataclass
class Story:
    """What a finding says about its connections; the evidence (timeline, counts) comes apart."""

    severity: Severity
    summary: str
    explanation: str
    causes: list[str]
    fixes: list[str]
    errors: list[str]  # what applications log (see `knowledge`)
    facts: dict[str, Any] = field(default_factory=dict)


@dataclass
class Finding:
    kind: str
    severity: Severity
    summary: str
    streams: Sequence[int]  # a list, or `StreamNumbers` where a rule found them with numpy
    frames: list[int]
    timeline: list[Step] = field(default_factory=list)
    explanation: str = ""
    causes: list[str] = field(default_factory=list)
    fixes: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    count: int = 1  # connections (or events) showing it
    first_ns: int = 0
    last_ns: int = 0
    examples: list[int] = field(default_factory=list)  # a few stream numbers
    facts: dict[str, Any] = field(default_factory=dict)

    def add_evidence(
        self, note: str, at_ns: int | None = None, fact: str | None = None, value: Any = None
    ) -> None:
        """Add another source's word (e.g. the kernel's) without a rule knowing of it: on the
        timeline step nearest `at_ns` (or after the explanation when there is none), and as
        `facts[fact]` (a list, appended to)."""
        if at_ns is not None and self.timeline:
            step = min(self.timeline, key=lambda s: abs(s.ts_ns - at_ns))
            step.note = f"{step.note}; {note}" if step.note else note
        else:
            self.explanation = f"{self.explanation}\n\n{note}" if self.explanation else note
        if fact is not None:
            self.facts.setdefault(fact, []).append(value)

    def to_json(self, *, arrays: bool = False) -> dict[str, Any]:
        """As `asdict`, without deep-copying the stream and frame lists item by item (a
        flood's finding lists millions of streams). `arrays`: `StreamNumbers` are left as
        they are, for a writer that writes their array (`tcpwhy.diagnose.render.to_json`)."""
        d: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, StreamNumbers):
                d[f.name] = v if arrays else v.tolist()
            elif f.name in ("streams", "frames", "examples"):
                d[f.name] = list(v)
            elif f.name == "timeline":
                # a step's fields are all one value each (no copy to make): `asdict`'s
                # recursion was a third of writing a capture's 774 findings
                d[f.name] = [{k: getattr(s, k) for k in _STEP_FIELDS} for s in v]
            elif isinstance(v, (str, int, float)) or v is None:
                d[f.name] = v
            else:
                d[f.name] = copy.deepcopy(v)
        d["severity"] = self.severity.label
        d["display_filter"] = self.display_filter
        from tcpwhy.diagnose.knowledge import fixes_of
        from tcpwhy.timestamps import rfc3339

        # the fixes per stack, for scripts (`fixes` stays the sentences the text report prints)
        d["fixes_by_stack"] = [x.to_json() for fx in self.fixes for x in fixes_of(fx)]
        d["first_time"] = rfc3339(self.first_ns)
        d["last_time"] = rfc3339(self.last_ns)
        for step, sd in zip(self.timeline, d["timeline"], strict=True):
            sd["time"] = rfc3339(step.ts_ns)
        return d

    @property
    def display_filter(self) -> str:
        """Wireshark's display filter for exactly this finding's connections."""
        return display_filter(self.streams, self.frames)

    def short_display_filter(self, max_chars: int = MAX_FILTER_CHARS) -> tuple[str, bool]:
        """(filter, exact): the exact filter when it is at most `max_chars` long, else the
        filter of the example streams (exact False): what a page or a terminal can show."""
        exact = self.display_filter
        if len(exact) <= max_chars or not self.examples:
            return exact, True
        return display_filter(self.examples), False


ENDING_CODES = {
    **{words: code for code, words in ENDING_SUMMARY},
    "reset": "reset",  # either side: reports written before analyze said which
}
"""`Report.endings`' words (`context.Capture.endings`) -> their `tcpwhy.tcp.connections.ENDINGS`
code."""


@dataclass
class CaptureInfo:
    files: list[str]
    packets: int
    frames: int
    connections: int
    first_ns: int
    last_ns: int
    link_types: list[int]
    undecoded: dict[str, int]
    warnings: list[str]


@dataclass
class Report:
    capture: CaptureInfo
    findings: list[Finding]
    endings: dict[str, int]  # connections by how they ended
    paths: list[dict[str, Any]] = field(default_factory=list)  # capture points paired
    # the capture points' rule contexts (`registry.Diag`, each with its `Capture`), kept for
    # views that draw the connections themselves (the HTML report); not part of to_json
    diags: list[Any] = field(default_factory=list, repr=False, compare=False)

    @property
    def worst(self) -> Severity | None:
        return max((f.severity for f in self.findings), default=None)

    def exit_status(self) -> int:
        w = self.worst
        return 1 if w is not None and w >= Severity.WARNING else 0

    def to_json(self, *, arrays: bool = False) -> dict[str, Any]:
        """The report as `analyze --format json` writes it (`arrays`: see `Finding.to_json`)."""
        c = self.capture
        from tcpwhy.schemas import SCHEMA_VERSION
        from tcpwhy.timestamps import rfc3339

        return {
            "schema_version": SCHEMA_VERSION,
            "capture": {
                "files": c.files,
                "packets": c.packets,
                "frames": c.frames,
                "connections": c.connections,
                # the first and last packet by the time convention (docs/json.md)
                "first_ts": rfc3339(c.first_ns) if c.packets else None,
                "last_ts": rfc3339(c.last_ns) if c.packets else None,
                "duration_s": (c.last_ns - c.first_ns) / 1e9 if c.packets else 0.0,
                "link_types": c.link_types,
                "undecoded": c.undecoded,
                "warnings": c.warnings,
                "first_ts_ns": c.first_ns if c.packets else None,
                "last_ts_ns": c.last_ns if c.packets else None,
            },
            "findings": [f.to_json(arrays=arrays) for f in self.findings],
            "connections": self.endings,
            "endings": [
                {"code": ENDING_CODES[words], "words": words, "count": n}
                for words, n in self.endings.items()
            ],
            **({"paths": self.paths} if self.paths else {}),
        }
