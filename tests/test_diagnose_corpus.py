"""The diagnosis walks every Zeek test trace without crashing, and every finding it makes is
well formed. What each trace must yield is pinned in test_diagnose_pinned.py."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from tcpwhy.diagnose.engine import diagnose_files
from tcpwhy.diagnose.model import Severity
from tcpwhy.diagnose.render import write_text

pytestmark = pytest.mark.corpus


def test_whole_corpus_findings_are_well_formed(zeek_corpus: Path) -> None:
    files = sorted(p for p in zeek_corpus.iterdir() if p.suffix in (".pcap", ".pcapng"))
    assert len(files) >= 40
    with_findings = 0
    for p in files:
        report = diagnose_files([str(p)])
        cap = report.capture
        assert sum(report.endings.values()) == cap.connections, p.name
        with_findings += bool(report.findings)
        for f in report.findings:
            where = (p.name, f.kind)
            assert f.summary and f.explanation and f.causes and f.fixes and f.errors, where
            assert f.count == len(f.streams) >= 1, where
            assert all(0 <= s < cap.connections for s in f.streams), where
            assert set(f.examples) <= set(f.streams), where
            assert cap.first_ns <= f.first_ns <= f.last_ns <= cap.last_ns, where
            assert f.timeline, where
            frames = [s.frame for s in f.timeline]
            assert all(1 <= fr <= cap.frames for fr in frames), where
            assert frames == sorted(frames) or len({s.stream for s in f.timeline}) > 1, where
            assert all(s.stream in f.streams for s in f.timeline), where
        worst = report.worst
        assert report.exit_status() == int(worst is not None and worst >= Severity.WARNING)
        json.dumps(report.to_json())  # serialisable as `--format json` prints it
        buf = io.StringIO()
        write_text(report, buf)
        text = buf.getvalue()
        for f in report.findings:
            assert f.kind in text, (p.name, f.kind)
    # the pins in test_diagnose_pinned.py say which; a walk that finds nothing proves nothing
    assert with_findings >= 10
