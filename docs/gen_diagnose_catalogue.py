"""Regenerate the catalogue in docs/diagnose.md (rules in order, lab scenario per kind) from
tcpwhy.diagnose: each rule module's ORDER and @rule kinds, each lab scenario's `finds`.

python docs/gen_diagnose_catalogue.py            rewrite the generated blocks in place
python docs/gen_diagnose_catalogue.py --check    exit 1 if the page is out of date
"""

from __future__ import annotations

import argparse
from pathlib import Path

from generated_page import rewrite_or_check

from tcpwhy.diagnose.catalogue import splice

PAGE = Path(__file__).resolve().parent / "diagnose.md"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--check", action="store_true", help="fail if the page is out of date")
    args = ap.parse_args(argv)
    return rewrite_or_check(PAGE, splice, args.check, "docs/gen_diagnose_catalogue.py")


if __name__ == "__main__":
    raise SystemExit(main())
