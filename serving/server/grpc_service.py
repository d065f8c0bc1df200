"""gRPC ``PredictionService`` and ``ModelService`` (``tensorflow_serving.apis`` stubs).

Codes and messages as TF Serving's ``prediction_service_impl.cc`` and
``model_service_impl.cc`` return them; the client deadline becomes the session
run timeout; messages over 1024 characters are cut as ``ToGRPCStatus`` does.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import grpc
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from serving import tensor_codec
from serving.server import inference
from serving.server.core import ServerCore
from serving.server.inference import InferenceContext
from serving.server.logs import get_logger
from serving.server.status import Code, ServingError, invalid_argument

log = get_logger()
_MESSAGE_LIMIT = 1024


def grpc_message(message: str) -> str:
    if len(message) > _MESSAGE_LIMIT:
        return message[:_MESSAGE_LIMIT] + "...TRUNCATED"
    return message


def _abort(context: grpc.ServicerContext, error: ServingError):
    context.abort(grpc.StatusCode[error.code.name], grpc_message(error.message))


def timeout_ms(context: grpc.ServicerContext, default_ms: int | None = None) -> int | None:
    """``DeadlineToTimeoutMillis``: the client's remaining deadline, else ``default_ms``."""
    remaining = context.time_remaining()
    if remaining is None or remaining > 10**9:
        return default_ms
    return max(int(remaining * 1000), 1)


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    """Predict, Classify, Regress, MultiInference and GetModelMetadata."""

    def __init__(
        self,
        core: ServerCore,
        context: InferenceContext,
        tensor_content: bool = False,
        default_timeout_ms: int | None = None,
    ) -> None:
        self.core = core
        self.context = context
        self.tensor_content = tensor_content
        self.default_timeout_ms = default_timeout_ms

    def _timeout_ms(self, context: grpc.ServicerContext) -> int | None:
        return timeout_ms(context, self.default_timeout_ms)

    def _call(self, api: str, request, context: grpc.ServicerContext, work: Callable):
        start = time.monotonic()
        model_name = request.model_spec.name if hasattr(request, "model_spec") else ""
        if api == "MultiInference" and request.tasks:
            model_name = request.tasks[0].model_spec.name
        try:
            response = work()
        except ServingError as error:
            self.context.metrics.request_count.increment(model_name, error.code.name)
            _abort(context, error)
        except Exception as error:  # noqa: BLE001 - never leak a Python traceback to clients
            log.exception("%s failed", api)
            self.context.metrics.request_count.increment(model_name, Code.INTERNAL.name)
            _abort(context, ServingError(Code.INTERNAL, f"{type(error).__name__}: {error}"))
        self.context.metrics.request_count.increment(model_name, Code.OK.name)
        self.context.metrics.request_latency.add(
            model_name, api, "GRPC", value=(time.monotonic() - start) * 1e6
        )
        return response

    def Predict(self, request: predict_pb2.PredictRequest, context):  # noqa: N802 - gRPC name
        def work():
            if not request.HasField("model_spec"):
                raise invalid_argument("Missing ModelSpec")
            with self.core.get_servable(request.model_spec) as servable:
                signature, outputs = inference.predict(
                    self.context,
                    servable,
                    request.model_spec.name,
                    request.model_spec.signature_name,
                    request.inputs,
                    request.output_filter,
                    self._timeout_ms(context),
                )
                version = servable.version
            response = predict_pb2.PredictResponse()
            response.model_spec.CopyFrom(
                inference.make_model_spec(request.model_spec.name, signature, version)
            )
            for alias, value in outputs.items():
                try:
                    tensor_codec.from_numpy(value, self.tensor_content, out=response.outputs[alias])
                except tensor_codec.TensorError as error:
                    raise ServingError(Code.INTERNAL, str(error)) from None
            return response

        return self._call("Predict", request, context, work)

    def Classify(self, request: classification_pb2.ClassificationRequest, context):  # noqa: N802
        return self._run_examples(
            "Classify", request, context, inference.classify,
            classification_pb2.ClassificationResponse, inference.classification_proto,
        )  # fmt: skip

    def Regress(self, request: regression_pb2.RegressionRequest, context):  # noqa: N802
        return self._run_examples(
            "Regress", request, context, inference.regress,
            regression_pb2.RegressionResponse, inference.regression_proto,
        )  # fmt: skip

    def _run_examples(self, api, request, context, run, response_class, to_proto):
        """Classify and Regress: run the signature on the request's tf.Examples."""

        def work():
            if not request.HasField("model_spec"):
                raise invalid_argument("Missing ModelSpec")
            spec = request.model_spec
            with self.core.get_servable(spec) as servable:
                results = run(
                    self.context,
                    servable,
                    spec.name,
                    spec.signature_name,
                    request.input,
                    self._timeout_ms(context),
                )
                version = servable.version
            response = response_class()
            response.model_spec.CopyFrom(
                inference.make_model_spec(spec.name, spec.signature_name, version)
            )
            response.result.CopyFrom(to_proto(results))
            return response

        return self._call(api, request, context, work)

    def MultiInference(self, request: inference_pb2.MultiInferenceRequest, context):  # noqa: N802
        def work():
            from tensorflow_serving.apis import model_pb2

            spec = request.tasks[0].model_spec if request.tasks else model_pb2.ModelSpec()
            with self.core.get_servable(spec) as servable:
                return inference.multi_inference(
                    self.context, servable, request, self._timeout_ms(context)
                )

        return self._call("MultiInference", request, context, work)

    def GetModelMetadata(self, request, context):  # noqa: N802
        try:
            inference.validate_metadata_request(request)
            with self.core.get_servable(request.model_spec) as servable:
                return inference.metadata_response(servable, request.model_spec.name)
        except ServingError as error:
            _abort(context, error)


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    """GetModelStatus and HandleReloadConfigRequest."""

    def __init__(self, core: ServerCore) -> None:
        self.core = core

    def GetModelStatus(self, request: get_model_status_pb2.GetModelStatusRequest, context):  # noqa: N802
        try:
            if not request.HasField("model_spec"):
                raise invalid_argument("Missing ModelSpec")
            version = None
            if request.model_spec.HasField("version"):
                version = request.model_spec.version.value
            response = get_model_status_pb2.GetModelStatusResponse()
            for number, status in self.core.model_status(request.model_spec.name, version):
                entry = response.model_version_status.add(version=number, state=status.state)
                entry.status.SetInParent()
                if status.error is not None:
                    entry.status.error_code = int(status.error.code)
                    entry.status.error_message = status.error.message
            return response
        except ServingError as error:
            _abort(context, error)

    def HandleReloadConfigRequest(  # noqa: N802
        self, request: model_management_pb2.ReloadConfigRequest, context
    ):
        response = model_management_pb2.ReloadConfigResponse()
        try:
            if request.config.WhichOneof("config") != "model_config_list":
                raise invalid_argument(
                    "ServerModelConfig type not supported by HandleReloadConfigRequest. Only "
                    "ModelConfigList is currently supported"
                )
            for index, config in enumerate(request.config.model_config_list.config):
                log.info(
                    "\nConfig entry\n\tindex : %d\n\tpath : %s\n\tname : %s\n\tplatform : %s",
                    index,
                    config.base_path,
                    config.name,
                    config.model_platform,
                )
            self.core.reload_config(request.config)
        except ServingError as error:
            log.error("ReloadConfig failed: %s", error.message)
            _abort(context, error)
        response.status.SetInParent()
        return response
