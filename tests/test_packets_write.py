"""`tcpwhy packets FILE [-Y FILTER] -w OUT`, checked by tshark reading what it wrote.

tshark is the reference twice: its own `-Y` selection on the source says which frames
must be written, and its reading of the output says what was: the same frames, the same
bytes (hex dumps with IP left undissected, so nothing but the frame's own bytes is
printed), the same timestamps to the nanosecond and the same link types.
"""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest

from tcpwhy.capture.reader import iter_records
from tcpwhy.capture.writer import LINKTYPE_RAW, PcapWriter
from tcpwhy.cli import main
from tests.gates import need

DATA = Path(str(resources.files("tcpwhy") / "data"))
LAB = DATA / "lab"
DEMO = DATA / "demo-stale-keepalive.pcap"  # microsecond pcap
PCAP_NS = b"\x4d\x3c\xb2\xa1"
PCAP_US = b"\xd4\xc3\xb2\xa1"
PCAPNG = b"\x0a\x0d\x0d\x0a"


def tshark(*args: str) -> str:
    exe = shutil.which("tshark")
    need(exe is not None, "tshark not installed")
    assert exe is not None
    done = subprocess.run([exe, "-n", *args], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout


def selection(path: Path, flt: str) -> list[int]:
    """The frame numbers tshark's own -Y selects (two passes, as its analysis needs)."""
    out = tshark("-2", "-r", str(path), "-Y", flt, "-T", "fields", "-e", "frame.number")
    return [int(x) for x in out.split()]


def frame_filter(frames: list[int]) -> str:
    return "frame.number in {" + ", ".join(map(str, frames)) + "}" if frames else "frame"


def records(path: Path, frames: list[int] | None = None) -> list[str]:
    """Time (ns), lengths and link type of each frame, as tshark reads them."""
    args = ["-r", str(path), "-T", "fields", "-e", "frame.time_epoch", "-e", "frame.len"]
    args += ["-e", "frame.cap_len", "-e", "frame.encap_type"]
    if frames is not None:
        args += ["-Y", frame_filter(frames)]
    return tshark(*args).splitlines()


def hexdump(path: Path, frames: list[int] | None = None) -> str:
    """The frames' bytes as tshark dumps them, nothing above the link layer dissected."""
    args = ["-r", str(path), "-x", "--disable-protocol", "ip", "--disable-protocol", "ipv6"]
    if frames is not None:
        args += ["-Y", frame_filter(frames)]
    return tshark(*args)


def check_copy(out: Path, src: Path, frames: list[int]) -> None:
    assert len(records(out)) == len(frames)
    assert records(out) == records(src, frames)
    assert hexdump(out) == hexdump(src, frames)


CASES = [
    ("stale-keepalive.pcap", "tcp.flags.fin == 1"),
    ("retransmission-timeout.pcap", "tcp.analysis.retransmission"),
    ("syn-flood.pcap", "tcp.flags.syn == 1 and tcp.flags.ack == 0"),
    ("icmp-reject.pcap", "icmp or icmpv6"),
    ("zero-window.pcap", "tcp.analysis.zero_window or tcp.analysis.window_update"),
    ("keepalive-race-tls.pcap", "tcp.len > 0"),
]


@pytest.mark.parametrize("suffix", [".pcap", ".pcapng"])
@pytest.mark.parametrize(("name", "flt"), CASES)
def test_filtered_packets_as_tshark_selects_them(
    tmp_path: Path, name: str, flt: str, suffix: str
) -> None:
    src = LAB / name
    want = selection(src, flt)
    assert want, "a case that selects nothing proves nothing"
    out = tmp_path / f"out{suffix}"
    assert main(["packets", str(src), "-Y", flt, "-w", str(out)]) == 0
    head = out.read_bytes()[:4]
    assert head == (PCAPNG if suffix == ".pcapng" else PCAP_NS)  # the lab records in ns
    check_copy(out, src, want)


def test_microsecond_capture_stays_microsecond_pcap(tmp_path: Path) -> None:
    out = tmp_path / "out.pcap"
    assert main(["packets", str(DEMO), "-Y", "tcp.len > 0", "-w", str(out)]) == 0
    assert out.read_bytes()[:4] == PCAP_US
    check_copy(out, DEMO, selection(DEMO, "tcp.len > 0"))


def test_without_filter_the_listed_packets(tmp_path: Path) -> None:
    """No -Y: what the list shows, TCP segments and the ICMP errors about them (tshark's
    `tcp` selects the same: it decodes the quoted segment too); -c: the first N of them."""
    src = LAB / "icmp-no-route.pcap"
    out = tmp_path / "all.pcapng"
    assert main(["packets", str(src), "-w", str(out)]) == 0
    check_copy(out, src, selection(src, "tcp"))
    out5 = tmp_path / "first5.pcap"
    assert main(["packets", str(src), "-c", "5", "-w", str(out5)]) == 0
    check_copy(out5, src, selection(src, "tcp")[:5])


def test_stdin_in_and_standard_output_out(tmp_path: Path) -> None:
    """A pipe in (read twice: spooled), the capture on standard output, nothing else there."""
    src = LAB / "stale-keepalive.pcap"
    flt = "tcp.flags.reset == 1 or tcp.len > 0"
    for suffix, args in ((".pcap", ["-w", "-"]), (".pcapng", ["-w", "-"])):
        done = subprocess.run(
            [sys.executable, "-m", "tcpwhy", "packets", "-", "-Y", flt, *args],
            input=src.read_bytes(),
            capture_output=True,
        )
        assert done.returncode == 0, done.stderr
        out = tmp_path / f"stdout{suffix}"
        out.write_bytes(done.stdout)
        check_copy(out, src, selection(src, flt))
    # stdin in, a file out; gzip on stdin too
    out = tmp_path / "from-stdin.pcapng"
    done = subprocess.run(
        [sys.executable, "-m", "tcpwhy", "packets", "-", "-Y", flt, "-w", str(out)],
        input=gzip.compress(src.read_bytes()),
        capture_output=True,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == b""
    check_copy(out, src, selection(src, flt))


def test_gzip_file(tmp_path: Path) -> None:
    src = LAB / "zero-window.pcap"
    gz = tmp_path / "zw.pcap.gz"
    gz.write_bytes(gzip.compress(src.read_bytes()))
    out = tmp_path / "zw.pcapng"
    assert main(["packets", str(gz), "-Y", "tcp.window_size == 0", "-w", str(out)]) == 0
    check_copy(out, src, selection(src, "tcp.window_size == 0"))


def _raw_ip_twin(src: Path, dst: Path) -> None:
    """The same packets as Raw IP (link type 101): the Ethernet header taken off, 500 ns
    later, so that mergecap interleaves them with the Ethernet originals."""
    with PcapWriter.open(str(dst), LINKTYPE_RAW) as w:
        for b in iter_records(str(src)):
            for off, cap, wire, ts in zip(b.off, b.cap, b.wire, b.ts, strict=True):
                w.write(int(ts) + 500, bytes(b.data[off + 14 : off + cap]), int(wire) - 14)


def test_pcapng_with_two_interfaces_and_link_types(tmp_path: Path) -> None:
    mergecap = shutil.which("mergecap")
    need(mergecap is not None, "mergecap not installed")
    assert mergecap is not None
    src = LAB / "stale-keepalive.pcap"
    raw = tmp_path / "raw.pcap"
    _raw_ip_twin(src, raw)
    merged = tmp_path / "merged.pcapng"
    subprocess.run([mergecap, "-F", "pcapng", "-w", str(merged), str(src), str(raw)], check=True)
    flt = "tcp.flags.fin == 1 or tcp.flags.reset == 1"
    want = selection(merged, flt)
    assert len(want) == 2 * len(selection(src, flt))
    out = tmp_path / "out.pcapng"
    assert main(["packets", str(merged), "-Y", flt, "-w", str(out)]) == 0
    check_copy(out, merged, want)
    encaps = {line.split("\t")[3] for line in records(out)}
    assert encaps == {"1", "7"}  # wiretap's Ethernet and Raw IP
    # a pcap holds one link type: an error, and no file
    bad = tmp_path / "out.pcap"
    assert main(["packets", str(merged), "-Y", flt, "-w", str(bad)]) == 2
    assert not bad.exists()
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".part")]


def test_nothing_selected_is_an_empty_capture(tmp_path: Path) -> None:
    out = tmp_path / "none.pcapng"
    assert main(["packets", str(LAB / "clean.pcap"), "-Y", "tcp.port == 1", "-w", str(out)]) == 0
    assert out.read_bytes()[:4] == PCAPNG
    assert records(out) == []


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        ("missing/out.pcap", "cannot write: No such file or directory"),
        (".", "is a directory"),
    ],
)
def test_unwritable_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], target: str, reason: str
) -> None:
    path = str(tmp_path / target)
    assert main(["packets", str(LAB / "clean.pcap"), "-w", path]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [f"tcpwhy: {path}: {reason}"]
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


def test_unwritable_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """No permission: a read-only directory (root writes anyway: /sys refuses even root)."""
    d = tmp_path / "ro"
    d.mkdir()
    d.chmod(0o500)
    path = str(d / "out.pcap") if os.geteuid() != 0 else "/sys/tcpwhy-out.pcap"
    assert main(["packets", str(LAB / "clean.pcap"), "-w", path]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"tcpwhy: {path}: cannot write: Permission denied"]
    assert not os.path.exists(path)
    d.chmod(0o700)


def test_bad_input_leaves_no_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.pcap"
    bad.write_bytes(b"not a capture at all")
    out = tmp_path / "out.pcap"
    assert main(["packets", str(bad), "-w", str(out)]) == 2
    assert capsys.readouterr().err.startswith(f"tcpwhy: {bad}: not a pcap or pcapng capture")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.pcap"]


def test_w_is_not_combined_with_o(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, txt = tmp_path / "out.pcap", tmp_path / "list.txt"
    assert main(["packets", str(LAB / "clean.pcap"), "-w", str(out), "-o", str(txt)]) == 2
    assert capsys.readouterr().err.startswith("tcpwhy: -w: ")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("src", "magic"), [(LAB / "stale-keepalive.pcap", PCAP_NS), (DEMO, PCAP_US)]
)
def test_pcapng_source_to_pcap_keeps_its_precision(tmp_path: Path, src: Path, magic: bytes) -> None:
    """A pcapng written by editcap (if_tsresol 9 from a nanosecond pcap, 6 from a microsecond
    one) comes back as the pcap of the same precision, every timestamp exact."""
    editcap = shutil.which("editcap")
    need(editcap is not None, "editcap not installed")
    assert editcap is not None
    png = tmp_path / "src.pcapng"
    subprocess.run([editcap, "-F", "pcapng", str(src), str(png)], check=True)
    out = tmp_path / "out.pcap"
    assert main(["packets", str(png), "-Y", "tcp.len > 0", "-w", str(out)]) == 0
    assert out.read_bytes()[:4] == magic
    check_copy(out, png, selection(png, "tcp.len > 0"))
    assert records(out) == records(src, selection(src, "tcp.len > 0"))


def test_pipe_named_as_dev_fd(tmp_path: Path) -> None:
    """A shell's `<(…)` (a pipe named /dev/fd/N) is read twice like standard input; a named
    pipe elsewhere is one error line."""
    import threading

    src = LAB / "stale-keepalive.pcap"
    flt = "tcp.flags.fin == 1"
    r, w = os.pipe()

    def feed() -> None:
        with os.fdopen(w, "wb") as f:
            f.write(src.read_bytes())

    out = tmp_path / "out.pcapng"
    t = threading.Thread(target=feed)
    t.start()
    done = subprocess.run(
        [sys.executable, "-m", "tcpwhy", "packets", f"/dev/fd/{r}", "-Y", flt, "-w", str(out)],
        pass_fds=(r,),
        capture_output=True,
    )
    t.join()
    os.close(r)
    assert done.returncode == 0, done.stderr
    check_copy(out, src, selection(src, flt))
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    bad = tmp_path / "bad.pcap"
    assert main(["packets", str(fifo), "-w", str(bad)]) == 2
    assert not bad.exists()
