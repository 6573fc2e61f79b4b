"""Errors that end a command with one line on stderr and a documented exit status.

Exit statuses (the README's table is generated from the same numbers):
  0  success (warnings, e.g. a capture cut in the middle of a record, go to stderr)
  1  the command ran but the environment prevented it (not root, no namespaces)
  2  bad input: usage error, unreadable file, not a capture, unsupported link type, bad filter
  3  a lab scenario did not play out as designed (the kernel did something else)
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_ENVIRONMENT = 1
EXIT_BAD_INPUT = 2
EXIT_SCENARIO = 3


class TcpwhyError(Exception):
    """An error the user can act on; printed as `tcpwhy: WHERE: reason`."""

    exit_status = EXIT_BAD_INPUT

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(f"{where}: {reason}")
        self.where = where
        self.reason = reason


class CaptureError(TcpwhyError):
    """The file is not a capture we can read (bad magic, bogus header, unsupported link type)."""


class EnvironmentProblem(TcpwhyError):
    """Missing privileges or kernel features; not the input's fault."""

    exit_status = EXIT_ENVIRONMENT


class ScenarioFailed(TcpwhyError):
    """A lab scenario's kernel behaviour differed from the design."""

    exit_status = EXIT_SCENARIO


class NotACaptureError(CaptureError):
    """The input is not a pcap or pcapng capture (or is empty, or cannot be opened)."""


class UnsupportedLinkTypeError(CaptureError):
    """The capture's link type is one tcpwhy does not decode."""


class TruncatedCaptureError(CaptureError):
    """The capture ends (or its compression breaks) before its first packet."""
