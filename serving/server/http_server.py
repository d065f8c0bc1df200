"""The HTTP transport of the REST API (TF Serving uses libevent; this uses ``selectors``).

What a client sees is kept: ``/v1/...`` goes to the REST handler, the
Prometheus page (if configured) is served at its exact path, everything else
gets libevent's HTML 404 page; gzip request bodies are inflated; CORS
preflights are answered; responses carry ``Content-Type: application/json``.

As in libevent, one thread reads every connection and only complete requests
reach the ``--rest_api_num_threads`` workers (:mod:`http_connections`), so idle,
slow or silent connections hold no thread. Added for safety (not in TF Serving):

* at most ``--rest_api_max_connections`` connections are open; idle ones close
  after ``--rest_api_idle_timeout_in_ms``, headers must arrive within
  ``--rest_api_header_timeout_in_ms`` and a body within the REST timeout, in
  total (see :mod:`http_connections`);
* request bodies above ``max_body_bytes`` (after gzip too) are refused with 413
  and a JSON error instead of being read into memory;
* the bytes of all requests in progress (each body plus what parsing it will
  take, :func:`json_tensor.parse_cost`) stay under ``max_bytes_in_flight``; a
  request that cannot get its share within :data:`BUDGET_WAIT_SECONDS` gets
  429 (RESOURCE_EXHAUSTED);
* a request that waited :data:`SLOT_WAIT_SECONDS` for a worker gets 503;
* a response must be taken by the client within the REST timeout;
* after a request that held a lot of memory, freed heap pages go back to the
  system (:func:`memory.give_back`).
"""

from __future__ import annotations

import io
import queue
import re
import resource
import socket
import threading
import time
import zlib
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler

from serving.server import memory
from serving.server.http_connections import (
    BodyTooLarge,
    ByteBudget,
    Connection,
    ConnectionLoop,
    OverBudget,
    Request,
    error_page,
    response_bytes,
)
from serving.server.json_tensor import error_body, parse_cost, parse_limit
from serving.server.logs import get_logger
from serving.server.metrics import ServingMetrics
from serving.server.rest_api import CORS_HEADERS, V1_PATH, RestApi

__all__ = ["BUDGET_WAIT_SECONDS", "SLOT_WAIT_SECONDS", "ByteBudget", "RestLimits", "RestServer"]

log = get_logger()
_ORIGIN = re.compile(r"https?://")

# How long a request waits for its share of the bytes in flight before a 429.
BUDGET_WAIT_SECONDS = 3.0
# How long a request waits for a free worker before a 503.
SLOT_WAIT_SECONDS = 30.0
# File descriptors kept free for everything else (model files, gRPC, logs).
_SPARE_DESCRIPTORS = 256


class _SocketWriter(io.RawIOBase):
    """``wfile``: every write is one ``sendall`` (bounded by the socket's timeout)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self._sock.sendall(data)
        return len(data)


class _Workers:
    """Up to ``count`` daemon threads (started as needed) that run submitted calls.

    Daemon threads, unlike ``ThreadPoolExecutor``'s: a request still in the TensorFlow
    runtime after the shutdown grace period must not hold the process open."""

    def __init__(self, count: int, name: str) -> None:
        self._count = max(count, 1)
        self._name = name
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._idle = threading.Semaphore(0)
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def submit(self, call, *args) -> None:
        self._queue.put((call, args))
        if self._idle.acquire(blocking=False):
            return  # an idle worker takes it
        with self._lock:
            if len(self._threads) < self._count:
                thread = threading.Thread(
                    target=self._work, name=f"{self._name}_{len(self._threads)}", daemon=True
                )
                self._threads.append(thread)
                thread.start()

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            call, args = item
            try:
                call(*args)
            except Exception:  # noqa: BLE001 - never lose a worker
                log.exception("REST worker call failed")
            self._idle.release()

    def stop(self) -> None:
        with self._lock:
            for _ in self._threads:
                self._queue.put(None)


class _Handler(BaseHTTPRequestHandler):
    """Answers one request that the connection loop has read in full."""

    protocol_version = "HTTP/1.1"

    def __init__(self, server: RestServer, connection: Connection, request: Request) -> None:
        # No BaseRequestHandler.__init__: nothing is read from the socket here.
        self.server = server
        self.connection = self.request = connection.sock
        self.client_address = connection.address
        self.rfile = io.BytesIO(request.head)
        self.wfile = _SocketWriter(connection.sock)
        self.pending = request
        self.held = request.held
        self.close_connection = True

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - stdlib signature
        pass  # TF Serving does not log requests

    def handle_expect_100(self) -> bool:
        return True  # the connection loop has sent "100 Continue" already

    def send_error(self, code: int, message: str | None = None, explain: str | None = None):
        # Protocol errors (bad request line, unsupported method) as libevent sends them.
        self.close_connection = True
        self._send_page(code)

    def _send_page(self, code: int) -> None:
        self._reply(
            code,
            [("Content-Type", "text/html; charset=ISO-8859-1"), ("Connection", "close")],
            error_page(code),
        )
        self.close_connection = True

    def _reply(self, code: int, headers: list, body: bytes) -> None:
        # One write for the status line, headers and body: two small writes would meet
        # Nagle's algorithm and the client's delayed ACK (a 40 ms stall per request).
        headers = list(headers)
        if self.server.draining and ("Connection", "close") not in headers:
            headers.append(("Connection", "close"))
        if self.server.draining or ("Connection", "close") in headers:
            self.close_connection = True
        self.wfile.write(response_bytes(code, headers, body, self.command == "HEAD"))

    def _reserve(self, count: int) -> None:
        """Adds ``count`` bytes to what this request holds of the bytes in flight."""
        self.held += self.server.budget.acquire(count, BUDGET_WAIT_SECONDS, self.held)

    def _inflate(self, body: bytes) -> bytes:
        limit = self.server.max_body_bytes
        if "gzip" in self.headers.get("Content-Encoding", "").lower() and body:
            inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
            compressed = len(body)
            body = inflater.decompress(body, limit + 1)
            if len(body) > limit or inflater.unconsumed_tail:
                raise BodyTooLarge(len(body))
            self._reserve(max(len(body) - compressed, 0))
        return body

    def _dispatch(self) -> None:
        if time.monotonic() - self.pending.complete_at > SLOT_WAIT_SECONDS:
            self._json_error(503, "All REST worker threads stayed busy; try again later")
            return
        self._read_and_respond()

    def _json_error(self, status: int, message: str) -> None:
        self.close_connection = True
        self._reply(status, [("Content-Type", "application/json")], error_body(message))

    def _read_and_respond(self) -> None:
        try:
            body = self._inflate(self.pending.body)
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
        except zlib.error as error:
            self._json_error(400, f"Could not read the request body: {error}")
            return
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
    max_connections: int = 1024
    idle_timeout_seconds: float = 50.0
    header_timeout_seconds: float = 10.0


def _descriptors_for(connections: int) -> int:
    """How many of ``connections`` the open-files limit fits (``connections`` <= 0: all)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    fits = 65536 if soft == resource.RLIM_INFINITY else max(soft - _SPARE_DESCRIPTORS, 16)
    if connections <= 0:
        return fits
    if connections > fits:
        log.warning(
            "--rest_api_max_connections=%d does not fit the open-files limit of %d (ulimit "
            "-n): serving at most %d HTTP connections",
            connections,
            soft,
            fits,
        )
        return fits
    return connections


class RestServer:
    """Serves the REST API (and the Prometheus page) on one port.

    One loop thread reads the connections; ``num_threads`` workers answer.
    """

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
        self.rest_api = rest_api
        self.metrics = metrics
        self.monitoring_path = monitoring_path
        self.enable_cors = enable_cors
        self.max_body_bytes = limits.max_body_bytes
        self.write_timeout = limits.body_timeout_seconds
        self.budget = ByteBudget(limits.max_bytes_in_flight)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((host, port))
            # A long backlog (the kernel caps it at net.core.somaxconn): a burst of new
            # connections waits instead of having its SYNs dropped.
            listener.listen(4096)
        except OSError:
            listener.close()
            raise
        self.port = listener.getsockname()[1]
        self._workers = _Workers(limits.num_threads, "rest_worker")
        self._loop = ConnectionLoop(
            listener,
            self._dispatch,
            self.budget,
            lambda: BUDGET_WAIT_SECONDS,
            metrics,
            max_connections=_descriptors_for(limits.max_connections),
            idle_timeout=limits.idle_timeout_seconds,
            header_timeout=limits.header_timeout_seconds,
            body_timeout=limits.body_timeout_seconds,
            max_body_bytes=limits.max_body_bytes,
        )
        self._thread = threading.Thread(target=self._loop.run, name="rest_server", daemon=True)

    @property
    def draining(self) -> bool:
        return self._loop.draining

    def start(self) -> None:
        self._thread.start()

    def _dispatch(self, connection: Connection, request: Request) -> None:
        self._workers.submit(self._answer, connection, request)

    def _answer(self, connection: Connection, request: Request) -> None:
        handler = _Handler(self, connection, request)
        try:
            connection.sock.settimeout(self.write_timeout)
            handler.handle_one_request()
        except (ConnectionError, TimeoutError, OSError):
            handler.close_connection = True  # the client went away or does not read
        except Exception:  # noqa: BLE001 - one request's bug must not stop the worker
            log.exception("HTTP request from %s failed", connection.address)
            handler.close_connection = True
        finally:
            self.budget.release(handler.held)
            if handler.held >= memory.GIVE_BACK_THRESHOLD:
                memory.give_back()
            self._loop.give_back(connection, handler.close_connection)

    def shutdown(self, grace_seconds: float) -> bool:
        """Stops accepting, finishes requests in progress (up to the grace period).

        Returns False if some were still running at the end of it."""
        self._loop.start_draining()
        clean = self._loop.wait_empty(grace_seconds)
        if not clean:
            log.warning(
                "%d HTTP request(s) still running after the shutdown grace period",
                self._loop.busy_count(),
            )
        self._loop.stop()
        if self._thread.ident is not None:
            self._thread.join(2)
        self._workers.stop()
        return clean
