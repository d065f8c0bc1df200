"""TF Serving's gRPC API (port 8500), with the protos of :mod:`serving.protos`.

Imports ``grpcio`` and ``protobuf``, not TensorFlow: the messages are written in
this repository (``serving/protos``), the same on the wire as ``tensorflow-serving-api``'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc
from google.protobuf import json_format

from serving import protos
from serving.client.batching import RequestSize
from serving.client.errors import MalformedResponseError, error_for_code
from serving.client.results import ModelVersionStatus
from serving.tensor_codec import TensorError, string_tensor, to_numpy

_IMAGE_FEATURE = "image/encoded"
# Protobuf framing: a tag byte plus a varint length of at most 5 bytes per string.
_STRING_FRAMING = 6
# Tags and lengths of Example > Features > map entry > key > Feature > BytesList > value.
_EXAMPLE_FRAMING = 7 * _STRING_FRAMING + len(_IMAGE_FEATURE)
# A reply's outputs are sized before they are decoded: a shape the values cannot honestly
# fill (one value repeated 2**40 times) is refused instead of allocated.
MAX_OUTPUT_BYTES = 1 << 30
# gRPC's reconnect backoff starts at 1 s and grows 1.6-fold to 2 minutes: polling a
# server that is still starting, a channel then sees it up to 60% of the wait late (a
# server up after 10 s answers at about 15.8 s). The probe channel of
# ServingClient.wait_until_available retries every 0.1 s, growing to at most 1 s.
PROBE_CHANNEL_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
)


def grpc_target(target: str) -> str:
    target = target.strip()
    if target.startswith("grpc://"):
        target = target[len("grpc://") :]
    if not target:
        raise ValueError("target must be host:port, got an empty string")
    if target.startswith(("http://", "https://")):
        raise ValueError(f"gRPC target must be host:port, not a URL: {target!r}")
    return target


def raise_rpc_error(error: grpc.RpcError) -> None:
    """Re-raise a gRPC failure as the typed error of its status code."""
    code = error.code() if callable(getattr(error, "code", None)) else None
    details = error.details() if callable(getattr(error, "details", None)) else None
    name = code.name if code is not None else "UNKNOWN"
    raise error_for_code(name, details or str(error)) from None


class GrpcTransport:
    """One model's gRPC calls on one channel, created here and reused for every call."""

    def __init__(
        self,
        target: str,
        model_name: str,
        version: int | None,
        version_label: str | None,
        max_request_bytes: int | None,
        credentials: grpc.ChannelCredentials | None = None,
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        self.target = grpc_target(target)
        self.model_name = model_name
        self.version = version
        self.version_label = version_label
        self._settings = (max_request_bytes, credentials, tuple(options))
        channel_options = [
            # The planner keeps requests under max_request_bytes; this is the safety net.
            ("grpc.max_send_message_length", max_request_bytes or -1),
            # TF Serving itself allows INT32_MAX; responses (probabilities) may be large.
            ("grpc.max_receive_message_length", -1),
            *options,
        ]
        if credentials is None:
            self.channel = grpc.insecure_channel(self.target, options=channel_options)
        else:
            self.channel = grpc.secure_channel(self.target, credentials, options=channel_options)
        self._predict = self._method("PredictionService", "Predict", protos.PredictResponse)
        self._classify = self._method(
            "PredictionService", "Classify", protos.ClassificationResponse
        )
        self._metadata = self._method(
            "PredictionService", "GetModelMetadata", protos.GetModelMetadataResponse
        )
        self._status = self._method("ModelService", "GetModelStatus", protos.GetModelStatusResponse)

    def _method(self, service: str, method: str, response: type) -> grpc.UnaryUnaryMultiCallable:
        return self.channel.unary_unary(
            protos.method_path(service, method),
            request_serializer=lambda message: message.SerializeToString(),
            response_deserializer=response.FromString,
        )

    def _spec(self, request: Any, signature_name: str = "") -> None:
        spec = request.model_spec
        spec.name = self.model_name
        if signature_name:
            spec.signature_name = signature_name
        if self.version is not None:
            spec.version.value = self.version
        elif self.version_label is not None:
            spec.version_label = self.version_label

    def _fixed(self, signature_name: str, input_key: str) -> int:
        spec = len(self.model_name) + len(signature_name) + len(self.version_label or "") + 32
        return spec + len(input_key) + 4 * _STRING_FRAMING

    def predict_size(self, signature_name: str) -> RequestSize:
        return RequestSize(self._fixed(signature_name, "image_bytes"), _STRING_FRAMING, False)

    def classify_size(self, signature_name: str) -> RequestSize:
        return RequestSize(self._fixed(signature_name, ""), _EXAMPLE_FRAMING, False)

    def predict(
        self,
        images: Sequence[bytes],
        signature_name: str,
        timeout: float | None,
        input_key: str = "image_bytes",
    ) -> list[dict[str, Any]]:
        """One dict of outputs per image, sliced from the batch tensors."""
        request = protos.PredictRequest()
        self._spec(request, signature_name)
        string_tensor(list(images), out=request.inputs[input_key])
        try:
            response = self._predict(request, timeout=timeout)
        except grpc.RpcError as error:
            raise_rpc_error(error)
        try:
            outputs = {
                name: to_numpy(tensor, MAX_OUTPUT_BYTES, name=f"output {name!r}")
                for name, tensor in response.outputs.items()
            }
        except TensorError as error:
            raise MalformedResponseError(f"cannot decode the reply: {error}") from None
        rows = len(images)
        for name, value in outputs.items():
            if value.ndim == 0 or value.shape[0] != rows:
                raise MalformedResponseError(
                    f"output {name!r} has shape {value.shape}, expected {rows} rows"
                )
        return [{name: value[i] for name, value in outputs.items()} for i in range(rows)]

    def classify(
        self, images: Sequence[bytes], signature_name: str, timeout: float | None
    ) -> list[list[tuple[str, float]]]:
        request = protos.ClassificationRequest()
        self._spec(request, signature_name)
        examples = request.input.example_list.examples
        for data in images:
            examples.add().features.feature[_IMAGE_FEATURE].bytes_list.value.append(data)
        try:
            response = self._classify(request, timeout=timeout)
        except grpc.RpcError as error:
            raise_rpc_error(error)
        return [
            [(c.label, float(c.score)) for c in row.classes]
            for row in response.result.classifications
        ]

    def metadata(self, timeout: float | None) -> dict[str, Any]:
        """The same JSON structure TF Serving's REST metadata route returns."""
        request = protos.GetModelMetadataRequest(metadata_field=["signature_def"])
        self._spec(request)
        try:
            response = self._metadata(request, timeout=timeout)
        except grpc.RpcError as error:
            raise_rpc_error(error)
        packed = response.metadata.get("signature_def")
        expected = protos.SignatureDefMap.DESCRIPTOR.full_name
        if packed is None or packed.type_url.rpartition("/")[2] != expected:
            raise MalformedResponseError(f"GetModelMetadata returned no {expected}")
        signatures = protos.SignatureDefMap.FromString(packed.value)
        as_dict = _message_to_dict
        return {
            "model_spec": as_dict(response.model_spec),
            "metadata": {"signature_def": as_dict(signatures)},
        }

    def status(self, timeout: float | None) -> list[ModelVersionStatus]:
        request = protos.GetModelStatusRequest()
        self._spec(request)
        try:
            response = self._status(request, timeout=timeout)
        except grpc.RpcError as error:
            raise_rpc_error(error)
        return [
            ModelVersionStatus(
                version=entry.version,
                state=_enum_name(protos.ModelVersionState, entry.state),
                error_code=_enum_name(protos.ErrorCode, entry.status.error_code),
                error_message=entry.status.error_message,
            )
            for entry in response.model_version_status
        ]

    def probe(self) -> GrpcTransport:
        """The same model's calls on a channel of their own that reconnects every 0.1-1 s
        (:data:`PROBE_CHANNEL_OPTIONS`), for polling a server that is starting. A new
        client's own channel is idle until its first call, which connects at once."""
        max_request_bytes, credentials, options = self._settings
        return GrpcTransport(
            self.target,
            self.model_name,
            self.version,
            self.version_label,
            max_request_bytes,
            credentials,
            [*options, *PROBE_CHANNEL_OPTIONS],
        )

    def close(self) -> None:
        self.channel.close()


def _enum_name(enum: Any, number: int) -> str:
    try:
        return enum.Name(number)
    except ValueError:  # a value newer than our protos
        return str(number)


def _message_to_dict(message: Any) -> dict[str, Any]:
    try:
        return json_format.MessageToDict(
            message,
            preserving_proto_field_name=True,
            always_print_fields_with_no_presence=True,
        )
    except TypeError:  # protobuf < 5 names the option differently
        return json_format.MessageToDict(
            message, preserving_proto_field_name=True, including_default_value_fields=True
        )
