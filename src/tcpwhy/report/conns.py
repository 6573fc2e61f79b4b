"""`tcpwhy conns`: one record per connection (table, jsonl, csv, Zeek conn.log)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Registers `conns`; filled in by the connection-records work."""
