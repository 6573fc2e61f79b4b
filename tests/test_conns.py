"""Connection records on the shipped captures: demo, lab scenarios, formats, chunking, memory cap."""

from __future__ import annotations

import io
import json
import re
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from tcpwhy.capture import read_table
from tcpwhy.decode.table import PacketTable
from tcpwhy.report.conns import read_zeek, write_conns
from tcpwhy.report.conns_format import format_columns
from tcpwhy.report.flow import icmp_errors_of
from tcpwhy.tcp.connections import (
    ConnectionBuilder,
    ConnRecord,
    build_connections,
    connection_columns,
)
from tcpwhy.tcp.state import icmp_errors, run_rows
from tcpwhy.tcp.streams import StreamTracker
from tests import tshark_ref

DATA = Path(str(resources.files("tcpwhy") / "data"))
DEMO = DATA / "demo-stale-keepalive.pcap"
LAB = DATA / "lab"


def conns(path: Path, **kw: object) -> list[ConnRecord]:
    return build_connections(read_table(str(path)), **kw)  # type: ignore[arg-type]


def test_demo_capture() -> None:
    first, second = conns(DEMO)
    assert (first.stream, second.stream) == (0, 1)
    # the server closed the pooled connection, then reset the client's late request
    assert first.end == "reset by responder after responder FIN"
    assert first.conn_state == "RSTR"
    assert first.history.endswith("fr")
    assert (first.orig_state, first.resp_state) == ("CLOSED", "CLOSED")
    # the retry on a fresh connection closes cleanly, client first
    assert second.conn_state == "SF"
    assert second.end == "closed by originator FIN, responder FIN"
    assert second.orig_state == "TIME_WAIT"
    assert second.orientation == "syn"
    # irtt is tshark's initial RTT (SYN to the ACK of the SYN-ACK), committed with the capture
    want = {
        r["tcp.stream"]: r["tcp.analysis.initial_rtt"]
        for r in tshark_ref.rows(tshark_ref.DATA / f"{DEMO.name}.tshark.tsv")
        if r["tcp.analysis.initial_rtt"]
    }
    assert want == {"0": "0.000039000", "1": "0.000036000"}
    assert (first.irtt, second.irtt) == (float(want["0"]), float(want["1"]))


@pytest.mark.parametrize(
    ("scenario", "conn_state", "end_prefix", "orig_state", "resp_state"),
    [
        ("refused", "REJ", "refused (RST to SYN)", "CLOSED", "CLOSED"),
        ("syn-timeout", "S0", "no answer to SYN", "SYN_SENT", None),
        ("close-wait-leak", "S2", "half-closed by originator FIN", "FIN_WAIT_2", "CLOSE_WAIT"),
        ("clean", "SF", "closed by", None, None),
        ("time-wait", "SF", "closed by originator FIN", "TIME_WAIT", "CLOSED"),
        ("simultaneous-close", "SF", "closed by", "TIME_WAIT", "TIME_WAIT"),
        ("stale-keepalive", "RSTR", "reset by responder after responder FIN", "CLOSED", "CLOSED"),
        ("abortive-close", "RSTR", "reset by responder", "CLOSED", "CLOSED"),
        ("keepalive-dead-peer", "RSTO", "reset by originator", "CLOSED", "CLOSED"),
    ],
)
def test_lab_scenarios(
    scenario: str,
    conn_state: str,
    end_prefix: str,
    orig_state: str | None,
    resp_state: str | None,
) -> None:
    first = conns(LAB / f"{scenario}.pcap")[0]
    assert first.conn_state == conn_state
    assert first.end.startswith(end_prefix)
    if orig_state:
        assert first.orig_state == orig_state
    if resp_state:
        assert first.resp_state == resp_state


def _tshark_flagged(capture: str, flags: set[str]) -> int:
    """Packets of a shipped capture that tshark marks with one of `flags`."""
    tsv = tshark_ref.DATA / f"{capture}.tshark.tsv"
    return sum(bool(flags & set(r["tcp.analysis"].split(","))) for r in tshark_ref.rows(tsv))


def test_lab_counters() -> None:
    """The counts are the packets tshark marks [TCP ZeroWindow] / [TCP Retransmission]."""
    (zw,) = conns(LAB / "zero-window.pcap")
    assert zw.zero_windows == _tshark_flagged("zero-window.pcap", {"zero_window"}) == 3
    (rto,) = conns(LAB / "retransmission-timeout.pcap")
    retx = {"retransmission", "fast_retransmission", "spurious_retransmission"}
    assert rto.retransmissions == _tshark_flagged("retransmission-timeout.pcap", retx) == 5
    assert rto.end == "still open at end of capture"


def _all_lab_tables() -> list[tuple[str, PacketTable]]:
    return [(p.name, read_table(str(p))) for p in sorted(LAB.glob("*.pcap"))] + [
        (DEMO.name, read_table(str(DEMO)))
    ]


def test_rfc_states_from_kept_packets_match_full_run() -> None:
    """The builder runs the state machine on a few packets per connection: same final states."""
    # every connection of the 282 tcp.stream values in which tshark shows a SYN
    assert _check_rfc_states(_all_lab_tables()) == 282


def test_rfc_states_on_zeek_corpus(zeek_corpus: Path) -> None:
    tables = [(p.name, read_table(str(p))) for p in sorted(zeek_corpus.glob("*.pcap*"))]
    # every connection of the 92 tcp.stream values in which tshark shows a SYN
    assert _check_rfc_states(tables) == 92


def _check_rfc_states(tables: list[tuple[str, PacketTable]]) -> int:
    """Connections compared (those whose SYN is in the capture)."""
    checked = 0
    for name, t in tables:
        if not len(t):
            continue
        tracker = StreamTracker()
        s = tracker.feed(t)
        for r in build_connections(t):
            rows = np.flatnonzero(s["stream"] == r.stream)
            odir = s["dir"][rows[0]] if r.orientation == "syn" else None
            if odir is None or r.continued:
                continue
            # with the ICMP errors about it, as `flow` runs them
            icmp = icmp_errors_of(icmp_errors(t.icmp, tracker.icmp_out), r.stream, int(odir))
            cs = run_rows(t, rows, (s["dir"][rows] != odir).astype(np.int64), icmp=icmp)
            end_ns = int(t["ts_ns"].max())
            for ep in (cs.originator, cs.responder):
                ep.advance(end_ns)
            assert (r.orig_state, r.resp_state) == (
                cs.originator.state.name,
                cs.responder.state.name,
            ), name
            checked += 1
    return checked


def test_chunked_feed_gives_the_same_records() -> None:
    t = read_table(str(LAB / "accept-queue-overflow.pcap"))
    whole = build_connections(t)
    b = ConnectionBuilder()
    got: list[ConnRecord] = []
    for start in range(0, len(t), 3):
        got += b.feed(t.take(np.arange(start, min(start + 3, len(t)))))
    got += b.finish()
    got.sort(key=lambda r: r.stream)
    strip = [{k: v for k, v in r.as_json().items() if k != "uid"} for r in whole]
    assert strip == [{k: v for k, v in r.as_json().items() if k != "uid"} for r in got]


@pytest.mark.parametrize("boundaries", ["stream", "zeek"])
def test_compiled_loop_resumes_when_its_buffers_are_full(
    monkeypatch: pytest.MonkeyPatch, zeek_corpus: Path, boundaries: str
) -> None:
    """The Zeek loop stops when no slot is free or its record buffer is full, and the
    builder resumes it: with a 2-record buffer the records are the same."""
    from tcpwhy.tcp import connections

    corpus = sorted(zeek_corpus.glob("*.pcap"))[:12]
    for p in [LAB / "accept-queue-overflow.pcap", LAB / "time-wait-reuse.pcap", *corpus]:
        t = read_table(str(p))
        whole = build_connections(t, boundaries=boundaries)
        monkeypatch.setattr(connections, "OUT_ROWS", 2)
        small = build_connections(t, boundaries=boundaries)
        monkeypatch.undo()
        assert [r.as_json() for r in small] == [r.as_json() for r in whole], p.name


def test_memory_cap_evicts_with_a_warning() -> None:
    t = read_table(str(LAB / "time-wait.pcap"))
    b = ConnectionBuilder(max_active=2)
    out: list[ConnRecord] = []
    with pytest.warns(RuntimeWarning, match="connections active at once"):
        for i in range(len(t)):
            out += b.feed(t.take(np.array([i])))
            assert b.active <= 2
    out += b.finish()
    assert b.evicted > 0 and b.warnings
    assert any(r.emitted.startswith("evicted") for r in out)
    assert len({r.stream for r in out}) == 5


def test_zeek_format_round_trip() -> None:
    buf = io.StringIO()
    write_conns(str(DEMO), "zeek", out=buf)
    text = buf.getvalue()
    lines = text.splitlines()
    assert lines[0] == "#separator \\x09"
    for head in (
        "#set_separator",
        "#empty_field",
        "#unset_field",
        "#path",
        "#open",
        "#fields",
        "#types",
    ):
        assert any(line.startswith(head + "\t") for line in lines), head
    assert lines[-1].startswith("#close\t")
    fields = next(line for line in lines if line.startswith("#fields")).split("\t")[1:]
    types = next(line for line in lines if line.startswith("#types")).split("\t")[1:]
    assert len(fields) == len(types)
    rows = read_zeek(text.splitlines())
    recs = conns(DEMO, boundaries="zeek")
    assert len(rows) == len(recs)
    for row, r in zip(rows, recs, strict=True):
        assert row["id.orig_h"] == r.orig_h and int(row["id.orig_p"]) == r.orig_p
        assert row["conn_state"] == r.conn_state and row["history"] == r.history
        assert int(row["orig_pkts"]) == r.orig_pkts and int(row["resp_ip_bytes"]) == r.resp_ip_bytes
        assert float(row["ts"]) == pytest.approx(r.start, abs=1e-6)
        assert len(set(row)) == len(fields)
    assert len({row["uid"] for row in rows}) == len(rows)


def test_jsonl_and_csv_fields() -> None:
    buf = io.StringIO()
    write_conns(str(DEMO), "jsonl", out=buf)
    objs = [json.loads(line) for line in buf.getvalue().splitlines()]
    need = {
        "stream", "orig_h", "orig_p", "resp_h", "resp_p", "start", "duration", "orig_pkts",
        "resp_pkts", "orig_bytes", "resp_bytes", "conn_state", "history", "orig_state",
        "resp_state", "end", "orig_ip_bytes", "resp_ip_bytes", "missed_bytes", "irtt",
        "retransmissions", "zero_windows",
    }  # fmt: skip
    assert len(objs) == 2 and all(need <= o.keys() for o in objs)
    buf = io.StringIO()
    write_conns(str(DEMO), "csv", out=buf)
    assert len(buf.getvalue().splitlines()) == 3


def test_jsonl_lines_are_what_json_would_write(zeek_corpus: Path) -> None:
    """The jsonl line the columnar writer formats is json.dumps of the record's dict, for every
    record of the lab recordings and the Zeek corpus, both boundaries (None, floats, escapes,
    continued flags)."""
    paths = sorted(LAB.glob("*.pcap")) + sorted(zeek_corpus.glob("*.pcap*"))
    n = 0
    for p in paths:
        t = read_table(str(p))
        for boundaries in ("stream", "zeek"):
            c = connection_columns(t, boundaries=boundaries)
            lines = format_columns(c, "jsonl").splitlines()
            want = [json.dumps(r.as_json(), ensure_ascii=False) for r in c]
            assert lines == want, p.name
            assert [r.json_line() for r in c] == want, p.name
            n += len(c)
    assert n > 100
    r = c.record(0)
    r.end = 'quote " back\\slash \u00e9 \x01'
    assert json.loads(r.json_line())["end"] == r.end


def test_syn_scan_memory_stays_bounded() -> None:
    """A scan of 60,000 ports: each SYN is a connection; with a cap, the builder and the
    stream tracker hold at most the cap plus one chunk's new connections, however many
    connections go by."""
    syn = read_table(str(LAB / "refused.pcap"))
    first = syn.take(np.array([0]))  # the real SYN of the refused scenario
    b = ConnectionBuilder(max_active=5_000)
    seen = 0
    with pytest.warns(RuntimeWarning, match="connections active at once"):
        seen = _scan(b, first)
    assert seen == 60_000
    assert b.evicted > 40_000 and b.warnings


def _scan(b: ConnectionBuilder, first: PacketTable) -> int:
    seen = 0
    for chunk in range(6):
        rows = np.zeros(10_000, np.int64)
        t = first.take(rows)
        t.cols["sport"] = (np.arange(10_000) + chunk * 10_000).astype(np.uint16) + 1024
        t.cols["dport"] = np.full(10_000, chunk + 1, np.uint16)
        t.cols["ts_ns"] = t["ts_ns"] + np.arange(10_000) * 1000 + chunk * 10**7
        seen += len(b.feed(t))
        assert b.active <= 5_000 + 10_000
        assert b.tracker.conversations <= 5_000 + 2 * 10_000
    return seen + len(b.finish())


def test_retransmissions_and_zero_windows_count_wiresharks_flags() -> None:
    """A record's counts are the packets `tcpwhy packets` marks, stream by stream."""
    from tcpwhy.tcp.analysis import analyze

    checked = 0
    for name in ("retransmission-timeout", "lost-final-ack", "zero-window", "syn-timeout"):
        t = read_table(str(LAB / f"{name}.pcap"))
        s = StreamTracker().feed(t)
        flags = analyze(t, s).flags
        for r in build_connections(t):
            rows = s["stream"] == r.stream
            assert r.retransmissions == int(flags["retransmission"][rows].sum()), (name, r.stream)
            assert r.zero_windows == int(flags["zero_window"][rows].sum()), (name, r.stream)
            checked += r.retransmissions + r.zero_windows
    assert checked > 10


def test_cli_reports_eviction_once_as_a_tcpwhy_line() -> None:
    """The command's stderr is its own one-line warning, not Python's warning display too."""
    import subprocess
    import sys

    cap = LAB / "syn-flood.pcap"
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "tcpwhy",
            "conns",
            "--max-active",
            "50",
            "--format",
            "jsonl",
            str(cap),
        ],
        capture_output=True,
        text=True,
    )
    assert p.returncode == 0, p.stderr
    assert p.stderr.splitlines() == [
        f"tcpwhy: {cap}: warning: more than 50 connections active at once: the ones idle "
        "longest are written out early (end: 'evicted'); later packets of them start a "
        "continued record"
    ]


UID = re.compile(r"C[0-9a-zA-Z]{2,17}")
"""A Zeek connection uid: C, then base 62 of a 32-bit and a 64-bit word (1-6 and 1-11 digits)."""


def _cli_conns(*args: str) -> str:
    import subprocess
    import sys

    p = subprocess.run(
        [sys.executable, "-m", "tcpwhy", "conns", *args], capture_output=True, text=True
    )
    assert p.returncode == 0, p.stderr
    return p.stdout


def test_uids_are_zeeks_random_unless_seeded() -> None:
    """uids look like Zeek's, are unique in a run, new on every run, and fixed by --seed."""
    cap = str(LAB / "syn-flood.pcap")
    runs = [
        [json.loads(line)["uid"] for line in _cli_conns("--format", "jsonl", *o, cap).splitlines()]
        for o in ((), (), ("--seed", "7"), ("--seed", "7"), ("--seed", "8"))
    ]
    for uids in runs:
        assert len(uids) > 100 and len(set(uids)) == len(uids)
        assert all(UID.fullmatch(u) for u in uids)
        # Zeek's lengths: 18 characters mostly, 17 when the 32-bit word is below 62**5
        assert {len(u) for u in uids} <= set(range(3, 19)) and max(map(len, uids)) == 18
    assert not set(runs[0]) & set(runs[1])  # random: new on every run
    assert runs[2] == runs[3]  # --seed: the same on every run
    assert not set(runs[2]) & set(runs[4])


def test_uids_pinned_by_seed() -> None:
    """With --seed the uids are part of the output, byte for byte (first two of the demo)."""
    # the demo is a loopback recording, its checksums left to offload: -C, as Zeek needs
    text = _cli_conns("--format", "zeek", "--seed", "1", "-C", str(DEMO))
    rows = read_zeek(text.splitlines())
    assert [r["uid"] for r in rows] == ["CI0KN24MayFxJyNSCl", "C4EWU44w0u3FQJn0If"]
    # the same uid in every format of the same run
    recs = [
        json.loads(line)
        for line in _cli_conns("--format", "jsonl", "--seed", "1", str(DEMO)).splitlines()
    ]
    assert [r["uid"] for r in recs] == [r["uid"] for r in rows]


def test_record_numbers_stay_the_builder_identity() -> None:
    """The uid column is still the record number the builder links kept packets with; the
    text is derived from it, so records built twice in one process agree."""
    t = read_table(str(LAB / "time-wait-reuse.pcap"))
    c = connection_columns(t)
    assert sorted(c["uid"].tolist()) == list(range(len(c)))
    assert [r.uid for r in c] == [r.uid for r in build_connections(t)]


def test_local_nets_option() -> None:
    """--local-nets sets local_orig/local_resp in every format; without it they are unset."""
    cap = str(DEMO)
    plain = [json.loads(line) for line in _cli_conns("--format", "jsonl", cap).splitlines()]
    assert all("local_orig" not in o for o in plain)
    local = _cli_conns("--format", "jsonl", "--local-nets", "127.0.0.0/8,2001:db8::/32", cap)
    objs = [json.loads(line) for line in local.splitlines()]
    assert [(o["local_orig"], o["local_resp"]) for o in objs] == [(True, True)] * 2
    # a loopback recording, checksums left to offload: -C, as Zeek needs
    other = _cli_conns("--format", "zeek-json", "-C", "--local-nets", "10.0.0.0/8", cap)
    assert [json.loads(line)["local_orig"] for line in other.splitlines()] == [False] * 2
    rows = read_zeek(_cli_conns("--format", "zeek", "-C", cap).splitlines())
    assert {(r["local_orig"], r["local_resp"]) for r in rows} == {("-", "-")}
    rows = read_zeek(
        _cli_conns("--format", "zeek", "-C", "--local-nets", "private", cap).splitlines()
    )
    assert {(r["local_orig"], r["local_resp"]) for r in rows} == {("T", "T")}
    head = _cli_conns("--format", "csv", "--local-nets", "127.0.0.1/32", cap).splitlines()[0]
    assert head.endswith(",local_orig,local_resp,community_id")
    import subprocess
    import sys

    bad = subprocess.run(
        [sys.executable, "-m", "tcpwhy", "conns", "--local-nets", "10.0.0.0/33", cap],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "--local-nets" in bad.stderr


def test_parse_local_nets() -> None:
    from tcpwhy.tcp.records import ZEEK_PRIVATE_ADDRESS_SPACE, local_flags, parse_local_nets

    nets = parse_local_nets("10.1.2.3/8, fe80::1/10")  # host bits dropped, as Zeek does
    assert nets == parse_local_nets(["10.0.0.0/8", "fe80::/10"])
    assert len(parse_local_nets("private")) == len(ZEEK_PRIVATE_ADDRESS_SPACE)
    hi = np.array([0, 0, 0xFE80 << 48, 0xFE40 << 48], np.uint64)
    lo = np.array([0xFFFF0A000001, 0xFFFF0B000001, 1, 1], np.uint64)
    assert local_flags(hi, lo, nets).tolist() == [True, False, True, False]
    with pytest.raises(ValueError):
        parse_local_nets("10.0.0.0/8,nonsense")


@pytest.mark.parametrize(
    "name", ["icmp-reject", "icmp-no-route", "pmtu-discovery", "syn-timeout", "refused"]
)
def test_a_syn_answered_by_an_icmp_error_ends_as_analyze_counts_it(name: str) -> None:
    """A SYN answered by nothing but an ICMP error (no route, port unreachable, prohibited)
    failed at once: conns wrote `no answer to SYN`, the words of a SYN that timed out, where
    analyze counted `rejected by ICMP`. Now the two agree connection by connection; path MTU
    discovery's "too big" answers no connect() and changes nothing."""
    import subprocess
    import sys

    from tcpwhy.tcp.connections import end_code

    path = str(Path(__file__).resolve().parents[1] / "src/tcpwhy/data/lab" / f"{name}.pcap")

    def run(*args: str) -> str:
        return subprocess.run(
            [sys.executable, "-m", "tcpwhy", *args], capture_output=True, text=True
        ).stdout

    recs = [json.loads(x) for x in run("conns", "--format", "jsonl", path).splitlines()]
    rejected = [r for r in recs if end_code(r["end"]) == "rejected_by_icmp"]
    analyzed = {
        e["code"]: e["count"]
        for e in json.loads(run("analyze", "--format", "json", path))["endings"]
    }
    assert len(rejected) == analyzed.get("rejected_by_icmp", 0)
    assert all(r["end"] == "an ICMP error answered the SYN" for r in rejected)
    assert all(r["conn_state"] == "S0" and r["icmp"] for r in rejected)  # Zeek's S0 stays
    assert not [r for r in recs if r["end"] == "no answer to SYN" and r.get("icmp")]
    if name in ("icmp-reject", "icmp-no-route"):
        assert len(rejected) == {"icmp-reject": 6, "icmp-no-route": 2}[name]


def test_icmp_errors_are_held_for_open_connections_only() -> None:
    """The builder keeps the streams an ICMP error was about until their records are
    written, not for the whole capture (a scan answered by ICMP errors has millions)."""
    from tcpwhy.tcp.connections import ConnectionBuilder, end_code

    path = Path(__file__).resolve().parents[1] / "src/tcpwhy/data/lab/icmp-reject.pcap"
    b = ConnectionBuilder()
    batches = [*b.feed_columns(read_table(str(path))), b.finish_columns()]
    ends = [end_code(b_.end_words[int(e)]) for b_ in batches for e in b_.cols["end"]]
    assert ends.count("rejected_by_icmp") == 6
    assert len(b._icmp_err["stream"]) == 0
