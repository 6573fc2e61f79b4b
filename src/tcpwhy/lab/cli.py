"""`tcpwhy lab …`: run an incident scenario on the real kernel and record it."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("lab", help="reproduce a connection incident on the real kernel and record it")
    p.set_defaults(func=lambda args: p.print_help() or 2)
