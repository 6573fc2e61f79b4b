"""Regenerate the diagram and tables in docs/state-machine.md from tcpwhy.tcp.state.

python docs/gen_state_diagram.py            rewrite the generated block in place
python docs/gen_state_diagram.py --check    exit 1 if the page is out of date
python docs/gen_state_diagram.py --mermaid  print the Mermaid diagram
python docs/gen_state_diagram.py --dot      print the Graphviz DOT diagram
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from generated_page import rewrite_or_check

from tcpwhy.generated import replace_blocks
from tcpwhy.tcp.state import DOC_BEGIN, DOC_END, diagram, docs_block

PAGE = Path(__file__).resolve().parent / "state-machine.md"


def splice(text: str) -> str:
    """The page with its generated block replaced by the current one."""
    return replace_blocks(text, [(DOC_BEGIN, DOC_END, docs_block)])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    group = ap.add_mutually_exclusive_group()
    group.add_argument("--check", action="store_true", help="fail if the page is out of date")
    group.add_argument("--mermaid", action="store_true", help="print the Mermaid diagram")
    group.add_argument("--dot", action="store_true", help="print the Graphviz DOT diagram")
    args = ap.parse_args(argv)
    if args.mermaid:
        sys.stdout.write(diagram().mermaid)
        return 0
    if args.dot:
        sys.stdout.write(diagram().dot)
        return 0
    return rewrite_or_check(PAGE, splice, args.check, "docs/gen_state_diagram.py")


if __name__ == "__main__":
    raise SystemExit(main())
