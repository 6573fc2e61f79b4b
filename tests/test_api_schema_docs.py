"""docs/api.md's column tables of `Capture.packets` and `Capture.connections` are generated
from the API's schemas (docs/gen_api_schema.py): these tests fail when a column is added,
removed, retyped or reordered and the page is not regenerated, and when the page says of a
column something a real table read through `tcpwhy.open` contradicts."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import tcpwhy
from tcpwhy import api

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "docs" / "gen_api_schema.py"
PAGE = REPO / "docs" / "api.md"
CAPTURE = REPO / "src" / "tcpwhy" / "data" / "lab" / "accept-queue-overflow.pcap"
"""A small shipped capture (40 packets, 7 connections, several ways of ending)."""

LOCAL = "(only with `local_nets`)"
CELL = re.compile(r"(?<!\\)\|")


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_api_schema", SCRIPT)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


gen = _generator()


def _block(text: str, table: str) -> str:
    return text.split(gen.begin(table), 1)[1].split(gen.end(table), 1)[0]


def _rows(table: str, text: str | None = None) -> list[dict[str, str]]:
    """The documented columns of `table`, as {name, local, numpy, arrow, meaning} in order."""
    out = []
    for line in _block(PAGE.read_text() if text is None else text, table).splitlines():
        if not line.startswith("| `"):
            continue
        cells = [c.strip().replace("\\|", "|") for c in CELL.split(line)[1:-1]]
        assert len(cells) == 4, line
        name = re.match(r"`([^`]+)`", cells[0])
        assert name is not None, line
        out.append(
            {
                "name": name.group(1),
                "local": str(LOCAL in cells[0]),
                "numpy": cells[1],
                "arrow": cells[2].strip("`"),
                "meaning": cells[3],
            }
        )
    return out


@pytest.fixture(scope="module")
def cap() -> Any:
    return tcpwhy.open(CAPTURE)


@pytest.fixture(scope="module")
def cap_local() -> Any:
    return tcpwhy.open(CAPTURE, local_nets="private")


def test_page_is_up_to_date() -> None:
    text = PAGE.read_text()
    assert gen.splice(text) == text, "docs/api.md is out of date: run python docs/gen_api_schema.py"
    out = subprocess.run([sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_drift_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A page missing a row is out of date (and rewritten whole); a schema with a column more
    makes the page out of date."""
    monkeypatch.syspath_prepend(str(SCRIPT.parent))
    from generated_page import rewrite_or_check

    text = gen.splice(PAGE.read_text())  # up to date, whatever the page's state
    row = next(line for line in text.splitlines() if line.startswith("| `stream` | int64 |"))
    stale = text.replace(row + "\n", "", 1)
    assert stale != text and gen.splice(stale) == text
    page = tmp_path / "api.md"
    page.write_text(stale)
    assert rewrite_or_check(page, gen.splice, True, "docs/gen_api_schema.py") == 1
    assert page.read_text() == stale
    assert rewrite_or_check(page, gen.splice, False, "docs/gen_api_schema.py") == 0
    assert page.read_text() == text

    real = api.packet_schema

    def more() -> dict[str, api.Field]:
        got = real()
        got["hops"] = api.Field("hops", "|u1", (), "a column the page does not have yet")
        return got

    monkeypatch.setattr(api, "packet_schema", more)
    spliced = gen.splice(text)
    assert spliced != text
    assert [r["name"] for r in _rows("packets", spliced)][-1] == "hops"


def test_documented_columns_are_the_tables_columns(cap: Any, cap_local: Any) -> None:
    packets = _rows("packets")
    conns = _rows("connections")
    assert [r["name"] for r in packets] == list(cap.packets.schema)
    plain = [r["name"] for r in conns if r["local"] == "False"]
    assert plain == list(cap.connections.schema)
    assert [r["name"] for r in conns if r["local"] == "True"] == ["local_orig", "local_resp"]
    assert [r["name"] for r in conns] == list(cap_local.connections.schema)
    assert len(cap.packets) > 0 and len(cap.connections) > 1


def _numpy_cell(table: Any, name: str) -> str:
    """What the page should say of the column's numpy array, from the array itself."""
    v, f = table[name], table.schema[name]
    if v.dtype == object:
        assert all(isinstance(x, str) for x in v.tolist()), name
        return "text"
    if f.words is not None:
        return f"{v.dtype.name} codes"
    if v.ndim > 1:
        return f"{v.dtype.name}, shape (rows, {', '.join(map(str, v.shape[1:]))})"
    return v.dtype.name


def test_documented_numpy_types_and_words_are_the_tables(cap: Any, cap_local: Any) -> None:
    for rows, table in (
        (_rows("packets"), cap.packets),
        (_rows("connections"), cap_local.connections),
    ):
        for r in rows:
            assert r["numpy"] == _numpy_cell(table, r["name"]), r["name"]
            words = table.schema[r["name"]].words
            if "; words: " not in r["meaning"]:
                assert words is None, f"{r['name']}: a code column without its words"
                continue
            listed = r["meaning"].split("; words: ", 1)[1]
            if listed.startswith("the capture's own"):
                assert words is not None, r["name"]  # the capture's, known once read
                continue
            got = [(int(k), w.replace('""', "")) for k, w in re.findall(r"(\d+) `([^`]*)`", listed)]
            assert got == list(enumerate(words)), r["name"]


def _arrow_name(pa: Any, t: Any) -> str:
    """A pyarrow type in the page's notation (dictionaries as ``dictionary<indices, values>``,
    fixed-size lists without the item's name)."""
    if pa.types.is_dictionary(t):
        return f"dictionary<{t.index_type}, {t.value_type}>"
    if pa.types.is_fixed_size_list(t):
        return f"fixed_size_list<{t.value_type}>[{t.list_size}]"
    return str(t)


def test_documented_arrow_types_are_to_arrows(cap: Any, cap_local: Any) -> None:
    pa = pytest.importorskip("pyarrow")
    for rows, table in (
        (_rows("packets"), cap.packets),
        (_rows("connections"), cap_local.connections),
        ([r for r in _rows("connections") if r["local"] == "False"], cap.connections),
    ):
        at = table.to_arrow()
        assert at.column_names == [r["name"] for r in rows]
        assert [_arrow_name(pa, t) for t in at.schema.types] == [r["arrow"] for r in rows]


def test_every_column_has_a_meaning(cap_local: Any) -> None:
    for table, rows in (
        (api.packet_schema(), _rows("packets")),
        (api.connection_schema(local=True), _rows("connections")),
    ):
        for r in rows:
            assert r["meaning"].strip(), r["name"]
            assert table[r["name"]].meaning.strip(), r["name"]
    for f in cap_local.connections.schema.values():
        assert f.meaning.strip(), f.name
