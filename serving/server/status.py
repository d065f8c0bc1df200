"""Error codes and the error type every layer of the server raises.

TF Serving carries an ``absl::Status`` (a canonical code and a message) from
the model runtime up to the wire. gRPC uses the same code numbers; REST maps
them to HTTP statuses (``model_servers/http_server.cc``, ``ToHTTPStatusCode``)
and puts only the message into ``{"error": ...}``.
"""

from __future__ import annotations

import enum
import re


class Code(enum.IntEnum):
    """Canonical error codes; the numbers equal gRPC's and ``tensorflow.error.Code``."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


_HTTP_STATUS = {
    Code.OK: 200,
    Code.CANCELLED: 499,
    Code.UNKNOWN: 500,
    Code.INVALID_ARGUMENT: 400,
    Code.DEADLINE_EXCEEDED: 504,
    Code.NOT_FOUND: 404,
    Code.ALREADY_EXISTS: 409,
    Code.PERMISSION_DENIED: 403,
    Code.RESOURCE_EXHAUSTED: 429,
    Code.FAILED_PRECONDITION: 400,
    Code.ABORTED: 409,
    Code.OUT_OF_RANGE: 400,
    Code.UNIMPLEMENTED: 501,
    Code.INTERNAL: 500,
    Code.UNAVAILABLE: 503,
    Code.DATA_LOSS: 500,
    Code.UNAUTHENTICATED: 401,
}


def http_status(code: Code) -> int:
    """The HTTP status TF Serving's REST server answers for ``code``."""
    return _HTTP_STATUS.get(code, 500)


class ServingError(Exception):
    """A failed request or operation: a canonical code and TF Serving's message text.

    >>> str(ServingError(Code.NOT_FOUND, "Servable not found for request: Latest(x)"))
    'NOT_FOUND: Servable not found for request: Latest(x)'
    """

    def __init__(self, code: Code, message: str) -> None:
        super().__init__(message)
        self.code = Code(code)
        self.message = message

    def __str__(self) -> str:
        # absl::Status::ToString(), used where TF Serving nests one status in another.
        return f"{self.code.name}: {self.message}"


def invalid_argument(message: str) -> ServingError:
    return ServingError(Code.INVALID_ARGUMENT, message)


# TensorFlow appends where in the graph an op failed: "[[{{function_node f}}{{node n}}]]",
# "\n\t [[StatefulPartitionedCall/...]]". Users need the op's message, not that.
_GRAPH_TEXT = re.compile(
    r"\s*\[\[(?:\{\{[^}]*\}\})+[^\]]*\]\](?:\s*\[\[[\w/.:-]*\]\])*|\n\t \[\[[^\]]*\]\]"
)


def strip_graph_text(message: str) -> str:
    """Removes TensorFlow's graph locations from a runtime error message.

    >>> strip_graph_text("assertion failed: [bad] [[{{function_node f_1}}{{node Assert}}]]")
    'assertion failed: [bad]'
    """
    return _GRAPH_TEXT.sub("", message).rstrip()


def from_tf_error(error: Exception) -> ServingError:
    """Converts an exception raised by the TensorFlow runtime, keeping its code and text
    (without the graph locations TensorFlow appends)."""
    if isinstance(error, ServingError):
        return error
    code = getattr(error, "error_code", None)
    message = getattr(error, "message", None)
    if code is None or message is None:
        return ServingError(Code.INTERNAL, f"{type(error).__name__}: {error}")
    try:
        return ServingError(Code(int(code)), strip_graph_text(str(message)))
    except ValueError:
        return ServingError(Code.UNKNOWN, strip_graph_text(str(message)))
