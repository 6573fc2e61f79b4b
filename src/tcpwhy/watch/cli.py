"""`tcpwhy watch`: findings from the wire (or a growing capture) while it happens.

Exit status: 0 nothing of severity warning or above, 1 such findings (or, before any
packet, not permitted to capture), 2 bad input (file, interface, filter), 130 / 143
interrupted by Ctrl-C / SIGTERM (after the summary).
"""

from __future__ import annotations

import argparse
import gc
import queue
import signal
import sys
import threading
import time
from types import FrameType
from typing import Any

from tcpwhy.cli_helpers import (
    Subcommands,
    nonnegative_float,
    positive_float,
    positive_int,
    shown,
)
from tcpwhy.errors import TcpwhyError

NS = 1_000_000_000
BUFFER_MB = 32.0  # the kernel's capture ring: ~0.3 s of a busy 1 Gbit/s link
DRAIN = 64  # decoded reads fed to the tracker before time passes (one release for them all)


class Terminated(Exception):
    """SIGTERM arrived: stop as for Ctrl-C, with status 143."""


_signalled: list[int] = []


def _on_signal(signum: int, frame: FrameType | None) -> None:
    """Noted only: raised between two chunks (`_stop_if_signalled`), never in the middle of
    the tracker's update, whose arrays must stay consistent for the final diagnosis."""
    _signalled.append(signum)


def _stop_if_signalled() -> None:
    if _signalled:
        if _signalled[0] == signal.SIGINT:
            raise KeyboardInterrupt
        raise Terminated()


def _follow(source: str, watcher: Any, stats: Any, duration: float | None, engine: Any) -> None:
    """Read a stream on a thread; the main thread diagnoses, and lets the capture clock run
    on while no packet arrives (the last packet's time plus the wall time since), so a
    connection's linger or idle time ends even on a quiet wire."""
    from tcpwhy.capture import iter_tables

    q: queue.Queue[Any] = queue.Queue(maxsize=64)
    done = object()

    def read() -> None:
        try:
            for t in iter_tables(source, stats, chunk_bytes=1 << 20):
                q.put(t)
        except BaseException as exc:  # handed to the main thread, raised there
            q.put(exc)
        q.put(done)

    th = threading.Thread(target=read, name="watch-reader", daemon=True)
    th.start()
    start = time.monotonic()
    last_ns = 0
    last_wall = time.monotonic()
    while True:
        if duration is not None and time.monotonic() - start >= duration:
            return
        try:
            _stop_if_signalled()
            item = q.get(timeout=0.05)
        except queue.Empty:
            if last_ns:
                watcher.tick(last_ns + int((time.monotonic() - last_wall) * NS))
            if engine is not None:
                engine.poll(watcher)
            continue
        # what else is queued is taken too, and time passes once for all of it: with an
        # immediate capture, a busy link arrives as many small reads
        items = [item]
        while len(items) < DRAIN and items[-1] is not done:
            try:
                items.append(q.get_nowait())
            except queue.Empty:
                break
        for k, item in enumerate(items):
            if item is done:  # finish() releases what the last ones fed
                return
            if isinstance(item, BaseException):
                raise item
            if len(item):
                last_ns = int(item["ts_ns"].max())
                last_wall = time.monotonic()
            watcher.chunk(item, tick=k == len(items) - 1)
        if engine is not None:
            engine.poll(watcher)


def cmd_watch(args: argparse.Namespace) -> int:
    from tcpwhy.decode.table import CaptureStats
    from tcpwhy.diagnose.registry import Settings
    from tcpwhy.watch.core import Watcher, warm
    from tcpwhy.watch.groups import Groups
    from tcpwhy.watch.tracker import Limits

    if (args.read is None) == (args.interface is None):
        raise TcpwhyError("watch", "give one of -i IFACE or -r FILE|-")
    if args.read is not None and (
        args.filter or args.snaplen is not None or args.buffer_size != BUFFER_MB
    ):
        raise TcpwhyError("watch", "-f, -s and -B apply to -i only")
    limits = Limits(idle_s=args.idle, max_conns=args.max_conns, max_rows=args.max_rows)
    keeper = tee = None
    if args.keep is not None:
        from tcpwhy.watch.keep import MB, Keeper, Lockstep, Tee, check_dir

        check_dir(args.keep)  # an unwritable directory is one line before anything runs
        keeper = Keeper(args.keep, int(args.keep_max * MB), args.keep_before, err=sys.stderr)
    metrics = engine = None
    # the capture as the user named it: a URL, not the copy read (`urls_copied`)
    where = shown(args.read) if args.read is not None else args.interface
    status = 0
    _signalled.clear()
    old_term = signal.signal(signal.SIGTERM, _on_signal)
    old_int = signal.signal(signal.SIGINT, _on_signal)
    watcher: Watcher | None = None
    try:
        if args.metrics:
            from tcpwhy.watch.metrics import Metrics

            metrics = Metrics.serve(args.metrics)
        w = Watcher(
            sys.stdout,
            args.format,
            Settings(),
            limits,
            Groups(args.reannounce, args.max_groups),
            where,
            args.summary_every,
            metrics,
            sys.stderr,
        )
        w.keeper = keeper
        watcher = w if args.interface is None else None
        # what is loaded by now (numpy, numba, the rules' modules) lives as long as the
        # process: kept out of the full collections the watcher runs to free its windows,
        # which otherwise walked it all each time (86 ms each on conns-heavy.pcap)
        gc.freeze()
        stats = CaptureStats()
        if args.interface is not None:
            from tcpwhy.watch.engine import TcpdumpEngine

            engine = TcpdumpEngine(
                args.interface,
                args.filter or "",
                args.snaplen or 512,
                buffer_kib=int(args.buffer_size * 1024),
            )
            try:
                engine.start()  # raises the one-line errors: bad interface or filter, permission
            except TcpwhyError:
                engine.stop()
                watcher = None
                raise
            # before the first chunk (packets wait in the pipe meanwhile) and before the line
            # that says the watch is on: the first finding is not held up by the warm-up
            warm(w.settings)
            gc.freeze()  # what the warm-up loaded, too
            print(f"tcpwhy: watching {args.interface} ({engine.describe()})", file=sys.stderr)
            sys.stderr.flush()
            watcher = w
            if keeper is not None:
                tee = Tee(keeper.ring)
            _follow("-", w, stats, args.duration, engine)
        elif args.read == "-":
            if keeper is not None:
                tee = Tee(keeper.ring)
            _follow("-", w, stats, args.duration, None)
        else:
            from tcpwhy.capture import iter_tables

            if keeper is not None:
                keeper.lockstep = Lockstep(args.read, keeper.ring)
            # read ahead (decoding beside the diagnosis) unless --keep reads the file in
            # lockstep with the tables
            for t in iter_tables(args.read, stats, prefetch=keeper is None):
                _stop_if_signalled()
                w.chunk(t)
        w.finish()
        for text in stats.warnings:
            print(f"tcpwhy: {where}: warning: {text}", file=sys.stderr)
        if w.worst is not None and w.worst >= 1:
            status = 1
    except TcpwhyError:
        watcher = None  # the error is the one line: no summary of nothing
        raise
    except KeyboardInterrupt:
        status = 130
    except Terminated:
        status = 143
    finally:
        try:
            if engine is not None:
                engine.stop()
                if watcher is not None:
                    engine.poll(watcher)
            if watcher is not None and status in (130, 143):
                watcher.finish()
        except (KeyboardInterrupt, Terminated):
            pass
        signal.signal(signal.SIGTERM, old_term)
        signal.signal(signal.SIGINT, old_int)
        if metrics is not None:
            metrics.close()
        if keeper is not None:
            keeper.close()
        if tee is not None:
            tee.close()
        if watcher is not None:
            print(f"tcpwhy: watch: {watcher.summary_line()}", file=sys.stderr)
            if keeper is not None:
                print(f"tcpwhy: watch: {keeper.summary()}", file=sys.stderr)
            if watcher.counters.drops:
                from tcpwhy.diagnose.registry import plural

                print(
                    f"tcpwhy: {where}: warning: the kernel dropped "
                    f"{plural(watcher.counters.drops, 'packet')}: findings may be missing",
                    file=sys.stderr,
                )
        sys.stdout.flush()
    return status


def register(sub: Subcommands) -> None:
    w = sub.add_parser(
        "watch",
        help="name connection failures on the wire as they happen (or in a growing capture)",
        description=(
            "Watch an interface (-i) or read a capture as it grows (-r FILE, -r - for "
            "standard input, e.g. `tcpdump -U -w - | tcpwhy watch -r -`) and print each "
            "finding as soon as it is certain: when the connection ends, goes idle, or its "
            "decisive packet arrives. A recurring incident is one finding group (kind and "
            "server) with running counts, announced again at most once per --reannounce "
            "seconds. Memory is bounded: connections leave when idle or over the caps. "
            "Exit status: 0 nothing of severity warning or above, 1 such findings or not "
            "permitted to capture, 2 bad input (file, interface, filter), 130/143 "
            "interrupted (Ctrl-C/SIGTERM, after the summary)."
        ),
    )
    w.add_argument("-i", "--interface", metavar="IFACE", help="capture on this interface")
    w.add_argument("-r", "--read", metavar="FILE", help="a capture file, or - (standard input)")
    w.add_argument("-f", "--filter", metavar="BPF", help="kernel capture filter (tcpdump syntax)")
    w.add_argument(
        "-s",
        "--snaplen",
        type=positive_int,
        metavar="BYTES",
        help="bytes captured per frame; default 512 (headers and the HTTP request line)",
    )
    w.add_argument(
        "-B",
        "--buffer-size",
        type=positive_float,
        default=BUFFER_MB,
        metavar="MB",
        help="the kernel's capture buffer (tcpdump -B); a burst beyond it is dropped by the "
        f"kernel and reported; default {BUFFER_MB:g}",
    )
    w.add_argument("--duration", type=positive_float, metavar="S", help="stop after S seconds")
    w.add_argument("--format", choices=("text", "jsonl"), default="text")
    w.add_argument(
        "--metrics",
        metavar="HOST:PORT",
        help="serve Prometheus metrics (findings by kind and server, connections, resets…)",
    )
    w.add_argument(
        "--idle",
        type=positive_float,
        default=300.0,
        metavar="S",
        help="idle connections leave after S seconds (their findings are then made); default 300",
    )
    w.add_argument(
        "--keep",
        metavar="DIR",
        help="write the packets of the connections with findings (and the seconds before "
        "each) to rotating capture files in DIR",
    )
    w.add_argument(
        "--keep-max",
        type=positive_float,
        default=100.0,
        metavar="MB",
        help="the kept files together stay under MB (the oldest go); default 100",
    )
    w.add_argument(
        "--keep-before",
        type=nonnegative_float,
        default=5.0,
        metavar="S",
        help="also keep every packet of the S seconds before a kept connection; default 5",
    )
    w.add_argument("--max-conns", type=positive_int, default=100_000, help="open connections held")
    w.add_argument("--max-rows", type=positive_int, default=500_000, help="packet rows held")
    w.add_argument("--max-groups", type=positive_int, default=1000, help="finding groups held")
    w.add_argument(
        "--reannounce",
        type=positive_float,
        default=60.0,
        metavar="S",
        help="announce a recurring group again at most every S seconds; default 60",
    )
    w.add_argument(
        "--summary-every",
        type=nonnegative_float,
        default=60.0,
        metavar="S",
        help="a one-line summary every S seconds (0: none); default 60",
    )
    w.set_defaults(func=cmd_watch)
