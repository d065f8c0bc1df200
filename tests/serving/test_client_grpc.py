"""ServingClient over gRPC against in-process fake PredictionService/ModelService servicers.

The fakes read requests with ``tf.make_ndarray`` and build replies with
``tf.make_tensor_proto``: TensorFlow's own tensor codecs are the reference.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from concurrent import futures
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import json_format
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from serving.client import (
    DeadlineExceededError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    PayloadTooLargeError,
    RetryPolicy,
    ServingClient,
    UnavailableError,
)
from serving.tensor_codec import string_tensor, to_numpy
from tests.serving.client_support import (
    big_photo_jpeg,
    classify_pixels,
    decode,
    embed_pixels,
    encode,
    solid,
)

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
FAST_RETRY = RetryPolicy(retries=3, initial_backoff=0.001, max_backoff=0.01)
COLOURS = {"red": (200, 10, 10), "green": (10, 200, 10), "blue": (10, 10, 200)}


class FakePredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    """Model ``vit``: the dominant colour is the label (see client_support.classify_pixels)."""

    def __init__(self) -> None:
        self.requests: list = []
        self.script: list[tuple[grpc.StatusCode, str]] = []
        self.hook = None
        self.lock = threading.Lock()

    def _enter(self, request, context):
        with self.lock:
            self.requests.append(request)
            canned = self.script.pop(0) if self.script else None
        if self.hook is not None:
            self.hook(request, context)
        if canned is not None:
            context.abort(*canned)
        if request.model_spec.name != "vit":
            context.abort(
                grpc.StatusCode.NOT_FOUND,
                f"Servable not found for request: Latest({request.model_spec.name})",
            )

    @staticmethod
    def _pixels(values, context):
        pixels = []
        for index, data in enumerate(values):
            try:
                pixels.append(decode(data))
            except ValueError as error:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"image {index}: {error}")
        return pixels

    def Predict(self, request, context):
        self._enter(request, context)
        signature = request.model_spec.signature_name or "serving_default"
        if signature not in ("serving_default", "embedding"):
            context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f'Serving signature key "{signature}" not found.',
            )
        pixels = self._pixels(tf.make_ndarray(request.inputs["image_bytes"]), context)
        response = predict_pb2.PredictResponse()
        response.model_spec.name = "vit"
        response.model_spec.signature_name = signature
        response.model_spec.version.value = 1
        if signature == "embedding":
            vectors = np.array([embed_pixels(p) for p in pixels], np.float32)
            response.outputs["embedding"].CopyFrom(tf.make_tensor_proto(vectors))
            return response
        rows = [classify_pixels(p) for p in pixels]
        outputs = {
            "label": np.array([r["label"].encode() for r in rows], dtype=object),
            "score": np.array([r["score"] for r in rows], np.float32),
            "top_k_labels": np.array([[x.encode() for x in r["top_k_labels"]] for r in rows]),
            "top_k_scores": np.array([r["top_k_scores"] for r in rows], np.float32),
            "probabilities": np.array([r["probabilities"] for r in rows], np.float32),
        }
        for name, value in outputs.items():
            response.outputs[name].CopyFrom(tf.make_tensor_proto(value))
        return response

    def Classify(self, request, context):
        self._enter(request, context)
        examples = request.input.example_list.examples
        images = [ex.features.feature["image/encoded"].bytes_list.value[0] for ex in examples]
        response = classification_pb2.ClassificationResponse()
        for pixels in self._pixels(images, context):
            row = classify_pixels(pixels)
            classes = response.result.classifications.add()
            for label, score in zip(row["top_k_labels"], row["top_k_scores"], strict=True):
                classes.classes.add(label=label, score=score)
        return response

    def GetModelMetadata(self, request, context):
        self._enter(request, context)
        reference = json.loads((SHARED_DATA / "half_plus_two_2_versions_metadata.json").read_text())
        signatures = get_model_metadata_pb2.SignatureDefMap()
        json_format.ParseDict(reference["metadata"]["signature_def"], signatures)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = reference["model_spec"]["name"]
        response.model_spec.version.value = int(reference["model_spec"]["version"])
        response.metadata["signature_def"].Pack(signatures)
        return response


class FakeModelService(model_service_pb2_grpc.ModelServiceServicer):
    def GetModelStatus(self, request, context):
        response = get_model_status_pb2.GetModelStatusResponse()
        available = response.model_version_status.add(version=2)
        available.state = get_model_status_pb2.ModelVersionStatus.AVAILABLE
        ended = response.model_version_status.add(version=1)
        ended.state = get_model_status_pb2.ModelVersionStatus.END
        ended.status.error_code = 9  # FAILED_PRECONDITION
        ended.status.error_message = "Could not load version 1"
        return response


@pytest.fixture(scope="module")
def grpc_server():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    prediction = FakePredictionService()
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(prediction, server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(FakeModelService(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield prediction, f"127.0.0.1:{port}"
    server.stop(grace=None)


@pytest.fixture
def fake(grpc_server):
    prediction, _ = grpc_server
    prediction.requests.clear()
    prediction.script.clear()
    prediction.hook = None
    return prediction


@pytest.fixture
def client(grpc_server, fake):
    with ServingClient(grpc_server[1], retry_policy=FAST_RETRY, timeout=10) as c:
        yield c


def test_predict_sends_a_tf_string_tensor_and_reads_tf_outputs(fake, client):
    images = [encode(solid(COLOURS[c])) for c in ("green", "red", "blue")]
    got = client.predict(images)
    assert [p.label for p in got] == ["green", "red", "blue"]
    expected = classify_pixels(solid(COLOURS["green"]))
    assert [label for label, _ in got[0].top_k] == expected["top_k_labels"]
    assert [score for _, score in got[0].top_k] == pytest.approx(expected["top_k_scores"])
    assert got[2].probabilities.shape == (3,)
    (request,) = fake.requests
    assert request.model_spec.name == "vit"
    assert request.model_spec.signature_name == "serving_default"
    assert not request.model_spec.HasField("version")
    assert list(tf.make_ndarray(request.inputs["image_bytes"])) == images


def test_batches_run_concurrently_and_keep_order(fake, grpc_server):
    lock = threading.Lock()
    state = {"in_flight": 0, "peak": 0}
    all_started = threading.Event()

    def hold(request, context):
        with lock:
            state["in_flight"] += 1
            state["peak"] = max(state["peak"], state["in_flight"])
            if state["in_flight"] >= 2:
                all_started.set()
        all_started.wait(timeout=20)
        with lock:
            state["in_flight"] -= 1

    fake.hook = hold
    colours = ["red", "green", "blue"]
    images = [solid(COLOURS[colours[i % 3]]) for i in range(11)]
    with ServingClient(grpc_server[1], batch_size=3, max_concurrency=2) as c:
        got = c.predict(images)
    assert [p.label for p in got] == [colours[i % 3] for i in range(11)]
    assert sorted(r.inputs["image_bytes"].tensor_shape.dim[0].size for r in fake.requests) == [
        2,
        3,
        3,
        3,
    ]
    assert state["peak"] == 2


def test_unavailable_is_retried(fake, client):
    fake.script = [(grpc.StatusCode.UNAVAILABLE, "Model labels does not init yet.")] * 2
    assert client.predict(solid(COLOURS["red"]))[0].label == "red"
    assert len(fake.requests) == 3


def test_invalid_argument_is_not_retried_but_narrowed_down(fake, client):
    with pytest.raises(InvalidArgumentError) as info:
        client.predict([encode(solid(COLOURS["red"])), b"not an image"])
    # This server's message names no input element: the request is split in halves to find
    # the bad image; no request is sent twice.
    sizes = [r.inputs["image_bytes"].tensor_shape.dim[0].size for r in fake.requests]
    assert sizes == [2, 1, 1]
    assert info.value.code == "INVALID_ARGUMENT" and info.value.http_status is None
    assert "Failed to decode image" in info.value.message and info.value.indices == [1]


def test_typed_errors_carry_the_server_text(grpc_server, fake, client):
    with pytest.raises(FailedPreconditionError) as info:
        client.predict(solid(COLOURS["red"]), signature_name="nope")
    assert info.value.message == 'Serving signature key "nope" not found.'
    with ServingClient(grpc_server[1], model_name="half", retry_policy=FAST_RETRY) as other:
        with pytest.raises(NotFoundError, match=r"Servable not found for request: Latest\(half\)"):
            other.predict(solid(COLOURS["red"]))
    assert len(fake.requests) == 2


def test_deadline_is_explicit_and_not_retried(fake, grpc_server):
    fake.hook = lambda request, context: threading.Event().wait(
        timeout=5 if context.is_active() else 0
    )
    with ServingClient(grpc_server[1], timeout=0.3, retry_policy=FAST_RETRY) as c:
        with pytest.raises(DeadlineExceededError):
            c.predict(solid(COLOURS["red"]))
    assert len(fake.requests) == 1


def test_nothing_listening_is_unavailable():
    with ServingClient("127.0.0.1:1", retry_policy=FAST_RETRY, timeout=5) as c:
        with pytest.raises(UnavailableError):
            c.predict(solid(COLOURS["red"]))


@pytest.mark.slow  # 5.5 s of waiting on the probe's reconnects
def test_waiting_reconnects_every_second_at_most_and_stops_when_done():
    """gRPC's default reconnect backoff (1 s, growing 1.6-fold to 2 minutes) tries three
    times in 4 s and would see a starting server up to 60% of the wait late; the wait's
    probe channel tries at least every 1.2 s, and is closed when the wait ends."""
    listener = socket.create_server(("127.0.0.1", 0))
    attempts = []

    def refuse_http2():  # accepts each TCP connection and closes it: a failed attempt
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            attempts.append(time.monotonic())
            connection.close()

    threading.Thread(target=refuse_http2, daemon=True).start()
    try:
        with ServingClient(f"127.0.0.1:{listener.getsockname()[1]}", timeout=10) as client:
            with pytest.raises(DeadlineExceededError, match="not available after 4 s; last: "):
                client.wait_until_available(timeout=4, poll_interval=0.1)
            tried = len(attempts)
            time.sleep(1.5)  # longer than the probe's longest backoff
            assert len(attempts) == tried, "the probe channel still reconnects after the wait"
    finally:
        listener.close()
    assert tried >= 6, [round(t - attempts[0], 2) for t in attempts]


def test_version_and_label_go_into_the_model_spec(fake, grpc_server):
    with ServingClient(grpc_server[1], version=7) as c:
        c.predict(solid(COLOURS["red"]))
    with ServingClient(grpc_server[1], version_label="canary") as c:
        c.predict(solid(COLOURS["red"]))
    first, second = fake.requests
    assert first.model_spec.version.value == 7
    assert second.model_spec.version_label == "canary"
    with pytest.raises(ValueError, match="not both"):
        ServingClient(grpc_server[1], version=1, version_label="canary")


def test_embed_classify_status_metadata(fake, client):
    images = [solid(COLOURS["blue"], (12, 3)), solid(COLOURS["green"], (5, 5))]
    vectors = client.embed(images)
    assert vectors.shape == (2, 4) and vectors[:, 3].tolist() == [36.0, 25.0]
    assert fake.requests[-1].model_spec.signature_name == "embedding"
    classes = client.classify(images)
    assert [row[0][0] for row in classes] == ["blue", "green"]
    assert fake.requests[-1].model_spec.signature_name == "classify"
    states = client.status()
    assert [(s.version, s.state, s.error_code) for s in states] == [
        (2, "AVAILABLE", "OK"),
        (1, "END", "FAILED_PRECONDITION"),
    ]
    assert states[1].error_message == "Could not load version 1"
    assert client.wait_until_available(timeout=5)[0].state == "AVAILABLE"


def test_grpc_metadata_equals_tf_serving_rest_json(client):
    """gRPC metadata is converted to exactly the JSON TF Serving's REST route returns."""
    path = SHARED_DATA / "half_plus_two_2_versions_metadata.json"
    if not path.exists():
        pytest.skip(f"TF Serving reference metadata not found at {path}")
    assert client.metadata() == json.loads(path.read_text())


def test_requests_stay_under_4_mib(fake, grpc_server):
    photo = big_photo_jpeg(quality=95)  # ~1.7 MB: two fit into 4 MiB, three do not
    with ServingClient(grpc_server[1], max_concurrency=1) as c:
        got = c.predict([photo] * 5)
    assert len(got) == 5
    sizes = [r.ByteSize() for r in fake.requests]
    assert len(sizes) == 3 and max(sizes) <= 4 * 1024 * 1024


def test_photo_over_the_limit_is_downscaled_or_refused(fake, grpc_server):
    photo = big_photo_jpeg(quality=95)
    limit = 1_000_000
    with ServingClient(grpc_server[1], max_request_bytes=limit) as c:
        (got,) = c.predict(photo)
    (request,) = fake.requests
    assert request.ByteSize() <= limit
    sent = decode(tf.make_ndarray(request.inputs["image_bytes"])[0])
    assert min(sent.shape[:2]) >= 224 and sent.shape[1] < 4000
    assert got.label == classify_pixels(decode(photo))["label"]
    with ServingClient(grpc_server[1], max_request_bytes=limit, downscale=False) as c:
        with pytest.raises(PayloadTooLargeError, match="downscale=False"):
            c.predict(photo)
    assert len(fake.requests) == 1


# TensorProto decoding, checked against TensorFlow's own make_tensor_proto / make_ndarray.
@pytest.mark.parametrize(
    "value",
    [
        np.array([[1.5, -2.25], [3.0, np.inf]], np.float32),
        np.array([1.0, 2.0], np.float64),
        np.array([[1, -2, 3]], np.int32),
        np.array([255, 0, 7], np.uint8),
        np.array([-5, 6], np.int8),
        np.array([-5, 6], np.int16),
        np.array([2**40, -3], np.int64),
        np.array([True, False]),
        np.array([1.5, -0.25], np.float16),
        np.array([[b"cat", b"\xff\x00dog"]], dtype=object),
        np.array(3.5, np.float32),
    ],
    ids=lambda v: f"{v.dtype}{list(v.shape)}",
)
def test_to_numpy_matches_tensorflow(value):
    packed = tf.make_tensor_proto(value)  # numbers as tensor_content
    expected = tf.make_ndarray(packed)
    got = to_numpy(packed)
    assert got.dtype == expected.dtype and got.shape == expected.shape
    assert got.tolist() == expected.tolist()
    if value.dtype != object:
        # The typed-field layout TF Serving's replies use (Tensor::AsProtoField).
        typed = tf.make_tensor_proto(
            value.reshape(-1).tolist(), dtype=tf.as_dtype(value.dtype), shape=value.shape
        )
        assert to_numpy(typed).tolist() == tf.make_ndarray(typed).tolist()


def test_short_typed_list_repeats_its_last_value_like_tensorflow():
    proto = tf.make_tensor_proto(7.0, dtype=tf.float32, shape=[2, 2])
    assert proto.float_val == [7.0]  # one value for four elements
    assert to_numpy(proto).tolist() == tf.make_ndarray(proto).tolist()


def test_string_tensor_equals_make_tensor_proto():
    values = [b"\x89PNG...", b"", b"jpeg"]
    reference = tf.make_tensor_proto(values, dtype=tf.string)
    # serving.protos' classes are not TensorFlow's: compare what goes on the wire.
    assert string_tensor(values).SerializeToString() == reference.SerializeToString()


def test_size_estimates_bound_the_real_protobuf_size():
    import random

    from serving.client.grpc_transport import GrpcTransport

    rng = random.Random(0)
    for version, label in [(None, None), (12345678901, None), (None, "canary-long-label")]:
        transport = GrpcTransport("127.0.0.1:1", "vit-model", version, label, None)
        try:
            for _ in range(20):
                sizes = [rng.choice([0, 5, 127, 128, 20_000, 300_000]) for _ in range(4)]
                images = [bytes(n) for n in sizes]
                request = predict_pb2.PredictRequest()
                transport._spec(request, "serving_default")
                request.inputs["image_bytes"].CopyFrom(tf.make_tensor_proto(images, tf.string))
                estimate = transport.predict_size("serving_default").request_bytes(sizes)
                assert request.ByteSize() <= estimate <= request.ByteSize() + 64 + 6 * len(sizes)
                classify = classification_pb2.ClassificationRequest()
                transport._spec(classify, "classify")
                for data in images:
                    example = classify.input.example_list.examples.add()
                    feature = example.features.feature["image/encoded"]
                    feature.bytes_list.value.append(data)
                estimate = transport.classify_size("classify").request_bytes(sizes)
                assert classify.ByteSize() <= estimate
        finally:
            transport.close()


def test_a_reply_too_large_to_decode_is_refused_not_allocated():
    """A reply whose shape its values cannot honestly fill is sized before it is decoded."""
    from serving import protos
    from serving.client import MalformedResponseError
    from serving.client.grpc_transport import GrpcTransport

    reply = protos.PredictResponse()
    huge = reply.outputs["score"]
    huge.dtype = protos.DataType.Value("DT_FLOAT")
    huge.tensor_shape.dim.add(size=2**40)  # 4 TiB of floats, from 4 bytes of values
    huge.float_val.append(1.0)
    transport = GrpcTransport("127.0.0.1:1", "vit", None, None, None)
    transport._predict = lambda request, timeout: reply
    try:
        with pytest.raises(MalformedResponseError, match="output 'score'"):
            transport.predict([b"x"], "serving_default", 5)
    finally:
        transport.close()
