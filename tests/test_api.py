"""The Python API (tcpwhy.open, tcpwhy.analyze, tcpwhy.host) against the command line.

Only public names are used here. Values are checked against what the commands write
(`conns --format jsonl`, `packets --format jsonl`, `analyze --format json`, `flow`), run as
separate processes, on the lab recordings shipped in the package.
"""

from __future__ import annotations

import dataclasses
import inspect
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import tcpwhy

LAB = Path(tcpwhy.__file__).parent / "data" / "lab"
CAPTURES = [
    "stale-keepalive.pcap",
    "close-wait-leak.pcap",
    "refused.pcap",
    "zero-window.pcap",
    "icmp-reject.pcap",
    "time-wait-reuse.pcap",
]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tcpwhy", *args], capture_output=True, text=True, check=False
    )


def cli_jsonl(*args: str) -> list[dict[str, Any]]:
    p = cli(*args)
    assert p.returncode == 0, p.stderr
    return [json.loads(line) for line in p.stdout.splitlines()]


# ---------------------------------------------------------------- public surface

PUBLIC = {
    "open": "(path_or_paths: 'Source | Sequence[Source]', *, display_filter: 'str | None' = None, boundaries: 'str' = 'stream', pair: 'bool' = True, reassemble: 'bool' = True, check_checksums: 'bool | None' = None, max_active: 'int | None' = None, local_nets: 'str | Sequence[str] | None' = None, community_id_seed: 'int' = 0, progress: 'bool' = False) -> 'Capture'",
    "analyze": "(paths: 'Source | Sequence[Source]', workers: 'int | None' = None, scheduler: 'str | None' = None, *, display_filter: 'str | None' = None, close_wait_s: 'float' = 10.0, fin_wait_2_s: 'float' = 5.0, pair: 'bool' = True, reassemble: 'bool' = True, progress: 'bool' = False) -> 'Report | FleetReport'",
    "FleetReport.to_dict": "(self) -> 'dict[str, Any]'",
    "FleetReport.to_json": "(self) -> 'str'",
    "FleetReport.to_text": "(self) -> 'str'",
    "Capture.flow": "(self, stream: 'int', *, fold: 'int' = 3) -> 'Flow'",
    "Table.to_arrow": "(self) -> 'pyarrow.Table'",
    "Table.to_pandas": "(self) -> 'pandas.DataFrame'",
    "Table.to_polars": "(self) -> 'polars.DataFrame'",
    "Table.__getitem__": "(self, name: 'str') -> 'npt.NDArray[Any]'",
    "Table.__len__": "(self) -> 'int'",
    "Table.__contains__": "(self, name: 'object') -> 'bool'",
    "Table.__iter__": "(self) -> 'Iterator[str]'",
    "Finding.to_dict": "(self) -> 'dict[str, Any]'",
    "Report.to_dict": "(self) -> 'dict[str, Any]'",
    "Report.to_json": "(self) -> 'str'",
    "Report.to_text": "(self) -> 'str'",
    "Report.to_html": "(self) -> 'str'",
    "Flow.to_svg": "(self) -> 'str'",
    "Flow.to_text": "(self) -> 'str'",
    "Flow.to_dict": "(self) -> 'dict[str, Any]'",
    "host.states": "(netns: 'str | None' = None, by: 'str | None' = None) -> 'dict[str, Any]'",
    "host.listen": "(netns: 'str | None' = None) -> 'dict[str, Any]'",
    "host.counters": "(netns: 'str | None' = None) -> 'dict[str, Any]'",
}
PROPERTIES = {
    "Capture": ["packets", "connections", "findings", "report", "files"],
    "Table": ["schema", "columns"],
    "Finding": [
        "kind",
        "severity",
        "summary",
        "streams",
        "frames",
        "explanation",
        "causes",
        "fixes",
        "errors",
        "display_filter",
        "examples",
        "count",
        "fixes_by_stack",
        "first_time",
        "last_time",
    ],
    "Report": ["findings", "connections", "capture", "exit_status"],
    "FleetReport": ["findings", "points", "capture_points", "errors", "exit_status"],
    "Flow": ["view", "rows", "paired"],
}
ATTRIBUTES = {  # plain attributes, checked on an instance (`_instances`)
    "Capture": [
        "boundaries",
        "pair",
        "reassemble",
        "display_filter",
        "progress",
        "warnings",
        "FLOWS_KEPT",
    ],
    "Flow": ["stream", "fold", "points", "note"],
}
FIELD = ["name", "dtype", "shape", "meaning", "words"]  # `Field`'s attributes, in order
CLASSES = [
    "Capture",
    "Table",
    "Field",
    "Finding",
    "Flow",
    "Report",
    "FleetReport",
    "CaptureWarning",
    "TcpwhyError",
    "CaptureError",
    "NotACaptureError",
    "UnsupportedLinkTypeError",
    "TruncatedCaptureError",
    "FilterError",
]


def _resolve(dotted: str) -> Any:
    obj: Any = tcpwhy
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def _instances() -> dict[str, Any]:
    """One object of each class of `ATTRIBUTES`, for its instance attributes."""
    cap = tcpwhy.open(LAB / "refused.pcap")
    return {"Capture": cap, "Flow": cap.flow(0)}


def test_public_names_and_signatures_are_stable() -> None:
    for name, sig in PUBLIC.items():
        got = str(inspect.signature(_resolve(name)))
        assert got == sig, name
    for cls, props in PROPERTIES.items():
        for p in props:
            assert isinstance(inspect.getattr_static(_resolve(cls), p), property), (cls, p)
    for cls, obj in _instances().items():
        for a in ATTRIBUTES[cls]:
            assert hasattr(obj, a), (cls, a)
    for name in CLASSES:
        assert inspect.isclass(_resolve(name)), name
    for sub in ("NotACaptureError", "UnsupportedLinkTypeError", "TruncatedCaptureError"):
        assert issubclass(_resolve(sub), tcpwhy.CaptureError)
    assert issubclass(tcpwhy.FilterError, tcpwhy.TcpwhyError)
    for name in [*PUBLIC, *CLASSES]:
        assert inspect.getdoc(_resolve(name)), f"{name} has no docstring"
    for cls, props in PROPERTIES.items():
        for p in props:
            assert inspect.getdoc(getattr(_resolve(cls), p)), f"{cls}.{p} has no docstring"
    assert [f.name for f in dataclasses.fields(tcpwhy.Field)] == FIELD
    # `from tcpwhy import *` gives the API (`open` left out: it would shadow the builtin)
    assert sorted(tcpwhy.__all__) == sorted(["host", "analyze", *CLASSES])


def test_import_is_lazy() -> None:
    code = "import sys, tcpwhy; print(sorted(m for m in ('numpy', 'tcpwhy.api', 'pyarrow') if m in sys.modules))"
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert p.stdout.strip() == "[]"


# ---------------------------------------------------------------- tables


CONN_KEYS = (
    "stream",
    "orig_h",
    "orig_p",
    "resp_h",
    "resp_p",
    "orig_pkts",
    "resp_pkts",
    "orig_bytes",
    "resp_bytes",
    "orig_ip_bytes",
    "resp_ip_bytes",
    "retransmissions",
    "zero_windows",
    "orig_state",
    "resp_state",
    "end",
    "conn_state",
    "history",
    "orientation",
    "emitted",
)


@pytest.mark.parametrize("name", CAPTURES)
def test_connections_match_conns_jsonl(name: str) -> None:
    path = str(LAB / name)
    want = sorted(cli_jsonl("conns", "--format", "jsonl", path), key=lambda r: r["stream"])
    conns = tcpwhy.open(path).connections
    assert len(conns) == len(want) > 0
    got = conns.to_arrow().to_pylist()
    for g, w in zip(got, want, strict=True):
        for k in CONN_KEYS:
            assert g[k] == w[k], (name, w["stream"], k)
        assert g["start_ns"].timestamp() == pytest.approx(w["start"], abs=1e-6)
        assert g["duration_ns"].total_seconds() == pytest.approx(w["duration"], abs=1e-6)
        if "irtt" in w and w["irtt"] is not None:
            assert g["irtt_ns"].total_seconds() == pytest.approx(w["irtt"], abs=1e-6)
        else:
            assert g["irtt_ns"] is None


TEXT_CAPTURES = [
    *sorted(p.name for p in LAB.glob("*.pcap")),
    "../../../../tests/data/tls/clean-tls-v6-close-crossing.pcap",  # IPv6 addresses
    "../../../../tests/data/icmp/codes.pcap",
]


@pytest.mark.parametrize("name", TEXT_CAPTURES)
def test_text_columns_match_conns_jsonl(name: str) -> None:
    """The address and history text, made in bulk, is the command's, on every recording."""
    path = (LAB / name).resolve()
    if not path.exists():  # the tests/data captures are not in an installed package
        pytest.skip(f"{path}: not in this tree")
    want = sorted(cli_jsonl("conns", "--format", "jsonl", str(path)), key=lambda r: r["stream"])
    conns = tcpwhy.open(path).connections
    at = conns.to_arrow()
    assert len(at) == len(want) > 0
    for k in ("orig_h", "resp_h", "history"):
        expected = [w[k] for w in want]
        assert at.column(k).to_pylist() == expected, (name, k)
        assert conns[k].tolist() == expected, (name, k)


FLAG_BITS = ["FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR", "NS"]


@pytest.mark.parametrize("name", CAPTURES[:3])
def test_packets_match_packets_jsonl(name: str) -> None:
    path = str(LAB / name)
    want = [r for r in cli_jsonl("packets", "--format", "jsonl", path) if "flags" in r]
    pk = tcpwhy.open(path).packets
    assert len(pk) == len(want) > 0
    assert pk["frame"].tolist() == [r["frame"] for r in want]
    assert pk["stream"].tolist() == [r["stream"] for r in want]
    assert pk["sport"].tolist() == [r["sport"] for r in want]
    assert pk["dport"].tolist() == [r["dport"] for r in want]
    assert pk["payload_len"].tolist() == [r["len"] for r in want]
    flags = [[n for i, n in enumerate(FLAG_BITS) if f >> i & 1] for f in pk["flags"].tolist()]
    assert [sorted(f) for f in flags] == [sorted(r["flags"]) for r in want]


def test_schema_documents_every_column() -> None:
    cap = tcpwhy.open(LAB / "stale-keepalive.pcap")
    for table in (cap.packets, cap.connections):
        assert list(table.schema) == table.columns == list(table.to_arrow().column_names)
        for name, f in table.schema.items():
            assert f.name == name and f.meaning, name
            assert len(table[name]) == len(table)
    with pytest.raises(KeyError):
        cap.packets["no_such_column"]


def test_arrow_shares_the_numeric_columns() -> None:
    conns = tcpwhy.open(LAB / "close-wait-leak.pcap").connections
    at = conns.to_arrow()
    for name in ("stream", "orig_pkts", "resp_bytes", "start_ns"):
        col = conns[name]
        buf = at.column(name).chunks[0].buffers()[1]
        assert buf.address == col.__array_interface__["data"][0], name


def test_pandas_and_polars_hold_the_same_values() -> None:
    conns = tcpwhy.open(LAB / "refused.pcap").connections
    want = cli_jsonl("conns", "--format", "jsonl", str(LAB / "refused.pcap"))
    by_stream = {r["stream"]: r for r in want}
    df = conns.to_pandas()
    assert [str(x) for x in df["conn_state"]] == [by_stream[s]["conn_state"] for s in df["stream"]]
    pl = conns.to_polars()
    assert pl["resp_p"].to_list() == [by_stream[s]["resp_p"] for s in pl["stream"].to_list()]


def test_duckdb_joins_connections_with_a_log() -> None:
    duckdb = pytest.importorskip("duckdb")
    path = str(LAB / "time-wait-reuse.pcap")
    want = cli_jsonl("conns", "--format", "jsonl", path)
    conns = tcpwhy.open(path).connections.to_arrow()  # noqa: F841 -- read by DuckDB by name
    ports = sorted({r["orig_p"] for r in want})[::2]  # a log line for every other client port
    log = [(p, f"request from port {p}") for p in ports]
    con = duckdb.connect()
    con.execute("create table app_log(client_port integer, line varchar)")
    con.executemany("insert into app_log values (?, ?)", log)
    rows = con.execute(
        """select c.stream, c.orig_p, c.conn_state, l.line
           from conns c join app_log l on c.orig_p = l.client_port order by c.stream"""
    ).fetchall()
    expect = sorted(
        (r["stream"], r["orig_p"], r["conn_state"], f"request from port {r['orig_p']}")
        for r in want
        if r["orig_p"] in ports[::2]
    )
    assert rows == expect and len(rows) >= 1
    states = dict(con.execute("select conn_state, count(*) from conns group by 1").fetchall())
    counted: dict[str, int] = {}
    for r in want:
        counted[r["conn_state"]] = counted.get(r["conn_state"], 0) + 1
    assert states == counted


def _notebook_blocks() -> list[str]:
    """The Python blocks of docs/api.md's notebook section, in order."""
    text = (Path(__file__).parents[1] / "docs" / "api.md").read_text()
    section = text.split("## In a notebook", 1)[1].split("\n## ", 1)[0]
    return [b.split("```", 1)[0] for b in section.split("```python\n")[1:]]


def test_docs_notebook_example_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/api.md's worked example (a log joined with the connections in DuckDB, resets per
    second plotted) runs as written and gives what its comments say."""
    pytest.importorskip("duckdb")
    pd = pytest.importorskip("pandas")
    monkeypatch.chdir(Path(__file__).parents[1])
    plotted: list[tuple[Any, dict[str, Any]]] = []

    class Plot:  # matplotlib may be absent: record what would be drawn
        def __init__(self, data: Any) -> None:
            self.data = data

        def __call__(self, **kw: Any) -> None:
            plotted.append((self.data, kw))

    monkeypatch.setattr(pd.Series, "plot", property(Plot))
    blocks = _notebook_blocks()
    assert len(blocks) == 2
    ns: dict[str, Any] = {}
    for block in blocks:
        exec(compile(block, "docs/api.md", "exec"), ns)
    joined = ns["joined"]
    assert joined["stream"].tolist() == [0, 2, 6]
    assert [str(x) for x in joined["conn_state"]] == ["RSTR", "S1", "RSTR"]
    assert joined["status"].tolist() == ["ECONNRESET", "timeout", "ECONNRESET"]
    assert set(joined["end"].astype(str)) == {"reset by responder", "still open at end of capture"}
    [(series, kw)] = plotted
    assert series.tolist() == [2, 0, 3] and kw["kind"] == "bar"


def test_display_filter_selects_as_the_commands_do() -> None:
    path = str(LAB / "time-wait-reuse.pcap")
    flt = "tcp.flags.fin == 1"
    cap = tcpwhy.open(path, display_filter=flt)
    want_conns = cli_jsonl("conns", "--format", "jsonl", "-Y", flt, path)
    assert sorted(cap.connections["stream"].tolist()) == sorted(r["stream"] for r in want_conns)
    want_pk = cli_jsonl("packets", "--format", "jsonl", "-Y", flt, path)
    assert cap.packets["frame"].tolist() == [r["frame"] for r in want_pk if "flags" in r]


# ---------------------------------------------------------------- sources


def test_file_objects_and_urls_read_as_the_path() -> None:
    path = LAB / "stale-keepalive.pcap"
    base = tcpwhy.open(path).connections["history"].tolist()
    with open(path, "rb") as f:
        assert tcpwhy.open(f).connections["history"].tolist() == base
    assert tcpwhy.open(io.BytesIO(path.read_bytes())).connections["history"].tolist() == base
    pytest.importorskip("fsspec")
    assert tcpwhy.open(path.as_uri()).connections["history"].tolist() == base


def test_a_url_whose_package_is_missing_says_so_as_the_command_does() -> None:
    """http:// needs aiohttp: an ImportError in the command's words (it was fsspec's own)."""
    pytest.importorskip("fsspec")
    try:
        import aiohttp  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("aiohttp is installed: the URL is read (and fails for other reasons)")
    url = "http://127.0.0.1:9/x.pcap"
    with pytest.raises(ImportError) as api:
        _ = tcpwhy.open(url).connections
    p = cli("analyze", url)
    assert p.returncode == 2
    assert f"tcpwhy: {api.value}\n" == p.stderr


# ---------------------------------------------------------------- findings, flows


@pytest.mark.parametrize("name", CAPTURES)
def test_findings_match_analyze_json(name: str) -> None:
    path = str(LAB / name)
    p = cli("analyze", "--format", "json", path)
    assert p.returncode in (0, 1), p.stderr
    want = json.loads(p.stdout)
    cap = tcpwhy.open(path)
    assert [f.to_dict() for f in cap.findings] == want["findings"]
    for f, w in zip(cap.findings, want["findings"], strict=True):
        assert (f.kind, f.severity, f.summary, f.streams, f.examples) == (
            w["kind"],
            w["severity"],
            w["summary"],
            w["streams"],
            w["examples"],
        )
        assert f.display_filter.startswith("tcp.stream")
        assert (f.fixes_by_stack, f.first_time, f.last_time) == (
            w["fixes_by_stack"],
            w["first_time"],
            w["last_time"],
        )
    report = tcpwhy.analyze(path)
    assert report.to_dict() == want
    assert report.to_json() + "\n" == p.stdout
    assert report.exit_status == p.returncode


def test_flow_matches_the_flow_command() -> None:
    path = str(LAB / "stale-keepalive.pcap")
    fl = tcpwhy.open(path).flow(0)
    text = cli("flow", path, "0")
    assert fl.to_text() == text.stdout
    svg = cli("flow", path, "0", "--format", "svg").stdout
    assert svg == '<?xml version="1.0" encoding="UTF-8"?>\n' + fl.to_svg() + "\n"
    assert fl._repr_html_().startswith("<svg")
    assert fl.rows[0].frame == 1


def test_notebook_display() -> None:
    cap = tcpwhy.open(LAB / "stale-keepalive.pcap")
    assert "not read yet" in repr(cap)
    f = cap.findings[0]
    html = f._repr_html_()
    assert "stale-keepalive-reuse" in html and "<svg" in html
    assert "stale-keepalive-reuse" in repr(f)
    assert "stale-keepalive-reuse" in cap._repr_html_()
    assert "rows" in repr(cap.connections) and "<table>" in cap.connections._repr_html_()
    # the flow is the SVG ladder; the report leads with the HTML page's verdict
    flow = cap.flow(f.examples[0])
    assert flow._repr_html_().startswith("<svg") and "Flow stream" in repr(flow)
    report = tcpwhy.analyze(LAB / "stale-keepalive.pcap")
    assert isinstance(report, tcpwhy.Report) and "Report" in repr(report)
    page = report.to_html()
    said = page.split('id="verdict">', 1)[1].split("</p>", 1)[0]
    kind = said.split('<span class="kind">', 1)[1].split("</span>", 1)[0]
    assert kind == "stale-keepalive-reuse"
    text = said.split("</span> — ", 1)[1].split("<span", 1)[0].strip()
    assert text.endswith(".")
    # the page's own verdict element, not a look-alike
    assert 'id="verdict">' + said + "</p>" in report._repr_html_()
    clean = tcpwhy.analyze(LAB / "clean.pcap")
    said = clean.to_html().split('id="verdict">', 1)[1].split("</p>")[0]
    assert "no problem found." in said
    assert 'id="verdict">' + said + "</p>" in clean._repr_html_()


# ---------------------------------------------------------------- errors


def _cli_error(*args: str) -> str:
    p = cli(*args)
    assert p.returncode == 2
    assert p.stderr.startswith("tcpwhy: ")
    return p.stderr[len("tcpwhy: ") :].rstrip("\n")


def test_errors_carry_the_commands_messages(tmp_path: Path, capsys: Any) -> None:
    import struct

    junk = tmp_path / "junk.pcap"
    junk.write_bytes(b"hello world, not a capture")
    linktype = tmp_path / "tokenring.pcap"
    linktype.write_bytes(
        struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 6)
        + struct.pack("<IIII", 0, 0, 4, 4)
        + b"abcd"
    )
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(struct.pack("<IHHi", 0xA1B2C3D4, 2, 4, 0) + b"\0\0")
    cases = [
        (junk, tcpwhy.NotACaptureError),
        (linktype, tcpwhy.UnsupportedLinkTypeError),
        (cut, tcpwhy.TruncatedCaptureError),
        (tmp_path / "missing.pcap", tcpwhy.NotACaptureError),
    ]
    for path, cls in cases:
        msg = _cli_error("conns", str(path))
        for view in ("connections", "packets", "findings"):
            with pytest.raises(cls) as e:
                getattr(tcpwhy.open(path), view)
            assert str(e.value) == msg, (path, view)
    bad = "tcp.bogus == 1"
    msg = _cli_error("conns", "-Y", bad, str(LAB / "clean.pcap"))
    with pytest.raises(tcpwhy.FilterError) as fe:
        tcpwhy.open(LAB / "clean.pcap", display_filter=bad)
    assert str(fe.value) == msg and "^" in msg
    with pytest.raises(tcpwhy.TcpwhyError, match="no TCP stream 99"):
        tcpwhy.open(LAB / "clean.pcap").flow(99)
    assert capsys.readouterr().out == ""


def test_what_is_not_a_capture_is_a_type_error() -> None:
    """Bytes or numbers where a path or file object belongs: a TypeError saying what is
    expected (not an AttributeError from deep in the reader)."""
    for bad in (b"capture.pcap", [LAB / "clean.pcap", 3], 7):
        with pytest.raises(TypeError, match="a path, an fsspec URL or a binary file object"):
            tcpwhy.open(bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not bytes"):
        tcpwhy.analyze(b"capture.pcap")  # type: ignore[arg-type]
    # a file opened as text: said so, where shutil's copy said "a bytes-like object is required"
    with open(LAB / "clean.pcap") as text, pytest.raises(TypeError, match="open it with 'rb'"):
        tcpwhy.open(text)
    with pytest.raises(TypeError, match="open it with 'rb'"):
        tcpwhy.open([LAB / "clean.pcap", io.StringIO("")])


def test_cut_capture_warns_and_keeps_what_was_read(tmp_path: Path) -> None:
    data = (LAB / "stale-keepalive.pcap").read_bytes()
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(data[:-20])
    p = cli("conns", "--format", "jsonl", str(cut))
    warning = next(line for line in p.stderr.splitlines() if "warning" in line)
    cap = tcpwhy.open(cut)
    with pytest.warns(tcpwhy.CaptureWarning):
        n = len(cap.packets)
    assert n == 20
    assert warning == f"tcpwhy: {cap.warnings[0].replace(': ', ': warning: ', 1)}"


# ---------------------------------------------------------------- host


def test_host_documents_match_the_json_commands() -> None:
    want = json.loads(cli("host", "counters", "--format", "json").stdout)
    got = tcpwhy.host.counters()
    assert set(got) == set(want) and set(got["totals"]) == set(want["totals"])
    # counters only grow: this later read is at least the command's
    assert all(got["totals"][k] >= v for k, v in want["totals"].items() if "Curr" not in k)
    for view, args in (("states", ()), ("listen", ())):
        w = json.loads(cli("host", view, "--format", "json", *args).stdout)
        g = getattr(tcpwhy.host, view)()
        assert set(g) == set(w), view
        assert g["source"] == w["source"]
    w = json.loads(cli("host", "listen", "--format", "json").stdout)
    g = tcpwhy.host.listen()
    assert {x["local"] for x in g["listeners"]} == {x["local"] for x in w["listeners"]}
    g = tcpwhy.host.states(by="port")
    assert g["by"] == "port" and sum(x["total"] for x in g["groups"]) == g["total"]


# ---------------------------------------------------------------- the commands' options


def _jsonl_rows(*args: str) -> list[dict[str, Any]]:
    return sorted(cli_jsonl("conns", "--format", "jsonl", *args), key=lambda r: r["stream"])


def test_record_options_are_the_conns_options() -> None:
    path = str(LAB / "time-wait-reuse.pcap")
    want = _jsonl_rows(path, "--local-nets", "10.0.0.0/8", "--community-id-seed", "7")
    conns = tcpwhy.open(path, local_nets="10.0.0.0/8", community_id_seed=7).connections
    got = conns.to_arrow().to_pylist()
    assert len(got) == len(want) > 0
    for k in ("community_id", "local_orig", "local_resp"):
        assert [g[k] for g in got] == [w[k] for w in want], k
    assert conns["community_id"].tolist() == [w["community_id"] for w in want]
    # without local_nets the flags are unset, as the command leaves them out
    plain = tcpwhy.open(path).connections
    assert "local_orig" not in plain.columns and "local_orig" not in _jsonl_rows(path)[0]
    assert plain["community_id"].tolist() == [w["community_id"] for w in _jsonl_rows(path)]
    assert plain["community_id"].tolist() != conns["community_id"].tolist()
    assert tcpwhy.open(path, local_nets=["private"]).connections["local_orig"].all()
    for bad in ({"community_id_seed": 65536}, {"local_nets": "not-a-net"}, {"max_active": 0}):
        with pytest.raises(ValueError):
            tcpwhy.open(path, **bad)  # type: ignore[arg-type]


def test_max_active_evicts_as_conns_does() -> None:
    path = str(LAB / "time-wait-reuse.pcap")
    want = _jsonl_rows(path, "--max-active", "1")
    with pytest.warns(tcpwhy.CaptureWarning, match="active at once"):
        got = tcpwhy.open(path, max_active=1).connections.to_arrow().to_pylist()
    assert [(g["stream"], g["emitted"], g["orig_pkts"]) for g in got] == [
        (w["stream"], w["emitted"], w["orig_pkts"]) for w in want
    ]
    assert any(g["emitted"].startswith("evicted") for g in got)


def _bad_checksum_copy(src: Path, dst: Path, frame: int) -> None:
    """`src` with the TCP checksum of `frame` (1-based) changed (Ethernet, IPv4 or IPv6)."""
    data = bytearray(src.read_bytes())
    assert int.from_bytes(data[20:24], "little") == 1  # Ethernet
    off, n = 24, 0
    while off < len(data):
        caplen = int.from_bytes(data[off + 8 : off + 12], "little")
        n += 1
        if n == frame:
            ip = off + 16 + 14
            tcp = ip + (data[ip] & 0x0F) * 4 if data[ip] >> 4 == 4 else ip + 40
            data[tcp + 16] ^= 0xFF
            dst.write_bytes(bytes(data))
            return
        off += 16 + caplen
    raise AssertionError(f"{src} has no frame {frame}")


def test_checksums_are_checked_as_the_commands_say(tmp_path: Path) -> None:
    bad = tmp_path / "bad-checksum.pcap"
    _bad_checksum_copy(LAB / "stale-keepalive.pcap", bad, 6)
    for flag, value in (("--check-checksums", True), (None, None)):
        want = _jsonl_rows(str(bad), *([flag] if flag else []))
        got = tcpwhy.open(bad, check_checksums=value).connections.to_arrow().to_pylist()
        assert [(g["orig_pkts"], g["resp_pkts"]) for g in got] == [
            (w["orig_pkts"], w["resp_pkts"]) for w in want
        ], flag
    checked = tcpwhy.open(bad, check_checksums=True).connections
    unchecked = tcpwhy.open(bad).connections
    assert checked["resp_pkts"].sum() + checked["orig_pkts"].sum() == (
        unchecked["resp_pkts"].sum() + unchecked["orig_pkts"].sum() - 1
    )
    # Zeek's cut checks them unless told not to (-C)
    for flag, value in (("--ignore-checksums", False), (None, None)):
        want = _jsonl_rows(str(bad), "--boundaries", "zeek", *([flag] if flag else []))
        got = tcpwhy.open(bad, boundaries="zeek", check_checksums=value).connections
        assert got["orig_pkts"].tolist() == [w["orig_pkts"] for w in want], flag
        assert got["resp_pkts"].tolist() == [w["resp_pkts"] for w in want], flag


def test_no_pair_is_the_commands_no_pair() -> None:
    paths = [
        str(LAB / "middlebox-idle-reset-path.pcap"),
        str(LAB / "middlebox-idle-reset-path.server.pcap"),
    ]
    for pair in (True, False):
        args = [] if pair else ["--no-pair"]
        want = cli_jsonl("conns", "--format", "jsonl", *paths, *args)
        got = tcpwhy.open(paths, pair=pair).connections
        assert len(got) == len(want) > 0, pair
        assert sorted(
            zip(got["stream"].tolist(), got["orig_pkts"].tolist(), strict=True)
        ) == sorted((w["stream"], w["orig_pkts"]) for w in want), pair
        p = cli("analyze", "--format", "json", *paths, *args)
        report = tcpwhy.analyze(paths, pair=pair)
        assert isinstance(report, tcpwhy.Report)
        assert report.to_dict() == json.loads(p.stdout), pair
    assert len(tcpwhy.open(paths, pair=False).connections) > len(tcpwhy.open(paths).connections)


def test_no_reassemble_is_the_commands(tmp_path: Path) -> None:
    sys.path.insert(0, str(Path(__file__).parent.parent))
    from tests import fragment_lab

    why = fragment_lab.available()
    if why:
        pytest.skip(why)
    cap = tmp_path / "frag.pcap"
    fragment_lab.record(cap)
    for reassemble in (True, False):
        args = [] if reassemble else ["--no-reassemble"]
        want = _jsonl_rows(str(cap), *args)
        got = tcpwhy.open(cap, reassemble=reassemble).connections
        assert got["orig_pkts"].tolist() == [w["orig_pkts"] for w in want], reassemble
        pk = tcpwhy.open(cap, reassemble=reassemble).packets
        rows = [
            r for r in cli_jsonl("packets", "--format", "jsonl", str(cap), *args) if "flags" in r
        ]
        assert pk["frame"].tolist() == [r["frame"] for r in rows], reassemble
    whole = tcpwhy.open(cap).connections["orig_pkts"].sum()
    assert tcpwhy.open(cap, reassemble=False).connections["orig_pkts"].sum() < whole
