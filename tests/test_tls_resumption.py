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
from tcpwhy.decode.table import ACK, FIN, PSH, SYN
from tcpwhy.decode.tls import APPLICATION_DATA, CHANGE_CIPHER_SPEC, HANDSHAKE
from tcpwhy.diagnose import tls
from tests import craft
from tests.gates import need
from tests.recording import record_loopback, wait_until_written

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
    td = record_loopback(pcap, port, (tmp_path / "tcpdump.err").open("w"))
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
    got = _frames_as_tshark(
        pcap,
        port,
        "tls.handshake.session_id_length",
        "tls.handshake.session_id_length == 0",
        "tls.handshake.session_id_length == 32",
        "tls.handshake.session_id_length > 0 and tls.handshake.type == 1",
    )
    for flt, mine_frames in got.items():
        assert mine_frames or flt.endswith("== 0"), flt


def _frames_as_tshark(pcap: Path, port: int, *filters: str) -> dict[str, list[int]]:
    """Per display filter: the frames tcpwhy matches, required to be tshark's."""
    from tcpwhy.filter import FilterContext, compile_filter

    t = read_table(str(pcap))
    ctx = FilterContext(t)
    out = {}
    for flt in filters:
        ref_frames = subprocess.run(
            ["tshark", "-n", "-r", str(pcap), "-d", f"tcp.port=={port},tls", "-Y", flt,
             "-T", "fields", "-e", "frame.number"],
            check=True, capture_output=True, text=True, timeout=60,
        ).stdout.split()  # fmt: skip
        out[flt] = t["frame"][compile_filter(flt).mask(t, ctx)].tolist()
        assert [int(x) for x in ref_frames] == out[flt], flt
    return out


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


# Hand-built handshakes whose encrypted handshake records start with a hello's type byte:
# the byte that made the live test above fail now and then (its ciphertext is random).
PORT = 8443
C_ADDR, S_ADDR = craft.v4("10.0.0.1"), craft.v4("10.0.0.2")
HRR_RANDOM = bytes.fromhex("cf21ad74e59a6111be1d8c021e65b891c2a211167abb8c5e079e09e2c8a8339c")


def _rec(ctype: int, fragment: bytes) -> bytes:
    return bytes([ctype, 3, 3]) + len(fragment).to_bytes(2, "big") + fragment


def _msg(hs: int, body: bytes) -> bytes:
    return bytes([hs]) + len(body).to_bytes(3, "big") + body


def _ext(et: int, data: bytes = b"") -> bytes:
    return et.to_bytes(2, "big") + len(data).to_bytes(2, "big") + data


def _hello(hs: int, sid: bytes, exts: list[bytes], random: bytes = bytes(32)) -> bytes:
    body = b"\x03\x03" + random + bytes([len(sid)]) + sid
    body += b"\x00\x02\xc0\x2f\x01\x00" if hs == 1 else b"\xc0\x2f\x00"
    ext = b"".join(exts)
    return _msg(hs, body + len(ext).to_bytes(2, "big") + ext)


def _session(sport: int, flights: list[tuple[int, bytes]]) -> list[bytes]:
    """Ethernet frames of a connection: handshake, one segment per flight (side 0 the
    client), FINs."""
    ends = ((C_ADDR, sport), (S_ADDR, PORT))
    nxt = [1000, 5000]
    out: list[bytes] = []

    def seg(side: int, flags: int, payload: bytes = b"") -> None:
        (src, sp), (dst, dp) = ends[side], ends[1 - side]
        ack = nxt[1 - side] if flags & ACK else 0
        body = craft.tcp(src, dst, sp, dp, nxt[side], ack, flags, payload)
        out.append(craft.eth(craft.ip(src, dst, 6, body)))
        nxt[side] += len(payload) + (1 if flags & (SYN | FIN) else 0)

    seg(0, SYN)
    seg(1, SYN | ACK)
    seg(0, ACK)
    for side, payload in flights:
        seg(side, PSH | ACK, payload)
    seg(0, FIN | ACK)
    seg(1, FIN | ACK)
    seg(0, ACK)
    return out


def _ciphertext(first: int, tail: bytes = b"") -> bytes:
    """A 40-byte encrypted Finished (as TLS 1.2 AES-GCM makes it: nonce, message, tag) whose
    first byte is `first`, ending in `tail`; the next byte is not 0 (tshark, too, then takes
    it for ciphertext)."""
    return bytes([first, 0x9A, 0x3C, 0x51]) + bytes(range(0x40, 0x40 + 36 - len(tail))) + tail


def _crafted(tmp_path: Path) -> tuple[Path, bytes]:
    """A full TLS 1.2 handshake, one resuming its session by id, and a TLS 1.3 one resuming
    with a PSK after a HelloRetryRequest (its hellos after the dummy ChangeCipherSpecs)."""
    sid = bytes(range(0xA0, 0xC0))
    ccs = _rec(CHANGE_CIPHER_SPEC, b"\x01")
    ticket = _ext(35, b"\x5a" * 48)
    full = [
        (0, _rec(HANDSHAKE, _hello(1, b"", [_ext(0, b"\x00\x04\x00\x00\x01x"), _ext(35)]))),
        (1, _rec(HANDSHAKE, _hello(2, sid, [_ext(35)]) + _msg(11, bytes(3)) + _msg(14, b""))),
        # ClientKeyExchange, then a Finished that read as a ClientHello ends in a one-byte
        # session id (06): the live test's failure
        (0, _rec(HANDSHAKE, _msg(16, b"\x20" + bytes(32))) + ccs
         + _rec(HANDSHAKE, _ciphertext(1, b"\x01\x06"))),
        (1, _rec(HANDSHAKE, _msg(4, bytes(6))) + ccs + _rec(HANDSHAKE, _ciphertext(2))),
        (0, _rec(APPLICATION_DATA, bytes(28))),
        (1, _rec(APPLICATION_DATA, bytes(28))),
    ]  # fmt: skip
    resumed = [
        (0, _rec(HANDSHAKE, _hello(1, sid, [ticket]))),
        (1, _rec(HANDSHAKE, _hello(2, sid, [])) + ccs + _rec(HANDSHAKE, _ciphertext(2))),
        (0, ccs + _rec(HANDSHAKE, _ciphertext(1))),
        (0, _rec(APPLICATION_DATA, bytes(28))),
        (1, _rec(APPLICATION_DATA, bytes(28))),
    ]
    sid13 = bytes(range(32))
    versions, modes = _ext(43, b"\x02\x03\x04"), _ext(45, b"\x01\x01")
    psk = _ext(41, b"\x00\x0a\x00\x04" + b"tick" + bytes(4) + b"\x00\x21\x20" + bytes(32))

    def ch13(group: bytes) -> bytes:
        share = _ext(51, (len(group) + 4 + 32).to_bytes(2, "big") + group + b"\x00\x20" + bytes(32))
        return _rec(HANDSHAKE, _hello(1, sid13, [versions, share, modes, psk]))

    hrr = _hello(2, sid13, [_ext(43, b"\x03\x04"), _ext(51, b"\x00\x17")], HRR_RANDOM)
    sh = _hello(2, sid13, [_ext(43, b"\x03\x04"), _ext(51, b"\x00\x17\x00\x20" + bytes(32)),
                           _ext(41, b"\x00\x00")])  # fmt: skip
    tls13 = [
        (0, ch13(b"\x00\x1d")),
        (1, _rec(HANDSHAKE, hrr) + ccs),
        (0, ccs + ch13(b"\x00\x17")),
        (1, _rec(HANDSHAKE, sh) + _rec(APPLICATION_DATA, bytes(40))),
        (0, _rec(APPLICATION_DATA, bytes(40)) + _rec(APPLICATION_DATA, bytes(28))),
        (1, _rec(APPLICATION_DATA, bytes(28))),
    ]
    frames = _session(40001, full) + _session(40002, resumed) + _session(40003, tls13)
    return craft.write(tmp_path / "crafted.pcap", frames), sid


def test_encrypted_finished_is_no_hello(tmp_path: Path) -> None:
    """An encrypted Finished whose first byte is 1 or 2 is no ClientHello or ServerHello: its
    made-up session id made a resumption look full and a full handshake offer an id. After
    a TLS 1.3 HelloRetryRequest the hellos follow the dummy ChangeCipherSpec in clear."""
    from tcpwhy.decode import tls as rec
    from tcpwhy.filter import FilterContext, compile_filter
    from tcpwhy.tcp.streams import StreamTracker

    pcap, sid = _crafted(tmp_path)
    t = read_table(str(pcap))
    st = StreamTracker().feed(t)
    r = rec.find_records(t, st["stream"], st["dir"])
    hs = r.ctype == HANDSHAKE
    # each Finished (40 bytes, after its sender's change_cipher_spec) has no type
    assert (r.hs[hs & (r.length == 40)] == -1).all() and (hs & (r.length == 40)).sum() == 4
    conns = _tcpwhy_conns(pcap)
    got = []
    for _, tc in sorted(conns.items()):
        assert tc.client_hello is not None and tc.server_hello is not None
        got.append((tc.client_hello.session_id, tc.server_hello.session_id, tc.version_text))
    assert got == [
        (b"", sid, "TLS 1.2"),
        (sid, sid, "resumed TLS 1.2"),
        (bytes(range(32)), bytes(range(32)), "resumed TLS 1.3"),
    ]
    # as filter fields: two ClientHellos and two ServerHellos on the TLS 1.3 connection, one
    # of each on the others, and no session id length on any Finished
    ctx = FilterContext(t)

    def frames(flt: str) -> list[int]:
        return [int(f) for f in t["frame"][compile_filter(flt).mask(t, ctx)].tolist()]

    assert frames("tls.handshake.type == 1") == [4, 16, 27, 29]
    assert frames("tls.handshake.type == 2") == [5, 17, 28, 30]
    assert frames("tls.handshake.session_id_length") == [4, 5, 16, 17, 27, 28, 29, 30]
    assert frames("tls.handshake.session_id_length == 0") == [4]


def test_crafted_hellos_as_tshark_sees_them(tmp_path: Path) -> None:
    """The capture above through the live test's comparison with tshark."""
    need(shutil.which("tshark") is not None, "tshark not installed")
    pcap, _ = _crafted(tmp_path)
    ref = _tshark_resumed(pcap, PORT)
    assert ref == {0: False, 1: True, 2: True}
    assert _tcpwhy_resumed(pcap) == ref
    _check_hellos(pcap, PORT)
    _frames_as_tshark(
        pcap,
        PORT,
        "tls.handshake.type",
        "tls.handshake.session_id_length",
        "tls.handshake.extension.type",
        "tls.handshake.extensions_server_name",
    )
