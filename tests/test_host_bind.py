"""Host findings behind EADDRINUSE, on hand-made socket lists: a listener whose port a
connect() may take, and TIME_WAIT held on a listening port. The live counterparts (real
sockets in a namespace, checked against ss and a real bind()) are in
test_host_findings_live.py."""

from __future__ import annotations

from tcpwhy.host import sysctl as sc
from tcpwhy.host.explain import analyze
from tests.test_host_units import kinds, sock

RANGE = {"net.ipv4.ip_local_port_range": "32768 60999", "net.ipv4.ip_local_reserved_ports": ""}


def test_port_set_reads_the_kernel_list_format() -> None:
    assert sc.port_set("8080,9000-9002") == [(8080, 8080), (9000, 9002)]
    assert sc.port_set("") == [] and sc.port_set(None) == []
    assert sc.port_set("x,80") == [(80, 80)]  # a malformed part is skipped, not fatal
    assert sc.in_ports(9001, sc.port_set("8080,9000-9002"))
    assert not sc.in_ports(9003, sc.port_set("8080,9000-9002"))


def test_listener_in_range_unless_reserved() -> None:
    ls = sock("LISTEN", ("0.0.0.0", 40000), pid=7)
    f = kinds(analyze([ls], RANGE))["listener_in_ephemeral_range"]
    assert f.severity == "info" and "40000" in f.why and "EADDRINUSE" in f.why
    assert "listener_in_ephemeral_range" not in kinds(
        analyze([ls], {**RANGE, "net.ipv4.ip_local_reserved_ports": "39999-40001"})
    )
    low = sock("LISTEN", ("0.0.0.0", 8080), pid=7)
    assert analyze([low], RANGE) == []
    # the range not known (e.g. not visible): no guess
    assert "listener_in_ephemeral_range" not in kinds(analyze([ls], {}))


def test_one_finding_per_port_for_v4_and_v6_listeners() -> None:
    a = sock("LISTEN", ("0.0.0.0", 40000), pid=7)
    b = sock("LISTEN", ("::", 40000), pid=7)
    found = [f for f in analyze([a, b], RANGE) if f.kind == "listener_in_ephemeral_range"]
    assert len(found) == 1


def test_time_wait_on_listening_port_only() -> None:
    ls = sock("LISTEN", ("0.0.0.0", 8080), pid=7)
    held = [
        sock("TIME_WAIT", ("10.0.0.2", 8080), ("10.0.0.5", 50000 + i), inode=0) for i in range(3)
    ]
    other = sock("TIME_WAIT", ("10.0.0.2", 45000), ("10.0.0.9", 443), inode=0)  # a client's
    f = kinds(analyze([ls, *held, other], RANGE))["time_wait_on_listener"]
    assert f.count == 3 and "SO_REUSEADDR" in f.why and "8080" in f.subject
    # nothing listens: the TIME_WAIT alone is no restart problem to report here
    assert "time_wait_on_listener" not in kinds(analyze([*held, other], RANGE))
    # a listener on another address does not share the TIME_WAIT's port
    lo = sock("LISTEN", ("127.0.0.1", 8080), pid=7)
    assert "time_wait_on_listener" not in kinds(analyze([lo, *held], RANGE))
