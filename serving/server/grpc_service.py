"""gRPC ``PredictionService`` and ``ModelService`` (``tensorflow_serving.apis`` stubs) on
``grpc.aio``.

Codes and messages as TF Serving's ``prediction_service_impl.cc`` and
``model_service_impl.cc`` return them; the client deadline becomes the session
run timeout; messages over 1024 characters are cut as ``ToGRPCStatus`` does.
The handlers are coroutines on the server's loop (:mod:`loop`); the work of each
call runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import grpc
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_management_pb2,
    model_pb2,
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
from serving.server.loop import Workers
from serving.server.status import Code, ServingError, invalid_argument

log = get_logger()
_MESSAGE_LIMIT = 1024


def grpc_message(message: str) -> str:
    if len(message) > _MESSAGE_LIMIT:
        return message[:_MESSAGE_LIMIT] + "...TRUNCATED"
    return message


class _Calls:
    """Runs a call's work in a worker thread; a :class:`ServingError` becomes its status."""

    def __init__(self, core: ServerCore, workers: Workers, context: InferenceContext | None):
        self.core = core
        self.workers = workers
        self.context = context

    async def _run(self, grpc_context, work: Callable, api: str = "", model_name: str = ""):
        """With an ``api``, the call is counted in the request metrics."""
        start = time.monotonic()
        try:
            response = await asyncio.get_running_loop().run_in_executor(self.workers, work)
        except ServingError as error:
            failure = error
        except Exception as error:  # noqa: BLE001 - never leak a Python traceback to clients
            log.exception("%s failed", api or "gRPC call")
            failure = ServingError(Code.INTERNAL, f"{type(error).__name__}: {error}")
        else:
            if api:
                self.context.metrics.request_count.increment(model_name, Code.OK.name)
                self.context.metrics.request_latency.add(
                    model_name, api, "GRPC", value=(time.monotonic() - start) * 1e6
                )
            return response
        if api:
            self.context.metrics.request_count.increment(model_name, failure.code.name)
        await grpc_context.abort(grpc.StatusCode[failure.code.name], grpc_message(failure.message))


class PredictionService(_Calls, prediction_service_pb2_grpc.PredictionServiceServicer):
    """Predict, Classify, Regress, MultiInference and GetModelMetadata."""

    def __init__(
        self,
        core: ServerCore,
        context: InferenceContext,
        workers: Workers,
        tensor_content: bool = False,
        default_timeout_ms: int | None = None,
    ) -> None:
        super().__init__(core, workers, context)
        self.tensor_content = tensor_content
        self.default_timeout_ms = default_timeout_ms

    def _timeout(self, grpc_context) -> Callable[[], int | None]:
        """``DeadlineToTimeoutMillis``, read when the run starts: the client's remaining
        deadline, else the default."""
        remaining = grpc_context.time_remaining()
        if remaining is None or remaining > 10**9:
            return lambda: self.default_timeout_ms
        end = time.monotonic() + remaining
        return lambda: max(int((end - time.monotonic()) * 1000), 1)

    async def Predict(self, request: predict_pb2.PredictRequest, context):  # noqa: N802 - gRPC name
        timeout = self._timeout(context)

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
                    timeout(),
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

        return await self._run(context, work, "Predict", request.model_spec.name)

    async def Classify(self, request: classification_pb2.ClassificationRequest, context):  # noqa: N802
        return await self._run_examples(
            "Classify", request, context, inference.classify,
            classification_pb2.ClassificationResponse, inference.classification_proto,
        )  # fmt: skip

    async def Regress(self, request: regression_pb2.RegressionRequest, context):  # noqa: N802
        return await self._run_examples(
            "Regress", request, context, inference.regress,
            regression_pb2.RegressionResponse, inference.regression_proto,
        )  # fmt: skip

    async def _run_examples(self, api, request, context, run, response_class, to_proto):
        """Classify and Regress: run the signature on the request's tf.Examples."""
        timeout = self._timeout(context)

        def work():
            if not request.HasField("model_spec"):
                raise invalid_argument("Missing ModelSpec")
            spec = request.model_spec
            with self.core.get_servable(spec) as servable:
                results = run(
                    self.context, servable, spec.name, spec.signature_name, request.input, timeout()
                )
                version = servable.version
            response = response_class()
            response.model_spec.CopyFrom(
                inference.make_model_spec(spec.name, spec.signature_name, version)
            )
            response.result.CopyFrom(to_proto(results))
            return response

        return await self._run(context, work, api, request.model_spec.name)

    async def MultiInference(self, request: inference_pb2.MultiInferenceRequest, context):  # noqa: N802
        timeout = self._timeout(context)
        spec = request.tasks[0].model_spec if request.tasks else model_pb2.ModelSpec()

        def work():
            with self.core.get_servable(spec) as servable:
                return inference.multi_inference(self.context, servable, request, timeout())

        return await self._run(context, work, "MultiInference", spec.name)

    async def GetModelMetadata(self, request, context):  # noqa: N802
        def work():
            inference.validate_metadata_request(request)
            with self.core.get_servable(request.model_spec) as servable:
                return inference.metadata_response(servable, request.model_spec.name)

        return await self._run(context, work)


class ModelService(_Calls, model_service_pb2_grpc.ModelServiceServicer):
    """GetModelStatus and HandleReloadConfigRequest."""

    def __init__(self, core: ServerCore, workers: Workers) -> None:
        super().__init__(core, workers, None)

    async def GetModelStatus(self, request: get_model_status_pb2.GetModelStatusRequest, context):  # noqa: N802
        def work():
            if not request.HasField("model_spec"):
                raise invalid_argument("Missing ModelSpec")
            version = None
            if request.model_spec.HasField("version"):
                version = request.model_spec.version.value
            return self.core.status_response(request.model_spec.name, version)

        return await self._run(context, work)

    async def HandleReloadConfigRequest(  # noqa: N802
        self, request: model_management_pb2.ReloadConfigRequest, context
    ):
        def work():
            try:
                if request.config.WhichOneof("config") != "model_config_list":
                    raise invalid_argument(
                        "ServerModelConfig type not supported by HandleReloadConfigRequest. "
                        "Only ModelConfigList is currently supported"
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
                raise
            response = model_management_pb2.ReloadConfigResponse()
            response.status.SetInParent()
            return response

        return await self._run(context, work)
