"""Images for the served-explain tests (the server itself: tests/support/servers.py)."""

from __future__ import annotations

import io

import numpy as np


def png(pixels: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()
