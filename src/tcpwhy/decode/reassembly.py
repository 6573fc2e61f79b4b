"""IP reassembly: IPv4 and IPv6 fragments joined into datagrams, decoded like any packet.

Fragments are rare, so the compiled decoder only notes where each one is (`FRAG_FIELDS`)
and this second pass, plain Python over those few rows, does the rest: it keeps the
fragments of each datagram (keyed as Wireshark keys them: addresses, IP id, protocol, VLAN,
plus the enclosing tunnel's addresses), and when the last hole is filled builds the whole
datagram and decodes it with the same compiled decoder. Its rows take the frame of the
fragment that completed it, as tshark shows the reassembled packet there.

Overlapping fragments are resolved as tshark 4.0 does (tests/test_reassembly_overlap.py
compares both): the fragments are ordered by offset (at the same offset, the one that
arrived first comes first) and each contributes only bytes past what the ones before it
covered. So where fragments overlap, the one starting lower wins whatever the arrival order
(a fragment inside another is ignored), and at the same offset the first to arrive. The
datagram's length is set by the first fragment without the more-fragments flag; a later
one with another length does not change it, and bytes past that length are dropped
(Wireshark's reassemble.c keeps its fragment list this way). Fragments the
capture cut short (snaplen) are not used, as in Wireshark. Once reassembled, a datagram
is forgotten, as tshark's single pass does: its fragments sent again start a new datagram
(reassembled a second time if complete, with the new bytes; counted as incomplete if not).

Memory is bounded: at most `MAX_PENDING` datagrams and `MAX_BYTES` of fragment data are
held; a datagram still incomplete after `TIMEOUT_NS` of capture time, evicted for room,
or at the end of the capture is counted as incomplete.
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from tcpwhy.decode.table import (
    COLUMNS,
    ICMP_COLUMNS,
    PacketTable,
    empty_columns,
    empty_icmp_columns,
)

MAX_PENDING = 4096
MAX_BYTES = 64 << 20
TIMEOUT_NS = 60 * 1_000_000_000
MAX_DATAGRAM = 65535
LINKTYPE_RAW = 101

_F_REC, _F_IP, _F_LIM, _F_ESRC, _F_EDST, _F_VLAN1, _F_TUN = 0, 1, 2, 3, 4, 5, 6
_F_OSRC_HI, _F_OSRC_LO, _F_ODST_HI, _F_ODST_LO, _F_END = 7, 8, 9, 10, 11


@dataclass
class _Datagram:
    first_ts: int
    header: bytes  # the IP header to rebuild the datagram with (from the first fragment)
    version: int
    proto: int
    frags: list[tuple[int, int, bytes]] = field(default_factory=list)  # (offset, seq, data)
    total: int = -1  # length once the last fragment (no more-fragments flag) was seen
    size: int = 0


@dataclass
class _Done:
    """A reassembled datagram waiting for the decoder: its bytes and its last fragment."""

    data: bytes | None
    rec: int
    info: npt.NDArray[np.uint64]


class Reassembler:
    """Fragment state of one capture, carried from chunk to chunk."""

    def __init__(self) -> None:
        self._pending: OrderedDict[tuple[Any, ...], _Datagram] = OrderedDict()
        self._bytes = 0
        self._seq = 0
        self.reassembled = 0
        self.incomplete = 0
        self.unusable = 0  # fragments cut by the snaplen or malformed: not reassembled

    def add(
        self,
        arr: npt.NDArray[np.uint8],
        frags: npt.NDArray[np.uint64],
        rec_ts: npt.NDArray[np.int64],
    ) -> list[_Done]:
        """Take a chunk's fragment notes; the datagrams they complete, in capture order."""
        out: list[_Done] = []
        for row in frags:
            rec = int(row[_F_REC])
            ts = int(rec_ts[rec])
            self._expire(ts)
            done = self._one(arr, row, ts)
            if done is not None:
                out.append(_Done(done, rec, row))
        return out

    def finish(self) -> None:
        """The capture ended: what is still pending is incomplete."""
        self.incomplete += len(self._pending)
        self._pending.clear()
        self._bytes = 0

    def _expire(self, now: int) -> None:
        while self._pending:
            key, d = next(iter(self._pending.items()))
            fresh = now - d.first_ts <= TIMEOUT_NS
            if fresh and len(self._pending) <= MAX_PENDING and self._bytes <= MAX_BYTES:
                break
            self._drop(key)

    def _drop(self, key: tuple[Any, ...]) -> None:
        d = self._pending.pop(key)
        self._bytes -= d.size
        self.incomplete += 1

    def _one(
        self, arr: npt.NDArray[np.uint8], row: npt.NDArray[np.uint64], ts: int
    ) -> bytes | None:
        ip = int(row[_F_IP])
        lim = int(row[_F_LIM])
        end = int(row[_F_END])
        head = arr[ip : min(ip + 60, end)].tobytes()
        if len(head) < 20:
            self.unusable += 1
            return None
        version = head[0] >> 4
        ctx: tuple[int, ...] = tuple(
            int(row[f]) for f in (_F_VLAN1, _F_OSRC_HI, _F_OSRC_LO, _F_ODST_HI, _F_ODST_LO)
        )
        key: tuple[Any, ...]
        if version == 4:
            ihl = (head[0] & 15) * 4
            tot = struct.unpack_from(">H", head, 2)[0]
            fo = struct.unpack_from(">H", head, 6)[0]
            if ihl < 20 or len(head) < ihl or tot < ihl:
                self.unusable += 1
                return None
            offset = (fo & 0x1FFF) * 8
            more = bool(fo & 0x2000)
            proto = head[9]
            ident = struct.unpack_from(">H", head, 4)[0]
            key = (4, head[12:20], ident, proto, *ctx)
            start, stop = ip + ihl, ip + tot
            header = head[:ihl]
        else:
            hdr = arr[ip : min(ip + 40 + 8 * 64, end)].tobytes()
            plen = struct.unpack_from(">H", hdr, 4)[0]
            nh = hdr[6]
            q = 40
            while nh in (0, 43, 60) and q + 8 <= len(hdr):
                nh, q = hdr[q], q + (hdr[q + 1] + 1) * 8
            if nh != 44 or q + 8 > len(hdr):
                self.unusable += 1
                return None
            proto = hdr[q]
            fo = struct.unpack_from(">H", hdr, q + 2)[0]
            ident = struct.unpack_from(">I", hdr, q + 4)[0]
            offset = fo & 0xFFF8
            more = bool(fo & 1)
            key = (6, hdr[8:40], ident, *ctx)
            start, stop = ip + q + 8, ip + 40 + plen
            header = hdr[:40]
        if stop > lim or stop < start:  # cut by the snaplen (or a lying length): not used
            self.unusable += 1
            return None
        data = arr[start:stop].tobytes()
        d = self._pending.get(key)
        if d is None:
            d = _Datagram(ts, header, version, proto)
            self._pending[key] = d
        if offset == 0:
            d.header = header
        self._seq += 1
        d.frags.append((offset, self._seq, data))
        d.size += len(data)
        self._bytes += len(data)
        if not more and d.total < 0:  # the first tail sets the length, as in tshark
            d.total = offset + len(data)
        if d.total < 0:
            return None
        whole = self._join(d)
        if whole is None:
            return None
        # forgotten once complete, as in tshark: a repeat starts a new datagram
        del self._pending[key]
        self._bytes -= d.size
        self.reassembled += 1
        return self._rebuild(d, whole)

    @staticmethod
    def _join(d: _Datagram) -> bytes | None:
        """The datagram's payload if the fragments cover it without a hole, else None."""
        out = bytearray(d.total)
        pos = 0
        for off, _seq, data in sorted(d.frags):
            if off > pos:
                return None
            if off + len(data) > pos:
                take = data[pos - off : d.total - off]
                out[pos : pos + len(take)] = take
                pos += len(take)
            if pos >= d.total:
                break
        return bytes(out) if pos >= d.total else None

    @staticmethod
    def _rebuild(d: _Datagram, payload: bytes) -> bytes | None:
        if d.version == 4:
            hdr = bytearray(d.header)
            tot = len(hdr) + len(payload)
            if tot > MAX_DATAGRAM:
                return None
            struct.pack_into(">H", hdr, 2, tot)
            struct.pack_into(">H", hdr, 6, struct.unpack_from(">H", hdr, 6)[0] & 0x4000)
            # a valid header checksum again: each fragment's own was checked (when asked)
            struct.pack_into(">H", hdr, 10, 0)
            words = sum(struct.unpack(f">{len(hdr) // 2}H", bytes(hdr)))
            while words >> 16:
                words = (words & 0xFFFF) + (words >> 16)
            struct.pack_into(">H", hdr, 10, ~words & 0xFFFF)
            return bytes(hdr) + payload
        if len(payload) > MAX_DATAGRAM:
            return None
        hdr = bytearray(d.header)
        struct.pack_into(">H", hdr, 4, len(payload))
        hdr[6] = d.proto
        return bytes(hdr) + payload


def decode_datagrams(
    done: list[_Done],
    frame_base: int,
    rec: Any,
    if_link: npt.NDArray[np.int64],
    checksums: bool,
    teredo_any_port: bool,
) -> PacketTable | None:
    """Decode reassembled datagrams; their rows carry the frame of the completing fragment
    and what enclosed it (link addresses, VLAN, the tunnel around a fragmented inner IP)."""
    from tcpwhy.decode import kernels as K

    done = [d for d in done if d.data is not None]
    if not done:
        return None
    m = len(done)
    lens = np.array([len(d.data or b"") for d in done], np.int64)
    offs = np.zeros(m, np.int64)
    np.cumsum(lens[:-1], out=offs[1:])
    buf = np.frombuffer(b"".join(d.data or b"" for d in done), np.uint8).copy()
    cols = empty_columns(m)
    icols = empty_icmp_columns(m)
    counts = np.zeros(K.N_STATUS, np.int64)
    frag = np.zeros((m, len(K.FRAG_FIELDS)), np.uint64)
    j, k, _nf = K.decode_records(
        buf,
        offs,
        lens,
        lens,
        np.zeros(m, np.int64),
        np.zeros(m, np.int64),
        np.array([LINKTYPE_RAW], np.int64),
        0,
        counts,
        checksums,
        teredo_any_port,
        *(cols[name] for name in COLUMNS),
        *(icols[name] for name in ICMP_COLUMNS),
        frag,
    )
    tcp = {name: v[:j].copy() for name, v in cols.items()}
    sel = np.arange(m - 1, m - 1 - k, -1)
    icmp = {name: v[sel] for name, v in cols.items()}
    icmp.update({name: v[sel] for name, v in icols.items()})
    for part in (tcp, icmp):
        idx = part["frame"].astype(np.int64) - 1  # the datagram each row came from
        info = np.array([d.info for d in done], np.uint64).reshape(m, -1)[idx]
        recs = np.array([d.rec for d in done], np.int64)[idx]
        part["frame"] = (frame_base + recs + 1).astype(np.uint64)
        part["ts_ns"] = rec.ts[recs]
        part["frame_len"] = rec.wire[recs].astype(np.uint32)
        part["cap_len"] = rec.cap[recs].astype(np.uint32)
        part["iface"] = rec.iface[recs].astype(np.uint16)
        part["linktype"] = if_link[rec.iface[recs]].astype(np.uint16)
        part["eth_src"] = info[:, _F_ESRC]
        part["eth_dst"] = info[:, _F_EDST]
        part["vlan"] = info[:, _F_VLAN1].astype(np.int64).astype(np.int32) - 1
        outer = info[:, _F_TUN] != 0
        part["tunnel"] = np.where(outer, info[:, _F_TUN], part["tunnel"]).astype(np.uint8)
        for c, f in (
            ("outer_src_hi", _F_OSRC_HI),
            ("outer_src_lo", _F_OSRC_LO),
            ("outer_dst_hi", _F_ODST_HI),
            ("outer_dst_lo", _F_ODST_LO),
        ):
            part[c] = np.where(outer, info[:, f], part[c]).astype(np.uint64)
        part["ip_off"] = (part["ip_off"].astype(np.int64) + info[:, _F_IP].astype(np.int64)).astype(
            np.uint32
        )
        # payload_off points into `buf`, which the table keeps
    icmp_t = PacketTable(icmp, buf) if k else None
    return PacketTable(tcp, buf, icmp_t)


def merge(base: PacketTable, extra: PacketTable) -> PacketTable:
    """The rows of both tables in frame order, with one byte buffer (base's bytes, then
    extra's) and one ICMP table whose `icmp_at` counts over the merged TCP rows."""
    cols, data = _join(base.cols, base.data, extra.cols, extra.data)
    icmp_t = base.icmp
    if extra.icmp is not None:
        if base.icmp is None:
            icmp_t = extra.icmp
        else:
            icols, idata = _join(base.icmp.cols, base.icmp.data, extra.icmp.cols, extra.data)
            icmp_t = PacketTable(icols, idata)
    if icmp_t is not None:
        icols = dict(icmp_t.cols)
        icols["icmp_at"] = np.searchsorted(cols["frame"], icols["frame"]).astype(np.int64)
        icmp_t = PacketTable(icols, icmp_t.data)
    return PacketTable(cols, data, icmp_t)


def _join(
    a: dict[str, npt.NDArray[Any]],
    a_data: npt.NDArray[np.uint8],
    b: dict[str, npt.NDArray[Any]],
    b_data: npt.NDArray[np.uint8],
) -> tuple[dict[str, npt.NDArray[Any]], npt.NDArray[np.uint8]]:
    """Rows of a and b in frame order; b's payload offsets moved past a's bytes."""
    shift = np.uint64(a_data.shape[0])
    b = dict(b)
    b["payload_off"] = np.where(b["payload_cap"] > 0, b["payload_off"] + shift, 0).astype(np.uint64)
    both = {name: np.concatenate([a[name], b[name]]) for name in a if name in b}
    order = np.argsort(both["frame"], kind="stable")
    return {name: v[order] for name, v in both.items()}, np.concatenate([a_data, b_data])
