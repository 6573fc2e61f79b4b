"""Hand-off of a diagnosis to Wireshark, checked with tshark on every lab recording.

* `analyze FILE --annotate OUT.pcapng` writes the whole capture (same frames, bytes and
  timestamps as tshark reads the source) with a packet comment on exactly the decisive
  frames of the findings (`frame.comment`), each naming the finding and the packet's note.
* Each finding's `display_filter` selects, in tshark, exactly the frames tcpwhy assigns
  to the finding's connections (TCP segments and the ICMP errors about them).
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tcpwhy.capture import iter_tables
from tcpwhy.cli import main
from tcpwhy.diagnose.engine import diagnose_files
from tcpwhy.diagnose.render import write_text
from tcpwhy.tcp.streams import StreamTracker
from tests.test_packets_write import PCAPNG, hexdump, records, tshark

LAB = Path(str(resources.files("tcpwhy") / "data" / "lab"))
RECORDINGS = sorted(p.name for p in LAB.glob("*.pcap"))


def analyze_json(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any]]:
    status = main(["analyze", *args, "--format", "json"])
    return status, json.loads(capsys.readouterr().out)


def expected_comments(doc: dict[str, Any]) -> dict[int, list[str]]:
    want: dict[int, list[str]] = {}
    for f in doc["findings"]:
        for st in f["timeline"]:
            text = f"tcpwhy: {f['kind']} — {st['note']}"
            if text not in want.setdefault(st["frame"], []):
                want[st["frame"]].append(text)
    return want


def tshark_comments(path: Path) -> dict[int, list[str]]:
    out = tshark(
        "-r", str(path), "-Y", "frame.comment", "-T", "json",
        "-e", "frame.number", "-e", "frame.comment",
    )  # fmt: skip
    got = {}
    for pkt in json.loads(out or "[]"):
        layers = pkt["_source"]["layers"]
        got[int(layers["frame.number"][0])] = layers["frame.comment"]
    return got


@pytest.mark.parametrize("name", RECORDINGS)
def test_annotated_capture(tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str) -> None:
    src = LAB / name
    out = tmp_path / "annotated.pcapng"
    status, doc = analyze_json(capsys, str(src), "--annotate", str(out))
    plain_status, plain = analyze_json(capsys, str(src))
    assert (status, doc) == (plain_status, plain)  # --annotate changes nothing else
    assert out.read_bytes()[:4] == PCAPNG
    assert records(out) == records(src)  # every frame, same times, lengths, link types
    assert hexdump(out) == hexdump(src)
    assert tshark_comments(out) == expected_comments(doc)


def test_annotation_names_the_packet() -> None:
    """The issue's example, word for word on the stale keep-alive recording."""
    report = diagnose_files([str(LAB / "stale-keepalive.pcap")])
    from tcpwhy.report.handoff import finding_comments

    comments = finding_comments(report)
    fin = [s.frame for f in report.findings for s in f.timeline if "(FIN)" in s.note]
    assert fin and comments[fin[0]][0].startswith("tcpwhy: stale-keepalive-reuse — ")
    assert "closes the idle" in comments[fin[0]][0]


def test_annotate_from_stdin(tmp_path: Path) -> None:
    src = LAB / "stale-keepalive.pcap"
    from_file, from_pipe = tmp_path / "file.pcapng", tmp_path / "pipe.pcapng"
    cmd = [sys.executable, "-m", "tcpwhy", "analyze"]
    a = subprocess.run([*cmd, str(src), "--annotate", str(from_file)], capture_output=True)
    b = subprocess.run(
        [*cmd, "-", "--annotate", str(from_pipe)], input=src.read_bytes(), capture_output=True
    )
    assert a.returncode == b.returncode == 1, (a.stderr, b.stderr)  # an error finding
    assert b.stdout.decode().startswith("tcpwhy analyze -:")  # the report still on stdout
    assert from_pipe.read_bytes() == from_file.read_bytes()
    assert tshark_comments(from_pipe)


def stream_frames(path: Path) -> dict[int, set[int]]:
    """tcp.stream number → the frames tcpwhy gives it (TCP rows and ICMP errors about it)."""
    tracker = StreamTracker()
    by: dict[int, set[int]] = {}
    for t in iter_tables(str(path)):
        s = tracker.feed(t)
        pairs = [(np.asarray(t["frame"]), np.asarray(s["stream"]))]
        if t.icmp is not None and tracker.icmp_out is not None:
            pairs.append((np.asarray(t.icmp["frame"]), np.asarray(tracker.icmp_out["stream"])))
        for frames, streams in pairs:
            for fr, st in zip(frames.tolist(), streams.tolist(), strict=True):
                by.setdefault(st, set()).add(fr)
    return by


@pytest.mark.parametrize("name", RECORDINGS)
def test_display_filter_selects_the_findings_connections(
    capsys: pytest.CaptureFixture[str], name: str
) -> None:
    src = LAB / name
    _, doc = analyze_json(capsys, str(src))
    by = stream_frames(src)
    report = diagnose_files([str(src)])
    buf = io.StringIO()
    write_text(report, buf)
    text = buf.getvalue()
    for f in doc["findings"]:
        flt = f["display_filter"]
        assert flt.startswith("tcp.stream") and f["streams"], f["kind"]
        want = sorted(set().union(*(by[s] for s in f["streams"])))
        got = [int(x) for x in tshark("-r", str(src), "-Y", flt, "-T", "fields",
                                      "-e", "frame.number").split()]  # fmt: skip
        assert got == want, (f["kind"], flt)
        assert f"Wireshark: -Y '{flt}'" in text


def test_long_filter_is_shortened_in_text_only() -> None:
    """A filter over MAX_FILTER_CHARS: the text shows the examples' and says so; the JSON
    keeps the exact one (a scattered set of streams cannot be a range)."""
    from tcpwhy.diagnose.model import MAX_FILTER_CHARS, Finding, Severity
    from tcpwhy.diagnose.render import console, finding_block

    streams = list(range(0, 400, 2))
    f = Finding("k", Severity.WARNING, "s", streams, [], count=len(streams), examples=[0, 2, 4])
    assert len(f.display_filter) > MAX_FILTER_CHARS
    assert f.to_json()["display_filter"] == f.display_filter
    assert f.display_filter.count(",") == len(streams) - 1
    buf = io.StringIO()
    console(buf, False).print(finding_block(f, 1))
    assert "Wireshark: -Y 'tcp.stream in {0, 2, 4}'  (3 example streams of 200" in buf.getvalue()


@pytest.mark.parametrize(
    ("args", "where", "reason"),
    [
        (
            ["OUT/missing/a.pcapng"],
            "OUT/missing/a.pcapng",
            "cannot write: No such file or directory",
        ),
        (["OUT"], "OUT", "is a directory"),
        (["-"], "--annotate", "standard output carries the report: give a file name"),
    ],
)
def test_annotate_bad_output(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    where: str,
    reason: str,
) -> None:
    args = [a.replace("OUT", str(tmp_path)) for a in args]
    where = where.replace("OUT", str(tmp_path))
    assert main(["analyze", str(LAB / "clean.pcap"), "--annotate", *args]) == 2
    assert capsys.readouterr().err.splitlines() == [f"tcpwhy: {where}: {reason}"]
    assert list(tmp_path.iterdir()) == []


def test_annotate_takes_one_capture(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "a.pcapng"
    two = [str(LAB / "clean.pcap"), str(LAB / "refused.pcap")]
    assert main(["analyze", *two, "--annotate", str(out)]) == 2
    assert capsys.readouterr().err.startswith("tcpwhy: --annotate: takes one capture file")
    assert not out.exists()


def test_annotate_bad_input_leaves_no_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.pcap"
    bad.write_bytes(b"\x0a\x0d\x0d\x0a but not really")
    out = tmp_path / "a.pcapng"
    assert main(["analyze", str(bad), "--annotate", str(out)]) == 2
    assert capsys.readouterr().err.startswith(f"tcpwhy: {bad}: ")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.pcap"]


def test_html_report_shows_the_same_filter() -> None:
    """The HTML page's "Wireshark display filter" is the finding's own (`Finding`)."""
    from html import escape

    from tcpwhy.report.html import render_html

    report = diagnose_files([str(LAB / "syn-flood.pcap")])
    page = render_html(report)
    for f in report.findings:
        assert f.display_filter
        assert f'<pre class="filter">{escape(f.display_filter, quote=False)}</pre>' in page


def test_comments_in_expert_info(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Wireshark lists packet comments in its Expert Info ("Comments" group): tshark's
    `-z expert` shows every one."""
    out = tmp_path / "a.pcapng"
    _, doc = analyze_json(capsys, str(LAB / "stale-keepalive.pcap"), "--annotate", str(out))
    want = [c for cs in expected_comments(doc).values() for c in cs]
    expert = tshark("-q", "-r", str(out), "-z", "expert")
    assert f"Comments ({len(want)})" in expert
    assert all(c in expert for c in want)
