"""`matches` as Wireshark runs it: PCRE2, with tshark's options and limits.

tshark compiles a `matches` pattern with PCRE2, case-insensitive unless the pattern says
``(?-i)``, never in UTF mode, and matches it with PCRE2's default limits: a match that
reaches the match limit (a pattern that backtracks catastrophically, ``(a+)+$`` on a long
payload) is an error, and the packet does not match. Python's `re` is another dialect
(no ``\\Q…\\E``, ``\\x{hh}``, ``\\p{…}`` or POSIX classes; ``(?i)`` only at the start) and
has no limit at all: such a pattern ran for hours on one packet.

This is a binding by `ctypes` to the system's libpcre2-8, the library tshark itself links:
written here because the PyPI binding (`pcre2`) always adds ``PCRE2_ALT_BSUX`` and
``PCRE2_NEVER_BACKSLASH_C``, which change the pattern language from Wireshark's. Where
libpcre2-8 cannot be loaded, `compile_pattern` falls back to Python's `re` (the options
rewritten by `pcre_options`; no match limit), and `ENGINE` says so.
"""

from __future__ import annotations

import ctypes
import re
import threading
import weakref
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

# pcre2.h
_CASELESS = 0x00000008
_NEVER_UTF = 0x00001000
_ERROR_BUFFER = 256  # "a buffer size of 120 code units is ample" (pcre2api(3))


class FilterRegexError(ValueError):
    """A pattern the engine refuses; the message is the engine's own words."""


class Pattern(Protocol):
    pattern: bytes

    def search(self, subject: bytes) -> bool: ...

    def search_rows(
        self, data: npt.NDArray[np.uint8], off: npt.NDArray[np.int64], length: npt.NDArray[np.int64]
    ) -> npt.NDArray[np.bool_]:
        """`search` of each ``data[off[i]:off[i] + length[i]]`` (a table's payloads)."""
        ...


_SONAMES = ("libpcre2-8.so.0", "libpcre2-8.0.dylib")
"""The library by its stable names (``ctypes.util.find_library`` runs ``ldconfig`` or a
compiler in a child process: a worker's import started a process)."""


def _load() -> Any:
    for name in _SONAMES:
        try:
            lib = ctypes.CDLL(name)
            break
        except OSError:
            continue
    else:
        return None
    vp, size = ctypes.c_void_p, ctypes.c_size_t
    lib.pcre2_compile_8.restype = vp
    lib.pcre2_compile_8.argtypes = [
        ctypes.c_char_p,
        size,
        ctypes.c_uint32,
        ctypes.POINTER(ctypes.c_int),
        ctypes.POINTER(size),
        vp,
    ]
    lib.pcre2_get_error_message_8.restype = ctypes.c_int
    lib.pcre2_get_error_message_8.argtypes = [ctypes.c_int, ctypes.c_char_p, size]
    lib.pcre2_match_data_create_8.restype = vp
    lib.pcre2_match_data_create_8.argtypes = [ctypes.c_uint32, vp]
    lib.pcre2_match_8.restype = ctypes.c_int
    lib.pcre2_match_8.argtypes = [vp, ctypes.c_char_p, size, size, ctypes.c_uint32, vp, vp]
    lib.pcre2_match_data_free_8.restype = None
    lib.pcre2_match_data_free_8.argtypes = [vp]
    lib.pcre2_code_free_8.restype = None
    lib.pcre2_code_free_8.argtypes = [vp]
    return lib


_LIB = _load()
_MATCH = ctypes.cast(_LIB.pcre2_match_8, ctypes.c_void_p).value if _LIB is not None else None
ENGINE = "PCRE2 (libpcre2-8)" if _LIB is not None else "Python re (libpcre2-8 not found)"


def _message(code: int) -> str:
    buf = ctypes.create_string_buffer(_ERROR_BUFFER)
    _LIB.pcre2_get_error_message_8(code, buf, _ERROR_BUFFER)
    return buf.value.decode("ascii", "replace")


class _Data(threading.local):
    """One match block per thread (tshark's `ws_regex_matches` makes one per call)."""

    def __init__(self) -> None:
        ptr = _LIB.pcre2_match_data_create_8(1, None)
        if not ptr:
            raise MemoryError("pcre2_match_data_create")
        self.ptr = ctypes.c_void_p(ptr)
        weakref.finalize(self, _LIB.pcre2_match_data_free_8, ptr)


class Pcre2Pattern:
    """A compiled pattern; `search` is tshark's `matches` of one value."""

    def __init__(self, pattern: bytes) -> None:
        self.pattern = pattern
        err, off = ctypes.c_int(0), ctypes.c_size_t(0)
        code = _LIB.pcre2_compile_8(
            pattern,
            len(pattern),
            _CASELESS | _NEVER_UTF,
            ctypes.byref(err),
            ctypes.byref(off),
            None,
        )
        if not code:
            raise FilterRegexError(_message(err.value))
        self._code = ctypes.c_void_p(code)  # wrapped once: ctypes converts a plain int per call
        self._data = _Data()
        weakref.finalize(self, _LIB.pcre2_code_free_8, code)

    def __reduce__(self) -> tuple[type[Pcre2Pattern], tuple[bytes]]:
        """Compiled again where it is unpickled (or copied): the code is the library's memory."""
        return (Pcre2Pattern, (self.pattern,))

    def search(self, subject: bytes) -> bool:
        """Whether the pattern occurs in `subject`; an error of the engine (its match, depth
        or heap limit reached) is no match, as in tshark."""
        rc = _LIB.pcre2_match_8(self._code, subject, len(subject), 0, 0, self._data.ptr, None)
        return rc >= 0

    def search_rows(
        self, data: npt.NDArray[np.uint8], off: npt.NDArray[np.int64], length: npt.NDArray[np.int64]
    ) -> npt.NDArray[np.bool_]:
        """In a compiled loop that calls the library itself: through ctypes each subject
        cost about a microsecond (1.5 M payloads 1.5 s), ten times the match."""
        from tcpwhy.filter.pcre_kernel import match_rows

        base = np.ascontiguousarray(data, np.uint8)  # kept alive through the call
        out = np.zeros(len(off), np.bool_)
        if not len(off):
            return out
        # the loop reads memory by address: every subject inside `data`, or nothing is read
        if int(off.min()) < 0 or int(length.min()) < 0 or int((off + length).max()) > len(base):
            raise ValueError("subjects outside the data")
        match_rows(
            _MATCH,
            self._code.value,
            base.ctypes.data,
            np.require(off, np.int64, ["C", "W"]),
            np.require(length, np.int64, ["C", "W"]),
            self._data.ptr.value,
            out,
        )
        return out


class _PythonPattern:
    """The fallback: Python's `re`, PCRE's option settings rewritten (`pcre_options`)."""

    def __init__(self, pattern: bytes) -> None:
        self.pattern = pattern
        try:
            self._rx = re.compile(pcre_options(pattern), re.IGNORECASE)
        except re.error as exc:
            raise FilterRegexError(exc.msg) from None
        except OverflowError as exc:  # a repetition count past what the engine takes
            raise FilterRegexError(str(exc)) from None
        except RecursionError:  # groups nested deeper than the engine's parser goes
            raise FilterRegexError("parentheses are too deeply nested") from None

    def search(self, subject: bytes) -> bool:
        return self._rx.search(subject) is not None

    def search_rows(
        self, data: npt.NDArray[np.uint8], off: npt.NDArray[np.int64], length: npt.NDArray[np.int64]
    ) -> npt.NDArray[np.bool_]:
        out = np.zeros(len(off), np.bool_)
        for i, (o, n) in enumerate(zip(off.tolist(), length.tolist(), strict=True)):
            out[i] = self._rx.search(data[o : o + n].tobytes()) is not None
        return out


def compile_pattern(pattern: bytes) -> Pattern:
    """A `matches` pattern, as tshark compiles it (`FilterRegexError` where it refuses it)."""
    if _LIB is None:
        return _PythonPattern(pattern)
    return Pcre2Pattern(pattern)


def pcre_options(pat: bytes) -> bytes:
    """A PCRE pattern with its option settings rewritten for Python's `re` (the fallback).

    PCRE's ``(?-i)`` (or ``(?i)``, ``(?s)``, ``(?x-i)``…) changes the options from there to
    the end of the enclosing group; Python only takes scoped groups ``(?-i:...)`` (and
    global flags at the very start), so each setting becomes a scoped group that runs to
    the end of its enclosing group.
    """
    out = bytearray()
    stack: list[int] = []  # scoped groups opened in each enclosing group
    i, n = 0, len(pat)
    opened = 0
    while i < n:
        c = pat[i : i + 1]
        if c == b"\\":
            out += pat[i : i + 2]
            i += 2
            continue
        if c == b"[":
            j = i + 1
            if pat[j : j + 1] == b"^":
                j += 1
            if pat[j : j + 1] == b"]":
                j += 1
            while j < n and pat[j : j + 1] != b"]":
                j += 2 if pat[j : j + 1] == b"\\" else 1
            out += pat[i : j + 1]
            i = j + 1
            continue
        m = re.match(rb"\(\?([a-zA-Z]*)(?:-([a-zA-Z]*))?\)", pat[i:])
        if m and (m.group(1) or m.group(2) is not None):
            on = bytes(ch for ch in m.group(1) if chr(ch) in "ismx")
            off = bytes(ch for ch in (m.group(2) or b"") if chr(ch) in "ismx")
            out += b"(?" + on + (b"-" + off if off else b"") + b":"
            opened += 1
            i += m.end()
            continue
        if c == b"(":
            stack.append(opened)
            opened = 0
        elif c == b")":
            out += b")" * opened
            opened = stack.pop() if stack else 0
        out += c
        i += 1
    out += b")" * opened
    return bytes(out)
