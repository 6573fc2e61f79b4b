"""Regenerate expected.json: the frames tshark 4.0 selects for each filter on each capture.

Run from the repository root (needs tshark and ../shared/corpus):

    python tests/data/filters/generate.py

tshark runs as ``tshark -n -2 -o tcp.calculate_timestamps:TRUE -r FILE -Y FILTER
-T fields -e frame.number``: two passes (``-2``) so the analysis flags a filter
sees are those of the finished first pass, as in Wireshark's GUI, and
``tcp.time_delta`` computed (off by default). For filters tshark rejects, the
error message (without the ``tshark: `` prefix) is stored instead. The frames
tshark decodes as TCP are stored per capture (``tcp``), since tcpwhy's table
holds only TCP packets.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
ZEEK = Path(os.environ.get("TCPWHY_SHARED", REPO.parent / "shared")) / "corpus" / "zeek"
DATA = REPO / "src" / "tcpwhy" / "data"

ZEEK_CAPTURES = [
    "http-connect.pcap",
    "http-concurrent-range-requests.pcap",
    "http-no-crlf.pcap",
    "ftp-ipv6.pcap",
    "tunnels-teredo.pcap",
    "vlan-mpls.pcap",
    "pop3-redis.pcap",
]

LAB_CAPTURES = [
    "zero-window.pcap",
    "retransmission-timeout.pcap",
    "keepalive-dead-peer.pcap",
    "refused.pcap",
    "abortive-close.pcap",
]

# Every filter tshark accepts runs on every capture (errors are found on the first). Grouped by what they exercise.
FILTERS = [
    # the examples
    "tcp.port == 4542 or tcp.port == 4528",
    "ip.src == 192.168.1.23",
    "tcp.port in {80 443 8080}",
    "tcp.port in {80, 443, 8080}",
    'http.request.method == "GET"',
    'tcp.segment_data contains "202005190001"',
    # protocols and existence
    "tcp",
    "ip",
    "ipv6",
    "http",
    "vlan",
    "!ip",
    "tcp.options.mss_val",
    "not tcp.payload",
    # comparison operators and their word forms
    "tcp.srcport == 80",
    "tcp.port != 80",
    "tcp.port ~= 80",
    "tcp.port any_ne 8080",
    "tcp.port === 80",
    "tcp.port all_eq 6379",
    "tcp.len > 1000",
    "tcp.len gt 0 and tcp.len lt 100",
    "tcp.len ge 1 && tcp.len le 20",
    "tcp.window_size_value < 1000",
    "tcp.window_size <= 65535",
    "tcp.flags & 0x02",
    # numeric literal forms
    "tcp.flags == 0x012",
    "tcp.len == 0100",
    # sets
    "tcp.port in {21, 22, 23}",
    "tcp.srcport in {49000..50000}",
    "tcp.dstport in {80, 8000..9000}",
    "tcp.port not in {80, 8080}",
    "ip.src in {10.0.0.0/8, 192.168.0.0/16}",
    # logic and grouping
    "tcp.flags.syn == 1 and tcp.flags.ack == 0",
    "tcp.flags.syn or tcp.flags.fin == 1",
    "!(tcp.flags.ack == 1)",
    "not (tcp.len == 0 or tcp.flags.push == 1)",
    "(tcp.srcport == 80 or tcp.dstport == 80) and tcp.len > 0",
    "tcp.flags.syn == 1 or tcp.flags.fin == 1 and tcp.flags.ack == 1",
    # flags
    "tcp.flags.syn == True",
    "tcp.flags.urg == 1 or tcp.flags.ece == 1 or tcp.flags.cwr == 1",
    # addresses
    "ip.src == 10.77.0.1",
    "ip.dst == 88.198.248.254",
    "ip.addr == 127.0.0.1",
    "ip.addr != 192.168.0.107",
    "ip.addr == 10.0.0.0/8",
    "ip.src > 100.0.0.0",
    "ipv6.src == 2001:470:4867:99::21",
    "ipv6.addr == 2001:470:1f11::/48",
    "ipv6.dst != 2001:470:4867:99::21",
    "eth.src == 00:d0:03:3b:f4:00",
    "eth.addr == 50-eb-71-47-df-c4",
    "vlan.id == 4093",
    "ip.ttl < 64",
    # frame
    "frame.number <= 5",
    "frame.number in {1, 3, 5..7}",
    "frame.len > 1400",
    "frame.time_relative > 1.5",
    # tcp numbers and state
    "tcp.stream == 1",
    "tcp.stream in {0, 2}",
    "tcp.seq == 1",
    "tcp.seq > 100000",
    "tcp.ack_raw == 0",
    "tcp.options.mss_val == 1460",
    "tcp.window_size > 100000",
    "tcp.srcport == tcp.dstport",
    # payload bytes
    'tcp.payload contains "HTTP"',
    "tcp.payload contains 0d:0a:0d:0a",
    "tcp.payload contains 43",
    'tcp.payload matches "^(GET|POST) "',
    'tcp.payload matches "connection: keep-alive"',
    'tcp.payload ~ "(?-i)^SSH-2\\.0"',
    "tcp.payload[0:4] == 47:45:54:20",
    'tcp.payload[0:4] == "HTTP"',
    "tcp.payload[0] == 0x2b",
    "tcp.payload[-2:] == 0d:0a",
    "tcp.payload[1-3] == 45:54:20",
    "tcp.payload[2:] contains 3a",
    "tcp.payload[0:2,4] == 48:54:2f",
    'tcp.segment_data contains "HTTP"',
    # http
    "http.request",
    "http.response",
    'http.request.method == "POST"',
    'http.request.method in {"GET", "HEAD"}',
    'http.request.uri contains "100MB"',
    'http.request.uri matches "\\.bin$"',
    "http.response.code == 200",
    "http.response.code >= 300",
    'http.host == "5.2.136.90"',
    'http.connection == "Keep-Alive"',
    'http.request.method[0:3] == "CON"',
    # analysis
    "tcp.analysis.flags",
    "tcp.analysis.flags && !tcp.analysis.window_update",
    "tcp.analysis.retransmission",
    "tcp.analysis.fast_retransmission",
    "tcp.analysis.spurious_retransmission",
    "tcp.analysis.out_of_order",
    "tcp.analysis.lost_segment",
    "tcp.analysis.ack_lost_segment",
    "tcp.analysis.duplicate_ack",
    "tcp.analysis.duplicate_ack_num >= 2",
    "tcp.analysis.zero_window",
    "tcp.analysis.zero_window_probe",
    "tcp.analysis.window_full",
    "tcp.analysis.window_update",
    "tcp.analysis.keep_alive",
    "tcp.analysis.reused_ports",
    "tcp.analysis.ack_rtt > 0.2",
    "tcp.analysis.initial_rtt",
    "tcp.time_delta > 1",
    # errors
    "tcp.prot == 1",
    "tcp.prot",
    "foo",
    '"abc"',
    "80 == tcp.port",
    "tcp.port == 99999999",
    "ip.ttl > 300",
    "tcp.port == foo",
    "frame.number == 1.5",
    'tcp.srcport == "a"',
    "ip.src == 1.2.3",
    'ip.src == "10.0.0.1"',
    "ip.src == 10.0.0.1/33",
    "eth.src == zz",
    "tcp.srcport[0] == 0x0c",
    "tcp.payload[1:2-3] == 00",
    "tcp.payload[a] == 00",
    "tcp.port contains 80",
    "tcp.port = 80",
    "tcp.port == 80 80",
    "tcp.port == 80 andd tcp.len > 0",
    "tcp.port in {80,}",
    "tcp.port in {}",
    ")",
    "tcp.port ==",
    "(tcp.port == 80",
    "not",
]


def tshark(path: Path, flt: str) -> list[int] | str:
    cmd = ["tshark", "-n", "-2", "-o", "tcp.calculate_timestamps:TRUE", "-r", str(path)]
    cmd += ["-Y", flt, "-T", "fields", "-e", "frame.number"]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        lines = [ln for ln in p.stderr.splitlines() if not ln.startswith("Running as user")]
        return "\n".join(lines).removeprefix("tshark: ")
    return [int(x) for x in p.stdout.split()]


def captures() -> dict[str, Path]:
    caps = {f"zeek/{name}": ZEEK / name for name in ZEEK_CAPTURES}
    caps["data/demo-stale-keepalive.pcap"] = DATA / "demo-stale-keepalive.pcap"
    for name in LAB_CAPTURES:
        caps[f"data/lab/{name}"] = DATA / "lab" / name
    return caps


def main() -> int:
    version = subprocess.run(["tshark", "--version"], capture_output=True, text=True).stdout
    caps = captures()
    missing = [str(p) for p in caps.values() if not p.exists()]
    if missing:
        print("missing captures:", *missing, sep="\n  ", file=sys.stderr)
        return 1
    first = next(iter(caps))
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        probe = dict(zip(FILTERS, pool.map(lambda f: tshark(caps[first], f), FILTERS), strict=True))
        jobs = [(f, first) for f in FILTERS if isinstance(probe[f], str)]
        jobs += [(f, name) for f in FILTERS if not isinstance(probe[f], str) for name in caps]
        results = list(pool.map(lambda j: tshark(caps[j[1]], j[0]), jobs))
        tcp = dict(zip(caps, pool.map(lambda n: tshark(caps[n], "tcp"), caps), strict=True))
    out: dict[str, object] = {
        "tshark": version.splitlines()[0],
        "command": "tshark -n -2 -o tcp.calculate_timestamps:TRUE -r FILE -Y FILTER "
        "-T fields -e frame.number",
        "generated_by": "python tests/data/filters/generate.py",
        "tcp_frames": tcp,
        "filters": [],
    }
    by_filter: dict[str, dict[str, object]] = {}
    for (flt, name), res in zip(jobs, results, strict=True):
        entry = by_filter.setdefault(flt, {"filter": flt})
        if isinstance(res, str):
            entry["error"] = res
        else:
            entry.setdefault("frames", {})[name] = res  # type: ignore[union-attr]
    out["filters"] = list(by_filter.values())
    (HERE / "expected.json").write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
