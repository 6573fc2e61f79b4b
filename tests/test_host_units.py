"""`tcpwhy host` pieces that need no root: parsers, sysctl notes, explanations, the watcher, JSON shapes.

Where a real kernel answer exists without privileges (this process's own
sockets, /proc/net/* of the current namespace) the tests use it.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from tcpwhy.cli import main
from tcpwhy.errors import TcpwhyError
from tcpwhy.host import nstat as ctr
from tcpwhy.host import sysctl as sc
from tcpwhy.host.explain import Listener, analyze, group_key, listeners, state_counts
from tcpwhy.host.netns import netns_path, run_in_netns
from tcpwhy.host.procs import attach_owners
from tcpwhy.host.snapshot import Snapshot
from tcpwhy.host.sockets import (
    STATES,
    Owner,
    Socket,
    parse_proc_net_tcp,
    read_procfs,
    read_sock_diag,
)
from tcpwhy.host.watch import Watcher, render, spark

SOMAXCONN = int(Path("/proc/sys/net/core/somaxconn").read_text())


# ---------------------------------------------------------------- own sockets, real kernel


@pytest.fixture
def own_listener() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A listener with backlog 5 and one connection waiting in its accept queue."""
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(5)
    c = socket.create_connection(ls.getsockname())
    yield ls, c
    c.close()
    ls.close()


def _find(socks: list[Socket], port: int, state: str) -> Socket:
    return next(s for s in socks if s.local_port == port and s.state == state)


def test_proc_net_tcp_parses_own_sockets(own_listener: tuple[socket.socket, socket.socket]) -> None:
    ls, c = own_listener
    socks = read_procfs()
    lst = _find(socks, ls.getsockname()[1], "LISTEN")
    assert lst.local == f"127.0.0.1:{ls.getsockname()[1]}" and lst.remote == "0.0.0.0:*"
    assert lst.inode == os.fstat(ls.fileno()).st_ino and lst.recv_q == 1
    cli = _find(socks, c.getsockname()[1], "ESTABLISHED")
    assert (
        cli.remote == f"127.0.0.1:{ls.getsockname()[1]}"
        and cli.inode == os.fstat(c.fileno()).st_ino
    )
    assert cli.uid == os.getuid()


def test_proc_net_tcp_byte_order() -> None:
    line = "   0: {a}:1F90 00000000:0000 0A 00000000:00000002 00:00000000 00000000  1000        0 4242 1"
    head = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
    little = parse_proc_net_tcp(head + line.format(a="0100007F"), "ipv4", byteorder="little")[0]
    big = parse_proc_net_tcp(head + line.format(a="7F000001"), "ipv4", byteorder="big")[0]
    for s in (little, big):
        assert (s.local, s.state, s.recv_q, s.inode, s.uid) == (
            "127.0.0.1:8080",
            "LISTEN",
            2,
            4242,
            1000,
        )
    v6 = "   0: 00000000000000000000000001000000:0050 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 7 1"
    assert parse_proc_net_tcp(head + v6, "ipv6", byteorder="little")[0].local == "[::1]:80"


def test_sock_diag_and_owners(own_listener: tuple[socket.socket, socket.socket]) -> None:
    ls, c = own_listener
    socks = read_sock_diag()
    scan = attach_owners(socks)
    lst = _find(socks, ls.getsockname()[1], "LISTEN")
    assert lst.send_q == min(5, SOMAXCONN) and lst.recv_q == 1
    assert lst.pid == os.getpid() and lst.process == Path("/proc/self/comm").read_text().strip()
    assert [o.fd for o in lst.owners] == [ls.fileno()]
    cli = _find(socks, c.getsockname()[1], "ESTABLISHED")
    assert cli.peer_silent_ms is not None and cli.pid == os.getpid()
    # the server side waits in the accept queue: no file descriptor, no owner yet
    srv = next(s for s in socks if s.local_port == ls.getsockname()[1] and s.state == "ESTABLISHED")
    assert srv.inode == 0 and srv.owners == []
    assert scan.scanned > 0


# ---------------------------------------------------------------- counters


def test_parse_netstat_pairs_and_real_files() -> None:
    text = "TcpExt: A B C\nTcpExt: 1 2 3\nIpExt: X\nIpExt: 9\n"
    assert ctr.parse_netstat(text) == {"TcpExtA": 1, "TcpExtB": 2, "TcpExtC": 3, "IpExtX": 9}
    with pytest.raises(ValueError):
        ctr.parse_netstat("TcpExt: A\nIpExt: 1\n")
    assert ctr.parse_netstat("Tcp: MaxConn\nTcp: -1\n") == {"TcpMaxConn": -1}
    assert ctr.parse_snmp6("Ip6InReceives      \t12\nIcmp6InDestUnreachs 3\n") == {
        "Ip6InReceives": 12,
        "Icmp6InDestUnreachs": 3,
    }
    texts = ctr.read_texts()
    values = ctr.parse_all(texts)
    header = texts["netstat"].splitlines()[0].split()
    assert all(f"TcpExt{name}" in values for name in header[1:])
    # the values the kernel wrote, found by column position in the same texts
    for file, prefix, name in (
        ("netstat", "TcpExt", "ListenOverflows"),
        ("snmp", "Tcp", "RetransSegs"),
        ("snmp", "Tcp", "OutRsts"),
        ("netstat", "TcpExt", "TCPAbortOnData"),
    ):
        assert values[prefix + name] == _kernel_value(texts[file], prefix, name), name


def _kernel_value(text: str, prefix: str, name: str) -> int:
    """One counter of /proc/net/netstat or /proc/net/snmp: the value under its name."""
    head, vals = (ln.split() for ln in text.splitlines() if ln.startswith(prefix + ":"))
    return int(vals[head.index(name)])


def test_deltas_skip_gauges_and_survive_resets() -> None:
    prev = {"TcpExtListenOverflows": 5, "TcpCurrEstab": 10, "TcpOutRsts": 100, "TcpRtoMin": 200}
    cur = {
        "TcpExtListenOverflows": 8,
        "TcpCurrEstab": 3,
        "TcpOutRsts": 4,
        "TcpRtoMin": 200,
        "New": 2,
    }
    assert ctr.deltas(prev, cur) == {"TcpExtListenOverflows": 3, "TcpOutRsts": 4, "New": 2}
    assert ctr.deltas(cur, cur) == {}


def test_catalog_explains_the_issue_counters() -> None:
    wanted = [
        "ListenOverflows", "ListenDrops", "TCPAbortOnData", "TCPAbortOnClose", "TCPAbortOnMemory",
        "TCPAbortOnTimeout", "TCPAbortOnLinger", "TCPTimeouts", "TCPSynRetrans", "TW",
        "TCPTimeWaitOverflow", "TCPReqQFullDrop", "SyncookiesSent", "PAWSEstab", "TCPBacklogDrop",
        "TCPKeepAlive", "TCPToZeroWindowAdv",
    ]  # fmt: skip
    for name in wanted:
        assert ctr.explain("TcpExt" + name), name
    for name in ("RetransSegs", "OutRsts", "EstabResets", "AttemptFails"):
        assert ctr.explain("Tcp" + name), name
    assert len({c.name for c in ctr.CATALOG}) == len(ctr.CATALOG)
    assert {c.group for c in ctr.CATALOG} <= set(ctr.GROUP_TITLES)


# ---------------------------------------------------------------- sysctl


def test_model_timeout_matches_the_kernel_documentation() -> None:
    assert sc.model_timeout(6, 1.0) == 127  # tcp(7): tcp_syn_retries 6 ≈ 127 s
    assert sc.model_timeout(15, 0.2) == pytest.approx(924.6)  # tcp(7): tcp_retries2 15 ≈ 924.6 s
    assert sc.model_timeout(5, 1.0) == 63


def _defaults(**over: str | None) -> sc.Values:
    values: sc.Values = {s.key: s.default.split()[0] for s in sc.SETTINGS}
    values.update(
        {
            "net.ipv4.tcp_max_syn_backlog": "2048",
            "net.ipv4.tcp_max_tw_buckets": "262144",
            "net.ipv4.tcp_max_orphans": "262144",
            "net.ipv4.ip_local_port_range": "32768 60999",
            "net.ipv4.tcp_orphan_retries": "0",
        }
    )
    values.update({k.replace("__", "."): v for k, v in over.items()})
    return values


def _notes(values: sc.Values, key: str) -> str:
    return " ".join(next(r for r in sc.evaluate(values) if r.key == key).notes)


def test_sysctl_notes_flag_risky_values() -> None:
    base = _defaults()
    assert _notes(base, "net.core.somaxconn") == ""
    assert "capped at 128" in _notes(_defaults(net__core__somaxconn="128"), "net.core.somaxconn")
    assert "EADDRNOTAVAIL" in _notes(
        _defaults(net__ipv4__tcp_tw_reuse="0"), "net.ipv4.tcp_tw_reuse"
    )
    assert "RST" in _notes(
        _defaults(net__ipv4__tcp_abort_on_overflow="1"), "net.ipv4.tcp_abort_on_overflow"
    )
    assert _notes(base, "net.ipv4.tcp_abort_on_overflow") == ""
    assert "SYN" in _notes(_defaults(net__ipv4__tcp_syncookies="0"), "net.ipv4.tcp_syncookies")
    assert "127 s" in _notes(base, "net.ipv4.tcp_syn_retries")
    assert "15.4 min" in _notes(base, "net.ipv4.tcp_retries2")
    assert "2.2 h" in _notes(base, "net.ipv4.tcp_keepalive_time")  # 7200 + 75 × 9 s
    narrow = _defaults(net__ipv4__ip_local_port_range="60000 60999")
    assert "narrow" in _notes(narrow, "net.ipv4.ip_local_port_range")
    assert "16 new connections/s" in _notes(narrow, "net.ipv4.ip_local_port_range")
    assert "0 means 8" in _notes(base, "net.ipv4.tcp_orphan_retries")
    missing = _defaults(net__ipv4__tcp_max_orphans=None)
    assert "not visible" in _notes(missing, "net.ipv4.tcp_max_orphans")


def test_sysctl_reads_this_namespace(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "300")  # table cells must not wrap the names checked below
    values = sc.read_values()
    assert set(values) == {s.key for s in sc.SETTINGS}
    assert values["net.core.somaxconn"] == str(SOMAXCONN)
    assert main(["host", "sysctl", "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    rows = {r["key"]: r for r in doc["sysctls"]}
    assert rows["net.ipv4.ip_local_port_range"]["value"] == " ".join(
        Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
    )
    assert all(r["meaning"] and r["default"] for r in rows.values())
    assert main(["host", "sysctl"]) == 0
    assert "net.ipv4.tcp_fin_timeout" in capsys.readouterr().out


# ---------------------------------------------------------------- explanations


def sock(
    state: str,
    local: tuple[str, int],
    remote: tuple[str, int] = ("0.0.0.0", 0),
    *,
    pid: int | None = None,
    inode: int = 1,
    recv_q: int = 0,
    send_q: int = 0,
    retrans: int = 0,
    silent: int | None = None,
) -> Socket:
    s = Socket("ipv4", state, local[0], local[1], remote[0], remote[1], recv_q, send_q, inode, 0)
    s.retrans = retrans
    s.peer_silent_ms = silent
    if pid is not None:
        s.owners = [Owner(pid, f"app{pid}", 3)]
    return s


def kinds(findings: list[Any]) -> dict[str, Any]:
    return {f.kind: f for f in findings}


def test_close_wait_from_a_client_pool() -> None:
    socks = [
        sock(
            "CLOSE_WAIT",
            ("10.0.0.2", 40000 + i),
            ("10.0.0.5", 5432),
            pid=77,
            inode=100 + i,
            silent=1000 * i,
        )
        for i in range(4)
    ]
    f = kinds(analyze(socks))["stale_keepalive_pool"]
    assert f.count == 4 and "pid 77 (app77)" in f.subject and "10.0.0.5:5432" in f.subject
    assert "pool" in f.why and "3 s" in f.why  # oldest peer silence


def test_close_wait_on_a_server_and_before_accept() -> None:
    socks = [
        sock("LISTEN", ("0.0.0.0", 8080), pid=5, send_q=128),
        sock("CLOSE_WAIT", ("10.0.0.2", 8080), ("10.0.0.9", 51000), pid=5, inode=9),
        sock("CLOSE_WAIT", ("10.0.0.2", 8080), ("10.0.0.8", 51001), pid=5, inode=10),
        sock("CLOSE_WAIT", ("10.0.0.2", 8080), ("10.0.0.9", 51002), inode=0),
    ]
    found = analyze(socks)
    k = kinds(found)
    assert "stale_keepalive_pool" not in k
    assert "handler" in k["close_wait"].why and k["close_wait"].count == 2
    assert k["close_wait"].subject == "pid 5 (app5) ← clients of :8080"
    assert k["close_wait_unaccepted"].count == 1 and "accept" in k["close_wait_unaccepted"].why
    few = [sock("CLOSE_WAIT", ("10.0.0.2", 40001), ("10.0.0.5", 80), pid=8)]
    assert "this client has not closed" in kinds(analyze(few))["close_wait"].why


def test_fin_wait2_orphans_and_half_close() -> None:
    socks = [
        sock("FIN_WAIT_2", ("10.0.0.2", 80), ("10.0.0.7", 5000 + i), inode=0) for i in range(12)
    ]
    socks.append(sock("FIN_WAIT_2", ("10.0.0.2", 41000), ("10.0.0.8", 80), pid=3))
    k = kinds(analyze(socks, {"net.ipv4.tcp_fin_timeout": "30"}))
    assert k["fin_wait2_orphans"].count == 12 and k["fin_wait2_orphans"].severity == "warning"
    assert "tcp_fin_timeout = 30 s" in k["fin_wait2_orphans"].why
    assert k["fin_wait2_half_closed"].count == 1 and "shutdown" in k["fin_wait2_half_closed"].why


def test_syn_recv_pileup_names_the_cause() -> None:
    syn = [
        sock("SYN_RECV", ("10.0.0.2", 443), (f"192.0.2.{i}", 1000), inode=0, retrans=2)
        for i in range(20)
    ]
    quiet = [sock("LISTEN", ("0.0.0.0", 443), pid=1, send_q=128)]
    assert "SYN flood" in kinds(analyze(syn + quiet))["syn_recv_pileup"].why
    full = [sock("LISTEN", ("0.0.0.0", 443), pid=1, recv_q=129, send_q=128)]
    k = kinds(analyze(syn + full))
    assert "accept queue is full" in k["syn_recv_pileup"].why
    assert k["accept_queue_full"].count == 129
    fresh = [
        sock("SYN_RECV", ("10.0.0.2", 443), ("192.0.2.1", 1000 + i), inode=0) for i in range(3)
    ]
    assert "syn_recv_pileup" not in kinds(analyze(fresh))  # a few fresh half-opens are normal
    assert "syn_recv_pileup" not in kinds(analyze(syn[:1]))


def test_time_wait_near_the_limits() -> None:
    values = {"net.ipv4.ip_local_port_range": "40000 40009", "net.ipv4.tcp_max_tw_buckets": "10"}
    tw = [sock("TIME_WAIT", ("10.0.0.2", 40000 + i), ("10.0.0.5", 443), inode=0) for i in range(9)]
    k = kinds(analyze(tw, values))
    assert k["time_wait_ports"].count == 9 and "EADDRNOTAVAIL" in k["time_wait_ports"].why
    assert k["time_wait_buckets"].count == 9
    assert analyze(tw[:2], {"net.ipv4.ip_local_port_range": "32768 60999"}) == []


def test_listener_queue_and_backlog_explanations() -> None:
    def lst(q: int, limit: int) -> Listener:
        return listeners(
            [sock("LISTEN", ("0.0.0.0", 80), pid=1, recv_q=q, send_q=limit)],
            {"net.core.somaxconn": "4096"},
        )[0]

    assert lst(0, 511).status == "ok" and "passed to listen()" in lst(0, 511).backlog_explained()
    assert "capped" in lst(0, 4096).backlog_explained()
    assert "lowered" in lst(0, 8192).backlog_explained()
    assert lst(512, 511).status == "full" and lst(512, 511).warnings
    assert lst(511, 511).status == "filling"
    unknown = listeners([sock("LISTEN", ("0.0.0.0", 80), recv_q=3)], None, limit_known=False)[0]
    assert unknown.accept_queue_max is None and not unknown.full


def test_grouping_and_counts() -> None:
    a = sock("ESTABLISHED", ("10.0.0.2", 80), ("10.0.0.9", 5000), pid=4)
    b = sock("TIME_WAIT", ("10.0.0.2", 80), ("10.0.0.9", 5001), inode=0)
    c = sock("LISTEN", ("0.0.0.0", 80), inode=55)
    assert group_key("port")(a) == "80" and group_key("remote")(c) == "(listening)"
    out = sock("CLOSE_WAIT", ("10.0.0.2", 45000), ("10.0.0.5", 5432), pid=4)
    assert group_key("port", [a, b, c, out])(out) == "outgoing → :5432"
    assert (
        group_key("port", [a, b, c, out], {"net.ipv4.ip_local_port_range": "50000 60000"})(out)
        == "45000"
    )
    assert [group_key("process")(x) for x in (a, b, c)] == [
        "pid 4 (app4)",
        "no process (closed, kernel-held)",
        "owner not visible",
    ]
    counts = state_counts([a, b, c])
    assert list(counts) == list(STATES) and sum(counts.values()) == 3


# ---------------------------------------------------------------- watcher


def snap(socks: list[Socket], counters: dict[str, int] | None = None, t: float = 0.0) -> Snapshot:
    return Snapshot(None, t, socks, "sock_diag", counters or {}, {"net.core.somaxconn": "4096"}, [])


def close_waits(n: int) -> list[Socket]:
    return [
        sock("CLOSE_WAIT", ("127.0.0.1", 40000 + i), ("127.0.0.1", 80), pid=9, inode=10 + i)
        for i in range(n)
    ]


def test_watcher_alerts_on_growth_only() -> None:
    w = Watcher()
    frames = [w.step(snap(close_waits(n), t=i)) for i, n in enumerate([1, 3, 5])]
    assert [f.counts["CLOSE_WAIT"] for f in frames] == [1, 3, 5]
    assert not frames[0].alerts
    grow = [a for a in frames[2].alerts if a.kind == "close_wait_growing"]
    assert grow and "1 → 5" in grow[0].message and "pid 9" in grow[0].message
    flat = Watcher()
    assert all(not flat.step(snap(close_waits(4), t=i)).alerts for i in range(3))
    assert frames[2].as_json()["change"]["CLOSE_WAIT"] == 2


def test_watcher_counters_and_queues() -> None:
    w = Watcher()
    full = [sock("LISTEN", ("0.0.0.0", 80), pid=1, recv_q=5, send_q=4)]
    calm = [sock("LISTEN", ("0.0.0.0", 80), pid=1, recv_q=0, send_q=4)]
    base = {"TcpExtListenOverflows": 0, "TcpRetransSegs": 0, "TcpOutSegs": 0}
    f1 = w.step(snap(full, base))
    assert {a.kind for a in f1.alerts} == {"accept_queue_full"} and f1.deltas == {}
    moved = {"TcpExtListenOverflows": 3, "TcpRetransSegs": 50, "TcpOutSegs": 500}
    f2 = w.step(snap(calm, moved, t=1))
    assert {a.kind for a in f2.alerts} == {
        "accept_queue_was_full",
        "listen_overflows",
        "retransmissions",
    }
    assert f2.deltas["TcpExtListenOverflows"] == 3
    con = Console(record=True, width=120)
    con.print(render(f2))
    text = con.export_text()
    assert "ListenOverflows +3" in text and "TcpRetransSegs" in text and "listeners" in text


def test_spark() -> None:
    assert spark([]) == "" and spark([0, 0]) == "▁▁" and spark([1, 5]) == "▁█"


# ---------------------------------------------------------------- command line, own namespace


def test_states_json_schema(
    own_listener: tuple[socket.socket, socket.socket],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLUMNS", "300")
    ls, _ = own_listener
    assert main(["host", "states", "--format", "json", "--by", "port"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert list(doc["states"]) == list(STATES)
    assert sum(doc["states"].values()) == len(doc["sockets"]) == doc["total"]
    types = {"state": str, "local": str, "remote": str, "recv_q": int, "send_q": int}
    for s in doc["sockets"]:
        assert all(isinstance(s[k], t) for k, t in types.items())
        assert s["pid"] is None or isinstance(s["pid"], int)
        assert s["process"] is None or isinstance(s["process"], str)
        assert s["state"] in STATES
    port = ls.getsockname()[1]
    mine = [
        s for s in doc["sockets"] if s["local"] == f"127.0.0.1:{port}" and s["state"] == "LISTEN"
    ]
    assert len(mine) == 1 and mine[0]["pid"] == os.getpid() and mine[0]["recv_q"] == 1
    assert any(g["group"] == str(port) for g in doc["groups"])
    assert main(["host", "states", "--by", "process", "--list"]) == 0
    assert f"127.0.0.1:{port}" in capsys.readouterr().out


def test_listen_json_schema(
    own_listener: tuple[socket.socket, socket.socket], capsys: pytest.CaptureFixture[str]
) -> None:
    ls, _ = own_listener
    assert main(["host", "listen", "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    mine = [x for x in doc["listeners"] if x["local"] == f"127.0.0.1:{ls.getsockname()[1]}"]
    assert len(mine) == 1
    x = mine[0]
    assert (x["pid"], x["accept_queue"], x["accept_queue_max"]) == (
        os.getpid(),
        1,
        min(5, SOMAXCONN),
    )
    assert x["process"] == Path("/proc/self/comm").read_text().strip() and x["status"] == "ok"
    assert doc["somaxconn"] == SOMAXCONN
    assert main(["host", "listen"]) == 0
    assert "passed to listen()" in capsys.readouterr().out


def test_counters_and_watch_once_in_own_namespace(capsys: pytest.CaptureFixture[str]) -> None:
    netstat = Path("/proc/net/netstat")
    before = _kernel_value(netstat.read_text(), "TcpExt", "ListenOverflows")
    assert main(["host", "counters", "--format", "json"]) == 0
    after = _kernel_value(netstat.read_text(), "TcpExt", "ListenOverflows")
    doc = json.loads(capsys.readouterr().out)
    # the kernel's counter at the time of the reading (other tests may overflow a queue meanwhile)
    assert before <= doc["totals"]["TcpExtListenOverflows"] <= after
    assert main(["host", "counters", "--interval", "0.1", "--count", "1", "--format", "json"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [x["sample"] for x in lines] == [0, 1] and isinstance(lines[1]["deltas"], dict)
    assert main(["host", "watch", "--once", "--format", "json"]) == 0
    frames = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert len(frames) == 1 and list(frames[0]["states"]) == list(STATES)


def test_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["host", "counters", "--count", "2"]) == 2
    assert "needs --interval" in capsys.readouterr().err
    assert main(["host", "watch", "--interval", "0"]) == 2
    with pytest.raises(TcpwhyError, match="no network namespace"):
        netns_path(f"tcpwhy-absent-{os.getpid()}")
    with pytest.raises(TcpwhyError, match="cannot contain"):
        netns_path("a/b")
    assert run_in_netns(None, lambda: 42) == 42
