"""HTTP/1.x message heads: the start line and the few headers tcpwhy reads.

One parser and one method list for every stage: the display filter's ``http.*`` fields,
the diagnosis naming requests and reading Connection/Keep-Alive, and the server names of
`conns` (a request's Host). Payload bytes are attacker data: the parser reads a bounded
prefix and returns bytes, each caller escapes what it prints.
"""

from __future__ import annotations

from dataclasses import dataclass

METHODS = (
    b"GET",
    b"POST",
    b"HEAD",
    b"PUT",
    b"DELETE",
    b"OPTIONS",
    b"TRACE",
    b"CONNECT",
    b"PATCH",
    b"PROPFIND",
    b"PROPPATCH",
    b"MKCOL",
    b"COPY",
    b"MOVE",
    b"LOCK",
    b"UNLOCK",
    b"SEARCH",
    b"M-SEARCH",
    b"NOTIFY",
    b"SUBSCRIBE",
    b"UNSUBSCRIBE",
)
METHOD_WORDS = tuple(m + b" " for m in METHODS)
"""How a request line starts: a method and its space."""
HEAD_LIMIT = 16384
"""Bytes of a segment's payload read for the message head (bounds work on hostile input)."""


@dataclass
class Head:
    """The start of one HTTP message, as bytes (attacker data)."""

    request: bool
    method: bytes | None = None
    uri: bytes | None = None
    version: bytes | None = None
    code: int | None = None
    phrase: bytes | None = None
    host: bytes | None = None
    connection: bytes | None = None
    user_agent: bytes | None = None
    content_type: bytes | None = None
    keep_alive: bytes | None = None


def _version_ok(v: bytes) -> bool:
    return (
        len(v) == 8
        and v[:5] == b"HTTP/"
        and v[5:6].isdigit()
        and v[6:7] == b"."
        and v[7:].isdigit()
    )


def parse_head(payload: bytes) -> Head | None:
    """Request line `METHOD URI HTTP/x.y` or status line `HTTP/x.y CODE [phrase]`, then headers."""
    data = payload[:HEAD_LIMIT]
    end = data.find(b"\n")
    first = data if end < 0 else data[:end]
    first = first.removesuffix(b"\r")
    head: Head
    if first.startswith(b"HTTP/"):
        parts = first.split(b" ", 2)
        if len(parts) < 2 or not _version_ok(parts[0]):
            return None
        code = parts[1]
        if len(code) != 3 or not code.isdigit():
            return None
        head = Head(False, version=parts[0], code=int(code))
        head.phrase = parts[2] if len(parts) > 2 else b""
    else:
        # as Wireshark: method up to the first space, URI up to the next, version the rest
        parts = first.split(b" ", 2)
        if len(parts) < 2 or parts[0] not in METHODS:
            return None
        head = Head(
            True, method=parts[0], uri=parts[1], version=parts[2] if len(parts) > 2 else None
        )
    if end < 0:
        return head
    for line in data[end + 1 :].split(b"\n"):
        line = line.removesuffix(b"\r")
        if not line:
            break
        name, sep, value = line.partition(b":")
        if not sep:
            continue
        key = name.strip().lower()
        val = value.strip(b" \t")
        if key == b"host" and head.host is None:
            head.host = val
        elif key == b"connection" and head.connection is None:
            head.connection = val
        elif key == b"user-agent" and head.user_agent is None:
            head.user_agent = val
        elif key == b"content-type" and head.content_type is None:
            head.content_type = val
        elif key == b"keep-alive" and head.keep_alive is None:
            head.keep_alive = val
    return head
