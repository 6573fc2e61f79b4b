"""Capture views on the command line: `packets`, `conns`, `flow`."""

from __future__ import annotations

import argparse
import sys

from tcpwhy.capture.options import add_reassembly_option
from tcpwhy.cli_helpers import (
    Subcommands,
    add_output,
    one_file,
    positive_int,
    report_stats,
    unless_parquet,
)
from tcpwhy.decode.table import CaptureStats
from tcpwhy.filter import add_filter_argument
from tcpwhy.report.output import add_output_argument, with_output

__all__ = ["register", "register_flow"]


def cmd_packets(args: argparse.Namespace) -> int:
    from tcpwhy.filter import filter_from_args
    from tcpwhy.report.packets import write_packets

    flt = filter_from_args(args)
    stats = CaptureStats()
    if getattr(args, "write", None) is not None:  # the packets as a capture (`report.handoff`)
        from tcpwhy.errors import TcpwhyError
        from tcpwhy.report.handoff import write_selected

        if args.output or args.format == "parquet":
            raise TcpwhyError("-w", "writes the capture itself: not with -o or --format parquet")
        write_selected(args, flt, stats)
        report_stats(args.file, stats)
        return 0
    if args.format == "parquet":  # a file written from the columns (`tcpwhy.report.parquet`)
        from tcpwhy.report.parquet import need_output, write_packets_parquet

        write_packets_parquet(args.file, need_output(args), stats, args.absolute, args.count, flt)
        report_stats(args.file, stats)
        return 0
    try:
        write_packets(
            args.file, args.format, args.absolute, args.count, stats=stats, flt=flt,
            time_format=args.time_format,
        )  # fmt: skip
    finally:
        sys.stdout.flush()
    report_stats(args.file, stats)
    return 0


def register(sub: Subcommands) -> None:
    p = sub.add_parser(
        "packets",
        help="list TCP packets the way Wireshark's packet list shows them",
        description="List the TCP packets of a capture (pcap, pcapng, gzip; - for stdin).",
    )
    p.add_argument("file", metavar="FILE", nargs="?", help="capture file, or - for standard input")
    p.add_argument("-r", dest="read_file", metavar="FILE", help="the capture file (as tshark's -r)")
    p.add_argument(
        "-n", action="store_true", help="accepted as tshark's -n: tcpwhy never resolves names"
    )
    p.add_argument(
        "-t",
        dest="time_format",
        choices=("r", "a", "ad", "d", "dd", "e", "u", "ud"),
        help="the Time column as tshark's -t prints it: r relative, a/ad absolute local time "
        "(with date), d/dd delta from the previous captured/listed packet, e epoch, u/ud UTC "
        "(with date); at the capture's precision (default: seconds since the first packet, "
        "6 decimals)",
    )
    add_reassembly_option(p)
    p.add_argument(
        "--format",
        choices=("table", "csv", "jsonl", "parquet"),
        default="table",
        help="parquet: a Parquet file (needs -o FILE; docs/conns.md)",
    )
    p.add_argument("--absolute", action="store_true", help="raw sequence numbers")
    p.add_argument("-c", "--count", type=positive_int, metavar="N", help="stop after N packets")
    add_filter_argument(p)
    add_output_argument(p)
    p.add_argument(
        "-w",
        dest="write",
        metavar="OUT",
        help="write the listed packets (with -Y, those it matches) as a capture instead of the "
        "list: pcapng when OUT ends in .pcapng, else pcap; - for standard output",
    )
    p.set_defaults(func=unless_parquet(one_file(p, cmd_packets)))

    from tcpwhy.report import conns

    conns.register(sub)
    add_output(sub.choices["conns"])
    register_flow(sub)


def register_flow(sub: Subcommands) -> None:
    p = sub.add_parser(
        "flow",
        help="draw one connection as a ladder diagram with both endpoints' states",
        description="Draw TCP stream STREAM (Wireshark's tcp.stream number) as a ladder diagram.",
    )
    p.add_argument(
        "files",
        metavar="FILE",
        nargs="+",
        help="the capture; more files: rotated files are joined, a capture taken at another "
        "point of the path at the same time draws the connection between the two points",
    )
    add_reassembly_option(p)
    p.add_argument(
        "stream",
        metavar="STREAM",
        type=int,
        help="tcp.stream number (see `tcpwhy conns`), as at the first capture point given",
    )
    p.add_argument(
        "--no-pair",
        action="store_true",
        help="with several capture points: draw the first point's view only",
    )
    p.add_argument(
        "--fold",
        type=int,
        default=3,
        metavar="N",
        help="fold runs of at least N uneventful segments into one line (0: never)",
    )
    p.add_argument(
        "--format",
        choices=("text", "svg", "json"),
        default="text",
        help="text: the ladder in the terminal; svg: a picture of it (the HTML report's); "
        "json: its rows (docs/schemas/flow.schema.json)",
    )
    add_filter_argument(p)
    add_output_argument(p)
    p.set_defaults(func=with_output(cmd_flow))


def cmd_flow(args: argparse.Namespace) -> int:
    """`tcpwhy flow`: every format and number of files through `tcpwhy.views.flow_model`."""
    from tcpwhy.report.flow_pair import cmd_flow_points

    args.file = args.files[0]
    return cmd_flow_points(args)
