"""What the docs generators share: rewrite a page's generated blocks, or check them."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path


def rewrite_or_check(page: Path, splice: Callable[[str], str], check: bool, script: str) -> int:
    """Write `splice(page text)` back when it differs; with `check`, only say so (exit 1)."""
    text = page.read_text()
    new = splice(text)
    if check:
        if new != text:
            print(f"{page} is out of date: run python {script}", file=sys.stderr)
            return 1
        return 0
    if new != text:
        page.write_text(new)
    return 0
