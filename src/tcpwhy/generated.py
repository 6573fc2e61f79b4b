"""Blocks of the docs generated from the code (the state diagram, the diagnosis catalogue,
the API's column tables): each lies between a begin and an end marker line, and is
replaced whole, so the page's hand-written text around it stays as written."""

from __future__ import annotations

from collections.abc import Callable, Iterable


def replace_blocks(text: str, blocks: Iterable[tuple[str, str, Callable[[], str]]]) -> str:
    """`text` with what lies between each (begin, end) marker pair replaced by its block;
    a missing marker is a ValueError (a page edited by hand lost it)."""
    for begin, end, block in blocks:
        if begin not in text or end not in text:
            raise ValueError(f"generated-block markers {begin!r} not found")
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        text = f"{head}{begin}\n{block()}{end}{tail}"
    return text
