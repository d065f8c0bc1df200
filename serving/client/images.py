"""Turning the images a caller passes into encoded bytes, and shrinking them to fit a limit.

Accepted inputs: a file path (``str`` or ``os.PathLike``), encoded bytes, a PIL
image, or a ``uint8`` numpy array (``HW``, ``HWC`` with C in 1, 3, 4); or a
list of those. A 4-D ``NHWC`` array is a batch of ``N`` images.
"""

from __future__ import annotations

import io
import math
import os
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Union

import numpy as np

from serving.client.errors import InputImageError, PayloadTooLargeError
from serving.image_files import ImageFileError, read_image_file

if TYPE_CHECKING:
    from PIL import Image

ImageInput = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview, "Image.Image", np.ndarray]

# JPEG qualities tried, in order, once an image is at the model resolution and still too big.
_LAST_RESORT_QUALITIES = (75, 50, 30)
_JPEG_QUALITY = 90
# How a caller raises the file size limit, for the error.
_SETTING = "raise it with max_image_bytes= or $KERAS_VIT_MAX_IMAGE_BYTES"


def _is_pil(image: Any) -> bool:
    """A PIL image? PIL is imported only when needed: without it loaded, none can exist."""
    module = sys.modules.get("PIL.Image")
    return module is not None and isinstance(image, module.Image)


def as_image_list(images: ImageInput | Iterable[ImageInput]) -> list[Any]:
    """The images of a call as a list: one image, a list/tuple/iterable of them, or NHWC."""
    if isinstance(images, (str, os.PathLike, bytes, bytearray, memoryview)) or _is_pil(images):
        return [images]
    if isinstance(images, np.ndarray):
        if images.ndim == 4:
            return list(images)
        return [images]
    if isinstance(images, dict):
        raise InputImageError("images must be an image or a list of images, not a dict")
    try:
        return list(images)
    except TypeError:
        raise InputImageError(
            f"unsupported image input of type {type(images).__name__}: expected a path, "
            "encoded bytes, a PIL image, a uint8 numpy array, or a list of them"
        ) from None


def encode_image(
    image: Any, index: int, image_format: str = "png", max_image_bytes: int | None = None
) -> bytes:
    """Encoded bytes for one input image (files and bytes are passed through unchanged).

    PIL images and arrays are encoded as ``image_format`` (PNG by default: lossless, so the
    server sees exactly the caller's pixels). A path is read with
    :func:`serving.image_files.read_image_file`: a regular file of at most
    ``max_image_bytes`` (default 64 MiB), never a device, pipe or socket.
    """
    if isinstance(image, (str, os.PathLike)):
        try:
            return read_image_file(image, max_image_bytes, setting=_SETTING)
        except ImageFileError as error:
            if error.reason == "is an empty file":
                raise InputImageError(f"image {index}: {error.path!r} is an empty file") from None
            raise InputImageError(
                f"image {index}: cannot read {error.path!r}: {error.reason}"
            ) from None
    if isinstance(image, (bytes, bytearray, memoryview)):
        data = bytes(image)
        if not data:
            raise InputImageError(f"image {index}: empty bytes")
        return data
    if _is_pil(image):
        return _encode_pil(image, image_format)
    if isinstance(image, np.ndarray):
        return _encode_pil(_array_to_pil(image, index), image_format)
    raise InputImageError(
        f"image {index}: unsupported type {type(image).__name__}; expected a path, encoded bytes, "
        "a PIL image or a uint8 numpy array"
    )


def _array_to_pil(array: np.ndarray, index: int) -> Image.Image:
    if array.dtype != np.uint8:
        raise InputImageError(
            f"image {index}: numpy images must be uint8 (0-255), got {array.dtype}; "
            "convert with (x * 255).round().astype(np.uint8) or pass encoded bytes"
        )
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim == 2:
        mode = "L"
    elif array.ndim == 3 and array.shape[-1] in (3, 4):
        mode = "RGB" if array.shape[-1] == 3 else "RGBA"
    else:
        raise InputImageError(
            f"image {index}: numpy images must be HW or HWC with C in (1, 3, 4) "
            f"(channels last), got shape {array.shape}"
        )
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise InputImageError(f"image {index}: empty image of shape {array.shape}")
    from PIL import Image  # noqa: PLC0415 - PIL (40 ms): arrays and resizing only

    return Image.fromarray(np.ascontiguousarray(array), mode=mode)


def _encode_pil(image: Image.Image, image_format: str, quality: int = _JPEG_QUALITY) -> bytes:
    fmt = image_format.lower()
    # The model takes RGB; alpha and palettes are resolved here so every format round-trips.
    if image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    buffer = io.BytesIO()
    if fmt in ("jpeg", "jpg"):
        image.save(buffer, format="JPEG", quality=quality)
    elif fmt == "png":
        image.save(buffer, format="PNG", compress_level=1)  # speed over a few % of size
    else:
        raise ValueError(f"image_format must be 'png' or 'jpeg', got {image_format!r}")
    return buffer.getvalue()


def shrink_to_fit(data: bytes, max_bytes: int, min_short_side: int, index: int) -> bytes:
    """Re-encode ``data`` as a JPEG of at most ``max_bytes``, downscaled if needed.

    The aspect ratio is kept and the short side never goes below ``min_short_side`` (the
    model's resolution: fewer pixels would change what the model sees). EXIF orientation is
    deliberately not applied, since TF's decoders ignore it too.

    Raises:
        InputImageError: the bytes are not an image PIL can read.
        PayloadTooLargeError: even at the model resolution the JPEG is larger than ``max_bytes``.
    """
    from PIL import Image, UnidentifiedImageError  # noqa: PLC0415 - PIL, 40 ms

    try:
        image = Image.open(io.BytesIO(data))
        image.load()  # first frame of an animation, like TF's decode_image does for GIFs
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as error:
        raise InputImageError(
            f"image {index} ({len(data):,} bytes) is larger than the request limit allows and "
            f"cannot be decoded to downscale it: {error}"
        ) from None
    if image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    width, height = image.size
    short = min(width, height)
    smallest = min(1.0, min_short_side / short)

    # Encoded size grows roughly with the pixel count: start from that guess, then tighten.
    scale = min(1.0, 0.95 * math.sqrt(max_bytes / len(data)))
    tried: set[tuple[int, int]] = set()
    encoded = b""
    for _ in range(12):
        scale = max(scale, smallest)
        size = _scaled_size(width, height, scale, min_short_side)
        if size not in tried:
            tried.add(size)
            encoded = _encode_resized(image, size, _JPEG_QUALITY)
            if len(encoded) <= max_bytes:
                return encoded
        if scale <= smallest:
            break
        scale = min(scale * 0.9, scale * 0.95 * math.sqrt(max_bytes / len(encoded)))
    size = _scaled_size(width, height, smallest, min_short_side)
    for quality in _LAST_RESORT_QUALITIES:
        encoded = _encode_resized(image, size, quality)
        if len(encoded) <= max_bytes:
            return encoded
    raise PayloadTooLargeError(
        f"image {index} does not fit into one request: {len(encoded):,} bytes as a JPEG of "
        f"{size[0]}x{size[1]} (the smallest allowed, short side >= image_size={min_short_side}) "
        f"at quality {_LAST_RESORT_QUALITIES[-1]}, but at most {max_bytes:,} bytes fit under the "
        "request limit; raise max_request_bytes or send a smaller image"
    )


def _scaled_size(width: int, height: int, scale: float, min_short_side: int) -> tuple[int, int]:
    short = min(width, height)
    new_short = min(short, max(min_short_side, round(short * scale)))
    factor = new_short / short
    # The short side is set exactly; the long side follows the aspect ratio.
    if width <= height:
        return new_short, max(new_short, round(height * factor))
    return max(new_short, round(width * factor)), new_short


def _encode_resized(image: Image.Image, size: tuple[int, int], quality: int) -> bytes:
    from PIL import Image  # noqa: PLC0415 - PIL (40 ms): arrays and resizing only

    resized = image if size == image.size else image.resize(size, Image.BICUBIC, reducing_gap=3.0)
    return _encode_pil(resized, "jpeg", quality)
