"""Reading tshark's per-packet views (the corpus's and the ones committed under tests/data)."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

from tcpwhy.tcp import ANALYSIS_FLAGS

DATA = Path(__file__).parent / "data" / "tshark"
PACKAGE_DATA = Path(__file__).resolve().parents[1] / "src" / "tcpwhy" / "data"


def rows(tsv: Path) -> list[dict[str, str]]:
    with tsv.open(newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def corpus_pairs(zeek: Path) -> Iterator[tuple[Path, Path]]:
    """(capture, tshark TSV) for every trace of the Zeek corpus."""
    for trace in sorted(p for p in zeek.iterdir() if p.suffix in (".pcap", ".pcapng")):
        yield trace, zeek / "tshark" / f"{trace.name}.tshark.tsv"


def package_pairs() -> Iterator[tuple[Path, Path]]:
    """(capture, tshark TSV) for the captures shipped in the package (lab recordings, demo)."""
    for tsv in sorted(DATA.glob("*.tshark.tsv")):
        name = tsv.name.removesuffix(".tshark.tsv")
        cap = PACKAGE_DATA / name
        if not cap.exists():
            cap = PACKAGE_DATA / "lab" / name
        yield cap, tsv


VIEW_FIELDS = [
    "frame.number",
    "frame.time_relative",
    "frame.len",
    "ip.src",
    "ip.dst",
    "ipv6.src",
    "ipv6.dst",
    "tcp.stream",
    "tcp.srcport",
    "tcp.dstport",
    "tcp.flags",
    "tcp.seq",
    "tcp.seq_raw",
    "tcp.ack",
    "tcp.ack_raw",
    "tcp.len",
    "tcp.window_size_value",
    "tcp.window_size",
    "tcp.window_size_scalefactor",
    "tcp.options.mss_val",
    "tcp.options.wscale.shift",
    "tcp.options.timestamp.tsval",
    "tcp.options.timestamp.tsecr",
    "tcp.analysis.duplicate_ack_num",
    "tcp.analysis.ack_rtt",
    "tcp.analysis.initial_rtt",
]
"""The columns of the committed and corpus views (tests/data/tshark/generate.sh)."""

VIEW_FLAGS = ANALYSIS_FLAGS
"""The flags of the view's `tcp.analysis` column: Wireshark's, in tcpwhy's order."""


def tshark_view(cap: Path, out: Path) -> Path:
    """The installed tshark's view of `cap` in the corpus views' columns (`VIEW_FIELDS`, then
    `tcp.analysis`: the names of the flags set), as generate.sh makes it."""
    import subprocess

    cmd = ["tshark", "-n", "-r", str(cap), "-Y", "tcp", "-T", "fields", "-E", "separator=/t"]
    cmd += ["-E", "occurrence=f"]
    for f in (*VIEW_FIELDS, *(f"tcp.analysis.{x}" for x in VIEW_FLAGS)):
        cmd += ["-e", f]
    # tshark exits 2 on some of tcpdump's malformed captures after printing what it read
    text = subprocess.run(cmd, capture_output=True, text=True, check=False).stdout
    lines = ["\t".join((*VIEW_FIELDS, "tcp.analysis"))]
    n = len(VIEW_FIELDS)
    for line in text.splitlines():
        cells = line.split("\t")
        cells += [""] * (n + len(VIEW_FLAGS) - len(cells))
        flags = [x for x, v in zip(VIEW_FLAGS, cells[n:], strict=True) if v != ""]
        lines.append("\t".join((*cells[:n], ",".join(flags))))
    out.write_text("\n".join(lines) + "\n")
    return out
