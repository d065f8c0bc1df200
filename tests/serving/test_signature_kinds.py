"""Classify, Regress and MultiInference on a signature of another kind, over gRPC and REST.

The expected codes and messages come from TF Serving's source, not from this server:
``servables/tensorflow/classifier.cc`` (``PreProcessClassification``), ``regressor.cc``
(``PreProcessRegression``) and ``multi_inference.cc`` (``TensorFlowMultiInferenceRunner::Infer``)
at the commit named in ``tfserving-cases.json``. Since TF Serving 2.4 (commit b724ceda, "Add
support for serving regress/classify (native) TF2 models", which changed
``classifier_test.cc``/``regressor_test.cc`` to expect it) every such mismatch is
INVALID_ARGUMENT; before, the missing input/output checks answered FAILED_PRECONDITION.
With ``--enable_signature_method_name_check`` the method name is checked first, also
INVALID_ARGUMENT. REST maps both codes to HTTP 400 and puts the message in ``"error"``.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import grpc
import pytest
from tensorflow.core.example import example_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    inference_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from tests.serving.half_plus_two import build_half_plus

MODEL = "half_plus_two"
CLASSIFY = "tensorflow/serving/classify"
REGRESS = "tensorflow/serving/regress"
PREDICT = "tensorflow/serving/predict"

# (what is called, signature, message start) with the method-name check off (the default).
# half_plus_two: serving_default {x} -> {y} (predict), classify_x_to_y {inputs} -> {scores},
# regress_x_to_y {inputs} -> {outputs}.
MISMATCHES = [
    ("classify", "regress_x_to_y", 'Expected classification signature outputs to contain at '
     'least one of "classes" or "scores". Signature was: '),
    ("classify", "serving_default", "No classification inputs found in SignatureDef: "),
    ("regress", "classify_x_to_y", "No regression outputs found in SignatureDef: "),
    ("regress", "serving_default", "No regression inputs found in SignatureDef: "),
]  # fmt: skip
METHOD_OF = {
    "serving_default": PREDICT,
    "classify_x_to_y": CLASSIFY,
    "regress_x_to_y": REGRESS,
}
KIND = {"classify": "classification", "regress": "regression"}


@pytest.fixture(scope="module")
def servers(tmp_path_factory, start_server):
    base = tmp_path_factory.mktemp("kinds") / MODEL
    build_half_plus(base / "1")
    plain = start_server(model_name=MODEL, model_base_path=str(base))
    checked = start_server(
        model_name=MODEL, model_base_path=str(base), enable_signature_method_name_check=True
    )
    return {False: plain, True: checked}


def _example(x: float) -> example_pb2.Example:
    example = example_pb2.Example()
    example.features.feature["x"].float_list.value.append(x)
    return example


def _grpc(server, verb: str, signature: str) -> grpc.RpcError | None:
    request = (
        classification_pb2.ClassificationRequest()
        if verb == "classify"
        else regression_pb2.RegressionRequest()
    )
    request.model_spec.name = MODEL
    request.model_spec.signature_name = signature
    request.input.example_list.examples.add().CopyFrom(_example(1.0))
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        call = stub.Classify if verb == "classify" else stub.Regress
        try:
            call(request, timeout=30)
        except grpc.RpcError as error:
            return error
    return None


def _multi(server, tasks: list[tuple[str, str]]):
    request = inference_pb2.MultiInferenceRequest()
    for method, signature in tasks:
        task = request.tasks.add(method_name=method)
        task.model_spec.name = MODEL
        task.model_spec.signature_name = signature
    request.input.example_list.examples.add().CopyFrom(_example(1.0))
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        try:
            return stub.MultiInference(request, timeout=30)
        except grpc.RpcError as error:
            return error


def _rest(server, verb: str, signature: str) -> tuple[int, dict]:
    body = json.dumps({"signature_name": signature, "examples": [{"x": 1.0}]}).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{server.rest_port}/v1/models/{MODEL}:{verb}", data=body, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.mark.parametrize("verb,signature,message", MISMATCHES)
def test_mismatched_kind_is_invalid_argument_over_grpc(servers, verb, signature, message):
    error = _grpc(servers[False], verb, signature)
    assert error is not None and error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith(message)
    assert f'method_name: "{METHOD_OF[signature]}"' in error.details()  # the DebugString


@pytest.mark.parametrize("verb,signature,message", MISMATCHES)
def test_mismatched_kind_is_http_400_over_rest(servers, verb, signature, message):
    status, body = _rest(servers[False], verb, signature)
    assert status == 400
    assert body["error"].startswith(message)


@pytest.mark.parametrize("verb,signature,_", MISMATCHES)
@pytest.mark.parametrize("transport", ["grpc", "rest"])
def test_with_the_method_name_check_the_method_name_is_blamed(
    servers, verb, signature, _, transport
):
    expected = (
        f"Expected {KIND[verb]} signature method_name to be tensorflow/serving/{verb}. "
        f"Was: {METHOD_OF[signature]}"
    )
    if transport == "grpc":
        error = _grpc(servers[True], verb, signature)
        assert error is not None and error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error.details() == expected
    else:
        assert _rest(servers[True], verb, signature) == (400, {"error": expected})


@pytest.mark.parametrize("verb,signature,message", MISMATCHES)
@pytest.mark.parametrize("checked", [False, True])
def test_multi_inference_mismatches_are_invalid_argument(
    servers, verb, signature, message, checked
):
    method = CLASSIFY if verb == "classify" else REGRESS
    # A good task first: the mismatched one must still fail the whole request.
    good = (REGRESS, "regress_x_to_y") if verb == "classify" else (CLASSIFY, "classify_x_to_y")
    tasks = [(method, signature)]
    if signature != good[1]:  # a signature may appear once per request
        tasks.insert(0, good)
    error = _multi(servers[checked], tasks)
    assert isinstance(error, grpc.RpcError)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    if checked:
        assert error.details() == (
            f"Expected {KIND[verb]} signature method_name to be {method}. "
            f"Was: {METHOD_OF[signature]}"
        )
    else:
        assert error.details().startswith(message)


@pytest.mark.parametrize("checked", [False, True])
def test_multi_inference_predict_task_is_unimplemented(servers, checked):
    error = _multi(servers[checked], [(PREDICT, "serving_default")])
    assert isinstance(error, grpc.RpcError)
    assert error.code() == grpc.StatusCode.UNIMPLEMENTED
    assert error.details() == f"Unsupported signature method_name: {PREDICT}"


@pytest.mark.parametrize("checked", [False, True])
def test_matching_kinds_still_answer(servers, checked):
    assert _grpc(servers[checked], "classify", "classify_x_to_y") is None
    assert _grpc(servers[checked], "regress", "regress_x_to_y") is None
    assert _rest(servers[checked], "regress", "regress_x_to_y") == (
        200,
        {"results": [2.5]},
    )
    response = _multi(
        servers[checked], [(CLASSIFY, "classify_x_to_y"), (REGRESS, "regress_x_to_y")]
    )
    assert [r.regression_result.regressions[0].value for r in response.results[1:]] == [2.5]
