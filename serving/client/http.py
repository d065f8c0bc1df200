"""JSON over HTTP with typed errors: the part REST and Vertex clients share.

Imports no TensorFlow (only ``requests``, and only once a session is made, so that
the gRPC client does not load it), so REST clients stay light.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import requests

from serving.client.errors import (
    DeadlineExceededError,
    MalformedResponseError,
    ServingError,
    UnavailableError,
    code_for_http_status,
    error_for_code,
    error_for_http_status,
)

_CANONICAL_CODES = {
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
}


def new_session(pool_size: int) -> requests.Session:
    """A session whose connection pool lets ``pool_size`` requests run at once."""
    import requests

    return size_pool(requests.Session(), pool_size)


def size_pool(session: requests.Session, pool_size: int) -> requests.Session:
    """Mount adapters that keep up to ``pool_size`` connections per host (default 10)."""
    from requests.adapters import HTTPAdapter

    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=max(10, pool_size))
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


class JsonHttp:
    """Sends JSON requests on one reused session and turns failures into typed errors."""

    def __init__(self, session: requests.Session) -> None:
        self.session = session

    def request(
        self, method: str, url: str, timeout: float | None, body: bytes | None = None
    ) -> Any:
        import requests

        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        try:
            response = self.session.request(
                method, url, data=body, headers=headers, timeout=timeout
            )
        except requests.exceptions.ConnectTimeout as error:
            raise UnavailableError(f"cannot connect to {url} within {timeout} s: {error}") from None
        except requests.exceptions.Timeout:
            raise DeadlineExceededError(f"no response from {url} within {timeout} s") from None
        except requests.exceptions.ConnectionError as error:
            if _answered_in_http2(error):
                raise UnavailableError(
                    f"{url}: this port speaks gRPC (HTTP/2), not REST: use protocol grpc "
                    "(--protocol grpc), or the server's REST port (TF Serving's default: 8501)"
                ) from None
            raise UnavailableError(f"cannot connect to {url}: {error}") from None
        except requests.exceptions.RequestException as error:
            raise ServingError(f"{method} {url} failed: {error}") from None
        # TF Serving writes raw bytes for non-UTF-8 strings and bare NaN/Infinity: be lenient.
        text = response.content.decode("utf-8", errors="replace")
        if response.status_code != 200:
            raise self.error_from_response(response.status_code, text)
        try:
            return json.loads(text)
        except ValueError:
            raise MalformedResponseError(
                f"{method} {url}: response is not JSON: {_clip(text)!r}", http_status=200
            ) from None

    @staticmethod
    def error_from_response(status: int, text: str) -> ServingError:
        """Typed error from TF Serving's ``{"error": "..."}`` or a Google API error object."""
        try:
            payload = json.loads(text)
        except ValueError:
            payload = None
        error = payload.get("error") if isinstance(payload, dict) else None
        if isinstance(error, str):
            return error_for_http_status(status, error)
        if isinstance(error, dict):
            code = error.get("status")
            message = str(error.get("message", text))
            if code not in _CANONICAL_CODES:
                code = code_for_http_status(status)
            return error_for_code(code, message, http_status=status)
        # Not TF Serving talking (a proxy, a load balancer, libevent's HTML 404): keep the text.
        return error_for_http_status(status, _clip(text.strip()) or f"HTTP {status}")


def _answered_in_http2(error: BaseException) -> bool:
    """Whether the peer answered an HTTP/1.1 request with HTTP/2 frames (a gRPC port).

    ``http.client`` reads them as a bad status line: ``BadStatusLine('\\x00\\x00\\x1e\\x04...')``,
    the 3-byte length and type 4 (SETTINGS) of the frame an HTTP/2 server opens with.
    """
    import http.client  # noqa: PLC0415 - with ssl, 13 ms: only after a failed REST call

    seen: set[int] = set()
    pending: list[object] = [error]
    while pending:
        item = pending.pop()
        if not isinstance(item, BaseException) or id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, http.client.BadStatusLine):
            line = str(item.args[0]) if item.args else ""
            return len(line) >= 4 and line.startswith("\x00") and line[3] == "\x04"
        pending.extend([*item.args, item.__cause__, item.__context__])
    return False


def _clip(text: str, limit: int = 2000) -> str:
    return text if len(text) <= limit else text[:limit] + "...(truncated)"
