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


def test_a_black_hole_seen_after_the_handshake_does_not_invent_the_mss(tmp_path: Path) -> None:
    """The PMTU recording without its second connection's handshake (frames 26-28): the hole
    in the server's data is still found from the client's side, and the words say the MSS is
    not in the capture instead of naming one (the whole recording names the client's 1460)."""
    header, recs = _records(LAB / "pmtu-black-hole.pcap")
    path = _write(tmp_path, "cut.pcap", header, recs[:25] + recs[28:])
    (hole,) = [f for f in diagnose_files([path]).findings if "never arrived" in f.summary]
    assert (
        "larger segments (its MSS is unknown: its SYN is not in the capture, or had no MSS option)"
    ) in hole.explanation.replace("\n", " ")
    assert "above 1004 bytes, which arrived" in hole.explanation
    (whole,) = [
        f
        for f in diagnose_files([str(LAB / "pmtu-black-hole.pcap")]).findings
        if "never arrived" in f.summary
    ]
    assert "segments of 1460 bytes" in whole.explanation
    assert "between 1004 bytes, which arrived, and the 1512-byte" in whole.explanation


def test_a_hole_between_two_ends_on_one_host_is_no_black_hole(tcpdump_corpus: Path) -> None:
    """tcpdump's OpenFlow capture on loopback lacks data in four connections (frames left out
    of the file): no path, so no path MTU black hole; its 14 days read as days."""
    report = diagnose_files([str(tcpdump_corpus / "of13_ericsson.pcapng")])
    assert "pmtu-black-hole" not in [f.kind for f in report.findings]
    from tcpwhy.diagnose.context import fmt_s

    c = report.capture
    assert fmt_s((c.last_ns - c.first_ns) / 1e9) == "14 d 4 h"
    assert [fmt_s(s) for s in (179.6, 3599.6, 7200, 172799)] == [
        "3 min 0 s",  # not "2 min 60 s"
        "60 min 0 s",
        "2 h 0 min",
        "47 h 59 min",
    ]


def test_no_middlebox_between_two_ends_on_one_host(tmp_path: Path) -> None:
    """The lab's middlebox RST (a TTL two hops short of the server's) between two loopback
    addresses (the same bytes with 10.77.1.2 and 10.77.2.2 written as 127.0.0.1 and
    127.0.0.2): no path, so nothing on it; the RST is then the server's abort."""
    path = _on_loopback(tmp_path, "middlebox-reset")
    assert _kinds(str(LAB / "middlebox-reset.pcap")) == ["middlebox-reset"]
    assert "middlebox-reset" not in _kinds(path)


def test_refused_connections_are_dated_on_the_wall_clock(tcpdump_corpus: Path) -> None:
    """tcpdump's OpenFlow capture of two refused connects 10.5 s apart: when, in UTC and
    into the capture, not in seconds since 1970."""
    (f,) = diagnose_files([str(tcpdump_corpus / "of10_pf5240.pcap")]).findings
    assert f.kind == "connection-refused"
    assert (
        "2 connections were refused from 12:21:09.940 to 12:21:20.463 UTC on 2013-08-28 "
        "(+0.000 s to +10.523 s into the capture)."
    ) in f.explanation


def _on_loopback(tmp_path: Path, name: str) -> str:
    """The lab's capture `name` with its two addresses (10.77.1.2 and 10.77.2.2) written as
    127.0.0.1 and 127.0.0.2: the same packets between two ends on one host."""
    raw = (LAB / f"{name}.pcap").read_bytes()
    client, server = bytes([10, 77, 1, 2]), bytes([10, 77, 2, 2])
    assert raw.count(client) > 0 and raw.count(server) > 0
    loop = raw.replace(client, bytes([127, 0, 0, 1])).replace(server, bytes([127, 0, 0, 2]))
    path = tmp_path / f"{name}-loopback.pcap"
    path.write_bytes(loop)
    return str(path)


def test_a_lost_final_ack_on_one_host_is_no_loss_on_a_path(tmp_path: Path) -> None:
    """The lab's lost final ACK (dropped by a firewall rule between two namespaces) told on
    its own addresses as loss on the path; between two loopback addresses there is no path,
    so the words name what drops a packet inside one host."""
    (routed,) = [f for f in diagnose_files([str(LAB / "lost-final-ack.pcap")]).findings]
    (local,) = [f for f in diagnose_files([_on_loopback(tmp_path, "lost-final-ack")]).findings]
    assert routed.kind == local.kind == "lost-final-ack"
    assert "loss on the path" in routed.explanation
    assert routed.causes[0].startswith("Packet loss on the path")
    assert "path" not in " ".join(local.causes) and "NAT" not in local.explanation
    assert "loss on the path" not in local.explanation
    assert "both ends are on one host" in local.explanation
    assert "dropped the ACK after the capture saw it" in local.explanation  # frame 10
    assert "softnet_stat" in local.causes[0] and len(local.causes) == 1
    assert "middlebox" not in local.fixes[0] and "inside the host" in local.fixes[0]


def _streams_of(tmp_path: Path, name: str, streams: str) -> str:
    """The lab capture `name` cut to `streams` (a display filter's set) by tcpwhy itself."""
    import subprocess
    import sys

    out = tmp_path / f"{name}-{streams.replace(' ', '-')}.pcap"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "tcpwhy",
            "packets",
            "-Y",
            f"tcp.stream in {{{streams}}}",
            "-w",
            str(out),
            str(LAB / f"{name}.pcap"),
        ],
        check=True,
        capture_output=True,
    )
    return str(out)


def test_queued_connections_reset_together_are_told_as_one_event(tmp_path: Path) -> None:
    """The lab's accept-queue overflow without its overflow evidence (what `watch` sees when
    the listener's two queued connections are reset, in a window of their own): two
    connections the server never answered, reset within microseconds of each other when the
    listener closed. abortive-close told them as an application closing without reading a
    request (an early 413); it now leads with the one event that closed them both."""
    (both,) = diagnose_files([_streams_of(tmp_path, "accept-queue-overflow", "0 1")]).findings
    assert both.kind == "abortive-close" and both.count == 2
    assert both.summary.endswith(
        "; all at once, never answered: the server process exited or closed its listening socket"
    )
    assert both.causes[0].startswith("The server process exited or closed its listening socket")
    assert "within 5 ms of one another" in both.explanation
    assert both.fixes[0].startswith("Find what stopped the server at that moment")
    # one such connection alone is no event of many
    (one,) = diagnose_files([_streams_of(tmp_path, "accept-queue-overflow", "0")]).findings
    assert one.kind == "abortive-close" and "at once" not in one.summary + one.explanation
    assert one.causes[0].startswith("The server closes without reading")
    # with the overflow evidence, the accept queue tells them (as analyze does on the whole)
    (queue,) = diagnose_files([str(LAB / "accept-queue-overflow.pcap")]).findings[:1]
    assert queue.kind == "accept-queue-overflow"
    assert "queued connections reset when the listener closed" in queue.summary
