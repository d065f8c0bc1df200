"""The REST JSON layer on its own: bounded parsing with the standard ``json`` module and
TF Serving's conversion texts, as ``tfserving-protocol.md`` sections 1.3-1.5 state them."""

from __future__ import annotations

import json
import math
import tracemalloc

import numpy as np
import pytest

from serving.server import json_tensor
from serving.server.json_tensor import parse
from serving.server.status import Code, ServingError
from serving.tensor_codec import DT_FLOAT, DT_HALF, DT_INT32, DT_INT64, DT_UINT8


def parse_error(body: bytes) -> str:
    with pytest.raises(ServingError) as raised:
        parse(body)
    assert raised.value.code == Code.INVALID_ARGUMENT
    return raised.value.message


def test_nan_and_infinity_tokens():
    values = parse(b"[NaN, Infinity, -Infinity]")
    assert math.isnan(values[0])
    assert values[1:] == [math.inf, -math.inf]
    for bad in (b"[Nan]", b"[nan]", b"[+Infinity]"):
        assert parse_error(bad).startswith("JSON Parse error: ")


def test_documented_parse_errors():
    assert parse_error(b"") == "JSON Parse error: The document is empty"
    assert parse_error(b" \n ") == "JSON Parse error: The document is empty."
    assert parse_error(b"instances = [1, 2]").startswith("JSON Parse error: Expecting value")


def test_trailing_garbage_is_ignored():
    assert parse(b'{"a": 1} and then anything') == {"a": 1}


def test_nesting_is_capped_with_a_clear_error():
    ok = b"[" * json_tensor.MAX_DEPTH + b"]" * json_tensor.MAX_DEPTH
    assert parse(ok)
    too_deep = b'{"instances":[1], "nested":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    assert parse_error(too_deep) == (
        "JSON Parse error: the document is nested more than 100 levels deep"
    )
    # Just past the cap, below Python's recursion limit: the walk after parsing finds it.
    assert "nested more than" in parse_error(b"[" * 101 + b"]" * 101)
    # 20 MB of "[" (the attack) is refused by the cost estimate, before parsing.
    assert "2 x body + 100 MB" in parse_error(b"[" * 20_000_000)


@pytest.mark.parametrize(
    "body",
    [
        b"[" + b"[]," * 100_000 + b"[]]",
        b"[" + b"{}," * 100_000 + b"{}]",
        b"[" + b",".join(b'{"k%d":1}' % i for i in range(50_000)) + b"]",
        b"[" + b"1.5," * 100_000 + b"1]",
        b"[" + b"123456789012," * 100_000 + b"1]",
        b"[" + b'"ab",' * 100_000 + b'"a"]',
        b'["' + "\U0001f600".encode("utf-8") + b"x" * 100_000 + b'"]',
        json.dumps([[[[1.5, 2.5, 3.5]] * 224] * 100]).encode(),
    ],
    ids=["lists", "dicts", "keys", "floats", "ints", "strings", "astral", "pixels"],
)
def test_parse_cost_bounds_what_parsing_takes(body):
    tracemalloc.start()
    try:
        value = parse(body)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    del value
    assert peak <= json_tensor.parse_cost(body)


def test_bodies_too_costly_to_parse_are_refused_before_parsing():
    body = b"[" + b"[]," * 2_000_000 + b"[]]"  # 6 MB, ~130 MB of Python lists
    message = parse_error(body)
    assert "more than the" in message and "2 x body + 100 MB" in message


def infos(**dtypes):
    return lambda signature_name: dtypes


def request_error(body: str, **dtypes) -> ServingError:
    with pytest.raises(ServingError) as raised:
        json_tensor.parse_predict_request(body.encode(), infos(**dtypes))
    return raised.value


def test_documented_request_error_texts():
    assert request_error('{ "signature_name": 100 }', x=DT_FLOAT).message == (
        'JSON Value: {"signature_name": 100} not formatted correctly. '
        "'signature_name' key must be a string value."
    )
    assert request_error('{"instances": ["x"]}', x=DT_FLOAT).message == (
        "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: "
        'JSON Value: "x" Type: String is not of expected type: float'
    )
    assert request_error('{"inputs": [1.0]}', x=DT_INT32).message == (
        "JSON Value: 1.0 Type: Number is not of expected type: int32"
    )
    assert request_error('{"instances": [1]}', a=DT_FLOAT, b=DT_FLOAT).message == (
        "instances is a plain list, but expecting list of objects as multiple input tensors "
        "required as per tensorinfo_map"
    )
    assert request_error('{"inputs": {"a": [1]}}', a=DT_FLOAT, b=DT_FLOAT).message == (
        "Missing named input: b in 'inputs' object."
    )
    assert request_error("{}", x=DT_FLOAT).message == "Missing 'inputs' or 'instances' key"
    unimplemented = request_error('{"inputs": [1]}', x=DT_HALF)
    assert unimplemented.code == Code.UNIMPLEMENTED
    assert unimplemented.message == "Conversion of JSON Value: 1 to type: half"
    keys = request_error('{"instances": [{"a": 1}]}', a=DT_INT32, b=DT_INT32).message
    assert keys.startswith("Failed to process element: 0 of 'instances' list. JSON object: ")
    assert keys.endswith(" keys must be equal to: a,b")


def test_columnar_extra_keys_are_ignored_and_scalars_have_no_shape():
    parsed = json_tensor.parse_predict_request(
        b'{"inputs": {"x": 3, "ignored": "?"}}', infos(x=DT_INT64)
    )
    assert parsed.request_format is json_tensor.RequestFormat.COLUMNAR
    assert parsed.inputs["x"].shape == () and parsed.inputs["x"] == 3


def test_small_integer_types_wrap_like_tensor_from_proto():
    # IsInt() only, no range check for 8/16-bit; TensorFlow casts the int32 values.
    parsed = json_tensor.parse_predict_request(b'{"inputs": [300, -1]}', infos(x=DT_UINT8))
    assert parsed.inputs["x"].tolist() == [44, 255]


def test_float_inputs_follow_get_float():
    parsed = json_tensor.parse_predict_request(
        b'{"instances": [1e300, -1e300, 1e-300, 1435774380]}', infos(x=DT_FLOAT)
    )
    assert parsed.inputs["x"].tolist() == [math.inf, -math.inf, 0.0, 1435774336.0]


@pytest.mark.parametrize(
    "value,text",
    [(9000000, "9000000.0"), (3, "3.0"), (0.1, "0.1"), (1 / 3, "0.33333334"), (-0.0, "-0.0")],
)
def test_float32_outputs_are_the_shortest_decimal_of_the_float32(value, text):
    reply = json_tensor.predict_response(
        {"y": np.array([value], np.float32)}, json_tensor.RequestFormat.COLUMNAR
    )
    assert json.loads(reply) == {"outputs": [float(text)]}
    assert np.float32(json.loads(reply)["outputs"][0]) == np.float32(value)


def test_non_finite_outputs_are_bare_tokens():
    reply = json_tensor.predict_response(
        {"y": np.array([np.nan, np.inf, -np.inf], np.float32)}, json_tensor.RequestFormat.ROW
    )
    assert "".join(reply.split()) == '{"predictions":[NaN,Infinity,-Infinity]}'


def test_unsupported_output_dtype():
    with pytest.raises(ServingError) as raised:
        json_tensor.predict_response(
            {"y": np.ones(2, np.float16)}, json_tensor.RequestFormat.COLUMNAR
        )
    assert raised.value.message == "Failed to write JSON value for tensor type: half"


def test_error_body():
    assert json.loads(json_tensor.error_body('Bad key: "key"')) == {"error": 'Bad key: "key"'}


def test_integers_past_64_bits_are_float_features_as_in_rapidjson():
    # Found by tests/serving/test_fuzz.py: protobuf refused the int64 and the server
    # answered 500. rapidjson reads such a literal as a double.
    _, request_input = json_tensor.parse_classify_regress_request(
        b'{"examples": [{"x": -9223372036854775809}]}'
    )
    [example] = request_input.example_list.examples
    assert example.features.feature["x"].float_list.value[0] == float(-(2**63))
    with pytest.raises(ServingError, match="has uint64_t element"):
        json_tensor.parse_classify_regress_request(b'{"examples": [{"x": 18446744073709551615}]}')
