"""JSON output byte-for-byte as TF Serving writes it (rapidjson 1.1.0 ``PrettyWriter``).

TF Serving writes responses with a 4-space ``PrettyWriter`` and switches to
``kFormatSingleLineArray`` inside each row of a row-format answer, which gives
its characteristic ``[3.5, 4.0, 5.5\\n    ]`` layout. Floats are written by
``WriteDecimal``: ``absl::StrCat`` (``%g``, 6 significant digits), or
``%.9g``/``%.17g`` when that does not round-trip, plus ``.0`` for whole numbers;
non-finite values are the bare tokens ``NaN``, ``Infinity``, ``-Infinity``.

:class:`PrettyWriter` reproduces rapidjson's indentation state machine;
:func:`debug_string` reproduces ``JsonValueToDebugString`` used in error texts.
"""

from __future__ import annotations

import decimal
import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from serving.server.json_parse import JsonObject

_ESCAPE_RE = re.compile(r'[\x00-\x1f"\\]')
_SHORT_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r"}
_SHORT_ESCAPES["\t"] = "\\t"


def _escape_char(match: re.Match) -> str:
    char = match.group()
    return _SHORT_ESCAPES.get(char) or f"\\u{ord(char):04X}"


def quote(text: str) -> str:
    """A JSON string as rapidjson's ``Writer::String`` writes it (no ``/`` or UTF-8 escaping)."""
    return '"' + _ESCAPE_RE.sub(_escape_char, text) + '"'


def quote_bytes(data: bytes) -> str:
    """Quotes raw bytes; non-UTF-8 bytes pass through (as TF Serving does) via surrogateescape."""
    return quote(data.decode("utf-8", "surrogateescape"))


def _finish_decimal(text: str) -> str:
    if "." not in text and "e" not in text:
        return text + ".0"
    return text


def format_float32(value: float) -> str:
    """``WriteDecimal<float>``: e.g. 9000000 -> ``9e+06``, 3 -> ``3.0``, 1/3 -> ``0.333333343``."""
    if math.isfinite(value):
        text = f"{value:g}"
        if np.float32(float(text)) != np.float32(value):
            text = f"{value:.9g}"
        return _finish_decimal(text)
    if math.isnan(value):
        return "NaN"
    return "-Infinity" if value < 0 else "Infinity"


def format_float64(value: float) -> str:
    """``WriteDecimal<double>``: ``%g``, else ``%.17g`` when ``%g`` does not round-trip."""
    if math.isfinite(value):
        text = f"{value:g}"
        if float(text) != value:
            text = f"{value:.17g}"
        return _finish_decimal(text)
    if math.isnan(value):
        return "NaN"
    return "-Infinity" if value < 0 else "Infinity"


def _format_array(flat: np.ndarray, narrow: type, long_format: str) -> list[str]:
    """``WriteDecimal`` over many values: ``%g`` first, the long form only where needed."""
    doubles = flat.astype(np.float64).tolist()
    texts = [f"{v:g}" for v in doubles]
    finite = np.isfinite(flat)
    with np.errstate(all="ignore"):
        parsed = np.array([float(t) for t in texts], dtype=np.float64).astype(narrow)
    for index in np.flatnonzero((parsed != flat) & finite).tolist():
        texts[index] = format(doubles[index], long_format)
    for index in np.flatnonzero(~finite).tolist():
        value = doubles[index]
        texts[index] = "NaN" if math.isnan(value) else ("-Infinity" if value < 0 else "Infinity")
    return [
        t if ("." in t or "e" in t or not finite_flag) else t + ".0"
        for t, finite_flag in zip(texts, finite.tolist(), strict=True)
    ]


def format_float32_array(values: np.ndarray) -> list[str]:
    """:func:`format_float32` for every element, in row-major order."""
    return _format_array(np.asarray(values, dtype=np.float32).ravel(), np.float32, ".9g")


def format_float64_array(values: np.ndarray) -> list[str]:
    """:func:`format_float64` for every element, in row-major order."""
    return _format_array(np.asarray(values, dtype=np.float64).ravel(), np.float64, ".17g")


class PrettyWriter:
    """rapidjson's ``PrettyWriter`` (4-space indent) writing into a list of strings.

    >>> w = PrettyWriter()
    >>> w.start_object(); w.key("results"); w.start_array(); w.raw_values(["3.5", "4.0"])
    >>> w.end_array(); w.end_object(); w.getvalue()
    '{\\n    "results": [\\n        3.5,\\n        4.0\\n    ]\\n}'
    """

    def __init__(self, indent: int = 4) -> None:
        self._out: list[str] = []
        self._size = 0
        self._indent = indent
        # One [in_array, value_count] per open container, as rapidjson's level stack.
        self._levels: list[list] = []
        self.single_line_arrays = False

    def getvalue(self) -> str:
        return "".join(self._out)

    @property
    def size(self) -> int:
        return self._size

    def _put(self, text: str) -> None:
        self._out.append(text)
        self._size += len(text)

    def _newline_indent(self, depth: int) -> str:
        return "\n" + " " * (depth * self._indent)

    def _prefix(self) -> None:
        if not self._levels:
            return
        level = self._levels[-1]
        if level[0]:  # in an array
            text = ""
            if level[1] > 0:
                text = ", " if self.single_line_arrays else ","
            if not self.single_line_arrays:
                text += self._newline_indent(len(self._levels))
            self._put(text)
        else:  # in an object: keys and values alternate
            if level[1] > 0:
                self._put(",\n" if level[1] % 2 == 0 else ": ")
            else:
                self._put("\n")
            if level[1] % 2 == 0:
                self._put(" " * (len(self._levels) * self._indent))
        level[1] += 1

    def start_object(self) -> None:
        self._prefix()
        self._levels.append([False, 0])
        self._put("{")

    def end_object(self) -> None:
        level = self._levels.pop()
        if level[1]:
            self._put(self._newline_indent(len(self._levels)))
        self._put("}")

    def start_array(self) -> None:
        self._prefix()
        self._levels.append([True, 0])
        self._put("[")

    def end_array(self) -> None:
        level = self._levels.pop()
        if level[1] and not self.single_line_arrays:
            self._put(self._newline_indent(len(self._levels)))
        self._put("]")

    def key(self, name: str) -> None:
        self._prefix()
        self._put(quote(name))

    def raw_value(self, text: str) -> None:
        self._prefix()
        self._put(text)

    def raw_values(self, texts: Sequence[str]) -> None:
        """Writes many scalars into the current array at once (same bytes as one by one)."""
        if not texts:
            return
        level = self._levels[-1]
        if not level[0]:
            for text in texts:
                self.raw_value(text)
            return
        if self.single_line_arrays:
            first = ", " if level[1] else ""
            self._put(first + ", ".join(texts))
        else:
            newline = self._newline_indent(len(self._levels))
            first = ("," if level[1] else "") + newline
            self._put(first + ("," + newline).join(texts))
        level[1] += len(texts)


# ----------------------------------------------------------------------------------------
# Debug strings of request values (error messages).


def _grisu_like(value: float) -> str:
    """rapidjson ``Writer::Double`` (Grisu2 shortest digits, then ``Prettify``)."""
    if value == 0:
        return "-0.0" if math.copysign(1.0, value) < 0 else "0.0"
    sign = "-" if value < 0 else ""
    digits_tuple = decimal.Decimal(repr(abs(value))).normalize().as_tuple()
    digits = "".join(map(str, digits_tuple.digits))
    length = len(digits)
    k = digits_tuple.exponent
    kk = length + k  # 10^(kk-1) <= v < 10^kk
    if 0 <= k and kk <= 21:
        text = digits + "0" * k + ".0"
    elif 0 < kk <= 21:
        text = digits[:kk] + "." + digits[kk:]
    elif -6 < kk <= 0:
        text = "0." + "0" * (-kk) + digits
    elif length == 1:
        text = digits + "e" + str(kk - 1)
    else:
        text = digits[0] + "." + digits[1:] + "e" + str(kk - 1)
    return sign + text


class _StopWriting(Exception):
    """rapidjson's writer refused a value (NaN/Inf) or the debug string is long enough."""


_DEBUG_LIMIT = 256


def _write_debug_scalar(writer: PrettyWriter, value: Any, top_level: bool) -> None:
    if value is None:
        writer.raw_value("null")
    elif value is True:
        writer.raw_value("true")
    elif value is False:
        writer.raw_value("false")
    elif isinstance(value, int):
        writer.raw_value(str(value))
    elif isinstance(value, float):
        if top_level:
            # JsonValueToString writes a lone decimal with WriteDecimal (float if exact).
            exact_float = math.isfinite(value) and float(np.float32(value)) == value
            writer.raw_value(format_float32(value) if exact_float else format_float64(value))
        elif not math.isfinite(value):
            raise _StopWriting
        else:
            writer.raw_value(_grisu_like(value))
    else:
        writer.raw_value(quote(value))


def debug_string(value: Any) -> str:
    """``JsonValueToDebugString``: single-line arrays, cut once 256 bytes are written.

    >>> debug_string(JsonObject([("signature_name", 100)]))
    '{\\n    "signature_name": 100\\n}'
    """
    writer = PrettyWriter()
    writer.single_line_arrays = True
    if not isinstance(value, (list, JsonObject)):
        try:
            _write_debug_scalar(writer, value, top_level=True)
        except _StopWriting:
            pass
        return writer.getvalue()
    # Iterative walk: request values may be nested hundreds of thousands deep.
    stack: list[tuple[str, Any]] = [("value", value)]
    try:
        while stack:
            kind, item = stack.pop()
            if kind == "end_array":
                writer.end_array()
            elif kind == "end_object":
                writer.end_object()
            elif kind == "key":
                writer.key(item)
            elif isinstance(item, list):
                writer.start_array()
                stack.append(("end_array", None))
                stack.extend(("value", element) for element in reversed(item))
            elif isinstance(item, JsonObject):
                writer.start_object()
                stack.append(("end_object", None))
                for name, member in reversed(item.members):
                    stack.append(("value", member))
                    stack.append(("key", name))
            else:
                _write_debug_scalar(writer, item, top_level=False)
            if writer.size >= _DEBUG_LIMIT:
                break
    except _StopWriting:
        pass
    return writer.getvalue()


def json_type_name(value: Any) -> str:
    """rapidjson's value type names used in TF Serving messages."""
    if value is None:
        return "Null"
    if value is True:
        return "True"
    if value is False:
        return "False"
    if isinstance(value, JsonObject):
        return "Object"
    if isinstance(value, list):
        return "Array"
    if isinstance(value, str):
        return "String"
    return "Number"


def error_body(message: str) -> bytes:
    """``MakeJsonFromStatus``: ``{\\n    "error": "<message>"\\n}``."""
    writer = PrettyWriter()
    writer.start_object()
    writer.key("error")
    writer.raw_value(quote(message))
    writer.end_object()
    return writer.getvalue().encode("utf-8", "surrogateescape")
