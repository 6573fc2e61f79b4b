"""Every capture of tcpdump's test suite (830 real and deliberately malformed files).

Each must end without a traceback, hang or unbounded memory: either its TCP
packets are listed (exit 0), or exactly one line `tcpwhy: FILE: reason` goes
to stderr with exit status 2. The files run in two worker processes (one per
core) under a timeout; each worker reports its peak memory.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import tcpwhy

HERE = Path(__file__).parent
ERROR_LINE = re.compile(r"^tcpwhy: (?P<file>.+?): (?P<reason>.+)$")
WARNING_LINE = re.compile(r"^tcpwhy: .+?: warning: .+$")
SKIPPED_LINE = re.compile(r"^skipped: (\d+ [A-Za-z0-9 -]+)(, \d+ [A-Za-z0-9 -]+)*$")


def _walk(files: list[Path], *mode: str) -> list[dict[str, object]]:
    """Two worker processes (one per core) over the files, each under a timeout."""
    half = (len(files) + 1) // 2
    procs = [
        subprocess.Popen(
            [sys.executable, str(HERE / "corpus_walk.py"), *mode, *map(str, part)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for part in (files[:half], files[half:])
    ]
    results: list[dict[str, object]] = []
    for p in procs:
        out, _ = p.communicate(timeout=600)
        assert p.returncode == 0
        results += [json.loads(line) for line in out.splitlines()]
    return results


def ended_cleanly(r: dict[str, object], listed: tuple[int, ...] = (0,)) -> bool:
    """Checks one `corpus_walk` result: no traceback, under 30 s, and either listed (a
    status of `listed`, stderr only warnings) or refused (status 2, exactly one line
    `tcpwhy: FILE: reason`); True when listed."""
    name = r["file"]
    assert not r["traceback"], f"{name}: {r['traceback']}"
    assert float(r["seconds"]) < 30, f"{name} took {r['seconds']} s"  # type: ignore[arg-type]
    lines: list[str] = r["stderr"]  # type: ignore[assignment]
    if r["status"] in listed:
        for line in lines:
            assert WARNING_LINE.match(line) or SKIPPED_LINE.match(line), f"{name}: {line!r}"
        return True
    assert r["status"] == 2, f"{name}: exit status {r['status']}"
    assert len(lines) == 1, f"{name}: {lines}"
    m = ERROR_LINE.match(lines[0])
    assert m and m["file"] == name, lines[0]
    return False


def test_whole_tcpdump_corpus(tcpdump_corpus: Path) -> None:
    files = sorted(p for p in tcpdump_corpus.iterdir() if p.suffix in (".pcap", ".pcapng"))
    assert len(files) == 830
    results = _walk(files)
    assert len(results) == len(files)
    peak_mb = max(int(r["maxrss_kb"]) for r in results) / 1024  # type: ignore[call-overload]
    listed = errors = 0
    for r in results:
        if ended_cleanly(r):
            listed += 1
        else:
            errors += 1
    print(f"{listed} files listed, {errors} refused with one line; peak RSS {peak_mb:.0f} MB")
    assert peak_mb < 400
    assert (listed, errors) == (772, 58)  # as the README says


def test_cut_file_prints_what_was_read_and_warns(tmp_path: Path, zeek_corpus: Path) -> None:
    src = (zeek_corpus / "ftp-gridftp.pcap").read_bytes()
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(src[: len(src) - 30])
    r = subprocess.run(
        [sys.executable, "-m", "tcpwhy", "packets", str(cut), "--format", "jsonl"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0
    rows = [json.loads(x) for x in r.stdout.splitlines()]
    assert len(rows) == 60  # the 61st record is cut
    assert "warning: file ends in the middle of a record" in r.stderr


def test_not_a_capture(tmp_path: Path) -> None:
    bad = tmp_path / "notes.txt"
    bad.write_text("hello, this is not a capture\n")
    r = subprocess.run(
        [sys.executable, "-m", "tcpwhy", "packets", str(bad)], capture_output=True, text=True
    )
    assert r.returncode == 2
    # the first four bytes are "hell"
    assert r.stderr == f"tcpwhy: {bad}: not a pcap or pcapng capture (data starting 68656c6c)\n"
    assert r.stdout == ""
    missing = subprocess.run(
        [sys.executable, "-m", "tcpwhy", "packets", str(tmp_path / "nope.pcap")],
        capture_output=True,
        text=True,
    )
    assert missing.returncode == 2
    assert missing.stderr == f"tcpwhy: {tmp_path / 'nope.pcap'}: no such file\n"


URL_COMMANDS = [
    ("packets", "--format", "jsonl"),
    ("conns", "--format", "jsonl", "--seed", "1"),
    ("flow", "--format", "json"),
    ("flow", "--format", "text"),
]


def _tcpwhy(args: list[str], tmpdir: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TMPDIR": str(tmpdir)}
    return subprocess.run(
        [sys.executable, "-m", "tcpwhy", *args], capture_output=True, text=True, env=env
    )


@pytest.mark.parametrize("command", URL_COMMANDS, ids=" ".join)
def test_a_url_is_read_as_its_file(tmp_path: Path, command: tuple[str, ...]) -> None:
    """`conns file:///x.pcap` said "no such file" of a file that exists: the commands copy a
    URL to a file and read it, as `analyze` and `tcpwhy.open` do. The same output as the
    file's, every line that names the input naming the URL (a cut file's warning, flow's
    JSON `points`), and the copy removed afterwards."""
    data = (Path(tcpwhy.__file__).parent / "data" / "demo-stale-keepalive.pcap").read_bytes()
    cap = tmp_path / "x.pcap"
    cap.write_bytes(data[:-30])  # cut in its last record: a warning that names the file
    spool = tmp_path / "spool"
    spool.mkdir()
    stream = ["0"] if command[0] == "flow" else []
    by_path = _tcpwhy([command[0], str(cap), *stream, *command[1:]], spool)
    by_url = _tcpwhy([command[0], cap.as_uri(), *stream, *command[1:]], spool)
    assert by_path.returncode == 0, by_path.stderr
    assert "warning: file ends in the middle of a record" in by_path.stderr
    assert by_url.returncode == 0, by_url.stderr
    assert by_url.stdout == by_path.stdout.replace(str(cap), cap.as_uri())
    assert by_url.stderr == by_path.stderr.replace(str(cap), cap.as_uri())
    if command == ("flow", "--format", "json"):
        assert json.loads(by_url.stdout)["points"] == [cap.as_uri()]
    assert not list(spool.iterdir())  # the copy is gone


@pytest.mark.parametrize("command", [("conns", "--seed", "1"), ("flow", "0")], ids=" ".join)
def test_capture_points_given_as_urls_are_named_by_them(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    """Two capture points as URLs: each record's `seen_at` and the paired ladder's points
    name the URLs, not the copies read."""
    data = (Path(tcpwhy.__file__).parent / "data" / "demo-stale-keepalive.pcap").read_bytes()
    caps = [tmp_path / "a.pcap", tmp_path / "b.pcap"]
    for c in caps:
        c.write_bytes(data)
    by_path = _tcpwhy([command[0], *map(str, caps), *command[1:]], tmp_path)
    by_url = _tcpwhy([command[0], *(c.as_uri() for c in caps), *command[1:]], tmp_path)
    assert (by_path.returncode, by_url.returncode) == (0, 0), by_url.stderr
    want = by_path.stdout
    for c in caps:
        assert str(c) in want
        want = want.replace(str(c), c.as_uri())
    assert by_url.stdout == want


@pytest.mark.parametrize("command", ["packets", "conns", "flow"])
def test_a_url_that_cannot_be_read_is_one_line(tmp_path: Path, command: str) -> None:
    stream = ["0"] if command == "flow" else []
    missing = (tmp_path / "nope.pcap").as_uri()
    r = _tcpwhy([command, missing, *stream], tmp_path)
    assert (r.returncode, r.stdout, r.stderr) == (2, "", f"tcpwhy: {missing}: no such file\n")
    r = _tcpwhy([command, "nosuchprotocol://host/x.pcap", *stream], tmp_path)
    assert (r.returncode, r.stdout) == (2, "")
    assert r.stderr.startswith("tcpwhy: nosuchprotocol://host/x.pcap: cannot read this URL: ")
    assert len(r.stderr.splitlines()) == 1


def test_watch_replays_a_url(tmp_path: Path) -> None:
    """`watch -r URL` replays the copy it reads, its findings' timelines and lines naming the
    URL; the reader itself, given a URL, says what reads one."""
    cap = tmp_path / "x.pcap"
    cap.write_bytes(
        (Path(tcpwhy.__file__).parent / "data" / "demo-stale-keepalive.pcap").read_bytes()
    )
    spool = tmp_path / "spool"
    spool.mkdir()
    by_path = _tcpwhy(["watch", "-r", str(cap), "--format", "jsonl"], spool)
    by_url = _tcpwhy(["watch", "-r", cap.as_uri(), "--format", "jsonl"], spool)
    assert (by_path.returncode, by_url.returncode) == (1, 1), by_url.stderr  # findings
    assert str(cap) in by_path.stdout
    assert by_url.stdout == by_path.stdout.replace(str(cap), cap.as_uri())
    assert by_url.stderr == by_path.stderr.replace(str(cap), cap.as_uri())
    assert not list(spool.iterdir())
    from tcpwhy.capture import read_table
    from tcpwhy.errors import CaptureError

    with pytest.raises(CaptureError) as got:
        read_table(cap.as_uri())
    assert got.value.reason == (
        "no such file (a URL: the reader takes local files; tcpwhy.open copies URLs)"
    )


COMMANDS = [
    *(("packets", "--format", f) for f in ("table", "csv", "jsonl")),
    *(("conns", "--format", f) for f in ("table", "csv", "jsonl", "zeek", "zeek-json")),
    *(("analyze", "--format", f) for f in ("text", "json", "html")),
]


@pytest.mark.parametrize("args", COMMANDS, ids=" ".join)
def test_refused_input_writes_nothing_else(tmp_path: Path, args: tuple[str, ...]) -> None:
    """A file that cannot be read is one line on stderr and nothing on stdout: `conns` and
    `packets --format csv` wrote their column heads before they opened the file."""
    bad = tmp_path / "notes.txt"
    bad.write_text("hello, this is not a capture\n")
    for path, reason in (
        (bad, "not a pcap or pcapng capture (data starting 68656c6c)"),
        (tmp_path / "nope.pcap", "no such file"),
        (tmp_path, "is a directory"),
    ):
        if args[0] == "analyze" and path == tmp_path:
            continue  # a directory is a fleet (tests/test_fleet.py)
        r = subprocess.run(
            [sys.executable, "-m", "tcpwhy", *args, str(path)], capture_output=True, text=True
        )
        assert (r.returncode, r.stdout, r.stderr) == (2, "", f"tcpwhy: {path}: {reason}\n")


@pytest.mark.parametrize("mode", ["--analyze", "--conns"])
def test_diagnosis_and_records_over_the_whole_corpus(tcpdump_corpus: Path, mode: str) -> None:
    """`analyze` and `conns --format zeek` too get through every capture: output (exit 0, or 1
    for findings) or one error line (exit 2)."""
    files = sorted(p for p in tcpdump_corpus.iterdir() if p.suffix in (".pcap", ".pcapng"))
    results = _walk(files, mode)
    assert len(results) == len(files)
    statuses: dict[object, int] = {}
    for r in results:
        name = r["file"]
        assert not r["traceback"], f"{name}: {r['traceback']}"
        statuses[r["status"]] = statuses.get(r["status"], 0) + 1
        if r["status"] == 2:
            lines: list[str] = r["stderr"]  # type: ignore[assignment]
            assert len(lines) == 1 and ERROR_LINE.match(lines[0]), f"{name}: {lines}"
    # 58 refused with one line, as by `packets`; 10 captures with findings (exit status 1)
    want = {0: 762, 1: 10, 2: 58} if mode == "--analyze" else {0: 772, 2: 58}
    assert statuses == want
