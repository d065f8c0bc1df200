"""Reading image files into NHWC uint8 arrays for in-process prediction."""

from __future__ import annotations

import os

import numpy as np


class ImageReadError(ValueError):
    """An input file is missing, unreadable, or not an image PIL can decode."""


def read_image(path: str | os.PathLike, max_pixels: int = 40_000_000) -> np.ndarray:
    """Decodes one image file to an ``(H, W, 3)`` uint8 RGB array.

    Grayscale, palette and RGBA images are converted to RGB (alpha dropped);
    for animated images the first frame is used. Images declaring more than
    ``max_pixels`` pixels are refused before decoding.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            width, height = image.size
            if width * height > max_pixels:
                raise ImageReadError(
                    f"{path}: {width}x{height} = {width * height} pixels is more than "
                    f"the limit of {max_pixels}"
                )
            image.seek(0)
            return np.asarray(image.convert("RGB"), dtype=np.uint8)
    except FileNotFoundError as error:
        raise ImageReadError(f"{path}: no such file") from error
    except UnidentifiedImageError as error:
        raise ImageReadError(f"{path}: not an image file PIL can decode") from error
    except OSError as error:  # truncated or corrupt data
        raise ImageReadError(f"{path}: cannot decode image ({error})") from error
