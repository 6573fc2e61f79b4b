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


def test_int_lists_as_json_dumps_writes_them(monkeypatch: pytest.MonkeyPatch) -> None:
    """The compiled digits of a long list are json.dumps's, at any nesting, across pieces:
    int64's ends, zero, negatives; lists json.dumps must write itself are left to it (a
    bool among the ints, an int beyond 64 bits, a short list)."""
    import numpy as np

    from tcpwhy.diagnose.model import StreamNumbers

    rng = np.random.default_rng(7)
    edge = [-(2**63), 2**63 - 1, 0, -1, 1, 9, 10, -10, 99, 100, 10**18, -(10**18)]
    values = np.array(edge + rng.integers(-(2**63), 2**63 - 1, 2000).tolist(), np.int64)
    for chunk in (7, len(values), 1 << 16):
        monkeypatch.setattr(render, "INT_CHUNK", chunk)
        for level in (1, 2, 4):
            got = "".join(render._int_list_parts(values, level))
            # the list as json.dumps writes it when it sits `level` deep
            want = json.dumps(values.tolist(), indent=2).replace("\n", "\n" + "  " * (level - 1))
            assert got == want, (chunk, level)
    long = values.tolist()
    assert np.array_equal(render._long_ints(long), values)
    assert np.array_equal(render._long_ints(StreamNumbers(np.sort(values))), np.sort(values))
    assert render._long_ints([*long[:-1], True]) is None
    assert render._long_ints([*long[:-1], 2**63]) is None
    assert render._long_ints(long[: render.LONG_LIST]) is None
    assert render._long_ints(StreamNumbers(np.arange(render.LONG_LIST))) is None


def test_a_program_not_made_by_program_is_refused() -> None:
    """The row formatter reads a word after each step (`conns_kernel.program`'s fifth
    column); a program without it is refused (-3), not read past its end."""
    import numpy as np

    from tcpwhy.report import conns_kernel as k

    vocab, voff = k.vocabulary([b",", b"x"])
    ints = np.arange(5, dtype=np.int64).reshape(1, -1)
    args = (np.zeros((5, 1), np.uint8), np.zeros(5, np.int64), vocab, voff)
    out = np.empty(5 * 30 + k.WORD_SLACK, np.uint8)
    fixed = np.zeros((5, 0), np.uint8)
    four = np.array([(k.OP_INT, 0, 0, -1), (k.OP_LIT, 0, 0, -1)], np.int64)
    assert k.format_rows(four, ints, *args, fixed, out, 0, 5) == -3
    size = k.format_rows(k.program([(k.OP_INT, 0, 0, -1, 0)]), ints, *args, fixed, out, 0, 5)
    assert out[:size].tobytes() == b"0,1,2,3,4,"
    # a literal fused after a value, and the one after it, give the words in order
    prog = k.program([(k.OP_LIT, 1, 0, -1, -1), (k.OP_INT, 0, 0, -1, 0)])
    size = k.format_rows(prog, ints, *args, fixed, out, 0, 2)
    assert out[:size].tobytes() == b"x0,x1,"
