"""What answers the page: a served model (through the client library) or one in this process."""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from keras_vit.explain.overlay import overlay_image
from keras_vit.images import decode_bytes

EXPLAIN_SIGNATURE = "explain"


@dataclass
class Answer:
    """One image's answer: the top-k and, when the model can explain, the overlay PNG."""

    top_k: list[tuple[str, float]]
    overlay_png: bytes | None = None


class ServerBackend:
    """A TF-Serving-compatible endpoint, through :class:`serving.client.ServingClient`.

    The overlay comes from the model's ``explain`` signature
    (``keras-vit export --with-explain``) when the served model has one.
    """

    # Predictions the page runs at once: the client is thread-safe and the server batches.
    concurrency = 4

    def __init__(self, client):
        self.client = client
        self.has_explain = EXPLAIN_SIGNATURE in client.signatures()
        self.description = f"{client.model_name} at {client.target} ({client.protocol})"

    def answer(self, image: bytes) -> Answer:
        (prediction,) = self.client.predict([image])
        overlay = None
        if self.has_explain:
            (explained,) = self.client.predict([image], signature_name=EXPLAIN_SIGNATURE)
            overlay = _png_bytes(explained.outputs.get("overlay_bytes"))
        return Answer(list(prediction.top_k), overlay)

    def close(self) -> None:
        self.client.close()


class LocalBackend:
    """A ``ViTClassifier`` in this process; always explains (attention rollout)."""

    has_explain = True
    # One prediction at a time: the model is not shared across threads.
    concurrency = 1

    def __init__(self, model, top_k: int = 5, max_pixels: int = 40_000_000):
        # The UI over a server (ServerBackend) runs without TensorFlow: it loads here.
        from keras_vit.explain.explainer import Explainer  # noqa: PLC0415

        self.explainer = Explainer(model)
        self.top_k = min(top_k, len(model.labels))
        self.max_pixels = max_pixels
        self.image_size = tuple(model.image_size)
        self.description = f"{model.name} in-process"

    def answer(self, image: bytes) -> Answer:
        # The exported signatures' decoder, so the page shows what a server would answer.
        pixels = decode_bytes(image, self.image_size, self.max_pixels)
        explanation = self.explainer.explain(pixels, top_k=self.top_k)
        buffer = io.BytesIO()
        Image.fromarray(overlay_image(explanation.image, explanation.attention_map)).save(
            buffer, "PNG"
        )
        return Answer(explanation.top_k, buffer.getvalue())

    def close(self) -> None:
        pass


def _png_bytes(value) -> bytes | None:
    """The overlay output as bytes: raw over gRPC, ``{"b64": ...}`` over REST."""

    if value is None:
        return None
    if isinstance(value, list | tuple | np.ndarray):
        value = np.asarray(value, dtype=object).reshape(-1)[0]
    if isinstance(value, dict) and "b64" in value:
        return base64.b64decode(value["b64"])
    if isinstance(value, bytes | np.bytes_):
        return bytes(value)
    return None
