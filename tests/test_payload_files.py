"""The capture files that payload offsets point into (`tcpwhy.decode.table.payload_file`):
a process that reads many captures keeps few of them open, and reads each one's bytes
right whenever it asks."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from importlib import resources
from pathlib import Path

import numpy as np

from tcpwhy.decode import table as tbl

LAB = Path(str(resources.files("tcpwhy") / "data" / "lab"))


def _rows_of(k: int, offs: list[int], caps: list[int]) -> tbl.PacketTable:
    """A table whose rows' payloads are left in file number k at `offs`."""
    off = np.array([tbl.FILE_ROW | (k << tbl._FILE_SHIFT) | o for o in offs], np.uint64)
    return tbl.PacketTable(
        {
            "frame": np.arange(1, len(offs) + 1, dtype=np.uint32),
            "payload_off": off,
            "payload_cap": np.array(caps, np.uint32),
        }
    )


def test_files_read_again_after_their_descriptor_was_closed(tmp_path: Path) -> None:
    src = LAB / "stale-keepalive.pcap"
    first = tmp_path / "first.pcap"
    shutil.copy(src, first)
    raw = first.read_bytes()
    offs, caps = [24, 100, len(raw) - 40], [16, 300, 40]
    k = tbl.payload_file(str(first))
    assert k is not None
    t = _rows_of(k, offs, caps)
    want = [raw[o : o + c] for o, c in zip(offs, caps, strict=True)]
    assert [t.payload(i) for i in range(3)] == want
    # more files than are kept open: the first one's descriptor is closed
    for i in range(tbl.MAX_OPEN_FILES + 5):
        other = tmp_path / f"other{i}.pcap"
        shutil.copy(src, other)
        assert tbl.payload_file(str(other)) is not None
    assert k not in tbl._FILES.open
    assert len(tbl._FILES.open) <= tbl.MAX_OPEN_FILES
    # ... and opened again when a row of it is read, by row and gathered
    assert [t.payload(i) for i in range(3)] == want
    got, at, n = t.gather(np.arange(3))
    assert [got[a : a + m].tobytes() for a, m in zip(at, n, strict=True)] == want
    assert tbl.payload_file(str(first)) == k  # the same file keeps its number
    # a file replaced since (another inode at the path) is not read as if it were the same
    for i in range(tbl.MAX_OPEN_FILES + 1):
        tbl.payload_file(str(tmp_path / f"other{i}.pcap"))
    swap = tmp_path / "swap.pcap"
    swap.write_bytes(b"\xee" * len(raw))
    os.replace(swap, first)
    assert [t.payload(i) for i in range(3)] == [b"", b"", b""]
    got, _, _ = t.gather(np.arange(3))
    assert not got.any()  # as a file cut short since it was read


def test_a_loop_over_many_captures_leaves_descriptors_to_spare(tmp_path: Path) -> None:
    """A script diagnosing a fleet's captures one after the other, in a process allowed 128
    descriptors: the findings of every copy are those of the first, and the process can still
    open files of its own after 150 captures (holding one descriptor per capture read, it
    could not open one)."""
    src = LAB / "stale-keepalive.pcap"
    for i in range(150):
        shutil.copy(src, tmp_path / f"node{i:03d}.pcap")
    script = textwrap.dedent(
        """
        import json, os, resource, sys
        resource.setrlimit(resource.RLIMIT_NOFILE, (128, 128))
        import tcpwhy
        paths = sorted(p for p in os.listdir(sys.argv[1]) if p.endswith(".pcap"))
        seen = set()
        for p in paths:
            path = os.path.join(sys.argv[1], p)
            report = tcpwhy.open(path).report.to_dict()
            seen.add(json.dumps(report, sort_keys=True).replace(path, "CAPTURE"))
        held = len(os.listdir("/proc/self/fd"))
        mine = [open(os.devnull) for _ in range(40)]
        print(len(seen), held, len(mine))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, check=True
    ).stdout.split()
    distinct, held, opened = map(int, out)
    assert distinct == 1  # every copy diagnosed alike, its payloads read right
    assert held <= tbl.MAX_OPEN_FILES + 20
    assert opened == 40
