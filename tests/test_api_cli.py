"""The command line is built on the Python API's engine: what a command writes is what
`tcpwhy.open` returns, and both go through the same functions (`tcpwhy.views`).

The first half compares the commands' machine-readable outputs (``conns --format jsonl``,
``packets --format jsonl``, ``analyze --format json``, ``flow --format json``) with the API's
objects on every shipped recording, with and without a display filter, and between two
capture points. The second half runs each command in this process with the shared functions
wrapped, and fails if a command (or an API view) stops calling them.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

import tcpwhy
import tcpwhy.views
from tcpwhy.cli import main
from tcpwhy.decode.table import FLAG_NAMES, format_addr
from tests.test_pairing import CLIENT, SERVER

LAB = Path(tcpwhy.__file__).parent / "data" / "lab"
RECORDINGS = sorted(p.name for p in LAB.glob("*.pcap"))


def run(capsys: pytest.CaptureFixture[str], *args: str, status: int | None = 0) -> str:
    """`tcpwhy ARGS` in this process: its stdout (its exit status checked)."""
    got = main(list(args))
    out, err = capsys.readouterr()
    if status is not None:
        assert got == status, err
    assert "Traceback" not in err
    return out


def lines(text: str) -> list[dict[str, Any]]:
    # exact decimals: a timestamp keeps every digit the command printed
    return [json.loads(x, parse_float=Decimal) for x in text.splitlines()]


# ---------------------------------------------------------------- conns

CONN_TEXT = (
    "orig_h",
    "resp_h",
    "orientation",
    "orig_state",
    "resp_state",
    "end",
    "conn_state",
    "history",
    "emitted",
    "zeek_orig_state",
    "zeek_resp_state",
)
CONN_NUMBERS = (
    "stream",
    "orig_p",
    "resp_p",
    "start_ns",
    "orig_pkts",
    "resp_pkts",
    "orig_bytes",
    "resp_bytes",
    "orig_payload",
    "resp_payload",
    "orig_ip_bytes",
    "resp_ip_bytes",
    "missed_bytes",
    "retransmissions",
    "zero_windows",
    "continued",
)


def assert_same_connections(want: list[dict[str, Any]], conns: tcpwhy.Table, where: str) -> None:
    """Every record of the command, field by field, is the table's row of that stream."""
    want = sorted(want, key=lambda r: (r["stream"], r["start_ns"]))
    assert len(conns) == len(want), where
    rows = conns.to_arrow().to_pylist()
    for k in CONN_NUMBERS:
        assert conns[k].tolist() == [r[k] for r in want], (where, k)
    for k in CONN_TEXT:
        assert [g[k] for g in rows] == [r[k] for r in want], (where, k)
    names = [g["server_name"] for g in rows]
    assert names == [r.get("server_name") or "" for r in want], where
    for g, r, d, i in zip(rows, want, conns["duration_ns"], conns["irtt_ns"], strict=True):
        assert round(int(d) / 1e9, 6) == float(r["duration"]), (where, r["stream"])
        if r["irtt"] is None:
            assert g["irtt_ns"] is None, (where, r["stream"])
        else:
            assert round(int(i) / 1e9, 6) == float(r["irtt"]), (where, r["stream"])


@pytest.mark.parametrize("name", RECORDINGS)
def test_conns_jsonl_is_capture_connections(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = str(LAB / name)
    want = lines(run(capsys, "conns", "--format", "jsonl", path))
    assert want, name
    assert_same_connections(want, tcpwhy.open(path).connections, name)


FILTERS = ["tcp.flags.reset == 1", "tcp.analysis.retransmission", "icmp"]


@pytest.mark.parametrize("flt", FILTERS)
def test_filtered_views_agree(flt: str, capsys: pytest.CaptureFixture[str]) -> None:
    """With -Y, the same connections (those with a matching packet, ICMP errors included) and
    the same packets; on every recording, and some of them must match something."""
    matched = 0
    for name in RECORDINGS:
        path = str(LAB / name)
        cap = tcpwhy.open(path, display_filter=flt)
        want = lines(run(capsys, "conns", "--format", "jsonl", "-Y", flt, path))
        assert_same_connections(want, cap.connections, f"{name} -Y {flt}")
        pk = lines(run(capsys, "packets", "--format", "jsonl", "-Y", flt, path))
        tcp = [r["frame"] for r in pk if "icmp" not in r]
        assert cap.packets["frame"].tolist() == tcp, (name, flt)
        matched += len(want)
    assert matched > 0, flt


def _bad_checksum(src: Path, dst: Path) -> None:
    """`src` with one byte of its largest packet (the end of a segment's payload) flipped:
    that segment's TCP checksum is then wrong."""
    data = bytearray(src.read_bytes())
    assert data[:4] in (bytes.fromhex("d4c3b2a1"), bytes.fromhex("4d3cb2a1"))  # pcap, LE
    at, best, size = 24, 0, 0
    while at + 16 <= len(data):
        n = int.from_bytes(data[at + 8 : at + 12], "little")
        if n > size:
            best, size = at + 16 + n - 1, n
        at += 16 + n
    data[best] ^= 0xFF
    dst.write_bytes(bytes(data))


def test_zeek_boundaries_agree(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``boundaries="zeek"`` is ``conns --boundaries zeek``: records cut where Zeek's timers
    would, the packets whose checksums are bad left out (as on the copy made here)."""
    bad = tmp_path / "bad-checksum.pcap"
    _bad_checksum(LAB / "stale-keepalive.pcap", bad)
    for path in [*(str(LAB / n) for n in RECORDINGS), str(bad)]:
        want = lines(run(capsys, "conns", "--format", "jsonl", "--boundaries", "zeek", path))
        conns = tcpwhy.open(path, boundaries="zeek").connections
        assert_same_connections(want, conns, f"{path} zeek")
    plain = tcpwhy.open(bad).connections
    pkts = (plain["orig_pkts"] + plain["resp_pkts"]).sum()
    assert (conns["orig_pkts"] + conns["resp_pkts"]).sum() == pkts - 1
    with pytest.raises(ValueError, match="boundaries"):
        tcpwhy.open(bad, boundaries="zeek-ish")


def test_conns_of_two_capture_points(capsys: pytest.CaptureFixture[str]) -> None:
    """Two points of one path: the paired records (each connection once) are the table's."""
    files = [str(CLIENT), str(SERVER)]
    want = lines(run(capsys, "conns", "--format", "jsonl", *files))
    assert all(len(r["seen_at"]) == 2 for r in want)
    assert_same_connections(want, tcpwhy.open(files).connections, "two points")


# ---------------------------------------------------------------- packets

FLAG_WORDS = dict(FLAG_NAMES)


@pytest.mark.parametrize("name", RECORDINGS)
def test_packets_jsonl_is_capture_packets(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = str(LAB / name)
    rows = lines(run(capsys, "packets", "--format", "jsonl", "--absolute", path))
    want = [r for r in rows if "icmp" not in r]  # ICMP errors are listed, not TCP rows
    pk = tcpwhy.open(path).packets
    assert len(pk) == len(want) > 0, name
    assert pk["frame"].tolist() == [r["frame"] for r in want]
    assert pk["ts_ns"].tolist() == [int(r["ts"] * 10**9) for r in want]
    for col, key in [
        ("stream", "stream"),
        ("sport", "sport"),
        ("dport", "dport"),
        ("seq", "seq"),
        ("ack", "ack"),
        ("payload_len", "len"),
        ("frame_len", "length"),
    ]:
        assert pk[col].tolist() == [r[key] for r in want], (name, col)
    src = [format_addr(h, lo) for h, lo in zip(pk["src_hi"], pk["src_lo"], strict=True)]
    assert src == [r["src"] for r in want], name
    flags = [sorted(w for b, w in FLAG_WORDS.items() if f & b) for f in pk["flags"].tolist()]
    assert flags == [sorted(r["flags"]) for r in want], name


# ---------------------------------------------------------------- findings


@pytest.mark.parametrize("name", RECORDINGS)
def test_analyze_json_is_capture_findings(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = str(LAB / name)
    out = run(capsys, "analyze", "--format", "json", path, status=None)
    want = json.loads(out)
    cap = tcpwhy.open(path)
    assert [f.to_dict() for f in cap.findings] == want["findings"], name
    assert cap.report.to_dict() == want
    assert cap.report.to_json() + "\n" == out


def test_analyze_of_two_capture_points(capsys: pytest.CaptureFixture[str]) -> None:
    files = [str(CLIENT), str(SERVER)]
    want = json.loads(run(capsys, "analyze", "--format", "json", *files, status=None))
    assert len(want["capture"]["files"]) == 2
    assert tcpwhy.open(files).report.to_dict() == want


# ---------------------------------------------------------------- flows


@pytest.mark.parametrize("name", RECORDINGS)
def test_flow_json_is_capture_flow(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Every stream's ladder (the first few of a long capture) as the command writes it."""
    path = str(LAB / name)
    cap = tcpwhy.open(path)
    streams = sorted(set(cap.packets["stream"].tolist()))
    assert streams, name
    for s in streams[:3] + streams[-1:]:
        want = json.loads(run(capsys, "flow", path, str(s), "--format", "json"))
        fl = cap.flow(s)
        assert fl.to_dict() == want, (name, s)
        assert fl.to_text() == run(capsys, "flow", path, str(s)), (name, s)
    svg = run(capsys, "flow", path, str(streams[0]), "--format", "svg")
    assert svg == '<?xml version="1.0" encoding="UTF-8"?>\n' + cap.flow(streams[0]).to_svg() + "\n"


def test_flow_between_two_capture_points(capsys: pytest.CaptureFixture[str]) -> None:
    files = [str(CLIENT), str(SERVER)]
    cap = tcpwhy.open(files)
    for s in range(4):
        fl = cap.flow(s)
        assert fl.paired and fl.note is None
        assert fl.to_dict() == json.loads(run(capsys, "flow", *files, str(s), "--format", "json"))
        assert fl.to_text() == run(capsys, "flow", *files, str(s))
        svg = run(capsys, "flow", *files, str(s), "--format", "svg")
        assert svg == '<?xml version="1.0" encoding="UTF-8"?>\n' + fl.to_svg() + "\n"


def test_flow_with_a_display_filter(capsys: pytest.CaptureFixture[str]) -> None:
    path = str(LAB / "stale-keepalive.pcap")
    flt = "tcp.len > 0"
    fl = tcpwhy.open(path, display_filter=flt).flow(0)
    assert any(r.kind == "hidden" for r in fl.rows)
    assert fl.to_text() == run(capsys, "flow", path, "0", "-Y", flt)


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "command",
    [
        ["conns", "--format", "jsonl"],
        ["packets", "--format", "jsonl"],
        ["analyze", "--format", "json"],
        ["flow", "--format", "json", "{}", "0"],
    ],
)
def test_errors_are_the_api_exceptions_in_one_line(
    command: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A file that is not a capture: the command's one line and status 2 carry the message of
    the exception the API raises for the same file."""
    bad = tmp_path / "notes.pcap"
    bad.write_text("not a capture\n")
    args = [a.replace("{}", str(bad)) for a in command]
    if "{}" not in command:
        args.append(str(bad))
    assert main(args) == 2
    err = capsys.readouterr().err
    cap = tcpwhy.open(bad)
    with pytest.raises(tcpwhy.NotACaptureError) as exc:
        {"conns": lambda: cap.connections, "packets": lambda: cap.packets,
         "analyze": lambda: cap.findings, "flow": lambda: cap.flow(0)}[command[0]]()  # fmt: skip
    assert err == f"tcpwhy: {exc.value}\n"


def test_missing_stream_is_the_same_error(capsys: pytest.CaptureFixture[str]) -> None:
    path = str(LAB / "refused.pcap")
    assert main(["flow", path, "999"]) == 2
    err = capsys.readouterr().err
    with pytest.raises(tcpwhy.TcpwhyError) as exc:
        tcpwhy.open(path).flow(999)
    assert err == f"tcpwhy: {exc.value}\n"


# ---------------------------------------------------------------- one engine


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Each shared function of `tcpwhy.views` wrapped: how often it ran (and, for the
    generators, how many chunks or batches it gave)."""
    shared = ("packet_chunks", "connection_batches", "connection_options", "flow_model")
    shared += ("diagnosis",)
    counts = dict.fromkeys(shared, 0)
    counts.update(chunks=0, batches=0)

    def counting(name: str) -> Callable[..., Any]:
        real = getattr(tcpwhy.views, name)

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            counts[name] += 1
            got = real(*args, **kwargs)
            if name == "packet_chunks":
                return _count(got, counts, "chunks")
            if name == "connection_batches":
                n, it = got
                return n, _count(it, counts, "batches")
            return got

        return wrapper

    for name in shared:
        monkeypatch.setattr(tcpwhy.views, name, counting(name))
    return counts


def _count(it: Iterator[Any], counts: dict[str, int], key: str) -> Iterator[Any]:
    for x in it:
        counts[key] += 1
        yield x


ONE = str(LAB / "stale-keepalive.pcap")
COMMANDS = [
    (["conns", "--format", "jsonl", ONE], "connection_batches"),
    (["conns", ONE], "connection_batches"),
    (["conns", "--format", "csv", "-Y", "tcp.flags.reset == 1", ONE], "connection_batches"),
    (["conns", "--format", "zeek", ONE], "connection_batches"),
    (["conns", "--format", "jsonl", str(CLIENT), str(SERVER)], "connection_batches"),
    (["conns", "--format", "parquet", "-o", "{tmp}/c.parquet", ONE], "connection_batches"),
    (["packets", "--format", "jsonl", ONE], "packet_chunks"),
    (["packets", "-Y", "tcp.len > 0", ONE], "packet_chunks"),
    (["packets", "--format", "csv", "-c", "3", ONE], "packet_chunks"),
    (["packets", "--format", "parquet", "-o", "{tmp}/p.parquet", ONE], "packet_chunks"),
    (["flow", ONE, "0"], "flow_model"),
    (["flow", "--format", "svg", ONE, "0"], "flow_model"),
    (["flow", "--format", "json", ONE, "0"], "flow_model"),
    (["flow", str(CLIENT), str(SERVER), "1"], "flow_model"),
    (["analyze", "--format", "json", ONE], "diagnosis"),
    (["analyze", ONE, "--no-pair"], "diagnosis"),
]


@pytest.mark.parametrize(("argv", "shared"), COMMANDS, ids=lambda v: " ".join(v)[-60:])
def test_commands_go_through_the_shared_functions(
    argv: list[str],
    shared: str,
    calls: dict[str, int],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(args) in (0, 1)
    assert capsys.readouterr().out or "-o" in args
    assert calls[shared] == 1, calls
    if shared == "packet_chunks":
        assert calls["chunks"] >= 1
    if shared == "connection_batches":
        assert calls["batches"] >= 1
        assert calls["connection_options"] == 1  # the options as `Capture` derives them


def test_api_views_go_through_the_shared_functions(calls: dict[str, int]) -> None:
    cap = tcpwhy.open(ONE)
    assert calls["connection_options"] == 1
    assert len(cap.packets) and calls["packet_chunks"] == 1 and calls["chunks"] >= 1
    assert len(cap.connections) and calls["connection_batches"] == 1 and calls["batches"] >= 1
    assert cap.flow(0).rows and calls["flow_model"] == 1
    assert cap.findings and calls["diagnosis"] == 1
    tcpwhy.analyze(ONE)
    assert calls["diagnosis"] == 2


def test_fleet_points_go_through_the_shared_diagnosis(
    calls: dict[str, int], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`analyze DIR` (a fleet: one capture point per sub-directory) diagnoses each point with
    the function behind `tcpwhy.analyze`."""
    for point, name in (("web-1", "refused.pcap"), ("web-2", "stale-keepalive.pcap")):
        (tmp_path / point).mkdir()
        shutil.copy(LAB / name, tmp_path / point / name)
    assert main(["analyze", "--format", "json", str(tmp_path)]) in (0, 1)
    assert json.loads(capsys.readouterr().out)
    assert calls["diagnosis"] == 2
