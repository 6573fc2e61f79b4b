"""HTTP/2 cleartext frames and their display filter fields against tshark 4.0.

tests/data/http2/h2c-nginx.pcap is a real exchange with nginx (``listen ... http2``,
prior knowledge, ``keepalive_timeout 1s``) driven by tests/data/http2/h2c_client.py: four
requests on one connection, one HEADERS frame whose header is cut across two segments,
one whose payload is, a PING, RST_STREAMs both ways, and the server's GOAWAY on idle before
its FIN. tests/data/http2/filters.expected.tsv holds the frames tshark selects for every
filter of filters.txt (``-d tcp.port==18931,http2``). `test_live_capture_matches_tshark`
records a new exchange the same way and compares every filter with tshark on it.
h2c-stale.pcap reuses the connection after the server's GOAWAY and FIN; h2-tls-nginx.pcap
and h2-tls-stale.pcap are the same over TLS 1.3 with ALPN h2 (a self-signed certificate).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from functools import cache
from pathlib import Path

import numpy as np
import pytest

from tcpwhy.capture import read_table
from tcpwhy.decode import http2
from tcpwhy.decode.table import PacketTable
from tcpwhy.filter import FilterContext, compile_filter
from tests.gates import need
from tests.recording import record_loopback, wait_until_written

HERE = Path(__file__).resolve().parent
REFS = HERE / "data" / "http2"
CAPTURE = REFS / "h2c-nginx.pcap"
FILTERS = (REFS / "filters.txt").read_text().splitlines()
EXPECTED = [line.split("\t") for line in (REFS / "filters.expected.tsv").read_text().splitlines()]
NGINX = "/usr/sbin/nginx"


@cache
def _table(path: str) -> PacketTable:
    return read_table(path)


def _frames(path: str, flt: str) -> list[int]:
    t = _table(path)
    m = compile_filter(flt).mask(t, FilterContext(t))
    return [int(f) for f in t["frame"][m].tolist()]


_TSHARK = ["tshark", "-T", "fields", "-e", "frame.number", "-r"]


def _tshark(path: str, port: int, flt: str) -> list[int]:
    out = subprocess.run(
        [*_TSHARK, path, "-d", f"tcp.port=={port},http2", "-Y", flt],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [int(x) for x in out.split()]


def test_reference_is_complete() -> None:
    assert [f for _, f, _ in EXPECTED] == FILTERS
    # every field selects something in the reference, or the test would not test it
    for name in (
        "http2.type",
        "http2.streamid",
        "http2.flags",
        "http2.flags.end_stream",
        "http2.flags.ack.ping",
        "http2.goaway.last_stream_id",
        "http2.goaway.error",
        "http2.rst_stream.error",
    ):
        assert any(f.startswith(name) and frames for _, f, frames in EXPECTED), name


@pytest.mark.parametrize(("capture", "flt", "frames"), EXPECTED, ids=lambda v: str(v)[:50])
def test_filter_matches_tshark(capture: str, flt: str, frames: str) -> None:
    want = [int(x) for x in frames.split(",") if x]
    assert _frames(str(REFS / capture), flt) == want


def test_frames_of_the_recording() -> None:
    """The walk finds the preface, GOAWAY's last stream id and error, and RST_STREAM's
    error, each on the segment that completes the frame (a frame cut across segments is
    on the later one)."""
    t = _table(str(CAPTURE))
    ctx = FilterContext(t)
    f = http2.find_frames(t, ctx.streams["stream"], ctx.streams["dir"])
    assert len(f.h2_streams) == 1
    frame = t["frame"]
    pre = [int(frame[r]) for r in f.row[f.ftype == -1]]
    assert len(pre) == 1 and bool(f.client[f.ftype == -1][0])
    goaway = f.ftype == http2.GOAWAY
    assert goaway.sum() == 1 and not f.client[goaway][0]
    # the GOAWAY names the highest stream the client opened, and is the server's last frame
    assert int(f.last_sid[goaway][0]) == int(f.sid[f.client & (f.ftype == http2.HEADERS)].max())
    assert int(f.error[goaway][0]) == 0
    srv = f.row[~f.client]
    assert int(f.row[goaway][0]) == int(srv.max())
    rst = f.ftype == http2.RST_STREAM
    assert sorted(f.error[rst].tolist()) == [0, 8]
    # a HEADERS frame whose header was cut: its first 5 bytes travel alone
    cut = [r for r in range(len(t)) if int(t["payload_len"][r]) == 5]
    assert len(cut) == 1 and cut[0] not in set(f.row.tolist())


def test_retransmission_and_gap() -> None:
    """A retransmitted segment adds no frame; a missing one ends the walk of its side."""
    t = _table(str(CAPTURE))
    ctx = FilterContext(t)
    st, d = ctx.streams["stream"], ctx.streams["dir"]
    base = http2.find_frames(t, st, d)
    data = [r for r in range(len(t)) if int(t["payload_len"][r]) > 0]
    # every data segment sent twice: the same frames on the first copies
    dup = sorted(list(range(len(t))) + data)
    idx = np.asarray(dup, np.int64)
    t2 = t.take(idx)
    f2 = http2.find_frames(t2, st[idx], d[idx])
    assert sorted(idx[f2.row].tolist()) == sorted(base.row.tolist())
    # the client's 5-byte segment lost: its HEADERS and every later client frame are gone
    cut = next(r for r in data if int(t["payload_len"][r]) == 5)
    keep = np.asarray([r for r in range(len(t)) if r != cut], np.int64)
    f3 = http2.find_frames(t.take(keep), st[keep], d[keep])
    client_rows = keep[f3.row[f3.client]]
    assert client_rows.max() < cut
    assert (keep[f3.row[~f3.client]] == base.row[~base.client]).all()


def test_not_http2_without_preface() -> None:
    """The TLS lab recording has no preface: no HTTP/2 stream."""
    lab = HERE.parent / "src" / "tcpwhy" / "data" / "lab" / "clean.pcap"
    t = _table(str(lab))
    ctx = FilterContext(t)
    assert not len(http2.find_frames(t, ctx.streams["stream"], ctx.streams["dir"]).h2_streams)
    assert not compile_filter("http2").mask(t, ctx).any()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


NGINX_CONF = """daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{ worker_connections 64; }}
http {{
  access_log off;
  client_body_temp_path {d}; proxy_temp_path {d}; fastcgi_temp_path {d};
  uwsgi_temp_path {d}; scgi_temp_path {d};
  keepalive_timeout 1s;
  server {{
    listen 127.0.0.1:{port} http2;
    location / {{ return 200 "hello\\n"; }}
  }}
}}
"""


def test_live_capture_matches_tshark(tmp_path: Path) -> None:
    """Record the exchange with nginx again and compare every filter with tshark on it."""
    need(os.geteuid() == 0, "needs root to capture on lo")
    need(os.path.exists(NGINX), "nginx not installed")
    need(shutil.which("tcpdump") is not None, "tcpdump not installed")
    need(shutil.which("tshark") is not None, "tshark not installed")
    port = _free_port()
    (tmp_path / "nginx.conf").write_text(NGINX_CONF.format(d=tmp_path, port=port))
    pcap = tmp_path / "h2c.pcap"
    ng = subprocess.Popen(
        [NGINX, "-c", str(tmp_path / "nginx.conf"), "-p", str(tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    td = record_loopback(pcap, port)
    try:
        # probe connections until nginx answers and tcpdump has written one (tcpdump
        # flushes its file on each packet, so a packet in the file says it listens)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                if pcap.exists() and pcap.stat().st_size > 24:
                    break
            except OSError:
                pass
            time.sleep(0.05)
        subprocess.run(
            [sys.executable, str(REFS / "h2c_client.py"), str(port)],
            check=True,
            timeout=20,
            capture_output=True,
        )
        wait_until_written(pcap)
    finally:
        td.terminate()
        ng.terminate()
        td.wait(timeout=10)
        ng.wait(timeout=10)
    t = read_table(str(pcap))
    ctx = FilterContext(t)
    f = http2.find_frames(t, ctx.streams["stream"], ctx.streams["dir"])
    # the probe connections above have no preface; the client's does
    assert len(f.h2_streams) == 1 and (f.ftype == http2.GOAWAY).sum() == 1
    for flt in FILTERS:
        flt = flt.replace("18931", str(port))
        m = compile_filter(flt).mask(t, ctx)
        assert [int(x) for x in t["frame"][m].tolist()] == _tshark(str(pcap), port, flt), flt


def _conn(path: Path) -> object:
    from tcpwhy.diagnose.context import Capture, Conn

    t = read_table(str(path))
    cap = Capture(t, np.zeros(len(t), np.int16), [str(path)])
    return Conn(cap, 0)


def test_idle_close_is_no_finding_and_no_http1_exchange() -> None:
    """The server's GOAWAY then FIN on an idle h2c connection is its orderly close: no
    finding, and no HTTP/1 message is read from the frames (the preface is no request)."""
    from tcpwhy.diagnose import http
    from tcpwhy.diagnose.engine import diagnose_files

    assert diagnose_files([str(CAPTURE)]).findings == []
    c = _conn(CAPTURE)
    assert http.messages(c) == []  # type: ignore[arg-type]
    hc = http.h2(c)  # type: ignore[arg-type]
    assert hc is not None and hc.how == "h2c"
    g = hc.goaway()
    assert g is not None and g[1:] == (7, 0)


def test_reuse_after_goaway_names_the_unprocessed_stream() -> None:
    """The client sends a new stream after the server's idle close (GOAWAY, FIN; answered
    by RST): stale keep-alive reuse, and the finding says the connection is HTTP/2 and
    that the stream, above GOAWAY's last stream id, was not processed and is safe to retry."""
    from tcpwhy.diagnose.engine import diagnose_files

    path = REFS / "h2c-stale.pcap"
    (f,) = diagnose_files([str(path)]).findings
    assert f.kind == "stale-keepalive-reuse"
    assert "HTTP/2 HEADERS on stream 9" in f.summary
    assert "pooled, multiplexed HTTP/2 connection" in f.summary
    assert "GOAWAY, last stream id 7, NO_ERROR" in f.summary
    assert "stream 9 was not processed and is safe to retry" in f.summary
    # the same stream and GOAWAY as tshark's view of the frames
    got = _tshark(str(path), 18931, "http2.type == 7 || (http2.type == 1 && http2.streamid == 9)")
    assert got == _frames(str(path), "http2.goaway.last_stream_id == 7 || http2.streamid == 9")
    assert len(got) == 2


def test_tls_alpn_h2_idle_close() -> None:
    """nginx over TLS 1.3 with ALPN h2 (two requests, then the server's encrypted GOAWAY,
    close_notify and FIN on idle): the connection is HTTP/2 by ALPN, the encrypted GOAWAY
    is not taken for a response, and the orderly close is no finding."""
    from tcpwhy.diagnose import http
    from tcpwhy.diagnose.engine import diagnose_files

    path = REFS / "h2-tls-nginx.pcap"
    assert diagnose_files([str(path)]).findings == []
    c = _conn(path)
    hc = http.h2(c)  # type: ignore[arg-type]
    assert hc is not None and hc.how == "ALPN h2" and hc.goaway() is None
    msgs = http.messages(c)  # type: ignore[arg-type]
    assert [m.is_request for m in msgs] == [True, False] * 3
    # the server's last records (GOAWAY, close_notify) come after the last response
    t = _table(str(path))
    data = [i for i in range(len(t)) if int(t["payload_len"][i]) > 0]
    goaway = data[-2]  # the server's encrypted GOAWAY, then its close_notify
    assert int(t["sport"][goaway]) == int(t["sport"][data[-1]]) == int(t["sport"][1])
    assert all(m.i < goaway and m.end < goaway for m in msgs)


def test_tls_alpn_h2_reuse_after_close_says_http2() -> None:
    """Over TLS with ALPN h2, a request written after the server's idle close is stale
    keep-alive reuse, named an encrypted request on an HTTP/2 connection (its frames
    cannot be read)."""
    from tcpwhy.diagnose.engine import diagnose_files

    (f,) = diagnose_files([str(REFS / "h2-tls-stale.pcap")]).findings
    assert f.kind == "stale-keepalive-reuse"
    assert "an encrypted request of " in f.summary
    assert "on an HTTP/2 connection (ALPN h2: pooled, multiplexed)" in f.summary


def test_stream_crossing_goaway_is_cut_off() -> None:
    """A new stream that left before the server's GOAWAY arrived (here: the stale
    recording's late HEADERS moved before the GOAWAY) is named as cut off by it."""
    from tcpwhy.diagnose import http
    from tcpwhy.diagnose.context import Capture, Conn

    t = _table(str(REFS / "h2c-stale.pcap"))
    ctx = FilterContext(t)
    f = http2.find_frames(t, ctx.streams["stream"], ctx.streams["dir"])
    late = int(f.row[(f.ftype == http2.HEADERS) & (f.sid == 9)][0])
    goaway = int(f.row[f.ftype == http2.GOAWAY][0])
    order = [r for r in range(len(t)) if r != late]
    order.insert(order.index(goaway), late)
    t2 = t.take(np.asarray(order, np.int64))
    c = Conn(Capture(t2, np.zeros(len(t2), np.int16), ["x"]), 0)
    i = order.index(late)
    text = http.describe_request(c, i)
    assert text.startswith("HTTP/2 HEADERS on stream 9 (on a pooled, multiplexed HTTP/2")
    assert "GOAWAY that crossed it said last stream id 7, NO_ERROR" in text
    assert "stream 9 was not processed and is safe to retry" in text
    # before the GOAWAY, stream 5 was processed: no such words
    early = int(f.row[(f.ftype == http2.HEADERS) & (f.sid == 5) & f.client][0])
    assert "retry" not in http.describe_request(c, order.index(early))


_ENCRYPTED = [
    *(
        (f"src/tcpwhy/data/lab/{n}.pcap", 8080)
        for n in (
            "clean-tls",
            "stale-keepalive-tls",
            "keepalive-race-tls",
            "tls-fatal-alert",
            "tls-truncation",
        )
    ),
    ("tests/data/http2/h2-tls-nginx.pcap", 18932),
    ("tests/data/http2/h2-tls-stale.pcap", 18932),
]


@pytest.mark.parametrize(("capture", "port"), _ENCRYPTED, ids=lambda v: str(v).split("/")[-1])
def test_encrypted_captures_have_no_http2_frames_as_tshark(capture: str, port: int) -> None:
    """On the TLS lab recordings and over TLS with ALPN h2, the http2 fields select what
    tshark selects without keys (decoded as TLS on the server's port): no frame, and every
    payload frame is not http2."""
    need(shutil.which("tshark") is not None, "tshark not installed")
    path = str(HERE.parent / capture)
    for flt in ("http2", "http2.type == 0", "http2.streamid", "!http2 && tcp.len > 0"):
        out = subprocess.run(
            [
                *("tshark", "-n", "-r", path, "-d", f"tcp.port=={port},tls"),
                *("-Y", flt, "-T", "fields", "-e", "frame.number"),
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert _frames(path, flt) == [int(x) for x in out.split()], flt
    assert not _frames(path, "http2") and _frames(path, "!http2 && tcp.len > 0")
