"""Shared helpers of the client tests: images and a fake TF Serving REST server.

Imports no TensorFlow (the no-TensorFlow REST test runs this module in a subprocess).
It holds no tests itself.
"""

from __future__ import annotations

import base64
import io
import json
import re
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
from PIL import Image

CHANNELS = ("red", "green", "blue")
VERTEX_PATH = re.compile(r"^/v1/projects/[^/]+/locations/[^/]+/endpoints/[^/:]+:predict$")
MODEL_PATH = re.compile(
    r"^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>\d+)|/labels/(?P<label>[^/:]+))?"
    r"(?::(?P<verb>predict|classify)|/(?P<metadata>metadata))?$"
)


def solid(rgb: tuple[int, int, int], size: tuple[int, int] = (40, 30)) -> np.ndarray:
    """An HWC uint8 image of one colour (``size`` is width, height)."""
    return np.full((size[1], size[0], 3), rgb, dtype=np.uint8)


def encode(array: np.ndarray, fmt: str = "PNG", quality: int = 95) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt, quality=quality)
    return buffer.getvalue()


def big_photo_jpeg(size: tuple[int, int] = (4000, 3000), quality: int = 97) -> bytes:
    """skimage's ``coffee`` photo upscaled to about 12 MP, as a JPEG of about 2 MB."""
    from skimage import data

    photo = Image.fromarray(data.coffee()).resize(size, Image.BICUBIC)
    buffer = io.BytesIO()
    photo.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def decode(data: bytes) -> np.ndarray:
    """Pixels as the fake model sees them (RGB, first frame), or ValueError."""
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except Exception as error:  # noqa: BLE001 - any decoder failure is a bad image
        raise ValueError(f"Failed to decode image: {error}") from None
    return np.asarray(image.convert("RGB"))


def classify_pixels(pixels: np.ndarray) -> dict[str, Any]:
    """The fake model: the dominant colour channel is the label, its share the score."""
    means = pixels.reshape(-1, 3).astype(np.float64).mean(axis=0) + 1.0
    shares = means / means.sum()
    order = np.argsort(-shares, kind="stable")
    return {
        "label": CHANNELS[order[0]],
        "score": float(shares[order[0]]),
        "top_k_labels": [CHANNELS[i] for i in order],
        "top_k_scores": [float(shares[i]) for i in order],
        "probabilities": [float(s) for s in shares],
    }


def embed_pixels(pixels: np.ndarray) -> list[float]:
    """The fake embedding: mean R, G, B and the pixel count."""
    means = pixels.reshape(-1, 3).astype(np.float64).mean(axis=0)
    return [
        float(means[0]),
        float(means[1]),
        float(means[2]),
        float(pixels.shape[0] * pixels.shape[1]),
    ]


class FakeRestServer:
    """A TF Serving-shaped REST server on 127.0.0.1 for the client tests.

    Serves model ``vit`` (version 1): ``:predict`` (``serving_default`` and ``embedding``),
    ``:classify``, status and metadata, plus Vertex's ``/v1/projects/.../endpoints/E:predict``.
    ``script`` holds canned ``(status, body)`` replies returned, in order, before real ones;
    ``hook`` runs first in every request (to block or count). Every request is recorded.
    """

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.script: list[tuple[int, str]] = []
        self.hook: Callable[[dict[str, Any]], None] | None = None
        self.received_sizes: list[tuple[int, int]] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                # Headers and body go out in two writes: without this, Nagle's algorithm and
                # delayed ACKs add ~40 ms to every reply.
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                server._handle(self, "GET")

            def do_POST(self) -> None:
                server._handle(self, "POST")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.target = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.target}"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def __enter__(self) -> FakeRestServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def _handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        record = {
            "method": method,
            "path": handler.path,
            "headers": dict(handler.headers),
            "bytes": len(body),
            "body": body,
        }
        with self.lock:
            self.requests.append(record)
            canned = self.script.pop(0) if self.script else None
        if self.hook is not None:
            self.hook(record)
        if canned is None:
            status, text = self._answer(method, handler.path, body)
        else:
            status, text = canned
        payload = text.encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        handler.wfile.write(payload)

    def _answer(self, method: str, path: str, body: bytes) -> tuple[int, str]:
        if VERTEX_PATH.match(path) and method == "POST":
            return self._predict(json.loads(body), vertex=True)
        match = MODEL_PATH.match(path)
        if not match:
            return 400, error_body(f"Malformed request: {method} {path}")
        if match["name"] != "vit":
            return 404, error_body(f"Servable not found for request: Latest({match['name']})")
        if method == "GET" and match["metadata"]:
            return 200, json.dumps(METADATA)
        if method == "GET" and not match["verb"]:
            return 200, json.dumps(STATUS)
        if method == "POST" and match["verb"] == "predict":
            return self._predict(json.loads(body), vertex=False)
        if method == "POST" and match["verb"] == "classify":
            return self._classify(json.loads(body))
        return 400, error_body(f"Malformed request: {method} {path}")

    def _images(self, items: list[Any]) -> list[np.ndarray]:
        pixels = []
        for index, item in enumerate(items):
            if isinstance(item, dict) and "image_bytes" in item:
                item = item["image_bytes"]
            try:
                pixels.append(decode(base64.b64decode(item["b64"])))
            except ValueError as error:
                raise BadImage(f"Failed to process element: {index}. Error: {error}") from None
        with self.lock:
            self.received_sizes.extend((p.shape[1], p.shape[0]) for p in pixels)
        return pixels

    def _predict(self, request: dict[str, Any], vertex: bool) -> tuple[int, str]:
        signature = request.get("signature_name") or "serving_default"
        try:
            pixels = self._images(request["instances"])
        except BadImage as error:
            return 400, error_body(str(error))
        if signature == "embedding" and not vertex:
            # One output: TF Serving lists the values without the output name.
            return 200, json.dumps({"predictions": [embed_pixels(p) for p in pixels]}, indent=4)
        if signature != "serving_default":
            return 400, error_body(
                f'Serving signature name: "{signature}" not found in signature def'
            )
        reply: dict[str, Any] = {"predictions": [classify_pixels(p) for p in pixels]}
        if vertex:
            reply["deployedModelId"] = "4242"
        return 200, json.dumps(reply, indent=4)

    def _classify(self, request: dict[str, Any]) -> tuple[int, str]:
        try:
            pixels = self._images([ex["image/encoded"] for ex in request["examples"]])
        except BadImage as error:
            return 400, error_body(str(error))
        results = []
        for p in pixels:
            out = classify_pixels(p)
            results.append(
                [
                    [lab, sc]
                    for lab, sc in zip(out["top_k_labels"], out["top_k_scores"], strict=True)
                ]
            )
        return 200, json.dumps({"results": results})


class BadImage(Exception):
    pass


def error_body(message: str) -> str:
    """TF Serving's error body: rapidjson PrettyWriter, 4-space indent."""
    return json.dumps({"error": message}, indent=4)


# TF Serving's documented status reply (g3doc/api_rest.md, as quoted in tfserving-protocol.md 1.7).
STATUS = {
    "model_version_status": [
        {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
    ]
}
METADATA = {
    "model_spec": {"name": "vit", "signature_name": "", "version": "1"},
    "metadata": {
        "signature_def": {
            "signature_def": {
                "serving_default": {
                    "inputs": {"image_bytes": {"dtype": "DT_STRING", "name": "image_bytes:0"}},
                    "method_name": "tensorflow/serving/predict",
                }
            }
        }
    },
}
