"""The page's HTTP server: tornado on an asyncio loop, bound to loopback.

Routes: ``GET /`` (the page, no external assets), ``GET /api/info``
(``{"model", "explain"}``) and ``POST /api/predict`` (the raw image file as
the body, with the page's token in ``X-Keras-Vit-Token``) -> ``{"top_k":
[[label, score], ...], "overlay": base64 PNG | null, "elapsed_ms"}``. Errors
are ``{"error": message}``: 400 (not an image), 403 (cross-origin, no token),
411 (no Content-Length), 413 (too large), 415 (a body type a cross-site form
could send), 421 (a ``Host`` this page does not answer for: DNS rebinding),
503 (the upload budget is spent) or 502 (the model server failed).

Bounds: one event-loop thread holds every connection (an idle or slow one
costs a socket, not a thread); predictions run on a fixed pool of threads
(``backend.concurrency``); an upload must arrive within ``upload_timeout``
seconds or its connection is closed; the uploads and predictions in flight
share one :class:`~keras_vit.ui.budget.UploadBudget`, and heap memory goes
back to the system once large uploads are answered.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import io
import json
import logging
import threading
import time
from http import HTTPStatus
from importlib import resources

import tornado.httpserver
import tornado.netutil
import tornado.web

from keras_vit.ui.budget import UploadBudget
from keras_vit.ui.guard import TOKEN_HEADER, RequestGuard
from serving.client.errors import InputImageError, ServingError
from serving.server.memory import GIVE_BACK_THRESHOLD, give_back

logger = logging.getLogger(__name__)

MAX_IMAGE_BYTES = 20 * 1024 * 1024
"""Uploads above this are refused before they are read."""
UPLOAD_BUDGET_BYTES = 64 * 1024 * 1024
"""Default bytes of uploads all requests in flight may hold together (3 largest images)."""
MAX_PENDING_PREDICTIONS = 16
"""Predictions running or queued past which an uploaded image gets 503."""
UPLOAD_TIMEOUT_S = 60.0
"""Default seconds an upload may take to arrive."""
IDLE_TIMEOUT_S = 60.0
"""Seconds a connection may sit idle (or send its headers) before it is closed."""
TOKEN_PLACEHOLDER = b"__KERAS_VIT_TOKEN__"

# What the page needs and nothing else: inline script and style, images from data:
# and blob: URLs, fetches to itself; no framing (clickjacking), no forms, no base.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "img-src data: blob:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "form-action 'none'"
)


class UIServer:
    """Serves the page for ``backend`` on ``host:port`` (port 0: any free port).

    The socket is bound here (an ``OSError`` if the port is taken); ``start()``
    runs the server on its own event-loop thread, ``serve_forever()`` in this one
    (until Ctrl-C), ``stop()`` stops either. ``allowed_hosts``: more ``Host`` names
    to answer for (``NAME`` or ``NAME:PORT``, see :class:`RequestGuard`).
    """

    def __init__(
        self,
        backend,
        host: str = "127.0.0.1",
        port: int = 7860,
        *,
        allowed_hosts=(),
        upload_budget: int = UPLOAD_BUDGET_BYTES,
        upload_timeout: float = UPLOAD_TIMEOUT_S,
        idle_timeout: float = IDLE_TIMEOUT_S,
        max_image_bytes: int = MAX_IMAGE_BYTES,
        max_pending: int = MAX_PENDING_PREDICTIONS,
    ):
        if upload_budget < max_image_bytes:
            raise ValueError(
                f"the upload budget ({upload_budget} bytes) must hold at least one image of "
                f"the largest size ({max_image_bytes} bytes)"
            )
        if upload_timeout <= 0 or idle_timeout <= 0:
            raise ValueError("the upload and idle timeouts must be positive")
        self.backend = backend
        self.max_image_bytes = max_image_bytes
        self.upload_timeout = upload_timeout
        self.idle_timeout = idle_timeout
        self.budget = UploadBudget(upload_budget)
        self.max_pending = max_pending
        self.pending = 0  # predictions running or queued (event-loop thread only)
        self.sockets = tornado.netutil.bind_sockets(port, host)
        self.host, self.port = host, self.sockets[0].getsockname()[1]
        try:
            self.guard = RequestGuard(host, self.port, allowed_hosts)
        except ValueError:
            for sock in self.sockets:
                sock.close()
            raise
        template = resources.files("keras_vit.ui").joinpath("page.html").read_bytes()
        self.page = template.replace(TOKEN_PLACEHOLDER, self.guard.token.encode())
        # The in-process model is not shared across threads: it runs on one.
        self.executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=getattr(backend, "concurrency", 1), thread_name_prefix="keras-vit-ui"
        )
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread: threading.Thread | None = None
        self._server: tornado.httpserver.HTTPServer | None = None
        self._started = threading.Event()
        self._stopped: asyncio.Event | None = None
        self._released_since_trim = 0

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def start(self) -> UIServer:
        self.thread = threading.Thread(target=self._run, name="keras-vit-ui-loop", daemon=True)
        self.thread.start()
        if not self._started.wait(timeout=30):
            raise RuntimeError("the ui server's event loop did not start within 30 s")
        return self

    def serve_forever(self) -> None:
        """Serves in this thread until ``stop()`` or Ctrl-C (KeyboardInterrupt is raised)."""
        self._run()

    def stop(self) -> None:
        if self.loop is not None and self._stopped is not None and not self.loop.is_closed():
            try:
                self.loop.call_soon_threadsafe(self._stopped.set)
            except RuntimeError:  # the loop closed in between
                pass
        if self.thread is not None:
            self.thread.join(timeout=10)
        self.close()

    def close(self) -> None:
        """Releases the sockets and the prediction threads (the backend is the caller's)."""
        for sock in self.sockets:
            sock.close()
        self.executor.shutdown(wait=False, cancel_futures=True)

    def _run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        app = tornado.web.Application(
            [
                (r"/(?:index\.html)?", PageHandler, {"ui": self}),
                (r"/api/info", InfoHandler, {"ui": self}),
                (r"/api/predict", PredictHandler, {"ui": self}),
                (r".*", NotFoundHandler, {"ui": self}),
            ],
            # Not tornado 6.6's cross_origin_protection: it runs before prepare() (so before
            # the Host check) and answers 500 to a malformed Origin such as "http://[::1".
            # keras_vit/ui/guard.py checks Sec-Fetch-Site and Origin itself, after Host.
        )
        self._server = tornado.httpserver.HTTPServer(
            app,
            max_body_size=self.max_image_bytes,
            body_timeout=self.upload_timeout,
            idle_connection_timeout=self.idle_timeout,
            max_header_size=64 * 1024,
        )
        self._server.add_sockets(self.sockets)
        self._started.set()
        try:
            await self._stopped.wait()
        finally:
            self._server.stop()
            try:
                await asyncio.wait_for(self._server.close_all_connections(), timeout=5)
            except TimeoutError:  # a connection that would not close: the process ends anyway
                logger.warning("some ui connections did not close within 5 s")

    def released(self, size: int) -> None:
        """After an upload's bytes are freed: give heap memory back after large ones."""
        self._released_since_trim += size
        if (
            self._released_since_trim >= GIVE_BACK_THRESHOLD
            and self.budget.in_use_bytes < GIVE_BACK_THRESHOLD
        ):
            self._released_since_trim = 0
            give_back()


@tornado.web.stream_request_body
class _Handler(tornado.web.RequestHandler):
    """Every route streams: ``prepare()`` sees the headers before any body is read, and a
    body sent where none belongs (a GET) is dropped as it arrives, never buffered."""

    def initialize(self, ui: UIServer) -> None:
        self.ui = ui

    def data_received(self, chunk: bytes) -> None:
        pass

    def set_default_headers(self) -> None:
        self.set_header("Server", "keras-vit-ui")
        self.set_header("Cache-Control", "no-store")
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("X-Frame-Options", "DENY")
        self.set_header("Referrer-Policy", "no-referrer")

    def prepare(self):
        error = self.ui.guard.host_error(self.request.headers.get("Host"))
        if error is not None:
            self.refuse(HTTPStatus.MISDIRECTED_REQUEST, error)

    def refuse(self, status: int, message: str, close: bool = False) -> None:
        self.set_status(status)
        if close:
            self.set_header("Connection", "close")
        self.json({"error": message})

    def json(self, data: dict) -> None:
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(data).encode())

    def write_error(self, status_code: int, **kwargs) -> None:
        # tornado's own errors (cross-origin 403, 405, 500) as JSON like the page's.
        message = self._reason
        exc_info = kwargs.get("exc_info")
        if exc_info and isinstance(exc_info[1], tornado.web.HTTPError) and exc_info[1].log_message:
            message = (
                exc_info[1].log_message % exc_info[1].args
                if exc_info[1].args
                else (exc_info[1].log_message)
            )
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"error": message}).encode())

    def log_exception(self, typ, value, tb) -> None:
        if isinstance(value, tornado.web.HTTPError):
            logger.info("%s %s: %s", self.request.method, self.request.uri, value)
        else:
            super().log_exception(typ, value, tb)


class PageHandler(_Handler):
    def get(self) -> None:
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.set_header("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        self.finish(self.ui.page)


class InfoHandler(_Handler):
    def get(self) -> None:
        backend = self.ui.backend
        self.json({"model": backend.description, "explain": backend.has_explain})


class NotFoundHandler(_Handler):
    def get(self) -> None:
        self.refuse(HTTPStatus.NOT_FOUND, f"no such page: {self.request.path}")

    def post(self) -> None:
        self.refuse(HTTPStatus.NOT_FOUND, f"no such route: {self.request.path}")


class PredictHandler(_Handler):
    """``POST /api/predict``: every check runs on the headers, before the body is read."""

    SUPPORTED_METHODS = ("POST",)

    def prepare(self):
        self.reservation = None
        self.predicting = False
        self.body: io.BytesIO | None = None
        super().prepare()
        if self._finished:
            return
        headers = self.request.headers
        refusal = self.ui.guard.post_error(
            headers["Host"], headers.get("Origin"), headers.get(TOKEN_HEADER),
            headers.get("Content-Type"), headers.get("Sec-Fetch-Site"),
        )  # fmt: skip
        if refusal is not None:
            self.refuse(*refusal, close=True)
            return
        if "Transfer-Encoding" in headers:
            self.refuse(
                HTTPStatus.LENGTH_REQUIRED, "send the image with a Content-Length", close=True
            )
            return
        try:
            length = int(headers.get("Content-Length", ""))
        except ValueError:
            self.refuse(HTTPStatus.LENGTH_REQUIRED, "Content-Length is required", close=True)
            return
        if length > self.ui.max_image_bytes:
            self.refuse(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                f"the image is {length} bytes; the limit is {self.ui.max_image_bytes}",
                close=True,
            )
            return
        if length <= 0:
            self.refuse(HTTPStatus.BAD_REQUEST, "empty upload")
            return
        self.reservation = self.ui.budget.reserve(length)
        if self.reservation is None:
            self.set_header("Retry-After", "1")
            self.refuse(HTTPStatus.SERVICE_UNAVAILABLE, self.ui.budget.refusal(length), close=True)
            return
        # One buffer of the declared size, allocated once (what the budget reserved); the
        # chunks are written into it and getvalue() hands it over without a copy. Growing
        # it chunk by chunk could copy it on a realloc: twice the upload for a moment.
        self.body = io.BytesIO()
        self.body.seek(length - 1)
        self.body.write(b"\0")
        self.body.seek(0)

    def data_received(self, chunk: bytes) -> None:
        if self.body is not None:
            self.body.write(chunk)

    async def post(self) -> None:
        image = self.body.getvalue()
        self.body = None
        if self.ui.pending >= self.ui.max_pending:
            self.set_header("Retry-After", "1")
            self.refuse(
                HTTPStatus.SERVICE_UNAVAILABLE,
                f"the page is busy: {self.ui.pending} predictions running or queued, the most "
                "it takes; try again in a moment",
            )
            return
        started = time.perf_counter()
        self.predicting = True
        self.ui.pending += 1
        try:
            answer = await asyncio.get_running_loop().run_in_executor(
                self.ui.executor, self.ui.backend.answer, image
            )
        except (InputImageError, ValueError, OSError) as error:
            self.refuse(HTTPStatus.BAD_REQUEST, f"not a usable image: {error}")
            return
        except ServingError as error:
            self.refuse(HTTPStatus.BAD_GATEWAY, f"model server: {error}")
            return
        finally:
            del image
            self.ui.pending -= 1
            self.predicting = False
            if self.request.connection.stream is None or self.request.connection.stream.closed():
                self._release()  # the client left while the model ran
        overlay = answer.overlay_png
        self.json(
            {
                "top_k": [[label, float(score)] for label, score in answer.top_k],
                "overlay": base64.b64encode(overlay).decode("ascii") if overlay else None,
                "elapsed_ms": (time.perf_counter() - started) * 1000.0,
            }
        )

    def on_finish(self) -> None:
        self._release()

    def on_connection_close(self) -> None:
        super().on_connection_close()
        if not self.predicting:  # else the running prediction still holds the image
            self._release()

    def _release(self) -> None:
        self.body = None
        if self.reservation is not None and self.ui.budget.release(self.reservation):
            self.ui.released(self.reservation.size)
