"""Validation of tcpwhy's JSON output against the schemas shipped in the package."""

from __future__ import annotations

from functools import cache
from typing import Any

from jsonschema import Draft202012Validator

from tcpwhy.schemas import SCHEMA_VERSION, load


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
