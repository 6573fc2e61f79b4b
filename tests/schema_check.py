"""Validation of tcpwhy's JSON output against the schemas shipped in the package."""

from __future__ import annotations

from functools import cache
from typing import Any

from jsonschema import Draft202012Validator

from tcpwhy.schemas import SCHEMA_VERSION, load
from tcpwhy.timestamps import rfc3339


@cache
def validator(name: str) -> Draft202012Validator:
    schema = load(name)
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


def validate(name: str, doc: Any) -> None:
    """Fail with every violation (path and message) when `doc` does not fit schema `name`."""
    errors = sorted(validator(name).iter_errors(doc), key=lambda e: list(e.absolute_path))
    assert not errors, f"{name}: " + "; ".join(
        f"/{'/'.join(map(str, e.absolute_path))}: {e.message[:300]}" for e in errors[:5]
    )
    if isinstance(doc, dict):
        assert doc.get("schema_version") == SCHEMA_VERSION
    assert not (bad := list(_clock_pairs(doc))), f"{name}: times disagree: {bad[:3]}"


def _clock_pairs(node: Any, path: str = "") -> Any:
    """Each RFC 3339 field whose epoch-nanoseconds twin says another instant (`ts`/`ts_ns`,
    `first_ts`/`first_ts_ns`, `first_time`/`first_ns`, `time`/`ts_ns`, …)."""
    if isinstance(node, dict):
        for k, v in node.items():
            if isinstance(v, str) and v.endswith("Z") and "T" in v:
                base = k[: -len("_time")] if k.endswith("_time") else k
                twin = next(
                    (t for t in (f"{k}_ns", f"{base}_ns", "ts_ns" if k == "time" else "")
                     if t in node and isinstance(node[t], int)),
                    None,
                )  # fmt: skip
                if twin is not None and rfc3339(node[twin]) != v:
                    yield f"{path}/{k}={v} vs {twin}={node[twin]}"
            else:
                yield from _clock_pairs(v, f"{path}/{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _clock_pairs(v, f"{path}/{i}")
