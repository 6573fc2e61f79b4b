"""`tcpwhy host …` sub-commands."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("host", help="inspect the live host: socket states, accept queues, counters, sysctls")
    p.set_defaults(func=lambda args: p.print_help() or 2)
