"""The REST JSON layer on its own: rapidjson's parsing rules and TF Serving's conversion
texts, as ``tfserving-protocol.md`` sections 1.3-1.5 state them."""

from __future__ import annotations

import math

import numpy as np
import pytest

from serving.server import json_tensor, json_write
from serving.server.json_parse import JsonObject, parse
from serving.server.status import Code, ServingError
from serving.server.tensor_proto import DT


def parse_error(body: bytes) -> str:
    with pytest.raises(ServingError) as raised:
        parse(body)
    assert raised.value.code == Code.INVALID_ARGUMENT
    return raised.value.message


def test_nan_and_infinity_tokens():
    values = parse(b"[NaN, Inf, Infinity, -Inf, -Infinity]")
    assert math.isnan(values[0])
    assert values[1:] == [math.inf, math.inf, -math.inf, -math.inf]
    for bad in (b"[Nan]", b"[nan]", b"[+Infinity]"):
        assert parse_error(bad).startswith("JSON Parse error: ")


def test_documented_parse_errors():
    assert parse_error(b"") == "JSON Parse error: The document is empty"
    assert parse_error(b" \n ") == "JSON Parse error: The document is empty. at offset: 3"
    assert parse_error(b"instances = [1, 2]") == "JSON Parse error: Invalid value. at offset: 0"


def test_trailing_garbage_and_deep_nesting_are_accepted():
    assert parse(b'{"a": 1} and then anything') == JsonObject([("a", 1)])
    deep = b'{"instances":[1], "nested":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    assert parse(deep).get("instances") == [1]


def test_integers_and_decimals_stay_distinct():
    values = parse(b"[1, 1.0, 1e2, -0, 18446744073709551615, 18446744073709551616]")
    assert [type(v) for v in values] == [int, float, float, int, int, float]


def infos(**dtypes):
    return lambda signature_name: dtypes


def request_error(body: str, **dtypes) -> ServingError:
    with pytest.raises(ServingError) as raised:
        json_tensor.parse_predict_request(body.encode(), infos(**dtypes))
    return raised.value


def test_documented_request_error_texts():
    assert request_error('{ "signature_name": 100 }', x=DT.DT_FLOAT).message == (
        'JSON Value: {\n    "signature_name": 100\n} not formatted correctly. '
        "'signature_name' key must be a string value."
    )
    assert request_error('{"instances": ["x"]}', x=DT.DT_FLOAT).message == (
        "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: "
        'JSON Value: "x" Type: String is not of expected type: float'
    )
    assert request_error('{"inputs": [1.0]}', x=DT.DT_INT32).message == (
        "JSON Value: 1.0 Type: Number is not of expected type: int32"
    )
    assert request_error('{"instances": [1]}', a=DT.DT_FLOAT, b=DT.DT_FLOAT).message == (
        "instances is a plain list, but expecting list of objects as multiple input tensors "
        "required as per tensorinfo_map"
    )
    assert request_error('{"inputs": {"a": [1]}}', a=DT.DT_FLOAT, b=DT.DT_FLOAT).message == (
        "Missing named input: b in 'inputs' object."
    )
    assert request_error("{}", x=DT.DT_FLOAT).message == "Missing 'inputs' or 'instances' key"
    unimplemented = request_error('{"inputs": [1]}', x=DT.DT_HALF)
    assert unimplemented.code == Code.UNIMPLEMENTED
    assert unimplemented.message == "Conversion of JSON Value: 1 to type: half"
    keys = request_error('{"instances": [{"a": 1}]}', a=DT.DT_INT32, b=DT.DT_INT32).message
    assert keys.startswith("Failed to process element: 0 of 'instances' list. JSON object: ")
    assert keys.endswith(" keys must be equal to: a,b")


def test_columnar_extra_keys_are_ignored_and_scalars_have_no_shape():
    parsed = json_tensor.parse_predict_request(
        b'{"inputs": {"x": 3, "ignored": "?"}}', infos(x=DT.DT_INT64)
    )
    assert parsed.request_format is json_tensor.RequestFormat.COLUMNAR
    assert parsed.inputs["x"].shape == () and parsed.inputs["x"] == 3


def test_small_integer_types_wrap_like_tensor_from_proto():
    # IsInt() only, no range check for 8/16-bit; TensorFlow casts the int32 values.
    parsed = json_tensor.parse_predict_request(b'{"inputs": [300, -1]}', infos(x=DT.DT_UINT8))
    assert parsed.inputs["x"].tolist() == [44, 255]


def test_float_inputs_follow_get_float():
    parsed = json_tensor.parse_predict_request(
        b'{"instances": [1e300, -1e300, 1e-300, 1435774380]}', infos(x=DT.DT_FLOAT)
    )
    assert parsed.inputs["x"].tolist() == [math.inf, -math.inf, 0.0, 1435774336.0]


@pytest.mark.parametrize(
    "value,text",
    [
        (9000000, "9e+06"),
        (999999, "999999.0"),
        (0.5, "0.5"),
        (0.0003, "0.0003"),
        (0.00003, "3e-05"),
        (555557.5, "555557.5"),
        (3, "3.0"),
        (0.1, "0.1"),
        (1 / 3, "0.333333343"),
        (123456789, "123456792.0"),
        (1e20, "1e+20"),
        (-0.0, "-0.0"),
    ],
)
def test_float32_write_decimal_examples(value, text):
    assert json_write.format_float32(float(np.float32(value))) == text
    assert json_write.format_float32_array(np.array([value], np.float32)) == [text]


def test_double_write_decimal():
    assert json_write.format_float64(1 / 3) == "0.33333333333333331"


def test_unsupported_output_dtype():
    with pytest.raises(ServingError) as raised:
        json_tensor.predict_response(
            {"y": np.ones(2, np.float16)}, json_tensor.RequestFormat.COLUMNAR
        )
    assert raised.value.message == "Failed to write JSON value for tensor type: half"


def test_error_body_layout():
    assert json_write.error_body('Bad key: "key"') == b'{\n    "error": "Bad key: \\"key\\""\n}'
