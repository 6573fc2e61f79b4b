"""`analyze` leaves a plain capture file's payload bytes in the file and reads the rows it
needs from there (`PacketTable.in_file`, `gather`, `rows`, `payload`): the same bytes, and
the same report, as when every byte is held in memory (a gzip-compressed copy of the file
cannot be read in place, so its payload is kept in memory as before)."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tcpwhy.capture import iter_tables
from tcpwhy.decode.table import FILE_ROW, PacketTable
from tcpwhy.diagnose.engine import DIAGNOSIS_COLUMNS, diagnose_files
from tcpwhy.lab.record import DATA_DIR

HERE = Path(__file__).parent
CAPTURES = [
    DATA_DIR / "stale-keepalive.pcap",  # HTTP/1.1 messages read by the rules
    DATA_DIR / "stale-keepalive-tls.pcap",  # TLS records, hellos and server names
    DATA_DIR / "tls-fatal-alert.pcap",
    DATA_DIR / "keepalive-race-tls.pcap",
    HERE / "data" / "http2" / "h2c-stale.pcap",  # HTTP/2 frames (prior knowledge)
    HERE / "data" / "http2" / "h2c-upgrade-apache-stale.pcap",  # h2c by Upgrade
    HERE / "data" / "http2" / "h2-tls-stale.pcap",
]


def _gz(src: Path, tmp: Path) -> Path:
    out = tmp / (src.name + ".gz")
    with open(src, "rb") as f, gzip.open(out, "wb") as g:
        shutil.copyfileobj(f, g)
    return out


def _report(paths: list[Path]) -> str:
    text = json.dumps(diagnose_files([str(p) for p in paths]).to_json(), sort_keys=True)
    for p in paths:  # the report names its files: compared without them
        text = text.replace(str(p), p.name.removesuffix(".gz"))
    return text


@pytest.mark.parametrize("path", CAPTURES, ids=lambda p: p.name)
def test_report_same_as_with_payload_in_memory(path: Path, tmp_path: Path) -> None:
    assert path.exists()
    got = diagnose_files([str(path)])
    (cap,) = [d.cap for d in got.diags]
    # the new way was taken: no byte held, every row with payload pointing into the file
    assert cap.table.data.size == 0 and cap.table.has_payload()
    withp = cap.table["payload_cap"] > 0
    assert ((cap.table["payload_off"][withp] & np.uint64(FILE_ROW)) != 0).all()
    gz = _gz(path, tmp_path)
    (mem,) = [d.cap for d in diagnose_files([str(gz)]).diags]
    assert mem.table.data.size == int(mem.table["payload_cap"].astype(np.int64).sum()) > 0
    assert _report([path]) == _report([gz])


def test_rotated_files_joined_in_file_and_in_memory(tmp_path: Path) -> None:
    """Two captures joined in time (rotated files), one read in place and one gzipped (its
    bytes in memory): the joined table reads each row from where its bytes are."""
    a = DATA_DIR / "stale-keepalive.pcap"
    b = DATA_DIR / "stale-keepalive-tls.pcap"
    gz = _gz(b, tmp_path)
    rep = diagnose_files([str(a), str(gz)])
    (t,) = [d.cap.table for d in rep.diags]  # one timeline: both kinds of rows in one table
    off = t["payload_off"][t["payload_cap"] > 0]
    infile = (off & np.uint64(FILE_ROW)) != 0
    assert infile.any() and (~infile).any()
    alone = [PacketTable.concat(list(iter_tables(str(p)))) for p in (a, b)]  # all in memory
    want = [x.payload(r) for x in alone for r in np.flatnonzero(x["payload_cap"] > 0).tolist()]
    have = [t.payload(r) for r in np.flatnonzero(t["payload_cap"] > 0).tolist()]
    assert want == have and len(want) > 20
    rows = np.flatnonzero(t["payload_cap"] > 0)
    data, at, cap = t.gather(rows)
    assert [data[o : o + c].tobytes() for o, c in zip(at, cap, strict=True)] == want


@pytest.mark.parametrize("path", CAPTURES[:3], ids=lambda p: p.name)
def test_gather_rows_and_payload_read_the_file(path: Path) -> None:
    """Per chunk: the rows' bytes read from the file are the bytes the reader decoded."""
    seen = 0
    for t in iter_tables(str(path)):
        assert t.origin is not None and t.origin[0] == str(path)
        ft = t.in_file({k: t.cols[k].copy() for k in DIAGNOSIS_COLUMNS})
        assert ft is not None and ft.data.size == 0
        rows = np.flatnonzero(t["payload_cap"] > 0)
        for limit in (None, 5, 1):
            d1, o1, c1 = t.gather(rows, limit)
            d2, o2, c2 = ft.gather(rows, limit)
            assert np.array_equal(o1, o2) and np.array_equal(c1, c2)
            assert d1.tobytes() == d2.tobytes()
        sub = ft.rows(rows[::-1], ("seq",))
        assert np.array_equal(sub["seq"], t["seq"][rows[::-1]])
        for i, r in enumerate(rows[::-1].tolist()):
            assert sub.payload(i) == t.payload(r) == ft.payload(r)
            assert ft.payload(r, 3) == t.payload(r)[:3]
        seen += len(rows)
    assert seen > 3


def test_compressed_and_piped_input_keep_their_bytes(tmp_path: Path) -> None:
    gz = _gz(DATA_DIR / "stale-keepalive.pcap", tmp_path)
    for t in iter_tables(str(gz)):
        assert t.origin is None
        assert t.in_file(dict(t.cols)) is None
