"""`tcpwhy analyze FILE…` (findings from captures) and `tcpwhy explain "MESSAGE"`."""

from __future__ import annotations

import argparse
import gc
import sys

from tcpwhy.capture.options import add_reassembly_option
from tcpwhy.cli_helpers import Subcommands, positive_float, positive_int
from tcpwhy.console import step_progress
from tcpwhy.filter import add_filter_argument
from tcpwhy.report.output import add_output_argument, with_output


def cmd_analyze(args: argparse.Namespace) -> int:
    from tcpwhy.api import _classify, _given_names, _Sources
    from tcpwhy.diagnose import fleet
    from tcpwhy.diagnose.engine import release_freed
    from tcpwhy.diagnose.registry import Settings
    from tcpwhy.diagnose.render import to_json, write_text
    from tcpwhy.errors import TcpwhyError
    from tcpwhy.filter import filter_from_args
    from tcpwhy.views import diagnosis

    if args.workers or args.scheduler or fleet.is_fleet(args.files):
        return fleet.cmd_fleet(args)  # capture points apart, on Dask or here
    settings = Settings(close_wait_s=args.close_wait, fin_wait_2_s=args.fin_wait_2)
    flt = filter_from_args(args)
    dataset = fleet.one_capture_dataset(args)  # --parquet OUTDIR: checked before the work
    src = _Sources(args.files)  # fsspec URLs copied to temporary files, as `tcpwhy.open` does
    files = src.command_paths()
    try:
        with step_progress(sys.stderr.isatty()) as progress:
            # the findings as `Capture.findings` and `tcpwhy.analyze` have them
            report = diagnosis(files, settings, flt, pair=not args.no_pair, progress=progress)
    except TcpwhyError as exc:
        raise _classify(exc, src.names) from None
    _given_names(report, src.names)
    fleet.write_one_capture(args, report, dataset)
    if args.kernel_trace:
        from tcpwhy.diagnose.kernel_trace import join

        join(report, args.kernel_trace)
    if getattr(args, "annotate_to", None) is not None:  # --annotate OUT (report.handoff)
        args.annotate_to(report)
    if args.format != "html":
        # only the HTML report draws from the captures' columns: the other formats let them
        # go before the text is made (conns-heavy: 300 MB freed before rendering). A capture
        # and its connections refer to each other, so they go at a collection, and the heap
        # they leave is given back (a 3 M-SYN flood: 1,064 MB held before, 179 MB after)
        report.diags.clear()
        gc.collect()
        release_freed()
    if args.format == "json":
        text = to_json(report)
        sys.stdout.write(text)  # not `text + "\n"`: a flood's report is 50 MB, copied once more
        del text
        sys.stdout.write("\n")
    elif args.format == "html":
        from tcpwhy.report.html import write_html

        write_html(report, sys.stdout)
    else:
        write_text(report, sys.stdout)
    return report.exit_status()


def cmd_explain(args: argparse.Namespace) -> int:
    from tcpwhy.diagnose.explain import explain, to_json, write_text

    message = " ".join(args.message)
    matches = explain(message)
    if args.format == "json":
        sys.stdout.write(to_json(message, matches) + "\n")
    else:
        write_text(message, matches, sys.stdout)
    return 0 if matches else 1


def register(sub: Subcommands) -> None:
    a = sub.add_parser(
        "analyze",
        help="diagnose a capture: why connections broke and what to change",
        description=(
            "Diagnose TCP connection failures in one or more captures (pcap, pcapng, gzip). "
            "Rotated files are joined in time order; files that overlap in time (the two ends "
            "of one path) are capture points of their own: connections seen at both are "
            "paired (by sequence numbers and payload, also across NAT) and reported once, "
            "with the path's delay, losses and injected segments. Exit status: 0 nothing of severity "
            "warning or above, 1 such findings, 2 error."
        ),
    )
    a.add_argument(
        "files",
        nargs="+",
        metavar="FILE",
        help="capture files; a directory is a fleet: each sub-directory one capture point "
        "(its files one rotated capture), each file in it one of its own",
    )
    a.add_argument(
        "--format",
        choices=("text", "json", "html"),
        default="text",
        help="html: one self-contained page (findings, ladders, charts, connection table)",
    )
    add_output_argument(a)
    add_filter_argument(a)
    a.add_argument(
        "--close-wait",
        type=positive_float,
        default=10.0,
        metavar="S",
        help="report CLOSE_WAIT held longer than S seconds (or until the capture ends); default 10",
    )
    a.add_argument(
        "--fin-wait-2",
        type=positive_float,
        default=5.0,
        metavar="S",
        help="report FIN_WAIT_2 held longer than S seconds; default 5",
    )
    a.add_argument(
        "--no-pair",
        action="store_true",
        help="do not pair the connections of captures taken at different points at the same "
        "time (each capture point is then diagnosed on its own)",
    )
    a.add_argument(
        "--kernel-trace",
        metavar="FILE",
        help="the kernel's events of the same time (`host trace --format jsonl`, or the lab's "
        "x.trace.jsonl): add the kernel's reasons to each finding, and say where they disagree",
    )
    a.add_argument(
        "--workers",
        type=positive_int,
        metavar="N",
        help="diagnose the capture points on a Dask LocalCluster of N worker processes",
    )
    a.add_argument(
        "--scheduler",
        metavar="tcp://HOST:PORT",
        help="diagnose the capture points on an existing Dask cluster (its workers need tcpwhy)",
    )
    a.add_argument(
        "--annotate",
        metavar="OUT.pcapng",
        help="also write the capture as pcapng with a comment on each decisive packet of each "
        "finding (Wireshark's frame.comment and Expert Info); one FILE or -",
    )
    a.add_argument(
        "--parquet",
        metavar="OUTDIR",
        help="also write the connection records and findings as Parquet datasets partitioned "
        "by capture point (OUTDIR/connections/point=NAME/, OUTDIR/findings/point=NAME/; "
        "docs/fleet.md)",
    )
    add_reassembly_option(a)
    from tcpwhy.report.handoff import with_annotate

    a.set_defaults(func=with_output(with_annotate(cmd_analyze)))

    e = sub.add_parser(
        "explain",
        help="which connection failures produce an error message, and how to tell them apart",
        description=(
            "Look up an error message (Java, Go, Python, Node.js, curl, nginx): the failure "
            "patterns that produce it, how to tell them apart, and what to capture or check. "
            "No capture needed."
        ),
    )
    e.add_argument("message", nargs="+", help='the error text, e.g. "Broken pipe"')
    e.add_argument("--format", choices=("text", "json"), default="text")
    e.set_defaults(func=cmd_explain)
