"""Which side is the client (`tcpwhy.tcp.sides`): the compiled pass against the rule written
plainly, stream by stream, on random tables and on the shipped captures."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from tcpwhy.decode.table import ACK, RST, SYN
from tcpwhy.tcp.sides import EPHEMERAL_FROM, client_dirs


def _plain(
    flags: Any, pdir: Any, stream: Any, nstreams: int, first: Any, sport: Any, dport: Any
) -> list[int]:
    """The rule as the module's docstring says it, one stream at a time."""
    out = []
    for s in range(nstreams):
        rows = [i for i in range(len(stream)) if stream[i] == s]
        kinds = [int(flags[i]) & (SYN | ACK | RST) for i in rows]
        syn = [i for i, k in zip(rows, kinds, strict=True) if k == SYN]
        synack = [i for i, k in zip(rows, kinds, strict=True) if k == SYN | ACK]
        if syn:
            out.append(int(pdir[syn[0]]))
        elif synack:
            out.append(1 - int(pdir[synack[0]]))
        else:
            d = int(pdir[first[s]])
            server_answering = sport[s] < dport[s] and sport[s] < EPHEMERAL_FROM
            out.append(1 - d if server_answering else d)
    return out


def test_client_dirs_follow_the_rule_on_random_tables() -> None:
    rng = np.random.default_rng(7)
    kinds = np.array([0x02, 0x12, 0x10, 0x04, 0x14, 0x11, 0x18, 0x16, 0x06], np.uint16)
    ports = np.array([80, 443, 1000, 40000, 50000], np.uint16)
    by = {"syn": 0, "synack": 0, "ports": 0}
    for trial in range(500):
        ns = int(rng.integers(1, 8))
        more = rng.integers(0, ns, int(rng.integers(0, 40)))
        stream = np.concatenate([np.arange(ns), more if trial % 2 else np.sort(more)])
        n = len(stream)
        flags = rng.choice(kinds, n)
        pdir = rng.integers(0, 2, n).astype(np.int8)
        first = np.array([np.flatnonzero(stream == s)[0] for s in range(ns)], np.int64)
        sport, dport = rng.choice(ports, ns), rng.choice(ports, ns)
        got = client_dirs(flags, pdir, stream, ns, first, sport, dport)
        assert got.tolist() == _plain(flags, pdir, stream, ns, first, sport, dport), trial
        for s in range(ns):
            k = flags[stream == s] & (SYN | ACK | RST)
            by["syn" if (k == SYN).any() else "synack" if (k == SYN | ACK).any() else "ports"] += 1
    assert min(by.values()) >= 100  # each branch of the rule taken


def test_client_dirs_follow_the_rule_on_the_shipped_captures() -> None:
    from tcpwhy.capture import read_table
    from tcpwhy.tcp.streams import StreamTracker

    data = Path(str(resources.files("tcpwhy") / "data"))
    for p in [*sorted((data / "lab").glob("*.pcap")), data / "demo-stale-keepalive.pcap"]:
        t = read_table(str(p))
        s = StreamTracker().feed(t)
        stream, pdir = s["stream"], s["dir"]
        ns = int(stream.max()) + 1
        first = np.array([np.flatnonzero(stream == k)[0] for k in range(ns)], np.int64)
        sport, dport = t["sport"][first], t["dport"][first]
        got = client_dirs(t["flags"], pdir, stream, ns, first, sport, dport)
        assert got.tolist() == _plain(t["flags"], pdir, stream, ns, first, sport, dport), p
