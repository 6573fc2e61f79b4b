"""The capture commands' reading options (`--no-reassemble`), shared by every command that
reads captures: registered with one call, read by the reader as its default."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

_REASSEMBLE = [True]


def reassemble_default() -> bool:
    """Whether readers join IP fragments when their caller does not say (the command line's
    choice, else on: tshark reassembles by default)."""
    return _REASSEMBLE[0]


def set_reassemble_default(on: bool) -> None:
    _REASSEMBLE[0] = on


class _NoReassemble(argparse.Action):
    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        set_reassemble_default(False)
        setattr(namespace, self.dest, False)


def add_reassembly_option(p: argparse.ArgumentParser) -> None:
    """Register --no-reassemble on a capture command (and reset the default to on: a parser
    is built per invocation)."""
    set_reassemble_default(True)
    p.add_argument(
        "--no-reassemble",
        dest="reassemble",
        nargs=0,
        action=_NoReassemble,
        default=True,
        help="do not join IP fragments (by default, as tshark, fragmented IPv4 and IPv6 "
        "datagrams are reassembled and the TCP they carry decoded)",
    )
