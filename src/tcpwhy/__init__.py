"""tcpwhy: tells why TCP connections break, from captures and from a live Linux host."""

from __future__ import annotations

import os

__version__ = "0.1.0"


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
