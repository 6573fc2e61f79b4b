"""Read captures, build the per-connection context, run every rule, collect one report.

Files whose time ranges follow one another (rotated captures) are joined into
one timeline. Files that overlap in time were taken at different points of
the path (the two ends of a connection): each is a capture point of its own,
since joining them would show every packet twice; the connections seen at
several points are paired (`pairing`) and reported once.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import sys
from collections.abc import Callable, Sequence

import numpy as np

from tcpwhy.arrays import room_for, sparse_zeros, unique_sorted
from tcpwhy.capture import iter_tables
from tcpwhy.decode.table import (
    ENDPOINT_COLUMNS,
    CaptureStats,
    PacketTable,
    compact_payloads,
    concat_icmp,
    icmp_kept,
    join_icmp,
    shift_offsets,
)
from tcpwhy.diagnose import kernels
from tcpwhy.diagnose.context import Capture
from tcpwhy.diagnose.model import CaptureInfo, Finding, Report
from tcpwhy.diagnose.pairing import PathPair, attach_retransmissions, pair_captures
from tcpwhy.diagnose.registry import Diag, Settings, load
from tcpwhy.diagnose.tls import capture_records
from tcpwhy.errors import TcpwhyError
from tcpwhy.filter import DisplayFilter
from tcpwhy.views import PacketChunk, packet_chunks

Progress = Callable[[str, int | None, int | None], None]
"""progress(step, done, total): a step's text and, where known, how far it is (bytes)."""


def diagnose_table(
    table: PacketTable,
    files: list[str],
    file_of_row: np.ndarray | None = None,
    settings: Settings | None = None,
    stream_numbers: np.ndarray | None = None,
) -> tuple[list[Finding], Capture]:
    if file_of_row is None:
        file_of_row = _file_of_row([len(table)])
    cap = Capture(table, file_of_row, files, stream_numbers, analyse_ahead=True)
    diag = run_rules(cap, settings)
    return diag.findings, cap


def run_rules(cap: Capture, settings: Settings | None = None) -> Diag:
    diag = Diag(cap, settings or Settings())
    # the capture's TLS records, which every diagnosis reads (the TLS rules), found before
    # the first rule: the analysis flags are then still being worked out on the other core
    # (`analyse_ahead`), and the fourth rule asks for them (on 4.3 M packets of short
    # connections it waited 0.15 s for them, and the records took 0.14 s at their rule)
    capture_records(cap)
    for fn in load().values():
        diag.findings.extend(fn(diag))
        release_freed()  # a rule's temporaries, so the next rule's are not stacked on them
    diag.findings.sort(key=lambda f: (-f.severity, f.first_ns))
    return diag


def _sids_of(cap: Capture, numbers: Sequence[int]) -> np.ndarray:
    """Stream ids of a finding's tcp.stream numbers (they differ under a display filter)."""
    nums = np.asarray(numbers, np.int64)
    sn = cap.stream_numbers
    if cap.numbers_are_ids:  # (no search of a flood's 3 million numbers, 0.14 s)
        return nums[(nums >= 0) & (nums < cap.nstreams)]
    idx = np.searchsorted(sn, nums)
    idx = np.minimum(idx, max(cap.nstreams - 1, 0))
    ok = sn[idx] == nums if cap.nstreams else np.zeros(len(nums), np.bool_)
    return np.asarray(idx[ok], np.int64)


def _not_seen_before(k: int, cap: Capture, paths: list[PathPair]) -> np.ndarray:
    """Per stream of capture point k: not the same connection as one of an earlier point."""
    keep = np.ones(cap.nstreams, np.bool_)
    for p in paths:
        if p.b == k:
            keep[p.sids_b] = False
    return keep


def _merge(diags: list[Diag], paths: list[PathPair], names: list[str]) -> list[Finding]:
    """The capture points' findings as one list: a RST or FIN shown made on the path
    replaces what either point concluded about its connection alone (other injected
    segments are told beside it), and a connection already reported at an earlier point is
    not reported again from a later one."""
    from tcpwhy.decode.table import FIN
    from tcpwhy.diagnose import injected_segment, middlebox_reset
    from tcpwhy.diagnose.pairing import other_point

    if not paths:  # one point, or points that share no connection: nothing to drop
        return [f for d in diags for f in d.findings]
    caps = [d.cap for d in diags]
    drop: list[np.ndarray] = [np.zeros(d.cap.nstreams, np.bool_) for d in diags]
    extra: list[Finding] = []
    for p in paths:
        for here, there in ((p.a, p.b), (p.b, p.a)):
            mine = [x for x in p.injected if (x.at == 0) == (here == p.a)]
            if not mine:
                continue
            views = {
                x.sid: other_point(p, caps, here, x.sid, x.partner_sid)
                for x in {x.sid: x for x in mine}.values()
            }
            resets = [x for x in mine if x.rst]
            reset_sids = {x.sid for x in resets}
            rest = [x for x in mine if not x.rst and x.sid not in reset_sids]
            also = [x for x in mine if not x.rst and x.sid in reset_sids]
            if resets:
                extra.extend(
                    middlebox_reset.from_path(
                        diags[here], resets, views, names[here], names[there], also
                    )
                )
            if rest:
                extra.extend(
                    injected_segment.from_path(diags[here], rest, views, names[here], names[there])
                )
            ended = resets + [
                x for x in rest if caps[here].table["flags"][x.row] & FIN
            ]  # the connection's end was the box's: what the points concluded goes
            drop[here][[x.sid for x in ended]] = True
            drop[there][[x.partner_sid for x in ended]] = True
    # partner stream at an earlier point, per stream of each later point
    partner: list[dict[int, np.ndarray]] = [{} for _ in diags]
    for p in paths:
        m = np.full(diags[p.b].cap.nstreams, -1, np.int64)
        m[p.sids_b] = p.sids_a
        partner[p.b][p.a] = m
    out: list[Finding] = []
    reported = [np.zeros(d.cap.nstreams, np.bool_) for d in diags]
    for k, d in enumerate(diags):
        for f in d.findings:
            sids = _sids_of(d.cap, f.streams)
            gone = drop[k][sids]
            for a, m in partner[k].items():
                pa = m[sids]
                gone |= (pa >= 0) & reported[a][np.maximum(pa, 0)]
            if gone.all() and len(sids):
                continue
            if gone.any():
                keep_nums = set(np.asarray(d.cap.stream_numbers)[sids[~gone]].tolist())
                f.streams = [s for s in f.streams if s in keep_nums]
                f.examples = [s for s in f.examples if s in keep_nums] or f.streams[:3]
                f.count = len(f.streams)
            reported[k][sids[~gone]] = True
            if paths:
                f.facts.setdefault("seen_at", _seen_at(k, sids[~gone], paths, names))
                attach_retransmissions(f, k, sids[~gone], paths, names)
            out.append(f)
    return out + extra


def _seen_at(k: int, sids: np.ndarray, paths: list[PathPair], names: list[str]) -> list[str]:
    """The capture points where a finding's connections were seen."""
    at = [names[k]]
    for p in paths:
        if p.a == k and np.isin(sids, p.sids_a).any():
            at.append(names[p.b])
        elif p.b == k and np.isin(sids, p.sids_b).any():
            at.append(names[p.a])
    return at


def diagnose_files(
    paths: Sequence[str],
    settings: Settings | None = None,
    progress: Progress | None = None,
    flt: DisplayFilter | None = None,
    pair: bool = True,
) -> Report:
    """Diagnose captures; with a display filter, only the connections that have at least one
    matching packet, each analysed whole (Wireshark's "limit to display filter").

    Captures taken at different points at the same time (the two ends of a path) are
    paired (`pairing`), unless `pair` is False: a connection seen at both is one connection
    with one finding, and what the path did between the points is measured."""
    tables: list[tuple[str, PacketTable]] = []
    stats_all: list[CaptureStats] = []
    sizes = [_plain_size(p) for p in paths]
    total = sum(sizes) if all(sizes) else None
    done = 0
    tracked: dict[int, dict[str, np.ndarray]] = {}
    # with a filter and one file: that file's rows already limited, and their stream numbers
    filtered: dict[int, np.ndarray] = {}
    spans: list[tuple[int, int, int]] = []  # per file: its TCP packets, first and last time
    for i, (p, size) in enumerate(zip(paths, sizes, strict=True)):
        st = CaptureStats()
        if len(paths) == 1:
            # one file is one capture point: its streams are tracked (without a filter) or
            # judged by the filter (with one) as it is read
            if flt is None:
                table, streams = _read_tracked(p, st, progress)
                tracked[i] = streams
                spans.append(_span(table))
            else:
                table, filtered[i], span = _read_filtered(p, st, flt, progress)
                spans.append(span)
            tables.append((p, table))
            release_freed()
            stats_all.append(st)
            done += size
            continue
        parts = []
        for t in iter_tables(p, st, prefetch=True):
            # only the diagnosis reads the table (a filter reads the files again per point)
            parts.append(_slim(t))
            if len(parts) % TRIM_EVERY == 0:
                release_freed()  # the chunks' buffers, freed into the heap as they go
            if progress:
                progress(f"reading {os.path.basename(p)}", done + st.bytes_read, total)
        tables.append((p, _join(parts, free=True)))
        spans.append(_span(tables[-1][1]))
        del parts
        release_freed()
        stats_all.append(st)
        done += size
    groups = sorted(_groups(tables), key=min)  # capture points in the order given
    caps: list[Capture] = []
    for g in groups:
        parts = [tables[i][1] for i in g]
        numbers = filtered.get(g[0])  # (a file read with the filter is its own group)
        file_of_row = _file_of_row([len(t) for t in parts])
        # the files' tables let go as they are joined (nothing reads them after): a capture
        # in three rotated parts was held twice at the peak (4.5 M packets: 300 MB more)
        table = _join(parts, free=True)
        del parts
        if flt is not None and numbers is None:
            # the point's files read again, as one capture, for the filter to judge
            if progress:
                progress(
                    f"filtering {', '.join(os.path.basename(tables[i][0]) for i in g)}", None, None
                )
            judged = _Judged()
            files = [tables[i][0] for i in g]
            for ch in packet_chunks(files, [CaptureStats() for _ in g], flt, analysis=False):
                judged.add(ch)
            if judged.rows != len(table):
                raise TcpwhyError(", ".join(files), "changed while it was read")
            table, numbers, keep = judged.limit(table)
            file_of_row = file_of_row[keep]
        cap = Capture(
            table,
            file_of_row,
            [tables[i][0] for i in g],
            numbers,
            tracked.get(g[0]),
            analyse_ahead=True,  # the rules ask for the analysis flags
        )
        if flt is None:  # the engine's own slim table: its addresses can be per stream
            cap.compact_addresses()
        caps.append(cap)
        release_freed()  # the stream tracker's chunks and the per-stream counts' temporaries
    names = [", ".join(c.files) for c in caps]
    pairs: list[PathPair] = []
    if pair and len(caps) > 1:
        if progress:
            progress("pairing the capture points", None, None)
        pairs = pair_captures(caps, names)
    # the connections' tally before the rules: its temporaries then come on top of the
    # captures alone, not of what the rules keep (a 3 M-SYN flood's peak was here)
    endings: dict[str, int] = {}
    nconn = 0
    for point, cap in enumerate(caps):
        keep = _not_seen_before(point, cap, pairs)
        nconn += int(keep.sum())
        for e, v in cap.endings(keep).items():
            endings[e] = endings.get(e, 0) + v
        del keep
    diags = []
    for cap in caps:
        if progress:
            progress(f"diagnosing {', '.join(os.path.basename(f) for f in cap.files)}", None, None)
        diags.append(run_rules(cap, settings))
        release_freed()
    findings = _merge(diags, pairs, names)
    findings.sort(key=lambda f: (-f.severity, f.first_ns))
    packets = sum(n for n, _, _ in spans)
    ts = [(lo, hi) for n, lo, hi in spans if n]
    undecoded: dict[str, int] = {}
    warnings: list[str] = []
    links: set[int] = set()
    for p, st in zip(paths, stats_all, strict=True):
        for k, v in st.skipped.items():
            undecoded[k] = undecoded.get(k, 0) + v
        warnings.extend(f"{p}: {w}" for w in st.warnings)
        links |= st.linktypes
    info = CaptureInfo(
        files=list(paths),
        packets=packets,
        frames=sum(st.frames for st in stats_all),
        connections=nconn,
        first_ns=min(lo for lo, _ in ts) if ts else 0,
        last_ns=max(hi for _, hi in ts) if ts else 0,
        link_types=sorted(links),
        undecoded=undecoded,
        warnings=warnings,
    )
    return Report(info, findings, endings, [p.to_json() for p in pairs], diags)


DIAGNOSIS_COLUMNS = (
    "frame",
    "ts_ns",
    "src_hi",
    "src_lo",
    "dst_hi",
    "dst_lo",
    "sport",
    "dport",
    "seq",
    "ack",
    "flags",
    "win",
    "opt_ws",
    "opt_mss",
    "opt_sack_perm",
    "opt_ts",
    "ip_ttl",
    "payload_len",
    "payload_cap",
    "payload_off",
)
"""The packet columns the diagnosis (stream tracking, TCP analysis, the rules) reads: a
quarter of the table's bytes per row, which is what a whole capture held in memory costs."""


TRIM_EVERY = 8
"""Chunks read between two `release_freed` calls: the chunks' freed buffers otherwise stay
in glibc's heap until the whole file is read (conns-heavy-half.pcap: 280 MB of them at
the end of reading, above the slim columns it keeps)."""


def _slim(t: PacketTable, copy: bool = True) -> PacketTable:
    """A chunk's diagnosis columns and captured payload bytes, copied out of the chunk's
    buffers (which hold every column and the raw frames) so those can be freed; the bytes
    of a plain file are left in it, read again for the few rows the rules read (a whole
    capture's payload was 292 MB of conns-heavy.pcap's 1 GB at the peak). Without `copy`,
    the columns are the chunk's own (for a caller that copies them out before it asks the
    reader for the next chunk)."""
    cols = {k: t.cols[k].copy() if copy else t.cols[k] for k in DIAGNOSIS_COLUMNS}
    frame = cols["frame"]
    if len(frame) and int(frame.max()) < 1 << 32:  # half the bytes for any real file's numbers
        cols["frame"] = frame.astype(np.uint32)
    out = t.in_file(cols)
    if out is None:
        out = PacketTable(cols, compact_payloads(cols, [(t.data, t.cols["payload_off"])]))
    out.icmp = t.icmp  # ICMP errors about TCP: a copy already, and few
    return out


def _read_tracked(
    path: str, st: CaptureStats, progress: Progress | None
) -> tuple[PacketTable, dict[str, np.ndarray]]:
    """A file's slim table and its `StreamTracker` columns, the streams tracked chunk by
    chunk as it is read. The address and port columns are checked against each stream's
    endpoints as they come and then dropped, so they never exist for the whole capture
    (conns-heavy.pcap: 36 bytes a packet, 155 MB, beside the tracker's columns at the
    peak); the table gets `StreamColumn`s in their place, as `Capture.compact_addresses`
    makes. A capture where that does not hold (ICMP errors opening streams, a flood's
    one-packet connections) ends with plain columns, as it would have without this.

    Each chunk's rows go straight into whole-capture columns (`_Growing`), sized from the
    file's length: joining chunk copies at the end wrote every byte twice and held both
    at the peak (conns-heavy.pcap: 0.3 s and 190 MB of it)."""
    from tcpwhy.diagnose.context import StreamConstants, compact_pays, narrow_streams
    from tcpwhy.tcp.streams import StreamTracker

    size = _plain_size(path) or None
    tracker = StreamTracker()
    rows, tracked = _Growing(), _Growing()
    data: list[np.ndarray] = []  # payload bytes of chunks not read from the file again
    nbytes = 0
    icmp_rows: list[tuple[int, PacketTable]] = []
    icmp: list[dict[str, np.ndarray]] = []
    ends: _Endpoints | None = _Endpoints()
    constants = StreamConstants()  # the tracker's columns that are one value per stream
    # the reader reuses a chunk's buffers once the next chunk is asked for: by then every
    # column kept is copied out (`rows.add`, the tracker's and `ends`' own arrays), so the
    # chunk's columns are read where they are, not copied first (a tenth of a second of
    # the thread the reader waits for, on 4.3 M packets)
    for t in iter_tables(path, st, reuse=True, prefetch=True):
        s = _slim(t, copy=False)
        got = narrow_streams(tracker.feed(s))
        constants.take(s, got)
        if tracker.icmp_out is not None:
            icmp.append(tracker.icmp_out)
        # plain columns from here on: after JUDGE_ROWS rows when per stream will not pay (as
        # `place` would judge at the end; checking each chunk and expanding at the end cost a
        # 3 M-SYN flood 0.8 s), at ICMP rows, or at a chunk that does not compact
        if ends is not None and (
            (rows.n >= JUDGE_ROWS and not compact_pays(ends.n, rows.n))
            or tracker.icmp_out is not None
            or not ends.take(s, got)
        ):
            ends.restore(rows, tracked)
            ends = None
        if s.icmp is not None:
            icmp_rows.append((rows.n, s.icmp))
        if len(s.data):
            s.cols["payload_off"] = shift_offsets(s.cols["payload_off"], nbytes)
            data.append(s.data)
            nbytes += len(s.data)
        if size and st.bytes_read:
            # room for the whole file at the rate so far; more at the first chunk, as the
            # reader may be a chunk ahead of it (`bytes_read`) and room is address space
            rate = (rows.n + len(s)) / st.bytes_read
            rows.expect = tracked.expect = int(rate * size * (2.5 if not rows.n else 1.1)) + 4096
            # no more conversations than packets: the tracker's slot arrays then grow once
            # (a 3 M-SYN flood's grew by copies: a second of page faults and copying)
            tracker.expect = rows.expect
        rows.add(s.cols)
        tracked.add(got)
        del s, got
        if progress:
            progress(f"reading {os.path.basename(path)}", st.bytes_read, size)
    cols = rows.done()
    table = (
        PacketTable(cols, np.concatenate(data) if data else np.zeros(0, np.uint8))
        if cols
        else _slim(PacketTable.empty())
    )
    table.icmp = join_icmp(icmp_rows)
    streams = tracked.done()
    if icmp:
        streams["icmp_stream"] = np.concatenate([x["stream"] for x in icmp])
        streams["icmp_dir"] = np.concatenate([x["dir"] for x in icmp])
    if ends is not None and len(table):
        ends.place(table, streams, plain=not compact_pays(ends.n, len(table)))
    ns = int(streams["stream"].max()) + 1 if len(table) else 0
    streams.update(constants.columns(ns))
    return table, streams


JUDGE_ROWS = 1 << 18
"""Rows read before `_read_tracked` judges whether per-stream address columns will pay
(a quarter of a million: checking a 3 M-SYN flood's first million rows stream by stream,
and giving them their columns back, cost its reading 0.3 s)."""


class _Growing:
    """Columns that chunks of rows are appended to, in arrays with room for `expect` rows
    (grown by half when that was short). Room never written is never resident, so a
    generous `expect` costs address space only.

    A column that is zero on every row so far is not written until a row is not (the high
    halves of IPv4 addresses, the payload columns of a SYN flood): `done` gives it as
    `sparse_zeros`, an array whose pages come only when written. A 3 M-SYN flood's
    `analyze` wrote 28 bytes of zeros a row into memory touched for the first time."""

    def __init__(self) -> None:
        self.cols: dict[str, np.ndarray] = {}
        self.zero: dict[str, np.ndarray] = {}  # all-zero columns so far: an empty row of each
        self.names: dict[str, None] = {}  # every column, in the order first given
        self.n = 0
        self.expect = 1 << 16

    def add(self, cols: dict[str, np.ndarray]) -> None:
        m = len(next(iter(cols.values()))) if cols else 0
        need = self.n + m
        for k, v in cols.items():
            self.names.setdefault(k)
            a = self.cols.get(k)
            if a is None:
                if not m:
                    continue  # (an empty chunk leaves a column as it was)
                z = self.zero.get(k)
                # zero so far (or the first rows), of the same type, and zero in this chunk
                same = (z is None and not self.n) or (z is not None and z.dtype == v.dtype)
                if same and not v.any():
                    # an empty view of the chunk's column (its type and row shape); it keeps
                    # that copy of the column alive until the next chunk. A fresh empty
                    # array instead peaked 40 MB higher on the 3 M-SYN flood in most runs
                    # (744 against 784 MB: the allocator's layout, not the array itself)
                    self.zero[k] = v[:0]
                    continue
                a = self._written(k, v)
            if a.dtype != np.result_type(a.dtype, v.dtype) or len(a) < need:
                room = max(need, self.expect, len(a) * 3 // 2)
                grown = room_for((room, *v.shape[1:]), np.result_type(a.dtype, v.dtype))
                grown[: self.n] = a[: self.n]
                self.cols[k] = a = grown
            a[self.n : need] = v
        self.n = need

    def _written(self, k: str, v: np.ndarray) -> np.ndarray:
        """Column k as an array with room: its rows so far zero if it was all zero."""
        z = self.zero.pop(k, None)
        dtype = v.dtype if z is None else np.result_type(z.dtype, v.dtype)
        a = room_for((max(self.n + len(v), self.expect), *v.shape[1:]), dtype)
        if z is not None:
            a[: self.n] = 0
        self.cols[k] = a
        return a

    def put(self, k: str, v: np.ndarray) -> None:
        """A whole column for the rows so far."""
        self.names.setdefault(k)
        self.cols.pop(k, None)
        self.zero.pop(k, None)
        if len(v) and not v.any():
            self.zero[k] = v[:0]
            return
        a = room_for((max(len(v), self.expect), *v.shape[1:]), v.dtype)
        a[: len(v)] = v
        self.cols[k] = a

    def done(self) -> dict[str, np.ndarray]:
        out = {}
        for k in self.names:
            z = self.zero.get(k)
            if z is not None:
                out[k] = sparse_zeros((self.n, *z.shape[1:]), z.dtype)
            elif k in self.cols:
                out[k] = self.cols[k][: self.n]
        return out


class _Endpoints:
    """Per stream, the endpoint its dir-0 rows come from and the one they go to (each
    address and port column), gathered as the streams start; the chunks' own address
    columns are checked against them and dropped (`_read_tracked`)."""

    def __init__(self) -> None:
        self.n = 0  # streams so far
        self.cols: dict[str, np.ndarray] = {}

    def take(self, t: PacketTable, got: dict[str, np.ndarray]) -> bool:
        """Record the chunk's new streams, check its rows, drop its address columns; False
        (nothing dropped) when a row disagrees or streams are not numbered as they start."""
        from tcpwhy.diagnose.context import ADDRESS_COLUMNS, PEER

        sid, pdir = got["stream"], got["dir"]
        new = np.flatnonzero(got["new"])
        if not np.array_equal(sid[new], np.arange(self.n, self.n + len(new))):
            return False
        fwd = pdir[new] == 0
        m = self.n + len(new)
        for k in ADDRESS_COLUMNS:
            col = self.cols.get(k)
            if col is None or len(col) < m:
                grown = np.zeros(max(m, 2 * (len(col) if col is not None else 1024)), t[k].dtype)
                if col is not None:
                    grown[: self.n] = col[: self.n]
                self.cols[k] = col = grown
            col[self.n : m] = np.where(fwd, t[k][new], t[PEER[k]][new])
        if not kernels.endpoints_agree(
            sid,
            pdir,
            m,
            tuple(t[k] for k in ENDPOINT_COLUMNS),
            tuple(self.cols[k] for k in ENDPOINT_COLUMNS),
        ):
            return False
        self.n = m
        for k in ADDRESS_COLUMNS:
            del t.cols[k]
        return True

    def restore(self, rows: _Growing, tracked: _Growing) -> None:
        """Give the rows read so far their address columns back."""
        from tcpwhy.diagnose.context import ADDRESS_COLUMNS

        if not rows.n:
            return
        got = tracked.done()
        back = got["dir"] != 0
        for k in ADDRESS_COLUMNS:
            rows.put(k, self._expand(k, got["stream"], back))

    def _expand(self, k: str, sid: np.ndarray, back: np.ndarray) -> np.ndarray:
        from tcpwhy.diagnose.context import PEER

        return np.where(back, self.cols[PEER[k]][sid], self.cols[k][sid])

    def place(self, t: PacketTable, streams: dict[str, np.ndarray], plain: bool) -> None:
        """The whole table's address columns: `StreamColumn`s, or with `plain` (too few
        packets per stream for them to pay) arrays."""
        from tcpwhy.diagnose.context import ADDRESS_COLUMNS, PEER, StreamColumn

        sid, pdir = streams["stream"], streams["dir"]
        cols = {k: c[: self.n] for k, c in self.cols.items()}
        self.cols = cols
        for k in ADDRESS_COLUMNS:
            if plain:
                t.cols[k] = self._expand(k, sid, pdir != 0)
            else:
                t.cols[k] = StreamColumn(cols[k], cols[PEER[k]], sid, pdir, cols[k].dtype)  # type: ignore[assignment]


def _join(parts: list[PacketTable], free: bool = False) -> PacketTable:
    """`PacketTable.concat` for slim tables (whose payload bytes are compact: each row's
    right after the previous row's); with `free`, each part's columns and bytes are dropped
    as they are copied (the parts are then unusable), so a capture is not held twice at
    the peak."""
    icmp = concat_icmp(parts)  # placed among the joined rows, before empty parts go
    parts = [t for t in parts if len(t)]
    if len(parts) == 1:
        parts[0].icmp = icmp
        return parts[0]
    if not parts:
        out = _slim(PacketTable.empty())
        out.icmp = icmp
        return out
    cols = {}
    base = np.cumsum([0] + [len(t.data) for t in parts])
    for k in [k for k in DIAGNOSIS_COLUMNS if k in parts[0].cols]:
        if k == "payload_off":
            cols[k] = np.concatenate(
                [shift_offsets(t.cols[k], b) for t, b in zip(parts, base, strict=False)]
            )
        else:
            cols[k] = np.concatenate([t.cols[k] for t in parts])
        if free:
            for t in parts:
                del t.cols[k]
            release_freed()
    data = np.empty(int(base[-1]), np.uint8)
    for j, (t, b) in enumerate(zip(parts, base, strict=False)):
        data[b : b + len(t.data)] = t.data
        if free:
            t.data = np.zeros(0, np.uint8)
            if j % TRIM_EVERY == TRIM_EVERY - 1:
                release_freed()  # else every part's bytes stay in the heap beside the copy
    return PacketTable(cols, data, icmp)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None


def release_freed() -> None:
    """Give the heap's free pages back to the system (glibc's malloc_trim; elsewhere nothing).

    A capture is read in chunks whose columns are a few MB each: glibc serves them from its
    heap once its mmap threshold has risen, and keeps them after they are freed, so the chunks
    of a whole capture stayed resident beside the joined table (conns-heavy.pcap: 1.46 GB at
    the join, of which 0.6 GB was freed chunks)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def _plain_size(path: str) -> int:
    """Size of an uncompressed regular file (the reader's byte count matches it), else 0."""
    try:
        if path == "-" or not os.path.isfile(path):
            return 0
        with open(path, "rb") as f:
            if f.read(2) == b"\x1f\x8b":
                return 0
        return os.path.getsize(path)
    except OSError:
        return 0


def _file_of_row(sizes: list[int]) -> np.ndarray:
    """Per row, the number of its file among a capture point's files: for one file a
    read-only zero of no memory per row (8 MB at 4 M packets otherwise)."""
    if len(sizes) == 1:
        return np.broadcast_to(np.int16(0), (sizes[0],))
    return np.repeat(np.arange(len(sizes), dtype=np.int16), sizes)


def _span(t: PacketTable) -> tuple[int, int, int]:
    """A table's TCP packets, and its first and last time (0 without packets)."""
    if not len(t):
        return 0, 0, 0
    ts = t["ts_ns"]
    return len(t), int(ts.min()), int(ts.max())


def _read_filtered(
    path: str, st: CaptureStats, flt: DisplayFilter, progress: Progress | None
) -> tuple[PacketTable, np.ndarray, tuple[int, int, int]]:
    """A file's slim table limited to the streams with a matching packet, their tcp.stream
    numbers and the whole file's `_span`.

    The filter judges each chunk as it is read (`packet_chunks`, as `packets -Y` and
    `conns -Y` do), and of each chunk only the diagnosis's columns and its stream numbers
    are kept until the matching streams are known: every column of every chunk, joined and
    then filtered, took 18 s and 1.6 GB for a 2.2 M-packet capture of short connections
    where the filter matched none (1.1 s and 240 MB without the filter). `frame.time_relative`
    counts from the file's first frame, as in those views and in Wireshark."""
    size = _plain_size(path) or None
    parts: list[PacketTable] = []
    judged = _Judged()
    for ch in packet_chunks([path], [st], flt, analysis=False):
        parts.append(_slim(ch.table, copy=True))  # the reader reuses the chunk's buffers
        judged.add(ch)
        if len(parts) % TRIM_EVERY == 0:
            release_freed()
        if progress:
            progress(f"reading {os.path.basename(path)}", st.bytes_read, size)
    table = _join(parts, free=True)
    del parts
    span = _span(table)
    out, matched, _ = judged.limit(table)
    return out, matched, span


class _Judged:
    """A display filter's verdict on a capture point's chunks (`packet_chunks`, in order):
    each row's stream and the streams matched, kept until the last chunk decides which
    streams stay (Wireshark's "limit to display filter": every packet of a stream with one
    matching packet, or with a matching ICMP error about it)."""

    def __init__(self) -> None:
        self.sids: list[np.ndarray] = []  # per chunk: each row's stream
        self.icmp_sids: list[np.ndarray] = []  # per chunk with ICMP errors: their streams
        self.hits: list[np.ndarray] = []  # per chunk: the streams it matched

    def add(self, ch: PacketChunk) -> None:
        t, sid = ch.table, ch.streams["stream"]
        assert ch.keep is not None
        self.sids.append(sid.astype(np.int32) if len(sid) and int(sid.max()) < 1 << 31 else sid)
        self.hits.append(unique_sorted(sid[ch.keep]))
        icmp = ch.tracker.icmp_out
        if t.icmp is not None and icmp is not None:  # (a chunk's own ICMP rows, in order)
            isid = icmp["stream"]
            self.icmp_sids.append(isid.copy())
            if ch.icmp_keep is not None:  # ICMP errors select the streams they are about
                self.hits.append(isid[ch.icmp_keep & (isid >= 0)])

    @property
    def rows(self) -> int:
        return sum(len(s) for s in self.sids)

    def limit(self, table: PacketTable) -> tuple[PacketTable, np.ndarray, np.ndarray]:
        """The rows of `table` (the chunks' rows, joined) of the streams matched, those
        streams' numbers (local stream k is the k-th of them), and the rows' mask."""
        matched = (
            unique_sorted(np.concatenate(self.hits)).astype(np.int64)
            if self.hits
            else np.zeros(0, np.int64)
        )
        keep = np.isin(np.concatenate(self.sids), matched) if self.sids else np.zeros(0, np.bool_)
        out = table.take(keep)
        if table.icmp is not None and self.icmp_sids:
            out.icmp = icmp_kept(table, keep, np.isin(np.concatenate(self.icmp_sids), matched))
        return out, matched, keep


def _limit_to_filter(
    table: PacketTable, flt: DisplayFilter, first: int | None
) -> tuple[PacketTable, np.ndarray, np.ndarray]:
    """`_Judged.limit` of a whole capture point's table, judged as one chunk; `first`: its
    first frame, of any protocol (``frame.time_relative``)."""
    from tcpwhy.views import tracked_chunks

    judged = _Judged()
    judged.add(next(tracked_chunks([table], flt, first_ts_ns=first, analysis=False)))
    return judged.limit(table)


def _groups(tables: list[tuple[str, PacketTable]]) -> list[list[int]]:
    """Indices of files to join: in time order, a file that starts before the previous one
    ended opens a separate group (another capture point)."""
    spans = []
    for i, (_, t) in enumerate(tables):
        if len(t):
            spans.append((int(t["ts_ns"].min()), int(t["ts_ns"].max()), i))
    spans.sort()
    groups: list[list[int]] = []
    ends: list[int] = []
    for lo, hi, i in spans:
        for g, end in enumerate(ends):
            if lo >= end:
                groups[g].append(i)
                ends[g] = hi
                break
        else:
            groups.append([i])
            ends.append(hi)
    if not groups and tables:
        groups = [[0]]
    return groups


def eprint(msg: str) -> None:
    print(msg, file=sys.stderr)
