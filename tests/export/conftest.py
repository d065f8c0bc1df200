"""Fixtures for the export tests: a tiny labelled ViT, its SavedModel export and real photos.

The tiny model is the session's ``tiny_model`` (``tests/conftest.py``). Its export
without ``explain`` is written once per test session (``exported``) and loaded once,
the way TF Serving does (``session_model``: a TF1 session on the ``serve``
tag, fed and fetched by the SignatureDef tensor names).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import TINY_LABELS as LABELS  # noqa: F401 (the tests import it from here)

TOP_K = 5


def encode(pixels: np.ndarray, fmt: str, **options) -> bytes:
    """Encodes an array with PIL (the reference encoder for these tests)."""
    from PIL import Image

    buffer = io.BytesIO()
    image = pixels if isinstance(pixels, Image.Image) else Image.fromarray(pixels)
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


@pytest.fixture(scope="session")
def export_base(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("models") / "vit"


@pytest.fixture(scope="session")
def exported(tiny_model, export_base) -> Path:
    """Version 1 of the tiny model, with probabilities, default warm-up images."""
    from serving.export import export_saved_model

    return export_saved_model(tiny_model, export_base, top_k=TOP_K, with_probabilities=True)


class SessionModel:
    """A SavedModel loaded into a TF1 session: what TF Serving runs."""

    def __init__(self, path: Path):
        import tensorflow as tf

        self.graph = tf.Graph()
        self.session = tf.compat.v1.Session(graph=self.graph)
        with self.graph.as_default():
            meta_graph = tf.compat.v1.saved_model.loader.load(self.session, ["serve"], str(path))
        self.signatures = meta_graph.signature_def

    def run(self, signature: str, **inputs) -> dict[str, np.ndarray]:
        """Feeds ``inputs`` by their SignatureDef tensor names, fetches every output."""
        signature_def = self.signatures[signature]
        feed = {signature_def.inputs[name].name: value for name, value in inputs.items()}
        names = sorted(signature_def.outputs)
        fetches = [signature_def.outputs[name].name for name in names]
        return dict(zip(names, self.session.run(fetches, feed_dict=feed), strict=True))


@pytest.fixture(scope="session")
def session_model(exported) -> SessionModel:
    return SessionModel(exported)


@pytest.fixture(scope="session")
def photos() -> dict[str, np.ndarray]:
    from skimage import data

    return {"chelsea": data.chelsea(), "astronaut": data.astronaut(), "coffee": data.coffee()}
