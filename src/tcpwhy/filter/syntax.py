"""Lexer and parser of Wireshark 4.0 display filters, producing a small syntax tree.

Names are resolved against the field table here only to tell a field from an
unquoted literal (``tcp.port == 80`` vs ``eth.src == aa:bb:cc:dd:ee:ff``), as
Wireshark's grammar does; type checking and literal conversion happen in the
compiler. Every node keeps the source span of its tokens so errors can point
at them with a caret line, the way tshark reports them.
"""

from __future__ import annotations

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

WORD, STRING, OP, LPAREN, RPAREN, LBRACE, RBRACE, COMMA, DOTDOT, SLICE, BAD, EOF = (
    "word",
    "string",
    "op",
    "(",
    ")",
    "{",
    "}",
    ",",
    "..",
    "slice",
    "bad",
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
    "&": "bitand",
    "~": "matches",
}
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
}
RELATIONS = frozenset(
    {
        "any_eq",
        "all_ne",
        "any_ne",
        "all_eq",
        "lt",
        "le",
        "gt",
        "ge",
        "contains",
        "matches",
        "bitand",
    }
)

_WORD_RE = re.compile(r"[A-Za-z0-9_.:/\-+]+")
_SPACE_RE = re.compile(r"\s+")
_ESCAPES = {"n": 10, "t": 9, "r": 13, "a": 7, "b": 8, "f": 12, "v": 11, "\\": 92, '"': 34, "'": 39}


@dataclass
class Token:
    kind: str
    text: str  # as written in the filter
    pos: int
    value: str | bytes = ""  # operator name, word text, or decoded string bytes

    @property
    def length(self) -> int:
        return len(self.text)


def _decode_string(src: str, start: int, raw: bool) -> tuple[bytes, int]:
    """Decode a quoted string starting at its opening quote; return bytes and end index."""
    out = bytearray()
    i = start + 1
    n = len(src)
    while i < n:
        c = src[i]
        if c == '"':
            return bytes(out), i + 1
        if c == "\\" and i + 1 < n:
            e = src[i + 1]
            if raw:
                out += (c + e).encode() if e != '"' else b'\\"'
                i += 2
                continue
            if e in _ESCAPES:
                out.append(_ESCAPES[e])
                i += 2
            elif e == "x" and re.match(r"[0-9A-Fa-f]{1,2}", src[i + 2 : i + 4]):
                m = re.match(r"[0-9A-Fa-f]{1,2}", src[i + 2 : i + 4])
                assert m
                out.append(int(m.group(), 16))
                i += 2 + len(m.group())
            elif e in "01234567":
                m = re.match(r"[0-7]{1,3}", src[i + 1 : i + 4])
                assert m
                out.append(int(m.group(), 8) & 0xFF)
                i += 1 + len(m.group())
            else:
                raise FilterError(f"\\{e} is not a valid character escape sequence", src, i, 2)
            continue
        out += c.encode()
        i += 1
    raise FilterError("Unexpected end of filter expression.")


def tokenize(src: str) -> list[Token]:
    toks: list[Token] = []
    i, n = 0, len(src)
    while i < n:
        m = _SPACE_RE.match(src, i)
        if m:
            i = m.end()
            continue
        c = src[i]
        raw = c in "rR" and src[i + 1 : i + 2] == '"'
        if c == '"' or raw:
            q = i + 1 if raw else i
            val, end = _decode_string(src, q, raw)
            toks.append(Token(STRING, src[i:end], i, val))
            i = end
            continue
        if c == "[":
            end = src.find("]", i)
            if end < 0:
                raise FilterError("Unexpected end of filter expression.")
            toks.append(Token(SLICE, src[i + 1 : end], i + 1, src[i + 1 : end]))
            i = end + 1
            continue
        if c in "(){},":
            toks.append(
                Token({"(": LPAREN, ")": RPAREN, "{": LBRACE, "}": RBRACE, ",": COMMA}[c], c, i)
            )
            i += 1
            continue
        for sym in (
            "===",
            "!==",
            "==",
            "!=",
            "~=",
            "<=",
            ">=",
            "&&",
            "||",
            "<",
            ">",
            "!",
            "&",
            "~",
        ):
            if src.startswith(sym, i):
                toks.append(Token(OP, sym, i, SYMBOLS[sym]))
                i += len(sym)
                break
        else:
            m = _WORD_RE.match(src, i)
            if m is None:
                toks.append(Token(BAD, c, i))
                i += 1
                continue
            word = m.group()
            # `80..90` inside a set: split around the range operator
            pos = i
            parts = word.split("..")
            for k, part in enumerate(parts):
                if k:
                    toks.append(Token(DOTDOT, "..", pos, ".."))
                    pos += 2
                if part:
                    kw = KEYWORDS.get(part)
                    toks.append(Token(OP if kw else WORD, part, pos, kw or part))
                    pos += len(part)
            i = m.end()
    toks.append(Token(EOF, "", n))
    return toks


# ---------------------------------------------------------------- syntax tree


@dataclass
class Entity:
    """A field (possibly sliced) or a literal, with the source span that names it."""

    tok: Token
    is_field: bool
    slice_tok: Token | None = None

    @property
    def name(self) -> str:
        return self.tok.text


@dataclass
class Node:
    pass


@dataclass
class Logic(Node):
    op: str  # "and" | "or"
    items: list[Node]


@dataclass
class Not(Node):
    item: Node


@dataclass
class Exists(Node):
    ent: Entity


@dataclass
class Relation(Node):
    op: str
    op_tok: Token
    lhs: Entity
    rhs: Entity


@dataclass
class InSet(Node):
    lhs: Entity
    items: list[tuple[Entity, Entity | None]] = field(default_factory=list)


class Parser:
    """Recursive descent over Wireshark 4.0's grammar: `or` < `and` < `not` < relation."""

    def __init__(self, src: str, is_name: Callable[[str], bool]) -> None:
        self.src = src
        self.toks = tokenize(src)
        self.i = 0
        self.is_name = is_name

    def peek(self) -> Token:
        return self.toks[self.i]

    def next(self) -> Token:
        t = self.toks[self.i]
        self.i += 1
        return t

    def unexpected(self, t: Token) -> FilterError:
        if t.kind == EOF:
            return FilterError("Unexpected end of filter expression.")
        return FilterError(f'"{t.text}" was unexpected in this context.', self.src, t.pos, t.length)

    def parse(self) -> Node:
        if self.peek().kind == EOF:
            raise FilterError("Unexpected end of filter expression.")
        node = self.parse_or()
        if self.peek().kind != EOF:
            raise self.unexpected(self.peek())
        return node

    def _is_op(self, name: str) -> bool:
        t = self.peek()
        return t.kind == OP and t.value == name

    def parse_or(self) -> Node:
        items = [self.parse_and()]
        while self._is_op("or"):
            self.next()
            items.append(self.parse_and())
        return items[0] if len(items) == 1 else Logic("or", items)

    def parse_and(self) -> Node:
        items = [self.parse_not()]
        while self._is_op("and"):
            self.next()
            items.append(self.parse_not())
        return items[0] if len(items) == 1 else Logic("and", items)

    def parse_not(self) -> Node:
        if self._is_op("not"):
            self.next()
            return Not(self.parse_not())
        return self.parse_primary()

    def parse_primary(self) -> Node:
        t = self.peek()
        if t.kind == LPAREN:
            self.next()
            node = self.parse_or()
            if self.peek().kind != RPAREN:
                raise self.unexpected(self.peek())
            self.next()
            return node
        lhs = self.parse_entity()
        t = self.peek()
        if t.kind == OP and t.value in RELATIONS:
            self.next()
            if not lhs.is_field:
                raise FilterError(
                    f'Left side of "{t.text}" expression must be a field or function, not {lhs.name}.',
                    self.src,
                    lhs.tok.pos,
                    lhs.tok.length,
                )
            rhs = self.parse_entity()
            return Relation(str(t.value), t, lhs, rhs)
        negate = False
        if t.kind == OP and t.value == "not" and self.toks[self.i + 1].value == "in":
            self.next()
            t = self.peek()
            negate = True
        if t.kind == OP and t.value == "in":
            self.next()
            if not lhs.is_field:
                raise FilterError(
                    f'Left side of "{t.text}" expression must be a field or function, not {lhs.name}.',
                    self.src,
                    lhs.tok.pos,
                    lhs.tok.length,
                )
            inset = self.parse_set(lhs)
            return Not(inset) if negate else inset
        if negate:
            raise self.unexpected(t)
        if not lhs.is_field:
            raise FilterError(
                f"{lhs.name} is neither a field nor a protocol name.",
                self.src,
                lhs.tok.pos,
                lhs.tok.length,
            )
        return Exists(lhs)

    def parse_set(self, lhs: Entity) -> InSet:
        if self.peek().kind != LBRACE:
            raise self.unexpected(self.peek())
        self.next()
        node = InSet(lhs)
        while True:
            lo = self.parse_entity()
            hi = None
            if self.peek().kind == DOTDOT:
                self.next()
                hi = self.parse_entity()
            node.items.append((lo, hi))
            t = self.peek()
            if t.kind == RBRACE:
                self.next()
                return node
            if t.kind == COMMA:
                self.next()
            elif t.kind not in (WORD, STRING):
                # whitespace-separated elements (Wireshark 3.x syntax) are accepted as well
                raise self.unexpected(t)

    def parse_entity(self) -> Entity:
        t = self.next()
        if t.kind == WORD:
            ent = Entity(t, self.is_name(t.text))
        elif t.kind == STRING:
            ent = Entity(t, False)
        else:
            raise self.unexpected(t)
        if self.peek().kind == SLICE:
            if not ent.is_field:
                raise self.unexpected(self.peek())
            ent.slice_tok = self.next()
        return ent


def parse(src: str, is_name: Callable[[str], bool]) -> Node:
    return Parser(src, is_name).parse()
