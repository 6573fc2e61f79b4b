"""`analyze --format json` writes long integer lists (a flood's stream numbers) in pieces
instead of through json.dumps: the text must still be exactly json.dumps(indent=2)'s."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tcpwhy.diagnose import render
from tcpwhy.diagnose.engine import diagnose_files
from tests.test_syn_flood import flood_capture


def test_long_lists_written_as_json_dumps_writes_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "flood.pcap"
    flood_capture(path)
    report = diagnose_files([str(path)])
    longs = [f for f in report.findings if len(f.streams) > render.LONG_LIST]
    assert longs, "the flood's finding lists its 50,000 streams"
    # pieces of a few numbers, so a list spans many of them and the joins are exercised
    monkeypatch.setattr(render, "INT_CHUNK", 7)
    text = render.to_json(report)
    assert text == json.dumps(report.to_json(), indent=2, ensure_ascii=False)
    got = {f["kind"]: f["streams"] for f in json.loads(text)["findings"]}
    assert got[longs[0].kind] == longs[0].streams
