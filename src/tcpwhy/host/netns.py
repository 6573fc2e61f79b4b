"""Run a read-only probe inside another network namespace.

/proc/net/*, /proc/sys/net/* and netlink sockets all answer for the namespace of
the task that opens them, so the probe runs in a forked child that has entered
the namespace with setns(); the parent's own namespace is never changed.
"""

from __future__ import annotations

import errno
import os
import pickle
import stat
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from tcpwhy.errors import EnvironmentProblem, TcpwhyError
from tcpwhy.netns import setns

T = TypeVar("T")

NETNS_RUN_DIR = Path("/var/run/netns")
_WHERE = "--netns"


def netns_path(name: str | os.PathLike[str]) -> Path:
    """Resolve a name as `ip netns` does; an absolute path (e.g. /proc/PID/ns/net) also works."""
    if isinstance(name, os.PathLike):
        name = os.fspath(name)
    if not isinstance(name, str):
        raise TypeError(f"a network namespace is a name or a path, not {type(name).__name__}")
    if not name:
        raise TcpwhyError(_WHERE, "empty namespace name")
    path = Path(name) if name.startswith("/") else NETNS_RUN_DIR / name
    if "/" in name and not name.startswith("/"):
        raise TcpwhyError(_WHERE, f"{name!r}: a namespace name cannot contain '/'")
    try:
        st = path.stat()
    except PermissionError:  # another user's /proc/PID/ns/net: ptrace access is checked
        raise EnvironmentProblem(
            _WHERE,
            f"cannot look at {path}: permission denied (another process's namespace needs "
            "ptrace access to that process)",
        ) from None
    except (OSError, ValueError):  # ValueError: a NUL in the name, which no path holds
        raise TcpwhyError(
            _WHERE,
            f"no network namespace {name!r} (looked for {path}; `ip netns list` shows the named ones)",
        ) from None
    if not stat.S_ISREG(st.st_mode):  # a namespace is a file of nsfs; opening a FIFO waits
        raise TcpwhyError(_WHERE, f"{name!r} is not a network namespace ({path})")
    return path


def _child(path: Path, fn: Callable[[], object], wfd: int) -> None:
    try:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                setns(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            if exc.errno in (errno.EPERM, errno.EACCES):
                raise EnvironmentProblem(
                    _WHERE,
                    f"entering {path} needs root (CAP_SYS_ADMIN); run with sudo",
                ) from None
            if exc.errno == errno.EINVAL:  # setns() of a file that is no network namespace
                raise TcpwhyError(_WHERE, f"{path} is not a network namespace") from None
            raise TcpwhyError(_WHERE, f"cannot enter {path}: {exc.strerror}") from None
        payload: tuple[str, object] = ("ok", fn())
    except TcpwhyError as exc:
        # Sent as plain fields: the error classes do not survive pickling.
        payload = ("error", (isinstance(exc, EnvironmentProblem), exc.where, exc.reason))
    except BaseException as exc:  # sent to the parent, which turns it into one line
        payload = ("crash", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}")
    try:
        data = pickle.dumps(payload)
    except Exception as exc:
        data = pickle.dumps(("crash", f"unpicklable result: {exc}"))
    view = memoryview(data)
    while view:
        n = os.write(wfd, view)
        view = view[n:]


def run_in_netns(name: str | None, fn: Callable[[], T]) -> T:
    """Call fn() in namespace `name` (or here when None) and return its picklable result."""
    if name is None:
        return fn()
    path = netns_path(name)
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never returns into the caller's code
        status = 0
        try:
            os.close(rfd)
            _child(path, fn, wfd)
        except BaseException:
            status = 1
        finally:
            os._exit(status)
    os.close(wfd)
    chunks = []
    try:
        while True:
            chunk = os.read(rfd, 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(rfd)
        os.waitpid(pid, 0)
    if not chunks:
        raise EnvironmentProblem(_WHERE, f"the probe inside {name!r} died without an answer")
    kind, value = pickle.loads(b"".join(chunks))
    if kind == "ok":
        return value
    if kind == "error":
        env, where, reason = value
        raise (EnvironmentProblem if env else TcpwhyError)(where, reason)
    first = str(value).splitlines()[0] if value else "unknown failure"
    raise EnvironmentProblem(_WHERE, f"reading inside {name!r} failed: {first}")
