"""JSON parsing with the rules of TF Serving's REST API (rapidjson 1.1.0).

TF Serving parses request bodies with ``kParseIterativeFlag |
kParseNanAndInfFlag | kParseStopWhenDoneFlag``: ``NaN``, ``Inf``,
``Infinity``, ``-Inf`` and ``-Infinity`` are numbers, anything after the first
complete value is ignored, nesting depth is unlimited, and errors read
``JSON Parse error: <rapidjson message> at offset: <byte offset>``.

Values come back as Python objects with rapidjson's distinctions kept:

* integers in rapidjson's int64/uint64 range are ``int``; decimals, exponents
  and larger integers are ``float`` (rapidjson's ``double``);
* strings are ``str`` decoded with ``surrogateescape``, so
  ``s.encode("utf-8", "surrogateescape")`` gives back the exact bytes
  (rapidjson does not validate UTF-8);
* objects are :class:`JsonObject`, which keeps duplicate keys and looks keys up
  by their first occurrence, like rapidjson's ``FindMember``.

Well-formed documents go through Python's C JSON scanner; everything it cannot
take (errors, ``Inf``, surrogate escapes, NUL bytes, deep nesting) goes through
an iterative parser that mirrors rapidjson's state machine and error offsets.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from typing import Any

from serving.server.status import invalid_argument

_INT64_MIN = -(2**63)
_UINT64_MAX = 2**64 - 1
_WHITESPACE = b" \t\n\r"


class JsonObject:
    """A JSON object as rapidjson stores it: members in order, duplicates kept.

    >>> obj = JsonObject([("a", 1), ("a", 2)])
    >>> obj.get("a"), len(obj)
    (1, 2)
    """

    __slots__ = ("members",)

    def __init__(self, members: list[tuple[str, Any]]) -> None:
        self.members = members

    def get(self, key: str, default: Any = None) -> Any:
        for name, value in self.members:
            if name == key:
                return value
        return default

    def __contains__(self, key: str) -> bool:
        return any(name == key for name, _ in self.members)

    def __len__(self) -> int:
        return len(self.members)

    def __iter__(self) -> Iterator[tuple[str, Any]]:
        return iter(self.members)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, JsonObject) and self.members == other.members

    def __repr__(self) -> str:
        return f"JsonObject({self.members!r})"


class _Fallback(Exception):
    """The fast path met something only the rapidjson-compatible parser handles."""


def _fast_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise _Fallback  # rapidjson: "Number too big to be stored in double."
    return value


def _fast_int(text: str) -> int | float:
    value = int(text)
    if _INT64_MIN <= value <= _UINT64_MAX:
        return value
    as_float = float(value)  # OverflowError for huge literals: handled by the caller
    if math.isinf(as_float):
        raise _Fallback
    return as_float


def _fast_constant(name: str) -> float:
    return {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}[name]


# Python's own number parsing agrees with rapidjson unless a literal has 19+ digits
# (maybe outside int64/uint64) or a 3-digit exponent (maybe past DBL_MAX); only then
# are the slower per-number hooks needed.
_PLAIN_DECODER = json.JSONDecoder(
    object_pairs_hook=JsonObject, parse_constant=_fast_constant, strict=True
)
_CHECKED_DECODER = json.JSONDecoder(
    object_pairs_hook=JsonObject,
    parse_float=_fast_float,
    parse_int=_fast_int,
    parse_constant=_fast_constant,
    strict=True,
)
_BIG_EXPONENT = re.compile(rb"[eE][+-]?[0-9]{3}")
# Maps digits to "0" and everything else to " ": a run of 19 digits becomes 19 zeros.
_DIGIT_MAP = bytes(48 if 48 <= byte <= 57 else 32 for byte in range(256))


def _has_long_number(body: bytes) -> bool:
    if b"0" * 19 in body.translate(_DIGIT_MAP):
        return True
    return (b"e" in body or b"E" in body) and _BIG_EXPONENT.search(body) is not None


# Escaped UTF-16 surrogates follow rapidjson's rules only in the slow parser.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _error(message: str, offset: int):
    return invalid_argument(f"JSON Parse error: {message} at offset: {offset}")


def parse(body: bytes) -> Any:
    """Parses a request body like TF Serving's ``ParseJson`` (without the object check).

    Raises :class:`~serving.server.status.ServingError` (INVALID_ARGUMENT) with
    TF Serving's message on malformed input.
    """
    if not body:
        raise invalid_argument("JSON Parse error: The document is empty")
    start = 0
    length = len(body)
    while start < length and body[start] in _WHITESPACE:
        start += 1
    surrogate = b"\\u" in body and _SURROGATE_ESCAPE.search(body)
    if start < length and b"\x00" not in body and not surrogate:
        text = body.decode("utf-8", "surrogateescape")
        # Python's offsets are in characters; only equal when the prefix is ASCII,
        # which it is: the prefix is whitespace.
        try:
            decoder = _CHECKED_DECODER if _has_long_number(body) else _PLAIN_DECODER
            value, end = decoder.raw_decode(text, start)
            # rapidjson reads "1." / "1e" at the root as a broken number, Python as 1.
            if not (end < len(text) and text[end] in ".eE" and type(value) in (int, float)):
                return value
        except (ValueError, RecursionError, OverflowError, _Fallback):
            pass
    return _Parser(body).parse()


# Tokens of rapidjson's iterative parser (``Tokenize``): everything unknown is a number.
_LEFT_BRACKET, _RIGHT_BRACKET, _LEFT_CURLY, _RIGHT_CURLY = "[", "]", "{", "}"
_COMMA, _COLON, _STRING, _LITERAL, _NUMBER = ",", ":", '"', "literal", "number"
_TOKENS = {
    ord("["): _LEFT_BRACKET,
    ord("]"): _RIGHT_BRACKET,
    ord("{"): _LEFT_CURLY,
    ord("}"): _RIGHT_CURLY,
    ord(","): _COMMA,
    ord(":"): _COLON,
    ord('"'): _STRING,
    ord("t"): _LITERAL,
    ord("f"): _LITERAL,
    ord("n"): _LITERAL,
}
_VALUE_TOKENS = (_STRING, _LITERAL, _NUMBER, _LEFT_BRACKET, _LEFT_CURLY)
_ESCAPES = {
    ord('"'): b'"',
    ord("\\"): b"\\",
    ord("/"): b"/",
    ord("b"): b"\b",
    ord("f"): b"\f",
    ord("n"): b"\n",
    ord("r"): b"\r",
    ord("t"): b"\t",
}
_HEX = frozenset(b"0123456789abcdefABCDEF")
_PLAIN_STRING = re.compile(rb'[^"\\\x00-\x1f]*')
_DIGITS = re.compile(rb"[0-9]*")


class _Parser:
    """rapidjson's iterative parser: same accepted language, messages and offsets."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def peek(self) -> int:
        # rapidjson's MemoryStream yields '\0' at the end; a NUL byte ends parsing too.
        return self.data[self.pos] if self.pos < len(self.data) else 0

    def skip_whitespace(self) -> None:
        data, pos, length = self.data, self.pos, len(self.data)
        while pos < length and data[pos] in _WHITESPACE:
            pos += 1
        self.pos = pos

    def consume(self, char: str) -> bool:
        if self.peek() == ord(char):
            self.pos += 1
            return True
        return False

    def parse(self) -> Any:
        # Each open container: [is_array, items, pending_key]. ``state`` names what the
        # parser expects next, as rapidjson's IterativeParsingState does.
        stack: list[list] = []
        state = "start"
        self.skip_whitespace()
        root: Any = None
        while self.peek() != 0:
            token = _TOKENS.get(self.peek(), _NUMBER)
            if state in ("start", "value", "array_initial", "element_delimiter"):
                if state == "array_initial" and token == _RIGHT_BRACKET:
                    self.pos += 1
                    value = stack.pop()[1]
                elif token == _LEFT_BRACKET:
                    self.pos += 1
                    stack.append([True, [], None])
                    state = "array_initial"
                    self.skip_whitespace()
                    continue
                elif token == _LEFT_CURLY:
                    self.pos += 1
                    stack.append([False, [], None])
                    state = "object_initial"
                    self.skip_whitespace()
                    continue
                elif token in _VALUE_TOKENS:
                    value = self.parse_scalar(token)
                else:
                    raise self.state_error(state)
            elif state in ("object_initial", "member_delimiter"):
                if state == "object_initial" and token == _RIGHT_CURLY:
                    self.pos += 1
                    value = JsonObject(stack.pop()[1])
                elif token == _STRING:
                    stack[-1][2] = self.parse_string()
                    state = "member_key"
                    self.skip_whitespace()
                    continue
                else:
                    raise self.state_error(state)
            elif state == "member_key":
                if token != _COLON:
                    raise self.state_error(state)
                self.pos += 1
                state = "value"
                self.skip_whitespace()
                continue
            elif state == "element":
                if token == _COMMA:
                    self.pos += 1
                    state = "element_delimiter"
                elif token == _RIGHT_BRACKET:
                    self.pos += 1
                    value = stack.pop()[1]
                    state, root = self.complete(stack, value)
                    if state == "finish":
                        return root
                else:
                    raise self.state_error(state)
                self.skip_whitespace()
                continue
            elif state == "member_value":
                if token == _COMMA:
                    self.pos += 1
                    state = "member_delimiter"
                elif token == _RIGHT_CURLY:
                    self.pos += 1
                    value = JsonObject(stack.pop()[1])
                    state, root = self.complete(stack, value)
                    if state == "finish":
                        return root
                else:
                    raise self.state_error(state)
                self.skip_whitespace()
                continue
            else:  # pragma: no cover - every state is handled above
                raise AssertionError(state)
            state, root = self.complete(stack, value)
            if state == "finish":
                return root  # kParseStopWhenDoneFlag: the rest is ignored
            self.skip_whitespace()
        raise self.state_error(state)

    @staticmethod
    def complete(stack: list[list], value: Any) -> tuple[str, Any]:
        """Attaches a finished value to its parent; returns the next state."""
        if not stack:
            return "finish", value
        parent = stack[-1]
        if parent[0]:
            parent[1].append(value)
            return "element", None
        parent[1].append((parent[2], value))
        return "member_value", None

    def state_error(self, state: str):
        # rapidjson's HandleError: the message depends on the state, the offset is
        # where the unexpected token starts.
        messages = {
            "start": "The document is empty.",
            "object_initial": "Missing a name for object member.",
            "member_delimiter": "Missing a name for object member.",
            "member_key": "Missing a colon after a name of object member.",
            "member_value": "Missing a comma or '}' after an object member.",
            "value": "Invalid value.",
            "array_initial": "Invalid value.",
            "element_delimiter": "Invalid value.",
            "element": "Missing a comma or ']' after an array element.",
        }
        return _error(messages[state], self.pos)

    def parse_scalar(self, token: str) -> Any:
        if token == _STRING:
            return self.parse_string()
        if token == _LITERAL:
            first = self.peek()
            self.pos += 1
            rest, value = {ord("t"): ("rue", True), ord("f"): ("alse", False)}.get(
                first, ("ull", None)
            )
            for char in rest:
                if not self.consume(char):
                    raise _error("Invalid value.", self.pos)
            return value
        return self.parse_number()

    def parse_string(self) -> str:
        self.pos += 1  # opening quote
        data = self.data
        out = bytearray()
        while True:
            match = _PLAIN_STRING.match(data, self.pos)
            out += match.group()
            self.pos = match.end()
            char = self.peek()
            if char == ord('"'):
                self.pos += 1
                return out.decode("utf-8", "surrogateescape")
            if char == ord("\\"):
                escape_offset = self.pos
                self.pos += 1
                escaped = self.peek()
                if escaped in _ESCAPES:
                    self.pos += 1
                    out += _ESCAPES[escaped]
                elif escaped == ord("u"):
                    self.pos += 1
                    codepoint = self.parse_hex4(escape_offset)
                    if 0xD800 <= codepoint <= 0xDBFF:
                        if not (self.consume("\\") and self.consume("u")):
                            raise _error("The surrogate pair in string is invalid.", escape_offset)
                        low = self.parse_hex4(escape_offset)
                        if not 0xDC00 <= low <= 0xDFFF:
                            raise _error("The surrogate pair in string is invalid.", escape_offset)
                        codepoint = (((codepoint - 0xD800) << 10) | (low - 0xDC00)) + 0x10000
                    # rapidjson encodes lone low surrogates as (invalid) UTF-8 too.
                    out += chr(codepoint).encode("utf-8", "surrogatepass")
                else:
                    raise _error("Invalid escape character in string.", escape_offset)
            elif char == 0:
                raise _error("Missing a closing quotation mark in string.", self.pos)
            else:  # a control character
                raise _error("Invalid escape character in string.", self.pos)

    def parse_hex4(self, escape_offset: int) -> int:
        value = 0
        for _ in range(4):
            char = self.peek()
            if char not in _HEX:
                raise _error("Incorrect hex digit after \\u escape in string.", escape_offset)
            value = value * 16 + int(chr(char), 16)
            self.pos += 1
        return value

    def parse_number(self) -> int | float:
        start = self.pos
        minus = self.consume("-")
        char = self.peek()
        if char in (ord("N"), ord("I")):
            if self.consume("N") and self.consume("a") and self.consume("N"):
                return math.nan
            if self.consume("I") and self.consume("n") and self.consume("f"):
                if self.peek() == ord("i"):
                    for letter in "inity":
                        if not self.consume(letter):
                            raise _error("Invalid value.", self.pos)
                return -math.inf if minus else math.inf
            raise _error("Invalid value.", self.pos)
        if not ord("0") <= char <= ord("9"):
            raise _error("Invalid value.", self.pos)
        if char == ord("0"):
            self.pos += 1
        else:
            self.pos = _DIGITS.match(self.data, self.pos).end()
        is_decimal = False
        if self.consume("."):
            is_decimal = True
            if not ord("0") <= self.peek() <= ord("9"):
                raise _error("Miss fraction part in number.", self.pos)
            self.pos = _DIGITS.match(self.data, self.pos).end()
        if self.consume("e") or self.consume("E"):
            is_decimal = True
            if not self.consume("+"):
                self.consume("-")
            if not ord("0") <= self.peek() <= ord("9"):
                raise _error("Miss exponent in number.", self.pos)
            self.pos = _DIGITS.match(self.data, self.pos).end()
        text = self.data[start : self.pos].decode("ascii")
        # Past 20 digits a literal cannot fit in 64 bits (and int() limits its length).
        if not is_decimal and len(text) <= 21:
            integer = int(text)
            if _INT64_MIN <= integer <= _UINT64_MAX:
                return integer
        value = float(text)  # never raises: huge literals become inf
        if math.isinf(value):
            raise _error("Number too big to be stored in double.", start)
        return value
