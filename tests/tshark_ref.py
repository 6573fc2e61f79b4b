"""Reading tshark's per-packet views (the corpus's and the ones committed under tests/data)."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

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
