"""Finding groups: a recurring incident is one group (kind and server) with running counts.

A group is announced when it first appears and again, with its counts, at most once per
`reannounce_s` while it keeps recurring: an alerting pipeline sees an incident once, not
once per connection. Groups are capped; the one seen longest ago makes room.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from tcpwhy.diagnose.model import Finding

NS = 1_000_000_000


@dataclass
class Group:
    kind: str
    server: str
    finding: Finding  # the latest finding of the group (its story and timeline)
    count: int = 0  # connections (or events) over the whole watch
    findings: int = 0  # windows in which the rules found it
    first_ns: int = 0
    last_ns: int = 0
    announced_ns: int = 0
    announced_count: int = 0
    announcements: int = 0


class Groups:
    def __init__(self, reannounce_s: float = 60.0, max_groups: int = 1000) -> None:
        self.reannounce_ns = int(reannounce_s * NS)
        self.max_groups = max_groups
        self.groups: OrderedDict[tuple[str, str], Group] = OrderedDict()
        self.evicted = 0

    def add(self, f: Finding, server: str, now_ns: int) -> Group | None:
        """Count a finding; the group when it is to be announced now, else None."""
        key = (f.kind, server)
        g = self.groups.get(key)
        if g is None:
            g = Group(f.kind, server, f, first_ns=f.first_ns)
            self.groups[key] = g
            while len(self.groups) > self.max_groups:
                self.groups.popitem(last=False)
                self.evicted += 1
        else:
            self.groups.move_to_end(key)
            g.finding = f
        g.count += f.count
        g.findings += 1
        g.last_ns = max(g.last_ns, f.last_ns)
        if g.announcements == 0 or now_ns - g.announced_ns >= self.reannounce_ns:
            return self._announce(g, now_ns)
        return None

    def _announce(self, g: Group, now_ns: int) -> Group:
        g.announced_ns = now_ns
        g.announced_count = g.count
        g.announcements += 1
        return g

    def due(self, now_ns: int) -> list[Group]:
        """Groups with counts not yet announced whose quiet period is over."""
        out = []
        for g in self.groups.values():
            if g.count > g.announced_count and now_ns - g.announced_ns >= self.reannounce_ns:
                out.append(self._announce(g, now_ns))
        return out
