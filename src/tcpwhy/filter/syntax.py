"""Lexer and parser of Wireshark 4.0 display filters, producing a small syntax tree.

The grammar is tshark 4.0's (epan/dfilter/grammar.lemon), written as recursive
descent with the same precedence, loosest first::

    or  ||          left
    and &&          left
    not !           right
    == != === !== < <= > >= ~= contains matches ~ in      (a chain a < b < c is
                    a < b and b < c; any/all may prefix a relation)
    & bitwise_and   left
    + -             left
    * / %           left
    unary - +       (on one entity)

so ``tcp.flags & 0x12 == 0x12`` is ``(tcp.flags & 0x12) == 0x12`` and
``!(tcp.flags & 0x04)`` negates a bitwise test. Parentheses group tests; braces
group arithmetic (``4 * {tcp.srcport + 3}``). Entities are fields (with an
optional layer ``#2`` or ``#[1-2]``), field references ``${field}``, literals,
strings, character constants, slices ``entity[...]`` and function calls.

Tokens follow tshark's scanner: a word is a field name or a literal depending
on whether the field exists, ``-`` inside a word belongs to it (``tcp.dstport-1``
is one word), and a scanner error is only reported when the parser reaches it,
so the first error in the text is the one reported, as tshark does. Every node
keeps its source span so errors point at it with a caret line.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from tcpwhy.errors import TcpwhyError


class FilterError(TcpwhyError):
    """A display filter that does not parse or type-check; the reason holds tshark-style caret lines."""

    def __init__(
        self, message: str, text: str | None = None, pos: int = 0, length: int = 0
    ) -> None:
        reason = message
        if text is not None and length > 0:
            reason += f"\n    {text}\n    {' ' * pos}^{'~' * (length - 1)}"
        super().__init__("-Y", reason)
        self.message = message
        self.pos = pos
        self.length = length


# ---------------------------------------------------------------- tokens

(
    UNPARSED,
    LITERAL,
    FIELD_TOK,
    STRING,
    CHARCONST,
    OP,
    ARITH,
    LPAREN,
    RPAREN,
    LBRACE,
    RBRACE,
    LBRACKET,
    RBRACKET,
    COMMA,
    DOTDOT,
    DOLLAR,
    HASH,
    RANGE,
    INTEGER,
    ERROR,
    EOF,
) = (
    "unparsed",  # a word: a field if one has that name, else a literal
    "literal",  # a `:`-prefixed value (`:47:45`), never a field
    "field",  # a `.`-prefixed name (`.tcp.port`), always a field
    "string",
    "charconst",
    "op",
    "arith",
    "(",
    ")",
    "{",
    "}",
    "[",
    "]",
    ",",
    "..",
    "$",
    "#",
    "range",
    "integer",
    "error",  # a scanner error, raised when the parser reaches it
    "eof",
)

# symbol -> canonical operator name
SYMBOLS = {
    "===": "all_eq",
    "!==": "any_ne",
    "==": "any_eq",
    "!=": "all_ne",
    "~=": "any_ne",
    "<=": "le",
    ">=": "ge",
    "&&": "and",
    "||": "or",
    "<": "lt",
    ">": "gt",
    "!": "not",
    "~": "matches",
}
ARITH_SYMBOLS = {"&": "&", "+": "+", "-": "-", "*": "*", "/": "/", "%": "%"}
KEYWORDS = {
    "and": "and",
    "or": "or",
    "not": "not",
    "in": "in",
    "contains": "contains",
    "matches": "matches",
    "eq": "any_eq",
    "any_eq": "any_eq",
    "ne": "all_ne",
    "all_ne": "all_ne",
    "any_ne": "any_ne",
    "all_eq": "all_eq",
    "gt": "gt",
    "ge": "ge",
    "lt": "lt",
    "le": "le",
    "any": "any",
    "all": "all",
}
ARITH_KEYWORDS = {"bitwise_and": "&"}
COMPARISONS = frozenset({"any_eq", "all_ne", "any_ne", "all_eq", "lt", "le", "gt", "ge"})
_SYMBOL_ORDER = sorted(SYMBOLS, key=len, reverse=True)

_IDENT_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]+)*")
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9][0-9]|[0-9])"
_IPV4_RE = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}")
_RUN4_RE = re.compile(r"[0-9.]+")
_RUN6_RE = re.compile(r"[0-9A-Fa-f:.]+")
_HEX2 = r"[0-9A-Fa-f]{2}"
_COLON_BYTES_RE = re.compile(rf"{_HEX2}(?::{_HEX2})+")
_COLON_LITERALS = (
    re.compile(r":[0-9A-Fa-f]+"),
    re.compile(rf":{_HEX2}(?::{_HEX2})+"),
    re.compile(rf":{_HEX2}(?:-{_HEX2})+"),
    re.compile(rf":{_HEX2}(?:\.{_HEX2})+"),
)
_SPACE = " \t\n\r"
_ESCAPES = {"n": 10, "t": 9, "r": 13, "a": 7, "b": 8, "f": 12, "v": 11, "\\": 92, '"': 34, "'": 39}


@dataclass
class Token:
    kind: str
    text: str  # as written in the filter
    pos: int
    value: str | bytes | int = ""  # operator name, word text, string bytes or character code
    error: FilterError | None = None

    @property
    def length(self) -> int:
        return len(self.text)


def _longest_prefix(src: str, i: int, run_re: re.Pattern[str], ok: Callable[[str], bool]) -> int:
    """End of the longest text at `i` made of `run_re` characters that `ok` accepts, or `i`."""
    m = run_re.match(src, i)
    if m is None:
        return i
    for end in range(min(m.end(), i + 45), i, -1):
        if ok(src[i:end]):
            return end
    return i


def _is_ipv6(text: str) -> bool:
    if "::" not in text and text.count(":") != 7 and not re.search(r":\d+\.\d+", text):
        return False
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def _word_end(src: str, i: int) -> tuple[str, int]:
    """Kind and end of the word at `i` (longest match over tshark's word patterns), or ("", i)."""
    best_kind, best = "", i
    m = _IDENT_RE.match(src, i)
    if m:
        best_kind, best = UNPARSED, m.end()
    end = _longest_prefix(src, i, _RUN4_RE, lambda t: _IPV4_RE.fullmatch(t) is not None)
    if end > i:
        cidr = re.compile(r"/[0-9]{1,2}").match(src, end)
        end = cidr.end() if cidr else end
        if end > best:
            best_kind, best = UNPARSED, end
    end = _longest_prefix(src, i, _RUN6_RE, _is_ipv6)
    if end > i:
        cidr = re.compile(r"/[0-9]{1,3}").match(src, end)
        end = cidr.end() if cidr else end
        if end > best:
            best_kind, best = UNPARSED, end
    m = _COLON_BYTES_RE.match(src, i)
    if m and m.end() > best:
        best_kind, best = UNPARSED, m.end()
    if src.startswith(":", i):
        for rx in _COLON_LITERALS:
            m = rx.match(src, i)
            if m and m.end() > best:
                best_kind, best = LITERAL, m.end()
    if src.startswith(".", i) and not src.startswith("..", i):
        m = _IDENT_RE.match(src, i + 1)
        if m:
            best_kind, best = FIELD_TOK, m.end()
    return best_kind, best


def _string(src: str, i: int) -> Token:
    """A double-quoted string from its opening quote (after an optional r/R)."""
    raw = src[i] in "rR"
    start = i
    j = i + 2 if raw else i + 1
    out = bytearray()
    n = len(src)
    while j < n:
        c = src[j]
        if c == '"':
            return Token(STRING, src[start : j + 1], start, bytes(out))
        if c != "\\":
            out += c.encode()
            j += 1
            continue
        if raw:
            # raw strings keep every backslash; \" and \\ do not end the string
            out += src[j : j + 2].encode()
            j += 2
            continue
        m = re.compile(
            r"\\([0-7]{1,3}|x[0-9A-Fa-f]{1,2}|u[0-9A-Fa-f]{0,4}|U[0-9A-Fa-f]{0,8})"
        ).match(src, j)
        if m:
            seq = m.group(1)
            if seq[0] in "01234567":
                v = int(seq, 8)
                if v > 0xFF:
                    return _error(f"{m.group()} is larger than 255.", src, j, len(m.group()))
                out.append(v)
            elif seq[0] == "x":
                out.append(int(seq[1:], 16))
            else:
                cp = int(seq[1:], 16) if len(seq) == (5 if seq[0] == "u" else 9) else -1
                if (
                    (cp < 0xA0 and cp not in (0x24, 0x40, 0x60))
                    or 0xD800 <= cp <= 0xDFFF
                    or cp > 0x10FFFF
                ):
                    return _error(
                        f"{m.group()} is not a valid universal character name",
                        src,
                        j,
                        len(m.group()),
                    )
                out += chr(cp).encode()
            j = m.end()
            continue
        if j + 1 >= n:
            break
        e = src[j + 1]
        if e not in _ESCAPES:
            return _error(f"\\{e} is not a valid character escape sequence", src, j, 2)
        out.append(_ESCAPES[e])
        j += 2
    return _error("The final quote was missing from a quoted string.", src, n, 1)


def parse_charconst(text: str) -> int | str:
    """The value of a character constant written as `text` (quotes included), or an error message.

    As tshark 4.0's scanner, including its handling of ``'\\n'``, which it rejects as too long.
    """
    body = text[1:-1]
    if body == "":
        return "Empty character constant."
    if body[0] != "\\":
        value = body[0].encode()[0]
        if not 0x20 <= value < 0x7F:
            return f"Non-printable value '0x{value:02x}' in character constant."
        rest = body[1:]
    else:
        e = body[1:2]
        simple = {"a": 7, "b": 8, "f": 12, "r": 13, "t": 9, "v": 11, "'": 39, "\\": 92, '"': 34}
        if e == "":
            return f"{text} isn't a valid character constant."
        if e == "n":
            value, rest = 10, body[1:]  # tshark 4.0 does not step over the n
        elif e in simple:
            value, rest = simple[e], body[2:]
        elif e == "x":
            m = re.fullmatch(r"x([0-9A-Fa-f]{1,2})(.*)", body[1:], re.S)
            if m is None or (len(m.group(1)) == 1 and m.group(2)):
                return f"{text} isn't a valid character constant."
            value, rest = int(m.group(1), 16), m.group(2)
        elif e in "01234567":
            m = re.fullmatch(r"([0-7]{1,3})(.*)", body[1:], re.S)
            assert m
            digits = m.group(1)
            if len(digits) < 3 and m.group(2):
                return f"{text} isn't a valid character constant."
            value, rest = int(digits, 8), m.group(2)
            if value > 0xFF:
                return f"{text} is too large to be a valid character constant."
        else:
            return f"{text} isn't a valid character constant."
    if rest:
        return f"{text} is too long to be a valid character constant."
    return value


def _charconst(src: str, i: int) -> Token:
    j = i + 1
    n = len(src)
    while j < n:
        if src[j] == "\\":
            j += 2
            continue
        if src[j] == "'":
            text = src[i : j + 1]
            v = parse_charconst(text)
            if isinstance(v, str):
                return _error(v, src, i, len(text))
            return Token(CHARCONST, text, i, v)
        j += 1
    return _error("The final quote was missing from a character constant.", src, n, 1)


def _error(message: str, src: str, pos: int, length: int) -> Token:
    return Token(ERROR, src[pos : pos + length], pos, error=FilterError(message, src, pos, length))


def tokenize(src: str) -> list[Token]:
    """Tokens up to the first scanner error (kept as an ERROR token) or the end."""
    toks: list[Token] = []
    i, n = 0, len(src)
    mode = ""  # "layer" after '#', "range" inside brackets

    def add(t: Token) -> None:
        toks.append(t)

    while True:
        if mode == "range":
            if i >= n:
                add(_error("The right bracket was missing from a slice.", src, n, 1))
                return toks
            c = src[i]
            if c == "]":
                add(Token(RBRACKET, c, i))
                i += 1
                mode = ""
            elif c == ",":
                add(Token(COMMA, c, i))
                i += 1
            else:
                m = re.compile(r"[^],]+").match(src, i)
                assert m
                add(Token(RANGE, m.group(), i, m.group()))
                i = m.end()
            continue
        if mode == "layer":
            mode = ""
            if i >= n:
                break
            m = re.compile(r"[0-9]+").match(src, i)
            if m:
                add(Token(INTEGER, m.group(), i, m.group()))
                i = m.end()
                continue
            if src[i] == "[":
                add(Token(LBRACKET, "[", i))
                i += 1
                mode = "range"
                continue
            add(_error(f'Expected digit or "[", not "{src[i]}"', src, i, 1))
            return toks
        while i < n and src[i] in _SPACE:
            i += 1
        if i >= n:
            break
        c = src[i]
        quoted = c == '"' or (c in "rR" and src[i + 1 : i + 2] == '"')
        if quoted or c == "'":
            t = _string(src, i) if quoted else _charconst(src, i)
            add(t)
            if t.kind == ERROR:
                return toks
            i += t.length
            continue
        if src.startswith("..", i):
            add(Token(DOTDOT, "..", i))
            i += 2
            continue
        single = {"(": LPAREN, ")": RPAREN, "{": LBRACE, "}": RBRACE, ",": COMMA, "$": DOLLAR}
        if c in single:
            add(Token(single[c], c, i))
            i += 1
            continue
        if c == "#":
            add(Token(HASH, c, i))
            i += 1
            mode = "layer"
            continue
        if c == "[":
            add(Token(LBRACKET, c, i))
            i += 1
            mode = "range"
            continue
        sym = next((s for s in _SYMBOL_ORDER if src.startswith(s, i)), None)
        if sym is not None:
            add(Token(OP, sym, i, SYMBOLS[sym]))
            i += len(sym)
            continue
        if c in ARITH_SYMBOLS:
            add(Token(ARITH, c, i, ARITH_SYMBOLS[c]))
            i += 1
            continue
        kind, end = _word_end(src, i)
        if end > i:
            word = src[i:end]
            if kind == UNPARSED and word in KEYWORDS:
                add(Token(OP, word, i, KEYWORDS[word]))
            elif kind == UNPARSED and word in ARITH_KEYWORDS:
                add(Token(ARITH, word, i, ARITH_KEYWORDS[word]))
            elif kind == FIELD_TOK:
                add(Token(FIELD_TOK, word, i, word[1:]))
            else:
                add(Token(kind, word, i, word))
            i = end
            continue
        if 0x20 <= ord(c) < 0x7F:
            add(_error(f'"{c}" was unexpected in this context.', src, i, 1))
        else:
            add(
                _error(
                    "Non-printable ASCII characters may only appear inside double-quotes.",
                    src,
                    i,
                    1,
                )
            )
        return toks
    add(Token(EOF, "", n))
    return toks


# ---------------------------------------------------------------- syntax tree


@dataclass
class Node:
    pos: int
    length: int


# values


@dataclass
class FieldRef(Node):
    """A field, or with `reference` a field reference ``${name}``; `layers` from ``#2``/``#[1-2]``."""

    name: str
    layers: list[RangeNode] | None = None
    reference: bool = False


@dataclass
class Literal(Node):
    """A word that is not a field, a `:` literal, a string or a character constant."""

    kind: str  # UNPARSED, LITERAL, STRING or CHARCONST
    text: str  # as written (what tshark's messages show)
    value: str | bytes | int


@dataclass
class Slice(Node):
    entity: Node
    ranges: list[RangeNode] = field(default_factory=list)
    text: str = ""


@dataclass
class Call(Node):
    name: str
    args: list[Node] = field(default_factory=list)


@dataclass
class Arith(Node):
    """`a op b`, or unary minus when `b` is None; the span is the operator's."""

    op: str
    a: Node
    b: Node | None
    text: str = ""


# tests


@dataclass
class Logic(Node):
    op: str  # "and" | "or"
    items: list[Node]


@dataclass
class Not(Node):
    item: Node


@dataclass
class Relation(Node):
    """A comparison, `contains` or `matches`; the span is the operator's."""

    op: str
    text: str
    lhs: Node
    rhs: Node
    how: str = ""  # "any" | "all" when written with a quantifier


@dataclass
class InSet(Node):
    lhs: Node
    items: list[tuple[Node, Node | None]]
    text: str = "in"
    how: str = ""


@dataclass
class Bare(Node):
    """An entity or arithmetic expression used as a test (exists / not all zero)."""

    value: Node


@dataclass
class Empty(Node):
    """The empty filter: every packet."""


def display(node: Node) -> str:
    """How tshark's messages name a node."""
    if isinstance(node, FieldRef | Call):
        return node.name
    if isinstance(node, Literal | Arith | Slice | Relation | InSet):
        return node.text
    return ""


# ---------------------------------------------------------------- parser


def _strtol(text: str) -> tuple[int, int] | None:
    """C's strtol in base 10 on a prefix of `text`: (value, characters used), None if no digits."""
    m = re.match(r"\s*[+-]?[0-9]+", text)
    if m is None:
        return None
    if len(m.group().lstrip(" \t\n\r\f\v+-").lstrip("0")) > 20:
        # past any bound a caller checks (callers word their errors from the text); Python
        # refuses to convert thousands of decimal digits at all
        return (-1 if "-" in m.group() else 1) << 70, m.end()
    return int(m.group()), m.end()


_INT32 = 1 << 31


@dataclass(frozen=True)
class RangeNode:
    """One range of a slice or layer: ``[i:n]`` (LENGTH), ``[i-j]`` (END, j inclusive) or
    ``[i:]`` (TO_END)."""

    start: int
    ending: str
    n: int = 0
    text: str = ""


LENGTH, END, TO_END = "length", "end", "to_end"


def parse_range(src: str, tok: Token) -> RangeNode:
    """One slice or layer range as tshark 4.0 reads it; errors are tshark's, at the range."""
    text = str(tok.value)

    def err(message: str) -> FilterError:
        return FilterError(message, src, tok.pos, tok.length)

    i = 0
    if text.startswith(":"):
        lower = 0
    else:
        got = _strtol(text)
        if got is None:
            raise err(f'"{text}" is not a valid number.')
        lower, i = got
        if not -_INT32 <= lower < _INT32:
            raise err(f'"{text}" causes an integer overflow.')
    while i < len(text) and text[i].isspace():
        i += 1
    rest = text[i:]
    upper: int | None
    if rest.startswith("-") or rest.startswith(":"):
        got = _strtol(rest[1:]) if rest[1:] else None
        if rest.startswith(":") and rest[1:] == "":
            return RangeNode(lower, TO_END, 0, text)
        if got is None or not -_INT32 <= got[0] < _INT32:
            raise err(f'"{text}" is not a valid range.')
        upper, used = got
        tail = rest[1 + used :]
        if tail.strip():
            raise err(f'"{text}" is not a valid range.')
        if rest.startswith(":"):
            if upper <= 0:
                raise err(f"Range {text} isn't valid because length {upper} isn't positive")
            return RangeNode(lower, LENGTH, upper, text)
        if (lower < 0 and upper > 0) or (lower >= 0 and upper < 0):
            raise err(f"Range {text} isn't valid because {lower} and {upper} have different signs")
        if lower >= upper:
            raise err(f"Range {text} isn't valid because {lower} is greater or equal than {upper}")
        return RangeNode(lower, END, upper, text)
    if rest.strip():
        raise err(f'"{text}" is not a valid range.')
    return RangeNode(lower, LENGTH, 1, text)


class Parser:
    """Recursive descent over tshark 4.0's grammar (see the module docstring)."""

    def __init__(
        self,
        src: str,
        is_field: Callable[[str], bool],
        is_function: Callable[[str], bool],
    ) -> None:
        self.src = src
        self.toks = tokenize(src)
        self.i = 0
        self.is_field = is_field
        self.is_function = is_function

    # -- token access: a scanner error is raised when the parser reaches it

    def peek(self, k: int = 0) -> Token:
        t = self.toks[min(self.i + k, len(self.toks) - 1)]
        if t.kind == ERROR:
            assert t.error is not None
            raise t.error
        return t

    def next(self) -> Token:
        t = self.peek()
        self.i += 1
        return t

    def expect(self, kind: str) -> Token:
        """The next token, which must be a `kind` (a closing bracket, say)."""
        t = self.next()
        if t.kind != kind:
            raise self.unexpected(t)
        return t

    def unexpected(self, t: Token) -> FilterError:
        if t.kind == EOF:
            return FilterError("Unexpected end of filter expression.")
        return FilterError(f'"{t.text}" was unexpected in this context.', self.src, t.pos, t.length)

    def is_op(self, *names: str) -> bool:
        t = self.peek()
        return t.kind == OP and t.value in names

    # -- tests

    def parse(self) -> Node:
        if self.peek().kind == EOF:
            return Empty(0, 0)
        node = self.parse_or()
        t = self.peek()
        if t.kind != EOF:
            raise self.unexpected(t)
        return node

    def parse_or(self) -> Node:
        return self._chain("or", self.parse_and)

    def parse_and(self) -> Node:
        return self._chain("and", self.parse_not)

    def _chain(self, op: str, part: Callable[[], Node]) -> Node:
        """`part op part op ...` as one `Logic` node (a lone part as itself)."""
        items = [part()]
        while self.is_op(op):
            self.next()
            items.append(part())
        return items[0] if len(items) == 1 else Logic(items[0].pos, 0, op, items)

    def parse_not(self) -> Node:
        if self.is_op("not"):
            t = self.next()
            return Not(t.pos, t.length, self.parse_not())
        return self.parse_primary()

    def parse_primary(self) -> Node:
        t = self.peek()
        if t.kind == LPAREN:
            self.next()
            node = self.parse_or()
            self.expect(RPAREN)
            return node
        how = ""
        if self.is_op("any", "all"):
            how = str(self.next().value)
        lhs = self.parse_arith()
        t = self.peek()
        if t.kind == OP and t.value in COMPARISONS:
            return self.parse_comparison(lhs, how)
        if t.kind == OP and t.value in ("contains", "matches", "in", "not") and not _entity(lhs):
            raise self.unexpected(t)
        if t.kind == OP and t.value in ("contains", "matches"):
            self.next()
            rhs = self.parse_entity()
            return Relation(t.pos, t.length, str(t.value), t.text, lhs, rhs, how)
        if t.kind == OP and t.value == "not":
            nxt = self.peek(1)
            if not (nxt.kind == OP and nxt.value == "in"):
                raise self.unexpected(nxt)
            self.next()
            in_tok = self.next()
            # tshark puts a quantifier on the `not`, where it has no effect
            inset = self.parse_set(lhs, in_tok, "")
            return Not(t.pos, t.length, inset)
        if t.kind == OP and t.value == "in":
            self.next()
            return self.parse_set(lhs, t, how)
        if how:
            raise self.unexpected(t)
        return Bare(lhs.pos, lhs.length, lhs)

    def parse_comparison(self, lhs: Node, how: str) -> Node:
        """`a op b`, or a chain `a op b op c ...` read as `a op b and (b op c and ...)`."""
        t = self.next()
        rhs = self.parse_arith()
        first = Relation(t.pos, t.length, str(t.value), t.text, lhs, rhs, how)
        nt = self.peek()
        if not (nt.kind == OP and nt.value in COMPARISONS):
            return first
        rest = self.parse_comparison(rhs, "")
        # tshark sets a quantifier on the chain's `and`, where it has no effect
        first.how = ""
        return Logic(lhs.pos, 0, "and", [first, rest])

    def parse_set(self, lhs: Node, in_tok: Token, how: str) -> InSet:
        self.expect(LBRACE)
        node = InSet(in_tok.pos, in_tok.length, lhs, [], in_tok.text, how)
        while True:
            lo = self.parse_set_entity()
            hi = None
            if self.peek().kind == DOTDOT:
                self.next()
                hi = self.parse_set_entity()
            node.items.append((lo, hi))
            t = self.peek()
            if t.kind == RBRACE:
                self.next()
                return node
            if t.kind == COMMA:
                self.next()
            elif t.kind not in (UNPARSED, STRING, LITERAL, CHARCONST):
                # elements separated by spaces (Wireshark 3.x) are accepted as an extension
                raise self.unexpected(t)

    def parse_set_entity(self) -> Node:
        t = self.peek()
        if t.kind == ARITH and t.value == "-":
            self.next()
            e = self.parse_entity()
            return Arith(t.pos, t.length, "neg", e, None, t.text)
        if t.kind == ARITH and t.value == "+":
            self.next()
        return self.parse_entity()

    # -- arithmetic: & loosest, then + -, then * / %

    def parse_arith(self, min_prec: int = 1) -> Node:
        left = self.parse_unary()
        while True:
            t = self.peek()
            if t.kind != ARITH:
                return left
            prec = _PREC[str(t.value)]
            if prec < min_prec:
                return left
            self.next()
            right = self.parse_arith(prec + 1)
            left = Arith(t.pos, t.length, str(t.value), left, right, t.text)

    def parse_unary(self) -> Node:
        t = self.peek()
        if t.kind == ARITH and t.value == "-":
            self.next()
            return Arith(t.pos, t.length, "neg", self.parse_entity(), None, t.text)
        if t.kind == ARITH and t.value == "+":
            self.next()
            return self.parse_entity()
        if t.kind == LBRACE:
            self.next()
            inner = self.parse_arith()
            self.expect(RBRACE)
            return inner
        return self.parse_entity()

    # -- entities

    def parse_entity(self) -> Node:
        t = self.next()
        ent: Node
        if t.kind in (STRING, CHARCONST, LITERAL):
            ent = Literal(t.pos, t.length, t.kind, t.text, t.value)
        elif t.kind == FIELD_TOK:
            name = self._field_name(t)
            ent = FieldRef(t.pos, t.length, name, self.parse_layer())
        elif t.kind == UNPARSED:
            name = str(t.value)
            nt = self.peek()
            if nt.kind == LPAREN:
                ent = self.parse_call(t)
            elif nt.kind == HASH:
                if not self.is_field(name):
                    raise FilterError(f"{name} is not a valid field", self.src, t.pos, t.length)
                ent = FieldRef(t.pos, t.length, name, self.parse_layer())
            elif self.is_field(name):
                ent = FieldRef(t.pos, t.length, name)
            else:
                ent = Literal(t.pos, t.length, UNPARSED, t.text, name)
        elif t.kind == DOLLAR:
            ent = self.parse_reference(t)
        else:
            raise self.unexpected(t)
        while self.peek().kind == LBRACKET:
            ent = self.parse_slice(ent)
        return ent

    def parse_layer(self) -> list[RangeNode] | None:
        if self.peek().kind != HASH:
            return None
        self.next()
        t = self.next()
        if t.kind == INTEGER:
            return [parse_range(self.src, t)]
        if t.kind == LBRACKET:
            return self.parse_ranges()
        raise self.unexpected(t)

    def parse_ranges(self) -> list[RangeNode]:
        """Range nodes up to the closing bracket (the opening one consumed)."""
        out = []
        while True:
            t = self.expect(RANGE)
            out.append(parse_range(self.src, t))
            t = self.next()
            if t.kind == RBRACKET:
                return out
            if t.kind != COMMA:
                raise self.unexpected(t)

    def parse_slice(self, ent: Node) -> Slice:
        open_tok = self.next()
        ranges = self.parse_ranges()
        end = self.toks[self.i - 1].pos + 1
        return Slice(
            ent.pos, ent.length, ent, ranges, self.src[ent.pos : end].strip() or open_tok.text
        )

    def _field_name(self, t: Token) -> str:
        """The field a field token names; tshark's error where it names none."""
        name = str(t.value)
        if not self.is_field(name):
            raise FilterError(
                f'"{name}" is not a valid protocol or protocol field.', self.src, t.pos, t.length
            )
        return name

    def parse_reference(self, dollar: Token) -> Node:
        self.expect(LBRACE)
        t = self.next()
        if t.kind == FIELD_TOK:
            name = self._field_name(t)
            pos, length = t.pos, t.length
        elif t.kind == UNPARSED:
            name = str(t.value)
            if not self.is_field(name):
                # tshark expands ${name} as a display filter macro first
                raise FilterError(f"macro '{name}' does not exist")
            pos, length = t.pos, t.length
        else:
            raise self.unexpected(t)
        layers = self.parse_layer()
        self.expect(RBRACE)
        return FieldRef(pos, length, name, layers, reference=True)

    def parse_call(self, name_tok: Token) -> Call:
        name = str(name_tok.value)
        if not self.is_function(name):
            raise FilterError(
                f"Function '{name}' does not exist", self.src, name_tok.pos, name_tok.length
            )
        self.next()  # (
        call = Call(name_tok.pos, name_tok.length, name)
        if self.peek().kind == RPAREN:
            self.next()
            return call
        while True:
            call.args.append(self.parse_arith())
            t = self.next()
            if t.kind == RPAREN:
                return call
            if t.kind != COMMA:
                raise self.unexpected(t)


_PREC = {"&": 1, "+": 2, "-": 2, "*": 3, "/": 3, "%": 3}
"""Binding of the arithmetic operators: & loosest, then + -, then * / %."""


def _entity(node: Node) -> bool:
    """Whether `node` is an entity (contains, matches and in take one, not arithmetic)."""
    return not isinstance(node, Arith)


MAX_DEPTH = 200
"""Deepest nesting of a filter (parentheses, operators, calls, slices). tshark's own parser
gives up sooner: 200 nested parentheses overflow its stack."""
TOO_DEEP = f"The filter is nested too deeply (more than {MAX_DEPTH} levels)."


def _children(node: Node) -> list[Node]:
    if isinstance(node, Logic):
        return list(node.items)
    if isinstance(node, Not):
        return [node.item]
    if isinstance(node, Bare):
        return [node.value]
    if isinstance(node, Relation):
        return [node.lhs, node.rhs]
    if isinstance(node, InSet):
        return [node.lhs, *(n for pair in node.items for n in pair if n is not None)]
    if isinstance(node, Arith):
        return [node.a] if node.b is None else [node.a, node.b]
    if isinstance(node, Call):
        return list(node.args)
    if isinstance(node, Slice):
        return [node.entity]
    return []


def depth(node: Node) -> int:
    """Depth of a syntax tree, counted without recursion."""
    deepest = 0
    stack = [(node, 1)]
    while stack:
        n, d = stack.pop()
        deepest = max(deepest, d)
        stack.extend((c, d + 1) for c in _children(n))
    return deepest


def parse(
    src: str,
    is_field: Callable[[str], bool],
    is_function: Callable[[str], bool] = lambda name: False,
) -> Node:
    bad = next((k for k, ch in enumerate(src) if "\udc80" <= ch <= "\udcff"), None)
    if bad is not None:  # a byte of the command line that is not UTF-8 (surrogate-escaped)
        raise FilterError(
            f"The filter is not valid UTF-8: byte 0x{ord(src[bad]) - 0xDC00:02x} at character {bad + 1}."
        )
    try:
        tree = Parser(src, is_field, is_function).parse()
    except RecursionError:
        raise FilterError(TOO_DEEP) from None
    if depth(tree) > MAX_DEPTH:
        raise FilterError(TOO_DEEP)
    return tree
