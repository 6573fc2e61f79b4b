"""JSON Schemas (draft 2020-12) of every JSON document and JSON-lines record tcpwhy prints.

Every document, and every line of a JSON-lines stream, carries ``schema_version``; the
schemas here describe that version. A shape that changes gets a new version and a line in
CHANGELOG.md; docs/json.md describes the documents.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

SCHEMA_VERSION = "2.0"
"""MAJOR.MINOR: MINOR grows when fields are added, MAJOR when a field is renamed, removed or
changes meaning."""

NAMES = (
    "analyze",
    "fleet",
    "conns",
    "packets",
    "explain",
    "host-states",
    "host-listen",
    "host-counters",
    "host-sysctl",
    "host-watch",
    "watch",
    "flow",
    "host-trace",
    "lab",
)


def load(name: str) -> dict[str, Any]:
    """The schema of one output, by name (see NAMES)."""
    text = resources.files(__name__).joinpath(f"{name}.schema.json").read_text()
    schema: dict[str, Any] = json.loads(text)
    return schema
