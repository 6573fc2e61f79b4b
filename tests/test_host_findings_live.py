"""Host findings produced by the kernel itself, checked against `ss` and tcpwhy's own output.

Each test builds its own network namespaces (through the lab's helpers), makes
real sockets pile up in one lifecycle state, then reads the namespace twice:
with `ss` run inside it (the reference) and with `tcpwhy host … --netns`. The
finding's kind and count must match what `ss` shows, and the thresholds must
sit where explain.py says they do.

Sockets are created by this process (the lab enters a namespace only for the
instant of `socket()`), so closing them and deleting the namespaces removes
everything. Settings are changed only inside the test's namespaces: a child
namespace's /proc/sys/net holds per-namespace settings only, so a write there
cannot reach the host; the fixture still checks that the host's values did
not move.
"""

from __future__ import annotations

import errno
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tcpwhy.host import explain
from tcpwhy.lab import ns as nsmod

pytestmark = pytest.mark.root

T = TypeVar("T")
SS_STATE = {"ESTAB": "ESTABLISHED", "UNCONN": "CLOSE"}
SERVER_ADDR, CLIENT_ADDR = "10.231.0.1", "10.231.0.2"
SERVER_PORT = 8080  # outside every ephemeral range used here


@dataclass
class Row:
    """One `ss -tanpo` line."""

    state: str
    recv_q: int
    send_q: int
    local: str
    remote: str
    pids: frozenset[int]
    timer: str | None
    retrans: int | None

    @property
    def local_port(self) -> int:
        return int(self.local.rsplit(":", 1)[1])

    @property
    def remote_port(self) -> int:
        return int(self.remote.rsplit(":", 1)[1])


@dataclass
class Scene:
    """What one test creates: namespaces and sockets, removed by the fixture."""

    names: list[str] = field(default_factory=list)
    sockets: list[socket.socket] = field(default_factory=list)

    def namespace(self, role: str, sysctls: dict[str, object] | None = None) -> str:
        name = nsmod.new_name(role)
        self.names.append(name)  # before creating: a half-made namespace is removed too
        nsmod.create_namespace(name)
        nsmod.sysctl(name, sysctls or {})
        return name

    def link(self, server_ns: str, client_ns: str) -> None:
        """A veth pair: SERVER_ADDR in server_ns, CLIENT_ADDR in client_ns."""
        nsmod.run(["ip", "link", "add", "c0", "netns", client_ns,
                   "type", "veth", "peer", "name", "s0", "netns", server_ns])  # fmt: skip
        for ns, ifname, addr in ((server_ns, "s0", SERVER_ADDR), (client_ns, "c0", CLIENT_ADDR)):
            nsmod.run(["ip", "addr", "add", f"{addr}/24", "dev", ifname], ns)
            nsmod.run(["ip", "link", "set", ifname, "up"], ns)

    def sock(self, ns: str) -> socket.socket:
        s = nsmod.socket_in(ns)
        self.sockets.append(s)
        return s

    def listener(self, ns: str, addr: str = "127.0.0.1", backlog: int = 64) -> socket.socket:
        ls = self.sock(ns)
        ls.bind((addr, SERVER_PORT))
        ls.listen(backlog)
        return ls


HOST_KEYS = (
    "net/ipv4/tcp_max_tw_buckets",
    "net/ipv4/ip_local_port_range",
    "net/ipv4/tcp_tw_reuse",
    "net/ipv4/tcp_syncookies",
    "net/ipv4/tcp_fin_timeout",
    "net/ipv4/ip_local_reserved_ports",
)


def _host_values() -> dict[str, str]:
    return {k: Path("/proc/sys", k).read_text() for k in HOST_KEYS}


@pytest.fixture
def scene(netns_ok: None) -> Iterator[Scene]:
    before = _host_values()
    sc = Scene()
    try:
        yield sc
    finally:
        for s in sc.sockets:
            s.close()
        for name in sc.names:
            nsmod.delete_namespace(name)
    assert _host_values() == before, "a test setting leaked into the host's namespace"


# ---------------------------------------------------------------- readers


def ss(ns: str) -> list[Row]:
    """`ss -tanpo` inside the namespace, parsed only here: the reference."""
    rows = []
    for line in nsmod.run(["ss", "-tanpoH"], ns).splitlines():
        parts = line.split(None, 5)
        if len(parts) < 5:
            continue
        timer = re.search(r"timer:\((\w+),[^,]*,(\d+)\)", line)
        rows.append(
            Row(
                state=SS_STATE.get(parts[0], parts[0].replace("-", "_")),
                recv_q=int(parts[1]),
                send_q=int(parts[2]),
                local=parts[3],
                remote=parts[4],
                pids=frozenset(int(m) for m in re.findall(r",pid=(\d+),", line)),
                timer=timer.group(1) if timer else None,
                retrans=int(timer.group(2)) if timer else None,
            )
        )
    return rows


def ss_counts(rows: list[Row]) -> Counter[str]:
    return Counter(r.state for r in rows)


def tcpwhy(*args: str) -> str:
    res = subprocess.run(
        [sys.executable, "-m", "tcpwhy", "host", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "1000"},  # one line per finding in table output
    )
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr
    return res.stdout


def states(ns: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(tcpwhy("states", "--netns", ns, "--format", "json"))
    return doc


def findings(doc: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [f for f in doc["findings"] if f["kind"] == kind]


def only(doc: dict[str, Any], kind: str) -> dict[str, Any]:
    found = findings(doc, kind)
    assert len(found) == 1, f"{kind}: {found} in {doc['findings']}"
    return found[0]


def poll(read: Callable[[], T], done: Callable[[T], bool], timeout: float = 30.0) -> T:
    """Read until `done` holds; after `timeout` return the last reading for the assertion to show."""
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if done(value) or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


def settle(ns: str, want: dict[str, int]) -> list[Row]:
    rows = poll(lambda: ss(ns), lambda r: all(ss_counts(r)[k] == v for k, v in want.items()))
    got = ss_counts(rows)
    assert {k: got[k] for k in want} == want, f"the kernel did not get there: {got}"
    return rows


def assert_states_match(doc: dict[str, Any], rows: list[Row]) -> None:
    ref = ss_counts(rows)
    assert doc["source"] == "sock_diag"
    assert doc["states"] == {s: ref[s] for s in doc["states"]}


def assert_in_table(ns: str, finding: dict[str, Any]) -> None:
    """The table output, read a moment later, carries the same finding."""

    def still(text: str) -> str:  # retransmission counts keep moving between two readings
        return re.sub(r"up to \d+×", "up to N×", text)

    text = still(tcpwhy("states", "--netns", ns, "--by", "port"))
    assert still(f"{finding['subject']}: {finding['why']}") in text
    assert f"{finding['title']} ({finding['count']})" in text


def my_owner() -> str:
    comm = Path("/proc/self/comm").read_text().strip()
    return f"pid {os.getpid()} ({comm})"


def connect_and_close(ns: str, ls: socket.socket, n: int) -> None:
    """n connections the client closes first: each leaves a client-side TIME_WAIT."""
    addr = ls.getsockname()
    for _ in range(n):
        c = nsmod.socket_in(ns)
        try:
            c.connect(addr)
            a, _ = ls.accept()
        finally:
            c.close()
        try:
            assert a.recv(1) == b""  # the client's FIN has arrived
        finally:
            a.close()


# ---------------------------------------------------------------- SYN_RECV


def _syn_scene(sc: Scene, n: int) -> tuple[str, str]:
    """n handshakes that never complete: the clients' namespace drops every SYN-ACK on input.

    The loss is on the way back, not at the server's output: a SYN-ACK refused
    by the server's own OUTPUT hook fails to send, and the kernel discards a
    request whose SYN-ACK retransmission fails, so the half-open socket would
    never show a retransmission.
    """
    server_ns = sc.namespace("s", {"net.ipv4.tcp_syncookies": 0})  # every SYN gets a request socket
    client_ns = sc.namespace("c")
    sc.link(server_ns, client_ns)
    sc.listener(server_ns, SERVER_ADDR, backlog=64)  # the SYN queue is bounded by the backlog
    nsmod.nft(
        client_ns,
        "table inet tcpwhy_test {\n  chain input {\n    type filter hook input priority 0;\n"
        f"    ip saddr {SERVER_ADDR} tcp sport {SERVER_PORT} tcp flags & (syn | ack) == (syn | ack) "
        "counter drop\n  }\n}\n",
    )
    for _ in range(n):
        c = sc.sock(client_ns)
        c.setblocking(False)
        assert c.connect_ex((SERVER_ADDR, SERVER_PORT)) == errno.EINPROGRESS
    return server_ns, client_ns


def test_syn_recv_pileup_matches_ss(scene: Scene) -> None:
    n = 20
    assert n >= explain.SYN_RECV_MIN  # above the count threshold, retransmissions or not
    server_ns, client_ns = _syn_scene(scene, n)
    rows = settle(server_ns, {"SYN_RECV": n, "LISTEN": 1})
    doc = states(server_ns)
    assert_states_match(doc, rows)
    syn = only(doc, "syn_recv_pileup")
    assert syn["severity"] == "warning" and syn["subject"] == f"port {SERVER_PORT}"
    assert syn["count"] == sum(1 for r in rows if r.state == "SYN_RECV") == n
    assert all(r.local == f"{SERVER_ADDR}:{SERVER_PORT}" for r in rows if r.state == "SYN_RECV")
    retrans = max(s["retrans"] for s in doc["sockets"] if s["state"] == "SYN_RECV")
    assert f"SYN-ACK retransmitted up to {retrans}×" in syn["why"]
    assert "SYN flood" in syn["why"]  # the accept queue is empty: not the full-queue reading
    assert {s["pid"] for s in doc["sockets"] if s["state"] == "SYN_RECV"} == {None}
    assert_in_table(server_ns, syn)

    # the listener's SYN queue, as `host listen` reports it, is the same pile
    listen = json.loads(tcpwhy("listen", "--netns", server_ns, "--format", "json"))
    (lst,) = listen["listeners"]
    (ref,) = [r for r in ss(server_ns) if r.state == "LISTEN"]
    assert (lst["local"], lst["accept_queue"], lst["accept_queue_max"]) == (
        ref.local,
        ref.recv_q,
        ref.send_q,
    )
    assert lst["syn_recv"] == n and lst["status"] == "ok"

    # the other side: n connects retransmitting their SYN
    crows = settle(client_ns, {"SYN_SENT": n})
    cdoc = states(client_ns)
    assert_states_match(cdoc, crows)
    sent = only(cdoc, "syn_sent_unanswered")
    assert sent["count"] == n and sent["subject"] == f"connects → {SERVER_ADDR}:{SERVER_PORT}"

    def dropped() -> int:
        rule = nsmod.run(["nft", "list", "table", "inet", "tcpwhy_test"], client_ns)
        return int(rule.split("packets ")[1].split()[0])

    assert poll(dropped, lambda v: v >= n) >= n  # every SYN-ACK was dropped at least once


def test_syn_recv_few_count_once_retransmitted(scene: Scene) -> None:
    """Below the count threshold, a pile counts once the SYN-ACKs were retransmitted twice."""
    n = 3
    server_ns, _ = _syn_scene(scene, n)
    backlog = int(nsmod.run(["cat", "/proc/sys/net/ipv4/tcp_max_syn_backlog"], server_ns))
    assert n < min(explain.SYN_RECV_MIN, max(2, backlog // 4))
    settle(server_ns, {"SYN_RECV": n})
    seen: list[dict[str, Any]] = []

    def read() -> dict[str, Any]:
        doc = states(server_ns)
        seen.append(doc)
        return doc

    def retrans(doc: dict[str, Any]) -> int:
        return max((s["retrans"] for s in doc["sockets"] if s["state"] == "SYN_RECV"), default=-1)

    doc = poll(read, lambda d: retrans(d) >= 2)
    assert retrans(doc) >= 2, "the SYN-ACKs were never retransmitted"
    for d in seen:  # every snapshot, the kernel's retransmission count decides
        assert bool(findings(d, "syn_recv_pileup")) == (retrans(d) >= 2), d["findings"]
    rows = ss(server_ns)
    syn = only(doc, "syn_recv_pileup")
    assert syn["count"] == sum(1 for r in rows if r.state == "SYN_RECV") == n
    assert f"up to {retrans(doc)}×" in syn["why"]
    # ss sees the same retransmissions, a moment later (never fewer)
    assert max(r.retrans or 0 for r in rows if r.state == "SYN_RECV") >= retrans(doc)


# ---------------------------------------------------------------- TIME_WAIT


def test_time_wait_buckets_matches_ss(scene: Scene) -> None:
    buckets = 20
    ns = scene.namespace("t", {"net.ipv4.tcp_max_tw_buckets": buckets, "net.ipv4.tcp_tw_reuse": 0})
    ls = scene.listener(ns)
    below = 15
    assert below < explain.TW_BUCKETS_WARN * buckets
    connect_and_close(ns, ls, below)
    rows = settle(ns, {"TIME_WAIT": below})
    doc = states(ns)
    assert_states_match(doc, rows)
    assert not findings(doc, "time_wait_buckets")

    connect_and_close(ns, ls, 10)  # 25 closed: the kernel keeps no more than `buckets`
    rows = settle(ns, {"TIME_WAIT": buckets})
    doc = states(ns)
    assert_states_match(doc, rows)
    tw = only(doc, "time_wait_buckets")
    assert tw["severity"] == "warning" and tw["subject"] == "namespace"
    assert tw["count"] == sum(1 for r in rows if r.state == "TIME_WAIT") == buckets
    assert f"100% of tcp_max_tw_buckets = {buckets}" in tw["why"]
    assert not findings(doc, "time_wait_ports")  # 20 of 28232 ephemeral ports
    assert_in_table(ns, tw)
    # what the finding says happens beyond the limit: the 5 others closed without TIME_WAIT
    totals = json.loads(tcpwhy("counters", "--netns", ns, "--format", "json"))["totals"]
    assert totals["TcpExtTCPTimeWaitOverflow"] == 25 - buckets
    assert totals["TcpExtTW"] == buckets


def test_time_wait_buckets_count_fin_wait2_orphans(scene: Scene) -> None:
    """A FIN_WAIT_2 orphan is a timewait mini-socket too: it takes a bucket like TIME_WAIT."""
    buckets, orphans = 20, 12
    ns = scene.namespace("o", {"net.ipv4.tcp_max_tw_buckets": buckets, "net.ipv4.tcp_tw_reuse": 0})
    ls = scene.listener(ns)

    def orphan() -> None:  # the client closes, the server holds its end open
        c = nsmod.socket_in(ns)
        try:
            c.connect(ls.getsockname())
            scene.sockets.append(ls.accept()[0])
        finally:
            c.close()

    def overflows() -> int:
        doc = json.loads(tcpwhy("counters", "--netns", ns, "--format", "json"))
        return int(doc["totals"]["TcpExtTCPTimeWaitOverflow"])

    for _ in range(orphans):
        orphan()
    settle(ns, {"FIN_WAIT_2": orphans})
    connect_and_close(ns, ls, 15)  # room for 8 of them only
    rows = settle(ns, {"FIN_WAIT_2": orphans, "TIME_WAIT": buckets - orphans})
    assert {r.timer for r in rows if r.state in ("FIN_WAIT_2", "TIME_WAIT")} == {"timewait"}
    assert overflows() == 15 - (buckets - orphans)
    doc = states(ns)
    assert_states_match(doc, rows)
    tw = only(doc, "time_wait_buckets")
    assert tw["count"] == sum(1 for r in rows if r.timer == "timewait") == buckets
    assert f"({buckets - orphans} TIME_WAIT, {orphans} FIN_WAIT_2 orphans)" in tw["why"]
    assert f"100% of tcp_max_tw_buckets = {buckets}" in tw["why"]
    assert only(doc, "fin_wait2_orphans")["count"] == orphans
    assert_in_table(ns, tw)

    # what the finding says of orphans beyond the limit: one more is dropped at once
    before = overflows()
    orphan()
    poll(overflows, lambda v: v > before)
    rows = settle(ns, {"FIN_WAIT_2": orphans, "CLOSE_WAIT": orphans + 1})
    assert overflows() == before + 1


def test_time_wait_ports_matches_ss(scene: Scene) -> None:
    lo, hi = 40000, 40039
    ports = hi - lo + 1
    ns = scene.namespace(
        "p", {"net.ipv4.ip_local_port_range": f"{lo} {hi}", "net.ipv4.tcp_tw_reuse": 0}
    )
    ls = scene.listener(ns)
    server = f"127.0.0.1:{SERVER_PORT}"

    def client_tw(rows: list[Row]) -> int:
        return sum(
            1
            for r in rows
            if r.state == "TIME_WAIT" and r.remote == server and lo <= r.local_port <= hi
        )

    below = 19
    assert below < explain.TW_PORTS_WARN * ports
    connect_and_close(ns, ls, below)
    rows = settle(ns, {"TIME_WAIT": below})
    doc = states(ns)
    assert_states_match(doc, rows)
    assert not findings(doc, "time_wait_ports")

    connect_and_close(ns, ls, 30 - below)
    rows = settle(ns, {"TIME_WAIT": 30})
    doc = states(ns)
    assert_states_match(doc, rows)
    tw = only(doc, "time_wait_ports")
    assert tw["severity"] == "warning" and tw["subject"] == f"127.0.0.1 → {server}"
    assert tw["count"] == client_tw(rows) == 30
    assert f"use {100 * 30 // ports}% of the {ports} ephemeral ports" in tw["why"]
    assert not findings(doc, "time_wait_buckets")
    assert_in_table(ns, tw)

    # what the finding predicts: once every port holds a TIME_WAIT, connect() fails
    connect_and_close(ns, ls, ports - 30)
    rows = settle(ns, {"TIME_WAIT": ports})
    assert client_tw(rows) == ports
    c = scene.sock(ns)
    with pytest.raises(OSError) as exc:
        c.connect(ls.getsockname())
    assert exc.value.errno == errno.EADDRNOTAVAIL
    tw = only(states(ns), "time_wait_ports")
    assert tw["count"] == ports and f"use 100% of the {ports}" in tw["why"]


# ---------------------------------------------------------------- CLOSE_WAIT


def test_close_wait_unaccepted_matches_ss(scene: Scene) -> None:
    n = 5
    ns = scene.namespace("w")
    ls = scene.listener(ns, backlog=16)
    clients = []
    for _ in range(n):
        c = scene.sock(ns)
        c.connect(ls.getsockname())
        clients.append(c)
    for c in clients:  # the clients give up before the server calls accept()
        c.close()
    rows = settle(ns, {"CLOSE_WAIT": n, "FIN_WAIT_2": n, "LISTEN": 1})
    doc = states(ns)
    assert_states_match(doc, rows)
    listener = f"127.0.0.1:{SERVER_PORT}"
    cw = only(doc, "close_wait_unaccepted")
    assert cw["severity"] == "warning" and cw["subject"] == f"listener {listener}"
    assert cw["count"] == sum(1 for r in rows if r.state == "CLOSE_WAIT" and r.local == listener)
    assert cw["count"] == n
    assert not findings(doc, "close_wait")
    assert all(not r.pids for r in rows if r.state == "CLOSE_WAIT")  # no process holds them
    (lrow,) = [r for r in rows if r.state == "LISTEN"]
    assert lrow.recv_q == n  # still counted in the accept queue
    # the clients' side: closed sockets waiting for a FIN that the server cannot send yet
    assert only(doc, "fin_wait2_orphans")["count"] == n
    assert_in_table(ns, cw)

    # accept() gives them a file descriptor: the same sockets become an ordinary CLOSE_WAIT leak
    for _ in range(n):
        scene.sockets.append(ls.accept()[0])
    rows = poll(
        lambda: ss(ns),
        lambda rs: sum(1 for r in rs if r.state == "CLOSE_WAIT" and os.getpid() in r.pids) == n,
    )
    doc = states(ns)
    assert_states_match(doc, rows)
    assert not findings(doc, "close_wait_unaccepted")
    held = only(doc, "close_wait")
    assert held["count"] == sum(1 for r in rows if r.state == "CLOSE_WAIT") == n
    assert held["subject"] == f"{my_owner()} ← clients of :{SERVER_PORT}"


# ---------------------------------------------------------------- FIN_WAIT_2


def test_fin_wait2_half_closed_matches_ss(scene: Scene) -> None:
    n = 4
    ns = scene.namespace("f", {"net.ipv4.tcp_fin_timeout": 1})
    ls = scene.listener(ns)

    def connection() -> socket.socket:
        c = scene.sock(ns)
        c.connect(ls.getsockname())
        scene.sockets.append(ls.accept()[0])  # accepted and held: the server never closes
        return c

    for _ in range(n):
        connection().shutdown(socket.SHUT_WR)  # half-close; the socket stays open
    rows = settle(ns, {"FIN_WAIT_2": n, "CLOSE_WAIT": n})
    doc = states(ns)
    assert_states_match(doc, rows)
    hc = only(doc, "fin_wait2_half_closed")
    assert hc["severity"] == "info" and hc["subject"] == my_owner()
    assert hc["count"] == sum(1 for r in rows if r.state == "FIN_WAIT_2") == n
    assert {r.pids for r in rows if r.state == "FIN_WAIT_2"} == {frozenset({os.getpid()})}
    assert not findings(doc, "fin_wait2_orphans")
    assert_in_table(ns, hc)

    # "no timeout applies": an orphan closed after them, with tcp_fin_timeout = 1 s, goes first
    def killed() -> int:  # timewait sockets scheduled with a timer of 4 s or less
        doc = json.loads(tcpwhy("counters", "--netns", ns, "--format", "json"))
        return int(doc["totals"]["TcpExtTWKilled"])

    connection().close()
    assert poll(killed, lambda v: v == 1) == 1  # the orphan now waits in FIN_WAIT_2 for 1 s
    rows = settle(ns, {"FIN_WAIT_2": n, "CLOSE_WAIT": n + 1})  # … and is gone
    doc = states(ns)
    assert_states_match(doc, rows)
    assert not findings(doc, "fin_wait2_orphans")
    hc = only(doc, "fin_wait2_half_closed")
    assert hc["count"] == sum(1 for r in rows if r.state == "FIN_WAIT_2" and r.pids) == n
    assert "no timeout applies" in hc["why"]
    # their peer: the server received every FIN and holds its sockets open
    cw = only(doc, "close_wait")
    assert cw["count"] == sum(1 for r in rows if r.state == "CLOSE_WAIT") == n + 1
    assert cw["subject"] == f"{my_owner()} ← clients of :{SERVER_PORT}"


# ---------------------------------------------------------------- EADDRINUSE


def _bind_error(ns: str, port: int, *, reuseaddr: bool) -> int | None:
    """errno of a fresh bind() on 127.0.0.1:port (None: it worked), as a restart would see it."""
    s = nsmod.socket_in(ns)
    try:
        if reuseaddr:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
    except OSError as exc:
        return exc.errno
    finally:
        s.close()
    return None


def test_listener_in_ephemeral_range_until_reserved(scene: Scene) -> None:
    lo, hi, port = 40000, 40099, 40050
    ns = scene.namespace("e", {"net.ipv4.ip_local_port_range": f"{lo} {hi}"})
    ls = scene.sock(ns)
    ls.bind(("127.0.0.1", port))
    ls.listen(8)
    outside = scene.listener(ns)  # SERVER_PORT, outside the range: never flagged
    assert not (lo <= SERVER_PORT <= hi)
    doc = states(ns)
    f = only(doc, "listener_in_ephemeral_range")
    assert f["severity"] == "info" and f["subject"].startswith(f"listener 127.0.0.1:{port} ")
    assert f"({lo} {hi})" in f["why"] and "EADDRINUSE" in f["why"]
    assert_in_table(ns, f)

    nsmod.sysctl(ns, {"net.ipv4.ip_local_reserved_ports": f"{port - 1}-{port + 1}"})
    assert not findings(states(ns), "listener_in_ephemeral_range")

    # what the finding predicts: unreserved, connect() takes the port and the restart fails
    nsmod.sysctl(
        ns,
        {"net.ipv4.ip_local_reserved_ports": "", "net.ipv4.ip_local_port_range": f"{port} {port}"},
    )
    ls.close()
    c = scene.sock(ns)
    c.connect(outside.getsockname())
    assert c.getsockname()[1] == port
    assert any(r.state == "ESTABLISHED" and r.local_port == port for r in ss(ns))
    assert _bind_error(ns, port, reuseaddr=True) == errno.EADDRINUSE


def test_time_wait_on_listener_matches_ss(scene: Scene) -> None:
    ns = scene.namespace("w")
    ls = scene.sock(ns)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", SERVER_PORT))
    ls.listen(8)
    assert not findings(states(ns), "time_wait_on_listener")
    n = 4
    for _ in range(n):  # the server closes first: the TIME_WAIT stays on the listening port
        c = scene.sock(ns)
        c.connect(ls.getsockname())
        a, _ = ls.accept()
        a.close()
        assert c.recv(1) == b""
        c.close()
    rows = settle(ns, {"TIME_WAIT": n})
    assert all(r.local_port == SERVER_PORT for r in rows if r.state == "TIME_WAIT")
    doc = states(ns)
    assert_states_match(doc, rows)
    f = only(doc, "time_wait_on_listener")
    assert f["count"] == n and f["subject"].startswith(f"listener 127.0.0.1:{SERVER_PORT} ")
    assert "SO_REUSEADDR" in f["why"]
    assert not findings(doc, "listener_in_ephemeral_range")  # 8080 is below the default range
    assert_in_table(ns, f)

    # what the finding predicts: stopped and restarted, bind() needs SO_REUSEADDR
    ls.close()
    assert _bind_error(ns, SERVER_PORT, reuseaddr=False) == errno.EADDRINUSE
    assert _bind_error(ns, SERVER_PORT, reuseaddr=True) is None
