"""Entering a network namespace: the one way both the lab and `tcpwhy host --netns` do it.

A module of its own at the top of the package, so that the read-only host views need
nothing from the lab to look inside a namespace.
"""

from __future__ import annotations

import ctypes
import os

CLONE_NEWNET = 0x40000000

_libc = ctypes.CDLL(None, use_errno=True)


def setns(fd: int) -> None:
    """Move the calling thread into the network namespace open at `fd` (setns(2)).

    The lab enters one per thread for the instant of `socket()`, `tcpwhy host --netns` in
    a forked probe. Python's own os.setns where it has one (3.12), libc's otherwise; an
    error is an OSError with the errno.
    """
    fn = getattr(os, "setns", None)
    if fn is not None:
        fn(fd, CLONE_NEWNET)
        return
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
