"""The report's figures, drawn with matplotlib and scikit-learn's displays, saved as PNG.

Labels are drawn as the characters they hold (no mathtext, see keras_vit.plot_text).
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from keras_vit.plot_text import display_label, save_figure

# Beyond this many classes the cells are too small for their numbers.
_MAX_ANNOTATED_CLASSES = 30


def _figure(width: float, height: float):
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def confusion_matrix_png(matrix, labels: Sequence[str], path: Path, normalize: bool) -> Path:
    """The confusion matrix (rows: true, columns: predicted), raw counts or row-normalised."""
    from sklearn.metrics import ConfusionMatrixDisplay

    matrix = np.asarray(matrix, dtype=np.float64 if normalize else np.int64)
    if normalize:
        totals = matrix.sum(axis=1, keepdims=True)
        matrix = np.divide(matrix, totals, out=np.zeros_like(matrix), where=totals > 0)
    side = min(4 + 0.45 * len(labels), 30)
    figure = _figure(side + 1, side)
    axes = figure.subplots()
    display = ConfusionMatrixDisplay(
        matrix, display_labels=[display_label(label) for label in labels]
    )
    display.plot(
        ax=axes,
        cmap="Blues",
        colorbar=True,
        include_values=len(labels) <= _MAX_ANNOTATED_CLASSES,
        values_format=".2f" if normalize else "d",
        xticks_rotation="vertical",
    )
    axes.set_title("confusion matrix, " + ("normalised by true class" if normalize else "counts"))
    save_figure(figure, path, format="png")
    return path


def reliability_png(correct, confidences, n_bins: int, ece: float, path: Path) -> Path:
    """The reliability diagram of the top-1 confidence (scikit-learn's CalibrationDisplay)."""
    from sklearn.calibration import CalibrationDisplay

    figure = _figure(5.5, 5)
    axes = figure.subplots()
    CalibrationDisplay.from_predictions(
        np.asarray(correct, dtype=int),
        np.asarray(confidences, dtype=np.float64),
        n_bins=n_bins,
        strategy="uniform",
        ax=axes,
        name="top-1",
    )
    axes.set_xlabel("top-1 confidence")
    axes.set_ylabel("accuracy")
    axes.set_title(f"reliability diagram (ECE {ece:.4f}, {n_bins} bins)")
    save_figure(figure, path, format="png")
    return path


def gallery_png(items: Sequence[tuple[bytes, str, str, float]], path: Path) -> Path | None:
    """A grid of ``(encoded image, true label, predicted label, confidence)``; None when empty."""

    if not items:
        return None
    cols = min(4, len(items))
    rows = math.ceil(len(items) / cols)
    figure = _figure(3 * cols, 3.2 * rows)
    grid = figure.subplots(rows, cols, squeeze=False)
    for axes in grid.flat:
        axes.axis("off")
    for axes, (data, true, predicted, score) in zip(grid.flat, items, strict=False):
        with Image.open(io.BytesIO(data)) as image:
            axes.imshow(np.asarray(image.convert("RGB")))
        axes.set_title(
            f"true: {display_label(true, 30)}\n"
            f"predicted: {display_label(predicted, 30)} ({score:.2f})",
            fontsize=9,
        )
    figure.suptitle("most confident misclassifications")
    save_figure(figure, path, format="png")
    return path


def latency_png(seconds: Sequence[float], path: Path, title: str) -> Path:
    """A histogram of request latencies in milliseconds, with the median and p99 marked."""
    values = np.asarray(seconds, dtype=np.float64) * 1000.0
    figure = _figure(6, 4)
    axes = figure.subplots()
    axes.hist(values, bins=min(50, max(5, values.size // 2)), color="#4c72b0")
    for q, style in ((50, "-"), (99, "--")):
        value = np.percentile(values, q)
        axes.axvline(value, color="black", linestyle=style, label=f"p{q} {value:.1f} ms")
    axes.set_xlabel("milliseconds per request")
    axes.set_ylabel("requests")
    axes.set_title(title)
    axes.legend()
    save_figure(figure, path, format="png")
    return path
