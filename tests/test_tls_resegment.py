"""TLS records cut across segments inside their 5-byte header, first record included.

clean-tls-first-header-cut.pcap is clean-tls.pcap with each direction's first segment of
both connections cut inside the first record's header (tests/data/tls/resegment.py: the
ClientHello at 3 and 100, then at 1, 2 and 4; the server's first flight at 2, then at 4):
a direction's first segment then carries less than a record header. clean-tls-resegmented
.pcap cuts a later header (the server's ChangeCipherSpec, two bytes in). The same bytes
flow, so the record layer and the diagnosis's TLS view must be clean-tls.pcap's; the
display filters are checked against tshark on both captures in test_tls_filters.py.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from tcpwhy.capture import read_table
from tcpwhy.decode import tls as rec
from tcpwhy.diagnose import tls
from tcpwhy.diagnose.context import Capture, Conn
from tcpwhy.diagnose.engine import diagnose_files
from tcpwhy.tcp.streams import StreamTracker

LAB = Path(str(resources.files("tcpwhy") / "data" / "lab"))
REFS = Path(__file__).resolve().parent / "data" / "tls"
CLEAN = LAB / "clean-tls.pcap"
CUTS = ("clean-tls-first-header-cut.pcap", "clean-tls-resegmented.pcap")


def _layer(path: Path) -> list[tuple[int, ...]]:
    """Every record as (group, offset, type, version, length, handshake type, alert, flags)."""
    t = read_table(str(path))
    st = StreamTracker().feed(t)
    r = rec.find_records(t, st["stream"], st["dir"])
    cols = (r.group, r.rel, r.ctype, r.version, r.length, r.hs, r.alert, r.flags)
    return list(zip(*(c.tolist() for c in cols), strict=True))


def _views(path: Path) -> list[tuple[object, ...]]:
    """Per connection the diagnosis's TLS view: name, versions, ALPN and its records."""
    t = read_table(str(path))
    cap = Capture(t, np.zeros(len(t), np.int16), [str(path)])
    out: list[tuple[object, ...]] = []
    for sid in range(cap.nstreams):
        tc = tls.of(Conn(cap, sid))
        assert tc is not None, (path.name, sid)
        recs = [(r.side, r.ctype, r.length, r.hs, r.alert) for r in tc.records]
        out.append((tc.sni, tc.version_text, tc.offered, tc.alpn, recs))
    return out


def test_first_segment_shorter_than_a_header() -> None:
    """The capture does what its name says: each direction's first payload of both
    connections is shorter than a record header and starts one."""
    t = read_table(str(REFS / CUTS[0]))
    st = StreamTracker().feed(t)
    data = np.flatnonzero(t["payload_len"] > 0)
    key = st["stream"][data] * 2 + st["dir"][data]
    _, first = np.unique(key, return_index=True)
    rows = data[first]
    assert len(rows) == 4
    assert (t["payload_len"][rows] < 5).all()
    assert (t.data[t["payload_off"][rows].astype(np.int64)] == rec.HANDSHAKE).all()


@pytest.mark.parametrize("name", CUTS)
def test_records_are_clean_tls_records(name: str) -> None:
    """Same records at the same offsets as the uncut capture, the thread never lost."""
    want = _layer(CLEAN)
    got = _layer(REFS / name)
    assert got == want
    assert len(want) >= 30 and all(f == rec.COMPLETE for *_, f in got)


@pytest.mark.parametrize("name", CUTS)
def test_diagnosis_sees_version_and_name(name: str) -> None:
    """TLS version, SNI, offered versions, ALPN and the record list of every connection as
    on clean-tls.pcap."""
    want = _views(CLEAN)
    got = _views(REFS / name)
    assert got == want
    assert [v[:2] for v in got] == [(b"api.tcpwhy.test", "TLS 1.3")] * 2


@pytest.mark.parametrize("name", CUTS)
def test_diagnosed_like_clean_tls(name: str) -> None:
    """The same findings, each naming the server by its SNI."""

    def kinds(path: Path) -> list[tuple[str, str]]:
        return sorted((f.kind, f.severity) for f in diagnose_files([str(path)]).findings)

    assert kinds(REFS / name) == kinds(CLEAN)
    servers = [f.to_json()["facts"]["server"] for f in diagnose_files([str(REFS / name)]).findings]
    assert servers and all(s.startswith("api.tcpwhy.test (") for s in servers)
