"""The HTTP transport of the REST API (TF Serving uses libevent; this uses ``http.server``).

What a client sees is kept: ``/v1/...`` goes to the REST handler, the
Prometheus page (if configured) is served at its exact path, everything else
gets libevent's HTML 404 page; gzip request bodies are inflated; CORS
preflights are answered; responses carry ``Content-Type: application/json``.

Added for safety (not in TF Serving):

* request bodies above ``max_body_bytes`` (after gzip too) are refused with 413
  and a JSON error instead of being read into memory;
* a body is read only inside a worker slot (``--rest_api_num_threads``), with
  the REST timeout as its read deadline;
* the bytes of all requests in progress (each body plus what parsing it will
  take, :func:`json_tensor.parse_cost`) stay under ``max_bytes_in_flight``; a
  request that cannot get its share within :data:`BUDGET_WAIT_SECONDS` gets
  429 (RESOURCE_EXHAUSTED);
* after a request that held a lot of memory, freed heap pages go back to the
  system (:func:`memory.give_back`).
"""

from __future__ import annotations

import email.utils
import re
import socket
import sys
import threading
import time
import zlib
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from serving.server import memory
from serving.server.json_tensor import error_body, parse_cost, parse_limit
from serving.server.logs import get_logger
from serving.server.metrics import ServingMetrics
from serving.server.rest_api import CORS_HEADERS, V1_PATH, RestApi

log = get_logger()
# libevent's ERR_FORMAT.
_ERROR_PAGE = (
    "<HTML><HEAD>\n<TITLE>{code} {reason}</TITLE>\n</HEAD><BODY>\n<H1>{reason}</H1>\n"
    "</BODY></HTML>\n"
)
_ORIGIN = re.compile(r"https?://")


class BodyTooLarge(Exception):
    """The request body is over the configured limit."""


class OverBudget(Exception):
    """The bytes in flight did not make room for this request in time."""


# How long a request waits for its share of the bytes in flight before a 429.
BUDGET_WAIT_SECONDS = 3.0
# How long a request waits for a free worker slot before a 503.
SLOT_WAIT_SECONDS = 30.0


class ByteBudget:
    """A counting limit on bytes held by requests in progress."""

    def __init__(self, limit: int) -> None:
        self.limit = max(limit, 1)
        self.used = 0
        self._cond = threading.Condition()

    def acquire(self, count: int, timeout: float, held: int = 0) -> int:
        """Takes ``count`` more bytes for a request holding ``held``; raises :class:`OverBudget`.

        One request may hold at most the whole budget (it then runs alone).
        """
        count = min(max(count, 0), max(self.limit - held, 0))
        deadline = time.monotonic() + timeout
        with self._cond:
            while self.used + count > self.limit:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise OverBudget(count)
                self._cond.wait(remaining)
            self.used += count
        return count

    def release(self, count: int) -> None:
        if count:
            with self._cond:
                self.used -= count
                self._cond.notify_all()


# An oversized body is still read (and dropped) up to this size so that the client
# gets the 413 answer instead of a broken pipe; past it the connection is cut.
_DRAIN_LIMIT = 1024**3
_DRAIN_CHUNK = 1024 * 1024


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HttpServer
    # Idle keep-alive connections are closed after this many seconds.
    timeout = 300

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.busy = False
        self.server.track(self, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self, False)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - stdlib signature
        pass  # TF Serving does not log requests

    def handle_one_request(self) -> None:
        self.busy = False
        super().handle_one_request()

    def send_error(self, code: int, message: str | None = None, explain: str | None = None):
        # Protocol errors (bad request line, unsupported method) as libevent sends them.
        self.close_connection = True
        self._send_page(code)

    def _send_page(self, code: int) -> None:
        reason = _reason(code)
        body = _ERROR_PAGE.format(code=code, reason=reason).encode("latin-1")
        self._reply(
            code, [("Content-Type", "text/html; charset=ISO-8859-1"), ("Connection", "close")], body
        )
        self.close_connection = True

    def _reply(self, code: int, headers: list, body: bytes) -> None:
        # One write for the status line, headers and body: two small writes would meet
        # Nagle's algorithm and the client's delayed ACK (a 40 ms stall per request).
        lines = [
            f"{self.protocol_version} {code} {_reason(code)}",
            f"Date: {email.utils.formatdate(usegmt=True)}",
        ]
        lines += [f"{name}: {value}" for name, value in headers]
        lines.append(f"Content-Length: {len(body)}")
        if self.server.draining and ("Connection", "close") not in headers:
            lines.append("Connection: close")
        if self.server.draining or ("Connection", "close") in headers:
            self.close_connection = True
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self.wfile.write(head if self.command == "HEAD" else head + body)

    def _reserve(self, count: int) -> None:
        """Adds ``count`` bytes to what this request holds of the bytes in flight."""
        self.held += self.server.budget.acquire(count, BUDGET_WAIT_SECONDS, self.held)

    def _read_body(self) -> bytes:
        limit = self.server.max_body_bytes
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks, total = [], 0
            while True:
                size_line = self.rfile.readline(65537)
                size = int(size_line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                total += size
                if total > limit:
                    self._drain(size)
                    self.rfile.readline(3)
                    continue
                self._reserve(size)
                chunks.append(self.rfile.read(size))
                self.rfile.readline(3)
            if total > limit:
                raise BodyTooLarge(total)
            body = b"".join(chunks)
        else:
            length = int(self.headers.get("Content-Length") or 0)
            if length > limit:
                if length <= _DRAIN_LIMIT:
                    self._drain(length)
                raise BodyTooLarge(length)
            self._reserve(length)
            body = self.rfile.read(length) if length > 0 else b""
            if len(body) < length:
                raise ValueError(f"the body ended after {len(body)} of {length} bytes")
        if "gzip" in self.headers.get("Content-Encoding", "").lower() and body:
            inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
            compressed = len(body)
            body = inflater.decompress(body, limit + 1)
            if len(body) > limit or inflater.unconsumed_tail:
                raise BodyTooLarge(len(body))
            self._reserve(max(len(body) - compressed, 0))
        return body

    def _drain(self, count: int) -> None:
        while count > 0:
            chunk = self.rfile.read(min(count, _DRAIN_CHUNK))
            if not chunk:
                return
            count -= len(chunk)

    def _dispatch(self) -> None:
        self.busy = True
        self.held = 0
        try:
            if not self.server.slots.acquire(timeout=SLOT_WAIT_SECONDS):
                self._json_error(503, "All REST worker threads stayed busy; try again later")
                return
            try:
                self._read_and_respond()
            finally:
                self.server.slots.release()
        finally:
            self.server.budget.release(self.held)
            if self.held >= memory.GIVE_BACK_THRESHOLD:
                memory.give_back()
            self.held = 0
            self.busy = False

    def _json_error(self, status: int, message: str) -> None:
        self.close_connection = True
        self._reply(status, [("Content-Type", "application/json")], error_body(message))

    def _read_and_respond(self) -> None:
        # The body is read inside the worker slot, with the REST timeout as its deadline.
        self.connection.settimeout(self.server.body_timeout)
        try:
            body = self._read_body()
        except BodyTooLarge as error:
            self._json_error(
                413,
                f"Request body of {error.args[0]} bytes or more is larger than the "
                f"{self.server.max_body_bytes} bytes this server accepts "
                "(--rest_api_max_request_bytes)",
            )
            return
        except OverBudget as error:
            self._json_error(
                429,
                f"This request needs {error.args[0]} bytes of the "
                f"{self.server.budget.limit} bytes all requests in progress may hold "
                "(--rest_api_max_bytes_in_flight), and they did not free up in time",
            )
            return
        except TimeoutError:
            self._json_error(408, "The request body did not arrive in time")
            return
        except (ValueError, zlib.error) as error:
            self._json_error(400, f"Could not read the request body: {error}")
            return
        finally:
            self.connection.settimeout(self.timeout)
        cost = parse_cost(body) if self.command == "POST" and body else 0
        if cost <= parse_limit(len(body)):  # past its limit the parser refuses without parsing
            try:
                self._reserve(cost)
            except OverBudget as error:
                self._json_error(
                    429,
                    f"Parsing this request needs about {error.args[0]} bytes of the "
                    f"{self.server.budget.limit} bytes all requests in progress may hold "
                    "(--rest_api_max_bytes_in_flight), and they did not free up in time",
                )
                return
        self._respond(self.command, self.path, body)

    def _respond(self, method: str, path: str, body: bytes) -> None:
        monitoring = self.server.monitoring_path
        if monitoring and path.split("?", 1)[0].split("#", 1)[0] == monitoring:
            if path != monitoring:
                self._reply(400, [("Content-Type", "text/plain")], b"")
            else:
                page = self.server.metrics.prometheus_page().encode()
                self._reply(200, [("Content-Type", "text/plain")], page)
            return
        if not V1_PATH.fullmatch(path):
            self._send_page(404)
            return
        if method == "OPTIONS":
            headers = list(CORS_HEADERS) if self.server.enable_cors else []
            status = 200 if _ORIGIN.search(self.headers.get("Origin", "")) else 400
            self._reply(status, headers, b"")
            return
        status, headers, payload = self.server.rest_api.handle(method, path, body)
        self._reply(status, headers, payload)

    do_GET = do_POST = do_HEAD = do_PUT = do_DELETE = do_OPTIONS = do_PATCH = _dispatch


@dataclass
class RestLimits:
    """The bounds of the REST transport."""

    num_threads: int = 8
    max_body_bytes: int = 64 * 1024 * 1024
    max_bytes_in_flight: int = 512 * 1024 * 1024
    body_timeout_seconds: float = 30.0


def _reason(code: int) -> str:
    if code == 499:
        return "Client Closed Request"
    try:
        return HTTPStatus(code).phrase
    except ValueError:
        return "Unknown"


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    # socketserver's default backlog of 5 resets bursts of new connections.
    request_queue_size = 1024

    def __init__(
        self, address, rest_api, metrics, monitoring_path, limits: RestLimits, enable_cors
    ):
        self.rest_api = rest_api
        self.metrics = metrics
        self.monitoring_path = monitoring_path
        self.max_body_bytes = limits.max_body_bytes
        self.body_timeout = limits.body_timeout_seconds
        self.budget = ByteBudget(limits.max_bytes_in_flight)
        self.enable_cors = enable_cors
        self.slots = threading.BoundedSemaphore(max(limits.num_threads, 1))
        self.draining = False
        self._connections: set[_Handler] = set()
        self._connections_cond = threading.Condition()
        host = address[0]
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        super().__init__(address, _Handler)

    def handle_error(self, request, client_address) -> None:
        # A client that went away mid-answer is not a server error worth a traceback.
        error = sys.exc_info()[1]
        if isinstance(error, (ConnectionError, TimeoutError)):
            return
        log.exception("HTTP request from %s failed", client_address)

    def track(self, handler: _Handler, alive: bool) -> None:
        with self._connections_cond:
            if alive:
                self._connections.add(handler)
            else:
                self._connections.discard(handler)
            self._connections_cond.notify_all()

    def drain(self, grace_seconds: float) -> bool:
        """Lets requests in progress finish; closes idle keep-alive connections.

        Returns False if some were still busy after ``grace_seconds``."""
        self.draining = True
        deadline = time.monotonic() + grace_seconds
        with self._connections_cond:
            while self._connections:
                for handler in list(self._connections):
                    if not handler.busy:
                        try:
                            handler.connection.shutdown(socket.SHUT_RDWR)
                        except OSError:
                            pass
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    busy = [handler for handler in self._connections if handler.busy]
                    if busy:
                        log.warning(
                            "%d HTTP request(s) still running after the shutdown grace period",
                            len(busy),
                        )
                    return not busy
                self._connections_cond.wait(min(remaining, 0.1))
        return True


class RestServer:
    """Serves the REST API (and the Prometheus page) on one port, in threads."""

    def __init__(
        self,
        host: str,
        port: int,
        rest_api: RestApi,
        metrics: ServingMetrics,
        monitoring_path: str | None,
        limits: RestLimits,
        enable_cors: bool,
    ) -> None:
        self._server = _HttpServer(
            (host, port), rest_api, metrics, monitoring_path, limits, enable_cors
        )
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="rest_server", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def shutdown(self, grace_seconds: float) -> bool:
        """Stops accepting, finishes requests in progress (up to the grace period).

        Returns False if some were still running at the end of it."""
        self._server.shutdown()
        self._server.server_close()
        clean = self._server.drain(grace_seconds)
        self._thread.join(grace_seconds + 1)
        return clean
