"""Regenerate expected.json: the frames tshark 4.0 selects for each filter on each capture.

Run from the repository root (needs tshark and ../shared/corpus):

    python tests/data/filters/generate.py

tshark runs as ``tshark -n -2 -o tcp.calculate_timestamps:TRUE -r FILE -Y FILTER
-T fields -e frame.number``: two passes (``-2``) so the analysis flags a filter
sees are those of the finished first pass, as in Wireshark's GUI, and
``tcp.time_delta`` computed (off by default). For filters tshark rejects, the
error message (without the ``tshark: `` prefix) is stored instead. The frames
tshark decodes as TCP are stored per capture (``tcp``), since tcpwhy's table
holds only TCP packets. tshark runs with TZ=UTC (dates without a zone are local
time), and MAN_PAGE, stored alongside, maps every example of ``man 4
wireshark-filter`` to the filters that exercise it or to why it cannot apply.
"""

from __future__ import annotations

import json
import os
import re
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
    "tunnels-gre.pcap",  # two IPv4 layers: the layer operator (ip.addr#2)
    "tunnels-gre-over-udp.pcap",
    "ssh-basic.pcap",  # SACK blocks
]

LAB_CAPTURES = [
    "zero-window.pcap",
    "retransmission-timeout.pcap",
    "keepalive-dead-peer.pcap",
    "refused.pcap",
    "abortive-close.pcap",
    "pmtu-discovery.pcap",  # SACK blocks, and options quoted in ICMP errors
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
    "tcp.flags.ae == 0",
    "tcp.flags.ns == 0",
    "tcp.nxtseq > 1000",
    "tcp.nxtseq == tcp.seq",
    "tcp.nxtseq == tcp.seq + tcp.len + 1",
    # tcp options
    "tcp.options.mss and not tcp.options.wscale",
    "tcp.options.sack_perm",
    "tcp.options.timestamp",
    "tcp.options.timestamp.tsecr == 0",
    "tcp.options.timestamp.tsval > tcp.options.timestamp.tsecr",
    "tcp.options.sack",
    "tcp.options.sack.count >= 2",
    "tcp.options.sack_le",
    "tcp.options.sack_le > 1000",
    "tcp.options.sack_re - tcp.options.sack_le >= 1000",
    "all tcp.options.sack_re > tcp.ack",
    "tcp.window_size > 100000",
    "tcp.srcport == tcp.dstport",
    # payload bytes
    'tcp.payload contains "HTTP"',
    "tcp.payload contains 0d:0a:0d:0a",
    "tcp.payload contains 43",
    'tcp.payload matches "^(GET|POST) "',
    'tcp.payload matches "connection: keep-alive"',
    'tcp.payload ~ "(?-i)^SSH-2\\.0"',
    # PCRE2's pattern language, as tshark compiles it (not Python's)
    'tcp.payload matches r"\\Qhttp/1.1\\E"',
    'tcp.payload matches r"^\\x{47}ET "',
    'tcp.payload matches "^[[:upper:]]{3,4} /"',
    'tcp.payload matches r"^\\p{Lu}+ /"',
    'tcp.payload matches "(?i)^get(?-i) /[a-z]"',
    'tcp.payload matches "(*UTF)GET"',
    'tcp.payload matches "a{4294967296}"',
    'tcp.payload matches "(GET"',
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
    # bitwise and with comparisons, and its precedence (tshark 4.0: & binds tighter than ==,
    # looser than + - * / %, and an arithmetic expression alone is "some value is not zero")
    "tcp.flags & 0x12 == 0x12",
    "tcp.flags & 0x12 != 0x12",
    "!(tcp.flags & 0x04)",
    "not tcp.flags & 0x10",
    "tcp.flags & 0x02 && tcp.flags & 0x10",
    "tcp.flags & 0x04 or tcp.flags & 0x01 and tcp.len > 0",
    "tcp.flags & 0x17 == 0x10",
    "tcp.flags & 0x10 + 0x02 == 0x12",
    "tcp.flags bitwise_and 0x02",
    "tcp.flags & tcp.srcport",
    "tcp.srcport & 0xff00 == 0x1f00",
    "tcp.payload[0] & 0x20",
    "tcp.payload[0:2] & 40 == 40",
    "ip.src & 255.255.0.0 == 192.168.0.0",
    "eth.src & ff:00:00:00:00:00 == 50:00:00:00:00:00",
    "ipv6.src & ffff:: == 2001::",
    # arithmetic: 32-bit, an overflow or a division by zero drops the value, a result
    # below zero is signed
    "frame.number % 2 == 1",
    "tcp.len / 100 == 14",
    "tcp.len * 2 == tcp.len + tcp.len",
    "tcp.window_size_value * 4 > 65535",
    "tcp.srcport - tcp.dstport > 0",
    "tcp.srcport - tcp.dstport < 0",
    "-tcp.srcport < 0",
    "-tcp.len",
    "tcp.srcport + tcp.dstport",
    "tcp.srcport + -1 == 79",
    "tcp.ack_raw + tcp.seq_raw > 0",
    "tcp.seq_raw * 2 > 100",
    "tcp.stream / 0 == 1",
    "tcp.stream / 0 === 1",
    "frame.time_relative + 1 > 2",
    "frame.time_relative - 0.5 < 0",
    "frame.time_relative > -1",
    "{tcp.srcport} == 80",
    # chained comparisons: a < b < c is a < b and b < c
    "tcp.srcport < tcp.dstport < 60000",
    # any / all
    "any tcp.port === 80",
    "all tcp.port == 6379",
    "any tcp.port != 80",
    "all ip.addr != 127.0.0.1",
    "all ip.addr > 100.0.0.0",
    "any tcp.srcport < tcp.dstport",
    "all tcp.port in {80, 1024..65535}",
    "all tcp.port not in {80}",
    'all tcp.payload contains "HTTP"',
    'all http.request.method matches "^(GET|POST)$"',
    # comparison words
    "tcp.srcport eq 80",
    "tcp.port ne 80",
    "tcp.port any_eq 80",
    "tcp.port all_ne 80",
    "tcp.port !== 80",
    # functions
    'lower(http.request.method) == "post"',
    "len(tcp.payload) > 100",
    "len(http.request.uri) > 10",
    "len(ip.src) == 4",
    "count(tcp.port) == 2",
    "count(http.request.method) == 1",
    'string(tcp.srcport) == "80"',
    'string(ip.dst) matches "^10[.]"',
    'string(eth.src) contains "50:eb"',
    'string(ipv6.src) contains "2001:470"',
    "max(tcp.srcport, tcp.dstport) == 80",
    "min(tcp.srcport, tcp.dstport) < 1024",
    "max(tcp.srcport, tcp.dstport, 8080) == 8080",
    "abs(tcp.len) > 100",
    "abs(frame.time_relative - 1) < 0.5",
    'upper(http.host)[0:3] == "SPE"',
    # layers
    "ip.addr#1",
    "ip.addr#2",
    "ip#2",
    "ip.src#1 == 172.27.1.66",
    "ip.dst#2 == 172.28.2.3",
    "ip.ttl#2 == 64",
    "ip.src#[-1] == ip.src#2",
    "ip.src#[1-2] == 172.16.0.0/12",
    "ip.src#[2:] == 172.16.0.0/12",
    "ipv6.addr#1",
    "count(ip.addr) == 4",
    # literals
    "tcp.flags.ack == 2",
    "tcp.flags.push == Set",
    'tcp.flags.syn == "Not set"',
    "eth.dst == 00.01.e8.01.72.ba",
    "eth.src == 0090.6936.003e",
    "tcp.payload[0:4] == 47.45.54.20",
    "tcp.payload[0] == 'G'",
    "tcp.srcport == 'P'",
    "frame.len > 0x5dc",
    'tcp.payload contains "\\x0d\\x0a\\x0d\\x0a"',
    'tcp.payload contains "\\r\\n\\r\\n"',
    'tcp.payload contains "\\t"',
    'tcp.payload contains "\\u00e9"',
    'tcp.payload contains "\\\\"',
    'tcp.payload contains r"\\r\\n"',
    'http.request.method == "\\x50OST"',
    "frame.time > 2020-01-01",
    'frame.time > "2020-01-01"',
    'frame.time >= "2022-07-12T17:21:40.5"',
    'frame.time < "2022-07-12 17:21:41.5"',
    'frame.time >= "Jul 12, 2022 17:21:40.197514"',
    'frame.time < "Jan  6, 2021 16:42:35 UTC"',
    'frame.time >= "2021-01-06T16:42:35Z"',
    'frame.time >= "2021-01-06T17:42:35+01:00"',
    "frame.time_epoch > 1657646500.5",
    "frame.time_epoch < 1609951355",
    "ip.id > 0x8000",
    # slices
    "tcp.payload[0:4]",
    'tcp.payload[:2] == "GE"',
    'tcp.payload[4:] contains "HTTP"',
    "tcp.payload[-2--1] == 0d:0a",
    "tcp.payload[0:1,0:4] == 47",
    "tcp.payload[0:4,0:1] == 47",
    "tcp.payload[0:2] > 47",
    "tcp.payload[0:2] == tcp.payload[0:2]",
    ".tcp.port == 80",
    # sets
    "tcp.srcport in {tcp.dstport, 80}",
    "tcp.port in {-1, 80}",
    "ip.addr in {10.77.0.1 .. 10.77.0.9, 192.168.0.100..192.168.0.110}",
    # more of the grammar on everyday fields
    "eth",
    "eth.src == eth.dst",
    "eth.addr == 00:00:00:00:00:00",
    "eth.src[3:3] == eth.dst[3:3]",
    "ip.src == ip.dst",
    "tcp.window_size_value & 0x8000",
    "ip.ttl & 0x80",
    "frame.len - tcp.len > 60",
    "len(tcp.payload) == tcp.len",
    "tcp.payload[0:1] == tcp.payload[1:1]",
    'string(ip.src) == "192.168.0.107"',
    "count(tcp.analysis.flags) > 0",
    "min(tcp.srcport - tcp.dstport, 0) < 0",
    "tcp.analysis.ack_rtt > tcp.time_delta",
    "tcp.seq + tcp.len == tcp.ack",
    "tcp.hdr_len * 4 > 80",
    "tcp.len % 1448 == 0 and tcp.len > 0",
    "tcp.flags & 0x3f == 0x10",
    "tcp.flags.syn and not tcp.flags & 0x10",
    "frame.time_epoch - frame.time_relative > 0",
    "all ip.src == 10.0.0.0/8",
    'http.host > "a"',
    "http.response.code - 200 < 100",
    # Wireshark protocol names that look like values are protocols (never in these frames)
    "ff",
    "tcp.payload[0] == ff",
    # the empty filter selects everything
    "",
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
    # errors of the grammar this covers
    "tcp.dstport-1 == 79",
    "ip.dst eq www.mit.edu",
    "ip.addr eq sneezy/24",
    "ip.src/24 == ip.dst/24",
    "frame.len > '\\n'",
    "tcp.flags.syn == true",
    "tcp.flags & 0x12 == 0x12 == 0x12",
    "2 & tcp.flags",
    "tcp.flags.syn & 1",
    "ip.src + 1",
    'tcp.flags & "a"',
    "frame.time_relative * 2 > 2",
    "tcp.payload + 1",
    "tcp.len + 1 contains 3",
    "tcp.len + 1 in {3}",
    "len(tcp.payload) in {3}",
    "tcp.payload[0] in {47}",
    "len(tcp.payload)",
    "${tcp.port}",
    "${foo}",
    "(tcp.port) == 80",
    "tcp.dstport >= 4 * (tcp.srcport + 3)",
    "any tcp.port",
    "all tcp.port > 1 > 0",
    "tcp.port#",
    "tcp.port#x",
    "tcp.port#[1",
    "foo#1 == 1",
    "foo(tcp.port) == 1",
    "len() == 1",
    "len(tcp.port, tcp.port) == 1",
    "len(tcp.payload[0:2]) == 2",
    'upper(tcp.payload) == "a"',
    'string(tcp.flags.syn) == "1"',
    "max(80, tcp.port) == 80",
    "abs(ip.src) == 1.2.3.4",
    "tcp.payload[0:0] == 00",
    "tcp.payload[1-1] == 00",
    "tcp.payload[-5-1] == 00",
    "tcp.payload[2147483648] == 00",
    "tcp.payload[1 2] == 00",
    "frame.time_relative > 1e1",
    'frame.time_relative > "1"',
    "frame.time > 1500000000",
    'frame.time > "Sep 26, 2004"',
    "tcp.port == :50",
    "tcp.payload contains 0x0102",
    'tcp.payload contains "abc',
    'tcp.payload contains "\\400"',
    'tcp.payload contains "\\u"',
    "frame.len > ''",
    "frame.len > 'ab'",
    "frame.len > '\\q'",
    "frame.len > 'a",
    ".foo == 1",
    "tcp.payload[0:3] & ff",
    "ip.src contains 01",
    "tcp.analysis.retransmission == 1",
    'tcp.srcport matches "a"',
    "tcp.port in {tcp.payload}",
    "tcp.payload[0] in {47..48}",
    "tcp.port == 80 =",
    "é",
    "max(tcp.len, tcp.hdr_len) > 1000",
    "tcp.payload contains http.host",
    "any tcp.payload[0:2] in {47:45, 48:54}",
]

# Every example of `man 4 wireshark-filter` (tshark 4.0), in the page's order: the
# reference filters that exercise it on tcpwhy's fields, or why it cannot apply.
MAN_PAGE: list[dict[str, object]] = [
    {"example": "ip", "filters": ["ip"]},
    {"example": "tr.rif", "na": "Token Ring: no such field in a TCP capture's table"},
    {"example": "all tcp.port > 1024", "filters": ["all tcp.port > 1024"]},
    {"example": "any ip.addr != 1.1.1.1", "filters": ["any ip.addr != 192.168.0.107"]},
    {
        "example": 'http contains "https://www.wireshark.org"',
        "filters": ['http contains "https://www.wireshark.org"', 'http contains "Keep-Alive"'],
    },
    {
        "example": 'wsp.header.user_agent matches "cldc"',
        "filters": ['http.user_agent matches "msie"'],
    },
    {
        "example": 'wsp.header.user_agent matches "(?-i)cldc"',
        "filters": ['http.user_agent matches "(?-i)msie"', 'http.user_agent matches "(?-i)MSIE"'],
    },
    {
        "example": 'upper(ncp.nds_stream_name) contains "MACRO"',
        "filters": [
            'upper(http.host) contains "HETZNER"',
            'upper(http.request.method) contains "ONNEC"',
        ],
    },
    {
        "example": 'lower(mount.dump.hostname) == "angel"',
        "filters": ['lower(http.host) == "speed.hetzner.de"'],
    },
    {
        "example": 'string(frame.number) matches "[13579]$"',
        "filters": ['string(frame.number) matches "[13579]$"'],
    },
    {"example": "frame.len > 10", "filters": ["frame.len > 10"]},
    {"example": "frame.len > 012", "filters": ["frame.len > 012"]},
    {"example": "frame.len > 0xa", "filters": ["frame.len > 0xa"]},
    {"example": "frame.len > 0b1010", "filters": ["frame.len > 0b1010"]},
    {
        "example": "frame.len > '\\n'",
        "filters": ["frame.len > '\\n'"],
        "note": "rejected by tshark 4.0 itself (its scanner does not step over the n of \\n: "
        '"too long to be a valid character constant"); tcpwhy gives the same error',
    },
    {"example": "frame.len > '\\x0a'", "filters": ["frame.len > '\\x0a'"]},
    {"example": "frame.len > '\\012'", "filters": ["frame.len > '\\012'"]},
    {"example": "tr.sr == 1", "filters": ["tcp.flags.syn == 1"]},
    {"example": "tr.sr == True", "filters": ["tcp.flags.syn == True"]},
    {"example": "tr.sr == TRUE", "filters": ["tcp.flags.syn == TRUE"]},
    {"example": "tr.sr == 0", "filters": ["tcp.flags.syn == 0"]},
    {"example": "tr.sr == False", "filters": ["tcp.flags.syn == False"]},
    {"example": "tr.sr == FALSE", "filters": ["tcp.flags.syn == FALSE"]},
    {"example": "eth.dst eq ff:ff:ff:ff:ff:ff", "filters": ["eth.dst eq ff:ff:ff:ff:ff:ff"]},
    {"example": "aim.data == 0.1.0.d", "filters": ["tcp.payload[0:4] == 0.1.0.d"]},
    {"example": "fddi.src == aa-aa-aa-aa-aa-aa", "filters": ["eth.src == 00-90-69-36-00-3e"]},
    {"example": "echo.data == 7a", "filters": ["tcp.payload == 7a", "tcp.payload[0] == 7a"]},
    {"example": "ip.src == 192.168.1.1", "filters": ["ip.src == 192.168.0.107"]},
    {
        "example": "ip.dst eq www.mit.edu",
        "filters": ["ip.dst eq www.mit.edu"],
        "note": "host names are not resolved (tshark -n does not either): an error in both",
    },
    {"example": "ip.addr == 129.111.0.0/16", "filters": ["ip.addr == 88.198.0.0/16"]},
    {
        "example": "ip.addr eq sneezy/24",
        "filters": ["ip.addr eq sneezy/24"],
        "note": "host names are not resolved (tshark -n does not either): an error in both",
    },
    {
        "example": "ip.src/24 == ip.dst/24",
        "filters": ["ip.src/24 == ip.dst/24"],
        "note": "invalid, as the page says: / is a division, and an address cannot be divided",
    },
    {
        "example": "(dhcp.id == 0xfe089c15) || (ip.id == 0x0373)",
        "filters": ["(tcp.seq_raw == 0xfe089c15) || (ip.id == 0xf867)"],
    },
    {"example": 'http.request.method == "POST"', "filters": ['http.request.method == "POST"']},
    {
        "example": 'browser.comment == "An embedded \\" double-quote"',
        "filters": ['tcp.payload contains "name=\\""'],
    },
    {
        "example": 'http.request.method == "\\x48EAD"',
        "filters": ['http.request.method == "\\x48EAD"', 'http.request.method == "\\x47ET"'],
    },
    {
        "example": 'http.request.method == "\\110EAD"',
        "filters": ['http.request.method == "\\110EAD"', 'http.request.method == "\\107ET"'],
    },
    {
        "example": 'smb.path contains "\\\\\\\\SERVER\\\\SHARE"',
        "filters": ['tcp.payload contains "\\\\"'],
    },
    {
        "example": 'smb.path contains r"\\\\SERVER\\SHARE"',
        "filters": ['tcp.payload matches r"HTTP/1\\.[01]"', 'tcp.payload contains r"\\r\\n"'],
    },
    {"example": '"2020-07-04T12:34:56"', "filters": ['frame.time >= "2022-07-12T17:21:40.5"']},
    {
        "example": '"Sep 26, 2004 23:18:04.954975"',
        "filters": ['frame.time >= "Jul 12, 2022 17:21:40.197514"'],
    },
    {"example": "eth.src[0:3] == 00:00:83", "filters": ["eth.src[0:3] == 50:eb:71"]},
    {
        "example": 'http.content_type[0:4] == "text"',
        "filters": ['http.content_type[0:4] == "text"', 'http.content_type[0:4] == "mult"'],
    },
    {
        "example": "token[0:5] ne 0.0.0.1.1",
        "na": "Token Ring: no such protocol in a TCP capture's table",
    },
    {
        "example": "llc[0] eq aa",
        "na": "802.2 LLC: not decoded by tcpwhy (Ethernet II frames have none)",
    },
    {
        "example": 'frame[100-199] contains "wireshark"',
        "na": "tcpwhy keeps the payload, not the frame's header bytes",
        "filters": ['tcp.payload[100-199] contains "HTTP"'],
    },
    {
        "example": "frame[-4:4] == 0.1.2.3",
        "na": "tcpwhy keeps the payload, not the frame's header bytes",
        "filters": ["tcp.payload[-4:4] == 0d:0a:0d:0a"],
    },
    {
        "example": "frame[-4:] == 0.1.2.3",
        "na": "tcpwhy keeps the payload, not the frame's header bytes",
        "filters": ["tcp.payload[-4:] == 0d:0a:0d:0a"],
    },
    {
        "example": "ftp[1,3-5,9:] == 01:03:04:05:09:0a:0b",
        "na": "FTP: not a tcpwhy protocol",
        "filters": [
            'tcp.payload[1,3-5,9:] contains "HTTP"',
            "tcp.payload[0,1-2,3:] == tcp.payload",
        ],
    },
    {"example": "ip.addr#2 == 192.168.30.40", "filters": ["ip.addr#2 == 66.59.111.190"]},
    {"example": "tcp.port#[2-4]", "filters": ["tcp.port#[2-4]"]},
    {"example": "tcp.port in {80,443,8080}", "filters": ["tcp.port in {80,443,8080}"]},
    {
        "example": "tcp.port == 80 or tcp.port == 443 or tcp.port == 8080",
        "filters": ["tcp.port == 80 or tcp.port == 443 or tcp.port == 8080"],
    },
    {
        "example": 'http.request.method in {"HEAD", "GET"}',
        "filters": ['http.request.method in {"HEAD", "GET"}'],
    },
    {"example": "tcp.port in {443, 4430..4434}", "filters": ["tcp.port in {443, 4430..4434}"]},
    {
        "example": "ip.addr in {10.0.0.5 .. 10.0.0.9, 192.168.1.1..192.168.1.9}",
        "filters": [
            "ip.addr in {10.0.0.5 .. 10.0.0.9, 192.168.1.1..192.168.1.9}",
            "ip.addr in {10.77.0.1 .. 10.77.0.9, 192.168.0.100..192.168.0.110}",
        ],
    },
    {
        "example": "frame.time_delta in {10 .. 10.5}",
        "na": "frame.time_delta counts from the previous frame of any protocol; tcpwhy's table "
        "holds only the TCP frames",
        "filters": ["frame.time_relative in {10 .. 10.5}", "tcp.time_delta in {0.1 .. 0.5}"],
    },
    {"example": 'tcp.payload contains "GET"', "filters": ['tcp.payload contains "GET"']},
    {"example": "tcp.payload contains 47.45.54", "filters": ["tcp.payload contains 47.45.54"]},
    {
        "example": "frame[60:2] gt 50.51",
        "na": "tcpwhy keeps the payload, not the frame's header bytes",
        "filters": ["tcp.payload[0:2] gt 50.51"],
    },
    {
        "example": 'frame[60:2] gt "PQ"',
        "na": "tcpwhy keeps the payload, not the frame's header bytes",
        "filters": ['tcp.payload[0:2] gt "PQ"'],
    },
    {
        "example": "frame[4] == 0xff",
        "na": "tcpwhy keeps the payload, not the frame's header bytes",
        "filters": ["tcp.payload[4] == 0xff"],
    },
    {
        "example": "frame[1:4] contains 0x02",
        "na": "tcpwhy keeps the payload, not the frame's header bytes",
        "filters": ["tcp.payload[1:4] contains 0x02"],
    },
    {"example": "tcp.flags & 0x02", "filters": ["tcp.flags & 0x02"]},
    {"example": "eth.addr[0] & 0x0f == 2", "filters": ["eth.addr[0] & 0x0f == 2"]},
    {
        "example": "ip[42:2] & 40:ff",
        "na": "tcpwhy keeps the payload, not the IP header's bytes",
        "filters": ["tcp.payload[0:2] & 40:ff"],
    },
    {
        "example": "udp.dstport >= udp.srcport + 1",
        "filters": ["tcp.dstport >= tcp.srcport + 1"],
    },
    {
        "example": "tcp.dstport >= 4 * {tcp.srcport + 3}",
        "filters": ["tcp.dstport >= 4 * {tcp.srcport + 3}"],
    },
    {
        "example": '"A-B" must be written as "A -B" or "A - B"',
        "filters": ["tcp.dstport-1 == 79", "tcp.dstport -1 == 79", "tcp.dstport - 1 == 79"],
        "note": "tcp.dstport-1 is one word, not a field: an error in both",
    },
    {
        "example": "frame.time_relative >= ${frame.time_relative} - 300",
        "filters": [
            "frame.time_relative >= ${frame.time_relative} - 300",
            "tcp.port == ${tcp.port}",
            "not tcp.port == ${tcp.port}",
        ],
        "note": "a reference is the field's value in the packet selected in Wireshark's window; "
        "tshark and tcpwhy have none, so a relation with one is false",
    },
    {
        "example": "A and B or not C or D and not E or F",
        "filters": [
            "tcp.flags.syn == 1 and tcp.flags.ack == 0 or not tcp.len > 0 or tcp.flags.fin == 1 "
            "and not tcp.flags.push == 1 or tcp.port == 80"
        ],
    },
    {
        "example": "tcp.port == 80 and ip.src == 192.168.2.1",
        "filters": ["tcp.port == 80 and ip.src == 192.168.0.107"],
    },
    {"example": "not llc", "na": "802.2 LLC: not decoded by tcpwhy (Ethernet II frames have none)"},
    {
        "example": 'http and frame[100-199] contains "wireshark"',
        "na": "tcpwhy keeps the payload, not the frame's header bytes",
        "filters": ['http and tcp.payload[100-199] contains "HTTP"'],
    },
    {
        "example": "(ipx.src.net == 0xbad && ipx.src.node == 0.0.0.0.0.1) || ip",
        "na": "IPX: not a TCP/IP protocol",
        "filters": ["(tcp.srcport == 0xbad && eth.src == 0.0.0.0.0.1) || ip"],
    },
    {
        "example": "ip.dst ne 224.1.2.3",
        "filters": ["ip.dst ne 224.1.2.3", "ip.dst ne 88.198.248.254"],
    },
    {
        "example": "ip.dst and ip.dst ne 224.1.2.3",
        "filters": ["ip.dst and ip.dst ne 224.1.2.3", "ip.dst and ip.dst ne 88.198.248.254"],
    },
    {
        "example": "not ip.dst or ip.dst ne 224.1.2.3",
        "filters": ["not ip.dst or ip.dst ne 224.1.2.3", "not ip.dst or ip.dst ne 88.198.248.254"],
    },
    {
        "example": "not ip.dst eq 224.1.2.3",
        "filters": ["not ip.dst eq 224.1.2.3", "not ip.dst eq 88.198.248.254"],
    },
]
for _entry in MAN_PAGE:
    for _flt in _entry.get("filters", []):  # type: ignore[attr-defined]
        if _flt not in FILTERS:
            FILTERS.append(_flt)


def tshark(path: Path, flt: str) -> list[int] | str:
    cmd = ["tshark", "-n", "-2", "-o", "tcp.calculate_timestamps:TRUE", "-r", str(path)]
    cmd += ["-Y", flt, "-T", "fields", "-e", "frame.number"]
    # dates without a zone are local time: the reference is made, and checked, in UTC
    env = {**os.environ, "TZ": "UTC"}
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
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


WIRESHARK_FIELDS = REPO / "src" / "tcpwhy" / "data" / "wireshark-fields.txt"
FIELD_PROTOCOLS = (
    "frame",
    "eth",
    "vlan",
    "ip",
    "ipv6",
    "tcp",
    "icmp",
    "icmpv6",
    "tls",
    "http",
    "http2",
)
"""The protocols whose Wireshark fields tcpwhy names in its errors (`wireshark_fields`)."""


def wireshark_fields(version: str) -> str:
    """The field and protocol names of `FIELD_PROTOCOLS` that tshark knows, one a line, after
    a line naming the tshark they come from: tcpwhy tells a filter naming one it does not
    have that it is Wireshark's (not a typing error, as tshark's message would suggest)."""
    out = subprocess.run(["tshark", "-G", "fields"], capture_output=True, text=True).stdout
    names = set()
    for line in out.splitlines():
        cols = line.split("\t")
        if len(cols) > 2 and cols[0] in ("F", "P") and cols[2].split(".")[0] in FIELD_PROTOCOLS:
            names.add(cols[2])
    head = f"# tshark -G fields of {version.rstrip('.')}, protocols {' '.join(FIELD_PROTOCOLS)}"
    return head + "\n" + "".join(f"{n}\n" for n in sorted(names))


def main() -> int:
    version = subprocess.run(["tshark", "--version"], capture_output=True, text=True).stdout
    WIRESHARK_FIELDS.write_text(wireshark_fields(version.splitlines()[0]))
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
        "tz": "UTC",
        "man_page": MAN_PAGE,
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
    text = json.dumps(out, indent=1)
    # frame numbers on one line per list: a tenth of the size, and diffs still readable
    text = re.sub(
        r"\[\n\s*(\d+(?:,\n\s*\d+)*)\n\s*\]",
        lambda m: "[" + re.sub(r"\s+", " ", m.group(1)) + "]",
        text,
    )
    (HERE / "expected.json").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
