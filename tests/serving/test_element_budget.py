"""Requests small in bytes but large in elements (issue 18): refused before any work.

A request's memory and time follow its elements, not its bytes: each string is
an element the exported decode graph works on. The server counts the string
elements (``--max_request_elements``) and estimates the decode cost
(``--max_decode_bytes_in_flight``, one budget shared by every request in flight)
before running anything. Each case must be answered within 5 s with the server's
RSS bounded (measured on this process, where the server runs, as
``test_abuse.py`` does); the timed numbers are in ``benchmarks/abuse.py --elements``.
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import os
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from PIL import Image
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from serving import tensor_codec
from serving.server import admission
from serving.server.status import Code, ServingError
from tests.serving.memory_bounds import Memory


def _image(fmt: str, size=(1, 1), **options) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (30, 120, 200)).save(buffer, fmt, **options)
    return buffer.getvalue()


# ----------------------------------------------------------------------------------------
# Header sizes, read without decoding: PIL's reading of the same files is the reference.


@pytest.mark.parametrize(
    "fmt, options",
    [
        ("JPEG", {}),
        ("JPEG", {"progressive": True}),
        ("JPEG", {"exif": b"Exif\x00\x00" + b"\x00" * 4000}),
        ("PNG", {}),
        ("GIF", {}),
        ("BMP", {}),
        ("WEBP", {}),
        ("WEBP", {"lossless": True}),
    ],
)
@pytest.mark.parametrize("size", [(1, 1), (37, 5), (640, 480)])
def test_header_pixels_match_pil(fmt, options, size):
    data = _image(fmt, size, **options)
    width, height = Image.open(io.BytesIO(data)).size
    assert admission.image_pixels(data) == width * height


def test_header_pixels_of_base64_text_and_non_images():
    png = _image("PNG", (20, 10))
    assert admission.image_pixels(base64.b64encode(png)) == 200
    assert admission.image_pixels(b"data:image/png;base64," + base64.urlsafe_b64encode(png)) == 200
    assert admission.image_pixels(b"x") == 0
    assert admission.image_pixels(b"") == 0
    assert admission.image_pixels(b"hello, world, not an image") == 0
    # A JPEG cut before its frame header: unknown, charged as the largest accepted image.
    assert admission.image_pixels(_image("JPEG")[:30]) is None


def test_estimate_counts_elements_model_images_and_decoded_pixels():
    inputs = admission.ImageInputs((32, 32), 1000, 1500, frozenset({"serving_default"}))
    big = _image("PNG", (30, 30))  # 900 pixels each; at most 1500 per request decode
    strings = {"image_bytes": np.array([big] * 3 + [b"x"], dtype=object)}
    cost = admission.estimate(inputs, "serving_default", strings=strings)
    assert cost.elements == 4
    assert cost.decoded_pixels == 1500
    per_element = admission.ELEMENT_BYTES + 3 * 32 * 32 * 3 * 4
    assert cost.nbytes == 4 * per_element + 1500 * admission.DECODED_PIXEL_BYTES
    # Another signature (pixels in, no decoding) and another model: elements only.
    assert admission.estimate(inputs, "serving_pixels", strings=strings).decoded_pixels == 0
    assert admission.estimate(None, "x", strings=strings).nbytes == 4 * admission.ELEMENT_BYTES


def test_budget_is_shared_waits_then_refuses():
    budget = admission.CostBudget(
        max_request_elements=10, max_bytes_in_flight=100, wait_seconds=0.3
    )
    with pytest.raises(ServingError) as refused:
        budget.check_elements(11)
    assert refused.value.code == Code.INVALID_ARGUMENT
    assert "--max_request_elements" in refused.value.message and "11" in refused.value.message
    with pytest.raises(ServingError) as too_big:
        with budget.hold(admission.Cost(1, 101)):
            pass
    assert too_big.value.code == Code.INVALID_ARGUMENT
    assert "--max_decode_bytes_in_flight" in too_big.value.message
    with budget.hold(admission.Cost(1, 60)):
        start = time.monotonic()
        with pytest.raises(ServingError) as busy:
            with budget.hold(admission.Cost(1, 60)):
                pass
        assert busy.value.code == Code.RESOURCE_EXHAUSTED
        assert time.monotonic() - start >= 0.3
        with budget.hold(admission.Cost(1, 40)):  # still fits beside the first
            assert budget.used == 100
    assert budget.used == 0
    # A waiting request gets in when the holder leaves.
    entered = []
    holding = budget.hold(admission.Cost(1, 100))
    holding.__enter__()

    def second():
        with budget.hold(admission.Cost(1, 100)):
            entered.append(time.monotonic())

    thread = threading.Thread(target=second)
    thread.start()
    time.sleep(0.1)
    assert not entered
    holding.__exit__(None, None, None)
    thread.join(5)
    assert entered and budget.used == 0


# ----------------------------------------------------------------------------------------
# The server, serving a tiny keras-vit export.

pytestmark_linux = pytest.mark.skipif(
    not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc to measure memory"
)


@pytest.fixture(scope="module")
def export_base(tmp_path_factory) -> Path:
    from keras_vit import ViTClassifier
    from serving.export import export_saved_model

    model = ViTClassifier(
        image_size=32, patch_size=8, num_layers=1, num_heads=2, hidden_dim=16, mlp_dim=32,
        num_classes=3, labels=["a", "b", "c"],
    )  # fmt: skip
    base = tmp_path_factory.mktemp("element_budget") / "vit"
    export_saved_model(model, base)
    return base


@pytest.fixture(scope="module")
def server(export_base, start_server):
    # The element limit above 20,000 so that the decode-cost estimate refuses that many PNGs.
    return start_server(
        model_name="vit",
        model_base_path=str(export_base),
        max_request_elements=50_000,
        enable_model_warmup=False,
    )


@pytest.fixture(scope="module")
def stub(server):
    with grpc.insecure_channel(
        f"127.0.0.1:{server.grpc_port}", options=[("grpc.max_send_message_length", 2**30)]
    ) as channel:
        yield prediction_service_pb2_grpc.PredictionServiceStub(channel)


def _request(values: list[bytes]) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "vit"
    tensor_codec.string_tensor(values, out=request.inputs["image_bytes"])
    return request


def _predict_error(stub, request) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as raised:
        stub.Predict(request, timeout=60)
    return raised.value


def _post(port: int, body: bytes, path: str = "/v1/models/vit:predict"):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.request("POST", path, body, {"Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def test_a_normal_request_still_runs(stub, server):
    reply = stub.Predict(_request([_image("PNG", (40, 30)), _image("JPEG", (8, 8))]), timeout=60)
    assert tensor_codec.to_numpy(reply.outputs["top_k_scores"]).shape[0] == 2
    assert server.context.costs.used == 0


@pytestmark_linux
def test_grpc_100k_one_byte_strings(stub):
    request = _request([b"x"] * 100_000)
    with Memory() as memory:
        error = _predict_error(stub, request)
    memory.check()
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "100000 elements" in error.details()
    assert "--max_request_elements" in error.details() or "--max_decode_bytes" in error.details()


@pytestmark_linux
def test_rest_100k_b64_instances(server):
    body = json.dumps({"instances": [{"b64": "eA=="}] * 100_000}).encode()
    with Memory() as memory:
        status, answer = _post(server.rest_port, body)
    memory.check()
    assert status == 400
    assert list(answer) == ["error"]  # TF Serving's error body
    assert "--max_request_elements" in answer["error"] and "100000" in answer["error"]


@pytestmark_linux
def test_grpc_20k_valid_png_four_at_once(stub):
    request = _request([_image("PNG")] * 20_000)
    errors = []

    def attack():
        errors.append(_predict_error(stub, request))

    with Memory() as memory:
        threads = [threading.Thread(target=attack) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    memory.check()
    assert [e.code() for e in errors] == [grpc.StatusCode.INVALID_ARGUMENT] * 4
    details = errors[0].details()
    assert "20000 elements" in details and "--max_decode_bytes_in_flight" in details


def test_rest_waits_for_its_share_then_gets_429(server):
    costs = server.context.costs
    body = json.dumps({"instances": [{"b64": base64.b64encode(_image("PNG")).decode()}]})
    wait = costs.wait_seconds
    costs.wait_seconds = 0.3
    try:
        with costs.hold(admission.Cost(1, costs.limit)):  # the whole budget is in flight
            status, answer = _post(server.rest_port, body.encode())
    finally:
        costs.wait_seconds = wait
    assert status == 429
    assert "--max_decode_bytes_in_flight" in answer["error"]
    assert _post(server.rest_port, body.encode())[0] == 200


@pytestmark_linux
def test_the_decode_graph_alone_holds_no_memory_per_refused_element(export_base, start_server):
    # No admission limits: the exported graph itself refuses 100,000 non-images from
    # the batch-wide checks, without a per-element header read or pixel tensor.
    server = start_server(
        model_name="vit",
        model_base_path=str(export_base),
        max_request_elements=0,
        max_decode_bytes_in_flight=0,
        enable_model_warmup=False,
    )
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        request = _request([b"x"] * 100_000)
        stub.Predict(_request([_image("PNG")]), timeout=60)  # the graph's first run
        with Memory() as memory:
            error = _predict_error(stub, request)
    memory.check()
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "image_bytes[0]: not a JPEG, PNG, GIF, BMP or WebP image" in error.details()


@pytestmark_linux
def test_grpc_classify_20k_image_examples(stub, server):
    from tensorflow.core.example import example_pb2
    from tensorflow_serving.apis import classification_pb2

    example = example_pb2.Example()
    example.features.feature[admission.EXAMPLE_FEATURE].bytes_list.value.append(_image("PNG"))
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "vit"
    request.model_spec.signature_name = "classify"
    request.input.example_list.examples.extend([example] * 20_000)
    with Memory() as memory:
        with pytest.raises(grpc.RpcError) as raised:
            stub.Classify(request, timeout=60)
    memory.check()
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "20000 elements" in raised.value.details()
    assert "--max_decode_bytes_in_flight" in raised.value.details()


def test_server_takes_large_tensors_from_the_c_heap(monkeypatch):
    from serving.server import memory

    monkeypatch.delenv("TF_ONEDNN_USE_SYSTEM_ALLOCATOR", raising=False)
    memory.use_system_allocator()
    assert os.environ["TF_ONEDNN_USE_SYSTEM_ALLOCATOR"] == "1"
    monkeypatch.setenv("TF_ONEDNN_USE_SYSTEM_ALLOCATOR", "0")  # the operator's choice wins
    memory.use_system_allocator()
    assert os.environ["TF_ONEDNN_USE_SYSTEM_ALLOCATOR"] == "0"


@pytestmark_linux
def test_grpc_100k_one_pixel_images_to_the_pixels_signature(stub):
    # 300 KB of uint8, but 100,000 model-input images once resized (1.2 GB of float32).
    def request(images: np.ndarray) -> predict_pb2.PredictRequest:
        message = predict_pb2.PredictRequest()
        message.model_spec.name = "vit"
        message.model_spec.signature_name = "serving_pixels"
        tensor_codec.from_numpy(images, out=message.inputs["images"])
        return message

    reply = stub.Predict(request(np.zeros([2, 8, 8, 3], np.uint8)), timeout=60)
    assert tensor_codec.to_numpy(reply.outputs["top_k_scores"]).shape[0] == 2
    for count, flag in ((100_000, "--max_request_elements"), (20_000, "--max_decode_bytes")):
        with Memory() as memory:
            error = _predict_error(stub, request(np.zeros([count, 1, 1, 3], np.uint8)))
        memory.check()
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert f"{count} elements" in error.details() and flag in error.details()
