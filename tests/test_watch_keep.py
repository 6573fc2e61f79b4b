"""`tcpwhy watch --keep DIR`: the kept files, read by tshark, hold exactly the frames of the
connections with findings (tshark's own `tcp.stream in {…}` on the source says which), the
seconds before them with --keep-before, and stay under --keep-max.

Frames are compared by capture time to the nanosecond, lengths and the MD5 of their bytes
as tshark computes them, so a record copied wrong, cut or re-timed shows."""

from __future__ import annotations

import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests import craft
from tests.gates import need

REPO = Path(__file__).resolve().parents[1]
LAB = REPO / "src" / "tcpwhy" / "data" / "lab"
TCPWHY = [sys.executable, "-m", "tcpwhy"]
FIELDS = ["frame.number", "frame.time_epoch", "frame.len", "frame.cap_len", "frame.md5_hash"]


def tshark_rows(path: Path, flt: str | None = None) -> list[list[str]]:
    """Per frame: number, time, lengths and MD5 of the bytes."""
    exe = shutil.which("tshark")
    need(exe is not None, "tshark not installed")
    assert exe is not None
    cmd = [exe, "-n", "-o", "frame.generate_md5_hash:TRUE", "-r", str(path), "-T", "fields"]
    for f in FIELDS:
        cmd += ["-e", f]
    if flt:
        cmd += ["-2", "-Y", flt]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return [line.split("\t") for line in done.stdout.splitlines()]


def kept_rows(d: Path) -> list[list[str]]:
    """The frames of the kept files, in file order, without the files' own frame numbers."""
    files = sorted(d.glob("tcpwhy-keep-*"))
    assert files, f"nothing kept in {d}"
    return [r[1:] for f in files for r in tshark_rows(f)]


def watch(path: Path, keep: Path, *extra: str, pipe: bool = False) -> Any:
    args = [*TCPWHY, "watch", "--format", "jsonl", "--keep", str(keep), *extra]
    if not pipe:
        return subprocess.run([*args, "-r", str(path)], capture_output=True, text=True, timeout=120)
    # a growing stream: the capture arrives in pieces through a pipe
    rfd, wfd = os.pipe()
    p = subprocess.Popen(
        [*args, "-r", "-"], stdin=rfd, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    os.close(rfd)

    def feed() -> None:
        data = path.read_bytes()
        step = max(len(data) // 4, 1)
        with os.fdopen(wfd, "wb", buffering=0) as w:
            for i in range(0, len(data), step):
                w.write(data[i : i + step])
                time.sleep(0.05)

    th = threading.Thread(target=feed)
    th.start()
    out, err = p.communicate(timeout=120)
    th.join()
    return subprocess.CompletedProcess(p.args, p.returncode, out.decode(), err.decode())


def finding_streams(path: Path, kinds: set[str]) -> list[int]:
    """tshark's stream numbers of the connections behind these kinds of finding, as
    `analyze` reports them (the watch numbers connections its own way)."""
    r = subprocess.run(
        [*TCPWHY, "analyze", "--format", "json", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    found = json.loads(r.stdout)["findings"]
    return sorted({s for f in found if f["kind"] in kinds for s in f["streams"]})


def stream_filter(streams: list[int]) -> str:
    return "tcp.stream in {" + ",".join(map(str, streams)) + "}"


@pytest.mark.parametrize("pipe", [False, True], ids=["file", "stream"])
@pytest.mark.parametrize(
    "name",
    [
        "stale-keepalive",
        "abortive-close",
        "time-wait-reuse",  # 4-tuples reused: tshark's streams are not the watch's numbers
        "icmp-reject",  # the ICMP errors quoting the connections belong to them
        "syn-flood",
        "middlebox-reset",
    ],
)
def test_kept_frames_are_the_finding_streams(tmp_path: Path, name: str, pipe: bool) -> None:
    src = LAB / f"{name}.pcap"
    r = watch(src, tmp_path / "keep", "--keep-before", "0", pipe=pipe)
    assert r.returncode in (0, 1), r.stderr
    kinds = {json.loads(x)["kind"] for x in r.stdout.splitlines()}
    assert kinds, r.stderr
    streams = finding_streams(src, kinds)
    assert streams
    want = [row[1:] for row in tshark_rows(src, stream_filter(streams))]
    assert want
    assert sorted(kept_rows(tmp_path / "keep")) == sorted(want)
    assert f"kept {len(want)} packets" in r.stderr


def test_keep_before_adds_the_seconds_before_each_connection(tmp_path: Path) -> None:
    src = LAB / "time-wait-reuse.pcap"
    before_s = 0.35
    r = watch(src, tmp_path / "keep", "--keep-before", str(before_s))
    assert r.returncode in (0, 1), r.stderr
    kinds = {json.loads(x)["kind"] for x in r.stdout.splitlines()}
    streams = finding_streams(src, kinds)
    exe = shutil.which("tshark")
    assert exe is not None
    cmd = [exe, "-n", "-r", str(src), "-T", "fields"]
    for f in ("frame.number", "tcp.stream", "frame.time_epoch"):
        cmd += ["-e", f]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    rows = [line.split("\t") for line in done.stdout.splitlines()]

    def ns(text: str) -> int:
        sec, _, frac = text.partition(".")
        return int(sec) * 10**9 + int(frac.ljust(9, "0")[:9])

    first = {}
    for _fr, st, ts in rows:
        if st and int(st) in streams:
            first.setdefault(int(st), ns(ts))
    before = int(before_s * 1e9)
    want_frames = {
        int(fr)
        for fr, st, ts in rows
        if (st and int(st) in streams) or any(f0 - before <= ns(ts) < f0 for f0 in first.values())
    }
    in_streams = {int(fr) for fr, st, _ in rows if st and int(st) in streams}
    # the case tells: some frames are kept only for being before, some are not kept at all
    assert in_streams < want_frames < {int(fr) for fr, _, _ in rows}
    flt = "frame.number in {" + ",".join(map(str, sorted(want_frames))) + "}"
    want = [row[1:] for row in tshark_rows(src, flt)]
    assert sorted(kept_rows(tmp_path / "keep")) == sorted(want)


def test_keep_max_bounds_the_files_and_keeps_the_newest(tmp_path: Path) -> None:
    src = LAB / "syn-flood.pcap"
    whole = watch(src, tmp_path / "all", "--keep-before", "0")
    assert whole.returncode in (0, 1), whole.stderr
    all_rows = kept_rows(tmp_path / "all")
    max_mb = 0.02
    r = watch(src, tmp_path / "small", "--keep-before", "0", "--keep-max", str(max_mb))
    assert r.returncode in (0, 1), r.stderr
    files = sorted((tmp_path / "small").glob("tcpwhy-keep-*"))
    total = sum(f.stat().st_size for f in files)
    assert total <= max_mb * (1 << 20)
    assert total < sum(f.stat().st_size for f in (tmp_path / "all").glob("tcpwhy-keep-*"))
    # files were rotated and the oldest removed: the numbers run on past those left
    last_seq = int(files[-1].stem.rsplit("-", 1)[1])
    assert last_seq > len(files) > 1
    assert "older files removed" in r.stderr
    # what is left is the newest of what was kept, each file whole for tshark
    small = kept_rows(tmp_path / "small")
    assert small and small == all_rows[-len(small) :]


def test_unwritable_keep_dir_is_one_line_and_status_2(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory\n")
    r = subprocess.run(
        [*TCPWHY, "watch", "-r", str(LAB / "refused.pcap"), "--keep", str(blocker / "sub")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2
    assert r.stdout == ""
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith(f"tcpwhy: {blocker / 'sub'}: cannot write")
    # the file itself as the directory: said so (makedirs said "File exists")
    r = subprocess.run(
        [*TCPWHY, "watch", "-r", str(LAB / "refused.pcap"), "--keep", str(blocker)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (r.returncode, r.stdout, r.stderr) == (2, "", f"tcpwhy: {blocker}: is not a directory\n")


def test_live_keep_on_loopback(tmp_path: Path, netns_ok: None) -> None:
    """`watch -i lo --keep`: the kept file holds each refused connect's SYN and RST, from
    the stream tcpdump hands over (read once, by the decoder and the records ring)."""
    need(shutil.which("tcpdump") is not None, "tcpdump not installed")
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nobody listens there: each connect is refused
    keep = tmp_path / "keep"
    cmd = [*TCPWHY, "watch", "-i", "lo", "-f", f"tcp port {port}", "--keep", str(keep)]
    p = subprocess.Popen(
        [*cmd, "--keep-before", "0", "--duration", "6"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert p.stderr is not None
    assert "watching lo" in p.stderr.readline()
    clients = set()
    for _ in range(3):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        clients.add(s.getsockname()[1])
        with pytest.raises(ConnectionRefusedError):
            s.connect(("127.0.0.1", port))
        s.close()
        time.sleep(0.2)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 1, err
    assert "connection-refused" in out
    exe = shutil.which("tshark")
    need(exe is not None, "tshark not installed")
    assert exe is not None
    files = sorted(keep.glob("tcpwhy-keep-*.pcap"))
    assert len(files) == 1
    fields = ["-e", "tcp.srcport", "-e", "tcp.dstport", "-e", "tcp.flags.syn", "-e"]
    done = subprocess.run(
        [exe, "-n", "-r", str(files[0]), "-T", "fields", *fields, "tcp.flags.reset"],
        capture_output=True,
        text=True,
        check=True,
    )
    rows = sorted(tuple(line.split("\t")) for line in done.stdout.splitlines())
    want = sorted(
        [(str(c), str(port), "1", "0") for c in clients]
        + [(str(port), str(c), "0", "1") for c in clients]
    )
    assert rows == want


def _split_by_quiet(src: Path, out: Path, fill: int = 2000) -> None:
    """The stale keep-alive recording with a quiet second for its pooled connection between
    its first exchange (frames 1-7) and the server's FIN: `fill` segments of another
    connection pass meanwhile (so the capture is read in several chunks), and the rest of
    the recording comes 2 s later."""
    raw = src.read_bytes()
    head, pos, recs = raw[:24], 24, []
    while pos + 16 <= len(raw):
        caplen = struct.unpack_from("<I", raw, pos + 8)[0]
        recs.append(bytearray(raw[pos : pos + 16 + caplen]))
        pos += 16 + caplen
    ns_magic = struct.unpack_from("<I", head)[0] == 0xA1B23C4D
    scale = 1 if ns_magic else 1000

    def ts(rec: bytearray) -> int:
        sec, frac = struct.unpack_from("<II", rec)
        return int(sec * 10**9 + frac * scale)

    def stamp(rec: bytearray, t: int) -> bytearray:
        sec, ns = divmod(t, 10**9)
        struct.pack_into("<II", rec, 0, sec, ns // scale)
        return rec

    t7 = ts(recs[6])
    filler = []
    for k in range(fill):
        seg = craft.tcp(craft.v4("10.77.0.9"), craft.v4("10.77.0.8"), 5555, 9999, 1 + k, 1, 0x10)
        frame = craft.eth(craft.ip(craft.v4("10.77.0.9"), craft.v4("10.77.0.8"), 6, seg))
        rec = bytearray(struct.pack("<IIII", 0, 0, len(frame), len(frame)) + frame)
        filler.append(stamp(rec, t7 + (k + 1) * 1_500_000_000 // fill))
    later = [stamp(r, ts(r) + 2 * 10**9) for r in recs[7:]]
    out.write_bytes(head + b"".join(bytes(r) for r in [*recs[:7], *filler, *later]))


def test_keep_holds_a_connection_from_its_start_after_it_went_idle(tmp_path: Path) -> None:
    """A pooled connection quiet for longer than --idle leaves the tracker (diagnosed, no
    finding) and its later packets are followed as a connection of their own; when those
    have a finding, the kept file still holds the connection from its SYN (docs/watch.md:
    the packets of the connections that had findings)."""
    import io

    from tcpwhy.capture import iter_tables
    from tcpwhy.watch.core import Watcher
    from tcpwhy.watch.keep import Keeper, Lockstep
    from tcpwhy.watch.tracker import Limits

    src = tmp_path / "split.pcap"
    _split_by_quiet(LAB / "stale-keepalive.pcap", src)
    keep = tmp_path / "keep"
    keep.mkdir()
    out = io.StringIO()
    w = Watcher(out, "jsonl", limits=Limits(idle_s=1.0), summary_every_s=0)
    k = Keeper(str(keep), before_s=0)
    k.lockstep = Lockstep(str(src), k.ring)
    w.keeper = k
    chunks = 0
    for t in iter_tables(str(src), chunk_bytes=16 << 10):
        w.chunk(t)
        chunks += 1
    w.finish()
    k.close()
    assert chunks > 1
    assert w.tracker.ended["idle"] >= 1  # the pooled connection did leave idle
    found = [json.loads(x) for x in out.getvalue().splitlines()]
    assert found
    # tshark's stream 0: the pooled connection, whole (SYN to RST)
    want = [row[1:] for row in tshark_rows(src, "tcp.stream == 0")]
    assert len(want) == 11
    assert sorted(kept_rows(keep)) == sorted(want)
