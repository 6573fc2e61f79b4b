"""`analyze -Y`: only connections with a matching packet are diagnosed, each whole, and findings
name them by the capture's own tcp.stream numbers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tcpwhy.diagnose.engine import diagnose_files
from tcpwhy.filter import compile_filter

LAB = Path(__file__).resolve().parents[1] / "src" / "tcpwhy" / "data" / "lab"
ICMP = Path(__file__).resolve().parent / "data" / "icmp" / "codes.pcap"


def _kinds(path: Path, text: str | None) -> list[tuple[str, list[int]]]:
    flt = compile_filter(text) if text else None
    report = diagnose_files([str(path)], flt=flt)
    return [(f.kind, list(f.streams)) for f in report.findings]


def test_limits_to_matching_connections_and_keeps_stream_numbers() -> None:
    cap = LAB / "close-wait-leak.pcap"
    assert _kinds(cap, None) == [("close-wait-leak", [0, 1, 2])]
    assert _kinds(cap, "tcp.stream == 2") == [("close-wait-leak", [2])]
    assert _kinds(cap, "tcp.stream in {1 2}") == [("close-wait-leak", [1, 2])]


def test_connection_is_analysed_whole() -> None:
    """The filter matches only the request, yet the RST and FIN that make the finding count."""
    cap = LAB / "stale-keepalive.pcap"
    kinds = _kinds(cap, 'tcp.payload contains "GET /second"')
    assert ("stale-keepalive-reuse", [0]) in kinds
    assert _kinds(cap, "tcp.flags.syn == 1 and tcp.stream == 1") == []


def test_no_match_no_finding() -> None:
    assert _kinds(LAB / "refused.pcap", "tcp.port == 1") == []


def test_progress_bar_only_on_a_terminal(tmp_path: Path) -> None:
    """On a terminal, stderr shows the bytes read as a bar; piped, stderr stays quiet."""
    import os
    import subprocess
    import sys

    cap = LAB / "time-wait.pcap"
    cmd = [sys.executable, "-m", "tcpwhy", "analyze", str(cap), "--format", "json"]
    piped = subprocess.run(cmd, capture_output=True, text=True)
    assert (piped.returncode, piped.stderr) == (0, "")  # no findings: exit status 0
    master, slave = os.openpty()
    try:
        r = subprocess.run(
            cmd, stdout=subprocess.DEVNULL, stderr=slave, env={**os.environ, "COLUMNS": "100"}
        )
        os.close(slave)
        chunks = []
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(master)
    shown = b"".join(chunks).decode(errors="replace")
    assert r.returncode == 0
    assert "tcpwhy: reading time-wait.pcap" in shown or "tcpwhy: diagnosing" in shown


FILTERS = (
    "tcp.port == 80",
    "frame.time_relative > 0.5",
    "tcp.flags.reset == 1",
    "tcp.stream == 1",
    "tcp.analysis.retransmission",
    "tcp.len > 0 && tcp.srcport > 1024",
    "icmp",
    "http.request",
)


def test_filter_judged_chunk_by_chunk_keeps_what_the_whole_table_keeps(
    zeek_corpus: Path, monkeypatch: Any
) -> None:
    """One file read with a filter is judged chunk by chunk (small chunks here: streams and
    ICMP errors across many of them), keeping only the diagnosis's columns until the
    matching streams are known: the rows, stream numbers and ICMP errors kept are those of
    the whole table filtered at once (`_limit_to_filter`, as `conns` over several points)."""
    import functools

    from tcpwhy import capture
    from tcpwhy.decode.table import CaptureStats, PacketTable
    from tcpwhy.diagnose import engine

    small = functools.partial(capture.iter_tables, chunk_bytes=2048)
    monkeypatch.setattr(capture, "iter_tables", small)
    paths = [*sorted(LAB.glob("*.pcap")), ICMP, *sorted(zeek_corpus.glob("*.pcap"))]
    kept_some = chunked = with_icmp = 0
    for p in paths:
        whole_st = CaptureStats()
        whole = PacketTable.concat(list(small(str(p), whole_st)))
        for text in FILTERS:
            flt = compile_filter(text)
            st = CaptureStats()
            got, numbers, span = engine._read_filtered(str(p), st, flt, None)
            want, want_numbers, _ = engine._limit_to_filter(whole, flt, whole_st.first_ts_ns)
            assert span == engine._span(whole), p
            assert np.array_equal(numbers, want_numbers), (p, text)
            assert len(got) == len(want), (p, text)
            for k in engine.DIAGNOSIS_COLUMNS:
                if k != "payload_off":  # (the file's offsets in one, the bytes' in the other)
                    assert np.array_equal(got[k], want[k]), (p, text, k)
            mine, theirs = got.gather(np.arange(len(got))), want.gather(np.arange(len(want)))
            for a, b in zip(mine, theirs, strict=True):
                assert np.array_equal(a, b), (p, text)
            assert (got.icmp is None) == (want.icmp is None), (p, text)
            if got.icmp is not None and want.icmp is not None:
                assert np.array_equal(got.icmp["icmp_at"], want.icmp["icmp_at"]), (p, text)
                assert np.array_equal(got.icmp["frame"], want.icmp["frame"]), (p, text)
                with_icmp += 1
            kept_some += bool(len(got))
        chunked += st.frames > 40
    assert kept_some > 50 and chunked > 20 and with_icmp > 0


def test_time_relative_counts_from_the_first_frame(zeek_corpus: Path, tmp_path: Path) -> None:
    """``frame.time_relative`` counts from the capture's first frame of any protocol, as in
    Wireshark and `packets -Y`: this capture's TCP packets come 34 s after its first frame
    (tshark matches all of them with ``frame.time_relative > 0.5``), one file or several."""
    import shutil

    pbb = zeek_corpus / "pbb.pcap"
    one = diagnose_files([str(pbb)], flt=compile_filter("frame.time_relative > 0.5"))
    assert one.capture.connections == 1
    none = diagnose_files([str(pbb)], flt=compile_filter("frame.time_relative < 30"))
    assert none.capture.connections == 0
    # two copies at the same times: two capture points, each filtered whole (joined first)
    copy = tmp_path / "copy.pcap"
    shutil.copy(pbb, copy)
    two = diagnose_files(
        [str(pbb), str(copy)], flt=compile_filter("frame.time_relative > 0.5"), pair=False
    )
    assert two.capture.connections == 2
    # and `conns` over the two points: the connection paired, kept as with one file
    import subprocess
    import sys

    for files in ([pbb], [pbb, copy]):
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "tcpwhy",
                "conns",
                "--format",
                "jsonl",
                "-Y",
                "frame.time_relative > 0.5",
                *map(str, files),
            ],
            capture_output=True,
            text=True,
        )
        assert r.returncode == 0 and len(r.stdout.splitlines()) == 1, (files, r.stderr)


def test_rotated_parts_filtered_as_the_whole(tmp_path: Path) -> None:
    """A capture cut into rotated parts (editcap -c) is one capture point: with a filter, the
    parts are read again as one capture for the filter to judge, and the findings, their
    stream numbers and the counts are those of the whole file."""
    import shutil
    import subprocess

    from tests.gates import need

    editcap = shutil.which("editcap")
    need(editcap is not None, "editcap not installed")
    assert editcap is not None
    cases = [
        ("syn-flood.pcap", "tcp.flags.reset == 1"),
        ("syn-flood.pcap", "tcp.stream in {3..40}"),
        ("close-wait-leak.pcap", "tcp.stream == 2"),
        ("stale-keepalive.pcap", 'tcp.payload contains "GET /second"'),
        ("icmp-no-route.pcap", "icmp"),
        ("pmtu-black-hole.pcap", "frame.time_relative > 1"),
    ]
    for name, text in cases:
        src = LAB / name
        base = tmp_path / name
        subprocess.run([editcap, "-c", "7", str(src), str(base)], check=True)
        parts = sorted(str(p) for p in tmp_path.glob(f"{base.stem}_*"))
        assert len(parts) > 1, name
        flt = compile_filter(text)
        whole = diagnose_files([str(src)], flt=flt)
        rotated = diagnose_files(parts, flt=flt)
        assert [(f.kind, list(f.streams), f.count) for f in rotated.findings] == [
            (f.kind, list(f.streams), f.count) for f in whole.findings
        ], (name, text)
        assert (rotated.capture.packets, rotated.capture.connections) == (
            whole.capture.packets,
            whole.capture.connections,
        ), (name, text)
        assert whole.capture.connections > 0 or whole.findings == [], (name, text)
