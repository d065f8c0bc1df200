"""TF Serving's gRPC API (port 8500) through ``tensorflow-serving-api``.

This module imports the TF Serving protos, which load the ``tensorflow`` package;
the client imports it only when ``protocol="grpc"``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc
from google.protobuf import json_format
from tensorflow.core.example import example_pb2, feature_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from serving.client.batching import RequestSize
from serving.client.errors import MalformedResponseError, error_for_code
from serving.client.results import ModelVersionStatus
from serving.client.tensors import string_tensor, to_numpy

_IMAGE_FEATURE = "image/encoded"
# Protobuf framing: a tag byte plus a varint length of at most 5 bytes per string.
_STRING_FRAMING = 6
# Tags and lengths of Example > Features > map entry > key > Feature > BytesList > value.
_EXAMPLE_FRAMING = 7 * _STRING_FRAMING + len(_IMAGE_FEATURE)


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
        self.prediction = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.model = model_service_pb2_grpc.ModelServiceStub(self.channel)

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
        request = predict_pb2.PredictRequest()
        self._spec(request, signature_name)
        request.inputs[input_key].CopyFrom(string_tensor(list(images)))
        try:
            response = self.prediction.Predict(request, timeout=timeout)
        except grpc.RpcError as error:
            raise_rpc_error(error)
        outputs = {name: to_numpy(tensor) for name, tensor in response.outputs.items()}
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
        request = classification_pb2.ClassificationRequest()
        self._spec(request, signature_name)
        examples = request.input.example_list.examples
        for data in images:
            feature = feature_pb2.Feature(bytes_list=feature_pb2.BytesList(value=[data]))
            examples.append(
                example_pb2.Example(
                    features=feature_pb2.Features(feature={_IMAGE_FEATURE: feature})
                )
            )
        try:
            response = self.prediction.Classify(request, timeout=timeout)
        except grpc.RpcError as error:
            raise_rpc_error(error)
        return [
            [(c.label, float(c.score)) for c in row.classes]
            for row in response.result.classifications
        ]

    def metadata(self, timeout: float | None) -> dict[str, Any]:
        """The same JSON structure TF Serving's REST metadata route returns."""
        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        self._spec(request)
        try:
            response = self.prediction.GetModelMetadata(request, timeout=timeout)
        except grpc.RpcError as error:
            raise_rpc_error(error)
        signatures = get_model_metadata_pb2.SignatureDefMap()
        if "signature_def" not in response.metadata or not response.metadata[
            "signature_def"
        ].Unpack(signatures):
            raise MalformedResponseError("GetModelMetadata returned no SignatureDefMap")
        as_dict = _message_to_dict
        return {
            "model_spec": as_dict(response.model_spec),
            "metadata": {"signature_def": as_dict(signatures)},
        }

    def status(self, timeout: float | None) -> list[ModelVersionStatus]:
        request = get_model_status_pb2.GetModelStatusRequest()
        self._spec(request)
        try:
            response = self.model.GetModelStatus(request, timeout=timeout)
        except grpc.RpcError as error:
            raise_rpc_error(error)
        state_name = get_model_status_pb2.ModelVersionStatus.State.Name
        out = []
        for entry in response.model_version_status:
            try:
                state = state_name(entry.state)
            except ValueError:
                state = str(entry.state)
            code = entry.status.DESCRIPTOR.fields_by_name["error_code"].enum_type
            code_value = code.values_by_number.get(entry.status.error_code)
            out.append(
                ModelVersionStatus(
                    version=entry.version,
                    state=state,
                    error_code=code_value.name if code_value else str(entry.status.error_code),
                    error_message=entry.status.error_message,
                )
            )
        return out

    def close(self) -> None:
        self.channel.close()


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
