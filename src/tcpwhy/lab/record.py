"""Re-record the small captures shipped in tcpwhy/data/lab (needs root): `python -m tcpwhy.lab.record`.

The shapes are chosen to keep each file at a few KB; the tests check the
shipped files with the same packet-level assertions as fresh recordings.
"""

from __future__ import annotations

import sys
from pathlib import Path

from tcpwhy.lab.env import Options

DATA_DIR = Path(__file__).resolve().parents[1] / "data" / "lab"

RECORD_OPTIONS: dict[str, Options] = {
    "time-wait": Options(count=5),
    "zero-window": Options(count=16, delay=1.5),
}


def options_for(name: str) -> Options:
    return RECORD_OPTIONS.get(name, Options())


def main(argv: list[str] | None = None) -> int:
    from tcpwhy.lab.runner import all_scenarios, run_scenario

    names = (argv if argv is not None else sys.argv[1:]) or [s.name for s in all_scenarios()]
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    status = 0
    for name in names:
        out = DATA_DIR / f"{name}.pcap"
        result = run_scenario(name, options_for(name), str(out))
        size = out.stat().st_size
        print(
            f"{name}: {'ok' if result.ok else 'FAILED ' + result.reason} ({result.packets} packets, {size} bytes)"
        )
        status |= not result.ok
    return status


if __name__ == "__main__":
    raise SystemExit(main())
