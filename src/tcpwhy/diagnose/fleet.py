"""Fleets: many capture points diagnosed apart, in this process or on a Dask cluster.

A directory given to ``tcpwhy analyze`` is a fleet: each immediate sub-directory is one
capture point whose files are one rotated capture (`engine.diagnose_files` joins them in
time order), each file directly in it a capture point of its own. Capture points are
independent, so they are the unit of work: one Dask task each, on a LocalCluster
(``--workers N``) or an existing cluster (``--scheduler``), or one after the other here.
Every task returns plain data (findings as JSON), so the answer is the same wherever it
ran; the fleet findings (`fleet_findings`) are then made here, in capture point order.
"""

from __future__ import annotations

import os
import stat
import statistics
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any, TypedDict, Unpack

from tcpwhy.errors import EnvironmentProblem, NotACaptureError, TcpwhyError


@dataclass(frozen=True)
class Point:
    """A capture point: its name (the file's or sub-directory's) and its files, in order."""

    name: str
    files: tuple[str, ...]
    listed: bool = False
    """Its files were found by listing a directory (not each named by the user)."""


def _is_url(path: str) -> bool:
    return "://" in path


def _url_fs(path: str) -> tuple[Any, str]:
    """fsspec's filesystem of a URL and the path in it; a protocol fsspec does not know, or
    whose package is not installed (``s3://`` without s3fs), is the URL's one-line error."""
    try:
        import fsspec
    except ImportError:
        raise TcpwhyError(path, "reading a URL needs fsspec: pip install 'tcpwhy[fleet]'") from None
    try:
        fs, root = fsspec.core.url_to_fs(path)
    except (ImportError, ValueError) as exc:
        raise TcpwhyError(path, f"cannot read this URL: {exc}") from None
    return fs, root


def _listdir(path: str) -> list[tuple[str, bool]]:
    """(path, is a directory) of the entries of a local directory or an fsspec URL."""
    if _is_url(path):
        fs, root = _url_fs(path)
        proto = path.split("://", 1)[0]
        return sorted(
            (f"{proto}://{e['name']}", e["type"] == "directory") for e in fs.ls(root, detail=True)
        )
    with os.scandir(path) as it:
        return sorted((e.path, e.is_dir()) for e in it if not e.name.startswith("."))


def _isdir(path: str) -> bool:
    if _is_url(path):
        fs, root = _url_fs(path)
        return bool(fs.isdir(root))
    return os.path.isdir(path)


def is_fleet(paths: Sequence[str]) -> bool:
    """Whether the arguments name a fleet (at least one directory)."""
    return any(_isdir(p) for p in paths)


def capture_points(paths: Sequence[str]) -> list[Point]:
    """The capture points of the arguments: a directory's sub-directories and files, and each
    file given by itself."""
    points: list[Point] = []
    for p in paths:
        if not _isdir(p):
            points.append(Point(os.path.basename(p.rstrip("/")) or p, (p,)))
            continue
        before = len(points)
        for entry, is_dir in _listdir(p):
            name = os.path.basename(entry.rstrip("/"))
            if is_dir:
                files = tuple(f for f, d in _listdir(entry) if not d)
                if files:
                    points.append(Point(name, files, listed=True))
            else:
                points.append(Point(name, (entry,), listed=True))
        if len(points) == before:
            # "no findings" for a mistyped or not yet filled directory would read as an
            # all-clear in an incident
            raise NotACaptureError(
                p, "no capture file in this directory (nor in its sub-directories)"
            )
    seen: dict[str, int] = {}
    out = []
    for pt in points:  # names are the keys of the output: make them unique
        k = seen.get(pt.name, 0)
        seen[pt.name] = k + 1
        out.append(pt if not k else Point(f"{pt.name}~{k}", pt.files, pt.listed))
    return out


_SPECIAL = {
    stat.S_IFIFO: "a named pipe",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a device",
    stat.S_IFBLK: "a device",
}


def _special(path: str) -> str | None:
    """What a local path is when it is not a regular file (None for a regular file, a URL or
    a path that cannot be looked at: reading it says why). Checked without opening: opening
    a named pipe waits for a writer, so one left in a fleet's directory hung the run."""
    if _is_url(path):
        return None
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    return _SPECIAL.get(stat.S_IFMT(mode))


def _local(path: str) -> tuple[str, Callable[[], None]]:
    """A local path for a capture (an fsspec URL is copied to a temporary file first)."""
    if not _is_url(path) or path.startswith("file://"):
        return (path[len("file://") :] if path.startswith("file://") else path), lambda: None
    import tempfile

    fs, root = _url_fs(path)
    fd, tmp = tempfile.mkstemp(prefix="tcpwhy-", suffix=os.path.basename(path))
    with os.fdopen(fd, "wb") as out, fs.open(root, "rb") as src:
        while chunk := src.read(1 << 22):
            out.write(chunk)
    return tmp, lambda: os.unlink(tmp)


def analyze_point(
    point: Point,
    settings: dict[str, float],
    pair: bool = True,
    parquet: str | None = None,
    seed: int = 0,
    reassemble: bool | None = None,
    display_filter: str | None = None,
) -> dict[str, Any]:
    """Diagnose one capture point (a Dask task: plain data in and out). A file that cannot be
    read is an error row and the point's other files are diagnosed without it. With
    `parquet` (the directory of the datasets being written, `ParquetDataset.staging`), the
    point's partitions are written here, where its files were read; only the findings go
    back to the client. `reassemble` is given to the task since a worker process does not
    share the client's reading default (``--no-reassemble``). `display_filter` (``-Y``, as
    text: compiled here, in the worker) limits the diagnosis to the connections it matches,
    as for one capture."""
    import gc

    from tcpwhy.diagnose.engine import release_freed
    from tcpwhy.views import reading

    try:
        with reading(reassemble):
            return _analyze_point(point, settings, pair, parquet, seed, display_filter)
    finally:
        # a worker runs point after point: what one point's diagnosis left (cycles between
        # the capture and its views, the heap's freed pages) is not carried into the next,
        # so a worker's peak is that of its largest point
        gc.collect()
        release_freed()


def _analyze_point(
    point: Point,
    settings: dict[str, Any],
    pair: bool,
    parquet: str | None,
    seed: int,
    display_filter: str | None = None,
) -> dict[str, Any]:
    from tcpwhy.diagnose.registry import Settings
    from tcpwhy.filter import compile_filter
    from tcpwhy.views import diagnosis

    flt = None if display_filter is None else compile_filter(display_filter)

    errors: list[dict[str, str]] = []
    files = list(point.files)
    if point.listed:  # a file the user named is read as given (a named pipe tcpdump writes)
        for f in list(files):
            if what := _special(f):
                errors.append({"file": f, "reason": f"{what}, not a capture file: skipped"})
                files.remove(f)
    while files:
        local: list[str] = []
        cleanups: list[Callable[[], None]] = []
        try:
            try:
                for f in files:
                    path, done = _local(f)
                    local.append(path)
                    cleanups.append(done)
                report = diagnosis(local, Settings(**settings), flt, pair=pair)  # as tcpwhy.analyze
            except TcpwhyError as exc:
                bad = next(
                    (f for f, lp in zip(files, local, strict=False) if lp == exc.where), None
                )
                if bad is None and len(files) == 1:
                    bad = files[0]
                errors.append({"file": bad or point.name, "reason": exc.reason})
                if bad is None:
                    files = []
                else:
                    files.remove(bad)
                continue
            except OSError as exc:
                errors.append({"file": files[0], "reason": exc.strerror or str(exc)})
                files = files[1:]
                continue
            d = report.to_json()
            del report
            names = {lp: f for f, lp in zip(files, local, strict=True) if lp != f and _is_url(f)}
            if names:  # the findings name the URL, not the temporary copy it was read from
                d["findings"] = _renamed(d["findings"], names)
            if parquet:
                from tcpwhy.report.parquet import write_point

                write_point(parquet, point.name, local, d["findings"], seed)
            return {
                "point": point.name,
                "files": list(point.files),
                "findings": d["findings"],
                "connections": d["capture"]["connections"],
                "endings": d["connections"],
                "errors": errors,
            }
        finally:
            for done in cleanups:
                done()
    if parquet:  # nothing readable: the point's partitions are there, with no rows
        from tcpwhy.report.parquet import write_point

        write_point(parquet, point.name, [], [], seed)
    return {
        "point": point.name,
        "files": list(point.files),
        "findings": [],
        "connections": 0,
        "endings": {},
        "errors": errors,
    }


def _renamed(value: Any, names: dict[str, str]) -> Any:
    """`value` (JSON data) with every string that is a key of `names` replaced by its value."""
    if isinstance(value, str):
        return names.get(value, value)
    if isinstance(value, list):
        return [_renamed(v, names) for v in value]
    if isinstance(value, dict):
        return {k: _renamed(v, names) for k, v in value.items()}
    return value


@contextmanager
def _client(workers: int | None, scheduler: str | None) -> Iterator[Any]:
    """A Dask client: on a LocalCluster of `workers` processes, or on `scheduler`; closed
    (and the cluster's processes with it) however the block ends, Ctrl-C included."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise EnvironmentProblem(
            "--workers", "needs dask distributed: pip install 'tcpwhy[fleet]'"
        ) from None
    if scheduler:
        try:
            client = Client(scheduler, timeout="10s")
        except OSError as exc:
            raise TcpwhyError(scheduler, f"cannot reach the scheduler: {exc}") from None
        except ValueError as exc:  # not an address (no port, an unknown protocol)
            raise TcpwhyError(scheduler, f"not a scheduler address: {exc}") from None
        except (TypeError, AssertionError) as exc:  # tls:// without Dask's TLS settings
            raise TcpwhyError(scheduler, f"cannot connect to the scheduler: {exc}") from None
        with client:
            yield client
        return
    import psutil

    with _local_client(workers or 1, LocalCluster, Client, psutil) as client:
        yield client


def _stop_workers(psutil: Any) -> None:
    """Interrupted while the cluster starts: Dask's own exit hook cannot close it, so the
    worker processes this process started are stopped by PID and that hook is skipped."""
    import atexit
    import logging

    from distributed.deploy import spec

    # the nannies' start, cut short, fails in Dask's loop thread: its "Task exception
    # was never retrieved" would follow the one line that says tcpwhy was interrupted
    logging.getLogger("asyncio").disabled = True

    _kill_workers(psutil, timeout=10)
    atexit.unregister(spec.close_clusters)


def _kill_workers(psutil: Any, timeout: float) -> int:
    """This process's child processes killed by PID, multiprocessing's resource tracker
    aside, and waited for: how many there were."""
    kids = [k for k in psutil.Process().children(recursive=True) if k.pid != _tracker_pid()]
    for k in kids:
        with suppress(psutil.NoSuchProcess):
            k.kill()
    psutil.wait_procs(kids, timeout=timeout)
    return len(kids)


def _stop_late_workers(psutil: Any, quiet_rounds: int = 3, limit_s: float = 2.0) -> None:
    """After the loop stopped: worker processes that Dask's own threads started after
    `_stop_workers` looked, stopped by PID until a few looks in a row find none. Dask
    starts a worker from a daemon thread, which spawns the process and then writes it what
    to run; a process spawned as this one exits never gets that, and printed a traceback
    (EOFError while unpickling) after tcpwhy's one line. Killed first, it prints nothing."""
    import time

    deadline = time.monotonic() + limit_s
    quiet = 0
    while quiet < quiet_rounds and time.monotonic() < deadline:
        quiet = 0 if _kill_workers(psutil, timeout=5) else quiet + 1
        time.sleep(0.05)


def _tracker_pid() -> int | None:
    """multiprocessing's resource tracker: left alone (it exits with this process), since
    killing it makes multiprocessing start another that prints tracebacks at exit."""
    from multiprocessing import resource_tracker

    return getattr(resource_tracker._resource_tracker, "_pid", None)


def _start_resource_tracker() -> None:
    """multiprocessing's resource tracker, started with its own warnings off. When a Ctrl-C
    stops the workers by PID, the semaphores of the queues they were starting with are left
    to it to clean up, and it said so on the terminal after tcpwhy's one line ("There appear
    to be 1 leaked semaphore objects", then a FileNotFoundError for one already gone): its
    cleanup is wanted, its words are not the user's concern. Only the tracker's process
    gets the filter (its interpreter takes this one's -W options); this one's are as set."""
    from multiprocessing import resource_tracker

    quiet = "ignore::UserWarning:multiprocessing.resource_tracker"
    sys.warnoptions.append(quiet)
    try:
        resource_tracker.ensure_running()
    finally:
        sys.warnoptions.remove(quiet)


@contextmanager
def _local_client(n: int, LocalCluster: Any, Client: Any, psutil: Any) -> Iterator[Any]:
    import signal

    from distributed.utils import LoopRunner

    # Dask's IO loop thread, and the threads it starts the worker processes from, with SIGINT
    # blocked: the workers inherit the mask, so a terminal's Ctrl-C (sent to the whole process
    # group) reaches only this process, which stops them by PID; otherwise each worker prints
    # its own KeyboardInterrupt traceback and Dask its "Nanny failed to start". The resource
    # tracker is started first, here: starting it unblocks SIGINT in the thread that does it.
    _start_resource_tracker()
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        runner = LoopRunner()
        runner.start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
    interrupted = False
    try:
        with _cluster(n, LocalCluster, Client, psutil, runner.loop) as client:
            yield client
    except KeyboardInterrupt:
        # before the loop stops: stopping it ends the nannies' start, which frees the queues
        # a worker still starting is unpickling, and that worker then prints a traceback
        # (FileNotFoundError for the queue's semaphore) after tcpwhy's one line
        interrupted = True
        _stop_workers(psutil)
        raise
    finally:
        runner.stop()
        if interrupted:
            _stop_late_workers(psutil)


@contextmanager
def _cluster(n: int, LocalCluster: Any, Client: Any, psutil: Any, loop: Any) -> Iterator[Any]:
    with (
        LocalCluster(
            loop=loop,
            n_workers=n,
            memory_limit=psutil.virtual_memory().total // n,  # the machine's memory, shared
            # (given: Dask's "auto" reads the cgroup limits, not always present)
            threads_per_worker=1,
            processes=True,
            # any free port: Dask serves its HTTP endpoints even without a dashboard, and
            # on 8787 it warns on stderr when another cluster (another run) holds it
            dashboard_address=":0",
            silence_logs=50,
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


def run_points(
    points: Sequence[Point],
    settings: dict[str, float],
    pair: bool = True,
    workers: int | None = None,
    scheduler: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    parquet: str | None = None,
    seed: int = 0,
    reassemble: bool | None = None,
    display_filter: str | None = None,
) -> list[dict[str, Any]]:
    """Every capture point's result, in the order of `points`."""
    results: list[dict[str, Any] | None] = [None] * len(points)
    if not workers and not scheduler:
        for i, p in enumerate(points):
            results[i] = analyze_point(p, settings, pair, parquet, seed, reassemble, display_filter)
            if progress:
                progress(i + 1, len(points))
    else:
        from distributed import as_completed

        # no more worker processes than points: an idle one is a process and a share of the
        # memory limit for nothing (a --workers of 10**20 tried to start them all)
        workers = min(workers, max(len(points), 1)) if workers else workers
        with _client(workers, scheduler) as client:
            futures = client.map(
                analyze_point,
                list(points),
                settings=settings,
                pair=pair,
                parquet=parquet,
                seed=seed,
                reassemble=reassemble,
                display_filter=display_filter,
                pure=False,
                retries=2,  # a worker that dies: its tasks run again elsewhere
                # a directory's name that is not UTF-8 did not serialise: spelled with escapes
                key=[
                    f"tcpwhy-point-{i}-{p.name.encode('utf-8', 'backslashreplace').decode()}"
                    for i, p in enumerate(points)
                ],
            )
            index = {f.key: i for i, f in enumerate(futures)}
            for n, fut in enumerate(as_completed(futures), 1):
                results[index[fut.key]] = fut.result()
                if progress:
                    progress(n, len(points))
    return [r for r in results if r is not None]


def finding_server(f: dict[str, Any]) -> str:
    """The server a finding (``analyze --format json``'s object) is about: `facts.server`,
    or for a server's CLOSE_WAIT leak the server itself (`facts.endpoint`, side ``server``);
    "" when it names none. Fleet findings are one per kind and this server."""
    facts = f.get("facts") or {}
    if facts.get("server"):
        return str(facts["server"])
    if facts.get("side") == "server" and facts.get("endpoint"):
        return str(facts["endpoint"])
    return ""


def fleet_findings(results: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One finding per kind and server across the fleet: connections (`count`), the capture
    points that show it (`capture_points`: {point: connections}), and where the findings
    inferred one, the server's idle timeout across points."""
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    for r in results:
        for f in r["findings"]:
            key = (f["kind"], finding_server(f))
            g = groups.setdefault(
                key,
                {
                    "kind": f["kind"],
                    "server": key[1],
                    "severity": f["severity"],
                    "rank": -1,
                    "count": 0,
                    "capture_points": {},
                    "summary": f["summary"],
                    "_timeouts": [],
                },
            )
            g["count"] += f["count"]
            pts = g["capture_points"]
            pts[r["point"]] = pts.get(r["point"], 0) + f["count"]
            rank = _SEVERITY.get(f["severity"], -1)
            if rank > g["rank"]:
                g["rank"], g["severity"] = rank, f["severity"]
            t = f.get("facts", {}).get("server_idle_timeout_s")
            if isinstance(t, dict) and "median" in t:
                g["_timeouts"].append(t)
    out = []
    for g in groups.values():
        ts = g.pop("_timeouts")
        if ts:
            g["server_idle_timeout_s"] = {
                "min": min(t["min"] for t in ts),
                "median": round(statistics.median(t["median"] for t in ts), 3),
                "max": max(t["max"] for t in ts),
                "n": sum(t.get("n", 1) for t in ts),
            }
        g["verdict"] = verdict(g, len(results))
        out.append(g)
    out.sort(key=lambda g: (-g["rank"], -len(g["capture_points"]), -g["count"], g["kind"]))
    for g in out:
        del g["rank"]
    return out


_SEVERITY = {"info": 0, "warning": 1, "error": 2}  # `model.Severity` labels


def verdict(g: dict[str, Any], npoints: int) -> str:
    """The fleet verdict line: "KIND at K of N capture points, all to SERVER, server idle
    timeout T s"."""
    text = f"{g['kind']} at {len(g['capture_points'])} of {npoints} capture points"
    if g["server"]:
        text += f", all to {g['server']}"
    t = g.get("server_idle_timeout_s")
    if t:
        text += f", server idle timeout {t['median']:g} s"
    n = g["count"]
    return f"{text} ({n} connection{'' if n == 1 else 's'})"


def fleet_report(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The ``--format json`` object of a fleet."""
    from tcpwhy.schemas import SCHEMA_VERSION

    return {
        "schema_version": SCHEMA_VERSION,
        "capture_points": [
            {"point": r["point"], "files": r["files"], "connections": r["connections"]}
            for r in results
        ],
        "findings": fleet_findings(results),
        "points": {r["point"]: r["findings"] for r in results},
        "errors": [e for r in results for e in r["errors"]],
    }


def exit_status(report: dict[str, Any]) -> int:
    """0 nothing of severity warning or above, 1 such findings, 2 when a file could not be
    read (the rest was analysed and reported)."""
    if report["errors"]:
        return 2
    worst = max((_SEVERITY.get(f["severity"], -1) for f in report["findings"]), default=-1)
    return 1 if worst >= _SEVERITY["warning"] else 0


def write_fleet_text(report: dict[str, Any], out: Any) -> None:
    from tcpwhy.diagnose.registry import plural

    points = report["capture_points"]
    conns = sum(p["connections"] for p in points)
    failed = {e["file"] for e in report["errors"]}
    # a point none of whose files could be read is still one of the N that verdicts count:
    # said here, so "at 1 of 3 capture points" does not read as two points found clean
    unread = sum(1 for p in points if p["files"] and set(p["files"]) <= failed)
    head = plural(len(points), "capture point")
    if unread:
        head += f" ({unread} could not be read: errors below)"
    out.write(f"tcpwhy: fleet of {head}, {plural(conns, 'connection')}\n")
    if not report["findings"]:
        out.write("no findings\n")
    for f in report["findings"]:
        out.write(f"[{f['severity']}] {f['verdict']}\n")
        out.write(f"    {f['summary']}\n")
        pts = ", ".join(f"{k} ({v})" for k, v in sorted(f["capture_points"].items()))
        out.write(f"    capture points: {pts}\n")
    for e in report["errors"]:
        out.write(f"error: {e['file']}: {e['reason']}\n")


def check_paths(paths: Sequence[str]) -> None:
    """Every local path given exists (URLs are listed when the points are made)."""
    for p in paths:
        if not _is_url(p) and not os.path.exists(p):
            raise NotACaptureError(p, "No such file or directory")


class RunOptions(TypedDict, total=False):
    """The options of `run_points` after its points and settings, as `run_fleet` takes them
    to pass on (their defaults are `run_points`')."""

    pair: bool
    workers: int | None
    scheduler: str | None
    progress: Callable[[int, int], None] | None
    parquet: str | None
    seed: int
    reassemble: bool | None
    display_filter: str | None


def run_fleet(
    paths: Sequence[str], settings: dict[str, float], **options: Unpack[RunOptions]
) -> dict[str, Any]:
    """The fleet report (`fleet_report`) of `paths`, as ``analyze DIR --format json`` writes
    it and `tcpwhy.analyze` returns it: the one implementation of both. `progress` is called
    with (points done, points); `display_filter` (``-Y``) is checked here, before any point
    is read."""
    check_paths(paths)
    display_filter = options.get("display_filter")
    if display_filter is not None:
        from tcpwhy.filter import compile_filter

        compile_filter(display_filter)  # a bad filter: one error, not one per point
    points = capture_points(paths)
    progress = options.get("progress")
    if progress:
        progress(0, len(points))
    return fleet_report(run_points(points, settings, **options))


@contextmanager
def _bar(always: bool = False) -> Iterator[Callable[[int, int], None] | None]:
    """A progress bar of capture points on stderr, only on a terminal (`always`: anywhere,
    as `tcpwhy.analyze(progress=True)` asks)."""
    if not always and not sys.stderr.isatty():
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn

    from tcpwhy.console import stderr_progress

    columns = (TextColumn("tcpwhy: capture points"), BarColumn(), MofNCompleteColumn())
    with stderr_progress("points", *columns) as bar:
        yield lambda done, n: bar(completed=done, total=n)


def cmd_fleet(args: Any) -> int:
    """``tcpwhy analyze`` on a fleet (a directory, or --workers / --scheduler)."""
    import json

    check_paths(args.files)
    if args.format == "html":
        raise TcpwhyError("--format html", "is for one capture point, not a fleet")
    settings = {"close_wait_s": args.close_wait, "fin_wait_2_s": args.fin_wait_2}
    dataset = _dataset(args)
    try:
        with _bar() as progress:
            # the report `tcpwhy.analyze(DIR, workers=…)` returns, by the same function
            report = run_fleet(
                args.files,
                settings,
                pair=not args.no_pair,
                workers=args.workers,
                scheduler=args.scheduler,
                progress=progress,
                parquet=dataset.staging if dataset else None,
                seed=dataset.seed if dataset else 0,
                reassemble=getattr(args, "reassemble", None),
                display_filter=getattr(args, "display_filter", None),
            )
        if dataset:
            dataset.commit()
    finally:
        if dataset:
            dataset.abandon()  # a no-op once committed
    if args.format == "json":
        sys.stdout.write(json.dumps(report, indent=1, default=str) + "\n")
    else:
        write_fleet_text(report, sys.stdout)
    for e in report["errors"]:
        print(f"tcpwhy: {e['file']}: {e['reason']}", file=sys.stderr)
    return exit_status(report)


def _dataset(args: Any) -> Any:
    """The Parquet datasets of ``--parquet OUTDIR`` (`tcpwhy.report.parquet.ParquetDataset`)."""
    if not getattr(args, "parquet", None):
        return None
    if getattr(args, "display_filter", None):
        raise TcpwhyError("--parquet", "writes every connection: give no -Y")
    from tcpwhy.report.parquet import ParquetDataset

    return ParquetDataset(args.parquet)


def one_capture_dataset(args: Any) -> Any:
    """``analyze FILE… --parquet OUTDIR`` without a fleet, checked before the diagnosis."""
    if getattr(args, "parquet", None) and "-" in args.files:
        raise TcpwhyError("--parquet", "needs capture files, not standard input")
    if getattr(args, "parquet", None) and getattr(args, "display_filter", None):
        raise TcpwhyError("--parquet", "writes every connection: give no -Y")
    if not getattr(args, "parquet", None):
        return None
    from tcpwhy.report.parquet import check_outdir

    return check_outdir(args.parquet)


def write_one_capture(args: Any, report: Any, outdir: str | None) -> None:
    """The datasets of one capture point, named after the first file; its connections those
    of the files joined in time order."""
    if outdir is None:
        return
    from tcpwhy.report.parquet import ParquetDataset, write_point

    dataset = ParquetDataset(outdir)
    try:
        name = os.path.basename(args.files[0].rstrip("/"))
        findings = report.to_json()["findings"]
        write_point(dataset.staging, name, list(args.files), findings, dataset.seed)
        dataset.commit()
    finally:
        dataset.abandon()


__all__ = [
    "Point",
    "RunOptions",
    "analyze_point",
    "capture_points",
    "finding_server",
    "fleet_findings",
    "fleet_report",
    "run_fleet",
    "run_points",
]
