"""Live host inspection: socket states per process, accept queues, kernel counters, TCP sysctls.

Read-only by design: nothing here ever writes a setting of the host.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from tcpwhy.host.documents import counters, listen, states

__all__ = ["counters", "listen", "states"]


def __getattr__(name: str) -> Any:
    """`states`, `listen` and `counters` (tcpwhy.host.documents), loaded on first use."""
    import importlib

    if name in __all__:
        return getattr(importlib.import_module("tcpwhy.host.documents"), name)
    raise AttributeError(f"module 'tcpwhy.host' has no attribute {name!r}")
