"""The views of a capture, computed in one place for the command line and the Python API.

Each view has one function here, and both sides call it: the commands (`tcpwhy packets`,
`conns`, `flow`, `analyze`) format what it yields, as they read it, and `tcpwhy.api`
keeps it as tables and objects. A packet, a connection record, a finding or a ladder is
therefore computed by the same code whichever way it is asked for, and the two cannot
disagree; tests/test_api_cli.py holds both to that.

    packet_chunks        the TCP packets, chunk by chunk: streams, expert analysis, filter mask
    tracked_chunks       the same for tables already read (one stream numbering), the step
                         every streaming view takes: tracker, analysis, filter context, mask
    connection_batches   the connection records, batch by batch (one file streamed; several
                         grouped into capture points and paired, as `analyze` does), with
                         the options `connection_options` and `record_options` derive
    reading              the readers' options for a block (``--no-reassemble``)
    flow_model           the ladder of one connection (two capture points: the paired ladder)
    diagnosis            the findings (`tcpwhy.diagnose.engine`)

Not part of the stable API (`tcpwhy.api`'s names are): these may change with the commands.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, overload

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from tcpwhy.decode.table import CaptureStats, PacketTable
    from tcpwhy.diagnose import model
    from tcpwhy.diagnose.engine import Progress
    from tcpwhy.diagnose.registry import Settings
    from tcpwhy.filter import DisplayFilter
    from tcpwhy.report.flow import Ladder
    from tcpwhy.report.flow_pair import PairView
    from tcpwhy.tcp.analysis import Analysis
    from tcpwhy.tcp.records import ConnColumns, RecordOptions
    from tcpwhy.tcp.streams import StreamTracker

Batch = tuple[int, "ConnColumns", "list[list[str]] | None"]
"""A batch of connection records: its capture point's index, the records, and each record's
``seen_at`` (None with one capture point)."""
UnbuiltBatch = tuple[int, "ConnColumns | Callable[[], ConnColumns]", "list[list[str]] | None"]
"""A `Batch` whose records may still be to build (`connection_batches(unbuilt=True)`)."""


@dataclass
class PacketChunk:
    """One chunk of packets as read: the reader reuses its buffers for the next chunk, so
    whoever keeps a column copies it."""

    table: PacketTable
    streams: dict[str, npt.NDArray[Any]]
    """`StreamTracker.feed`'s columns: stream, dir, rel_seq, rel_ack, win_scaled."""
    analysis: Analysis | None
    """Wireshark's expert analysis (None when neither asked for nor needed by the filter)."""
    keep: npt.NDArray[np.bool_] | None
    """The display filter's verdict per row (None without a filter: every row)."""
    tracker: StreamTracker
    """The tracker fed so far (its ICMP columns name the connections ICMP errors are about)."""
    first_ts_ns: int | None
    """The capture's first frame (``frame.time_relative`` counts from it)."""
    icmp_keep: npt.NDArray[np.bool_] | None = None
    """The display filter's verdict per ICMP error about TCP (`PacketTable.icmp`'s rows;
    None without a filter or without such errors)."""


def packet_chunks(
    sources: Sequence[str],
    stats: Sequence[CaptureStats],
    flt: DisplayFilter | None = None,
    *,
    analysis: bool = True,
) -> Iterator[PacketChunk]:
    """The TCP packets of `sources` (rotated parts of one capture, in order: one timeline,
    one stream numbering), chunk by chunk as read, with their streams, analysis and the
    filter's mask. `tcpwhy packets` formats each chunk; `Capture.packets` joins them."""
    from tcpwhy.capture import iter_tables

    tables = (
        t
        for src, st in zip(sources, stats, strict=True)
        for t in iter_tables(src, st, reuse=True, prefetch=True)
    )
    return tracked_chunks(
        tables,
        flt,
        first_ts_ns=lambda: next((s.first_ts_ns for s in stats if s.first_ts_ns is not None), None),
        analysis=analysis,
    )


def tracked_chunks(
    tables: Iterable[PacketTable],
    flt: DisplayFilter | None = None,
    *,
    first_ts_ns: Callable[[], int | None] | int | None = None,
    analysis: bool = True,
    tracker: StreamTracker | None = None,
) -> Iterator[PacketChunk]:
    """Each table of one capture (capture order, one stream numbering) with its streams, its
    expert analysis (when asked for or the filter needs it) and the display filter's verdict
    on its TCP rows and its ICMP errors: the one place a view goes from packets to what a
    filter matches. `first_ts_ns`: the capture's first frame, or a function giving it once
    the chunk is read; `tracker`: one already fed (a connection builder's own)."""
    from tcpwhy.filter import chunk_mask, icmp_mask
    from tcpwhy.tcp.analysis import Analyzer
    from tcpwhy.tcp.streams import StreamTracker

    tracker = tracker if tracker is not None else StreamTracker()
    need = analysis or (flt is not None and "analysis" in flt.needs)
    analyzer = Analyzer() if need else None
    for t in tables:
        first = first_ts_ns() if callable(first_ts_ns) else first_ts_ns
        s = tracker.feed(t)
        a = analyzer.feed(t, s) if analyzer is not None else None
        keep = icmp_keep = None
        if flt is not None:
            keep = chunk_mask(flt, t, s, a, first)
            if t.icmp is not None and tracker.icmp_out is not None:
                icmp_keep = icmp_mask(flt, t.icmp, tracker.icmp_out["stream"], first)
        yield PacketChunk(t, s, a, keep, tracker, first, icmp_keep)


def connection_options(
    boundaries: str | None = None,
    *,
    zeek_format: bool = False,
    check_checksums: bool = False,
    ignore_checksums: bool = False,
    max_active: int | None = None,
) -> dict[str, Any]:
    """The connection builder's options as `tcpwhy conns` and `Capture.connections` set
    them: bad checksums drop packets where records are cut as Zeek cuts them (`boundaries`
    ``zeek``, or a Zeek format without `boundaries`), as Zeek does without -C, unless
    `ignore_checksums`; `check_checksums` drops them anyway (tshark does not check them)."""
    if boundaries not in (None, "stream", "zeek"):
        raise ValueError(f"boundaries must be 'stream' or 'zeek', not {boundaries!r}")
    zeek_cut = boundaries == "zeek" or (boundaries is None and zeek_format)
    options: dict[str, Any] = {
        "check_checksums": not ignore_checksums and (check_checksums or zeek_cut)
    }
    if boundaries:
        options["boundaries"] = boundaries
    if max_active:
        options["max_active"] = max_active
    return options


def record_options(
    seed: int | None = None,
    community_id_seed: int = 0,
    local_nets: str | Sequence[str] | None = None,
) -> RecordOptions:
    """The derived fields' options as ``conns --seed``, ``--community-id-seed`` and
    ``--local-nets`` set them (ValueError for a seed out of 0..65535 or a network that is
    not CIDR; ``private``: Zeek's private address space)."""
    from tcpwhy.tcp.records import RecordOptions, parse_local_nets

    if not 0 <= int(community_id_seed) <= 0xFFFF:
        raise ValueError(f"community_id_seed must be from 0 to 65535, not {community_id_seed}")
    nets = None if local_nets is None else parse_local_nets(local_nets)
    return RecordOptions(uid_seed=seed, community_id_seed=int(community_id_seed), local_nets=nets)


@contextmanager
def reading(reassemble: bool | None) -> Iterator[None]:
    """Captures read in this block join IP fragments or not (``--no-reassemble``: the
    readers' default, which the command line sets for the whole process); None leaves the
    default as it is. Process-wide while the block runs: not for threads reading at once."""
    from tcpwhy.capture.options import reassemble_default, set_reassemble_default

    if reassemble is None:
        yield
        return
    old = reassemble_default()
    set_reassemble_default(bool(reassemble))
    try:
        yield
    finally:
        set_reassemble_default(old)


@overload
def connection_batches(
    files: Sequence[str],
    stats: Sequence[CaptureStats],
    flt: DisplayFilter | None = None,
    *,
    pair: bool = True,
    record_options: RecordOptions | None = None,
    icmp: list[dict[int, dict[str, int]]] | None = None,
    rotated: bool = False,
    threaded: bool = False,
    unbuilt: Literal[False] = False,
    **options: Any,
) -> tuple[int, Iterator[Batch]]: ...
@overload
def connection_batches(
    files: Sequence[str],
    stats: Sequence[CaptureStats],
    flt: DisplayFilter | None = None,
    *,
    pair: bool = True,
    record_options: RecordOptions | None = None,
    icmp: list[dict[int, dict[str, int]]] | None = None,
    rotated: bool = False,
    threaded: bool = False,
    unbuilt: bool,
    **options: Any,
) -> tuple[int, Iterator[UnbuiltBatch]]: ...
def connection_batches(
    files: Sequence[str],
    stats: Sequence[CaptureStats],
    flt: DisplayFilter | None = None,
    *,
    pair: bool = True,
    record_options: RecordOptions | None = None,
    icmp: list[dict[int, dict[str, int]]] | None = None,
    rotated: bool = False,
    threaded: bool = False,
    unbuilt: bool = False,
    **options: Any,
) -> tuple[int, Iterator[Batch]] | tuple[int, Iterator[UnbuiltBatch]]:
    """The connection records of captures: how many capture points they are, and the record
    batches (`Batch`) as they finish. One file is streamed (records leave as their
    connections end, memory bounded by the connections open at once); several are grouped
    as `analyze` groups them (rotated files joined, files overlapping in time other capture
    points) and paired unless `pair` is False (`tcpwhy.report.conns_points`). With a display
    filter, the connections with a matching packet, each whole. `icmp`, when given, is
    filled with one dict per capture point: the ICMP errors counted per stream. `options`:
    `tcpwhy.tcp.connections.ConnectionBuilder`'s (boundaries, checksums, max_active).
    `rotated`: the files are parts of one capture, in the order given, whatever their times
    (a fleet's capture point, ``analyze --parquet``): one point, one builder over them all.
    `unbuilt`: one file read in turn gives its batches still to build (`connection_jobs`),
    for a writer that builds them on a thread of its own.
    `threaded`: the records are built on a second thread (`iter_connection_columns`), for a
    reader that holds them all: a reader that writes them out as they come uses that core
    already, and on a SYN flood the batches in flight on two threads cost a fifth more
    memory (1.0 GB against 0.84) for no gain in speed."""
    from tcpwhy.tcp.records import DEFAULT_OPTIONS

    ropts = record_options if record_options is not None else DEFAULT_OPTIONS
    if rotated and len(files) != 1:
        from tcpwhy.capture import iter_tables
        from tcpwhy.tcp.connections import iter_connection_columns, reading_options

        if flt is not None:
            raise ValueError("rotated parts are read whole: no display filter")
        _count_icmp(icmp, options)
        how = reading_options(options)
        tables = (
            t
            for f, st in zip(files, stats, strict=True)
            for t in iter_tables(f, st, reuse=True, **how)
        )
        found = iter_connection_columns(
            tables, stats[0] if stats else None, threaded=threaded, **options
        )
        return 1, ((0, c.with_options(ropts), None) for c in found)
    if len(files) == 1:
        from tcpwhy.capture import iter_tables
        from tcpwhy.tcp.connections import iter_connection_columns, reading_options

        src, st = files[0], stats[0]
        if flt is not None or not threaded:
            jobs = connection_jobs(src, st, flt, record_options=ropts, icmp=icmp, **options)
            if unbuilt:
                return 1, ((0, job, None) for job in jobs)
            return 1, ((0, job(), None) for job in jobs)
        _count_icmp(icmp, options)
        it = iter_connection_columns(
            iter_tables(src, st, reuse=True, prefetch=True, **reading_options(options)),
            st,
            threaded=threaded,
            **options,
        )
        return 1, ((0, c.with_options(ropts), None) for c in it)
    from tcpwhy.report.conns_points import point_batches, read_points

    points = read_points(list(files), list(stats), **options)
    if icmp is not None:
        icmp[:] = [{} for _ in points]
    return len(points), point_batches(points, stats[0], flt, ropts, pair, icmp, **options)


def connection_jobs(
    file: str,
    stats: CaptureStats,
    flt: DisplayFilter | None = None,
    *,
    record_options: RecordOptions | None = None,
    icmp: list[dict[int, dict[str, int]]] | None = None,
    **options: Any,
) -> Iterator[Callable[[], ConnColumns]]:
    """`connection_batches` of one file, each batch still to build (with `record_options`)
    when its connections end: the batches are the reading's own, so a writer may build them
    on its own thread (`tcpwhy.report.conns`). `icmp` is set up at once, and filled as the
    file is read."""
    import functools

    from tcpwhy.capture import iter_tables
    from tcpwhy.report.conns import filtered_jobs
    from tcpwhy.tcp.connections import iter_connection_jobs, reading_options
    from tcpwhy.tcp.records import DEFAULT_OPTIONS

    ropts = record_options if record_options is not None else DEFAULT_OPTIONS
    _count_icmp(icmp, options)
    if flt is not None:
        jobs = filtered_jobs(file, stats, flt, **options)
    else:
        tables = iter_tables(file, stats, reuse=True, prefetch=True, **reading_options(options))
        jobs = iter_connection_jobs(tables, stats, **options)
    return (functools.partial(_built_with, job, ropts) for job in jobs)


def _count_icmp(icmp: list[dict[int, dict[str, int]]] | None, options: dict[str, Any]) -> None:
    """With `icmp`, the one capture point's ICMP counts, which the builder fills as it reads
    (its `icmp_counts`)."""
    if icmp is not None:
        icmp[:] = [{}]
        options["icmp_counts"] = icmp[0]


def built(c: ConnColumns | Callable[[], ConnColumns]) -> ConnColumns:
    """A batch, built if it was handed over still to build (`UnbuiltBatch`)."""
    return c() if callable(c) else c


def _built_with(job: Callable[[], ConnColumns], options: RecordOptions) -> ConnColumns:
    return job().with_options(options)


def flow_model(
    files: Sequence[str],
    stream: int,
    stats: Sequence[CaptureStats],
    flt: DisplayFilter | None = None,
    *,
    pair: bool = True,
    unpaired: list[str] | None = None,
) -> Ladder | PairView:
    """The ladder of tcp.stream `stream`: one file's (with a display filter, the packets it
    does not match folded away), or, with several files, the connection between two capture
    points when another point saw it (`tcpwhy.report.flow_pair.build_flow`; `unpaired`
    gets the point's name when none did)."""
    if len(files) == 1:
        from tcpwhy.report.flow import build_ladder

        return build_ladder(files[0], stream, stats[0], flt)
    from tcpwhy.report.flow_pair import build_flow

    return build_flow(list(files), stream, list(stats), pair, unpaired)


def diagnosis(
    files: Sequence[str],
    settings: Settings,
    flt: DisplayFilter | None = None,
    *,
    pair: bool = True,
    progress: Progress | None = None,
) -> model.Report:
    """The findings of captures (rotated files joined, capture points of one path paired
    unless `pair` is False), by `tcpwhy.diagnose.engine`."""
    from tcpwhy.diagnose.engine import diagnose_files

    return diagnose_files(list(files), settings, progress, flt, pair=pair)
