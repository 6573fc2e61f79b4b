"""tcpwhy: tells why TCP connections break, from captures and from a live Linux host."""

from __future__ import annotations

import os

__version__ = "0.1.0"

TYPE_CHECKING = False  # not `typing`'s: importing typing costs start-up the CLI may not need
if TYPE_CHECKING:
    from typing import Any

    from tcpwhy import host as host
    from tcpwhy.api import Capture as Capture
    from tcpwhy.api import CaptureWarning as CaptureWarning
    from tcpwhy.api import Field as Field
    from tcpwhy.api import Finding as Finding
    from tcpwhy.api import FleetReport as FleetReport
    from tcpwhy.api import Flow as Flow
    from tcpwhy.api import Report as Report
    from tcpwhy.api import Table as Table
    from tcpwhy.api import analyze as analyze
    from tcpwhy.api import open as open
    from tcpwhy.errors import CaptureError as CaptureError
    from tcpwhy.errors import NotACaptureError as NotACaptureError
    from tcpwhy.errors import TcpwhyError as TcpwhyError
    from tcpwhy.errors import TruncatedCaptureError as TruncatedCaptureError
    from tcpwhy.errors import UnsupportedLinkTypeError as UnsupportedLinkTypeError
    from tcpwhy.filter.syntax import FilterError as FilterError

_PUBLIC = {
    "open": "tcpwhy.api",
    "analyze": "tcpwhy.api",
    "Capture": "tcpwhy.api",
    "CaptureWarning": "tcpwhy.api",
    "Field": "tcpwhy.api",
    "Finding": "tcpwhy.api",
    "FleetReport": "tcpwhy.api",
    "Flow": "tcpwhy.api",
    "Report": "tcpwhy.api",
    "Table": "tcpwhy.api",
    "TcpwhyError": "tcpwhy.errors",
    "CaptureError": "tcpwhy.errors",
    "NotACaptureError": "tcpwhy.errors",
    "UnsupportedLinkTypeError": "tcpwhy.errors",
    "TruncatedCaptureError": "tcpwhy.errors",
    "FilterError": "tcpwhy.filter.syntax",
}
"""The Python API (docs/api.md), imported on first use: `import tcpwhy` stays as cheap as
the command line's start-up needs."""

__all__ = [*(n for n in _PUBLIC if n != "open"), "host"]  # `open` would shadow the builtin


def __getattr__(name: str) -> Any:
    import importlib

    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    if name == "host":
        return importlib.import_module("tcpwhy.host")
    raise AttributeError(f"module 'tcpwhy' has no attribute {name!r}")


def _compiled_code_cache() -> None:
    """Give numba a writable cache directory when neither the package nor $HOME is writable.

    The decoder's compiled loops are cached beside the sources or in the user's
    cache; a read-only install run by a user without a home (a service account,
    `nobody`) would otherwise fail at the first compiled call.
    """
    if "NUMBA_CACHE_DIR" in os.environ:
        return
    here = os.path.dirname(os.path.abspath(__file__))
    pycache = os.path.join(here, "__pycache__")
    if os.access(pycache if os.path.isdir(pycache) else here, os.W_OK):
        return
    home_cache = os.path.join(os.path.expanduser("~"), ".cache")
    if os.access(home_cache if os.path.isdir(home_cache) else os.path.expanduser("~"), os.W_OK):
        return
    import tempfile  # only here: importing it costs a fiftieth of a second at every start

    os.environ["NUMBA_CACHE_DIR"] = os.path.join(
        tempfile.gettempdir(), f"tcpwhy-numba-{os.getuid()}"
    )


_compiled_code_cache()
