"""Diagnosis: from a capture's connections to findings that say why they broke and what to change.

`diagnose_files(paths)` returns a `Report`; each rule module (one per finding
kind) registers itself in `registry`. The per-connection facts the rules share
live in `context`; `render` turns a report into text or JSON.
"""

from tcpwhy.diagnose.model import Finding, Report, Severity

__all__ = ["Finding", "Report", "Severity"]
