"""TF Serving's own request/response cases, replayed against the local server over HTTP.

Every case of ``shared/data/tfserving-cases.json`` runs here (one test each):
handler cases as the HTTP request they describe; JSON-conversion cases through
models built for them (an echo model per request case, a constant-output model
per response case, an Example-echo classifier); path-parsing cases as the
HTTP requests whose answers reveal the parse. Cases that cannot be sent over
HTTP are listed in ``NOT_OVER_HTTP`` with the reason and checked on the
function that implements them. Bodies are compared as JSON (issue 10 gave up
rapidjson's byte layout): every sample of ``tfserving-exact-output-samples.txt``
parses to the same JSON, and floats read back to the same float32/float64.
Cases where this server deliberately differs are listed in ``DEVIATIONS`` with
the reason, and the test checks the deviating behaviour instead.
"""

from __future__ import annotations

import base64
import http.client
import json
import re
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import json_format, text_format

from tests.serving.half_plus_two import (
    build_constant_model,
    build_echo_model,
    build_example_echo_model,
    build_half_plus,
    build_results_model,
)

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
CASES = json.loads((SHARED_DATA / "tfserving-cases.json").read_text())["cases"]
SAMPLES = (SHARED_DATA / "tfserving-exact-output-samples.txt").read_text()

# Index -> why the case is not sent over HTTP (it is checked on the implementing function).
NOT_OVER_HTTP = {
    index: "an empty classification/regression result cannot reach the JSON writer over HTTP: "
    "requests without examples are refused earlier ('examples' value is an empty array)"
    for index, case in enumerate(CASES)
    if case["request"]["kind"].startswith("MakeJsonFrom")
    and case["request"]["kind"] != "MakeJsonFromTensors"
    and case["request"].get("result_textproto") == ""
}
NOT_OVER_HTTP.update(
    {
        index: "an empty output map cannot reach the JSON writer over HTTP: the TensorFlow "
        "runtime refuses a run with nothing to fetch first (as under TF Serving)"
        for index, case in enumerate(CASES)
        if case["request"]["kind"] == "MakeJsonFromTensors" and not case["request"]["tensor_map"]
    }
)

# Index -> why this server answers differently on purpose; the test checks that answer.
DEVIATIONS = {
    index: "nesting is capped at 100 levels (issue 10: bounded parsing); TF Serving's "
    "iterative rapidjson parser takes 500000 levels"
    for index, case in enumerate(CASES)
    if "500000-deep" in case["description"]
}

_DTYPES = {
    "DT_FLOAT": np.float32,
    "DT_DOUBLE": np.float64,
    "DT_INT32": np.int32,
    "DT_INT64": np.int64,
    "DT_STRING": object,
    "DT_BOOL": np.bool_,
    "DT_COMPLEX64": np.complex64,
}


def case_id(index: int) -> str:
    kind = CASES[index]["request"]["kind"].split(" ")[0].split("::")[-1]
    return f"{index:03d}-{kind}"


# ----------------------------------------------------------------------------------------
# Abbreviated tensor text protos of the cases ("int_val: 1 2 3" = one entry per number).


def parse_tensor_text(text: str) -> tuple[str, list[int], list]:
    text = re.sub(r"\([^)]*\)", "", text)
    dtype = re.search(r"dtype: (DT_\w+)", text).group(1)
    shape: list[int] = []
    rest = text
    start = text.find("tensor_shape {")
    if start >= 0:
        depth, end = 0, start
        for end in range(start, len(text)):
            depth += text[end] == "{"
            depth -= text[end] == "}"
            if depth == 0 and text[end] == "}":
                break
        shape = [int(size) for size in re.findall(r"size: (-?\d+)", text[start : end + 1])]
        rest = text[:start] + text[end + 1 :]
    values: list = []
    for field, quoted, bare in re.findall(r'(\w+_val):|"((?:[^"\\]|\\.)*)"|([-+.\w]+)', rest):
        if quoted or (not field and bare and not bare.startswith("DT_") and bare != "dtype"):
            values.append(quoted.encode() if quoted else _number(bare))
    return dtype, shape, values


def _number(token: str):
    lowered = token.lower()
    if lowered in ("nan", "-nan"):
        return float("nan")
    if lowered.lstrip("+-") in ("inf", "infinity"):
        return float("-inf") if lowered.startswith("-") else float("inf")
    return float(token) if re.search(r"[.eE]", token) or token == "-0" else int(token)


def expected_array(text: str) -> np.ndarray:
    dtype, shape, values = parse_tensor_text(text)
    np_dtype = _DTYPES[dtype]
    if dtype == "DT_COMPLEX64":
        values = [complex(a, b) for a, b in zip(values[0::2], values[1::2], strict=True)]
    if dtype == "DT_STRING":
        array = np.empty(len(values), dtype=object)
        array[:] = values
        return array.reshape(shape)
    return np.array(values, dtype=np_dtype).reshape(shape)


def assert_same_tensor(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.shape == expected.shape
    if expected.dtype == object:
        assert actual.tolist() == expected.tolist()
        return
    actual = actual.astype(expected.dtype)
    if expected.dtype.kind == "f":
        both_nan = np.isnan(actual) & np.isnan(expected)
        assert np.array_equal(actual[~both_nan], expected[~both_nan])
        assert np.array_equal(np.signbit(actual), np.signbit(expected))  # -0 stays -0
    else:
        assert np.array_equal(actual, expected)


def json_values_to_array(value, dtype: np.dtype) -> np.ndarray:
    """A response tensor back to numpy (strings and {"b64"} objects to bytes)."""

    def convert(item):
        if isinstance(item, list):
            return [convert(element) for element in item]
        if isinstance(item, dict):
            return base64.b64decode(item["b64"])
        if isinstance(item, str):
            return item.encode("utf-8", "surrogateescape")
        return item

    converted = convert(value)
    if np.dtype(dtype).kind == "O":
        array = np.empty(np.shape(np.array(converted, dtype=object)), dtype=object)
        array[...] = np.array(converted, dtype=object)
        return array
    return np.array(converted, dtype=dtype)


def response_tensors(body: dict, names: list[str], dtypes: dict) -> dict[str, np.ndarray]:
    """Splits a predict response back into tensors by output name."""
    if "predictions" in body:
        rows = body["predictions"]
        if len(names) == 1:
            return {names[0]: json_values_to_array(rows, dtypes[names[0]])}
        return {n: json_values_to_array([row[n] for row in rows], dtypes[n]) for n in names}
    outputs = body["outputs"]
    if len(names) == 1:
        return {names[0]: json_values_to_array(outputs, dtypes[names[0]])}
    return {n: json_values_to_array(outputs[n], dtypes[n]) for n in names}


# ----------------------------------------------------------------------------------------
# The server and its models.


def case_body(case: dict) -> str:
    body = case["request"].get("body", "")
    if "500000" in body:  # described, not spelled out, in the cases file
        deep = "[" * 500000 + "]" * 500000
        if body.startswith('{"instances":[1]'):
            return '{"instances":[1], "nested":' + deep + "}"
        return '{"signature_name":' + deep + "}"
    limits = {
        "<std::numeric_limits<double>::max()>": f"{np.finfo(np.float64).max:g}",
        "<-std::numeric_limits<double>::max()>": f"{-np.finfo(np.float64).max:g}",
        "<std::numeric_limits<double>::min()>": f"{np.finfo(np.float64).tiny:g}",
        "<-std::numeric_limits<double>::min()>": f"{-np.finfo(np.float64).tiny:g}",
    }
    for placeholder, text in limits.items():  # absl::Substitute writes doubles with %g
        body = body.replace(placeholder, text)
    return body


def _signature_name_of(body: str) -> str:
    match = re.match(r'\s*\{\s*"signature_name"\s*:\s*"([^"]*)"', body)
    return match.group(1) if match else "serving_default"


def _tensor_proto(text: str):
    from tensorflow.core.framework import tensor_pb2

    return text_format.Parse(
        re.sub(r"(\w+_val): ((?:[^\s{}]+ ?)+)", _expand_values, re.sub(r"\([^)]*\)", "", text)),
        tensor_pb2.TensorProto(),
    )


def _expand_values(match: re.Match) -> str:
    field, values = match.group(1), match.group(2)
    tokens = re.findall(r'"(?:[^"\\]|\\.)*"|\S+', values)
    return " ".join(f"{field}: {token}" for token in tokens)


@pytest.fixture(scope="module")
def server(tmp_path_factory, start_server):
    root = tmp_path_factory.mktemp("case_models")
    configs = []

    def add(name: str, policy: str = "", labels: str = "") -> Path:
        configs.append(
            f'config {{ name: "{name}" base_path: "{root / name}" model_platform: "tensorflow" '
            f"{policy} {labels} }}"
        )
        return root / name

    # http_rest_api_handler_test.cc's fixture: versions 123 (served) and 124 (not).
    base = add(
        "saved_model_half_plus_two_2_versions",
        "model_version_policy { specific { versions: 123 } }",
        'version_labels { key: "Version_Label" value: 123 }',
    )
    build_half_plus(base / "00000123")
    build_half_plus(base / "00000124", b=7.0)
    build_half_plus(add("saved_model_half_plus_three") / "00000123", 3.0, True)
    build_half_plus(add("half_plus_two") / "1")
    build_example_echo_model(add("example_echo") / "1", extra_signature="custom_signture")
    build_results_model(add("results") / "1")
    for index, case in enumerate(CASES):
        request = case["request"]
        if request["kind"] == "FillPredictRequestFromJson":
            dtypes = {
                alias: _type_enum(name)
                for alias, name in request["signature_inputs_dtypes"].items()
            }
            build_echo_model(
                add(f"request_case_{index}") / "1", dtypes, _signature_name_of(case_body(case))
            )
        elif request["kind"] == "MakeJsonFromTensors":
            outputs = {alias: _tensor_proto(text) for alias, text in request["tensor_map"].items()}
            build_constant_model(add(f"response_case_{index}") / "1", outputs)
    # For the exact-bytes samples.
    build_constant_model(
        add("two_outputs") / "1",
        {
            "a": _tensor_proto("dtype: DT_FLOAT tensor_shape { dim { size: 2 } } float_val: 1 2"),
            "b": _tensor_proto(
                "dtype: DT_FLOAT tensor_shape { dim { size: 2 } dim { size: 2 } } "
                "float_val: 0.1 0.2 0.3 0.4"
            ),
        },
    )
    build_constant_model(
        add("zero_batch") / "1",
        {"y": _tensor_proto("dtype: DT_FLOAT tensor_shape { dim { size: 0 } dim { size: 2 } }")},
    )
    build_constant_model(add("scalar") / "1", {"y": _tensor_proto("dtype: DT_FLOAT float_val: 7")})
    build_echo_model(add("float_echo") / "1", {"x": 1})
    build_echo_model(add("double_echo") / "1", {"x": 2})
    config = root / "models.config"
    config.write_text("model_config_list {\n" + "\n".join(configs) + "\n}\n")
    return start_server(model_config_file=str(config), file_system_poll_wait_seconds=0)


def _type_enum(name: str) -> int:
    from tensorflow.core.framework import types_pb2

    return types_pb2.DataType.Value(name)


def send(server, method: str, path: str, body: str | bytes = "", headers=None):
    """One HTTP request with the path sent exactly as given; returns (status, headers, body)."""
    connection = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=120)
    try:
        payload = body.encode() if isinstance(body, str) else body
        connection.request(method, path, body=payload, headers=headers or {})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def error_of(body: bytes) -> str:
    return json.loads(body)["error"]


def _json(body: bytes | str):
    """JSON with NaN and the infinities kept as their tokens (so that NaN == NaN)."""
    text = body.decode("utf-8", "surrogateescape") if isinstance(body, bytes) else body
    return json.loads(text, parse_constant=str)


# ----------------------------------------------------------------------------------------
# One test per case.


@pytest.mark.parametrize("index", range(len(CASES)), ids=case_id)
def test_tfserving_case(server, index):
    case = CASES[index]
    kind = case["request"]["kind"]
    if index in NOT_OVER_HTTP:
        _check_on_function(case)
        return
    if index in DEVIATIONS:
        body = case_body(case)
        status, _, reply = send(server, "POST", f"/v1/models/request_case_{index}:predict", body)
        assert status == 400
        assert "nested more than 100 levels deep" in error_of(reply)
        return
    handler = {
        "RE2::FullMatch": _dispatch_case,
        "HttpRestApiHandler::ProcessRequest": _handler_case,
        "ParseModelInfo": _parse_model_info_case,
        "FillPredictRequestFromJson": _predict_request_case,
        "MakeJsonFromTensors": _predict_response_case,
        "FillClassificationRequestFromJson": _examples_case,
        "MakeJsonFromClassificationResult": _results_case,
        "MakeJsonFromRegressionResult": _results_case,
        "MakeJsonFromStatus": _status_body_case,
    }[kind.split(" ")[0]]
    handler(server, index, case)


def _check_on_function(case):
    from serving.server import json_tensor
    from serving.server.status import ServingError

    writers = {
        "MakeJsonFromClassificationResult": json_tensor.classify_response,
        "MakeJsonFromRegressionResult": json_tensor.regress_response,
        "MakeJsonFromTensors": lambda empty: json_tensor.predict_response(
            dict(empty), json_tensor.RequestFormat.ROW
        ),
    }
    with pytest.raises(ServingError) as raised:
        writers[case["request"]["kind"]]([])
    assert case["expected_response_or_error"]["message_contains"] in raised.value.message


def _dispatch_case(server, index, case):
    for path, handled in case["expected_response_or_error"].items():
        status, headers, _ = send(server, "GET", path)
        if handled:  # handed to the REST handler: JSON, here "Missing model name in request."
            assert headers["Content-Type"] == "application/json"
            assert status == 400
        else:  # libevent's 404 page
            assert status == 404
            assert headers["Content-Type"].startswith("text/html")


def _handler_case(server, index, case):
    request, expected = case["request"], case["expected_response_or_error"]
    status, headers, body = send(server, request["http_method"], request["path"], request["body"])
    assert status == expected["http_status"]
    for name, value in expected.get("headers", []):
        assert headers[name] == value
    if "message_contains" in expected:
        assert expected["message_contains"] in error_of(body)
    if expected.get("status_code") == "NOT_FOUND" and "Specific(foo, 50)" in expected.get(
        "note", ""
    ):
        assert error_of(body) == "Servable not found for request: Specific(foo, 50)"
    if "body_json_equal" in expected:
        assert _json(body) == json.loads(expected["body_json_equal"])
    if "body_json_equal_file" in expected:
        reference = SHARED_DATA / "half_plus_two_2_versions_metadata.json"
        assert _json(body) == json.loads(reference.read_text())
    if "body_text" in expected:
        # The docs show the body without the printer's final newline.
        assert body.decode().rstrip("\n") == expected["body_text"]


def _parse_model_info_case(server, index, case):
    request, expected = case["request"], case["expected_response_or_error"]
    method = request["http_method"]
    for path in request.get("paths", [request.get("path")]):
        body = '{"instances": [1]}' if method == "POST" else ""
        status, _, reply = send(server, method, path, body)
        message = error_of(reply)
        if not expected["ok"]:
            assert status == 400 and expected["message_contains"] in message
        elif not expected["parse_successful"]:
            assert status == 400 and message == f"Malformed request: {method} {path}"
        else:
            assert message == _answer_for(method, expected), path


def _answer_for(method: str, parsed: dict) -> str:
    """What the server answers for a path that parsed into ``parsed`` (no such model)."""
    name = parsed["model_name"]
    if "model_version_label" in parsed:
        return (
            f"Unrecognized servable version label: {parsed['model_version_label']}"
            if (method == "POST" or parsed.get("model_subresource") == "metadata")
            else f"Could not find any versions of model {name}"
        )
    if method == "GET":
        if "model_version" in parsed:
            return f"Could not find version {parsed['model_version']} of model {name}"
        return f"Could not find any versions of model {name}"
    if "model_version" in parsed:
        return f"Servable not found for request: Specific({name}, {parsed['model_version']})"
    return f"Servable not found for request: Latest({name})"


def _predict_request_case(server, index, case):
    expected = case["expected_response_or_error"]
    status, _, body = send(
        server, "POST", f"/v1/models/request_case_{index}:predict", case_body(case)
    )
    if "status_code" in expected:
        assert status == 400
        assert expected["message_contains"] in error_of(body)
        return
    assert status == 200, body[:300]
    reply = _json(body)
    if "inputs_count" in expected:
        assert len(reply["predictions"]) == expected["inputs_count"]
        return
    assert ("predictions" if expected["format"] == "kRow" else "outputs") in reply
    wanted = {name: expected_array(text) for name, text in expected["inputs"].items()}
    names = sorted(case["request"]["signature_inputs_dtypes"])
    actual = response_tensors(reply, names, {n: wanted[n].dtype for n in names})
    for name in names:
        assert_same_tensor(actual[name], wanted[name])


def _predict_response_case(server, index, case):
    expected = case["expected_response_or_error"]
    payload = '{"instances": [0]}' if case["request"]["format"] == "kRow" else '{"inputs": 0}'
    status, _, body = send(server, "POST", f"/v1/models/response_case_{index}:predict", payload)
    if "status_code" in expected:
        assert status == 400
        assert expected["message_contains"] in error_of(body)
    elif "body_json_equal" in expected:
        assert status == 200
        assert _json(body) == json.loads(expected["body_json_equal"])
    else:  # NaN/Infinity tokens and the float formatting
        assert status == 200
        assert _json(body) == _json(expected["body_text_tokens_equal"])


def _merged_examples(textproto: str) -> tuple[str, list[dict]]:
    from tensorflow.core.example import example_pb2
    from tensorflow_serving.apis import classification_pb2

    request = text_format.Parse(textproto, classification_pb2.ClassificationRequest())
    if request.input.HasField("example_list_with_context"):
        source = request.input.example_list_with_context
        merged = []
        for example in source.examples:
            combined = example_pb2.Example()
            combined.MergeFrom(source.context)
            combined.MergeFrom(example)
            merged.append(combined)
    else:
        merged = list(request.input.example_list.examples)
    return request.model_spec.signature_name, [json_format.MessageToDict(e) for e in merged]


def _examples_case(server, index, case):
    from tensorflow.core.example import example_pb2

    expected = case["expected_response_or_error"]
    body = case["request"]["body"]
    if "status_code" in expected:
        for verb in ("classify", "regress"):
            status, _, reply = send(server, "POST", f"/v1/models/example_echo:{verb}", body)
            assert status == 400
            assert expected["message_contains"] in error_of(reply)
        return
    signature, wanted = _merged_examples(expected["request_textproto"])
    status, _, reply = send(server, "POST", "/v1/models/example_echo:classify", body)
    assert status == 200, reply
    results = _json(reply)["results"]
    examples = []
    for classes in results:
        [(label, score)] = classes
        serialized = label.encode("utf-8", "surrogateescape")
        examples.append(json_format.MessageToDict(example_pb2.Example.FromString(serialized)))
        # The echo classifier scores 1.0 only under the "custom_signture" signature.
        assert score == (1.0 if signature == "custom_signture" else 0.0)
    assert examples == wanted


def _results_case(server, index, case):
    expected = case["expected_response_or_error"]
    if case["request"]["kind"] == "MakeJsonFromClassificationResult":
        verb, signature, count = "classify", "classify_const", 2
    elif "Infinity" in case["request"]["result_textproto"]:
        verb, signature, count = "regress", "regress_non_finite", 5
    else:
        verb, signature, count = "regress", "regress_const", 3
    body = json.dumps({"signature_name": signature, "examples": [{}] * count})
    status, _, reply = send(server, "POST", f"/v1/models/results:{verb}", body)
    assert status == 200
    if "body_json_equal" in expected:
        assert _json(reply) == json.loads(expected["body_json_equal"])
    else:
        assert _json(reply) == _json(expected["body_text_tokens_equal"])


def _status_body_case(server, index, case):
    """``MakeJsonFromStatus``: checked on real error bodies with the same characters."""
    expected = case["expected_response_or_error"]
    if case["request"]["status"] == "OK":
        body = '{"instances": [1.0]}'
        status, _, reply = send(server, "POST", "/v1/models/half_plus_two:predict", body)
        assert status == 200 and b"error" not in reply
        return
    if '"' in json.loads(expected["body_json_equal"])["error"]:
        request = '{"signature_name": "foo", "instances": [1.0]}'
        message = 'Serving signature name: "foo" not found in signature def'
    else:
        request = '{"signature_name": ["x"], "instances": [1.0]}'
        message = "'signature_name' key must be a string value."
    status, _, body = send(server, "POST", "/v1/models/half_plus_two:predict", request)
    assert status == 400
    assert message in error_of(body)
    # rapidjson escapes double quotes and leaves single quotes alone.
    assert message.replace('"', '\\"') in body.decode()
    assert "\\'" not in body.decode()


# ----------------------------------------------------------------------------------------
# tfserving-exact-output-samples.txt, as JSON.


def _samples() -> dict[str, str]:
    parts = re.split(r"^=== (.+)$", SAMPLES, flags=re.MULTILINE)
    return {title: text.strip("\n") for title, text in zip(parts[1::2], parts[2::2], strict=True)}


SAMPLE_REQUESTS = {
    "row single output [3] (half_plus_three 1,2,5)": (
        "saved_model_half_plus_three:predict",
        '{"instances": [1.0, 2.0, 5.0]}',
    ),
    "row single output [2,2]": ("half_plus_two:predict", '{"instances": [[1.0, 2.0], [3.0, 4.0]]}'),
    "row two outputs": ("two_outputs:predict", '{"instances": [0]}'),
    "row zero batch": ("zero_batch:predict", '{"instances": [0]}'),
    "col single output [3]": ("saved_model_half_plus_three:predict", '{"inputs": [1.0, 2.0, 5.0]}'),
    "col two outputs": ("two_outputs:predict", '{"inputs": 0}'),
    "col scalar output": ("scalar:predict", '{"inputs": 0}'),
    "error": ("half:predict", '{"instances": [1.0, 5.0]}'),
    "error with quotes": ("half_plus_two:predict", '{"signature_name": "foo", "instances": [1]}'),
    "regress": (
        "saved_model_half_plus_three:regress",
        '{"signature_name": "tensorflow/serving/regress", "examples": [{"x": 1.0}, {"x": 2.0}]}',
    ),
    "classify": (
        "half_plus_two:classify",
        '{"signature_name": "classify_x_to_y", "examples": [{"x": 2.0}]}',
    ),
}


@pytest.mark.parametrize("title", sorted(SAMPLE_REQUESTS))
def test_sample_outputs_as_json(server, title):
    path, body = SAMPLE_REQUESTS[title]
    _, _, reply = send(server, "POST", f"/v1/models/{path}", body)
    assert _json(reply) == _json(_samples()[title])


def test_classify_sample_with_labels():
    """``classify 2``: two labelled classes per example (the JSON writer on its own)."""
    from serving.server import json_tensor

    results = [
        [(b"car", np.float32(0.2)), (b"bike", np.float32(0.7))],
        [(b"car", np.float32(0.7)), (b"bike", np.float32(0.1))],
    ]
    assert _json(json_tensor.classify_response(results)) == _json(_samples()["classify 2"])


def _json_number(text: str) -> str:
    return {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity", "-0": "-0.0"}.get(text, text)


@pytest.mark.parametrize("model,title", [("float_echo", "float32"), ("double_echo", "float64")])
def test_float_formatting_through_the_server(server, model, title):
    lines = _samples()[f"{title} formatting"].splitlines()
    pairs = [line.split(" -> ") for line in lines]
    body = '{"inputs": [' + ", ".join(_json_number(given) for given, _ in pairs) + "]}"
    status, _, reply = send(server, "POST", f"/v1/models/{model}:predict", body)
    assert status == 200
    # The same number as TF Serving writes, in float32 (resp. float64); NaN tokens as text.
    cast = np.float32 if title == "float32" else np.float64
    written = [v if isinstance(v, str) else cast(v) for v in _json(reply)["outputs"]]
    shown = [_json(text) for _, text in pairs]
    assert written == [v if isinstance(v, str) else cast(v) for v in shown]
