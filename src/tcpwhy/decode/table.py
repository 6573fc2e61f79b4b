"""The packet table: one numpy array per field, one row per TCP packet.

Every stage after decoding (connections, filters, diagnosis, reports) reads
this table and nothing else of the capture, so its columns are the contract
between them. Rows are in capture order. A table covers one chunk of the
capture while streaming; `PacketTable.concat` joins chunks (copying only the
captured payload bytes, so the joined table does not keep whole chunks).

Addresses are 128-bit, stored as two big-endian halves (`*_hi`, `*_lo`);
IPv4 addresses are IPv4-mapped (``::ffff:a.b.c.d``), so one comparison works
for both families and sorting/grouping stays plain integer work.

A row's payload bytes are in `data` at `payload_off`, or, in the tables `analyze` keeps
for a whole capture read from a plain file, left in that file: `payload_off` then has
`FILE_ROW` set and holds the file's number and the offset in it (`PacketTable.in_file`).
Consumers read payload through `PacketTable.payload` (one row), `gather` (many rows'
bytes into one buffer) or `rows` (a small table of those rows with its own `data`), which
work for both; indexing `data` directly is for tables known to hold their bytes.

TCP flag bits (`flags`) use the header's own layout, as Wireshark's
``tcp.flags``: FIN 0x001, SYN 0x002, RST 0x004, PSH 0x008, ACK 0x010,
URG 0x020, ECE 0x040, CWR 0x080, AE (formerly NS) 0x100.

ICMP errors about TCP ride along in `PacketTable.icmp`: a second table of the
same chunk, one row per ICMP or ICMPv6 error (destination unreachable, packet
too big, time exceeded, parameter problem) that quotes a TCP segment, in capture
order. Its rows have every column of `COLUMNS`, describing the *quoted* segment
as its sender sent it (addresses, ports, seq, flags; `ip_len` and `payload_len`
from the quoted IP length, so `truncated` is usually set; fields the quote cut
off are 0, `doff` 0 when it stopped after the sequence number), which is what
joins the error to its connection, plus `ICMP_COLUMNS`: the error itself (type,
code, MTU) and its own IP header (`icmp_src_*` is who answered: the destination
itself, a router or a firewall). `icmp_at` places each ICMP row among the TCP
rows of its table, so consumers that want one timeline (stream numbers, the
packet list, flow ladders) merge the two without looking at frame numbers. TCP
consumers read `cols` alone and never see ICMP rows; a table built from columns
(`take`, slim copies) has no ICMP rows unless it passes them on.
"""

from __future__ import annotations

import itertools
import math
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from tcpwhy.arrays import SCAN_ROWS

FIN, SYN, RST, PSH, ACK, URG, ECE, CWR, AE = (1 << i for i in range(9))
FLAG_NAMES: tuple[tuple[int, str], ...] = (
    (FIN, "FIN"),
    (SYN, "SYN"),
    (RST, "RST"),
    (PSH, "PSH"),
    (ACK, "ACK"),
    (URG, "URG"),
    (ECE, "ECE"),
    (CWR, "CWR"),
    (AE, "NS"),
)
"""Flag names in the order Wireshark lists them in the Info column."""

# Tunnel kinds (column `tunnel`): the outermost encapsulation the TCP packet was found in.
TUNNEL_NONE, TUNNEL_GRE, TUNNEL_VXLAN, TUNNEL_GENEVE, TUNNEL_IPIP, TUNNEL_TEREDO, TUNNEL_AYIYA = (
    range(7)
)
TUNNEL_NAMES = ("", "GRE", "VXLAN", "Geneve", "IP-in-IP", "Teredo", "AYIYA")

SACK_MAX = 4
# codes in `opt_order`: the order options appear in, as Wireshark lists them in Info
OPT_MSS, OPT_WS, OPT_SACK_PERM, OPT_TS, OPT_SACK = 1, 2, 3, 4, 5

# name -> (dtype, extra shape, meaning)
COLUMNS: dict[str, tuple[str, tuple[int, ...], str]] = {
    "frame": ("u8", (), "frame number as Wireshark counts it (1-based, every frame of the file)"),
    "ts_ns": ("i8", (), "capture timestamp, nanoseconds since the Unix epoch"),
    "frame_len": ("u4", (), "length on the wire (frame.len)"),
    "cap_len": ("u4", (), "bytes captured of the frame (frame.cap_len)"),
    "linktype": (
        "u2",
        (),
        "the interface's link type, as pcap numbers it (1 Ethernet, 113 Linux cooked capture, …)",
    ),
    "iface": ("u2", (), "pcapng interface id (0 for classic pcap)"),
    "eth_src": ("u8", (), "innermost Ethernet source MAC as a 48-bit integer, 0 if none"),
    "eth_dst": ("u8", (), "innermost Ethernet destination MAC, 0 if none"),
    "vlan": ("i4", (), "outermost 802.1Q/802.1ad VLAN id, -1 if untagged"),
    "tunnel": (
        "u1",
        (),
        "outermost tunnel the TCP packet was carried in: "
        + ", ".join(f"{code} {name or 'none'}" for code, name in enumerate(TUNNEL_NAMES)),
    ),
    "outer_src_hi": ("u8", (), "outer (tunnel) source address, high half"),
    "outer_src_lo": ("u8", (), "outer (tunnel) source address, low half"),
    "outer_dst_hi": ("u8", (), "outer (tunnel) destination address, high half"),
    "outer_dst_lo": ("u8", (), "outer (tunnel) destination address, low half"),
    "ip_version": ("u1", (), "4 or 6"),
    "ip_off": ("u4", (), "offset of the IP header in the frame"),
    "ip_len": ("u4", (), "IP total length: IPv4 total length, IPv6 40 + payload length"),
    "ip_ttl": ("u1", (), "IPv4 TTL or IPv6 hop limit"),
    "ip_id": ("u4", (), "IPv4 identification (0 for IPv6)"),
    "src_hi": ("u8", (), "source address, high 64 bits (0 for IPv4)"),
    "src_lo": ("u8", (), "source address, low 64 bits (0xffff_xxxxxxxx for IPv4)"),
    "dst_hi": ("u8", (), "destination address, high 64 bits"),
    "dst_lo": ("u8", (), "destination address, low 64 bits"),
    "sport": ("u2", (), "TCP source port"),
    "dport": ("u2", (), "TCP destination port"),
    "seq": ("u4", (), "sequence number as sent (absolute, not relative to the first)"),
    "ack": (
        "u4",
        (),
        "acknowledgment number as sent (absolute; the header field even without the ACK flag)",
    ),
    "doff": ("u1", (), "TCP header length in bytes"),
    "flags": (
        "u2",
        (),
        "the nine TCP flag bits, as in the header: FIN 0x001, SYN 0x002, RST 0x004, PSH 0x008, "
        "ACK 0x010, URG 0x020, ECE 0x040, CWR 0x080, AE (formerly NS) 0x100",
    ),
    "win": ("u2", (), "window field as sent (unscaled)"),
    "urp": ("u2", (), "urgent pointer"),
    "csum_ok": (
        "i1",
        (),
        "TCP checksum: 1 good, 0 bad, -1 not checked (not asked, or cut); -2: a check "
        "Zeek makes below TCP failed (IPv4 header checksum or total length 0, a tunnel's "
        "UDP checksum), so Zeek drops the packet",
    ),
    "opt_mss": ("i4", (), "MSS option value, -1 absent"),
    "opt_ws": ("i1", (), "window-scale shift, -1 absent"),
    "opt_sack_perm": ("?", (), "SACK-permitted option present"),
    "opt_ts": ("?", (), "timestamps option present"),
    "opt_tsval": ("u4", (), "timestamps option's TSval (when `opt_ts`)"),
    "opt_tsecr": ("u4", (), "timestamps option's TSecr (when `opt_ts`)"),
    "opt_order": (
        "u4",
        (),
        "known options in header order, 3 bits each from bit 0: "
        f"{OPT_MSS} MSS, {OPT_WS} window scale, {OPT_SACK_PERM} SACK-permitted, "
        f"{OPT_TS} timestamps, {OPT_SACK} SACK",
    ),
    "sack_n": ("u1", (), "number of SACK blocks"),
    "sack_le": ("u4", (SACK_MAX,), "SACK blocks' left edges as sent, the first `sack_n` used"),
    "sack_re": ("u4", (SACK_MAX,), "SACK blocks' right edges as sent, the first `sack_n` used"),
    "payload_len": ("u4", (), "TCP payload length from the IP length (counts truncated bytes)"),
    "payload_cap": ("u4", (), "payload bytes actually captured"),
    "payload_off": ("u8", (), "offset of the payload in `data`"),
    "truncated": ("?", (), "snaplen cut the payload (payload_cap < payload_len)"),
}

ENDPOINT_COLUMNS = ("src_hi", "src_lo", "dst_hi", "dst_lo", "sport", "dport")
"""The columns that name a packet's two endpoints (a connection's key, both ways alike)."""

ICMP_COLUMNS: dict[str, tuple[str, tuple[int, ...], str]] = {
    "icmp_type": ("u1", (), "ICMP or ICMPv6 type (ip_version says which)"),
    "icmp_code": ("u1", (), "ICMP or ICMPv6 code"),
    "icmp_mtu": ("u4", (), "next-hop MTU (ICMP 3/4) or packet-too-big MTU (ICMPv6 2), else 0"),
    "icmp_src_hi": ("u8", (), "the error's IP source (who answered), high half"),
    "icmp_src_lo": ("u8", (), "the error's IP source, low half"),
    "icmp_dst_hi": ("u8", (), "the error's IP destination (the quoted segment's sender), high"),
    "icmp_dst_lo": ("u8", (), "the error's IP destination, low half"),
    "icmp_ttl": ("u1", (), "the error's own IPv4 TTL or IPv6 hop limit"),
    "icmp_len": ("u4", (), "the error's own IP length (as ip_len for a TCP row)"),
    "icmp_at": ("i8", (), "index of the first TCP row of the same table after it (len if none)"),
}
"""The ICMP column group: rows of `PacketTable.icmp` have these besides `COLUMNS`."""

# ICMP and ICMPv6 types and codes the diagnosis names
ICMP_UNREACH, ICMP_TIME_EXCEEDED, ICMP_PARAM_PROBLEM = 3, 11, 12
ICMP_FRAG_NEEDED = 4  # code of type 3
ICMP6_UNREACH, ICMP6_TOO_BIG, ICMP6_TIME_EXCEEDED, ICMP6_PARAM_PROBLEM = 1, 2, 3, 4


def too_big_rows(version: Any, icmp_type: Any, code: Any) -> npt.NDArray[np.bool_]:
    """Per ICMP row: fragmentation needed (ICMP 3/4) or packet too big (ICMPv6 2), path MTU
    discovery's errors, which answer a segment too large for the path (no other error)."""
    v, ty, c = np.asarray(version), np.asarray(icmp_type), np.asarray(code)
    return np.where(v == 6, ty == ICMP6_TOO_BIG, (ty == ICMP_UNREACH) & (c == ICMP_FRAG_NEEDED))


def is_too_big(version: int, icmp_type: int, code: int) -> bool:
    """`too_big_rows` of one row."""
    return bool(too_big_rows(version, icmp_type, code))


STAGGER = 5 * 64
"""Bytes added between the arrays of `staggered_zeros` (five cache lines)."""


def staggered_zeros(specs: dict[str, tuple[Any, tuple[int, ...]]]) -> dict[str, npt.NDArray[Any]]:
    """Zeroed arrays, name -> (dtype, shape), carved from one allocation, each starting a few
    cache lines further on than a power-of-two size would put it.

    A compiled loop that touches row i of many columns at once is slowed down by where the
    columns start: arrays allocated one by one (or packed back to back, with sizes that are
    powers of two) all start at the same offset of a page, so row i of every column maps to
    the same cache set and they keep evicting each other. Measured on the decoder (3M
    packets, 65,536-row chunks, 57 columns): separate arrays 0.31-0.57 s, packed 0.69-0.76 s,
    staggered 0.27-0.28 s.
    """
    sizes = {name: np.dtype(dt).itemsize * math.prod(shape) for name, (dt, shape) in specs.items()}
    buf = np.zeros(sum(-(-sz // 64) * 64 + STAGGER for sz in sizes.values()), np.uint8)
    out = {}
    at = 0
    for name, (dt, shape) in specs.items():
        out[name] = buf[at : at + sizes[name]].view(dt).reshape(shape)
        at += -(-sizes[name] // 64) * 64 + STAGGER
    return out


def empty_columns(n: int) -> dict[str, npt.NDArray[Any]]:
    """Zeroed columns for n rows, laid out by `staggered_zeros` (the decoder fills a row of
    every column at a time)."""
    return staggered_zeros({name: (dt, (n, *shape)) for name, (dt, shape, _) in COLUMNS.items()})


def empty_icmp_columns(n: int) -> dict[str, npt.NDArray[Any]]:
    """Zeroed ICMP column group for n rows (pages never written cost nothing)."""
    return staggered_zeros({name: (dt, (n, *sh)) for name, (dt, sh, _) in ICMP_COLUMNS.items()})


@dataclass
class PacketTable:
    """Columns of TCP packets plus the byte buffer their payload offsets point into, and the
    ICMP errors about TCP read with them (`icmp`, see the module's text)."""

    cols: dict[str, npt.NDArray[Any]]
    data: npt.NDArray[np.uint8] = field(default_factory=lambda: np.zeros(0, np.uint8))
    icmp: PacketTable | None = None
    origin: tuple[str, int] | None = None
    """Set by the reader on a chunk read from a plain file: (its path, the file offset of
    `data[0]`), so `in_file` can point into the file."""

    def __len__(self) -> int:
        return int(self.cols["frame"].shape[0])

    def __getitem__(self, name: str) -> npt.NDArray[Any]:
        return self.cols[name]

    def __getattr__(self, name: str) -> npt.NDArray[Any]:
        cols = self.__dict__.get("cols")
        if cols is not None and name in cols:
            return cols[name]
        raise AttributeError(name)

    def payload(self, row: int, limit: int | None = None) -> bytes:
        """The captured payload bytes of one row, at most `limit` of them (attacker data:
        escape before printing)."""
        off = int(self.cols["payload_off"][row])
        cap = int(self.cols["payload_cap"][row])
        n = cap if limit is None else max(min(cap, limit), 0)
        if off & FILE_ROW:
            return _read_file(off, n)
        return self.data[off : off + n].tobytes()

    def endpoints(self) -> tuple[npt.NDArray[Any], ...]:
        """The endpoint columns (`ENDPOINT_COLUMNS`) as the kernels take them: one tuple, each
        contiguous and of its schema type (a copy only of a column that is not)."""
        return tuple(np.ascontiguousarray(self.cols[k], COLUMNS[k][0]) for k in ENDPOINT_COLUMNS)

    def data_mask(self, lo: int = 0, hi: int | None = None) -> npt.NDArray[np.bool_]:
        """Per row lo..hi: the segment carries data, payload that is not a reset's (a reset's
        bytes are nothing the stream delivers; Linux puts a diagnostic text there)."""
        sl = slice(lo, hi)
        return (self["payload_len"][sl] > 0) & ((self["flags"][sl] & RST) == 0)

    def has_payload(self) -> bool:
        """Whether any row's payload bytes can be read (in `data` or in the capture file)."""
        if self.data.size:
            return True
        off = self.cols.get("payload_off")
        if off is None or not len(off):
            return False
        cap = self.cols["payload_cap"]
        # a block at a time: the first block answers on a capture with payload, and a
        # whole-table test made a 64-bit temporary per row (33 MB at 4 M packets)
        for i in range(0, len(off), SCAN_ROWS):
            o, c = off[i : i + SCAN_ROWS], cap[i : i + SCAN_ROWS]
            if (((o & np.uint64(FILE_ROW)) != 0) & (c > 0)).any():
                return True
        return False

    def gather(
        self, rows: npt.NDArray[Any], limit: int | None = None
    ) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """The captured payload bytes of `rows` (indices), at most `limit` each, one row's
        after the other in a new buffer: (bytes, each row's offset in them, its length).

        The reader of a row-based consumer, whether the bytes are in `data` or left in the
        capture file (`FILE_ROW`)."""
        rows = np.asarray(rows, np.int64)
        off = self.cols["payload_off"][rows]
        cap = self.cols["payload_cap"][rows].astype(np.int64)
        if limit is not None:
            cap = np.minimum(cap, max(limit, 0))
        new_off = np.zeros(len(rows), np.int64)
        if len(rows):
            np.cumsum(cap[:-1], out=new_off[1:])
        out = np.empty(int(cap.sum()), np.uint8)
        infile = (off & np.uint64(FILE_ROW)) != 0
        mem = np.flatnonzero(~infile & (cap > 0))
        if len(mem):
            _gather(self.data, off[mem], cap[mem], out, new_off[mem])
        got = np.flatnonzero(infile & (cap > 0))
        if len(got):
            _read_rows(off[got], cap[got], out, new_off[got])
        return out, new_off, cap

    def rows(self, rows: npt.NDArray[Any], cols: Sequence[str] = ()) -> PacketTable:
        """A table of `rows` (indices) with the columns `cols` and each row's whole captured
        payload in its own `data` (`gather`): what a consumer that indexes `data` with the
        rows' offsets reads, for the few rows it reads, wherever the bytes are kept."""
        rows = np.asarray(rows, np.int64)
        data, off, _ = self.gather(rows)
        out = {k: self.cols[k][rows] for k in ("frame", *cols) if k != "payload_off"}
        out["payload_off"] = off.astype(np.uint64)
        out["payload_cap"] = self.cols["payload_cap"][rows]
        return PacketTable(out, data)

    def in_file(self, cols: dict[str, npt.NDArray[Any]]) -> PacketTable | None:
        """`cols` (this chunk's rows) with payload offsets into the capture file instead of
        into the chunk's bytes, and no payload bytes kept, when the reader said where in
        which file the chunk's bytes are (`origin`); else None.

        A whole capture's payload is not held in memory this way: the rules read the bytes
        of few rows (the first of each direction, the connections they explain), from the
        file (`gather`, `payload`)."""
        if self.origin is None:
            return None
        path, base = self.origin
        index = payload_file(path)
        if index is None:
            return None
        off = self.cols["payload_off"].astype(np.uint64) + np.uint64(base)
        if len(off) and int(off.max()) > _OFF_MASK:
            return None
        cols["payload_off"] = off | np.uint64(FILE_ROW | (index << _FILE_SHIFT))
        return PacketTable(cols)

    def between(self, lo: int, hi: int) -> PacketTable:
        """Rows `lo:hi` as a table of views, sharing `data`, with the ICMP rows placed among
        them (`icmp_between`): for a consumer that takes a chunk in parts."""
        part = {k: v[lo:hi] for k, v in self.cols.items()}
        return PacketTable(part, self.data, icmp_between(self, lo, hi), self.origin)

    def take(self, rows: npt.NDArray[Any]) -> PacketTable:
        """A table of the selected rows (boolean mask or indices), sharing `data`."""
        return PacketTable({k: v[rows] for k, v in self.cols.items()}, self.data)

    @staticmethod
    def empty() -> PacketTable:
        return PacketTable(empty_columns(0))

    @staticmethod
    def concat(tables: Sequence[PacketTable]) -> PacketTable:
        """Join chunk tables; payload bytes are compacted into one new buffer."""
        icmp = concat_icmp(tables)
        tables = [t for t in tables if len(t)]
        if not tables:
            out = PacketTable.empty()
            out.icmp = icmp
            return out
        if len(tables) == 1 and _is_compact(tables[0]) and tables[0].icmp is icmp:
            return tables[0]
        cols = {k: np.concatenate([t.cols[k] for t in tables]) for k in COLUMNS}
        data = compact_payloads(cols, [(t.data, t.cols["payload_off"]) for t in tables])
        return PacketTable(cols, data, icmp)


def concat_icmp(tables: Sequence[PacketTable]) -> PacketTable | None:
    """The ICMP rows of consecutive tables as one table, `icmp_at` counted over the joined
    TCP rows."""
    based = []
    base = 0
    for t in tables:
        if t.icmp is not None:
            based.append((base, t.icmp))
        base += len(t)
    return join_icmp(based)


def join_icmp(based: Sequence[tuple[int, PacketTable]]) -> PacketTable | None:
    """ICMP tables as one, each (base, table) with its `icmp_at` moved on by `base`: the TCP
    rows of the joined table before the ICMP table's own TCP rows."""
    parts = []
    for base, ic in based:
        if len(ic):
            if base:
                cols = dict(ic.cols)
                cols["icmp_at"] = cols["icmp_at"] + base
                parts.append(PacketTable(cols, ic.data))
            else:
                parts.append(ic)
    if not parts:
        return None
    if len(parts) == 1:
        return parts[0]
    names = [k for k in parts[0].cols if k in COLUMNS or k in ICMP_COLUMNS]
    cols = {k: np.concatenate([p.cols[k] for p in parts]) for k in names}
    data = compact_payloads(cols, [(p.data, p.cols["payload_off"]) for p in parts])
    return PacketTable(cols, data)


def icmp_between(t: PacketTable, lo: int, hi: int) -> PacketTable | None:
    """The ICMP rows of `t` that come before TCP row `hi` and not before row `lo`, placed
    among the rows `lo:hi` (`icmp_at` less lo), for a table of those rows; with `hi` the
    table's length the rows after its last TCP row are included too."""
    ic = t.icmp
    if ic is None or not len(ic):
        return None
    at = ic["icmp_at"]
    keep = (at >= lo) & ((at < hi) | (hi >= len(t)))
    if not keep.any():
        return None
    part = ic.take(keep)
    part.cols["icmp_at"] = part.cols["icmp_at"] - lo
    return part


def icmp_kept(
    t: PacketTable, keep: npt.NDArray[np.bool_], icmp_keep: npt.NDArray[np.bool_]
) -> PacketTable | None:
    """The ICMP rows `icmp_keep` of `t`, placed among the TCP rows `keep` (as `t.take(keep)`
    keeps them)."""
    ic = t.icmp
    if ic is None or not icmp_keep.any():
        return None
    before = np.zeros(len(keep) + 1, np.int64)
    np.cumsum(keep, out=before[1:])
    part = ic.take(icmp_keep)
    part.cols["icmp_at"] = before[part.cols["icmp_at"]]
    return part


FILE_ROW = 1 << 63
"""`payload_off` bit of a row whose payload bytes are left in its capture file
(`PacketTable.in_file`): bits 48-62 are the file's number (`payload_file`), bits 0-47 the
offset in it. Read through `PacketTable.payload`, `gather` or `rows`, never `data`."""
_FILE_SHIFT = 48
_OFF_MASK = (1 << _FILE_SHIFT) - 1
_MAX_FILES = 1 << (63 - _FILE_SHIFT)
MAX_OPEN_FILES = 64
"""Capture files whose descriptors `_PayloadFiles` keeps open at once (the ones read last);
the others are opened again by path when read. Holding one per file ever read, a script
that diagnosed every capture of a fleet in a loop took every descriptor the process had
(250 captures under a limit of 256: its own next `open` failed, Too many open files)."""


class _PayloadFiles:
    """The capture files that `FILE_ROW` offsets point into, numbered as registered
    (`payload_file`), with at most `MAX_OPEN_FILES` descriptors open, the least recently
    read closed first. A file opened again is checked to be the same file (device and
    inode); one deleted or replaced since reads as cut short there (zeros), as a file cut
    since it was read does. Reads hold a lock: a descriptor is not closed under a read."""

    def __init__(self) -> None:
        import threading
        from collections import OrderedDict

        self.lock = threading.Lock()
        self.files: list[tuple[str, int, int]] = []  # (path, device, inode), by number
        self.numbers: dict[tuple[int, int], int] = {}
        self.open: OrderedDict[int, int] = OrderedDict()  # number -> descriptor, LRU first

    def register(self, path: str) -> int | None:
        try:
            st = os.stat(path)
        except OSError:
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        key = (st.st_dev, st.st_ino)
        with self.lock:
            k = self.numbers.get(key)
            if k is None and len(self.files) < _MAX_FILES:
                k = self.numbers[key] = len(self.files)
                self.files.append((os.path.abspath(path), *key))
            return k

    def fd(self, k: int) -> int | None:
        """File k's descriptor (opened if need be), the caller holding `lock`."""
        fd = self.open.get(k)
        if fd is not None:
            self.open.move_to_end(k)
            return fd
        path, dev, ino = self.files[k]
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except OSError:
            return None
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != (dev, ino):
            os.close(fd)
            return None
        self.open[k] = fd
        while len(self.open) > MAX_OPEN_FILES:
            os.close(self.open.popitem(last=False)[1])
        return fd

    def read(self, k: int, buf: npt.NDArray[np.uint8], at: int) -> int:
        """Bytes of file k read into `buf` from offset `at`: how many (short at its end)."""
        with self.lock:
            fd = self.fd(k)
            if fd is None:
                return 0
            return os.preadv(fd, [memoryview(buf)], at)  # type: ignore[arg-type]


_FILES = _PayloadFiles()


def payload_file(path: str) -> int | None:
    """A number for the capture file at `path` that payload offsets can carry
    (`FILE_ROW`), for reading rows of it later (None: not a regular file, or too many
    files). The same file gets the same number."""
    k = _FILES.register(path)
    if k is not None:
        with _FILES.lock:
            if _FILES.fd(k) is None:  # unreadable now: its bytes are kept in memory instead
                return None
    return k


def _read_file(off: int, n: int) -> bytes:
    """n bytes of a `FILE_ROW` offset's file (fewer if the file was cut since)."""
    if n <= 0:
        return b""
    buf = np.empty(n, np.uint8)
    got = _FILES.read((off >> _FILE_SHIFT) & (_MAX_FILES - 1), buf, off & _OFF_MASK)
    return buf[:got].tobytes()


_WINDOW_BITS = 20
"""Rows read together from one window of their file (`_read_rows`): 1 MiB, so a window's
read is one system call and its buffer stays small."""


def _read_rows(
    offs: npt.NDArray[Any],
    caps: npt.NDArray[np.int64],
    dst: npt.NDArray[np.uint8],
    dst_offs: npt.NDArray[np.int64],
) -> None:
    """`_gather` for `FILE_ROW` offsets: the file read a window at a time (one read for the
    rows in each MiB of it, in file order), each row's bytes copied out of its window.
    A read per row was 3-10 us each, seconds for the first payloads of 200,000 connections."""
    offs = np.asarray(offs, np.uint64)
    order = np.argsort(offs, kind="stable")
    offs, caps, dst_offs = offs[order], caps[order], dst_offs[order]
    win = offs >> np.uint64(_WINDOW_BITS)  # the file's number is in the high bits
    cut = np.flatnonzero(win[1:] != win[:-1]) + 1
    bounds = [0, *cut.tolist(), len(offs)]
    pos = (offs & np.uint64(_OFF_MASK)).astype(np.int64)
    buf = np.zeros(0, np.uint8)
    for a, b in itertools.pairwise(bounds):
        k = (int(offs[a]) >> _FILE_SHIFT) & (_MAX_FILES - 1)
        p, c = pos[a:b], caps[a:b]
        lo = int(p[0])
        size = int((p + c).max()) - lo
        if buf.shape[0] < size:
            buf = np.empty(max(size, 2 << _WINDOW_BITS), np.uint8)
        got = _FILES.read(k, buf[:size], lo)
        buf[got:size] = 0  # bytes past the end of a file cut since it was read
        _gather(buf, p - lo, c, dst, dst_offs[a:b])


def shift_offsets(off: npt.NDArray[Any], by: int) -> npt.NDArray[Any]:
    """Payload offsets moved `by` bytes further into `data` (tables joined), those of rows
    read from their file (`FILE_ROW`) left as they are."""
    if not by:
        return off
    return np.where((off & np.uint64(FILE_ROW)) != 0, off, off + np.uint64(by)).astype(off.dtype)


def _is_compact(t: PacketTable) -> bool:
    return int(t.cols["payload_cap"].astype(np.int64).sum()) == t.data.shape[0]


def compact_payloads(
    cols: dict[str, npt.NDArray[Any]],
    sources: Sequence[tuple[npt.NDArray[np.uint8], npt.NDArray[Any]]],
) -> npt.NDArray[np.uint8]:
    """The payload bytes of joined rows in one new buffer, each row's after the row before:
    the one place tables are compacted (joins, takes, slim copies). `cols` holds the joined
    rows: their ``payload_cap`` is read and their ``payload_off`` set to the new offsets.
    `sources`: part by part, in row order, the bytes and the old offsets of its rows."""
    from tcpwhy.decode.kernels import gather_bytes

    caps = cols["payload_cap"].astype(np.int64)
    off = np.zeros(len(caps), np.int64)
    if len(caps):
        np.cumsum(caps[:-1], out=off[1:])
    data = np.empty(int(caps.sum()), np.uint8)
    at = 0
    for src, offs in sources:
        n = len(offs)
        if n:
            gather_bytes(src, offs.astype(np.int64), caps[at : at + n], data, off[at : at + n])
        at += n
    cols["payload_off"] = off.astype(np.uint64)
    return data


def _gather(
    src: npt.NDArray[np.uint8],
    offs: npt.NDArray[Any],
    caps: npt.NDArray[Any],
    dst: npt.NDArray[np.uint8],
    dst_offs: npt.NDArray[Any],
) -> None:
    from tcpwhy.decode.kernels import gather_bytes

    gather_bytes(src, offs.astype(np.int64), caps.astype(np.int64), dst, dst_offs.astype(np.int64))


@dataclass
class CaptureStats:
    """What the reader and decoder met besides TCP: reported on stderr after a view."""

    frames: int = 0
    tcp: int = 0
    icmp: int = 0  # ICMP errors about TCP (rows of the tables' `icmp`)
    reassembled: int = 0  # IP datagrams joined from fragments
    first_ts_ns: int | None = None
    bytes_read: int = 0  # of the capture stream (decompressed), for progress reports
    skipped: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    linktypes: set[int] = field(default_factory=set)

    def add_skipped(self, what: str, n: int) -> None:
        if n:
            self.skipped[what] = self.skipped.get(what, 0) + n

    def skipped_line(self) -> str:
        if not self.skipped:
            return ""
        parts = [f"{n} {what}" for what, n in sorted(self.skipped.items(), key=lambda kv: -kv[1])]
        return "skipped: " + ", ".join(parts)


def addr_is_v4(hi: int, lo: int) -> bool:
    return hi == 0 and (lo >> 32) == 0xFFFF


def endpoint_text(addr: str, port: int) -> str:
    """`address:port` as Wireshark and ss write an endpoint, and every view of tcpwhy: an
    IPv6 address in brackets, so that its colons cannot be read as the port's."""
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


def format_endpoint(hi: int, lo: int, port: int) -> str:
    """`endpoint_text` of a stored address (the packet table's two halves) and a port."""
    return endpoint_text(format_addr(hi, lo), int(port))


def format_addr(hi: int, lo: int) -> str:
    """Text form of a stored address (IPv4 dotted quad or compressed IPv6)."""
    import ipaddress

    hi, lo = int(hi), int(lo)
    if addr_is_v4(hi, lo):
        v = lo & 0xFFFFFFFF
        return f"{v >> 24}.{(v >> 16) & 255}.{(v >> 8) & 255}.{v & 255}"
    return str(ipaddress.IPv6Address((hi << 64) | lo))
