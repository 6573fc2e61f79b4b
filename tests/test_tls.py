"""TLS without decryption: the record layer against tshark 4.0, and the TLS lab recordings
diagnosed like their cleartext twins.

tests/data/tls/*.tls.tsv is tshark's record layer of each TLS recording (made by
tests/data/tls/generate.sh with ``-d tcp.port==8080,tls``): per frame the content
types, lengths, record versions, handshake types, SNI and ALPN it dissected. TLS 1.3
application-data records show as opaque types there, so content types are compared for
the records tshark names.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from tcpwhy.capture import read_table
from tcpwhy.decode import tls as rec
from tcpwhy.decode.table import FIN, RST, PacketTable
from tcpwhy.diagnose.engine import diagnose_files
from tcpwhy.tcp.streams import StreamTracker

LAB = Path(str(resources.files("tcpwhy") / "data" / "lab"))
REFS = Path(__file__).resolve().parent / "data" / "tls"
TWINS = ("stale-keepalive", "keepalive-race", "clean")
ONLY_TLS = ("tls-fatal-alert", "tls-truncation")  # lab recordings without a cleartext twin
TLS_ONLY_INFO = {("tls-close-notify-reset", "info")}
"""What only TLS has to say and its twin cannot: the RST that answers an unread close_notify
(harmless, an info note)."""


def _records(table: PacketTable) -> rec.Records:
    st = StreamTracker().feed(table)
    return rec.find_records(table, st["stream"], st["dir"])


def _split(v: str) -> list[str]:
    return [x for x in v.split(",") if x]


@pytest.mark.parametrize("name", [f"{t}-tls" for t in TWINS] + list(ONLY_TLS))
def test_records_match_tshark(name: str) -> None:
    path = LAB / f"{name}.pcap"
    table = read_table(str(path))
    recs = _records(table)
    frames = table["frame"][recs.row]
    ref_lines = (REFS / f"{path.name}.tls.tsv").read_text().splitlines()
    assert ref_lines
    seen = set()
    for line in ref_lines:
        frame, ctypes, lengths, versions, hs, sni, alpn = (line.split("\t") + [""] * 7)[:7]
        f = int(frame)
        seen.add(f)
        mine = np.flatnonzero(frames == f)
        assert [int(x) for x in _split(lengths)] == recs.length[mine].tolist(), f
        assert [int(x, 16) for x in _split(versions)] == recs.version[mine].tolist(), f
        named = [int(c) for c in recs.ctype[mine].tolist() if c != rec.APPLICATION_DATA]
        assert [int(x) for x in _split(ctypes)] == named, f
        assert [int(x) for x in _split(hs)] == [h for h in recs.hs[mine].tolist() if h >= 0], f
        if sni:
            i = int(mine[0])
            hello = rec.parse_hello(rec.record_bytes(table, recs, i) or b"")
            assert hello is not None
            assert hello.sni == sni.encode()
            assert [a.decode() for a in hello.alpn] == _split(alpn)
    assert set(frames.tolist()) == seen  # no record tshark did not see
    assert (recs.flags & rec.COMPLETE).all() and not (recs.flags & rec.CUT).any()


def test_snaplen_cut_records() -> None:
    """Captured with a 100-byte snaplen (payload_cap cut, payload_len kept): no error, the
    records found end where the uncut ones do, the hello records are marked cut and their
    SNI is not invented."""
    full = read_table(str(LAB / "stale-keepalive-tls.pcap"))
    cols = dict(full.cols)
    cols["payload_cap"] = np.minimum(cols["payload_cap"], 100).astype(cols["payload_cap"].dtype)
    cut = PacketTable(cols, full.data)
    a, b = _records(full), _records(cut)
    got = set(zip(b.row.tolist(), b.rel.tolist(), b.length.tolist(), strict=True))
    want = set(zip(a.row.tolist(), a.rel.tolist(), a.length.tolist(), strict=True))
    # each server flight (frames 6 and 26, tshark: records of 122, 1, 23, 455, 96, 69 bytes)
    # has five headers past byte 100: lost, and found again at the next segment
    assert got <= want and len(want) - len(got) == 10
    hellos = np.flatnonzero(b.hs == 1)
    assert len(hellos) == 2 and (b.flags[hellos] & rec.CUT).all()
    assert all(rec.record_bytes(cut, b, int(i)) is None for i in hellos)


def test_hello_parser_is_bounded() -> None:
    """Truncated or garbage hellos give None or a partial answer, never an exception."""
    good = rec.record_bytes(
        read_table(str(LAB / "clean-tls.pcap")),
        (recs := _records(read_table(str(LAB / "clean-tls.pcap")))),
        int(np.flatnonzero(recs.hs == 1)[0]),
    )
    assert good is not None
    for n in range(0, len(good), 7):
        rec.parse_hello(good[:n])
    assert rec.parse_hello(b"\x16\x03\x01\x00\x05\x01\xff\xff\xff\xff") is not None
    assert rec.parse_hello(b"\x17\x03\x03") is None


def _findings(path: Path) -> list[dict]:  # type: ignore[type-arg]
    report = diagnose_files([str(path)])
    return [f.to_json() for f in report.findings]


@pytest.mark.parametrize("twin", TWINS)
def test_tls_twin_diagnosed_like_cleartext(twin: str) -> None:
    clear = _findings(LAB / f"{twin}.pcap")
    enc = _findings(LAB / f"{twin}-tls.pcap")
    kinds = [(f["kind"], f["severity"]) for f in enc]
    assert sorted(k for k in kinds if k not in TLS_ONLY_INFO) == sorted(
        (f["kind"], f["severity"]) for f in clear
    )
    for f in enc:
        assert f["facts"].get("server", "api.tcpwhy.test (").startswith("api.tcpwhy.test (")
        assert "api.tcpwhy.test (10.77." in f["summary"]
    if twin == "stale-keepalive":
        (st_c,) = [f for f in clear if f["kind"] == "stale-keepalive-reuse"]
        (st_e,) = [f for f in enc if f["kind"] == "stale-keepalive-reuse"]
        t_c = st_c["facts"]["server_idle_timeout_s"]["median"]
        t_e = st_e["facts"]["server_idle_timeout_s"]["median"]
        assert abs(t_e - t_c) <= 0.05 * t_c
    if twin != "clean":
        (retry,) = [f for f in enc if f["kind"] == "request-retried"]
        assert (
            "failed on stream 0 and a request of the same size (likely the same request: "
            "it is encrypted) left again" in retry["explanation"]
        )


def test_close_notify_answering_a_close_is_not_data_after_fin() -> None:
    """A live clean-tls run over IPv6 where the client's close_notify and FIN reached the
    server first: the server's own close_notify (24 bytes, TLS 1.3) arrives after the
    client closed, and the client's kernel answers it with RST. That is how this TLS close
    ends when the two cross, not a write into a closed connection."""
    path = Path(__file__).parent / "data" / "tls" / "clean-tls-v6-close-crossing.pcap"
    t = read_table(str(path))
    rst = np.flatnonzero(t["flags"] & RST)
    assert len(rst) == 1
    before = rst[0] - 1
    # the segment the RST answers: 24 bytes from the server, after the client's FIN
    assert int(t["payload_len"][before]) == 24 and int(t["sport"][before]) == 8080
    fins = np.flatnonzero((t["flags"] & FIN) & (t["sport"] != 8080))
    assert len(fins) and fins[0] < before
    (note,) = diagnose_files([str(path)]).findings
    assert (note.kind, note.severity.label, note.streams) == ("tls-close-notify-reset", "info", [0])


def _ref_frames(flt: str, capture: str) -> list[int]:
    """Frames tshark selected with `flt` on `capture` (tests/data/tls/filters.expected.tsv)."""
    for line in (REFS / "filters.expected.tsv").read_text().splitlines():
        cap, f, frames = line.split("\t")
        if cap == capture and f == flt:
            return [int(x) for x in frames.split(",") if x]
    raise AssertionError(f"{flt!r} on {capture} is not in the reference")


def _closing_frames(path: Path) -> dict[tuple[int, str], int]:
    """(stream, side) -> frame of the closing alert tcpwhy found."""
    from tcpwhy.diagnose import tls
    from tcpwhy.diagnose.context import WHO, Capture

    t = read_table(str(path))
    cap = Capture(t, np.zeros(len(t), np.int16), [str(path)])
    out = {}
    for sid in range(cap.nstreams):
        c = cap.conn(sid)
        tc = tls.of(c)
        assert tc is not None
        for side, cl in tc.closing.items():
            out[(c.no, WHO[side])] = c.frame[cl.record.row]
    return out


def test_clean_tls_closing_alerts_are_tsharks_short_records() -> None:
    """TLS 1.3 encrypts close_notify: tshark shows it as a 19-byte application-data record
    (2 bytes of alert, the inner content type, a 16-byte tag). On clean-tls tcpwhy takes
    exactly those records for closing alerts -- the server's before the client's RST on
    stream 0, the client's before its FIN on stream 1 -- and misses none: the server's FIN
    on stream 1 follows its 84-byte response with no alert (it answers the client's)."""
    short = [
        int(line.split("\t")[0])
        for line in (REFS / "clean-tls.pcap.tls.tsv").read_text().splitlines()
        if line.split("\t")[2] == "19"
    ]
    got = _closing_frames(LAB / "clean-tls.pcap")
    assert sorted(got.values()) == short == [13, 31]
    assert set(got) == {(0, "server"), (1, "client")}


def test_fatal_alerts_named_as_tshark_decodes_them() -> None:
    """tls-fatal-alert on the lab recording: the client's unknown_ca and the server's
    protocol_version, on the frames where tshark reads those descriptions."""
    report = diagnose_files([str(LAB / "tls-fatal-alert.pcap")])
    got = {}
    for f in report.findings:
        assert (f.kind, f.severity.label) == ("tls-fatal-alert", "error")
        step = next(s for s in f.timeline if "fatal alert" in s.note)
        got[f.facts["alert"]] = (step.frame, step.sender)
        assert f.facts["alert"] in f.summary
        # tshark: both ClientHellos have version 0x0303 and no supported_versions extension
        assert f.facts["offered"] == "TLS 1.2"
        # the ServerHello (TLS 1.2) came before the client's alert, none before the server's
        assert f.facts["version"] == ("TLS 1.2" if step.sender == "client" else None)
    unknown_ca = _ref_frames("tls.alert_message.desc == 48", "tls-fatal-alert.pcap")
    protocol_version = _ref_frames("tls.alert_message.desc == 70", "tls-fatal-alert.pcap")
    from_server = _ref_frames(
        "tls.alert_message.level == 2 and tcp.srcport == 8080", "tls-fatal-alert.pcap"
    )
    assert got == {
        "unknown_ca": (unknown_ca[0], "client"),
        "protocol_version": (protocol_version[0], "server"),
    }
    assert from_server == protocol_version


def test_truncation_by_fin_without_close_notify() -> None:
    """tls-truncation: the server's FINs come with no alert record before them (tshark's
    records from the server before each FIN end with the 84-byte response); the one right
    after the response is a warning, the one after a 1 s idle an info note. The client's
    close_notify that reaches the closed server and draws its RST is not data after FIN."""
    path = LAB / "tls-truncation.pcap"
    assert not any(side == "server" for _, side in _closing_frames(path))
    report = diagnose_files([str(path)])
    by_sev = {f.severity.label: f for f in report.findings}
    assert sorted(by_sev) == ["info", "warning"] and len(report.findings) == 2
    for f in report.findings:
        assert f.kind == "tls-truncation" and f.facts["side"] == "server"
    assert by_sev["warning"].streams == [0] and by_sev["warning"].facts["cut"] is True
    assert by_sev["info"].streams == [1] and by_sev["info"].facts["cut"] is False
    t = read_table(str(path))
    fins = t["frame"][(t["flags"] & FIN) > 0][(t["sport"][(t["flags"] & FIN) > 0] == 8080)]
    assert [f.timeline[-1].frame for f in report.findings] == fins.tolist()


@pytest.mark.parametrize(
    "message",
    [
        # what both ends of the tls-fatal-alert scenario logged (Python 3 on OpenSSL 3)
        "ssl.SSLError: [SSL: TLSV1_ALERT_UNKNOWN_CA] tlsv1 alert unknown ca (_ssl.c:1006)",
        "ssl.SSLCertVerificationError: [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify "
        "failed: self-signed certificate (_ssl.c:1006)",
        "ssl.SSLError: [SSL: UNSUPPORTED_PROTOCOL] unsupported protocol (_ssl.c:1006)",
        "ssl.SSLError: [SSL: TLSV1_ALERT_PROTOCOL_VERSION] tlsv1 alert protocol version",
    ],
)
def test_explain_tls_handshake_errors(message: str) -> None:
    from tcpwhy.diagnose.explain import explain

    kinds = {k for m in explain(message) for k, _ in m.kinds}
    assert kinds == {"tls-fatal-alert"}


def test_explain_unexpected_eof() -> None:
    from tcpwhy.diagnose.explain import explain

    msg = "error:0A000126:SSL routines::unexpected eof while reading"
    assert "tls-truncation" in {k for m in explain(msg) for k, _ in m.kinds}
