"""gRPC API of the local server against TF Serving's documented codes and messages.

Reference: ``tfserving-protocol.md`` section 2 (from TF Serving's
``predict_util.cc``, ``server_core.cc``, ``get_model_status_impl.cc``,
``classifier.cc``...) and TF Serving's own metadata JSON for the half_plus_two model.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import json_format
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tensorflow.core.example import example_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from tests.serving.half_plus_two import build_half_plus, build_slow_model, build_string_model

MODEL = "half_plus_two"
SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


@pytest.fixture(scope="module")
def server(tmp_path_factory, start_server):
    root = tmp_path_factory.mktemp("grpc_models")
    build_half_plus(root / MODEL / "123")
    build_half_plus(root / MODEL / "124", b=3.0)
    build_string_model(root / "strings" / "1")
    build_slow_model(root / "slow" / "1")
    config = root / "models.config"
    config.write_text(
        f"""model_config_list {{
          config {{ name: "{MODEL}" base_path: "{root / MODEL}" model_platform: "tensorflow"
                   model_version_policy {{ all {{}} }}
                   version_labels {{ key: "stable" value: 123 }}
                   version_labels {{ key: "canary" value: 124 }} }}
          config {{ name: "strings" base_path: "{root / "strings"}" model_platform: "tensorflow" }}
          config {{ name: "slow" base_path: "{root / "slow"}" model_platform: "tensorflow" }}
        }}"""
    )
    return start_server(
        model_config_file=str(config),
        file_system_poll_wait_seconds=0,
        enable_grpc_healthcheck_service=True,
    )


@pytest.fixture(scope="module")
def channel(server):
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        yield channel


@pytest.fixture(scope="module")
def predictions(channel):
    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


@pytest.fixture(scope="module")
def models(channel):
    return model_service_pb2_grpc.ModelServiceStub(channel)


def predict_request(name=MODEL, x=((1.0,), (2.0,)), **spec) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    for key, value in spec.items():
        if key == "version":
            request.model_spec.version.value = value
        else:
            setattr(request.model_spec, key, value)
    if x is not None:
        request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array(x, np.float32)))
    return request


def rpc_error(call, request, **kwargs) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as raised:
        call(request, timeout=30, **kwargs)
    return raised.value


def test_predict_latest_version_and_echoed_model_spec(predictions):
    response = predictions.Predict(predict_request(), timeout=30)
    # Latest of 123 (b=2) and 124 (b=3) is 124.
    assert list(response.outputs["y"].float_val) == [3.5, 4.0]
    assert [d.size for d in response.outputs["y"].tensor_shape.dim] == [2, 1]
    assert not response.outputs["y"].tensor_content  # typed fields, as AsProtoField writes
    assert response.model_spec.name == MODEL
    assert response.model_spec.version.value == 124
    assert response.model_spec.signature_name == "serving_default"


@pytest.mark.parametrize(
    "spec,version", [({"version": 123}, 123), ({"version_label": "stable"}, 123)]
)
def test_predict_by_version_or_label(predictions, spec, version):
    response = predictions.Predict(predict_request(**spec), timeout=30)
    assert list(response.outputs["y"].float_val) == [2.5, 3.0]
    assert response.model_spec.version.value == version
    assert response.model_spec.version_label == ""  # a label is not echoed


ERRORS = [
    (predict_pb2.PredictRequest(), grpc.StatusCode.INVALID_ARGUMENT, "Missing ModelSpec"),
    (
        predict_request(name=""),
        grpc.StatusCode.INVALID_ARGUMENT,
        "ModelSpec has no name specified.",
    ),
    (
        predict_request(name="nope"),
        grpc.StatusCode.NOT_FOUND,
        "Servable not found for request: Latest(nope)",
    ),
    (
        predict_request(version=999),
        grpc.StatusCode.NOT_FOUND,
        f"Servable not found for request: Specific({MODEL}, 999)",
    ),
    (
        predict_request(version_label="nope"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "Unrecognized servable version label: nope",
    ),
    (
        predict_request(signature_name="foo"),
        grpc.StatusCode.FAILED_PRECONDITION,
        'Serving signature key "foo" not found.',
    ),
    (
        predict_request(x=None),
        grpc.StatusCode.INVALID_ARGUMENT,
        "input size does not match signature: 0!=1 len({}) != len({x}). Sent extra: {}. "
        "Missing but required: {x}.",
    ),
]


@pytest.mark.parametrize("request_,code,message", ERRORS)
def test_predict_errors(predictions, request_, code, message):
    error = rpc_error(predictions.Predict, request_)
    assert error.code() == code
    assert error.details() == message


def test_predict_input_errors(predictions):
    request = predict_request()
    request.inputs["z"].CopyFrom(request.inputs["x"])
    error = rpc_error(predictions.Predict, request)
    assert error.details() == (
        "input size does not match signature: 2!=1 len({x,z}) != len({x}). Sent extra: {z}. "
        "Missing but required: {}."
    )
    renamed = predict_request(x=None)
    renamed.inputs["z"].CopyFrom(request.inputs["x"])
    error = rpc_error(predictions.Predict, renamed)
    assert error.details() == (
        "Signature input alias: x(feed name: x:0) not found in request and no default value "
        "provided. Inputs expected to be in the request {x}, or default input alias set: "
    )
    wrong_type = predict_request(x=None)
    wrong_type.inputs["x"].CopyFrom(tf.make_tensor_proto([True]))
    error = rpc_error(predictions.Predict, wrong_type)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == "Expects arg[0] to be float but bool is provided"
    broken = predict_request(x=None)
    broken.inputs["x"].dtype = tf.float32.as_datatype_enum
    broken.inputs["x"].tensor_shape.dim.add(size=3)
    broken.inputs["x"].tensor_content = b"\x00" * 5  # 3 floats need 12 bytes
    assert rpc_error(predictions.Predict, broken).details() == "tensor parsing error: x"


def test_short_typed_list_repeats_its_last_value(predictions):
    request = predict_request(x=None)
    request.inputs["x"].dtype = tf.float32.as_datatype_enum
    request.inputs["x"].tensor_shape.dim.add(size=3)
    request.inputs["x"].float_val.extend([2.0])  # Tensor::FromProto fills with the last value
    response = predictions.Predict(request, timeout=30)
    assert list(response.outputs["y"].float_val) == [4.0, 4.0, 4.0]


def test_output_filter(predictions):
    request = predict_request()
    request.output_filter.append("y")
    assert list(predictions.Predict(request, timeout=30).outputs) == ["y"]
    request.output_filter[:] = ["z"]
    assert rpc_error(predictions.Predict, request).details() == (
        "output tensor alias not found in signature: z Outputs expected to be in the set {y}."
    )
    request.output_filter[:] = ["y", "y"]
    assert rpc_error(predictions.Predict, request).details() == "duplicate output tensor alias: y"


def test_string_input_and_bytes_output_travel_unchanged(predictions):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "strings"
    request.model_spec.signature_name = "length_only"
    data = [b"\xff\xd8 not utf-8 \x00", b""]
    request.inputs["image_bytes"].CopyFrom(tf.make_tensor_proto(data, dtype=tf.string))
    response = predictions.Predict(request, timeout=30)
    assert list(response.outputs["length"].int_val) == [len(d) for d in data]


def test_large_message_is_accepted(predictions):
    # Over gRPC's default 4 MiB limit; TF Serving sets the server's limit to INT32_MAX.
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "strings"
    request.model_spec.signature_name = "length_only"
    payload = b"x" * (5 * 1024 * 1024)
    request.inputs["image_bytes"].CopyFrom(tf.make_tensor_proto([payload], dtype=tf.string))
    assert list(predictions.Predict(request, timeout=60).outputs["length"].int_val) == [
        len(payload)
    ]


def _example(**features) -> example_pb2.Example:
    example = example_pb2.Example()
    for name, value in features.items():
        example.features.feature[name].float_list.value.append(value)
    return example


def test_regress_with_context_merges_features(predictions):
    request = regression_pb2.RegressionRequest()
    request.model_spec.name = MODEL
    request.model_spec.version.value = 123
    request.model_spec.signature_name = "regress_x_to_y"
    with_context = request.input.example_list_with_context
    with_context.context.CopyFrom(_example(x=10.0))
    with_context.examples.add()  # takes x from the context
    with_context.examples.add().CopyFrom(_example(x=20.0))  # its own x wins
    response = predictions.Regress(request, timeout=30)
    assert [r.value for r in response.result.regressions] == [7.0, 12.0]
    assert response.model_spec.signature_name == "regress_x_to_y"
    assert response.model_spec.version.value == 123


def test_classify_and_its_errors(predictions):
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = MODEL
    request.model_spec.version_label = "stable"
    request.model_spec.signature_name = "classify_x_to_y"
    request.input.example_list.examples.add().CopyFrom(_example(x=20.0))
    response = predictions.Classify(request, timeout=30)
    [classes] = response.result.classifications
    assert [(c.label, c.score) for c in classes.classes] == [("", 12.0)]
    request.model_spec.signature_name = "foo"
    error = rpc_error(predictions.Classify, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == "No signature was found with the name: foo"
    request.model_spec.signature_name = "classify_x_to_y"
    request.input.Clear()
    assert rpc_error(predictions.Classify, request).details() == "Input is empty."
    assert (
        rpc_error(predictions.Classify, classification_pb2.ClassificationRequest()).details()
        == "Missing ModelSpec"
    )


def test_long_messages_are_truncated_like_tf_serving(predictions):
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = MODEL
    request.model_spec.signature_name = "s" * 2000
    details = rpc_error(predictions.Classify, request).details()
    assert (
        details == ("No signature was found with the name: " + "s" * 2000)[:1024] + "...TRUNCATED"
    )


def test_multi_inference_runs_several_heads(predictions):
    request = inference_pb2.MultiInferenceRequest()
    for method, signature in (("classify", "classify_x_to_y"), ("regress", "regress_x_to_y2")):
        task = request.tasks.add(method_name=f"tensorflow/serving/{method}")
        task.model_spec.name = MODEL
        task.model_spec.version.value = 123
        task.model_spec.signature_name = signature
    request.input.example_list.examples.add().CopyFrom(_example(x=4.0))
    response = predictions.MultiInference(request, timeout=30)
    classify, regress = response.results
    assert classify.classification_result.classifications[0].classes[0].score == 4.0  # 0.5x+2
    assert regress.regression_result.regressions[0].value == 5.0  # 0.5x+3
    assert regress.model_spec.signature_name == "regress_x_to_y2"


def test_metadata_is_tf_servings_signature_def_map(predictions):
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = MODEL
    request.model_spec.version.value = 123
    response = predictions.GetModelMetadata(request, timeout=30)
    any_value = response.metadata["signature_def"]
    assert any_value.type_url == "type.googleapis.com/tensorflow.serving.SignatureDefMap"
    signatures = get_model_metadata_pb2.SignatureDefMap()
    assert any_value.Unpack(signatures)
    reference = json.loads((SHARED_DATA / "half_plus_two_2_versions_metadata.json").read_text())
    actual = json_format.MessageToDict(
        signatures, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    assert actual == reference["metadata"]["signature_def"]
    assert response.model_spec.version.value == 123
    assert response.model_spec.signature_name == ""


def test_metadata_errors(predictions):
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = MODEL
    assert rpc_error(predictions.GetModelMetadata, request).details() == (
        "GetModelMetadataRequest must specify at least one metadata_field"
    )
    request.metadata_field.append("foo")
    assert rpc_error(predictions.GetModelMetadata, request).details() == (
        "Metadata field foo is not supported"
    )


def test_model_status(models):
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = MODEL
    response = models.GetModelStatus(request, timeout=30)
    assert [(s.version, s.state) for s in response.model_version_status] == [
        (124, get_model_status_pb2.ModelVersionStatus.AVAILABLE),
        (123, get_model_status_pb2.ModelVersionStatus.AVAILABLE),
    ]
    request.model_spec.version.value = 7
    error = rpc_error(models.GetModelStatus, request)
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert error.details() == f"Could not find version 7 of model {MODEL}"
    request.model_spec.Clear()
    error = rpc_error(models.GetModelStatus, request)
    assert (error.code(), error.details()) == (
        grpc.StatusCode.NOT_FOUND,
        "Could not find any versions of model ",
    )


def test_health_service_reports_serving(channel):
    stub = health_pb2_grpc.HealthStub(channel)
    for service in ("", "tensorflow.serving.PredictionService", "tensorflow.serving.ModelService"):
        response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=30)
        assert response.status == health_pb2.HealthCheckResponse.SERVING


def test_deadline_stops_the_run_and_spares_other_requests(predictions):
    slow = predict_pb2.PredictRequest()
    slow.model_spec.name = "slow"
    slow.inputs["iterations"].CopyFrom(tf.make_tensor_proto(10**9, dtype=tf.int64))
    outcome = {}

    def run_slow():
        try:
            predictions.Predict(slow, timeout=0.5)
        except grpc.RpcError as error:
            outcome["code"] = error.code()

    thread = threading.Thread(target=run_slow)
    thread.start()
    fast = predictions.Predict(predict_request(version=123), timeout=30)
    thread.join(60)
    assert outcome["code"] == grpc.StatusCode.DEADLINE_EXCEEDED
    assert list(fast.outputs["y"].float_val) == [2.5, 3.0]
    # The server is still healthy after the timed-out run.
    assert list(
        predictions.Predict(predict_request(version=123), timeout=30).outputs["y"].float_val
    )
