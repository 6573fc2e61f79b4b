"""A segment other than a RST injected on the path: the shipped pair made at both ends of a
60 ms path, with one segment forged into the client-side capture in the server's name
(the server-side capture never sent it). The reference is the two captures' own packets,
read with the tests' packet reader, not the pairing code.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tcpwhy.capture import read_table
from tcpwhy.decode.table import ACK, FIN, PSH
from tcpwhy.diagnose.engine import diagnose_files
from tests.schema_check import validate
from tests.test_lab import packets
from tests.test_pairing import CLIENT, SERVER
from tests.test_pairing_timing import forged, records, write_records

BODY = b"HTTP/1.1 403 Forbidden\r\n\r\n"


def forge_into_client(dst: Path, flags: int, payload: bytes) -> tuple[int, int, int]:
    """The client-side capture with one segment from the server of the one connection the
    box does not reset (the one that keeps talking), half-way between the client's ACK of
    the server's third answer and the client's next request (far from any packet at either
    point): (its frame number, the client port, its time stamp in ns)."""
    raw = CLIENT.read_bytes()
    recs = records(raw)
    pk = packets(CLIENT)
    ports = sorted({p.cport for p in pk})
    alive = next(
        c for c in ports if not any(p.flags & 4 for p in pk if p.cport == c) and c != ports[0]
    )
    mine = [p for p in pk if p.cport == alive]
    data = [p for p in mine if not p.c2s and p.n]
    ack = next(p for p in mine if p.c2s and p.i > data[2].i)
    _, tmpl = recs[data[2].i]
    seg = forged(tmpl, flags, ack=ack.seq, payload=payload, seq=ack.ack)
    at = (recs[ack.i][0] + recs[ack.i + 1][0]) // 2
    recs.insert(ack.i + 1, (at, seg))
    write_records(dst, raw[:24], recs)
    return ack.i + 2, alive, at


def analyze_json(*args: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "tcpwhy", "analyze", "--format", "json", *args],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 1, out.stderr  # warnings
    doc: dict = json.loads(out.stdout)
    validate("analyze", doc)
    return doc


def server_last_before(port: int, t_ns: int) -> int:
    """The server-side capture's last frame of the connection from `port` at or before the
    time stamp t_ns (one clock in the lab), by the tests' own reader."""
    ts = read_table(str(SERVER)).ts_ns
    return max(p.i for p in packets(SERVER) if p.cport == port and int(ts[p.i]) <= t_ns) + 1


@pytest.mark.parametrize(
    ("flags", "payload", "what"),
    [(PSH | ACK, BODY, f"{len(BODY)}-byte data segment"), (FIN | ACK, b"", "FIN")],
)
def test_a_forged_segment_is_injected_segment_certain(
    tmp_path: Path, flags: int, payload: bytes, what: str
) -> None:
    client = tmp_path / "client.pcap"
    frame, port, t = forge_into_client(client, flags, payload)
    doc = analyze_json(str(client), str(SERVER))
    (path,) = doc["paths"]
    assert (path["only_in_a"], path["only_in_b"]) == (3, 0)  # the box's two RSTs and ours
    by = {f["kind"]: f for f in doc["findings"]}
    # the box's RSTs are told as before
    mb = by["middlebox-reset"]
    assert (mb["count"], mb["facts"]["certainty"]) == (2, "certain")
    f = by["injected-segment"]
    assert (f["count"], f["severity"]) == (1, "warning")
    assert f["facts"]["certainty"] == "certain"
    assert f["facts"]["seen_at"] == [str(client), str(SERVER)]
    assert f["facts"]["segments"] == 1
    assert set(f["streams"]).isdisjoint(mb["streams"])
    words = " ".join(f["explanation"].split())
    assert f"{what} that claims to come from the server" in words
    assert f"the capture at {SERVER} holds this connection and the server never sent it" in words
    # its own row, then the server capture's last packet of the connection before it
    first, far = f["timeline"]
    assert (first["frame"], first["file"], first["sender"]) == (frame, str(client), "server")
    assert "never saw it sent" in first["note"]
    assert far["file"] == str(SERVER)
    assert far["frame"] == server_last_before(port, t)
    assert f"the server sends no such {what} here" in far["note"]
    # an injected FIN ended the connection in the server's name: nothing else is told of it;
    # injected data is told beside what the points concluded
    others = [g for g in doc["findings"] if g["kind"] != "injected-segment"]
    if flags & FIN:
        assert all(set(g["streams"]).isdisjoint(f["streams"]) for g in others)


def test_one_capture_cannot_tell(tmp_path: Path) -> None:
    """Alone, the forged segment is the server's as far as the client's capture shows."""
    client = tmp_path / "client.pcap"
    forge_into_client(client, PSH | ACK, BODY)
    kinds = {f.kind for f in diagnose_files([str(client)]).findings}
    assert "injected-segment" not in kinds
    assert "injected-segment" not in {
        f.kind for f in diagnose_files([str(client), str(SERVER)], pair=False).findings
    }


def test_a_forged_client_fin_at_the_server_is_injected_segment(tmp_path: Path) -> None:
    """The other direction: a FIN in the client's name that only the server-side capture
    shows (counted in `only_in_b`, told from the server's point, the client its sender)."""
    raw = SERVER.read_bytes()
    recs = records(raw)
    mine = [p for p in packets(SERVER) if p.cport != packets(SERVER)[0].cport]
    alive = next(
        c
        for c in {p.cport for p in mine}
        if not any(p.flags & 4 for p in packets(CLIENT) if p.cport == c)
    )
    conn = [p for p in mine if p.cport == alive]
    data = [p for p in conn if not p.c2s and p.n]
    ack = next(p for p in conn if p.c2s and p.i > data[2].i)
    at = (recs[ack.i][0] + recs[ack.i + 1][0]) // 2
    recs.insert(ack.i + 1, (at, forged(recs[ack.i][1], FIN | ACK, ack=ack.ack, seq=ack.seq)))
    server = write_records(tmp_path / "server.pcap", raw[:24], recs)
    doc = analyze_json(str(CLIENT), str(server))
    (path,) = doc["paths"]
    assert (path["only_in_a"], path["only_in_b"]) == (2, 1)
    (f,) = [g for g in doc["findings"] if g["kind"] == "injected-segment"]
    assert f["facts"]["seen_at"] == [str(server), str(CLIENT)]
    first, far = f["timeline"]
    assert (first["frame"], first["file"], first["sender"]) == (ack.i + 2, str(server), "client")
    ts_c = read_table(str(CLIENT)).ts_ns
    last = max(p.i for p in packets(CLIENT) if p.cport == alive and int(ts_c[p.i]) <= at)
    assert (far["file"], far["frame"]) == (str(CLIENT), last + 1)
    assert far["note"].endswith("the client sends no such FIN here")
    assert [g["kind"] for g in doc["findings"]].count("middlebox-reset") == 1
