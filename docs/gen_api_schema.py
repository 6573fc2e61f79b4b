"""Regenerate the column tables of `Capture.packets` and `Capture.connections` in docs/api.md
from the schemas the API hands out (tcpwhy.api.packet_schema, connection_schema), so the page
lists exactly the columns a table has, in its order, with the meanings `t.schema` gives.

python docs/gen_api_schema.py            rewrite the generated blocks in place
python docs/gen_api_schema.py --check    exit 1 if the page is out of date
"""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path

import numpy as np

from tcpwhy import api
from tcpwhy.generated import replace_blocks
from tcpwhy.tcp import records

PAGE = Path(__file__).resolve().parent / "api.md"
SCRIPT = "docs/gen_api_schema.py"


def begin(table: str) -> str:
    return f"<!-- BEGIN GENERATED {table} by {SCRIPT}: do not edit -->"


def end(table: str) -> str:
    return f"<!-- END GENERATED {table} -->"


ARROW_TIMES = {
    "ts_ns": "timestamp[ns, tz=UTC]",
    "start_ns": "timestamp[ns, tz=UTC]",
    "duration_ns": "duration[ns]",
    "irtt_ns": "duration[ns]",
}
"""Integer nanosecond columns `to_arrow` types as times (tests/test_api_schema_docs.py checks
every documented Arrow type against a real `to_arrow()`, so a change there shows up)."""


def md(text: str) -> str:
    """Text for a Markdown table cell: a `|` would end the cell."""
    return text.replace("|", "\\|")


def is_code(f: api.Field) -> bool:
    """A column of codes: words fixed by tcpwhy, or (records.WORD_COLUMNS) by the capture."""
    return f.words is not None or f.name in records.WORD_COLUMNS


def numpy_type(f: api.Field) -> str:
    """What `t[name]` holds, as a numpy user names it."""
    if f.dtype == "str":
        return "text"
    name = np.dtype(f.dtype).name
    if is_code(f):
        return f"{name} codes"
    if f.shape:
        return f"{name}, shape (rows, {', '.join(map(str, f.shape))})"
    return name


def arrow_type(f: api.Field) -> str:
    """The column's type in `to_arrow()`, written as pyarrow prints it (dictionaries as
    ``dictionary<indices, values>``, fixed-size lists without the item name)."""
    if f.name in ARROW_TIMES:
        return ARROW_TIMES[f.name]
    if f.dtype == "str":
        return "string"
    name = np.dtype(f.dtype).name
    if is_code(f):
        return f"dictionary<{name}, string>"
    if f.shape:
        return f"fixed_size_list<{name}>[{f.shape[0]}]"
    return name


def words_text(f: api.Field) -> str:
    """Each word after its code; a column whose words are the capture's own (`end`,
    `server_name`) says where to find them, as the static schema cannot list them."""
    if f.words is None:
        return f'the capture\'s own, in `t.schema["{f.name}"].words`'
    return ", ".join(f"{code} `{w}`" if w else f'{code} `""`' for code, w in enumerate(f.words))


def table_block(schema: dict[str, api.Field], only_local: frozenset[str] = frozenset()) -> str:
    """One row per column, in schema order; a code column's meaning ends with its words."""
    lines = [
        "| column | numpy (`t[name]`) | Arrow (`t.to_arrow()`) | meaning |",
        "|---|---|---|---|",
    ]
    for name, f in schema.items():
        meaning = f.meaning
        if is_code(f):
            meaning = f"{meaning}; words: {words_text(f)}"
        column = f"`{name}`" + (" (only with `local_nets`)" if name in only_local else "")
        lines.append(f"| {column} | {md(numpy_type(f))} | `{md(arrow_type(f))}` | {md(meaning)} |")
    return "\n".join(lines) + "\n"


def packets_block() -> str:
    return table_block(api.packet_schema())


def connections_block() -> str:
    full = api.connection_schema(local=True)
    local = frozenset(full) - frozenset(api.connection_schema(local=False))
    note = (
        "A text column is a numpy array of `str` objects; a column of codes holds its words' "
        "numbers in numpy and is a dictionary of its words in Arrow."
    )
    return f"{table_block(full, local)}\n{textwrap.fill(note, 92)}\n"


BLOCKS = {"packets": packets_block, "connections": connections_block}


def splice(text: str) -> str:
    """The page with each generated block replaced by the current one."""
    return replace_blocks(text, [(begin(t), end(t), block) for t, block in BLOCKS.items()])


def main(argv: list[str] | None = None) -> int:
    # imported here: the tests import this module without docs/ on sys.path
    from generated_page import rewrite_or_check

    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--check", action="store_true", help="fail if the page is out of date")
    args = ap.parse_args(argv)
    return rewrite_or_check(PAGE, splice, args.check, SCRIPT)


if __name__ == "__main__":
    raise SystemExit(main())
