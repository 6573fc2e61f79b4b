"""`tcpwhy flow`: the ladder of one connection with both endpoints' states, on real captures."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path

from tcpwhy.capture import read_table
from tcpwhy.filter import compile_filter
from tcpwhy.report.flow import Ladder, build_ladder, ladder_of_table, ladder_view, render
from tcpwhy.report.svg import render_svg
from tcpwhy.tcp.streams import StreamTracker

LAB = Path(__file__).resolve().parents[1] / "src" / "tcpwhy" / "data" / "lab"


def _lines(path: Path, stream: int) -> list[str]:
    buf = io.StringIO()
    render(build_ladder(str(path), stream), buf)
    return buf.getvalue().splitlines()


def _row(lines: list[str], frame: int) -> str:
    return next(line for line in lines if re.match(rf"\s+\d+\.\d+\s+{frame}\s", line))


def _states(line: str) -> tuple[str, str]:
    left, _, right = line.partition("|")
    return left.split(None, 2)[-1].strip() if len(left.split()) > 2 else "", right.rsplit("|", 1)[
        -1
    ].strip()


def test_four_way_close_of_a_corpus_trace(zeek_corpus: Path) -> None:
    """ftp-gridftp stream 0: the client closes first (frames 59, 60, 61)."""
    lines = _lines(zeek_corpus / "ftp-gridftp.pcap", 0)
    assert _states(_row(lines, 1)) == ("SYN_SENT", "SYN_RECEIVED")
    assert _states(_row(lines, 59)) == ("FIN_WAIT_1", "CLOSE_WAIT")
    assert _states(_row(lines, 60)) == ("FIN_WAIT_2 → TIME_WAIT", "LAST_ACK")
    assert _states(_row(lines, 61)) == ("", "CLOSED")
    assert "FIN, ACK" in _row(lines, 59) and "▶|" in _row(lines, 59)
    assert "|◀" in _row(lines, 60)
    assert lines[-1] == "final states at end of capture: client TIME_WAIT, server CLOSED"
    assert any("data segments" in line for line in lines)  # the transfer is folded


def test_server_closes_first_and_passive_side_states(zeek_corpus: Path) -> None:
    lines = _lines(zeek_corpus / "ftp-gridftp.pcap", 1)
    assert _states(_row(lines, 54)) == ("CLOSE_WAIT", "FIN_WAIT_1")
    assert _states(_row(lines, 56)) == ("LAST_ACK", "FIN_WAIT_2 → TIME_WAIT")
    assert _states(_row(lines, 57))[0] == "CLOSED"


def test_simultaneous_close_goes_through_closing() -> None:
    lines = _lines(LAB / "simultaneous-close.pcap", 0)
    text = "\n".join(lines)
    assert text.count("CLOSING") == 2
    assert lines[-1].endswith("client TIME_WAIT, server TIME_WAIT")


def test_reset_after_fin_and_flagged_retransmission() -> None:
    lines = _lines(LAB / "lost-final-ack.pcap", 0)
    assert any("[TCP Retransmission] FIN, ACK" in line for line in lines)
    stale = _lines(LAB / "stale-keepalive.pcap", 0)
    assert "RST" in stale[-2] and _states(stale[-2]) == ("CLOSED", "CLOSED")


def test_unknown_stream_is_one_line_and_status_2(zeek_corpus: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "tcpwhy", "flow", str(zeek_corpus / "ftp-gridftp.pcap"), "99"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2
    assert r.stderr.strip().endswith("no TCP stream 99 (the capture has streams 0 to 1)")


def test_flow_and_analyze_name_the_same_client_mid_stream() -> None:
    """A capture that starts mid-stream, on the server's packet: `flow`'s client is the one
    the diagnosis names (the side whose port looks ephemeral), not the first packet's sender."""
    import numpy as np

    from tcpwhy.capture import read_table
    from tcpwhy.diagnose.context import Capture
    from tcpwhy.report.flow import ladder_of_table, ladder_view

    checked = 0
    for name in ("stale-keepalive", "keepalive-race", "close-wait-leak", "clean", "time-wait"):
        t = read_table(str(LAB / f"{name}.pcap"))
        low = np.minimum(t["sport"], t["dport"])
        # the first packet a server sends after the handshake: the capture starts there
        srv = np.flatnonzero((t["sport"] == low) & (t["payload_len"] > 0))
        assert len(srv), name
        cut = t.take(np.arange(int(srv[0]), len(t)))
        cap = Capture(cut, np.zeros(len(cut), np.int16), [name])
        for sid in range(cap.nstreams):
            view = ladder_view(ladder_of_table(cut, sid, name))
            assert view.client == f"client {cap.conn(sid).client}", (name, sid)
            checked += 1
    assert checked >= 4


def test_endpoints_are_written_as_everywhere_else() -> None:
    """The ladder's endpoints (its text header and its JSON) are the connection records'
    (`conns`), an IPv6 address in brackets: "fd00:77:1::2:35312" could be read as the
    address fd00:77:1::2:35312 with no port. On the lab's ICMP rejects, IPv4 and IPv6."""
    import json

    path = str(LAB / "icmp-reject.pcap")

    def run(*args: str) -> str:
        return subprocess.run(
            [sys.executable, "-m", "tcpwhy", *args], capture_output=True, text=True, check=True
        ).stdout

    recs = [json.loads(x) for x in run("conns", "--format", "jsonl", path).splitlines()]
    v6 = 0
    for r in recs:
        orig = f"[{r['orig_h']}]" if ":" in r["orig_h"] else r["orig_h"]
        resp = f"[{r['resp_h']}]" if ":" in r["resp_h"] else r["resp_h"]
        d = json.loads(run("flow", "--format", "json", path, str(r["stream"])))
        assert d["client"]["endpoint"] == f"{orig}:{r['orig_p']}"
        assert d["server"]["endpoint"] == f"{resp}:{r['resp_p']}"
        head = run("flow", path, str(r["stream"])).splitlines()[0]
        assert f"client {orig}:{r['orig_p']}" in head and f"server {resp}:{r['resp_p']}" in head
        v6 += ":" in r["orig_h"]
    assert len(recs) == 6 and v6 == 3


def _drawn(lad: Ladder) -> tuple[str, str]:
    buf = io.StringIO()
    render(lad, buf, fold=0)
    return buf.getvalue(), render_svg(ladder_view(lad, fold=0))


def test_read_in_chunks_as_read_whole() -> None:
    """`flow` keeps only the stream's packets, chunk by chunk (one stream of a 664 MB capture
    took 3.1 GB read whole): chunks of a few packets draw the same ladder as the whole table,
    ICMP errors about the stream, display filters and every stream of the lab's captures."""
    compared = with_icmp = 0
    for path in sorted(LAB.glob("*.pcap")):
        table = read_table(str(path))
        nstreams = int(StreamTracker().feed(table)["stream"].max()) + 1 if len(table) else 0
        for stream in range(min(nstreams, 4)):
            for flt in (None, compile_filter("tcp.len > 0 or icmp")):
                whole = ladder_of_table(read_table(str(path)), stream, str(path), None, flt)
                chunked = build_ladder(str(path), stream, None, flt, chunk_bytes=300)
                assert len(chunked.table) < len(table) or nstreams == 1
                assert _drawn(chunked) == _drawn(whole), (path.name, stream, flt)
                assert [i[1:] for i in chunked.icmp] == [i[1:] for i in whole.icmp]
                compared += 1
                with_icmp += bool(chunked.icmp)
    assert compared > 60 and with_icmp >= 4
