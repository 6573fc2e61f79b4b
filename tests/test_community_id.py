"""Community ID v1 of every connection, against the reference implementation (the
``communityid`` package of the spec's authors, in the test extra): on the shipped lab
recordings, on every corpus capture (IPv6 ones among them), on random IPv4 and IPv6 tuples
that hit the ordering rules (equal addresses, equal ports), with several seeds; and in every
output that carries it (jsonl, csv, zeek, zeek-json)."""

from __future__ import annotations

import io
import ipaddress
import json
import subprocess
import sys
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
from communityid import CommunityID, FlowTuple

from tcpwhy.capture import read_table
from tcpwhy.report.conns import read_zeek, write_conns
from tcpwhy.tcp.connections import connection_columns
from tcpwhy.tcp.records import ConnColumns, RecordOptions, community_ids

DATA = Path(str(resources.files("tcpwhy") / "data"))
LAB = sorted((DATA / "lab").glob("*.pcap"))


def reference(c: ConnColumns, seed: int) -> list[str]:
    """The package's Community ID of each record's 5-tuple (addresses as text)."""
    cid = CommunityID(seed)
    return [
        cid.calc(FlowTuple.make_tcp(r.orig_h, r.resp_h, r.orig_p, r.resp_p)) for r in c.records()
    ]


def _check(paths: list[Path], seeds: tuple[int, ...]) -> int:
    n = 0
    for p in paths:
        c = connection_columns(read_table(str(p)))
        for seed in seeds:
            c2 = c.with_options(RecordOptions(community_id_seed=seed))
            got = [r.community_id for r in c2.records()]
            assert got == reference(c2, seed), (p.name, seed)
        n += len(c)
    return n


def test_lab_recordings() -> None:
    assert _check([*LAB, DATA / "demo-stale-keepalive.pcap"], (0, 1, 0xFFFF)) > 200


def test_zeek_corpus_ipv4_and_ipv6(zeek_corpus: Path) -> None:
    paths = sorted(zeek_corpus.glob("*.pcap*"))
    assert _check(paths, (0, 77)) > 100
    # IPv6 connections are among them (FTP over IPv6, Teredo)
    v6 = [
        r
        for p in paths
        if "ipv6" in p.name or "teredo" in p.name
        for r in connection_columns(read_table(str(p))).records()
        if ":" in r.orig_h
    ]
    assert len(v6) >= 6


def _random_tuples(n: int, rng: np.random.Generator) -> ConnColumns:
    """Random IPv4 and IPv6 connections; a quarter share both addresses (ordered by port)
    and some share the port too."""
    c = ConnColumns.concat([connection_columns(read_table(str(p))) for p in LAB])
    c = c.take(np.arange(n) % len(c))
    v6 = rng.random(n) < 0.5
    hi = np.where(v6, rng.integers(0, 2**63, n).astype(np.uint64) * np.uint64(2), 0)
    lo4 = np.uint64(0xFFFF00000000) | rng.integers(0, 2**32, n).astype(np.uint64)
    lo = np.where(v6, rng.integers(0, 2**63, n).astype(np.uint64) << np.uint64(1), lo4)
    hi2 = np.where(v6, rng.integers(0, 2**63, n).astype(np.uint64), 0)
    lo2 = np.where(
        v6,
        rng.integers(0, 2**63, n).astype(np.uint64),
        np.uint64(0xFFFF00000000) | rng.integers(0, 2**32, n).astype(np.uint64),
    )
    same = rng.random(n) < 0.25
    hi2, lo2 = np.where(same, hi, hi2).astype(np.uint64), np.where(same, lo, lo2).astype(np.uint64)
    c.cols["orig_hi"], c.cols["orig_lo"] = hi.astype(np.uint64), lo.astype(np.uint64)
    c.cols["resp_hi"], c.cols["resp_lo"] = hi2, lo2
    op = rng.integers(0, 65536, n)
    rp = np.where(rng.random(n) < 0.1, op, rng.integers(0, 65536, n))
    c.cols["orig_p"], c.cols["resp_p"] = op, rp
    return c


def test_random_tuples_and_seeds() -> None:
    rng = np.random.default_rng(5)
    c = _random_tuples(3000, rng)
    for seed in (0, 1, 258, 0xFFFF):
        c2 = c.with_options(RecordOptions(community_id_seed=seed))
        assert [r.community_id for r in c2.records()] == reference(c2, seed), seed


def test_direction_does_not_matter() -> None:
    """The same connection seen from the other side has the same Community ID."""
    c = connection_columns(read_table(str(DATA / "lab" / "time-wait-reuse.pcap")))
    swapped = ConnColumns(dict(c.cols), c.end_words)
    for a, b in (("orig_hi", "resp_hi"), ("orig_lo", "resp_lo"), ("orig_p", "resp_p")):
        swapped.cols[a], swapped.cols[b] = c.cols[b], c.cols[a]
    assert np.array_equal(community_ids(swapped.cols), community_ids(c.cols))


def test_spec_example() -> None:
    """The example of the spec's README (TCP 128.232.110.120:34855 -> 66.35.250.204:80)."""
    c = connection_columns(read_table(str(LAB[0]))).take(np.array([0]))
    c.cols["orig_hi"] = np.array([0], np.uint64)
    c.cols["orig_lo"] = np.array([0xFFFF00000000 | int(ipaddress.IPv4Address("128.232.110.120"))])
    c.cols["resp_hi"] = np.array([0], np.uint64)
    c.cols["resp_lo"] = np.array([0xFFFF00000000 | int(ipaddress.IPv4Address("66.35.250.204"))])
    c.cols["orig_p"], c.cols["resp_p"] = np.array([34855]), np.array([80])
    c.cols["orig_lo"] = c.cols["orig_lo"].astype(np.uint64)
    c.cols["resp_lo"] = c.cols["resp_lo"].astype(np.uint64)
    assert c.record(0).community_id == "1:LQU9qZlK+B5F3KDmev6m5PMibrg="


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "zeek", "zeek-json"])
def test_every_output_carries_it(fmt: str) -> None:
    p = DATA / "lab" / "refused.pcap"
    buf = io.StringIO()
    ropts = RecordOptions(community_id_seed=9)
    write_conns(str(p), fmt, out=buf, record_options=ropts)
    lines = buf.getvalue().splitlines()
    if fmt in ("jsonl", "zeek-json"):
        got = [json.loads(line)["community_id"] for line in lines]
    elif fmt == "csv":
        head = lines[0].split(",")
        got = [dict(zip(head, line.split(","), strict=False))["community_id"] for line in lines[1:]]
    else:
        got = [row["community_id"] for row in read_zeek(lines)]
    boundaries = "zeek" if fmt.startswith("zeek") else "stream"
    c = connection_columns(read_table(str(p)), boundaries=boundaries)
    assert sorted(got) == sorted(reference(c, 9)) and got


def test_cli_seed_option() -> None:
    p = DATA / "lab" / "clean.pcap"

    def run(*opts: str) -> list[str]:
        out = subprocess.run(
            [sys.executable, "-m", "tcpwhy", "conns", "--format", "jsonl", *opts, str(p)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return [json.loads(line)["community_id"] for line in out.splitlines()]

    c = connection_columns(read_table(str(p)))
    assert run() == reference(c, 0)
    assert run("--community-id-seed", "123") == reference(c, 123)
    bad = subprocess.run(
        [sys.executable, "-m", "tcpwhy", "conns", "--community-id-seed", "65536", str(p)],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "65535" in bad.stderr
