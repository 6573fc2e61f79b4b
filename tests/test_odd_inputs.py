"""Inputs found by fuzzing the command line and the Python API that ended in a traceback: each
is now one line on stderr and exit status 2 (exit 1 for `analyze` is its findings), run as a
user runs it; in the API, a `CaptureError` or a TypeError that names the argument.

A capture whose timestamps span decades (one SYN of a flood stamped in 2106) made the SYN-flood
rule count SYNs in a slot per second of the span, 19 GB; filters with regular expressions
past the engine's limits, numbers of thousands of digits or bytes that are not UTF-8; a kernel
trace that is not text; URLs fsspec cannot open; a scheduler address Dask cannot parse; NaN
and infinity as a duration."""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import tcpwhy
from tcpwhy.capture.writer import LINKTYPE_ETHERNET, PcapWriter
from tcpwhy.filter.pcre import ENGINE
from tests.craft import eth, ip, tcp, v4
from tests.gates import need

CAPTURE = str(Path(tcpwhy.__file__).parent / "data" / "demo-stale-keepalive.pcap")
ADDRESS_SPACE = 4 << 30
"""The address space each run may take: a count per second of a 136-year span needed 19 GB."""


def _limited() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))


def _run(*args: str | bytes, timeout: float = 120) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "tcpwhy", *args],
        capture_output=True,
        timeout=timeout,
        preexec_fn=_limited,
    )


def _one_line(r: subprocess.CompletedProcess[bytes], status: int, where: str, reason: str) -> None:
    err = r.stderr.decode("utf-8", "replace")
    assert "Traceback" not in err, err
    assert r.returncode == status, err
    assert err.startswith(f"tcpwhy: {where}: {reason}"), err


def _far_flood(path: Path) -> Path:
    """110 SYNs from 110 sources to one listener within 110 ms, the last stamped 2**32 - 1 s
    after the epoch (a clock gone wrong, a byte flipped in the record header)."""
    server = v4("10.0.0.2")
    t0 = 1_700_000_000_000_000_000
    with PcapWriter.open(str(path), LINKTYPE_ETHERNET) as w:
        for k in range(110):
            src = v4(f"198.51.{k // 200}.{k % 200 + 1}")
            frame = eth(ip(src, server, 6, tcp(src, server, 40000 + k, 80, 1000 * k, 0, 0x02)))
            w.write(t0 + k * 1_000_000 if k < 109 else (2**32 - 1) * 10**9, frame)
    return path


def test_a_flood_with_a_timestamp_decades_off_is_still_one_finding(tmp_path: Path) -> None:
    r = _run("analyze", "--format", "json", str(_far_flood(tmp_path / "far.pcap")))
    assert r.returncode == 1, r.stderr.decode()
    assert b"Traceback" not in r.stderr
    kinds = [f["kind"] for f in json.loads(r.stdout)["findings"]]
    assert kinds == ["syn-flood"]


@pytest.mark.parametrize(
    ("flt", "reason"),
    [
        ('tcp.payload matches "a{4294967296}"', "Regex compilation error: number too big in {}"),
        ('tcp.payload matches "' + "(" * 1000 + ")" * 1000 + '"', "Regex compilation error:"),
        ("tcp.port == " + "1" * 4301, '"' + "1" * 4301 + '" causes an integer overflow.'),
        ("tcp.payload[" + "1" * 4301 + "] == 61", '"' + "1" * 4301 + '" causes an integer'),
        ("ip.src#" + "9" * 5000 + " == 1.2.3.4", '"' + "9" * 5000 + '" causes an integer'),
    ],
)
def test_filters_past_the_engines_limits_are_filter_errors(flt: str, reason: str) -> None:
    _one_line(_run("packets", "-Y", flt, CAPTURE), 2, "-Y", reason)


def _payloads(path: Path, payloads: list[bytes]) -> Path:
    """One data segment per payload, client to server (a data segment's payload is whatever
    the peer sent: attacker data)."""
    c, s = v4("10.0.0.1"), v4("10.0.0.2")
    seq = 1
    with PcapWriter.open(str(path), LINKTYPE_ETHERNET) as w:
        for k, data in enumerate(payloads):
            seg = tcp(c, s, 40000, 80, seq, 1, 0x18, data)
            w.write(1_700_000_000_000_000_000 + k * 1000, eth(ip(c, s, 6, seg)))
            seq += len(data)
    return path


def test_a_pattern_that_backtracks_catastrophically_gives_up_as_tshark_does(
    tmp_path: Path,
) -> None:
    """`(a+)+$` on 1,400 `a` and a `b` backtracks 2**1400 ways: Python's re ran for hours on
    that one packet. PCRE2 gives up at its match limit and tshark says no match; so does
    tcpwhy, in a second; the packet of `a` alone matches."""
    need(ENGINE.startswith("PCRE2"), ENGINE)
    cap = _payloads(tmp_path / "aaa.pcap", [b"a" * 1400 + b"b", b"a" * 1400])
    r = _run(
        "packets", "--format", "jsonl", "-Y", 'tcp.payload matches "(a+)+$"', str(cap), timeout=60
    )
    assert r.returncode == 0 and b"Traceback" not in r.stderr, r.stderr
    assert [json.loads(x)["frame"] for x in r.stdout.splitlines()] == [2]
    if shutil.which("tshark"):  # tshark's engine, on the same file, gives up the same way
        t = subprocess.run(
            [
                "tshark",
                "-r",
                str(cap),
                "-Y",
                'tcp.payload matches "(a+)+$"',
                "-T",
                "fields",
                "-e",
                "frame.number",
            ],
            capture_output=True,
            timeout=60,
        )
        assert t.stdout.split() == [b"2"], t.stderr


def test_a_filter_with_a_byte_that_is_not_utf8_is_a_filter_error() -> None:
    flt = os.fsencode("tcp.payload contains ") + b'"\xff"'
    _one_line(
        _run("packets", "-Y", flt, CAPTURE),
        2,
        "-Y",
        "The filter is not valid UTF-8: byte 0xff at character 23.",
    )


def test_a_kernel_trace_that_is_not_text_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "trace.jsonl"
    bad.write_bytes(b'\xff{"event": "x"}\n')
    _one_line(
        _run("analyze", "--kernel-trace", str(bad), CAPTURE),
        2,
        str(bad),
        "not a tcpwhy kernel trace (not UTF-8 text)",
    )


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("nosuch://x/y.pcap", "cannot read this URL: Protocol not known: nosuch"),
        ("s3://bucket/x.pcap", "cannot read this URL: "),
    ],
)
def test_urls_fsspec_cannot_open_are_one_line(url: str, reason: str) -> None:
    pytest.importorskip("fsspec")
    if url.startswith("s3:"):
        try:
            import s3fs  # noqa: F401
        except ImportError:
            pass
        else:
            pytest.skip("s3fs is installed: the URL is read (and fails for other reasons)")
    _one_line(_run("analyze", url), 2, url, reason)


def test_a_scheduler_address_without_a_port_is_one_line() -> None:
    pytest.importorskip("distributed")
    _one_line(
        _run("analyze", "--scheduler", "notaurl", CAPTURE),
        2,
        "notaurl",
        "not a scheduler address: ",
    )


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--summary-every", "nan", "must be 0 or more"),
        ("--summary-every", "inf", "must be at most 1000000000"),
        ("--summary-every", "-1", "must be 0 or more"),
        ("--keep-before", "nan", "must be 0 or more"),
    ],
)
def test_watch_durations_that_are_not_numbers_are_argparse_errors(
    option: str, value: str, message: str
) -> None:
    r = _run("watch", "-r", CAPTURE, f"{option}={value}")
    err = r.stderr.decode()
    assert (r.returncode, "Traceback" in err) == (2, False), err
    assert err.splitlines()[-1].endswith(f"error: argument {option}: {message}"), err


def test_watch_summary_every_zero_still_turns_the_summary_off() -> None:
    r = _run("watch", "-r", CAPTURE, "--summary-every", "0")
    assert r.returncode in (0, 1), r.stderr.decode()
    assert b"Traceback" not in r.stderr


def test_the_api_names_a_url_it_cannot_open() -> None:
    pytest.importorskip("fsspec")
    with pytest.raises(tcpwhy.CaptureError, match=r"nosuch://x/y\.pcap: cannot read this URL"):
        len(tcpwhy.open("nosuch://x/y.pcap").connections)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"display_filter": b"tcp"}, "display_filter is a Wireshark display filter's text"),
        ({"max_active": float("inf")}, "max_active is a whole number, not float"),
        ({"community_id_seed": None}, "community_id_seed is a whole number, not NoneType"),
        ({"local_nets": ["10.0.0.0/8", None]}, "local_nets is CIDR text"),
        ({"local_nets": b"10.0.0.0/8"}, "local_nets is CIDR text"),
    ],
)
def test_the_api_names_an_argument_of_the_wrong_type(
    kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(TypeError, match=message):
        tcpwhy.open(CAPTURE, **kwargs)  # type: ignore[arg-type]


def test_the_api_takes_local_nets_from_any_iterable() -> None:
    cap = tcpwhy.open(CAPTURE, local_nets=(n for n in ["10.0.0.0/8"]))
    assert "local_orig" in cap.connections


def test_flow_and_table_keys_of_the_wrong_type_are_named() -> None:
    cap = tcpwhy.open(CAPTURE)
    for bad in ("0", float("nan"), None):
        with pytest.raises(TypeError, match="stream is a whole number"):
            cap.flow(bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="fold is a whole number"):
        cap.flow(0, fold=None)  # type: ignore[arg-type]
    t = cap.connections
    with pytest.raises(TypeError, match="a column is asked for by its name, not by slice"):
        t[0:2]  # type: ignore[index]
    assert ["stream"] not in t


def test_file_objects_and_paths_that_cannot_be_read_are_capture_errors(tmp_path: Path) -> None:
    with open(CAPTURE, "rb") as closed:
        pass
    with pytest.raises(tcpwhy.NotACaptureError, match="cannot read this file object"):
        len(tcpwhy.open(closed).packets)
    with (
        open(tmp_path / "w.bin", "wb") as w,
        pytest.raises(tcpwhy.NotACaptureError, match="cannot read this file object"),
    ):
        len(tcpwhy.open(w).connections)
    with pytest.raises(tcpwhy.NotACaptureError, match="holds a NUL character"):
        len(tcpwhy.open(str(tmp_path / "a\0b.pcap")).packets)


def test_analyze_and_host_name_arguments_of_the_wrong_type() -> None:
    with pytest.raises(TypeError, match="workers is a whole number, not str"):
        tcpwhy.analyze(CAPTURE, workers="2")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="scheduler is an address's text"):
        tcpwhy.analyze(CAPTURE, scheduler=8786)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="a network namespace is a name or a path, not int"):
        tcpwhy.host.counters(netns=123)  # type: ignore[arg-type]
    with pytest.raises(tcpwhy.TcpwhyError, match="no network namespace"):
        tcpwhy.host.counters(netns="a\0b")


def test_a_tls_scheduler_without_its_settings_is_one_line() -> None:
    pytest.importorskip("distributed")
    _one_line(
        _run("analyze", "--scheduler", "tls://127.0.0.1:1", CAPTURE),
        2,
        "tls://127.0.0.1:1",
        "cannot connect to the scheduler: ",
    )


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ('{"event": "reset_sent", "ts": "abc"}', "could not convert string to float"),
        ('{"event": "reset_sent", "ts": 1e400}', "cannot convert float infinity"),
        (
            '{"event": "reset_sent", "ts": 1, "src": "not-an-ip", "dst": "10.0.0.1"}',
            "does not appear to be an IPv4 or IPv6 address",
        ),
        ("[" * 100_000 + "]" * 100_000, "line 1: not JSON"),
    ],
)
def test_kernel_trace_events_of_another_shape_are_one_line(
    tmp_path: Path, line: str, reason: str
) -> None:
    bad = tmp_path / "trace.jsonl"
    bad.write_text(line + "\n")
    r = _run("analyze", "--kernel-trace", str(bad), CAPTURE)
    err = r.stderr.decode()
    assert (r.returncode, "Traceback" in err) == (2, False), err
    assert err.startswith(f"tcpwhy: {bad}: "), err
    assert reason in err, err


def test_a_capture_name_that_is_not_utf8_is_written_into_an_output_file(tmp_path: Path) -> None:
    odd = os.fsencode(tmp_path) + b"/\xff\xfe.pcap"
    with open(CAPTURE, "rb") as src, open(odd, "wb") as dst:
        dst.write(src.read())
    out = tmp_path / "report.txt"
    r = _run("analyze", "-o", str(out), odd)
    assert r.returncode == 1 and b"Traceback" not in r.stderr, r.stderr.decode()
    assert b"\xff\xfe.pcap" in out.read_bytes()  # the name as its bytes, as stdout writes it


def test_a_netns_that_is_not_a_namespace_is_one_line(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    _one_line(
        _run("host", "sysctl", "--netns", str(fifo), timeout=60),
        2,
        "--netns",
        f"'{fifo}' is not a network namespace",
    )


def test_analyze_checks_its_thresholds_as_the_command_line_does() -> None:
    with pytest.raises(ValueError, match="close_wait_s must be above 0"):
        tcpwhy.analyze(CAPTURE, close_wait_s=float("inf"))
    with pytest.raises(TypeError, match="fin_wait_2_s is a number of seconds, not str"):
        tcpwhy.analyze(CAPTURE, fin_wait_2_s="10")  # type: ignore[arg-type]
