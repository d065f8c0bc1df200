"""The HTTP transport of the REST API: tornado's HTTP/1.1 server (TF Serving uses libevent).

Why tornado (not aiohttp): its HTTP/1.1 reader frames requests strictly
(RFC 9112 section 6: a message with both Content-Length and Transfer-Encoding,
unequal or non-digit Content-Lengths, a transfer coding other than ``chunked``,
non-hex chunk sizes, folded, NUL-bearing or badly named header lines are all
refused with 400 and a closed connection), it has settings for the header size,
body size and body timeout, and its delegate interface hands us each body chunk
as it arrives (so the byte budget can hold the read back) and the raw request
target. aiohttp has neither a header nor a body timeout, and its request object
unescapes the path. What tornado lacks is in :mod:`http_connections` (the
connection cap, answered timeouts, the 431) and here.

What a client sees is kept: ``/v1/...`` goes to :class:`RestApi` (routing on the
raw target, query string included), the Prometheus page (if configured) is
served at its exact path (400 with a query string), everything else gets
libevent's HTML 404 page; gzip request bodies are inflated; CORS preflights are
answered; ``Expect: 100-continue`` gets libevent's ``100 Continue``.

tornado runs on the server's asyncio loop (:mod:`loop`, shared with gRPC); the
answers are computed by up to ``--rest_api_num_threads`` daemon worker threads
(``run_in_executor``), so idle, slow or silent connections hold no thread. Added
for safety (not in TF Serving):

* the limits of :mod:`http_connections` (connections, idle/header/body timeouts);
* request bodies above ``max_body_bytes`` (after gzip too) are refused with 413
  and a JSON error, a declared Content-Length at once, before reading it;
* the bytes of all requests in progress (each body as it arrives, plus what
  parsing it will take, :func:`json_tensor.parse_cost`) stay under
  ``max_bytes_in_flight``; a request that cannot get its share within
  :data:`BUDGET_WAIT_SECONDS` gets 429 (RESOURCE_EXHAUSTED). While a body waits
  for its share, its connection is not read;
* a request that waited :data:`SLOT_WAIT_SECONDS` for a worker gets 503;
* after a request that held a lot of memory, freed heap pages go back to the
  system (:func:`memory.give_back`).
"""

from __future__ import annotations

import asyncio
import email.utils
import re
import resource
import time
import zlib
from dataclasses import dataclass

from tornado import httputil
from tornado.http1connection import is_transfer_encoding_chunked, parse_int
from tornado.httpserver import HTTPServer
from tornado.ioloop import PeriodicCallback
from tornado.netutil import bind_sockets

from serving.server import memory
from serving.server.admission import ByteBudget, OverBudget
from serving.server.http_connections import (
    BODY,
    BUSY,
    DRAIN,
    HEADERS,
    LINGER,
    LINGER_SECONDS,
    MAX_HEADER_BYTES,
    PAGE_HEADERS,
    WAIT,
    WRITE,
    Conn,
    ConnectionTable,
    WatchedStream,
    error_page,
    page_response,
    reason_phrase,
    response_bytes,
)
from serving.server.json_tensor import error_body, parse_cost, parse_limit
from serving.server.logs import get_logger
from serving.server.loop import Workers
from serving.server.metrics import ServingMetrics
from serving.server.rest_api import CORS_HEADERS, V1_PATH, RestApi
from serving.server.vertex_routes import VertexRoutes

__all__ = ["BUDGET_WAIT_SECONDS", "SLOT_WAIT_SECONDS", "RestLimits", "RestServer"]

log = get_logger()
_ORIGIN = re.compile(r"https?://")
METHODS = frozenset({"GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH"})
_JSON_CLOSE = [("Content-Type", "application/json"), ("Connection", "close")]

# How long a request waits for its share of the bytes in flight before a 429.
BUDGET_WAIT_SECONDS = 3.0
# How long a request waits for a free worker before a 503.
SLOT_WAIT_SECONDS = 30.0
# File descriptors kept free for everything else (model files, gRPC, logs).
_SPARE_DESCRIPTORS = 256
# How often the connection deadlines are checked.
_TICK_MS = 100
_CHUNK = 1024 * 1024  # body bytes per read (and per data_received)
_NO_LIMIT = 365 * 86400.0  # tornado needs a number where our flags say 0 (no limit)


class BodyTooLarge(Exception):
    """The request body is over the configured limit."""


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


def declared_length(headers: httputil.HTTPHeaders) -> int | None:
    """The body length the headers declare (None: chunked), as tornado will read it.

    Raises ``HTTPInputError`` where tornado will refuse the framing when it reads the
    body (it then answers 400 and closes): Content-Length with Transfer-Encoding, a
    transfer coding other than ``chunked``, unequal or non-digit Content-Lengths."""
    if is_transfer_encoding_chunked(headers):
        return None
    value = headers.get("Content-Length")
    if value is None:
        return 0
    pieces = set(re.split(r",[ \t]*", value))
    try:
        if len(pieces) != 1:
            raise ValueError(value)
        return parse_int(pieces.pop())
    except ValueError:
        raise httputil.HTTPInputError(f"bad Content-Length: {value!r}") from None


class _Exchange(httputil.HTTPMessageDelegate):
    """One request: its headers and body as tornado reads them, then its answer."""

    def __init__(self, server: RestServer, conn: Conn, request_conn) -> None:
        self.server = server
        self.conn = conn
        self.request_conn = request_conn
        self.dropped = False
        self.parts: list[bytes] = []
        self.size = 0
        self.length: int | None = None  # declared (None: chunked)
        self.handed = False  # to a worker, which then releases the budget bytes
        self.held = 0  # bytes of the budget (released by the worker, or by drop())
        self.method = self.target = ""
        self.headers: httputil.HTTPHeaders | None = None

    # ------------------------------------------------------------------ reading (loop)

    def headers_received(self, start_line, headers) -> None:
        server, conn = self.server, self.conn
        if conn.state in (LINGER, DRAIN) or conn.stream.closed():
            # Answered already (a header timeout): tornado reads this request no further.
            self.dropped = True
            self.request_conn.detach()
            return
        self.method, self.target, self.headers = start_line.method, start_line.path, headers
        try:
            length = declared_length(headers)
            if start_line.version == "HTTP/1.0" and "Transfer-Encoding" in headers:
                raise httputil.HTTPInputError("Transfer-Encoding in an HTTP/1.0 request")
        except httputil.HTTPInputError:
            self.request_conn.detach()
            server.table.answer_and_close(conn, page_response(400))
            return
        if length is not None and length > server.max_body_bytes:
            # Refused at once; the body is read and dropped so the client reads the answer.
            self.request_conn.detach()
            server.table.answer_and_close(
                conn,
                response_bytes(413, _JSON_CLOSE, error_body(server.too_large(length))),
                seconds=max(server.table.body_timeout, LINGER_SECONDS),
                limit=length,
            )
            return
        self.length = length
        expect = headers.pop("Expect", "")  # answered here, in libevent's words
        if expect.lower() == "100-continue" and length != 0 and start_line.version == "HTTP/1.1":
            conn.stream.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        conn.exchange = self
        server.table.enter(conn, BODY)

    def data_received(self, chunk: bytes):
        if self.dropped:
            return None
        # (tornado refuses chunks past max_body_size before reading them: 400.)
        self.parts.append(chunk)
        self.size += len(chunk)
        # A declared body takes all its bytes with its first chunk (bodies that each took
        # a part would wait for each other); a chunked one as they come.
        need = max(self.length or self.size, self.size) - self.held
        if need > 0:
            try:
                self.held += self.server.budget.acquire(need, 0, self.held)
            except OverBudget:
                return self._wait_for_budget(need)  # tornado reads no more meanwhile
        return None

    async def _wait_for_budget(self, count: int) -> None:
        server = self.server
        loop = asyncio.get_running_loop()
        end = loop.time() + BUDGET_WAIT_SECONDS
        while not self.dropped:
            released = server.budget_released()
            try:
                self.held += server.budget.acquire(count, 0, self.held)
                return
            except OverBudget:
                pass
            left = end - loop.time()
            if left <= 0:
                message = (
                    f"This request's body needs {count} more bytes of the "
                    f"{server.budget.limit} bytes all requests in progress may hold "
                    "(--rest_api_max_bytes_in_flight), and they did not free up in time"
                )
                server.table.answer_and_close(
                    self.conn, response_bytes(429, _JSON_CLOSE, error_body(message))
                )
                return
            try:
                await asyncio.wait_for(asyncio.shield(released), left)
            except TimeoutError:
                pass

    def finish(self) -> None:
        if self.dropped or self.conn.exchange is not self:
            return
        self.server.table.enter(self.conn, BUSY)
        self.handed = True
        body, self.parts = b"".join(self.parts), []
        self.server.table.spawn(self._answer(body, time.monotonic()))

    def on_connection_close(self) -> None:
        self.drop()

    def drop(self) -> None:
        """Nothing more is read or answered for this request; its bytes go back."""
        if not self.dropped:
            self.dropped = True
            self.parts = []
            if self.conn.exchange is self:
                self.conn.exchange = None
            if not self.handed:
                self.server.budget.release(self.held)
                self.held = 0

    # ------------------------------------------------------------------ answering

    async def _answer(self, body: bytes, queued: float) -> None:
        server, conn = self.server, self.conn
        loop = asyncio.get_running_loop()
        try:
            code, headers, payload = await loop.run_in_executor(
                server.workers, self._respond, body, queued
            )
        except Exception:  # noqa: BLE001 - one request's bug must not stop the server
            log.exception("HTTP request %s %s failed", self.method, self.target)
            code, headers, payload = 500, list(_JSON_CLOSE), error_body("Internal error")
        if self.dropped or conn.exchange is not self:
            return  # timed out or the client went away meanwhile
        conn.exchange = None
        head_only = self.method == "HEAD"
        if server.draining or ("Connection", "close") in headers:
            if ("Connection", "close") not in headers:
                headers = [*headers, ("Connection", "close")]
            data = response_bytes(code, headers, payload, head_only)
            server.table.answer_and_close(conn, data)
            return
        server.table.enter(conn, WRITE)
        fields = httputil.HTTPHeaders(Date=email.utils.formatdate(usegmt=True))
        for name, value in headers:
            fields.add(name, value)
        fields.add("Content-Length", str(len(payload)))
        start = httputil.ResponseStartLine("HTTP/1.1", code, reason_phrase(code))
        # One write for the status line, headers and body (two would meet Nagle's
        # algorithm and the client's delayed ACK: a 40 ms stall per request).
        self.request_conn.write_headers(start, fields, None if head_only else payload)
        self.request_conn.finish()

    def _respond(self, body: bytes, queued: float) -> tuple[int, list, bytes]:
        """In a worker thread: (status, headers, body) of the answer."""
        server = self.server
        try:
            if time.monotonic() - queued > SLOT_WAIT_SECONDS:
                return self._error(503, "All REST worker threads stayed busy; try again later")
            if self.method not in METHODS:
                return 501, list(PAGE_HEADERS), error_page(501)
            try:
                body = self._inflate(body)
            except BodyTooLarge as error:
                return self._error(413, server.too_large(error.args[0]))
            except zlib.error as error:
                return self._error(400, f"Could not read the request body: {error}")
            cost = parse_cost(body) if self.method == "POST" and body else 0
            if cost <= parse_limit(len(body)):  # past its limit the parser refuses at once
                self.held += server.budget.acquire(cost, BUDGET_WAIT_SECONDS, self.held)
            return self._route(body)
        except OverBudget as error:
            return self._error(
                429,
                f"This request needs {error.args[0]} more bytes of the {server.budget.limit} "
                "bytes all requests in progress may hold (--rest_api_max_bytes_in_flight), "
                "and they did not free up in time",
            )
        finally:
            held, self.held = self.held, 0
            server.budget.release(held)
            if held >= memory.GIVE_BACK_THRESHOLD:
                memory.give_back()

    @staticmethod
    def _error(code: int, message: str) -> tuple[int, list, bytes]:
        return code, list(_JSON_CLOSE), error_body(message)

    def _inflate(self, body: bytes) -> bytes:
        limit = self.server.max_body_bytes
        if "gzip" in self.headers.get("Content-Encoding", "").lower() and body:
            inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
            compressed = len(body)
            body = inflater.decompress(body, limit + 1)
            if len(body) > limit or inflater.unconsumed_tail:
                raise BodyTooLarge(len(body))
            self.held += self.server.budget.acquire(
                max(len(body) - compressed, 0), BUDGET_WAIT_SECONDS, self.held
            )
        return body

    def _route(self, body: bytes) -> tuple[int, list, bytes]:
        server, method, target = self.server, self.method, self.target
        monitoring = server.monitoring_path
        if monitoring and target.split("?", 1)[0].split("#", 1)[0] == monitoring:
            if target != monitoring:
                return 400, [("Content-Type", "text/plain")], b""
            return 200, [("Content-Type", "text/plain")], server.metrics.prometheus_page().encode()
        if server.vertex and (answer := server.vertex.route(method, target, body)):
            return answer  # Vertex AI's health and predict routes (vertex_routes)
        if not V1_PATH.fullmatch(target):
            return 404, list(PAGE_HEADERS), error_page(404)
        if method == "OPTIONS":
            headers = list(CORS_HEADERS) if server.enable_cors else []
            return (200 if _ORIGIN.search(self.headers.get("Origin", "")) else 400), headers, b""
        return server.rest_api.handle(method, target, body)


class _Server(HTTPServer):
    """tornado's server, with each new connection taken into the table first."""

    def initialize(self, request_callback, table: ConnectionTable, **kwargs) -> None:
        super().initialize(request_callback, **kwargs)
        self.table = table

    def handle_stream(self, stream, address: tuple) -> None:
        # The same socket in a WatchedStream (nothing has used the first stream yet).
        stream = WatchedStream(
            stream.socket, max_buffer_size=stream.max_buffer_size, read_chunk_size=_CHUNK
        )
        if self.table.admit(stream):
            super().handle_stream(stream, address)


class RestServer(httputil.HTTPServerConnectionDelegate):
    """Serves the REST API (and the Prometheus page) on one port.

    tornado reads the connections on the server's asyncio loop (:mod:`loop`); up to
    ``num_threads`` workers answer. Built and started on that loop."""

    def __init__(
        self,
        host: str,
        port: int,
        rest_api: RestApi,
        metrics: ServingMetrics,
        monitoring_path: str | None,
        limits: RestLimits,
        enable_cors: bool,
        vertex: VertexRoutes | None = None,
    ) -> None:
        self.rest_api = rest_api
        self.vertex = vertex
        self.metrics = metrics
        self.monitoring_path = monitoring_path
        self.enable_cors = enable_cors
        self.max_body_bytes = limits.max_body_bytes
        self.budget = ByteBudget(limits.max_bytes_in_flight)
        self.draining = False
        # A long backlog (the kernel caps it at net.core.somaxconn): a burst of new
        # connections waits instead of having its SYNs dropped.
        self._sockets = bind_sockets(port, host, backlog=4096)
        self.port = self._sockets[0].getsockname()[1]
        self.workers = Workers(limits.num_threads, "rest_worker")
        self._loop = asyncio.get_running_loop()
        self._released = self._loop.create_future()
        self.budget.on_release = self._on_budget_release
        self.table = ConnectionTable(
            metrics,
            max_connections=_descriptors_for(limits.max_connections),
            idle_timeout=limits.idle_timeout_seconds,
            header_timeout=limits.header_timeout_seconds,
            body_timeout=limits.body_timeout_seconds,
            on_timeout=self._timed_out,
        )
        self._http = _Server(
            self,
            table=self.table,
            chunk_size=_CHUNK,
            max_header_size=MAX_HEADER_BYTES,
            # Our own deadlines (http_connections) answer; tornado's would close silently.
            idle_connection_timeout=_NO_LIMIT,
            max_body_size=self.max_body_bytes,
            max_buffer_size=2 * _CHUNK + MAX_HEADER_BYTES,
        )
        self._ticker = PeriodicCallback(self.table.expire, _TICK_MS)

    def too_large(self, size: int) -> str:
        return (
            f"Request body of {size} bytes or more is larger than the {self.max_body_bytes} "
            "bytes this server accepts (--rest_api_max_request_bytes)"
        )

    def start(self) -> None:
        self._http.add_sockets(self._sockets)
        self._ticker.start()

    def start_request(self, server_conn, request_conn) -> httputil.HTTPMessageDelegate:
        conn = server_conn.stream.conn
        if conn.state not in (LINGER, DRAIN) and conn.state != HEADERS:
            self.table.enter(conn, WAIT)  # a first byte already read keeps it in HEADERS
        return _Exchange(self, conn, request_conn)

    def _timed_out(self, conn: Conn) -> None:
        state = conn.state
        if state == WAIT:
            self.table.count("idle_timeout")
            conn.stream.close()
        elif state == HEADERS:
            self.table.answer_and_close(conn, page_response(408), "header_timeout")
        elif state == BODY:
            message = error_body("The request body did not arrive in time")
            data = response_bytes(408, _JSON_CLOSE, message)
            self.table.answer_and_close(conn, data, "body_timeout")
        else:  # WRITE: the client does not take its answer
            conn.stream.close()

    def budget_released(self) -> asyncio.Future:
        """A future done at the next release of budget bytes (in the loop thread)."""
        return self._released

    def _on_budget_release(self) -> None:
        if not self._loop.is_closed():
            try:
                self._loop.call_soon_threadsafe(self._wake_budget_waiters)
            except RuntimeError:  # the loop stopped
                pass

    def _wake_budget_waiters(self) -> None:
        released, self._released = self._released, self._loop.create_future()
        released.set_result(None)

    async def stop(self, grace_seconds: float) -> bool:
        """Stops accepting, finishes requests in progress (up to the grace period),
        closes every connection. Returns False if some were still running at the end."""
        self.draining = True
        self._http.stop()  # stops listening
        self.table.close_idle()
        clean = True
        try:
            await asyncio.wait_for(self.table.wait_empty(), max(grace_seconds, 0.1))
        except TimeoutError:
            clean = False
            log.warning(
                "%d HTTP request(s) still running after the shutdown grace period",
                len(self.table),
            )
        self._ticker.stop()
        self.table.close_all()
        self.workers.shutdown()
        return clean
