"""The diagnosis on the Zeek test traces: never crashes, and findings pinned on traces checked by hand."""

from __future__ import annotations

from pathlib import Path

import pytest

from tcpwhy.diagnose.engine import diagnose_files

pytestmark = pytest.mark.corpus

# checked by reading the packets:
PINNED = {
    # the server FINs 1 ms after its last data; the client still writes 31 bytes after ACKing
    # the FIN and the server resets: data after FIN (not idle-timeout reuse)
    "xmpp-starttls.pcap": {"data-after-fin"},
    # server closes after 65 s idle, FIN retransmitted from FIN_WAIT_1 (not LAST_ACK), the
    # client holds CLOSE_WAIT for 25 s before closing
    "http-no-crlf.pcap": {"close-wait-leak"},
    # a one-way capture: the client's SYNs have no visible answer, but it goes on talking, so
    # the SYN-ACKs were only missed by the capture
    "ssh-half-duplex-client.pcap": set(),
    # ordinary exchanges that end with FIN both ways
    "http-connect.pcap": set(),
    "ftp-ipv6.pcap": set(),
}


def test_whole_corpus_without_crash(zeek_corpus: Path) -> None:
    files = sorted(p for p in zeek_corpus.iterdir() if p.suffix in (".pcap", ".pcapng"))
    assert files
    for p in files:
        report = diagnose_files([str(p)])
        for f in report.findings:
            assert f.summary and f.explanation and f.streams, (p.name, f.kind)


@pytest.mark.parametrize("name", sorted(PINNED))
def test_pinned(zeek_corpus: Path, name: str) -> None:
    report = diagnose_files([str(zeek_corpus / name)])
    assert {f.kind for f in report.findings} == PINNED[name]
