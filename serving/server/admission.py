"""Admission by cost: a request is refused before any work when what it would hold is too much.

Request-size limits count bytes, but a request's memory and time follow what it
holds: 100,000 one-byte strings are 293 KiB on the wire, and each string is an
element the model's decode stage works on (a ``tf.data`` element, its header
tensors, a resized image of the model's input size). So before a request runs:

* its string elements (encoded images, serialized ``tf.Example``; and the images
  of a ``serving_pixels`` request, each resized to a model-input image) are
  counted: more than ``--max_request_elements`` get INVALID_ARGUMENT;
* its decode cost is estimated: ``elements x per-element bytes`` (a fixed
  overhead, plus the float32 model-input image made for each element, kept about
  three times over by the decode graph) ``+ decoded pixels`` (the pixels the
  images' headers declare, read here without decoding, capped by the export's
  ``max_pixels`` / ``max_request_pixels`` settings);
* the estimate comes out of one budget shared by every request in flight, gRPC
  and REST alike (``--max_decode_bytes_in_flight``). A request estimated over
  the whole budget gets INVALID_ARGUMENT; one that does not get its share within
  :data:`WAIT_SECONDS` gets RESOURCE_EXHAUSTED (HTTP 429). Requests in flight
  therefore never hold more than the budget together, however many arrive.

Image sizes and limits come from the export's ``assets.extra/keras_vit_export.json``
(see :mod:`serving.export`); other models' string inputs are charged the fixed
per-element overhead only.
"""

from __future__ import annotations

import binascii
import contextlib
import heapq
import json
import threading
import time
import weakref
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from serving.server.status import Code, ServingError, invalid_argument

# Fixed bytes per string element in the decode stage (tf.data element, header tensors,
# index bookkeeping). Measured on the exported decode graph: 1.6 KB per element that
# fails the batch-wide checks, 36 KB per valid 1x1 PNG for a 32x32 model, of which
# 3 x 12 KB are model-input images (benchmarks/results/abuse.md).
ELEMENT_BYTES = 8 * 1024
# Float32 model-input images per element the decode graph holds at once (decoded batch,
# scattered batch, model input).
MODEL_IMAGE_COPIES = 3
# Per decoded pixel: the uint8 RGB image and the float32 image the resize reads.
DECODED_PIXEL_BYTES = 3 + 3 * 4
# Images of one request the decode graph decodes at once (keras_vit.decode.PARALLEL_DECODES).
PARALLEL_DECODES = 8
# How long a request waits for its share of the budget before RESOURCE_EXHAUSTED.
WAIT_SECONDS = 3.0

DEFAULT_MAX_REQUEST_ELEMENTS = 4096
DEFAULT_MAX_DECODE_BYTES_IN_FLIGHT = 768 * 1024 * 1024

SETTINGS_FILE = "keras_vit_export.json"  # serving.export.SETTINGS_FILE
EXAMPLE_FEATURE = "image/encoded"  # serving.export.EXAMPLE_FEATURE
# The export's signatures whose string input is image bytes (or tf.Examples holding them).
_IMAGE_SIGNATURES = ("serving_default", "embedding", "classify", "explain")
# The export's signature taking uint8 pixels [N, height, width, 3]: each image an element.
PIXELS_SIGNATURE = "serving_pixels"


def _size_text(nbytes: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if nbytes >= size:
            return f"{nbytes / size:.1f} {unit}"
    return f"{nbytes} bytes"


# ----------------------------------------------------------------------------------------
# What the model's decode stage costs.


@dataclass(frozen=True)
class ImageInputs:
    """The image-bytes inputs of a keras-vit export and the limits it was exported with."""

    image_size: tuple[int, int]
    max_pixels: int
    max_request_pixels: int
    signatures: frozenset[str]

    @property
    def model_image_bytes(self) -> int:
        height, width = self.image_size
        return height * width * 3 * 4

    @staticmethod
    def read(export_dir: str) -> ImageInputs | None:
        """From ``assets.extra/keras_vit_export.json``; None when the model is not ours."""
        path = Path(export_dir) / "assets.extra" / SETTINGS_FILE
        try:
            settings = json.loads(path.read_text())
            height, width = (int(s) for s in settings["image_size"])
            max_pixels = int(settings["max_pixels"])
            max_request_pixels = int(settings.get("max_request_pixels") or max_pixels)
            signatures = frozenset(settings.get("signatures", ())) & frozenset(
                (*_IMAGE_SIGNATURES, PIXELS_SIGNATURE)
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return ImageInputs((height, width), max_pixels, max_request_pixels, signatures)


_IMAGE_INPUTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_NOT_OURS = object()


def image_inputs_of(servable) -> ImageInputs | None:
    """:meth:`ImageInputs.read` for a loaded servable, read once per servable."""
    found = _IMAGE_INPUTS.get(servable)
    if found is None:
        found = ImageInputs.read(servable.path) or _NOT_OURS
        _IMAGE_INPUTS[servable] = found
    return None if found is _NOT_OURS else found


def _be(data: bytes, at: int, n: int) -> int:
    return int.from_bytes(data[at : at + n], "big")


def _le(data: bytes, at: int, n: int) -> int:
    return int.from_bytes(data[at : at + n], "little")


def _jpeg_pixels(data: bytes) -> int | None:
    """The frame size in the first SOF marker, walking the segments (none: unknown)."""
    at = 2
    for _ in range(256):  # segments before the frame header; more: unknown
        if at + 4 > len(data) or data[at] != 0xFF:
            return None
        marker = data[at + 1]
        if marker == 0xFF:  # a fill byte
            at += 1
            continue
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            return _be(data, at + 5, 2) * _be(data, at + 7, 2) if at + 9 <= len(data) else None
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            at += 2
            continue
        at += 2 + _be(data, at + 2, 2)
    return None


def _gif_pixels(data: bytes) -> int | None:
    """max(screen, first frame) if the first image descriptor comes within a few blocks."""
    screen = _le(data, 6, 2) * _le(data, 8, 2)
    flags = data[10] if len(data) > 10 else 0
    at = 13 + (3 * 2 ** (flags % 8 + 1) if flags >= 128 else 0)
    for _ in range(64):
        if at >= len(data):
            return None
        if data[at] == 0x2C:  # image descriptor
            if at + 9 > len(data):
                return None
            return max(screen, _le(data, at + 5, 2) * _le(data, at + 7, 2))
        if data[at] != 0x21:  # not an extension either: the decoder will refuse it
            return 0
        at += 2
        while at < len(data) and data[at] != 0:  # sub-blocks
            at += data[at] + 1
        at += 1
    return None  # a flood of extension blocks: unknown


def _webp_pixels(data: bytes) -> int | None:
    chunk = data[12:16]
    if chunk == b"VP8X":
        return (_le(data, 24, 3) + 1) * (_le(data, 27, 3) + 1)
    if chunk == b"VP8 ":
        return (_le(data, 26, 2) % 16384) * (_le(data, 28, 2) % 16384)
    if chunk == b"VP8L":
        bits = _le(data, 21, 4)
        return (bits % 16384 + 1) * (bits // 16384 % 16384 + 1)
    return 0


def _unwrap_base64(data: bytes) -> bytes | None:
    """The bytes of base64 text (as keras_vit.decode accepts it), None if it is not."""
    text = data.strip()
    if text.startswith(b"data:"):
        text = text.partition(b",")[2]
    text = b"".join(text.split()).rstrip(b"=")
    text = text.replace(b"-", b"+").replace(b"_", b"/")
    try:
        return binascii.a2b_base64(text + b"=" * (-len(text) % 4), strict_mode=True)
    except (binascii.Error, ValueError):
        return None


def image_pixels(data: bytes, unwrap: bool = True) -> int | None:
    """Pixels an encoded image's header declares (0: no image; None: unknown), no decoding."""
    if len(data) < 16:
        return 0 if not unwrap else _base64_pixels(data)
    if data.startswith(b"\xff\xd8\xff"):
        return _jpeg_pixels(data)
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return _be(data, 16, 4) * _be(data, 20, 4) if data[12:16] == b"IHDR" else 0
    if data.startswith((b"GIF87a", b"GIF89a")):
        return _gif_pixels(data)
    if data.startswith(b"BM") and data[15] == 0:
        height = _le(data, 22, 4)
        return _le(data, 18, 4) * (2**32 - height if height >= 2**31 else height)
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return _webp_pixels(data)
    return _base64_pixels(data) if unwrap else 0


def _base64_pixels(data: bytes) -> int:
    inner = _unwrap_base64(data) if data else None
    return 0 if inner is None else (image_pixels(inner, unwrap=False) or 0)


@dataclass
class Cost:
    """What one request is estimated to hold while it runs."""

    elements: int = 0
    nbytes: int = 0
    decoded_pixels: int = 0

    def describe(self) -> str:
        parts = [f"{self.elements} elements"]
        if self.decoded_pixels:
            parts.append(f"{self.decoded_pixels} decoded pixels at once")
        return f"{_size_text(self.nbytes)} ({', '.join(parts)})"


def _decoded_pixels(images: Iterable[bytes], inputs: ImageInputs) -> int:
    """The most pixels the decode graph holds at once: the largest images decoded together."""
    sizes = []
    for data in images:
        pixels = image_pixels(data)
        # Unknown: as large as an accepted image may be; over max_pixels: refused undecoded.
        if pixels is None:
            pixels = inputs.max_pixels
        sizes.append(pixels if pixels <= inputs.max_pixels else 0)
    at_once = sum(heapq.nlargest(PARALLEL_DECODES, sizes))
    return min(at_once, inputs.max_request_pixels)


def estimate(
    image_inputs: ImageInputs | None,
    signature_key: str,
    strings: Mapping[str, np.ndarray] | None = None,
    images: Iterable[bytes] | None = None,
    elements: int | None = None,
) -> Cost:
    """The cost of one request on one signature.

    ``strings``: the request's DT_STRING inputs by alias (Predict); ``images``: the
    image bytes of a tf.Example request (Classify), ``elements`` its example count.
    """
    cost = Cost()
    if image_inputs is not None and signature_key == PIXELS_SIGNATURE:
        return _pixels_cost(image_inputs, signature_key, strings or {})
    is_image = image_inputs is not None and signature_key in image_inputs.signatures
    per_element = ELEMENT_BYTES
    if is_image:
        per_element += MODEL_IMAGE_COPIES * image_inputs.model_image_bytes
    if strings is not None:
        for array in strings.values():
            cost.elements += int(array.size)
            if is_image:
                cost.decoded_pixels += _decoded_pixels(
                    (v if isinstance(v, bytes) else bytes(v) for v in array.flat), image_inputs
                )
    if elements is not None:
        cost.elements += elements
        if is_image and images is not None:
            cost.decoded_pixels += _decoded_pixels(images, image_inputs)
    cost.nbytes = cost.elements * per_element + cost.decoded_pixels * DECODED_PIXEL_BYTES
    return cost


def _pixels_cost(inputs: ImageInputs, key: str, arrays: Mapping[str, np.ndarray]) -> Cost:
    """``serving_pixels``: each image of ``[N, h, w, 3]`` becomes model-input images, and
    the batch is read as float32 (four times its bytes) when it is resized."""
    cost = Cost()
    if key not in inputs.signatures:
        return cost
    for array in arrays.values():
        if array.ndim == 4:
            cost.elements += int(array.shape[0])
            cost.nbytes += 4 * int(array.size)
    cost.nbytes += cost.elements * (ELEMENT_BYTES + MODEL_IMAGE_COPIES * inputs.model_image_bytes)
    return cost


def example_images(examples: Iterable) -> list[bytes]:
    """The image bytes of each tf.Example (its ``image/encoded`` feature, first value)."""
    images = []
    for example in examples:
        feature = example.features.feature.get(EXAMPLE_FEATURE)
        if feature is not None and feature.bytes_list.value:
            images.append(feature.bytes_list.value[0])
    return images


# ----------------------------------------------------------------------------------------
# The shared budget.


class OverBudget(Exception):
    """The bytes in flight did not make room for this request in time."""


class ByteBudget:
    """A counting limit on bytes held by requests in progress (any thread)."""

    def __init__(self, limit: int) -> None:
        self.limit = max(limit, 1)
        self.used = 0
        self._cond = threading.Condition()
        self.on_release = None

    def acquire(self, count: int, timeout: float, held: int = 0) -> int:
        """Takes ``count`` more bytes for a request holding ``held``; raises :class:`OverBudget`.

        One request may hold at most the whole budget (it then runs alone)."""
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
            if self.on_release is not None:
                self.on_release()


class CostBudget:
    """Element and byte limits for one request, and the bytes all requests in flight share."""

    def __init__(
        self,
        max_request_elements: int = DEFAULT_MAX_REQUEST_ELEMENTS,
        max_bytes_in_flight: int = DEFAULT_MAX_DECODE_BYTES_IN_FLIGHT,
        wait_seconds: float = WAIT_SECONDS,
    ) -> None:
        self.max_request_elements = max_request_elements
        self.limit = max_bytes_in_flight
        self.wait_seconds = wait_seconds
        self._bytes = ByteBudget(max_bytes_in_flight)

    @property
    def used(self) -> int:
        return self._bytes.used

    def check_elements(self, elements: int) -> None:
        """INVALID_ARGUMENT when ``elements`` alone is over the per-request limit."""
        if 0 < self.max_request_elements < elements:
            raise invalid_argument(
                f"Request has {elements} elements, more than the limit of "
                f"{self.max_request_elements} per request (--max_request_elements); send "
                "them in smaller requests"
            )

    @contextlib.contextmanager
    def hold(self, cost: Cost) -> Iterator[None]:
        """Holds ``cost`` of the budget while the request runs (waiting for room briefly)."""
        self.check_elements(cost.elements)
        if self.limit <= 0 or cost.nbytes <= 0:
            yield
            return
        if cost.nbytes > self.limit:
            raise invalid_argument(
                f"Request is estimated to need {cost.describe()} to decode, more than the "
                f"limit of {_size_text(self.limit)} (--max_decode_bytes_in_flight); send "
                "fewer or smaller images per request"
            )
        try:
            self._bytes.acquire(cost.nbytes, self.wait_seconds)
        except OverBudget:
            raise ServingError(
                Code.RESOURCE_EXHAUSTED,
                f"Requests in flight hold {_size_text(self.used)} of the "
                f"{_size_text(self.limit)} decode budget (--max_decode_bytes_in_flight); "
                f"this request needs {cost.describe()}: retry later",
            ) from None
        try:
            yield
        finally:
            self._bytes.release(cost.nbytes)
