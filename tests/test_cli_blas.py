"""The command line keeps numpy's BLAS to one thread (it does no linear algebra, and the
BLAS threads spin at start-up); the library leaves the user's setting alone."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

PROBE = "import os, {module}; print(os.environ.get('OPENBLAS_NUM_THREADS'))"


def _seen(module: str, env_value: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    if env_value is not None:
        env["OPENBLAS_NUM_THREADS"] = env_value
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(module=module)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


@pytest.mark.parametrize(
    ("module", "given", "want"),
    [
        ("tcpwhy.cli", None, "1"),
        ("tcpwhy.cli", "3", "3"),  # a setting of the user's is kept
        ("tcpwhy", None, "None"),  # the library sets nothing
    ],
)
def test_blas_threads(module: str, given: str | None, want: str) -> None:
    assert _seen(module, given) == want


def test_numpy_is_not_loaded_before_the_setting() -> None:
    """The setting only works if numpy loads after it: importing the command line must not
    import numpy."""
    out = subprocess.run(
        [sys.executable, "-c", "import sys, tcpwhy.cli; print('numpy' in sys.modules)"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "False"
