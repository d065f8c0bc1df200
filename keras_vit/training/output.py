"""The model directory a training run writes, which ``keras-vit export --model DIR`` takes as is.

Layout::

    DIR/model.keras                 best weights, float32, uncompiled ViTClassifier
    DIR/labels.txt                  one class name per line, in output order
    DIR/preprocessor_config.json    HF ViTImageProcessor fields (size, rescale, mean, std)
    DIR/history.csv                 one row per epoch (loss, accuracy, val_*, learning_rate)
    DIR/training_curve.svg          accuracy and loss per epoch
    DIR/training_config.json        every option of the run
    DIR/metrics.json                best epoch and the final validation/test metrics
    DIR/checkpoints/                best weights while training
    DIR/logs/                       TensorBoard events
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

from keras_vit.model import ViTClassifier

MODEL_FILE = "model.keras"
LABELS_FILE = "labels.txt"
PREPROCESSOR_FILE = "preprocessor_config.json"
HISTORY_FILE = "history.csv"
CURVE_FILE = "training_curve.svg"
CONFIG_FILE = "training_config.json"
METRICS_FILE = "metrics.json"

# PIL.Image.BILINEAR, the `resample` value of transformers' ViTImageProcessor.
_PIL_BILINEAR = 2


def preprocessor_config(model: ViTClassifier) -> dict:
    """The model's in-graph preprocessing in transformers' ``preprocessor_config.json`` form."""
    height, width = model.image_size
    return {
        "image_processor_type": "ViTImageProcessor",
        "do_resize": True,
        "size": {"height": int(height), "width": int(width)},
        "resample": _PIL_BILINEAR,
        "do_rescale": True,
        "rescale_factor": float(model.rescale_factor),
        "do_normalize": True,
        "image_mean": [float(v) for v in model.image_mean],
        "image_std": [float(v) for v in model.image_std],
    }


def write_model_dir(model: ViTClassifier, output_dir: str | os.PathLike) -> str:
    """Writes ``model.keras``, ``labels.txt`` and ``preprocessor_config.json``; returns the path."""
    output_dir = os.fspath(output_dir)
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, MODEL_FILE)
    partial = os.path.join(output_dir, "model.partial.keras")
    model.save(partial)
    os.replace(partial, path)  # an interrupted save never replaces a good model
    write_labels(model.labels, os.path.join(output_dir, LABELS_FILE))
    with open(os.path.join(output_dir, PREPROCESSOR_FILE), "w") as f:
        json.dump(preprocessor_config(model), f, indent=2)
        f.write("\n")
    return path


def write_labels(labels: Sequence[str], path: str) -> None:
    bad = [label for label in labels if "\n" in label or "\r" in label]
    if bad:
        raise ValueError(f"Class names must not contain line breaks: {bad!r}")
    with open(path, "w", encoding="utf-8") as f:
        f.write("".join(f"{label}\n" for label in labels))


def write_json(data: dict, path: str) -> None:
    with open(path, "w") as f:
        json.dump(data, f, indent=2, default=_jsonable)
        f.write("\n")


def _jsonable(value):
    if isinstance(value, (set, tuple)):
        return list(value)
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)
