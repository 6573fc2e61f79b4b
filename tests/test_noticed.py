"""Answers that were wrong or confusing in use, each checked on a real recording.

- the Python API warned twice (RuntimeWarning and CaptureWarning) when ``max_active``
  evicted connections;
- close-wait-leak told a CLOSE_WAIT ended by the server's RST as the client closing;
- an h2c server's idle timeout (nginx, ``keepalive_timeout 1s``) was read as 0.90 s, from
  the client's RST_STREAM after the last exchange instead of from the exchange.
"""

from __future__ import annotations

import shutil
import subprocess
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

import tcpwhy
from tcpwhy.capture import read_table
from tcpwhy.diagnose.context import CLIENT, SERVER, Capture, Conn
from tcpwhy.diagnose.engine import diagnose_files
from tcpwhy.diagnose.registry import Settings

LAB = Path(str(resources.files("tcpwhy") / "data" / "lab"))
HTTP2 = Path(__file__).resolve().parent / "data" / "http2"
APACHE_STALE = HTTP2 / "h2c-upgrade-apache-stale.pcap"  # Apache mod_http2, Timeout 3
H2C_STALE = HTTP2 / "h2c-stale.pcap"  # nginx, h2c prior knowledge, keepalive_timeout 1s
H2_TLS_STALE = HTTP2 / "h2-tls-stale.pcap"  # the same server over TLS, ALPN h2


def _conn(path: Path, sid: int = 0) -> Conn:
    t = read_table(str(path))
    return Conn(Capture(t, np.zeros(len(t), np.int16), [path.name]), sid)


def test_max_active_warns_once_per_call(recwarn: pytest.WarningsRecorder) -> None:
    """One CaptureWarning at the caller's line, as the command prints one line; the
    connection builder's own RuntimeWarning is the same text and is not repeated."""
    cap = tcpwhy.open(LAB / "time-wait-reuse.pcap", max_active=1)
    conns = cap.connections
    assert any(e.startswith("evicted") for e in conns.to_arrow().column("emitted").to_pylist())
    got = [w for w in recwarn if "connections active at once" in str(w.message)]
    assert [w.category for w in got] == [tcpwhy.CaptureWarning]
    assert got[0].filename == __file__
    assert cap.warnings == [str(got[0].message)]
    assert cap.connections is conns  # kept: read once, warned once
    assert len([w for w in recwarn if "active at once" in str(w.message)]) == 1


def test_close_wait_ended_by_the_servers_rst_is_no_client_close() -> None:
    """Apache closed (GOAWAY, FIN); the client sat in CLOSE_WAIT for 35 s, wrote stream 3
    and the server's RST ended the connection: the client never closed it."""
    c = _conn(APACHE_STALE)
    rst = c.first_rst()
    assert rst is not None and c.side[rst] == SERVER and c.first_rst(CLIENT) is None
    assert c.first_fin(CLIENT) is None  # the client sent no FIN at all
    (f,) = [f for f in diagnose_files([str(APACHE_STALE)]).findings if f.kind == "close-wait-leak"]
    notes = {s.frame: s.note for s in f.timeline}
    assert notes[c.frame[rst]] == (
        "server ends the connection with RST, 35.00 s into the client's CLOSE_WAIT: "
        "the client never closed"
    )
    assert not any("client finally closes" in n for n in notes.values())
    wrote = c.last_data_before(rst, CLIENT)
    assert (
        wrote is not None and notes[c.frame[wrote]] == "client still writes 32 bytes, not closing"
    )
    assert f.summary.endswith("the client never did: the server ended it with RST 35.00 s later")
    assert "when the server ended the connection with RST" in f.explanation
    assert "before closing" not in f.explanation
    assert f.facts["reset_by_peer"] == 1 and f.facts["until_capture_end"] == 0
    assert any("Connection reset by peer" in e for e in f.errors)


def test_close_wait_ended_by_a_late_fin_still_says_so() -> None:
    """The other ending: the server's application closes 2.77 s after the client's FIN
    (fin-wait-2.pcap, with a 2 s threshold) — its own FIN, told as such."""
    (f,) = [
        f
        for f in diagnose_files([str(LAB / "fin-wait-2.pcap")], Settings(close_wait_s=2.0)).findings
        if f.kind == "close-wait-leak"
    ]
    assert any(s.note == "server finally closes (FIN) after 2.77 s" for s in f.timeline)
    assert not any("RST" in s.note for s in f.timeline)
    assert "closed only 2.77 s" in f.summary and f.facts["reset_by_peer"] == 0
    assert "before closing (FIN)" in f.explanation


def _idle_timeout(path: Path) -> float:
    (f,) = [f for f in diagnose_files([str(path)]).findings if f.kind == "stale-keepalive-reuse"]
    median: float = f.facts["server_idle_timeout_s"]["median"]
    return median


def test_h2c_idle_timeout_counts_from_the_last_exchange() -> None:
    """nginx (keepalive_timeout 1s) answered stream 7 and reset it; 0.1 s later the client
    cancelled the same stream (RST_STREAM), and the GOAWAY and FIN came 1.00 s after the
    server's last frame. The timeout reads 1.00 s, as over TLS where the client's frames
    cannot be read, not 0.90 s from the client's RST_STREAM."""
    from tcpwhy.decode import http2
    from tcpwhy.diagnose import http
    from tcpwhy.diagnose.stale_keepalive import client_control_rows, idle_start

    c = _conn(H2C_STALE)
    hc = http.h2(c)
    assert hc is not None and hc.frames is not None
    fin = c.first_fin(SERVER)
    assert fin is not None
    last = idle_start(c, fin)
    assert last is not None and c.side[last] == SERVER
    (ctl,) = [j for j in sorted(client_control_rows(c)) if last < j < fin]
    fr = hc.frames
    assert [int(x) for x in fr.ftype[fr.row == ctl]] == [http2.RST_STREAM]
    assert c.last_data_before(fin, CLIENT) == ctl  # the client's last data: not a request
    assert c.dt(ctl, fin) == pytest.approx(0.90, abs=0.01)  # the old, short reading
    if shutil.which("tshark"):
        out = subprocess.run(
            ["tshark", "-n", "-r", str(H2C_STALE), "-d", "tcp.port==18931,http2",
             "-Y", "http2.type == 3 && tcp.dstport == 18931", "-T", "fields", "-e", "frame.number"],
            check=True, capture_output=True, text=True, timeout=60,
        ).stdout  # fmt: skip
        assert [int(x) for x in out.split()] == [c.frame[ctl]]
    assert _idle_timeout(H2C_STALE) == pytest.approx(1.0, abs=0.01)
    assert _idle_timeout(H2_TLS_STALE) == pytest.approx(1.0, abs=0.01)
    (f,) = diagnose_files([str(H2C_STALE)]).findings
    assert "(server idle timeout ≈ 1.00 s)" in f.summary
    assert f"RST_STREAM on stream 7 at {c.s(ctl):.3f} s (frame {c.frame[ctl]})" in f.explanation
    assert "nothing was sent" not in f.explanation  # the client did send that frame


def test_http1_idle_start_is_the_last_data() -> None:
    """Without HTTP/2 frames nothing more is skipped: HTTP/1 readings stay as they were."""
    from tcpwhy.diagnose.stale_keepalive import client_control_rows, idle_start, last_data_before

    for name in ("stale-keepalive.pcap", "keepalive-race.pcap"):
        t = read_table(str(LAB / name))
        cap = Capture(t, np.zeros(len(t), np.int16), [name])
        for sid in range(cap.nstreams):
            c = Conn(cap, sid)
            assert client_control_rows(c) == frozenset()
            fin = c.first_fin(SERVER)
            if fin is not None:
                assert idle_start(c, fin) == last_data_before(c, fin)
