"""The exact diagnosis of every shipped recording and every Zeek test trace.

Each capture is pinned to the multiset of its findings as (kind, severity,
count), each with the reason, read from the packets, why it is right. A new
finding, a lost one, another severity or another count fails the test; so does
a Zeek trace without a pin (a new trace must be pinned deliberately).
"""

from __future__ import annotations

from collections import Counter
from importlib import resources
from pathlib import Path

import pytest

from tcpwhy.diagnose.engine import diagnose_files
from tests.conftest import CORPUS

DATA = Path(str(resources.files("tcpwhy") / "data"))
LAB = DATA / "lab"
DEMO = DATA / "demo-stale-keepalive.pcap"
ZEEK = CORPUS / "zeek"

Pin = tuple[str, str, int, str]  # kind, severity, count, why it is right

LAB_PINS: dict[str, list[Pin]] = {
    "abortive-close": [
        (
            "abortive-close",
            "warning",
            1,
            "stream 0: the server's [R.] at its next seq follows the client's 1013 bytes it never "
            "answered (close with unread data)",
        ),
        (
            "abortive-close",
            "warning",
            1,
            "stream 1: request and response complete, then the server's [R.] at its next seq "
            "instead of a FIN (SO_LINGER 0); another cause, so another finding",
        ),
    ],
    "accept-queue-overflow": [
        (
            "accept-queue-overflow",
            "error",
            4,
            "listener :8080: a SYN dropped while others got in, a final ACK dropped (SYN-ACK "
            "resent after it), two queued connections reset",
        ),
        (
            "accept-queue-overflow",
            "error",
            3,
            "listener :8081 (tcp_abort_on_overflow): a final ACK answered by RST, two queued "
            "connections reset when the listener closed",
        ),
    ],
    # six connections, each closed first by the server and ended by FIN both ways: the
    # TIME_WAIT they leave is the server's, on its listening port, and the bind() that
    # fails on it sends no packet; time-wait-accumulation is about a client's TIME_WAIT
    # (ephemeral ports running out), which none of them leaves
    "addr-in-use-restart": [],
    "clean": [],  # two request/response exchanges, each ended by FIN both ways
    # the same over TLS (tshark -d tcp.port==8080,tls): stream 0's client reads the response
    # (frame 12) and closes with the server's 19-byte close_notify record (frame 13) unread,
    # so its kernel sends [R.] (frame 14): the exchange had ended, an info note only; stream 1
    # ends with the client's close_notify and FIN both ways
    "clean-tls": [
        (
            "tls-close-notify-reset",
            "info",
            1,
            "stream 0: [R.] (frame 14) right after the server's 19-byte close_notify record "
            "(frame 13), every request answered before",
        ),
    ],
    "close-wait-leak": [
        (
            "close-wait-leak",
            "warning",
            3,
            "each client FIN is ACKed by a bare delayed ACK 43 ms later and the server never "
            "sends a FIN; 43 ms is far past a prompt close on a µs-RTT link",
        ),
    ],
    # three clean connections; that the first one's source port is the host's own service
    # port is legal on the wire, and the EADDRINUSE/EADDRNOTAVAIL it causes send no packet
    "ephemeral-overlap": [],
    "fin-wait-2": [
        (
            "fin-wait-2-stall",
            "warning",
            1,
            "the client's FIN is ACKed, the server's FIN comes 2.73 s later and is answered by "
            "RST: the orphaned FIN_WAIT_2 socket had expired",
        ),
    ],
    "half-open": [
        (
            "half-open-reset",
            "error",
            1,
            "after idling, the client's 13 bytes draw a bare RST: the server had lost the "
            "connection without a FIN",
        ),
    ],
    # each SYN answered by one ICMP error quoting it, from the server itself (host-unreachable,
    # port-unreachable) or the router (admin-prohibited), over IPv4 and IPv6: six connect()s
    # that failed at once, one finding each (another errno, sender or code each); never
    # syn-timeout (nothing unanswered) nor connection-refused (no RST)
    "icmp-reject": [
        ("icmp-unreachable", "error", 1, "stream 0: ICMP 3/1 from the server, EHOSTUNREACH"),
        ("icmp-unreachable", "error", 1, "stream 1: ICMPv6 1/3 from the server, EHOSTUNREACH"),
        ("icmp-unreachable", "error", 1, "stream 2: ICMP 3/13 from the router, EHOSTUNREACH"),
        ("icmp-unreachable", "error", 1, "stream 3: ICMPv6 1/1 from the router, EACCES"),
        ("icmp-unreachable", "error", 1, "stream 4: ICMP 3/3 from the server, ECONNREFUSED"),
        ("icmp-unreachable", "error", 1, "stream 5: ICMPv6 1/4 from the server, ECONNREFUSED"),
    ],
    # the SYNs to 10.77.3.2 and fd00:77:3::2 answered by the router's network unreachable (ICMP
    # 3/0, ICMPv6 1/0): ENETUNREACH; the connection to the server ends with FIN both ways
    "icmp-no-route": [
        ("icmp-unreachable", "error", 1, "stream 0: ICMP 3/0 from router 10.77.1.1"),
        ("icmp-unreachable", "error", 1, "stream 1: ICMPv6 1/0 from router fd00:77:1::1"),
    ],
    "keepalive-dead-peer": [
        (
            "keepalive-dead-peer",
            "error",
            1,
            "keep-alive probes after the idle period go unanswered, then the prober resets",
        ),
    ],
    "keepalive-race-tls": [
        (
            "keepalive-race",
            "error",
            1,
            "the 96-byte application-data record (frame 14, ack 1396) does not ACK the server's "
            "close_notify or FIN, which do not ACK it (ack 698): they crossed; RST follows",
        ),
        (
            "request-retried",
            "info",
            1,
            "stream 1's first request after its handshake is again one 96-byte record, same SNI",
        ),
    ],
    "keepalive-race": [
        (
            "keepalive-race",
            "error",
            1,
            "GET /second does not ACK the server's FIN and the FIN does not ACK the request: "
            "they crossed; the server resets",
        ),
        (
            "request-retried",
            "info",
            1,
            "the same GET /second opens the next connection and gets 200 OK",
        ),
    ],
    "lost-final-ack": [
        (
            "lost-final-ack",
            "info",
            1,
            "the server's FIN from LAST_ACK is ACKed, resent 207 ms later (RTO) and re-ACKed "
            "from TIME_WAIT: the first ACK was lost past the capture",
        ),
    ],
    "middlebox-idle-reset-path": [
        (
            "middlebox-reset",
            "warning",
            2,
            "client side of a 60 ms path: streams 1 and 2 get [R] with the server's TTL 30 ms "
            "after their request, half the handshake's round trip: too soon to be the server's "
            "(the server-side capture shows neither request nor RST); stream 0's lost request "
            "is resent after its RTO and answered, no finding",
        ),
    ],
    # the server's side of the same path: the two reset connections are still open there,
    # the other two closed by FIN both ways; its one retransmission never shows here
    "middlebox-idle-reset-path.server": [],
    "middlebox-reset": [
        (
            "middlebox-reset",
            "warning",
            1,
            "the RST 'from the server' has TTL 64, every other server packet 62",
        ),
    ],
    # stream 0 (upload): the client's 1448-byte segment sent six times, never acknowledged,
    # while the server still answers (a dup ACK) and the 17-byte request was acknowledged;
    # stream 1 (download): the server's tail segment arrives 7240 bytes past its header, the
    # hole never filled for 2 s, nothing full-size ever arrives: both views of the black hole,
    # not retransmission-timeout, and not close-wait-leak (the server's FIN is stuck behind
    # the lost data)
    "pmtu-black-hole": [
        ("pmtu-black-hole", "error", 1, "stream 0: sender's view, full-size resent, peer alive"),
        ("pmtu-black-hole", "error", 1, "stream 1: receiver's view, 7240 bytes never arrived"),
    ],
    # stream 0: five fragmentation-needed errors with MTU 1280, then 1228-byte segments, all
    # acknowledged (path MTU discovery working: info); its closes crossed; stream 1 starts with
    # MSS 1240 and needs no error
    "pmtu-discovery": [
        ("pmtu-discovery", "info", 1, "stream 0: MTU 1280 from 10.77.1.1, resent in 1228 bytes"),
        ("simultaneous-close", "info", 1, "stream 0: client and server FINs crossed"),
    ],
    "refused": [
        ("connection-refused", "error", 1, "the SYN is answered by RST"),
    ],
    "retransmission-timeout": [
        (
            "retransmission-timeout",
            "error",
            1,
            "the client's 34 bytes are resent at +0.21, +0.42, +0.84 s ... never ACKed, and the "
            "server never closed: a request hangs",
        ),
    ],
    "simultaneous-close": [
        (
            "simultaneous-close",
            "info",
            1,
            "neither FIN acknowledges the other; both sides end in TIME_WAIT",
        ),
    ],
    "stale-keepalive": [
        (
            "stale-keepalive-reuse",
            "error",
            1,
            "GET /second ACKs the server's idle-close FIN (sent 1 s after the last response) "
            "and draws a RST",
        ),
        ("request-retried", "info", 1, "the same GET /second on a new connection gets 200 OK"),
    ],
    "tls-fatal-alert": [
        (
            "tls-fatal-alert",
            "error",
            1,
            "stream 0: the client answers the server's TLS 1.2 flight with the clear alert "
            "level 2 description 48 (unknown_ca, frame 8) and no request follows",
        ),
        (
            "tls-fatal-alert",
            "error",
            1,
            "stream 1: the server answers the ClientHello (TLS 1.2 at most) with the clear alert "
            "level 2 description 70 (protocol_version, frame 16); another sender and alert",
        ),
    ],
    "tls-truncation": [
        (
            "tls-truncation",
            "warning",
            1,
            "stream 0: the server's FIN (frame 13) follows its 84-byte response record by 75 µs "
            "with no alert record between: a cut response would look the same",
        ),
        (
            "tls-truncation",
            "info",
            1,
            "stream 1: the server's FIN (frame 29) comes 1.0 s after its last response, no alert "
            "record before it: an idle close without close_notify",
        ),
    ],
    "stale-keepalive-tls": [
        (
            "stale-keepalive-reuse",
            "error",
            1,
            "the 96-byte record (frame 18) ACKs the server's FIN (frame 16), which followed a "
            "19-byte close_notify record 1.00 s after the last response; RST follows",
        ),
        (
            "request-retried",
            "info",
            1,
            "stream 1's first request after its handshake is again one 96-byte record, same SNI",
        ),
    ],
    "syn-timeout": [
        ("syn-timeout", "error", 1, "three SYNs at +0, +1.02, +3.04 s, no SYN-ACK, no RST"),
    ],
    "syn-flood": [
        (
            "syn-flood",
            "warning",
            200,
            "200 SYNs from 200 spoofed addresses never complete; all get a SYN-ACK: 9 (the SYN "
            "queue) keep the offered SACK and window scale and are resent after 1 s, 191 are "
            "MSS-only cookies never resent; the real client got in, so no SYN went unanswered "
            "(a warning, not an error) and its clean connection yields nothing",
        ),
    ],
    "time-wait-reuse": [
        (
            "time-wait-reuse",
            "info",
            3,
            "three SYNs on a 4-tuple closed less than 60 s before, each answered by a SYN-ACK",
        ),
    ],
    "time-wait": [
        (
            "time-wait-accumulation",
            "info",
            5,
            "five connections closed first by the client within a few ms: five TIME_WAIT "
            "sockets at once, far from exhausting ports",
        ),
    ],
    "zero-window": [
        (
            "zero-window-stall",
            "warning",
            1,
            "the server advertises window 0 for 1.53 s while the client sends zero-window probes",
        ),
    ],
}

DEMO_PINS: list[Pin] = [
    (
        "stale-keepalive-reuse",
        "error",
        1,
        "GET /orders, 499 ms after the server's idle-close FIN and ACKing it, draws a RST",
    ),
    ("request-retried", "info", 1, "the same GET /orders on a new connection gets 200 OK"),
]

ZEEK_PINS: dict[str, list[Pin]] = {
    "analyzer-proto-diff-https-to-http.pcap": [
        (
            "abortive-close",
            "warning",
            1,
            "a TLS ClientHello to port 80 gets 468 bytes of HTML and a FIN; the client's [R.] "
            "at its next seq 24 ms later: it closed with that reply unread",
        ),
    ],
    "ftp-cwd-navigation.pcap": [],
    "ftp-gridftp.pcap": [],
    "ftp-invalid-reply-code.pcap": [],
    "ftp-ipv6.pcap": [],  # control and data connections end with FIN both ways
    "ftp-max-pending-commands.pcap": [],
    "ftp-missing-space-after-reply-code.pcap": [],
    "ftp-password-pass-command.pcap": [],
    "http-concurrent-range-requests.pcap": [],
    "http-connect-with-header.pcap": [],
    "http-connect.pcap": [],  # an ordinary exchange ending with FIN both ways
    "http-no-crlf.pcap": [
        (
            "close-wait-leak",
            "warning",
            1,
            "nginx FINs after 65 s idle; the client ACKs at once but sends its own FIN only "
            "25.4 s later, past the 10 s threshold",
        ),
    ],
    "irc-basic.pcapng": [],
    "irc-starttls.pcap": [
        (
            "data-after-fin",
            "info",
            1,
            "one RTT after the client's FIN the server answers with a 31-byte TLS alert "
            "(close_notify) and its FIN; the client's RST only drops that goodbye",
        ),
    ],
    "krb-service-name.pcap": [],
    "ldap-add.pcap": [],
    "ldap-basic.pcap": [
        (
            "middlebox-reset",
            "warning",
            1,
            "the [R.] after 181 s idle has TTL 251 like the handshake (window 8190), while the "
            "client's data all has TTL 52: a box on the path, not the client",
        ),
    ],
    "ldap-sasl-encrypted.pcap": [],
    "ldap-sasl-scram-sha-512.pcap": [],
    "ldap-sasl-signed-clear-2.pcapng": [
        (
            "abortive-close",
            "warning",
            1,
            "0.5 ms after the client's 43 bytes the server ends with [R.] at its next seq "
            "instead of a FIN",
        ),
    ],
    "ldap-sasl-signed-clear.pcapng": [],
    "ldap-who-am-i.pcap": [],
    "modbus-events-second.pcap": [],
    "mpls-in-vlan.pcap": [],
    "mysql-encrypted-aws-rds-tls-12.pcap": [
        (
            "lost-final-ack",
            "info",
            1,
            "the FINs crossed (neither ACKs the other); no client ACK of the server's FIN is "
            "captured; it is resent after 385 ms and then ACKed",
        ),
    ],
    "mysql-encrypted.pcap": [],
    "pbb.pcap": [],
    "pop3-bad-list-retr-crafted.pcap": [
        (
            "data-after-fin",
            "info",
            1,
            "the client sends QUIT and its FIN back to back; the server's '+OK bye' answers it "
            "and draws a RST: nothing was waiting for it",
        ),
    ],
    "pop3-redis.pcap": [],
    "pppoe-over-qinq.pcap": [
        (
            "retransmission-timeout",
            "warning",
            1,
            "235 s after the client's FIN the server's 31 bytes + FIN are resent at +0.31, "
            "+0.92, +2.13, +4.54 s, never ACKed: only the server's close hangs",
        ),
    ],
    "ssh-basic.pcap": [
        (
            "abortive-close",
            "warning",
            1,
            "stream 4 (port 2200): the client's last 96 bytes are unanswered and the server's "
            "[R.] at its next seq comes before it ACKs the client's FIN",
        ),
        (
            "simultaneous-close",
            "info",
            5,
            "on five connections the client's SSH disconnect is followed by its FIN while the "
            "server's FIN, sent moments later, does not ACK it: the FINs crossed",
        ),
    ],
    "ssh-half-duplex-client.pcap": [],  # one-way capture: SYN-ACKs missed, the client talks on
    "ssh-http-port-22.pcap": [],
    "ssh-pre-banner.pcap": [],
    "tcp-bad-checksum-syn.pcap": [],
    "tcp-missing-syn.pcap": [],
    "tcp-padding.pcap": [],
    "tunnels-gre-aruba-amsdu.pcap": [],
    "tunnels-gre-over-udp.pcap": [],
    "tunnels-gre.pcap": [],
    # the server's FIN is the capture's last but one packet: the client ACKs it 2.6 ms before
    # the capture ends, less than its 11.8 ms round trip, so no close could have been seen
    "tunnels-gtp-different-dl-and-ul.pcap": [],
    "tunnels-gtp-opt-header.pcap": [],
    "tunnels-teredo-bubble-with-payload.pcap": [],
    "tunnels-teredo.pcap": [
        (
            "abortive-close",
            "warning",
            1,
            "stream 2: after the 204 response the client ends with [R.] at its next seq, no FIN",
        ),
        (
            "fin-wait-2-stall",
            "warning",
            1,
            "stream 1: the server's FIN is ACKed, the client's comes 6.97 s later (past 5 s); the "
            "TTL-255 RST 16 s after the close is not the answer to it",
        ),
    ],
    "vlan-mpls.pcap": [],
    "xmpp-starttls.pcap": [
        (
            "data-after-fin",
            "info",
            1,
            "the server FINs after its last data; 170 µs later the client answers with a 31-byte "
            "TLS close_notify and its FIN, and the server's RST only drops that",
        ),
    ],
}


def found(path: Path) -> Counter[tuple[str, str, int]]:
    report = diagnose_files([str(path)])
    return Counter((f.kind, f.severity.label, f.count) for f in report.findings)


def expected(pins: list[Pin]) -> Counter[tuple[str, str, int]]:
    for p in pins:
        assert p[3].strip(), f"pin {p[:3]} has no justification"
    return Counter(p[:3] for p in pins)


def _zeek_names() -> list[str]:
    listed = (
        {p.name for p in ZEEK.iterdir() if p.suffix in (".pcap", ".pcapng")}
        if ZEEK.is_dir()
        else set()
    )
    return sorted(listed | set(ZEEK_PINS))


def test_every_lab_recording_is_pinned() -> None:
    assert {p.stem for p in LAB.glob("*.pcap")} == set(LAB_PINS)


@pytest.mark.parametrize("scenario", sorted(LAB_PINS))
def test_lab_recording(scenario: str) -> None:
    assert found(LAB / f"{scenario}.pcap") == expected(LAB_PINS[scenario])


def test_demo_capture() -> None:
    assert found(DEMO) == expected(DEMO_PINS)


@pytest.mark.corpus
@pytest.mark.parametrize("name", _zeek_names())
def test_zeek_trace(zeek_corpus: Path, name: str) -> None:
    path = zeek_corpus / name
    assert name in ZEEK_PINS, f"{name} is new in the corpus: pin its findings here"
    assert path.is_file(), f"pinned trace {name} is gone from the corpus"
    assert found(path) == expected(ZEEK_PINS[name])
