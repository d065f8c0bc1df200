"""Our own models as a checkpoint: weights of a loaded ``.keras`` ViTClassifier.

Used when a saved model is reloaded with options (new head, image size, dtype):
the table maps every variable path to itself, and the position embedding may
be resized like any other checkpoint's.
"""

from __future__ import annotations

from keras_vit.convert.common import ArrayReader, Row


def keras_rows(model) -> list[Row]:
    """Identity rows for every variable of ``model`` (the position embedding may be resized)."""
    return [
        Row(
            v.path,
            v.path,
            "position_embedding" if v.path.startswith("position_embedding/") else "identity",
        )
        for v in model.weights
    ]


def keras_model_reader(model, description: str) -> ArrayReader:
    """A reader over a loaded model's variables, keyed by variable path."""
    from keras import ops  # noqa: PLC0415 - the readers are plain numpy

    return ArrayReader({v.path: ops.convert_to_numpy(v) for v in model.weights}, description)
