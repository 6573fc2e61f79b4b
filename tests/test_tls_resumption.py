"""TLS session resumption read from the hellos, against tshark 4.0's view of the same hellos.

tshark does not say "resumed"; what it shows decides it: in TLS 1.3 the ServerHello carries
a pre_shared_key extension (41); before it the ServerHello's session id is the ClientHello's
non-empty one and the server sends no Certificate (an abbreviated handshake).
"""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import threading
import time
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from tcpwhy.capture import read_table
from tcpwhy.diagnose import tls
from tests.gates import need
from tests.recording import wait_until_written

LAB = Path(str(resources.files("tcpwhy") / "data" / "lab"))
LAB_TLS = sorted(p.name for p in LAB.glob("*tls*.pcap"))


Hellos = dict[int, dict[str, tuple[str, set[str], bool]]]


def _tshark_hellos(pcap: Path, port: int) -> tuple[Hellos, set[int]]:
    """Per TCP stream, its ClientHello ("ch": session id, extension types, a session_ticket
    with data) and ServerHello ("sh": session id, extension types, TLS 1.3 chosen) as tshark
    dissects them; and the streams where the server sent a Certificate in clear."""
    out = subprocess.run(
        ["tshark", "-r", str(pcap), "-d", f"tcp.port=={port},tls", "-T", "fields",
         "-E", "occurrence=a", "-e", "tcp.stream", "-e", "tls.handshake.type",
         "-e", "tls.handshake.session_id", "-e", "tls.handshake.extension.type",
         "-e", "tls.handshake.extension.len",
         "-e", "tls.handshake.extensions.supported_version",
         "-Y", "tls.handshake.type"],
        check=True, capture_output=True, text=True, timeout=60,
    ).stdout  # fmt: skip
    hellos: Hellos = {}
    cert: set[int] = set()
    for line in out.splitlines():
        stream, types, sid, exts, lens, sv = (line.split("\t") + [""] * 6)[:6]
        s, t = int(stream), types.split(",")
        et, el = exts.split(","), lens.split(",")
        if "1" in t:
            ticket = any(x == "35" and y != "0" for x, y in zip(et, el, strict=False))
            hellos.setdefault(s, {})["ch"] = (sid.replace(":", ""), set(et), ticket)
        if "2" in t:
            hellos.setdefault(s, {})["sh"] = (sid.replace(":", ""), set(et), sv == "0x0304")
        if "11" in t:
            cert.add(s)
    return hellos, cert


def _tshark_resumed(pcap: Path, port: int) -> dict[int, bool]:
    """Per TCP stream with a ServerHello, whether tshark's fields show a resumption."""
    hellos, cert = _tshark_hellos(pcap, port)
    got = {}
    for s, h in hellos.items():
        if "sh" not in h:
            continue
        sid, exts, tls13 = h["sh"]
        if tls13:
            got[s] = "41" in exts
        else:
            ch = h.get("ch", ("", set(), False))[0]
            got[s] = bool(ch) and ch == sid and s not in cert
    return got


def _tcpwhy_conns(pcap: Path) -> dict[int, tls.TLSConn]:
    from tcpwhy.diagnose.context import Capture, Conn

    t = read_table(str(pcap))
    cap = Capture(t, np.zeros(len(t), np.int16), [str(pcap)])
    got = {}
    for sid in range(cap.nstreams):
        tc = tls.of(Conn(cap, sid))
        if tc is not None:
            got[int(cap.stream_numbers[sid])] = tc
    return got


def _tcpwhy_resumed(pcap: Path) -> dict[int, bool]:
    return {s: tc.resumed for s, tc in _tcpwhy_conns(pcap).items() if tc.resumed is not None}


def _check_hellos(pcap: Path, port: int) -> None:
    """Session ids, session_ticket with data and pre_shared_key as tshark reads them."""
    hellos, _ = _tshark_hellos(pcap, port)
    conns = _tcpwhy_conns(pcap)
    assert set(conns) == set(hellos)
    for s, h in hellos.items():
        tc = conns[s]
        if "ch" in h:
            assert tc.client_hello is not None
            sid, exts, ticket = h["ch"]
            assert tc.client_hello.session_id.hex() == sid, s
            assert tc.client_hello.psk == ("41" in exts), s
            assert tc.client_hello.ticket == ticket, s
        if "sh" in h:
            assert tc.server_hello is not None
            sid, exts, _ = h["sh"]
            assert tc.server_hello.session_id.hex() == sid, s
            assert tc.server_hello.psk == ("41" in exts), s


@pytest.mark.parametrize("name", LAB_TLS)
def test_lab_recordings_resumption_as_tshark_sees_it(name: str) -> None:
    """The shipped recordings make full handshakes only (each client starts afresh)."""
    need(shutil.which("tshark") is not None, "tshark not installed")
    ref = _tshark_resumed(LAB / name, 8080)
    assert ref, name
    assert _tcpwhy_resumed(LAB / name) == ref
    _check_hellos(LAB / name, 8080)


def _serve(srv: socket.socket, ctx: ssl.SSLContext, stop: threading.Event) -> None:
    srv.settimeout(0.2)
    while not stop.is_set():
        try:
            c, _ = srv.accept()
        except TimeoutError:
            continue
        c.settimeout(5)
        try:
            with ctx.wrap_socket(c, server_side=True) as s:
                s.recv(100)
                s.sendall(b"pong")
        except (OSError, ssl.SSLError):
            pass


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_live_resumption_matches_tshark_and_the_client(tmp_path: Path, version: object) -> None:
    """A full handshake, then one resuming its session (ticket or id), recorded on lo."""
    need(os.geteuid() == 0, "needs root to capture on lo")
    need(shutil.which("tcpdump") is not None, "tcpdump not installed")
    need(shutil.which("tshark") is not None, "tshark not installed")
    need(shutil.which("openssl") is not None, "openssl not installed")
    from tcpwhy.lab.scenarios_tls import SNI, Certs

    certs = Certs()
    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]
    sctx = certs.server_context()
    cctx = certs.client_context()
    cctx.maximum_version = version  # type: ignore[assignment]
    pcap = tmp_path / "resume.pcap"
    td = subprocess.Popen(
        ["tcpdump", "-i", "lo", "--immediate-mode", "-U", "-w", str(pcap), f"tcp port {port}"],
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "tcpdump.err").open("w"),
    )
    stop = threading.Event()
    th = threading.Thread(target=_serve, args=(srv, sctx, stop), daemon=True)
    th.start()
    reused: list[bool] = []
    try:
        # wait until tcpdump writes (a probe connection's packets reach the file)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            time.sleep(0.1)
            if pcap.exists() and pcap.stat().st_size > 24:
                break
        session = None
        for _ in range(3):
            raw = socket.create_connection(("127.0.0.1", port), timeout=5)
            with cctx.wrap_socket(raw, server_hostname=SNI, session=session) as s:
                s.sendall(b"ping")
                assert s.recv(100) == b"pong"  # a TLS 1.3 ticket arrives before it
                reused.append(s.session_reused)
                session = s.session
        wait_until_written(pcap)
    finally:
        stop.set()
        th.join(timeout=5)
        srv.close()
        td.terminate()
        td.wait(timeout=10)
        certs.close()
    assert reused == [False, True, True]
    ref = _tshark_resumed(pcap, port)
    # every handshake recorded (tcpdump's own count of drops says why if not)
    assert len(ref) == len(reused), (tmp_path / "tcpdump.err").read_text()
    mine = _tcpwhy_resumed(pcap)
    assert mine == ref
    _check_hellos(pcap, port)
    # the probe connection has no handshake; the three that do, in order
    assert [mine[s] for s in sorted(mine)] == reused
    # Python's client resumes with what the server gave it: a ticket (TLS 1.2), a PSK (1.3)
    offers = []
    for tc in (tc for _, tc in sorted(_tcpwhy_conns(pcap).items()) if tc.resumed is not None):
        assert tc.client_hello is not None
        offers.append(tc.client_hello.psk or tc.client_hello.ticket)
    assert offers == reused
    # where a person reads it: the version text of findings on the connection
    texts = [
        tc.version_text for _, tc in sorted(_tcpwhy_conns(pcap).items()) if tc.resumed is not None
    ]
    want = "TLS 1.3" if version == ssl.TLSVersion.TLSv1_3 else "TLS 1.2"
    assert texts == [f"resumed {want}" if r else want for r in reused]
    # the session id length as a display filter field, frame for frame with tshark
    from tcpwhy.filter import FilterContext, compile_filter

    t = read_table(str(pcap))
    ctx = FilterContext(t)
    for flt in (
        "tls.handshake.session_id_length",
        "tls.handshake.session_id_length == 0",
        "tls.handshake.session_id_length == 32",
        "tls.handshake.session_id_length > 0 and tls.handshake.type == 1",
    ):
        ref_frames = subprocess.run(
            ["tshark", "-n", "-r", str(pcap), "-d", f"tcp.port=={port},tls", "-Y", flt,
             "-T", "fields", "-e", "frame.number"],
            check=True, capture_output=True, text=True, timeout=60,
        ).stdout.split()  # fmt: skip
        mine_frames = t["frame"][compile_filter(flt).mask(t, ctx)].tolist()
        assert [int(x) for x in ref_frames] == mine_frames, flt
        assert mine_frames or flt.endswith("== 0"), flt


def test_encrypted_finished_is_no_certificate() -> None:
    """TLS 1.2: after the server's change_cipher_spec its Finished is an encrypted handshake
    record whose first byte is ciphertext (11 one time in 256); only a clear Certificate
    before it says the handshake was a full one. A loopback run met that byte."""
    from tcpwhy.decode.tls import CHANGE_CIPHER_SPEC, HANDSHAKE, Hello

    sid = bytes(range(32))

    def conn(*records: tls.Record) -> tls.TLSConn:
        return tls.TLSConn(
            list(records),
            version=0x0303,
            client_hello=Hello(session_id=sid),
            server_hello=Hello(session_id=sid),
        )

    hello = tls.Record(tls.SERVER, 0, 0, HANDSHAKE, 80, 2, -1)
    ccs = tls.Record(tls.SERVER, 1, 1, CHANGE_CIPHER_SPEC, 1, -1, -1)
    cert = tls.Record(tls.SERVER, 1, 1, HANDSHAKE, 400, 11, -1)
    finished = tls.Record(tls.SERVER, 2, 2, HANDSHAKE, 40, 11, -1)
    assert conn(hello, ccs, finished).resumed is True
    assert conn(hello, cert, ccs, finished).resumed is False
    assert tls.TLSConn([hello], version=0x0303, server_hello=Hello(session_id=sid)).resumed is False
    assert tls.TLSConn([hello], version=0x0303).resumed is None
