"""Outputs that are not regular files are written where they are.

Every output (`-o`, `-w`, `--annotate`, Parquet) is written beside its name and renamed into
place, so a failed run leaves no partial file. Renaming over a device, a FIFO or a symbolic
link would replace the device or the link itself: as root, `-o /dev/null` once left a
regular file at /dev/null. These tests write into a FIFO, through a link and (as root) into
a character device made for the test, and check that each is still what it was, holding
what the command printed.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
from importlib import resources
from pathlib import Path

import pytest

from tests.gates import need

LAB = Path(str(resources.files("tcpwhy") / "data" / "lab"))
CAPTURE = LAB / "stale-keepalive.pcap"


def tcpwhy(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "tcpwhy", *args], capture_output=True, timeout=120)


def ok(done: subprocess.CompletedProcess[bytes]) -> bool:
    # analyze exits 1 when it reports a problem (as this recording has)
    return done.returncode in ((0, 1) if done.args[3] == "analyze" else (0,))


def stdout_of(*args: str) -> bytes:
    done = tcpwhy(*args)
    assert ok(done), done.stderr
    return done.stdout


COMMANDS = [
    ("conns", "--format", "jsonl", "--seed", "1"),
    ("packets", "--format", "csv"),
    ("analyze", "--format", "text"),
]


@pytest.mark.parametrize("command", COMMANDS, ids=[c[0] for c in COMMANDS])
def test_output_into_a_fifo(tmp_path: Path, command: tuple[str, ...]) -> None:
    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()
    done = tcpwhy(command[0], str(CAPTURE), *command[1:], "-o", str(fifo))
    reader.join(timeout=30)
    assert ok(done), done.stderr
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert got and got[0] == stdout_of(command[0], str(CAPTURE), *command[1:])
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tcpwhy-")]


def test_output_through_a_link(tmp_path: Path) -> None:
    target = tmp_path / "target.jsonl"
    target.write_bytes(b"old\n")
    link = tmp_path / "link.jsonl"
    link.symlink_to(target)
    done = tcpwhy("conns", str(CAPTURE), "--format", "jsonl", "--seed", "1", "-o", str(link))
    assert ok(done), done.stderr
    assert link.is_symlink()
    assert target.read_bytes() == stdout_of(
        "conns", str(CAPTURE), "--format", "jsonl", "--seed", "1"
    )


def test_regular_file_still_replaced_whole(tmp_path: Path) -> None:
    # the ordinary case keeps its rename: a failed run leaves the old file untouched
    out = tmp_path / "out.jsonl"
    out.write_bytes(b"old\n")
    bad = tmp_path / "bad.pcap"
    bad.write_bytes(b"not a capture at all")
    done = tcpwhy("conns", str(bad), "--format", "jsonl", "-o", str(out))
    assert done.returncode != 0
    assert out.read_bytes() == b"old\n"
    done = tcpwhy("conns", str(CAPTURE), "--format", "jsonl", "--seed", "1", "-o", str(out))
    assert ok(done), done.stderr
    assert out.read_bytes() == stdout_of("conns", str(CAPTURE), "--format", "jsonl", "--seed", "1")


@pytest.mark.root
@pytest.mark.parametrize(
    "args",
    [
        ("conns", "--format", "jsonl", "-o"),
        ("conns", "--format", "parquet", "-o"),
        ("packets", "-w"),
        ("analyze", "--annotate"),
    ],
    ids=["conns-o", "parquet-o", "packets-w", "annotate"],
)
def test_a_null_device_stays_a_device(tmp_path: Path, args: tuple[str, ...]) -> None:
    need(os.geteuid() == 0, "making a device node needs root")
    null = tmp_path / "null"
    os.mknod(null, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    done = tcpwhy(args[0], str(CAPTURE), *args[1:], str(null))
    assert ok(done), done.stderr
    st = os.lstat(null)
    assert stat.S_ISCHR(st.st_mode) and os.major(st.st_rdev) == 1 and os.minor(st.st_rdev) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["null"]
