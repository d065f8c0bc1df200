"""Client library for keras-vit models served by TF Serving, ``keras-vit serve`` or Vertex AI.

>>> from serving.client import ServingClient
>>> with ServingClient("localhost:8500", protocol="grpc") as client:  # doctest: +SKIP
...     for p in client.predict(["cat.jpg", "dog.jpg"]):
...         print(p.label, p.score, p.top_k)

No client imports TensorFlow: the gRPC client's protos are :mod:`serving.protos`.
"""

from serving.client.batching import RequestSize
from serving.client.cli import add_arguments, cli_predict, predict_from_args
from serving.client.client import (
    GRPC_MAX_REQUEST_BYTES,
    REST_MAX_REQUEST_BYTES,
    VERTEX_MAX_REQUEST_BYTES,
    ServingClient,
)
from serving.client.errors import (
    AbortedError,
    AlreadyExistsError,
    CancelledError,
    DataLossError,
    DeadlineExceededError,
    FailedPreconditionError,
    InputImageError,
    InternalError,
    InvalidArgumentError,
    MalformedResponseError,
    NotFoundError,
    OutOfRangeError,
    PayloadTooLargeError,
    PermissionDeniedError,
    ResourceExhaustedError,
    ServingError,
    UnauthenticatedError,
    UnavailableError,
    UnimplementedError,
    UnknownError,
)
from serving.client.results import ModelVersionStatus, Prediction
from serving.client.retry import RetryPolicy
from serving.client.vertex import VertexClient

__all__ = [
    "GRPC_MAX_REQUEST_BYTES",
    "REST_MAX_REQUEST_BYTES",
    "VERTEX_MAX_REQUEST_BYTES",
    "AbortedError",
    "AlreadyExistsError",
    "CancelledError",
    "DataLossError",
    "DeadlineExceededError",
    "FailedPreconditionError",
    "InputImageError",
    "InternalError",
    "InvalidArgumentError",
    "MalformedResponseError",
    "ModelVersionStatus",
    "NotFoundError",
    "OutOfRangeError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "Prediction",
    "RequestSize",
    "ResourceExhaustedError",
    "RetryPolicy",
    "ServingClient",
    "ServingError",
    "UnauthenticatedError",
    "UnavailableError",
    "UnimplementedError",
    "UnknownError",
    "VertexClient",
    "add_arguments",
    "cli_predict",
    "predict_from_args",
]
