"""REST JSON <-> tensors and tf.Examples, with TF Serving's rules and error texts.

Mirrors ``tensorflow_serving/util/json_tensor.cc``: the row (``instances``)
and columnar (``inputs``) predict formats, ``{"b64": ...}`` strings, the
classify/regress ``examples``/``context`` format, and the response shapes
(``predictions``/``outputs``/``results``, ``_bytes`` outputs as base64). The
request-validation error texts are TF Serving's; whitespace, key order and
rapidjson's parse offsets are not reproduced.

Parsing is the standard :mod:`json` module, bounded: a body whose parse would
take more than ``2 x body + 100 MB`` (estimated from its structural
characters before parsing, see :func:`parse_cost`) and a document nested
deeper than :data:`MAX_DEPTH` are refused with INVALID_ARGUMENT. As with
rapidjson, ``NaN``, ``Infinity`` and ``-Infinity`` are numbers and anything
after the first complete value is ignored.
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from tensorflow.core.example import example_pb2, feature_pb2
from tensorflow_serving.apis import input_pb2

from serving.server.status import Code, ServingError, invalid_argument
from serving.tensor_codec import (
    DT_BOOL,
    DT_DOUBLE,
    DT_FLOAT,
    DT_INT8,
    DT_INT16,
    DT_INT32,
    DT_INT64,
    DT_INVALID,
    DT_STRING,
    DT_UINT8,
    DT_UINT32,
    DT_UINT64,
    dtype_name,
    dtype_of,
    numpy_dtype,
)

_MISSING = object()
_MAX_RANK = 64  # numpy's limit; TensorFlow allows 254.
MAX_DEPTH = 100
# Parsing may take at most 2 x the body plus this many bytes.
PARSE_ALLOWANCE = 100 * 1024 * 1024
_CONSTANTS = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
_DECODER = json.JSONDecoder(parse_constant=_CONSTANTS.__getitem__)
_WHITESPACE = " \t\n\r"


class RequestFormat(enum.Enum):
    """Which key the predict request used; decides the response key."""

    ROW = "instances"
    COLUMNAR = "inputs"


@dataclass
class PredictJson:
    """A parsed ``:predict`` body."""

    signature_name: str
    request_format: RequestFormat
    inputs: dict[str, np.ndarray]


# ----------------------------------------------------------------------------------------
# Parsing.


def parse_cost(body: bytes) -> int:
    """An upper bound of the bytes :func:`parse` takes for ``body``, in time linear in it.

    Measured per structural character on CPython 3.11 (tracemalloc, worst cases: empty
    lists and dicts, one-key dicts with distinct keys, short strings, floats, big ints)
    and rounded up: the decoded text and string copies (twice the text, four bytes a
    character once any is non-ASCII), a number or value per comma, a list per ``[``, a
    dict per ``{``, a key per ``:``, a string object per quote pair.
    """
    text = len(body) if body.isascii() else 4 * len(body)
    return (
        4096
        + 2 * text
        + 56 * (body.count(b",") + 1)
        + 72 * body.count(b"[")
        + 200 * body.count(b"{")
        + 100 * body.count(b":")
        + 32 * body.count(b'"')
    )


def parse_limit(body_size: int) -> int:
    return 2 * body_size + PARSE_ALLOWANCE


def _depth(value: Any) -> int:
    """The nesting depth of a parsed document, up to ``MAX_DEPTH + 1`` (level by level).

    One list comprehension per container: 100,000 one-key objects take tens of ms (a
    stack of (item, depth) pairs took seconds).
    """
    containers = (list, dict)
    level = [value] if isinstance(value, containers) else []
    depth = 0
    while level and depth <= MAX_DEPTH:
        depth += 1
        following = []
        for item in level:
            children = item if isinstance(item, list) else item.values()
            following += [child for child in children if isinstance(child, containers)]
        level = following
    return depth


def _too_deep() -> ServingError:
    return invalid_argument(
        f"JSON Parse error: the document is nested more than {MAX_DEPTH} levels deep"
    )


def parse(body: bytes) -> Any:
    """Parses a request body (``ParseJson`` without the object check), within bounds."""
    if not body:
        raise invalid_argument("JSON Parse error: The document is empty")
    cost, limit = parse_cost(body), parse_limit(len(body))
    if cost > limit:
        raise invalid_argument(
            f"JSON Parse error: a {len(body)}-byte body with this many values would take "
            f"about {cost >> 20} MB to parse, more than the {limit >> 20} MB allowed "
            '(2 x body + 100 MB). Send images as {"b64": ...} strings, fewer instances per '
            "request, or use gRPC."
        )
    text = body.decode("utf-8", "surrogateescape")
    start = len(text) - len(text.lstrip(_WHITESPACE))
    if start == len(text):
        raise invalid_argument("JSON Parse error: The document is empty.")
    try:
        value, _ = _DECODER.raw_decode(text, start)  # the rest is ignored, as by rapidjson
    except json.JSONDecodeError as error:
        raise invalid_argument(f"JSON Parse error: {error.msg}. at offset: {error.pos}") from None
    except RecursionError:
        raise _too_deep() from None
    if body.count(b"[") + body.count(b"{") > MAX_DEPTH and _depth(value) > MAX_DEPTH:
        raise _too_deep()
    return value


def debug_string(value: Any, limit: int = 256) -> str:
    """``JsonValueToDebugString``: the value as JSON, cut after ``limit`` characters.

    Encodes lazily, so a large document costs no more than its first characters.
    """
    encoder = json.JSONEncoder(ensure_ascii=False, allow_nan=True)
    out: list[str] = []
    size = 0
    for chunk in encoder.iterencode(value):
        out.append(chunk)
        size += len(chunk)
        if size >= limit:
            break
    return "".join(out)[:limit]


def json_type_name(value: Any) -> str:
    """rapidjson's value type names used in TF Serving messages."""
    if value is None:
        return "Null"
    if value is True:
        return "True"
    if value is False:
        return "False"
    if isinstance(value, dict):
        return "Object"
    if isinstance(value, list):
        return "Array"
    if isinstance(value, str):
        return "String"
    return "Number"


def _format_error(doc: Any, *parts: str) -> ServingError:
    return invalid_argument(f"JSON Value: {debug_string(doc)} " + "".join(parts))


def parse_object(body: bytes) -> dict:
    """``ParseJson``: the body must be a JSON object."""
    doc = parse(body)
    if not isinstance(doc, dict):
        raise _format_error(doc, "Is not object")
    return doc


def signature_name_of(doc: dict) -> str:
    value = doc.get("signature_name", _MISSING)
    if value is _MISSING:
        return ""
    if not isinstance(value, str):
        raise _format_error(
            doc, "not formatted correctly. 'signature_name' key must be a string value."
        )
    return value


def is_b64_object(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str)


def decode_b64_object(value: Any) -> bytes:
    if not is_b64_object(value):
        raise invalid_argument(
            f"JSON Value: {debug_string(value)} not formatted correctly for base64 data"
        )
    return b64_decode(value["b64"])


def b64_decode(text: str) -> bytes:
    """``absl::Base64Unescape``: standard alphabet, padding optional but exact if present."""
    data = text.encode("utf-8", "surrogateescape").replace(b".", b"=")
    stripped = data.rstrip(b"=")
    padding = len(data) - len(stripped)
    if len(stripped) % 4 == 1 or padding > 2 or (padding and len(data) % 4):
        raise invalid_argument("Unable to base64 decode")
    try:
        return base64.b64decode(stripped + b"=" * (-len(stripped) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise invalid_argument("Unable to base64 decode") from None


def _type_error(value: Any, dtype: int) -> ServingError:
    return invalid_argument(
        f"JSON Value: {debug_string(value)} Type: {json_type_name(value)} "
        f"is not of expected type: {dtype_name(dtype)}"
    )


# dtype -> (Python leaf types accepted in bulk, inclusive integer range or None).
_INT32 = (-(2**31), 2**31 - 1)
_LEAF_RULES: dict[int, tuple[frozenset, tuple[int, int] | None]] = {
    DT_FLOAT: (frozenset((int, float)), None),
    DT_DOUBLE: (frozenset((int, float)), None),
    DT_INT32: (frozenset((int,)), _INT32),
    DT_INT16: (frozenset((int,)), _INT32),
    DT_INT8: (frozenset((int,)), _INT32),
    DT_UINT8: (frozenset((int,)), _INT32),
    DT_INT64: (frozenset((int,)), (-(2**63), 2**63 - 1)),
    DT_UINT32: (frozenset((int,)), (0, 2**32 - 1)),
    DT_UINT64: (frozenset((int,)), (0, 2**64 - 1)),
    DT_BOOL: (frozenset((bool,)), None),
    DT_STRING: (frozenset((str,)), None),
}


def _check_leaf(value: Any, dtype: int) -> Any:
    """``AddValueToTensor`` for one JSON scalar (or ``{"b64"}`` object)."""
    if isinstance(value, dict):
        if dtype == DT_STRING:
            return decode_b64_object(value)
        raise _type_error(value, dtype)
    rule = _LEAF_RULES.get(dtype)
    if rule is None:
        raise ServingError(
            Code.UNIMPLEMENTED,
            f"Conversion of JSON Value: {debug_string(value)} to type: {dtype_name(dtype)}",
        )
    types, bounds = rule
    if type(value) not in types:
        raise _type_error(value, dtype)
    if bounds is not None and not bounds[0] <= value <= bounds[1]:
        raise _type_error(value, dtype)
    if dtype == DT_STRING:
        return value.encode("utf-8", "surrogateescape")
    return value


def _leaves_ok(values: list, dtype: int) -> bool:
    """Checks a list of leaves at C speed; False means: check them one by one."""
    rule = _LEAF_RULES.get(dtype)
    if rule is None or dtype == DT_STRING:
        return False
    types, bounds = rule
    if not set(map(type, values)) <= types:
        return False
    return bounds is None or not values or (bounds[0] <= min(values) and max(values) <= bounds[1])


def dense_shape(value: Any) -> list[int]:
    """``GetDenseTensorShape``: sizes along the chain of first elements."""
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return shape


def _shape_string(shape: list[int]) -> str:
    return "[" + ",".join(str(size) for size in shape) + "]"


def fill_values(value: Any, shape: list[int], dtype: int, out: list) -> int:
    """``FillTensorProto``: appends the leaves of ``value`` to ``out``; returns their count."""
    rank = len(shape)
    if rank > _MAX_RANK:
        raise invalid_argument(
            f"JSON value is nested {rank} lists deep; at most {_MAX_RANK} dimensions are supported"
        )
    if rank and _fill_fast(value, shape, dtype, out):
        return int(np.prod(shape, dtype=np.int64))
    start = len(out)
    _fill_level(value, 0, shape, rank, dtype, out)
    return len(out) - start


def _fill_fast(value: list, shape: list[int], dtype: int, out: list) -> bool:
    """numpy's C loop for well-formed input; False leaves the exact walk to find errors."""
    try:
        array = np.array(value, dtype=object)
    except ValueError:  # ragged
        return False
    if list(array.shape) != shape:
        return False
    leaves = array.ravel().tolist()
    if dtype == DT_STRING:
        if not set(map(type, leaves)) <= {str}:
            return False
        out.extend(leaf.encode("utf-8", "surrogateescape") for leaf in leaves)
        return True
    if not _leaves_ok(leaves, dtype):
        return False
    out.extend(leaves)
    return True


def _fill_level(value: Any, level: int, shape: list[int], rank: int, dtype: int, out: list):
    if not isinstance(value, list):
        if level != rank:
            raise invalid_argument(
                f"JSON Value: {debug_string(value)} found at incorrect level: {level + 1} "
                f"in the JSON DOM. Expected at level: {rank}"
            )
        out.append(_check_leaf(value, dtype))
        return
    if level >= rank:
        raise invalid_argument(f"Encountered list at unexpected level: {level} expected < {rank}")
    if len(value) != shape[level]:
        raise invalid_argument(
            f"Encountered list at unexpected size: {len(value)} at level: {level} "
            f"expected size: {shape[level]}"
        )
    if level == rank - 1 and _leaves_ok(value, dtype):
        out.extend(value)
        return
    for element in value:
        _fill_level(element, level + 1, shape, rank, dtype, out)


def to_array(values: list, shape: list[int], dtype: int) -> np.ndarray:
    """Builds the request tensor from checked leaves (``Tensor::FromProto`` casts)."""
    np_dtype = numpy_dtype(dtype)
    if dtype == DT_STRING:
        array = np.empty(len(values), dtype=object)
        array[:] = values
        return array.reshape(shape)
    with np.errstate(over="ignore", invalid="ignore"):
        if np_dtype.kind == "f":
            array = np.array(values, dtype=np.float64).astype(np_dtype)
        elif np_dtype.kind in "iu" and dtype not in (DT_UINT64, DT_INT64, DT_UINT32):
            array = np.array(values, dtype=np.int64).astype(np_dtype)
        else:
            array = np.array(values, dtype=np_dtype)
    return array.reshape(shape)


def _is_element_object(value: Any) -> bool:
    return isinstance(value, dict) and not is_b64_object(value)


class _InstanceTensors:
    """Accumulates the per-input tensors of a row-format request (``AddInstanceItem``)."""

    def __init__(self, infos: Mapping[str, int]) -> None:
        self.infos = infos
        self.values: dict[str, list] = {}
        self.sizes: dict[str, int] = {}
        self.shapes: dict[str, list[int]] = {}

    def add(self, item: Any, name: str) -> None:
        if name not in self.infos:
            raise invalid_argument(f"JSON object: does not have named input: {name}")
        dtype = self.infos[name]
        shape = dense_shape(item)
        out = self.values.setdefault(name, [])
        size = fill_values(item, shape, dtype, out)
        if name not in self.sizes:
            self.sizes[name] = size
            self.shapes[name] = shape
        elif self.sizes[name] != size:
            raise invalid_argument(f"Expecting tensor size: {self.sizes[name]} but got: {size}")
        elif self.shapes[name] != shape:
            raise invalid_argument(
                f"Expecting shape {_shape_string(self.shapes[name])} "
                f"but got: {_shape_string(shape)}"
            )

    def tensors(self, count: int) -> dict[str, np.ndarray]:
        return {
            name: to_array(values, [count] + self.shapes[name], self.infos[name])
            for name, values in self.values.items()
        }


def _tensors_from_instances(instances: list, infos: Mapping[str, int]) -> dict[str, np.ndarray]:
    first = instances[0]
    if not isinstance(first, dict) and len(infos) > 1:
        raise invalid_argument(
            "instances is a plain list, but expecting list of objects as multiple input "
            "tensors required as per tensorinfo_map"
        )
    elements_are_objects = _is_element_object(first)
    input_names = sorted(infos)
    builder = _InstanceTensors(infos)
    for index, element in enumerate(instances):
        if elements_are_objects:
            if not _is_element_object(element):
                raise invalid_argument(
                    f"Expecting object but got list at item {index} of input list"
                )
            keys = set()
            for name, item in element.items():
                keys.add(name)
                try:
                    builder.add(item, name)
                except ServingError as error:
                    raise invalid_argument(
                        f"Failed to process element: {index} key: {name} of 'instances' list. "
                        f"Error: {error}"
                    ) from None
            if keys != set(input_names):
                raise invalid_argument(
                    f"Failed to process element: {index} of 'instances' list. JSON object: "
                    f"{debug_string(element)} keys must be equal to: {','.join(input_names)}"
                )
        else:
            if _is_element_object(element):
                raise invalid_argument(
                    f"Expecting value/list but got object at item {index} of input list"
                )
            try:
                builder.add(element, next(iter(infos)))
            except ServingError as error:
                raise invalid_argument(
                    f"Failed to process element: {index} of 'instances' list. Error: {error}"
                ) from None
    return builder.tensors(len(instances))


def _tensor_from_value(value: Any, dtype: int) -> np.ndarray:
    shape = dense_shape(value)
    out: list = []
    fill_values(value, shape, dtype, out)
    return to_array(out, shape, dtype)


def _tensors_from_inputs(value: Any, infos: Mapping[str, int]) -> dict[str, np.ndarray]:
    if not isinstance(value, dict) or is_b64_object(value):
        if len(infos) > 1:
            raise invalid_argument(
                "inputs is a plain value/list, but expecting an object as multiple input "
                "tensors required as per tensorinfo_map"
            )
        name, dtype = next(iter(infos.items()))
        return {name: _tensor_from_value(value, dtype)}
    tensors = {}
    for name, dtype in infos.items():
        item = value.get(name, _MISSING)
        if item is _MISSING:
            raise invalid_argument(f"Missing named input: {name} in 'inputs' object.")
        tensors[name] = _tensor_from_value(item, dtype)
    return tensors


def _string_elements(doc_value: Any, infos: Mapping[str, int], row: bool) -> int:
    """A cheap lower bound on the string elements of a request, before tensors are built."""
    strings = [name for name, dtype in infos.items() if dtype == DT_STRING]
    if not strings:
        return 0
    if row:
        return len(doc_value) * len(strings)
    if isinstance(doc_value, list):
        return len(doc_value)
    if isinstance(doc_value, dict) and not is_b64_object(doc_value):
        return sum(len(v) for n, v in doc_value.items() if n in strings and isinstance(v, list))
    return 0


def parse_predict_request(
    body: bytes,
    input_dtypes: Callable[[str], Mapping[str, int]],
    check_elements: Callable[[int], None] | None = None,
) -> PredictJson:
    """``FillPredictRequestFromJson``.

    ``input_dtypes(signature_name)`` looks the servable and signature up (raising
    TF Serving's errors) and returns the signature's inputs as alias -> DataType.
    ``check_elements(count)`` sees the request's string element count (a lower
    bound) before any tensor is built, and may refuse it by raising.
    """
    doc = parse_object(body)
    signature_name = signature_name_of(doc)
    infos = input_dtypes(signature_name)
    if not infos:
        raise invalid_argument(
            f"Failed to get input map for signature: {signature_name or 'DEFAULT'}"
        )
    instances = doc.get("instances", _MISSING)
    inputs = doc.get("inputs", _MISSING)
    if instances is not _MISSING:
        if inputs is not _MISSING:
            raise _format_error(
                doc,
                "Not formatted correctly expecting only one of 'inputs' or 'instances' keys "
                "to exist ",
            )
        if not isinstance(instances, list):
            raise _format_error(doc, "Expecting 'instances' to be an list/array")
        if not instances:
            raise _format_error(doc, "No values in 'instances' array")
        if check_elements is not None:
            check_elements(_string_elements(instances, infos, row=True))
        tensors = _tensors_from_instances(instances, infos)
        return PredictJson(signature_name, RequestFormat.ROW, tensors)
    if inputs is not _MISSING:
        if check_elements is not None:
            check_elements(_string_elements(inputs, infos, row=False))
        tensors = _tensors_from_inputs(inputs, infos)
        return PredictJson(signature_name, RequestFormat.COLUMNAR, tensors)
    raise invalid_argument("Missing 'inputs' or 'instances' key")


# Feature kinds as TF Serving names them in errors.
_KIND_NAMES = {"bytes_list": "bytes", "float_list": "float", "int64_list": "int64"}


def _add_to_feature(value: Any, name: str, kinds: list, values: list) -> None:
    """``AddValueToFeature``: ``kinds`` holds the feature's kind once it has one."""
    if value is None or isinstance(value, list):
        raise invalid_argument(
            f"Feature: {name} has element with unexpected JSON type: {json_type_name(value)}"
        )
    if isinstance(value, bool):
        kind, item = "int64_list", 1 if value else 0
    elif isinstance(value, dict):
        if not is_b64_object(value):
            raise invalid_argument(f"Feature: {name} has element with unexpected JSON type: Object")
        kind, item = "bytes_list", None
    elif isinstance(value, str):
        kind, item = "bytes_list", value.encode("utf-8", "surrogateescape")
    elif isinstance(value, float):
        kind, item = "float_list", value
    elif -(2**63) <= value <= 2**64 - 1:
        kind, item = "int64_list", value
    else:  # past 64 bits rapidjson holds an integer literal as a double
        kind, item = "float_list", float(value) if abs(value) < 2**1024 else math.inf
    if kinds and kinds[0] != kind:
        raise invalid_argument(
            f"Unexpected element type in feature: {name} expecting type: {_KIND_NAMES[kinds[0]]}"
        )
    if not kinds:
        kinds.append(kind)
    if isinstance(value, dict):
        item = decode_b64_object(value)
    elif kind == "int64_list" and item > 2**63 - 1:
        raise invalid_argument(f"Feature: {name} has uint64_t element. Only int64_t is supported.")
    values.append(item)


def example_from_json(value: Any, example: example_pb2.Example) -> None:
    """``MakeExampleFromJsonObject``: one JSON object -> one tf.Example."""
    if not isinstance(value, dict):
        raise invalid_argument(f"Example must be JSON object but got JSON {json_type_name(value)}")
    features = example.features.feature
    for name, content in value.items():
        kinds: list = []
        values: list = []
        for item in content if isinstance(content, list) else [content]:
            _add_to_feature(item, name, kinds, values)
        feature = feature_pb2.Feature()
        if kinds:
            field = getattr(feature, kinds[0])
            if kinds[0] == "float_list":
                with np.errstate(over="ignore"):
                    values = np.asarray(values, dtype=np.float64).astype(np.float32).tolist()
            field.value.extend(values)
        features[name].CopyFrom(feature)


def parse_classify_regress_request(
    body: bytes, check_elements: Callable[[int], None] | None = None
) -> tuple[str, input_pb2.Input]:
    """``FillClassificationRequestFromJson`` / ``FillRegressionRequestFromJson``.

    ``check_elements(count)`` sees the number of examples before any is built.
    """
    doc = parse_object(body)
    signature_name = signature_name_of(doc)
    request_input = input_pb2.Input()
    context = doc.get("context", _MISSING)
    has_context = context is not _MISSING
    if has_context:
        example_from_json(context, request_input.example_list_with_context.context)
    examples = doc.get("examples", _MISSING)
    if examples is _MISSING:
        raise _format_error(
            doc, "When method is classify, key 'examples' is expected and was not found"
        )
    if not isinstance(examples, list):
        raise _format_error(doc, "Expecting 'examples' value to be an list/array")
    if not examples:
        raise _format_error(doc, "'examples' value is an empty array")
    if check_elements is not None:
        check_elements(len(examples))
    for value in examples:
        target = (
            request_input.example_list_with_context.examples
            if has_context
            else request_input.example_list.examples
        )
        example_from_json(value, target.add())
    return signature_name, request_input


# ----------------------------------------------------------------------------------------
# Responses: plain Python values for json.dumps.


def _float_values(array: np.ndarray) -> np.ndarray:
    """Float32 values as the shortest decimals that read back to them (0.1f -> 0.1)."""
    if array.dtype == np.float32:
        return np.array([float(text) for text in array.ravel().astype(str)]).reshape(array.shape)
    return array


def _json_values(name: str, array: np.ndarray) -> Any:
    """``AddSingleValueAndAdvance`` for a whole tensor: nested lists of JSON values."""
    array = np.asarray(array)
    dtype = array.dtype
    if dtype.kind == "f" and dtype in (np.float32, np.float64):
        return _float_values(array).tolist()
    if dtype == np.bool_ or (dtype.kind in "iu" and dtype != np.uint16):
        return array.tolist()
    if dtype.kind in "OS":
        as_b64 = name.endswith("_bytes")
        flat = [v if isinstance(v, bytes) else str(v).encode() for v in array.ravel()]
        if as_b64:
            items: list = [{"b64": base64.b64encode(v).decode("ascii")} for v in flat]
        else:
            items = [v.decode("utf-8", "surrogateescape") for v in flat]
        result = np.empty(len(items), dtype=object)
        result[:] = items
        return result.reshape(array.shape).tolist()
    label = str(dtype) if dtype_of(array) == DT_INVALID else dtype_name(dtype_of(array))
    raise invalid_argument(f"Failed to write JSON value for tensor type: {label}")


def dumps(value: Any) -> str:
    """JSON text as TF Serving writes it: NaN and infinities as bare tokens, UTF-8 kept.

    On one line: Python's C encoder only runs without ``indent`` (3x faster).
    """
    return json.dumps(value, ensure_ascii=False, allow_nan=True)


def predict_response(outputs: Mapping[str, np.ndarray], request_format: RequestFormat) -> str:
    """``MakeJsonFromTensors``: ``{"predictions": ...}`` or ``{"outputs": ...}``."""
    if not outputs:
        raise invalid_argument("Cannot convert empty tensor map to JSON")
    names = sorted(outputs)
    if request_format is RequestFormat.COLUMNAR:
        values = {name: _json_values(name, outputs[name]) for name in names}
        return dumps({"outputs": values if len(names) > 1 else values[names[0]]})
    batch_size = None
    for name in names:
        array = np.asarray(outputs[name])
        if array.ndim == 0:
            raise invalid_argument(f"Tensor name: {name} has no shape information ")
        if batch_size is not None and array.shape[0] != batch_size:
            raise invalid_argument(
                f"Tensor name: {name} has inconsistent batch size: {array.shape[0]} "
                f"expecting: {batch_size}"
            )
        batch_size = array.shape[0]
    values = {name: _json_values(name, outputs[name]) for name in names}
    if len(names) == 1:
        return dumps({"predictions": values[names[0]]})
    rows = [{name: values[name][row] for name in names} for row in range(batch_size or 0)]
    return dumps({"predictions": rows})


def _float32(value: float) -> float:
    return _float_values(np.array([value], np.float32))[0].item()


def classify_response(results: list[list[tuple[bytes, float]]]) -> str:
    """``MakeJsonFromClassificationResult``: ``{"results": [[[label, score], ...], ...]}``."""
    if not results:
        raise invalid_argument("Cannot convert empty ClassificationResults to JSON")
    rows = [
        [[label.decode("utf-8", "surrogateescape"), _float32(score)] for label, score in classes]
        for classes in results
    ]
    return dumps({"results": rows})


def regress_response(values: list[float]) -> str:
    """``MakeJsonFromRegressionResult``: ``{"results": [v1, v2, ...]}``."""
    if not values:
        raise invalid_argument("Cannot convert empty RegressionResults to JSON")
    return dumps({"results": _float_values(np.array(values, np.float32)).tolist()})


def error_body(message: str) -> bytes:
    """``MakeJsonFromStatus``: ``{"error": "<message>"}``."""
    return dumps({"error": message}).encode("utf-8", "surrogateescape")
