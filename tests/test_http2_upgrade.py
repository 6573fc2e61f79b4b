"""HTTP/1.1 ``Upgrade: h2c`` then ``101 Switching Protocols``: the frames start after the
heads (the client's after its preface), as tshark 4.0 dissects them, and the diagnosis
reads them as HTTP/2, as on a prior-knowledge h2c connection.

`test_upgrade_frames_match_tshark` records live on lo: curl ``--http2`` (which asks for
the upgrade on http://) against a small server that answers 101, then SETTINGS, SETTINGS
ack and GOAWAY. tests/data/http2/h2c-upgrade-apache*.pcap are Apache httpd 2.4 with
mod_http2 (``Protocols h2c http/1.1``; nginx does not upgrade) and
tests/data/http2/h2c_upgrade_client.py, made by tests/data/http2/generate_upgrade.sh:
the upgrade request is answered on stream 1; the server then ends the connection with
GOAWAY (last stream id 1) and FIN as the client's preface arrives, and the client's
stream 3 comes after it, at once (the server still reads: no reset) or 35 s later (the
server has closed: RST). tshark reads the stream as HTTP by ``-d tcp.port==N,http``;
tcpwhy by content.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tcpwhy.capture import read_table
from tcpwhy.decode import http2
from tcpwhy.diagnose import http
from tcpwhy.diagnose.context import Capture, Conn
from tcpwhy.filter import FilterContext, compile_filter
from tests.gates import need
from tests.recording import record_loopback, wait_until_written

REFS = Path(__file__).resolve().parent / "data" / "http2"
APACHE = REFS / "h2c-upgrade-apache.pcap"
APACHE_STALE = REFS / "h2c-upgrade-apache-stale.pcap"
APACHE_PORT = 18933

SERVER = r"""
import socket, sys
srv = socket.create_server(("127.0.0.1", 0))
print(srv.getsockname()[1], flush=True)
c, _ = srv.accept()
buf = b""
while b"\r\n\r\n" not in buf:
    buf += c.recv(4096)
c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n")
c.sendall(bytes.fromhex("000000040000000000"))  # SETTINGS
c.settimeout(5)
if c.recv(4096):  # the client's preface and SETTINGS
    c.sendall(bytes.fromhex("000000040100000000"))  # SETTINGS ack
    c.sendall(bytes.fromhex("0000080700000000000000000100000000"))  # GOAWAY, last stream 1
# read until the client closes: a close with unread data (the client's SETTINGS ack) resets
# the connection and drops what is still unsent, the GOAWAY on a loaded machine
c.shutdown(socket.SHUT_WR)
try:
    while c.recv(4096):
        pass
except OSError:
    pass
c.close()
"""

FILTERS = (
    "http2",
    "http2.type",
    "http2.type == 4",
    "http2.type == 7",
    "http2.flags",
    "http2.goaway.last_stream_id == 1",
    "http2.streamid == 0",
)


def _tshark(pcap: Path, port: int, flt: str) -> list[int]:
    out = subprocess.run(
        ["tshark", "-n", "-r", str(pcap), "-d", f"tcp.port=={port},http", "-Y", flt,
         "-T", "fields", "-e", "frame.number"],
        check=True, capture_output=True, text=True, timeout=60,
    ).stdout  # fmt: skip
    return [int(x) for x in out.split()]


def test_upgrade_frames_match_tshark(tmp_path: Path) -> None:
    need(os.geteuid() == 0, "needs root to capture on lo")
    need(shutil.which("tcpdump") is not None, "tcpdump not installed")
    need(shutil.which("tshark") is not None, "tshark not installed")
    need(shutil.which("curl") is not None, "curl not installed")
    srv = subprocess.Popen(
        [sys.executable, "-c", SERVER], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    assert srv.stdout is not None
    port = int(srv.stdout.readline())
    pcap = tmp_path / "upgrade.pcap"
    td = record_loopback(pcap, port)
    try:
        # tcpdump writes its file header once it listens
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not (pcap.exists() and pcap.stat().st_size >= 24):
            time.sleep(0.05)
        time.sleep(0.5)
        subprocess.run(
            ["curl", "-s", "--http2", "-o", "/dev/null", f"http://127.0.0.1:{port}/"],
            timeout=20,
            capture_output=True,
        )
        srv.wait(timeout=10)
        wait_until_written(pcap)
    finally:
        td.terminate()
        td.wait(timeout=10)
        if srv.poll() is None:
            srv.kill()
    t = read_table(str(pcap))
    ctx = FilterContext(t)
    f = http2.find_frames(t, ctx.streams["stream"], ctx.streams["dir"])
    assert f.h2_streams.tolist() == [0]
    # the server's SETTINGS, SETTINGS ack and GOAWAY; the client's preface and SETTINGS
    assert (f.ftype == http2.GOAWAY).sum() == 1 and (f.ftype == -1).sum() == 1
    for flt in FILTERS:
        m = compile_filter(flt).mask(t, ctx)
        ref = _tshark(pcap, port, flt)
        assert ref, flt
        assert [int(x) for x in t["frame"][m].tolist()] == ref, flt


def _conn(path: Path) -> Conn:
    t = read_table(str(path))
    return Conn(Capture(t, np.zeros(len(t), np.int16), [str(path)]), 0)


def _rows(c: Conn, frames: list[int]) -> list[int]:
    return [c.frame.index(f) for f in frames]


@pytest.mark.parametrize("path", [APACHE, APACHE_STALE], ids=lambda p: p.name)
def test_apache_frames_match_tshark(path: Path) -> None:
    """The filters see the same frames as tshark on the Apache recordings, and the
    diagnosis walks the same frames as the filters (its rows are the table's)."""
    need(shutil.which("tshark") is not None, "tshark not installed")
    t = read_table(str(path))
    ctx = FilterContext(t)
    for flt in (*FILTERS, "http2.type == 1 && http2.streamid == 3", "http2.streamid == 1"):
        m = compile_filter(flt).mask(t, ctx)
        ref = _tshark(path, APACHE_PORT, flt)
        assert ref, flt
        assert [int(x) for x in t["frame"][m].tolist()] == ref, flt
    f = http2.find_frames(t, ctx.streams["stream"], ctx.streams["dir"])
    c = _conn(path)
    hc = http.h2(c)
    assert hc is not None and hc.frames is not None
    got = c.rows[hc.frames.row]
    assert got.tolist() == f.row.tolist()
    assert hc.frames.ftype.tolist() == f.ftype.tolist()


@pytest.mark.parametrize("path", [APACHE, APACHE_STALE], ids=lambda p: p.name)
def test_upgrade_is_http2_in_the_diagnosis(path: Path) -> None:
    """After the heads both sides are HTTP/2, as with prior knowledge: the HTTP/1 messages
    are the request and the 101 alone (the frames after them are no response data), the
    server's GOAWAY is read (last stream id 1, NO_ERROR, on the frame tshark shows it),
    and the client's stream 3, above it, is named as not processed and safe to retry."""
    c = _conn(path)
    hc = http.h2(c)
    assert hc is not None and hc.how == "h2c upgrade"
    req, resp = http.messages(c)
    assert (req.is_request, req.line, resp.is_request, resp.status) == (True, "GET /a", False, 101)
    assert req.end == req.i and resp.end == resp.i  # no HTTP/2 frame is part of them
    assert hc.upgrade == (req.i, resp.i)
    g = hc.goaway()
    assert g is not None and g[1:] == (1, 0)
    frames = _tshark(path, APACHE_PORT, "http2.type == 7") if shutil.which("tshark") else None
    if frames is not None:
        assert [c.frame[g[0]]] == frames
    fin = c.first_fin(1)
    assert fin is not None and g[0] < fin
    assert http.last_response_before(c, fin) is None  # its responses since are frames
    # stream 3: after the GOAWAY, above its last stream id
    h3 = int(hc.frames.row[(hc.frames.ftype == http2.HEADERS) & (hc.frames.sid == 3)][0])  # type: ignore[union-attr]
    assert http.request_at(c, h3) is None  # not part of the HTTP/1 request
    text = http.describe_request(c, h3)
    assert text.startswith("HTTP/2 HEADERS on stream 3 (on a pooled, multiplexed HTTP/2")
    assert "GOAWAY, last stream id 1, NO_ERROR" in text
    assert "stream 3 was not processed and is safe to retry" in text
    first = http.describe_request(c, req.i)
    assert first.startswith(
        "GET /a, the HTTP/1.1 request that asked to upgrade to h2c: HTTP/2 stream 1"
    )
    assert "retry" not in first  # stream 1 was processed (GOAWAY's last stream id)


def test_stale_reuse_after_goaway_is_diagnosed() -> None:
    """The stream sent 35 s after the server's GOAWAY and FIN draws a RST: the client kept
    the half-closed connection (CLOSE_WAIT) and wrote into it."""
    from tcpwhy.diagnose.engine import diagnose_files

    kinds = sorted(f.kind for f in diagnose_files([str(APACHE_STALE)]).findings)
    assert kinds == ["close-wait-leak", "data-after-fin"]
    c = _conn(APACHE_STALE)
    rst = c.first_rst()
    assert rst is not None
    last = c.last_data_before(rst + 1, 0)
    assert last is not None and c.dt(c.first_fin(1), last) > 30  # type: ignore[arg-type]
    assert "stream 3 was not processed" in http.describe_request(c, last)


def test_upgrade_needs_the_101() -> None:
    """The same request answered by anything but 101 stays HTTP/1 (no HTTP/2 view)."""
    t = read_table(str(APACHE))
    c = _conn(APACHE)
    hc = http.h2(c)
    assert hc is not None and hc.upgrade is not None
    resp_row = int(c.rows[hc.upgrade[1]])
    data = t.data.copy()
    o = int(t["payload_off"][resp_row])
    data[o + 9 : o + 12] = np.frombuffer(b"200", np.uint8)
    from tcpwhy.decode.table import PacketTable

    t2 = PacketTable(dict(t.cols), data)
    c2 = Conn(Capture(t2, np.zeros(len(t2), np.int16), ["x"]), 0)
    assert http.h2(c2) is None
    assert [m.line for m in http.messages(c2)][:2] == ["GET /a", "200 Switching Protocols"]


H2C_STALE = REFS / "h2c-stale.pcap"  # nginx, prior knowledge, keepalive_timeout 1s
H2_TLS_STALE = REFS / "h2-tls-stale.pcap"  # the same over TLS, ALPN h2


def _tshark_rows(pcap: Path, flt: str) -> list[int]:
    out = subprocess.run(
        ["tshark", "-n", "-r", str(pcap), "-d", "tcp.port==18931,http2", "-Y", flt,
         "-T", "fields", "-e", "frame.number"],
        check=True, capture_output=True, text=True, timeout=60,
    ).stdout  # fmt: skip
    return [int(x) for x in out.split()]


@pytest.mark.parametrize(
    ("path", "goaway"),
    [
        (H2C_STALE, "http2.type == 7"),
        (H2_TLS_STALE, "tls.record.content_type == 23 && tcp.srcport == 18932"),
    ],
    ids=lambda p: p.name if isinstance(p, Path) else "",
)
def test_idle_close_with_goaway_is_stale_reuse(path: Path, goaway: str) -> None:
    """nginx closes an idle HTTP/2 connection with GOAWAY then FIN; the client's next stream,
    0.7 s later, draws a RST. The GOAWAY is the server's goodbye, not its last reply: the
    idle gap runs up to it, so this is stale keep-alive reuse, prior knowledge or ALPN h2."""
    from tcpwhy.diagnose.engine import diagnose_files
    from tcpwhy.diagnose.model import Severity
    from tcpwhy.diagnose.stale_keepalive import goaway_rows, idle_start, last_data_before

    c = _conn(path)
    fin = c.first_fin(1)
    assert fin is not None
    bye = sorted(goaway_rows(c))
    assert len(bye) == 1 and bye[0] < fin
    if shutil.which("tshark"):  # the GOAWAY (h2c) or the server's last application record
        frames = [f for f in _tshark_rows(path, goaway) if f < c.frame[fin]]
        assert c.frame[bye[0]] == frames[-1]
    assert c.last_data_before(fin, 1) == bye[0]  # read as data, the close would not be idle
    last = idle_start(c, fin)
    assert last is not None and last < bye[0]
    idle = c.dt(last, fin)
    assert 0.95 < idle < 1.05  # keepalive_timeout 1s, from the last exchange
    assert c.dt(bye[0], fin) < 0.01
    (f,) = diagnose_files([str(path)]).findings
    assert (f.kind, f.severity) == ("stale-keepalive-reuse", Severity.ERROR)
    assert f.facts["server_idle_timeout_s"]["median"] == round(idle, 3)
    notes = {s.frame: s.note for s in f.timeline}
    assert notes[c.frame[bye[0]]].startswith("server says goodbye: ")
    assert notes[c.frame[last_data_before(c, fin, 1)]].endswith("sits idle in the pool")  # type: ignore[arg-type]
    if path == H2C_STALE:
        assert "GOAWAY, last stream id 7, NO_ERROR" in notes[c.frame[bye[0]]]
        assert "stream 9 was not processed and is safe to retry" in f.summary


def test_goaway_at_once_is_no_idle_close_and_no_goodbye() -> None:
    """Apache ends the upgraded connection with GOAWAY (last stream id 1) and FIN as soon
    as it has answered stream 1, not after idling; the client's stream 3, 35 s later, is a
    request on a closed connection (never processed: safe to retry), not an answer to the
    GOAWAY that would end an orderly exchange, and not an idle-timeout story."""
    from tcpwhy.diagnose.engine import diagnose_files
    from tcpwhy.diagnose.model import Severity
    from tcpwhy.diagnose.stale_keepalive import goaway_rows, last_data_before

    c = _conn(APACHE_STALE)
    fin = c.first_fin(1)
    assert fin is not None
    (bye,) = goaway_rows(c)
    if shutil.which("tshark"):
        assert [c.frame[bye]] == _tshark(APACHE_STALE, APACHE_PORT, "http2.type == 7")
    last = last_data_before(c, fin)
    assert last is not None and last < bye and c.dt(last, fin) < 0.05  # no idle gap
    found = {f.kind: f for f in diagnose_files([str(APACHE_STALE)]).findings}
    assert "stale-keepalive-reuse" not in found
    f = found["data-after-fin"]
    assert f.severity is Severity.WARNING
    assert "orderly" not in f.summary
    assert "HTTP/2 HEADERS on stream 3" in f.summary
    assert "stream 3 was not processed and is safe to retry" in f.summary
    assert "GOAWAY" in f.causes[0]
    assert any("last stream id" in x for x in f.fixes)


def test_http1_has_no_goaway_rows() -> None:
    """On HTTP/1 nothing is skipped: the idle gap is the one measured before."""
    from importlib import resources

    from tcpwhy.diagnose.stale_keepalive import goaway_rows, last_data_before

    lab = Path(str(resources.files("tcpwhy") / "data" / "lab"))
    for name in ("stale-keepalive.pcap", "stale-keepalive-tls.pcap"):
        t = read_table(str(lab / name))
        cap = Capture(t, np.zeros(len(t), np.int16), [name])
        for sid in range(cap.nstreams):
            c = Conn(cap, sid)
            assert goaway_rows(c) == frozenset()
            fin = c.first_fin(1)
            if fin is not None:
                assert last_data_before(c, fin) == c.last_data_before(fin)
