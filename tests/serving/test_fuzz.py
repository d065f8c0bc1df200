"""Property-based fuzzing of what clients send (issue 10): REST bodies and TensorProtos.

Never a 5xx other than the documented ones (501 for an unsupported dtype, 503 when
every worker is busy, 504 on a timeout), never a crash, never an exception other
than the server's own error type. Every example is answered within
:data:`EXAMPLE_SECONDS` (a gRPC deadline past it fails the example). Over the run, the
server's process (it runs in this one) peaks at most :data:`RUN_PEAK` above its RSS
after start-up and keeps at most :data:`RUN_KEPT`, and it still answers a normal
request at the end. CI runs a few examples per property; ``make fuzz`` runs many
(``HYPOTHESIS_PROFILE=fuzz``).
"""

from __future__ import annotations

import http.client
import json
import os
import time
from pathlib import Path

import grpc
import numpy as np
import pytest

from tests.serving.half_plus_two import build_half_plus, build_string_model
from tests.serving.memory_bounds import MB, status_bytes

hypothesis = pytest.importorskip("hypothesis", reason="hypothesis is a dev requirement")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

settings.register_profile(
    "ci", max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "fuzz", max_examples=2000, deadline=None, suppress_health_check=list(HealthCheck)
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# The fuzz server's --max_request_elements: element-count shapes cross it cheaply.
MAX_ELEMENTS = 64
# Bounds: each example's answer, and the server's memory over the whole run.
EXAMPLE_SECONDS = 10.0
RUN_PEAK = 256 * MB  # measured: +8 MB over a CI run
RUN_KEPT = 128 * MB
DOCUMENTED_5XX = {501, 503, 504}
REST_STATUSES = {200, 400, 404, 413, 429} | DOCUMENTED_5XX
GRPC_ERRORS = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.UNIMPLEMENTED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}


@pytest.fixture(scope="module")
def server(tmp_path_factory, start_server):
    """The fuzz server, checked when the module's properties are done: alive (a normal
    request answered), and its memory within the run's bounds."""
    running = _start(tmp_path_factory, start_server)
    assert _post(running.rest_port, "/v1/models/half:predict", b'{"instances": [1.0]}')[0] == 200
    measured = Path("/proc/self/clear_refs").exists()
    if measured:
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM from here
        baseline = status_bytes("VmRSS")
    yield running
    status, reply = _post(running.rest_port, "/v1/models/half:predict", b'{"instances": [1.0]}')
    assert (status, json.loads(reply)) == (200, {"predictions": [2.5]})
    if measured:
        peak, kept = status_bytes("VmHWM") - baseline, status_bytes("VmRSS") - baseline
        print(f"fuzz run: peak +{peak / MB:.0f} MB, kept +{kept / MB:.0f} MB")
        assert peak < RUN_PEAK, f"peak +{peak / MB:.0f} MB"
        assert kept < RUN_KEPT, f"kept +{kept / MB:.0f} MB"


def _start(tmp_path_factory, start_server):
    root = tmp_path_factory.mktemp("fuzz_models")
    build_half_plus(root / "half" / "1")
    build_string_model(root / "strings" / "1")
    config = root / "models.config"
    config.write_text(
        "model_config_list {"
        + "".join(
            f' config {{ name: "{name}" base_path: "{root / name}" model_platform: "tensorflow" }}'
            for name in ("half", "strings")
        )
        + " }"
    )
    return start_server(
        model_config_file=str(config),
        file_system_poll_wait_seconds=0,
        max_request_tensor_bytes=16 * 1024 * 1024,
        rest_api_max_request_bytes=4 * 1024 * 1024,
        max_request_elements=MAX_ELEMENTS,
    )


# ----------------------------------------------------------------------------------------
# REST bodies.

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
    | st.builds(lambda text: {"b64": text}, st.text(max_size=12))
)
_json = st.recursive(
    _scalars,
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(
            st.sampled_from(["x", "b64", "inputs", "instances", "k"]), children, max_size=4
        )
    ),
    max_leaves=30,
)
_documents = st.fixed_dictionaries(
    {},
    optional={
        "instances": _json,
        "inputs": _json,
        "signature_name": st.sampled_from(["", "serving_default", "nope"]) | _scalars,
        "examples": _json,
        "context": _json,
    },
)


def _encode(value) -> bytes:
    return json.dumps(value, allow_nan=True).encode("utf-8", "surrogatepass")


_bodies = (
    _documents.map(_encode)
    | _json.map(_encode)
    | st.binary(max_size=200)
    | st.builds(lambda depth: b"[" * depth + b"]" * depth, st.integers(0, 300))
)


def _post(port: int, path: str, body: bytes) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=EXAMPLE_SECONDS)
    started = time.monotonic()
    try:
        connection.request("POST", path, body)
        response = connection.getresponse()
        answer = response.status, response.read()
    finally:
        connection.close()
    assert time.monotonic() - started < EXAMPLE_SECONDS
    return answer


def _grpc_predict(port: int, request):
    """Predict within :data:`EXAMPLE_SECONDS` (DEADLINE_EXCEEDED is not an accepted answer)."""
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        started = time.monotonic()
        try:
            return stub.Predict(request, timeout=EXAMPLE_SECONDS)
        finally:
            assert time.monotonic() - started < EXAMPLE_SECONDS


@given(
    body=_bodies,
    path=st.sampled_from(
        ["/v1/models/half:predict", "/v1/models/strings:predict", "/v1/models/half:classify",
         "/v1/models/half:regress"]
    ),
)  # fmt: skip
def test_rest_bodies(server, body, path):
    status, reply = _post(server.rest_port, path, body)
    assert status in REST_STATUSES, (status, reply[:300])
    answer = json.loads(reply, parse_constant=str)
    assert ("error" in answer) == (status != 200)


@given(body=_bodies)
def test_json_conversion_raises_only_serving_errors(body):
    from serving.server import json_tensor
    from serving.server.status import ServingError
    from serving.tensor_codec import DT_FLOAT, DT_INT32, DT_STRING

    for dtypes in ({"x": DT_FLOAT}, {"a": DT_STRING, "b": DT_INT32}):
        try:
            json_tensor.parse_predict_request(body, lambda _name, d=dtypes: d)
        except ServingError:
            pass
        try:
            json_tensor.parse_classify_regress_request(body)
        except ServingError:
            pass


# ----------------------------------------------------------------------------------------
# TensorProtos.

_DTYPES = list(range(0, 24))


@st.composite
def tensor_protos(draw):
    # TensorFlow's own class: the gRPC test puts it into tensorflow-serving-api's request.
    from tensorflow.core.framework import tensor_pb2

    proto = tensor_pb2.TensorProto(dtype=draw(st.sampled_from(_DTYPES)))
    dims = draw(st.lists(st.integers(-3, 2**40) | st.integers(0, 4), max_size=4))
    for size in dims:
        proto.tensor_shape.dim.add(size=size)
    proto.tensor_shape.unknown_rank = draw(st.booleans()) and draw(st.booleans())
    kind = draw(st.sampled_from(["content", "float", "int", "string", "int64", "half", "none"]))
    if kind == "content":
        proto.tensor_content = draw(st.binary(max_size=64))
    elif kind == "float":
        proto.float_val.extend(draw(st.lists(st.floats(width=32), max_size=8)))
    elif kind == "int":
        proto.int_val.extend(draw(st.lists(st.integers(-(2**31), 2**31 - 1), max_size=8)))
    elif kind == "string":
        proto.string_val.extend(draw(st.lists(st.binary(max_size=16), max_size=8)))
    elif kind == "int64":
        proto.int64_val.extend(draw(st.lists(st.integers(-(2**63), 2**63 - 1), max_size=8)))
    elif kind == "half":
        proto.half_val.extend(draw(st.lists(st.integers(0, 2**16 - 1), max_size=8)))
    return proto


@given(proto=tensor_protos())
def test_codec_decodes_or_raises_tensor_error(proto):
    from serving import tensor_codec

    limit = 1 << 20
    try:
        array = tensor_codec.to_numpy(proto, max_bytes=limit)
    except tensor_codec.TensorError:
        return
    assert list(array.shape) == [d.size for d in proto.tensor_shape.dim]
    assert tensor_codec.proto_nbytes(proto) <= limit
    if array.dtype != object and array.size:
        again = tensor_codec.to_numpy(tensor_codec.from_numpy(array))
        same = (again == array) | (np.isnan(again) & np.isnan(array) if array.dtype.kind in "fc"
                                   else False)  # fmt: skip
        assert np.all(same)


@given(proto=tensor_protos(), model=st.sampled_from([("half", "x"), ("strings", "image_bytes")]))
def test_grpc_tensor_protos(server, proto, model):
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model[0]
    request.inputs[model[1]].CopyFrom(proto)
    try:
        _grpc_predict(server.grpc_port, request)
    except grpc.RpcError as error:
        assert error.code() in GRPC_ERRORS, (error.code(), error.details())
        assert "[[{{" not in (error.details() or "")


# ----------------------------------------------------------------------------------------
# Element counts (issue 18): many strings, many tiny valid images, many instances.


def _tiny_image(fmt: str) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (1, 1), (200, 10, 10)).save(buffer, fmt)
    return buffer.getvalue()


_elements = st.sampled_from([b"x", b"", b"\xff\xd8\xff", "jpeg", "png"]).map(
    lambda e: _tiny_image(e.upper()) if isinstance(e, str) else e
)
_counts = st.integers(1, 3 * MAX_ELEMENTS) | st.sampled_from([MAX_ELEMENTS, MAX_ELEMENTS + 1])


@given(count=_counts, element=_elements, mixed=st.booleans())
def test_grpc_many_strings(server, count, element, mixed):
    from tensorflow_serving.apis import predict_pb2

    from serving import tensor_codec

    values = [element] * count
    if mixed:
        values[-1] = _tiny_image("JPEG")
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "strings"
    tensor_codec.string_tensor(values, out=request.inputs["image_bytes"])
    try:
        reply = _grpc_predict(server.grpc_port, request)
    except grpc.RpcError as error:
        assert error.code() in GRPC_ERRORS, (error.code(), error.details())
        if count > MAX_ELEMENTS:
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "--max_request_elements" in error.details()
        return
    assert count <= MAX_ELEMENTS
    assert len(reply.outputs["length"].int_val) == count


@given(count=_counts, element=_elements, row=st.booleans())
def test_rest_many_instances(server, count, element, row):
    import base64

    value = {"b64": base64.b64encode(element).decode()}
    document = {"instances": [value] * count} if row else {"inputs": [value] * count}
    status, reply = _post(server.rest_port, "/v1/models/strings:predict", _encode(document))
    assert status in REST_STATUSES, (status, reply[:300])
    answer = json.loads(reply)
    if count > MAX_ELEMENTS:
        assert status == 400 and "--max_request_elements" in answer["error"]
    elif status == 200:
        outputs = answer["predictions"] if row else answer["outputs"]["length"]
        assert len(outputs) == count


@given(count=st.integers(1, 3 * MAX_ELEMENTS), classify=st.booleans())
def test_rest_many_examples_and_numbers(server, count, classify):
    # Examples are elements; numbers are bounded by bytes, not counted.
    if classify:
        body = _encode({"signature_name": "regress_x_to_y", "examples": [{"x": 1.0}] * count})
        status, reply = _post(server.rest_port, "/v1/models/half:regress", body)
        assert status in REST_STATUSES, (status, reply[:300])
        assert (status == 400 and b"--max_request_elements" in reply) == (count > MAX_ELEMENTS)
        assert (status == 200) == (count <= MAX_ELEMENTS), reply[:300]
    else:
        body = _encode({"instances": [1.0] * count})
        status, reply = _post(server.rest_port, "/v1/models/half:predict", body)
        assert status == 200, reply[:300]
        assert len(json.loads(reply)["predictions"]) == count


@given(body=_bodies, limit=st.integers(0, 4))
def test_element_check_sees_requests_before_tensors(body, limit):
    from serving.server import json_tensor
    from serving.server.status import ServingError
    from serving.tensor_codec import DT_FLOAT, DT_STRING

    seen = []

    def check(count):
        seen.append(count)
        if count > limit:
            raise json_tensor.invalid_argument("too many")

    for dtypes in ({"x": DT_FLOAT}, {"a": DT_STRING, "b": DT_FLOAT}):
        try:
            json_tensor.parse_predict_request(body, lambda _name, d=dtypes: d, check)
        except ServingError:
            pass
        try:
            json_tensor.parse_classify_regress_request(body, check)
        except ServingError:
            pass
    assert all(isinstance(count, int) and count >= 0 for count in seen)
