"""Reading image files for in-process prediction, with the exported signatures' decoder.

``keras-vit predict --model`` decodes with ``keras_vit.decode`` exactly as the
exported SavedModel does (same IDCT, same reduced JPEG scale, same resize), so
a file scores the same in-process as through a server.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from serving.image_files import ImageFileError, read_image_file


class ImageReadError(ValueError):
    """An input file is missing, unreadable, or not an image the decoder accepts."""


def read_image(
    path: str | os.PathLike, image_size: Sequence[int], max_pixels: int | None = None
) -> np.ndarray:
    """Reads and decodes one image file to float32 ``(height, width, 3)`` at ``image_size``.

    The file is read by :func:`serving.image_files.read_image_file` (regular files only,
    size capped). The pixels are those the exported model computes from the same bytes;
    ``max_pixels`` is the decoder's limit (default ``keras_vit.decode.DEFAULT_MAX_PIXELS``).
    Raises :class:`ImageReadError` naming the file and the reason.
    """
    try:
        # A regular file only, at most $KERAS_VIT_MAX_IMAGE_BYTES (64 MiB) read.
        data = read_image_file(path)
    except ImageFileError as error:
        raise ImageReadError(str(error)) from None
    try:
        return decode_bytes(data, image_size, max_pixels)
    except ImageReadError as error:
        raise ImageReadError(f"{path}: {error}") from None


def decode_bytes(
    data: bytes, image_size: Sequence[int], max_pixels: int | None = None
) -> np.ndarray:
    """Decodes encoded image bytes as :func:`read_image` does; ImageReadError with the reason."""
    from keras_vit.decode import DEFAULT_MAX_PIXELS, decode_batch, traced  # noqa: PLC0415 - TF

    limit = DEFAULT_MAX_PIXELS if max_pixels is None else int(max_pixels)
    decoder = traced(decode_batch, image_size, [None], max_pixels=limit)
    pixels, reasons = decoder([data])
    reason = reasons.numpy()[0].decode("utf-8", "replace")
    if reason:
        raise ImageReadError(reason)
    return pixels.numpy()[0]
