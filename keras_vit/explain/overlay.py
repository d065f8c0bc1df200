"""Drawing an attention map over its image, with the top labels beside it (matplotlib)."""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from PIL import Image

from keras_vit.plot_text import display_label, save_figure

# Perceptually uniform, and readable in grey and by colour-blind readers.
DEFAULT_COLORMAP = "inferno"
DEFAULT_ALPHA = 0.5


def colormap_table(name: str = DEFAULT_COLORMAP, size: int = 256) -> np.ndarray:
    """The colormap as a ``(size, 3)`` float32 RGB table in ``[0, 1]``."""
    import matplotlib

    return np.asarray(matplotlib.colormaps[name](np.linspace(0.0, 1.0, size))[:, :3], np.float32)


def normalise_map(attention_map: np.ndarray) -> np.ndarray:
    """Scales a map to ``[0, 1]`` (min to 0, max to 1; a constant map becomes zeros)."""
    attention_map = np.asarray(attention_map, np.float32)
    low, high = float(attention_map.min()), float(attention_map.max())
    if high - low <= 0:
        return np.zeros_like(attention_map)
    return (attention_map - low) / (high - low)


def overlay_image(
    image: np.ndarray,
    attention_map: np.ndarray,
    alpha: float = DEFAULT_ALPHA,
    colormap: str = DEFAULT_COLORMAP,
) -> np.ndarray:
    """The image (``(H, W, 3)`` uint8) blended with the coloured map, upsampled bilinearly."""

    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"expected an (H, W, 3) image, got shape {image.shape}")
    height, width = image.shape[:2]
    scaled = Image.fromarray(normalise_map(attention_map)).resize(
        (width, height), Image.Resampling.BILINEAR
    )
    table = colormap_table(colormap)
    indices = np.clip(np.rint(np.asarray(scaled) * 255), 0, 255).astype(np.int64)
    colours = table[indices] * 255.0
    blended = (1.0 - alpha) * image.astype(np.float32) + alpha * colours
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def explanation_figure(
    image: np.ndarray,
    attention_map: np.ndarray,
    top: Sequence[tuple[str, float]],
    title: str = "attention rollout",
    alpha: float = DEFAULT_ALPHA,
) -> bytes:
    """PNG bytes: the overlay on the left, the top labels and scores as bars on the right."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 4), dpi=100, layout="constrained")
    left, right = figure.subplots(1, 2, width_ratios=(1, 1))
    left.imshow(overlay_image(image, attention_map, alpha=alpha))
    left.set_title(display_label(title, 60))
    left.axis("off")
    labels = [display_label(label) for label, _ in top][::-1]
    scores = [score for _, score in top][::-1]
    bars = right.barh(range(len(labels)), scores, color="#4c72b0")
    right.set_yticks(range(len(labels)), labels)
    right.bar_label(bars, labels=[f"{s:.3f}" for s in scores], padding=3)
    right.set_xlim(0, 1.15)
    right.set_xlabel("probability")
    right.set_title(f"top-{len(top)}")
    buffer = io.BytesIO()
    save_figure(figure, buffer, format="png")  # labels drawn literally, never as mathtext
    return buffer.getvalue()
