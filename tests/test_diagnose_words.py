"""What the diagnosis says on captures cut or altered the way users' captures are: one that
starts in the middle of a pooled connection, and a request that is not HTTP.

The captures are the shipped stale keep-alive recording, rewritten record by record (a classic
pcap file: 24-byte header, then a 16-byte header and the bytes of each packet)."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from tcpwhy.diagnose.engine import diagnose_files

LAB = Path(__file__).resolve().parents[1] / "src" / "tcpwhy" / "data" / "lab"
STALE = LAB / "stale-keepalive.pcap"


def _records(path: Path) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    raw = path.read_bytes()
    assert raw[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"), "a little-endian pcap"
    out, off = [], 24
    while off < len(raw):
        head = raw[off : off + 16]
        (incl,) = struct.unpack_from("<I", head, 8)
        out.append((head, raw[off + 16 : off + 16 + incl]))
        off += 16 + incl
    return raw[:24], out


def _write(tmp: Path, name: str, header: bytes, recs: list[tuple[bytes, bytes]]) -> str:
    p = tmp / name
    p.write_bytes(header + b"".join(h + d for h, d in recs))
    return str(p)


def _kinds(path: str) -> list[str]:
    return [f.kind for f in diagnose_files([path]).findings]


@pytest.mark.parametrize("first_frame", [4, 5, 6])
def test_pooled_connection_seen_from_the_middle(tmp_path: Path, first_frame: int) -> None:
    """The capture starts after the handshake (at the first request, at the server's ACK of
    it, or at the response): the exchange before the server's idle close shows the
    connection was pooled, so the late request is a stale reuse, not just data after a FIN."""
    header, recs = _records(STALE)
    # frame 4 is GET /first, 6 its response, 8 the server's idle FIN, 10 GET /second, 11 RST
    assert b"GET /first" in recs[3][1] and b"200 OK" in recs[5][1]
    path = _write(tmp_path, "cut.pcap", header, recs[first_frame - 1 :])
    kinds = _kinds(path)
    assert "stale-keepalive-reuse" in kinds
    assert "data-after-fin" not in kinds


def test_without_an_earlier_exchange_it_stays_data_after_fin(tmp_path: Path) -> None:
    """From the client's last ACK on, nothing shows an earlier exchange: tcpwhy does not
    guess a pool."""
    header, recs = _records(STALE)
    path = _write(tmp_path, "cut.pcap", header, recs[6:])
    kinds = _kinds(path)
    assert "data-after-fin" in kinds
    assert "stale-keepalive-reuse" not in kinds


def test_a_request_that_is_not_http_is_worded_as_one(tmp_path: Path) -> None:
    """Both requests' payloads replaced by bytes of the same length that are not HTTP: the
    finding stays and its sentence reads "a 73-byte request was sent", not "73 bytes was"."""
    header, recs = _records(STALE)
    changed = []
    out = []
    for h, d in recs:
        for verb in (b"GET /first", b"GET /second"):
            at = d.find(verb)
            if at >= 0:
                size = len(d) - at
                d = d[:at] + bytes(range(1, 1 + size))
                changed.append(size)
        out.append((h, d))
    recs = out
    assert len(changed) == 3  # GET /first, GET /second twice (the reset one, the retry)
    path = _write(tmp_path, "opaque.pcap", header, recs)
    report = diagnose_files([path])
    stale = [f for f in report.findings if f.kind == "stale-keepalive-reuse"]
    assert len(stale) == 1
    size = changed[1]
    assert stale[0].summary.startswith(f"a {size}-byte request was sent on a pooled connection")
    assert "bytes was" not in stale[0].summary


def _run(*args: str) -> str:
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "tcpwhy", *args], capture_output=True, text=True, check=True
    )
    return out.stdout


def test_a_refused_connection_shows_no_listener() -> None:
    """A SYN answered by RST from a closed port: the server side had no socket; the evidence
    and the ladder say so instead of showing it in an RFC state."""
    report = diagnose_files([str(LAB / "refused.pcap")])
    (f,) = [f for f in report.findings if f.kind == "connection-refused"]
    assert [s.server_state for s in f.timeline] == ["no listener", "no listener"]
    assert [s.client_state for s in f.timeline] == ["SYN_SENT", "CLOSED"]
    ladder = _run("flow", str(LAB / "refused.pcap"), "0")
    assert "server no listener" in ladder
    assert "SYN_RECEIVED" not in ladder and "LISTEN" not in ladder


def test_an_unanswered_syn_does_not_claim_the_server_received_it() -> None:
    """Three SYNs, nothing back: the server is not shown in SYN_RECEIVED."""
    report = diagnose_files([str(LAB / "syn-timeout.pcap")])
    (f,) = [f for f in report.findings if f.kind == "syn-timeout"]
    assert {s.server_state for s in f.timeline} == {"no answer"}
    ladder = _run("flow", str(LAB / "syn-timeout.pcap"), "0")
    assert "SYN_RECEIVED" not in ladder
    assert "server no answer" in ladder
