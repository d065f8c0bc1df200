"""One image in, its explanation out: top-k, the attention map, the overlay and the figure."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from keras_vit.explain import overlay
from keras_vit.explain.gradient import gradient_rollout
from keras_vit.explain.rollout import attention_rollout
from keras_vit.training.pipeline import resize_like_model


@dataclass
class Explanation:
    """The explanation of one image.

    Attributes:
        image: the input at the model's resolution, ``(H, W, 3)`` uint8.
        attention_map: ``(grid_rows, grid_cols)`` float32.
        top_k: ``(label, probability)`` pairs, best first.
        method: ``"rollout"`` or ``"gradient"``.
        explained: the label the map explains (gradient) or None (rollout).
    """

    image: np.ndarray
    attention_map: np.ndarray
    top_k: list[tuple[str, float]]
    method: str
    explained: str | None = None

    def overlay(self) -> np.ndarray:
        return overlay.overlay_image(self.image, self.attention_map)

    def figure_png(self) -> bytes:
        title = "attention rollout"
        if self.method == "gradient":
            title = f"gradient-weighted attention: {self.explained}"
        return overlay.explanation_figure(self.image, self.attention_map, self.top_k, title=title)


class Explainer:
    """Explains images with a ``ViTClassifier`` in this process.

    Images are resized to the model's resolution first, with the in-graph
    layer's op, so the overlay matches the pixels the model saw.
    """

    def __init__(self, model):
        self.model = model

    def explain(
        self,
        pixels: np.ndarray,
        method: str = "rollout",
        class_index: int | None = None,
        top_k: int = 3,
    ) -> Explanation:
        if method not in ("rollout", "gradient"):
            raise ValueError(f"method must be 'rollout' or 'gradient', got {method!r}")
        resized = np.asarray(resize_like_model(np.asarray(pixels), self.model.image_size))
        batch = resized[None].astype(np.float32)
        if method == "rollout":
            logits, maps = attention_rollout(self.model, batch)
        else:
            logits, maps = gradient_rollout(self.model, batch, class_index)
        logits = np.asarray(logits, dtype=np.float64)[0]
        probabilities = np.exp(logits - logits.max())
        probabilities /= probabilities.sum()
        order = np.argsort(-probabilities, kind="stable")[: min(top_k, len(probabilities))]
        labels = self.model.labels
        top = [(labels[i], float(probabilities[i])) for i in order]
        explained = None
        if method == "gradient":
            explained = labels[int(order[0]) if class_index is None else int(class_index)]
        image = np.clip(np.rint(resized), 0, 255).astype(np.uint8)
        return Explanation(image, np.asarray(maps)[0], top, method, explained)
