"""Fitting a loaded ViT to new data: a new head for the labels, a new resolution, a dtype policy."""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np

from keras_vit.layers import interpolate_position_embedding
from keras_vit.model import ViTClassifier


def adapt_model(
    model: keras.Model,
    labels: Sequence[str] | None = None,
    image_size: int | Sequence[int] | None = None,
    dtype: str | None = None,
    rebuild: bool = False,
) -> ViTClassifier:
    """A ViTClassifier like ``model`` with ``labels``, ``image_size`` and ``dtype``, weights kept.

    - Different labels (or their number): a new zero-initialised ``head`` (as
      the ViT paper fine-tunes); same labels: the head is kept.
    - A different ``image_size``: the ``position_embedding`` grid is resized
      bicubically (class token kept aside), every other weight is kept.
    - ``dtype`` (e.g. ``"mixed_bfloat16"``): the new compute policy; the
      variables stay float32 under a mixed policy.

    When nothing changes and ``rebuild`` is False, ``model`` itself is returned.
    ``rebuild=True`` always builds a new model, e.g. to create its variables
    under a ``tf.distribute`` strategy scope.
    """
    if not isinstance(model, ViTClassifier):
        raise TypeError(
            f"Training needs a keras_vit ViTClassifier, got {type(model).__name__}; "
            "load checkpoints with keras_vit.load_pretrained"
        )
    config = model.get_config()
    new = dict(config)
    if labels is not None:
        new["labels"] = [str(label) for label in labels]
        new["num_classes"] = len(new["labels"])
    if image_size is not None:
        size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        new["image_size"] = tuple(int(s) for s in size)
    if dtype is not None:
        new["dtype"] = dtype
    new_head = new["labels"] != list(config["labels"])
    new_grid = tuple(new["image_size"]) != tuple(config["image_size"])
    new_dtype = dtype is not None and keras.dtype_policies.get(dtype).name != policy_name(model)
    if not (new_head or new_grid or new_dtype or rebuild):
        return model

    new.pop("name", None)
    adapted = ViTClassifier.from_config(new)
    patch = adapted.patch_size
    grid = (adapted.image_size[0] // patch, adapted.image_size[1] // patch)
    for layer in adapted.layers:
        if not layer.weights:
            continue
        source = model.get_layer(layer.name)
        if layer.name == "head" and new_head:
            # Zero-initialised classifier (Dosovitskiy et al., 2021, Sec. 3.2).
            layer.set_weights([np.zeros(w.shape, "float32") for w in layer.weights])
        elif layer.name == "position_embedding" and new_grid:
            (table,) = source.get_weights()
            layer.set_weights([interpolate_position_embedding(table, grid)])
        else:
            layer.set_weights(source.get_weights())
    return adapted


def float32_copy(model: ViTClassifier) -> ViTClassifier:
    """An uncompiled float32 ViTClassifier with ``model``'s weights (what the output saves)."""
    config = model.get_config()
    config.pop("name", None)
    config["dtype"] = "float32"
    copy = ViTClassifier.from_config(config)
    copy.set_weights([np.asarray(w, dtype="float32") for w in model.get_weights()])
    return copy


def policy_name(model: ViTClassifier) -> str:
    """The dtype policy of the model's layers (``"float32"``, ``"mixed_bfloat16"``, ...).

    A functional model's own ``dtype_policy`` stays float32 whatever its
    layers use, and the head computes in float32 under a mixed policy, so the
    patch embedding is the layer that tells.
    """
    return model.get_layer("patch_embedding").dtype_policy.name
