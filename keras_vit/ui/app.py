"""The page's HTTP server: standard library only, bound to loopback.

Routes: ``GET /`` (the page, no external assets), ``GET /api/info``
(``{"model", "explain"}``) and ``POST /api/predict`` (the raw image file as
the body) -> ``{"top_k": [[label, score], ...], "overlay": base64 PNG | null,
"elapsed_ms"}``; errors are ``{"error": message}`` with 400 (not an image),
413 (too large) or 502 (the model server failed).
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources

logger = logging.getLogger(__name__)

MAX_IMAGE_BYTES = 20 * 1024 * 1024
"""Uploads above this are refused before they are read."""


class UIServer:
    """Serves the page for ``backend`` on ``host:port`` (port 0: any free port).

    ``start()`` runs it in a background thread, ``serve_forever()`` in this one.
    """

    def __init__(self, backend, host: str = "127.0.0.1", port: int = 7860):
        self.backend = backend
        self.page = resources.files("keras_vit.ui").joinpath("page.html").read_bytes()
        # One model call at a time: the in-process model is not shared across threads.
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer((host, port), _handler(self))
        self.httpd.daemon_threads = True
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}/"

    def start(self) -> UIServer:
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        return self

    def serve_forever(self) -> None:
        self.httpd.serve_forever()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if self.thread is not None:
            self.thread.join(timeout=10)


def _handler(ui: UIServer):
    from serving.client.errors import InputImageError, ServingError

    class Handler(BaseHTTPRequestHandler):
        server_version = "keras-vit-ui"

        def log_message(self, format, *args):  # noqa: A002 - the base class's name
            logger.info("%s %s", self.address_string(), format % args)

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def _json(self, status: int, data: dict) -> None:
            self._send(status, json.dumps(data).encode(), "application/json")

        def do_GET(self):  # noqa: N802 - the base class's name
            if self.path in ("/", "/index.html"):
                self._send(HTTPStatus.OK, ui.page, "text/html; charset=utf-8")
            elif self.path == "/api/info":
                info = {"model": ui.backend.description, "explain": ui.backend.has_explain}
                self._json(HTTPStatus.OK, info)
            else:
                self._json(HTTPStatus.NOT_FOUND, {"error": f"no such page: {self.path}"})

        def do_POST(self):  # noqa: N802
            if self.path != "/api/predict":
                self._json(HTTPStatus.NOT_FOUND, {"error": f"no such route: {self.path}"})
                return
            try:
                length = int(self.headers.get("Content-Length", ""))
            except ValueError:
                self._json(HTTPStatus.LENGTH_REQUIRED, {"error": "Content-Length is required"})
                return
            if length > MAX_IMAGE_BYTES:
                self.close_connection = True
                self._json(
                    HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                    {"error": f"the image is {length} bytes; the limit is {MAX_IMAGE_BYTES}"},
                )
                return
            if length <= 0:
                self._json(HTTPStatus.BAD_REQUEST, {"error": "empty upload"})
                return
            image = self.rfile.read(length)
            started = time.perf_counter()
            try:
                with ui.lock:
                    answer = ui.backend.answer(image)
            except (InputImageError, ValueError, OSError) as error:
                self._json(HTTPStatus.BAD_REQUEST, {"error": f"not a usable image: {error}"})
                return
            except ServingError as error:
                self._json(HTTPStatus.BAD_GATEWAY, {"error": f"model server: {error}"})
                return
            overlay = answer.overlay_png
            self._json(
                HTTPStatus.OK,
                {
                    "top_k": [[label, float(score)] for label, score in answer.top_k],
                    "overlay": base64.b64encode(overlay).decode("ascii") if overlay else None,
                    "elapsed_ms": (time.perf_counter() - started) * 1000.0,
                },
            )

    return Handler
