"""Fixtures for the batch prediction tests: a tiny export, a folder of images with bad ones.

The reference for every prediction is the export run the way TF Serving runs
it (``tests.export.conftest.SessionModel``: TF's TF1 loader, fed by the
SignatureDef's tensor names), not our handler's ``tf.saved_model.load``.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from tests.special_files import special_files

# Each test module skips itself without Beam (a conftest cannot skip).
NEEDS_BEAM = "batch-predict needs the batch extra (apache-beam, requirements-dev.txt)"
LABELS = ["tabby cat", "tiger", "lynx", "astronaut", "rocket", "coffee mug", "espresso"]
# Small enough that one file goes to the dead letters unread (--max-file-bytes).
MAX_FILE_BYTES = 200_000


def encode(pixels: np.ndarray, fmt: str, **options) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, fmt, **options)
    return buffer.getvalue()


def bomb_png() -> bytes:
    """A valid 8000x6000 grayscale PNG (48 Mpx, over the export's 40 Mpx) of a few KB."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (8000, 6000)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture(scope="session")
def exported(tmp_path_factory) -> Path:
    from keras_vit import ViTClassifier
    from serving.export import export_saved_model
    from tests.conftest import TINY_CONFIG

    model = ViTClassifier(**TINY_CONFIG, labels=LABELS)
    return export_saved_model(model, tmp_path_factory.mktemp("models") / "vit", top_k=3)


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """``(folder, {bad file name: what its dead letter's reason must say})``.

    Good: JPEGs and PNGs of real photos (crops, several sizes) in two sub-folders,
    11 in all, so that batches of 4 mix good and bad images.
    """
    from skimage import data

    root = tmp_path_factory.mktemp("batch") / "photos"
    for name in ("cats", "things"):
        (root / name).mkdir(parents=True)
    photos = [data.chelsea(), data.astronaut(), data.coffee(), data.rocket()]
    rng = np.random.default_rng(0)
    for i in range(11):
        photo = photos[i % len(photos)]
        top, left = int(rng.integers(0, 100)), int(rng.integers(0, 100))
        side = int(rng.integers(40, 200))
        crop = np.ascontiguousarray(photo[top : top + side, left : left + side])
        folder = root / ("cats" if i % 2 else "things")
        if i % 3:
            (folder / f"photo{i:02d}.jpg").write_bytes(encode(crop, "JPEG", quality=90))
        else:
            (folder / f"photo{i:02d}.png").write_bytes(encode(crop, "PNG"))
    jpeg = encode(data.chelsea(), "JPEG", quality=90)
    bad = {
        "cats/truncated.jpg": (jpeg[: len(jpeg) // 2], "truncated JPEG"),
        "cats/notes.jpg": (b"meeting notes, not an image\n", "not a JPEG, PNG"),
        "things/empty.jpg": (b"", "is an empty file"),  # refused before the decoder
        "things/bomb.png": (bomb_png(), "more than the limit of 40000000"),
        "things/huge.jpg": (b"\xff\xd8\xff" + bytes(MAX_FILE_BYTES), "--max-file-bytes"),
    }
    for name, (content, _) in bad.items():
        (root / name).write_bytes(content)
    reasons = {name: reason for name, (_, reason) in bad.items()}
    reasons.update(special_files(root, "cats", "things"))
    return root, reasons
