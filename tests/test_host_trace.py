"""`tcpwhy host trace`: the kernel's tracepoints, read from a private ftrace instance.

The unit tests build format files and ring-buffer pages by hand from the kernel's documented
layouts. The live tests play incidents with real sockets in a throw-away namespace while the
command runs, and check each event against what the playing script saw (its ports, the
errno it got) and each reason name against the kernel's own format file.
"""

from __future__ import annotations

import json
import os
import select
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tcpwhy.host import trace as tr
from tcpwhy.host import tracefs as tf

# ---------------------------------------------------------------- units

FORMAT = """name: tcp_send_reset
ID: 77
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:const void * skaddr;\toffset:8;\tsize:8;\tsigned:0;
\tfield:int state;\toffset:16;\tsize:4;\tsigned:1;
\tfield:enum sk_rst_reason reason;\toffset:20;\tsize:4;\tsigned:0;
\tfield:__u8 saddr[28];\toffset:24;\tsize:28;\tsigned:0;

print fmt: "state=%s reason=%s", REC->state ? __print_symbolic(REC->state, { TCP_CLOSE, "TCP_CLOSE" }) : "UNKNOWN", __print_symbolic(REC->reason, { 0, "NOT_SPECIFIED" }, { 0x9, "TCP_TIMEWAIT_SOCKET" })
"""
STATE_FORMAT = """name: inet_sock_set_state
ID: 78
format:
\tfield:int newstate;\toffset:8;\tsize:4;\tsigned:1;

print fmt: "newstate=%s", __print_symbolic(REC->newstate, { 7, "TCP_CLOSE" }, { 6, "TCP_TIME_WAIT" })
"""


def test_format_fields_and_symbol_tables() -> None:
    ev = tf.parse_format("tcp", "tcp_send_reset", FORMAT)
    assert ev.id == 77
    assert ev.fields["saddr"] == tf.Field("saddr", 24, 28, False, True)
    assert ev.fields["reason"].offset == 20 and not ev.fields["reason"].signed
    assert ev.symbols["reason"] == {0: "NOT_SPECIFIED", 9: "TCP_TIMEWAIT_SOCKET"}
    # the state table names an enum constant: resolved from another event's numbered table
    assert ev.unresolved["state"] == [("TCP_CLOSE", "TCP_CLOSE")]
    tf.resolve_identifiers([ev, tf.parse_format("sock", "inet_sock_set_state", STATE_FORMAT)])
    assert ev.symbols["state"] == {7: "TCP_CLOSE"}
    st, names = tf.struct_for(ev, ["common_pid", "reason", "saddr", "absent"])
    assert names == ["common_pid", "reason", "saddr"]
    raw = bytearray(64)
    struct.pack_into("=i", raw, 4, 4242)
    struct.pack_into("=I", raw, 20, 9)
    raw[24:52] = bytes(range(28))
    assert st.unpack_from(bytes(raw), 0) == (4242, 9, bytes(range(28)))


def _page(records: list[bytes], ts: int, missed: int | None = None) -> bytes:
    data = b"".join(records)
    commit = len(data)
    tail = b""
    if missed is not None:
        commit |= tf.MISSED_EVENTS | tf.MISSED_STORED
        tail = struct.pack("=Q", missed)
    page = struct.pack("=Qq", ts, commit) + data + tail
    return page + bytes(4096 - len(page))


def test_walk_page_data_lengths_time_extend_padding_and_missed() -> None:
    small = struct.pack("=I", (100 << 5) | 2) + b"AAAABBBB"  # type_len 2: 8 bytes of data
    big_data = b"C" * 130  # > 112 bytes: length in array[0] (data length + 4)
    big = struct.pack("=II", (5 << 5) | 0, len(big_data) + 4) + big_data + b"\0\0"
    extend = struct.pack("=II", (3 << 5) | tf.TYPE_TIME_EXTEND, 2)  # + (2 << 27) + 3
    # a discarded event: array[0] = its size less the 4-byte header (array[0] included)
    discarded = struct.pack("=II", (1 << 5) | tf.TYPE_PADDING, 8) + b"\0" * 4
    last = struct.pack("=I", (7 << 5) | 1) + b"DDDD"
    page = _page([small, big, extend, discarded, last], ts=1000, missed=17)
    missed, page_ts, recs = tf.walk_page(page, 8, 8, 16)
    assert (missed, page_ts) == (17, 1000)
    assert [(ts, page[off : off + n][:4]) for ts, off, n in recs] == [
        (1100, b"AAAA"),
        (1105, b"CCCC"),
        (1105 + (2 << 27) + 3 + 1 + 7, b"DDDD"),
    ]
    assert recs[1][2] == 132  # rounded up to 4 bytes
    # end-of-data padding (time_delta 0) stops the walk
    _, _, recs = tf.walk_page(_page([small, struct.pack("=I", tf.TYPE_PADDING), last], 0), 8, 8, 16)
    assert len(recs) == 1


def test_compiled_walk_agrees_with_the_documented_layout() -> None:
    import numpy as np

    from tcpwhy.host.trace_kernel import walk_pages

    small = struct.pack("=I", (100 << 5) | 2) + b"AAAABBBB"
    big_data = b"C" * 130
    big = struct.pack("=II", (5 << 5) | 0, len(big_data) + 4) + big_data + b"\0\0"
    extend = struct.pack("=II", (3 << 5) | tf.TYPE_TIME_EXTEND, 2)
    last = struct.pack("=I", (7 << 5) | 1) + b"DDDD"
    pages = _page([small, big, extend, last], ts=1000, missed=17) + _page(
        [small], ts=5, missed=None
    )
    buf = np.frombuffer(pages, dtype=np.uint8).copy()
    ts, off, missed = np.zeros(16, np.int64), np.zeros(16, np.int64), np.zeros(2, np.int64)
    n = walk_pages(buf, np.array([4096, 4096]), 4096, 8, 8, 16, ts, off, missed)
    assert n == 4
    assert missed.tolist() == [17, 0]
    assert ts[:n].tolist() == [1100, 1105, 1105 + (2 << 27) + 3 + 7, 5 + 100]
    assert [pages[o : o + 4] for o in off[:n].tolist()] == [b"AAAA", b"CCCC", b"DDDD", b"AAAA"]
    assert off[3] == 4096 + 16 + 4  # the second page's record, at its place in the buffer


def test_record_dtype_from_the_format_file() -> None:
    import numpy as np

    ev = tf.parse_format("tcp", "tcp_send_reset", FORMAT)
    dt = tr.record_dtype(ev, ["common_pid", "reason", "saddr", "absent"])
    assert dt.names == ("common_pid", "reason", "saddr")
    assert dt.fields is not None and dt.fields["reason"][1] == 20 and dt.itemsize == 52
    raw = bytearray(64)
    struct.pack_into("=i", raw, 4, 4242)
    struct.pack_into("=I", raw, 20, 9)
    raw[24:52] = bytes(range(28))
    rec = np.frombuffer(bytes(raw[:52]), dtype=dt)[0]
    assert (int(rec["common_pid"]), int(rec["reason"])) == (4242, 9)
    assert bytes(rec["saddr"]) == bytes(range(28))
    d = tr.Decoder("reset_sent", dt, ev)
    assert d.syms("reason", np.array([9, 0, 9, 5])).tolist() == [
        "TCP_TIMEWAIT_SOCKET",
        "NOT_SPECIFIED",
        "TCP_TIMEWAIT_SOCKET",
        "5",
    ]


def test_batch_jsonl_is_what_as_json_writes() -> None:
    evs = [
        tr.TraceEvent(
            1.5,
            "state",
            "10.0.0.1",
            80,
            "10.0.0.2",
            5,
            "SYN_SENT",
            "ESTABLISHED",
            "ESTABLISHED",
            None,
            7,
            'we"ird',
            "task",
            None,
        ),
        tr.TraceEvent(
            2.25,
            "drop",
            reason="TCP_LISTEN_OVERFLOW",
            pid=0,
            comm="swapper",
            context="softirq",
            explanation="a → b",
        ),
    ]
    cols = {f: [getattr(e, f) for e in evs] for f in tr.TraceEvent.__dataclass_fields__}
    b = tr.Batch(**cols)
    assert [json.loads(line) for line in b.jsonl().splitlines()] == [e.as_json() for e in evs]
    assert b.events() == evs


def test_state_names_and_explanations() -> None:
    assert tr.state_name("TCP_FIN_WAIT1") == "FIN_WAIT_1"
    assert tr.state_name("TCP_TIME_WAIT") == "TIME_WAIT"
    assert tr.state_name("TCP_NEW_SYN_RECV") == "NEW_SYN_RECV"
    why = tr.explanation("reset_sent", "TCP_TIMEWAIT_SOCKET")
    assert why and why.endswith("stale-keepalive-reuse")
    assert tr.explanation("reset_sent", None) is None
    assert "SOME_NEW_REASON" in (tr.explanation("drop", "SOME_NEW_REASON") or "")


def test_filters() -> None:
    ev = tr.TraceEvent(0.0, "reset_sent", "10.0.0.1", 80, "10.0.0.2", 5555)
    assert tr.Filters(ports=frozenset({80})).keep(ev)
    assert not tr.Filters(ports=frozenset({81})).keep(ev)
    assert tr.Filters(hosts=frozenset({"10.0.0.2"})).keep(ev)
    assert not tr.Filters(local=frozenset({"10.0.0.2"})).keep(ev)
    assert not tr.Filters(kinds=frozenset({"drop"})).keep(ev)
    orphan = tr.TraceEvent(0.0, "drop", reason="UDP_CSUM")
    assert not tr.Filters().keep(orphan)
    assert tr.Filters().keep(tr.TraceEvent(0.0, "drop", reason="TCP_LISTEN_OVERFLOW"))
    assert tr.normalize_host("::ffff:10.0.0.1") == "10.0.0.1"
    with pytest.raises(tr.TcpwhyError):
        tr.normalize_host("example.org")
    with pytest.raises(tr.TcpwhyError):
        tr.parse_groups("state,bogus")


def test_bad_options_one_line() -> None:
    p = subprocess.run(
        [sys.executable, "-m", "tcpwhy", "host", "trace", "--events", "nope"],
        capture_output=True,
        text=True,
    )
    assert p.returncode == 2
    assert p.stderr.strip().splitlines() == [
        "tcpwhy: --events: unknown event group 'nope' (use state,reset,drop,retransmit)"
    ]


def test_jsonl_reader_rejects_bad_lines(tmp_path: Path) -> None:
    f = tmp_path / "x.trace.jsonl"
    f.write_text('{"ts": 1, "event": "state"}\nnot json\n')
    with pytest.raises(tr.TcpwhyError, match="line 2: not JSON"):
        tr.read_jsonl(str(f))


# ---------------------------------------------------------------- live

TRACING = Path("/sys/kernel/tracing")

PLAY = r"""
import json, socket, struct, sys, time
A = sys.argv[1]
out = {}

def pair(backlog=8):
    ls = socket.socket(); ls.bind((A, 0)); ls.listen(backlog)
    c = socket.socket(); c.bind((A, 0)); c.connect(ls.getsockname())
    s, _ = ls.accept()
    return ls, c, s

# refused: a port nobody listens on
c = socket.socket(); c.bind((A, 0)); port = c.getsockname()[1]
try:
    c.connect((A, 9)); err = None
except OSError as e:
    err = e.errno
out["refused"] = {"client_port": port, "errno": err}
c.close()

# the server closes with unread data
ls, c, s = pair()
c.sendall(b"request nobody reads"); time.sleep(0.1); s.close(); time.sleep(0.1)
try:
    c.recv(10); err = None
except OSError as e:
    err = e.errno
out["abort_on_close"] = {"server_port": ls.getsockname()[1], "client_port": c.getsockname()[1], "errno": err}
c.close(); ls.close()

# the client closes with SO_LINGER {1, 0}
ls, c, s = pair()
cport = c.getsockname()[1]
c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)); c.close(); time.sleep(0.1)
out["linger0"] = {"server_port": ls.getsockname()[1], "client_port": cport}
s.close(); ls.close()

# stale keep-alive: the server closes an idle connection, the client writes later
ls, c, s = pair()
s.close(); time.sleep(0.3)
c.sendall(b"GET / HTTP/1.1\r\n\r\n"); time.sleep(0.1)
try:
    c.recv(10); err = None
except OSError as e:
    err = e.errno
out["stale_keepalive"] = {"server_port": ls.getsockname()[1], "client_port": c.getsockname()[1], "errno": err}
c.close(); ls.close()

# a full accept queue: backlog 1, nobody accepts
ls = socket.socket(); ls.bind((A, 0)); ls.listen(1)
cs = []
for _ in range(4):
    c = socket.socket(); c.setblocking(False); c.bind((A, 0)); c.connect_ex(ls.getsockname()); cs.append(c)
time.sleep(1.6)
out["accept_queue"] = {"server_port": ls.getsockname()[1], "client_ports": [c.getsockname()[1] for c in cs]}
for c in cs:
    c.close()
ls.close()
print(json.dumps(out), flush=True)
"""


def _tracing_state() -> dict[str, str]:
    files = ["tracing_on", "set_event", "current_tracer", "trace_clock", "buffer_size_kb"]
    files += [f"events/{s}/{n}/enable" for s, n in tr.TRACEPOINTS]
    return {f: (TRACING / f).read_text() for f in files if (TRACING / f).exists()}


@pytest.fixture
def ns(netns_ok: None) -> Iterator[tuple[str, str]]:
    name = f"tcpwhy-trace-{os.getpid()}"
    addr = f"10.201.{os.getpid() % 250}.1"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        subprocess.run(["ip", "-n", name, "addr", "add", f"{addr}/32", "dev", "lo"], check=True)
        yield name, addr
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


class Tracer:
    """`tcpwhy host trace` running as its own process, started and stopped by PID."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tcpwhy", "host", "trace", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stderr is not None
        ready, _, _ = select.select([self.proc.stderr], [], [], 30)
        assert ready, "host trace did not start"
        self.banner = self.proc.stderr.readline()
        assert "tracing in ftrace instance" in self.banner, self.banner
        self.instance = self.banner.split("instance ")[1].split()[0]

    def stop(self, sig: int = signal.SIGINT) -> tuple[int, str, str]:
        self.proc.send_signal(sig)
        out, err = self.proc.communicate(timeout=30)
        return self.proc.returncode, out, self.banner + err


def _events(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _reasons_in_kernel(system: str, name: str) -> str:
    return (TRACING / "events" / system / name / "format").read_text()


@pytest.mark.root
def test_incidents_in_a_namespace(ns: tuple[str, str]) -> None:
    name, addr = ns
    before = _tracing_state()
    t = Tracer("--format", "jsonl", "--netns", name)
    assert (TRACING / "instances" / t.instance).is_dir()
    assert _tracing_state() == before  # enabled in the private instance only
    play = subprocess.run(
        ["ip", "netns", "exec", name, sys.executable, "-c", PLAY, addr],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert play.returncode == 0, play.stderr
    seen = json.loads(play.stdout)
    time.sleep(0.3)
    rc, out, err = t.stop()
    assert rc == 0, err
    assert "0 lost" in err
    assert not (TRACING / "instances" / t.instance).exists()
    assert _tracing_state() == before
    evs = _events(out)
    assert evs and all(e["src"] == addr for e in evs)  # --netns: only this namespace's sockets
    assert all(
        set(e) >= {"ts", "event", "src", "sport", "dst", "dport", "state", "reason", "pid", "comm"}
        for e in evs
    )
    assert [e["ts_ns"] for e in evs] == sorted(e["ts_ns"] for e in evs)
    assert abs(evs[0]["ts_ns"] / 1e9 - time.time()) < 60
    rst_fmt = _reasons_in_kernel("tcp", "tcp_send_reset")

    def resets(sport: int, dport: int) -> list[dict[str, Any]]:
        return [
            e
            for e in evs
            if e["event"] == "reset_sent" and e["sport"] == sport and e["dport"] == dport
        ]

    def check(found: list[dict[str, Any]], reason: str, state: str | None) -> None:
        assert len(found) == 1, found
        assert f'"{reason}"' in rst_fmt  # the kernel's own name, from its format file
        assert found[0]["reason"] == reason
        assert found[0]["state"] == state
        assert found[0]["explanation"]

    r = seen["refused"]
    assert r["errno"] == 111  # ECONNREFUSED: the client saw the refusal the kernel explains
    check(resets(9, r["client_port"]), "NO_SOCKET", None)
    drops = [e for e in evs if e["event"] == "drop" and e["dport"] == r["client_port"]]
    # the SYN dropped for want of a socket, once; the refused client socket's teardown may
    # add drops of its own on the same port pair (QUEUE_PURGE, NOT_SPECIFIED), by timing
    assert [d["reason"] for d in drops].count("NO_SOCKET") == 1
    assert drops[0]["reason"] == "NO_SOCKET"

    a = seen["abort_on_close"]
    assert a["errno"] == 104  # ECONNRESET on the client
    check(resets(a["server_port"], a["client_port"]), "TCP_ABORT_ON_CLOSE", "CLOSE")
    received = [e for e in evs if e["event"] == "reset_received" and e["sport"] == a["client_port"]]
    assert len(received) == 1 and received[0]["state"] == "ESTABLISHED"

    g = seen["linger0"]
    check(resets(g["client_port"], g["server_port"]), "TCP_STATE", "CLOSE")

    s = seen["stale_keepalive"]
    check(resets(s["server_port"], s["client_port"]), "TCP_TIMEWAIT_SOCKET", "TIME_WAIT")
    server_states = [
        (e["old_state"], e["new_state"])
        for e in evs
        if e["event"] == "state"
        and e["sport"] == s["server_port"]
        and e["dport"] == s["client_port"]
    ]
    assert ("ESTABLISHED", "FIN_WAIT_1") in server_states
    assert ("FIN_WAIT_1", "FIN_WAIT_2") in server_states
    client_states = [
        e["new_state"] for e in evs if e["event"] == "state" and e["sport"] == s["client_port"]
    ]
    assert "CLOSE_WAIT" in client_states

    q = seen["accept_queue"]
    retrans = {
        e["sport"]
        for e in evs
        if e["event"] == "retransmit"
        and e["state"] == "SYN_SENT"
        and e["dport"] == q["server_port"]
    }
    # backlog 1 holds two; the others' SYNs are not answered and go again
    assert len(retrans) == 2 and retrans <= set(q["client_ports"])
    assert all(e["pid"] >= 0 and "context" in e for e in evs)


@pytest.mark.root
def test_table_summary_and_port_filter(ns: tuple[str, str]) -> None:
    name, addr = ns
    t = Tracer("--format", "table", "--netns", name, "--port", "9", "--events", "reset")
    play = subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            name,
            sys.executable,
            "-c",
            PLAY.split("# the server")[0] + "print(json.dumps(out))",
            addr,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert play.returncode == 0, play.stderr
    time.sleep(0.3)
    rc, out, err = t.stop(signal.SIGTERM)
    assert rc == 0, err
    port = json.loads(play.stdout)["refused"]["client_port"]
    assert f"reset_sent {addr}:9 → {addr}:{port}" in out
    assert "reason=NO_SOCKET" in out
    assert "by event and reason" in out and "sockets with most resets" in out
    assert "connection-refused" in out  # what it means
    assert "state" not in [line.split()[1] for line in out.splitlines() if line[:2].isdigit()]
    assert not (TRACING / "instances" / t.instance).exists()


@pytest.mark.root
def test_sigkill_leaves_an_instance_the_next_run_removes(netns_ok: None) -> None:
    t = Tracer("--format", "jsonl")
    inst = TRACING / "instances" / t.instance
    assert inst.is_dir()
    t.proc.kill()
    t.proc.wait(timeout=10)
    assert inst.is_dir()  # SIGKILL cannot be caught: the instance stays …
    second = subprocess.run(
        [sys.executable, "-m", "tcpwhy", "host", "trace", "--format", "jsonl", "--duration", "0.3"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert second.returncode == 0, second.stderr
    assert not inst.exists()  # … and the next run removes it
    assert f"tcpwhy-{t.proc.pid}" not in tf.our_instances()


@pytest.mark.root
def test_a_live_instance_of_another_run_is_kept(netns_ok: None) -> None:
    t = Tracer("--format", "jsonl")
    try:
        other = subprocess.run(
            [sys.executable, "-m", "tcpwhy", "host", "trace", "--duration", "0.2"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert other.returncode == 0, other.stderr
        assert (TRACING / "instances" / t.instance).is_dir()
    finally:
        rc, _, err = t.stop(signal.SIGTERM)
    assert rc == 0, err
    assert not (TRACING / "instances" / t.instance).exists()


@pytest.mark.root
def test_without_root_one_line_exit_1(netns_ok: None) -> None:
    # the interpreter starts as root (the virtualenv may not be readable by others), loads
    # tcpwhy, then becomes `nobody` before the command runs
    drop = (
        "import os, sys; from tcpwhy.cli import main; import tcpwhy.host.cli, "
        "tcpwhy.host.trace_view; os.setgroups([]); os.setgid(65534); os.setuid(65534); "
        "sys.exit(main(['host', 'trace', '--duration', '0.1']))"
    )
    p = subprocess.run([sys.executable, "-c", drop], capture_output=True, text=True)
    assert p.returncode == 1
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tcpwhy: host trace: needs root"), p.stderr
