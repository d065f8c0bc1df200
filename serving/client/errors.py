"""Typed exceptions for serving clients.

Every error a client raises is a :class:`ServingError`. Server errors keep the
server's own text in ``.message`` (TensorFlow's graph notes removed, see
:mod:`serving.client.image_errors`) and its status in ``.code`` (the canonical
gRPC code name, also for REST, where it is derived from the HTTP status with
TF Serving's own mapping) and ``.http_status`` (REST only).
"""

from __future__ import annotations

from collections.abc import Sequence

from serving.client.image_errors import clean_message

# TF Serving's status -> HTTP mapping (http_server.cc ToHTTPStatusCode), inverted.
# Several codes share 400 and 500; the most common one is chosen.
_HTTP_TO_CODE = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


class ServingError(Exception):
    """Base class of every client error.

    Attributes:
        code: canonical status name (``"INVALID_ARGUMENT"``, ``"UNAVAILABLE"``...).
        message: the server's message without TensorFlow's graph notes (or the client's, for
            client-side errors); for an error of one image, the reason for that image.
        http_status: HTTP status of a REST response, ``None`` for gRPC and client-side errors.
        indices: positions, in the caller's input list, of the images this error is about:
            one for an image the server or the client refused, all of a request's images for
            a request that failed as a whole (server unavailable, unknown model...).
    """

    default_code = "UNKNOWN"

    def __init__(
        self,
        message: str,
        code: str | None = None,
        http_status: int | None = None,
        indices: Sequence[int] | None = None,
    ) -> None:
        self.message = message
        self.code = code or self.default_code
        self.http_status = http_status
        self.indices = list(indices) if indices is not None else None
        super().__init__(message)

    def __str__(self) -> str:
        status = self.code if self.http_status is None else f"{self.code}, HTTP {self.http_status}"
        text = f"{status}: {self.message}"
        if self.indices and len(self.indices) == 1:
            text += f" (input image {self.indices[0]})"
        elif self.indices:
            text += f" (request with input images {_ranges(self.indices)})"
        return text


class CancelledError(ServingError):
    """The request was cancelled (gRPC CANCELLED, HTTP 499)."""

    default_code = "CANCELLED"


class UnknownError(ServingError):
    """Unknown server error (gRPC UNKNOWN)."""

    default_code = "UNKNOWN"


class InvalidArgumentError(ServingError):
    """The request was rejected as invalid (INVALID_ARGUMENT, HTTP 400): bad image, bad label..."""

    default_code = "INVALID_ARGUMENT"


class DeadlineExceededError(ServingError):
    """The deadline passed before a response (DEADLINE_EXCEEDED, HTTP 504, or a client timeout)."""

    default_code = "DEADLINE_EXCEEDED"


class NotFoundError(ServingError):
    """Model, version or route not found (NOT_FOUND, HTTP 404)."""

    default_code = "NOT_FOUND"


class AlreadyExistsError(ServingError):
    """ALREADY_EXISTS."""

    default_code = "ALREADY_EXISTS"


class PermissionDeniedError(ServingError):
    """PERMISSION_DENIED, HTTP 403."""

    default_code = "PERMISSION_DENIED"


class ResourceExhaustedError(ServingError):
    """RESOURCE_EXHAUSTED, HTTP 429 (quota, or a message larger than a limit)."""

    default_code = "RESOURCE_EXHAUSTED"


class FailedPreconditionError(ServingError):
    """FAILED_PRECONDITION (gRPC Predict with an unknown signature, for example)."""

    default_code = "FAILED_PRECONDITION"


class AbortedError(ServingError):
    """ABORTED, HTTP 409."""

    default_code = "ABORTED"


class OutOfRangeError(ServingError):
    """OUT_OF_RANGE."""

    default_code = "OUT_OF_RANGE"


class UnimplementedError(ServingError):
    """UNIMPLEMENTED, HTTP 501."""

    default_code = "UNIMPLEMENTED"


class InternalError(ServingError):
    """INTERNAL, HTTP 500."""

    default_code = "INTERNAL"


class UnavailableError(ServingError):
    """The server cannot be reached or is overloaded (UNAVAILABLE, HTTP 503). Retried."""

    default_code = "UNAVAILABLE"


class DataLossError(ServingError):
    """DATA_LOSS."""

    default_code = "DATA_LOSS"


class UnauthenticatedError(ServingError):
    """UNAUTHENTICATED, HTTP 401."""

    default_code = "UNAUTHENTICATED"


class InputImageError(InvalidArgumentError, ValueError):
    """An input image could not be read or used on the client side (nothing was sent)."""


class PayloadTooLargeError(ResourceExhaustedError, ValueError):
    """An image cannot fit into one request under the target's size limit (nothing was sent)."""


class MalformedResponseError(ServingError):
    """The server answered, but not in the TF Serving format the client expects."""

    default_code = "UNKNOWN"


_CODE_TO_CLASS: dict[str, type[ServingError]] = {
    cls.default_code: cls
    for cls in (
        CancelledError,
        UnknownError,
        InvalidArgumentError,
        DeadlineExceededError,
        NotFoundError,
        AlreadyExistsError,
        PermissionDeniedError,
        ResourceExhaustedError,
        FailedPreconditionError,
        AbortedError,
        OutOfRangeError,
        UnimplementedError,
        InternalError,
        UnavailableError,
        DataLossError,
        UnauthenticatedError,
    )
}


def error_for_code(code: str, message: str, http_status: int | None = None) -> ServingError:
    """The typed exception for a canonical status name such as ``"NOT_FOUND"``."""
    cls = _CODE_TO_CLASS.get(code, ServingError)
    return cls(clean_message(message), code=code, http_status=http_status)


def code_for_http_status(http_status: int) -> str:
    """Canonical status name for an HTTP status, following TF Serving's mapping."""
    if http_status in _HTTP_TO_CODE:
        return _HTTP_TO_CODE[http_status]
    if 400 <= http_status < 500:
        return "INVALID_ARGUMENT"
    return "UNKNOWN"


def error_for_http_status(http_status: int, message: str) -> ServingError:
    """The typed exception for an HTTP error status and the server's message."""
    return error_for_code(code_for_http_status(http_status), message, http_status=http_status)


def _ranges(indices: Sequence[int]) -> str:
    """Compact text for sorted indices: ``[0, 1, 2, 5]`` -> ``"0-2, 5"``."""
    parts: list[str] = []
    start = prev = indices[0]
    for index in list(indices[1:]) + [None]:
        if index is not None and index == prev + 1:
            prev = index
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if index is not None:
            start = prev = index
    return ", ".join(parts)
