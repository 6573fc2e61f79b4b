"""Socket inode → owning processes, through /proc/PID/fd as `ss -p` does.

Socket inodes are unique host-wide, so this works for sockets of any network
namespace. A non-root user cannot read other users' fd tables: those owners
stay unknown and the report says so instead of guessing.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from tcpwhy.host.sockets import Owner, Socket


@dataclass
class OwnerScan:
    owners: dict[int, list[Owner]] = field(default_factory=dict)
    unreadable: int = 0  # processes whose fd table we were not allowed to read
    scanned: int = 0


def _comm(pid_dir: Path) -> str:
    try:
        return (pid_dir / "comm").read_text().rstrip("\n")
    except OSError:
        return "?"


def scan_owners(inodes: Iterable[int], proc: Path = Path("/proc")) -> OwnerScan:
    wanted = {i for i in inodes if i}
    scan = OwnerScan()
    if not wanted:
        return scan
    try:
        entries = list(os.scandir(proc))
    except OSError:
        return scan
    for entry in entries:
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        fd_dir = Path(entry.path) / "fd"
        try:
            fds = os.listdir(fd_dir)
        except PermissionError:
            scan.unreadable += 1
            continue
        except OSError:  # the process exited meanwhile
            continue
        scan.scanned += 1
        comm: str | None = None
        for fd in fds:
            try:
                target = os.readlink(fd_dir / fd)
            except OSError:
                continue
            if not target.startswith("socket:["):
                continue
            inode = int(target[8:-1])
            if inode in wanted:
                if comm is None:
                    comm = _comm(Path(entry.path))
                scan.owners.setdefault(inode, []).append(Owner(pid, comm, int(fd)))
    return scan


def attach_owners(sockets: list[Socket], proc: Path = Path("/proc")) -> OwnerScan:
    scan = scan_owners((s.inode for s in sockets), proc)
    missing = {s.inode for s in sockets if s.inode and s.inode not in scan.owners}
    if missing and not scan.unreadable:
        # A socket just accept()ed has its inode before its fd is installed: look once more.
        scan.owners.update(scan_owners(missing, proc).owners)
    for s in sockets:
        s.owners = sorted(scan.owners.get(s.inode, []), key=lambda o: (o.pid, o.fd))
    return scan


def visibility_note(sockets: list[Socket], scan: OwnerScan) -> str | None:
    """Say what a non-root user could not see instead of showing silent gaps."""
    hidden = sum(1 for s in sockets if s.inode and not s.owners)
    if not hidden:
        return None
    if scan.unreadable:
        return (
            f"{hidden} socket(s) have an owner we may not inspect: {scan.unreadable} processes of "
            "other users hide their file descriptors from a non-root user (run as root to see them)"
        )
    return f"{hidden} socket(s) are held by no process we can see (another PID namespace, passed in flight, or closed while we looked)"
